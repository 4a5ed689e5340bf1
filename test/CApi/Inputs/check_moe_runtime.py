"""bench/gpu/moe_runtime.py (the ctypes wrapper) describes a package through
the C API, without parsing manifest.json itself (test/CApi/moe-runtime-py.test).

    check_moe_runtime.py MOE_RUNTIME_PY LIB PKG X.npy L:EMU.npy

Opens PKG on the emu backend and compares what the wrapper reports (the
tensors, each layer's widths and activation type, the kernels) with
manifest.json read here; runs layer L on X and compares with EMU.npy
(moe-run --backend emu on the same package: identical); checks the bound
flag and the errors for an unknown layer.
"""
import importlib.util
import json
import os
import sys

import numpy as np


def main():
    spec = importlib.util.spec_from_file_location("moe_runtime", sys.argv[1])
    rt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt)
    lib, pkg, x_path = sys.argv[2:5]
    layer, emu_path = sys.argv[5].split(":")
    layer = int(layer)
    m = json.load(open(os.path.join(pkg, "manifest.json")))
    model = rt.Model(pkg, backend="emu", lib=lib)
    status = 0

    def check(ok, what):
        nonlocal status
        status |= not ok
        print("%s %s" % ("ok  " if ok else "FAIL", what))

    keys = ("names", "shape", "dtype", "bytes", "stacked", "constant")
    want = [dict(((k, t[k]) for k in keys), stored=t["offset"] is not None)
            for t in m["weights"]["tensors"]]
    got = [dict((k, t[k]) for k in keys + ("stored",)) for t in model.tensors]
    check(got == want, "%d tensors as manifest.json describes them "
          "(%d stacked, %d constant, dtypes %s)"
          % (len(got), sum(t["stacked"] for t in got),
             sum(t["constant"] for t in got),
             sorted(set(t["dtype"] for t in got))))
    if got != want:
        for g, w in zip(got, want):
            if g != w:
                print("  C API %s\n  manifest %s" % (g, w))
    check(all(rt.tensor_nbytes(t) == t["bytes"] for t in model.tensors),
          "byte sizes agree with shapes and dtypes")

    plans = dict((p["layer"], p) for p in m["layers"] if p["target"] == "")
    check(model.layers == sorted(plans), "layers %s" % model.layers)
    widths = [(model.hidden(l), model.output_width(l), model.activation_type(l))
              for l in model.layers]
    expect = [(plans[l]["input_width"], plans[l]["output_width"],
               plans[l]["values"][plans[l]["input"]]["dtype"])
              for l in model.layers]
    check(widths == expect, "widths and activation types %s" % sorted(set(widths)))
    launched = []
    for p in m["layers"]:
        for launch in p["launches"]:
            if launch["kernel"] not in launched:
                launched.append(launch["kernel"])
    check(model.kernels == launched, "%d kernels, in order of first launch"
          % len(model.kernels))

    x = np.load(x_path)
    y = model.run_host(layer, x)
    check(np.array_equal(y, np.load(emu_path)),
          "layer %d through the wrapper is identical to moe-run --backend emu"
          % layer)

    # Binding a tensor to its own bytes: flagged bound, same output.
    index = next(t["index"] for t in model.tensors
                 if not t["constant"] and any(".layers.%d." % layer in n
                                              for n in t["names"]))
    before = model.is_bound(index)
    raw = np.fromfile(os.path.join(pkg, "weights.bin"), dtype=np.uint8)
    entry = m["weights"]["tensors"][index]
    owner, view = rt.aligned_host_buffer(entry["bytes"])
    view[:] = raw[entry["offset"]:entry["offset"] + entry["bytes"]]
    model.bind(index, view.ctypes.data, entry["bytes"], owner)
    check(not before and model.is_bound(index)
          and np.array_equal(model.run_host(layer, x), y),
          "tensor %d: bound flag set by bind, same output on its own bytes"
          % index)

    for call in (lambda: model.activation_type(999),
                 lambda: model.output_width(999)):
        try:
            call()
            check(False, "an unknown layer raises")
        except rt.MoeRuntimeError as e:
            check("layer 999 is not an MoE layer of" in str(e),
                  "unknown layer: %s" % str(e).split(";")[0])
    model.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
