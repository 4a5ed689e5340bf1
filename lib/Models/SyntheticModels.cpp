//===- SyntheticModels.cpp - Deterministic synthetic HF MoE models --------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//
//
// Tensor names, shapes and config keys follow the transformers modeling and
// configuration files listed in docs/hf-layouts.md.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Models/SyntheticModels.h"

#include "moe/lib/Weights/AtomicFile.h"
#include "moe/lib/Weights/WeightStore.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

using namespace llvm;

namespace moe {

//===----------------------------------------------------------------------===//
// SplitMix64
//===----------------------------------------------------------------------===//

static uint64_t fnv1a(StringRef text) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

SplitMix64 SplitMix64::forKey(uint64_t seed, StringRef key) {
  SplitMix64 mixer(seed ^ (fnv1a(key) * 0x9e3779b97f4a7c15ull));
  // One step decorrelates nearby seeds before the stream is used.
  return SplitMix64(mixer.next());
}

uint64_t SplitMix64::next() {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double SplitMix64::uniform() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

double SplitMix64::normal() {
  if (hasSpare) {
    hasSpare = false;
    return spare;
  }
  // u1 in (0, 1] so that the logarithm is finite.
  double u1 = static_cast<double>((next() >> 11) + 1) * 0x1.0p-53;
  double u2 = uniform();
  double radius = std::sqrt(-2.0 * std::log(u1));
  // The double nearest to 2 pi, as 2.0 * M_PI gives.
  constexpr double twoPi = 6.283185307179586;
  double angle = twoPi * u2;
  spare = radius * std::sin(angle);
  hasSpare = true;
  return radius * std::cos(angle);
}

//===----------------------------------------------------------------------===//
// Architectures and options
//===----------------------------------------------------------------------===//

namespace {
enum class Arch {
  Mixtral,
  Qwen2Moe,
  Qwen3Moe,
  Olmoe,
  DeepseekV2,
  DeepseekV3,
  GptOss,
  Llama4Text,
};
} // namespace

static std::optional<Arch> parseArch(StringRef name) {
  return llvm::StringSwitch<std::optional<Arch>>(name)
      .Case("mixtral", Arch::Mixtral)
      .Case("qwen2_moe", Arch::Qwen2Moe)
      .Case("qwen3_moe", Arch::Qwen3Moe)
      .Case("olmoe", Arch::Olmoe)
      .Case("deepseek_v2", Arch::DeepseekV2)
      .Case("deepseek_v3", Arch::DeepseekV3)
      .Case("gpt_oss", Arch::GptOss)
      .Case("llama4_text", Arch::Llama4Text)
      .Default(std::nullopt);
}

const std::vector<std::string> &syntheticArchitectures() {
  static const std::vector<std::string> names = {
      "mixtral",     "qwen2_moe",   "qwen3_moe", "olmoe",
      "deepseek_v2", "deepseek_v3", "gpt_oss",   "llama4_text"};
  return names;
}

static std::string archList() {
  return llvm::join(syntheticArchitectures(), ", ");
}

static bool isAlwaysFused(Arch arch) {
  return arch == Arch::GptOss || arch == Arch::Llama4Text;
}

/// The architecture named `name`, or the error naming the supported ones.
static Expected<Arch> knownArch(StringRef name) {
  std::optional<Arch> arch = parseArch(name);
  if (!arch)
    return createStringError("unknown synthetic architecture '" + name +
                             "' (supported: " + archList() + ")");
  return *arch;
}

Expected<SyntheticOptions> defaultSyntheticOptions(StringRef archName) {
  Expected<Arch> arch = knownArch(archName);
  if (!arch)
    return arch.takeError();
  SyntheticOptions opts;
  opts.arch = archName.str();
  switch (*arch) {
  case Arch::Mixtral:
    break;
  case Arch::Qwen2Moe:
    // Layer 1 is dense through mlp_only_layers.
    opts.numLayers = 3;
    opts.mlpOnlyLayers = {1};
    opts.sharedExpertIntermediate = 256;
    opts.normTopkProb = false;
    break;
  case Arch::Qwen3Moe:
    opts.normTopkProb = true;
    break;
  case Arch::Olmoe:
    opts.normTopkProb = false;
    break;
  case Arch::DeepseekV2:
    opts.numLayers = 3;
    opts.firstKDenseReplace = 1;
    opts.nSharedExperts = 2;
    opts.topkMethod = "group_limited_greedy";
    opts.nGroup = 4;
    opts.topkGroup = 2;
    opts.routedScalingFactor = 2.0;
    opts.normTopkProb = false;
    break;
  case Arch::DeepseekV3:
    opts.numLayers = 3;
    opts.firstKDenseReplace = 1;
    opts.nSharedExperts = 1;
    opts.topkMethod = "noaux_tc";
    opts.nGroup = 4;
    opts.topkGroup = 2;
    opts.routedScalingFactor = 2.5;
    opts.normTopkProb = true;
    break;
  case Arch::GptOss:
    opts.fusedExperts = true;
    break;
  case Arch::Llama4Text:
    // Layer 0 is dense, layer 1 is MoE, as in interleaved Llama 4 models.
    opts.fusedExperts = true;
    opts.topK = 1;
    opts.interleaveMoeLayerStep = 2;
    break;
  }
  return opts;
}

static bool isMoeLayer(const SyntheticOptions &opts, Arch arch, int64_t layer) {
  switch (arch) {
  case Arch::Mixtral:
  case Arch::Olmoe:
  case Arch::GptOss:
    return true;
  case Arch::Qwen2Moe:
  case Arch::Qwen3Moe:
    return !llvm::is_contained(opts.mlpOnlyLayers, layer) &&
           (layer + 1) % opts.decoderSparseStep == 0;
  case Arch::DeepseekV2:
  case Arch::DeepseekV3:
    return layer >= opts.firstKDenseReplace && layer % opts.moeLayerFreq == 0;
  case Arch::Llama4Text:
    return (layer + 1) % opts.interleaveMoeLayerStep == 0;
  }
  llvm_unreachable("unknown Arch");
}

Error validateSyntheticOptions(const SyntheticOptions &opts) {
  Expected<Arch> arch = knownArch(opts.arch);
  if (!arch)
    return arch.takeError();
  auto fail = [&](const Twine &message) {
    return createStringError("synthetic " + opts.arch + " model: " + message);
  };
  auto positive = [&](int64_t value, StringRef what) -> Error {
    if (value < 1)
      return fail(what + " must be at least 1, got " + Twine(value));
    return Error::success();
  };
  for (auto [value, what] :
       {std::pair<int64_t, StringRef>{opts.numLayers, "numLayers"},
        {opts.hidden, "hidden"},
        {opts.intermediate, "intermediate"},
        {opts.denseIntermediate, "denseIntermediate"},
        {opts.numExperts, "numExperts"},
        {opts.topK, "topK"},
        {opts.numShards, "numShards"}})
    if (Error error = positive(value, what))
      return error;
  if (opts.topK > opts.numExperts)
    return fail("topK (" + Twine(opts.topK) + ") exceeds numExperts (" +
                Twine(opts.numExperts) + ")");
  if (!isConvertibleFloat(opts.dtype))
    return fail("dtype must be F32, BF16 or F16, got " + dtypeName(opts.dtype));
  if (opts.quant == "fp8") {
    if (*arch != Arch::DeepseekV3 || opts.fusedExperts)
      return fail("quant 'fp8' writes DeepSeek-V3's per-expert F8_E4M3 "
                  "checkpoints: deepseek_v3 without fused experts only");
    if (Error error = positive(opts.quantBlock, "quantBlock"))
      return error;
  } else if (opts.quant == "mxfp4") {
    if (*arch != Arch::GptOss)
      return fail("quant 'mxfp4' writes gpt-oss's _blocks/_scales experts: "
                  "gpt_oss only");
    if (opts.hidden % 32 != 0 || opts.intermediate % 32 != 0)
      return fail("quant 'mxfp4' needs hidden (" + Twine(opts.hidden) +
                  ") and intermediate (" + Twine(opts.intermediate) +
                  ") to be multiples of 32 (one E8M0 scale per 32 values)");
  } else if (!opts.quant.empty()) {
    return fail("quant is '" + opts.quant + "'; expected fp8 or mxfp4");
  }

  switch (*arch) {
  case Arch::Qwen2Moe:
    if (Error error =
            positive(opts.sharedExpertIntermediate, "sharedExpertIntermediate"))
      return error;
    [[fallthrough]];
  case Arch::Qwen3Moe:
    if (Error error = positive(opts.decoderSparseStep, "decoderSparseStep"))
      return error;
    for (int64_t layer : opts.mlpOnlyLayers)
      if (layer < 0 || layer >= opts.numLayers)
        return fail("mlpOnlyLayers entry " + Twine(layer) +
                    " is not a layer index in [0, " + Twine(opts.numLayers) +
                    ")");
    break;
  case Arch::DeepseekV2:
  case Arch::DeepseekV3: {
    if (Error error = positive(opts.moeLayerFreq, "moeLayerFreq"))
      return error;
    if (opts.firstKDenseReplace < 0)
      return fail("firstKDenseReplace must not be negative");
    if (opts.nSharedExperts < 0)
      return fail("nSharedExperts must not be negative");
    bool grouped =
        *arch == Arch::DeepseekV3 || opts.topkMethod == "group_limited_greedy";
    if (*arch == Arch::DeepseekV2 && opts.topkMethod != "greedy" &&
        opts.topkMethod != "group_limited_greedy")
      return fail("topkMethod must be greedy or group_limited_greedy, got '" +
                  opts.topkMethod + "'");
    if (grouped) {
      if (Error error = positive(opts.nGroup, "nGroup"))
        return error;
      if (opts.numExperts % opts.nGroup != 0)
        return fail("numExperts (" + Twine(opts.numExperts) +
                    ") is not a multiple of nGroup (" + Twine(opts.nGroup) +
                    ")");
      if (opts.topkGroup < 1 || opts.topkGroup > opts.nGroup)
        return fail("topkGroup must be in [1, nGroup], got " +
                    Twine(opts.topkGroup));
      int64_t groupSize = opts.numExperts / opts.nGroup;
      if (opts.topK > opts.topkGroup * groupSize)
        return fail("topK (" + Twine(opts.topK) +
                    ") exceeds the experts of the kept groups (" +
                    Twine(opts.topkGroup * groupSize) + ")");
      // The group score of DeepSeek-V3 is the sum of the two best experts.
      if (*arch == Arch::DeepseekV3 && groupSize < 2)
        return fail("each group needs at least 2 experts (numExperts / "
                    "nGroup = " +
                    Twine(groupSize) + ")");
    }
    break;
  }
  case Arch::Llama4Text:
    if (Error error =
            positive(opts.interleaveMoeLayerStep, "interleaveMoeLayerStep"))
      return error;
    break;
  default:
    break;
  }
  if (syntheticMoeLayers(opts).empty())
    return fail("no layer has an MoE block with these options");
  return Error::success();
}

Error setLeadingDenseLayers(SyntheticOptions &opts, int64_t count) {
  Expected<Arch> arch = knownArch(opts.arch);
  if (!arch)
    return arch.takeError();
  auto fail = [&](const Twine &message) {
    return createStringError("synthetic " + opts.arch + " model: " + message);
  };
  if (count < 0)
    return fail("the number of leading dense layers must not be negative, "
                "got " +
                Twine(count));
  if (count >= opts.numLayers)
    return fail(Twine(count) + " leading dense layers leave no MoE layer of " +
                Twine(opts.numLayers) + " layers (set more layers)");
  switch (*arch) {
  case Arch::DeepseekV2:
  case Arch::DeepseekV3:
    opts.firstKDenseReplace = count;
    return Error::success();
  case Arch::Qwen2Moe:
  case Arch::Qwen3Moe:
    opts.mlpOnlyLayers.clear();
    for (int64_t layer = 0; layer < count; ++layer)
      opts.mlpOnlyLayers.push_back(layer);
    return Error::success();
  default:
    return fail("its config has no field for leading dense layers "
                "(first_k_dense_replace: deepseek_v2, deepseek_v3; "
                "mlp_only_layers: qwen2_moe, qwen3_moe)");
  }
}

std::vector<int64_t> syntheticMoeLayers(const SyntheticOptions &opts) {
  std::vector<int64_t> layers;
  std::optional<Arch> arch = parseArch(opts.arch);
  if (!arch || opts.decoderSparseStep < 1 || opts.moeLayerFreq < 1 ||
      opts.interleaveMoeLayerStep < 1)
    return layers;
  for (int64_t layer = 0; layer < opts.numLayers; ++layer)
    if (isMoeLayer(opts, *arch, layer))
      layers.push_back(layer);
  return layers;
}

std::string shardFileName(int64_t index, int64_t count) {
  return formatv("model-{0:d5}-of-{1:d5}.safetensors", index + 1, count).str();
}

//===----------------------------------------------------------------------===//
// Tensors
//===----------------------------------------------------------------------===//

namespace {
struct GeneratedTensor {
  SyntheticTensor meta;
  /// The layer it belongs to (progress lines).
  int64_t layer = 0;
  /// Computes its bytes while the file is written; unset without data.
  SafetensorsWriter::Producer produce;
};

//===----------------------------------------------------------------------===//
// Quantization (round to nearest, ties to even code; saturating)
//===----------------------------------------------------------------------===//

/// The code among the non-negative `table` values (ascending, code = index)
/// nearest to |v|, ties to the even code, saturating at the last.
static uint8_t nearestCode(const std::vector<float> &table, float v) {
  float a = std::fabs(v);
  auto it = std::lower_bound(table.begin(), table.end(), a);
  if (it == table.end())
    return static_cast<uint8_t>(table.size() - 1);
  size_t hi = it - table.begin();
  if (hi == 0)
    return 0;
  size_t lo = hi - 1;
  float dLo = a - table[lo], dHi = table[hi] - a;
  if (dLo < dHi)
    return static_cast<uint8_t>(lo);
  if (dHi < dLo)
    return static_cast<uint8_t>(hi);
  return static_cast<uint8_t>(lo % 2 == 0 ? lo : hi);
}

static const std::vector<float> &e4m3Table() {
  // Codes 0..126: 0 to 448 ascending (127 is NaN).
  static const std::vector<float> table = [] {
    std::vector<float> t;
    for (int c = 0; c < 127; ++c) {
      int e = (c >> 3) & 15, m = c & 7;
      t.push_back(e == 0 ? std::ldexp(float(m), -9)
                         : std::ldexp(float(8 + m), e - 10));
    }
    return t;
  }();
  return table;
}

static const std::vector<float> &e2m1Table() {
  static const std::vector<float> table = {0.0f, 0.5f, 1.0f, 1.5f,
                                           2.0f, 3.0f, 4.0f, 6.0f};
  return table;
}

static uint8_t withSign(uint8_t code, float v, int signBit) {
  return std::signbit(v) && code != 0 ? code | (1 << signBit) : code;
}

/// DeepSeek-V3 FP8: per block, scale = amax / 448 (1 for an all-zero
/// block), codes = e4m3(w / scale). `w` is [rows, cols].
static void quantizeFP8(const std::vector<float> &w, int64_t rows,
                        int64_t cols, int64_t block,
                        std::vector<uint8_t> &codes,
                        std::vector<float> &scales) {
  int64_t br = (rows + block - 1) / block, bc = (cols + block - 1) / block;
  codes.assign(rows * cols, 0);
  scales.assign(br * bc, 1.0f);
  for (int64_t bi = 0; bi < br; ++bi)
    for (int64_t bj = 0; bj < bc; ++bj) {
      int64_t r1 = std::min(rows, (bi + 1) * block);
      int64_t c1 = std::min(cols, (bj + 1) * block);
      float amax = 0.0f;
      for (int64_t r = bi * block; r < r1; ++r)
        for (int64_t c = bj * block; c < c1; ++c)
          amax = std::max(amax, std::fabs(w[r * cols + c]));
      float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
      scales[bi * bc + bj] = scale;
      for (int64_t r = bi * block; r < r1; ++r)
        for (int64_t c = bj * block; c < c1; ++c) {
          float q = w[r * cols + c] / scale;
          codes[r * cols + c] = withSign(nearestCode(e4m3Table(), q), q, 7);
        }
    }
}

/// MXFP4 (OCP MX): per 32 values of a row, scale 2^(floor(log2 amax) - 2)
/// as an E8M0 code, values e2m1(w / scale) packed low nibble first. `w`
/// is [rows, cols] with cols % 32 == 0; codes hold rows * cols / 2 bytes.
static void quantizeMXFP4(const std::vector<float> &w, int64_t rows,
                          int64_t cols, std::vector<uint8_t> &codes,
                          std::vector<uint8_t> &scales) {
  codes.assign(rows * cols / 2, 0);
  scales.assign(rows * cols / 32, 127);
  for (int64_t g = 0; g < rows * cols / 32; ++g) {
    const float *v = &w[g * 32];
    float amax = 0.0f;
    for (int k = 0; k < 32; ++k)
      amax = std::max(amax, std::fabs(v[k]));
    int e = 127;
    if (amax > 0.0f)
      e = std::clamp(static_cast<int>(std::floor(std::log2(amax))) - 2 + 127,
                     0, 254);
    scales[g] = static_cast<uint8_t>(e);
    float scale = std::ldexp(1.0f, e - 127);
    for (int k = 0; k < 32; ++k) {
      float q = v[k] / scale;
      uint8_t code = withSign(nearestCode(e2m1Table(), q), q, 3);
      codes[g * 16 + k / 2] |= k % 2 == 0 ? code : code << 4;
    }
  }
}

/// Emits the tensors of every MoE layer. Values are drawn from streams keyed
/// by the logical role of each matrix, never by its file name, so that all
/// layouts of one seed hold the same numbers.
///
/// Nothing is generated here: each tensor gets a producer that computes its
/// bytes when the safetensors file is written, expert by expert for the
/// fused stacks, so that writing a model holds about one expert's matrices
/// in memory whatever the model's size. The producers outlive the builder
/// and share one copy of the options.
class TensorBuilder {
public:
  TensorBuilder(const SyntheticOptions &opts, Arch arch, bool withData)
      : opts(std::make_shared<const SyntheticOptions>(opts)), arch(arch),
        withData(withData) {}

  std::vector<GeneratedTensor> build() {
    for (int64_t layer : syntheticMoeLayers(*opts)) {
      currentLayer = layer;
      buildLayer(layer);
    }
    return std::move(tensors);
  }

private:
  using Options = std::shared_ptr<const SyntheticOptions>;
  /// The float values of a whole tensor, or of expert `e` of a stack.
  using Values = std::vector<float>;
  using Whole = std::function<Values(const SyntheticOptions &)>;
  using PerExpert = std::function<Values(const SyntheticOptions &, int64_t)>;

  static Values normal(const SyntheticOptions &o, const std::string &key,
                       int64_t count, double stddev) {
    SplitMix64 rng = SplitMix64::forKey(o.seed, key);
    Values values(count);
    for (float &value : values)
      value = static_cast<float>(stddev * rng.normal());
    return values;
  }

  static Error emitFloats(SafetensorsWriter::Sink sink,
                          ArrayRef<float> values, DType dtype) {
    Expected<std::vector<uint8_t>> bytes = encodeFloats(values, dtype);
    if (!bytes)
      return bytes.takeError();
    return sink(*bytes);
  }

  void addProduced(std::string name, std::vector<int64_t> shape, DType dtype,
                   SafetensorsWriter::Producer produce) {
    GeneratedTensor t{{std::move(name), std::move(shape), dtype},
                      currentLayer,
                      {}};
    if (withData)
      t.produce = std::move(produce);
    tensors.push_back(std::move(t));
  }

  void add(std::string name, std::vector<int64_t> shape, Whole values,
           std::optional<DType> dtype = std::nullopt) {
    DType type = dtype.value_or(opts->dtype);
    Options o = opts;
    addProduced(std::move(name), std::move(shape), type,
                [o, values, type](SafetensorsWriter::Sink sink) {
                  return emitFloats(sink, values(*o), type);
                });
  }

  /// A stack [E, ...] whose expert e holds `values(e)`.
  void addStack(std::string name, std::vector<int64_t> shape,
                PerExpert values) {
    DType type = opts->dtype;
    Options o = opts;
    addProduced(std::move(name), std::move(shape), type,
                [o, values, type](SafetensorsWriter::Sink sink) -> Error {
                  for (int64_t e = 0; e < o->numExperts; ++e)
                    if (Error error = emitFloats(sink, values(*o, e), type))
                      return error;
                  return Error::success();
                });
  }

  /// Two tensors computed together (quantized codes and their scales): the
  /// first producer to run computes both and keeps the other's bytes until
  /// its producer takes them; a producer that runs again recomputes.
  struct Pair {
    std::function<void(std::vector<uint8_t> &, std::vector<uint8_t> &)>
        compute;
    std::vector<uint8_t> bytes[2];
    bool ready[2] = {false, false};
  };
  static SafetensorsWriter::Producer pairPart(std::shared_ptr<Pair> pair,
                                              int part) {
    return [pair, part](SafetensorsWriter::Sink sink) -> Error {
      if (!pair->ready[part]) {
        pair->compute(pair->bytes[0], pair->bytes[1]);
        pair->ready[0] = pair->ready[1] = true;
      }
      std::vector<uint8_t> mine = std::move(pair->bytes[part]);
      pair->bytes[part] = {};
      pair->ready[part] = false;
      return sink(mine);
    };
  }

  /// A [rows, cols] nn.Linear weight, FP8 with `_scale_inv` when
  /// opts.quant is fp8.
  void addMatrix(std::string name, int64_t rows, int64_t cols, Whole w) {
    if (opts->quant != "fp8") {
      add(std::move(name), {rows, cols}, std::move(w));
      return;
    }
    int64_t b = opts->quantBlock;
    Options o = opts;
    auto pair = std::make_shared<Pair>();
    pair->compute = [o, w, rows, cols, b](std::vector<uint8_t> &codes,
                                          std::vector<uint8_t> &scaleBytes) {
      Values scales;
      quantizeFP8(w(*o), rows, cols, b, codes, scales);
      scaleBytes = cantFail(encodeFloats(scales, DType::F32));
    };
    addProduced(name, {rows, cols}, DType::F8E4M3, pairPart(pair, 0));
    addProduced(name + "_scale_inv", {(rows + b - 1) / b, (cols + b - 1) / b},
                DType::F32, pairPart(pair, 1));
  }

  /// gpt-oss MXFP4: `name_blocks` [E, rows, cols/32, 16] and `name_scales`
  /// [E, rows, cols/32] of the [E, rows, cols] (nn.Linear) stack whose
  /// expert e is `w(e)`. Scales cover 32 values of one row, so quantizing
  /// expert by expert gives the codes of the whole stack.
  void addMXFP4(const std::string &name, int64_t rows, int64_t cols,
                PerExpert w) {
    int64_t e = opts->numExperts;
    Options o = opts;
    auto pair = std::make_shared<Pair>();
    pair->compute = [o, w, rows, cols](std::vector<uint8_t> &codes,
                                       std::vector<uint8_t> &scales) {
      codes.clear();
      scales.clear();
      for (int64_t x = 0; x < o->numExperts; ++x) {
        std::vector<uint8_t> c, s;
        quantizeMXFP4(w(*o, x), rows, cols, c, s);
        llvm::append_range(scales, s);
      }
      // Only the scales are taken from here: the codes were streamed.
      codes = {};
    };
    // The codes go out expert by expert; the (small) scales are kept for
    // their own tensor.
    addProduced(name + "_blocks", {e, rows, cols / 32, 16}, DType::U8,
                [o, w, rows, cols, pair](SafetensorsWriter::Sink sink) -> Error {
                  std::vector<uint8_t> scales;
                  for (int64_t x = 0; x < o->numExperts; ++x) {
                    std::vector<uint8_t> c, s;
                    quantizeMXFP4(w(*o, x), rows, cols, c, s);
                    if (Error error = sink(c))
                      return error;
                    llvm::append_range(scales, s);
                  }
                  pair->bytes[1] = std::move(scales);
                  pair->ready[1] = true;
                  return Error::success();
                });
    addProduced(name + "_scales", {e, rows, cols / 32}, DType::U8,
                pairPart(pair, 1));
  }

  static std::string layerKey(int64_t layer) {
    return "layer" + std::to_string(layer);
  }
  static std::string expertKey(int64_t layer, int64_t expert) {
    return layerKey(layer) + ".expert" + std::to_string(expert);
  }

  // Logical matrices, in nn.Linear orientation [out, in].
  static Values gate(const SyntheticOptions &o, const std::string &key,
                     int64_t width) {
    return normal(o, key + ".gate", width * o.hidden,
                  1.0 / std::sqrt(double(o.hidden)));
  }
  static Values up(const SyntheticOptions &o, const std::string &key,
                   int64_t width) {
    return normal(o, key + ".up", width * o.hidden,
                  1.0 / std::sqrt(double(o.hidden)));
  }
  static Values down(const SyntheticOptions &o, const std::string &key,
                     int64_t width) {
    return normal(o, key + ".down", o.hidden * width,
                  1.0 / std::sqrt(double(width)));
  }

  void addRouter(const std::string &name, int64_t layer) {
    std::string key = layerKey(layer) + ".router";
    add(name, {opts->numExperts, opts->hidden},
        [key](const SyntheticOptions &o) {
          return normal(o, key, o.numExperts * o.hidden,
                        1.0 / std::sqrt(double(o.hidden)));
        });
  }

  /// gate_proj/up_proj/down_proj (or w1/w3/w2) of a SwiGLU MLP.
  void addMlp(const std::string &prefix, const std::string &key, int64_t width,
              StringRef gateName, StringRef upName, StringRef downName) {
    addMatrix(prefix + gateName.str() + ".weight", width, opts->hidden,
              [key, width](const SyntheticOptions &o) {
                return gate(o, key, width);
              });
    addMatrix(prefix + upName.str() + ".weight", width, opts->hidden,
              [key, width](const SyntheticOptions &o) {
                return up(o, key, width);
              });
    addMatrix(prefix + downName.str() + ".weight", opts->hidden, width,
              [key, width](const SyntheticOptions &o) {
                return down(o, key, width);
              });
  }

  void addPerExpert(const std::string &prefix, int64_t layer,
                    StringRef gateName, StringRef upName, StringRef downName) {
    for (int64_t e = 0; e < opts->numExperts; ++e)
      addMlp(prefix + std::to_string(e) + ".", expertKey(layer, e),
             opts->intermediate, gateName, upName, downName);
  }

  /// transformers v5 fused experts: gate_up_proj [E, 2I, H] with the gate
  /// rows first, down_proj [E, H, I]; x @ gate_up_proj[e]^T.
  void addFusedV5(const std::string &prefix, int64_t layer) {
    int64_t e = opts->numExperts, i = opts->intermediate, h = opts->hidden;
    addStack(prefix + "gate_up_proj", {e, 2 * i, h},
             [layer](const SyntheticOptions &o, int64_t expert) {
               std::string key = expertKey(layer, expert);
               Values values = gate(o, key, o.intermediate);
               llvm::append_range(values, up(o, key, o.intermediate));
               return values;
             });
    addStack(prefix + "down_proj", {e, h, i},
             [layer](const SyntheticOptions &o, int64_t expert) {
               return down(o, expertKey(layer, expert), o.intermediate);
             });
  }

  /// Expert `expert`'s [H, 2I] gate_up matrix of gpt-oss/Llama 4 (x @ W):
  /// gate and up columns interleaved (gpt-oss) or gate first (Llama 4).
  static Values fusedGateUp(const SyntheticOptions &o, int64_t layer,
                            int64_t expert, bool interleaved) {
    int64_t i = o.intermediate, h = o.hidden;
    std::string key = expertKey(layer, expert);
    Values g = gate(o, key, i), u = up(o, key, i), gu(h * 2 * i);
    for (int64_t row = 0; row < i; ++row) {
      int64_t gateColumn = interleaved ? 2 * row : row;
      int64_t upColumn = interleaved ? 2 * row + 1 : i + row;
      for (int64_t col = 0; col < h; ++col) {
        gu[col * 2 * i + gateColumn] = g[row * h + col];
        gu[col * 2 * i + upColumn] = u[row * h + col];
      }
    }
    return gu;
  }

  /// gpt-oss and Llama 4: gate_up_proj [E, H, 2I] and down_proj [E, I, H],
  /// used as x @ W. gpt-oss interleaves gate (even) and up (odd) columns;
  /// Llama 4 puts the gate in the first half. gpt-oss also has biases.
  void addFusedTransposed(const std::string &prefix, int64_t layer,
                          bool interleaved, bool biases) {
    int64_t e = opts->numExperts, i = opts->intermediate, h = opts->hidden;
    PerExpert gateUpBias = [layer](const SyntheticOptions &o, int64_t x) {
      std::string key = expertKey(layer, x);
      Values gb = normal(o, key + ".gate_bias", o.intermediate, 0.02);
      Values ub = normal(o, key + ".up_bias", o.intermediate, 0.02);
      Values both;
      for (int64_t row = 0; row < o.intermediate; ++row) {
        both.push_back(gb[row]);
        both.push_back(ub[row]);
      }
      return both;
    };
    PerExpert downBias = [layer](const SyntheticOptions &o, int64_t x) {
      return normal(o, expertKey(layer, x) + ".down_bias", o.hidden, 0.02);
    };
    if (opts->quant == "mxfp4") {
      // Stored [E, out, in] (nn.Linear): gate/up interleaved on the rows,
      // which are the gate and up matrices' own rows.
      addMXFP4(prefix + "gate_up_proj", 2 * i, h,
               [layer](const SyntheticOptions &o, int64_t x) {
                 std::string key = expertKey(layer, x);
                 int64_t i = o.intermediate, h = o.hidden;
                 Values g = gate(o, key, i), u = up(o, key, i), rows(2 * i * h);
                 for (int64_t row = 0; row < i; ++row)
                   for (int64_t col = 0; col < h; ++col) {
                     rows[2 * row * h + col] = g[row * h + col];
                     rows[(2 * row + 1) * h + col] = u[row * h + col];
                   }
                 return rows;
               });
      if (biases)
        addStack(prefix + "gate_up_proj_bias", {e, 2 * i}, gateUpBias);
      addMXFP4(prefix + "down_proj", h, i,
               [layer](const SyntheticOptions &o, int64_t x) {
                 return down(o, expertKey(layer, x), o.intermediate);
               });
      if (biases)
        addStack(prefix + "down_proj_bias", {e, h}, downBias);
      return;
    }
    addStack(prefix + "gate_up_proj", {e, h, 2 * i},
             [layer, interleaved](const SyntheticOptions &o, int64_t x) {
               return fusedGateUp(o, layer, x, interleaved);
             });
    if (biases)
      addStack(prefix + "gate_up_proj_bias", {e, 2 * i}, gateUpBias);
    addStack(prefix + "down_proj", {e, i, h},
             [layer](const SyntheticOptions &o, int64_t x) {
               int64_t i = o.intermediate, h = o.hidden;
               Values d = down(o, expertKey(layer, x), i), dn(i * h);
               for (int64_t row = 0; row < i; ++row)
                 for (int64_t col = 0; col < h; ++col)
                   dn[row * h + col] = d[col * i + row];
               return dn;
             });
    if (biases)
      addStack(prefix + "down_proj_bias", {e, h}, downBias);
  }

  void buildLayer(int64_t layer) {
    std::string prefix = "model.layers." + std::to_string(layer) + ".";
    std::string key = layerKey(layer);
    bool fused = opts->fusedExperts;
    switch (arch) {
    case Arch::Mixtral:
      if (fused) {
        // transformers v5 renames block_sparse_moe to mlp.
        addRouter(prefix + "mlp.gate.weight", layer);
        addFusedV5(prefix + "mlp.experts.", layer);
      } else {
        addRouter(prefix + "block_sparse_moe.gate.weight", layer);
        addPerExpert(prefix + "block_sparse_moe.experts.", layer, "w1", "w3",
                     "w2");
      }
      return;
    case Arch::Qwen2Moe:
    case Arch::Qwen3Moe:
    case Arch::Olmoe:
    case Arch::DeepseekV2:
    case Arch::DeepseekV3:
      addRouter(prefix + "mlp.gate.weight", layer);
      if (arch == Arch::DeepseekV3) {
        // Selection-only bias. Every fourth expert gets a large negative
        // bias so that kept choice scores can be negative (the case where
        // masking dropped groups with 0 and with -inf differ).
        add(prefix + "mlp.gate.e_score_correction_bias", {opts->numExperts},
            [key](const SyntheticOptions &o) {
              Values bias = normal(o, key + ".score_bias", o.numExperts, 0.1);
              for (int64_t e = 0; e < static_cast<int64_t>(bias.size()); ++e)
                if (e % 4 == 1)
                  bias[e] -= 0.75f;
              return bias;
            },
            DType::F32);
      }
      if (fused)
        addFusedV5(prefix + "mlp.experts.", layer);
      else
        addPerExpert(prefix + "mlp.experts.", layer, "gate_proj", "up_proj",
                     "down_proj");
      if (arch == Arch::Qwen2Moe) {
        addMlp(prefix + "mlp.shared_expert.", key + ".shared",
               opts->sharedExpertIntermediate, "gate_proj", "up_proj",
               "down_proj");
        add(prefix + "mlp.shared_expert_gate.weight", {1, opts->hidden},
            [key](const SyntheticOptions &o) {
              return normal(o, key + ".shared_gate", o.hidden,
                            1.0 / std::sqrt(double(o.hidden)));
            });
      }
      if ((arch == Arch::DeepseekV2 || arch == Arch::DeepseekV3) &&
          opts->nSharedExperts > 0)
        addMlp(prefix + "mlp.shared_experts.", key + ".shared",
               opts->intermediate * opts->nSharedExperts, "gate_proj",
               "up_proj", "down_proj");
      return;
    case Arch::GptOss:
      addRouter(prefix + "mlp.router.weight", layer);
      add(prefix + "mlp.router.bias", {opts->numExperts},
          [key](const SyntheticOptions &o) {
            return normal(o, key + ".router_bias", o.numExperts, 0.1);
          });
      addFusedTransposed(prefix + "mlp.experts.", layer, /*interleaved=*/true,
                         /*biases=*/true);
      return;
    case Arch::Llama4Text:
      addRouter(prefix + "feed_forward.router.weight", layer);
      addFusedTransposed(prefix + "feed_forward.experts.", layer,
                         /*interleaved=*/false, /*biases=*/false);
      addMlp(prefix + "feed_forward.shared_expert.", key + ".shared",
             opts->intermediate, "gate_proj", "up_proj", "down_proj");
      return;
    }
  }

  Options opts;
  Arch arch;
  bool withData;
  int64_t currentLayer = 0;
  std::vector<GeneratedTensor> tensors;
};
} // namespace

static Expected<std::vector<GeneratedTensor>>
buildTensors(const SyntheticOptions &opts, bool withData) {
  if (Error error = validateSyntheticOptions(opts))
    return std::move(error);
  SyntheticOptions effective = opts;
  Arch arch = *parseArch(opts.arch);
  if (isAlwaysFused(arch))
    effective.fusedExperts = true;
  return TensorBuilder(effective, arch, withData).build();
}

Expected<std::vector<SyntheticTensor>>
syntheticTensorPlan(const SyntheticOptions &opts) {
  Expected<std::vector<GeneratedTensor>> tensors =
      buildTensors(opts, /*withData=*/false);
  if (!tensors)
    return tensors.takeError();
  std::vector<SyntheticTensor> plan;
  for (GeneratedTensor &tensor : *tensors)
    plan.push_back(std::move(tensor.meta));
  return plan;
}

//===----------------------------------------------------------------------===//
// config.json
//===----------------------------------------------------------------------===//

static StringRef torchDtype(DType dtype) {
  switch (dtype) {
  case DType::BF16:
    return "bfloat16";
  case DType::F16:
    return "float16";
  default:
    return "float32";
  }
}

static json::Array toJsonArray(ArrayRef<int64_t> values) {
  json::Array array;
  for (int64_t value : values)
    array.push_back(value);
  return array;
}

Expected<std::string> syntheticConfigJson(const SyntheticOptions &opts) {
  if (Error error = validateSyntheticOptions(opts))
    return std::move(error);
  Arch arch = *parseArch(opts.arch);

  // Attention and embedding keys are not used by the MoE block but make the
  // config loadable by transformers.
  int64_t heads = opts.hidden % 16 == 0 ? opts.hidden / 16 : 1;
  json::Object config{
      {"model_type", opts.arch},
      {"hidden_size", opts.hidden},
      {"num_hidden_layers", opts.numLayers},
      {"num_experts_per_tok", opts.topK},
      {"hidden_act", "silu"},
      {"torch_dtype", torchDtype(opts.dtype)},
      {"num_attention_heads", heads},
      {"num_key_value_heads", heads},
      {"vocab_size", 256},
      {"max_position_embeddings", 4096},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"initializer_range", 0.02},
      {"tie_word_embeddings", false},
      {"use_cache", true},
  };
  auto set = [&](StringRef key, json::Value value) {
    config[key] = std::move(value);
  };

  switch (arch) {
  case Arch::Mixtral:
    set("architectures", json::Array{"MixtralForCausalLM"});
    set("intermediate_size", opts.intermediate);
    set("num_local_experts", opts.numExperts);
    set("router_jitter_noise", 0.0);
    set("router_aux_loss_coef", 0.02);
    set("output_router_logits", false);
    set("sliding_window", nullptr);
    break;
  case Arch::Qwen2Moe:
  case Arch::Qwen3Moe:
    set("architectures",
        json::Array{arch == Arch::Qwen2Moe ? "Qwen2MoeForCausalLM"
                                           : "Qwen3MoeForCausalLM"});
    set("intermediate_size", opts.denseIntermediate);
    set("moe_intermediate_size", opts.intermediate);
    set("num_experts", opts.numExperts);
    set("norm_topk_prob", opts.normTopkProb);
    set("decoder_sparse_step", opts.decoderSparseStep);
    set("mlp_only_layers", toJsonArray(opts.mlpOnlyLayers));
    set("router_aux_loss_coef", 0.001);
    set("output_router_logits", false);
    set("use_sliding_window", false);
    set("sliding_window", nullptr);
    set("max_window_layers", opts.numLayers);
    if (arch == Arch::Qwen2Moe)
      set("shared_expert_intermediate_size", opts.sharedExpertIntermediate);
    else {
      set("head_dim", opts.hidden / heads);
      set("attention_bias", false);
    }
    break;
  case Arch::Olmoe:
    set("architectures", json::Array{"OlmoeForCausalLM"});
    set("intermediate_size", opts.intermediate);
    set("num_experts", opts.numExperts);
    set("norm_topk_prob", opts.normTopkProb);
    set("router_aux_loss_coef", 0.01);
    set("output_router_logits", false);
    set("clip_qkv", nullptr);
    break;
  case Arch::DeepseekV2:
  case Arch::DeepseekV3: {
    bool v3 = arch == Arch::DeepseekV3;
    set("architectures",
        json::Array{v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"});
    set("intermediate_size", opts.denseIntermediate);
    set("moe_intermediate_size", opts.intermediate);
    set("n_routed_experts", opts.numExperts);
    set("n_shared_experts", opts.nSharedExperts);
    set("first_k_dense_replace", opts.firstKDenseReplace);
    set("moe_layer_freq", opts.moeLayerFreq);
    set("n_group", opts.nGroup);
    set("topk_group", opts.topkGroup);
    set("topk_method", v3 ? std::string("noaux_tc") : opts.topkMethod);
    set("scoring_func", v3 ? "sigmoid" : "softmax");
    set("routed_scaling_factor", opts.routedScalingFactor);
    set("norm_topk_prob", opts.normTopkProb);
    set("aux_loss_alpha", 0.001);
    set("seq_aux", true);
    // Multi-head latent attention sizes, small.
    set("kv_lora_rank", 16);
    set("q_lora_rank", 32);
    set("qk_nope_head_dim", 16);
    set("qk_rope_head_dim", 8);
    set("v_head_dim", 16);
    break;
  }
  case Arch::GptOss:
    set("architectures", json::Array{"GptOssForCausalLM"});
    set("intermediate_size", opts.intermediate);
    set("num_local_experts", opts.numExperts);
    // The released configs carry both names for k.
    set("experts_per_token", opts.topK);
    set("swiglu_limit", opts.swigluLimit);
    set("head_dim", opts.hidden / heads);
    set("sliding_window", 128);
    set("attention_bias", true);
    set("router_aux_loss_coef", 0.9);
    set("output_router_logits", false);
    {
      json::Array layerTypes;
      for (int64_t layer = 0; layer < opts.numLayers; ++layer)
        layerTypes.push_back(layer % 2 == 0 ? "sliding_attention"
                                            : "full_attention");
      set("layer_types", std::move(layerTypes));
    }
    break;
  case Arch::Llama4Text:
    set("architectures", json::Array{"Llama4ForCausalLM"});
    set("intermediate_size", opts.intermediate);
    set("intermediate_size_mlp", opts.denseIntermediate);
    set("num_local_experts", opts.numExperts);
    set("interleave_moe_layer_step", opts.interleaveMoeLayerStep);
    set("moe_layers", toJsonArray(syntheticMoeLayers(opts)));
    set("head_dim", opts.hidden / heads);
    set("use_qk_norm", true);
    set("attention_chunk_size", 8192);
    set("router_aux_loss_coef", 0.001);
    set("router_jitter_noise", 0.0);
    set("output_router_logits", false);
    break;
  }
  if (opts.quant == "fp8")
    set("quantization_config",
        json::Object{{"quant_method", "fp8"},
                     {"fmt", "e4m3"},
                     {"activation_scheme", "dynamic"},
                     {"weight_block_size",
                      json::Array{opts.quantBlock, opts.quantBlock}}});
  else if (opts.quant == "mxfp4")
    set("quantization_config",
        json::Object{{"quant_method", "mxfp4"},
                     {"modules_to_not_convert",
                      json::Array{"model.layers.*.self_attn",
                                  "model.layers.*.mlp.router",
                                  "model.embed_tokens", "lm_head"}}});
  return formatv("{0:2}", json::Value(std::move(config))).str() + "\n";
}

//===----------------------------------------------------------------------===//
// Writing
//===----------------------------------------------------------------------===//

/// Splits `sizes` into `count` non-empty contiguous runs of about equal
/// bytes; returns the first index of each run. Needs count <= sizes.size().
static std::vector<size_t> shardStarts(ArrayRef<uint64_t> sizes,
                                       int64_t count) {
  std::vector<uint64_t> prefix = {0};
  for (uint64_t size : sizes)
    prefix.push_back(prefix.back() + size);
  uint64_t total = prefix.back();
  size_t n = sizes.size();
  std::vector<size_t> starts = {0};
  for (int64_t shard = 1; shard < count; ++shard) {
    // The first tensor that starts at or after shard/count of the bytes,
    // leaving at least one tensor for this and every later shard.
    size_t lowest = starts.back() + 1;
    size_t highest = n - static_cast<size_t>(count - shard);
    size_t start = lowest;
    while (start < highest &&
           prefix[start] * count < total * static_cast<uint64_t>(shard))
      ++start;
    starts.push_back(start);
  }
  return starts;
}

static Error writeModelFiles(const SyntheticOptions &opts, StringRef dir,
                             std::vector<GeneratedTensor> &tensors) {
  Expected<std::string> config = syntheticConfigJson(opts);
  if (!config)
    return config.takeError();
  auto inDir = [&](StringRef file) {
    SmallString<256> path(dir);
    sys::path::append(path, file);
    return std::string(path);
  };
  if (Error error = writeFileAtomically(inDir("config.json"), *config))
    return error;

  if (static_cast<uint64_t>(opts.numShards) > tensors.size())
    return createStringError("synthetic " + opts.arch + " model: numShards (" +
                             Twine(opts.numShards) +
                             ") exceeds the number of tensors (" +
                             Twine(tensors.size()) + ")");

  std::vector<uint64_t> sizes;
  uint64_t totalSize = 0;
  for (const GeneratedTensor &tensor : tensors) {
    uint64_t elements = 1;
    for (int64_t dim : tensor.meta.shape)
      elements *= static_cast<uint64_t>(dim);
    sizes.push_back(elements * dtypeSize(tensor.meta.dtype));
    totalSize += sizes.back();
  }
  std::vector<size_t> starts = shardStarts(sizes, opts.numShards);
  starts.push_back(tensors.size());

  json::Object weightMap;
  // Each tensor is generated while its file is written (in name order,
  // which keeps a layer's tensors together): a line per layer begun.
  std::set<int64_t> layersSeen;
  size_t moeLayers = syntheticMoeLayers(opts).size();
  for (int64_t shard = 0; shard < opts.numShards; ++shard) {
    std::string file = opts.numShards == 1
                           ? std::string(kSafetensorsSingleName)
                           : shardFileName(shard, opts.numShards);
    if (opts.progress) {
      uint64_t bytes = 0;
      for (size_t i = starts[shard]; i < starts[shard + 1]; ++i)
        bytes += sizes[i];
      opts.progress(formatv("writing {0} ({1} of {2}, {3:f1} MiB)", file,
                            shard + 1, opts.numShards, bytes / 1048576.0)
                        .str());
    }
    SafetensorsWriter writer;
    writer.setMetadata("format", "pt");
    for (size_t i = starts[shard]; i < starts[shard + 1]; ++i) {
      GeneratedTensor &tensor = tensors[i];
      if (Error error =
              opts.shapesOnly
                  ? writer.addZeroTensor(tensor.meta.name, tensor.meta.dtype,
                                         tensor.meta.shape)
                  : writer.addStreamedTensor(
                        tensor.meta.name, tensor.meta.dtype, tensor.meta.shape,
                        [&, i](SafetensorsWriter::Sink sink) {
                          int64_t layer = tensors[i].layer;
                          if (opts.progress && layersSeen.insert(layer).second)
                            opts.progress(formatv("generating layer {0} ({1} "
                                                  "of {2})",
                                                  layer, layersSeen.size(),
                                                  moeLayers)
                                              .str());
                          return tensors[i].produce(sink);
                        }))
        return error;
      weightMap[tensor.meta.name] = file;
    }
    if (Error error = writer.write(inDir(file)))
      return error;
  }

  if (opts.numShards > 1) {
    json::Object index{
        {"metadata", json::Object{{"total_size", totalSize}}},
        {"weight_map", std::move(weightMap)},
    };
    std::string text = formatv("{0:2}", json::Value(std::move(index))).str();
    if (Error error =
            writeFileAtomically(inDir(kSafetensorsIndexName), text + "\n"))
      return error;
  }
  return Error::success();
}

static bool isEmptyDirectory(StringRef dir) {
  std::error_code ec;
  sys::fs::directory_iterator it(dir, ec);
  return !ec && it == sys::fs::directory_iterator();
}

Error writeSyntheticModel(const SyntheticOptions &opts, StringRef outDir) {
  if (outDir.empty())
    return createStringError("synthetic model: the output folder is empty");
  Expected<std::vector<GeneratedTensor>> tensors =
      buildTensors(opts, /*withData=*/!opts.shapesOnly);
  if (!tensors)
    return tensors.takeError();

  // Refuse early, before any work on disk.
  bool exists = sys::fs::exists(outDir);
  if (exists && !sys::fs::is_directory(outDir))
    return createStringError(outDir + ": exists and is not a directory");
  if (exists && !opts.overwrite && !isEmptyDirectory(outDir))
    return createStringError(outDir +
                             ": refusing to overwrite a non-empty folder "
                             "(moe-import --synthetic --force replaces it)");

  SmallString<256> absolute(outDir);
  if (std::error_code ec = sys::fs::make_absolute(absolute))
    return createStringError(outDir + ": " + ec.message());
  sys::path::remove_dots(absolute, /*remove_dot_dot=*/true);
  // "out/" names the folder "out", not an entry "." inside it.
  while (absolute.size() > 1 && sys::path::is_separator(absolute.back()))
    absolute.pop_back();
  StringRef parent = sys::path::parent_path(absolute);
  StringRef name = sys::path::filename(absolute);
  if (std::error_code ec = sys::fs::create_directories(parent))
    return createStringError(parent +
                             ": cannot create folder: " + ec.message());

  // Build next to the destination so that the final rename stays on one
  // file system.
  SmallString<256> temp;
  if (std::error_code ec =
          sys::fs::createUniqueDirectory(parent + "/." + name + ".tmp", temp))
    return createStringError(
        parent + ": cannot create a temporary folder: " + ec.message());
  auto cleanup = [&](Error error) {
    sys::fs::remove_directories(temp);
    return error;
  };
  if (Error error = writeModelFiles(opts, temp, *tensors))
    return cleanup(std::move(error));

  if (sys::fs::exists(absolute)) {
    // Move the old folder aside, put the new one in place, then delete the
    // old one; an empty folder is simply replaced.
    SmallString<256> old;
    if (isEmptyDirectory(absolute)) {
      if (std::error_code ec = sys::fs::remove(absolute))
        return cleanup(
            createStringError(outDir + ": cannot replace: " + ec.message()));
    } else {
      if (std::error_code ec = sys::fs::createUniqueDirectory(
              parent + "/." + name + ".old", old))
        return cleanup(createStringError(parent + ": " + ec.message()));
      if (std::error_code ec = sys::fs::rename(absolute, old)) {
        sys::fs::remove(old);
        return cleanup(
            createStringError(outDir + ": cannot replace: " + ec.message()));
      }
    }
    if (std::error_code ec = sys::fs::rename(temp, absolute)) {
      if (!old.empty())
        sys::fs::rename(old, absolute);
      return cleanup(createStringError(outDir +
                                       ": cannot move the new model into "
                                       "place: " +
                                       ec.message()));
    }
    if (!old.empty())
      sys::fs::remove_directories(old);
    return Error::success();
  }
  if (std::error_code ec = sys::fs::rename(temp, absolute))
    return cleanup(createStringError(
        outDir + ": cannot move the new model into place: " + ec.message()));
  return Error::success();
}

} // namespace moe
