"""Compares what moe_capi_test printed and wrote with moe-run --backend
reference on the same input.

  compare_capi.py OUT.txt DIR

DIR holds x.npy, y_layer.npy and y_all.npy (written by moe_capi_test) and
ref_layer.npy and ref_all.npy (moe-run). Checks that x.npy is the program's
fixed input, that the outputs match the reference within 1e-5 relative,
and that the printed checksums and first values are those of the files.
Also checks the layers, kernels and weight tensors the program printed
through the C API against DIR/pkg/manifest.json.
"""
import json
import os
import re
import sys

import numpy as np

RTOL = 1e-5


DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "i32": 4, "u32": 4}


def compare_manifest(text, pkg):
    """The layers, kernels and tensors the program printed (through the C
    API) against the package's manifest.json, read here independently."""
    m = json.load(open(os.path.join(pkg, "manifest.json")))
    problems = []
    layers = {}
    for plan in m["layers"]:
        if plan["target"] == "":
            layers[plan["layer"]] = (plan["output_width"],
                                     plan["values"][plan["input"]]["dtype"])
    printed = {int(l): (int(w), a) for l, w, a in re.findall(
        r"^layer (\d+) output (\d+) activation (\S+)$", text, re.M)}
    if printed != layers:
        problems.append("layers %s, manifest %s" % (printed, layers))
    launched = []
    for plan in m["layers"]:
        for launch in plan["launches"]:
            if launch["kernel"] not in launched:
                launched.append(launch["kernel"])
    kernels = re.findall(r"^kernel \d+: (\S+)$", text, re.M)
    if kernels != launched:
        problems.append("kernels %s, manifest launches %s" % (kernels, launched))
    tensors = m["weights"]["tensors"]
    rows = re.findall(r"^tensor (\d+): dtype (\S+) bytes (\d+) flags (\d+) "
                      r"shape([ \d]*) names(.*)$", text, re.M)
    if len(rows) != len(tensors):
        problems.append("%d tensors printed, manifest %d" % (len(rows),
                                                            len(tensors)))
    for (index, dtype, nbytes, flags, shape, names), t in zip(rows, tensors):
        flags = int(flags)
        want = (t["dtype"], t["bytes"], [int(d) for d in t["shape"]],
                t["names"], t["stacked"], t["constant"],
                t["offset"] is not None, False)
        got = (dtype, int(nbytes), [int(d) for d in shape.split()],
               names.split(), bool(flags & 1), bool(flags & 2),
               bool(flags & 4), bool(flags & 8))
        if got != want:
            problems.append("tensor %s: C API %s, manifest %s" % (index, got,
                                                                 want))
        n = DTYPE_BYTES[dtype]
        for d in want[2]:
            n *= d
        if n != int(nbytes):
            problems.append("tensor %s: %s bytes for its shape and dtype, "
                            "reported %s" % (index, n, nbytes))
    for p in problems:
        print("FAIL " + p)
    print(f"{'ok  ' if not problems else 'FAIL'} the layers, kernels and "
          f"{len(rows)} tensors match manifest.json")
    return 1 if problems else 0


def main():
    text = open(sys.argv[1]).read()
    d = sys.argv[2]
    x = np.load(os.path.join(d, "x.npy"))
    i = np.arange(x.size, dtype=np.float64)
    fixed = (np.sin(0.37 * i + 0.1).astype(np.float32) * np.float32(1.5))
    if x.dtype != np.float32 or not np.allclose(x.ravel(), fixed, rtol=1e-6,
                                                atol=1e-7):
        print("FAIL x.npy is not the fixed input")
        return 1
    print(f"x: {x.shape[0]} x {x.shape[1]} float32")
    failures = 0
    for tag, mine, ref in [("layer", "y_layer.npy", "ref_layer.npy"),
                           ("all", "y_all.npy", "ref_all.npy")]:
        y = np.load(os.path.join(d, mine))
        r = np.load(os.path.join(d, ref))
        scale = max(float(np.abs(r).max()), 1e-30)
        err = float(np.abs(y - r).max()) / scale if y.shape == r.shape \
            else float("inf")
        # The printed checksum and values are those of the file.
        weights = (np.arange(y.size) % 7 + 1).astype(np.float64)
        checksum = float((y.ravel().astype(np.float64) * weights).sum())
        printed = float(re.search(rf"^{tag} checksum: (\S+)$", text,
                                  re.M).group(1))
        first = [float(v) for v in re.search(rf"^{tag} first:(.*)$", text,
                                             re.M).group(1).split()]
        ref_checksum = float((r.ravel().astype(np.float64) * weights).sum())
        ok = (err <= RTOL
              and abs(printed - checksum) <= 1e-6 * max(1.0, abs(checksum))
              and np.array_equal(np.float32(first), y.ravel()[:4])
              and abs(printed - ref_checksum)
              <= RTOL * float(np.abs(r).sum() * 7))
        print(f"{'ok  ' if ok else 'FAIL'} {tag}: relative error {err:.3g}, "
              f"checksum {printed:.6g} (reference {ref_checksum:.6g})")
        failures += 0 if ok else 1
    failures += compare_manifest(text, os.path.join(d, "pkg"))
    print("the C API matches the reference" if not failures
          else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
