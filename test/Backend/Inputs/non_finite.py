#!/usr/bin/env python3
"""non_finite.py BIN WORK ARCH...: rows holding NaN or +-inf give the same
routing and the same non-finite pattern on the reference executor and the
CPU emulation, for a synthetic model of each ARCH. Prints one line per
architecture with what the non-finite rows route to."""
import os
import subprocess
import sys

import numpy as np

bin_dir, work = sys.argv[1], sys.argv[2]
status = 0
for arch in sys.argv[3:]:
    d = os.path.join(work, arch)
    subprocess.run([f"{bin_dir}/moe-import", "--synthetic", arch, "-o", d],
                   check=True, capture_output=True)
    ir = d + ".mlir"
    subprocess.run([f"{bin_dir}/moe-import", d, "-o", ir], check=True)
    layer = 1 if arch.startswith("deepseek") else 0
    hidden = {"gpt_oss": 64}.get(arch, 64)
    x = np.linspace(-1, 1, 5 * hidden, dtype=np.float32).reshape(5, hidden)
    x[1, 5] = np.nan
    x[2, 7] = np.inf
    x[3, 9] = -np.inf
    np.save(os.path.join(work, "x.npy"), x)
    got = {}
    for backend in ["reference", "emu"]:
        prefix = os.path.join(work, f"{arch}-{backend}")
        subprocess.run([f"{bin_dir}/moe-run", ir, "--layer", str(layer),
                        "--input", os.path.join(work, "x.npy"),
                        "--output", prefix + ".y.npy", "--routing-out",
                        prefix, "--backend", backend], check=True)
        got[backend] = (np.load(prefix + ".ids.npy"),
                        np.load(prefix + ".weights.npy"),
                        np.load(prefix + ".y.npy"))
    (ri, rw, ry), (ei, ew, ey) = got["reference"], got["emu"]
    problems = []
    if not np.array_equal(ri, ei):
        problems.append(f"ids differ: {ri.tolist()} vs {ei.tolist()}")
    if not np.array_equal(np.isnan(rw), np.isnan(ew)) or \
            not np.allclose(np.nan_to_num(rw), np.nan_to_num(ew), atol=1e-6):
        problems.append(f"weights differ: {rw.tolist()} vs {ew.tolist()}")
    if not np.array_equal(np.isfinite(ry), np.isfinite(ey)):
        problems.append("non-finite outputs differ: "
                        f"{(~np.isfinite(ry)).sum(1)} vs "
                        f"{(~np.isfinite(ey)).sum(1)}")
    finite = np.isfinite(ry)
    if not np.allclose(ry[finite], ey[finite], rtol=1e-4, atol=1e-5):
        problems.append("finite outputs differ")
    rows = ", ".join(f"{name}: ids {ri[r].tolist()} output "
                     f"{'finite' if np.isfinite(ry[r]).all() else 'NaN'}"
                     for r, name in [(1, "NaN"), (2, "+inf"), (3, "-inf")])
    print(f"{arch}: {'FAIL' if problems else 'same'} ({rows})")
    for p in problems:
        print("  " + p)
    status |= bool(problems)
sys.exit(status)
