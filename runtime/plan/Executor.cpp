//===- Executor.cpp - Runs a layer's launch plan --------------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Executor.h"
#include "moe/runtime/Float16.h"
#include "moe/runtime/TensorMap.h"
#include "moe/lib/Reference/QuantDecode.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace moe {

using runtime::Status;

namespace {
/// MOE_LOG_LAUNCHES=1 prints every launch and its grid to stderr.
bool logLaunches() {
  static const bool on = [] {
    const char *v = std::getenv("MOE_LOG_LAUNCHES");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}
} // namespace

KernelBackend::~KernelBackend() = default;

Status KernelBackend::encodeTensorMap(const TensorMapDesc &, void *) {
  return Status::error("the " + name() +
                       " backend cannot encode tensor maps");
}

namespace {
/// Writes `value` as one element of `type` at `out`.
void encodeOne(float value, ElementType type, uint8_t *out) {
  switch (type) {
  case ElementType::BF16: {
    uint16_t b = floatToBF16(value);
    std::memcpy(out, &b, 2);
    break;
  }
  case ElementType::F16: {
    uint16_t b = floatToF16(value);
    std::memcpy(out, &b, 2);
    break;
  }
  case ElementType::I32:
  case ElementType::U32: {
    int32_t v = static_cast<int32_t>(value);
    std::memcpy(out, &v, 4);
    break;
  }
  default:
    std::memcpy(out, &value, 4);
  }
}

/// The code of a quantized type whose exact value is `value` (bitwise for
/// NaN), or -1: codes are values of the format, never rounded to one.
int quantCode(float value, ElementType type) {
  int codes = type == ElementType::F4E2M1FN ? 16 : 256;
  for (int c = 0; c < codes; ++c) {
    float d = type == ElementType::F8E4M3FN   ? quant::decodeE4M3FN(c)
              : type == ElementType::F4E2M1FN ? quant::decodeE2M1(c)
                                              : quant::decodeE8M0(c);
    if (d == value || (std::isnan(d) && std::isnan(value)))
      // -0 and +0 compare equal: keep the sign bit.
      if (d != 0.0f || std::signbit(d) == std::signbit(value))
        return c;
  }
  return -1;
}
} // namespace

std::vector<uint8_t> encodeElements(const std::vector<float> &values,
                                    ElementType type) {
  if (isQuantizedType(type)) {
    // Exact code values (a quantized weight decoded by decodeElements);
    // a value the format has no code for becomes a NaN code.
    std::vector<uint8_t> out(
        static_cast<size_t>(storageBytes(type, values.size())), 0);
    for (size_t i = 0; i < values.size(); ++i) {
      int c = quantCode(values[i], type);
      if (type == ElementType::F4E2M1FN)
        out[i / 2] |= static_cast<uint8_t>((c < 0 ? 0 : c) << (i % 2 ? 4 : 0));
      else
        out[i] = static_cast<uint8_t>(c < 0 ? 0xFF : c);
    }
    return out;
  }
  size_t width = static_cast<size_t>(elementSize(type));
  std::vector<uint8_t> out(values.size() * width);
  for (size_t i = 0; i < values.size(); ++i)
    encodeOne(values[i], type, &out[i * width]);
  return out;
}

std::vector<float> decodeElements(const uint8_t *bytes, int64_t count,
                                  ElementType type) {
  std::vector<float> out(count);
  if (isQuantizedType(type)) {
    // The exact values of the codes (scales apply in the kernels).
    for (int64_t i = 0; i < count; ++i)
      out[i] = type == ElementType::F8E4M3FN ? quant::decodeE4M3FN(bytes[i])
               : type == ElementType::F4E2M1FN
                   ? quant::decodePackedE2M1(bytes, i)
                   : quant::decodeE8M0(bytes[i]);
    return out;
  }
  for (int64_t i = 0; i < count; ++i) {
    uint16_t h;
    switch (type) {
    case ElementType::BF16:
      std::memcpy(&h, bytes + i * 2, 2);
      out[i] = bf16ToFloat(h);
      break;
    case ElementType::F16:
      std::memcpy(&h, bytes + i * 2, 2);
      out[i] = f16ToFloat(h);
      break;
    default:
      std::memcpy(&out[i], bytes + i * 4, 4);
    }
  }
  return out;
}

std::vector<uint8_t> convertElements(const uint8_t *bytes, int64_t count,
                                     ElementType from, ElementType to) {
  std::vector<uint8_t> out(static_cast<size_t>(count) * elementSize(to));
  size_t inWidth = static_cast<size_t>(elementSize(from));
  size_t outWidth = static_cast<size_t>(elementSize(to));
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t *in = bytes + i * inWidth;
    float v;
    uint16_t h;
    int32_t s;
    uint32_t u;
    switch (from) {
    case ElementType::BF16:
      std::memcpy(&h, in, 2);
      v = bf16ToFloat(h);
      break;
    case ElementType::F16:
      std::memcpy(&h, in, 2);
      v = f16ToFloat(h);
      break;
    case ElementType::I32:
      std::memcpy(&s, in, 4);
      v = static_cast<float>(s);
      break;
    case ElementType::U32:
      std::memcpy(&u, in, 4);
      v = static_cast<float>(u);
      break;
    default:
      std::memcpy(&v, in, 4);
    }
    encodeOne(v, to, out.data() + i * outWidth);
  }
  return out;
}

WeightBytes WeightBytes::view(ElementType type, const uint8_t *data,
                              size_t size, size_t readable,
                              std::shared_ptr<const void> owner) {
  WeightBytes b;
  b.type = type;
  b.data = data;
  b.size = size;
  b.readable = std::max(readable, size);
  b.owner = std::move(owner);
  return b;
}

WeightBytes WeightBytes::fromVector(ElementType type,
                                    std::vector<uint8_t> bytes) {
  size_t size = bytes.size();
  bytes.resize(size + 16, 0);
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  return view(type, owned->data(), size, owned->size(), owned);
}

WeightBytesProvider bytesFromValues(WeightProvider values) {
  return [values = std::move(values)](
             const WeightRef &ref) -> runtime::Expected<WeightBytes> {
    if (!values)
      return Status::error("no weight provider");
    runtime::Expected<std::vector<float>> v = values(ref);
    if (!v)
      return v.takeError();
    return WeightBytes::fromVector(ref.type, encodeElements(*v, ref.type));
  };
}

LayerExecutor::LayerExecutor(const LayerPlan &plan, KernelBackend &backend)
    : plan(plan), backend(backend), weights(plan.weights.size(), nullptr),
      ownsWeight(plan.weights.size(), false), held(plan.weights.size()),
      values(plan.values.size(), nullptr), valueBytes(plan.values.size(), 0) {}

LayerExecutor::~LayerExecutor() {
  for (size_t w = 0; w < weights.size(); ++w)
    if (weights[w] && ownsWeight[w])
      backend.release(weights[w]);
  for (void *p : values)
    if (p)
      backend.release(p);
}

void LayerExecutor::bindWeight(size_t w, const void *data) {
  if (weights[w] && ownsWeight[w])
    backend.release(weights[w]);
  weights[w] = const_cast<void *>(data);
  ownsWeight[w] = false;
  held[w].reset();
}

Status LayerExecutor::loadWeights(const WeightBytesProvider &provider) {
  for (size_t i = 0; i < plan.weights.size(); ++i) {
    if (weights[i] && !ownsWeight[i])
      continue; // Bound by the caller, or the provider's bytes in place.
    const WeightRef &ref = plan.weights[i];
    WeightBytes data;
    if (!ref.inlineValues.empty()) {
      data = WeightBytes::fromVector(
          ref.type, encodeElements(ref.inlineValues, ref.type));
    } else {
      runtime::Expected<WeightBytes> loaded = provider(ref);
      if (!loaded)
        return loaded.takeError();
      data = std::move(loaded.value());
    }
    int64_t count = 1;
    for (int64_t d : ref.shape)
      count *= d;
    std::string label =
        ref.names.empty() ? std::string("<constant>") : ref.names.front();
    if (isQuantizedType(ref.type) || isQuantizedType(data.type)) {
      // Codes are never converted: they must come in the plan's format,
      // every byte of them (a truncated scale tensor is an error).
      if (data.type != ref.type)
        return Status::error("weight '" + label + "': got " +
                             elementTypeName(data.type) +
                             " values, the plan needs " +
                             elementTypeName(ref.type) + " codes");
      if (static_cast<int64_t>(data.size) != storageBytes(ref.type, count))
        return Status::error(
            "weight '" + label + "': got " + std::to_string(data.size) +
            " bytes of " + elementTypeName(ref.type) + " codes, the plan's " +
            std::to_string(count) + " values need " +
            std::to_string(storageBytes(ref.type, count)));
    }
    size_t width = static_cast<size_t>(elementSize(data.type));
    if (!isQuantizedType(data.type) &&
        (data.size % width != 0 ||
         static_cast<int64_t>(data.size / width) != count))
      return Status::error(
          "weight '" + label + "': got " + std::to_string(data.size / width) +
          " values, the plan needs " + std::to_string(count));
    if (data.type != ref.type)
      data = WeightBytes::fromVector(
          ref.type, convertElements(data.data, count, data.type, ref.type));
    if (weights[i] && ownsWeight[i])
      backend.release(weights[i]);
    weights[i] = nullptr;
    held[i].reset();
    // The kernels read 16 bytes at a time from 16-byte aligned rows.
    bool inPlace = backend.readsHostMemory() && data.owner &&
                   reinterpret_cast<uintptr_t>(data.data) % 16 == 0 &&
                   data.readable >= data.size + 16;
    if (inPlace) {
      weights[i] = const_cast<uint8_t *>(data.data);
      ownsWeight[i] = false;
      held[i] = std::move(data.owner);
      continue;
    }
    runtime::Expected<void *> ptr = backend.allocate(data.size + 16);
    if (!ptr)
      return ptr.takeError();
    weights[i] = ptr.value();
    ownsWeight[i] = true;
    if (Status s = backend.upload(weights[i], data.data, data.size))
      return s;
  }
  return Status::success();
}

Status LayerExecutor::ensureValues(int64_t tokens) {
  for (size_t i = 0; i < plan.values.size(); ++i) {
    const BufferShape &shape = plan.values[i];
    // At least one element, 16 bytes of slack for vector loads.
    size_t bytes = static_cast<size_t>(
        std::max<int64_t>(shape.elements(tokens), 1) * elementSize(shape.type)) +
                   16;
    if (values[i] && valueBytes[i] >= bytes)
      continue;
    if (values[i])
      backend.release(values[i]);
    runtime::Expected<void *> ptr = backend.allocate(bytes);
    if (!ptr)
      return ptr.takeError();
    values[i] = ptr.value();
    valueBytes[i] = bytes;
    if (Status s = backend.zero(values[i], bytes))
      return s;
  }
  return Status::success();
}

Status LayerExecutor::encodeTensorMaps(const Launch &launch) {
  if (launch.tensorMaps.empty())
    return Status::success();
  // The maps depend on the addresses only (shapes and boxes are the
  // plan's): encode and upload again only when one moved.
  const size_t index = static_cast<size_t>(&launch - plan.launches.data());
  std::vector<const void *> key;
  for (const TensorMapRequest &r : launch.tensorMaps)
    for (int slot : {r.table, r.slot})
      if (slot >= 0 && slot < static_cast<int>(launch.args.size()))
        key.push_back(launch.args[slot].kind == Binding::Value
                          ? values[launch.args[slot].value]
                      : launch.args[slot].kind == Binding::Weight
                          ? weights[launch.args[slot].weight]
                          : nullptr);
  if (encodedMaps.size() < plan.launches.size())
    encodedMaps.resize(plan.launches.size());
  if (encodedMaps[index] == key)
    return Status::success();
  struct alignas(64) MapBytes {
    unsigned char bytes[128];
  };
  // Every request of a launch writes the same table (checked below).
  const int table = launch.tensorMaps.front().table;
  int entries = 0;
  for (const TensorMapRequest &r : launch.tensorMaps)
    entries = std::max(entries, r.entry + 1);
  std::vector<MapBytes> maps(static_cast<size_t>(entries));
  std::memset(maps.data(), 0, maps.size() * sizeof(MapBytes));
  for (const TensorMapRequest &r : launch.tensorMaps) {
    if (r.table != table || r.table < 0 ||
        r.table >= static_cast<int>(launch.args.size()) ||
        launch.args[r.table].kind != Binding::Value || r.slot < 0 ||
        r.slot >= static_cast<int>(launch.args.size()) ||
        launch.args[r.slot].kind != Binding::Weight || r.entry < 0 ||
        (r.swizzleBytes != 0 && r.swizzleBytes != 32 &&
         r.swizzleBytes != 64 && r.swizzleBytes != 128))
      return Status::error("a tensor map request names slot " +
                           std::to_string(r.slot) + ", table slot " +
                           std::to_string(r.table) +
                           ", swizzle " + std::to_string(r.swizzleBytes) +
                           ": expected a weight, one value table and a "
                           "swizzle of 0, 32, 64 or 128 bytes");
    const WeightRef &ref = plan.weights[launch.args[r.slot].weight];
    TensorMapDesc d;
    d.name = ref.names.empty() ? std::string("<constant>") : ref.names[0];
    d.address = weights[launch.args[r.slot].weight];
    d.type = ref.type;
    d.cols = ref.shape.empty() ? 1 : static_cast<uint64_t>(ref.shape.back());
    d.rows = 1;
    for (size_t i = 0; i + 1 < ref.shape.size(); ++i)
      d.rows *= static_cast<uint64_t>(ref.shape[i]);
    d.rowStrideBytes = d.cols * static_cast<uint64_t>(elementSize(ref.type));
    d.boxRows = static_cast<uint32_t>(r.boxRows);
    d.boxCols = static_cast<uint32_t>(r.boxCols);
    d.swizzle = r.swizzleBytes == 128  ? TensorMapSwizzle::B128
                : r.swizzleBytes == 64 ? TensorMapSwizzle::B64
                : r.swizzleBytes == 32 ? TensorMapSwizzle::B32
                                       : TensorMapSwizzle::None;
    if (Status s = backend.encodeTensorMap(d, &maps[r.entry]))
      return s;
  }
  const int value = launch.args[table].value;
  if (valueBytes[value] < maps.size() * sizeof(MapBytes))
    return Status::error("the tensor map table holds " +
                         std::to_string(valueBytes[value]) + " bytes, " +
                         std::to_string(entries) + " maps need " +
                         std::to_string(maps.size() * sizeof(MapBytes)));
  if (Status s = backend.upload(values[value], maps.data(),
                               maps.size() * sizeof(MapBytes)))
    return s;
  encodedMaps[index] = std::move(key);
  return Status::success();
}

Status LayerExecutor::launchAll(int64_t tokens) {
  for (const Launch &launch : plan.launches) {
    for (int v : launch.zeroOnce)
      if (!zeroed)
        if (Status s = backend.zero(values[v], valueBytes[v]))
          return s;
    // Alternatives (the decode or the grouped expert kernels) are
    // chosen from the token count.
    if (!launchRuns(launch, tokens))
      continue;
    MoEKernelArgs args;
    std::memset(&args, 0, sizeof(args));
    if (launch.args.size() > MOE_MAX_KERNEL_BUFFERS)
      return Status::error(launch.kernel + ": too many kernel arguments");
    for (size_t i = 0; i < launch.args.size(); ++i) {
      const Binding &b = launch.args[i];
      if (b.kind == Binding::Value)
        args.buffers[i] = values[b.value];
      else if (b.kind == Binding::Weight)
        args.buffers[i] = weights[b.weight];
    }
    args.num_tokens = tokens;
    if (Status s = encodeTensorMaps(launch))
      return s.withContext(launch.kernel + " (" + launch.origin + ")");
    unsigned grid = static_cast<unsigned>(gridBlocks(launch, tokens));
    if (logLaunches())
      std::fprintf(stderr, "moe: launch %s grid %u block %d (T = %lld)\n",
                   launch.kernel.c_str(), grid, launch.blockThreads,
                   static_cast<long long>(tokens));
    if (Status s = backend.launch(launch.kernel, args, grid,
                                  static_cast<unsigned>(launch.blockThreads),
                                  static_cast<unsigned>(
                                      launch.dynamicSharedBytes)))
      return s.withContext(launch.kernel + " (" + launch.origin + ")");
  }
  zeroed = true;
  return Status::success();
}

Status LayerExecutor::runOnDevice(const void *x, void *y, int64_t tokens,
                                  void *stream, const void *givenIds,
                                  const void *givenWeights) {
  return runOnDeviceImpl(x, y, tokens, stream, givenIds, givenWeights,
                         nullptr);
}

Status LayerExecutor::runOnDeviceWithInputs(
    const void *x, void *y, int64_t tokens, void *stream,
    const std::vector<InputArray> &inputs) {
  return runOnDeviceImpl(x, y, tokens, stream, nullptr, nullptr, &inputs);
}

Status LayerExecutor::runOnDeviceImpl(const void *x, void *y, int64_t tokens,
                                      void *stream, const void *givenIds,
                                      const void *givenWeights,
                                      const std::vector<InputArray> *inputs) {
  if (tokens < 1)
    return Status::error("the input has no tokens");
  if (plan.output < 0)
    return Status::error("layer " + std::to_string(plan.layer) + " (" +
                         plan.function + ") is a router-only plan; it has no "
                                         "output to write");
  if (Status s = checkGiven(givenIds, givenWeights))
    return s;
  if (Status s = checkInputs(inputs, tokens, true))
    return s;
  if (Status s = ensureValues(tokens))
    return s;
  // The caller's buffers stand in for the layer's input, output, given
  // routing and extra inputs.
  std::vector<std::pair<int, void *>> swapped = {{plan.input, const_cast<void *>(x)},
                                                 {plan.output, y}};
  if (plan.givenIds >= 0) {
    swapped.push_back({plan.givenIds, const_cast<void *>(givenIds)});
    swapped.push_back({plan.givenWeights, const_cast<void *>(givenWeights)});
  }
  for (size_t i = 0; i < plan.inputs.size(); ++i)
    swapped.push_back(
        {plan.inputs[i].value, const_cast<void *>((*inputs)[i].data)});
  for (auto &[v, p] : swapped)
    std::swap(values[v], p);
  backend.setStream(stream);
  Status s = launchAll(tokens);
  backend.setStream(nullptr);
  for (auto &[v, p] : swapped)
    std::swap(values[v], p);
  lastDeviceTokens = s ? 0 : tokens;
  return s;
}

Status LayerExecutor::checkGiven(bool haveIds, bool haveWeights) const {
  std::string layer = "layer " + std::to_string(plan.layer) + " (" +
                      plan.function + ")";
  if (plan.givenIds >= 0 && (!haveIds || !haveWeights))
    return Status::error(layer + " takes its routing from the caller: give "
                                 "the [T, K] expert ids and weights");
  if (plan.givenIds < 0 && (haveIds || haveWeights))
    return Status::error(layer + " routes its tokens itself; it takes no "
                                 "given routing");
  return Status::success();
}

std::string LayerExecutor::expectedShape(size_t i, int64_t tokens) const {
  const LayerInput &in = plan.inputs[i];
  std::string text = "[";
  for (size_t d = 0; d < in.dims.size(); ++d) {
    text += d ? ", " : "";
    if (in.dims[d] == LayerInput::kTokenDim)
      text += "T=" + std::to_string(tokens);
    else if (in.dims[d] == LayerInput::kAnyDim)
      text += "B";
    else
      text += std::to_string(in.dims[d]);
  }
  return text + "] " + elementTypeName(in.type);
}

Status LayerExecutor::checkInputs(const std::vector<InputArray> *inputs,
                                  int64_t tokens, bool onDevice) {
  std::string layer = "layer " + std::to_string(plan.layer) + " (" +
                      plan.function + ")";
  size_t given = inputs ? inputs->size() : 0;
  if (given != plan.inputs.size()) {
    std::string names;
    for (size_t i = 0; i < plan.inputs.size(); ++i)
      names += (i ? ", '" : "'") + plan.inputs[i].name + "' " +
               expectedShape(i, tokens);
    if (plan.inputs.empty())
      return Status::error(layer + " takes no extra inputs, " +
                           std::to_string(given) + " given");
    return Status::error(layer + " takes " +
                         std::to_string(plan.inputs.size()) +
                         " extra input(s) after x (" + names + "), " +
                         std::to_string(given) + " given");
  }
  for (size_t i = 0; i < plan.inputs.size(); ++i) {
    const LayerInput &in = plan.inputs[i];
    const InputArray &a = (*inputs)[i];
    bool ok = a.data && a.shape.size() == in.dims.size();
    for (size_t d = 0; ok && d < in.dims.size(); ++d)
      ok = in.dims[d] == LayerInput::kTokenDim ? a.shape[d] == tokens
           : in.dims[d] == LayerInput::kAnyDim ? a.shape[d] >= 1
                                                : a.shape[d] == in.dims[d];
    if (!ok) {
      std::string got = a.data ? "[" : "no data";
      for (size_t d = 0; a.data && d < a.shape.size(); ++d)
        got += (d ? ", " : "") + std::to_string(a.shape[d]);
      if (a.data)
        got += "]";
      return Status::error(layer + ": extra input #" + std::to_string(i + 1) +
                           " '" + in.name + "' is " + got + ", expected " +
                           expectedShape(i, tokens));
    }
  }
  // Sequence maps index rows of their scores: checked here, on the host,
  // so that no kernel reads outside the scores.
  for (size_t i = 0; i < plan.inputs.size(); ++i) {
    const LayerInput &in = plan.inputs[i];
    if (in.indexes < 0)
      continue;
    const InputArray &a = (*inputs)[i];
    int64_t n = 1;
    for (int64_t d : a.shape)
      n *= d;
    std::vector<int32_t> host(static_cast<size_t>(n));
    if (onDevice) {
      if (Status s = backend.download(host.data(), a.data, host.size() * 4))
        return s;
    } else {
      std::memcpy(host.data(), a.data, host.size() * 4);
    }
    int64_t rows = (*inputs)[in.indexes].shape[0];
    for (int64_t j = 0; j < n; ++j)
      if (host[j] < 0 || host[j] >= rows)
        return Status::error(
            layer + ": extra input '" + in.name + "' entry " +
            std::to_string(j) + " is " + std::to_string(host[j]) +
            ", outside [0, B) for B = " + std::to_string(rows) +
            " (the rows of '" + plan.inputs[in.indexes].name +
            "'); nothing was launched");
  }
  return Status::success();
}

Status LayerExecutor::ensureBytes(int v, size_t bytes) {
  bytes += 16;
  if (values[v] && valueBytes[v] >= bytes)
    return Status::success();
  if (values[v])
    backend.release(values[v]);
  values[v] = nullptr;
  runtime::Expected<void *> ptr = backend.allocate(bytes);
  if (!ptr)
    return ptr.takeError();
  values[v] = ptr.value();
  valueBytes[v] = bytes;
  return backend.zero(values[v], bytes);
}

runtime::Expected<LayerOutputs> LayerExecutor::run(const float *x,
                                                   int64_t tokens,
                                                   bool wantRouting,
                                                   const int32_t *givenIds,
                                                   const float *givenWeights) {
  return runImpl(x, tokens, wantRouting, givenIds, givenWeights, nullptr);
}

runtime::Expected<LayerOutputs>
LayerExecutor::runWithInputs(const float *x, int64_t tokens, bool wantRouting,
                             const std::vector<InputArray> &inputs) {
  return runImpl(x, tokens, wantRouting, nullptr, nullptr, &inputs);
}

runtime::Expected<LayerOutputs>
LayerExecutor::runImpl(const float *x, int64_t tokens, bool wantRouting,
                       const int32_t *givenIds, const float *givenWeights,
                       const std::vector<InputArray> *inputs) {
  lastDeviceTokens = 0;
  if (tokens < 1)
    return Status::error("the input has no tokens");
  if (Status s = checkGiven(givenIds, givenWeights))
    return s;
  if (Status s = checkInputs(inputs, tokens, false))
    return s;
  if (Status s = ensureValues(tokens))
    return s;
  for (size_t i = 0; i < plan.inputs.size(); ++i) {
    const InputArray &a = (*inputs)[i];
    size_t bytes = 4;
    for (int64_t d : a.shape)
      bytes *= static_cast<size_t>(d);
    if (Status s = ensureBytes(plan.inputs[i].value, bytes))
      return s;
    if (Status s = backend.upload(values[plan.inputs[i].value], a.data, bytes))
      return s;
  }
  const BufferShape &in = plan.values[plan.input];
  std::vector<float> input(x, x + tokens * plan.inputWidth);
  std::vector<uint8_t> inBytes = encodeElements(input, in.type);
  if (Status s = backend.upload(values[plan.input], inBytes.data(),
                                inBytes.size()))
    return s;
  if (plan.givenIds >= 0) {
    size_t n = static_cast<size_t>(plan.values[plan.givenIds].elements(tokens));
    if (Status s = backend.upload(values[plan.givenIds], givenIds, n * 4))
      return s;
    if (Status s = backend.upload(values[plan.givenWeights], givenWeights,
                                  n * 4))
      return s;
  }
  if (Status s = launchAll(tokens))
    return s;
  if (Status s = backend.synchronize())
    return s;

  LayerOutputs out;
  if (plan.output >= 0) {
    const BufferShape &yShape = plan.values[plan.output];
    int64_t yCount = yShape.elements(tokens);
    std::vector<uint8_t> yBytes(yCount * elementSize(yShape.type));
    if (Status s = backend.download(yBytes.data(), values[plan.output],
                                    yBytes.size()))
      return s;
    out.y = decodeElements(yBytes.data(), yCount, yShape.type);
  }
  wantRouting |= isRouterRole(plan.role);
  if (wantRouting)
    if (Status s = downloadRouting(tokens, out.routings))
      return s;
  if (Status s = downloadExtras(tokens, out.extras))
    return s;
  return out;
}

Status LayerExecutor::downloadExtras(int64_t tokens,
                                     std::vector<std::vector<float>> &out) {
  for (const LayerOutput &extra : plan.outputs) {
    std::vector<float> &o = out.emplace_back(
        static_cast<size_t>(plan.values[extra.value].elements(tokens)));
    if (Status s = backend.download(o.data(), values[extra.value],
                                    o.size() * 4))
      return s;
  }
  return Status::success();
}

runtime::Expected<std::vector<std::vector<float>>>
LayerExecutor::lastDeviceExtras(int64_t tokens) {
  if (tokens < 1 || tokens > lastDeviceTokens)
    return Status::error("layer " + std::to_string(plan.layer) +
                         ": no device run of " + std::to_string(tokens) +
                         " token(s) to take the extra results of");
  if (Status s = backend.synchronize())
    return s;
  std::vector<std::vector<float>> out;
  if (Status s = downloadExtras(tokens, out))
    return s;
  return out;
}

Status LayerExecutor::downloadRouting(int64_t tokens,
                                      std::vector<LayerOutputs::Routing> &out) {
  for (const LayerPlan::Routing &routing : plan.routings) {
    const BufferShape &ids = plan.values[routing.ids];
    int64_t n = ids.elements(tokens);
    LayerOutputs::Routing &o = out.emplace_back();
    o.slots = ids.perToken;
    o.ids.resize(n);
    o.weights.resize(n);
    if (Status s = backend.download(o.ids.data(), values[routing.ids], n * 4))
      return s;
    if (Status s =
            backend.download(o.weights.data(), values[routing.weights], n * 4))
      return s;
  }
  return Status::success();
}

runtime::Expected<std::vector<LayerOutputs::Routing>>
LayerExecutor::lastDeviceRouting(int64_t tokens) {
  if (tokens < 1 || tokens > lastDeviceTokens)
    return Status::error("layer " + std::to_string(plan.layer) +
                         ": no device run of " + std::to_string(tokens) +
                         " token(s) to take the routing of");
  // A given routing dispatched as it is (moe.dispatch of the given ids) is
  // its own routing: the device run reads the caller's arrays in place.
  for (const LayerPlan::Routing &routing : plan.routings)
    if (routing.ids == plan.givenIds)
      return Status::error("layer " + std::to_string(plan.layer) +
                           ": its routing is the caller's given routing, "
                           "read in place on the device: the caller holds "
                           "it");
  // The launches were queued on the caller's stream: wait for them.
  if (Status s = backend.synchronize())
    return s;
  std::vector<LayerOutputs::Routing> out;
  if (Status s = downloadRouting(tokens, out))
    return s;
  return out;
}

} // namespace moe
