//===- Interpreter.cpp - The reference executor of moe IR -----------------===//
//
// Part of moe-opt. Each moe op is a direct loop nest over its definition in
// docs/dialect.md. Values of bf16/f16 tensor type are rounded to that type
// when produced; all sums are accumulated in double.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Reference/Interpreter.h"
#include "moe/lib/Reference/QuantDecode.h"
#include "moe/dialects/MoE/MoEOps.h"
#include "moe/dialects/MoE/Routing.h"
#include "moe/runtime/Float16.h"
#include "moe/lib/Weights/Npy.h"
#include "moe/lib/Weights/Safetensors.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <deque>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

using namespace mlir;
using namespace mlir::moe;
using ::moe::HostTensor;
using ::moe::RoutingTrace;
using ::moe::WeightLoader;
using llvm::Error;
using llvm::Expected;

static Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

static std::string locString(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << op->getLoc();
  return s;
}

/// An error about `op`, naming it and its location.
static Error opError(Operation *op, const llvm::Twine &message) {
  return makeError(locString(op) + ": '" + op->getName().getStringRef() +
                   "': " + message);
}

//===----------------------------------------------------------------------===//
// HostTensor
//===----------------------------------------------------------------------===//

int64_t HostTensor::numElements() const {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1},
                         std::multiplies<int64_t>());
}

HostTensor HostTensor::floats(std::vector<int64_t> shape, float fill) {
  HostTensor t;
  t.shape = std::move(shape);
  t.f.assign(t.numElements(), fill);
  return t;
}

HostTensor HostTensor::ints(std::vector<int64_t> shape, int32_t fill) {
  HostTensor t;
  t.shape = std::move(shape);
  t.isInt = true;
  t.i.assign(t.numElements(), fill);
  return t;
}

/// Rounds every value to the element type `type` (bf16/f16: nearest even).
static void roundTo(HostTensor &t, Type type) {
  Type elem = getElementTypeOrSelf(type);
  if (elem.isBF16())
    for (float &v : t.f)
      v = ::moe::bf16ToFloat(::moe::floatToBF16(v));
  else if (elem.isF16())
    for (float &v : t.f)
      v = ::moe::f16ToFloat(::moe::floatToF16(v));
}

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

WeightLoader::WeightLoader(std::string root) : root(std::move(root)) {}
WeightLoader::~WeightLoader() = default;

Expected<const ::moe::SafetensorsFile *>
WeightLoader::file(llvm::StringRef name) {
  llvm::SmallString<256> path(name);
  if (!llvm::sys::path::is_absolute(path)) {
    path = root;
    llvm::sys::path::append(path, name);
  }
  auto it = files.find(path);
  if (it != files.end())
    return it->second.get();
  auto opened = ::moe::SafetensorsFile::open(path);
  if (!opened)
    return opened.takeError();
  const ::moe::SafetensorsFile *result = opened->get();
  files[path] = std::move(*opened);
  return result;
}


llvm::StringRef WeightLoader::weightElementName(Type elem) {
  return elem.isBF16()                   ? "bf16"
         : elem.isF16()                  ? "f16"
         : isa<Float8E4M3FNType>(elem)   ? "f8E4M3FN"
         : isa<Float4E2M1FNType>(elem)   ? "f4E2M1FN"
         : isa<Float8E8M0FNUType>(elem) ? "f8E8M0FNU"
                                         : "f32";
}

Expected<HostTensor> WeightLoader::load(WeightOp op) {
  RankedTensorType type = op.getResult().getType();
  std::vector<std::string> names, files;
  for (llvm::StringRef n : op.getNames().getAsValueRange<StringAttr>())
    names.push_back(n.str());
  for (llvm::StringRef f : op.getFiles().getAsValueRange<StringAttr>())
    files.push_back(f.str());
  llvm::StringRef elemName = weightElementName(type.getElementType());
  Expected<HostTensor> t = load(
      names, files, op.isStack(),
      std::vector<int64_t>(type.getShape().begin(), type.getShape().end()),
      elemName);
  if (!t)
    return opError(op, llvm::toString(t.takeError()));
  return t;
}

/// Copies a row-major `srcShape` array of `width`-byte elements into the
/// top-left corner of a zeroed `dstShape` array of the same rank.
static void copyPadded(const uint8_t *src, llvm::ArrayRef<int64_t> srcShape,
                       uint8_t *dst, llvm::ArrayRef<int64_t> dstShape,
                       size_t width) {
  if (srcShape.empty()) {
    std::memcpy(dst, src, width);
    return;
  }
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < srcShape.size(); ++d)
    rows *= srcShape[d];
  size_t rowBytes = static_cast<size_t>(srcShape.back()) * width;
  std::vector<int64_t> index(srcShape.size() - 1, 0);
  for (int64_t r = 0; r < rows; ++r) {
    // The destination offset of this row's first element.
    int64_t offset = 0;
    for (size_t d = 0; d + 1 < srcShape.size(); ++d)
      offset = offset * dstShape[d] + index[d];
    offset *= dstShape.back();
    std::memcpy(dst + static_cast<size_t>(offset) * width, src + r * rowBytes,
                rowBytes);
    for (int d = static_cast<int>(index.size()) - 1; d >= 0; --d) {
      if (++index[d] < srcShape[d])
        break;
      index[d] = 0;
    }
  }
}

Error WeightLoader::forEachSlice(
    const std::vector<std::string> &names,
    const std::vector<std::string> &files, bool stacked,
    const std::vector<int64_t> &shape, llvm::StringRef elementType,
    llvm::function_ref<Error(size_t, const ::moe::SafetensorsFile &,
                             const ::moe::TensorInfo &)>
        fill) {
  std::vector<int64_t> slice =
      stacked ? std::vector<int64_t>(shape.begin() + 1, shape.end()) : shape;
  // Quantized codes: FP8 as F8_E4M3; MXFP4 blocks and scales as U8.
  bool fp4 = elementType == "f4E2M1FN";
  bool quantized = fp4 || elementType == "f8E4M3FN" ||
                   elementType == "f8E8M0FNU";
  ::moe::DType expected = elementType == "bf16"       ? ::moe::DType::BF16
                          : elementType == "f16"      ? ::moe::DType::F16
                          : elementType == "f8E4M3FN" ? ::moe::DType::F8E4M3
                          : quantized                 ? ::moe::DType::U8
                                                      : ::moe::DType::F32;
  for (auto [index, nameString] : llvm::enumerate(names)) {
    llvm::StringRef name = nameString;
    llvm::StringRef fileName = files[files.size() == 1 ? 0 : index];
    Expected<const ::moe::SafetensorsFile *> f = file(fileName);
    if (!f)
      return f.takeError();
    const ::moe::TensorInfo *info = (*f)->lookup(name);
    if (!info)
      return makeError("tensor '" + name + "' not found in " + (*f)->path());
    if (info->dtype != expected)
      return makeError((*f)->path() + ": tensor '" + name + "' is " +
                       ::moe::dtypeName(info->dtype) +
                       " but the IR declares " + ::moe::dtypeName(expected) +
                       (quantized ? " (" + elementType.str() + " codes)"
                                  : std::string()));
    if (quantized) {
      // Codes are read as stored and never zero-padded: a smaller stacked
      // slice would need its scales padded to match, which nothing writes.
      // FP4 packs two values per byte, low nibble first: [.., d] is stored
      // [.., d / 2] or, as gpt-oss does, [.., d / 32, 16].
      std::vector<int64_t> want(slice.begin(), slice.end());
      std::vector<int64_t> alt;
      if (fp4) {
        if (want.empty() || want.back() % 32 != 0)
          return makeError((*f)->path() + ": tensor '" + name +
                           "': an f4E2M1FN weight needs a last dimension "
                           "that is a multiple of 32, the IR has " +
                           ::moe::formatShape(slice));
        alt = want;
        alt.back() /= 32;
        alt.push_back(16);
        want.back() /= 2;
      }
      if (info->shape != want && (alt.empty() || info->shape != alt))
        return makeError(
            (*f)->path() + ": tensor '" + name + "' has shape " +
            ::moe::formatShape(info->shape) + " but the IR's " +
            elementType.str() + " " + ::moe::formatShape(slice) + " needs " +
            ::moe::formatShape(want) +
            (alt.empty() ? "" : " or " + ::moe::formatShape(alt)) +
            (fp4 ? " bytes (two values per byte)" : ""));
      if (Error err = fill(index, **f, *info))
        return err;
      continue;
    }
    bool fits = info->shape.size() == slice.size();
    bool exact = fits;
    for (size_t d = 0; fits && d < slice.size(); ++d) {
      fits = info->shape[d] <= slice[d];
      exact = exact && info->shape[d] == slice[d];
    }
    if (!fits || (!stacked && !exact))
      return makeError((*f)->path() + ": tensor '" + name + "' has shape " +
                       ::moe::formatShape(info->shape) +
                       " but the IR expects " + ::moe::formatShape(slice) +
                       (stacked ? " (or smaller, zero-padded)" : ""));
    if (Error err = fill(index, **f, *info))
      return err;
  }
  return Error::success();
}

Expected<HostTensor> WeightLoader::load(const std::vector<std::string> &names,
                                        const std::vector<std::string> &files,
                                        bool stacked,
                                        const std::vector<int64_t> &shape,
                                        llvm::StringRef elementType) {
  if (provider) {
    // The provider's values become the tensor: no zeroed copy beside them.
    Expected<std::vector<float>> values =
        provider(names, files, stacked, shape, elementType);
    if (!values)
      return values.takeError();
    HostTensor result = HostTensor::floats({});
    result.shape = shape;
    int64_t count = std::accumulate(shape.begin(), shape.end(), int64_t{1},
                                    std::multiplies<int64_t>());
    if (static_cast<int64_t>(values->size()) != count)
      return makeError("weight '" + (names.empty() ? std::string() : names[0]) +
                       "': got " + llvm::Twine(values->size()) +
                       " values for shape " + ::moe::formatShape(shape));
    result.f = std::move(*values);
    return result;
  }
  HostTensor result = HostTensor::floats(shape);
  llvm::ArrayRef<int64_t> slice =
      llvm::ArrayRef<int64_t>(shape).drop_front(stacked ? 1 : 0);
  int64_t sliceSize = std::accumulate(slice.begin(), slice.end(), int64_t{1},
                                      std::multiplies<int64_t>());
  if (Error err = forEachSlice(
          names, files, stacked, shape, elementType,
          [&](size_t index, const ::moe::SafetensorsFile &f,
              const ::moe::TensorInfo &info) -> Error {
            if (info.dtype == ::moe::DType::F8E4M3 ||
                info.dtype == ::moe::DType::U8) {
              // Exact values of the codes; scales are applied by the op.
              Expected<std::vector<uint8_t>> raw = f.readBytes(info);
              if (!raw)
                return raw.takeError();
              float *out = result.f.data() + index * sliceSize;
              if (elementType == "f4E2M1FN")
                for (int64_t i = 0; i < sliceSize; ++i)
                  out[i] = ::moe::quant::decodePackedE2M1(raw->data(), i);
              else if (elementType == "f8E8M0FNU")
                for (int64_t i = 0; i < sliceSize; ++i)
                  out[i] = ::moe::quant::decodeE8M0((*raw)[i]);
              else
                for (int64_t i = 0; i < sliceSize; ++i)
                  out[i] = ::moe::quant::decodeE4M3FN((*raw)[i]);
              return Error::success();
            }
            Expected<std::vector<float>> values = f.readF32(info.name);
            if (!values)
              return values.takeError();
            // Zero padding at the end of each dimension.
            copyPadded(reinterpret_cast<const uint8_t *>(values->data()),
                       info.shape,
                       reinterpret_cast<uint8_t *>(result.f.data() +
                                                   index * sliceSize),
                       slice, sizeof(float));
            return Error::success();
          }))
    return std::move(err);
  return result;
}

Expected<std::vector<uint8_t>>
WeightLoader::loadBytes(const std::vector<std::string> &names,
                        const std::vector<std::string> &files, bool stacked,
                        const std::vector<int64_t> &shape,
                        llvm::StringRef elementType) {
  ::moe::DType dtype = elementType == "bf16"  ? ::moe::DType::BF16
                       : elementType == "f16" ? ::moe::DType::F16
                                              : ::moe::DType::F32;
  size_t width = ::moe::dtypeSize(dtype);
  int64_t count = std::accumulate(shape.begin(), shape.end(), int64_t{1},
                                  std::multiplies<int64_t>());
  if (elementType == "f8E4M3FN" || elementType == "f4E2M1FN" ||
      elementType == "f8E8M0FNU") {
    // Quantized codes as stored (FP4 packed two per byte); forEachSlice
    // checks every slice's exact shape, so no padding.
    if (provider)
      return makeError("weight '" + (names.empty() ? std::string() : names[0]) +
                       "': " + elementType +
                       " codes are read from safetensors files, not from a "
                       "value provider");
    bool fp4 = elementType == "f4E2M1FN";
    int64_t per = stacked && !shape.empty() ? count / shape.front() : count;
    size_t sliceBytes = static_cast<size_t>(fp4 ? per / 2 : per);
    std::vector<uint8_t> out;
    out.reserve(sliceBytes * names.size() + 16);
    out.resize(static_cast<size_t>(fp4 ? count / 2 : count), 0);
    if (Error err = forEachSlice(
            names, files, stacked, shape, elementType,
            [&](size_t index, const ::moe::SafetensorsFile &f,
                const ::moe::TensorInfo &info) -> Error {
              if (info.numBytes() != sliceBytes)
                return makeError(f.path() + ": tensor '" + info.name +
                                 "' holds " + llvm::Twine(info.numBytes()) +
                                 " bytes, its " + elementType + " shape needs " +
                                 llvm::Twine(sliceBytes));
              return f.read(info, 0, sliceBytes,
                            out.data() + index * sliceBytes);
            }))
      return std::move(err);
    return out;
  }
  if (provider) {
    // f32 values (a package): encoded once.
    Expected<HostTensor> values =
        load(names, files, stacked, shape, elementType);
    if (!values)
      return values.takeError();
    return ::moe::encodeFloats(values->f, dtype);
  }
  std::vector<uint8_t> out;
  // Room for the 16 bytes of slack the kernels' loads need, so that the
  // executor can keep this buffer without copying it again.
  out.reserve(static_cast<size_t>(count) * width + 16);
  out.resize(static_cast<size_t>(count) * width, 0);
  llvm::ArrayRef<int64_t> slice =
      llvm::ArrayRef<int64_t>(shape).drop_front(stacked ? 1 : 0);
  size_t sliceBytes =
      width * std::accumulate(slice.begin(), slice.end(), size_t{1},
                              std::multiplies<size_t>());
  if (Error err = forEachSlice(
          names, files, stacked, shape, elementType,
          [&](size_t index, const ::moe::SafetensorsFile &f,
              const ::moe::TensorInfo &info) -> Error {
            // The checkpoint's bytes (the same dtype: forEachSlice checks
            // it), zero-padded; no f32 copy. Read, not mapped: no page of
            // the file stays resident (SafetensorsFile::read).
            uint8_t *dst = out.data() + index * sliceBytes;
            if (info.numBytes() == sliceBytes)
              return f.read(info, 0, sliceBytes, dst);
            Expected<std::vector<uint8_t>> raw = f.readBytes(info);
            if (!raw)
              return raw.takeError();
            copyPadded(raw->data(), info.shape, dst, slice, width);
            return Error::success();
          }))
    return std::move(err);
  return out;
}

Error WeightLoader::forEachRow(
    const std::string &name, const std::string &fileName,
    const std::vector<int64_t> &shape, llvm::StringRef elementType,
    llvm::ArrayRef<int64_t> rows,
    llvm::function_ref<Error(llvm::ArrayRef<uint8_t>)> sink) {
  if (provider)
    return makeError("weight '" + name +
                     "': rows are read from safetensors files, not from a "
                     "value provider");
  bool known = elementType == "f32" || elementType == "bf16" ||
               elementType == "f16" || elementType == "f8E4M3FN" ||
               elementType == "f4E2M1FN" || elementType == "f8E8M0FNU";
  if (shape.size() < (elementType == "f4E2M1FN" ? 2u : 1u) || !known)
    return makeError("weight '" + name + "': rows of a " + elementType +
                     " tensor of rank " + llvm::Twine(shape.size()) +
                     " are not read one by one (expected f32, bf16, f16, "
                     "f8E4M3FN or f8E8M0FNU of rank 1 or more, or f4E2M1FN "
                     "of rank 2 or more)");
  return forEachSlice(
      {name}, {fileName}, /*stacked=*/false, shape, elementType,
      [&](size_t, const ::moe::SafetensorsFile &f,
          const ::moe::TensorInfo &info) -> Error {
        uint64_t rowBytes = info.numBytes() / static_cast<uint64_t>(shape[0]);
        std::vector<uint8_t> row(rowBytes);
        for (int64_t r : rows) {
          if (r < 0 || r >= shape[0])
            return makeError(f.path() + ": tensor '" + name + "': row " +
                             llvm::Twine(r) + " is outside its " +
                             llvm::Twine(shape[0]));
          if (Error e = f.read(info, static_cast<uint64_t>(r) * rowBytes,
                               rowBytes, row.data()))
            return e;
          if (Error e = sink(row))
            return e;
        }
        return Error::success();
      });
}

namespace moe {

Expected<HostTensor> readLayerInput(llvm::StringRef path) {
  llvm::Expected<NpyArray> array = readNpy(path);
  if (!array)
    return array.takeError();
  HostTensor t;
  t.shape = array->shape;
  if (array->dtype != NpyDType::I32 && array->dtype != NpyDType::I64) {
    t.f = array->toF32();
    return t;
  }
  llvm::Expected<std::vector<int64_t>> ints = array->toI64();
  if (!ints)
    return makeError(path + ": " + llvm::toString(ints.takeError()));
  t.isInt = true;
  t.i.assign(ints->begin(), ints->end());
  return t;
}

std::string weightRoot(ModuleOp module, llvm::StringRef irPath) {
  llvm::SmallString<256> base(irPath);
  llvm::sys::fs::make_absolute(base);
  llvm::sys::path::remove_filename(base);
  if (auto root = module->getAttrOfType<StringAttr>(kWeightRootAttrName)) {
    if (llvm::sys::path::is_absolute(root.getValue()))
      return root.getValue().str();
    llvm::sys::path::append(base, root.getValue());
  }
  return base.str().str();
}

//===----------------------------------------------------------------------===//
// The interpreter
//===----------------------------------------------------------------------===//

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// Row-major [rows, cols] view helpers.
struct Matrix {
  int64_t rows, cols;
};

Matrix matrix(const HostTensor &t) {
  return {t.shape.size() >= 1 ? t.shape[0] : 1,
          t.shape.size() >= 2 ? t.shape[1] : 1};
}

/// Indices of a row sorted by value descending, the lower index first on
/// ties; NaN and -inf last.
std::vector<int64_t> sortedDescending(const float *row, int64_t n) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    float va = row[a], vb = row[b];
    bool oka = !std::isnan(va), okb = !std::isnan(vb);
    if (oka != okb)
      return oka;
    return va > vb;
  });
  return order;
}

double activate(Activation act, double g, double u, float alpha,
                float limit) {
  switch (act) {
  case Activation::silu:
    return g / (1.0 + std::exp(-g)) * u;
  case Activation::gelu:
    return 0.5 * g * (1.0 + std::erf(g / std::sqrt(2.0))) * u;
  case Activation::gelu_tanh: {
    double c = std::sqrt(2.0 / M_PI);
    return 0.5 * g * (1.0 + std::tanh(c * (g + 0.044715 * g * g * g))) * u;
  }
  case Activation::relu:
    return std::max(g, 0.0) * u;
  case Activation::swiglu_clamped: {
    g = std::min(g, static_cast<double>(limit));
    u = std::clamp(u, -static_cast<double>(limit), static_cast<double>(limit));
    double glu = g / (1.0 + std::exp(-static_cast<double>(alpha) * g));
    return (u + 1.0) * glu;
  }
  }
  return 0.0;
}

/// A gated FFN's weights as host tensors and their layout.
struct FFNWeights {
  const HostTensor *gate = nullptr, *up = nullptr, *gateUp = nullptr,
                   *down = nullptr;
  const HostTensor *gateBias = nullptr, *upBias = nullptr,
                   *gateUpBias = nullptr, *downBias = nullptr;
  bool inOut = false, interleaved = false;
  /// down(act(up x + b)): no gate (moe.expert_ffn non_gated).
  bool nonGated = false;
  Activation act = Activation::silu;
  float alpha = 1.702f, limit = 7.0f;
  int64_t hidden = 0, inter = 0;
  /// Per-expert intermediate sizes (moe.expert_ffn widths); empty: `inter`
  /// for every expert.
  std::vector<int64_t> widths;
};

/// Element (o, i) of projection `e` of a weight stored [E?, out, in] or
/// [E?, in, out]; `outSize`/`inSize` are the matrix sizes.
inline float proj(const HostTensor &w, int64_t e, int64_t o, int64_t i,
                  int64_t outSize, int64_t inSize, bool inOut) {
  int64_t base = e * outSize * inSize;
  return inOut ? w.f[base + i * outSize + o] : w.f[base + o * inSize + i];
}

/// Applies expert `e` of `w` to one row `x` (length hidden), writing `y`.
void applyFFN(const FFNWeights &w, int64_t e, const float *x, float *y) {
  int64_t H = w.hidden, I = w.inter;
  // Expert e is the FFN of its first widths[e] channels: the padding past
  // them is never read (its values do not matter, NaN included).
  int64_t width = w.widths.empty() ? I : w.widths[e];
  std::vector<double> h(width);
  for (int64_t j = 0; j < width; ++j) {
    double g = 0.0, u = 0.0;
    int64_t gRow = j, uRow = j;
    const HostTensor *gw = w.gate, *uw = w.up;
    int64_t outSize = I;
    if (w.gateUp) {
      gw = uw = w.gateUp;
      outSize = 2 * I;
      gRow = w.interleaved ? 2 * j : j;
      uRow = w.interleaved ? 2 * j + 1 : I + j;
    }
    if (w.nonGated) {
      // act(up x + b): the up projection is the activation's input.
      for (int64_t k = 0; k < H; ++k)
        u += static_cast<double>(x[k]) * proj(*uw, e, uRow, k, outSize, H, w.inOut);
      if (w.upBias)
        u += w.upBias->f[e * I + j];
      h[j] = activate(w.act, u, 1.0, w.alpha, w.limit);
      continue;
    }
    for (int64_t k = 0; k < H; ++k) {
      g += static_cast<double>(x[k]) * proj(*gw, e, gRow, k, outSize, H, w.inOut);
      u += static_cast<double>(x[k]) * proj(*uw, e, uRow, k, outSize, H, w.inOut);
    }
    if (w.gateUpBias) {
      g += w.gateUpBias->f[e * 2 * I + gRow];
      u += w.gateUpBias->f[e * 2 * I + uRow];
    }
    if (w.gateBias)
      g += w.gateBias->f[e * I + j];
    if (w.upBias)
      u += w.upBias->f[e * I + j];
    h[j] = activate(w.act, g, u, w.alpha, w.limit);
  }
  for (int64_t o = 0; o < H; ++o) {
    double acc = w.downBias ? w.downBias->f[e * H + o] : 0.0;
    for (int64_t j = 0; j < width; ++j)
      acc += h[j] * proj(*w.down, e, o, j, H, I, w.inOut);
    y[o] = static_cast<float>(acc);
  }
}

/// "[?, 8] f32": a function argument's expected shape, for messages.
std::string shapeText(RankedTensorType type) {
  std::string text = "[";
  for (auto [d, size] : llvm::enumerate(type.getShape()))
    text += (d ? ", " : "") +
            (ShapedType::isDynamic(size) ? std::string("?")
                                         : std::to_string(size));
  return text + "] " + (type.getElementType().isInteger(32) ? "i32" : "f32");
}

class Interpreter {
public:
  Interpreter(WeightLoader &weights, RoutingTrace *trace)
      : weights(weights), trace(trace) {}

  /// Runs `fn`, which must have the form `want`, on `args` (its arguments
  /// in order); returns its results.
  Expected<std::vector<HostTensor>> run(func::FuncOp fn, LayerForm want,
                                        std::vector<HostTensor> args) {
    std::string why;
    std::optional<LayerForm> form = getLayerForm(fn, why);
    if (!form)
      return opError(fn, why);
    if (*form != want) {
      auto entry = [](LayerForm f) {
        switch (f) {
        case LayerForm::Layer:
          return "a layer of one argument (moe::interpret)";
        case LayerForm::GivenRouting:
          return "a layer with a given routing (x, ids, weights; "
                 "moe::interpretGiven)";
        case LayerForm::Router:
          return "a router-only function (moe.role = \"router\"; "
                 "moe::interpretRouter)";
        case LayerForm::ExtraInputs:
          return "a layer with extra inputs (x, then its moe.input "
                 "arguments; moe::interpretWithInputs)";
        }
        return "";
      };
      return opError(fn, "function @" + fn.getSymName() + " is " +
                             entry(*form) + ", but was run as " + entry(want));
    }
    if (args.size() != fn.getNumArguments()) {
      std::string expected;
      for (unsigned i = 1; i < fn.getNumArguments(); ++i)
        expected +=
            (i > 1 ? ", '" : "'") + getLayerInputName(fn, i) + "' " +
            shapeText(cast<RankedTensorType>(fn.getArgument(i).getType()));
      return opError(fn, "function @" + fn.getSymName() + " takes " +
                             llvm::Twine(fn.getNumArguments() - 1) +
                             " extra input(s) after x (" + expected + "), " +
                             llvm::Twine(args.size() - 1) + " given");
    }
    static const char *argNames[] = {"input", "ids", "weights"};
    for (auto [n, arg] : llvm::enumerate(fn.getArguments())) {
      auto argType = cast<RankedTensorType>(arg.getType());
      HostTensor &value = args[n];
      bool wantInt = argType.getElementType().isInteger(32);
      std::string argName = *form == LayerForm::ExtraInputs && n > 0
                                ? "extra input '" +
                                      getLayerInputName(fn, n) + "'"
                                : std::string(argNames[n]);
      if (value.isInt != wantInt ||
          argType.getRank() != static_cast<int64_t>(value.shape.size()))
        return opError(fn, llvm::Twine("the ") + argName +
                               " must be a rank-" +
                               llvm::Twine(argType.getRank()) + " tensor of " +
                               (wantInt ? "i32" : "floats") + " " +
                               shapeText(argType));
      for (auto [d, size] : llvm::enumerate(argType.getShape()))
        if (!ShapedType::isDynamic(size) && size != value.shape[d])
          return opError(fn, llvm::Twine(argName) + " dimension " +
                                 llvm::Twine(d) + " is " +
                                 llvm::Twine(value.shape[d]) +
                                 " but the function expects " +
                                 llvm::Twine(size) + " " +
                                 shapeText(argType));
      if (n > 0 && *form == LayerForm::GivenRouting &&
          value.shape[0] != args[0].shape[0])
        return opError(fn, llvm::Twine("the given ") + argNames[n] + " have " +
                               llvm::Twine(value.shape[0]) +
                               " rows, the input " +
                               llvm::Twine(args[0].shape[0]) + " tokens");
      if (!wantInt)
        roundTo(value, argType);
    }
    // Sequence maps: one entry per token, each a row of its scores.
    for (auto [m, sc] : getSequenceMapArguments(fn)) {
      const HostTensor &map = args[m], &scores = args[sc];
      std::string name = "extra input '" + getLayerInputName(fn, m) + "'";
      int64_t T = args[0].shape[0], B = scores.shape[0];
      if (map.shape[0] != T)
        return opError(fn, name + " has " + llvm::Twine(map.shape[0]) +
                               " entries, expected [T] = [" + llvm::Twine(T) +
                               "] i32 (the sequence of each token)");
      for (int64_t t = 0; t < T; ++t)
        if (map.i[t] < 0 || map.i[t] >= B)
          return opError(fn, name + ": entry " + llvm::Twine(t) + " is " +
                                 llvm::Twine(map.i[t]) +
                                 ", outside [0, B) for B = " + llvm::Twine(B) +
                                 " (the rows of '" +
                                 getLayerInputName(fn, sc) + "')");
    }
    return runBlock(fn.getBody().front(), std::move(args));
  }

  /// Runs `block` with its arguments bound to `args`; returns the values of
  /// its terminator (func.return or moe.yield).
  Expected<std::vector<HostTensor>> runBlock(Block &block,
                                             std::vector<HostTensor> args) {
    for (auto [arg, value] : llvm::zip(block.getArguments(), args))
      values[arg] = std::move(value);
    for (Operation &op : block) {
      if (op.hasTrait<OpTrait::IsTerminator>()) {
        std::vector<HostTensor> results;
        for (Value v : op.getOperands())
          results.push_back(get(v));
        return results;
      }
      if (Error err = execute(&op))
        return std::move(err);
    }
    return opError(block.getParentOp(), "block has no terminator");
  }

private:
  const HostTensor &get(Value v) { return values.find(v)->second; }
  void set(Value v, HostTensor t) {
    if (!t.isInt)
      roundTo(t, v.getType());
    values[v] = std::move(t);
  }

  /// The runtime shape of a result whose static shape may hold `?`.
  Error execute(Operation *op) {
    return llvm::TypeSwitch<Operation *, Error>(op)
        .Case([&](WeightOp o) -> Error {
          Expected<HostTensor> t = weights.load(o);
          if (!t)
            return t.takeError();
          set(o.getResult(), std::move(*t));
          return Error::success();
        })
        .Case([&](arith::ConstantOp o) -> Error {
          // Scalars (what tensor.splat fills, tensor.dim's index): rank 0.
          if (auto f = dyn_cast<FloatAttr>(o.getValue())) {
            set(o.getResult(),
                HostTensor::floats({},
                                   static_cast<float>(f.getValueAsDouble())));
            return Error::success();
          }
          if (auto i = dyn_cast<IntegerAttr>(o.getValue())) {
            set(o.getResult(),
                HostTensor::ints({}, static_cast<int32_t>(i.getInt())));
            return Error::success();
          }
          auto dense = dyn_cast<DenseElementsAttr>(o.getValue());
          if (!dense)
            return opError(o, "only dense tensor constants are supported");
          auto type = cast<ShapedType>(dense.getType());
          std::vector<int64_t> shape(type.getShape().begin(),
                                     type.getShape().end());
          if (isa<FloatType>(type.getElementType())) {
            HostTensor t = HostTensor::floats(shape);
            int64_t i = 0;
            for (APFloat v : dense.getValues<APFloat>())
              t.f[i++] = static_cast<float>(v.convertToDouble());
            set(o.getResult(), std::move(t));
          } else {
            HostTensor t = HostTensor::ints(shape);
            int64_t i = 0;
            for (APInt v : dense.getValues<APInt>())
              t.i[i++] = static_cast<int32_t>(v.getSExtValue());
            set(o.getResult(), std::move(t));
          }
          return Error::success();
        })
        .Case<arith::AddFOp, arith::SubFOp, arith::MulFOp, arith::DivFOp,
              arith::MaximumFOp, arith::MinimumFOp>(
            [&](auto o) -> Error { return elementwise(o); })
        .Case([&](arith::NegFOp o) -> Error {
          HostTensor r = get(o.getOperand());
          for (float &v : r.f)
            v = -v;
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](tensor::DimOp o) -> Error {
          const HostTensor &t = get(o.getSource());
          int64_t d = get(o.getIndex()).i.at(0);
          if (d < 0 || d >= static_cast<int64_t>(t.shape.size()))
            return opError(o, "dimension " + llvm::Twine(d) +
                                  " out of range for a rank-" +
                                  llvm::Twine(t.shape.size()) + " tensor");
          set(o.getResult(),
              HostTensor::ints({}, static_cast<int32_t>(t.shape[d])));
          return Error::success();
        })
        .Case([&](tensor::SplatOp o) -> Error {
          const HostTensor &v = get(o.getInput());
          if (v.isInt)
            return opError(o, "only float splats are supported");
          auto type = o.getType();
          std::vector<int64_t> shape;
          auto sizes = o.getDynamicSizes().begin();
          for (int64_t d : type.getShape())
            shape.push_back(ShapedType::isDynamic(d) ? get(*sizes++).i.at(0)
                                                     : d);
          set(o.getResult(), HostTensor::floats(shape, v.f.at(0)));
          return Error::success();
        })
        .Case([&](RouterLinearOp o) -> Error {
          const HostTensor &x = get(o.getInput());
          const HostTensor &w = get(o.getWeight());
          int64_t T = x.shape[0], H = x.shape[1], E = w.shape[0];
          const HostTensor *b = o.getBias() ? &get(o.getBias()) : nullptr;
          HostTensor r = HostTensor::floats({T, E});
          // Cosine routers: 1 / max(|row|, eps) per normalised row.
          double eps = o.getEpsilon().convertToFloat();
          auto invNorms = [&](const HostTensor &m, int64_t n, bool on) {
            std::vector<double> inv(n, 1.0);
            for (int64_t i = 0; on && i < n; ++i) {
              double ss = 0.0;
              for (int64_t h = 0; h < H; ++h)
                ss += static_cast<double>(m.f[i * H + h]) * m.f[i * H + h];
              inv[i] = 1.0 / std::max(std::sqrt(ss), eps);
            }
            return inv;
          };
          std::vector<double> xInv = invNorms(x, T, o.normalizesInput());
          std::vector<double> wInv = invNorms(w, E, o.normalizesWeight());
          double scale = o.getNormalize() == RouterNormalize::none
                             ? 1.0
                             : o.getScale().convertToFloat();
          for (int64_t t = 0; t < T; ++t)
            for (int64_t e = 0; e < E; ++e) {
              bool cosine = o.getNormalize() != RouterNormalize::none;
              double acc = b && !cosine ? b->f[e] : 0.0;
              for (int64_t h = 0; h < H; ++h)
                acc += static_cast<double>(x.f[t * H + h]) * w.f[e * H + h];
              if (cosine)
                acc = acc * scale * xInv[t] * wInv[e] + (b ? b->f[e] : 0.0);
              r.f[t * E + e] = static_cast<float>(acc);
            }
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](AddSequenceScoresOp o) -> Error {
          HostTensor r = get(o.getInput());
          const HostTensor &seq = get(o.getSequenceScores());
          const HostTensor &map = get(o.getSequenceMap());
          int64_t T = r.shape[0], E = r.shape[1], B = seq.shape[0];
          if (map.shape[0] != T)
            return opError(o, "the sequence map has " +
                                  llvm::Twine(map.shape[0]) +
                                  " entries but the batch has " +
                                  llvm::Twine(T) + " tokens");
          if (seq.shape[1] != E)
            return opError(o, "the sequence scores have " +
                                  llvm::Twine(seq.shape[1]) +
                                  " columns, the token scores " +
                                  llvm::Twine(E));
          float factor = o.getFactor().convertToFloat();
          for (int64_t t = 0; t < T; ++t) {
            int64_t b = map.i[t];
            if (b < 0 || b >= B)
              return opError(o, "sequence_map[" + llvm::Twine(t) + "] = " +
                                    llvm::Twine(b) +
                                    " is outside [0, B) for B = " +
                                    llvm::Twine(B) +
                                    " sequences (the rows of the sequence "
                                    "scores)");
            for (int64_t e = 0; e < E; ++e)
              r.f[t * E + e] += factor * seq.f[b * E + e];
          }
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](SoftmaxOp o) -> Error {
          HostTensor r = get(o.getInput());
          Matrix m = matrix(r);
          // Over a selection's slots: the real slots only (masked softmax).
          Value maskValue = getImplicitMask(o);
          const HostTensor *mask = maskValue ? &get(maskValue) : nullptr;
          for (int64_t t = 0; t < m.rows; ++t) {
            float *row = &r.f[t * m.cols];
            auto real = [&](int64_t j) {
              return !mask || mask->i[t * m.cols + j] >= 0;
            };
            float mx = kNegInf;
            for (int64_t j = 0; j < m.cols; ++j)
              if (real(j))
                mx = std::max(mx, row[j]);
            if (mx == kNegInf) {
              std::fill(row, row + m.cols, 0.0f);
              continue;
            }
            double sum = 0.0;
            for (int64_t j = 0; j < m.cols; ++j)
              if (real(j))
                sum += std::exp(static_cast<double>(row[j]) - mx);
            for (int64_t j = 0; j < m.cols; ++j)
              row[j] =
                  real(j)
                      ? static_cast<float>(
                            std::exp(static_cast<double>(row[j]) - mx) / sum)
                      : 0.0f;
          }
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](SigmoidOp o) -> Error {
          HostTensor r = get(o.getInput());
          for (float &v : r.f)
            v = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(v))));
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](ReluOp o) -> Error {
          HostTensor r = get(o.getInput());
          for (float &v : r.f)
            v = std::max(v, 0.0f);
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](RmsNormOp o) -> Error {
          HostTensor r = get(o.getInput());
          Matrix m = matrix(r);
          const HostTensor *g = o.getWeight() ? &get(o.getWeight()) : nullptr;
          double eps = o.getEpsilon().convertToFloat();
          for (int64_t t = 0; t < m.rows; ++t) {
            float *row = &r.f[t * m.cols];
            double ss = 0.0;
            for (int64_t j = 0; j < m.cols; ++j)
              ss += static_cast<double>(row[j]) * row[j];
            double inv = 1.0 / std::sqrt(ss / m.cols + eps);
            for (int64_t j = 0; j < m.cols; ++j)
              row[j] = static_cast<float>(row[j] * inv * (g ? g->f[j] : 1.0));
          }
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](BiasAddOp o) -> Error {
          HostTensor r = get(o.getInput());
          const HostTensor &b = get(o.getBias());
          Matrix m = matrix(r);
          for (int64_t t = 0; t < m.rows; ++t)
            for (int64_t j = 0; j < m.cols; ++j)
              r.f[t * m.cols + j] += b.f[j];
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](GroupLimitOp o) -> Error {
          HostTensor r = get(o.getInput());
          Matrix m = matrix(r);
          int64_t G = o.getNumGroups(), keep = o.getKeepGroups();
          int64_t size = m.cols / G;
          bool top2 = o.getGroupScore() == GroupScore::top2_sum;
          for (int64_t t = 0; t < m.rows; ++t) {
            float *row = &r.f[t * m.cols];
            std::vector<float> score(G);
            for (int64_t g = 0; g < G; ++g) {
              std::vector<int64_t> order = sortedDescending(row + g * size, size);
              double s = row[g * size + order[0]];
              if (top2)
                s += row[g * size + order[1]];
              score[g] = static_cast<float>(s);
            }
            std::vector<int64_t> groups = sortedDescending(score.data(), G);
            std::vector<bool> kept(G, false);
            for (int64_t i = 0; i < keep; ++i)
              kept[groups[i]] = true;
            for (int64_t g = 0; g < G; ++g)
              if (!kept[g])
                std::fill(row + g * size, row + (g + 1) * size, kNegInf);
          }
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](TopKOp o) -> Error {
          const HostTensor &s = get(o.getInput());
          int64_t k = o.getK();
          return select(o, o.getIds(), o.getValues(), s, k,
                        [&](const float *row, const std::vector<int64_t> &order,
                            int64_t n) {
                          int64_t count = 0;
                          while (count < std::min<int64_t>(k, n) &&
                                 row[order[count]] != kNegInf &&
                                 !std::isnan(row[order[count]]))
                            ++count;
                          return count;
                        });
        })
        .Case([&](TopPOp o) -> Error {
          const HostTensor &s = get(o.getInput());
          double p = o.getP().convertToFloat();
          int64_t maxK = o.getMaxK(), minK = o.getMinK();
          bool within = o.getPrefix() == TopPPrefix::within;
          return select(o, o.getIds(), o.getValues(), s, maxK,
                        [&](const float *row, const std::vector<int64_t> &order,
                            int64_t n) {
                          int64_t limit = std::min(maxK, n);
                          double cum = 0.0;
                          int64_t count = 0;
                          // Best first while fewer than min_k are taken,
                          // or (reach) the sum so far is below p, or
                          // (within) the sum with the next stays <= p.
                          while (count < limit) {
                            double next = cum + row[order[count]];
                            if (count >= minK &&
                                (within ? !(next <= p) : !(cum < p)))
                              break;
                            cum = next;
                            ++count;
                          }
                          return count;
                        });
        })
        .Case([&](EntropyFallbackOp o) -> Error {
          const HostTensor &probs = get(o.getProbs());
          const HostTensor &selIds = get(o.getSparseIds());
          const HostTensor &selVals = get(o.getSparseValues());
          Matrix m = matrix(probs), ms = matrix(selIds);
          double q = o.getQ().convertToFloat();
          double eps = o.getEpsilon().convertToFloat();
          double threshold = o.getThreshold().convertToFloat();
          // The largest entropy of N candidates (the uniform row).
          double maxEntropy =
              (1.0 - std::pow(static_cast<double>(m.cols), 1.0 - q)) /
              (q - 1.0);
          HostTensor ids = HostTensor::ints({m.rows, m.cols}, -1);
          HostTensor vals = HostTensor::floats({m.rows, m.cols});
          for (int64_t t = 0; t < m.rows; ++t) {
            const float *row = &probs.f[t * m.cols];
            double sum = 0.0;
            for (int64_t e = 0; e < m.cols; ++e)
              sum += std::pow(static_cast<double>(row[e]) + eps, q);
            double entropy = (1.0 - sum) / (q - 1.0);
            if (o.getNormalized())
              entropy /= maxEntropy;
            if (entropy > threshold) {
              for (int64_t e = 0; e < m.cols; ++e) {
                ids.i[t * m.cols + e] = static_cast<int32_t>(e);
                vals.f[t * m.cols + e] = row[e];
              }
              continue;
            }
            for (int64_t k = 0; k < ms.cols; ++k) {
              ids.i[t * m.cols + k] = selIds.i[t * ms.cols + k];
              vals.f[t * m.cols + k] = selVals.f[t * ms.cols + k];
            }
          }
          set(o.getIds(), std::move(ids));
          set(o.getValues(), std::move(vals));
          return Error::success();
        })
        .Case([&](ThresholdOp o) -> Error {
          const HostTensor &s = get(o.getInput());
          float threshold = o.getThreshold().convertToFloat();
          int64_t maxK = o.getMaxK();
          return select(o, o.getIds(), o.getValues(), s, maxK,
                        [&](const float *row, const std::vector<int64_t> &order,
                            int64_t n) {
                          int64_t count = 0;
                          while (count < std::min(maxK, n) &&
                                 row[order[count]] > threshold)
                            ++count;
                          return count;
                        });
        })
        .Case([&](ExpertChoiceOp o) -> Error {
          const HostTensor &s = get(o.getInput());
          Matrix m = matrix(s);
          int64_t capacity = o.getCapacity();
          HostTensor ids = HostTensor::ints({m.rows, m.cols}, -1);
          HostTensor vals = HostTensor::floats({m.rows, m.cols});
          std::vector<float> column(m.rows);
          for (int64_t e = 0; e < m.cols; ++e) {
            for (int64_t t = 0; t < m.rows; ++t)
              column[t] = s.f[t * m.cols + e];
            std::vector<int64_t> order = sortedDescending(column.data(), m.rows);
            for (int64_t i = 0; i < std::min(capacity, m.rows); ++i) {
              int64_t t = order[i];
              ids.i[t * m.cols + e] = static_cast<int32_t>(e);
              vals.f[t * m.cols + e] = column[t];
            }
          }
          set(o.getIds(), std::move(ids));
          set(o.getValues(), std::move(vals));
          return Error::success();
        })
        .Case([&](CapacityOp o) -> Error {
          HostTensor ids = get(o.getIds());
          HostTensor w = get(o.getWeights());
          Matrix m = matrix(ids);
          int64_t E = o.getNumExperts();
          int64_t capacity = o.getExpertCapacity(m.rows, m.cols);
          std::vector<int64_t> taken(E, 0);
          // Slot 0 of every token in token order, then slot 1, ...
          for (int64_t s = 0; s < m.cols; ++s)
            for (int64_t t = 0; t < m.rows; ++t) {
              int32_t &id = ids.i[t * m.cols + s];
              if (id < 0)
                continue;
              if (id >= E)
                return opError(o, "id " + llvm::Twine(id) + " is outside the " +
                                      llvm::Twine(E) +
                                      " experts ('num_experts')");
              if (taken[id] < capacity) {
                ++taken[id];
                continue;
              }
              id = -1;
              w.f[t * m.cols + s] = 0.0f;
            }
          set(o.getResultIds(), std::move(ids));
          set(o.getResultWeights(), std::move(w));
          return Error::success();
        })
        .Case([&](SinkhornOp o) -> Error {
          // The routing kernel's arithmetic and order (route::sinkhorn):
          // double exponentials, sums and scales, f32 storage.
          const HostTensor &in = get(o.getInput());
          Matrix m = matrix(in);
          int64_t T = m.rows, E = m.cols;
          double eps = o.getEpsilon().convertToFloat();
          HostTensor p = HostTensor::floats({T, E});
          for (int64_t t = 0; t < T; ++t) {
            const float *row = &in.f[t * E];
            float mx = row[0];
            for (int64_t e = 1; e < E; ++e)
              if (row[e] > mx)
                mx = row[e];
            for (int64_t e = 0; e < E; ++e)
              p.f[t * E + e] =
                  mx == kNegInf
                      ? 0.0f
                      : static_cast<float>(
                            std::exp((static_cast<double>(row[e]) - mx) / eps));
          }
          double target = static_cast<double>(T) / static_cast<double>(E);
          int64_t iterations = o.getIterations();
          for (int64_t it = 0; it < iterations; ++it) {
            for (int64_t t = 0; t < T; ++t) {
              double sum = 0.0;
              for (int64_t e = 0; e < E; ++e)
                sum += p.f[t * E + e];
              if (sum > 0.0)
                for (int64_t e = 0; e < E; ++e)
                  p.f[t * E + e] = static_cast<float>(p.f[t * E + e] / sum);
            }
            for (int64_t e = 0; e < E; ++e) {
              double sum = 0.0;
              for (int64_t t = 0; t < T; ++t)
                sum += p.f[t * E + e];
              if (sum > 0.0) {
                double f = target / sum;
                for (int64_t t = 0; t < T; ++t)
                  p.f[t * E + e] = static_cast<float>(p.f[t * E + e] * f);
              }
            }
          }
          set(o.getResult(), std::move(p));
          return Error::success();
        })
        .Case([&](SimilarityMixOp o) -> Error {
          // The routing kernel's arithmetic and order: the dots, the
          // softmax's max, exponentials and sums in f32, in ascending j.
          const HostTensor &x = get(o.getInput());
          const HostTensor &p = get(o.getProbs());
          int64_t T = x.shape[0], H = x.shape[1], N = p.shape[1];
          if (p.shape[0] != T)
            return opError(o, "'probs' has " + llvm::Twine(p.shape[0]) +
                                  " rows but 'input' has " + llvm::Twine(T) +
                                  " tokens");
          float tau = o.getTemperature().convertToFloat();
          HostTensor r = HostTensor::floats({T, N});
          std::vector<float> s(T);
          for (int64_t t = 0; t < T; ++t) {
            int64_t end = o.getCausal() ? t + 1 : T;
            float mx = kNegInf;
            for (int64_t j = 0; j < end; ++j) {
              // The kernel's order: 32 lanes sum every 32nd product, then a
              // butterfly over the lanes (route::similarity, warpSum).
              float lanes[32] = {};
              for (int64_t h = 0; h < H; ++h)
                lanes[h % 32] += x.f[t * H + h] * x.f[j * H + h];
              for (int offset = 16; offset > 0; offset /= 2) {
                float next[32];
                for (int l = 0; l < 32; ++l)
                  next[l] = lanes[l] + lanes[l ^ offset];
                std::copy(next, next + 32, lanes);
              }
              s[j] = lanes[0] / tau;
              mx = std::max(mx, s[j]);
            }
            float sum = 0.0f;
            float *out = &r.f[t * N];
            for (int64_t j = 0; j < end; ++j) {
              float w = std::exp(s[j] - mx);
              sum += w;
              for (int64_t e = 0; e < N; ++e)
                out[e] += w * p.f[j * N + e];
            }
            for (int64_t e = 0; e < N; ++e)
              out[e] /= sum;
          }
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](GruCellOp o) -> Error {
          // torch.nn.GRUCell: gates r, z, n (rows [0, S), [S, 2S), [2S, 3S)
          // of both weights), sums in double.
          const HostTensor &x = get(o.getInput());
          const HostTensor &h = get(o.getState());
          const HostTensor &wi = get(o.getWeightIh());
          const HostTensor &wh = get(o.getWeightHh());
          const HostTensor *bi = o.getBiasIh() ? &get(o.getBiasIh()) : nullptr;
          const HostTensor *bh = o.getBiasHh() ? &get(o.getBiasHh()) : nullptr;
          int64_t T = x.shape[0], I = x.shape[1], S = h.shape[1];
          if (h.shape[0] != T || wi.shape[0] != 3 * S || wi.shape[1] != I ||
              wh.shape[0] != 3 * S || wh.shape[1] != S)
            return opError(o, "shapes do not match a GRU cell of state width " +
                                  llvm::Twine(S) + " and input width " +
                                  llvm::Twine(I));
          HostTensor r = HostTensor::floats({T, S});
          auto gate = [&](const HostTensor &w, const HostTensor *b,
                          const float *v, int64_t n, int64_t row) {
            double acc = b ? b->f[row] : 0.0;
            for (int64_t k = 0; k < n; ++k)
              acc += static_cast<double>(w.f[row * n + k]) * v[k];
            return acc;
          };
          for (int64_t t = 0; t < T; ++t) {
            const float *xt = &x.f[t * I], *ht = &h.f[t * S];
            for (int64_t k = 0; k < S; ++k) {
              double rg = 1.0 / (1.0 + std::exp(-(gate(wi, bi, xt, I, k) +
                                                  gate(wh, bh, ht, S, k))));
              double zg = 1.0 / (1.0 + std::exp(-(gate(wi, bi, xt, I, S + k) +
                                                  gate(wh, bh, ht, S, S + k))));
              double ng = std::tanh(gate(wi, bi, xt, I, 2 * S + k) +
                                    rg * gate(wh, bh, ht, S, 2 * S + k));
              r.f[t * S + k] = static_cast<float>((1.0 - zg) * ng + zg * ht[k]);
            }
          }
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](GatherScoresOp o) -> Error {
          const HostTensor &s = get(o.getScores());
          const HostTensor &ids = get(o.getIds());
          Matrix ms = matrix(s), mi = matrix(ids);
          HostTensor r = HostTensor::floats({mi.rows, mi.cols});
          for (int64_t t = 0; t < mi.rows; ++t)
            for (int64_t j = 0; j < mi.cols; ++j) {
              int32_t e = ids.i[t * mi.cols + j];
              if (e >= ms.cols)
                return opError(o, "id " + llvm::Twine(e) +
                                      " is outside the " +
                                      llvm::Twine(ms.cols) + " scores");
              r.f[t * mi.cols + j] = e < 0 ? 0.0f : s.f[t * ms.cols + e];
            }
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](DropNullExpertsOp o) -> Error {
          HostTensor ids = get(o.getIds());
          HostTensor w = get(o.getWeights());
          int64_t real = o.getNumExperts();
          for (size_t i = 0; i < ids.i.size(); ++i)
            if (ids.i[i] >= real) {
              ids.i[i] = -1;
              w.f[i] = 0.0f;
            }
          set(o.getResultIds(), std::move(ids));
          set(o.getResultWeights(), std::move(w));
          return Error::success();
        })
        .Case([&](RemapExpertsOp o) -> Error {
          HostTensor ids = get(o.getIds());
          HostTensor w = get(o.getWeights());
          Matrix m = matrix(ids);
          ArrayRef<int64_t> mapping = o.getMapping();
          int64_t E = mapping.size();
          for (int64_t t = 0; t < m.rows; ++t) {
            int32_t *id = &ids.i[t * m.cols];
            float *wt = &w.f[t * m.cols];
            for (int64_t s = 0; s < m.cols; ++s) {
              if (id[s] < 0 || id[s] >= E || !o.keepsSlot(t, id[s])) {
                id[s] = -1;
                wt[s] = 0.0f;
                continue;
              }
              id[s] = static_cast<int32_t>(mapping[id[s]]);
              // A merged expert already in an earlier slot takes the gate.
              for (int64_t p = 0; p < s; ++p)
                if (id[p] == id[s]) {
                  wt[p] += wt[s];
                  id[s] = -1;
                  wt[s] = 0.0f;
                  break;
                }
            }
          }
          set(o.getResultIds(), std::move(ids));
          set(o.getResultWeights(), std::move(w));
          return Error::success();
        })
        .Case([&](NormalizeOp o) -> Error {
          HostTensor r = get(o.getInput());
          Matrix m = matrix(r);
          double eps = o.getEpsilon().convertToFloat();
          // Over a selection's slots: the real slots only.
          Value maskValue = getImplicitMask(o);
          const HostTensor *mask = maskValue ? &get(maskValue) : nullptr;
          for (int64_t t = 0; t < m.rows; ++t) {
            float *row = &r.f[t * m.cols];
            auto real = [&](int64_t j) {
              return !mask || mask->i[t * m.cols + j] >= 0;
            };
            double sum = eps;
            for (int64_t j = 0; j < m.cols; ++j)
              if (real(j))
                sum += row[j];
            for (int64_t j = 0; j < m.cols; ++j)
              row[j] = !real(j)     ? 0.0f
                       : sum == 0.0 ? row[j]
                                    : static_cast<float>(row[j] / sum);
          }
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](ScaleOp o) -> Error {
          HostTensor r = get(o.getInput());
          double f = o.getFactor().convertToFloat();
          for (float &v : r.f)
            v = static_cast<float>(v * f);
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](DispatchOp o) -> Error {
          const HostTensor &ids = get(o.getIds());
          if (trace) {
            // A router whose weights its permute or combine reports.
            routerOfRows[o.getRows()] = trace->routers.size();
            RoutingTrace::Router &r = trace->routers.emplace_back();
            r.ids = ids;
            r.hasIds = true;
            r.experts = o.getNumExperts();
            traceLogits(r, o.getIds());
          }
          planDispatch(ids, o.getNumExperts(), o.getCounts(), o.getOffsets(),
                       o.getRows());
          return Error::success();
        })
        .Case([&](FusedRouteOp o) -> Error {
          std::vector<HostTensor> bodyArgs = {get(o.getInput())};
          if (o.getGivenIds()) {
            bodyArgs.push_back(get(o.getGivenIds()));
            bodyArgs.push_back(get(o.getGivenWeights()));
          }
          for (Value v : o.getExtraInputs())
            bodyArgs.push_back(get(v));
          Expected<std::vector<HostTensor>> routing =
              runBlock(o.getBody().front(), std::move(bodyArgs));
          if (!routing)
            return routing.takeError();
          if (trace) {
            routerOfRows[o.getRows()] = trace->routers.size();
            RoutingTrace::Router &r = trace->routers.emplace_back();
            r.ids = (*routing)[0];
            r.weights = (*routing)[1];
            r.hasIds = r.hasWeights = true;
            r.experts = o.getNumExperts();
            traceLogits(r, o.getBody().front().getTerminator()->getOperand(0));
          }
          planDispatch((*routing)[0], o.getNumExperts(), o.getCounts(),
                       o.getOffsets(), o.getRows());
          set(o.getIds(), std::move((*routing)[0]));
          set(o.getWeights(), std::move((*routing)[1]));
          return Error::success();
        })
        .Case([&](FusedExpertsOp o) -> Error {
          std::vector<HostTensor> args;
          for (Value v : o->getOperands())
            args.push_back(get(v));
          // The body's moe.permute reads the rows as a block argument.
          for (auto [v, arg] :
               llvm::zip(o->getOperands(), o.getBody().front().getArguments()))
            if (auto it = routerOfRows.find(v); it != routerOfRows.end())
              routerOfRows[arg] = it->second;
          Expected<std::vector<HostTensor>> out =
              runBlock(o.getBody().front(), std::move(args));
          if (!out)
            return out.takeError();
          set(o.getResult(), std::move(out->front()));
          return Error::success();
        })
        .Case([&](PermuteOp o) -> Error {
          const HostTensor &x = get(o.getInput());
          const HostTensor &rows = get(o.getRows());
          const HostTensor &w = get(o.getWeights());
          int64_t H = x.shape[1], K = w.shape[1];
          int64_t R = rows.shape[0];
          HostTensor r = HostTensor::floats({R, H});
          for (int64_t i = 0; i < R; ++i) {
            int64_t slot = rows.i[i], t = slot / K;
            if (slot < 0 || t >= x.shape[0])
              return opError(o, "row " + llvm::Twine(i) + " names slot " +
                                    llvm::Twine(slot) + ", outside the " +
                                    llvm::Twine(x.shape[0]) + " tokens");
            double scale = o.getScaleByWeight() ? w.f[slot] : 1.0;
            for (int64_t h = 0; h < H; ++h)
              r.f[i * H + h] = static_cast<float>(x.f[t * H + h] * scale);
          }
          traceWeights(o.getRows(), w);
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](CombineOp o) -> Error {
          const HostTensor &y = get(o.getInput());
          const HostTensor &rows = get(o.getRows());
          const HostTensor &w = get(o.getWeights());
          traceWeights(o.getRows(), w);
          int64_t H = y.shape[1], T = w.shape[0], K = w.shape[1];
          std::vector<double> acc(T * H, 0.0);
          for (int64_t i = 0; i < rows.shape[0]; ++i) {
            int64_t slot = rows.i[i], t = slot / K;
            if (slot < 0 || t >= T)
              return opError(o, "row " + llvm::Twine(i) + " names slot " +
                                    llvm::Twine(slot) + ", outside the " +
                                    llvm::Twine(T) + " tokens");
            double scale = o.getUnweighted() ? 1.0 : w.f[slot];
            for (int64_t h = 0; h < H; ++h)
              acc[t * H + h] += scale * y.f[i * H + h];
          }
          HostTensor r = HostTensor::floats({T, H});
          for (int64_t i = 0; i < T * H; ++i)
            r.f[i] = static_cast<float>(acc[i]);
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](ExpertFFNOp o) -> Error {
          FFNWeights w = ffnWeights(o);
          if (std::optional<ArrayRef<int64_t>> widths = o.getWidths())
            w.widths.assign(widths->begin(), widths->end());
          const HostTensor &x = get(o.getInput());
          const HostTensor &offsets = get(o.getOffsets());
          int64_t H = w.hidden, R = x.shape[0];
          int64_t E = offsets.shape[0] - 1;
          if (offsets.i[E] != R || offsets.i[0] != 0)
            return opError(o, "offsets span rows [" +
                                  llvm::Twine(offsets.i[0]) + ", " +
                                  llvm::Twine(offsets.i[E]) + ") but the "
                                  "input has " + llvm::Twine(R) + " rows");
          HostTensor r = HostTensor::floats({R, H});
          for (int64_t e = 0; e < E; ++e)
            for (int64_t i = offsets.i[e]; i < offsets.i[e + 1]; ++i)
              applyFFN(w, e, &x.f[i * H], &r.f[i * H]);
          if (trace && trace->statistics)
            traceExpertOutputs(o, w, r);
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](FFNOp o) -> Error {
          FFNWeights w = ffnWeights(o);
          const HostTensor &x = get(o.getInput());
          int64_t H = w.hidden, T = x.shape[0];
          HostTensor r = HostTensor::floats({T, H});
          for (int64_t t = 0; t < T; ++t)
            applyFFN(w, 0, &x.f[t * H], &r.f[t * H]);
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](LowRankOp o) -> Error {
          // The oracle of factored weights: the product itself.
          const HostTensor &a = get(o.getA());
          const HostTensor &b = get(o.getB());
          int64_t E = a.shape[0], out = a.shape[1], r = a.shape[2];
          int64_t in = b.shape[2];
          if (b.shape[0] != E || b.shape[1] != r)
            return opError(o, "factor shapes [" + llvm::Twine(E) + ", " +
                                  llvm::Twine(out) + ", " + llvm::Twine(r) +
                                  "] and [" + llvm::Twine(b.shape[0]) + ", " +
                                  llvm::Twine(b.shape[1]) + ", " +
                                  llvm::Twine(in) + "] do not chain");
          HostTensor w = HostTensor::floats({E, out, in});
          std::vector<float> row(in);
          for (int64_t e = 0; e < E; ++e)
            for (int64_t i = 0; i < out; ++i) {
              std::fill(row.begin(), row.end(), 0.0f);
              for (int64_t k = 0; k < r; ++k) {
                float aik = a.f[(e * out + i) * r + k];
                const float *bk = &b.f[(e * r + k) * in];
                for (int64_t j = 0; j < in; ++j)
                  row[j] += aik * bk[j];
              }
              std::copy(row.begin(), row.end(), &w.f[(e * out + i) * in]);
            }
          // Not rounded to the element type: the factors are what is
          // stored, and the kernels never round their product.
          values[o.getResult()] = std::move(w);
          return Error::success();
        })
        .Case([&](RowScaleOp o) -> Error {
          HostTensor r = get(o.getInput());
          const HostTensor &f = get(o.getFactor());
          Matrix m = matrix(r);
          for (int64_t t = 0; t < m.rows; ++t)
            for (int64_t h = 0; h < m.cols; ++h)
              r.f[t * m.cols + h] = static_cast<float>(
                  static_cast<double>(r.f[t * m.cols + h]) * f.f[t]);
          set(o.getResult(), std::move(r));
          return Error::success();
        })
        .Case([&](LoraMixtureOp o) -> Error { return lora(o); })
        .Default([&](Operation *other) -> Error {
          return opError(other, "the reference backend cannot execute this "
                                "op");
        });
  }

  /// moe.dispatch's plan of `ids` for `experts` experts.
  void planDispatch(const HostTensor &ids, int64_t experts, Value countsV,
                    Value offsetsV, Value rowsV) {
    int64_t E = experts;
    HostTensor counts = HostTensor::ints({E});
    for (int32_t e : ids.i)
      if (e >= 0 && e < E)
        ++counts.i[e];
    HostTensor offsets = HostTensor::ints({E + 1});
    for (int64_t e = 0; e < E; ++e)
      offsets.i[e + 1] = offsets.i[e] + counts.i[e];
    HostTensor rows = HostTensor::ints({offsets.i[E]});
    std::vector<int32_t> cursor(offsets.i.begin(), offsets.i.end() - 1);
    // Slots in flat order are already sorted by token, then slot.
    for (size_t s = 0; s < ids.i.size(); ++s) {
      int32_t e = ids.i[s];
      if (e >= 0 && e < E)
        rows.i[cursor[e]++] = static_cast<int32_t>(s);
    }
    set(countsV, std::move(counts));
    set(offsetsV, std::move(offsets));
    set(rowsV, std::move(rows));
  }

  /// arith.maximumf / minimumf: NaN if either is NaN; -0 < +0.
  static float maximumF(float a, float b) {
    if (std::isnan(a) || std::isnan(b))
      return std::numeric_limits<float>::quiet_NaN();
    if (a != b)
      return a > b ? a : b;
    return std::signbit(a) ? b : a;
  }
  static float minimumF(float a, float b) {
    if (std::isnan(a) || std::isnan(b))
      return std::numeric_limits<float>::quiet_NaN();
    if (a != b)
      return a < b ? a : b;
    return std::signbit(a) ? a : b;
  }

  template <typename OpT>
  Error elementwise(OpT o) {
    const HostTensor &a = get(o.getLhs());
    const HostTensor &b = get(o.getRhs());
    if (a.shape != b.shape)
      return opError(o, "operand shapes differ at run time");
    HostTensor r = a;
    for (size_t i = 0; i < r.f.size(); ++i) {
      if constexpr (std::is_same_v<OpT, arith::AddFOp>)
        r.f[i] = a.f[i] + b.f[i];
      else if constexpr (std::is_same_v<OpT, arith::SubFOp>)
        r.f[i] = a.f[i] - b.f[i];
      else if constexpr (std::is_same_v<OpT, arith::MulFOp>)
        r.f[i] = a.f[i] * b.f[i];
      else if constexpr (std::is_same_v<OpT, arith::DivFOp>)
        r.f[i] = a.f[i] / b.f[i];
      else if constexpr (std::is_same_v<OpT, arith::MaximumFOp>)
        r.f[i] = maximumF(a.f[i], b.f[i]);
      else
        r.f[i] = minimumF(a.f[i], b.f[i]);
    }
    set(o.getResult(), std::move(r));
    return Error::success();
  }

  /// Shared body of the selection ops: `count(row, order, n)` says how many
  /// of the sorted candidates a row keeps.
  template <typename CountFn>
  Error select(Operation *op, Value idsV, Value valsV, const HostTensor &s,
               int64_t slots, CountFn count) {
    Matrix m = matrix(s);
    HostTensor ids = HostTensor::ints({m.rows, slots}, -1);
    HostTensor vals = HostTensor::floats({m.rows, slots});
    for (int64_t t = 0; t < m.rows; ++t) {
      const float *row = &s.f[t * m.cols];
      std::vector<int64_t> order = sortedDescending(row, m.cols);
      int64_t n = count(row, order, m.cols);
      for (int64_t j = 0; j < n; ++j) {
        ids.i[t * slots + j] = static_cast<int32_t>(order[j]);
        vals.f[t * slots + j] = row[order[j]];
      }
    }
    set(idsV, std::move(ids));
    set(valsV, std::move(vals));
    return Error::success();
  }

  /// `w * scale` block by block: the exact code values times their
  /// block's scale, one f32 rounding (as DeepSeek's weight_dequant; exact
  /// for E8M0 scales short of overflow). Kept alive in `dequantized`.
  const HostTensor *dequantize(Value weight, Value scale,
                               ArrayRef<int64_t> block) {
    const HostTensor &w = get(weight), &s = get(scale);
    size_t r = w.shape.size();
    int64_t rows = w.shape[r - 2], cols = w.shape[r - 1];
    int64_t sRows = s.shape[r - 2], sCols = s.shape[r - 1];
    int64_t lead = rows * cols == 0 ? 0 : w.numElements() / (rows * cols);
    HostTensor out = HostTensor::floats(w.shape);
    for (int64_t l = 0; l < lead; ++l)
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          out.f[(l * rows + i) * cols + j] =
              w.f[(l * rows + i) * cols + j] *
              s.f[(l * sRows + i / block[0]) * sCols + j / block[1]];
    dequantized.push_back(std::move(out));
    return &dequantized.back();
  }

  template <typename OpT>
  FFNWeights ffnWeights(OpT o) {
    FFNWeights w;
    auto opt = [&](Value v) { return v ? &get(v) : nullptr; };
    w.gate = opt(o.getGate());
    w.up = opt(o.getUp());
    w.gateUp = opt(o.getGateUp());
    w.down = &get(o.getDown());
    if (std::optional<ArrayRef<int64_t>> block = o.getQuantBlock()) {
      auto deq = [&](Value v, Value scale) {
        return v ? dequantize(v, scale, *block) : nullptr;
      };
      w.gate = deq(o.getGate(), o.getGateScale());
      w.up = deq(o.getUp(), o.getUpScale());
      w.gateUp = deq(o.getGateUp(), o.getGateUpScale());
      w.down = deq(o.getDown(), o.getDownScale());
    }
    w.gateBias = opt(o.getGateBias());
    w.upBias = opt(o.getUpBias());
    w.gateUpBias = opt(o.getGateUpBias());
    w.downBias = opt(o.getDownBias());
    w.inOut = o.getWeightLayout() == WeightLayout::in_out;
    w.interleaved = o.getGateUpLayout() == GateUpLayout::interleaved;
    w.act = o.getActivation();
    w.nonGated = o.getNonGated();
    w.alpha = o.getAlpha().convertToFloat();
    w.limit = o.getLimit().convertToFloat();
    w.hidden = cast<RankedTensorType>(o.getInput().getType()).getDimSize(1);
    auto down = cast<RankedTensorType>(o.getDown().getType());
    w.inter = w.inOut ? down.getDimSize(down.getRank() - 2)
                      : down.getDimSize(down.getRank() - 1);
    return w;
  }

  Error lora(LoraMixtureOp o) {
    const HostTensor &x = get(o.getInput());
    const HostTensor &base = get(o.getBase());
    const HostTensor &a = get(o.getLoraA());
    const HostTensor &b = get(o.getLoraB());
    const HostTensor *bias = o.getBaseBias() ? &get(o.getBaseBias()) : nullptr;
    int64_t T = x.shape[0], in = x.shape[1], out = base.shape[0];
    int64_t E = a.shape[0], r = a.shape[1];
    std::vector<float> scales;
    for (Attribute s : o.getScales())
      scales.push_back(cast<FloatAttr>(s).getValueAsDouble());
    const HostTensor *ids = o.getIds() ? &get(o.getIds()) : nullptr;
    const HostTensor *w = o.getWeights() ? &get(o.getWeights()) : nullptr;
    int64_t K = ids ? ids->shape[1] : E;
    HostTensor y = HostTensor::floats({T, out});
    std::vector<double> acc(out), z(r);
    for (int64_t t = 0; t < T; ++t) {
      const float *xt = &x.f[t * in];
      for (int64_t o2 = 0; o2 < out; ++o2) {
        double s = bias ? bias->f[o2] : 0.0;
        for (int64_t i = 0; i < in; ++i)
          s += static_cast<double>(xt[i]) * base.f[o2 * in + i];
        acc[o2] = s;
      }
      for (int64_t slot = 0; slot < K; ++slot) {
        int64_t e = ids ? ids->i[t * K + slot] : slot;
        if (e < 0)
          continue;
        if (e >= E)
          return opError(o, "routing names adapter " + llvm::Twine(e) +
                                " of " + llvm::Twine(E));
        double weight = (w ? w->f[t * K + slot] : 1.0) * scales[e];
        for (int64_t j = 0; j < r; ++j) {
          double s = 0.0;
          for (int64_t i = 0; i < in; ++i)
            s += static_cast<double>(xt[i]) * a.f[(e * r + j) * in + i];
          z[j] = s;
        }
        for (int64_t o2 = 0; o2 < out; ++o2) {
          double s = 0.0;
          for (int64_t j = 0; j < r; ++j)
            s += z[j] * b.f[(e * out + o2) * r + j];
          acc[o2] += weight * s;
        }
      }
      for (int64_t o2 = 0; o2 < out; ++o2)
        y.f[t * out + o2] = static_cast<float>(acc[o2]);
    }
    // A fused router reported its routing already.
    if (trace && !(ids && o.getIds().getDefiningOp<FusedRouteOp>())) {
      RoutingTrace::Router &router = trace->routers.emplace_back();
      if (ids) {
        router.ids = *ids;
        router.weights = *w;
      } else {
        // Without routing every adapter is applied with weight 1.
        router.ids = HostTensor::ints({T, E});
        router.weights = HostTensor::floats({T, E}, 1.0f);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t e = 0; e < E; ++e)
            router.ids.i[t * E + e] = static_cast<int32_t>(e);
      }
      router.hasIds = router.hasWeights = true;
    }
    set(o.getResult(), std::move(y));
    return Error::success();
  }

  /// The router_linear output that the scores behind `ids` are computed
  /// from (the first one found walking up the operands), if any.
  void traceLogits(RoutingTrace::Router &r, Value ids) {
    if (!trace->statistics)
      return;
    llvm::SmallVector<Value> work{ids};
    llvm::DenseSet<Operation *> seen;
    while (!work.empty()) {
      Operation *def = work.pop_back_val().getDefiningOp();
      if (!def || !seen.insert(def).second)
        continue;
      // The remap is the ids' own definition: found before the logits.
      if (isa<RemapExpertsOp>(def))
        r.merged = true;
      if (auto linear = dyn_cast<RouterLinearOp>(def)) {
        r.logits = get(linear.getResult());
        return;
      }
      for (Value v : def->getOperands())
        work.push_back(v);
    }
  }

  /// Statistics of an expert_ffn fed by a traced router's moe.permute: the
  /// norm of each slot's output row and, if asked, every expert's output on
  /// every token (summed over tokens).
  void traceExpertOutputs(ExpertFFNOp o, const FFNWeights &w,
                          const HostTensor &out) {
    auto permute = o.getInput().getDefiningOp<PermuteOp>();
    if (!permute)
      return;
    auto it = routerOfRows.find(permute.getRows());
    if (it == routerOfRows.end())
      return;
    RoutingTrace::Router &router = trace->routers[it->second];
    const HostTensor &rows = get(permute.getRows());
    const HostTensor &weightsT = get(permute.getWeights());
    int64_t H = w.hidden;
    router.slotOutputNorm.assign(weightsT.numElements(), 0.0);
    for (int64_t i = 0; i < rows.shape[0]; ++i) {
      double ss = 0.0;
      for (int64_t h = 0; h < H; ++h)
        ss += static_cast<double>(out.f[i * H + h]) * out.f[i * H + h];
      int64_t slot = rows.i[i];
      if (slot >= 0 &&
          slot < static_cast<int64_t>(router.slotOutputNorm.size()))
        router.slotOutputNorm[slot] = std::sqrt(ss);
    }
    if (!trace->denseExpertOutputs)
      return;
    const HostTensor &x = get(permute.getInput());
    int64_t E = get(o.getOffsets()).shape[0] - 1, T = x.shape[0];
    router.expertOutputSum.assign(E * H, 0.0);
    std::vector<float> y(H);
    for (int64_t e = 0; e < E; ++e)
      for (int64_t t = 0; t < T; ++t) {
        applyFFN(w, e, &x.f[t * H], y.data());
        for (int64_t h = 0; h < H; ++h)
          router.expertOutputSum[e * H + h] += y[h];
      }
  }

  /// Records `w` as the weights of the router whose dispatch made `rows`,
  /// unless an earlier permute or combine did.
  void traceWeights(Value rows, const HostTensor &w) {
    auto it = routerOfRows.find(rows);
    if (!trace || it == routerOfRows.end())
      return;
    RoutingTrace::Router &r = trace->routers[it->second];
    if (!r.hasWeights) {
      r.weights = w;
      r.hasWeights = true;
    }
  }

  WeightLoader &weights;
  RoutingTrace *trace;
  llvm::DenseMap<Value, HostTensor> values;
  /// Dequantized copies of block-scaled FFN weights (stable addresses).
  std::deque<HostTensor> dequantized;
  /// The router (index in trace->routers) of each moe.dispatch's rows.
  llvm::DenseMap<Value, size_t> routerOfRows;
};

} // namespace

Expected<HostTensor> interpret(func::FuncOp fn, const HostTensor &input,
                               WeightLoader &weights, RoutingTrace *trace) {
  Interpreter interpreter(weights, trace);
  Expected<std::vector<HostTensor>> out =
      interpreter.run(fn, LayerForm::Layer, {input});
  if (!out)
    return out.takeError();
  return std::move(out->front());
}

Expected<HostTensor> interpretGiven(func::FuncOp fn, const HostTensor &input,
                                    const HostTensor &ids,
                                    const HostTensor &givenWeights,
                                    WeightLoader &weights,
                                    RoutingTrace *trace) {
  Interpreter interpreter(weights, trace);
  Expected<std::vector<HostTensor>> out = interpreter.run(
      fn, LayerForm::GivenRouting, {input, ids, givenWeights});
  if (!out)
    return out.takeError();
  return std::move(out->front());
}

Expected<HostTensor> interpretWithInputs(func::FuncOp fn,
                                         const HostTensor &input,
                                         const std::vector<HostTensor> &extra,
                                         WeightLoader &weights,
                                         RoutingTrace *trace) {
  Interpreter interpreter(weights, trace);
  std::vector<HostTensor> args = {input};
  args.insert(args.end(), extra.begin(), extra.end());
  Expected<std::vector<HostTensor>> out =
      interpreter.run(fn, LayerForm::ExtraInputs, std::move(args));
  if (!out)
    return out.takeError();
  return std::move(out->front());
}

Expected<std::vector<HostTensor>>
interpretWithOutputs(func::FuncOp fn, const HostTensor &input,
                     const std::vector<HostTensor> &extra,
                     WeightLoader &weights, RoutingTrace *trace) {
  Interpreter interpreter(weights, trace);
  std::vector<HostTensor> args = {input};
  args.insert(args.end(), extra.begin(), extra.end());
  return interpreter.run(fn, LayerForm::ExtraInputs, std::move(args));
}

Expected<HostRouting> interpretRouter(func::FuncOp fn, const HostTensor &input,
                                      WeightLoader &weights) {
  Interpreter interpreter(weights, nullptr);
  Expected<std::vector<HostTensor>> out =
      interpreter.run(fn, LayerForm::Router, {input});
  if (!out)
    return out.takeError();
  return HostRouting{std::move((*out)[0]), std::move((*out)[1])};
}

} // namespace moe
