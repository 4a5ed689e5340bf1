#!/usr/bin/env python3
"""Graph of Tokens (similarity-aware routing) checked against its formula,
in float64 numpy.

"Improving Routing in Sparse Mixture of Experts with Graph of Tokens"
(Nguyen et al., 2025) mixes each token's routing probabilities with those of
the tokens it resembles before the experts are chosen:

    p[t]   = softmax(x_t Wg^T)                       (the router)
    s[t,j] = x_t . x_j / tau          for j in J(t)  (J(t) = all tokens, or
                                                      j <= t when causal)
    p'[t]  = sum_j softmax_j(s[t, :]) p[j]
    experts = top-k of p'[t],  weights = p'[t] / sum of the k (renormalised)

The tokens of one call are one sequence. Each case writes a layer
(moe.router_linear, moe.softmax, moe.similarity_mix, moe.topk,
moe.normalize, gated-SiLU experts) and runs it with `moe-run --backend
reference` and `--backend emu` at T in {1, 7, 64, 300}; both must match this
file's numpy implementation: expert sets per token, weights within 1e-5,
outputs within 1e-5 relative. The tokens come from a few clusters (similar
tokens exist), and the mixing must change the experts of at least 10% of the
tokens, or a case tests less than it claims.

  graph_of_tokens.py [--bin DIR] [--seed N] [--backend reference,emu]
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
                         gated_silu_experts, run_and_compare, topk_normalized)

T_VALUES = (1, 7, 64, 300)
TOL_Y = 1e-5
TOL_W = 1e-5
# Tokens whose k-th and (k+1)-th probabilities are this close may swap in
# float32.
NEAR_TIE = 1e-5

CASES = {
    # Every token of the sequence (prefill, bidirectional).
    "full": dict(experts=8, k=2, tau=64.0, causal=False),
    # Causal: token t mixes with tokens 0..t only.
    "causal": dict(experts=8, k=2, tau=64.0, causal=True),
    # Top-1 of 6 experts, a sharper similarity softmax, a router bias.
    "causal-top1": dict(experts=6, k=1, tau=16.0, causal=True, bias=True),
}


class GraphOfTokens:
    def __init__(self, rng, experts, k, tau, causal, bias=False, inter=32):
        self.e, self.k, self.tau, self.causal = experts, k, f32(tau), causal
        self.inter = inter
        self.router = rng.standard_normal((experts, H)).astype(np.float32) / 4
        self.bias = (rng.normal(0, 0.3, experts).astype(np.float32)
                     if bias else None)
        s = 1 / math.sqrt(H)
        self.gate = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.up = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.down = (rng.standard_normal((experts, H, inter)) /
                     math.sqrt(inter)).astype(np.float32)

    # -- the paper's formula --------------------------------------------
    def probs(self, x):
        x64 = np.asarray(x, np.float64)
        logits = x64 @ self.router.astype(np.float64).T
        if self.bias is not None:
            logits = logits + self.bias.astype(np.float64)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def mix(self, x, p):
        x64 = np.asarray(x, np.float64)
        s = (x64 @ x64.T) / self.tau
        if self.causal:
            s = np.where(np.tril(np.ones_like(s, bool)), s, -np.inf)
        a = np.exp(s - s.max(axis=1, keepdims=True))
        a = a / a.sum(axis=1, keepdims=True)
        return a @ p

    def route(self, x, mixed=True):
        p = self.probs(x)
        if mixed:
            p = self.mix(x, p)
        return topk_normalized(p, self.k, NEAR_TIE)

    def forward(self, x):
        ids, w, fragile = self.route(x)
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
        lines = [
            'module attributes {moe.weight_root = "%s"} {' % d,
            "  func.func @layer_0(%%x: %s) -> %s attributes {moe.layer = 0 : i64} {" % (xt, xt),
            '    %%wg = moe.weight ["router.weight"] from ["w.safetensors"] : tensor<%dx%dxf32>' % (e, H)]
        if self.bias is not None:
            lines += [
                '    %%bg = moe.weight ["router.bias"] from ["w.safetensors"] : tensor<%dxf32>' % e,
                "    %%l = moe.router_linear %%x, %%wg bias %%bg : (%s, tensor<%dx%dxf32>, "
                "tensor<%dxf32>) -> %s" % (xt, e, H, e, st)]
        else:
            lines.append("    %%l = moe.router_linear %%x, %%wg : (%s, tensor<%dx%dxf32>) -> %s"
                         % (xt, e, H, st))
        lines += [
            "    %%p = moe.softmax %%l : %s" % st,
            "    %%m = moe.similarity_mix %%x, %%p {temperature = %s : f32%s} : %s, %s"
            % (attr(self.tau), ", causal" if self.causal else "", xt, st),
            "    %%ids, %%v = moe.topk %%m {k = %d : i64} : %s -> %s" % (k, st, kt),
            "    %%w = moe.normalize %%v : tensor<?x%dxf32>" % k,
            ] + gated_experts_ir(e, k, i, H)
        path = os.path.join(d, "graph_of_tokens.mlir")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        return path


def tokens(rng, t, clusters=4):
    """t tokens from a few clusters (centres of norm ~8, noise ~0.5 per
    coordinate): tokens of one cluster are similar, of two clusters not."""
    centres = rng.standard_normal((clusters, H))
    which = rng.integers(0, clusters, t)
    return (centres[which] + 0.5 * rng.standard_normal((t, H))).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--backend", default="reference,emu")
    ap.add_argument("--cases", default=",".join(sorted(CASES)))
    args = ap.parse_args()
    backends = args.backend.split(",")
    names = args.cases.split(",")
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        for ci, name in enumerate(names):
            rng = np.random.default_rng([args.seed, ci])
            case = GraphOfTokens(rng, **CASES[name])
            d = os.path.join(work, name)
            os.makedirs(d)
            ir = case.write(d)
            stats = {b: [0.0, 0.0] for b in backends}
            fragile_n, total, flips = 0, 0, 0
            errors = []
            for t in T_VALUES:
                x = tokens(rng, t)
                ref_y, ref_ids, ref_w, fragile = case.forward(x)
                alone = case.route(x, mixed=False)[0]
                flips += int(np.sum(np.any(np.sort(alone, 1) !=
                                           np.sort(ref_ids, 1), 1)))
                fragile_n += int(fragile.sum())
                total += t
                errors += run_and_compare(
                    args.bin, ir, x, d, backends, "%s T=%d" % (name, t),
                    (ref_y, ref_ids, ref_w, fragile), TOL_Y, TOL_W, stats)
            if flips < 0.1 * total:
                errors.append("%s: the mixing changes the experts of only %d "
                              "of %d tokens" % (name, flips, total))
            if fragile_n > max(2, 0.02 * total):
                errors.append("%s: %d tokens near a tie" % (name, fragile_n))
            status = "FAIL" if errors else "ok"
            failures += bool(errors)
            print("%-4s %s: %d tokens, mixing changes %d, skipped near a tie "
                  "%d; %s"
                  % (status, name, total, flips, fragile_n,
                     ", ".join("%s y_err %.2g w_err %.2g" % (b, s[0], s[1])
                               for b, s in stats.items())))
            for e in errors:
                print("  " + e)
    print("%d of %d Graph of Tokens cases match the numpy oracle" %
          (len(names) - failures, len(names)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
