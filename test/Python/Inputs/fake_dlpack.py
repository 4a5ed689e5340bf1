"""DLPack producers for the tests, without PyTorch or CuPy.

CpuTensor wraps a numpy array (a CPU DLPack tensor that is not an ndarray).
DLTensorObject builds a DLManagedTensor by hand with ctypes over any
address and labels it with any device, dtype, shape and strides: with a
host address and device type kDLCUDA it lets the emu backend check how
moe_opt parses and validates CUDA tensors (the run itself then fails: the
emu backend has no device memory); with a cuMemAlloc address it is a real
CUDA tensor. It records the `stream` each __dlpack__ call got.
"""
import ctypes

import numpy as np

kDLCPU, kDLCUDA = 1, 2
kDLInt, kDLUInt, kDLFloat, kDLBfloat = 0, 1, 2, 4
DTYPES = {"f32": (kDLFloat, 32), "f16": (kDLFloat, 16),
          "bf16": (kDLBfloat, 16), "i32": (kDLInt, 32)}


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice),
                ("ndim", ctypes.c_int32), ("dtype", DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_NAME = b"dltensor"  # Must outlive the capsules.


class DLTensorObject:
    """A DLPack tensor over `address` (no ownership: the capsule has no
    destructor and the DLManagedTensor no deleter; this object keeps the
    structs alive)."""

    def __init__(self, address, shape, dtype="f32", device=(kDLCUDA, 0),
                 strides=None, byte_offset=0):
        self.device = device
        self.calls = []  # The `stream` of each __dlpack__ call.
        self._shape = (ctypes.c_int64 * len(shape))(*shape)
        self._strides = ((ctypes.c_int64 * len(strides))(*strides)
                         if strides is not None else None)
        code, bits = DTYPES[dtype]
        self._managed = DLManagedTensor()
        t = self._managed.dl_tensor
        t.data = address
        t.device = DLDevice(*device)
        t.ndim = len(shape)
        t.dtype = DLDataType(code, bits, 1)
        t.shape = self._shape
        t.strides = (ctypes.cast(self._strides, ctypes.POINTER(ctypes.c_int64))
                     if self._strides is not None else None)
        t.byte_offset = byte_offset

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, stream=None):
        self.calls.append(stream)
        return _capsule_new(ctypes.addressof(self._managed), _NAME, None)


class OldDLTensorObject(DLTensorObject):
    """A producer whose __dlpack__ takes no `stream`."""

    def __dlpack__(self):  # noqa: D401
        self.calls.append("no stream")
        return _capsule_new(ctypes.addressof(self._managed), _NAME, None)


class CpuTensor:
    """A CPU tensor that speaks DLPack and is not a numpy array."""

    def __init__(self, array):
        self.array = array

    def __dlpack_device__(self):
        return (kDLCPU, 0)

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__()


def host_fake_cuda(array, dtype="f32", **kw):
    """A DLTensorObject labelled CUDA over a numpy array's memory."""
    return DLTensorObject(array.ctypes.data, array.shape, dtype, **kw)
