"""Shared by the tests of the Python module moe_opt (test/Python).

Builds packages with the project's tools (moe-import --synthetic, then
moe-compile --arch none: no NVRTC needed, the emu backend compiles the
kernels for the CPU) and runs the reference executor (moe-run --backend
reference) as the oracle. The tools are found on PATH (lit puts build/bin
there).
"""
import os
import subprocess

import numpy as np

# f32 activations, f32 accumulation in another order than the reference's
# f64 sums: a few ulps of the largest output.
RTOL = 1e-5


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(" ".join(cmd) + " failed:\n" + r.stderr[-3000:])
    return r.stdout


def make_package(work, arch, extra_compile=(), seed=None):
    """A synthetic model of `arch` compiled into WORK/ARCH.pkg."""
    model = os.path.join(work, arch + ".model")
    pkg = os.path.join(work, arch + ".pkg")
    cmd = ["moe-import", "--synthetic", arch, "-o", model, "--force"]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    run(cmd)
    # f32 activations unless the caller names a type (moe-compile's
    # default is the model's dtype).
    dtype = ([] if "--activation-type" in extra_compile
             else ["--activation-type", "f32"])
    run(["moe-compile", model, "-o", pkg, "--arch", "none", "--force", "-q"]
        + dtype + list(extra_compile))
    return pkg


def reference(work, pkg, x, layer=None, chain="none"):
    """moe-run --backend reference on x: one layer, or all (layer None)
    chained as --chain `chain` says."""
    xp = os.path.join(work, "ref_x.npy")
    yp = os.path.join(work, "ref_y.npy")
    np.save(xp, np.ascontiguousarray(x, dtype=np.float32))
    sel = (["--all-layers", "--chain", chain] if layer is None
           else ["--layer", str(layer)])
    run(["moe-run", pkg] + sel + ["--input", xp, "--output", yp,
                                  "--backend", "reference"])
    return np.load(yp)


def relative_error(ref, y):
    scale = max(float(np.abs(ref).max()), 1e-30)
    return float(np.abs(ref - y).max()) / scale


def check_close(tag, ref, y, rtol=RTOL):
    if y.shape != ref.shape:
        raise AssertionError(f"{tag}: shape {y.shape}, the reference "
                             f"{ref.shape}")
    if y.dtype != np.float32:
        raise AssertionError(f"{tag}: dtype {y.dtype}, expected float32")
    if not np.isfinite(y).all():
        raise AssertionError(f"{tag}: non-finite values")
    err = relative_error(ref, y)
    if err > rtol:
        raise AssertionError(f"{tag}: differs from the reference (relative "
                             f"{err:.3g} > {rtol})")
    return err


def expect_raises(tag, exc_type, fn, *needles):
    """fn() raises exc_type whose message contains every needle."""
    try:
        fn()
    except exc_type as e:
        msg = str(e)
        for n in needles:
            if n not in msg:
                raise AssertionError(f"{tag}: message {msg!r} lacks {n!r}")
        print(f"ok   {tag}: {type(e).__name__}: {msg}", flush=True)
        return e
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{tag}: raised {type(e).__name__} ({e}), "
                             f"expected {exc_type.__name__}")
    raise AssertionError(f"{tag}: no exception, expected "
                         f"{exc_type.__name__}")
