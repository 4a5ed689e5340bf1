"""moe_opt's expert-parallel entry points on a set of rank packages
(moe-compile --placement): pkg.route(layer, x) on every rank equals the
whole model's routing (moe-run --routing-out), and the partial outputs of
pkg.run_dispatched(layer, rows, physical ids, weights) over the ranks,
each rank given only the tokens that have a slot on it (as an engine's
all-to-all sends them), add up to the whole layer (moe-run, reference).
The dispatch (logical -> physical slot, destination ranks) is written here
in numpy from placement.json, independently of moe-run's."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

import moe_opt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pkg", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    placement = json.load(open(os.path.join(a.pkg, "placement.json")))
    gpus = placement["gpus"]
    ranks = [moe_opt.load(os.path.join(a.pkg, f"rank{r}"), backend="emu")
             for r in range(gpus)]
    rng = np.random.default_rng(4)
    for lp in placement["layers"]:
        layer = lp["layer"]
        slot_expert = np.array(lp["slot_expert"])
        slot_gpu = np.array(lp["slot_gpu"])
        replicas = [np.flatnonzero(slot_expert == e) for e in range(lp["experts"])]
        for T in (1, 7, 64):
            x = rng.standard_normal((T, ranks[0].hidden(layer))).astype(np.float32)
            xp = os.path.join(a.work, f"x{layer}_{T}.npy")
            np.save(xp, x)
            ref = os.path.join(a.work, f"ref{layer}_{T}")
            subprocess.run([os.path.join(a.bin, "moe-run"), a.model, "--layer",
                            str(layer), "--input", xp, "--output", ref + ".npy",
                            "--routing-out", ref, "--backend", "reference"],
                           check=True)
            full = np.load(ref + ".npy")
            want_ids = np.load(ref + ".ids.npy")
            want_w = np.load(ref + ".weights.npy")
            for r, pkg in enumerate(ranks):
                ids, w = pkg.route(layer, x)
                if not (np.array_equal(ids, want_ids) and
                        np.allclose(w, want_w, rtol=1e-5, atol=1e-6)):
                    print(f"FAIL layer {layer} T={T}: rank {r}'s route differs "
                          "from the model's routing")
                    return 1
            ids, w = ranks[0].route(layer, x)
            # Logical -> physical: replica t mod c of the expert, in slot order.
            phys = np.full_like(ids, -1)
            for t in range(T):
                for k in range(ids.shape[1]):
                    e = ids[t, k]
                    if e >= 0:
                        phys[t, k] = replicas[e][t % len(replicas[e])]
            total = np.zeros_like(full)
            sent = 0
            for r, pkg in enumerate(ranks):
                mine = (phys >= 0) & (slot_gpu[np.maximum(phys, 0)] == r)
                # Shared experts run on rank 0: it gets every token.
                rows = np.arange(T) if r == 0 else np.flatnonzero(mine.any(1))
                if rows.size == 0:
                    continue
                sent += rows.size
                rid = np.where(mine[rows], phys[rows], -1).astype(np.int32)
                part = pkg.run_dispatched(layer, x[rows], rid, w[rows])
                total[rows] += part
            err = np.linalg.norm(total - full) / max(np.linalg.norm(full), 1e-30)
            status = "ok  " if err <= 1e-5 else "FAIL"
            print(f"{status} layer {layer} T={T}: {gpus} ranks, {sent} rows "
                  f"sent, sum of run_dispatched vs layer rel err {err:.1e}")
            if status == "FAIL":
                return 1
    # A layer that routes itself refuses a given routing, and the reverse.
    try:
        ranks[0].run_dispatched(placement["layers"][0]["layer"],
                                np.zeros((2, ranks[0].hidden(placement["layers"][0]["layer"])), np.float32),
                                np.zeros((2, 1), np.int32), np.zeros((2, 1), np.float32))
        print("FAIL: wrong K accepted")
    except ValueError as e:
        print("wrong K:", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
