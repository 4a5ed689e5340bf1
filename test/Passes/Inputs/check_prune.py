#!/usr/bin/env python3
"""--moe-prune-experts on a planted "loud router, quiet expert" layer.

Expert QUIET is the second choice of almost every token but its output is
1e-3 of the others': frequency keeps it, reap and output-error drop it.
output-error (NAEE) must pick the subset a numpy brute force over every
subset finds (the pass runs the reference interpreter; this oracle runs
numpy in f64). The pruned model, run by moe-run, must equal the numpy
layer restricted to the kept experts and router rows.

  check_prune.py --bin BUILD/bin --work DIR
"""
import argparse
import itertools
import json
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import planted_experts as pe  # noqa: E402


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit("FAIL: %s\n%s" % (" ".join(cmd), p.stderr))
    return p.stderr


def prune(args, d, keep, criterion, extra=""):
    out = os.path.join(d, "pruned-%s-%d.mlir" % (criterion, keep))
    err = run([args.bin + "/moe-opt", os.path.join(d, "model.mlir"),
               "--mlir-print-op-on-diagnostic=false",
               "--moe-prune-experts=profile=%s keep=%d criterion=%s "
               "calibration=%s %s" % (os.path.join(d, "profile.safetensors"),
                                      keep, criterion,
                                      os.path.join(d, "calib.npy"), extra),
               "-o", out])
    m = re.search(r"expert_origin = array<i64: ([0-9, ]+)>", open(out).read())
    return out, [int(v) for v in m.group(1).split(",")], err


def load_model(d):
    st = os.path.join(os.path.dirname(__file__), "..", "..", "Oracle")
    sys.path.insert(0, st)
    from hf_models import read_safetensors
    t, _, _ = read_safetensors(os.path.join(d, "model.safetensors"))
    E = t["router.weight"].shape[0]
    return {"router": t["router.weight"].astype(np.float64),
            **{n: np.stack([t["e.%d.%s" % (e, n)] for e in range(E)])
               .astype(np.float64) for n in ("gate", "up", "down")}}


def sub(m, kept):
    return {n: v[list(kept)] for n, v in m.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    d = os.path.join(a.work, "quiet")
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                                 "planted_experts.py"),
                    "write", d, "--kind", "quiet", "--moe-run",
                    a.bin + "/moe-run"], check=True)
    info = json.load(open(os.path.join(d, "planted.json")))
    quiet, k = info["quiet"], info["k"]
    m = load_model(d)
    x = np.load(os.path.join(d, "calib.npy"))
    held = np.load(os.path.join(d, "heldout.npy"))
    y = pe.layer(m, x, k)
    failed = False

    # The quiet expert: frequent, silent.
    for criterion in ("frequency", "reap", "output-error"):
        _, kept, _ = prune(a, d, 7, criterion)
        print("keep=7 %-12s quiet expert %d %s" % (
            criterion, quiet, "kept" if quiet in kept else "pruned"))

    # output-error against a numpy brute force over every subset.
    for keep in (4, 5):
        out, kept, err = prune(a, d, keep, "output-error")
        errors = {s: float(np.sum((pe.layer(sub(m, s), x, k) - y) ** 2))
                  for s in itertools.combinations(range(8), keep)}
        best = min(errors, key=lambda s: (errors[s], s))
        ranked = sorted(errors.values())
        ok = list(best) == kept
        failed |= not ok
        print("keep=%d output-error %s: pass %s, brute force %s over %d "
              "subsets (best %.4g, runner-up %.4g)" % (
                  keep, "ok" if ok else "FAIL", kept, list(best),
                  len(errors), ranked[0], ranked[1]))
        # The pruned IR computes the numpy layer of the kept experts.
        hp = os.path.join(d, "held.npy")
        np.save(hp, held)
        yp = os.path.join(d, "y.npy")
        run([a.bin + "/moe-run", out, "--layer", "0", "--input", hp,
             "--output", yp, "--backend", "reference"])
        want = pe.layer(sub(m, kept), held, k)
        rel = np.linalg.norm(np.load(yp) - want) / np.linalg.norm(want)
        failed |= not rel < 1e-5
        print("keep=%d pruned IR vs numpy on held-out: %s (relative %.1e)" % (
            keep, "ok" if rel < 1e-5 else "FAIL", rel))

    # Greedy when the subsets are too many; no better than brute force.
    _, kept, err = prune(a, d, 4, "output-error", "max-subsets=10")
    greedy = "greedy" in err
    g = float(np.sum((pe.layer(sub(m, kept), x, k) - y) ** 2))
    bf = min(float(np.sum((pe.layer(sub(m, s), x, k) - y) ** 2))
             for s in itertools.combinations(range(8), 4))
    ok = greedy and g >= bf * (1 - 1e-6)
    failed |= not ok
    print("keep=4 max-subsets=10: %s (greedy %s, error %.4g, brute-force "
          "best %.4g)" % ("ok" if ok else "FAIL", kept, g, bf))
    # Pruning a pruned model (with a profile of the pruned model) composes
    # moe.expert_origin.
    first, kept1, _ = prune(a, d, 6, "reap")
    m1 = sub(m, kept1)
    run([a.bin + "/moe-run", first, "--layer", "0", "--input",
         os.path.join(d, "calib.npy"), "--record-profile",
         os.path.join(d, "profile1.safetensors")])
    out = os.path.join(d, "twice.mlir")
    run([a.bin + "/moe-opt", first, "--mlir-print-op-on-diagnostic=false",
         "--moe-prune-experts=profile=%s keep=4 criterion=reap" %
         os.path.join(d, "profile1.safetensors"), "-o", out])
    text = open(out).read()
    twice = [int(v) for v in re.search(
        r"expert_origin = array<i64: ([0-9, ]+)>", text).group(1).split(",")]
    score = pe.profile(m1, x, k)
    order = np.argsort(-(score["output_norm_mass"] / score["expert_count"]),
                       kind="stable")[:4]
    want = [kept1[i] for i in sorted(order)]
    ok = twice == want
    failed |= not ok
    print("pruned twice (8 -> 6 -> 4, reap): origin %s, expected %s: %s" % (
        twice, want, "ok" if ok else "FAIL"))
    print("FAILED" if failed else "all prune checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
