#!/usr/bin/env python3
"""Cross-token routing checked against its formulas, in float64 numpy.

capacity (GShard, Switch, Tutel's capacity_factor): after a per-token top-k
selection (router softmax, top-k, optionally normalised), every expert e
takes at most C = ceil(capacity_factor * T * K / E) slots of the batch. The
slots are taken in Tutel's order (extract_critical: slot 0 of every token in
token order, then slot 1, ...); a slot past its expert's capacity is
dropped (id -1, weight 0) and the token keeps its other slots. Kept weights
are not renormalised unless the case normalises after the capacity.

Each case writes a layer (router, selection, the cross-token op, gated-SiLU
experts, no residual: a token whose slots are all dropped gives 0) and runs
it with `moe-run --backend reference` and `--backend emu` at T in
{1, 7, 64, 300}. Both must match this file's numpy implementation (expert
sets per token, weights within 1e-5, outputs within 1e-5 relative), and emu
must match reference exactly in expert sets (weights and outputs within
1e-5) on every token. Each case checks that it exercises what it claims
(slots dropped, and dropped in slot 0 as well as in later slots; empty
input slots in the threshold case).

sinkhorn (balanced assignment: S-BASE, Megatron-LM's Sinkhorn router):
over the batch's router logits S [T, E],

    P = exp((S - max_e S[t, e]) / epsilon)
    repeat iterations times:
        P[t, :] /= sum_e P[t, e]                 (each token's total 1)
        P[:, e] *= (T / E) / sum_t P[t, e]       (each expert's total T/E)

then a per-token top-k on P; the weights are the softmax probabilities of the
chosen experts (S-BASE), optionally renormalised, or P's values themselves.
Each case checks that the balancing changes the routing of some tokens and
lowers the most loaded expert's share against plain top-k.

  cross_token.py --method capacity|sinkhorn [--bin DIR] [--seed N] [-v]
"""
import argparse
import math
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_models import H, write_safetensors  # noqa: E402
from layer_check import (attr, compare, f32, gated_expert_tensors,  # noqa: E402
                         gated_experts_ir, gated_silu_experts, run_layer)

T_VALUES = (1, 7, 64, 300)
TOL_Y = 1e-5
TOL_W = 1e-5
# Scores this close decide a selection either way in float32.
NEAR_TIE = 1e-6

CAPACITY_CASES = {
    # GShard top-2: normalised top-2 gates, capacity factor 1.25; the router
    # prefers expert 0, so its capacity is exceeded by first slots alone.
    "gshard-top2": dict(experts=8, k=2, factor=1.25, normalize="before",
                        skew=(1.6, 0.9)),
    # Switch: top-1 with the router probability as weight, factor 1.0.
    "switch-top1": dict(experts=4, k=1, factor=1.0, normalize="none",
                        skew=(1.2,)),
    # Renormalised over the kept slots (moe.normalize after the capacity),
    # a factor below 1.
    "top2-renormalize": dict(experts=6, k=2, factor=0.75, normalize="after",
                             skew=(1.0, 0.5)),
    # moe.threshold leaves slots empty (id -1): they take no capacity.
    "threshold-top2": dict(experts=6, k=2, factor=1.0, normalize="none",
                           skew=(1.0,), threshold=0.22),
}


def expert_capacity(factor, tokens, k, experts):
    """C = ceil(capacity_factor * T * K / E), capacity_factor as an f32."""
    return int(math.ceil(f32(factor) * tokens * k / experts))


def apply_capacity(ids, w, factor, experts):
    """Tutel's order: slot 0 of every token in token order, then slot 1."""
    t, k = ids.shape
    ids, w = ids.copy(), w.copy()
    cap = expert_capacity(factor, t, k, experts)
    taken = np.zeros(experts, np.int64)
    dropped = np.zeros(k, np.int64)
    for s in range(k):
        for r in range(t):
            e = ids[r, s]
            if e < 0:
                continue
            if taken[e] < cap:
                taken[e] += 1
            else:
                ids[r, s], w[r, s] = -1, 0.0
                dropped[s] += 1
    assert (taken <= cap).all()
    return ids, w, dropped


class Layer:
    """Router + gated-SiLU experts shared by the cases."""

    def __init__(self, rng, experts, inter=32, skew=()):
        self.e, self.inter = experts, inter
        self.router = (rng.standard_normal((experts, H)) /
                       math.sqrt(H)).astype(np.float32)
        bias = rng.normal(0, 0.2, experts)
        bias[:len(skew)] += skew
        self.bias = bias.astype(np.float32)
        s = 1 / math.sqrt(H)
        self.gate = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.up = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.down = (rng.standard_normal((experts, H, inter)) /
                     math.sqrt(inter)).astype(np.float32)

    def logits(self, x):
        return (np.asarray(x, np.float64) @ self.router.astype(np.float64).T
                + self.bias.astype(np.float64))

    @staticmethod
    def softmax(l):
        z = np.exp(l - l.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def topk(self, scores, k):
        """ids, values, fragile (a near tie at the selection boundary)."""
        t = scores.shape[0]
        ids = np.zeros((t, k), np.int64)
        vals = np.zeros((t, k))
        fragile = np.zeros(t, bool)
        for r in range(t):
            order = sorted(range(self.e), key=lambda e: (-scores[r, e], e))
            ids[r] = order[:k]
            vals[r] = scores[r, order[:k]]
            v = scores[r, order[:min(k + 1, self.e)]]
            fragile[r] = np.any(np.abs(np.diff(v)) < NEAR_TIE)
        return ids, vals, fragile

    def experts_out(self, x, ids, w):
        return gated_silu_experts(x, self.gate, self.up, self.down, ids, w)

    def write(self, d, router_lines, k):
        tensors = {"router.weight": ("F32", self.router),
                   "router.bias": ("F32", self.bias)}
        tensors.update(gated_expert_tensors(self.gate, self.up, self.down))
        write_safetensors(os.path.join(d, "w.safetensors"), tensors)
        e, i = self.e, self.inter
        xt, st = "tensor<?x%dxf32>" % H, "tensor<?x%dxf32>" % e

        text = "\n".join([
            'module attributes {moe.weight_root = "%s"} {' % d,
            "  func.func @layer_0(%%x: %s) -> %s attributes {moe.layer = 0 : i64} {" % (xt, xt),
            '    %%wg = moe.weight ["router.weight"] from ["w.safetensors"] : tensor<%dx%dxf32>' % (e, H),
            '    %%bg = moe.weight ["router.bias"] from ["w.safetensors"] : tensor<%dxf32>' % e,
            "    %%l = moe.router_linear %%x, %%wg bias %%bg : (%s, tensor<%dx%dxf32>, tensor<%dxf32>) -> %s"
            % (xt, e, H, e, st)] + ["    " + l for l in router_lines] + [
            ] + gated_experts_ir(e, k, i, H))
        path = os.path.join(d, "layer.mlir")
        with open(path, "w") as f:
            f.write(text)
        return path


class Capacity:
    def __init__(self, rng, experts, k, factor, normalize, skew,
                 threshold=None):
        self.layer = Layer(rng, experts, skew=skew)
        self.e, self.k, self.factor, self.normalize = experts, k, f32(factor), normalize
        self.threshold = None if threshold is None else f32(threshold)

    def route(self, x):
        """ids [T, K], weights [T, K], fragile [T] (batch-wide), stats."""
        p = Layer.softmax(self.layer.logits(x))
        ids, v, fragile = self.layer.topk(p, self.k)
        empty = 0
        if self.threshold is not None:
            # moe.threshold: the top max_k scores above the threshold.
            low = v <= self.threshold
            fragile |= np.any(np.abs(v - self.threshold) < NEAR_TIE, axis=1)
            ids, v = np.where(low, -1, ids), np.where(low, 0.0, v)
            empty = int(low.sum())
        if self.normalize == "before":
            v = v / v.sum(axis=1, keepdims=True)
        ids, w, dropped = apply_capacity(ids, v, self.factor, self.e)
        if self.normalize == "after":
            s = w.sum(axis=1, keepdims=True)
            w = np.where(s > 0, w / np.where(s > 0, s, 1.0), 0.0)
        # A near tie changes one token's expert and with it the capacity left
        # for every later slot: the whole batch is then undecided.
        if fragile.any():
            fragile[:] = True
        return ids, w, fragile, np.append(dropped, empty)

    def router_lines(self):
        e, k = self.e, self.k
        st = "tensor<?x%dxf32>" % e
        kt = "tensor<?x%dxi32>, tensor<?x%dxf32>" % (k, k)
        if self.threshold is None:
            select = "moe.topk %%p {k = %d : i64}" % k
        else:
            select = "moe.threshold %%p {max_k = %d : i64, threshold = %s : f32}" % (
                k, attr(self.threshold))
        lines = ["%%p = moe.softmax %%l : %s" % st,
                 "%%ti, %%tv = %s : %s -> %s" % (select, st, kt)]
        v = "%tv"
        if self.normalize == "before":
            lines.append("%%tn = moe.normalize %%tv : tensor<?x%dxf32>" % k)
            v = "%tn"
        out = "%w" if self.normalize != "after" else "%cw"
        lines.append("%%ids, %s = moe.capacity %%ti, %s {capacity_factor = %s : f32, "
                     "num_experts = %d : i64} : tensor<?x%dxi32>, tensor<?x%dxf32>"
                     % (out, v, attr(self.factor), e, k, k))
        if self.normalize == "after":
            lines.append("%%w = moe.normalize %%cw : tensor<?x%dxf32>" % k)
        return lines

    def write(self, d):
        return self.layer.write(d, self.router_lines(), self.k)

    def forward(self, x):
        ids, w, fragile, dropped = self.route(x)
        return self.layer.experts_out(x, ids, w), ids, w, fragile, dropped


SINKHORN_CASES = {
    # S-BASE: top-1 on the balanced scores, weight the softmax probability;
    # a router biased towards two experts.
    "sbase-top1": dict(experts=8, k=1, iterations=8, epsilon=1.0,
                       weights="gather", skew=(1.5, 0.8)),
    # The balanced scores themselves as weights, a sharper temperature.
    "top2-values": dict(experts=6, k=2, iterations=3, epsilon=0.5,
                        weights="values", skew=(1.2,)),
    # One iteration, a softer temperature, gathered weights renormalised.
    "top2-gather-normalize": dict(experts=4, k=2, iterations=1, epsilon=2.0,
                                  weights="gather_normalize", skew=(1.0, 0.6)),
}
# P is stored as f32 after every step: top-k on P is decided within this
# relative distance of a tie.
NEAR_TIE_REL = 1e-5


def sinkhorn(logits, iterations, epsilon):
    p = np.exp((logits - logits.max(axis=1, keepdims=True)) / epsilon)
    t, e = p.shape
    for _ in range(iterations):
        rows = p.sum(axis=1, keepdims=True)
        p = np.where(rows > 0, p / np.where(rows > 0, rows, 1.0), p)
        cols = p.sum(axis=0, keepdims=True)
        p = np.where(cols > 0, p * (t / e) / np.where(cols > 0, cols, 1.0), p)
    return p


class Sinkhorn:
    def __init__(self, rng, experts, k, iterations, epsilon, weights, skew):
        self.layer = Layer(rng, experts, skew=skew)
        self.e, self.k, self.iterations = experts, k, iterations
        self.epsilon, self.weights = f32(epsilon), weights

    def route(self, x):
        # The kernels project in f32: start from the f32 logits.
        l = self.layer.logits(x)
        p = Layer.softmax(l)
        b = sinkhorn(l, self.iterations, self.epsilon)
        ids, v, _ = self.layer.topk(b, self.k)
        t = b.shape[0]
        fragile = np.zeros(t, bool)
        for r in range(t):
            top = np.sort(b[r])[::-1][:min(self.k + 1, self.e)]
            fragile[r] = np.any(np.abs(np.diff(top)) <=
                                NEAR_TIE_REL * max(top[0], 1e-30))
        if self.weights == "values":
            w = v
        else:
            w = np.take_along_axis(p, ids, axis=1)
            if self.weights == "gather_normalize":
                w = w / w.sum(axis=1, keepdims=True)
        # What the balancing changed: tokens routed differently from plain
        # top-k on the logits, and the most loaded expert's slots before
        # and after.
        plain, _, _ = self.layer.topk(l, self.k)
        changed = sum(set(plain[r]) != set(ids[r]) for r in range(t))
        load = lambda i: int(np.bincount(i.ravel(), minlength=self.e).max())
        return ids, w, fragile, np.array([changed, load(plain), load(ids)])

    def router_lines(self):
        e, k = self.e, self.k
        st = "tensor<?x%dxf32>" % e
        kt = "tensor<?x%dxi32>, tensor<?x%dxf32>" % (k, k)
        lines = ["%%p = moe.softmax %%l : %s" % st,
                 "%%b = moe.sinkhorn %%l {iterations = %d : i64, epsilon = %s : f32} : %s"
                 % (self.iterations, attr(self.epsilon), st)]
        if self.weights == "values":
            lines.append("%%ids, %%w = moe.topk %%b {k = %d : i64} : %s -> %s" % (k, st, kt))
            return lines
        lines.append("%%ids, %%v = moe.topk %%b {k = %d : i64} : %s -> %s" % (k, st, kt))
        g = "%w" if self.weights == "gather" else "%g"
        lines.append("%s = moe.gather_scores %%p, %%ids : %s, tensor<?x%dxi32> -> tensor<?x%dxf32>"
                     % (g, st, k, k))
        if self.weights == "gather_normalize":
            lines.append("%%w = moe.normalize %%g : tensor<?x%dxf32>" % k)
        return lines

    def write(self, d):
        return self.layer.write(d, self.router_lines(), self.k)

    def forward(self, x):
        ids, w, fragile, stats = self.route(x)
        return self.layer.experts_out(x, ids, w), ids, w, fragile, stats


METHODS = {"capacity": (Capacity, CAPACITY_CASES),
           "sinkhorn": (Sinkhorn, SINKHORN_CASES)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True, choices=sorted(METHODS))
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    cls, cases = METHODS[args.method]
    backends = ("reference", "emu")
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        for ci, (name, params) in enumerate(sorted(cases.items())):
            rng = np.random.default_rng([args.seed, ci])
            case = cls(rng, **params)
            d = os.path.join(work, name)
            os.makedirs(d)
            ir = case.write(d)
            stats = {b: [0.0, 0.0] for b in backends}
            skipped, total = 0, 0
            exercised = None
            errors = []
            for t in T_VALUES:
                x = rng.standard_normal((t, H)).astype(np.float32)
                ref_y, ref_ids, ref_w, fragile, extra = case.forward(x)
                exercised = extra if exercised is None else exercised + extra
                skipped += int(fragile.sum())
                total += t
                got = {}
                for b in backends:
                    y, [(ids, w)] = run_layer(args.bin, ir, x, d, b)
                    got[b] = (y, ids, w)
                    errs, ye, we = compare("%s %s T=%d" % (name, b, t), y, ids,
                                           w, ref_y, ref_ids, ref_w, fragile,
                                           TOL_Y, TOL_W)
                    errors += errs
                    stats[b][0] = max(stats[b][0], ye)
                    stats[b][1] = max(stats[b][1], we)
                # emu against reference: identical expert sets on every token.
                ry, rids, rw = got["reference"]
                ey, eids, ew = got["emu"]
                errors += compare("%s emu-vs-reference T=%d" % (name, t), ey,
                                  eids, ew, ry, rids, rw,
                                  np.zeros(t, bool), TOL_Y, TOL_W)[0]
                if args.v:
                    print("  %s T=%d: %s" % (name, t, extra))
            errors += case_exercised(args.method, name, exercised)
            if skipped > max(2, 0.02 * total):
                errors.append("%s: %d tokens near a tie" % (name, skipped))
            status = "FAIL" if errors else "ok"
            failures += bool(errors)
            print("%-4s %s: %s, skipped near a tie %d; %s"
                  % (status, name, describe(args.method, exercised), skipped,
                     ", ".join("%s y_err %.2g w_err %.2g" % (b, s[0], s[1])
                               for b, s in stats.items())))
            for e in errors:
                print("  " + e)
    print("%d of %d %s cases match the numpy oracle" %
          (len(cases) - failures, len(cases), args.method))
    return 1 if failures else 0


def describe(method, exercised):
    if method == "capacity":
        return "dropped slots per slot index %s, empty input slots %d" % (
            list(exercised[:-1]), exercised[-1])
    return ("balancing changed %d tokens, most loaded expert %d -> %d slots "
            "(summed over T)" % tuple(exercised))


def case_exercised(method, name, exercised):
    """The errors of a case that does not test what it claims."""
    if method == "capacity":
        dropped = exercised[:-1]
        if dropped[0] == 0 or (len(dropped) > 1 and dropped[1:].sum() == 0):
            return ["%s: dropped slots per slot index %s (need drops in slot 0 "
                    "and in later slots)" % (name, list(dropped))]
        if name.startswith("threshold") and exercised[-1] == 0:
            return ["%s: no empty input slot" % name]
    if method == "sinkhorn":
        changed, before, after = exercised
        if changed == 0 or after >= before:
            return ["%s: balancing changed %d tokens, most loaded expert %d -> "
                    "%d slots (need changes and a lower maximum)"
                    % (name, changed, before, after)]
    return []


if __name__ == "__main__":
    sys.exit(main())
