"""moe_opt on the emu backend against the reference executor.

For synthetic models (mixtral: every layer MoE; deepseek_v2: a dense first
layer, so MoE layer indices are not positions), compiled into packages:
pkg.layer(L)(x) for every MoE layer L and pkg.run_all(x, chain=C) on random
float32 inputs, T in {1, 7, 64}, match `moe-run PKG --backend reference`
(--layer L, --all-layers --chain C) within 1e-5 relative; float64 and list inputs are converted,
out= is written in place, the package's properties are right.

  check_layers.py --work DIR [--seed N]
"""
import argparse
import sys
import time

import numpy as np

import moe_opt
from moe_py_common import check_close, make_package, reference

TOKENS = [1, 7, 64]


def check_package(work, arch, rng, seed):
    pkg_dir = make_package(work, arch, seed=seed)
    pkg = moe_opt.load(pkg_dir, backend="emu")
    assert pkg.backend == "emu", pkg.backend
    assert pkg.path == pkg_dir, pkg.path
    assert isinstance(pkg.layers, list) and pkg.layers, pkg.layers
    assert all(isinstance(l, int) for l in pkg.layers), pkg.layers
    assert pkg.layers == sorted(pkg.layers), pkg.layers
    print(f"{arch}: backend {pkg.backend}, layers {pkg.layers}, hidden "
          f"{[pkg.hidden(l) for l in pkg.layers]}, activations "
          f"{[pkg.activation_type(l) for l in pkg.layers]}", flush=True)
    assert repr(pkg).startswith("<moe_opt.Package"), repr(pkg)
    worst = 0.0
    for layer in pkg.layers:
        f = pkg.layer(layer)
        assert f.index == layer and f.hidden == pkg.hidden(layer)
        assert f.activation_type == "f32", f.activation_type
        hidden = pkg.hidden(layer)
        for t in TOKENS:
            x = rng.standard_normal((t, hidden)).astype(np.float32)
            x_copy = x.copy()
            y = f(x)
            assert np.array_equal(x, x_copy), "layer(x) changed its input"
            assert pkg.last_ms >= 0.0
            ref = reference(work, pkg_dir, x, layer)
            worst = max(worst, check_close(f"{arch} layer {layer} T={t}",
                                           ref, y))
            if t == 7:
                # Another dtype and a list are converted to float32.
                check_close(f"{arch} layer {layer} float64", ref,
                            f(x.astype(np.float64)))
                check_close(f"{arch} layer {layer} list", ref, f(x.tolist()))
                # A non-contiguous view is copied.
                wide = np.zeros((t, 2 * hidden), np.float32)
                wide[:, ::2] = x
                check_close(f"{arch} layer {layer} strided", ref,
                            f(wide[:, ::2]))
                # out= is written and returned.
                out = np.full((t, hidden), np.nan, np.float32)
                r = f(x, out=out)
                assert r is out, "layer(x, out=) must return out"
                check_close(f"{arch} layer {layer} out=", ref, out)
        print(f"ok   {arch} layer {layer}: T {TOKENS}", flush=True)
    hidden = pkg.hidden(pkg.layers[0])
    for t in TOKENS:
        x = rng.standard_normal((t, hidden)).astype(np.float32)
        x_copy = x.copy()
        y = pkg.run_all(x, chain="none")
        assert np.array_equal(x, x_copy), "run_all changed its input"
        ref = reference(work, pkg_dir, x)
        worst = max(worst, check_close(f"{arch} run_all T={t}", ref, y))
        # run_all with chain="none" is the layers chained.
        chained = x
        for layer in pkg.layers:
            chained = pkg.layer(layer)(chained)
        check_close(f"{arch} run_all vs chained T={t}", chained, y, 0.0)
        out = np.empty_like(x)
        assert pkg.run_all(x, out=out, chain="none") is out
        check_close(f"{arch} run_all out= T={t}", ref, out)
        # The residual chains match moe-run's; the default is prenorm.
        for chain in ["prenorm", "residual"]:
            ref = reference(work, pkg_dir, x, chain=chain)
            y = pkg.run_all(x, chain=chain)
            worst = max(worst, check_close(f"{arch} run_all {chain} T={t}",
                                           ref, y))
        check_close(f"{arch} run_all default T={t}",
                    pkg.run_all(x, chain="prenorm"), pkg.run_all(x), 0.0)
    print(f"ok   {arch} run_all: T {TOKENS}", flush=True)
    # Zero tokens: an empty result, nothing run.
    y = pkg.layer(pkg.layers[0])(np.zeros((0, hidden), np.float32))
    assert y.shape == (0, hidden) and y.dtype == np.float32, y.shape
    print(f"{arch}: worst relative error {worst:.3g}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    rng = np.random.default_rng(seed)
    failures = 0
    for arch in ["mixtral", "deepseek_v2"]:
        try:
            check_package(args.work, arch, rng, seed)
        except (AssertionError, RuntimeError) as e:
            failures += 1
            print(f"FAIL {arch}: {e}", flush=True)
    print(f"{2 - failures} of 2 packages match the reference (seed {seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
