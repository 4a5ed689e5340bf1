# Routing methods of the seed papers, written as hand-made moe IR (from a
# template, weights in a safetensors file next to it) and implemented again
# in float64 numpy from the op semantics of docs/dialect.md:
#   AdaMoE null experts   moe.topk over E+N, moe.normalize, moe.drop_null_experts
#   top-p                 moe.top_p, moe.normalize
#   BlockFFN              moe.relu, moe.rms_norm (weight), moe.threshold 0, max_k = E;
#                         non-gated experts down(silu(up x)) (moe.expert_ffn non_gated)
#   Switch / T5           moe.softmax, moe.topk, the probability as the weight (no
#                         renormalisation); non-gated experts wo(act(wi x + bi)) + bo,
#                         act relu or gelu; optionally a non-gated shared expert
#   expert choice         moe.softmax, moe.expert_choice (capacity)
#   exact ties            moe.topk / moe.expert_choice on identical router rows
#                         or identical tokens: the lower index must win
#   masked softmax        moe.threshold on the logits, moe.softmax of its values:
#                         softmax over the real slots, empty slots weigh 0
#   expert choice, then   moe.expert_choice, moe.normalize over the slots each
#   normalize             token got (a router op after the cross-token one)

import math
import os
from math import erf

import numpy as np

from hf_models import (H, MARGIN, ROUTER_SCALE, TINY, Routing, combine, glu,
                       softmax, topk_rows, write_safetensors)

WEIGHTS = "seed.safetensors"


def _f32(v):
    """A float attribute exactly as MLIR will hold it (f32)."""
    return float(np.float32(v))


def _attr(v):
    return "%.9e" % _f32(v)


# Activations of the non-gated experts, as the papers write them (gelu: the
# erf form of Hendrycks & Gimpel; gelu_tanh: its tanh approximation).
def _gelu(v):
    return 0.5 * v * (1.0 + np.vectorize(erf)(v / math.sqrt(2.0)))


def _gelu_tanh(v):
    c = math.sqrt(2.0 / math.pi)
    return 0.5 * v * (1.0 + np.tanh(c * (v + 0.044715 * v ** 3)))


ACTIVATIONS = {"silu": lambda v: v / (1.0 + np.exp(-v)),
               "relu": lambda v: np.maximum(v, 0.0),
               "gelu": _gelu, "gelu_tanh": _gelu_tanh}


class SeedCase:
    """One routing method over E experts of width I.

    method: topk | adamoe | top_p | blockffn | expert_choice | switch
    expert: "glu" (gated SiLU: down(silu(gate x) * up x)) or the activation
      of a non-gated expert down(act(up x + b_up)) + b_down (BlockFFN: silu
      without biases, the default of method blockffn; Switch/T5: relu or
      gelu, with biases when `bias`).
    shared: activation of one non-gated shared expert added to every token
      (None: no shared expert).
    tie_experts: pairs (a, b): expert b gets the router row and bias of a.
    tie_tokens: every odd token repeats the token before it.
    """

    def __init__(self, rng, method, experts=8, inter=64, nulls=0, k=2, p=0.7,
                 max_k=3, capacity=16, router_bias=None, eps=1e-6,
                 tie_experts=(), tie_tokens=False, expert=None, bias=False,
                 shared=None):
        if expert is None:
            expert = "silu" if method == "blockffn" else "glu"
        self.expert, self.has_bias, self.shared = expert, bias, shared
        self.method, self.experts, self.inter = method, experts, inter
        self.nulls, self.k, self.p, self.max_k = nulls, k, p, max_k
        self.capacity, self.eps, self.tie_tokens = capacity, eps, tie_tokens
        n = experts + nulls
        self.router = (rng.standard_normal((n, H)) * ROUTER_SCALE).astype(np.float32)
        bias = rng.normal(0.0, 0.3, size=n)
        for idx, val in (router_bias or {}).items():
            bias[idx] = val
            if abs(val) >= 5:  # a pinned expert: its row no longer matters
                self.router[idx] = 0.0
        self.bias = bias.astype(np.float32)
        for a, b in tie_experts:
            self.router[b] = self.router[a]
            self.bias[b] = self.bias[a]
        s = 1 / math.sqrt(H)
        self.gate = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.up = (rng.standard_normal((experts, inter, H)) * s).astype(np.float32)
        self.down = (rng.standard_normal((experts, H, inter)) /
                     math.sqrt(inter)).astype(np.float32)
        self.norm_weight = rng.uniform(0.5, 1.5, size=experts).astype(np.float32)
        # Drawn after the tensors above so that the gated cases keep their
        # weights.
        self.up_bias = rng.normal(0.0, 0.5, (experts, inter)).astype(np.float32)
        self.down_bias = rng.normal(0.0, 0.5, (experts, H)).astype(np.float32)
        self.shared_up = (rng.standard_normal((inter, H)) * s).astype(np.float32)
        self.shared_down = (rng.standard_normal((H, inter)) /
                            math.sqrt(inter)).astype(np.float32)

    def gated(self):
        return self.expert == "glu"

    # -- files --------------------------------------------------------------
    def write(self, directory):
        os.makedirs(directory, exist_ok=True)
        tensors = {"router.weight": ("F32", self.router),
                   "router.bias": ("F32", self.bias)}
        if self.method == "blockffn":
            tensors["router_norm.weight"] = ("F32", self.norm_weight)
        for e in range(self.experts):
            if self.gated():
                tensors["experts.%d.gate_proj.weight" % e] = ("F32", self.gate[e])
            tensors["experts.%d.up_proj.weight" % e] = ("F32", self.up[e])
            tensors["experts.%d.down_proj.weight" % e] = ("F32", self.down[e])
            if self.has_bias:
                tensors["experts.%d.up_proj.bias" % e] = ("F32", self.up_bias[e])
                tensors["experts.%d.down_proj.bias" % e] = ("F32", self.down_bias[e])
        if self.shared:
            tensors["shared.up_proj.weight"] = ("F32", self.shared_up)
            tensors["shared.down_proj.weight"] = ("F32", self.shared_down)
        write_safetensors(os.path.join(directory, WEIGHTS), tensors)
        path = os.path.join(directory, "seed.mlir")
        with open(path, "w") as f:
            f.write(self.ir(os.path.abspath(directory)))
        return path

    def prepare_input(self, x):
        x = np.array(x, dtype=np.float32)
        if self.tie_tokens:
            x[1::2] = x[0:x.shape[0] - 1:2][:x[1::2].shape[0]]
        return x

    def slots(self):
        return {"topk": self.k, "adamoe": self.k, "top_p": self.max_k,
                "blockffn": self.experts, "expert_choice": self.experts,
                "switch": self.k,
                "threshold_softmax": self.max_k,
                "expert_choice_normalize": self.experts}[self.method]

    def ir(self, root):
        e, n, i, k = self.experts, self.experts + self.nulls, self.inter, self.slots()
        xt = "tensor<?x%dxf32>" % H
        st = "tensor<?x%dxf32>" % n
        it, wt = "tensor<?x%dxi32>" % k, "tensor<?x%dxf32>" % k
        lines = [
            "// Generated by test/Oracle/seed_methods.py (%s)." % self.method,
            'module attributes {moe.weight_root = "%s"} {' % root,
            "  func.func @layer_0(%%x: %s) -> %s attributes {moe.layer = 0 : i64} {" % (xt, xt),
            '    %%wg = moe.weight ["router.weight"] from ["%s"] : tensor<%dx%dxf32>' % (WEIGHTS, n, H),
            '    %%bg = moe.weight ["router.bias"] from ["%s"] : tensor<%dxf32>' % (WEIGHTS, n),
            "    %%logits = moe.router_linear %%x, %%wg bias %%bg : (%s, tensor<%dx%dxf32>, tensor<%dxf32>) -> %s"
            % (xt, n, H, n, st),
        ]
        if self.method == "topk":
            lines += [
                "    %%p = moe.softmax %%logits : %s" % st,
                "    %%ids, %%vals = moe.topk %%p {k = %d : i64} : %s -> %s, %s" % (k, st, it, wt),
                "    %%w = moe.normalize %%vals : %s" % wt,
            ]
        elif self.method == "adamoe":
            lines += [
                "    %%p = moe.softmax %%logits : %s" % st,
                "    %%ids0, %%vals = moe.topk %%p {k = %d : i64} : %s -> %s, %s" % (k, st, it, wt),
                "    %%n = moe.normalize %%vals : %s" % wt,
                "    %%ids, %%w = moe.drop_null_experts %%ids0, %%n {num_experts = %d : i64} : %s, %s"
                % (e, it, wt),
            ]
        elif self.method == "top_p":
            lines += [
                "    %%p = moe.softmax %%logits : %s" % st,
                "    %%ids, %%vals = moe.top_p %%p {max_k = %d : i64, p = %s : f32} : %s -> %s, %s"
                % (k, _attr(self.p), st, it, wt),
                "    %%w = moe.normalize %%vals : %s" % wt,
            ]
        elif self.method == "blockffn":
            lines += [
                "    %%r = moe.relu %%logits : %s" % st,
                '    %%g = moe.weight ["router_norm.weight"] from ["%s"] : tensor<%dxf32>' % (WEIGHTS, e),
                "    %%s = moe.rms_norm %%r weight %%g : tensor<%dxf32> {epsilon = %s : f32} : %s"
                % (e, _attr(self.eps), st),
                "    %%ids, %%w = moe.threshold %%s {max_k = %d : i64, threshold = 0.000000e+00 : f32} : %s -> %s, %s"
                % (e, st, it, wt),
            ]
        elif self.method == "expert_choice":
            lines += [
                "    %%p = moe.softmax %%logits : %s" % st,
                "    %%ids, %%w = moe.expert_choice %%p {capacity = %d : i64} : %s -> %s, %s"
                % (self.capacity, st, it, wt),
            ]
        elif self.method == "switch":
            lines += [
                "    %%p = moe.softmax %%logits : %s" % st,
                "    %%ids, %%w = moe.topk %%p {k = %d : i64} : %s -> %s, %s" % (k, st, it, wt),
            ]
        elif self.method == "threshold_softmax":
            lines += [
                "    %%ids, %%vals = moe.threshold %%logits {max_k = %d : i64, threshold = 0.000000e+00 : f32} : %s -> %s, %s"
                % (k, st, it, wt),
                "    %%w = moe.softmax %%vals : %s" % wt,
            ]
        elif self.method == "expert_choice_normalize":
            lines += [
                "    %%p = moe.softmax %%logits : %s" % st,
                "    %%ids, %%v = moe.expert_choice %%p {capacity = %d : i64} : %s -> %s, %s"
                % (self.capacity, st, it, wt),
                "    %%w = moe.normalize %%v : %s" % wt,
            ]
        else:
            raise ValueError(self.method)

        def stack(proj, kind="weight"):
            return ", ".join('"experts.%d.%s.%s"' % (x, proj, kind) for x in range(e))
        gt, dt = "tensor<%dx%dx%dxf32>" % (e, i, H), "tensor<%dx%dx%dxf32>" % (e, H, i)
        ubt, dbt = "tensor<%dx%dxf32>" % (e, i), "tensor<%dx%dxf32>" % (e, H)
        lines += [
            "    %%counts, %%offsets, %%rows = moe.dispatch %%ids {num_experts = %d : i64} : %s -> tensor<%dxi32>, tensor<%dxi32>, tensor<?xi32>"
            % (e, it, e, e + 1),
            "    %%xs = moe.permute %%x, %%rows, %%w : (%s, tensor<?xi32>, %s) -> %s" % (xt, wt, xt),
        ]
        if self.gated():
            lines += [
                '    %%w_gate = moe.weight [%s] from ["%s"] : %s' % (stack("gate_proj"), WEIGHTS, gt),
                '    %%w_up = moe.weight [%s] from ["%s"] : %s' % (stack("up_proj"), WEIGHTS, gt),
                '    %%w_down = moe.weight [%s] from ["%s"] : %s' % (stack("down_proj"), WEIGHTS, dt),
                "    %%ys = moe.expert_ffn %%xs, %%offsets gate(%%w_gate) up(%%w_up) down(%%w_down) "
                "{activation = #moe.activation<silu>} : (%s, tensor<%dxi32>, %s, %s, %s) -> %s"
                % (xt, e + 1, gt, gt, dt, xt),
            ]
        else:
            lines += [
                '    %%w_up = moe.weight [%s] from ["%s"] : %s' % (stack("up_proj"), WEIGHTS, gt),
                '    %%w_down = moe.weight [%s] from ["%s"] : %s' % (stack("down_proj"), WEIGHTS, dt),
            ]
            biases, btypes = "", ""
            if self.has_bias:
                lines += [
                    '    %%b_up = moe.weight [%s] from ["%s"] : %s' % (stack("up_proj", "bias"), WEIGHTS, ubt),
                    '    %%b_down = moe.weight [%s] from ["%s"] : %s' % (stack("down_proj", "bias"), WEIGHTS, dbt),
                ]
                biases, btypes = " up_bias(%b_up) down_bias(%b_down)", ", %s, %s" % (ubt, dbt)
            lines += [
                "    %%ys = moe.expert_ffn %%xs, %%offsets non_gated up(%%w_up) down(%%w_down)%s "
                "{activation = #moe.activation<%s>} : (%s, tensor<%dxi32>, %s, %s%s) -> %s"
                % (biases, self.expert, xt, e + 1, gt, dt, btypes, xt),
            ]
        lines += [
            "    %%y = moe.combine %%ys, %%rows, %%w : (%s, tensor<?xi32>, %s) -> %s" % (xt, wt, xt),
        ]
        result = "%y"
        if self.shared:
            st_up, st_down = "tensor<%dx%dxf32>" % (i, H), "tensor<%dx%dxf32>" % (H, i)
            lines += [
                '    %%s_up = moe.weight ["shared.up_proj.weight"] from ["%s"] : %s' % (WEIGHTS, st_up),
                '    %%s_down = moe.weight ["shared.down_proj.weight"] from ["%s"] : %s' % (WEIGHTS, st_down),
                "    %%sh = moe.ffn %%x non_gated up(%%s_up) down(%%s_down) "
                "{activation = #moe.activation<%s>} : (%s, %s, %s) -> %s"
                % (self.shared, xt, st_up, st_down, xt),
                "    %%out = arith.addf %%y, %%sh : %s" % xt,
            ]
            result = "%out"
        lines += [
            "    return %s : %s" % (result, xt),
            "  }",
            "}",
            "",
        ]
        return "\n".join(lines)

    # -- oracle -------------------------------------------------------------
    def routing(self, x):
        x = np.asarray(x, dtype=np.float64)
        logits = x @ self.router.astype(np.float64).T + self.bias.astype(np.float64)
        t = x.shape[0]
        if self.method == "topk":
            p = softmax(logits)
            ids, vals, _ = topk_rows(p, self.k)
            _, _, margin = topk_rows(logits, self.k)
            ps = -np.sort(-logits, axis=1)
            r = Routing(ids, vals / vals.sum(axis=1, keepdims=True), margin < MARGIN,
                        tiny=p < TINY)
            r.info["exact_ties"] = int(np.sum(ps[:, self.k - 1] == ps[:, self.k]))
            return r
        if self.method == "adamoe":
            p = softmax(logits)
            ids, vals, _ = topk_rows(p, self.k)
            _, _, margin = topk_rows(logits, self.k)
            w = vals / vals.sum(axis=1, keepdims=True)
            null = ids >= self.experts  # take part in the sum, compute nothing
            ids = np.where(null, -1, ids)
            w = np.where(null, 0.0, w)
            return Routing(ids, w, margin < MARGIN)
        if self.method == "top_p":
            p = softmax(logits)
            order = np.argsort(-p, axis=1, kind="stable")
            ps = np.take_along_axis(p, order, axis=1)
            cum = np.cumsum(ps, axis=1)
            target = _f32(self.p)
            # shortest prefix whose mass reaches p, at least one, at most max_k
            count = np.minimum((cum < target).sum(axis=1) + 1, self.max_k)
            count = np.minimum(count, p.shape[1])
            ids = np.full((t, self.max_k), -1)
            w = np.zeros((t, self.max_k))
            fragile = np.zeros(t, dtype=bool)
            for r in range(t):
                c = int(count[r])
                ids[r, :c] = order[r, :c]
                w[r, :c] = ps[r, :c] / ps[r, :c].sum()
                lim = min(self.max_k, p.shape[1])
                fragile[r] = (np.any(np.abs(cum[r, :lim] - target) < MARGIN) or
                              (c < p.shape[1] and ps[r, c - 1] - ps[r, c] < MARGIN * 0.1))
            return Routing(ids, w, fragile)
        if self.method == "blockffn":
            relu = np.maximum(logits, 0.0)
            rms = np.sqrt(np.mean(relu * relu, axis=1, keepdims=True) + _f32(self.eps))
            s = relu / rms * self.norm_weight.astype(np.float64)
            order = np.argsort(-s, axis=1, kind="stable")
            ss = np.take_along_axis(s, order, axis=1)
            ids = np.where(ss > 0.0, order, -1)
            w = np.where(ss > 0.0, ss, 0.0)
            return Routing(ids, w, np.any(np.abs(logits) < MARGIN, axis=1))
        if self.method == "expert_choice":
            p = softmax(logits)
            e = p.shape[1]
            ids = np.full((t, e), -1)
            w = np.zeros((t, e))
            fragile = np.zeros(t, dtype=bool)
            ties = 0
            for col in range(e):
                order = np.argsort(-p[:, col], kind="stable")
                chosen = order[:min(self.capacity, t)]
                ids[chosen, col] = col
                w[chosen, col] = p[chosen, col]
                if t > self.capacity:
                    a, b = order[self.capacity - 1], order[self.capacity]
                    if 0.0 < p[a, col] - p[b, col] < MARGIN * 0.1:
                        fragile[a] = fragile[b] = True
                    ties += int(p[a, col] == p[b, col])
            r = Routing(ids, w, fragile)
            r.info["exact_ties"] = ties
            r.info["slot_is_expert"] = True
            return r
        if self.method == "switch":
            # Switch Transformer (Fedus et al.): p = softmax(W_r x); the
            # token goes to its top-k experts, each output scaled by its
            # probability p_i (not renormalised over the k).
            p = softmax(logits)
            ids, vals, _ = topk_rows(p, self.k)
            _, _, margin = topk_rows(logits, self.k)
            return Routing(ids, vals, margin < MARGIN, tiny=p < TINY)
        if self.method == "threshold_softmax":
            # Every logit > 0, best first, at most max_k; softmax over those
            # slots alone (empty slots weigh exactly 0).
            order = np.argsort(-logits, axis=1, kind="stable")
            ls = np.take_along_axis(logits, order, axis=1)[:, :self.max_k]
            real = ls > 0.0
            ids = np.where(real, order[:, :self.max_k], -1)
            m = np.max(np.where(real, ls, -np.inf), axis=1, keepdims=True)
            m = np.where(np.isfinite(m), m, 0.0)
            e = np.where(real, np.exp(ls - m), 0.0)
            total = e.sum(axis=1, keepdims=True)
            w = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
            lim = min(self.max_k + 1, logits.shape[1])
            cut = -np.sort(-logits, axis=1)[:, :lim]
            fragile = (np.any(np.abs(logits) < MARGIN, axis=1) |
                       (np.abs(cut[:, self.max_k - 1] - cut[:, lim - 1]) < MARGIN
                        if lim > self.max_k else False))
            return Routing(ids, w, fragile)
        if self.method == "expert_choice_normalize":
            self.method = "expert_choice"
            try:
                r = self.routing(x)
            finally:
                self.method = "expert_choice_normalize"
            # Each token's chosen slots divided by their sum (empty slots
            # hold 0 and stay 0; a token nobody chose stays all 0).
            total = r.weights.sum(axis=1, keepdims=True)
            r.weights = np.divide(r.weights, total,
                                  out=np.zeros_like(r.weights),
                                  where=total > 0)
            return r
        raise ValueError(self.method)

    def block(self, x):
        x = np.asarray(x, dtype=np.float64)
        r = self.routing(x)

        def fn(e, xs):
            if self.gated():
                return glu(xs, self.gate[e].astype(np.float64),
                           self.up[e].astype(np.float64),
                           self.down[e].astype(np.float64))
            # BlockFFN: E_e(x) = W_down,e silu(W_up,e x); Switch/T5 FFN:
            # W_o act(W_i x + b_i) + b_o.
            act = ACTIVATIONS[self.expert]
            a = xs @ self.up[e].astype(np.float64).T
            if self.has_bias:
                a = a + self.up_bias[e].astype(np.float64)
            out = act(a) @ self.down[e].astype(np.float64).T
            if self.has_bias:
                out = out + self.down_bias[e].astype(np.float64)
            return out
        y = combine(x, r, fn)
        if y is None:
            y = np.zeros_like(x)
        if self.shared:
            act = ACTIVATIONS[self.shared]
            y = y + act(x @ self.shared_up.astype(np.float64).T) @ \
                self.shared_down.astype(np.float64).T
        counts = np.array([(r.ids == e).sum() for e in range(self.experts)])
        r.info["tokens_per_expert"] = counts.tolist()
        return y, r


# name -> (method, keyword arguments). Edge cases: an expert that never gets
# a token, one that gets every token, tokens that get no expert at all.
SEED_CASES = {
    "adamoe": ("adamoe", dict(experts=8, nulls=4, k=3)),
    # Null experts are favoured (some tokens pick only nulls and output 0);
    # expert 5 is never chosen.
    "adamoe-edge": ("adamoe", dict(experts=8, nulls=4, k=2,
                                   router_bias={8: 1.2, 9: 1.2, 10: 1.2, 11: 1.2,
                                                5: -30.0})),
    "top-p": ("top_p", dict(experts=8, p=0.7, max_k=4)),
    # Expert 0 takes every token (mostly alone), expert 7 none.
    "top-p-edge": ("top_p", dict(experts=8, p=0.5, max_k=3,
                                 router_bias={0: 8.0, 7: -30.0})),
    "blockffn": ("blockffn", dict(experts=8)),
    # Expert 0 active on every token, expert 7 on none.
    "blockffn-edge": ("blockffn", dict(experts=8,
                                       router_bias={0: 30.0, 7: -30.0})),
    # Every logit shifted down: most tokens activate no expert (output 0).
    "blockffn-sparse": ("blockffn", dict(experts=8, router_bias={
        i: -2.5 for i in range(8)})),
    # capacity 16: with T = 1 or 7 every expert takes every token; with
    # T = 64 or 300 tokens are dropped (some get no expert).
    "expert-choice": ("expert_choice", dict(experts=8, capacity=16)),
    # Exact ties: router rows 2 = 3 and 5 = 6 (top-2 often splits a pair:
    # the lower expert index must win); tokens repeated in pairs with an odd
    # capacity, so every expert's cut splits a pair (lower token wins).
    "topk-ties": ("topk", dict(experts=8, k=2, tie_experts=((2, 3), (5, 6)))),
    "expert-choice-ties": ("expert_choice", dict(experts=8, capacity=15,
                                                 tie_tokens=True)),
    # Issue 10: a softmax over a variable-k selection gives its empty slots
    # weight 0 (masked); a router op after expert choice.
    "threshold-softmax": ("threshold_softmax", dict(experts=8, max_k=3)),
    "expert-choice-normalize": ("expert_choice_normalize",
                                dict(experts=8, capacity=16)),
}


# Non-gated experts (issue 14 item 3), run on the reference and on emu:
# BlockFFN's real experts; Switch/T5 experts with biases, top-1 (relu) and
# top-2 (gelu) plus a non-gated shared expert (gelu_tanh, moe.ffn non_gated).
NONGATED_CASES = {
    "blockffn-nongated": ("blockffn", dict(experts=8, expert="silu")),
    # Widths other than H (64): 96 = one and a half grouped tiles, 40 less
    # than one.
    "switch-relu": ("switch", dict(experts=8, k=1, inter=96, expert="relu",
                                   bias=True)),
    "switch-gelu-shared": ("switch", dict(experts=8, k=2, inter=40,
                                          expert="gelu", bias=True,
                                          shared="gelu_tanh")),
}


def make_seed_case(rng, name):
    method, kwargs = {**SEED_CASES, **NONGATED_CASES}[name]
    return SeedCase(rng, method, **kwargs)
