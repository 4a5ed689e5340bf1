"""moe_opt and DLPack, without a GPU (the emu backend):

- a CPU DLPack tensor (not a numpy array) goes through numpy and matches
  the numpy call;
- a tensor labelled CUDA (fake_dlpack over host memory) is parsed and
  checked as a device tensor: dtype against the layer's activation type,
  shape [T, H], C-contiguity, device ordinal, `out` required and on the
  same device, not the same memory as x; `stream` is passed to __dlpack__
  (1, the legacy default stream, when none is given); a valid pair reaches
  Model::runLayerOnDevice, which on emu fails with a RuntimeError;
- run_all refuses CUDA tensors.

  check_dlpack.py --work DIR
"""
import argparse
import sys

import numpy as np

import moe_opt
from fake_dlpack import (CpuTensor, OldDLTensorObject, host_fake_cuda,
                         kDLCPU)
from moe_py_common import check_close, expect_raises, make_package


class Stream:
    """Like torch.cuda.Stream: the handle in `cuda_stream`."""
    cuda_stream = 0x5150


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    args = p.parse_args()
    rng = np.random.default_rng(11)

    pkg = moe_opt.load(make_package(args.work, "mixtral"), backend="emu")
    f = pkg.layer(1)
    h = f.hidden
    x = rng.standard_normal((7, h)).astype(np.float32)
    y = f(x)

    # CPU DLPack tensors.
    check_close("CPU DLPack x", y, f(CpuTensor(x)), 0.0)
    out = np.zeros((7, h), np.float32)
    assert f(CpuTensor(x), out=out) is out
    check_close("CPU DLPack x, numpy out", y, out, 0.0)
    check_close("CPU DLPack run_all", pkg.run_all(x),
                pkg.run_all(CpuTensor(x)), 0.0)
    print("ok   CPU DLPack tensors", flush=True)

    # Tensors labelled CUDA over host memory.
    xs = np.ascontiguousarray(x)
    ys = np.zeros_like(xs)
    cx, cy = host_fake_cuda(xs), host_fake_cuda(ys)
    expect_raises("valid CUDA pair on emu", RuntimeError,
                  lambda: f(cx, out=cy), "needs the cuda backend")
    assert cx.calls == [1] and cy.calls == [1], (cx.calls, cy.calls)
    print(f"ok   __dlpack__ got stream {cx.calls[0]} (the default stream)")
    cx.calls.clear()
    expect_raises("stream object", RuntimeError,
                  lambda: f(cx, out=cy, stream=Stream()), "cuda backend")
    assert cx.calls == [0x5150], cx.calls
    cx.calls.clear()
    expect_raises("stream int", RuntimeError,
                  lambda: f(cx, out=cy, stream=77), "cuda backend")
    assert cx.calls == [77], cx.calls
    old = OldDLTensorObject(xs.ctypes.data, xs.shape)
    expect_raises("producer without stream", RuntimeError,
                  lambda: f(old, out=cy), "cuda backend")
    assert old.calls == ["no stream"], old.calls
    expect_raises("T = 1 with any first stride", RuntimeError,
                  lambda: f(host_fake_cuda(xs[:1], strides=[999, 1]),
                            out=host_fake_cuda(ys[:1])), "cuda backend")

    expect_raises("CUDA x without out", ValueError, lambda: f(cx),
                  "pass out=")
    expect_raises("CUDA x, numpy out", ValueError, lambda: f(cx, out=ys),
                  "out: not a CUDA tensor, but x is one")
    expect_raises("numpy x, CUDA out", ValueError, lambda: f(xs, out=cy),
                  "out: a CUDA tensor, but x is on the host")
    expect_raises("CUDA x, CPU DLPack out", ValueError,
                  lambda: f(cx, out=host_fake_cuda(ys, device=(kDLCPU, 0))),
                  "out: not a CUDA tensor")
    expect_raises("f16 x on an f32 layer", ValueError,
                  lambda: f(host_fake_cuda(xs, "f16"), out=cy),
                  "x: dtype f16, but layer 1 takes f32 activations")
    expect_raises("f16 out on an f32 layer", ValueError,
                  lambda: f(cx, out=host_fake_cuda(ys, "bf16")),
                  "out: dtype bf16")
    expect_raises("wrong width", ValueError,
                  lambda: f(host_fake_cuda(xs[:, :8].copy()), out=cy),
                  f"x: expected shape [tokens, {h}]", "[7, 8]")
    expect_raises("out with other tokens", ValueError,
                  lambda: f(cx, out=host_fake_cuda(ys[:3])),
                  f"out: expected shape [7, {h}]", f"[3, {h}]")
    expect_raises("rank 3", ValueError,
                  lambda: f(host_fake_cuda(xs.reshape(7, 1, h)), out=cy),
                  "x: expected shape")
    expect_raises("non-contiguous x", ValueError,
                  lambda: f(host_fake_cuda(xs, strides=[1, 7]), out=cy),
                  "not C-contiguous")
    expect_raises("other device", ValueError,
                  lambda: f(host_fake_cuda(xs, device=(2, 1)), out=cy),
                  "x: on CUDA device 1, but the package runs on device 0")
    expect_raises("out is x", ValueError,
                  lambda: f(cx, out=host_fake_cuda(xs)), "the same memory")
    expect_raises("run_all on CUDA", ValueError,
                  lambda: pkg.run_all(cx), "run_all takes host arrays")
    empty = np.zeros((0, h), np.float32)
    co = host_fake_cuda(np.zeros((0, h), np.float32))
    assert f(host_fake_cuda(empty), out=co) is co
    print("ok   T = 0 on the device is a no-op", flush=True)

    # A package with bf16 activations takes bf16 device tensors.
    pkg16 = moe_opt.load(make_package(args.work, "qwen2_moe",
                                      ["--activation-type", "bf16"]),
                         backend="emu")
    l16 = pkg16.layers[0]
    print(f"bf16 package: layers {pkg16.layers}, activations "
          f"{pkg16.activation_type(l16)}", flush=True)
    g = pkg16.layer(l16)
    assert g.activation_type == "bf16", g.activation_type
    b = np.zeros((5, g.hidden), np.uint16)
    expect_raises("f32 x on a bf16 layer", ValueError,
                  lambda: g(host_fake_cuda(b, "f32"),
                            out=host_fake_cuda(b.copy(), "f32")),
                  "x: dtype f32, but layer", "takes bf16 activations")
    expect_raises("bf16 pair on emu", RuntimeError,
                  lambda: g(host_fake_cuda(b, "bf16"),
                            out=host_fake_cuda(b.copy(), "bf16")),
                  "needs the cuda backend")
    print("all DLPack cases passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
