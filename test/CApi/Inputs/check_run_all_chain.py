"""The three run_alls agree: moe-run --all-layers --backend emu (DIR/run_*.npy),
the C API (DIR/y_all*.npy, written by moe_capi_test) and moe_opt's
Package.run_all, on the same package and input (DIR/x.npy), for the default
and each --chain mode; the default is prenorm, and the modes differ.

  check_run_all_chain.py PKG DIR
"""
import os
import sys

import numpy as np

import moe_opt

MODES = ["prenorm", "residual", "none"]


def main():
    pkg_dir, work = sys.argv[1], sys.argv[2]
    load = lambda name: np.load(os.path.join(work, name))
    x = load("x.npy")
    pkg = moe_opt.load(pkg_dir, backend="emu")
    failures = 0

    def check(tag, a, b):
        nonlocal failures
        # The same kernels and the same chain step (moe/runtime/Chain.h):
        # the same bits.
        if a.shape == b.shape and np.array_equal(a, b):
            print(f"ok   {tag}")
        else:
            diff = (float(np.abs(a - b).max()) if a.shape == b.shape
                    else f"shapes {a.shape} {b.shape}")
            print(f"FAIL {tag}: differ by {diff}")
            failures += 1

    default = pkg.run_all(x)
    check("default: moe-run equals Python", load("run_default.npy"), default)
    check("default: moe-run equals the C API", load("run_default.npy"),
          load("y_all.npy"))
    results = {}
    for mode in MODES:
        y = pkg.run_all(x, chain=mode)
        results[mode] = y
        check(f"{mode}: moe-run equals Python", load(f"run_{mode}.npy"), y)
        check(f"{mode}: moe-run equals the C API", load(f"run_{mode}.npy"),
              load(f"y_all_{mode}.npy"))
    check("the default is prenorm", results["prenorm"], default)
    for a, b in [("prenorm", "residual"), ("prenorm", "none"),
                 ("residual", "none")]:
        if np.array_equal(results[a], results[b]):
            print(f"FAIL {a} and {b} give the same numbers")
            failures += 1
    # The none chain is each layer on the previous one's output.
    chained = x
    for layer in pkg.layers:
        chained = pkg.layer(layer)(chained)
    check("none: the layers one by one", chained, results["none"])
    try:
        pkg.run_all(x, chain="post")
        print("FAIL chain='post' was accepted")
        failures += 1
    except ValueError as e:
        print(f"ok   unknown chain: ValueError: {e}")
    print("the run_alls agree" if failures == 0 else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
