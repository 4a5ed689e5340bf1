"""Drives moe_capi_rank_test (the C API on rank packages): routes a fixed
input with rank 0's router (moe_model_route), dispatches in numpy from
placement.json (logical -> physical slot by replica t mod c, rows to the
ranks holding their slots, every row to rank 0 for shared experts), runs
moe_model_run_layer_dispatched on every rank and checks that the partial
outputs add up to moe-run's layer on the whole model (reference)."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--set", required=True)
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    prog = os.path.join(a.bin, "moe_capi_rank_test")
    placement = json.load(open(os.path.join(a.set, "placement.json")))
    lp = [l for l in placement["layers"] if l["layer"] == a.layer][0]
    slot_expert = np.array(lp["slot_expert"])
    slot_gpu = np.array(lp["slot_gpu"])
    gpus = placement["gpus"]
    T, H = 23, 64
    x = np.random.default_rng(8).standard_normal((T, H)).astype(np.float32)
    x.tofile(os.path.join(a.work, "x.f32"))
    np.save(os.path.join(a.work, "x.npy"), x)
    rank0 = os.path.join(a.set, "rank0")
    out = subprocess.run([prog, "route", rank0, str(a.layer),
                          os.path.join(a.work, "x.f32"), str(T), a.work],
                         capture_output=True, text=True)
    print(out.stdout.strip())
    if out.returncode:
        print("FAIL: route", out.stderr)
        return 1
    K = int(out.stdout.split("K ")[1].split(",")[0])
    ids = np.fromfile(os.path.join(a.work, "ids.i32"), np.int32).reshape(T, K)
    w = np.fromfile(os.path.join(a.work, "weights.f32"), np.float32).reshape(T, K)
    ref = os.path.join(a.work, "ref")
    subprocess.run([os.path.join(a.bin, "moe-run"), a.model, "--layer",
                    str(a.layer), "--input", ref.replace("ref", "x.npy"),
                    "--output", ref + ".npy", "--routing-out", ref,
                    "--backend", "reference"], check=True)
    same = np.array_equal(ids, np.load(ref + ".ids.npy"))
    print("route equals the model's routing:", same)
    phys = np.full_like(ids, -1)
    for t in range(T):
        for k in range(K):
            if ids[t, k] >= 0:
                reps = np.flatnonzero(slot_expert == ids[t, k])
                phys[t, k] = reps[t % len(reps)]
    total = np.zeros((T, H), np.float32)
    for r in range(gpus):
        mine = (phys >= 0) & (slot_gpu[np.maximum(phys, 0)] == r)
        rows = np.arange(T) if r == 0 else np.flatnonzero(mine.any(1))
        if rows.size == 0:
            continue
        prefix = os.path.join(a.work, f"rank{r}")
        x[rows].tofile(prefix + ".x.f32")
        np.where(mine[rows], phys[rows], -1).astype(np.int32).tofile(prefix + ".ids.i32")
        w[rows].tofile(prefix + ".weights.f32")
        out = subprocess.run([prog, "dispatched", os.path.join(a.set, f"rank{r}"),
                              str(a.layer), prefix, str(rows.size)],
                             capture_output=True, text=True)
        if out.returncode:
            print("FAIL: rank", r, out.stdout, out.stderr)
            return 1
        total[rows] += np.fromfile(prefix + ".y.f32", np.float32).reshape(rows.size, H)
    full = np.load(ref + ".npy")
    err = np.linalg.norm(total - full) / np.linalg.norm(full)
    print(("ok" if err <= 1e-5 and same else "FAIL") +
          f": {gpus} ranks, sum of moe_model_run_layer_dispatched vs layer rel err {err:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
