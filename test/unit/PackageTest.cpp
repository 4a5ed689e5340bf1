//===- PackageTest.cpp - Tests of JSON and model packages -----------------===//
//
// Part of moe-opt. The JSON parser and writer, and the package format:
// round trips, determinism, atomic writes, and the checks openPackage makes
// on damaged packages (each test edits one thing and expects the error that
// names it).
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Package.h"
#include "moe/runtime/Json.h"
#include "moe/runtime/KernelCache.h"
#include "moe/runtime/KernelContract.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <variant>

using namespace moe::runtime;
namespace fs = std::filesystem;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeFileText(const std::string &path, const std::string &text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

/// Error message of a failed parse, or "" when it parsed.
std::string parseError(const std::string &text) {
  Expected<Json> j = parseJson(text);
  return j ? std::string() : j.message();
}

/// A fresh directory, removed at the end of the test.
class TempDir {
public:
  TempDir() {
    const char *base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base && *base ? base : "/tmp") + "/moe-package-test-XXXXXX";
    if (!::mkdtemp(tmpl.data()))
      std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string &path() const { return path_; }
  std::string operator/(const std::string &name) const {
    return path_ + "/" + name;
  }
  /// Names of the entries, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto &e : fs::directory_iterator(path_))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

private:
  std::string path_;
};

/// name -> bytes of every file in a directory.
std::map<std::string, std::string> dirContents(const std::string &dir) {
  std::map<std::string, std::string> out;
  for (const auto &e : fs::directory_iterator(dir))
    out[e.path().filename().string()] = readFile(e.path().string());
  return out;
}

/// Deterministic values of a checkpoint weight, exactly representable in
/// bf16 and f16 (small multiples of 1/4).
std::vector<float> valuesOf(const moe::WeightRef &ref) {
  int64_t n = 1;
  for (int64_t d : ref.shape)
    n *= d;
  size_t seed = std::hash<std::string>()(ref.names.empty() ? "" : ref.names[0]);
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    out[i] =
        static_cast<float>(static_cast<int>((seed + 7 * i) % 33) - 16) * 0.25f;
  return out;
}

moe::WeightProvider testProvider() {
  return [](const moe::WeightRef &ref) -> Expected<std::vector<float>> {
    return valuesOf(ref);
  };
}

moe::WeightRef weight(std::vector<std::string> names,
                      std::vector<int64_t> shape, moe::ElementType type,
                      bool stacked = false) {
  moe::WeightRef r;
  r.names = std::move(names);
  for (const std::string &n : r.names)
    r.files.push_back("model-0000" + std::to_string(n.size() % 3) +
                      ".safetensors");
  r.shape = std::move(shape);
  r.type = type;
  r.stacked = stacked;
  return r;
}

moe::Binding valueArg(int i) {
  moe::Binding b;
  b.kind = moe::Binding::Value;
  b.value = i;
  return b;
}
moe::Binding weightArg(int i) {
  moe::Binding b;
  b.kind = moe::Binding::Weight;
  b.weight = i;
  return b;
}

/// Appends the contract lines the code generator would write for `plan`
/// (KernelContract.h) to its source.
void addContracts(moe::ModulePlan &plan) {
  for (const moe::LayerPlan &layer : plan.layers) {
    plan.source += moe::formatLayerContract(layer) + "\n";
    for (const moe::Launch &launch : layer.launches)
      plan.source +=
          moe::formatKernelContract(moe::contractOf(launch, layer)) + "\n";
  }
}

/// A two-layer model: a routed MoE block and a LoRA layer that shares a
/// weight with it, with a constant, three dtypes, two cubins, resources
/// and IR.
PackageContents sampleContents() {
  PackageContents c;
  c.producer = "moe-opt test";
  c.model.set("model_type", "qwen2_moe");
  c.model.set("source", "/models/tiny-moe");
  c.model.set("layers", 2);
  c.plan.source = "#include \"moe/runtime/KernelABI.h\"\n"
                  "extern \"C\" __global__ void moe_route_l0_0(MoEKernelArgs "
                  "a) {}\n"
                  "extern \"C\" __global__ void moe_experts_l0_1(MoEKernelArgs "
                  "a) {}\n"
                  "extern \"C\" __global__ void moe_lora_l1_0(MoEKernelArgs "
                  "a) {}\n";

  moe::LayerPlan l0;
  l0.layer = 0;
  l0.function = "layer0";
  moe::BufferShape x{moe::ElementType::BF16, 8, 0};
  moe::BufferShape ids{moe::ElementType::I32, 2, 0};
  moe::BufferShape probs{moe::ElementType::F32, 2, 0};
  moe::BufferShape counter{moe::ElementType::U32, 0, 1};
  moe::BufferShape y{moe::ElementType::F32, 8, 0};
  l0.values = {x, ids, probs, counter, y};
  l0.input = 0;
  l0.output = 4;
  // Two routers (the second over the same values: only indices matter).
  l0.routings = {{1, 2, 4}, {1, 2, 3}};
  l0.inputWidth = 8;
  l0.outputWidth = 8;
  l0.weights.push_back(weight({"model.layers.0.mlp.gate.weight"}, {4, 8},
                              moe::ElementType::F32));
  l0.weights.push_back(weight({"model.layers.0.mlp.experts.0.up.weight",
                               "model.layers.0.mlp.experts.1.up.weight",
                               "model.layers.0.mlp.experts.2.up.weight",
                               "model.layers.0.mlp.experts.3.up.weight"},
                              {4, 3, 8}, moe::ElementType::BF16, true));
  moe::WeightRef bias;
  bias.shape = {2};
  bias.type = moe::ElementType::F32;
  bias.inlineValues = {0.5f, -1.25f};
  l0.weights.push_back(bias);
  moe::Launch route;
  route.kernel = "moe_route_l0_0";
  route.origin = "moe.fused_route at model.mlir:3:5";
  route.blockThreads = 128;
  route.tokensPerBlock = 4;
  route.maxBlocks = 4096;
  route.slotsPerToken = 2;
  route.maxSlots = 64;
  route.args = {valueArg(0), weightArg(0), valueArg(1),
                valueArg(2), valueArg(3),  moe::Binding()};
  route.zeroOnce = {3};
  moe::Launch experts;
  experts.kernel = "moe_experts_l0_1";
  experts.origin = "moe.fused_experts at model.mlir:4:7";
  experts.blockThreads = 128;
  experts.dynamicSharedBytes = 4096;
  experts.tokensPerBlock = 1;
  experts.maxBlocks = 65535;
  experts.rowsPerToken = 2;
  experts.extraBlocks = 4;
  experts.gridColumns = 3;
  experts.slotsPerToken = 2;
  experts.minSlots = 65;
  experts.args = {valueArg(0),  valueArg(1),  valueArg(2),
                  weightArg(1), weightArg(2), valueArg(4)};
  l0.launches = {route, experts};
  // The form of a rank package's layer: the routing may also be given by
  // the caller (values 5 and 6).
  l0.values.push_back(moe::BufferShape{moe::ElementType::I32, 2, 0});
  l0.values.push_back(moe::BufferShape{moe::ElementType::F32, 2, 0});
  l0.givenIds = 5;
  l0.givenWeights = 6;
  c.plan.layers.push_back(l0);


  moe::LayerPlan l1;
  l1.layer = 1;
  l1.target = "q_proj";
  l1.function = "layer1_q_proj";
  l1.values = {moe::BufferShape{moe::ElementType::F16, 8, 0},
               moe::BufferShape{moe::ElementType::F32, 4, 0}};
  l1.input = 0;
  l1.output = 1;
  l1.inputWidth = 8;
  l1.outputWidth = 4;
  l1.allExperts = 3;
  l1.weights.push_back(weight({"model.layers.1.self_attn.q_proj.lora_A"},
                              {2, 8}, moe::ElementType::F16));
  // The same weight as layer 0's gate (shared between layers).
  l1.weights.push_back(weight({"model.layers.0.mlp.gate.weight"}, {4, 8},
                              moe::ElementType::F32));
  moe::Launch lora;
  lora.kernel = "moe_lora_l1_0";
  lora.origin = "moe.lora at model.mlir:9:3";
  lora.blockThreads = 256;
  lora.dynamicSharedBytes = 80;
  lora.args = {valueArg(0), weightArg(0), weightArg(1), valueArg(1)};
  l1.launches = {lora};
  // Extra inputs (GLIDER): sequence scores [B, 4] and a map [T] into them.
  l1.values.push_back(moe::BufferShape{moe::ElementType::F32, 0, 4});
  l1.values.push_back(moe::BufferShape{moe::ElementType::I32, 1, 0});
  l1.inputs.push_back({"seq_scores", 2, moe::ElementType::F32,
                       {moe::LayerInput::kAnyDim, 4}, -1});
  l1.inputs.push_back({"seq_map", 3, moe::ElementType::I32,
                       {moe::LayerInput::kTokenDim}, 0});
  // An extra result (RMoE's router state): [T, 4] f32.
  l1.values.push_back(moe::BufferShape{moe::ElementType::F32, 4, 0});
  l1.outputs.push_back({"state", 4, 4});
  c.plan.layers.push_back(l1);

  // Layer 0's router alone (a rank package's router-only plan).
  moe::LayerPlan r0;
  r0.layer = 0;
  r0.function = "layer0_router";
  r0.role = "router";
  r0.values = {x, ids, probs, counter};
  r0.input = 0;
  r0.output = -1;
  r0.routings = {{1, 2}};
  r0.inputWidth = 8;
  r0.outputWidth = 0;
  r0.weights.push_back(c.plan.layers[0].weights[0]);
  r0.launches = {c.plan.layers[0].launches[0]};
  c.plan.layers.push_back(r0);

  c.cubins["sm_90a"] = std::string("\x7f"
                                   "ELF\x02\x01\x00sm90a-cubin",
                                   16);
  c.cubins["sm_80"] = std::string("\x7f"
                                  "ELF\x02\x01\x00\xffsm80",
                                  12);
  KernelResources r;
  r.name = "moe_route_l0_0";
  r.arch = "sm_90a";
  r.isEntry = true;
  r.registers = 40;
  r.barriers = 1;
  r.sharedBytes = 512;
  r.constantBytes = 392;
  c.resources.push_back(r);
  r.arch = "sm_80";
  r.registers = 38;
  c.resources.push_back(r);
  r.name = "moe_experts_l0_1";
  r.arch = "sm_90a";
  r.registers = 168;
  r.spillStoresBytes = 8;
  r.spillLoadsBytes = 4;
  r.stackFrameBytes = 24;
  r.localBytes = 16;
  c.resources.push_back(r);
  r.name = "_Z6helperv"; // A device function that was not inlined.
  r.isEntry = false;
  r.registers = 12;
  c.resources.push_back(r);
  c.irText = "module {\n  func.func @layer0() { return }\n}\n";
  addContracts(c.plan);
  Status s = collectWeights(c, testProvider());
  if (!s.ok())
    ADD_FAILURE() << s.message();
  return c;
}

void expectSameRef(const moe::WeightRef &a, const moe::WeightRef &b,
                   const std::string &where) {
  EXPECT_EQ(a.names, b.names) << where;
  EXPECT_EQ(a.files, b.files) << where;
  EXPECT_EQ(a.stacked, b.stacked) << where;
  EXPECT_EQ(a.shape, b.shape) << where;
  EXPECT_EQ(a.type, b.type) << where;
  EXPECT_EQ(a.inlineValues, b.inlineValues) << where;
}

void expectSamePlan(const moe::ModulePlan &a, const moe::ModulePlan &b) {
  EXPECT_EQ(a.source, b.source);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const moe::LayerPlan &x = a.layers[l], &y = b.layers[l];
    std::string at = "layer " + std::to_string(l);
    EXPECT_EQ(x.layer, y.layer) << at;
    EXPECT_EQ(x.target, y.target) << at;
    EXPECT_EQ(x.function, y.function) << at;
    EXPECT_EQ(x.input, y.input) << at;
    EXPECT_EQ(x.output, y.output) << at;
    EXPECT_EQ(x.role, y.role) << at;
    EXPECT_EQ(x.givenIds, y.givenIds) << at;
    EXPECT_EQ(x.givenWeights, y.givenWeights) << at;
    ASSERT_EQ(x.inputs.size(), y.inputs.size()) << at;
    for (size_t i = 0; i < x.inputs.size(); ++i) {
      EXPECT_EQ(x.inputs[i].name, y.inputs[i].name) << at;
      EXPECT_EQ(x.inputs[i].value, y.inputs[i].value) << at;
      EXPECT_EQ(x.inputs[i].type, y.inputs[i].type) << at;
      EXPECT_EQ(x.inputs[i].dims, y.inputs[i].dims) << at;
      EXPECT_EQ(x.inputs[i].indexes, y.inputs[i].indexes) << at;
    }
    ASSERT_EQ(x.outputs.size(), y.outputs.size()) << at;
    for (size_t i = 0; i < x.outputs.size(); ++i) {
      EXPECT_EQ(x.outputs[i].name, y.outputs[i].name) << at;
      EXPECT_EQ(x.outputs[i].value, y.outputs[i].value) << at;
      EXPECT_EQ(x.outputs[i].width, y.outputs[i].width) << at;
    }
    ASSERT_EQ(x.routings.size(), y.routings.size()) << at;
    for (size_t r = 0; r < x.routings.size(); ++r) {
      EXPECT_EQ(x.routings[r].ids, y.routings[r].ids) << at << " router " << r;
      EXPECT_EQ(x.routings[r].weights, y.routings[r].weights)
          << at << " router " << r;
      EXPECT_EQ(x.routings[r].experts, y.routings[r].experts)
          << at << " router " << r;
    }
    EXPECT_EQ(x.inputWidth, y.inputWidth) << at;
    EXPECT_EQ(x.outputWidth, y.outputWidth) << at;
    EXPECT_EQ(x.allExperts, y.allExperts) << at;
    ASSERT_EQ(x.values.size(), y.values.size()) << at;
    for (size_t v = 0; v < x.values.size(); ++v) {
      EXPECT_EQ(x.values[v].type, y.values[v].type) << at;
      EXPECT_EQ(x.values[v].perToken, y.values[v].perToken) << at;
      EXPECT_EQ(x.values[v].fixed, y.values[v].fixed) << at;
    }
    ASSERT_EQ(x.weights.size(), y.weights.size()) << at;
    for (size_t w = 0; w < x.weights.size(); ++w)
      expectSameRef(x.weights[w], y.weights[w],
                    at + " weight " + std::to_string(w));
    ASSERT_EQ(x.launches.size(), y.launches.size()) << at;
    for (size_t k = 0; k < x.launches.size(); ++k) {
      const moe::Launch &p = x.launches[k], &q = y.launches[k];
      EXPECT_EQ(p.kernel, q.kernel) << at;
      EXPECT_EQ(p.origin, q.origin) << at;
      EXPECT_EQ(p.blockThreads, q.blockThreads) << at;
      EXPECT_EQ(p.dynamicSharedBytes, q.dynamicSharedBytes) << at;
      EXPECT_EQ(p.tokensPerBlock, q.tokensPerBlock) << at;
      EXPECT_EQ(p.maxBlocks, q.maxBlocks) << at;
      EXPECT_EQ(p.rowsPerToken, q.rowsPerToken) << at;
      EXPECT_EQ(p.extraBlocks, q.extraBlocks) << at;
      EXPECT_EQ(p.gridColumns, q.gridColumns) << at;
      EXPECT_EQ(p.slotsPerToken, q.slotsPerToken) << at;
      EXPECT_EQ(p.minSlots, q.minSlots) << at;
      EXPECT_EQ(p.maxSlots, q.maxSlots) << at;
      EXPECT_EQ(p.zeroOnce, q.zeroOnce) << at;
      EXPECT_TRUE(p.tensorMaps == q.tensorMaps) << at;
      ASSERT_EQ(p.args.size(), q.args.size()) << at;
      for (size_t a = 0; a < p.args.size(); ++a) {
        EXPECT_EQ(p.args[a].kind, q.args[a].kind) << at << " arg " << a;
        EXPECT_EQ(p.args[a].value, q.args[a].value) << at << " arg " << a;
        EXPECT_EQ(p.args[a].weight, q.args[a].weight) << at << " arg " << a;
      }
    }
  }
}

/// Fixture: a written sample package in a temporary directory, and helpers
/// to damage it.
class PackageFiles : public ::testing::Test {
protected:
  void SetUp() override {
    contents = sampleContents();
    dir = tmp / "model.moepkg";
    Status s = writePackage(contents, dir);
    ASSERT_TRUE(s.ok()) << s.message();
    originalManifest = readFile(file("manifest.json"));
  }

  std::string file(const std::string &name) const { return dir + "/" + name; }

  Json manifest() const {
    Expected<Json> j = parseJson(readFile(file("manifest.json")));
    EXPECT_TRUE(j.ok());
    return j ? *j : Json();
  }
  void setManifest(const Json &j) {
    writeFileText(file("manifest.json"), j.dump());
  }
  /// Edits the manifest as written, opens the package, and returns the
  /// error (or "" when it opened).
  std::string openAfter(const std::function<void(Json &)> &edit) {
    Expected<Json> parsed = parseJson(originalManifest);
    EXPECT_TRUE(parsed.ok());
    Json m = parsed ? *parsed : Json();
    edit(m);
    setManifest(m);
    return openError();
  }
  std::string openError(const OpenPackageOptions &options = {}) const {
    Expected<LoadedPackage> p = openPackage(dir, options);
    return p ? std::string() : p.message();
  }

  TempDir tmp;
  PackageContents contents;
  std::string dir;
  std::string originalManifest;
};

/// The member path `a.b[2].c` of a manifest (numbers index arrays).
Json &at(Json &root,
         std::initializer_list<std::variant<const char *, int>> path) {
  Json *j = &root;
  for (const auto &p : path) {
    if (std::holds_alternative<int>(p))
      j = const_cast<Json *>(&j->items()[std::get<int>(p)]);
    else
      j = j->find(std::get<const char *>(p));
    if (!j)
      std::abort();
  }
  return *j;
}

//===----------------------------------------------------------------------===//
// JSON
//===----------------------------------------------------------------------===//

TEST(Json, ParsesEveryKindAndKeepsMemberOrder) {
  Expected<Json> j = parseJson(
      " {\"z\": null, \"a\": true, \"m\": false, \"n\": -12.5e1, "
      "\"s\": \"x\\ty\", \"arr\": [1, [2], {}], \"o\": {\"k\": []}} \n");
  ASSERT_TRUE(j.ok()) << j.message();
  ASSERT_TRUE(j->isObject());
  std::vector<std::string> keys;
  for (const Json::Member &m : j->members())
    keys.push_back(m.first);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"z", "a", "m", "n", "s", "arr", "o"}));
  EXPECT_TRUE(j->find("z")->isNull());
  EXPECT_TRUE(j->find("a")->asBool());
  EXPECT_TRUE(j->find("m")->isBool());
  EXPECT_FALSE(j->find("m")->asBool());
  EXPECT_EQ(j->find("n")->asNumber(), -125.0);
  EXPECT_EQ(j->find("n")->asInt64(), std::optional<int64_t>(-125));
  EXPECT_EQ(j->find("s")->asString(), "x\ty");
  EXPECT_EQ(j->find("arr")->size(), 3u);
  EXPECT_TRUE(j->find("arr")->items()[2].isObject());
  EXPECT_TRUE(j->find("o")->find("k")->isArray());
  EXPECT_EQ(j->find("missing"), nullptr);
  // Accessors of the wrong kind give defaults, not crashes.
  EXPECT_EQ(j->find("s")->asNumber(), 0.0);
  EXPECT_EQ(j->find("n")->asString(), "");
  EXPECT_TRUE(j->find("n")->items().empty());
  EXPECT_EQ(j->find("n")->find("x"), nullptr);
}

TEST(Json, IntegersAreExactUpTo2To53) {
  Expected<Json> j = parseJson("[9007199254740992, -9007199254740992, "
                               "9007199254740991, 1e17, 1.5, 4096.0, -0]");
  ASSERT_TRUE(j.ok()) << j.message();
  const Json::Array &a = j->items();
  EXPECT_EQ(a[0].asInt64(), std::optional<int64_t>(9007199254740992));
  EXPECT_EQ(a[1].asInt64(), std::optional<int64_t>(-9007199254740992));
  EXPECT_EQ(a[2].asInt64(), std::optional<int64_t>(9007199254740991));
  EXPECT_FALSE(a[3].isInteger()); // Beyond 2^53: not exact.
  EXPECT_FALSE(a[4].asInt64().has_value());
  EXPECT_EQ(a[5].asInt64(), std::optional<int64_t>(4096));
  EXPECT_TRUE(std::signbit(a[6].asNumber()));
  // Integers print without a fraction or exponent.
  EXPECT_EQ(Json(int64_t(9007199254740991)).dump(0), "9007199254740991");
  EXPECT_EQ(Json(-3).dump(0), "-3");
}

TEST(Json, RoundTripsNumbersStringsAndStructure) {
  Json v = Json::object();
  Json &nums = v.set("numbers", Json::array());
  for (double d : {0.1, 1.0 / 3.0, 1e-300, 5e-324, 1.7976931348623157e308, -2.5,
                   123456789.125, 1e21, 0.0, -0.0})
    nums.push(d);
  v.set("strings",
        Json(Json::Array{Json(""), Json("quote \" backslash \\ slash /"),
                         Json("\b\f\n\r\t\x01\x1f\x7f"), Json("é 中文 😀"),
                         Json(std::string("nul\0inside", 10))}));
  Json &nested = v.set("nested", Json::object());
  nested.set("empty_array", Json::array());
  nested.set("empty_object", Json::object());
  nested.set("deep", Json::array()).push(Json::object()).set("x", true);
  v.set("null", nullptr);
  const Json &numbers = *v.find("numbers"); // `nums` moved with the members.
  for (int indent : {2, 0}) {
    std::string text = v.dump(indent);
    Expected<Json> back = parseJson(text);
    ASSERT_TRUE(back.ok()) << back.message() << "\n" << text;
    EXPECT_TRUE(*back == v) << text;
    // Printing again gives the same text.
    EXPECT_EQ(back->dump(indent), text);
    for (size_t i = 0; i < numbers.size(); ++i) {
      double a = numbers.items()[i].asNumber();
      double b = back->find("numbers")->items()[i].asNumber();
      EXPECT_EQ(std::memcmp(&a, &b, sizeof a), 0) << i;
    }
  }
}

TEST(Json, UnicodeEscapesAndSurrogatePairs) {
  Expected<Json> j =
      parseJson("[\"\\u00e9\\u4E2D\", \"\\ud83d\\ude00\", \"\\u0000x\", "
                "\"\\/\"]");
  ASSERT_TRUE(j.ok()) << j.message();
  EXPECT_EQ(j->items()[0].asString(), "\xc3\xa9\xe4\xb8\xad");
  EXPECT_EQ(j->items()[1].asString(), "\xf0\x9f\x98\x80");
  EXPECT_EQ(j->items()[2].asString(), std::string("\0x", 2));
  EXPECT_EQ(j->items()[3].asString(), "/");
  // The writer keeps UTF-8 as is and escapes control characters.
  EXPECT_EQ(Json("é\x01\n").dump(0), "\"é\\u0001\\n\"");
  // Invalid UTF-8 cannot be JSON: it prints as U+FFFD.
  EXPECT_EQ(Json(std::string("a\xff")).dump(0), "\"a\xef\xbf\xbd\"");
  EXPECT_TRUE(isValidUtf8("é😀"));
  EXPECT_FALSE(isValidUtf8("\xc0\xaf"));         // Overlong.
  EXPECT_FALSE(isValidUtf8("\xed\xa0\x80"));     // A surrogate.
  EXPECT_FALSE(isValidUtf8("\xf4\x90\x80\x80")); // Above U+10FFFF.
  EXPECT_FALSE(isValidUtf8("\xe4\xb8"));         // Truncated.
}

TEST(Json, ParseErrorsGiveLineColumnAndWhatWasExpected) {
  struct Case {
    std::string text, error;
  };
  std::vector<Case> cases = {
      {"", "1:1: expected a value, found the end of the text"},
      {"{\"a\": 1,}",
       "1:9: expected a member name (a string) after ',', found '}'"},
      {"[1, 2,]", "1:7: expected a value after ',' (no trailing commas)"},
      {"{\n  \"a\": tru\n}", "2:8: expected a value, found 't'"},
      {"{\n  \"a\": true,\n  \"b\" 1\n}",
       "3:7: expected ':' after member name \"b\", found '1'"},
      {"[1 2]", "1:4: expected ',' or ']' after an array element, found '2'"},
      {"{\"a\": 1 \"b\"}",
       "1:9: expected ',' or '}' after an object member, found '\"'"},
      {"\"abc", "1:5: expected '\"' to end the string, found the end of the "
                "text"},
      {"01", "1:2: expected no leading zeros in a number"},
      {"-", "1:2: expected a digit, found the end of the text"},
      {"1.", "1:3: expected a digit after '.'"},
      {"1e+", "1:4: expected a digit in the exponent"},
      {"+1", "1:1: expected a value, found '+'"},
      {"NaN", "1:1: expected a value, found 'N'"},
      {"1e999", "1:1: expected a number within the range of a double"},
      {"[1] 2", "1:5: expected the end of the document, found '2'"},
      {"{\"a\": 1, \"a\": 2}",
       "1:10: expected unique member names, found 'a' a second time"},
      {"\"\\ud800\"", "1:2: expected a low surrogate escape"},
      {"\"\\ud800\\u0041\"", "1:8: expected a low surrogate (\\uDC00-\\uDFFF)"},
      {"\"\\udc00\"", "1:2: expected a high surrogate before a low surrogate"},
      {"\"\\u12G4\"", "1:6: expected 4 hex digits after \\u, found 'G'"},
      {"\"\\x\"", "1:3: expected one of \" \\ / b f n r t u after '\\'"},
      {"\"a\x01\"", "1:3: expected a character of a string (control "
                    "characters must be escaped), found control character "
                    "U+0001"},
      {"\"a\xff\"", "1:3: expected well-formed UTF-8, found invalid UTF-8 "
                    "byte 0xFF"},
      // Columns count code points: 'x' is the 7th character.
      {"[\"é\", x]", "1:7: expected a value, found 'x'"},
      {"truex", "1:1: expected a value, found 't'"},
      {"[true false]", "1:7: expected ',' or ']' after an array element"},
      {"\xef\xbb\xbf{}", "1:1: expected a value"},
  };
  for (const Case &c : cases) {
    std::string error = parseError(c.text);
    EXPECT_EQ(error.substr(0, c.error.size()), c.error)
        << "text: " << c.text << "\nerror: " << error;
  }
}

TEST(Json, DeepNestingIsAnErrorNotACrash) {
  std::string ok(kJsonMaxDepth, '['), okEnd(kJsonMaxDepth, ']');
  EXPECT_EQ(parseError(ok + okEnd), "");
  std::string deep(100000, '[');
  std::string error = parseError(deep);
  EXPECT_NE(error.find("1:" + std::to_string(kJsonMaxDepth + 1) +
                       ": expected at most " + std::to_string(kJsonMaxDepth) +
                       " nested"),
            std::string::npos)
      << error;
  EXPECT_NE(parseError(std::string(100000, '{')), "");
}

TEST(Json, WriterIsPrettyAndDeterministic) {
  Json v = Json::object();
  v.set("format", "moe-package");
  v.set("shape", Json(Json::Array{Json(4), Json(3), Json(8)}));
  Json &items = v.set("items", Json::array());
  items.push(Json::object()).set("a", 1);
  items.push(Json::array());
  Json &big = items.push(Json::object());
  big.set("a_long_member_name", "with a long value");
  big.set("another_long_member_name", "and another long value");
  items.push(Json::object()).set("nested", Json::array());
  v.set("empty", Json::object());
  v.set("format", "replaced in place");
  const char *expected =
      "{\n"
      "  \"format\": \"replaced in place\",\n"
      "  \"shape\": [4, 3, 8],\n"
      "  \"items\": [\n"
      "    {\"a\": 1},\n"
      "    [],\n"
      "    {\n"
      "      \"a_long_member_name\": \"with a long value\",\n"
      "      \"another_long_member_name\": \"and another long value\"\n"
      "    },\n"
      "    {\n"
      "      \"nested\": []\n"
      "    }\n"
      "  ],\n"
      "  \"empty\": {}\n"
      "}\n";
  EXPECT_EQ(v.dump(), expected);
  EXPECT_EQ(v.dump(0),
            "{\"format\":\"replaced in place\",\"shape\":[4,3,8],\"items\":[{"
            "\"a\":1},[],{\"a_long_member_name\":\"with a long value\","
            "\"another_long_member_name\":\"and another long value\"},{"
            "\"nested\":[]}],\"empty\":{}}");
  Json w = Json::object();
  w.set("n", std::nan(""));
  w.set("inf", HUGE_VAL);
  EXPECT_EQ(w.dump(0), "{\"n\":null,\"inf\":null}");
}

//===----------------------------------------------------------------------===//
// Writing and opening packages
//===----------------------------------------------------------------------===//

TEST(Package, CollectWeightsMakesOneTensorPerDistinctWeight) {
  PackageContents c = sampleContents();
  // gate, experts (stacked), the constant, lora_A; layer 1's gate is shared.
  ASSERT_EQ(c.tensors.size(), 4u);
  ASSERT_EQ(c.layerTensors.size(), 3u);
  EXPECT_EQ(c.layerTensors[0], (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(c.layerTensors[1], (std::vector<int>{3, 0}));
  EXPECT_EQ(c.layerTensors[2], (std::vector<int>{0})); // layer 0's router
  EXPECT_EQ(c.tensors[0].size(), 4u * 8 * 4);     // f32
  EXPECT_EQ(c.tensors[1].size(), 4u * 3 * 8 * 2); // bf16
  EXPECT_EQ(c.tensors[2].size(), 2u * 4);         // constant f32
  EXPECT_EQ(c.tensors[3].size(), 2u * 8 * 2);     // f16
  // bf16 and f16 are uint16 bit patterns, little-endian.
  Expected<std::vector<float>> back = decodeTensorValues(
      c.tensors[1].data(), c.tensors[1].size(), moe::ElementType::BF16);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, valuesOf(c.plan.layers[0].weights[1]));
  std::vector<uint8_t> one =
      moe::encodeElements({1.0f}, moe::ElementType::BF16);
  EXPECT_EQ(one, (std::vector<uint8_t>{0x80, 0x3f}));
  one = moe::encodeElements({1.0f}, moe::ElementType::F16);
  EXPECT_EQ(one, (std::vector<uint8_t>{0x00, 0x3c}));

  // A provider that returns the wrong number of values is reported.
  PackageContents bad = sampleContents();
  Status s = collectWeights(bad, [](const moe::WeightRef &) {
    return Expected<std::vector<float>>(std::vector<float>(3, 0.f));
  });
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("plan.layers[0].weights[0] "
                             "(\"model.layers.0.mlp.gate.weight\" [4, 8] "
                             "f32): got 12 bytes, the shape and dtype need "
                             "128"),
            std::string::npos)
      << s.message();
  // Raw bytes are taken as they are.
  s = collectWeightBytes(bad, [](const moe::WeightRef &ref) {
    int64_t n = moe::elementSize(ref.type);
    for (int64_t d : ref.shape)
      n *= d;
    return Expected<std::vector<uint8_t>>(
        std::vector<uint8_t>(static_cast<size_t>(n), 0xab));
  });
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(bad.tensors[1], std::vector<uint8_t>(4 * 3 * 8 * 2, 0xab));
  // Constants always come from their inline values.
  EXPECT_EQ(bad.tensors[2],
            moe::encodeElements({0.5f, -1.25f}, moe::ElementType::F32));
}

TEST(Package, WriteThenOpenGivesTheSamePlanAndBytes) {
  TempDir tmp;
  PackageContents c = sampleContents();
  std::string dir = tmp / "pkg";
  Status s = writePackage(c, dir);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"pkg"});
  std::vector<std::string> files;
  for (const auto &f : dirContents(dir))
    files.push_back(f.first);
  EXPECT_EQ(files,
            (std::vector<std::string>{"kernels.cu", "kernels.sm_80.cubin",
                                      "kernels.sm_90a.cubin", "manifest.json",
                                      "model.opt.mlir", "weights.bin"}));

  Expected<LoadedPackage> p = openPackage(dir);
  ASSERT_TRUE(p.ok()) << p.message();
  expectSamePlan(p->plan(), c.plan);
  EXPECT_EQ(p->source(), c.plan.source);
  EXPECT_EQ(p->producer(), "moe-opt test");
  EXPECT_TRUE(p->model() == c.model);
  EXPECT_EQ(p->cubinArchs(), (std::vector<std::string>{"sm_80", "sm_90a"}));
  ASSERT_NE(p->cubin("sm_90a"), nullptr);
  EXPECT_EQ(*p->cubin("sm_90a"), c.cubins["sm_90a"]);
  EXPECT_EQ(*p->cubin("sm_80"), c.cubins["sm_80"]);
  EXPECT_EQ(p->cubin("sm_100"), nullptr);
  EXPECT_EQ(p->irPath(), dir + "/model.opt.mlir");
  EXPECT_EQ(readFile(p->irPath()), c.irText);

  ASSERT_EQ(p->resources().size(), c.resources.size());
  const KernelResources *r = p->findResources("moe_experts_l0_1", "sm_90a");
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(r->isEntry);
  EXPECT_EQ(r->registers, 168);
  EXPECT_EQ(r->spillStoresBytes, 8);
  EXPECT_EQ(r->spillLoadsBytes, 4);
  EXPECT_EQ(r->stackFrameBytes, 24);
  EXPECT_EQ(r->localBytes, 16);
  EXPECT_EQ(r->sharedBytes, 512);
  EXPECT_EQ(r->constantBytes, 392);
  EXPECT_EQ(r->barriers, 1);
  const KernelResources *helper = p->findResources("_Z6helperv", "sm_90a");
  ASSERT_NE(helper, nullptr);
  EXPECT_FALSE(helper->isEntry);
  EXPECT_EQ(p->findResources("moe_lora_l1_0", "sm_90a"), nullptr);

  ASSERT_EQ(p->tensors().size(), c.tensors.size());
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    Expected<std::vector<uint8_t>> b = p->tensorBytes(t);
    ASSERT_TRUE(b.ok()) << b.message();
    EXPECT_EQ(*b, c.tensors[t]) << t;
    EXPECT_EQ(p->tensors()[t].offset % kPackageWeightAlignment, 0) << t;
  }
  EXPECT_TRUE(p->tensors()[2].constant);
  EXPECT_FALSE(p->tensors()[0].constant);
  EXPECT_EQ(p->tensorIndex(1, 1), 0);
  EXPECT_EQ(p->tensorIndex(1, 0), 3);
  EXPECT_EQ(p->tensorIndex(1, 2), -1);
  EXPECT_EQ(p->tensorIndex(5, 0), -1);
  EXPECT_FALSE(p->tensorBytes(99).ok());
  EXPECT_FALSE(p->tensorValues(99).ok());

  // weights.bin: each tensor at its 256-aligned offset, zero padding.
  std::string bin = readFile(dir + "/weights.bin");
  ASSERT_EQ(bin.size(), static_cast<size_t>(p->tensors().back().offset +
                                            p->tensors().back().bytes));
  EXPECT_EQ(p->tensors()[1].offset, 256);
  EXPECT_EQ(p->tensors()[2].offset, 512);
  EXPECT_EQ(bin.substr(128, 128), std::string(128, '\0'));
}

/// The f32 values of a provider's bytes.
std::vector<float> valuesOfBytes(const moe::WeightBytes &b) {
  Expected<std::vector<float>> v = decodeTensorValues(b.data, b.size, b.type);
  EXPECT_TRUE(v.ok()) << v.message();
  return v ? *v : std::vector<float>();
}

TEST(Package, WeightProviderMatchesByPositionAndByIdentity) {
  TempDir tmp;
  PackageContents c = sampleContents();
  ASSERT_TRUE(writePackage(c, tmp / "pkg").ok());
  moe::WeightBytesProvider provider;
  moe::ModulePlan copy;
  std::vector<uint8_t> f16Bytes;
  {
    Expected<LoadedPackage> p = openPackage(tmp / "pkg");
    ASSERT_TRUE(p.ok()) << p.message();
    provider = p->weightProvider();
    copy = p->plan();
    // By position: the WeightRefs inside the package's plan. The provider
    // hands out weights.bin's bytes, in the stored dtype, read into memory
    // the result owns (16 bytes of slack for the kernels' loads).
    for (size_t l = 0; l < p->plan().layers.size(); ++l)
      for (size_t w = 0; w < p->plan().layers[l].weights.size(); ++w) {
        const moe::WeightRef &ref = p->plan().layers[l].weights[w];
        if (!ref.inlineValues.empty())
          continue;
        Expected<moe::WeightBytes> v = provider(ref);
        ASSERT_TRUE(v.ok()) << v.message();
        Expected<std::vector<uint8_t>> stored =
            p->tensorBytes(p->tensorIndex(l, w));
        ASSERT_TRUE(stored.ok()) << stored.message();
        EXPECT_EQ(std::vector<uint8_t>(v->data, v->data + v->size), *stored)
            << l << " " << w;
        EXPECT_EQ(v->type, ref.type) << l << " " << w;
        EXPECT_GE(v->readable, v->size + 16) << l << " " << w;
        EXPECT_NE(v->owner, nullptr);
        EXPECT_EQ(valuesOfBytes(*v), valuesOf(ref));
      }
    // Constants keep their values in the plan.
    EXPECT_EQ(p->plan().layers[0].weights[2].inlineValues,
              (std::vector<float>{0.5f, -1.25f}));
    Expected<std::vector<float>> f16 = p->tensorValues(3);
    ASSERT_TRUE(f16.ok());
    EXPECT_EQ(*f16, valuesOf(c.plan.layers[1].weights[0]));
    f16Bytes = p->tensorBytes(3).value();
  }
  // By identity, from a copy of the plan, after the package object is gone
  // (the provider keeps the file open); `files` does not matter.
  moe::WeightRef ref = copy.layers[1].weights[0];
  ref.files = {"elsewhere.safetensors"};
  Expected<moe::WeightBytes> v = provider(ref);
  ASSERT_TRUE(v.ok()) << v.message();
  EXPECT_EQ(std::vector<uint8_t>(v->data, v->data + v->size), f16Bytes);
  EXPECT_EQ(v->type, moe::ElementType::F16);
  EXPECT_EQ(valuesOfBytes(*v), valuesOf(ref));
  v = provider(copy.layers[0].weights[2]); // The constant, by its values.
  ASSERT_TRUE(v.ok()) << v.message();
  EXPECT_EQ(valuesOfBytes(*v), (std::vector<float>{0.5f, -1.25f}));
  // A weight the package does not have.
  ref.shape = {8, 2};
  v = provider(ref);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.message().find("has no weight "
                             "\"model.layers.1.self_attn.q_proj.lora_A\" "
                             "[8, 2] f16"),
            std::string::npos)
      << v.message();
}

/// A backend that records what the executor does with weights: host memory
/// it allocates, and each upload's source. `host`: it claims to read host
/// memory (as emu does).
class RecordingBackend : public moe::KernelBackend {
public:
  explicit RecordingBackend(bool host) : host(host) {}
  ~RecordingBackend() override {
    for (auto &[p, bytes] : live)
      std::free(p);
  }
  std::string name() const override { return "recording"; }
  Expected<void *> allocate(size_t bytes) override {
    void *p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    live[p] = bytes;
    allocatedBytes += bytes;
    return p;
  }
  void release(void *p) override {
    live.erase(p);
    std::free(p);
  }
  Status upload(void *dst, const void *src, size_t bytes) override {
    uploads[dst] = src;
    std::memcpy(dst, src, bytes);
    return Status::success();
  }
  Status download(void *dst, const void *src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
    return Status::success();
  }
  Status zero(void *dst, size_t bytes) override {
    std::memset(dst, 0, bytes);
    return Status::success();
  }
  Status launch(const std::string &, const MoEKernelArgs &, unsigned, unsigned,
                unsigned) override {
    return Status::success();
  }
  Status synchronize() override { return Status::success(); }
  bool readsHostMemory() const override { return host; }

  bool host;
  std::map<void *, size_t> live;
  std::map<void *, const void *> uploads;
  size_t allocatedBytes = 0;
};

// Defect 8 of issue 10: the executor took f32 values and re-encoded them
// (3x host memory per bf16 tensor). Now a package's weights reach the
// kernels as weights.bin's bytes, read once with pread: run on in place on
// a backend that reads host memory, uploaded from that read on a device.
TEST(Package, TheExecutorRunsOnThePackagesBytesWithoutACopy) {
  TempDir tmp;
  PackageContents c = sampleContents();
  ASSERT_TRUE(writePackage(c, tmp / "pkg").ok());
  moe::LayerPlan plan; // Outlives the package below.
  RecordingBackend host(true), device(false);
  std::unique_ptr<moe::LayerExecutor> hostExec;
  {
    Expected<LoadedPackage> p = openPackage(tmp / "pkg");
    ASSERT_TRUE(p.ok()) << p.message();
    plan = p->plan().layers[0];
    hostExec = std::make_unique<moe::LayerExecutor>(plan, host);
    ASSERT_EQ(plan.weights[1].type, moe::ElementType::BF16);
    moe::LayerExecutor deviceExec(plan, device);
    ASSERT_TRUE(hostExec->loadWeights(p->weightProvider()).ok());
    ASSERT_TRUE(deviceExec.loadWeights(p->weightProvider()).ok());
    for (size_t w = 0; w < plan.weights.size(); ++w) {
      Expected<std::vector<uint8_t>> read =
          p->tensorBytes(p->tensorIndex(0, w));
      ASSERT_TRUE(read.ok()) << read.message();
      const std::vector<uint8_t> &stored = *read;
      if (!plan.weights[w].inlineValues.empty()) {
        // A constant is encoded from the plan's values, and the kernels
        // read that encoding (held by the executor) in place.
        EXPECT_FALSE(hostExec->weightCopied(w));
        ASSERT_NE(hostExec->weightData(w), nullptr);
        EXPECT_EQ(
            std::memcmp(hostExec->weightData(w), stored.data(), stored.size()),
            0);
        continue;
      }
      // In place: the kernels read the provider's read of weights.bin (no
      // allocation of the backend's, no second copy).
      ASSERT_NE(hostExec->weightData(w), nullptr) << w;
      EXPECT_EQ(
          std::memcmp(hostExec->weightData(w), stored.data(), stored.size()), 0)
          << w;
      EXPECT_FALSE(hostExec->weightCopied(w)) << w;
      // On a device: one allocation of the stored size (+16 bytes of
      // slack), filled from the read.
      const void *buffer = deviceExec.weightData(w);
      EXPECT_TRUE(deviceExec.weightCopied(w)) << w;
      ASSERT_TRUE(device.live.count(const_cast<void *>(buffer))) << w;
      EXPECT_EQ(device.live[const_cast<void *>(buffer)], stored.size() + 16);
      EXPECT_EQ(std::memcmp(buffer, stored.data(), stored.size()), 0) << w;
    }
    // Nothing was allocated for weights on the host backend.
    EXPECT_EQ(host.allocatedBytes, 0u);
  }
  // The executor keeps the bytes alive after the package object is gone.
  const auto *bf16 = static_cast<const uint8_t *>(hostExec->weightData(1));
  Expected<std::vector<float>> values = decodeTensorValues(
      bf16, c.tensors[c.layerTensors[0][1]].size(), moe::ElementType::BF16);
  ASSERT_TRUE(values.ok());
  EXPECT_EQ(*values, valuesOf(plan.weights[1]));
  // Binding replaces the in-place weight and releases nothing of the
  // package's.
  std::vector<uint8_t> mine(c.tensors[c.layerTensors[0][1]].size() + 16);
  hostExec->bindWeight(1, mine.data());
  EXPECT_EQ(hostExec->weightData(1), mine.data());
  hostExec.reset();
}

// Issue 15: the kernels read weights.bin through its mapping, so a package
// truncated while a model ran stopped the process with SIGBUS. The bytes
// the kernels run on are now read (pread) into memory of their own: weights
// loaded before the truncation keep running, and a read after it is an
// error naming the file.
TEST(Package, AWeightsFileTruncatedWhileInUseIsAnErrorNotSIGBUS) {
  TempDir tmp;
  PackageContents c = sampleContents();
  ASSERT_TRUE(writePackage(c, tmp / "pkg").ok());
  Expected<LoadedPackage> p = openPackage(tmp / "pkg");
  ASSERT_TRUE(p.ok()) << p.message();
  moe::LayerPlan plan = p->plan().layers[0];
  RecordingBackend host(true);
  moe::LayerExecutor loaded(plan, host);
  ASSERT_TRUE(loaded.loadWeights(p->weightProvider()).ok());

  std::string bin = tmp / "pkg/weights.bin";
  ASSERT_EQ(::truncate(bin.c_str(), 0), 0);

  // What was loaded is the executor's: still readable, still the weights.
  for (size_t w = 0; w < plan.weights.size(); ++w) {
    if (!plan.weights[w].inlineValues.empty())
      continue;
    const std::vector<uint8_t> &want =
        c.tensors[static_cast<size_t>(c.layerTensors[0][w])];
    EXPECT_EQ(std::memcmp(loaded.weightData(w), want.data(), want.size()), 0)
        << w;
  }
  // Loading again reads the file: an error, from every reader.
  std::string expected =
      bin + ": ends at 0 bytes, " +
      std::to_string(p->tensors().back().offset + p->tensors().back().bytes) +
      " when the package was opened: it was truncated or rewritten while in "
      "use";
  moe::LayerExecutor again(plan, host);
  Status s = again.loadWeights(p->weightProvider());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), expected);
  int t = p->tensorIndex(0, 1);
  ASSERT_GE(t, 0);
  EXPECT_EQ(p->tensorBytes(static_cast<size_t>(t)).message(), expected);
  EXPECT_EQ(p->tensorValues(static_cast<size_t>(t)).message(), expected);
  EXPECT_EQ(p->toContents().message(), expected);
}

TEST(Package, TheExecutorConvertsBytesOfAnotherDtypeOnce) {
  moe::LayerPlan plan;
  plan.weights.push_back(weight({"w"}, {2, 3}, moe::ElementType::BF16));
  std::vector<float> values = {1.0f, -2.5f, 0.25f, 3.0f, 1.0f / 3, -7.0f};
  int calls = 0;
  moe::WeightBytesProvider f32 =
      [&](const moe::WeightRef &) -> Expected<moe::WeightBytes> {
    ++calls;
    std::vector<uint8_t> bytes(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return moe::WeightBytes::fromVector(moe::ElementType::F32,
                                        std::move(bytes));
  };
  RecordingBackend device(false);
  moe::LayerExecutor exec(plan, device);
  ASSERT_TRUE(exec.loadWeights(f32).ok());
  EXPECT_EQ(calls, 1);
  std::vector<uint8_t> expected =
      moe::encodeElements(values, moe::ElementType::BF16);
  const auto *got = static_cast<const uint8_t *>(exec.weightData(0));
  EXPECT_EQ(std::vector<uint8_t>(got, got + expected.size()), expected);
  // f32 values through bytesFromValues: encoded once, the same bytes.
  moe::LayerExecutor fromValues(plan, device);
  ASSERT_TRUE(
      fromValues
          .loadWeights(moe::bytesFromValues(
              [&](const moe::WeightRef &) -> Expected<std::vector<float>> {
                return values;
              }))
          .ok());
  got = static_cast<const uint8_t *>(fromValues.weightData(0));
  EXPECT_EQ(std::vector<uint8_t>(got, got + expected.size()), expected);
  // A size that does not fit the plan's shape is refused, naming the weight.
  values.pop_back();
  moe::LayerExecutor short_(plan, device);
  Status s = short_.loadWeights(f32);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "weight 'w': got 5 values, the plan needs 6");
}

TEST(Package, StreamedWeightsWriteTheSamePackageReadingEachTensorOnce) {
  TempDir tmp;
  ASSERT_TRUE(writePackage(sampleContents(), tmp / "held").ok());
  moe::WeightProvider values = testProvider();
  std::map<std::string, int> reads;
  auto raw = [&](const moe::WeightRef &ref) -> Expected<std::vector<uint8_t>> {
    ++reads[ref.names.front()];
    Expected<std::vector<float>> v = values(ref);
    if (!v)
      return v.status();
    return moe::encodeElements(*v, ref.type);
  };
  PackageContents c = sampleContents();
  Status s = collectWeightStreams(c, raw);
  ASSERT_TRUE(s.ok()) << s.message();
  // Nothing read yet; checkpoint tensors hold no bytes, constants do.
  EXPECT_TRUE(reads.empty());
  ASSERT_EQ(c.streamed.size(), c.tensors.size());
  size_t streamed = 0;
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    EXPECT_EQ(c.streamed[t], c.tensors[t].empty()) << t;
    streamed += c.streamed[t];
  }
  EXPECT_GT(streamed, 0u);
  EXPECT_LT(streamed, c.tensors.size()); // The constant is held.
  s = writePackage(c, tmp / "streamed");
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(reads.size(), streamed);
  for (const auto &[name, count] : reads)
    EXPECT_EQ(count, 1) << name;
  // Byte for byte the package of held tensors (weights.bin and the hash in
  // the manifest included), and it opens.
  EXPECT_EQ(dirContents(tmp / "streamed"), dirContents(tmp / "held"));
  Expected<LoadedPackage> p = openPackage(tmp / "streamed");
  ASSERT_TRUE(p.ok()) << p.message();
}

TEST(Package, StreamedWeightsThatFailLeaveNoPackage) {
  TempDir tmp;
  auto sized = [](int64_t delta) {
    return [delta](const moe::WeightRef &ref) -> Expected<std::vector<uint8_t>> {
      int64_t n = moe::elementSize(ref.type);
      for (int64_t d : ref.shape)
        n *= d;
      return std::vector<uint8_t>(static_cast<size_t>(n + delta), 0x5a);
    };
  };
  // A provider giving a byte too few or too many, or failing: the write
  // fails naming the tensor, and no directory (temporary or not) is left.
  for (int64_t delta : {-1, 1}) {
    PackageContents c = sampleContents();
    ASSERT_TRUE(collectWeightStreams(c, sized(delta)).ok());
    Status s = writePackage(c, tmp / "pkg");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("weights.bin: tensors[0]: got 127 bytes, the "
                               "shape and dtype need 128") == std::string::npos,
              delta == -1)
        << s.message();
    EXPECT_NE(s.message().find("got 129 bytes") == std::string::npos,
              delta == 1)
        << s.message();
    EXPECT_EQ(tmp.entries(), std::vector<std::string>{});
  }
  PackageContents c = sampleContents();
  ASSERT_TRUE(collectWeightStreams(c, [](const moe::WeightRef &ref)
                                          -> Expected<std::vector<uint8_t>> {
                return Status::error("cannot read " + ref.names.front());
              }).ok());
  Status s = writePackage(c, tmp / "pkg");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("tensors[0]: cannot read "
                             "model.layers.0.mlp.gate.weight"),
            std::string::npos)
      << s.message();
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{});
  // Inconsistent streaming fields are refused before anything is written.
  PackageContents bad = sampleContents();
  bad.streamed.assign(bad.tensors.size(), false);
  bad.streamed[0] = true; // Still holds its bytes.
  s = writePackage(bad, tmp / "pkg");
  EXPECT_NE(s.message().find("is streamed but holds 128 bytes"),
            std::string::npos)
      << s.message();
  bad.tensors[0].clear(); // Now empty, but nothing to stream it from.
  s = writePackage(bad, tmp / "pkg");
  EXPECT_NE(s.message().find("is streamed but streamTensor is not set"),
            std::string::npos)
      << s.message();
  bad.streamed.pop_back();
  s = writePackage(bad, tmp / "pkg");
  EXPECT_NE(s.message().find("streamed has"), std::string::npos)
      << s.message();
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{});
}

TEST(Package, WritesAreDeterministicAndReopenedContentsRewriteIdentically) {
  TempDir tmp;
  PackageContents c = sampleContents();
  ASSERT_TRUE(writePackage(c, tmp / "a").ok());
  ASSERT_TRUE(writePackage(sampleContents(), tmp / "b").ok());
  auto a = dirContents(tmp / "a");
  EXPECT_EQ(a, dirContents(tmp / "b"));
  Expected<LoadedPackage> p = openPackage(tmp / "a");
  ASSERT_TRUE(p.ok()) << p.message();
  Expected<PackageContents> again = p->toContents();
  ASSERT_TRUE(again.ok()) << again.message();
  ASSERT_TRUE(writePackage(*again, tmp / "c").ok());
  EXPECT_EQ(a, dirContents(tmp / "c"));
  // The manifest is the documented pretty JSON.
  const std::string &m = a["manifest.json"];
  EXPECT_EQ(m.rfind("{\n  \"format\": \"moe-package\",\n  \"version\": 1,\n"
                    "  \"producer\": \"moe-opt test\",\n",
                    0),
            0u);
  EXPECT_EQ(m.back(), '\n');
  // Without IR and cubins the package has neither.
  c.irText.clear();
  c.cubins.clear();
  ASSERT_TRUE(writePackage(c, tmp / "d").ok());
  Expected<LoadedPackage> d = openPackage(tmp / "d");
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_EQ(d->irPath(), "");
  EXPECT_TRUE(d->cubinArchs().empty());
  EXPECT_FALSE(fs::exists(tmp / "d/model.opt.mlir"));
}

TEST(Package, AShapeOnlyPackageStoresTheConstantsAndDescribesTheRest) {
  TempDir tmp;
  PackageContents full = sampleContents();
  PackageContents c = full;
  Status s = collectWeightShapes(c);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(c.tensors.size(), full.tensors.size());
  ASSERT_EQ(c.external.size(), c.tensors.size());
  EXPECT_EQ(c.layerTensors, full.layerTensors);
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    bool constant = t == 2; // The sample's one constant.
    EXPECT_EQ(c.external[t], !constant) << t;
    EXPECT_EQ(c.tensors[t], constant ? full.tensors[t]
                                     : std::vector<uint8_t>()) << t;
  }

  std::string dir = tmp / "shapes";
  s = writePackage(c, dir);
  ASSERT_TRUE(s.ok()) << s.message();
  // weights.bin holds the constant alone; the others are described.
  EXPECT_EQ(readFile(dir + "/weights.bin"),
            std::string(full.tensors[2].begin(), full.tensors[2].end()));
  Expected<Json> m = parseJson(readFile(dir + "/manifest.json"));
  ASSERT_TRUE(m.ok());
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    Json &e = at(*m, {"weights", "tensors", static_cast<int>(t)});
    EXPECT_EQ(e.find("offset")->isNull(), t != 2) << t;
    EXPECT_EQ(e.find("bytes")->asInt64(),
              static_cast<int64_t>(full.tensors[t].size())) << t;
  }

  Expected<LoadedPackage> p = openPackage(dir);
  ASSERT_TRUE(p.ok()) << p.message();
  expectSamePlan(p->plan(), full.plan);
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    EXPECT_EQ(p->tensors()[t].stored, t == 2) << t;
    EXPECT_EQ(p->tensors()[t].bytes,
              static_cast<int64_t>(full.tensors[t].size())) << t;
  }
  ASSERT_TRUE(p->tensorBytes(0).ok());
  EXPECT_TRUE(p->tensorBytes(0)->empty());
  Expected<std::vector<float>> values = p->tensorValues(0);
  ASSERT_FALSE(values.ok());
  EXPECT_EQ(values.message(),
            "weight tensor 0 (\"model.layers.0.mlp.gate.weight\" [4, 8] f32) "
            "has no data in the package '" + dir +
                "' (a shape-only package, compiled with --weights none): "
                "bind it before running: Package.bind_tensor in Python, "
                "Model::bindTensor in C++, moe_model_bind_tensor in C, or "
                "moe-bench --random-weights");
  // The executor's provider says the same; the constant still has values.
  moe::WeightBytesProvider provider = p->weightProvider();
  Expected<moe::WeightBytes> fromProvider =
      provider(p->plan().layers[1].weights[1]);
  ASSERT_FALSE(fromProvider.ok());
  EXPECT_EQ(fromProvider.message(), values.message());
  EXPECT_TRUE(p->tensorValues(2).ok());

  // Reopened contents rewrite to the same bytes.
  Expected<PackageContents> again = p->toContents();
  ASSERT_TRUE(again.ok()) << again.message();
  EXPECT_EQ(again->external, c.external);
  ASSERT_TRUE(writePackage(*again, tmp / "again").ok());
  EXPECT_EQ(dirContents(tmp / "again"), dirContents(dir));
}

TEST(Package, TheWriterRefusesInconsistentExternalTensors) {
  TempDir tmp;
  PackageContents c = sampleContents();
  ASSERT_TRUE(collectWeightShapes(c).ok());
  PackageContents constant = c;
  constant.external[2] = true;
  constant.tensors[2].clear();
  Status s = writePackage(constant, tmp / "a");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("tensors[2] is a constant and cannot be "
                             "external"),
            std::string::npos)
      << s.message();
  PackageContents withBytes = c;
  withBytes.tensors[0] = {1, 2, 3, 4};
  s = writePackage(withBytes, tmp / "b");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("is external but holds 4 bytes"),
            std::string::npos)
      << s.message();
  PackageContents shortFlags = c;
  shortFlags.external.pop_back();
  s = writePackage(shortFlags, tmp / "c");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("external has 3 entries, tensors 4"),
            std::string::npos)
      << s.message();
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{});
}

TEST(Package, AnEmptyPlanIsAPackageToo) {
  TempDir tmp;
  PackageContents c;
  ASSERT_TRUE(writePackage(c, tmp / "empty/").ok()); // Trailing slash.
  Expected<LoadedPackage> p = openPackage(tmp / "empty");
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_TRUE(p->plan().layers.empty());
  EXPECT_TRUE(p->tensors().empty());
  EXPECT_EQ(readFile(tmp / "empty/weights.bin"), "");
}

//===----------------------------------------------------------------------===//
// Atomic writes
//===----------------------------------------------------------------------===//

TEST(Package, AnExistingDirectoryIsLeftUntouchedWithoutReplace) {
  TempDir tmp;
  std::string dir = tmp / "pkg";
  ASSERT_TRUE(fs::create_directory(dir));
  writeFileText(dir + "/keep.txt", "precious");
  Status s = writePackage(sampleContents(), dir);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("already exists"), std::string::npos)
      << s.message();
  EXPECT_EQ(readFile(dir + "/keep.txt"), "precious");
  EXPECT_EQ(dirContents(dir).size(), 1u);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"pkg"});
  // Also an empty directory, and a file.
  ASSERT_TRUE(fs::create_directory(tmp / "empty"));
  EXPECT_FALSE(writePackage(sampleContents(), tmp / "empty").ok());
  EXPECT_TRUE(fs::is_empty(tmp / "empty"));
  writeFileText(tmp / "file", "x");
  EXPECT_FALSE(writePackage(sampleContents(), tmp / "file").ok());
  EXPECT_EQ(readFile(tmp / "file"), "x");
}

TEST(Package, ReplaceSwapsInTheNewPackageAndRemovesTheOld) {
  TempDir tmp;
  std::string dir = tmp / "pkg";
  PackageContents c = sampleContents();
  ASSERT_TRUE(writePackage(c, dir).ok());
  writeFileText(dir + "/stale-extra-file", "old");
  c.producer = "second writer";
  WritePackageOptions replace;
  replace.replace = true;
  Status s = writePackage(c, dir, replace);
  ASSERT_TRUE(s.ok()) << s.message();
  Expected<LoadedPackage> p = openPackage(dir);
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_EQ(p->producer(), "second writer");
  EXPECT_FALSE(fs::exists(dir + "/stale-extra-file"));
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"pkg"});
  // An empty directory may be replaced; a directory that is not a package
  // may not, even with replace.
  ASSERT_TRUE(fs::create_directory(tmp / "empty"));
  EXPECT_TRUE(writePackage(c, tmp / "empty", replace).ok());
  EXPECT_TRUE(openPackage(tmp / "empty").ok());
  ASSERT_TRUE(fs::create_directory(tmp / "home"));
  writeFileText(tmp / "home/notes.txt", "mine");
  s = writePackage(c, tmp / "home", replace);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("holds no manifest.json: not a package (nor a "
                             "set of rank packages); refusing to replace it"),
            std::string::npos)
      << s.message();
  EXPECT_EQ(readFile(tmp / "home/notes.txt"), "mine");
  // A set of rank packages (placement.json, rank<r>/ packages) may be
  // replaced; with anything else beside them it may not.
  ASSERT_TRUE(fs::create_directory(tmp / "ranks"));
  writeFileText(tmp / "ranks/placement.json", "{}");
  ASSERT_TRUE(writePackage(c, tmp / "ranks/rank3").ok());
  EXPECT_TRUE(writePackage(c, tmp / "ranks", replace).ok());
  EXPECT_TRUE(openPackage(tmp / "ranks").ok());
  ASSERT_TRUE(fs::remove_all(tmp / "ranks") > 0);
  ASSERT_TRUE(fs::create_directory(tmp / "ranks"));
  writeFileText(tmp / "ranks/placement.json", "{}");
  ASSERT_TRUE(writePackage(c, tmp / "ranks/rank3").ok());
  writeFileText(tmp / "ranks/notes.txt", "mine");
  EXPECT_FALSE(writePackage(c, tmp / "ranks", replace).ok());
  EXPECT_EQ(readFile(tmp / "ranks/notes.txt"), "mine");
  ASSERT_TRUE(fs::remove_all(tmp / "ranks") > 0);
  fs::create_directory_symlink(dir, tmp / "link");
  s = writePackage(c, tmp / "link", replace);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("symbolic link"), std::string::npos);
  EXPECT_EQ(tmp.entries(),
            (std::vector<std::string>{"empty", "home", "link", "pkg"}));
}

TEST(Package, AFailedWriteLeavesNothing) {
  TempDir tmp;
  PackageContents c = sampleContents();
  // The parent does not exist / is a file.
  Status s = writePackage(c, tmp / "no/such/parent/pkg");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot create a temporary directory next to "
                             "it"),
            std::string::npos)
      << s.message();
  writeFileText(tmp / "file", "x");
  EXPECT_FALSE(writePackage(c, tmp / "file/pkg").ok());
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"file"});
  if (::geteuid() != 0) { // root writes anywhere.
    ASSERT_TRUE(fs::create_directory(tmp / "ro"));
    ::chmod((tmp / "ro").c_str(), 0555);
    EXPECT_FALSE(writePackage(c, tmp / "ro/pkg").ok());
    EXPECT_TRUE(fs::is_empty(tmp / "ro"));
    ::chmod((tmp / "ro").c_str(), 0755);
    fs::remove(tmp / "ro");
  }

  // A failure after every file is written: the temporary directory held a
  // complete package, the destination did not exist yet, and afterwards
  // neither exists.
  WritePackageOptions options;
  std::string seenTemp;
  options.beforeCommit = [&](const std::string &temp) {
    seenTemp = temp;
    EXPECT_TRUE(fs::exists(temp + "/manifest.json"));
    EXPECT_TRUE(fs::exists(temp + "/weights.bin"));
    EXPECT_FALSE(fs::exists(tmp / "pkg"));
    EXPECT_EQ(temp.substr(0, (tmp / "pkg.tmp-").size()), tmp / "pkg.tmp-");
    return Status::error("disk on fire");
  };
  s = writePackage(c, tmp / "pkg", options);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("disk on fire"), std::string::npos);
  EXPECT_FALSE(seenTemp.empty());
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"file"});

  // The same when replacing: the old package stays.
  ASSERT_TRUE(writePackage(c, tmp / "pkg").ok());
  auto before = dirContents(tmp / "pkg");
  options.replace = true;
  options.beforeCommit = [](const std::string &) {
    return Status::error("disk on fire");
  };
  PackageContents other = c;
  other.producer = "other";
  EXPECT_FALSE(writePackage(other, tmp / "pkg", options).ok());
  EXPECT_EQ(dirContents(tmp / "pkg"), before);
  EXPECT_EQ(tmp.entries(), (std::vector<std::string>{"file", "pkg"}));

  // Invalid contents are refused before anything is created.
  PackageContents invalid = c;
  invalid.plan.layers[0].launches[0].args[0].value = 7;
  s = writePackage(invalid, tmp / "bad");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(tmp.entries(), (std::vector<std::string>{"file", "pkg"}));
}

TEST(Package, AWriterKilledMidwayLeavesNoPackage) {
  TempDir tmp;
  PackageContents c = sampleContents();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    WritePackageOptions options;
    options.beforeCommit = [](const std::string &) -> Status {
      ::_exit(42); // Dies with every file written, before the rename.
    };
    (void)writePackage(c, tmp / "pkg", options);
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 42);
  EXPECT_FALSE(fs::exists(tmp / "pkg"));
  std::vector<std::string> left = tmp.entries();
  ASSERT_EQ(left.size(), 1u); // The dead writer's temporary directory.
  EXPECT_EQ(left[0].substr(0, 8), "pkg.tmp-");
  // It is not a package anyone would open by its name, and the next write
  // succeeds next to it.
  ASSERT_TRUE(writePackage(c, tmp / "pkg").ok());
  EXPECT_TRUE(openPackage(tmp / "pkg").ok());
}

//===----------------------------------------------------------------------===//
// Damaged packages
//===----------------------------------------------------------------------===//

TEST_F(PackageFiles, InvalidJsonNamesTheManifestAndThePosition) {
  std::string text = readFile(file("manifest.json"));
  // Line 4 is `  "producer": "moe-opt test",`: drop its colon.
  size_t colon = text.find("\"producer\":") + 10;
  text.erase(colon, 1);
  writeFileText(file("manifest.json"), text);
  EXPECT_EQ(openError(), dir + "/manifest.json: 4:14: expected ':' after "
                               "member name \"producer\", found '\"'");
}

TEST_F(PackageFiles, TruncatedManifestsAreErrorsAtEveryLength) {
  std::string text = readFile(file("manifest.json"));
  // Every proper prefix (the last one drops the closing brace).
  for (size_t n = 0; n + 2 < text.size(); n += n < 200 ? 1 : 37) {
    writeFileText(file("manifest.json"), text.substr(0, n));
    std::string error = openError();
    EXPECT_EQ(error.rfind(dir + "/manifest.json: ", 0), 0u) << n << error;
    EXPECT_NE(error.find(": expected "), std::string::npos)
        << n << ": " << error;
  }
  writeFileText(file("manifest.json"), text);
  EXPECT_EQ(openError(), "");
}

TEST_F(PackageFiles, AnotherVersionIsNamedWithTheSupportedOne) {
  EXPECT_EQ(openAfter([](Json &m) { m.set("version", 2); }),
            dir + "/manifest.json: version: package format version 2 is not "
                  "supported (this build reads version 1)");
  // The version is checked before anything else it might change.
  EXPECT_EQ(openAfter([](Json &m) {
              m.set("version", 3);
              m.set("layers", "a different layout");
            }),
            dir + "/manifest.json: version: package format version 3 is not "
                  "supported (this build reads version 1)");
  EXPECT_EQ(openAfter([](Json &m) { m.set("version", "1"); }),
            dir + "/manifest.json: version: expected an integer, found \"1\"");
  EXPECT_EQ(openAfter([](Json &m) { m.set("format", "safetensors"); }),
            dir + "/manifest.json: format: expected \"moe-package\", found "
                  "\"safetensors\"");
  EXPECT_EQ(openAfter([](Json &m) { m = Json::array(); }),
            dir + "/manifest.json: expected an object at the top level, "
                  "found an array");
}

TEST_F(PackageFiles, MissingFieldsAndWrongTypesNameTheFieldPath) {
  std::string m = dir + "/manifest.json: ";
  EXPECT_EQ(openAfter([](Json &j) {
              Json &arg = at(j, {"layers", 1, "launches", 0, "args", 3});
              Json copy = Json::object();
              copy.set("kind", "value");
              arg = copy;
            }),
            m + "layers[1].launches[0].args[3].index: missing (expected an "
                "integer)");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 1, "launches", 0}).set("block_threads", "128");
            }),
            m + "layers[1].launches[0].block_threads: expected an integer "
                "from 1 to 1024, found \"128\"");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 1, "launches", 0}).set("block_threads", 2048);
            }),
            m + "layers[1].launches[0].block_threads: expected an integer "
                "from 1 to 1024, found 2048");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 0}).set("values", Json::object());
            }),
            m + "layers[0].values: expected an array, found an object");
  EXPECT_EQ(openAfter([](Json &j) {
              Json &w = at(j, {"weights"});
              Json copy = Json::object();
              for (const Json::Member &mm : w.members())
                if (mm.first != "sha256")
                  copy.set(mm.first, mm.second);
              w = copy;
            }),
            m + "weights.sha256: missing (expected a string)");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 0, "values", 2}).set("dtype", "f64");
            }),
            m + "layers[0].values[2].dtype: expected f32, bf16, f16, i32 or "
                "u32, found \"f64\"");
  EXPECT_EQ(
      openAfter([](Json &j) {
        at(j, {"layers", 0, "launches", 1, "args", 5}).set("kind", "scratch");
      }),
      m + "layers[0].launches[1].args[5].kind: expected \"value\", "
          "\"weight\" or \"null\", found \"scratch\"");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 1, "shape"}).push(-2);
            }),
            m + "weights.tensors[1].shape[3]: expected a positive dimension, "
                "found -2");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 1}).set("stacked", 1);
            }),
            m + "weights.tensors[1].stacked: expected a boolean, found 1");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"cubins", 0}).set("file", "../kernels.sm_80.cubin");
            }),
            m + "cubins[0].file: expected a file name without a directory, "
                "found \"../kernels.sm_80.cubin\"");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"cubins", 1}).set("sha256", "ABC");
            }),
            m + "cubins[1].sha256: expected 64 lower-case hex digits (a "
                "SHA-256), found \"ABC\"");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 0, "values", 3}).set("fixed", 0);
            }),
            m + "layers[0].values[3]: expected a buffer of at least one "
                "element (per_token or fixed positive), found per_token 0 and "
                "fixed 0");
}

TEST_F(PackageFiles, IndicesOutOfRangeAreNamed) {
  std::string m = dir + "/manifest.json: ";
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 0, "launches", 0, "args", 1}).set("index", 3);
            }),
            m + "layers[0].launches[0].args[1].index: expected an index into "
                "layers[0].weights (0 to 2), found 3");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 0, "launches", 0, "args", 2}).set("index", -1);
            }),
            m + "layers[0].launches[0].args[2].index: expected an index into "
                "layers[0].values (0 to 6), found -1");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 0, "launches", 0, "zero_once"}).push(7);
            }),
            m + "layers[0].launches[0].zero_once[1]: expected an index into "
                "layers[0].values (0 to 6), found 7");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 1}).set("output", 5);
            }),
            m + "layers[1].output: expected an index into layers[1].values (0 "
                "to 4), found 5");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 1, "weights"}).push(4);
            }),
            m + "layers[1].weights[2]: expected an index into weights.tensors "
                "(0 to 3), found 4");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 1}).set("weights", Json::array());
            }),
            m + "layers[1].launches[0].args[1].index: expected an index into "
                "layers[1].weights, which is empty; found 0");
  // A router-only plan (a rank package's) has no output and no given routing.
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 2}).set("output_width", 8);
            }),
            m + "layers[2].output_width: expected an integer from 0 to 0, "
                "found 8");
  EXPECT_EQ(openAfter([](Json &j) { at(j, {"layers", 2}).set("output", 0); }),
            m + "layers[2].output: expected null for a router-only plan "
                "(role \"router\"), found an index");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 2}).set("role", "x");
            }),
            m + "layers[2].role: expected \"\" (a layer), \"router\" or "
                "\"pregate\", found \"x\"");
  // A pre-gating router (Read-ME) is router-only too.
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 2}).set("role", "pregate");
              at(j, {"layers", 2}).set("output", 0);
            }),
            m + "layers[2].output: expected null for a router-only plan "
                "(role \"pregate\"), found an index");
  // The routings of a layer's later routers (issue 10, defect 5).
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 0, "more_routings", 0}).set("weights", 7);
            }),
            m + "layers[0].more_routings[0].weights: expected an index into "
                "layers[0].values (0 to 6), found 7");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 0}).set("routing_ids", Json());
            }),
            m + "layers[0].more_routings: needs routing_ids and "
                "routing_weights for router 0");
  // The experts of each router (issue 15: the load statistics' length).
  EXPECT_EQ(openAfter([](Json &j) {
              Json &e = at(j, {"layers", 0}).set("routing_experts",
                                                 Json::array());
              e.push(Json(4));
            }),
            m + "layers[0].routing_experts: expected one expert count per "
                "router (2), got 1");
  EXPECT_EQ(openAfter([](Json &j) {
              Json &e = at(j, {"layers", 0}).set("routing_experts",
                                                 Json::array());
              e.push(Json(4));
              e.push(Json(-1));
            }),
            m + "layers[0].routing_experts[1]: expected an integer from 0 "
                "to 9007199254740992, found -1");
}

TEST_F(PackageFiles, PlanConsistencyAgainstKernelsAndTensors) {
  std::string m = dir + "/manifest.json: ";
  // A launch of a kernel the source does not define.
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 1, "launches", 0}).set("kernel", "moe_ghost");
              at(j, {"kernels", 2}).set("name", "moe_ghost");
            }),
            m + "layers[1].launches[0].kernel: kernel \"moe_ghost\" does not "
                "occur in kernels.cu");
  // A prefix of a defined kernel is not a definition.
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 1, "launches", 0}).set("kernel", "moe_lora_l1");
              at(j, {"kernels", 2}).set("name", "moe_lora_l1");
            }),
            m + "layers[1].launches[0].kernel: kernel \"moe_lora_l1\" does "
                "not occur in kernels.cu");
  EXPECT_EQ(
      openAfter([](Json &j) {
        at(j, {"layers", 1, "launches", 0}).set("kernel", "moe_route_l0_0");
      }),
      // Defined in the source and listed, but not what kernels.cu was
      // generated to launch there (KernelContract.h).
      m + "layers[1].launches[0].kernel: moe_route_l0_0, but kernels.cu "
          "launches moe_lora_l1_0 here");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"kernels", 2}).set("name", "moe_other");
            }),
            m + "layers[1].launches[0].kernel: kernel \"moe_lora_l1_0\" is "
                "not listed in \"kernels\"");
}

TEST_F(PackageFiles, WeightTensorsMustMatchTheirShapeAndFile) {
  std::string m = dir + "/manifest.json: ";
  // A shape whose size is not the tensor's bytes.
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 1, "shape"}) =
                  Json(Json::Array{Json(4), Json(3), Json(7)});
            }),
            m + "weights.tensors[1].bytes: expected 168 (shape [4, 3, 7] of "
                "bf16), found 192");
  // The dtype changes the size too.
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 1}).set("dtype", "f32");
            }),
            m + "weights.tensors[1].bytes: expected 384 (shape [4, 3, 8] of "
                "f32), found 192");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 3}).set("offset", 1024);
            }),
            m + "weights.tensors[3]: bytes 1024 to 1056 lie outside "
                "weights.bin (800 bytes, weights.bytes)");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 3}).set("offset", 100);
            }),
            m + "weights.tensors[3].offset: expected a multiple of 256, found "
                "100");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 3}).set("offset", 0);
            }),
            m + "weights.tensors[3]: overlaps weights.tensors[0] in "
                "weights.bin");
  EXPECT_EQ(
      openAfter([](Json &j) {
        at(j, {"weights", "tensors", 3}) = at(j, {"weights", "tensors", 0});
      }),
      m + "weights.tensors[3]: describes the same weight as "
          "weights.tensors[0] (\"model.layers.0.mlp.gate.weight\" [4, "
          "8] f32)");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 2}).set("constant", false);
            }),
            m + "weights.tensors[2].names: expected at least one name for a "
                "checkpoint weight (or \"constant\": true)");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"layers", 1})
                  .set("weights", Json(Json::Array{Json(0), Json(0)}));
            }),
            m + "weights.tensors[3]: is not used by any layer");
}

TEST_F(PackageFiles, AnExternalTensorIsACheckpointWeight) {
  std::string m = dir + "/manifest.json: ";
  // A constant's values are in weights.bin: it cannot be external.
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 2}).set("offset", Json());
            }),
            m + "weights.tensors[2].offset: expected an integer for a "
                "constant (its values are in weights.bin), found null");
  // A checkpoint weight may be; its bytes are still checked.
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 1}).set("offset", Json());
            }),
            "");
  EXPECT_EQ(openAfter([](Json &j) {
              at(j, {"weights", "tensors", 1}).set("offset", Json());
              at(j, {"weights", "tensors", 1}).set("bytes", 100);
            }),
            m + "weights.tensors[1].bytes: expected 192 (shape [4, 3, 8] of "
                "bf16), found 100");
}

TEST_F(PackageFiles, AMissingFileIsNamed) {
  fs::remove(file("kernels.sm_90a.cubin"));
  EXPECT_EQ(openError(), dir + "/kernels.sm_90a.cubin: missing (manifest.json "
                               "lists it as cubins[1].file)");
  fs::remove(file("kernels.cu"));
  EXPECT_EQ(openError(), dir + "/kernels.cu: missing (manifest.json lists it "
                               "as source.file)");
  fs::remove(file("manifest.json"));
  EXPECT_EQ(openError(), dir + "/manifest.json: missing (not a package?)");
  EXPECT_NE(openError().find("manifest.json"), std::string::npos);
  EXPECT_NE(openPackage(tmp / "nowhere").message().find("No such file"),
            std::string::npos);
}

TEST_F(PackageFiles, AWrongSizeIsNamed) {
  std::string bin = readFile(file("weights.bin"));
  writeFileText(file("weights.bin"), bin + "x");
  EXPECT_EQ(openError(),
            dir + "/weights.bin: size 801 bytes, expected 800 (manifest.json "
                  "weights.bytes)");
  writeFileText(file("weights.bin"), bin.substr(0, 100));
  EXPECT_EQ(openError(),
            dir + "/weights.bin: size 100 bytes, expected 800 (manifest.json "
                  "weights.bytes)");
  // Sizes are checked even without hashes.
  OpenPackageOptions fast;
  fast.verifyHashes = false;
  EXPECT_NE(openError(fast), "");
  writeFileText(file("weights.bin"), bin);
  std::string ir = readFile(file("model.opt.mlir"));
  writeFileText(file("model.opt.mlir"), ir + "\n");
  EXPECT_NE(openError().find("/model.opt.mlir: size"), std::string::npos);
}

TEST_F(PackageFiles, AHashMismatchInWeightsIsNamed) {
  std::string bin = readFile(file("weights.bin"));
  bin[300] ^= 0x01; // Inside tensor 1.
  writeFileText(file("weights.bin"), bin);
  std::string error = openError();
  EXPECT_EQ(
      error.rfind(dir + "/weights.bin: SHA-256 mismatch: the file's is ", 0),
      0u)
      << error;
  EXPECT_NE(error.find("manifest.json weights.sha256 expects " +
                       manifest().find("weights")->find("sha256")->asString()),
            std::string::npos)
      << error;
  // Without hash checks it opens (the caller chose speed).
  OpenPackageOptions fast;
  fast.verifyHashes = false;
  EXPECT_EQ(openError(fast), "");
}

TEST_F(PackageFiles, AHashMismatchInACubinIsNamed) {
  std::string cubin = readFile(file("kernels.sm_80.cubin"));
  cubin[5] ^= 0x40;
  writeFileText(file("kernels.sm_80.cubin"), cubin);
  std::string error = openError();
  EXPECT_EQ(
      error.rfind(
          dir + "/kernels.sm_80.cubin: SHA-256 mismatch: the file's is ", 0),
      0u)
      << error;
  EXPECT_NE(error.find("manifest.json cubins[0].sha256 expects "),
            std::string::npos)
      << error;
  // And in the source.
  writeFileText(file("kernels.sm_80.cubin"), contents.cubins["sm_80"]);
  std::string source = readFile(file("kernels.cu"));
  source[0] = '/';
  writeFileText(file("kernels.cu"), source);
  EXPECT_NE(openError().find("/kernels.cu: SHA-256 mismatch"),
            std::string::npos);
}

TEST(Package, TheWriterRefusesWhatTheReaderWouldRefuse) {
  TempDir tmp;
  auto writeError = [&](const std::function<void(PackageContents &)> &edit) {
    PackageContents c = sampleContents();
    edit(c);
    Status s = writePackage(c, tmp / "pkg");
    if (s.ok()) {
      fs::remove_all(tmp / "pkg");
      return std::string();
    }
    EXPECT_TRUE(tmp.entries().empty());
    return s.message();
  };
  std::string prefix = "cannot write the package '" + tmp.path() +
                       "/pkg': invalid package contents: ";
  EXPECT_EQ(writeError([](PackageContents &c) {
              c.plan.layers[0].launches[1].args[3].weight = 9;
            }),
            prefix + "layers[0].launches[1].args[3].index: expected an index "
                     "into layers[0].weights (0 to 2), found 9");
  EXPECT_EQ(writeError([](PackageContents &c) {
              c.plan.layers[1].launches[0].kernel = "moe_missing";
            }),
            prefix + "layers[1].launches[0].kernel: kernel \"moe_missing\" "
                     "does not occur in kernels.cu");
  EXPECT_EQ(writeError([](PackageContents &c) {
              c.plan.layers[0].values[1].perToken = 0;
            }),
            prefix + "layers[0].values[1]: expected a buffer of at least one "
                     "element (per_token or fixed positive), found per_token "
                     "0 and fixed 0");
  EXPECT_EQ(writeError([](PackageContents &c) { c.tensors[3].pop_back(); }),
            prefix + "weights.tensors[3].bytes: expected 32 (shape [2, 8] of "
                     "f16), found 31");
  EXPECT_EQ(writeError([](PackageContents &c) { c.tensors[2][0] ^= 1; }),
            prefix + "tensors[2] (a constant [2] f32) does not hold its "
                     "inline values encoded as f32");
  EXPECT_EQ(
      writeError([](PackageContents &c) { c.layerTensors[1].pop_back(); }),
      prefix + "layerTensors[1] has 1 entries, plan.layers[1].weights 2");
  EXPECT_EQ(writeError([](PackageContents &c) { c.layerTensors[1][1] = 1; }),
            prefix + "layerTensors[1][1]: plan.layers[1].weights[1] "
                     "(\"model.layers.0.mlp.gate.weight\" [4, 8] f32) shares "
                     "tensor 1 with \"model.layers.0.mlp.experts.0.up.weight\" "
                     "(and 3 more) [4, 3, 8] bf16, a different weight");
  EXPECT_EQ(writeError([](PackageContents &c) { c.layerTensors[1][0] = 7; }),
            prefix + "layerTensors[1][0]: tensor 7 is out of range (4 "
                     "tensors)");
  EXPECT_EQ(writeError([](PackageContents &c) { c.cubins["sm/90"] = "x"; }),
            prefix + "cubins: the arch \"sm/90\" is not an architecture name "
                     "([A-Za-z0-9_]+)");
  EXPECT_EQ(writeError([](PackageContents &c) {
              c.resources.push_back(c.resources[0]);
            }),
            prefix + "resources: \"moe_route_l0_0\" on sm_90a appears twice");
  EXPECT_EQ(writeError([](PackageContents &c) {
              c.plan.layers[1].target = "bad\xff";
            }),
            prefix + "layers[1].target: not valid UTF-8");
  EXPECT_EQ(writeError([](PackageContents &c) { c.model = Json(3); }),
            prefix + "model: expected an object, found a number");
  EXPECT_EQ(writeError([](PackageContents &) {}), "");
}

TEST_F(PackageFiles, EveryMutationOfTheManifestIsAnErrorOrFineNeverACrash) {
  // Replace every value of the manifest, one at a time, with values of each
  // other kind and a few bad numbers: openPackage must answer every time.
  Json original = manifest();
  struct Step {
    std::string key; ///< Empty: an array index.
    size_t index = 0;
  };
  std::vector<std::vector<Step>> paths;
  std::vector<Step> path;
  std::function<void(const Json &)> walk = [&](const Json &j) {
    paths.push_back(path);
    for (size_t i = 0; i < j.items().size(); ++i) {
      path.push_back(Step{std::string(), i});
      walk(j.items()[i]);
      path.pop_back();
    }
    for (const Json::Member &m : j.members()) {
      path.push_back(Step{m.first, 0});
      walk(m.second);
      path.pop_back();
    }
  };
  walk(original);
  ASSERT_GT(paths.size(), 200u);
  std::vector<Json> replacements = {
      Json(),        Json(true),     Json(-1),
      Json(1e300),   Json(0.5),      Json("x"),
      Json::array(), Json::object(), Json(int64_t(1) << 40)};
  size_t errors = 0, runs = 0;
  for (size_t p = 1; p < paths.size(); ++p) {
    for (const Json &r : replacements) {
      Json m = original;
      Json *j = &m;
      for (const Step &step : paths[p])
        j = step.key.empty() ? const_cast<Json *>(&j->items()[step.index])
                             : j->find(step.key);
      if (*j == r)
        continue;
      *j = r;
      setManifest(m);
      std::string error = openError();
      ++runs;
      if (!error.empty()) {
        ++errors;
        // Names the manifest, or the file whose entry was changed.
        EXPECT_EQ(error.rfind(dir + "/", 0), 0u) << error;
      }
    }
  }
  // Most replacements break the package; a few (free-form "model", an
  // "origin" string) do not.
  EXPECT_GT(errors, runs * 8 / 10);

  // Random byte damage.
  std::string text = original.dump();
  std::mt19937 rng(12345);
  for (int i = 0; i < 300; ++i) {
    std::string damaged = text;
    for (int k = 0; k < 3; ++k)
      damaged[rng() % damaged.size()] = static_cast<char>(rng() % 256);
    writeFileText(file("manifest.json"), damaged);
    (void)openError();
  }
  setManifest(original);
  EXPECT_EQ(openError(), "");
}

// The manifest's tensor maps (the --gemm=tma launches) are checked against
// the kernel's contract line: a plan whose maps the kernel was not
// generated for is refused, naming the field, and nothing is written.
TEST(Package, TensorMapsMustMatchTheKernelContract) {
  TempDir tmp;
  PackageContents c = sampleContents();
  ASSERT_FALSE(c.plan.layers.empty());
  ASSERT_FALSE(c.plan.layers[0].launches.empty());
  moe::TensorMapRequest r;
  r.slot = 0;
  r.table = 0;
  r.entry = 0;
  r.boxRows = 64;
  r.boxCols = 32;
  r.swizzleBytes = 64;
  c.plan.layers[0].launches[0].tensorMaps.push_back(r);
  Status s = writePackage(c, tmp / "pkg");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("layers[0].launches[0].tensor_maps: 1 tensor "
                             "maps, but kernel "),
            std::string::npos)
      << s.message();
  EXPECT_FALSE(fs::exists(tmp / "pkg"));
}

// A tripwire: the manifest must carry every field of the plan structures
// (runtime/package/Manifest.cpp: layerJson and readLayer/readLaunch). When a
// field is added to Plan.h, these sizes change: add the field to the
// manifest, to docs/package.md and to expectSamePlan/sampleContents above,
// then update the numbers here.
TEST(Package, ManifestCoversEveryPlanField) {
#if defined(__x86_64__) && defined(__GLIBCXX__)
  EXPECT_EQ(sizeof(moe::Launch), 216u);
  EXPECT_EQ(sizeof(moe::LayerPlan), 288u);
  EXPECT_EQ(sizeof(moe::LayerInput), 72u);
  EXPECT_EQ(sizeof(moe::LayerOutput), 48u);
  EXPECT_EQ(sizeof(moe::LayerPlan::Routing), 16u);
  EXPECT_EQ(sizeof(moe::BufferShape), 24u);
  EXPECT_EQ(sizeof(moe::Binding), 12u);
  EXPECT_EQ(sizeof(moe::WeightRef), 112u);
  EXPECT_EQ(sizeof(moe::ModulePlan), 56u);
#endif // Sizes are recorded for x86-64 libstdc++ only.
}

TEST(Package, DecodeTensorValues) {
  uint8_t bf16[] = {0x80, 0x3f, 0x00, 0xc0};            // 1, -2
  uint8_t f16[] = {0x00, 0x3c, 0x00, 0x38};             // 1, 0.5
  uint8_t i32[] = {0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0}; // -1, 7
  auto bf = decodeTensorValues(bf16, 4, moe::ElementType::BF16);
  ASSERT_TRUE(bf.ok());
  EXPECT_EQ(*bf, (std::vector<float>{1.0f, -2.0f}));
  auto h = decodeTensorValues(f16, 4, moe::ElementType::F16);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h, (std::vector<float>{1.0f, 0.5f}));
  auto i = decodeTensorValues(i32, 8, moe::ElementType::I32);
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(*i, (std::vector<float>{-1.0f, 7.0f}));
  auto u = decodeTensorValues(i32, 8, moe::ElementType::U32);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(*u, (std::vector<float>{4294967295.0f, 7.0f}));
  auto bad = decodeTensorValues(bf16, 3, moe::ElementType::BF16);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.message(), "3 bytes are not a whole number of bf16 elements");
  EXPECT_EQ(parseElementType("bf16"), moe::ElementType::BF16);
  EXPECT_FALSE(parseElementType("bfloat16").has_value());
}

} // namespace

//===----------------------------------------------------------------------===//
// Kernel contracts
//===----------------------------------------------------------------------===//

namespace {
std::string contractError(const std::string &source) {
  moe::runtime::Expected<moe::SourceContracts> c =
      moe::parseContracts(source, "kernels.cu");
  return c ? std::string("(parsed)") : c.message();
}
} // namespace

TEST(KernelContract, LinesRoundTripAndBadLinesAreReported) {
  PackageContents c = sampleContents();
  const moe::LayerPlan &l0 = c.plan.layers[0];
  moe::KernelContract k = moe::contractOf(l0.launches[1], l0);
  std::string line = moe::formatKernelContract(k);
  EXPECT_EQ(line, "// moe-contract: moe_experts_l0_1 block_threads=128 "
                  "dynamic_shared_bytes=4096 tokens_per_block=1 "
                  "max_blocks=65535 rows_per_token=2 extra_blocks=4 "
                  "grid_columns=3 slots_per_token=2 min_slots=65 "
                  "max_slots=-1 slots=value:bf16:8:0,value:i32:2:0,"
                  "value:f32:2:0,weight:bf16:0:96,weight:f32:0:2,"
                  "value:f32:8:0");
  moe::runtime::Expected<moe::SourceContracts> parsed =
      moe::parseContracts("int x;\n" + line + "\n" +
                              moe::formatLayerContract(l0) + "\n",
                          "kernels.cu");
  ASSERT_TRUE(parsed) << parsed.message();
  ASSERT_EQ(parsed->kernels.count("moe_experts_l0_1"), 1u);
  EXPECT_TRUE(parsed->kernels.at("moe_experts_l0_1") == k);
  ASSERT_EQ(parsed->layers.size(), 1u);
  EXPECT_EQ(parsed->layers[0].launches,
            (std::vector<std::string>{"moe_route_l0_0", "moe_experts_l0_1"}));

  auto replaced = [&](const std::string &from, const std::string &to) {
    std::string s = line;
    size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return "\n" + s.replace(at, from.size(), to) + "\n";
  };
  struct Bad {
    std::string source, message;
  } bad[] = {
      {"// moe-contract:\n", "kernels.cu:1: expected a kernel name"},
      {replaced("max_blocks=65535", "max_blocks=x"),
       "kernels.cu:2: 'max_blocks': expected an integer, found 'x'"},
      {replaced(" grid_columns=3", ""), "kernels.cu:2: missing 'grid_columns'"},
      {replaced("extra_blocks=4", "extra_blocks=4 extra_blocks=4"),
       "'extra_blocks' given twice"},
      {replaced("min_slots=65", "min_slots=65 colour=red"),
       "unknown key 'colour'"},
      {replaced("value:i32:2:0", "value:i64:2:0"),
       "slot 1 ('value:i64:2:0'): expected a dtype"},
      {replaced("value:i32:2:0", "buffer:i32:2:0"),
       "slot 1 ('buffer:i32:2:0'): expected the kind value or weight"},
      {replaced("weight:bf16:0:96", "weight:bf16:1:96"),
       "slot 3 ('weight:bf16:1:96'): a weight has no per-token extent"},
      {replaced("value:f32:8:0", "value:f32:-8:0"),
       "expected non-negative integer extents"},
      {replaced("value:f32:2:0", "value:f32:2"),
       "expected null or KIND:DTYPE:PER_TOKEN:FIXED"},
      {line + "\n" + replaced("grid_columns=3", "grid_columns=4"),
       "kernels.cu:3: a second, different contract for moe_experts_l0_1"},
      {"// moe-layer: layer=0 function=f\n", "kernels.cu:1: missing 'launches'"},
      {"// moe-layer: layer=a function=f launches=\n",
       "'layer': expected an integer, found 'a'"},
  };
  for (const Bad &b : bad)
    EXPECT_NE(contractError(b.source).find(b.message), std::string::npos)
        << "source: " << b.source << "\nerror: " << contractError(b.source);
}

TEST(KernelContract, APlanThatDisagreesWithItsKernelsIsRefused) {
  PackageContents base = sampleContents();
  EXPECT_TRUE(moe::checkPlanContracts(base.plan, "kernels.cu").ok());
  struct Case {
    std::function<void(moe::ModulePlan &)> edit;
    std::string message;
  } cases[] = {
      {[](moe::ModulePlan &p) { p.layers[0].values[3].fixed = 2; },
       "layers[0].launches[0].args[4]: binds value 3 (u32 with 0 per token + "
       "2), but kernel moe_route_l0_0 reads u32 with 0 per token + 1"},
      {[](moe::ModulePlan &p) { p.layers[0].values[4].perToken = 1; },
       "layers[0].output: value 4 has 1 per token + 0, but output_width is "
       "8"},
      {[](moe::ModulePlan &p) { p.layers[0].launches[1].args[2].value = 1; },
       "layers[0].launches[1].args[2]: binds value 1 (i32 with 2 per token "
       "+ 0), but kernel moe_experts_l0_1 reads f32 with 2 per token + 0"},
      {[](moe::ModulePlan &p) {
         std::swap(p.layers[0].launches[1].args[3],
                   p.layers[0].launches[1].args[4]);
       },
       "layers[0].launches[1].args[3]: binds weight 2 (f32 with 2 elements), "
       "but kernel moe_experts_l0_1 reads bf16 with 96 elements"},
      {[](moe::ModulePlan &p) {
         p.layers[0].launches[1].args[5] = moe::Binding();
       },
       "layers[0].launches[1].args[5]: binds nothing (null), but kernel "
       "moe_experts_l0_1 expects a value (f32 with 8 per token + 0)"},
      {[](moe::ModulePlan &p) { p.layers[0].launches[1].args.pop_back(); },
       "layers[0].launches[1].args: 5 bindings, but kernel moe_experts_l0_1 "
       "has 6 argument slots"},
      {[](moe::ModulePlan &p) {
         p.layers[0].launches.erase(p.layers[0].launches.begin());
       },
       "layers[0].launches[0].kernel: moe_experts_l0_1, but kernels.cu "
       "launches moe_route_l0_0 here"},
      {[](moe::ModulePlan &p) { p.layers[0].launches.pop_back(); },
       "layers[0].launches: 1 launches, but kernels.cu launches 2 kernels in "
       "this layer (launch 1: moe_experts_l0_1 is missing)"},
      {[](moe::ModulePlan &p) { p.layers[0].launches[1].gridColumns = 4; },
       "layers[0].launches[1].grid_columns: 4, but kernel moe_experts_l0_1 "
       "was generated for 3"},
      {[](moe::ModulePlan &p) { p.layers[0].launches[0].maxSlots = -1; },
       "layers[0].launches[0].max_slots: -1, but kernel moe_route_l0_0 was "
       "generated for 64"},
      {[](moe::ModulePlan &p) { p.layers[1].inputWidth = 4; },
       "layers[1].input: value 0 has 8 per token + 0, but input_width is 4"},
      {[](moe::ModulePlan &p) { p.layers[0].routings[1].ids = 2; },
       "layers[0].more_routings[0].ids: value 2 is f32 with 2 per token + 0, "
       "expected i32"},
      {[](moe::ModulePlan &p) { p.layers[0].routings[0].weights = 4; },
       "layers[0].routing_weights: value 4 is f32 with 8 per token + 0, "
       "expected f32 with 2 per token + 0 (as routing_ids)"},
      {[](moe::ModulePlan &p) { p.layers[0].launches[0].zeroOnce = {9}; },
       "layers[0].launches[0].zero_once[0]: value 9 does not exist"},
      {[](moe::ModulePlan &p) { p.layers.pop_back(); },
       "layers: 2 layers, but kernels.cu was generated for 3"},
      {[](moe::ModulePlan &p) {
         p.source = p.source.substr(0, p.source.find("// moe-"));
       },
       "kernels.cu: no '// moe-contract:' or '// moe-layer:' lines"},
  };
  for (const Case &c : cases) {
    PackageContents contents = base;
    c.edit(contents.plan);
    Status s = moe::checkPlanContracts(contents.plan, "kernels.cu");
    EXPECT_NE(s.message().find(c.message), std::string::npos)
        << "expected: " << c.message << "\nfound: " << s.message();
  }
}
