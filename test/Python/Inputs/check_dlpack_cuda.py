"""moe_opt on real CUDA tensors (DLPack, no copy), without PyTorch: device
memory from the driver API (ctypes, libcuda.so.1, the primary context that
the runtime and PyTorch share) wrapped in fake_dlpack.DLTensorObject.

- f32 package: layer(L)(x, out=y) on device memory, on the default stream
  and on a stream of ours, matches the host call and moe-run --backend
  reference (1e-5 relative);
- bf16 package: bf16 device tensors match the host call (which rounds the
  same way) within bf16 precision.

  check_dlpack_cuda.py --work DIR
"""
import argparse
import ctypes
import sys

import numpy as np

import moe_opt
from fake_dlpack import DLTensorObject
from moe_py_common import check_close, make_package, reference

cuda = ctypes.CDLL("libcuda.so.1")


def ck(rc, what):
    if rc != 0:
        raise RuntimeError(f"{what} failed: CUresult {rc}")


class DeviceBuffer:
    def __init__(self, nbytes):
        self.ptr = ctypes.c_uint64()
        self.nbytes = max(nbytes, 1)
        ck(cuda.cuMemAlloc_v2(ctypes.byref(self.ptr),
                              ctypes.c_size_t(self.nbytes)), "cuMemAlloc")

    def upload(self, array):
        array = np.ascontiguousarray(array)
        ck(cuda.cuMemcpyHtoD_v2(self.ptr, array.ctypes.data_as(
            ctypes.c_void_p), ctypes.c_size_t(array.nbytes)), "cuMemcpyHtoD")

    def download(self, array):
        ck(cuda.cuMemcpyDtoH_v2(array.ctypes.data_as(ctypes.c_void_p),
                                self.ptr, ctypes.c_size_t(array.nbytes)),
           "cuMemcpyDtoH")
        return array

    def __del__(self):
        cuda.cuMemFree_v2(self.ptr)


def to_bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    args = p.parse_args()
    rng = np.random.default_rng(5)

    ck(cuda.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    ck(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    ck(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "retain")
    ck(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

    pkg_dir = make_package(args.work, "mixtral")
    pkg = moe_opt.load(pkg_dir, backend="cuda", device=0)
    assert pkg.backend == "cuda", pkg.backend
    print(f"cuda package: layers {pkg.layers}", flush=True)
    stream = ctypes.c_void_p()
    ck(cuda.cuStreamCreate(ctypes.byref(stream), 1), "cuStreamCreate")
    for layer in pkg.layers:
        f = pkg.layer(layer)
        for t in (1, 7, 64):
            x = rng.standard_normal((t, f.hidden)).astype(np.float32)
            ref = reference(args.work, pkg_dir, x, layer)
            host = f(x)
            check_close(f"host layer {layer} T={t}", ref, host)
            bx, by = DeviceBuffer(x.nbytes), DeviceBuffer(x.nbytes)
            bx.upload(x)
            cx = DLTensorObject(bx.ptr.value, x.shape, "f32")
            cy = DLTensorObject(by.ptr.value, x.shape, "f32")
            assert f(cx, out=cy) is cy
            assert pkg.last_ms >= 0.0
            ck(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
            y = by.download(np.empty_like(x))
            check_close(f"device layer {layer} T={t}", ref, y)
            check_close(f"device vs host layer {layer} T={t}", host, y)
            # Our own stream.
            by.upload(np.zeros_like(x))
            f(cx, out=cy, stream=stream.value)
            ck(cuda.cuStreamSynchronize(stream), "cuStreamSynchronize")
            y = by.download(np.empty_like(x))
            check_close(f"stream layer {layer} T={t}", ref, y)
        print(f"ok   f32 device layer {layer}", flush=True)

    pkg16 = moe_opt.load(make_package(args.work, "qwen2_moe",
                                      ["--activation-type", "bf16"]),
                         backend="cuda")
    for layer in pkg16.layers:
        g = pkg16.layer(layer)
        assert g.activation_type == "bf16"
        x = from_bf16_bits(to_bf16_bits(
            rng.standard_normal((7, g.hidden)).astype(np.float32)))
        host = g(x)
        bits = to_bf16_bits(x)
        bx, by = DeviceBuffer(bits.nbytes), DeviceBuffer(bits.nbytes)
        bx.upload(bits)
        g(DLTensorObject(bx.ptr.value, bits.shape, "bf16"),
          out=DLTensorObject(by.ptr.value, bits.shape, "bf16"))
        ck(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
        y = from_bf16_bits(by.download(np.empty_like(bits)))
        check_close(f"bf16 device layer {layer}", host, y, 1e-2)
        print(f"ok   bf16 device layer {layer}", flush=True)
    cuda.cuStreamDestroy_v2(stream)
    print("all CUDA DLPack cases passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
