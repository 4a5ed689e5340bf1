#!/usr/bin/env python3
"""Writes a layer of experts of unequal width for the expert passes' tests.

  widths_model.py DIR [STACK]

DIR/model.mlir: softmax router over 4 experts, top-2, normalised, gated
SiLU experts of widths 16, 64, 40, 24 stacked at STACK (default 64; f32,
out_in), one
stacked tensor per projection in DIR/model.safetensors whose padding is
NaN; DIR/x.npy: 24 tokens. A pass that mixes padding into an expert (or
slices the widths wrongly) makes the layer's output NaN or changes it.
"""
import math
import os
import sys

import numpy as np

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "Oracle"))
from hf_models import write_safetensors  # noqa: E402

H, E, K = 64, 4, 2
WIDTHS = (16, 64, 40, 24)


def main():
    d = sys.argv[1]
    I = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(11)
    s = 1 / math.sqrt(H)
    gate = np.full((E, I, H), np.nan, np.float32)
    up = np.full((E, I, H), np.nan, np.float32)
    down = np.full((E, H, I), np.nan, np.float32)
    for e, w in enumerate(WIDTHS):
        gate[e, :w] = rng.standard_normal((w, H)) * s
        up[e, :w] = rng.standard_normal((w, H)) * s
        down[e, :, :w] = rng.standard_normal((H, w)) / math.sqrt(w)
    router = (rng.standard_normal((E, H)) * s).astype(np.float32)
    write_safetensors(os.path.join(d, "model.safetensors"), {
        "router": ("F32", router), "gate": ("F32", gate), "up": ("F32", up),
        "down": ("F32", down)})
    np.save(os.path.join(d, "x.npy"),
            rng.standard_normal((24, H)).astype(np.float32))
    wt = "tensor<%dx%dx%dxf32>" % (E, I, H)
    dt = "tensor<%dx%dx%dxf32>" % (E, H, I)
    x, sc = "tensor<?x%dxf32>" % H, "tensor<?x%dxf32>" % E
    kt = "tensor<?x%dxi32>, tensor<?x%dxf32>" % (K, K)
    text = "\n".join([
        'module attributes {moe.weight_root = "%s"} {' % os.path.abspath(d),
        "  func.func @layer_0(%%x: %s) -> %s attributes {moe.layer = 0 : i64} {" % (x, x),
        '    %%wr = moe.weight ["router"] from ["model.safetensors"] : tensor<%dx%dxf32>' % (E, H),
        "    %%l = moe.router_linear %%x, %%wr : (%s, tensor<%dx%dxf32>) -> %s" % (x, E, H, sc),
        "    %%p = moe.softmax %%l : %s" % sc,
        "    %%ids, %%v = moe.topk %%p {k = %d : i64} : %s -> %s" % (K, sc, kt),
        "    %%w = moe.normalize %%v : tensor<?x%dxf32>" % K,
        "    %%c, %%o, %%rows = moe.dispatch %%ids {num_experts = %d : i64} : tensor<?x%dxi32> -> "
        "tensor<%dxi32>, tensor<%dxi32>, tensor<?xi32>" % (E, K, E, E + 1),
        "    %%xs = moe.permute %%x, %%rows, %%w : (%s, tensor<?xi32>, tensor<?x%dxf32>) -> %s" % (x, K, x),
        '    %%g = moe.weight ["gate"] from ["model.safetensors"] : %s' % wt,
        '    %%u = moe.weight ["up"] from ["model.safetensors"] : %s' % wt,
        '    %%d = moe.weight ["down"] from ["model.safetensors"] : %s' % dt,
        "    %%ys = moe.expert_ffn %%xs, %%o gate(%%g) up(%%u) down(%%d) {activation = #moe.activation<silu>, "
        "widths = array<i64: %s>} : (%s, tensor<%dxi32>, %s, %s, %s) -> %s"
        % (", ".join(map(str, WIDTHS)), x, E + 1, wt, wt, dt, x),
        "    %%y = moe.combine %%ys, %%rows, %%w : (%s, tensor<?xi32>, tensor<?x%dxf32>) -> %s" % (x, K, x),
        "    return %%y : %s" % x,
        "  }",
        "}", ""])
    with open(os.path.join(d, "model.mlir"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
