//===- PeftAdapters.cpp - PEFT LoRA adapters as LoRA mixtures -------------===//
//
// Part of moe-opt. Reads PEFT adapter folders (adapter_config.json and
// adapter_model.safetensors) and the optional router file of a mixture of
// adapters; the router file layout is documented in docs/import.md.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Import/ModelSpec.h"
#include "moe/lib/Weights/InputFile.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <cmath>
#include <map>

using namespace moe;
using llvm::Error;
using llvm::Expected;
using llvm::StringRef;

static Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

namespace {
struct AdapterConfig {
  std::string dir;
  std::string configPath;
  std::string weightsPath;
  int64_t rank = 0;
  double alpha = 8.0;
  bool rslora = false;
  std::vector<std::string> targets; ///< Empty: any module.
  std::unique_ptr<SafetensorsFile> weights;
};

std::string absolute(StringRef path) {
  llvm::SmallString<256> p(path);
  llvm::sys::fs::make_absolute(p);
  llvm::sys::path::remove_dots(p, /*remove_dot_dot=*/true);
  return p.str().str();
}

Expected<AdapterConfig> readAdapter(StringRef dir) {
  AdapterConfig a;
  a.dir = absolute(dir);
  llvm::SmallString<256> path(a.dir);
  llvm::sys::path::append(path, "adapter_config.json");
  a.configPath = path.str().str();
  if (Error e = moe::checkRegularFile(a.configPath, "adapter config"))
    return std::move(e);
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer)
    return makeError(a.configPath + ": cannot read: " +
                     buffer.getError().message());
  Expected<llvm::json::Value> json =
      moe::parseBoundedJson((*buffer)->getBuffer());
  if (!json)
    return makeError(a.configPath + ": invalid JSON: " +
                     llvm::toString(json.takeError()));
  const llvm::json::Object *o = json->getAsObject();
  if (!o)
    return makeError(a.configPath + ": expected a JSON object");
  std::optional<int64_t> r = o->getInteger("r");
  if (!r || *r <= 0)
    return makeError(a.configPath + ": field 'r' must be a positive integer");
  a.rank = *r;
  if (const llvm::json::Value *alpha = o->get("lora_alpha")) {
    std::optional<double> v = alpha->getAsNumber();
    if (!v)
      return makeError(a.configPath + ": field 'lora_alpha' must be a number");
    a.alpha = *v;
  }
  if (const llvm::json::Value *rs = o->get("use_rslora")) {
    std::optional<bool> v = rs->getAsBoolean();
    if (!v)
      return makeError(a.configPath + ": field 'use_rslora' must be true or "
                                      "false");
    a.rslora = *v;
  }
  for (StringRef key : {"rank_pattern", "alpha_pattern"})
    if (const llvm::json::Object *pattern = o->getObject(key))
      if (!pattern->empty())
        return makeError(a.configPath + ": field '" + key +
                         "' (per-module ranks) is not supported yet");
  if (const llvm::json::Value *t = o->get("target_modules")) {
    if (const llvm::json::Array *list = t->getAsArray()) {
      for (const llvm::json::Value &v : *list)
        if (std::optional<StringRef> s = v.getAsString())
          a.targets.push_back(s->str());
    } else if (!t->getAsString() && t->kind() != llvm::json::Value::Null) {
      return makeError(a.configPath + ": field 'target_modules' must be a "
                                      "list of module names or a string");
    }
  }
  llvm::SmallString<256> weights(a.dir);
  llvm::sys::path::append(weights, "adapter_model.safetensors");
  a.weightsPath = weights.str().str();
  Expected<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::open(a.weightsPath);
  if (!file)
    return file.takeError();
  a.weights = std::move(*file);
  return a;
}

/// `model.layers.3.self_attn.q_proj` -> (3, "self_attn.q_proj").
std::optional<std::pair<int64_t, std::string>>
splitLayer(StringRef modulePath) {
  size_t pos = modulePath.find("layers.");
  if (pos == StringRef::npos)
    return std::nullopt;
  StringRef rest = modulePath.drop_front(pos + 7);
  auto [num, target] = rest.split('.');
  int64_t layer;
  if (num.getAsInteger(10, layer) || target.empty())
    return std::nullopt;
  return std::make_pair(layer, target.str());
}

Expected<TensorRef> adapterTensor(const AdapterConfig &a, StringRef name,
                                  int64_t dim0, int64_t dim1,
                                  StringRef what) {
  const TensorInfo *info = a.weights->lookup(name);
  if (!info)
    return makeError(a.weightsPath + ": missing tensor '" + name + "'");
  if (!isConvertibleFloat(info->dtype))
    return makeError(a.weightsPath + ": tensor '" + name + "' has dtype " +
                     dtypeName(info->dtype) + "; expected F32, BF16 or F16");
  if (info->shape.size() != 2 || (dim0 >= 0 && info->shape[0] != dim0) ||
      (dim1 >= 0 && info->shape[1] != dim1))
    return makeError(a.weightsPath + ": tensor '" + name + "' has shape " +
                     formatShape(info->shape) + "; expected " + what);
  TensorRef ref;
  ref.names = {name.str()};
  ref.files = {a.weightsPath};
  ref.shape = info->shape;
  ref.dtype = info->dtype;
  return ref;
}
} // namespace

Error moe::addLoraAdapters(ModelSpec &spec, WeightStore &store,
                           const std::vector<std::string> &adapterDirs,
                           StringRef routerFile) {
  if (adapterDirs.empty()) {
    if (!routerFile.empty())
      return makeError("--lora-router " + routerFile +
                       " given without any --adapter");
    return Error::success();
  }
  std::vector<AdapterConfig> adapters;
  for (const std::string &dir : adapterDirs) {
    Expected<AdapterConfig> a = readAdapter(dir);
    if (!a)
      return a.takeError();
    adapters.push_back(std::move(*a));
  }

  // Module paths wrapped by the first adapter, in name order.
  static constexpr StringRef kPrefix = "base_model.model.";
  static constexpr StringRef kASuffix = ".lora_A.weight";
  std::vector<std::string> modules;
  for (const AdapterConfig &a : adapters) {
    std::vector<std::string> own;
    for (const TensorInfo &t : a.weights->tensors()) {
      StringRef name = t.name;
      if (!name.consume_back(kASuffix))
        continue;
      name.consume_front(kPrefix);
      StringRef leaf = name.rsplit('.').second.empty() ? name
                                                       : name.rsplit('.').second;
      if (!a.targets.empty() && !llvm::is_contained(a.targets, leaf.str()))
        return makeError(a.weightsPath + ": tensor '" + t.name +
                         "' wraps module '" + leaf +
                         "', which is not in 'target_modules' of " +
                         a.configPath);
      own.push_back(name.str());
    }
    if (own.empty())
      return makeError(a.weightsPath + ": no '*" + kASuffix +
                       "' tensors: not a LoRA adapter");
    if (&a == &adapters.front())
      modules = own;
    else if (own != modules)
      return makeError(a.weightsPath + ": wraps modules {" +
                       llvm::join(own, ", ") + "} but " +
                       adapters.front().weightsPath + " wraps {" +
                       llvm::join(modules, ", ") +
                       "}; the adapters of a mixture must wrap the same "
                       "projections");
  }

  std::unique_ptr<SafetensorsFile> router;
  std::string routerPath;
  int64_t topK = 0;
  bool normalize = true;
  if (!routerFile.empty()) {
    routerPath = absolute(routerFile);
    Expected<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::open(routerPath);
    if (!file)
      return file.takeError();
    router = std::move(*file);
    const auto &meta = router->metadata();
    int64_t n = static_cast<int64_t>(adapters.size());
    topK = std::min<int64_t>(2, n);
    if (auto it = meta.find("top_k"); it != meta.end())
      if (StringRef(it->second).getAsInteger(10, topK) || topK < 1 ||
          topK > n)
        return makeError(routerPath + ": metadata 'top_k' is '" +
                         it->second + "'; expected an integer in [1, " +
                         llvm::Twine(n) + "] (the number of adapters)");
    if (auto it = meta.find("norm_topk_prob"); it != meta.end()) {
      if (it->second != "true" && it->second != "false")
        return makeError(routerPath + ": metadata 'norm_topk_prob' is '" +
                         it->second + "'; expected \"true\" or \"false\"");
      normalize = it->second == "true";
    }
  } else if (adapters.size() > 1) {
    return makeError(llvm::Twine(adapters.size()) +
                     " adapters form a LoRA mixture, which needs a router: "
                     "pass --lora-router FILE.safetensors (layout in "
                     "docs/import.md)");
  }

  for (const std::string &module : modules) {
    LoraMixtureSpec m;
    auto split = splitLayer(module);
    if (!split)
      return makeError(adapters.front().weightsPath + ": module '" + module +
                       "' has no 'layers.N.' part: cannot tell its layer");
    m.layer = split->first;
    m.target = split->second;
    m.modulePath = module;

    Expected<TensorLocation> base = store.find(module + ".weight");
    if (!base)
      return base.takeError();
    if (base->info.shape.size() != 2 || !isConvertibleFloat(base->info.dtype))
      return makeError(base->path + ": tensor '" + module +
                       ".weight' must be a 2-D float projection [out, in], "
                       "got " +
                       formatShape(base->info.shape) + " " +
                       dtypeName(base->info.dtype));
    m.out = base->info.shape[0];
    m.in = base->info.shape[1];
    m.base.names = {module + ".weight"};
    m.base.files = {base->path};
    m.base.shape = base->info.shape;
    m.base.dtype = base->info.dtype;
    Expected<TensorLocation> bias = store.find(module + ".bias");
    if (bias) {
      if (bias->info.shape != std::vector<int64_t>{m.out})
        return makeError(bias->path + ": tensor '" + module +
                         ".bias' has shape " + formatShape(bias->info.shape) +
                         "; expected [" + llvm::Twine(m.out) + "]");
      m.baseBias.names = {module + ".bias"};
      m.baseBias.files = {bias->path};
      m.baseBias.shape = bias->info.shape;
      m.baseBias.dtype = bias->info.dtype;
    } else {
      llvm::consumeError(bias.takeError());
    }

    for (const AdapterConfig &a : adapters) {
      LoraAdapterRef ref;
      ref.dir = a.dir;
      std::string stem = (kPrefix + module).str();
      std::string shapeA = llvm::formatv("[r = {0}, in = {1}]", a.rank, m.in);
      std::string shapeB = llvm::formatv("[out = {0}, r = {1}]", m.out, a.rank);
      auto ta = adapterTensor(a, stem + ".lora_A.weight", a.rank, m.in, shapeA);
      if (!ta)
        return ta.takeError();
      auto tb = adapterTensor(a, stem + ".lora_B.weight", m.out, a.rank, shapeB);
      if (!tb)
        return tb.takeError();
      ref.a = std::move(*ta);
      ref.b = std::move(*tb);
      ref.rank = a.rank;
      ref.scale = static_cast<float>(
          a.rslora ? a.alpha / std::sqrt(static_cast<double>(a.rank))
                   : a.alpha / static_cast<double>(a.rank));
      m.maxRank = std::max(m.maxRank, a.rank);
      m.adapters.push_back(std::move(ref));
    }

    if (router) {
      int64_t n = static_cast<int64_t>(adapters.size());
      std::string name =
          llvm::formatv("layers.{0}.{1}.router.weight", m.layer, m.target);
      const TensorInfo *w = router->lookup(name);
      if (!w)
        return makeError(routerPath + ": missing tensor '" + name +
                         "' (the router of the adapters on " + module + ")");
      if (w->shape != std::vector<int64_t>{n, m.in} ||
          !isConvertibleFloat(w->dtype))
        return makeError(routerPath + ": tensor '" + name + "' has shape " +
                         formatShape(w->shape) + " " + dtypeName(w->dtype) +
                         "; expected [" + llvm::Twine(n) + ", " +
                         llvm::Twine(m.in) +
                         "] float ([adapters, in features])");
      m.routerWeight = {{name}, {routerPath}, w->shape, w->dtype};
      std::string biasName =
          llvm::formatv("layers.{0}.{1}.router.bias", m.layer, m.target);
      if (const TensorInfo *b = router->lookup(biasName)) {
        if (b->shape != std::vector<int64_t>{n} || b->dtype != DType::F32)
          return makeError(routerPath + ": tensor '" + biasName +
                           "' has shape " + formatShape(b->shape) + " " +
                           dtypeName(b->dtype) + "; expected [" +
                           llvm::Twine(n) + "] F32");
        m.routerBias = {{biasName}, {routerPath}, b->shape, b->dtype};
      }
      m.topK = topK;
      m.normalize = normalize;
    }
    spec.loras.push_back(std::move(m));
  }
  return Error::success();
}
