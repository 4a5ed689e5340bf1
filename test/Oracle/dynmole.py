#!/usr/bin/env python3
"""DynMoLE's hybrid routing checked against its formula, in float64 numpy.

DynMoLE (Mixture of LoRA Experts with a hybrid router) takes router
probabilities p = softmax(x Wg^T + b) and, per token, the Tsallis entropy

    S_q(p) = (1 - sum_e (p_e + eps)^q) / (q - 1),

optionally divided by its value for the uniform row, (1 - N^(1-q)) / (q - 1).
A token with S_q > threshold uses every expert with weight p_e; any other
token uses top-p: experts sorted by p, the prefix chosen by `prefix`
(`within`: cumulative sum <= p, DynMoLE's own mask; `reach`: the shortest
prefix whose sum reaches p), raised to at least min_k experts and capped at
max_k. Weights are p itself (not renormalised).

Each case writes a layer (router, moe.top_p, moe.entropy_fallback, gated-SiLU
experts) and runs it with `moe-run --backend reference` and `--backend emu`
at T in {1, 7, 64, 300}; both must match this file's numpy implementation:
expert sets per token, weights within 1e-5, outputs within 1e-5 relative.
The threshold is set per case from the entropies of a calibration batch so
that both branches occur (checked: some tokens fall back, some do not).

  dynmole.py [--bin DIR] [--seed N] [--backend reference,emu] [-v]
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
                         gated_silu_experts, run_and_compare)

T_VALUES = (1, 7, 64, 300)
TOL_Y = 1e-5
TOL_W = 1e-5
# Tokens this close to a decision boundary (entropy vs threshold, cumulative
# probability vs p, equal probabilities) may go either way in float32.
NEAR_ENTROPY = 1e-4
NEAR_P = 1e-5
NEAR_TIE = 1e-6

CASES = {
    # DynMoLE's own configuration: within, keep_top_k = 2, normalised.
    "dynmole-within": dict(experts=8, max_k=8, min_k=2, p=0.75,
                           prefix="within", q=1.1, normalized=True, eps=1e-5,
                           quantile=0.5),
    # The other prefix, fewer slots than experts, no normalisation, q > 2.
    "reach-maxk3": dict(experts=8, max_k=3, min_k=1, p=0.5, prefix="reach",
                        q=2.5, normalized=False, eps=0.0, quantile=0.6),
    # q < 1, normalised, min_k = 1 with `within` (a row may keep 1 expert).
    "within-q05": dict(experts=6, max_k=6, min_k=1, p=0.9, prefix="within",
                       q=0.5, normalized=True, eps=1e-5, quantile=0.7),
}


class DynMoLE:
    def __init__(self, rng, experts, max_k, min_k, p, prefix, q, normalized,
                 eps, quantile, inter=32):
        self.e, self.max_k, self.min_k = experts, max_k, min_k
        self.p, self.prefix, self.q = f32(p), prefix, f32(q)
        self.normalized, self.eps, self.inter = normalized, f32(eps), inter
        self.router = (rng.standard_normal((experts, H)) * 1.2 /
                       math.sqrt(H)).astype(np.float32)
        self.bias = rng.normal(0, 0.3, experts).astype(np.float32)
        s = 1 / math.sqrt(H)
        self.gate = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.up = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.down = (rng.standard_normal((experts, H, inter)) /
                     math.sqrt(inter)).astype(np.float32)
        calib = rng.standard_normal((400, H)).astype(np.float32)
        self.threshold = f32(np.quantile(self.entropy(self.probs(calib)),
                                         quantile))

    # -- the paper's formula --------------------------------------------
    def probs(self, x):
        logits = (np.asarray(x, np.float64) @ self.router.astype(np.float64).T
                  + self.bias.astype(np.float64))
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def entropy(self, p):
        q, n = float(self.q), p.shape[1]
        s = (1.0 - np.sum((p + self.eps) ** q, axis=1)) / (q - 1.0)
        if self.normalized:
            s = s / ((1.0 - n ** (1.0 - q)) / (q - 1.0))
        return s

    def route(self, x):
        """ids [T, E] (-1 empty), weights [T, E], fragile [T], fallback [T]."""
        p = self.probs(x)
        t = p.shape[0]
        s = self.entropy(p)
        ids = np.full((t, self.e), -1, np.int64)
        w = np.zeros((t, self.e))
        fragile = np.abs(s - self.threshold) < NEAR_ENTROPY
        fallback = s > self.threshold
        for r in range(t):
            if fallback[r]:
                ids[r] = np.arange(self.e)
                w[r] = p[r]
                continue
            order = sorted(range(self.e), key=lambda e: (-p[r, e], e))
            v = p[r, order]
            c = np.cumsum(v)
            if self.prefix == "within":
                keep = c <= self.p
            else:  # the running sum before the expert is below p
                keep = np.concatenate([[True], c[:-1] < self.p])
            keep[:self.min_k] = True
            count = min(int(np.sum(keep)), self.max_k)
            assert keep[:count].all()
            ids[r, :count] = order[:count]
            w[r, :count] = v[:count]
            if np.any(np.abs(c - self.p) < NEAR_P) or np.any(
                    np.abs(np.diff(v[:min(count + 1, self.e)])) < NEAR_TIE):
                fragile[r] = True
        return ids, w, fragile, fallback

    def forward(self, x):
        ids, w, fragile, fallback = self.route(x)
        y = gated_silu_experts(x, self.gate, self.up, self.down, ids, w)
        return y, ids, w, fragile, fallback

    # -- files ------------------------------------------------------------
    def write(self, d):
        tensors = {"router.weight": ("F32", self.router),
                   "router.bias": ("F32", self.bias)}
        tensors.update(gated_expert_tensors(self.gate, self.up, self.down))
        write_safetensors(os.path.join(d, "w.safetensors"), tensors)
        e, k, i = self.e, self.max_k, self.inter
        xt, st = "tensor<?x%dxf32>" % H, "tensor<?x%dxf32>" % e
        kt = "tensor<?x%dxi32>, tensor<?x%dxf32>" % (k, k)
        et = "tensor<?x%dxi32>, tensor<?x%dxf32>" % (e, e)
        text = "\n".join([
            'module attributes {moe.weight_root = "%s"} {' % d,
            "  func.func @layer_0(%%x: %s) -> %s attributes {moe.layer = 0 : i64} {" % (xt, xt),
            '    %%wg = moe.weight ["router.weight"] from ["w.safetensors"] : tensor<%dx%dxf32>' % (e, H),
            '    %%bg = moe.weight ["router.bias"] from ["w.safetensors"] : tensor<%dxf32>' % e,
            "    %%l = moe.router_linear %%x, %%wg bias %%bg : (%s, tensor<%dx%dxf32>, tensor<%dxf32>) -> %s"
            % (xt, e, H, e, st),
            "    %%p = moe.softmax %%l : %s" % st,
            "    %%ti, %%tv = moe.top_p %%p {max_k = %d : i64, min_k = %d : i64, p = %s : f32, "
            "prefix = #moe.top_p_prefix<%s>} : %s -> %s"
            % (k, self.min_k, attr(self.p), self.prefix, st, kt),
            "    %%ids, %%w = moe.entropy_fallback %%p, %%ti, %%tv {q = %s : f32, threshold = %s : f32, "
            "epsilon = %s : f32%s} : %s, %s -> %s"
            % (attr(self.q), attr(self.threshold), attr(self.eps),
               ", normalized" if self.normalized else "", st, kt, et),
            ] + gated_experts_ir(e, e, i, H))
        path = os.path.join(d, "dynmole.mlir")
        with open(path, "w") as f:
            f.write(text)
        return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--backend", default="reference,emu")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    backends = args.backend.split(",")
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        for ci, (name, params) in enumerate(sorted(CASES.items())):
            rng = np.random.default_rng([args.seed, ci])
            case = DynMoLE(rng, **params)
            d = os.path.join(work, name)
            os.makedirs(d)
            ir = case.write(d)
            stats = {b: [0.0, 0.0] for b in backends}
            falls, total, fragile_n, counts = 0, 0, 0, set()
            errors = []
            for t in T_VALUES:
                x = rng.standard_normal((t, H)).astype(np.float32)
                ref_y, ref_ids, ref_w, fragile, fallback = case.forward(x)
                falls += int(fallback.sum())
                total += t
                fragile_n += int(fragile.sum())
                counts.update(int(c) for c in np.sum(ref_ids >= 0, axis=1))
                errors += run_and_compare(
                    args.bin, ir, x, d, backends, "%s T=%d" % (name, t),
                    (ref_y, ref_ids, ref_w, fragile), TOL_Y, TOL_W, stats)
            # Both branches and several counts must occur, or the case tests
            # less than it claims.
            if not 0 < falls < total:
                errors.append("%s: %d of %d tokens fall back (need some, not all)"
                              % (name, falls, total))
            if len(counts) < 3:
                errors.append("%s: expert counts per token %s (need 3 distinct)"
                              % (name, sorted(counts)))
            if fragile_n > max(2, 0.02 * total):
                errors.append("%s: %d tokens near a boundary" % (name, fragile_n))
            status = "FAIL" if errors else "ok"
            failures += bool(errors)
            print("%-4s %s: fallback %d/%d tokens, experts per token %s, "
                  "skipped near a boundary %d; %s"
                  % (status, name, falls, total, sorted(counts), fragile_n,
                     ", ".join("%s y_err %.2g w_err %.2g" % (b, s[0], s[1])
                               for b, s in stats.items())))
            for e in errors:
                print("  " + e)
    print("%d of %d DynMoLE cases match the numpy oracle" %
          (len(CASES) - failures, len(CASES)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
