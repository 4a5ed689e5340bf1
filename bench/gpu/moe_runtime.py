#!/usr/bin/env python3
"""A ctypes wrapper of libmoe_runtime.so (the C API of include/moe/moe.h).

Needs numpy only (no torch, no pybind11 module): it is used by the GPU
benchmark (bench/gpu/bench.py, on torch device memory) and by CPU tests (the
emu backend, on numpy host memory).

    from moe_runtime import Model, bind_from_arrays
    with Model("pkg", backend="emu", lib="build/lib/libmoe_runtime.so") as m:
        bind_from_arrays(m, {"model.layers.0.mlp.gate.weight": w, ...})
        y = m.run_host(m.layers[0], x)          # float32 [tokens, hidden]

The library is found from the `lib` argument, else from the environment
variable MOE_RUNTIME_LIB. Every failure raises MoeRuntimeError with the
runtime's message.

Binding (moe_model_bind_tensor) replaces a package tensor's data by memory
the caller owns: device memory on the cuda backend, host memory on emu, in
the manifest's dtype and shape, row-major, 16-byte aligned, with 16 readable
bytes past its end. A shape-only package ("offset": null) must have all its
non-constant tensors bound before its layers run.

`python3 moe_runtime.py --self-test` checks the pure-numpy parts (bf16
rounding, stacking and padding, name matching, aligned buffers); it needs no
library.
"""

import ctypes
import json
import os
import re
import struct
import sys

import numpy as np

# ---------------------------------------------------------------------------
# Manifest dtypes
# ---------------------------------------------------------------------------

#: Element size in bytes of each manifest dtype.
DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "i32": 4, "u32": 4}

#: The numpy type that stores each manifest dtype (bf16 as its bit pattern).
STORAGE_DTYPE = {
    "f32": np.float32,
    "bf16": np.uint16,
    "f16": np.float16,
    "i32": np.int32,
    "u32": np.uint32,
}

#: Binding rules of the C API.
BIND_ALIGNMENT = 16
BIND_SLACK = 16


class MoeRuntimeError(RuntimeError):
    """A failure reported by libmoe_runtime.so, or a misuse of this wrapper."""


def float32_to_bf16_bits(values):
    """bf16 bit patterns (uint16) of float32 values, rounded to nearest even.

    NaNs stay NaNs (quiet, sign kept); values that round past the largest
    finite bf16 become infinities, as IEEE rounding does.
    """
    f = np.ascontiguousarray(values, dtype=np.float32)
    bits = f.view(np.uint32).astype(np.uint64)
    # Round to nearest even: add 0x7fff plus the lowest kept bit.
    lsb = (bits >> np.uint64(16)) & np.uint64(1)
    rounded = (bits + np.uint64(0x7FFF) + lsb) >> np.uint64(16)
    nan = np.isnan(f)
    quiet = (bits >> np.uint64(16)) | np.uint64(0x0040)
    out = np.where(nan, quiet, rounded) & np.uint64(0xFFFF)
    return out.astype(np.uint16)


def bf16_bits_to_float32(bits):
    """float32 values of bf16 bit patterns (exact)."""
    b = np.ascontiguousarray(bits, dtype=np.uint16)
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def encode_array(values, dtype):
    """`values` as a numpy array holding manifest dtype `dtype`.

    bf16 gives uint16 bit patterns: a uint16 input is taken as bit patterns
    already, anything else is converted to float32 first and rounded to
    nearest even. f16 rounds to nearest even (numpy). i32/u32 need integral
    values in range.
    """
    if dtype not in STORAGE_DTYPE:
        raise MoeRuntimeError("unknown manifest dtype '%s' (expected one of %s)"
                              % (dtype, ", ".join(sorted(STORAGE_DTYPE))))
    a = np.asarray(values)
    if dtype == "bf16":
        if a.dtype == np.uint16:
            return np.ascontiguousarray(a)
        return float32_to_bf16_bits(a.astype(np.float32))
    if dtype in ("i32", "u32"):
        target = STORAGE_DTYPE[dtype]
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                raise MoeRuntimeError("%s tensor from non-integral values" % dtype)
        info = np.iinfo(target)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise MoeRuntimeError("%s tensor: values outside [%d, %d]"
                                  % (dtype, info.min, info.max))
        return np.ascontiguousarray(a.astype(target))
    return np.ascontiguousarray(a.astype(STORAGE_DTYPE[dtype]))


def tensor_nbytes(tensor):
    """Byte size of a manifest tensor from its shape and dtype."""
    n = DTYPE_BYTES[tensor["dtype"]]
    for d in tensor["shape"]:
        n *= int(d)
    return n


def is_shape_only(tensor):
    """True when a tensor has no data in weights.bin: "stored" false (the C
    API's description, Model.tensors) or "offset": null (a manifest entry)."""
    if "stored" in tensor:
        return not tensor["stored"]
    return tensor.get("offset", 0) is None


# ---------------------------------------------------------------------------
# Name matching: manifest tensors <- named arrays (checkpoint or module names)
# ---------------------------------------------------------------------------

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_of_name(name):
    """The model layer a checkpoint name belongs to ("...layers.N...."), or None."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def find_source(manifest_name, available):
    """The available name that supplies `manifest_name`, or None.

    An exact match wins; otherwise the longest available name `a` such that
    `manifest_name` ends with "." + a (a module state_dict key such as
    "experts.gate_up_proj" supplies "model.layers.1.mlp.experts.gate_up_proj").
    Two suffixes of one string with the same length are the same string, so
    the longest one is unique.
    """
    if manifest_name in available:
        return manifest_name
    best = None
    for a in available:
        if manifest_name.endswith("." + a) and (best is None or len(a) > len(best)):
            best = a
    return best


class TensorMatch(object):
    """How one manifest tensor is supplied.

    status: "matched" (sources: one available name per manifest name),
    "constant" (stored in the package, never bound), "other-layer" (the
    tensor belongs to a layer other than the one asked for), "missing"
    (some names have no source: see `missing`).
    """

    def __init__(self, index, tensor, status, sources=None, missing=None):
        self.index = index
        self.tensor = tensor
        self.status = status
        self.sources = sources or []
        self.missing = missing or []

    @property
    def shape_only(self):
        return is_shape_only(self.tensor)

    def label(self):
        names = self.tensor.get("names") or []
        if not names:
            return "tensors[%d] (constant)" % self.index
        if len(names) == 1:
            return "tensors[%d] %s" % (self.index, names[0])
        return "tensors[%d] %s ... (%d stacked)" % (self.index, names[0], len(names))

    def __repr__(self):
        return "TensorMatch(%d, %s, %s)" % (self.index, self.status, self.sources)


def match_manifest_tensors(tensors, available, layer=None):
    """A TensorMatch per manifest tensor (manifest weights.tensors order).

    `available`: the names one can supply (checkpoint names, or the keys of a
    module's state_dict). With `layer`, a tensor whose names all lie in
    another model layer is "other-layer" (so that one MoE block's keys, such
    as "gate.weight", are not matched to every layer's router).
    """
    available = set(available)
    out = []
    for i, t in enumerate(tensors):
        names = list(t.get("names") or [])
        if t.get("constant") or not names:
            out.append(TensorMatch(i, t, "constant"))
            continue
        if layer is not None:
            layers = set(layer_of_name(n) for n in names)
            layers.discard(None)
            if layers and int(layer) not in layers:
                out.append(TensorMatch(i, t, "other-layer"))
                continue
        sources, missing = [], []
        for n in names:
            s = find_source(n, available)
            if s is None:
                missing.append(n)
            sources.append(s)
        if missing:
            out.append(TensorMatch(i, t, "missing", sources, missing))
        else:
            out.append(TensorMatch(i, t, "matched", sources))
    return out


def stack_to_shape(arrays, shape, stacked):
    """The tensor of manifest `shape` from its source arrays (numpy).

    Not stacked: one array of exactly `shape`. Stacked: the arrays stacked
    along a new leading dimension; ragged slices (each dimension at most the
    manifest's) are zero-padded to the manifest shape, as moe-compile pads
    them. Any other mismatch is an error.
    """
    shape = tuple(int(d) for d in shape)
    if not stacked:
        if len(arrays) != 1:
            raise MoeRuntimeError("an unstacked tensor has one source, got %d"
                                  % len(arrays))
        a = np.asarray(arrays[0])
        if tuple(a.shape) != shape:
            raise MoeRuntimeError("shape %s, the manifest expects %s"
                                  % (list(a.shape), list(shape)))
        return a
    if len(arrays) != shape[0]:
        raise MoeRuntimeError("%d stacked slices, the manifest's leading "
                              "dimension is %d" % (len(arrays), shape[0]))
    slice_shape = shape[1:]
    arrays = [np.asarray(a) for a in arrays]
    if all(tuple(a.shape) == slice_shape for a in arrays):
        return np.stack(arrays)
    dtype = np.result_type(*arrays)
    out = np.zeros(shape, dtype=dtype)
    for k, a in enumerate(arrays):
        if a.ndim != len(slice_shape) or any(
                a.shape[d] > slice_shape[d] for d in range(a.ndim)):
            raise MoeRuntimeError("slice %d has shape %s, which does not fit the "
                                  "manifest's slice shape %s"
                                  % (k, list(a.shape), list(slice_shape)))
        out[(k,) + tuple(slice(0, s) for s in a.shape)] = a
    return out


def aligned_host_buffer(nbytes, alignment=BIND_ALIGNMENT, slack=BIND_SLACK):
    """(owner, view): a uint8 view of `nbytes` bytes whose address is a
    multiple of `alignment`, with `slack` readable (zeroed) bytes after it.
    Keep `owner` alive as long as the view is bound."""
    owner = np.zeros(int(nbytes) + int(alignment) + int(slack), dtype=np.uint8)
    offset = (-owner.ctypes.data) % alignment
    return owner, owner[offset:offset + int(nbytes)]


def host_tensor_buffer(values, tensor):
    """(owner, pointer) of a host copy of `values` in the manifest tensor's
    dtype, aligned and with slack, ready for Model.bind."""
    encoded = encode_array(values, tensor["dtype"])
    expected = tensor_nbytes(tensor)
    if encoded.nbytes != expected:
        raise MoeRuntimeError("%d bytes, the manifest expects %d"
                              % (encoded.nbytes, expected))
    owner, view = aligned_host_buffer(expected)
    view[:] = np.frombuffer(encoded.tobytes(), dtype=np.uint8)
    return owner, view.ctypes.data


def bind_from_arrays(model, named_arrays, layer=None, require_all=True):
    """Binds every manifest tensor it can build from `named_arrays` (host
    memory: the emu backend).

    named_arrays: {checkpoint or module name: numpy array} of real values
    (float arrays for floating dtypes; a uint16 array for a bf16 tensor is
    taken as bit patterns). Stacked tensors are np.stack-ed from their
    per-name arrays (zero-padded when ragged), converted to the manifest
    dtype, copied into 16-byte-aligned buffers with 16 bytes of slack, bound,
    and kept alive by the model. With require_all, a shape-only tensor that
    cannot be built is an error (naming it); other unmatched tensors keep the
    package's data. Returns {"bound": [index], "missing": [label],
    "constant": [index], "other_layer": [index]}.
    """
    report = {"bound": [], "missing": [], "constant": [], "other_layer": []}
    matches = match_manifest_tensors(model.tensors, named_arrays.keys(), layer)
    problems = []
    for m in matches:
        if m.status == "constant":
            report["constant"].append(m.index)
            continue
        if m.status == "other-layer":
            report["other_layer"].append(m.index)
            continue
        if m.status == "missing":
            report["missing"].append(m.label())
            if m.shape_only:
                problems.append("%s: no array for %s" % (m.label(), ", ".join(m.missing[:3])
                                                         + (" ..." if len(m.missing) > 3 else "")))
            continue
        try:
            values = stack_to_shape([named_arrays[s] for s in m.sources],
                                    m.tensor["shape"], m.tensor.get("stacked", False))
            owner, pointer = host_tensor_buffer(values, m.tensor)
            model.bind(m.index, pointer, tensor_nbytes(m.tensor), owner)
        except MoeRuntimeError as e:
            raise MoeRuntimeError("%s: %s" % (m.label(), e))
        report["bound"].append(m.index)
    if require_all and problems:
        raise MoeRuntimeError("cannot bind every shape-only tensor of %s:\n  %s"
                              % (model.path, "\n  ".join(problems)))
    return report


def load_safetensors_numpy(path):
    """{name: numpy array} of a .safetensors file, floating tensors widened
    to float32 (BF16/F16 exactly), integer tensors as they are."""
    kinds = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16,
             "F64": np.float64, "I32": np.int32, "I64": np.int64,
             "U32": np.uint32, "I16": np.int16, "U8": np.uint8, "I8": np.int8}
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len).decode("utf-8"))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        kind = info["dtype"]
        if kind not in kinds:
            raise MoeRuntimeError("%s: tensor %s has dtype %s (not supported here)"
                                  % (path, name, kind))
        a = np.frombuffer(data[begin:end], dtype=kinds[kind]).reshape(info["shape"])
        if kind == "BF16":
            a = bf16_bits_to_float32(a).reshape(info["shape"])
        elif kind in ("F16", "F64"):
            a = a.astype(np.float32)
        out[name] = a
    return out


# ---------------------------------------------------------------------------
# The library
# ---------------------------------------------------------------------------

_LIBRARIES = {}


def library_path(lib=None):
    """The library to load: `lib`, else $MOE_RUNTIME_LIB."""
    path = lib or os.environ.get("MOE_RUNTIME_LIB")
    if not path:
        raise MoeRuntimeError("libmoe_runtime.so not given: pass lib=PATH or set "
                              "MOE_RUNTIME_LIB (a standalone build, cmake -S runtime "
                              "-B B, writes B/api/libmoe_runtime.so; the full build "
                              "build/lib/libmoe_runtime.so)")
    if not os.path.isfile(path):
        raise MoeRuntimeError("libmoe_runtime.so not found at '%s'" % path)
    return os.path.abspath(path)


def load_library(lib=None):
    """The ctypes library with its prototypes declared (loaded once per path)."""
    path = library_path(lib)
    if path in _LIBRARIES:
        return _LIBRARIES[path]
    try:
        so = ctypes.CDLL(path)
    except OSError as e:
        raise MoeRuntimeError("cannot load '%s': %s" % (path, e))
    vp, i64, sz, cp = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t, ctypes.c_char_p
    protos = {
        "moe_model_open": (ctypes.c_int, [cp, cp, ctypes.c_int, ctypes.POINTER(vp), cp, sz]),
        "moe_model_close": (None, [vp]),
        "moe_model_backend": (cp, [vp]),
        "moe_model_num_layers": (ctypes.c_int, [vp]),
        "moe_model_layer": (i64, [vp, ctypes.c_int]),
        "moe_model_hidden": (i64, [vp, i64]),
        "moe_model_run_layer": (ctypes.c_int, [vp, i64, vp, i64, vp, cp, sz]),
        "moe_model_run_layer_device": (ctypes.c_int, [vp, i64, vp, vp, i64, vp, cp, sz]),
        "moe_model_last_ms": (ctypes.c_double, [vp]),
        "moe_model_num_tensors": (i64, [vp]),
        "moe_model_bind_tensor": (ctypes.c_int, [vp, i64, vp, i64, cp, sz]),
        "moe_model_output_width": (i64, [vp, i64]),
        "moe_model_activation_type": (cp, [vp, i64]),
        "moe_model_num_kernels": (ctypes.c_int, [vp]),
        "moe_model_kernel_name": (cp, [vp, ctypes.c_int]),
        "moe_model_tensor_rank": (ctypes.c_int, [vp, i64]),
        "moe_model_tensor_dim": (i64, [vp, i64, ctypes.c_int]),
        "moe_model_tensor_dtype": (cp, [vp, i64]),
        "moe_model_tensor_bytes": (i64, [vp, i64]),
        "moe_model_tensor_num_names": (ctypes.c_int, [vp, i64]),
        "moe_model_tensor_name": (cp, [vp, i64, ctypes.c_int]),
        "moe_model_tensor_flags": (ctypes.c_int, [vp, i64]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(so, name, None)
        if fn is None:  # An older library: reported when the function is used.
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    _LIBRARIES[path] = so
    return so


def _function(so, name):
    fn = getattr(so, name, None)
    if fn is None:
        raise MoeRuntimeError("this libmoe_runtime.so has no %s (an older build?)" % name)
    return fn


#: Flags of moe_model_tensor_flags (include/moe/moe.h).
TENSOR_STACKED, TENSOR_CONSTANT, TENSOR_STORED, TENSOR_BOUND = 1, 2, 4, 8


class Model(object):
    """An open package: moe_model_open ... moe_model_close.

    .layers        the MoE layers (model layer indices)
    .backend       "cuda" or "emu"
    .tensors       the weight tensors (manifest.json weights.tensors), as the
                   C API describes them: dicts with "names", "shape",
                   "dtype", "bytes", "stacked", "constant", "stored"
    .kernels       the kernels the layers launch
    Everything comes from the runtime (the C API): the wrapper does not
    parse manifest.json itself.
    """

    ERROR_SIZE = 4096

    def __init__(self, path, backend="auto", device=0, lib=None):
        self.path = str(path)
        self._lib = load_library(lib)
        self._handle = None
        self._keepalive = {}
        self.tensors, self.kernels, self.layers, self.backend = [], [], [], ""
        # One error buffer for every call (a Model is not thread-safe, as the
        # runtime's): fewer allocations per run_device in timing loops.
        self._err = ctypes.create_string_buffer(self.ERROR_SIZE)
        handle = ctypes.c_void_p()
        err = self._err
        rc = _function(self._lib, "moe_model_open")(
            self.path.encode(), (backend or "auto").encode(), int(device),
            ctypes.byref(handle), err, self.ERROR_SIZE)
        if rc != 0 or not handle.value:
            raise MoeRuntimeError(err.value.decode("utf-8", "replace")
                                  or "moe_model_open failed (no message)")
        self._handle = handle
        try:
            self.tensors = [self._tensor(t) for t in range(self.num_tensors())]
            n = _function(self._lib, "moe_model_num_kernels")(self._handle)
            self.kernels = [self._lib.moe_model_kernel_name(self._handle, k).decode()
                            for k in range(n)]
        except MoeRuntimeError:
            self.close()
            raise
        self.backend = self._lib.moe_model_backend(self._handle).decode()
        n = self._lib.moe_model_num_layers(self._handle)
        self.layers = [int(self._lib.moe_model_layer(self._handle, i)) for i in range(n)]

    # -- queries ------------------------------------------------------------
    def _check_open(self):
        if self._handle is None:
            raise MoeRuntimeError("the model %s is closed" % self.path)

    def hidden(self, layer):
        self._check_open()
        h = int(self._lib.moe_model_hidden(self._handle, int(layer)))
        if h < 0:
            raise MoeRuntimeError("layer %s is not an MoE layer of %s; MoE layers: %s"
                                  % (layer, self.path, ", ".join(map(str, self.layers))))
        return h

    def output_width(self, layer):
        self._check_open()
        w = int(_function(self._lib, "moe_model_output_width")(self._handle, int(layer)))
        if w < 0:
            raise MoeRuntimeError("layer %s is not an MoE layer of %s; MoE layers: %s"
                                  % (layer, self.path, ", ".join(map(str, self.layers))))
        return w

    def activation_type(self, layer):
        """"f32", "bf16" or "f16": what run_device reads and writes."""
        self._check_open()
        t = _function(self._lib, "moe_model_activation_type")(self._handle, int(layer))
        if not t:
            raise MoeRuntimeError("layer %s is not an MoE layer of %s; MoE layers: %s"
                                  % (layer, self.path, ", ".join(map(str, self.layers))))
        return t.decode()

    def num_tensors(self):
        self._check_open()
        return int(_function(self._lib, "moe_model_num_tensors")(self._handle))

    def _tensor(self, t):
        """Tensor `t` as the C API describes it (see the class docstring)."""
        lib, h = self._lib, self._handle
        rank = _function(lib, "moe_model_tensor_rank")(h, t)
        if rank < 0:
            raise MoeRuntimeError("tensor %d is out of range (%s has %d)"
                                  % (t, self.path, self.num_tensors()))
        flags = lib.moe_model_tensor_flags(h, t)
        return {
            "index": t,
            "names": [lib.moe_model_tensor_name(h, t, i).decode()
                      for i in range(lib.moe_model_tensor_num_names(h, t))],
            "shape": [int(lib.moe_model_tensor_dim(h, t, d)) for d in range(rank)],
            "dtype": lib.moe_model_tensor_dtype(h, t).decode(),
            "bytes": int(lib.moe_model_tensor_bytes(h, t)),
            "stacked": bool(flags & TENSOR_STACKED),
            "constant": bool(flags & TENSOR_CONSTANT),
            "stored": bool(flags & TENSOR_STORED),
        }

    def is_bound(self, index):
        """Whether tensor `index` is bound (moe_model_bind_tensor)."""
        self._check_open()
        flags = _function(self._lib, "moe_model_tensor_flags")(self._handle, int(index))
        if flags < 0:
            raise MoeRuntimeError("tensor %s is out of range (%s has %d)"
                                  % (index, self.path, len(self.tensors)))
        return bool(flags & TENSOR_BOUND)

    @property
    def last_ms(self):
        self._check_open()
        return float(self._lib.moe_model_last_ms(self._handle))

    # -- binding ------------------------------------------------------------
    def bind(self, index, pointer, nbytes, keepalive=None):
        """Binds tensor `index` (manifest weights.tensors) to `pointer`
        (device memory on cuda, host memory on emu) of `nbytes` bytes;
        `keepalive` is kept referenced while the model is open."""
        self._check_open()
        err = self._err
        rc = _function(self._lib, "moe_model_bind_tensor")(
            self._handle, int(index), ctypes.c_void_p(int(pointer)), int(nbytes),
            err, self.ERROR_SIZE)
        if rc != 0:
            raise MoeRuntimeError(err.value.decode("utf-8", "replace")
                                  or "moe_model_bind_tensor failed (no message)")
        self._keepalive[int(index)] = keepalive

    # -- running ------------------------------------------------------------
    def run_host(self, layer, x):
        """y = layer(x) on host float32 arrays [tokens, hidden]."""
        self._check_open()
        hidden = self.hidden(layer)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != hidden:
            raise MoeRuntimeError("x: expected [tokens, %d] for layer %s, got %s"
                                  % (hidden, layer, list(x.shape)))
        y = np.empty_like(x)
        err = self._err
        rc = self._lib.moe_model_run_layer(
            self._handle, int(layer), x.ctypes.data, int(x.shape[0]), y.ctypes.data,
            err, self.ERROR_SIZE)
        if rc != 0:
            raise MoeRuntimeError(err.value.decode("utf-8", "replace")
                                  or "moe_model_run_layer failed (no message)")
        return y

    def run_device(self, layer, x_ptr, y_ptr, tokens, stream_ptr=0):
        """Queues y = layer(x) on device pointers (the layer's activation
        type) on a CUstream (0: the default stream); no synchronisation."""
        if self._handle is None:
            self._check_open()
        err = self._err
        rc = self._lib.moe_model_run_layer_device(
            self._handle, layer, x_ptr, y_ptr, tokens, stream_ptr or None,
            err, self.ERROR_SIZE)
        if rc != 0:
            raise MoeRuntimeError(err.value.decode("utf-8", "replace")
                                  or "moe_model_run_layer_device failed (no message)")

    # -- lifetime -----------------------------------------------------------
    def close(self):
        if self._handle is not None:
            self._lib.moe_model_close(self._handle)
            self._handle = None
        self._keepalive = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# Self-test of the pure-numpy parts (no library needed)
# ---------------------------------------------------------------------------

def _self_test():
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    # bf16 rounding: exact values, ties to even, carries, specials.
    one = 1.0
    cases = [
        (one, 0x3F80),
        (one + 2.0 ** -8, 0x3F80),                 # tie, 0x3F80 is even: down
        (one + 3 * 2.0 ** -8, 0x3F82),             # tie, 0x3F81 is odd: up
        (one + 2.0 ** -8 + 2.0 ** -20, 0x3F81),    # above the tie: up
        (one + 2.0 ** -9, 0x3F80),                 # below the tie: down
        (-2.0, 0xC000),
        (0.0, 0x0000),
        (-0.0, 0x8000),
        (float("inf"), 0x7F80),
        (float("-inf"), 0xFF80),
        (3.4028234663852886e38, 0x7F80),           # largest float32 rounds to inf
        (1.0e-40, 0x0001),                         # subnormal: 0x000116C2 -> 0x0001
        (2.0 ** -126 * (1 - 2.0 ** -8), 0x0080),   # the tie below the smallest normal
    ]
    for value, expected in cases:
        got = int(float32_to_bf16_bits(np.array([value], np.float32))[0])
        check(got == expected, "bf16(%r) = 0x%04x, expected 0x%04x" % (value, got, expected))
    nan = float32_to_bf16_bits(np.array([np.nan, -np.nan], np.float32))
    check(all(np.isnan(bf16_bits_to_float32(nan))), "NaN must stay NaN")
    # Every bf16 value survives a round trip; random float32 values round to
    # the nearest of their two bf16 neighbours.
    allbits = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16)
    finite = allbits[np.isfinite(bf16_bits_to_float32(allbits))]
    check(np.array_equal(float32_to_bf16_bits(bf16_bits_to_float32(finite)), finite),
          "bf16 -> f32 -> bf16 round trip")
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(100000) * 10.0 ** rng.integers(-30, 30, 100000)).astype(np.float32)
    r = bf16_bits_to_float32(float32_to_bf16_bits(x)).astype(np.float64)
    down = bf16_bits_to_float32((x.view(np.uint32) >> 16).astype(np.uint16)).astype(np.float64)
    up = bf16_bits_to_float32(((x.view(np.uint32) >> 16) + 1).astype(np.uint16)).astype(np.float64)
    xd = x.astype(np.float64)
    check(np.all((r == down) | (r == up)), "rounded to a neighbour")
    check(np.all(np.abs(r - xd) <= np.minimum(np.abs(down - xd), np.abs(up - xd))),
          "rounded to the nearest neighbour")

    # encode_array
    check(encode_array(np.array([1.5]), "f16").dtype == np.float16, "f16 encoding")
    check(encode_array(np.array([3.0, -4.0]), "i32").tolist() == [3, -4], "i32 encoding")
    check(encode_array(np.array([0x3F80], np.uint16), "bf16").tolist() == [0x3F80],
          "uint16 input to bf16 is taken as bits")
    try:
        encode_array(np.array([1.5]), "i32")
        check(False, "i32 from 1.5 must fail")
    except MoeRuntimeError:
        pass

    # Stacking and padding
    a = [np.full((2, 3), k + 1.0, np.float32) for k in range(4)]
    s = stack_to_shape(a, [4, 2, 3], True)
    check(s.shape == (4, 2, 3) and s[2, 1, 2] == 3.0, "stack")
    ragged = [np.ones((2, 3)), np.ones((1, 2)), np.ones((2, 2))]
    p = stack_to_shape(ragged, [3, 2, 3], True)
    check(p.shape == (3, 2, 3) and p[1].sum() == 2 and p[1, 1].sum() == 0 and p[2, :, 2].sum() == 0,
          "ragged stack is zero-padded")
    for bad in ((ragged, [2, 2, 3], True), ([np.ones((2, 4))], [2, 3], False),
                ([np.ones((3, 3)), np.ones((2, 3))], [2, 2, 3], True)):
        try:
            stack_to_shape(*bad)
            check(False, "stack_to_shape%s must fail" % (tuple(np.shape(x) for x in bad[0]),))
        except MoeRuntimeError:
            pass

    # Name matching
    tensors = [
        {"names": ["model.layers.1.mlp.gate.weight"], "stacked": False, "constant": False,
         "shape": [4, 8], "dtype": "bf16", "offset": None},
        {"names": ["model.layers.1.mlp.experts.gate_up_proj"], "stacked": False,
         "constant": False, "shape": [4, 6, 8], "dtype": "bf16", "offset": None},
        {"names": [], "stacked": False, "constant": True, "shape": [1], "dtype": "f32",
         "offset": 0},
        {"names": ["model.layers.11.mlp.gate.weight"], "stacked": False, "constant": False,
         "shape": [4, 8], "dtype": "bf16", "offset": None},
        {"names": ["model.layers.1.mlp.shared_experts.gate_proj.weight"], "stacked": False,
         "constant": False, "shape": [3, 8], "dtype": "f32", "offset": None},
        {"names": ["model.layers.1.mlp.experts.%d.w1.weight" % e for e in range(2)],
         "stacked": True, "constant": False, "shape": [2, 3, 8], "dtype": "f16", "offset": 0},
    ]
    keys = ["gate.weight", "experts.gate_up_proj", "experts.down_proj",
            "shared_experts.gate_proj.weight"]
    m = match_manifest_tensors(tensors, keys, layer=1)
    check([x.status for x in m] == ["matched", "matched", "constant", "other-layer",
                                    "matched", "missing"], "statuses %s" % m)
    check(m[0].sources == ["gate.weight"] and m[4].sources == ["shared_experts.gate_proj.weight"],
          "suffix sources")
    m2 = match_manifest_tensors(tensors, ["model.layers.1.mlp.gate.weight", "mlp.gate.weight"])
    check(m2[0].sources == ["model.layers.1.mlp.gate.weight"], "exact match wins")
    check(m2[3].sources == ["mlp.gate.weight"], "without a layer, any layer's name matches")
    check(find_source("model.layers.0.mlp.shared_expert_gate.weight", ["gate.weight"]) is None,
          "'gate.weight' must not match 'shared_expert_gate.weight'")
    check(layer_of_name("model.layers.12.mlp.x") == 12 and layer_of_name("lm_head.weight") is None,
          "layer_of_name")

    # Aligned buffers with slack
    for n in (1, 7, 16, 1000):
        owner, view = aligned_host_buffer(n)
        check(view.ctypes.data % BIND_ALIGNMENT == 0 and view.nbytes == n and
              owner.ctypes.data + owner.nbytes - (view.ctypes.data + n) >= BIND_SLACK,
              "aligned buffer of %d bytes" % n)
    owner, ptr = host_tensor_buffer(np.array([[1.0, 2.0]]), {"shape": [1, 2], "dtype": "bf16"})
    check(ptr % 16 == 0 and ctypes.string_at(ptr, 4) == struct.pack("<HH", 0x3F80, 0x4000),
          "host tensor buffer holds the bf16 bits")

    # bind_from_arrays against a fake model (no library)
    class FakeModel(object):
        path = "fake"

        def __init__(self, tensors):
            self.tensors = tensors
            self.bound = {}

        def bind(self, index, pointer, nbytes, keepalive=None):
            self.bound[index] = (ctypes.string_at(pointer, nbytes), keepalive)

    fake = FakeModel(tensors[:2] + tensors[2:3] + tensors[4:5])
    arrays = {"gate.weight": np.ones((4, 8), np.float32),
              "experts.gate_up_proj": np.full((4, 6, 8), 0.5, np.float32),
              "shared_experts.gate_proj.weight": np.full((3, 8), 2.0, np.float64)}
    rep = bind_from_arrays(fake, arrays, layer=1)
    check(rep["bound"] == [0, 1, 3] and rep["constant"] == [2], "bind report %s" % rep)
    check(fake.bound[1][0] == struct.pack("<H", 0x3F00) * (4 * 6 * 8), "bound bf16 bytes")
    check(fake.bound[3][0] == struct.pack("<f", 2.0) * 24, "bound f32 bytes")
    try:
        bind_from_arrays(FakeModel(tensors[:2]), {"gate.weight": np.ones((4, 8))}, layer=1)
        check(False, "a missing shape-only tensor must fail")
    except MoeRuntimeError as e:
        check("gate_up_proj" in str(e), "the error names the missing tensor")
    try:
        bind_from_arrays(FakeModel(tensors[:1]), {"gate.weight": np.ones((8, 4))}, layer=1)
        check(False, "a wrong shape must fail")
    except MoeRuntimeError as e:
        check("[8, 4]" in str(e) and "[4, 8]" in str(e), "the error gives both shapes: %s" % e)

    if failures:
        for f in failures:
            print("FAIL:", f)
        print("moe_runtime self-test: %d failure(s)" % len(failures))
        return 1
    print("moe_runtime self-test: all checks passed")
    return 0


if __name__ == "__main__":
    if "--self-test" in sys.argv[1:]:
        sys.exit(_self_test())
    print(__doc__)
    sys.exit(0)
