#!/usr/bin/env python3
"""numpy oracle of moe-report compare's JSON.

  check.py chain PREFIX PREFIX_REWRITTEN LAYERS REPORT.json
      the total agreement == mean over every (layer, token) of |S n S'| / |S|
      with S, S' read from PREFIX.L<layer>.ids.npy (moe-run --all-layers
      --routing-out) for each of LAYERS ("0,1,2"), the same experts
  check.py error Y.npy Y_REWRITTEN.npy REPORT.json ROW
      relative_error of row ROW (a layer index, or total) of the report
      == ||y' - y|| / ||y||
  check.py agreement IDS.npy IDS_REWRITTEN.npy ORIGIN REPORT.json ROW [MAP]
      agreement == mean over tokens of |S n S'| / |S|, S the set of original
      ids (--routing-out of moe-run) taken through ORIGIN ("0,2,3": for each
      remaining expert its original index, a dropped expert is a miss; "-":
      the same experts), then through MAP ("0,1,0,1": router slot -> merged
      expert)

Prints the value it computed and exits 1 when the report disagrees.
"""
import json
import sys

import numpy as np


def report_row(path, row):
    with open(path) as f:
        report = json.load(f)
    if row == "total":
        return report["total"]
    (layer,) = [r for r in report["layers"] if r["layer"] == int(row)]
    return layer


def fractions(a, b, new, merged=None):
    """|S n S'| / |S| for each token of ids a (original) and b."""
    out = []
    for sa, sb in zip(a, b):
        s = [int(v) for v in sa if v >= 0]
        if not s:
            continue
        misses = sum(1 for v in s if v not in new)
        kept = {new[v] for v in s if v in new}
        if merged is not None:
            kept = {merged[v] for v in kept}
        chosen = set(int(v) for v in sb if v >= 0)
        out.append(len(kept & chosen) / (len(kept) + misses))
    return out


def main():
    if sys.argv[1] == "chain":
        every = []
        for layer in sys.argv[4].split(","):
            a = np.load("%s.L%s.ids.npy" % (sys.argv[2], layer))
            b = np.load("%s.L%s.ids.npy" % (sys.argv[3], layer))
            every += fractions(a, b, {e: e for e in range(int(a.max()) + 1)})
        want = float(np.mean(every))
        got = report_row(sys.argv[5], "total")["agreement"]
        ok = abs(got - want) <= 1e-12
    elif sys.argv[1] == "error":
        y = np.load(sys.argv[2]).astype(np.float64)
        z = np.load(sys.argv[3]).astype(np.float64)
        want = np.linalg.norm(z - y) / np.linalg.norm(y)
        got = report_row(sys.argv[4], sys.argv[5])["relative_error"]
        ok = abs(got - want) <= 1e-6 * max(want, 1e-30)
    else:
        a = np.load(sys.argv[2])
        b = np.load(sys.argv[3])
        if sys.argv[4] == "-":
            new = {e: e for e in range(int(a.max()) + 1)}
        else:
            new = {int(o): i for i, o in enumerate(sys.argv[4].split(","))}
        merged = ([int(v) for v in sys.argv[7].split(",")]
                  if len(sys.argv) > 7 else None)
        want = float(np.mean(fractions(a, b, new, merged)))
        got = report_row(sys.argv[5], sys.argv[6])["agreement"]
        ok = abs(got - want) <= 1e-12
    print("oracle %.6f report %.6f" % (want, got))
    return 0 if ok else 1


sys.exit(main())
