"""Checks moe_capi_stats_test's output against moe-run --routing-out.

The C program ran the first MoE layer on x1.npy then x2.npy with routing
recorded: its last routing (ids.npy, weights.npy) must equal moe-run
--backend emu --routing-out on x2.npy, and its load (printed) must equal a
numpy recount of moe-run's ids of both inputs.
"""
import os
import subprocess
import sys

import numpy as np

out, pkg, work = sys.argv[1], sys.argv[2], sys.argv[3]
lines = open(out).read().splitlines()
layer = 0
all_ids, all_w = [], []
for n in (1, 2):
    prefix = os.path.join(work, "ref%d" % n)
    subprocess.run(["moe-run", pkg, "--layer", str(layer), "--input",
                    os.path.join(work, "x%d.npy" % n), "--output",
                    os.path.join(work, "y%d.npy" % n), "--backend", "emu",
                    "--routing-out", prefix], check=True)
    all_ids.append(np.load(prefix + ".ids.npy"))
    all_w.append(np.load(prefix + ".weights.npy"))
ids, w = np.load(os.path.join(work, "ids.npy")), np.load(
    os.path.join(work, "weights.npy"))
ok = np.array_equal(ids, all_ids[1]) and np.allclose(w, all_w[1], atol=1e-6)
print("last routing equals moe-run --routing-out:", ok)

stats = next(l for l in lines if l.startswith("stats:")).split()
got = {stats[i]: stats[i + 1] for i in range(3, len(stats) - 1, 2)}
counts = [int(v) for v in next(l for l in lines
                               if l.startswith("counts:")).split()[1:]]
mass = [float(v) for v in next(l for l in lines
                               if l.startswith("mass:")).split()[1:]]
flat = np.concatenate([i.reshape(-1) for i in all_ids])
fw = np.concatenate([v.reshape(-1) for v in all_w])
E = int(got["experts"])
want = np.bincount(flat[flat >= 0], minlength=E)
want_mass = np.bincount(flat[flat >= 0], weights=fw[flat >= 0], minlength=E)
mean = want.sum() / E
checks = {
    "counts": counts == want.tolist(),
    "mass": np.allclose(mass, want_mass, rtol=1e-6, atol=1e-6),
    "tokens": int(got["tokens"]) == sum(i.shape[0] for i in all_ids),
    "empty": int(got["empty"]) == int((flat == -1).sum()),
    "min/max": (int(got["min"]), int(got["max"])) == (want.min(), want.max()),
    "mean": abs(float(got["mean"]) - mean) < 1e-9,
    "imbalance": abs(float(got["imbalance"]) - want.max() / mean) < 1e-6,
    "unused": int(got["unused"]) == int((want == 0).sum()),
}
for k, v in checks.items():
    print(("ok   " if v else "FAIL ") + k)
print("the C API's load equals the numpy recount:" , all(checks.values()))
