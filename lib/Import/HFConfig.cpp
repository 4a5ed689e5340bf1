//===- HFConfig.cpp - MoE blocks of Hugging Face checkpoints --------------===//
//
// Part of moe-opt. Reads config.json and finds each MoE block's tensors.
// Routing rules, tensor names and config keys follow docs/hf-layouts.md
// (checked there against the transformers sources).
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Import/ModelSpec.h"
#include "moe/lib/Weights/InputFile.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>
#include <set>

using namespace moe;
using llvm::Error;
using llvm::Expected;
using llvm::StringRef;

static Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

const std::vector<std::string> &moe::supportedModelTypes() {
  static const std::vector<std::string> types = {
      "mixtral",     "qwen2_moe", "qwen3_moe", "olmoe",
      "deepseek_v2", "deepseek_v3", "gpt_oss",  "llama4_text"};
  return types;
}

namespace {

/// The largest integer accepted in a config field (16 Mi): real models stay
/// far below (hidden sizes of a few thousand, at most a few hundred
/// experts), and three such values multiply without overflowing 64 bits.
constexpr int64_t kMaxConfigInt = int64_t(1) << 24;
/// The most decoder layers a config may declare.
constexpr int64_t kMaxLayers = 4096;

/// Typed access to config.json fields with errors that name the file, the
/// field and what was expected.
class ConfigReader {
public:
  ConfigReader(const llvm::json::Object &object, std::string path,
               std::string arch)
      : object(object), path(std::move(path)), arch(std::move(arch)) {}

  bool has(StringRef key) const {
    const llvm::json::Value *v = object.get(key);
    return v && v->kind() != llvm::json::Value::Null;
  }

  Expected<int64_t> requiredInt(StringRef key) const {
    if (!has(key))
      return makeError(path + ": missing field '" + key +
                       "' (an integer, required for " + arch + ")");
    return optionalInt(key, 0);
  }

  /// Every integer field we read is a size, a count, a step or an index:
  /// never negative, and far below kMaxConfigInt, so that sums and products
  /// of a few of them cannot overflow 64 bits.
  Expected<int64_t> optionalInt(StringRef key, int64_t fallback) const {
    if (!has(key))
      return fallback;
    std::optional<int64_t> v = object.get(key)->getAsInteger();
    if (!v)
      return makeError(path + ": field '" + key +
                       "' must be an integer, got " + describe(key));
    if (*v < 0 || *v > kMaxConfigInt)
      return makeError(path + ": field '" + key + "' is " + llvm::Twine(*v) +
                       "; expected an integer in [0, " +
                       llvm::Twine(kMaxConfigInt) + "]");
    return *v;
  }

  /// A number, finite once converted to f32 (the type the IR uses it in).
  Expected<double> optionalNumber(StringRef key, double fallback) const {
    if (!has(key))
      return fallback;
    std::optional<double> v = object.get(key)->getAsNumber();
    if (!v)
      return makeError(path + ": field '" + key +
                       "' must be a number, got " + describe(key));
    if (!std::isfinite(static_cast<float>(*v)))
      return makeError(path + ": field '" + key + "' is " + describe(key) +
                       ", which is not a finite 32-bit float");
    return *v;
  }

  /// A number that must be > 0 (scales and limits).
  Expected<double> optionalPositiveNumber(StringRef key,
                                          double fallback) const {
    Expected<double> v = optionalNumber(key, fallback);
    if (v && !(*v > 0))
      return makeError(path + ": field '" + key + "' is " + describe(key) +
                       "; expected a number > 0");
    return v;
  }

  Expected<bool> optionalBool(StringRef key, bool fallback) const {
    if (!has(key))
      return fallback;
    std::optional<bool> v = object.get(key)->getAsBoolean();
    if (!v)
      return makeError(path + ": field '" + key +
                       "' must be true or false, got " + describe(key));
    return *v;
  }

  Expected<std::string> optionalString(StringRef key,
                                       StringRef fallback) const {
    if (!has(key))
      return fallback.str();
    std::optional<StringRef> v = object.get(key)->getAsString();
    if (!v)
      return makeError(path + ": field '" + key +
                       "' must be a string, got " + describe(key));
    return v->str();
  }

  Expected<std::vector<int64_t>> optionalIntList(StringRef key) const {
    std::vector<int64_t> result;
    if (!has(key))
      return result;
    const llvm::json::Array *array = object.get(key)->getAsArray();
    if (!array)
      return makeError(path + ": field '" + key +
                       "' must be a list of integers, got " + describe(key));
    for (const llvm::json::Value &v : *array) {
      std::optional<int64_t> i = v.getAsInteger();
      if (!i)
        return makeError(path + ": field '" + key +
                         "' must be a list of integers");
      result.push_back(*i);
    }
    return result;
  }

  /// A positive integer field (sizes and counts), at most `max`.
  Expected<int64_t> requiredPositive(StringRef key,
                                     int64_t max = kMaxConfigInt) const {
    if (!has(key))
      return requiredInt(key);
    std::optional<int64_t> raw = object.get(key)->getAsInteger();
    if (raw && *raw <= 0)
      return makeError(path + ": field '" + key + "' must be > 0, got " +
                       llvm::Twine(*raw));
    Expected<int64_t> v = requiredInt(key);
    if (v && *v > max)
      return makeError(path + ": field '" + key + "' is " + llvm::Twine(*v) +
                       "; expected at most " + llvm::Twine(max));
    return v;
  }

  const std::string &file() const { return path; }

private:
  std::string describe(StringRef key) const {
    std::string s;
    llvm::raw_string_ostream os(s);
    os << *object.get(key);
    return s;
  }

  const llvm::json::Object &object;
  std::string path;
  std::string arch;
};

/// Looks tensors up in the checkpoint and checks their shape and dtype.
class TensorResolver {
public:
  TensorResolver(WeightStore &store, std::string configPath)
      : store(store), configPath(std::move(configPath)) {}

  bool exists(StringRef name) {
    Expected<TensorLocation> loc = store.find(name);
    if (!loc) {
      llvm::consumeError(loc.takeError());
      return false;
    }
    return true;
  }

  /// One tensor with an expected shape; `why` says where the shape comes
  /// from (for example "hidden_size = 64").
  Expected<TensorRef> get(StringRef name, llvm::ArrayRef<int64_t> shape,
                          StringRef why) {
    return stack({name.str()}, shape, why, /*stacked=*/false);
  }

  /// Per-expert tensors stacked along a new leading dimension. With an
  /// FP8 quantization_config, F8_E4M3 matrices come with their
  /// `_scale_inv` companions (stacked the same way into `scale`).
  Expected<TensorRef> stack(const std::vector<std::string> &names,
                            llvm::ArrayRef<int64_t> shape, StringRef why,
                            bool stacked = true) {
    TensorRef ref;
    std::vector<std::string> scaleNames;
    for (const std::string &name : names) {
      Expected<TensorLocation> loc = store.find(name);
      if (!loc)
        return loc.takeError();
      const TensorInfo &info = loc->info;
      if (info.dtype == DType::F8E4M3) {
        if (fp8Block.empty())
          return makeError(loc->path + ": tensor '" + name +
                           "' has dtype F8_E4M3 but " + configPath +
                           " has no 'quantization_config' with "
                           "quant_method 'fp8'");
        if (shape.size() != 2)
          return makeError(loc->path + ": tensor '" + name +
                           "' is F8_E4M3 but not a matrix; block scales "
                           "cover 2-D weights");
        if (!exists(name + "_scale_inv"))
          return makeError(loc->path + ": tensor '" + name +
                           "' is F8_E4M3 but '" + name +
                           "_scale_inv' (its block scales) is missing");
        scaleNames.push_back(name + "_scale_inv");
      } else if (!isConvertibleFloat(info.dtype))
        return makeError(loc->path + ": tensor '" + name + "' has dtype " +
                         dtypeName(info.dtype) +
                         "; expected F32, BF16 or F16" +
                         (info.dtype == DType::U8
                              ? " (MXFP4 experts are read from "
                                "'_blocks'/'_scales' pairs of gpt-oss only)"
                              : ""));
      if (!llvm::equal(info.shape, shape))
        return makeError(loc->path + ": tensor '" + name + "' has shape " +
                         formatShape(info.shape) + " but " + configPath +
                         " implies " + formatShape(shape) + " (" + why + ")");
      if (!ref.names.empty() && info.dtype != ref.dtype)
        return makeError(loc->path + ": tensor '" + name + "' has dtype " +
                         dtypeName(info.dtype) + " but '" + ref.names[0] +
                         "' has " + dtypeName(ref.dtype) +
                         "; the tensors of one stack must agree");
      ref.dtype = info.dtype;
      ref.names.push_back(name);
      ref.files.push_back(relativePath(loc->path));
    }
    ref.shape.assign(shape.begin(), shape.end());
    if (stacked)
      ref.shape.insert(ref.shape.begin(), static_cast<int64_t>(names.size()));
    if (!scaleNames.empty()) {
      // One F8_E4M3 tensor makes the whole stack FP8 (dtypes agree).
      std::vector<int64_t> grid = {ceilDiv(shape[0], fp8Block[0]),
                                   ceilDiv(shape[1], fp8Block[1])};
      std::string scaleWhy =
          llvm::formatv(
              "ceil([{0}, {1}] / weight_block_size [{2}, {3}]) of '{4}'",
              shape[0], shape[1], fp8Block[0], fp8Block[1], names[0])
              .str();
      Expected<TensorRef> scales = stackFloat(scaleNames, grid, scaleWhy,
                                              stacked, DType::F32);
      if (!scales)
        return scales.takeError();
      ref.codes = QuantCodes::F8E4M3FN;
      ref.scale = std::make_shared<TensorRef>(std::move(*scales));
      ref.block = fp8Block;
    }
    return ref;
  }

  /// MXFP4 (gpt-oss): `name_blocks` U8 [E, out, in/32, 16] and
  /// `name_scales` U8 [E, out, in/32], read as f4E2M1FN [E, out, in] with
  /// f8E8M0FNU scales, 32 input values per scale.
  Expected<TensorRef> mxfp4(StringRef name, int64_t experts, int64_t out,
                            int64_t in, StringRef why) {
    std::string blocksName = (name + "_blocks").str();
    std::string scalesName = (name + "_scales").str();
    if (in % 32 != 0)
      return makeError(configPath + ": '" + blocksName + "' is MXFP4 but its "
                       "input size " + llvm::Twine(in) + " (" + why +
                       ") is not a multiple of the 32-value block");
    if (!exists(scalesName))
      return makeError(store.directory() + ": tensor '" + blocksName +
                       "' is MXFP4 but '" + scalesName +
                       "' (its E8M0 scales) is missing");
    std::string whyBlocks = (why + "; 32 values in 16 bytes").str();
    Expected<TensorRef> blocks = stackFloat(
        {blocksName}, {experts, out, in / 32, 16}, whyBlocks, false,
        DType::U8);
    if (!blocks)
      return blocks.takeError();
    Expected<TensorRef> scales = stackFloat(
        {scalesName}, {experts, out, in / 32}, (why + "; one per 32").str(),
        false, DType::U8);
    if (!scales)
      return scales.takeError();
    blocks->shape = {experts, out, in};
    blocks->codes = QuantCodes::F4E2M1FN;
    scales->codes = QuantCodes::E8M0;
    blocks->scale = std::make_shared<TensorRef>(std::move(*scales));
    blocks->block = {1, 32};
    return blocks;
  }

  /// Block of FP8 weights (quantization_config.weight_block_size); empty
  /// without an FP8 quantization_config.
  std::vector<int64_t> fp8Block;

private:
  static int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

  /// Tensors of exactly `dtype` and `shape` (scales, packed codes).
  Expected<TensorRef> stackFloat(const std::vector<std::string> &names,
                                 llvm::ArrayRef<int64_t> shape, StringRef why,
                                 bool stacked, DType dtype) {
    TensorRef ref;
    for (const std::string &name : names) {
      Expected<TensorLocation> loc = store.find(name);
      if (!loc)
        return loc.takeError();
      const TensorInfo &info = loc->info;
      if (info.dtype != dtype)
        return makeError(loc->path + ": tensor '" + name + "' has dtype " +
                         dtypeName(info.dtype) + "; expected " +
                         dtypeName(dtype));
      if (!llvm::equal(info.shape, shape))
        return makeError(loc->path + ": tensor '" + name + "' has shape " +
                         formatShape(info.shape) + " but " + configPath +
                         " implies " + formatShape(shape) + " (" + why + ")");
      ref.dtype = dtype;
      ref.names.push_back(name);
      ref.files.push_back(relativePath(loc->path));
    }
    ref.shape.assign(shape.begin(), shape.end());
    if (stacked)
      ref.shape.insert(ref.shape.begin(), static_cast<int64_t>(names.size()));
    return ref;
  }

  std::string relativePath(StringRef path) const {
    StringRef dir = store.directory();
    StringRef rel = path;
    if (rel.consume_front(dir)) {
      rel = rel.ltrim('/');
      return rel.str();
    }
    return path.str();
  }

  WeightStore &store;
  std::string configPath;
};

std::string shapeWhy(StringRef a, int64_t va, StringRef b, int64_t vb) {
  return llvm::formatv("{0} = {1}, {2} = {3}", a, va, b, vb).str();
}

/// Architecture-specific facts that the generic reader below needs.
struct ArchInfo {
  std::string expertsKey;        ///< Config key of the routed expert count.
  std::string intermediateKey;   ///< Config key of the expert width.
  std::vector<std::string> blockPrefixes; ///< After `model.layers.{L}.`.
  std::string routerName;        ///< After the block prefix.
  std::string gateName, upName, downName; ///< Per-expert projection names.
  bool fusedOnly = false;        ///< gpt-oss, Llama 4.
  bool fusedInOut = false;       ///< Default orientation of fused tensors.
  bool interleaved = false;
  bool expertBiases = false;
};

ArchInfo archInfo(StringRef type) {
  ArchInfo a;
  a.intermediateKey = "moe_intermediate_size";
  a.blockPrefixes = {"mlp"};
  a.routerName = "gate.weight";
  a.gateName = "gate_proj.weight";
  a.upName = "up_proj.weight";
  a.downName = "down_proj.weight";
  if (type == "mixtral") {
    a.expertsKey = "num_local_experts";
    a.intermediateKey = "intermediate_size";
    a.blockPrefixes = {"block_sparse_moe", "mlp"};
    a.gateName = "w1.weight";
    a.upName = "w3.weight";
    a.downName = "w2.weight";
  } else if (type == "qwen2_moe" || type == "qwen3_moe") {
    a.expertsKey = "num_experts";
  } else if (type == "olmoe") {
    a.expertsKey = "num_experts";
    a.intermediateKey = "intermediate_size";
  } else if (type == "deepseek_v2" || type == "deepseek_v3") {
    a.expertsKey = "n_routed_experts";
  } else if (type == "gpt_oss") {
    a.expertsKey = "num_local_experts";
    a.intermediateKey = "intermediate_size";
    a.routerName = "router.weight";
    a.fusedOnly = true;
    a.fusedInOut = true;
    a.interleaved = true;
    a.expertBiases = true;
  } else if (type == "llama4_text") {
    a.expertsKey = "num_local_experts";
    a.intermediateKey = "intermediate_size";
    a.blockPrefixes = {"feed_forward"};
    a.routerName = "router.weight";
    a.fusedOnly = true;
    a.fusedInOut = true;
  }
  return a;
}

/// Which layers hold an MoE block.
Expected<std::vector<int64_t>> moeLayers(const ConfigReader &cfg,
                                         StringRef type, int64_t numLayers) {
  std::vector<int64_t> layers;
  if (type == "qwen2_moe" || type == "qwen3_moe") {
    Expected<int64_t> step = cfg.optionalInt("decoder_sparse_step", 1);
    Expected<std::vector<int64_t>> mlpOnly = cfg.optionalIntList("mlp_only_layers");
    if (!step)
      return step.takeError();
    if (!mlpOnly)
      return mlpOnly.takeError();
    if (*step < 1)
      return makeError(cfg.file() + ": field 'decoder_sparse_step' must be "
                                    ">= 1, got " + llvm::Twine(*step));
    for (int64_t l = 0; l < numLayers; ++l)
      if (!llvm::is_contained(*mlpOnly, l) && (l + 1) % *step == 0)
        layers.push_back(l);
  } else if (type == "deepseek_v2" || type == "deepseek_v3") {
    Expected<int64_t> first = cfg.optionalInt("first_k_dense_replace", 0);
    Expected<int64_t> freq = cfg.optionalInt("moe_layer_freq", 1);
    if (!first)
      return first.takeError();
    if (!freq)
      return freq.takeError();
    if (*freq < 1)
      return makeError(cfg.file() + ": field 'moe_layer_freq' must be >= 1, "
                                    "got " + llvm::Twine(*freq));
    for (int64_t l = 0; l < numLayers; ++l)
      if (l >= *first && l % *freq == 0)
        layers.push_back(l);
  } else if (type == "llama4_text") {
    Expected<std::vector<int64_t>> listed = cfg.optionalIntList("moe_layers");
    if (!listed)
      return listed.takeError();
    if (cfg.has("moe_layers")) {
      for (int64_t l : *listed) {
        if (l < 0 || l >= numLayers)
          return makeError(cfg.file() + ": field 'moe_layers' names layer " +
                           llvm::Twine(l) + ", outside [0, " +
                           llvm::Twine(numLayers) + ")");
        layers.push_back(l);
      }
      llvm::sort(layers);
    } else {
      Expected<int64_t> step = cfg.optionalInt("interleave_moe_layer_step", 1);
      if (!step)
        return step.takeError();
      if (*step < 1)
        return makeError(cfg.file() + ": field 'interleave_moe_layer_step' "
                                      "must be >= 1, got " +
                         llvm::Twine(*step));
      for (int64_t l = *step - 1; l < numLayers; l += *step)
        layers.push_back(l);
    }
  } else {
    for (int64_t l = 0; l < numLayers; ++l)
      layers.push_back(l);
  }
  return layers;
}

Expected<FFNActivation> activation(const ConfigReader &cfg) {
  Expected<std::string> act = cfg.optionalString("hidden_act", "silu");
  if (!act)
    return act.takeError();
  if (*act == "silu" || *act == "swish")
    return FFNActivation::Silu;
  if (*act == "gelu")
    return FFNActivation::Gelu;
  if (*act == "gelu_pytorch_tanh" || *act == "gelu_new" ||
      *act == "gelu_fast")
    return FFNActivation::GeluTanh;
  return makeError(cfg.file() + ": field 'hidden_act' is '" + *act +
                   "'; supported: silu, swish, gelu, gelu_pytorch_tanh, "
                   "gelu_new, gelu_fast");
}

/// Reads a dense gated FFN stored as `prefix.{gate,up,down}_proj.weight`.
Expected<GatedFFNWeights> denseFFN(TensorResolver &tensors, StringRef prefix,
                                   int64_t hidden, int64_t inter,
                                   StringRef interWhy,
                                   FFNActivation act) {
  GatedFFNWeights w;
  w.activation = act;
  std::string why = shapeWhy("hidden_size", hidden, interWhy, inter);
  auto gate = tensors.get((prefix + ".gate_proj.weight").str(), {inter, hidden}, why);
  if (!gate)
    return gate.takeError();
  auto up = tensors.get((prefix + ".up_proj.weight").str(), {inter, hidden}, why);
  if (!up)
    return up.takeError();
  auto down = tensors.get((prefix + ".down_proj.weight").str(), {hidden, inter}, why);
  if (!down)
    return down.takeError();
  w.gate = std::move(*gate);
  w.up = std::move(*up);
  w.down = std::move(*down);
  return w;
}

} // namespace

Expected<ModelSpec> moe::readModelSpec(StringRef modelDir, WeightStore &store) {
  llvm::SmallString<256> dir(modelDir);
  llvm::sys::fs::make_absolute(dir);
  llvm::sys::path::remove_dots(dir, /*remove_dot_dot=*/true);
  llvm::SmallString<256> configPath(dir);
  llvm::sys::path::append(configPath, "config.json");
  std::string path = configPath.str().str();

  if (Error e = moe::checkRegularFile(path, "config file"))
    return std::move(e);
  auto buffer = llvm::MemoryBuffer::getFile(configPath);
  if (!buffer)
    return makeError(path + ": cannot read: " + buffer.getError().message());
  Expected<llvm::json::Value> json =
      moe::parseBoundedJson((*buffer)->getBuffer());
  if (!json)
    return makeError(path + ": invalid JSON: " +
                     llvm::toString(json.takeError()));
  const llvm::json::Object *object = json->getAsObject();
  if (!object)
    return makeError(path + ": expected a JSON object at the top level");

  std::string supported = llvm::join(supportedModelTypes(), ", ");
  std::optional<StringRef> type = object->getString("model_type");
  if (!type) {
    // Some exported configs only name the model class.
    static const std::pair<StringRef, StringRef> classes[] = {
        {"MixtralForCausalLM", "mixtral"},
        {"Qwen2MoeForCausalLM", "qwen2_moe"},
        {"Qwen3MoeForCausalLM", "qwen3_moe"},
        {"OlmoeForCausalLM", "olmoe"},
        {"DeepseekV2ForCausalLM", "deepseek_v2"},
        {"DeepseekV3ForCausalLM", "deepseek_v3"},
        {"GptOssForCausalLM", "gpt_oss"},
        {"Llama4ForCausalLM", "llama4_text"}};
    if (const llvm::json::Array *archs = object->getArray("architectures"))
      for (const llvm::json::Value &a : *archs)
        if (std::optional<StringRef> name = a.getAsString())
          for (auto [cls, t] : classes)
            if (*name == cls)
              type = t;
    if (!type)
      return makeError(path + ": missing field 'model_type' (and no known "
                              "'architectures' entry); supported model "
                              "types: " +
                       supported);
  }
  if (!llvm::is_contained(supportedModelTypes(), type->str()))
    return makeError(path + ": 'model_type' is '" + *type +
                     "', which moe-import does not support; supported model "
                     "types: " +
                     supported);

  ConfigReader cfg(*object, path, type->str());
  ArchInfo arch = archInfo(*type);
  TensorResolver tensors(store, path);
  bool mxfp4 = false;
  if (const llvm::json::Value *q = object->get("quantization_config")) {
    const llvm::json::Object *qo = q->getAsObject();
    if (!qo)
      return makeError(path + ": field 'quantization_config' must be an "
                              "object");
    std::optional<StringRef> method = qo->getString("quant_method");
    if (!method)
      return makeError(path + ": 'quantization_config' has no string "
                              "'quant_method'");
    if (*method == "fp8") {
      if (std::optional<StringRef> fmt = qo->getString("fmt");
          fmt && *fmt != "e4m3")
        return makeError(path + ": 'quantization_config.fmt' is '" + *fmt +
                         "'; moe-import reads FP8 e4m3 only");
      const llvm::json::Array *blockSize = qo->getArray("weight_block_size");
      std::vector<int64_t> block;
      if (blockSize)
        for (const llvm::json::Value &v : *blockSize)
          if (std::optional<int64_t> n = v.getAsInteger(); n && *n > 0)
            block.push_back(*n);
      if (!blockSize || block.size() != 2 || blockSize->size() != 2)
        return makeError(path + ": 'quantization_config.weight_block_size' "
                                "must be two positive integers (rows, "
                                "columns of one scale's block), e.g. "
                                "[128, 128]");
      tensors.fp8Block = block;
    } else if (*method == "mxfp4") {
      if (*type != "gpt_oss")
        return makeError(path + ": quant_method 'mxfp4' is read for gpt_oss "
                                "experts only, the model type is '" +
                         *type + "'");
      mxfp4 = true;
    } else {
      return makeError(path + ": 'quantization_config.quant_method' is '" +
                       *method + "'; moe-import reads 'fp8' (DeepSeek-V3 "
                                 "block-scaled E4M3) and 'mxfp4' (gpt-oss)");
    }
  }

  ModelSpec spec;
  spec.modelDir = dir.str().str();
  spec.modelType = type->str();

  Expected<int64_t> numLayers = cfg.requiredPositive("num_hidden_layers", kMaxLayers);
  Expected<int64_t> hidden = cfg.requiredPositive("hidden_size");
  // Newer configs spell the expert count either way.
  std::string expertsKey = arch.expertsKey;
  if (!cfg.has(expertsKey)) {
    if (expertsKey == "num_local_experts" && cfg.has("num_experts"))
      expertsKey = "num_experts";
    else if (expertsKey == "num_experts" && cfg.has("num_local_experts"))
      expertsKey = "num_local_experts";
  }
  arch.expertsKey = expertsKey;
  Expected<int64_t> experts = cfg.requiredPositive(arch.expertsKey);
  Expected<int64_t> inter = cfg.requiredPositive(arch.intermediateKey);
  if (!numLayers)
    return numLayers.takeError();
  if (!hidden)
    return hidden.takeError();
  if (!experts)
    return experts.takeError();
  if (!inter)
    return inter.takeError();
  int64_t topK = 0;
  if (*type == "gpt_oss" && !cfg.has("num_experts_per_tok")) {
    Expected<int64_t> k = cfg.requiredPositive("experts_per_token");
    if (!k)
      return k.takeError();
    topK = *k;
  } else {
    Expected<int64_t> k = cfg.requiredPositive("num_experts_per_tok");
    if (!k)
      return k.takeError();
    topK = *k;
  }
  if (topK > *experts)
    return makeError(path + ": field 'num_experts_per_tok' = " +
                     llvm::Twine(topK) + " exceeds the number of experts '" +
                     arch.expertsKey + "' = " + llvm::Twine(*experts));
  spec.numLayers = *numLayers;

  FFNActivation act = FFNActivation::Silu;
  if (*type != "gpt_oss") {
    Expected<FFNActivation> a = activation(cfg);
    if (!a)
      return a.takeError();
    act = *a;
  } else {
    act = FFNActivation::SwigluClamped;
  }

  Expected<std::vector<int64_t>> layers = moeLayers(cfg, *type, *numLayers);
  if (!layers)
    return layers.takeError();

  for (int64_t layer : *layers) {
    MoEBlockSpec b;
    b.layer = layer;
    b.hidden = *hidden;
    b.intermediate = *inter;
    b.numExperts = *experts;
    b.topK = topK;
    int64_t H = *hidden, I = *inter, E = *experts;

    // The block's prefix: the first candidate whose router exists.
    std::string prefix;
    for (const std::string &p : arch.blockPrefixes) {
      std::string candidate = llvm::formatv("model.layers.{0}.{1}", layer, p);
      if (tensors.exists(candidate + "." + arch.routerName)) {
        prefix = candidate;
        break;
      }
    }
    if (prefix.empty())
      prefix = llvm::formatv("model.layers.{0}.{1}", layer,
                             arch.blockPrefixes.front());

    std::string routerWhy =
        shapeWhy(arch.expertsKey, E, "hidden_size", H);
    auto router = tensors.get(prefix + "." + arch.routerName, {E, H}, routerWhy);
    if (!router)
      return router.takeError();
    b.routerWeight = std::move(*router);

    // Routing.
    if (*type == "mixtral") {
      b.normalize = true;
    } else if (*type == "qwen2_moe" || *type == "qwen3_moe" ||
               *type == "olmoe") {
      Expected<bool> norm = cfg.optionalBool("norm_topk_prob", false);
      if (!norm)
        return norm.takeError();
      b.normalize = *norm;
    } else if (*type == "deepseek_v2" || *type == "deepseek_v3") {
      Expected<bool> norm = cfg.optionalBool("norm_topk_prob", false);
      Expected<double> factor = cfg.optionalPositiveNumber("routed_scaling_factor", 1.0);
      Expected<int64_t> nGroup = cfg.optionalInt("n_group", 1);
      Expected<int64_t> topkGroup = cfg.optionalInt("topk_group", 1);
      Expected<std::string> method = cfg.optionalString(
          "topk_method", *type == "deepseek_v3" ? "noaux_tc" : "greedy");
      Expected<std::string> scoring = cfg.optionalString(
          "scoring_func", *type == "deepseek_v3" ? "sigmoid" : "softmax");
      if (!norm)
        return norm.takeError();
      if (!factor)
        return factor.takeError();
      if (!nGroup)
        return nGroup.takeError();
      if (!topkGroup)
        return topkGroup.takeError();
      if (!method)
        return method.takeError();
      if (!scoring)
        return scoring.takeError();
      if (*scoring == "softmax")
        b.scoring = RouterScoring::Softmax;
      else if (*scoring == "sigmoid")
        b.scoring = RouterScoring::Sigmoid;
      else
        return makeError(path + ": field 'scoring_func' is '" + *scoring +
                         "'; expected softmax or sigmoid");
      bool grouped = false;
      if (*type == "deepseek_v2") {
        if (*method == "group_limited_greedy") {
          grouped = true;
          b.groupScoring = GroupScoring::Max;
        } else if (*method != "greedy") {
          return makeError(path + ": field 'topk_method' is '" + *method +
                           "'; deepseek_v2 supports greedy and "
                           "group_limited_greedy");
        }
        // DeepSeek-V2's own code: renormalise (k > 1) or scale, not both.
        if (*norm && topK > 1) {
          b.normalize = true;
          b.normalizeEpsilon = 1e-20f;
        } else {
          b.scale = static_cast<float>(*factor);
        }
      } else {
        if (*method != "noaux_tc")
          return makeError(path + ": field 'topk_method' is '" + *method +
                           "'; deepseek_v3 supports noaux_tc");
        grouped = true;
        b.groupScoring = GroupScoring::Top2Sum;
        b.normalize = *norm;
        b.normalizeEpsilon = 1e-20f;
        b.scale = static_cast<float>(*factor);
        auto bias = tensors.get(prefix + ".gate.e_score_correction_bias", {E},
                                "n_routed_experts = " + std::to_string(E));
        if (!bias)
          return bias.takeError();
        b.correctionBias = std::move(*bias);
      }
      if (grouped) {
        if (*nGroup < 1 || E % *nGroup != 0)
          return makeError(path + ": field 'n_group' = " +
                           llvm::Twine(*nGroup) +
                           " must be >= 1 and divide n_routed_experts = " +
                           llvm::Twine(E));
        if (*topkGroup < 1 || *topkGroup > *nGroup)
          return makeError(path + ": field 'topk_group' = " +
                           llvm::Twine(*topkGroup) +
                           " must be in [1, n_group = " +
                           llvm::Twine(*nGroup) + "]");
        if (b.groupScoring == GroupScoring::Top2Sum && E / *nGroup < 2)
          return makeError(path + ": 'n_group' = " + llvm::Twine(*nGroup) +
                           " leaves fewer than 2 experts per group; the "
                           "sum-of-top-2 group score needs 2");
        if (*topkGroup == *nGroup || *nGroup == 1)
          b.groupScoring = GroupScoring::None; // Every group is kept.
        b.numGroups = *nGroup;
        b.keepGroups = *topkGroup;
      }
    } else if (*type == "gpt_oss") {
      b.scoring = RouterScoring::Logits;
      b.selected = SelectedTransform::Softmax;
      auto bias = tensors.get(prefix + ".router.bias", {E},
                              "num_local_experts = " + std::to_string(E));
      if (!bias)
        return bias.takeError();
      b.routerBias = std::move(*bias);
    } else if (*type == "llama4_text") {
      b.scoring = RouterScoring::Logits;
      b.selected = SelectedTransform::Sigmoid;
      b.weightOnInput = true;
    }

    // Routed experts.
    GatedFFNWeights &w = b.experts;
    w.activation = act;
    std::string why = shapeWhy("hidden_size", H, arch.intermediateKey, I);
    std::string fusedName = prefix + ".experts.gate_up_proj";
    bool fused = arch.fusedOnly || tensors.exists(fusedName);
    // What a fused checkpoint adds to its gate_up/down however they are
    // stored (bf16, or MXFP4 blocks): the biases, gpt-oss's clamp.
    auto fusedBiasesAndLimit = [&](bool biases) -> Error {
      if (biases) {
        auto gub = tensors.get(fusedName + "_bias", {E, 2 * I}, why);
        if (!gub)
          return gub.takeError();
        auto db = tensors.get(prefix + ".experts.down_proj_bias", {E, H}, why);
        if (!db)
          return db.takeError();
        w.gateUpBias = std::move(*gub);
        w.downBias = std::move(*db);
      }
      if (*type == "gpt_oss") {
        Expected<double> limit =
            cfg.optionalPositiveNumber("swiglu_limit", 7.0);
        if (!limit)
          return limit.takeError();
        w.limit = static_cast<float>(*limit);
      }
      return Error::success();
    };
    if (fused && *type == "gpt_oss" && tensors.exists(fusedName + "_blocks")) {
      if (!mxfp4)
        return makeError(store.directory() + ": '" + fusedName +
                         "_blocks' is MXFP4 but " + path + " has no "
                         "'quantization_config' with quant_method 'mxfp4'");
      // Stored [E, out, in] (nn.Linear), gate/up interleaved on the rows.
      w.inOut = false;
      w.interleaved = true;
      auto gu = tensors.mxfp4(fusedName, E, 2 * I, H, why);
      if (!gu)
        return gu.takeError();
      auto d = tensors.mxfp4(prefix + ".experts.down_proj", E, H, I, why);
      if (!d)
        return d.takeError();
      w.gateUp = std::move(*gu);
      w.down = std::move(*d);
      if (Error err = fusedBiasesAndLimit(/*biases=*/true))
        return err;
    } else if (fused) {
      // Orientation: the shape says it unless H == 2I makes it ambiguous.
      Expected<TensorLocation> loc = store.find(fusedName);
      if (!loc)
        return loc.takeError();
      const std::vector<int64_t> &s = loc->info.shape;
      bool inOut = arch.fusedInOut;
      if (s.size() == 3 && H != 2 * I) {
        if (s[1] == H && s[2] == 2 * I)
          inOut = true;
        else if (s[1] == 2 * I && s[2] == H)
          inOut = false;
      }
      w.inOut = inOut;
      w.interleaved = arch.interleaved;
      std::vector<int64_t> guShape =
          inOut ? std::vector<int64_t>{E, H, 2 * I}
                : std::vector<int64_t>{E, 2 * I, H};
      std::vector<int64_t> dShape = inOut ? std::vector<int64_t>{E, I, H}
                                          : std::vector<int64_t>{E, H, I};
      auto gu = tensors.get(fusedName, guShape, why);
      if (!gu)
        return gu.takeError();
      auto d = tensors.get(prefix + ".experts.down_proj", dShape, why);
      if (!d)
        return d.takeError();
      w.gateUp = std::move(*gu);
      w.down = std::move(*d);
      if (Error err = fusedBiasesAndLimit(arch.expertBiases))
        return err;
    } else {
      auto names = [&](StringRef leaf) {
        std::vector<std::string> n;
        for (int64_t e = 0; e < E; ++e)
          n.push_back(llvm::formatv("{0}.experts.{1}.{2}", prefix, e, leaf));
        return n;
      };
      auto g = tensors.stack(names(arch.gateName), {I, H}, why);
      if (!g)
        return g.takeError();
      auto u = tensors.stack(names(arch.upName), {I, H}, why);
      if (!u)
        return u.takeError();
      auto d = tensors.stack(names(arch.downName), {H, I}, why);
      if (!d)
        return d.takeError();
      w.gate = std::move(*g);
      w.up = std::move(*u);
      w.down = std::move(*d);
    }

    // Shared experts.
    if (*type == "qwen2_moe") {
      Expected<int64_t> sharedInter =
          cfg.optionalInt("shared_expert_intermediate_size", 0);
      if (!sharedInter)
        return sharedInter.takeError();
      if (*sharedInter > 0) {
        auto s = denseFFN(tensors, prefix + ".shared_expert", H, *sharedInter,
                          "shared_expert_intermediate_size", act);
        if (!s)
          return s.takeError();
        b.hasShared = true;
        b.sharedIntermediate = *sharedInter;
        b.shared = std::move(*s);
        auto g = tensors.get(prefix + ".shared_expert_gate.weight", {1, H},
                             "hidden_size = " + std::to_string(H));
        if (!g)
          return g.takeError();
        b.sharedGate = std::move(*g);
      }
    } else if (*type == "deepseek_v2" || *type == "deepseek_v3") {
      Expected<int64_t> nShared = cfg.optionalInt("n_shared_experts", 0);
      if (!nShared)
        return nShared.takeError();
      if (*nShared > 0) {
        auto s = denseFFN(tensors, prefix + ".shared_experts", H,
                          *nShared * I,
                          "n_shared_experts x moe_intermediate_size", act);
        if (!s)
          return s.takeError();
        b.hasShared = true;
        b.sharedIntermediate = *nShared * I;
        b.shared = std::move(*s);
      }
    } else if (*type == "llama4_text") {
      auto s = denseFFN(tensors, prefix + ".shared_expert", H, I,
                        "intermediate_size", act);
      if (!s)
        return s.takeError();
      b.hasShared = true;
      b.sharedIntermediate = I;
      b.shared = std::move(*s);
    }
    spec.blocks.push_back(std::move(b));
  }
  return spec;
}
