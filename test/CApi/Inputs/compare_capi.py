"""Compares what moe_capi_test printed and wrote with moe-run --backend
reference on the same input.

  compare_capi.py OUT.txt DIR

DIR holds x.npy, y_layer.npy and y_all.npy (written by moe_capi_test) and
ref_layer.npy and ref_all.npy (moe-run). Checks that x.npy is the program's
fixed input, that the outputs match the reference within 1e-5 relative,
and that the printed checksums and first values are those of the files.
"""
import os
import re
import sys

import numpy as np

RTOL = 1e-5


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
    print("the C API matches the reference" if not failures
          else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
