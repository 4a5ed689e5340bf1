"""Layers on a given routing (moe.fused_route given(ids, weights)) on the
emulation against the reference.

For a set of rank packages (moe-compile --placement) and each token count
T: the whole model's layer on the reference (`moe-run MODEL --backend
reference --routing-out`) gives the output and the logical routing; this
script turns the routing into physical slot ids with its own replica rule
(replica (t + k) mod replicas of the expert, slots in order: not the rank
packages' rule, the engine chooses), runs every rank's layer on the emu
backend with `pkg.run_dispatched`, and checks that the sum over ranks is the
whole layer; the rank's router-only plan (`pkg.route`) must give the
reference routing. Prints "ok ..." lines, "FAIL ..." on a mismatch.
"""
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
    ap.add_argument("--tokens", default="1,7,64,300")
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()
    with open(os.path.join(a.pkg, "placement.json")) as f:
        placement = json.load(f)
    gpus = placement["gpus"]
    ranks = [moe_opt.load(os.path.join(a.pkg, "rank%d" % r), backend="emu")
             for r in range(gpus)]
    bad = 0
    for lp in placement["layers"]:
        L = lp["layer"]
        slot_expert = np.array(lp["slot_expert"])
        for T in (int(t) for t in a.tokens.split(",")):
            x = np.random.default_rng(100 + T).standard_normal(
                (T, ranks[0].hidden(L))).astype(np.float32)
            base = os.path.join(a.work, "L%d.T%d" % (L, T))
            np.save(base + ".x.npy", x)
            subprocess.run([os.path.join(a.bin, "moe-run"), a.model, "--layer",
                            str(L), "--backend", "reference", "--input",
                            base + ".x.npy", "--output", base + ".full.npy",
                            "--routing-out", base + ".routing"], check=True,
                           stdout=subprocess.DEVNULL)
            full = np.load(base + ".full.npy")
            ids = np.load(base + ".routing.ids.npy")
            weights = np.load(base + ".routing.weights.npy")
            K = ids.shape[1]
            phys = np.full_like(ids, -1)
            for t in range(T):
                for k in range(K):
                    e = ids[t, k]
                    if e >= 0:
                        slots = np.flatnonzero(slot_expert == e)
                        phys[t, k] = slots[(t + k) % len(slots)]
            total = np.zeros_like(full)
            alone = np.inf
            route_ok = True
            for r, pkg in enumerate(ranks):
                y = np.asarray(pkg.run_dispatched(L, x, phys, weights))
                total += y
                alone = min(alone, np.abs(y - full).max() /
                            np.abs(full).max())
                rids, rw = pkg.route(L, x)
                route_ok &= bool(np.array_equal(np.asarray(rids), ids) and
                                 np.abs(np.asarray(rw) - weights).max() <=
                                 a.tol * max(np.abs(weights).max(), 1e-30))
            rel = np.abs(total - full).max() / np.abs(full).max()
            ok = rel <= a.tol and alone > 100 * a.tol and route_ok
            bad += not ok
            print("%s layer %d T %d: %d ranks on emu, sum vs reference rel "
                  "%.1e (one rank alone %.2f), router %s" %
                  ("ok  " if ok else "FAIL", L, T, gpus, rel, alone,
                   "matches" if route_ok else "DIFFERS"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
