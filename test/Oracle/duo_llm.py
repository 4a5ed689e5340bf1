#!/usr/bin/env python3
"""Experts of unequal width (Duo-LLM) checked against the formula, in numpy.

Duo-LLM gives every FFN layer a small and a big module: a router over
{small, big, skip} picks one per token, the token goes through that module,
or through neither (skip: the layer adds nothing, the residual carries the
token). Module m of width w_m is its own FFN, with its own matrices:

    small/big(x) = W_down[H, w_m] . (silu(W_gate[w_m, H] x) * (W_up[w_m, H] x))

This file computes that from each module's own (unpadded) matrices in
float64; the IR stacks the modules at the widest width with
`moe.expert_ffn {widths = [...]}` and a null expert for skip. Three more cases
generalise it: three non-gated ReLU experts with biases (in_out weights,
top-2 of softmax, widths that end inside a tile), a fused interleaved
gate_up, and BF16 weights (the tensor cores) with a fused concatenated
gate_up stored in_out. In those three the padding of the stacked tensors
(weights and biases) is NaN: a kernel or the reference executor that reads
any of it returns NaN, so a finite output equal to the formula shows that
the padding is skipped.

Each case runs `moe-run --backend reference` and `--backend emu` at T in
{1, 7, 64, 300} (T * K <= 64 routed slots run the decode kernels, more the
grouped ones) and must match: the same experts per token, weights within
1e-5, outputs within 1e-5 relative.

  duo_llm.py [--bin DIR] [--seed N] [--backend reference,emu]
"""
import argparse
import math
import os
import sys
import tempfile

import numpy as np

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_models import H, bf16_round, write_safetensors  # noqa: E402
from layer_check import compare, run_layer  # noqa: E402

T_VALUES = (1, 7, 64, 300)
TOL_Y = 1e-5
TOL_W = 1e-5
NEAR_TIE = 1e-6  # router probabilities this close may swap in float32

CASES = {
    # Duo-LLM: small (32) and big (128) gated SiLU modules plus skip, top-1,
    # the chosen module's output as it is; per-module tensors on disk
    # (moe.weight zero-pads the small one into the stack).
    "duo-small-big-skip": dict(kind="gated", widths=(32, 128), stack=128,
                               k=1, skip=True, normalize=True, nan=False,
                               layout="out_in"),
    # Three non-gated ReLU experts with biases, in_out, top-2 of softmax
    # (weights not renormalised), widths ending inside a 64-wide tile and
    # below the stack (the widest is 96 of 128); NaN padding.
    "relu-in-out-nan": dict(kind="relu", widths=(20, 96, 40), stack=128, k=2,
                            skip=True, normalize=False, nan=True,
                            layout="in_out"),
    # A fused interleaved gate_up (gpt-oss's layout, out_in), top-2,
    # normalised, NaN padding.
    "gate-up-pairs-nan": dict(kind="gate_up", widths=(16, 64, 8, 40),
                              stack=64, k=2, skip=False, normalize=True,
                              nan=True, layout="out_in"),
    # BF16 weights (the grouped path's tensor cores; f32 activations, split
    # into bf16 terms, so f32 accuracy), a fused gate_up of concatenated
    # halves stored in_out, top-2 plus skip, NaN padding.
    "bf16-concat-in-out-nan": dict(kind="gate_up", widths=(48, 8, 72),
                                   stack=96, k=2, skip=True, normalize=False,
                                   nan=True, layout="in_out", dtype="BF16",
                                   gu_layout="concat"),
}


def silu(v):
    return v / (1.0 + np.exp(-v))


class Layer:
    def __init__(self, rng, kind, widths, stack, k, skip, normalize, nan,
                 layout, dtype="F32", gu_layout="interleaved"):
        self.dtype, self.gu_layout = dtype, gu_layout
        self.kind, self.widths, self.stack = kind, list(widths), stack
        self.k, self.skip, self.normalize = k, skip, normalize
        self.nan, self.layout = nan, layout
        self.e = len(widths)
        self.choices = self.e + (1 if skip else 0)
        self.router = (rng.standard_normal((self.choices, H)) * 2.0 /
                       math.sqrt(H)).astype(np.float32)
        s = 1 / math.sqrt(H)
        # Each module's own matrices, [w, H] and [H, w].
        self.mods = []
        for w in self.widths:
            m = {"up": (rng.standard_normal((w, H)) * s).astype(np.float32),
                 "down": (rng.standard_normal((H, w)) /
                          math.sqrt(w)).astype(np.float32)}
            if kind != "relu":
                m["gate"] = (rng.standard_normal((w, H)) * s).astype(np.float32)
            else:
                m["up_bias"] = rng.normal(0, 0.5, w).astype(np.float32)
                m["down_bias"] = rng.normal(0, 0.1, H).astype(np.float32)
            if dtype == "BF16":  # the formula uses the stored values
                m = {n: bf16_round(a) for n, a in m.items()}
            self.mods.append(m)

    # -- the formula --------------------------------------------------------
    def route(self, x):
        """ids [T, k] (-1: skip), weights [T, k], fragile [T]."""
        logits = np.asarray(x, np.float64) @ self.router.astype(np.float64).T
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = z / z.sum(axis=1, keepdims=True)
        t = p.shape[0]
        ids = np.full((t, self.k), -1, np.int64)
        w = np.zeros((t, self.k))
        fragile = np.zeros(t, bool)
        for r in range(t):
            order = sorted(range(self.choices), key=lambda c: (-p[r, c], c))
            top = order[:self.k]
            v = p[r, top]
            if self.normalize:
                v = v / v.sum()
            if self.k < self.choices and (
                    p[r, order[self.k - 1]] - p[r, order[self.k]] < NEAR_TIE):
                fragile[r] = True
            for s, (c, wv) in enumerate(zip(top, v)):
                if c < self.e:  # the skip choice computes nothing
                    ids[r, s], w[r, s] = c, wv
        return ids, w, fragile

    def module(self, m, x64):
        mod = self.mods[m]
        up = x64 @ mod["up"].astype(np.float64).T
        if self.kind == "relu":
            h = np.maximum(up + mod["up_bias"], 0.0)
        else:
            h = silu(x64 @ mod["gate"].astype(np.float64).T) * up
        out = h @ mod["down"].astype(np.float64).T
        if self.kind == "relu":
            out = out + mod["down_bias"]
        return out

    def forward(self, x):
        ids, w, fragile = self.route(x)
        x64 = np.asarray(x, np.float64)
        y = np.zeros_like(x64)
        for m in range(self.e):
            we = np.sum(np.where(ids == m, w, 0.0), axis=1)
            y += we[:, None] * self.module(m, x64)
        return y, ids, w, fragile

    # -- files ----------------------------------------------------------------
    def write(self, d):
        e, I, k = self.e, self.stack, self.k
        fill = np.nan if self.nan else 0.0
        tensors = {"router.weight": ("F32", self.router)}
        names = {}
        in_out = self.layout == "in_out"

        def mat(m, proj, w):
            """Module m's projection at the stacked width, [out, in]."""
            a = self.mods[m][proj]
            if proj == "down":
                full = np.full((H, I), fill, np.float32)
                full[:, :w] = a
            else:
                full = np.full((I, H), fill, np.float32)
                full[:w] = a
            return full.T.copy() if in_out else full

        if not self.nan:
            # Per-module tensors at their own width (no padding on disk).
            for m in range(e):
                for proj in self.mods[m]:
                    if proj.endswith("bias"):
                        continue
                    a = self.mods[m][proj]
                    tensors["m%d.%s" % (m, proj)] = (
                        self.dtype, a.T.copy() if in_out else a)
            for proj in ("gate", "up", "down"):
                names[proj] = ", ".join('"m%d.%s"' % (m, proj)
                                        for m in range(e))
        elif self.kind == "gate_up":
            gu = np.full((e, 2 * I, H), np.nan, np.float32)
            for m, w in enumerate(self.widths):
                if self.gu_layout == "interleaved":
                    # Pairs: row 2j is gate unit j, row 2j + 1 up unit j.
                    gu[m, 0:2 * w:2] = self.mods[m]["gate"]
                    gu[m, 1:2 * w:2] = self.mods[m]["up"]
                else:  # concat: gate rows [0, w), up rows [I, I + w)
                    gu[m, 0:w] = self.mods[m]["gate"]
                    gu[m, I:I + w] = self.mods[m]["up"]
            if in_out:
                gu = np.ascontiguousarray(gu.transpose(0, 2, 1))
            tensors["gate_up"] = (self.dtype, gu)
            tensors["down"] = (self.dtype, np.stack(
                [mat(m, "down", w) for m, w in enumerate(self.widths)]))
        else:
            for proj in ("up", "down"):
                tensors[proj] = (self.dtype, np.stack(
                    [mat(m, proj, w) for m, w in enumerate(self.widths)]))
        if self.kind == "relu":
            ub = np.full((e, I), fill, np.float32)
            for m, w in enumerate(self.widths):
                ub[m, :w] = self.mods[m]["up_bias"]
            tensors["up_bias"] = ("F32", ub)
            tensors["down_bias"] = ("F32", np.stack(
                [self.mods[m]["down_bias"] for m in range(e)]))
        write_safetensors(os.path.join(d, "w.safetensors"), tensors)

        c = self.choices
        xt, st = "tensor<?x%dxf32>" % H, "tensor<?x%dxf32>" % c
        it, wt = "tensor<?x%dxi32>" % k, "tensor<?x%dxf32>" % k
        wty = "bf16" if self.dtype == "BF16" else "f32"
        up_t = ("tensor<%dx%dx%dx%s>" % (e, H, I, wty) if in_out
                else "tensor<%dx%dx%dx%s>" % (e, I, H, wty))
        down_t = ("tensor<%dx%dx%dx%s>" % (e, I, H, wty) if in_out
                  else "tensor<%dx%dx%dx%s>" % (e, H, I, wty))
        gu_t = ("tensor<%dx%dx%dx%s>" % (e, H, 2 * I, wty) if in_out
                else "tensor<%dx%dx%dx%s>" % (e, 2 * I, H, wty))

        def weight(var, proj, ty):
            ref = names.get(proj, '"%s"' % proj)
            return ('    %%%s = moe.weight [%s] from ["w.safetensors"] : %s'
                    % (var, ref, ty))
        lines = [
            'module attributes {moe.weight_root = "%s"} {' % d,
            "  func.func @layer_0(%%x: %s) -> %s attributes {moe.layer = 0 : i64} {" % (xt, xt),
            '    %%wr = moe.weight ["router.weight"] from ["w.safetensors"] : tensor<%dx%dxf32>' % (c, H),
            "    %%l = moe.router_linear %%x, %%wr : (%s, tensor<%dx%dxf32>) -> %s" % (xt, c, H, st),
            "    %%p = moe.softmax %%l : %s" % st,
            "    %%ti, %%tv = moe.topk %%p {k = %d : i64} : %s -> %s, %s" % (k, st, it, wt),
        ]
        w = "%tv"
        if self.normalize:
            lines.append("    %%n = moe.normalize %%tv : %s" % wt)
            w = "%n"
        ids = "%ti"
        if self.skip:
            lines.append("    %%ids, %%w = moe.drop_null_experts %%ti, %s {num_experts = %d : i64} : %s, %s"
                         % (w, e, it, wt))
            ids, w = "%ids", "%w"
        lines += [
            "    %%c, %%o, %%rows = moe.dispatch %s {num_experts = %d : i64} : %s -> "
            "tensor<%dxi32>, tensor<%dxi32>, tensor<?xi32>" % (ids, e, it, e, e + 1),
            "    %%xs = moe.permute %%x, %%rows, %s : (%s, tensor<?xi32>, %s) -> %s" % (w, xt, wt, xt),
        ]
        widths = "widths = array<i64: %s>" % ", ".join(map(str, self.widths))
        if self.kind == "gated":
            lines += [weight("wg", "gate", up_t), weight("wu", "up", up_t),
                      weight("wd", "down", down_t),
                      "    %%ys = moe.expert_ffn %%xs, %%o gate(%%wg) up(%%wu) down(%%wd) "
                      "{activation = #moe.activation<silu>, %s} : (%s, tensor<%dxi32>, %s, %s, %s) -> %s"
                      % (widths, xt, e + 1, up_t, up_t, down_t, xt)]
        elif self.kind == "relu":
            lines += [weight("wu", "up", up_t), weight("wd", "down", down_t),
                      '    %%ub = moe.weight ["up_bias"] from ["w.safetensors"] : tensor<%dx%dxf32>' % (e, I),
                      '    %%db = moe.weight ["down_bias"] from ["w.safetensors"] : tensor<%dx%dxf32>' % (e, H),
                      "    %%ys = moe.expert_ffn %%xs, %%o non_gated up(%%wu) down(%%wd) up_bias(%%ub) down_bias(%%db) "
                      "{activation = #moe.activation<relu>, weight_layout = #moe.weight_layout<%s>, %s} : "
                      "(%s, tensor<%dxi32>, %s, %s, tensor<%dx%dxf32>, tensor<%dx%dxf32>) -> %s"
                      % (self.layout, widths, xt, e + 1, up_t, down_t, e, I, e, H, xt)]
        else:
            lines += [weight("wgu", "gate_up", gu_t), weight("wd", "down", down_t),
                      "    %%ys = moe.expert_ffn %%xs, %%o gate_up(%%wgu) down(%%wd) "
                      "{activation = #moe.activation<silu>, gate_up_layout = #moe.gate_up_layout<%s>, "
                      "weight_layout = #moe.weight_layout<%s>, %s} : "
                      "(%s, tensor<%dxi32>, %s, %s) -> %s"
                      % (self.gu_layout, self.layout, widths, xt, e + 1, gu_t,
                         down_t, xt)]
        lines += [
            "    %%y = moe.combine %%ys, %%rows, %s : (%s, tensor<?xi32>, %s) -> %s" % (w, xt, wt, xt),
            "    return %%y : %s" % xt,
            "  }",
            "}",
            ""]
        path = os.path.join(d, "layer.mlir")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--backend", default="reference,emu")
    args = ap.parse_args()
    backends = args.backend.split(",")
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        for ci, (name, params) in enumerate(sorted(CASES.items())):
            rng = np.random.default_rng([args.seed, ci])
            case = Layer(rng, **params)
            d = os.path.join(work, name)
            os.makedirs(d)
            ir = case.write(d)
            worst = {b: 0.0 for b in backends}
            chosen, errors, fragile_n, total = set(), [], 0, 0
            for t in T_VALUES:
                x = rng.standard_normal((t, H)).astype(np.float32)
                ref_y, ref_ids, ref_w, fragile = case.forward(x)
                fragile_n += int(fragile.sum())
                total += t
                chosen.update(int(c) for c in ref_ids.flatten())
                for b in backends:
                    y, [(ids, w)] = run_layer(args.bin, ir, x, d, b)
                    errs, ye, _ = compare("%s %s T=%d" % (name, b, t), y, ids,
                                          w, ref_y, ref_ids, ref_w, fragile,
                                          TOL_Y, TOL_W)
                    errors += errs
                    worst[b] = max(worst[b], ye)
            # Every expert (and skip, where there is one) must be chosen, or
            # the case tests less than it claims.
            want = set(range(case.e)) | ({-1} if case.skip else set())
            if not want <= chosen:
                errors.append("%s: choices %s, need %s"
                              % (name, sorted(chosen), sorted(want)))
            if fragile_n > max(2, 0.02 * total):
                errors.append("%s: %d tokens near a tie" % (name, fragile_n))
            status = "FAIL" if errors else "ok"
            failures += bool(errors)
            print("%-4s %s: widths %s of %d%s, skipped near a tie %d; %s"
                  % (status, name, case.widths, case.stack,
                     ", NaN padding" if case.nan else "", fragile_n,
                     ", ".join("%s y_err %.2g" % (b, v)
                               for b, v in worst.items())))
            for e in errors:
                print("  " + e)
    print("%d of %d unequal-width cases match the numpy oracle"
          % (len(CASES) - failures, len(CASES)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
