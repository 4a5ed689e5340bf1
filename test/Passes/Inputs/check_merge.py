#!/usr/bin/env python3
"""--moe-merge-experts on planted redundancy: E = 16 noisy copies (relative
sigma) of 4 prototypes, router rows likewise; calibration and held-out
tokens from a mixture of the 4 router directions.

For each clustering (hierarchical on symmetric copies; dominant on a
variant where copy 0 of each group is the most routed, as MC-SMoE assumes:
its router row is scaled by 1.3 and the router is top-1, since under top-2
a group's two chosen copies are routed equally often; merged uniformly,
since a frequency-weighted merge would just keep copy 0)
and each similarity kind, merging to 4 must recover the planted groups
exactly, and the merged model (run by moe-run, reference backend) must
(a) equal the numpy oracle of the merge (remapped slots add their gates,
frequency-weighted average weights), and (b) be within about 2 sigma of the
original on held-out tokens (relative Frobenius error). Random groups of
the same sizes, merged the same way in numpy, must be clearly worse. With
sigma = 0 merging is exact (<= 1e-6).

  check_merge.py --bin BUILD/bin --work DIR
"""
import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import planted_experts as pe  # noqa: E402
from check_prune import load_model, run  # noqa: E402


def merge(a, d, options, tag):
    out = os.path.join(d, "merged-%s.mlir" % tag)
    err = run([a.bin + "/moe-opt", os.path.join(d, "model.mlir"),
               "--mlir-print-op-on-diagnostic=false",
               "--moe-merge-experts=profile=%s groups=4 %s" % (
                   os.path.join(d, "profile.safetensors"), options),
               "-o", out])
    m = re.search(r"mapping = \[([0-9, ]+)\]", open(out).read())
    return out, [int(v) for v in m.group(1).split(",")], err


def partition(labels):
    """The groups as a set of frozensets (label names do not matter)."""
    groups = {}
    for e, g in enumerate(labels):
        groups.setdefault(g, set()).add(e)
    return {frozenset(s) for s in groups.values()}


def moe_run(a, ir, x, d, backend="reference"):
    xp, yp = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
    np.save(xp, x)
    run([a.bin + "/moe-run", ir, "--layer", "0", "--input", xp, "--output",
         yp, "--backend", backend])
    return np.load(yp).astype(np.float64)


def rel(y, ref):
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--sigma", type=float, default=0.01)
    a = ap.parse_args()
    failed = False
    gen = os.path.join(os.path.dirname(__file__), "planted_experts.py")
    rng = np.random.default_rng(7)
    for sigma in (a.sigma, 0.0):
        for cluster, scale, k, weighting in (
                ("hierarchical", 1.0, 2, "frequency"),
                ("dominant", 1.3, 1, "uniform")):
            d = os.path.join(a.work, "%s-%g" % (cluster, sigma))
            subprocess.run([sys.executable, gen, "write", d, "--kind",
                            "redundant", "--sigma", str(sigma),
                            "--dominant-scale", str(scale), "--k", str(k),
                            "--moe-run", a.bin + "/moe-run"],
                           check=True)
            info = json.load(open(os.path.join(d, "planted.json")))
            planted, k = partition(info["groups"]), info["k"]
            m = load_model(d)
            count = pe.profile(m, np.load(os.path.join(d, "calib.npy")),
                               k)["expert_count"]
            held = np.load(os.path.join(d, "heldout.npy"))
            y0 = moe_run(a, os.path.join(d, "model.mlir"), held, d)
            for similarity in ("router-logits", "expert-output"):
                out, mapping, _ = merge(
                    a, d, "similarity=%s cluster=%s weighting=%s" % (
                        similarity, cluster, weighting),
                    "%s" % similarity)
                y = moe_run(a, out, held, d)
                want = pe.layer(m, held, k, mapping,
                                pe.merge_weights(m, mapping, count, weighting))
                oracle = rel(y, want)
                err = rel(y, y0)
                exact = partition(mapping) == planted
                bound = 2 * sigma if sigma else 1e-6
                ok = exact and oracle < 1e-5 and err <= bound
                failed |= not ok
                if sigma and similarity == "router-logits":
                    # The fused remap in the routing kernel (CPU emulation).
                    emu = rel(moe_run(a, out, held, d, "emu"), y)
                    ok &= emu < 1e-5
                    failed |= not ok
                    print("sigma=%g %-12s emu vs reference on the merged "
                          "model: %.1e" % (sigma, cluster, emu))
                print("sigma=%g %-12s %-9s %-13s groups %s, vs numpy merge %.1e, "
                      "held-out relative error %.2e (bound %.0e): %s" % (
                          sigma, cluster, weighting, similarity,
                          "recovered" if exact else "WRONG", oracle, err,
                          bound, "ok" if ok else "FAIL"))
            # Random groups of the same sizes, merged the same way.
            worst = []
            for _ in range(5):
                labels = rng.permutation(np.repeat(np.arange(4), 4))
                if partition(labels) == planted:
                    continue
                yr = pe.layer(m, held, k, labels,
                              pe.merge_weights(m, labels, count, weighting))
                worst.append(rel(yr, y0.astype(np.float64)))
            ok = min(worst) > 10 * max(err, 1e-3)
            failed |= not ok
            print("sigma=%g %-12s random groups: held-out relative error "
                  "%.2f to %.2f: %s" % (sigma, cluster, min(worst),
                                        max(worst),
                                        "clearly worse" if ok else "FAIL"))
    # The error curve against the merged count has its knee at the planted
    # 4: merging further (3, 2) mixes prototypes, more groups (5 to 8) gain
    # little.
    d = os.path.join(a.work, "hierarchical-%g" % a.sigma)
    held = np.load(os.path.join(d, "heldout.npy"))
    y0 = moe_run(a, os.path.join(d, "model.mlir"), held, d)
    curve = {}
    for n in (2, 3, 4, 5, 6, 8):
        out = os.path.join(d, "curve-%d.mlir" % n)
        run([a.bin + "/moe-opt", os.path.join(d, "model.mlir"),
             "--moe-merge-experts=profile=%s groups=%d cluster=hierarchical" %
             (os.path.join(d, "profile.safetensors"), n), "-o", out])
        curve[n] = rel(moe_run(a, out, held, d), y0)
    ok = curve[4] <= 2 * a.sigma and curve[3] > 10 * curve[4] and \
        max(curve[n] for n in (5, 6, 8)) <= curve[4] * 1.5
    failed |= not ok
    print("error curve (merged experts: held-out relative error): %s: %s" % (
        ", ".join("%d: %.2e" % kv for kv in sorted(curve.items())),
        "knee at 4" if ok else "FAIL"))

    # Copies with their neurons reordered: only align=weight merges them.
    for sigma in (a.sigma, 0.0):
        d = os.path.join(a.work, "permuted-%g" % sigma)
        subprocess.run([sys.executable, gen, "write", d, "--kind",
                        "redundant", "--sigma", str(sigma),
                        "--permute-neurons", "--moe-run",
                        a.bin + "/moe-run"], check=True)
        held = np.load(os.path.join(d, "heldout.npy"))
        y0 = moe_run(a, os.path.join(d, "model.mlir"), held, d)
        errs = {}
        for align in ("none", "weight"):
            out, mapping, _ = merge(a, d, "cluster=hierarchical align=%s" %
                                    align, "align-" + align)
            errs[align] = rel(moe_run(a, out, held, d), y0)
        bound = 2 * sigma if sigma else 1e-6
        ok = errs["weight"] <= bound and errs["none"] > 10 * max(bound, 1e-2)
        failed |= not ok
        print("sigma=%g permuted neurons: align=none %.2e, align=weight "
              "%.2e (bound %.0e): %s" % (sigma, errs["none"], errs["weight"],
                                         bound, "ok" if ok else "FAIL"))
    print("FAILED" if failed else "all merge checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
