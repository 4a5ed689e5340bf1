#!/usr/bin/env python3
"""Extra layer inputs through the Python module and the C API (ctypes on
libmoe_runtime.so): a package of a GLIDER layer (sequence scores [B, 4] f32
and token-to-sequence map [T] i32) runs with its inputs and matches the
output of moe-run --backend reference; a missing, misshapen or out-of-range
input is refused with its name.

  check_extra_inputs.py --pkg DIR --lib LIBDIR --ref Y.npy --x X.npy
                        --scores G.npy --map M.npy
"""
import argparse
import ctypes
import os

import numpy as np

import moe_opt


def show(tag, f):
    try:
        f()
        print("FAIL %s: no error" % tag)
    except Exception as e:  # noqa: BLE001
        print("ok   %s: %s: %s" % (tag, type(e).__name__, e))


def main():
    ap = argparse.ArgumentParser()
    for a in ("pkg", "lib", "ref", "x", "scores", "map"):
        ap.add_argument("--" + a, required=True)
    args = ap.parse_args()
    x, g, m = np.load(args.x), np.load(args.scores), np.load(args.map)
    ref = np.load(args.ref)

    # Python.
    pkg = moe_opt.load(args.pkg, backend="emu")
    print("inputs", [(i["name"], i["dtype"], i["dims"]) for i in pkg.inputs(0)])
    y = pkg.run_with_inputs(0, x, [g, m])
    err = float(np.abs(y - ref).max() / np.abs(ref).max())
    print("%s python vs reference: %.2g" % ("ok  " if err < 1e-5 else "FAIL", err))
    show("python missing", lambda: pkg.run_with_inputs(0, x, [g]))
    show("python float map", lambda: pkg.run_with_inputs(0, x, [g, m.astype(np.float32)]))
    bad = m.copy()
    bad[-1] = g.shape[0]
    show("python range", lambda: pkg.run_with_inputs(0, x, [g, bad]))
    show("python layer call", lambda: pkg.layer(0)(x))

    # C.
    lib = ctypes.CDLL(os.path.join(args.lib, "libmoe_runtime.so"))
    err_buf = ctypes.create_string_buffer(512)
    model = ctypes.c_void_p()
    rc = lib.moe_model_open(args.pkg.encode(), b"emu", 0, ctypes.byref(model),
                            err_buf, 512)
    assert rc == 0, err_buf.value
    lib.moe_model_num_inputs.restype = ctypes.c_int64
    n = lib.moe_model_num_inputs(model, ctypes.c_int64(0))
    infos = []
    for i in range(n):
        name = ctypes.create_string_buffer(64)
        is_int, rank = ctypes.c_int(), ctypes.c_int()
        dims = (ctypes.c_int64 * 8)()
        rc = lib.moe_model_input_info(model, ctypes.c_int64(0), ctypes.c_int64(i),
                                      name, ctypes.c_size_t(64),
                                      ctypes.byref(is_int), ctypes.byref(rank),
                                      dims, 8)
        assert rc == 0
        infos.append((name.value.decode(), "i32" if is_int.value else "f32",
                      list(dims[:rank.value])))
    print("C inputs", n, infos)

    def run_c(arrays):
        keep = [np.ascontiguousarray(a) for a in arrays]
        data = (ctypes.c_void_p * len(keep))(*[a.ctypes.data for a in keep])
        shapes_list = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in keep]
        shapes = (ctypes.POINTER(ctypes.c_int64) * len(keep))(
            *[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64)) for s in shapes_list])
        ranks = (ctypes.c_int * len(keep))(*[a.ndim for a in keep])
        out = np.zeros_like(x)
        xs = np.ascontiguousarray(x)
        rc = lib.moe_model_run_layer_inputs(
            model, ctypes.c_int64(0), xs.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_int64(x.shape[0]), len(keep), data, shapes, ranks,
            out.ctypes.data_as(ctypes.c_void_p), err_buf, ctypes.c_size_t(512))
        return rc, out, err_buf.value.decode()

    rc, out, msg = run_c([g, m])
    err = float(np.abs(out - ref).max() / np.abs(ref).max())
    print("%s C vs reference: rc %d, %.2g" % ("ok  " if rc == 0 and err < 1e-5 else "FAIL", rc, err))
    rc, _, msg = run_c([g[:, :3].copy(), m])
    print("C misshapen: rc %d: %s" % (rc, msg))
    rc, _, msg = run_c([g, bad])
    print("C range: rc %d: %s" % (rc, msg))
    lib.moe_model_close(model)


if __name__ == "__main__":
    main()
