#!/usr/bin/env python3
"""Read-ME (examples/read_me.mlir) against its formula.

Read-ME ("Read-ME: Refactorizing LLMs as Router-Decoupled Mixture of
Experts", Cai et al. 2024) decouples the router from the layers: a
pre-gating router picks each token's expert once, before the first layer,
and every layer applies that expert (top-1, weighted by its router
probability) plus an always-on FFN:

    p      = softmax(Wr x_0),   e = argmax p,   g = p[e]     (once)
    y_l    = g * E_{l,e}(v_l) + F_l(v_l)                     (every layer l)

with E_{l,e}(v) = down(silu(gate v) * up v) and F_l the same form with the
layer's shared weights. The layers are chained as `moe-run --all-layers`
chains them by default (pre-norm): v_l = rmsnorm(s_l), s_{l+1} = s_l + y_l,
s_0 = x; the router's x_0 is the first layer's input v_0.

This script writes random weights under the example's own tensor names,
runs the example file itself (its weight root pointed at them) with
`moe-run --all-layers` on the reference executor and the generated kernels
(emu), from the IR and from a package (`moe-compile --arch none`), and with
`--python` the package through the Python API's run_all and route(1, v_0)
(the pre-gating router, the layer having none of its own) on emu, at T in
{1, 7, 64, 300}, and compares with float64 numpy: every layer's experts
(`--routing-out PREFIX.L<l>`) equal the pre-gating router's on v_0, weights
within 1e-5, the output within 1e-5 relative. A router run on each layer's
own input would pick other experts for some tokens (checked, so the case
tells the two apart).

  read_me.py [--bin DIR] [--src DIR] [--seed N] [--python]
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layer_check import softmax_rows  # noqa: E402
from oracle_case import (Tally, example_ir, rmsnorm,  # noqa: E402
                         run_all_layers, token_batches)

TOL_Y = 1e-5
TOL_W = 1e-5
NEAR_TIE = 1e-6
E, H, I, S, LAYERS = 4, 64, 128, 128, 2
EXAMPLE = "examples/read_me.mlir"


def silu_ffn(v, gate, up, down):
    g = v @ gate.astype(np.float64).T
    u = v @ up.astype(np.float64).T
    return (g / (1.0 + np.exp(-g)) * u) @ down.astype(np.float64).T


class ReadME:
    def __init__(self, rng):
        s = 1 / math.sqrt(H)
        # Router rows scaled so that the top-1 is decided by real margins.
        self.router = (rng.standard_normal((E, H)) * 2.0 * s).astype(np.float32)
        f = np.float32
        self.layers = []
        for _ in range(LAYERS):
            self.layers.append(dict(
                gate=(rng.standard_normal((E, I, H)) * s).astype(f),
                up=(rng.standard_normal((E, I, H)) * s).astype(f),
                down=(rng.standard_normal((E, H, I)) / math.sqrt(I)).astype(f),
                s_gate=(rng.standard_normal((S, H)) * s).astype(f),
                s_up=(rng.standard_normal((S, H)) * s).astype(f),
                s_down=(rng.standard_normal((H, S)) / math.sqrt(S)).astype(f)))

    def tensors(self):
        t = {"router.weight": ("F32", self.router)}
        for l, w in enumerate(self.layers):
            p = "model.layers.%d.mlp." % l
            for e in range(E):
                t[p + "experts.%d.gate_proj.weight" % e] = ("F32", w["gate"][e])
                t[p + "experts.%d.up_proj.weight" % e] = ("F32", w["up"][e])
                t[p + "experts.%d.down_proj.weight" % e] = ("F32", w["down"][e])
            t[p + "shared.gate_proj.weight"] = ("F32", w["s_gate"])
            t[p + "shared.up_proj.weight"] = ("F32", w["s_up"])
            t[p + "shared.down_proj.weight"] = ("F32", w["s_down"])
        return t

    def pregate(self, v):
        """(ids [T, 1], weights [T, 1], rows near a tie)."""
        p = softmax_rows(v @ self.router.astype(np.float64).T)
        order = np.argsort(-p, axis=1, kind="stable")
        ids = order[:, :1]
        w = np.take_along_axis(p, ids, axis=1)
        top2 = -np.sort(-p, axis=1)[:, :2]
        return ids, w, top2[:, 0] - top2[:, 1] < NEAR_TIE

    def forward(self, x):
        """The chained output, the pre-gated (ids, weights), near-tie rows,
        and how many tokens a router on each layer's own input would move."""
        s = np.asarray(x, np.float64)
        ids, w, fragile = None, None, None
        moved = 0
        for l, lw in enumerate(self.layers):
            v = rmsnorm(s)
            if l == 0:
                ids, w, fragile = self.pregate(v)
            else:
                moved += int(np.sum(self.pregate(v)[0][:, 0] != ids[:, 0]))
            y = silu_ffn(v, lw["s_gate"], lw["s_up"], lw["s_down"])
            for e in range(E):
                rows = ids[:, 0] == e
                if rows.any():
                    y[rows] += w[rows] * silu_ffn(v[rows], lw["gate"][e],
                                                  lw["up"][e], lw["down"][e])
            s = s + y
        return s, ids, w, fragile, moved


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="")
    ap.add_argument("--src", default=os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "..", ".."))
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--python", action="store_true",
                    help="also run the package with moe_opt's run_all")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    model = ReadME(rng)
    runs = ("reference", "emu", "package-emu") + (
        ("python-run_all",) if args.python else ())
    tally, moved = Tally(runs), 0
    with tempfile.TemporaryDirectory() as d:
        ir, text = example_ir(
            args.src, EXAMPLE, d,
            ('moe.role = "pregate"', "{k = 1 : i64}", "tensor<4x128x64xf32>",
             "tensor<64x128xf32>"), model.tensors())
        if text.count("moe.layer = ") != LAYERS + 1:
            raise AssertionError("%s: expected %d layers and the pre-gating "
                                 "router" % (EXAMPLE, LAYERS))
        pkg = os.path.join(d, "pkg")
        r = subprocess.run([os.path.join(args.bin, "moe-compile"), ir, "--arch",
                            "none", "-q", "-o", pkg], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise AssertionError("moe-compile failed:\n%s" % r.stderr[-2000:])
        for t, x in token_batches(rng, H):
            ref_y, ref_ids, ref_w, fragile, m = model.forward(x)
            tally.tokens(fragile)
            moved += m
            for run in runs:
                if run == "python-run_all":
                    import moe_opt
                    package = moe_opt.load(pkg, backend="emu")
                    y = package.run_all(x)
                    # route(layer, v) of a layer without a router of its own
                    # runs the pre-gating router on v.
                    v = rmsnorm(np.asarray(x, np.float64)).astype(np.float32)
                    ids, w = package.route(1, v)
                    routings = [("python route T=%d" % t, ids, w)]
                else:
                    model_path, backend = ((pkg, "emu")
                                           if run == "package-emu"
                                           else (ir, run))
                    (y,), routing = run_all_layers(args.bin, model_path, x, d,
                                                   backend, LAYERS)
                    routings = [("%s T=%d layer %d" % (run, t, l), ids, w)
                                for l, (ids, w) in enumerate(routing)]
                for label, ids, w in routings:
                    tally.routing(run, label, ids, w, ref_ids, ref_w, fragile,
                                  TOL_W)
                tally.output(run, "%s T=%d" % (run, t), y, ref_y, fragile,
                             TOL_Y)
    if moved == 0:
        tally.errors.append("a router on layer 1's own input picks the same "
                            "experts for every token: the case cannot tell "
                            "pre-gating apart")
    tally.check_ties()
    ok = tally.report("read_me", "%d tokens, %d would move under a per-layer "
                      "router, skipped near a tie %d; %s"
                      % (tally.total, moved, tally.fragile, tally.runs_text()))
    print("%d of 1 Read-ME cases match the numpy oracle" % ok)
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
