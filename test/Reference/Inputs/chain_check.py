#!/usr/bin/env python3
"""chain_check.py MOE_RUN IR X.NPY Y.NPY MODE LAYERS WORK: recomputes moe-run
--all-layers --chain MODE in numpy from one `moe-run --layer L` per layer:
prenorm x' = x + layer(x / sqrt(mean(x^2) + 1e-6)), residual x' = x +
layer(x), none x' = layer(x); compares with Y.NPY (relative 1e-5 of max|y|)
and prints the norms."""
import subprocess
import sys

import numpy as np

moe_run, ir, x_path, y_path, mode, layers, work = sys.argv[1:8]
x = np.load(x_path).astype(np.float32)
x0 = float(np.linalg.norm(x))
for l in [int(v) for v in layers.split(",")]:
    if mode == "prenorm":
        inp = x / np.sqrt((x.astype(np.float64) ** 2).mean(axis=1,
                                                          keepdims=True) + 1e-6)
        inp = inp.astype(np.float32)
    else:
        inp = x
    i_path, o_path = f"{work}/chain.in{l}.npy", f"{work}/chain.out{l}.npy"
    np.save(i_path, inp)
    subprocess.run([moe_run, ir, "--layer", str(l), "--input", i_path,
                    "--output", o_path, "--backend", "reference"], check=True)
    out = np.load(o_path).astype(np.float32)
    x = out if mode == "none" else x + out
y = np.load(y_path)
err = float(np.abs(y - x).max())
scale = float(np.abs(x).max())
if not (np.isfinite(y).all() and err <= 1e-5 * max(scale, 1e-30)):
    sys.exit(f"FAIL {mode}: max difference {err:.3g} from the numpy chain "
             f"(max|y| {scale:.3g})")
print(f"ok {mode}: matches the numpy chain; |x0| {x0:.3g} |y| "
      f"{float(np.linalg.norm(y)):.3g} ratio {float(np.linalg.norm(y)) / x0:.3g}")
