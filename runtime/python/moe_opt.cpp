//===- moe_opt.cpp - Python bindings of the C++ API -----------------------===//
//
// Part of moe-opt. The extension moe_opt._moe_opt over moe::Model
// (include/moe/Model.h), re-exported by the package moe_opt
// (moe_opt/__init__.py; moe_opt/torch.py builds torch modules on it):
//
//   import moe_opt, numpy as np
//   pkg = moe_opt.load("pkg", backend="auto", device=0)
//   y = pkg.layer(pkg.layers[0])(np.zeros((7, pkg.hidden(0)), np.float32))
//   y = pkg.run_all(x); print(pkg.backend, pkg.last_ms)
//
// Host inputs are anything numpy converts to a float [..., H] array (CPU
// torch tensors too, bfloat16 included); the result is a new float32 array
// of x's shape (or `out`). A CUDA tensor that speaks
// DLPack (`__dlpack__`, `__dlpack_device__`: PyTorch, CuPy, JAX...) runs
// on its device memory with no copy, into `out` (a CUDA tensor of the same
// shape and of the layer's activation type). The DLPack ABI is declared
// here (it is a stable C ABI); no DLPack header is needed.
//
//===----------------------------------------------------------------------===//

#include "moe/Model.h"
#include "moe/runtime/Executor.h"
#include "moe/runtime/Package.h"
#include "moe/runtime/RoutingStats.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

//===----------------------------------------------------------------------===//
// The DLPack ABI (dlpack.h, v0.8 and later; unversioned capsules)
//===----------------------------------------------------------------------===//

namespace dl {
enum DeviceType : int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,
  kDLCUDAManaged = 13,
};
enum TypeCode : uint8_t {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLBfloat = 4,
};
struct Device {
  int32_t device_type;
  int32_t device_id;
};
struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct Tensor {
  void *data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t *shape;
  int64_t *strides; // In elements; null: compact row-major.
  uint64_t byte_offset;
};
struct ManagedTensor {
  Tensor dl_tensor;
  void *manager_ctx;
  void (*deleter)(ManagedTensor *self);
};
} // namespace dl

/// The exception of failures of the C++ side (a RuntimeError).
PyObject *moeError = nullptr;

[[noreturn]] void fail(const std::string &message) {
  PyErr_SetString(moeError, message.c_str());
  throw py::error_already_set();
}

std::string joinLayers(const std::vector<int64_t> &layers) {
  std::string list;
  for (int64_t l : layers)
    list += (list.empty() ? "" : ", ") + std::to_string(l);
  return list.empty() ? "none" : list;
}

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

py::module_ numpy() { return py::module_::import("numpy"); }

/// An open package, shared by the Package object and its Layer objects.
struct State {
  std::unique_ptr<moe::Model> model;
  std::string path;
  int device = 0;
  /// moe::Model is not thread-safe; runs are serialised (the GIL is
  /// released while they run).
  std::mutex mutex;
  /// What bound weight tensors point into, kept while the package lives:
  /// the caller's CUDA tensors, or aligned host copies of arrays (emu).
  std::map<size_t, py::object> boundObjects;
  std::map<size_t, std::shared_ptr<uint8_t>> hostCopies;

  int64_t hidden(int64_t layer) const {
    auto h = model->hidden(layer);
    if (!h)
      throw py::value_error(unknownLayer(layer));
    return h.value();
  }
  std::string unknownLayer(int64_t layer) const {
    return "layer " + std::to_string(layer) + " is not an MoE layer of " +
           path + "; MoE layers: " + joinLayers(model->layers());
  }
};

//===----------------------------------------------------------------------===//
// Host arrays
//===----------------------------------------------------------------------===//

bool hasDlpack(py::handle x) {
  return py::hasattr(x, "__dlpack__") && py::hasattr(x, "__dlpack_device__");
}

/// (device_type, device_id) of a DLPack object.
std::pair<int, int> dlpackDevice(py::handle x, const char *what) {
  py::tuple dev = py::tuple(x.attr("__dlpack_device__")());
  if (dev.size() < 2)
    throw py::type_error(std::string(what) +
                         ": __dlpack_device__() did not return a pair");
  return {py::cast<int>(dev[0]), py::cast<int>(dev[1])};
}

bool onCuda(int deviceType) {
  return deviceType == dl::kDLCUDA || deviceType == dl::kDLCUDAManaged;
}

/// A torch.Tensor (checked by type name, so that torch is never imported
/// here).
bool isTorchTensor(py::handle x) {
  for (py::handle t : py::type::of(x).attr("__mro__"))
    if (py::str(t.attr("__module__")).cast<std::string>() == "torch" &&
        py::str(t.attr("__name__")).cast<std::string>() == "Tensor")
      return true;
  return false;
}

/// A CPU torch.Tensor as numpy: a view of its memory (writable, as the
/// tensor is) for the dtypes numpy has; bfloat16 (which numpy lacks) as its
/// float32 values, or with `bits` as a uint16 view of its bit patterns.
py::array torchAsNumpy(py::handle x, const char *what, bool bits = false) {
  py::object t = x.attr("detach")();
  if (py::str(t.attr("device").attr("type")).cast<std::string>() != "cpu")
    throw py::value_error(std::string(what) + ": a torch tensor on " +
                          py::str(t.attr("device")).cast<std::string>() +
                          "; expected a CPU tensor here");
  std::string dtype = py::str(t.attr("dtype")).cast<std::string>();
  if (dtype == "torch.bfloat16") {
    if (!bits)
      return t.attr("float")().attr("numpy")();
    py::object torch = py::module_::import("torch");
    return py::array(t.attr("view")(torch.attr("int16")).attr("numpy")())
        .attr("view")("uint16");
  }
  return t.attr("numpy")();
}

/// `x` as a numpy array without conversion (a numpy array, a CPU torch
/// tensor, a CPU DLPack tensor, or whatever numpy.asarray makes of it).
py::array asNumpy(py::handle x, const char *what) {
  if (py::isinstance<py::array>(x))
    return py::reinterpret_borrow<py::array>(x);
  if (isTorchTensor(x))
    return torchAsNumpy(x, what);
  py::module_ np = numpy();
  if (hasDlpack(x)) {
    auto [type, id] = dlpackDevice(x, what);
    (void)id;
    if (type != dl::kDLCPU && type != dl::kDLCUDAHost)
      throw py::value_error(
          std::string(what) + ": a DLPack tensor on device type " +
          std::to_string(type) + "; expected a CPU or CUDA tensor");
    if (py::hasattr(np, "from_dlpack")) {
      try {
        return np.attr("from_dlpack")(x);
      } catch (py::error_already_set &) {
        // Fall back on the array protocols (__array__, the buffer).
      }
    }
  }
  return np.attr("asarray")(x);
}

/// A C-contiguous float32 [T, H] copy or view of `x`, an array of shape
/// [..., H] (its leading dimensions are the tokens: [T, H], [B, S, H]...);
/// `shape` receives x's shape.
py::array_t<float> hostInput(py::handle x, int64_t hidden,
                             const std::string &where,
                             std::vector<int64_t> *shape = nullptr) {
  py::array a = asNumpy(x, "x");
  char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
    throw py::type_error("x: expected a float array, got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  std::vector<int64_t> dims(a.shape(), a.shape() + a.ndim());
  if (a.ndim() < 2)
    throw py::value_error("x: expected an array [tokens, " +
                          std::to_string(hidden) + "] (or [..., " +
                          std::to_string(hidden) + "]) for " + where +
                          ", got a " + std::to_string(a.ndim()) +
                          "-D array of shape " + shapeText(dims));
  if (dims.back() != hidden)
    throw py::value_error("x: expected width " + std::to_string(hidden) +
                          " ([tokens, " + std::to_string(hidden) + "]) for " +
                          where + ", got shape " + shapeText(dims));
  if (shape)
    *shape = dims;
  int64_t tokens = 1;
  for (size_t d = 0; d + 1 < dims.size(); ++d)
    tokens *= dims[d];
  py::array c = numpy().attr("ascontiguousarray")(a, "dtype"_a = "float32");
  return c.attr("reshape")(tokens, hidden);
}

/// The array the result goes to: `out` (checked: a writable float32
/// array or CPU torch tensor of shape `shape`, C-contiguous) or a new one of
/// that shape. Returned as a [tokens, hidden] view of it.
py::array_t<float> hostOutput(py::handle out, int64_t tokens, int64_t hidden,
                              std::vector<int64_t> shape = {}) {
  if (shape.empty())
    shape = {tokens, hidden};
  if (out.is_none()) {
    py::array_t<float> y(std::vector<py::ssize_t>(shape.begin(), shape.end()));
    return y.attr("reshape")(tokens, hidden);
  }
  if (hasDlpack(out) && onCuda(dlpackDevice(out, "out").first))
    throw py::value_error("out: a CUDA tensor, but x is on the host; pass "
                          "both on the host or both on the GPU");
  // A torch tensor through its numpy view (DLPack views are read-only).
  py::array a = isTorchTensor(out) ? torchAsNumpy(out, "out", true)
                                   : asNumpy(out, "out");
  std::vector<int64_t> got(a.shape(), a.shape() + a.ndim());
  bool ok = a.dtype().is(py::dtype::of<float>()) && got == shape &&
            (a.flags() & py::array::c_style) && a.writeable();
  if (!ok) {
    std::string dtype = isTorchTensor(out)
                            ? py::str(out.attr("dtype")).cast<std::string>()
                            : py::str(a.dtype()).cast<std::string>();
    throw py::value_error(
        "out: expected a writable C-contiguous float32 array of shape " +
        shapeText(shape) + ", got dtype " + dtype + ", shape " +
        shapeText(got) + (a.writeable() ? "" : ", read-only") +
        ((a.flags() & py::array::c_style) ? "" : ", not C-contiguous") +
        (isTorchTensor(out) ? " (moe_opt.torch.MoELayer writes torch "
                              "tensors of any float dtype)"
                            : ""));
  }
  return a.attr("reshape")(tokens, hidden);
}

//===----------------------------------------------------------------------===//
// CUDA tensors through DLPack
//===----------------------------------------------------------------------===//

/// A borrowed DLPack tensor: the capsule is not consumed, so its producer's
/// destructor releases it when the capsule goes away.
struct Borrowed {
  py::object capsule;
  const dl::Tensor *tensor = nullptr;
  void *data() const {
    return static_cast<char *>(tensor->data) + tensor->byte_offset;
  }
};

/// The stream handle a consumer names in __dlpack__(stream=): 1 is the
/// legacy default stream (0 is not allowed there).
int64_t dlpackStreamOf(int64_t stream) { return stream == 0 ? 1 : stream; }

Borrowed borrow(py::handle x, const char *what, int64_t stream) {
  py::object capsule;
  try {
    capsule = x.attr("__dlpack__")("stream"_a = dlpackStreamOf(stream));
  } catch (py::error_already_set &e) {
    if (!e.matches(PyExc_TypeError))
      throw;
    capsule = x.attr("__dlpack__")(); // Producers without `stream`.
  }
  if (!PyCapsule_CheckExact(capsule.ptr()) ||
      !PyCapsule_IsValid(capsule.ptr(), "dltensor"))
    throw py::type_error(std::string(what) +
                         ": __dlpack__() did not return an unconsumed "
                         "'dltensor' capsule");
  auto *managed = static_cast<dl::ManagedTensor *>(
      PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  if (!managed)
    throw py::error_already_set();
  return Borrowed{std::move(capsule), &managed->dl_tensor};
}

std::string dtypeName(const dl::DataType &t) {
  std::string base = t.code == dl::kDLFloat    ? "f"
                     : t.code == dl::kDLBfloat ? "bf"
                     : t.code == dl::kDLInt    ? "i"
                     : t.code == dl::kDLUInt
                         ? "u"
                         : "code" + std::to_string(t.code) + "_";
  std::string name = base + std::to_string(t.bits);
  if (t.lanes != 1)
    name += "x" + std::to_string(t.lanes);
  return name;
}

/// Throws ValueError unless the DLPack tensor is C-contiguous.
void checkContiguous(const dl::Tensor &t, const char *what) {
  if (!t.strides)
    return;
  int64_t expected = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    if (t.shape[d] != 1 && t.strides[d] != expected)
      throw py::value_error(
          std::string(what) + ": not C-contiguous (strides " +
          shapeText(std::vector<int64_t>(t.strides, t.strides + t.ndim)) +
          "); use .contiguous()");
    expected *= t.shape[d];
  }
}

/// Checks a CUDA DLPack tensor: device, dtype, shape [tokens, hidden] (with
/// tokens -1: any), C-contiguous. Returns the number of tokens.
int64_t checkDeviceTensor(const dl::Tensor &t, const char *what, int device,
                          const std::string &dtype, int64_t tokens,
                          int64_t hidden, const std::string &where) {
  if (!onCuda(t.device.device_type))
    throw py::value_error(std::string(what) +
                          ": not a CUDA tensor (DLPack device type " +
                          std::to_string(t.device.device_type) + ")");
  if (t.device.device_id != device)
    throw py::value_error(std::string(what) + ": on CUDA device " +
                          std::to_string(t.device.device_id) +
                          ", but the package runs on device " +
                          std::to_string(device));
  if (dtypeName(t.dtype) != dtype)
    throw py::value_error(std::string(what) + ": dtype " + dtypeName(t.dtype) +
                          ", but " + where + " takes " + dtype +
                          " activations");
  std::vector<int64_t> shape(t.shape, t.shape + t.ndim);
  if (t.ndim != 2 || t.shape[1] != hidden ||
      (tokens >= 0 && t.shape[0] != tokens))
    throw py::value_error(
        std::string(what) + ": expected shape [" +
        (tokens >= 0 ? std::to_string(tokens) : std::string("tokens")) + ", " +
        std::to_string(hidden) + "] for " + where + ", got " +
        shapeText(shape));
  checkContiguous(t, what);
  return t.shape[0];
}

/// A CUstream from `stream=`: None (the default stream), an int handle, or
/// an object with `cuda_stream` (torch.cuda.Stream, cupy Stream...).
int64_t streamHandle(py::handle stream) {
  if (stream.is_none())
    return 0;
  if (py::hasattr(stream, "cuda_stream"))
    return py::cast<int64_t>(stream.attr("cuda_stream"));
  if (py::hasattr(stream, "ptr")) // cupy.cuda.Stream
    return py::cast<int64_t>(stream.attr("ptr"));
  return py::cast<int64_t>(stream);
}

//===----------------------------------------------------------------------===//
// Package and Layer
//===----------------------------------------------------------------------===//

/// pkg.tensors: each weight tensor of the package as a dict.
py::list tensorList(const State &s) {
  py::list out;
  for (size_t t = 0; t < s.model->numTensors(); ++t) {
    moe::TensorInfo info = s.model->tensor(t).value();
    py::dict d("index"_a = t, "names"_a = info.names, "shape"_a = info.shape,
               "stacked"_a = info.stacked, "dtype"_a = info.dtype,
               "bytes"_a = info.bytes,
               "constant"_a = info.constant, "stored"_a = info.stored,
               "bound"_a = info.bound);
    out.append(d);
  }
  return out;
}

/// pkg.bind_tensor(index, data): weight tensor `index` runs on `data`, a
/// CUDA tensor (DLPack; cuda backend; no copy, kept alive by the package)
/// or a host array (emu backend; copied into aligned memory, bf16/f16 from
/// float values rounded to nearest even, bf16 also as uint16 bit patterns).
void bindTensor(State &s, int64_t index, py::handle data) {
  if (index < 0 || static_cast<size_t>(index) >= s.model->numTensors())
    throw py::index_error("tensor " + std::to_string(index) +
                          " is out of range (the package has " +
                          std::to_string(s.model->numTensors()) + " tensors)");
  size_t t = static_cast<size_t>(index);
  moe::TensorInfo info = s.model->tensor(t).value();
  std::string what = "tensor " + std::to_string(t) + " (" +
                     (info.names.empty() ? std::string("a constant")
                                         : info.names.front()) +
                     ", " + shapeText(info.shape) + " " + info.dtype + ")";
  if (info.constant)
    throw py::value_error(what + " is a constant of the compiled IR and "
                                 "cannot be bound");
  std::string backend = s.model->backend();
  if (hasDlpack(data) && !py::isinstance<py::array>(data) &&
      onCuda(dlpackDevice(data, "data").first)) {
    Borrowed b = borrow(data, "data", 0);
    const dl::Tensor &dt = *b.tensor;
    std::vector<int64_t> shape(dt.shape, dt.shape + dt.ndim);
    if (dtypeName(dt.dtype) != info.dtype)
      throw py::value_error(what + ": got a CUDA tensor of dtype " +
                            dtypeName(dt.dtype) + ", expected " + info.dtype);
    if (shape != info.shape)
      throw py::value_error(what + ": got a CUDA tensor of shape " +
                            shapeText(shape) + ", expected " +
                            shapeText(info.shape));
    checkContiguous(dt, "data");
    if (backend != "cuda")
      throw py::value_error(what + ": a CUDA tensor binds on the cuda "
                                   "backend; this package runs on " +
                            backend + " (bind a host array)");
    if (dt.device.device_id != s.device)
      throw py::value_error(what + ": the tensor is on CUDA device " +
                            std::to_string(dt.device.device_id) +
                            ", the package runs on device " +
                            std::to_string(s.device));
    std::lock_guard<std::mutex> lock(s.mutex);
    if (moe::runtime::Status st =
            s.model->bindTensor(t, b.data(), static_cast<size_t>(info.bytes)))
      throw py::value_error(st.message());
    s.boundObjects[t] = py::reinterpret_borrow<py::object>(data);
    s.hostCopies.erase(t);
    return;
  }
  if (backend != "emu")
    throw py::value_error(what + ": on the " + backend +
                          " backend bind a CUDA tensor (DLPack), not a host "
                          "array");
  // A CPU torch tensor as its numpy view (bf16 as uint16 bit patterns).
  py::array arr = isTorchTensor(data) ? torchAsNumpy(data, "data", true)
                                      : py::array::ensure(data);
  if (!arr || std::string("fiu").find(arr.dtype().kind()) == std::string::npos)
    throw py::type_error(what + ": expected a numeric array, got " +
                         std::string(py::str(py::type::of(data))));
  std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
  if (shape != info.shape)
    throw py::value_error(what + ": got an array of shape " +
                          shapeText(shape) + ", expected " +
                          shapeText(info.shape));
  py::dtype dtype = arr.dtype();
  std::string kind = std::string(py::str(dtype));
  const std::map<std::string, std::vector<std::string>> accepted = {
      {"f32", {"float32", "float64", "float16"}},
      {"f16", {"float16", "float32", "float64"}},
      {"bf16", {"uint16", "float32", "float64"}},
      {"i32", {"int32"}},
      {"u32", {"uint32"}}};
  const std::vector<std::string> &ok = accepted.at(info.dtype);
  if (std::find(ok.begin(), ok.end(), kind) == ok.end())
    throw py::value_error(what + ": got an array of dtype " + kind +
                          ", expected one of " +
                          [&] {
                            std::string list;
                            for (const std::string &k : ok)
                              list += (list.empty() ? "" : ", ") + k;
                            return list;
                          }());
  size_t count = static_cast<size_t>(arr.size());
  size_t bytes = static_cast<size_t>(info.bytes);
  std::shared_ptr<uint8_t> copy(
      static_cast<uint8_t *>(std::aligned_alloc(16, (bytes + 16 + 15) / 16 * 16)),
      std::free);
  if (!copy)
    throw std::bad_alloc();
  std::memset(copy.get(), 0, (bytes + 16 + 15) / 16 * 16);
  // The tensor's own element type (bf16 as uint16 bit patterns): the bytes
  // as they are, C order; other float arrays are encoded as the executor
  // encodes weights (rounded to nearest even).
  static const std::map<std::string, std::string> exact = {
      {"f32", "float32"}, {"f16", "float16"}, {"bf16", "uint16"},
      {"i32", "int32"}, {"u32", "uint32"}};
  if (kind == exact.at(info.dtype)) {
    py::array c = py::array::ensure(arr, py::array::c_style);
    std::memcpy(copy.get(), c.data(), bytes);
  } else {
    py::array_t<float, py::array::c_style | py::array::forcecast> f(arr);
    std::vector<uint8_t> encoded = moe::encodeElements(
        std::vector<float>(f.data(), f.data() + count),
        *moe::runtime::parseElementType(info.dtype));
    std::memcpy(copy.get(), encoded.data(), bytes);
  }
  std::lock_guard<std::mutex> lock(s.mutex);
  if (moe::runtime::Status st = s.model->bindTensor(t, copy.get(), bytes))
    throw py::value_error(st.message());
  s.hostCopies[t] = std::move(copy);
  s.boundObjects.erase(t);
}

/// The routing of each router of a run: dicts of ids (int32 [T, K], -1 an
/// empty slot), weights (float32 [T, K]) and experts.
py::list routingList(const std::vector<moe::Model::LayerRouting> &routers) {
  py::list list;
  for (const moe::Model::LayerRouting &r : routers) {
    py::array_t<int32_t> ids(std::vector<py::ssize_t>{r.tokens, r.slots});
    py::array_t<float> weights(std::vector<py::ssize_t>{r.tokens, r.slots});
    std::copy(r.ids.begin(), r.ids.end(), ids.mutable_data());
    std::copy(r.weights.begin(), r.weights.end(), weights.mutable_data());
    list.append(py::dict("ids"_a = ids, "weights"_a = weights,
                         "experts"_a = r.experts));
  }
  return list;
}

/// The load of each router (docs/stats.md's keys).
py::list statsList(const std::vector<moe::RoutingStats> &routers) {
  py::list list;
  for (const moe::RoutingStats &s : routers) {
    py::array_t<int64_t> counts(static_cast<py::ssize_t>(s.experts));
    py::array_t<double> mass(static_cast<py::ssize_t>(s.experts));
    std::copy(s.tokensPerExpert.begin(), s.tokensPerExpert.end(),
              counts.mutable_data());
    std::copy(s.gateMass.begin(), s.gateMass.end(), mass.mutable_data());
    list.append(py::dict(
        "tokens"_a = s.tokens, "slots"_a = s.slots, "experts"_a = s.experts,
        "experts_known"_a = s.expertsKnown, "tokens_per_expert"_a = counts,
        "gate_mass"_a = mass, "routed_slots"_a = s.routedSlots(),
        "empty_slots"_a = s.emptySlots, "invalid_slots"_a = s.invalidSlots,
        "min"_a = s.minLoad(), "mean"_a = s.meanLoad(), "max"_a = s.maxLoad(),
        "imbalance"_a = s.imbalance(), "unused_experts"_a = s.unusedExperts()));
  }
  return list;
}

class Layer {
public:
  Layer(std::shared_ptr<State> s, int64_t l) : state(std::move(s)), layer(l) {
    hidden = state->hidden(layer);
    auto type = state->model->activationType(layer);
    if (!type)
      fail(type.message());
    activationType = type.value();
  }

  py::object call(py::handle x, py::handle out, py::handle stream,
                  bool returnRouting) {
    if (hasDlpack(x) && !py::isinstance<py::array>(x) &&
        onCuda(dlpackDevice(x, "x").first)) {
      return callOnDevice(x, out, stream, returnRouting);
    }
    std::vector<int64_t> shape;
    py::array_t<float> in = hostInput(x, hidden, where(), &shape);
    int64_t tokens = in.shape(0);
    py::array_t<float> y = hostOutput(out, tokens, hidden, shape);
    py::object routing = py::none();
    if (tokens > 0) {
      const float *xp = in.data();
      float *yp = y.mutable_data();
      moe::runtime::Status s;
      moe::runtime::Expected<std::vector<moe::Model::LayerRouting>> last =
          moe::runtime::Status::error("not recorded");
      {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(state->mutex);
        // return_routing records this run whatever record_routing says.
        bool was = state->model->recordsRouting();
        if (returnRouting)
          state->model->recordRouting(true);
        s = state->model->runLayer(layer, xp, tokens, yp);
        state->model->recordRouting(was);
        if (!s && returnRouting)
          last = state->model->lastRouting(layer);
      }
      if (s)
        fail(s.message());
      if (returnRouting) {
        if (!last)
          fail(last.message());
        routing = routingList(last.value());
      }
    }
    py::object result = out.is_none()
                            ? py::object(y.attr("reshape")(shape))
                            : py::reinterpret_borrow<py::object>(out);
    if (!returnRouting)
      return result;
    return py::make_tuple(result, routing);
  }

  std::string repr() const {
    return "<moe_opt.Layer " + std::to_string(layer) + " of '" + state->path +
           "': hidden " + std::to_string(hidden) + ", " + activationType +
           " activations>";
  }

  std::shared_ptr<State> state;
  int64_t layer;
  int64_t hidden = 0;
  std::string activationType;

private:
  std::string where() const { return "layer " + std::to_string(layer); }

  py::object callOnDevice(py::handle x, py::handle out, py::handle stream,
                          bool returnRouting) {
    if (out.is_none())
      throw py::value_error(
          "x is a CUDA tensor: pass out=, a CUDA tensor of the same shape "
          "and dtype (" +
          activationType + "), to run on the device");
    if (!hasDlpack(out) || !onCuda(dlpackDevice(out, "out").first))
      throw py::value_error("out: not a CUDA tensor, but x is one; pass a "
                            "CUDA tensor of the same shape and dtype (" +
                            activationType + ")");
    int64_t handle = streamHandle(stream);
    Borrowed bx = borrow(x, "x", handle);
    int64_t tokens = checkDeviceTensor(*bx.tensor, "x", state->device,
                                       activationType, -1, hidden, where());
    Borrowed by = borrow(out, "out", handle);
    checkDeviceTensor(*by.tensor, "out", state->device, activationType, tokens,
                      hidden, where());
    const void *xp = bx.data();
    void *yp = by.data();
    py::object routing = py::none();
    if (tokens > 0 && xp == yp)
      throw py::value_error("out: the same memory as x; the layer cannot run "
                            "in place");
    if (tokens > 0) {
      // 0 and 1 both name the legacy default stream; the API takes null.
      void *s = handle == 0 || handle == 1
                    ? nullptr
                    : reinterpret_cast<void *>(static_cast<intptr_t>(handle));
      moe::runtime::Status status;
      moe::runtime::Expected<std::vector<moe::Model::LayerRouting>> last =
          moe::runtime::Status::error("not recorded");
      {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(state->mutex);
        // As on the host: return_routing records this run (and then waits
        // for the device to copy the routing back).
        bool was = state->model->recordsRouting();
        if (returnRouting)
          state->model->recordRouting(true);
        status = state->model->runLayerOnDevice(layer, xp, yp, tokens, s);
        state->model->recordRouting(was);
        if (!status && returnRouting)
          last = state->model->lastRouting(layer);
      }
      if (status)
        fail(status.message());
      if (returnRouting) {
        if (!last)
          fail(last.message());
        routing = routingList(last.value());
      }
    }
    py::object result = py::reinterpret_borrow<py::object>(out);
    if (!returnRouting)
      return result;
    return py::make_tuple(result, routing);
  }
};

class Package {
public:
  explicit Package(std::shared_ptr<State> s) : state(std::move(s)) {}

  py::object runAll(py::handle x, py::handle out, const std::string &chain,
                    py::object inputs) {
    std::optional<moe::ChainMode> mode = moe::parseChainMode(chain);
    if (!mode)
      throw py::value_error("run_all: unknown chain '" + chain +
                            "'; expected prenorm, residual or none");
    std::vector<int64_t> layers = state->model->layers();
    if (layers.empty())
      fail("the package " + state->path + " has no MoE layer");
    if (hasDlpack(x) && !py::isinstance<py::array>(x) &&
        onCuda(dlpackDevice(x, "x").first))
      throw py::value_error(
          "run_all takes host arrays; on CUDA tensors run the layers one by "
          "one: pkg.layer(l)(x, out=y)");
    int64_t hidden = state->hidden(layers.front());
    std::vector<int64_t> shape;
    py::array_t<float> in = hostInput(x, hidden, "run_all", &shape);
    int64_t tokens = in.shape(0);
    py::array_t<float> y = hostOutput(out, tokens, hidden, shape);
    // Extra inputs of the chain's first layer that takes any (RMoE's
    // initial state): float32 or int32 host arrays, kept alive here.
    std::vector<py::array> keep;
    std::vector<const void *> data;
    std::vector<std::vector<int64_t>> shapes;
    if (!inputs.is_none())
      for (py::handle item : py::list(inputs)) {
        py::array arr = asNumpy(item, "run_all extra input");
        bool isInt = arr.dtype().kind() == 'i' || arr.dtype().kind() == 'u';
        py::array c = numpy().attr("ascontiguousarray")(
            arr, "dtype"_a = isInt ? "int32" : "float32");
        shapes.emplace_back(c.shape(), c.shape() + c.ndim());
        data.push_back(c.data());
        keep.push_back(std::move(c));
      }
    std::vector<std::vector<float>> extras;
    if (tokens > 0) {
      const float *xp = in.data();
      float *yp = y.mutable_data();
      moe::runtime::Status s;
      {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(state->mutex);
        s = state->model->runAllWithInputs(xp, tokens, data, shapes, yp,
                                           *mode, &extras);
      }
      if (s)
        fail(s.message());
    }
    py::object result = out.is_none()
                            ? py::object(y.attr("reshape")(shape))
                            : py::reinterpret_borrow<py::object>(out);
    if (inputs.is_none())
      return result;
    return py::make_tuple(result, extraResults(extras, tokens));
  }

  /// A layer's (or a chain's last layer's) extra results as float32
  /// arrays [T, width], in result order.
  static py::list extraResults(const std::vector<std::vector<float>> &extras,
                               int64_t tokens) {
    py::list results;
    for (const std::vector<float> &e : extras) {
      int64_t width = tokens > 0 ? static_cast<int64_t>(e.size()) / tokens : 0;
      py::array_t<float> a({tokens, width});
      std::copy(e.begin(), e.end(), a.mutable_data());
      results.append(a);
    }
    return results;
  }

  void setRecordRouting(bool enable) {
    std::lock_guard<std::mutex> lock(state->mutex);
    state->model->recordRouting(enable);
  }
  bool recordsRouting() const { return state->model->recordsRouting(); }

  py::list lastRouting(int64_t layer) {
    state->hidden(layer); // ValueError for an unknown layer.
    std::lock_guard<std::mutex> lock(state->mutex);
    auto last = state->model->lastRouting(layer);
    if (!last)
      fail(last.message());
    return routingList(last.value());
  }

  py::list routingStats(int64_t layer) {
    state->hidden(layer);
    std::lock_guard<std::mutex> lock(state->mutex);
    auto stats = state->model->routingStats(layer);
    if (!stats)
      fail(stats.message());
    return statsList(stats.value());
  }

  void resetRoutingStats() {
    std::lock_guard<std::mutex> lock(state->mutex);
    state->model->resetRoutingStats();
  }

  /// pkg.route(layer, x) -> (ids int32 [T, K], weights float32 [T, K]).
  py::tuple route(int64_t layer, py::handle x) {
    int64_t hidden = state->hidden(layer);
    py::array_t<float> in = hostInput(x, hidden, "route");
    int64_t tokens = in.shape(0);
    auto k = state->model->routingSlots(layer);
    if (!k)
      fail(k.message());
    std::vector<py::ssize_t> shape{tokens, k.value()};
    py::array_t<int32_t> ids(shape);
    py::array_t<float> weights(shape);
    if (tokens > 0) {
      const float *xp = in.data();
      int32_t *ip = ids.mutable_data();
      float *wp = weights.mutable_data();
      moe::runtime::Status s;
      {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(state->mutex);
        s = state->model->route(layer, xp, tokens, ip, wp);
      }
      if (s)
        fail(s.message());
    }
    return py::make_tuple(ids, weights);
  }

  /// pkg.run_dispatched(layer, x, ids, weights) -> float32 [T, H].
  py::object runDispatched(int64_t layer, py::handle x, py::handle ids,
                           py::handle weights, py::handle out) {
    int64_t hidden = state->hidden(layer);
    if (!state->model->takesRouting(layer))
      throw py::value_error("layer " + std::to_string(layer) + " of " +
                            state->path +
                            " routes its tokens itself; run_dispatched runs "
                            "the layers of a rank package (moe-compile "
                            "--placement)");
    py::array_t<float> in = hostInput(x, hidden, "run_dispatched");
    int64_t tokens = in.shape(0);
    auto k = state->model->routingSlots(layer);
    if (!k)
      fail(k.message());
    auto table = [&](py::handle a, const char *name, const char *dtype,
                     char kind) {
      py::array arr = asNumpy(a, name);
      std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
      if (arr.ndim() != 2 || shape[0] != tokens || shape[1] != k.value())
        throw py::value_error(std::string(name) + ": expected shape " +
                              shapeText({tokens, k.value()}) +
                              " ([tokens, K] as x's tokens and the layer's "
                              "slots), got " + shapeText(shape));
      if (arr.dtype().kind() != kind && !(kind == 'f' && arr.dtype().kind() == 'i'))
        throw py::type_error(std::string(name) + ": expected " + dtype +
                             " values, got dtype " +
                             py::str(arr.dtype()).cast<std::string>());
      return numpy().attr("ascontiguousarray")(arr, "dtype"_a = dtype);
    };
    py::array_t<int32_t> idArray = table(ids, "ids", "int32", 'i');
    py::array_t<float> weightArray = table(weights, "weights", "float32", 'f');
    py::array_t<float> y = hostOutput(out, tokens, hidden);
    if (tokens > 0) {
      const float *xp = in.data();
      const int32_t *ip = idArray.data();
      const float *wp = weightArray.data();
      float *yp = y.mutable_data();
      moe::runtime::Status s;
      {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(state->mutex);
        s = state->model->runLayerDispatched(layer, xp, ip, wp, tokens, yp);
      }
      if (s)
        fail(s.message());
    }
    return out.is_none() ? py::object(y)
                         : py::reinterpret_borrow<py::object>(out);
  }

  /// A layer with extra inputs (moe.input arguments): x, then the inputs in
  /// argument order (float32 or int32 host arrays, as inputs() says).
  py::object runWithInputs(int64_t layer, py::handle x, py::list inputs,
                           py::handle out) {
    int64_t hidden = state->hidden(layer);
    auto infos = state->model->inputs(layer);
    if (!infos)
      fail(infos.message());
    py::array_t<float> in = hostInput(x, hidden, "run_with_inputs");
    int64_t tokens = in.shape(0);
    std::vector<py::array> keep;
    std::vector<const void *> data;
    std::vector<std::vector<int64_t>> shapes;
    for (size_t i = 0; i < inputs.size(); ++i) {
      std::string name = i < infos.value().size()
                             ? "'" + infos.value()[i].name + "'"
                             : "#" + std::to_string(i + 1);
      py::array arr = asNumpy(inputs[i], ("extra input " + name).c_str());
      bool wantInt =
          i < infos.value().size() && infos.value()[i].dtype == "i32";
      if (wantInt && arr.dtype().kind() != 'i' && arr.dtype().kind() != 'u')
        throw py::type_error("extra input " + name +
                             ": expected int32 values, got dtype " +
                             py::str(arr.dtype()).cast<std::string>());
      py::array c = numpy().attr("ascontiguousarray")(
          arr, "dtype"_a = wantInt ? "int32" : "float32");
      shapes.emplace_back(c.shape(), c.shape() + c.ndim());
      data.push_back(c.data());
      keep.push_back(std::move(c));
    }
    py::array_t<float> y = hostOutput(out, tokens, hidden);
    auto outInfos = state->model->extraOutputs(layer);
    if (!outInfos)
      fail(outInfos.message());
    std::vector<std::vector<float>> extras(outInfos.value().size());
    if (tokens > 0) {
      const float *xp = in.data();
      float *yp = y.mutable_data();
      moe::runtime::Status s;
      {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(state->mutex);
        s = state->model->runLayerWithInputs(layer, xp, tokens, data, shapes,
                                             yp, &extras);
      }
      if (s)
        fail(s.message());
    }
    py::object result =
        out.is_none() ? py::object(y) : py::reinterpret_borrow<py::object>(out);
    // A layer with extra results (moe.output) returns them as run_all does.
    if (outInfos.value().empty())
      return result;
    return py::make_tuple(result, extraResults(extras, tokens));
  }

  /// The extra inputs of a layer: a list of dicts (name, dtype, dims).
  py::list inputs(int64_t layer) const {
    auto infos = state->model->inputs(layer);
    if (!infos)
      fail(infos.message());
    py::list list;
    for (const moe::Model::InputInfo &in : infos.value()) {
      py::dict d;
      d["name"] = in.name;
      d["dtype"] = in.dtype == "i32" ? "int32" : "float32";
      d["dims"] = in.dims;
      list.append(d);
    }
    return list;
  }

  std::string repr() const {
    std::string layers;
    for (int64_t l : state->model->layers())
      layers += (layers.empty() ? "" : ", ") + std::to_string(l);
    return "<moe_opt.Package '" + state->path + "': backend " +
           state->model->backend() + ", layers [" + layers + "]>";
  }

  std::shared_ptr<State> state;
};

Package load(const std::string &path, const std::string &backend, int device,
             const std::string &cacheDir) {
  moe::ModelOptions options;
  options.backend = backend;
  options.device = device;
  options.cacheDir = cacheDir;
  moe::runtime::Expected<std::unique_ptr<moe::Model>> model = [&] {
    py::gil_scoped_release release; // Opening may compile kernels.
    return moe::Model::open(path, options);
  }();
  if (!model)
    fail(model.message());
  auto state = std::make_shared<State>();
  state->model = std::move(model.value());
  state->path = path;
  state->device = device;
  return Package(std::move(state));
}

} // namespace

PYBIND11_MODULE(_moe_opt, m) {
  m.doc() = "Runs the MoE layers of a package compiled by moe-compile on the "
            "GPU (cuda) or the CPU emulation of its kernels (emu).";

  // Kept for the life of the process (the module holds another reference).
  moeError = py::exception<std::runtime_error>(m, "Error", PyExc_RuntimeError)
                 .release()
                 .ptr();

  m.def("load", &load, "path"_a, "backend"_a = "auto", "device"_a = 0,
        "cache_dir"_a = "",
        "Opens a package directory written by moe-compile. backend: 'cuda', "
        "'emu' or 'auto' (cuda when a GPU is usable, else emu); device: the "
        "GPU ordinal; cache_dir: the kernel cache (default: MOE_CACHE_DIR "
        "or the user's cache). Raises moe_opt.Error (a RuntimeError) naming "
        "the path when the package cannot be opened.");

  py::class_<Package>(m, "Package", "An open package; made by moe_opt.load().")
      .def_property_readonly(
          "backend", [](const Package &p) { return p.state->model->backend(); },
          "'cuda' or 'emu'.")
      .def_property_readonly(
          "description",
          [](const Package &p) { return p.state->model->description(); },
          "What runs the kernels (the GPU's name, or the host compiler).")
      .def_property_readonly("path",
                             [](const Package &p) { return p.state->path; })
      .def_property_readonly("device",
                             [](const Package &p) { return p.state->device; })
      .def_property_readonly(
          "layers", [](const Package &p) { return p.state->model->layers(); },
          "The MoE layers (model layer indices), in order.")
      .def(
          "hidden",
          [](const Package &p, int64_t layer) {
            return p.state->hidden(layer);
          },
          "layer"_a, "Width of a layer's input and output.")
      .def(
          "activation_type",
          [](const Package &p, int64_t layer) {
            p.state->hidden(layer); // ValueError for an unknown layer.
            auto t = p.state->model->activationType(layer);
            if (!t)
              fail(t.message());
            return t.value();
          },
          "layer"_a,
          "Element type of a layer's activations on the device: 'f32', "
          "'bf16' or 'f16' (host arrays are always float32).")
      .def(
          "layer",
          [](const Package &p, int64_t layer) { return Layer(p.state, layer); },
          "layer"_a,
          "The callable MoE layer `layer` (a model layer index); raises "
          "ValueError listing the MoE layers when there is none.")
      .def("run_all", &Package::runAll, "x"_a, py::kw_only(),
           "out"_a = py::none(), "chain"_a = "prenorm",
           "inputs"_a = py::none(),
           "Runs every MoE layer in order on a residual stream, on a host "
           "float32 [T, H] array, as moe-run --all-layers --chain: 'prenorm' "
           "x + layer(rmsnorm(x)) (default), 'residual' x + layer(x), 'none' "
           "each layer on the previous one's output; returns a new array, or "
           "`out`. With `inputs` (a list: the extra inputs of the first "
           "layer that takes any, e.g. RMoE's initial router state float32 "
           "[T, S]), a layer's extra result replaces the next layers' input "
           "of the same name, and the call returns (y, [the last layer's "
           "extra results, float32 [T, width]]).")
      .def("route", &Package::route, "layer"_a, "x"_a,
           "The layer's full router on a host float32 [T, H] array: returns "
           "(ids, weights), int32 and float32 [T, K]: logical expert ids (-1 "
           "for an empty slot) and routing weights. In a rank package "
           "(moe-compile --placement) it runs the router-only plan; elsewhere "
           "the whole layer.")
      .def("run_dispatched", &Package::runDispatched, "layer"_a, "x"_a,
           "ids"_a, "weights"_a, py::kw_only(), "out"_a = py::none(),
           "A rank package's share of a layer on the rows an engine sent it: "
           "x float32 [T, H], ids int32 [T, K] physical slot ids of the "
           "placement (-1, or a slot on another rank: no contribution), "
           "weights float32 [T, K]; returns the partial output float32 "
           "[T, H] (the sum over ranks is the layer), or `out`.")
      .def("run_with_inputs", &Package::runWithInputs, "layer"_a, "x"_a,
           "inputs"_a, py::kw_only(), "out"_a = py::none(),
           "A layer with extra inputs (moe.input arguments, e.g. GLIDER's "
           "sequence scores float32 [B, E] and token-to-sequence map int32 "
           "[T]): x float32 [T, H] and the inputs in argument order; returns "
           "y float32 [T, H], or `out`; a layer with extra results "
           "(moe.output, e.g. RMoE's new router state) returns (y, [its "
           "extra results, float32 [T, width]]) as run_all does. A missing "
           "or misshapen input, or a map value outside [0, B), raises before "
           "anything runs.")
      .def("inputs", &Package::inputs, "layer"_a,
           "The extra inputs of a layer in argument order: dicts with name, "
           "dtype and dims (-1: the token count, -2: any size).")
      .def_property_readonly(
          "tensors", [](const Package &p) { return tensorList(*p.state); },
          "The weight tensors (manifest.json weights.tensors), each a dict: "
          "index, names, shape, stacked (one slice per name), dtype, bytes, "
          "constant, stored (False in a shape-only package), bound.")
      .def(
          "bind_tensor",
          [](Package &p, int64_t index, py::handle data) {
            bindTensor(*p.state, index, data);
          },
          "index"_a, "data"_a,
          "Runs weight tensor `index` on `data` instead of the package's "
          "copy: on the cuda backend a CUDA tensor (DLPack: PyTorch, CuPy) "
          "of the tensor's dtype and shape, C-contiguous, used without a "
          "copy and kept alive by the package (its memory must have 16 "
          "readable bytes past the end, as PyTorch's allocator gives); on "
          "emu a host array, copied (float values are rounded to bf16/f16 "
          "as needed; bf16 also as uint16 bit patterns). Every tensor of a "
          "shape-only package (moe-compile --weights none) must be bound "
          "before its layers run.")
      .def_property("record_routing", &Package::recordsRouting,
                    &Package::setRecordRouting,
                    "When True (default False), every host run of a layer "
                    "that routes its tokens keeps its routing "
                    "(last_routing) and adds to its load (routing_stats).")
      .def("last_routing", &Package::lastRouting, "layer"_a,
           "The routing of the layer's last recorded run: one dict per "
           "router with ids (int32 [T, K], -1 an empty slot), weights "
           "(float32 [T, K]) and experts.")
      .def("routing_stats", &Package::routingStats, "layer"_a,
           "The layer's load summed over its recorded runs, one dict per "
           "router with the keys of moe-run --stats (docs/stats.md): "
           "tokens, slots, experts, tokens_per_expert, gate_mass, "
           "routed_slots, empty_slots, invalid_slots, min, mean, max, "
           "imbalance (max/mean tokens per expert), unused_experts.")
      .def("reset_routing_stats", &Package::resetRoutingStats,
           "Forgets the recorded routings and load.")
      .def_property_readonly(
          "last_ms",
          [](const Package &p) { return p.state->model->lastMilliseconds(); },
          "Milliseconds the last run took (host runs: including copies).")
      .def("__repr__", &Package::repr);

  py::class_<Layer>(m, "Layer", "One MoE layer of a package; callable.")
      .def_readonly("index", &Layer::layer, "The model layer index.")
      .def_readonly("hidden", &Layer::hidden)
      .def_readonly("activation_type", &Layer::activationType)
      .def("__call__", &Layer::call, "x"_a, py::kw_only(), "out"_a = py::none(),
           "stream"_a = py::none(), "return_routing"_a = false,
           "y = layer(x). x: a host array of shape [..., hidden] (the leading "
           "dimensions are the tokens: [T, H], [B, S, H]; anything numpy "
           "converts, CPU torch tensors of any float dtype included), "
           "computed in float32; returns a new float32 array of x's shape, "
           "or `out` (a writable C-contiguous float32 numpy array or CPU "
           "torch tensor of x's shape). return_routing=True returns (y, "
           "routing): one dict per router with ids int32 [T, K], weights "
           "float32 [T, K] and experts (the run is also added to the "
           "layer's routing_stats). With a CUDA "
           "tensor x (DLPack) of the layer's activation type, runs on its "
           "memory into `out` (a CUDA tensor of the same shape and type, "
           "required) with no copy, queued on `stream` (a CUstream handle, "
           "or an object with `cuda_stream`; default: the default stream), "
           "and returns `out`.")
      .def("__repr__", &Layer::repr);
}
