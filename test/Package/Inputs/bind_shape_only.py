"""Binds a model's tensors into a shape-only package and runs it
(test/Package/shape-only.test).

    bind_shape_only.py MOE_RUNTIME_PY LIB PKG MODEL_DIR X.npy L:EMU.npy:REF.npy...

Loads bench/gpu/moe_runtime.py (the ctypes wrapper of libmoe_runtime.so),
reads MODEL_DIR/model.safetensors with numpy, binds every tensor of the
shape-only package PKG from it on the emu backend, runs each layer L on X
and compares with EMU.npy (the packaged model on the emu backend: the same
kernels on the same bytes, so the outputs must be identical) and REF.npy
(the reference executor: relative error at most 1e-2, bf16 activations).
Then runs an unbound copy and prints its error.
"""
import importlib.util
import os
import sys

import numpy as np


def main():
    spec = importlib.util.spec_from_file_location("moe_runtime", sys.argv[1])
    rt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt)
    lib, pkg, model_dir, x_path = sys.argv[2:6]
    arrays = rt.load_safetensors_numpy(os.path.join(model_dir,
                                                    "model.safetensors"))
    x = np.load(x_path)
    model = rt.Model(pkg, backend="emu", lib=lib)
    report = rt.bind_from_arrays(model, arrays)
    weights = [t for t in model.tensors if not t["constant"]]
    print("bound %d of %d tensors" % (len(report["bound"]), len(weights)))
    status = 0
    for item in sys.argv[6:]:
        layer, emu_path, ref_path = item.split(":")
        y = model.run_host(int(layer), x)
        emu, ref = np.load(emu_path), np.load(ref_path)
        identical = np.array_equal(y, emu)
        err = float(np.max(np.abs(y - ref)) / max(np.max(np.abs(ref)), 1e-30))
        ok = identical and err <= 1e-2
        status |= not ok
        print("layer %s: max relative error %.3g vs the reference, %s the "
              "packaged model: %s" % (layer, err,
                                      "identical to" if identical
                                      else "DIFFERENT from",
                                      "ok" if ok else "FAILED"))
    # Rebinding after a layer ran takes effect: the negated down projection
    # changes the output, the original one restores it.
    first = int(sys.argv[6].split(":")[0])
    y0 = model.run_host(first, x)
    name = "model.layers.%d.mlp.experts.down_proj" % first
    index = [i for i, t in enumerate(model.tensors) if t["names"] == [name]][0]
    for values, expect_same in ((-arrays[name], False), (arrays[name], True)):
        owner, pointer = rt.host_tensor_buffer(values, model.tensors[index])
        model.bind(index, pointer, rt.tensor_nbytes(model.tensors[index]), owner)
        same = np.array_equal(model.run_host(first, x), y0)
        status |= same != expect_same
        print("rebound %s: output %s" % ("negated" if not expect_same
                                         else "original",
                                         "unchanged" if same else "changed"))
    model.close()
    unbound = rt.Model(pkg, backend="emu", lib=lib)
    try:
        unbound.run_host(unbound.layers[0], x)
        print("unbound run: no error (FAILED)")
        status = 1
    except rt.MoeRuntimeError as e:
        print("unbound run: MoeRuntimeError: " + str(e).splitlines()[0])
    unbound.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
