#!/usr/bin/env python3
"""GLIDER's multi-scale router checked against its formula, in float64 numpy.

GLIDER (Global and Local Instruction-Driven Expert Router, Li et al. 2024)
scores the experts of a layer twice: a global router gives one score vector
per input sequence (from an LLM-written task instruction embedded once per
query), and a local router scores each token by the cosine similarity of its
hidden state and each expert's gate vector. The two are added before top-k:

    local[t, e]  = s * <x_t / |x_t|, g_e / |g_e|>
    score[t, e]  = local[t, e] + a * global[seq(t), e]
    p            = softmax(score[t])
    experts      = top-k of p,  weights = p / sum of the k (renormalised)

with s the local router's scale (an inverse temperature) and a the global
router's weight. Cases here also cover input-only and weight-only
normalisation (`normalize = input|weight`) and a layer without sequence
scores. Each case writes a layer (moe.router_linear with `normalize`,
moe.add_sequence_scores when it has global scores, softmax, topk,
normalize, gated-SiLU experts) and runs it with `moe-run --backend
reference` and `--backend emu` at T in {1, 7, 64, 300}, with the tokens
spread over several sequences; both must match this file's numpy
implementation: expert sets per token, weights within 1e-5, outputs within
1e-5 relative.

  glider.py [--bin DIR] [--seed N] [--backend reference,emu] [-v]
"""
import argparse
import math
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_models import H, write_safetensors  # noqa: E402
from layer_check import (attr, f32, gated_expert_tensors, gated_experts_ir,  # noqa: E402
                         gated_silu_experts, run_and_compare, softmax_rows,
                         topk_normalized)

T_VALUES = (1, 7, 64, 300)
TOL_Y = 1e-5
TOL_W = 1e-5
# Tokens whose k-th and (k+1)-th scores are this close may swap in float32.
NEAR_TIE = 1e-5

CASES = {
    # GLIDER: cosine local router plus global (sequence) scores.
    "glider": dict(experts=8, k=2, normalize="both", scale=8.0, alpha=1.0,
                   sequences=3),
    # The global scores weighted, input rows normalised only, top-1.
    "input-global": dict(experts=6, k=1, normalize="input", scale=2.0,
                         alpha=0.5, sequences=4),
    # The local router alone (cosine, no sequence scores).
    "cosine-local": dict(experts=8, k=2, normalize="both", scale=4.0,
                         alpha=None, sequences=1),
    # Weight rows normalised only, a bias, no sequence scores.
    "weight-local": dict(experts=8, k=3, normalize="weight", scale=1.0,
                         alpha=None, sequences=1, bias=True),
}


class Glider:
    def __init__(self, rng, experts, k, normalize, scale, alpha, sequences,
                 bias=False, inter=32):
        self.e, self.k, self.normalize = experts, k, normalize
        self.scale, self.alpha, self.sequences = f32(scale), alpha, sequences
        self.inter = inter
        # Gate vectors of unequal norms, so that normalising them matters.
        self.router = (rng.standard_normal((experts, H)) *
                       rng.uniform(0.2, 3.0, (experts, 1))).astype(np.float32)
        self.bias = (rng.normal(0, 0.3, experts).astype(np.float32)
                     if bias else None)
        s = 1 / math.sqrt(H)
        self.gate = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.up = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.down = (rng.standard_normal((experts, H, inter)) /
                     math.sqrt(inter)).astype(np.float32)

    # -- the paper's formula --------------------------------------------
    def scores(self, x, seq_scores, seq_map):
        x64 = np.asarray(x, np.float64)
        g = self.router.astype(np.float64)
        if self.normalize in ("input", "both"):
            x64 = x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True),
                                   1e-12)
        if self.normalize in ("weight", "both"):
            g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        local = self.scale * (x64 @ g.T)
        if self.bias is not None:
            local = local + self.bias.astype(np.float64)
        if self.alpha is None:
            return local
        return local + f32(self.alpha) * np.asarray(seq_scores, np.float64)[seq_map]

    def route(self, x, seq_scores, seq_map):
        s = self.scores(x, seq_scores, seq_map)
        p = softmax_rows(s)
        return topk_normalized(p, self.k, NEAR_TIE)

    def forward(self, x, seq_scores, seq_map):
        ids, w, fragile = self.route(x, seq_scores, seq_map)
        y = gated_silu_experts(x, self.gate, self.up, self.down, ids, w)
        return y, ids, w, fragile

    # -- files ------------------------------------------------------------
    def write(self, d):
        tensors = {"router.weight": ("F32", self.router)}
        if self.bias is not None:
            tensors["router.bias"] = ("F32", self.bias)
        tensors.update(gated_expert_tensors(self.gate, self.up, self.down))
        write_safetensors(os.path.join(d, "w.safetensors"), tensors)
        e, k, i = self.e, self.k, self.inter
        xt, st = "tensor<?x%dxf32>" % H, "tensor<?x%dxf32>" % e
        kt = "tensor<?x%dxi32>, tensor<?x%dxf32>" % (k, k)
        args = "%%x: %s" % xt
        if self.alpha is not None:
            args += (', %%gs: tensor<?x%dxf32> {moe.input = "seq_scores"}, '
                     '%%map: tensor<?xi32> {moe.input = "seq_map"}' % e)
        cosine = "normalize = #moe.router_normalize<%s>, scale = %s : f32" % (
            self.normalize, attr(self.scale))

        lines = [
            'module attributes {moe.weight_root = "%s"} {' % d,
            "  func.func @layer_0(%s) -> %s attributes {moe.layer = 0 : i64} {" % (args, xt),
            '    %%wg = moe.weight ["router.weight"] from ["w.safetensors"] : tensor<%dx%dxf32>' % (e, H)]
        if self.bias is not None:
            lines += [
                '    %%bg = moe.weight ["router.bias"] from ["w.safetensors"] : tensor<%dxf32>' % e,
                "    %%l = moe.router_linear %%x, %%wg bias %%bg {%s} : (%s, tensor<%dx%dxf32>, "
                "tensor<%dxf32>) -> %s" % (cosine, xt, e, H, e, st)]
        else:
            lines.append("    %%l = moe.router_linear %%x, %%wg {%s} : (%s, tensor<%dx%dxf32>) -> %s"
                         % (cosine, xt, e, H, st))
        score = "%l"
        if self.alpha is not None:
            lines.append("    %%s = moe.add_sequence_scores %%l, %%gs, %%map {factor = %s : f32} "
                         ": %s, tensor<?x%dxf32>, tensor<?xi32>" % (attr(self.alpha), st, e))
            score = "%s"
        lines += [
            "    %%p = moe.softmax %s : %s" % (score, st),
            "    %%ids, %%v = moe.topk %%p {k = %d : i64} : %s -> %s" % (k, st, kt),
            "    %%w = moe.normalize %%v : tensor<?x%dxf32>" % k,
            ] + gated_experts_ir(e, k, i, H)
        path = os.path.join(d, "glider.mlir")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--backend", default="reference,emu")
    ap.add_argument("--cases", default=",".join(sorted(CASES)))
    args = ap.parse_args()
    backends = args.backend.split(",")
    names = args.cases.split(",")
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        for ci, name in enumerate(names):
            params = CASES[name]
            rng = np.random.default_rng([args.seed, ci])
            case = Glider(rng, **params)
            d = os.path.join(work, name)
            os.makedirs(d)
            ir = case.write(d)
            stats = {b: [0.0, 0.0] for b in backends}
            fragile_n, total, global_flips = 0, 0, 0
            errors = []
            for t in T_VALUES:
                x = (rng.standard_normal((t, H)) *
                     rng.uniform(0.5, 4.0, (t, 1))).astype(np.float32)
                b = case.sequences
                seq_scores = rng.normal(0, 2.0, (b, case.e)).astype(np.float32)
                # Tokens of a sequence are contiguous, as in a batch of
                # concatenated queries; every sequence has >= 0 tokens.
                seq_map = np.sort(rng.integers(0, b, t)).astype(np.int32)
                inputs = [x]
                if case.alpha is not None:
                    inputs += [seq_scores, seq_map]
                    # The global scores must change some token's experts,
                    # or the case tests less than it claims.
                    alone = Glider.route(case, x, 0 * seq_scores, seq_map)[0]
                ref_y, ref_ids, ref_w, fragile = case.forward(x, seq_scores, seq_map)
                if case.alpha is not None:
                    global_flips += int(np.sum(np.any(np.sort(alone, 1) !=
                                                      np.sort(ref_ids, 1), 1)))
                fragile_n += int(fragile.sum())
                total += t
                errors += run_and_compare(
                    args.bin, ir, inputs, d, backends, "%s T=%d" % (name, t),
                    (ref_y, ref_ids, ref_w, fragile), TOL_Y, TOL_W, stats)
            if case.alpha is not None and global_flips < 0.1 * total:
                errors.append("%s: the sequence scores change the experts of "
                              "only %d of %d tokens" % (name, global_flips, total))
            if fragile_n > max(2, 0.02 * total):
                errors.append("%s: %d tokens near a tie" % (name, fragile_n))
            status = "FAIL" if errors else "ok"
            failures += bool(errors)
            print("%-4s %s: %d tokens, sequence scores change %d, skipped near "
                  "a tie %d; %s"
                  % (status, name, total, global_flips, fragile_n,
                     ", ".join("%s y_err %.2g w_err %.2g" % (b, s[0], s[1])
                               for b, s in stats.items())))
            for e in errors:
                print("  " + e)
    print("%d of %d GLIDER cases match the numpy oracle" %
          (len(names) - failures, len(names)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
