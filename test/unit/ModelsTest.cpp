//===- ModelsTest.cpp - Tests of the MoEModels library --------------------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Models/SyntheticModels.h"
#include "moe/lib/Weights/WeightStore.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <set>

using namespace llvm;
using namespace moe;

namespace {

class TempDir {
public:
  TempDir() {
    std::error_code ec =
        sys::fs::createUniqueDirectory("moe-models-test", path);
    EXPECT_FALSE(ec) << ec.message();
  }
  ~TempDir() { sys::fs::remove_directories(path); }
  std::string file(StringRef name) const {
    SmallString<256> result(path);
    sys::path::append(result, name);
    return std::string(result);
  }
  std::string dir() const { return std::string(path); }

private:
  SmallString<128> path;
};

std::vector<std::string> listDir(StringRef dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (sys::fs::directory_iterator it(dir, ec), end; it != end && !ec;
       it.increment(ec))
    names.push_back(sys::path::filename(it->path()).str());
  llvm::sort(names);
  return names;
}

std::string readBytes(StringRef path) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer = MemoryBuffer::getFile(path);
  if (!buffer)
    return "<unreadable>";
  return (*buffer)->getBuffer().str();
}

template <typename T> std::string errorOf(Expected<T> value) {
  if (value)
    return "<no error>";
  return toString(value.takeError());
}

std::string errorOf(Error error) {
  if (!error)
    return "<no error>";
  return toString(std::move(error));
}

#define EXPECT_CONTAINS(text, part)                                            \
  EXPECT_NE(std::string(text).find(part), std::string::npos)                   \
      << "'" << (text) << "' does not contain '" << (part) << "'"

SyntheticOptions defaultsFor(StringRef arch) {
  Expected<SyntheticOptions> opts = defaultSyntheticOptions(arch);
  EXPECT_TRUE(bool(opts)) << errorOf(std::move(opts));
  return opts ? *opts : SyntheticOptions();
}

/// Writes the model and returns its folder path inside `tmp`.
std::string writeModel(const TempDir &tmp, const SyntheticOptions &opts,
                       StringRef name = "model") {
  std::string dir = tmp.file(name);
  Error error = writeSyntheticModel(opts, dir);
  EXPECT_FALSE(bool(error)) << errorOf(std::move(error));
  return dir;
}

json::Object readConfig(StringRef dir) {
  std::string text = readBytes((dir + "/config.json").str());
  Expected<json::Value> value = json::parse(text);
  EXPECT_TRUE(bool(value)) << errorOf(std::move(value));
  if (!value || !value->getAsObject())
    return {};
  return *value->getAsObject();
}

std::vector<int64_t> intList(const json::Object &config, StringRef key) {
  std::vector<int64_t> values;
  if (const json::Array *array = config.getArray(key))
    for (const json::Value &value : *array)
      values.push_back(value.getAsInteger().value_or(-1));
  return values;
}

using Shape = std::vector<int64_t>;

uint32_t floatBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

/// Checks that the store holds `name` with `shape` and `dtype`.
void expectTensor(WeightStore &store, StringRef name, const Shape &shape,
                  DType dtype) {
  Expected<TensorLocation> location = store.find(name);
  ASSERT_TRUE(bool(location)) << errorOf(std::move(location));
  EXPECT_EQ(location->info.shape, shape) << name.str();
  EXPECT_EQ(location->info.dtype, dtype) << name.str();
}

void expectAbsent(WeightStore &store, StringRef name) {
  EXPECT_FALSE(bool(store.find(name))) << name.str() << " should not exist";
  consumeError(store.find(name).takeError());
}

std::vector<float> read(WeightStore &store, StringRef name) {
  Expected<std::vector<float>> values = store.readF32(name);
  EXPECT_TRUE(bool(values)) << errorOf(std::move(values));
  return values ? *values : std::vector<float>();
}

std::unique_ptr<WeightStore> openStore(StringRef dir) {
  Expected<std::unique_ptr<WeightStore>> store = WeightStore::open(dir);
  EXPECT_TRUE(bool(store)) << errorOf(std::move(store));
  return store ? std::move(*store) : nullptr;
}

//===----------------------------------------------------------------------===//
// Options
//===----------------------------------------------------------------------===//

TEST(SyntheticOptionsTest, ArchitecturesAndDefaults) {
  EXPECT_EQ(syntheticArchitectures(),
            (std::vector<std::string>{"mixtral", "qwen2_moe", "qwen3_moe",
                                      "olmoe", "deepseek_v2", "deepseek_v3",
                                      "gpt_oss", "llama4_text"}));
  for (const std::string &arch : syntheticArchitectures()) {
    SyntheticOptions opts = defaultsFor(arch);
    EXPECT_EQ(opts.arch, arch);
    EXPECT_FALSE(bool(validateSyntheticOptions(opts))) << arch;
    EXPECT_FALSE(syntheticMoeLayers(opts).empty()) << arch;
  }
  std::string message = errorOf(defaultSyntheticOptions("switch"));
  EXPECT_CONTAINS(message, "'switch'");
  EXPECT_CONTAINS(message, "mixtral, qwen2_moe");
}

TEST(SyntheticOptionsTest, MoeLayerSelection) {
  SyntheticOptions qwen = defaultsFor("qwen2_moe");
  qwen.numLayers = 6;
  qwen.decoderSparseStep = 2;
  qwen.mlpOnlyLayers = {3};
  EXPECT_EQ(syntheticMoeLayers(qwen), (std::vector<int64_t>{1, 5}));

  SyntheticOptions deepseek = defaultsFor("deepseek_v2");
  deepseek.numLayers = 7;
  deepseek.firstKDenseReplace = 2;
  deepseek.moeLayerFreq = 2;
  EXPECT_EQ(syntheticMoeLayers(deepseek), (std::vector<int64_t>{2, 4, 6}));

  SyntheticOptions llama = defaultsFor("llama4_text");
  llama.numLayers = 6;
  llama.interleaveMoeLayerStep = 3;
  EXPECT_EQ(syntheticMoeLayers(llama), (std::vector<int64_t>{2, 5}));

  SyntheticOptions mixtral = defaultsFor("mixtral");
  mixtral.numLayers = 3;
  EXPECT_EQ(syntheticMoeLayers(mixtral), (std::vector<int64_t>{0, 1, 2}));
}

TEST(SyntheticOptionsTest, LeadingDenseLayers) {
  SyntheticOptions deepseek = defaultsFor("deepseek_v3");
  deepseek.numLayers = 6;
  EXPECT_FALSE(bool(setLeadingDenseLayers(deepseek, 3)));
  EXPECT_EQ(deepseek.firstKDenseReplace, 3);
  EXPECT_EQ(syntheticMoeLayers(deepseek), (std::vector<int64_t>{3, 4, 5}));

  // The default mlp_only_layers ({1}) is replaced by [0, N).
  SyntheticOptions qwen = defaultsFor("qwen2_moe");
  qwen.numLayers = 4;
  EXPECT_FALSE(bool(setLeadingDenseLayers(qwen, 2)));
  EXPECT_EQ(qwen.mlpOnlyLayers, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(syntheticMoeLayers(qwen), (std::vector<int64_t>{2, 3}));
  EXPECT_FALSE(bool(setLeadingDenseLayers(qwen, 0)));
  EXPECT_EQ(syntheticMoeLayers(qwen), (std::vector<int64_t>{0, 1, 2, 3}));

  for (const char *arch : {"mixtral", "olmoe", "gpt_oss", "llama4_text"}) {
    SyntheticOptions opts = defaultsFor(arch);
    EXPECT_CONTAINS(errorOf(setLeadingDenseLayers(opts, 1)),
                    "no field for leading dense layers")
        << arch;
  }
  EXPECT_CONTAINS(errorOf(setLeadingDenseLayers(deepseek, 6)),
                  "leave no MoE layer of 6 layers");
  EXPECT_CONTAINS(errorOf(setLeadingDenseLayers(deepseek, -1)),
                  "must not be negative");
}

TEST(SyntheticOptionsTest, RejectsInconsistentOptions) {
  SyntheticOptions opts = defaultsFor("mixtral");
  opts.topK = 9;
  EXPECT_CONTAINS(errorOf(validateSyntheticOptions(opts)),
                  "topK (9) exceeds numExperts (8)");

  opts = defaultsFor("deepseek_v3");
  opts.nGroup = 3;
  EXPECT_CONTAINS(errorOf(validateSyntheticOptions(opts)),
                  "not a multiple of nGroup");
  opts.nGroup = 8;
  opts.topkGroup = 4;
  EXPECT_CONTAINS(errorOf(validateSyntheticOptions(opts)),
                  "at least 2 experts");

  opts = defaultsFor("deepseek_v2");
  opts.topkMethod = "noaux_tc";
  EXPECT_CONTAINS(errorOf(validateSyntheticOptions(opts)), "topkMethod");

  opts = defaultsFor("qwen3_moe");
  opts.mlpOnlyLayers = {0, 1};
  EXPECT_CONTAINS(errorOf(validateSyntheticOptions(opts)), "no layer");
  opts.mlpOnlyLayers = {5};
  EXPECT_CONTAINS(errorOf(validateSyntheticOptions(opts)), "mlpOnlyLayers");

  opts = defaultsFor("olmoe");
  opts.dtype = DType::I32;
  EXPECT_CONTAINS(errorOf(validateSyntheticOptions(opts)), "dtype");

  TempDir tmp;
  opts = defaultsFor("olmoe");
  opts.numShards = 1000;
  std::string dir = tmp.file("too-many-shards");
  EXPECT_CONTAINS(errorOf(writeSyntheticModel(opts, dir)), "numShards");
  EXPECT_FALSE(sys::fs::exists(dir));
  // Nothing half-written is left next to it either.
  EXPECT_TRUE(listDir(tmp.dir()).empty());
}

TEST(SyntheticOptionsTest, ShardFileNames) {
  EXPECT_EQ(shardFileName(0, 3), "model-00001-of-00003.safetensors");
  EXPECT_EQ(shardFileName(11, 12), "model-00012-of-00012.safetensors");
}

//===----------------------------------------------------------------------===//
// Every architecture: config keys and tensors
//===----------------------------------------------------------------------===//

class ArchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ArchTest, WritesConfigAndEveryPlannedTensor) {
  TempDir tmp;
  SyntheticOptions opts = defaultsFor(GetParam());
  opts.seed = 7;
  std::string dir = writeModel(tmp, opts);
  EXPECT_EQ(listDir(dir),
            (std::vector<std::string>{"config.json", "model.safetensors"}));

  json::Object config = readConfig(dir);
  EXPECT_EQ(config.getString("model_type"), GetParam());
  EXPECT_EQ(config.getInteger("hidden_size"), opts.hidden);
  EXPECT_EQ(config.getInteger("num_hidden_layers"), opts.numLayers);
  EXPECT_EQ(config.getInteger("num_experts_per_tok"), opts.topK);
  EXPECT_EQ(config.getString("hidden_act"), "silu");
  EXPECT_EQ(config.getString("torch_dtype"), "bfloat16");
  const json::Array *architectures = config.getArray("architectures");
  ASSERT_NE(architectures, nullptr);
  ASSERT_EQ(architectures->size(), 1u);
  EXPECT_TRUE((*architectures)[0].getAsString()->ends_with("ForCausalLM"));

  Expected<std::vector<SyntheticTensor>> plan = syntheticTensorPlan(opts);
  ASSERT_TRUE(bool(plan)) << errorOf(std::move(plan));
  std::unique_ptr<WeightStore> store = openStore(dir);
  ASSERT_TRUE(store);
  std::vector<std::string> planned;
  for (const SyntheticTensor &tensor : *plan) {
    expectTensor(*store, tensor.name, tensor.shape, tensor.dtype);
    planned.push_back(tensor.name);
  }
  llvm::sort(planned);
  EXPECT_EQ(*store->tensorNames(), planned);

  // Only MoE layers have tensors.
  std::vector<int64_t> moeLayers = syntheticMoeLayers(opts);
  for (const std::string &name : planned) {
    int64_t layer = -1;
    ASSERT_TRUE(StringRef(name).starts_with("model.layers.")) << name;
    StringRef(name).drop_front(13).split('.').first.getAsInteger(10, layer);
    EXPECT_TRUE(llvm::is_contained(moeLayers, layer)) << name;
  }
}

TEST_P(ArchTest, FusedVariantHoldsTheSameTensorsAsPerExpert) {
  // Every architecture accepts fusedExperts; per-expert ones switch to the
  // transformers v5 fused form, gpt_oss and llama4_text do not change.
  SyntheticOptions perExpert = defaultsFor(GetParam());
  perExpert.fusedExperts = false;
  SyntheticOptions fused = perExpert;
  fused.fusedExperts = true;
  Expected<std::vector<SyntheticTensor>> a = syntheticTensorPlan(perExpert);
  Expected<std::vector<SyntheticTensor>> b = syntheticTensorPlan(fused);
  ASSERT_TRUE(a && b);
  int64_t elementsA = 0, elementsB = 0;
  for (const SyntheticTensor &t : *a)
    elementsA += std::accumulate(t.shape.begin(), t.shape.end(), int64_t(1),
                                 std::multiplies<int64_t>());
  for (const SyntheticTensor &t : *b)
    elementsB += std::accumulate(t.shape.begin(), t.shape.end(), int64_t(1),
                                 std::multiplies<int64_t>());
  EXPECT_EQ(elementsA, elementsB);
  bool alwaysFused = GetParam() == "gpt_oss" || GetParam() == "llama4_text";
  if (alwaysFused)
    EXPECT_EQ(a->size(), b->size());
  else
    EXPECT_GT(a->size(), b->size());
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, ArchTest,
                         ::testing::ValuesIn(syntheticArchitectures()),
                         [](const ::testing::TestParamInfo<std::string> &p) {
                           return p.param;
                         });

//===----------------------------------------------------------------------===//
// Architecture-specific names, shapes and keys, written out by hand from the
// transformers modeling files (docs/hf-layouts.md).
//===----------------------------------------------------------------------===//

TEST(LayoutTest, Mixtral) {
  TempDir tmp;
  SyntheticOptions opts = defaultsFor("mixtral");
  std::string dir = writeModel(tmp, opts);
  json::Object config = readConfig(dir);
  EXPECT_EQ(config.getInteger("num_local_experts"), 8);
  EXPECT_EQ(config.getInteger("intermediate_size"), 128);
  EXPECT_EQ((*config.getArray("architectures"))[0].getAsString(),
            "MixtralForCausalLM");
  auto store = openStore(dir);
  DType bf16 = DType::BF16;
  for (int layer : {0, 1}) {
    std::string p = "model.layers." + std::to_string(layer) + ".";
    expectTensor(*store, p + "block_sparse_moe.gate.weight", {8, 64}, bf16);
    for (int e : {0, 7}) {
      std::string x = p + "block_sparse_moe.experts." + std::to_string(e);
      expectTensor(*store, x + ".w1.weight", {128, 64}, bf16);
      expectTensor(*store, x + ".w2.weight", {64, 128}, bf16);
      expectTensor(*store, x + ".w3.weight", {128, 64}, bf16);
    }
  }
  EXPECT_EQ(store->tensorNames()->size(), 2u * (1 + 3 * 8));

  opts.fusedExperts = true;
  std::string fusedDir = writeModel(tmp, opts, "fused");
  auto fused = openStore(fusedDir);
  expectTensor(*fused, "model.layers.1.mlp.gate.weight", {8, 64}, bf16);
  expectTensor(*fused, "model.layers.1.mlp.experts.gate_up_proj", {8, 256, 64},
               bf16);
  expectTensor(*fused, "model.layers.1.mlp.experts.down_proj", {8, 64, 128},
               bf16);
  expectAbsent(*fused, "model.layers.1.block_sparse_moe.gate.weight");
  EXPECT_EQ(fused->tensorNames()->size(), 2u * 3);
}

TEST(LayoutTest, Qwen2Moe) {
  TempDir tmp;
  SyntheticOptions opts = defaultsFor("qwen2_moe");
  std::string dir = writeModel(tmp, opts);
  json::Object config = readConfig(dir);
  EXPECT_EQ(config.getInteger("num_experts"), 8);
  EXPECT_EQ(config.getInteger("moe_intermediate_size"), 128);
  EXPECT_EQ(config.getInteger("intermediate_size"), 256);
  EXPECT_EQ(config.getInteger("shared_expert_intermediate_size"), 256);
  EXPECT_EQ(config.getBoolean("norm_topk_prob"), false);
  EXPECT_EQ(config.getInteger("decoder_sparse_step"), 1);
  EXPECT_EQ(intList(config, "mlp_only_layers"), std::vector<int64_t>{1});
  auto store = openStore(dir);
  DType bf16 = DType::BF16;
  for (int layer : {0, 2}) {
    std::string p = "model.layers." + std::to_string(layer) + ".mlp.";
    expectTensor(*store, p + "gate.weight", {8, 64}, bf16);
    expectTensor(*store, p + "experts.3.gate_proj.weight", {128, 64}, bf16);
    expectTensor(*store, p + "experts.3.up_proj.weight", {128, 64}, bf16);
    expectTensor(*store, p + "experts.3.down_proj.weight", {64, 128}, bf16);
    expectTensor(*store, p + "shared_expert.gate_proj.weight", {256, 64}, bf16);
    expectTensor(*store, p + "shared_expert.up_proj.weight", {256, 64}, bf16);
    expectTensor(*store, p + "shared_expert.down_proj.weight", {64, 256}, bf16);
    expectTensor(*store, p + "shared_expert_gate.weight", {1, 64}, bf16);
  }
  expectAbsent(*store, "model.layers.1.mlp.gate.weight");

  opts.fusedExperts = true;
  auto fused = openStore(writeModel(tmp, opts, "fused"));
  expectTensor(*fused, "model.layers.2.mlp.experts.gate_up_proj", {8, 256, 64},
               bf16);
  expectTensor(*fused, "model.layers.2.mlp.experts.down_proj", {8, 64, 128},
               bf16);
  expectTensor(*fused, "model.layers.2.mlp.shared_expert.up_proj.weight",
               {256, 64}, bf16);
  expectAbsent(*fused, "model.layers.2.mlp.experts.0.gate_proj.weight");
}

TEST(LayoutTest, Qwen3MoeAndOlmoe) {
  TempDir tmp;
  auto qwen = openStore(writeModel(tmp, defaultsFor("qwen3_moe"), "qwen3"));
  json::Object qwenConfig = readConfig(tmp.file("qwen3"));
  EXPECT_EQ(qwenConfig.getBoolean("norm_topk_prob"), true);
  EXPECT_EQ(qwenConfig.getInteger("moe_intermediate_size"), 128);
  EXPECT_EQ(qwenConfig.getInteger("num_experts"), 8);
  expectTensor(*qwen, "model.layers.1.mlp.experts.5.up_proj.weight", {128, 64},
               DType::BF16);
  expectAbsent(*qwen, "model.layers.1.mlp.shared_expert_gate.weight");

  auto olmoe = openStore(writeModel(tmp, defaultsFor("olmoe"), "olmoe"));
  json::Object olmoeConfig = readConfig(tmp.file("olmoe"));
  // OLMoE's experts use intermediate_size; there is no moe_intermediate_size.
  EXPECT_EQ(olmoeConfig.getInteger("intermediate_size"), 128);
  EXPECT_EQ(olmoeConfig.get("moe_intermediate_size"), nullptr);
  EXPECT_EQ(olmoeConfig.getBoolean("norm_topk_prob"), false);
  expectTensor(*olmoe, "model.layers.0.mlp.gate.weight", {8, 64}, DType::BF16);
  expectTensor(*olmoe, "model.layers.0.mlp.experts.7.down_proj.weight",
               {64, 128}, DType::BF16);
}

TEST(LayoutTest, DeepseekV2) {
  TempDir tmp;
  SyntheticOptions opts = defaultsFor("deepseek_v2");
  std::string dir = writeModel(tmp, opts);
  json::Object config = readConfig(dir);
  EXPECT_EQ(config.getInteger("n_routed_experts"), 8);
  EXPECT_EQ(config.getInteger("n_shared_experts"), 2);
  EXPECT_EQ(config.getInteger("first_k_dense_replace"), 1);
  EXPECT_EQ(config.getInteger("moe_layer_freq"), 1);
  EXPECT_EQ(config.getInteger("n_group"), 4);
  EXPECT_EQ(config.getInteger("topk_group"), 2);
  EXPECT_EQ(config.getString("topk_method"), "group_limited_greedy");
  EXPECT_EQ(config.getString("scoring_func"), "softmax");
  EXPECT_EQ(config.getNumber("routed_scaling_factor"), 2.0);
  EXPECT_EQ(config.getInteger("moe_intermediate_size"), 128);
  auto store = openStore(dir);
  expectAbsent(*store, "model.layers.0.mlp.gate.weight");
  for (int layer : {1, 2}) {
    std::string p = "model.layers." + std::to_string(layer) + ".mlp.";
    expectTensor(*store, p + "gate.weight", {8, 64}, DType::BF16);
    expectTensor(*store, p + "experts.0.gate_proj.weight", {128, 64},
                 DType::BF16);
    // n_shared_experts shared experts are one MLP of width 2 * 128.
    expectTensor(*store, p + "shared_experts.gate_proj.weight", {256, 64},
                 DType::BF16);
    expectTensor(*store, p + "shared_experts.down_proj.weight", {64, 256},
                 DType::BF16);
    expectAbsent(*store, p + "gate.e_score_correction_bias");
  }
}

TEST(LayoutTest, DeepseekV3) {
  TempDir tmp;
  SyntheticOptions opts = defaultsFor("deepseek_v3");
  std::string dir = writeModel(tmp, opts);
  json::Object config = readConfig(dir);
  EXPECT_EQ(config.getString("scoring_func"), "sigmoid");
  EXPECT_EQ(config.getString("topk_method"), "noaux_tc");
  EXPECT_EQ(config.getNumber("routed_scaling_factor"), 2.5);
  EXPECT_EQ(config.getBoolean("norm_topk_prob"), true);
  EXPECT_EQ(config.getInteger("n_group"), 4);
  EXPECT_EQ(config.getInteger("topk_group"), 2);
  auto store = openStore(dir);
  std::string p = "model.layers.2.mlp.";
  expectTensor(*store, p + "gate.weight", {8, 64}, DType::BF16);
  // The correction bias stays float32 whatever the weight dtype.
  expectTensor(*store, p + "gate.e_score_correction_bias", {8}, DType::F32);
  expectTensor(*store, p + "shared_experts.up_proj.weight", {128, 64},
               DType::BF16);
  std::vector<float> bias = read(*store, p + "gate.e_score_correction_bias");
  ASSERT_EQ(bias.size(), 8u);
  int negative = 0;
  for (float value : bias)
    negative += value < -0.5f;
  EXPECT_GE(negative, 2); // Choice scores sigmoid + bias can be negative.
  EXPECT_LE(negative, 4);
}

TEST(LayoutTest, GptOss) {
  TempDir tmp;
  SyntheticOptions opts = defaultsFor("gpt_oss");
  std::string dir = writeModel(tmp, opts);
  json::Object config = readConfig(dir);
  EXPECT_EQ(config.getInteger("num_local_experts"), 8);
  EXPECT_EQ(config.getInteger("experts_per_token"), 2);
  EXPECT_EQ(config.getInteger("num_experts_per_tok"), 2);
  EXPECT_EQ(config.getInteger("intermediate_size"), 128);
  EXPECT_EQ(config.getNumber("swiglu_limit"), 7.0);
  auto store = openStore(dir);
  std::string p = "model.layers.1.mlp.";
  expectTensor(*store, p + "router.weight", {8, 64}, DType::BF16);
  expectTensor(*store, p + "router.bias", {8}, DType::BF16);
  expectTensor(*store, p + "experts.gate_up_proj", {8, 64, 256}, DType::BF16);
  expectTensor(*store, p + "experts.gate_up_proj_bias", {8, 256}, DType::BF16);
  expectTensor(*store, p + "experts.down_proj", {8, 128, 64}, DType::BF16);
  expectTensor(*store, p + "experts.down_proj_bias", {8, 64}, DType::BF16);
  EXPECT_EQ(store->tensorNames()->size(), 2u * 6);
}

TEST(LayoutTest, Llama4Text) {
  TempDir tmp;
  SyntheticOptions opts = defaultsFor("llama4_text");
  std::string dir = writeModel(tmp, opts);
  json::Object config = readConfig(dir);
  EXPECT_EQ(config.getInteger("num_local_experts"), 8);
  EXPECT_EQ(config.getInteger("num_experts_per_tok"), 1);
  EXPECT_EQ(config.getInteger("interleave_moe_layer_step"), 2);
  EXPECT_EQ(intList(config, "moe_layers"), std::vector<int64_t>{1});
  EXPECT_EQ(config.getInteger("intermediate_size"), 128);
  EXPECT_EQ(config.getInteger("intermediate_size_mlp"), 256);
  auto store = openStore(dir);
  std::string p = "model.layers.1.feed_forward.";
  expectTensor(*store, p + "router.weight", {8, 64}, DType::BF16);
  expectTensor(*store, p + "experts.gate_up_proj", {8, 64, 256}, DType::BF16);
  expectTensor(*store, p + "experts.down_proj", {8, 128, 64}, DType::BF16);
  expectTensor(*store, p + "shared_expert.gate_proj.weight", {128, 64},
               DType::BF16);
  expectTensor(*store, p + "shared_expert.up_proj.weight", {128, 64},
               DType::BF16);
  expectTensor(*store, p + "shared_expert.down_proj.weight", {64, 128},
               DType::BF16);
  expectAbsent(*store, "model.layers.0.feed_forward.router.weight");
}

//===----------------------------------------------------------------------===//
// Values: the layouts agree with each other
//===----------------------------------------------------------------------===//

/// F32 options with the dimensions shared by every architecture, so that the
/// logical expert matrices of one seed are the same in every layout.
SyntheticOptions valueOptions(StringRef arch) {
  SyntheticOptions opts = defaultsFor(arch);
  opts.dtype = DType::F32;
  opts.seed = 42;
  opts.numLayers = 2;
  opts.hidden = 16;
  opts.intermediate = 8;
  opts.numExperts = 4;
  opts.topK = 1;
  opts.interleaveMoeLayerStep = 2;
  return opts;
}

TEST(ValueTest, FusedLayoutsMatchPerExpertWeights) {
  TempDir tmp;
  const int64_t h = 16, i = 8, e = 4;
  auto perExpert = openStore(writeModel(tmp, valueOptions("mixtral"), "pe"));
  SyntheticOptions fusedOpts = valueOptions("mixtral");
  fusedOpts.fusedExperts = true;
  auto v5 = openStore(writeModel(tmp, fusedOpts, "v5"));
  auto gptOss = openStore(writeModel(tmp, valueOptions("gpt_oss"), "gpt"));
  auto llama = openStore(writeModel(tmp, valueOptions("llama4_text"), "l4"));

  const std::string layer = "model.layers.1.";
  std::vector<float> v5GateUp = read(*v5, layer + "mlp.experts.gate_up_proj");
  std::vector<float> v5Down = read(*v5, layer + "mlp.experts.down_proj");
  std::vector<float> ossGateUp =
      read(*gptOss, layer + "mlp.experts.gate_up_proj");
  std::vector<float> ossDown = read(*gptOss, layer + "mlp.experts.down_proj");
  std::vector<float> l4GateUp =
      read(*llama, layer + "feed_forward.experts.gate_up_proj");
  std::vector<float> l4Down =
      read(*llama, layer + "feed_forward.experts.down_proj");
  EXPECT_EQ(read(*v5, layer + "mlp.gate.weight"),
            read(*perExpert, layer + "block_sparse_moe.gate.weight"));
  EXPECT_EQ(read(*gptOss, layer + "mlp.router.weight"),
            read(*perExpert, layer + "block_sparse_moe.gate.weight"));

  for (int64_t expert = 0; expert < e; ++expert) {
    std::string x =
        layer + "block_sparse_moe.experts." + std::to_string(expert) + ".";
    std::vector<float> w1 = read(*perExpert, x + "w1.weight"); // gate [I, H]
    std::vector<float> w3 = read(*perExpert, x + "w3.weight"); // up   [I, H]
    std::vector<float> w2 = read(*perExpert, x + "w2.weight"); // down [H, I]
    ASSERT_EQ(w1.size(), size_t(i * h));
    for (int64_t row = 0; row < i; ++row)
      for (int64_t col = 0; col < h; ++col) {
        float gate = w1[row * h + col], up = w3[row * h + col];
        // v5: gate_up_proj[e] is [2I, H], gate rows then up rows.
        ASSERT_EQ(v5GateUp[(expert * 2 * i + row) * h + col], gate);
        ASSERT_EQ(v5GateUp[(expert * 2 * i + i + row) * h + col], up);
        // gpt-oss: gate_up_proj[e] is [H, 2I], gate in even columns.
        ASSERT_EQ(ossGateUp[(expert * h + col) * 2 * i + 2 * row], gate);
        ASSERT_EQ(ossGateUp[(expert * h + col) * 2 * i + 2 * row + 1], up);
        // Llama 4: gate_up_proj[e] is [H, 2I], gate in the first half.
        ASSERT_EQ(l4GateUp[(expert * h + col) * 2 * i + row], gate);
        ASSERT_EQ(l4GateUp[(expert * h + col) * 2 * i + i + row], up);
      }
    for (int64_t row = 0; row < h; ++row)
      for (int64_t col = 0; col < i; ++col) {
        float down = w2[row * i + col];
        // v5: down_proj[e] is [H, I]; gpt-oss and Llama 4: [I, H].
        ASSERT_EQ(v5Down[(expert * h + row) * i + col], down);
        ASSERT_EQ(ossDown[(expert * i + col) * h + row], down);
        ASSERT_EQ(l4Down[(expert * i + col) * h + row], down);
      }
  }
}

TEST(ValueTest, WeightsAreScaledForNonDegenerateRouting) {
  TempDir tmp;
  SyntheticOptions opts = defaultsFor("mixtral");
  opts.dtype = DType::F32;
  auto store = openStore(writeModel(tmp, opts));
  auto stddev = [](const std::vector<float> &values) {
    double sum = 0, squares = 0;
    for (float v : values) {
      sum += v;
      squares += double(v) * v;
    }
    double mean = sum / values.size();
    return std::sqrt(squares / values.size() - mean * mean);
  };
  std::vector<float> router =
      read(*store, "model.layers.0.block_sparse_moe.gate.weight");
  EXPECT_NEAR(stddev(router), 1.0 / std::sqrt(64.0), 0.01);
  std::vector<float> down =
      read(*store, "model.layers.0.block_sparse_moe.experts.0.w2.weight");
  EXPECT_NEAR(stddev(down), 1.0 / std::sqrt(128.0), 0.01);
  // Different experts and layers get different weights.
  EXPECT_NE(
      read(*store, "model.layers.0.block_sparse_moe.experts.0.w1.weight"),
      read(*store, "model.layers.0.block_sparse_moe.experts.1.w1.weight"));
  EXPECT_NE(router,
            read(*store, "model.layers.1.block_sparse_moe.gate.weight"));
}

//===----------------------------------------------------------------------===//
// Sharding, determinism, overwriting
//===----------------------------------------------------------------------===//

TEST(ShardingTest, IndexCoversEveryTensor) {
  TempDir tmp;
  SyntheticOptions opts = defaultsFor("qwen2_moe");
  opts.numShards = 3;
  std::string dir = writeModel(tmp, opts);
  EXPECT_EQ(listDir(dir), (std::vector<std::string>{
                              "config.json", "model-00001-of-00003.safetensors",
                              "model-00002-of-00003.safetensors",
                              "model-00003-of-00003.safetensors",
                              "model.safetensors.index.json"}));

  Expected<json::Value> index =
      json::parse(readBytes(dir + "/model.safetensors.index.json"));
  ASSERT_TRUE(bool(index)) << errorOf(std::move(index));
  const json::Object *weightMap = index->getAsObject()->getObject("weight_map");
  ASSERT_NE(weightMap, nullptr);
  std::optional<int64_t> totalSize =
      index->getAsObject()->getObject("metadata")->getInteger("total_size");

  Expected<std::vector<SyntheticTensor>> plan = syntheticTensorPlan(opts);
  ASSERT_TRUE(bool(plan));
  EXPECT_EQ(weightMap->size(), plan->size());
  std::map<std::string, int> perShard;
  int64_t bytes = 0;
  auto store = openStore(dir);
  for (const SyntheticTensor &tensor : *plan) {
    const json::Value *file = weightMap->get(tensor.name);
    ASSERT_NE(file, nullptr) << tensor.name;
    ++perShard[file->getAsString()->str()];
    Expected<TensorLocation> location = store->find(tensor.name);
    ASSERT_TRUE(bool(location)) << errorOf(std::move(location));
    EXPECT_EQ(sys::path::filename(location->path), *file->getAsString());
    bytes += location->info.numBytes();
  }
  EXPECT_EQ(totalSize, bytes);
  EXPECT_EQ(perShard.size(), 3u);

  // Sharding does not change any value.
  opts.numShards = 1;
  auto single = openStore(writeModel(tmp, opts, "single"));
  for (const SyntheticTensor &tensor : *plan)
    EXPECT_EQ(*store->rawData(tensor.name), *single->rawData(tensor.name))
        << tensor.name;
}

TEST(ShardingTest, EveryShardCountUpToTheTensorCount) {
  SyntheticOptions opts = defaultsFor("gpt_oss");
  Expected<std::vector<SyntheticTensor>> plan = syntheticTensorPlan(opts);
  ASSERT_TRUE(bool(plan));
  TempDir tmp;
  for (int64_t shards = 2; shards <= static_cast<int64_t>(plan->size());
       ++shards) {
    opts.numShards = shards;
    std::string dir = writeModel(tmp, opts, "s" + std::to_string(shards));
    for (int64_t s = 0; s < shards; ++s) {
      auto file = SafetensorsFile::open(dir + "/" + shardFileName(s, shards));
      ASSERT_TRUE(bool(file)) << errorOf(std::move(file));
      EXPECT_FALSE((*file)->tensors().empty()) << shards << " " << s;
    }
  }
}

TEST(DeterminismTest, SameSeedSameBytesDifferentSeedDifferentBytes) {
  TempDir tmp;
  for (const std::string &arch : syntheticArchitectures()) {
    SyntheticOptions opts = defaultsFor(arch);
    opts.seed = 1234;
    opts.numShards = 2;
    std::string a = writeModel(tmp, opts, arch + "-a");
    std::string b = writeModel(tmp, opts, arch + "-b");
    opts.seed = 1235;
    std::string c = writeModel(tmp, opts, arch + "-c");
    std::vector<std::string> files = listDir(a);
    EXPECT_EQ(files, listDir(b));
    EXPECT_EQ(files, listDir(c));
    for (const std::string &file : files) {
      EXPECT_EQ(readBytes(a + "/" + file), readBytes(b + "/" + file))
          << arch << " " << file;
      if (StringRef(file).ends_with(".json"))
        EXPECT_EQ(readBytes(a + "/" + file), readBytes(c + "/" + file));
      else
        EXPECT_NE(readBytes(a + "/" + file), readBytes(c + "/" + file))
            << arch << " " << file;
    }
  }
}

TEST(DeterminismTest, StreamIsFixedAcrossMachines) {
  // Published splitmix64 outputs for seed 0.
  SplitMix64 rng(0);
  EXPECT_EQ(rng.next(), 0xe220a8397b1dcdafull);
  EXPECT_EQ(rng.next(), 0x6e789e6aa1b965f4ull);
  EXPECT_EQ(rng.next(), 0x06c45d188009454full);
  // Normals: mean 0, variance 1.
  SplitMix64 normals = SplitMix64::forKey(3, "check");
  double sum = 0, squares = 0;
  const int count = 100000;
  for (int i = 0; i < count; ++i) {
    double z = normals.normal();
    sum += z;
    squares += z * z;
  }
  EXPECT_NEAR(sum / count, 0.0, 0.02);
  EXPECT_NEAR(squares / count, 1.0, 0.02);
  // Streams of different keys differ.
  EXPECT_NE(SplitMix64::forKey(3, "a").next(),
            SplitMix64::forKey(3, "b").next());
  EXPECT_NE(SplitMix64::forKey(3, "a").next(),
            SplitMix64::forKey(4, "a").next());
}

uint64_t fnv1a64(StringRef bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

TEST(DeterminismTest, GoldenValues) {
  // Pinned outputs: a change here means every synthetic model (and every
  // reference result computed from one) changed. Update only on purpose.
  // The router values were reproduced independently from the algorithm in
  // docs/hf-layouts.md.
  TempDir tmp;
  SyntheticOptions opts = defaultsFor("mixtral");
  opts.seed = 2024;
  opts.dtype = DType::F32;
  auto store = openStore(writeModel(tmp, opts, "f32"));
  std::vector<float> router =
      read(*store, "model.layers.0.block_sparse_moe.gate.weight");
  ASSERT_GE(router.size(), 3u);
  EXPECT_EQ(floatBits(router[0]), 1035969074u);
  EXPECT_EQ(floatBits(router[1]), 3178684689u);
  EXPECT_EQ(floatBits(router[2]), 1038573148u);
  opts.dtype = DType::BF16;
  std::string dir = writeModel(tmp, opts, "bf16");
  EXPECT_EQ(fnv1a64(readBytes(dir + "/model.safetensors")),
            2029887265654807850ull);
}

TEST(DeterminismTest, DTypeFollowsOptions) {
  TempDir tmp;
  for (DType dtype : {DType::F32, DType::F16}) {
    SyntheticOptions opts = defaultsFor("olmoe");
    opts.dtype = dtype;
    std::string dir = writeModel(tmp, opts, dtypeName(dtype).str());
    EXPECT_EQ(readConfig(dir).getString("torch_dtype"),
              dtype == DType::F32 ? "float32" : "float16");
    auto store = openStore(dir);
    expectTensor(*store, "model.layers.0.mlp.gate.weight", {8, 64}, dtype);
  }
}

TEST(OutputFolderTest, RefusesNonEmptyFolderUnlessOverwrite) {
  TempDir tmp;
  std::string dir = tmp.file("out");
  ASSERT_FALSE(sys::fs::create_directory(dir));
  {
    std::error_code ec;
    raw_fd_ostream os(dir + "/keep.txt", ec);
    os << "user data";
  }
  SyntheticOptions opts = defaultsFor("mixtral");
  std::string message = errorOf(writeSyntheticModel(opts, dir));
  EXPECT_CONTAINS(message, dir);
  EXPECT_CONTAINS(message, "refusing to overwrite");
  EXPECT_EQ(listDir(dir), std::vector<std::string>{"keep.txt"});

  opts.overwrite = true;
  ASSERT_FALSE(writeSyntheticModel(opts, dir));
  EXPECT_EQ(listDir(dir),
            (std::vector<std::string>{"config.json", "model.safetensors"}));
  // No temporary or backup folder is left behind.
  EXPECT_EQ(listDir(tmp.dir()), std::vector<std::string>{"out"});
}

TEST(OutputFolderTest, FillsAnEmptyFolderAndCreatesParents) {
  TempDir tmp;
  std::string empty = tmp.file("empty");
  ASSERT_FALSE(sys::fs::create_directory(empty));
  ASSERT_FALSE(writeSyntheticModel(defaultsFor("olmoe"), empty));
  EXPECT_EQ(listDir(empty),
            (std::vector<std::string>{"config.json", "model.safetensors"}));

  std::string nested = tmp.file("a/b/model");
  ASSERT_FALSE(writeSyntheticModel(defaultsFor("olmoe"), nested));
  EXPECT_EQ(listDir(nested),
            (std::vector<std::string>{"config.json", "model.safetensors"}));
  EXPECT_EQ(listDir(tmp.file("a/b")), std::vector<std::string>{"model"});
  EXPECT_EQ(listDir(tmp.dir()), (std::vector<std::string>{"a", "empty"}));

  std::string slash = tmp.file("with-slash") + "/";
  ASSERT_FALSE(writeSyntheticModel(defaultsFor("olmoe"), slash));
  EXPECT_EQ(listDir(tmp.file("with-slash")),
            (std::vector<std::string>{"config.json", "model.safetensors"}));

  std::string file = tmp.file("plain-file");
  {
    std::error_code ec;
    raw_fd_ostream os(file, ec);
  }
  EXPECT_CONTAINS(errorOf(writeSyntheticModel(defaultsFor("olmoe"), file)),
                  "not a directory");
}

} // namespace
