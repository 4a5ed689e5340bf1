"""moe_opt's errors: a package that cannot be opened is a RuntimeError
(moe_opt.Error) naming the path; an unknown layer a ValueError listing the
MoE layers; inputs of the wrong rank, width or type ValueError or
TypeError; a bad `out` ValueError. The package stays usable after each.
Prints one line per case (checked by errors.test).

  check_errors.py --work DIR
"""
import argparse
import gc
import os
import sys
import threading

import numpy as np

import moe_opt
from moe_py_common import check_close, expect_raises, make_package


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    args = p.parse_args()
    work = args.work
    pkg_dir = make_package(work, "mixtral")
    rng = np.random.default_rng(7)

    assert issubclass(moe_opt.Error, RuntimeError)

    missing = os.path.join(work, "no-such-package")
    expect_raises("missing package", RuntimeError,
                  lambda: moe_opt.load(missing, backend="emu"), missing)
    expect_raises("missing package is moe_opt.Error", moe_opt.Error,
                  lambda: moe_opt.load(missing))
    not_pkg = os.path.join(work, "mixtral.model")  # a model, not a package
    expect_raises("model folder", RuntimeError,
                  lambda: moe_opt.load(not_pkg, backend="emu"), not_pkg)
    expect_raises("unknown backend", RuntimeError,
                  lambda: moe_opt.load(pkg_dir, backend="tpu"),
                  "unknown backend 'tpu'")
    expect_raises("load without a path", TypeError, lambda: moe_opt.load())

    pkg = moe_opt.load(pkg_dir, backend="emu")
    print(f"layers {pkg.layers}", flush=True)
    hidden = pkg.hidden(0)

    expect_raises("unknown layer", ValueError, lambda: pkg.layer(5),
                  "layer 5", "MoE layers: 0, 1")
    expect_raises("unknown layer hidden", ValueError, lambda: pkg.hidden(-1),
                  "MoE layers: 0, 1")
    expect_raises("unknown layer activation_type", ValueError,
                  lambda: pkg.activation_type(2), "MoE layers: 0, 1")

    f = pkg.layer(1)
    expect_raises("wrong width", ValueError,
                  lambda: f(np.zeros((3, hidden + 1), np.float32)),
                  "expected width 64", "[3, 65]")
    expect_raises("rank 1", ValueError,
                  lambda: f(np.zeros(hidden, np.float32)), "[..., 64]",
                  "[64]")
    # [B, S, H] is tokens B * S (issue 15: it was refused).
    y3 = f(np.ones((2, 3, hidden), np.float32))
    assert y3.shape == (2, 3, hidden), y3.shape
    assert np.array_equal(y3.reshape(6, hidden),
                          f(np.ones((6, hidden), np.float32)))
    print("ok   rank 3: [2, 3, 64] runs as 6 tokens", flush=True)
    expect_raises("complex input", TypeError,
                  lambda: f(np.zeros((2, hidden), np.complex64)),
                  "complex64")
    expect_raises("string input", TypeError,
                  lambda: f([["a"] * hidden]), "got dtype <U1")
    expect_raises("run_all wrong width", ValueError,
                  lambda: pkg.run_all(np.zeros((3, 8), np.float32)),
                  "expected width 64", "run_all")
    x = rng.standard_normal((4, hidden)).astype(np.float32)
    expect_raises("out of the wrong shape", ValueError,
                  lambda: f(x, out=np.zeros((5, hidden), np.float32)),
                  "[4, 64]", "[5, 64]")
    expect_raises("out of the wrong dtype", ValueError,
                  lambda: f(x, out=np.zeros((4, hidden), np.float64)),
                  "float64")
    ro = np.zeros((4, hidden), np.float32)
    ro.flags.writeable = False
    expect_raises("read-only out", ValueError, lambda: f(x, out=ro),
                  "read-only")
    expect_raises("Fortran-order out", ValueError,
                  lambda: f(x, out=np.zeros((4, hidden), np.float32,
                                            order="F")),
                  "not C-contiguous")
    expect_raises("out positional", TypeError,
                  lambda: f(x, np.zeros((4, hidden), np.float32)))

    # Still usable; a Layer keeps its package open.
    y = f(x)
    layer = moe_opt.load(pkg_dir, backend="emu").layer(1)
    gc.collect()
    check_close("layer after its package was dropped", y, layer(x), 0.0)
    print("ok   usable after the errors", flush=True)

    # Runs from several threads are serialised; each gets its own result.
    xs = [rng.standard_normal((t, hidden)).astype(np.float32)
          for t in (1, 7, 64, 7)]
    expected = [f(xi) for xi in xs]
    results = [None] * len(xs)

    def work_on(i):
        results[i] = f(xs[i])

    threads = [threading.Thread(target=work_on, args=(i,))
               for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (e, r) in enumerate(zip(expected, results)):
        check_close(f"thread {i}", e, r, 0.0)
    print("ok   threads", flush=True)
    print(repr(pkg), flush=True)
    print(repr(f), flush=True)
    print("all error cases passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
