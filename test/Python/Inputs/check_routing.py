"""moe_opt's routing decisions and expert load (no torch needed).

pkg.record_routing, pkg.last_routing, pkg.routing_stats and
layer(x, return_routing=True) on a synthetic Mixtral package (emu): the
routing equals moe-run --backend emu --routing-out on the same input, and
the load summed over the recorded runs equals a numpy recount of those ids.
"""
import argparse
import os
import sys

import numpy as np

import moe_opt
from moe_py_common import expect_raises, make_package, run

failures = 0


def check(label, ok):
    global failures
    print(("ok   " if ok else "FAIL ") + label, flush=True)
    failures += 0 if ok else 1


def moe_run_routing(work, pkg, layer, x, tag):
    xp, prefix = os.path.join(work, tag + ".npy"), os.path.join(work, tag)
    np.save(xp, x)
    run(["moe-run", pkg, "--layer", str(layer), "--input", xp, "--output",
         prefix + ".y.npy", "--backend", "emu", "--routing-out", prefix])
    return np.load(prefix + ".ids.npy"), np.load(prefix + ".weights.npy")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    work = ap.parse_args().work
    pkg_dir = make_package(work, "mixtral")
    pkg = moe_opt.load(pkg_dir, backend="emu")
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((11, 64)).astype(np.float32),
          rng.standard_normal((2, 3, 64)).astype(np.float32)]

    check("record_routing is off by default", pkg.record_routing is False)
    expect_raises("stats before recording", moe_opt.Error,
                  lambda: pkg.routing_stats(0),
                  "no routing recorded for layer 0",
                  "record_routing=True")
    pkg.record_routing = True
    refs = []
    for n, x in enumerate(xs):
        pkg.layer(0)(x)
        refs.append(moe_run_routing(work, pkg_dir, 0, x.reshape(-1, 64),
                                    "x%d" % n))
    last = pkg.last_routing(0)
    check("last_routing: one router, ids int32 [6, 2], weights float32, "
          "8 experts",
          len(last) == 1 and last[0]["ids"].dtype == np.int32 and
          last[0]["ids"].shape == (6, 2) and
          last[0]["weights"].dtype == np.float32 and
          last[0]["experts"] == 8)
    check("last_routing equals moe-run --routing-out",
          np.array_equal(last[0]["ids"], refs[1][0]) and
          np.allclose(last[0]["weights"], refs[1][1], atol=1e-6))
    stats = pkg.routing_stats(0)[0]
    ids = np.concatenate([r[0].reshape(-1) for r in refs])
    w = np.concatenate([r[1].reshape(-1) for r in refs])
    counts = np.bincount(ids[ids >= 0], minlength=8)
    mass = np.bincount(ids[ids >= 0], weights=w[ids >= 0], minlength=8)
    mean = counts.sum() / 8
    check("routing_stats over both runs equals the numpy recount",
          stats["tokens"] == 17 and stats["slots"] == 2 and
          stats["tokens_per_expert"].tolist() == counts.tolist() and
          np.allclose(stats["gate_mass"], mass, atol=1e-5) and
          stats["empty_slots"] == int((ids == -1).sum()) and
          stats["min"] == counts.min() and stats["max"] == counts.max() and
          abs(stats["mean"] - mean) < 1e-12 and
          abs(stats["imbalance"] - counts.max() / mean) < 1e-12 and
          stats["unused_experts"] == int((counts == 0).sum()))
    check("layer 1 has no recorded routing of its own yet",
          expect_raises("layer 1 not run", moe_opt.Error,
                        lambda: pkg.last_routing(1),
                        "no routing recorded for layer 1 yet") is not None)

    pkg.reset_routing_stats()
    pkg.record_routing = False
    y, routing = pkg.layer(0)(xs[0], return_routing=True)
    check("layer(x, return_routing=True) returns y and the routing",
          np.array_equal(routing[0]["ids"], refs[0][0]) and
          np.array_equal(y, pkg.layer(0)(xs[0])))
    check("return_routing records that run only",
          pkg.routing_stats(0)[0]["tokens"] == 11 and
          pkg.record_routing is False)
    expect_raises("unknown layer", ValueError, lambda: pkg.routing_stats(5),
                  "layer 5 is not an MoE layer")
    print("all routing cases passed" if not failures else
          "%d FAILED" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
