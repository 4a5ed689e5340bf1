"""numpy oracle of moe-report routing.

moe-run writes the routing it decided (--routing-out) and a calibration
profile (--record-profile); moe-report routing draws the co-activation
matrices and routing-weight histograms. This script recounts both from the
ids and weights with numpy (one-hot of each token's experts, M^T M; and
numpy.histogram of the routed slots' weights over [min(0, w), max(1, w)])
and requires every number drawn (the data-* attributes of each matrix cell
and histogram bin) to equal the recount; the profile's drawing must equal
the recount of the same run. A hand-made routing with empty slots (-1), a
repeated expert within a token, a weight above 1 and a second router checks
the edge cases, and bad files are refused naming the file.
"""
import argparse
import os
import re
import subprocess
import sys

import numpy as np


def run(cmd, ok=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if ok and r.returncode != 0:
        raise AssertionError(" ".join(cmd) + " failed:\n" + r.stderr[-3000:])
    if not ok and r.returncode == 0:
        raise AssertionError(" ".join(cmd) + " should have failed")
    return r.stdout + r.stderr


def recount(ids, w, experts, bins):
    t = ids.shape[0]
    onehot = np.zeros((t, experts), dtype=np.int64)
    for s in range(ids.shape[1]):
        chosen = ids[:, s] >= 0
        onehot[np.nonzero(chosen)[0], ids[chosen, s]] = 1
    co = onehot.T @ onehot
    routed = w[ids >= 0].astype(np.float64)
    lo = min(0.0, routed.min()) if routed.size else 0.0
    hi = max(1.0, routed.max()) if routed.size else 1.0
    hist, _ = np.histogram(routed, bins=bins, range=(lo, hi))
    return co, hist, lo, hi


def drawn(svg_path):
    svg = open(svg_path).read()
    pairs, hists, ranges = {}, {}, {}
    for l, r, i, j, n in re.findall(
            r'<rect class="pair" data-layer="(\d+)" data-router="(\d+)" '
            r'data-i="(\d+)" data-j="(\d+)" data-tokens="(\d+)"', svg):
        pairs.setdefault((int(l), int(r)), {})[(int(i), int(j))] = int(n)
    for l, r, b, n, lo, hi in re.findall(
            r'<rect class="bin" data-layer="(\d+)" data-router="(\d+)" '
            r'data-bin="(\d+)" data-count="(\d+)" data-lo="[^"]*" '
            r'data-hi="[^"]*" data-range-lo="([^"]+)" '
            r'data-range-hi="([^"]+)"', svg):
        hists.setdefault((int(l), int(r)), {})[int(b)] = int(n)
        ranges[(int(l), int(r))] = (float(lo), float(hi))
    return pairs, hists, ranges


def check(tag, svg, expected, with_hist=True):
    """expected: {(layer, router): (ids, weights, experts)}."""
    pairs, hists, ranges = drawn(svg)
    if sorted(pairs) != sorted(expected):
        raise AssertionError(f"{tag}: draws {sorted(pairs)}, expected "
                             f"{sorted(expected)}")
    for key, (ids, w, e) in expected.items():
        co, hist, lo, hi = recount(ids, w, e, 20)
        got = np.zeros((e, e), dtype=np.int64)
        for (i, j), n in pairs[key].items():
            got[i, j] = n
        if len(pairs[key]) != e * e or not np.array_equal(got, co):
            raise AssertionError(f"{tag} {key}: co-activation drawn\n{got}\n"
                                 f"recount\n{co}")
        if not with_hist:
            if key in hists:
                raise AssertionError(f"{tag} {key}: a histogram from a "
                                     f"profile")
            continue
        got_hist = [hists[key].get(b) for b in range(20)]
        if got_hist != hist.tolist() or len(hists[key]) != 20:
            raise AssertionError(f"{tag} {key}: histogram {got_hist}, "
                                 f"recount {hist.tolist()}")
        if ranges[key] != (lo, hi):
            raise AssertionError(f"{tag} {key}: range {ranges[key]}, "
                                 f"recount {(lo, hi)}")
    return sum(len(p) for p in pairs.values()), \
        sum(len(h) for h in hists.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    work = args.work
    rng = np.random.default_rng(16)

    # A synthetic Mixtral package, both layers, on emu: routing files and a
    # profile of the same run.
    model = os.path.join(work, "mixtral.model")
    pkg = os.path.join(work, "mixtral.pkg")
    run(["moe-import", "--synthetic", "mixtral", "-o", model, "--force",
         "-q"])
    run(["moe-compile", model, "-o", pkg, "--arch", "none", "--force", "-q"])
    x = os.path.join(work, "x.npy")
    np.save(x, rng.standard_normal((61, 64)).astype(np.float32))
    prefix = os.path.join(work, "run")
    profile = os.path.join(work, "profile.safetensors")
    run(["moe-run", pkg, "--all-layers", "--input", x, "--output",
         os.path.join(work, "y.npy"), "--backend", "emu", "--routing-out",
         prefix, "--record-profile", profile])
    expected = {}
    for layer in (0, 1):
        p = prefix + ".L%d" % layer
        expected[(layer, 0)] = (np.load(p + ".ids.npy"),
                                np.load(p + ".weights.npy"), 8)
    svg = os.path.join(work, "routing.svg")
    out = run(["moe-report", "routing", "--routing", prefix, "-o", svg])
    if "moe-report routing: 2 layer/router row(s) drawn" not in out:
        raise AssertionError("summary: " + out)
    cells, bins = check("mixtral-routing", svg, expected)
    print(f"ok   mixtral-routing: 2 layers, {cells} co-activation cells and "
          f"{bins} histogram bins equal the numpy recount", flush=True)
    svg = os.path.join(work, "profile.svg")
    run(["moe-report", "routing", "--profile", profile, "-o", svg])
    cells, _ = check("mixtral-profile", svg, expected, with_hist=False)
    print(f"ok   mixtral-profile: {cells} co-activation cells equal the "
          f"recount of the same run's routing", flush=True)

    # By hand: empty slots, a repeated expert, weights above 1 and below 0,
    # a second router, one layer (moe-run --layer L names no layer).
    ids = rng.integers(-1, 6, size=(40, 3)).astype(np.int32)
    ids[0] = [2, 2, -1]
    w = rng.uniform(-0.2, 1.7, size=(40, 3)).astype(np.float32)
    w[1, 0] = 1.0  # On an edge.
    hand = os.path.join(work, "hand")
    np.save(hand + ".ids.npy", ids)
    np.save(hand + ".weights.npy", w)
    ids2 = rng.integers(0, 6, size=(40, 1)).astype(np.int32)
    w2 = np.full((40, 1), 0.5, dtype=np.float32)
    np.save(hand + ".r1.ids.npy", ids2)
    np.save(hand + ".r1.weights.npy", w2)
    svg = os.path.join(work, "hand.svg")
    run(["moe-report", "routing", "--routing", hand, "--experts", "6",
         "--layer", "7", "-o", svg])
    cells, bins = check("hand", svg, {(7, 0): (ids, w, 6),
                                      (7, 1): (ids2, w2, 6)})
    print(f"ok   hand: 2 routers, empty slots and repeats, {cells} cells "
          f"and {bins} bins equal the recount", flush=True)

    # Bad input is refused, naming the file.
    msg = run(["moe-report", "routing", "--routing", hand, "--experts", "2",
               "-o", svg], ok=False)
    if "hand.ids.npy: token" not in msg or "outside [-1, 2)" not in msg:
        raise AssertionError("bad id: " + msg)
    os.remove(hand + ".r1.weights.npy")
    msg = run(["moe-report", "routing", "--routing", hand, "-o", svg],
              ok=False)
    if "hand.r1.weights.npy: missing" not in msg:
        raise AssertionError("missing weights: " + msg)
    msg = run(["moe-report", "routing", "--routing",
               os.path.join(work, "none"), "-o", svg], ok=False)
    if "no routing files" not in msg:
        raise AssertionError("no files: " + msg)
    print("ok   errors name the file", flush=True)
    print("all routing cases match the numpy recount")


if __name__ == "__main__":
    main()
