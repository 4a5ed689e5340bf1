"""pkg.tensors and pkg.bind_tensor (test/Python/bind.test).

    check_bind.py --work DIR

A qwen2_moe model (shared expert and its gate included) is compiled twice:
with its weights, and as a shape-only package (moe-compile --weights none).
Bound on the emu backend to the model's tensors (host arrays: float32
values of bf16 weights, and once as uint16 bit patterns), the shape-only
package gives the packaged model's outputs exactly. Then the errors: an
unbound run, an index out of range, a wrong shape, a wrong dtype, a CUDA
tensor on emu (a fake DLPack tensor), and its dtype and shape checks.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_dlpack  # noqa: E402
from moe_py_common import run  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "Oracle"))
from hf_models import read_safetensors, bf16_bits  # noqa: E402

import moe_opt  # noqa: E402

failures = 0


def expect_error(label, kind, fn):
    global failures
    try:
        fn()
    except kind as e:
        print("ok   %s: %s: %s" % (label, kind.__name__, e))
        return
    except Exception as e:  # noqa: BLE001
        print("FAIL %s: %s: %s" % (label, type(e).__name__, e))
        failures += 1
        return
    print("FAIL %s: no error" % label)
    failures += 1


def check(label, ok):
    global failures
    print(("ok   " if ok else "FAIL ") + label)
    failures += not ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    work = ap.parse_args().work
    model, shapes = os.path.join(work, "model"), os.path.join(work, "shapes")
    run(["moe-import", "--synthetic", "qwen2_moe", "--fused-experts",
         "--seed", "5", "-o", model])
    run(["moe-import", "--synthetic", "qwen2_moe", "--fused-experts",
         "--shapes-only", "-o", shapes])
    full_pkg, shape_pkg = os.path.join(work, "full.pkg"), os.path.join(
        work, "shapes.pkg")
    run(["moe-compile", model, "-o", full_pkg, "--arch", "none", "-q",
         "--activation-type", "bf16"])
    run(["moe-compile", shapes, "-o", shape_pkg, "--arch", "none", "-q",
         "--activation-type", "bf16", "--weights", "none"])
    values, dtypes, _ = read_safetensors(os.path.join(model,
                                                      "model.safetensors"))

    full = moe_opt.load(full_pkg, backend="emu")
    pkg = moe_opt.load(shape_pkg, backend="emu")
    tensors = pkg.tensors
    check("%d tensors, none stored, none bound" % len(tensors),
          len(tensors) == 14 and not any(t["stored"] or t["bound"]
                                         for t in tensors))
    check("full package: every tensor stored",
          all(t["stored"] for t in full.tensors))
    x = np.random.default_rng(3).standard_normal((6, 64)).astype(np.float32)
    expect_error("unbound run", moe_opt.Error, lambda: pkg.layer(0)(x))

    for t in tensors:
        (name,) = t["names"]
        v = values[name]
        # Half the bf16 tensors as bit patterns, the rest as float values.
        data = bf16_bits(v) if t["dtype"] == "bf16" and t["index"] % 2 else v
        pkg.bind_tensor(t["index"], data)
    check("every tensor bound", all(t["bound"] for t in pkg.tensors))
    for layer in pkg.layers:
        same = np.array_equal(pkg.layer(layer)(x), full.layer(layer)(x))
        check("layer %d: identical to the packaged model" % layer, same)

    gate = tensors[0]
    expect_error("index out of range", IndexError,
                 lambda: pkg.bind_tensor(len(tensors), values[gate["names"][0]]))
    expect_error("wrong shape", ValueError,
                 lambda: pkg.bind_tensor(0, values[gate["names"][0]][:4]))
    expect_error("wrong dtype", ValueError,
                 lambda: pkg.bind_tensor(0, values[gate["names"][0]]
                                         .astype(np.int32)))
    expect_error("not an array", TypeError, lambda: pkg.bind_tensor(0, "w"))
    host = np.zeros(gate["shape"], np.uint16)
    fake = fake_dlpack.DLTensorObject(host.ctypes.data, gate["shape"], "bf16")
    expect_error("CUDA tensor on emu", ValueError,
                 lambda: pkg.bind_tensor(0, fake))
    fake32 = fake_dlpack.DLTensorObject(host.ctypes.data, gate["shape"], "f32")
    expect_error("CUDA tensor of another dtype", ValueError,
                 lambda: pkg.bind_tensor(0, fake32))
    fake_shape = fake_dlpack.DLTensorObject(host.ctypes.data, [4, 64], "bf16")
    expect_error("CUDA tensor of another shape", ValueError,
                 lambda: pkg.bind_tensor(0, fake_shape))
    # The package is still bound and runs as before after the errors.
    check("usable after the errors",
          np.array_equal(pkg.layer(0)(x), full.layer(0)(x)))
    print("all bind cases passed" if not failures else "%d FAILED" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
