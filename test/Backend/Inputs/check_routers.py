#!/usr/bin/env python3
"""Router IR files on a kernel backend against the reference executor.

For every IR file given: random weights, then `moe-run --routing-out` on
the reference and on BACKEND for T in {1, 7, 64, 300}. Every router's
files (PREFIX.ids.npy for router 0, PREFIX.r<N>.ids.npy for router N) must
exist on both backends, as many as the file's `// ROUTERS: N` line says,
and agree (expert sets per token, weights by id); outputs agree. With
`MASKED` on that line the weights of router 0 must also be a masked
normalisation: empty slots exactly 0, the real slots of a token summing
to 1.

  check_routers.py --bin BUILD/bin --backend emu FILE.mlir...
"""
import argparse
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from check_backend import (compare_routing, example_weights,  # noqa: E402
                           run, write_weights)

TOKENS = [1, 7, 64, 300]
RTOL = 1e-5


def routers_of(prefix):
    """The routing files of every router written under `prefix`."""
    found = []
    while True:
        base = prefix if not found else "%s.r%d" % (prefix, len(found))
        if not os.path.exists(base + ".ids.npy"):
            return found
        found.append((np.load(base + ".ids.npy"),
                      np.load(base + ".weights.npy")))


def run_layer(args, ir, x_path, prefix, backend):
    run([args.bin + "/moe-run", ir, "--layer", "0", "--input", x_path,
         "--output", prefix + ".y.npy", "--routing-out", prefix,
         "--backend", backend])
    return np.load(prefix + ".y.npy"), routers_of(prefix)


def check_masked(tag, ids, w, seen):
    empty = ids < 0
    if np.any(w[empty] != 0.0):
        raise AssertionError("%s: an empty slot has weight %g, not 0"
                             % (tag, float(np.abs(w[empty]).max())))
    real = (~empty).sum(axis=1) > 0
    sums = w.sum(axis=1)
    if np.any(np.abs(sums[real] - 1.0) > 1e-5):
        raise AssertionError("%s: the real slots of a token sum to %r, not 1"
                             % (tag, sums[real]))
    # Tokens where masking matters: an empty slot beside >= 1 real ones.
    seen["mixed"] += int(np.sum(real & empty.any(axis=1)))


def check_file(args, path, work, rng):
    text = open(path).read()
    m = re.search(r"// ROUTERS: (\d+)( MASKED)?", text)
    if not m:
        raise AssertionError("no '// ROUTERS: N' line")
    expected, masked = int(m.group(1)), bool(m.group(2))
    d = os.path.join(work, os.path.basename(path)[:-5])
    os.makedirs(d)
    write_weights(os.path.join(d, "model.safetensors"),
                  example_weights(text, rng))
    ir = os.path.join(d, "model.mlir")
    shutil.copy(path, ir)
    seen = {"mixed": 0}
    for t in args.tokens:
        x = rng.standard_normal((t, 64)).astype(np.float32)
        xp = os.path.join(d, "x.npy")
        np.save(xp, x)
        results = {}
        for backend in ("reference", args.backend):
            prefix = os.path.join(d, "%s-T%d" % (backend, t))
            results[backend] = run_layer(args, ir, xp, prefix, backend)
        (y0, r0), (y1, r1) = results["reference"], results[args.backend]
        tag = "T=%d" % t
        for name, routers in (("reference", r0), (args.backend, r1)):
            if len(routers) != expected:
                raise AssertionError("%s: %s wrote the files of %d router(s), "
                                     "expected %d" % (tag, name, len(routers),
                                                      expected))
        for n, ((i0, w0), (i1, w1)) in enumerate(zip(r0, r1)):
            compare_routing("%s router %d" % (tag, n), i0, w0, i1, w1)
        if masked:
            check_masked(tag + " reference", r0[0][0], r0[0][1], seen)
            check_masked(tag + " " + args.backend, r1[0][0], r1[0][1], seen)
        scale = max(float(np.abs(y0).max()), 1e-30)
        err = float(np.abs(y0 - y1).max()) / scale
        if not np.isfinite(y1).all() or err > RTOL:
            raise AssertionError("%s: output differs from the reference "
                                 "(relative %.3g > %g)" % (tag, err, RTOL))
    if masked and seen["mixed"] == 0:
        raise AssertionError("no token had both real and empty slots: the "
                             "mask was not exercised")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--backend", default="emu")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--tokens", default=",".join(str(t) for t in TOKENS))
    p.add_argument("files", nargs="+")
    args = p.parse_args()
    args.tokens = [int(t) for t in args.tokens.split(",")]
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    rng = np.random.default_rng(seed)
    work = tempfile.mkdtemp(prefix="moe-routers-")
    failures = 0
    try:
        for path in args.files:
            tag = os.path.basename(path)
            try:
                check_file(args, path, work, rng)
                print("ok   %s" % tag, flush=True)
            except (AssertionError, RuntimeError) as e:
                failures += 1
                print("FAIL %s: %s" % (tag, e), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("%d of %d router files match the reference on %s (seed %d)"
          % (len(args.files) - failures, len(args.files), args.backend, seed))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
