//===- Package.cpp - Ahead-of-time compiled model packages ----------------===//
//
// Part of moe-opt. The manifest is described field by field in
// docs/package.md. One decoder (decodeManifest) checks a manifest; the
// writer runs it on the manifest it is about to write, so that it never
// writes a package that openPackage would refuse.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Package.h"

#include "moe/runtime/KernelCache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>

namespace moe::runtime {

using moe::ElementType;
using moe::WeightRef;

namespace {

constexpr int64_t kMaxJsonInteger = int64_t(1) << 53;

std::string errnoText(int error) { return std::strerror(error); }

std::string qt(const std::string &s) { return jsonQuote(s); }

std::string index(const std::string &path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}
std::string field(const std::string &path, const std::string &key) {
  return path.empty() ? key : path + "." + key;
}

/// A short description of a JSON value for "found ..." in messages.
std::string describe(const Json &v) {
  switch (v.kind()) {
  case Json::Kind::Null:
    return "null";
  case Json::Kind::Bool:
    return v.asBool() ? "true" : "false";
  case Json::Kind::Number: {
    std::string s = v.dump(0);
    return s;
  }
  case Json::Kind::String: {
    const std::string &s = v.asString();
    if (s.size() > 60)
      return jsonQuote(s.substr(0, 57)) + "...";
    return jsonQuote(s);
  }
  default:
    return jsonKindName(v.kind());
  }
}

bool isIdentifier(const std::string &s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0])))
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_'))
      return false;
  return true;
}

bool isArchName(const std::string &s) {
  if (s.empty() || s.size() > 64)
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_'))
      return false;
  return true;
}

/// A plain file name: no directory part, not "." or "..".
bool isPlainFileName(const std::string &s) {
  return !s.empty() && s != "." && s != ".." &&
         s.find('/') == std::string::npos &&
         s.find('\0') == std::string::npos && s.size() <= 255;
}

bool isSha256Hex(const std::string &s) {
  if (s.size() != 64)
    return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

/// Whether `name` occurs in `source` as a whole identifier.
bool occursAsIdentifier(const std::string &source, const std::string &name) {
  auto identChar = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  };
  size_t at = 0;
  while ((at = source.find(name, at)) != std::string::npos) {
    bool before = at > 0 && identChar(source[at - 1]);
    size_t end = at + name.size();
    bool after = end < source.size() && identChar(source[end]);
    if (!before && !after)
      return true;
    at += 1;
  }
  return false;
}

int64_t alignUp(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

/// product(shape) * elementSize, or -1 when a dimension is not positive or
/// the size passes 2^53.
int64_t tensorByteSize(const std::vector<int64_t> &shape, ElementType type) {
  int64_t n = moe::elementSize(type);
  for (int64_t d : shape) {
    if (d < 1 || d > kMaxJsonInteger || n > kMaxJsonInteger / d)
      return -1;
    n *= d;
  }
  return n;
}

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string weightLabel(const WeightRef &ref) {
  if (ref.names.empty())
    return "a constant " + shapeText(ref.shape) + " " +
           moe::elementTypeName(ref.type);
  std::string s = qt(ref.names.front());
  if (ref.names.size() > 1)
    s += " (and " + std::to_string(ref.names.size() - 1) + " more)";
  return s + " " + shapeText(ref.shape) + " " + moe::elementTypeName(ref.type);
}

/// A key equal for WeightRefs that are sameWeight (without inline values).
std::string identityKey(const WeightRef &ref) {
  std::string key;
  for (const std::string &n : ref.names) {
    key += std::to_string(n.size());
    key += ':';
    key += n;
  }
  key += ref.stacked ? "|s|" : "|u|";
  key += shapeText(ref.shape);
  key += moe::elementTypeName(ref.type);
  return key;
}

bool sameBits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

const char *kKnownDtypes = "f32, bf16, f16, i32 or u32";

//===----------------------------------------------------------------------===//
// Reading manifest fields with paths
//===----------------------------------------------------------------------===//

/// Reads fields of a manifest, remembering the first error as
/// "PATH: expected ..., found ...". After an error every getter returns a
/// default, so callers check ok() at convenient points.
class Fields {
public:
  bool ok() const { return error_.empty(); }
  const std::string &error() const { return error_; }

  bool fail(const std::string &path, const std::string &message) {
    if (error_.empty())
      error_ =
          (path.empty() ? std::string("(top level)") : path) + ": " + message;
    return false;
  }

  /// The member `key` of `obj` (at `path`), of `kind`; null (after an
  /// error) when absent or of another kind. `nullable`: null is accepted
  /// and returned as a pointer to the null value.
  const Json *get(const Json &obj, const std::string &path, const char *key,
                  Json::Kind kind, bool nullable = false) {
    if (!ok())
      return nullptr;
    std::string at = field(path, key);
    const Json *v = obj.find(key);
    if (!v) {
      fail(at, std::string("missing (expected ") + jsonKindName(kind) +
                   (nullable ? " or null" : "") + ")");
      return nullptr;
    }
    if (nullable && v->isNull())
      return v;
    return check(*v, at, kind) ? v : nullptr;
  }

  bool check(const Json &v, const std::string &path, Json::Kind kind) {
    if (!ok())
      return false;
    if (v.kind() != kind)
      return fail(path, std::string("expected ") + jsonKindName(kind) +
                            ", found " + describe(v));
    return true;
  }

  std::string string(const Json &obj, const std::string &path,
                     const char *key) {
    const Json *v = get(obj, path, key, Json::Kind::String);
    return v ? v->asString() : std::string();
  }

  bool boolean(const Json &obj, const std::string &path, const char *key) {
    const Json *v = get(obj, path, key, Json::Kind::Bool);
    return v && v->asBool();
  }

  /// An integer in [min, max].
  int64_t integer(const Json &v, const std::string &path, int64_t min,
                  int64_t max, const std::string &what = "") {
    if (!ok())
      return min;
    std::optional<int64_t> i = v.asInt64();
    std::string range =
        "from " + std::to_string(min) + " to " + std::to_string(max);
    if (!i) {
      fail(path, "expected " + (what.empty() ? "an integer " + range : what) +
                     ", found " + describe(v));
      return min;
    }
    if (*i < min || *i > max) {
      fail(path, "expected " + (what.empty() ? "an integer " + range : what) +
                     ", found " + std::to_string(*i));
      return min;
    }
    return *i;
  }

  int64_t integer(const Json &obj, const std::string &path, const char *key,
                  int64_t min, int64_t max) {
    if (!ok())
      return min;
    const Json *v = obj.find(key);
    if (!v) {
      fail(field(path, key), "missing (expected an integer)");
      return min;
    }
    return integer(*v, field(path, key), min, max);
  }

  /// An index into a list of `count` things called `what`.
  int index(const Json &v, const std::string &path, size_t count,
            const std::string &what) {
    if (!ok())
      return 0;
    if (count == 0) {
      fail(path, "expected an index into " + what + ", which is empty; found " +
                     describe(v));
      return 0;
    }
    return static_cast<int>(integer(v, path, 0, static_cast<int64_t>(count) - 1,
                                    "an index into " + what + " (0 to " +
                                        std::to_string(count - 1) + ")"));
  }

  const Json::Array &array(const Json &obj, const std::string &path,
                           const char *key) {
    static const Json::Array empty;
    const Json *v = get(obj, path, key, Json::Kind::Array);
    return v ? v->items() : empty;
  }

  const Json &object(const Json &obj, const std::string &path,
                     const char *key) {
    static const Json empty = Json::object();
    const Json *v = get(obj, path, key, Json::Kind::Object);
    return v ? *v : empty;
  }

private:
  std::string error_;
};

//===----------------------------------------------------------------------===//
// The manifest's contents
//===----------------------------------------------------------------------===//

struct FileEntry {
  std::string path; ///< Field path in the manifest ("cubins[0]").
  std::string file;
  int64_t bytes = 0;
  std::string sha256;
};

struct Decoded {
  std::string producer;
  Json model;
  FileEntry source;
  std::vector<std::pair<std::string, FileEntry>> cubins; // arch, file
  std::optional<FileEntry> ir;
  std::vector<std::string> kernelNames;
  std::vector<KernelResources> resources;
  FileEntry weights;
  std::vector<PackageTensor> tensors;
  std::vector<std::vector<int>> layerTensors;
  /// Layers without their weights (attachWeights adds them).
  moe::ModulePlan plan;
};

FileEntry readFileEntry(Fields &f, const Json &obj, const std::string &path) {
  FileEntry e;
  e.path = path;
  e.file = f.string(obj, path, "file");
  if (f.ok() && !isPlainFileName(e.file))
    f.fail(field(path, "file"),
           "expected a file name without a directory, found " + qt(e.file));
  e.bytes = f.integer(obj, path, "bytes", 0, kMaxJsonInteger);
  e.sha256 = f.string(obj, path, "sha256");
  if (f.ok() && !isSha256Hex(e.sha256))
    f.fail(field(path, "sha256"),
           "expected 64 lower-case hex digits (a SHA-256), found " +
               qt(e.sha256));
  return e;
}

ElementType readDtype(Fields &f, const Json &obj, const std::string &path) {
  std::string name = f.string(obj, path, "dtype");
  if (!f.ok())
    return ElementType::F32;
  std::optional<ElementType> t = parseElementType(name);
  if (!t) {
    f.fail(field(path, "dtype"),
           std::string("expected ") + kKnownDtypes + ", found " + qt(name));
    return ElementType::F32;
  }
  return *t;
}

void readResources(Fields &f, const Json &obj, const std::string &path,
                   const std::string &kernel,
                   std::vector<KernelResources> &out) {
  for (const Json::Member &m : obj.members()) {
    std::string at = field(path, m.first);
    if (!isArchName(m.first)) {
      f.fail(at, "expected an architecture name ([A-Za-z0-9_]+) as the key");
      return;
    }
    if (!f.check(m.second, at, Json::Kind::Object))
      return;
    const Json &r = m.second;
    KernelResources k;
    k.name = kernel;
    k.arch = m.first;
    k.isEntry = f.boolean(r, at, "entry");
    constexpr int64_t kMax = kMaxJsonInteger;
    k.registers = static_cast<int>(f.integer(r, at, "registers", 0, 65536));
    k.barriers = static_cast<int>(f.integer(r, at, "barriers", 0, 65536));
    k.stackFrameBytes = f.integer(r, at, "stack_frame_bytes", 0, kMax);
    k.spillStoresBytes = f.integer(r, at, "spill_stores_bytes", 0, kMax);
    k.spillLoadsBytes = f.integer(r, at, "spill_loads_bytes", 0, kMax);
    k.sharedBytes = f.integer(r, at, "shared_bytes", 0, kMax);
    k.constantBytes = f.integer(r, at, "constant_bytes", 0, kMax);
    k.localBytes = f.integer(r, at, "local_bytes", 0, kMax);
    if (!f.ok())
      return;
    out.push_back(std::move(k));
  }
}

void readTensors(Fields &f, const Json::Array &items, const std::string &path,
                 int64_t fileBytes, std::vector<PackageTensor> &out) {
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < items.size() && f.ok(); ++i) {
    std::string at = index(path, i);
    if (!f.check(items[i], at, Json::Kind::Object))
      return;
    const Json &t = items[i];
    PackageTensor tensor;
    WeightRef &ref = tensor.ref;
    const Json::Array &names = f.array(t, at, "names");
    for (size_t k = 0; k < names.size() && f.ok(); ++k)
      if (f.check(names[k], index(field(at, "names"), k), Json::Kind::String))
        ref.names.push_back(names[k].asString());
    const Json::Array &files = f.array(t, at, "files");
    for (size_t k = 0; k < files.size() && f.ok(); ++k)
      if (f.check(files[k], index(field(at, "files"), k), Json::Kind::String))
        ref.files.push_back(files[k].asString());
    ref.stacked = f.boolean(t, at, "stacked");
    tensor.constant = f.boolean(t, at, "constant");
    const Json::Array &shape = f.array(t, at, "shape");
    if (f.ok() && shape.empty())
      f.fail(field(at, "shape"), "expected at least one dimension, found []");
    for (size_t k = 0; k < shape.size() && f.ok(); ++k)
      ref.shape.push_back(f.integer(shape[k], index(field(at, "shape"), k), 1,
                                    kMaxJsonInteger, "a positive dimension"));
    ref.type = readDtype(f, t, at);
    // "offset": null is an external tensor, bound at run time.
    const Json *offset = t.find("offset");
    tensor.stored = !(offset && offset->isNull());
    if (tensor.stored)
      tensor.offset = f.integer(t, at, "offset", 0, kMaxJsonInteger);
    tensor.bytes = f.integer(t, at, "bytes", 1, kMaxJsonInteger);
    if (!f.ok())
      return;
    if (tensor.constant && !tensor.stored)
      f.fail(field(at, "offset"), "expected an integer for a constant (its "
                                  "values are in weights.bin), found null");
    if (tensor.constant && !ref.names.empty())
      f.fail(field(at, "names"), "expected [] for a constant, found " +
                                     std::to_string(ref.names.size()) +
                                     " names");
    else if (tensor.constant && ref.stacked)
      f.fail(field(at, "stacked"), "expected false for a constant");
    else if (!tensor.constant && ref.names.empty())
      f.fail(field(at, "names"),
             "expected at least one name for a checkpoint weight (or "
             "\"constant\": true)");
    int64_t expected = tensorByteSize(ref.shape, ref.type);
    if (f.ok() && expected != tensor.bytes)
      f.fail(field(at, "bytes"),
             expected < 0
                 ? "the shape " + shapeText(ref.shape) + " is too large"
                 : "expected " + std::to_string(expected) + " (shape " +
                       shapeText(ref.shape) + " of " +
                       moe::elementTypeName(ref.type) + "), found " +
                       std::to_string(tensor.bytes));
    if (f.ok() && tensor.stored && tensor.offset % kPackageWeightAlignment != 0)
      f.fail(field(at, "offset"), "expected a multiple of " +
                                      std::to_string(kPackageWeightAlignment) +
                                      ", found " +
                                      std::to_string(tensor.offset));
    if (f.ok() && tensor.stored && tensor.offset + tensor.bytes > fileBytes)
      f.fail(at, "bytes " + std::to_string(tensor.offset) + " to " +
                     std::to_string(tensor.offset + tensor.bytes) +
                     " lie outside weights.bin (" + std::to_string(fileBytes) +
                     " bytes, weights.bytes)");
    if (f.ok() && !tensor.constant) {
      auto [it, fresh] = seen.emplace(identityKey(ref), i);
      if (!fresh)
        f.fail(at, "describes the same weight as " + index(path, it->second) +
                       " (" + weightLabel(ref) + ")");
    }
    out.push_back(std::move(tensor));
  }
  if (!f.ok())
    return;
  // No two stored tensors may overlap.
  std::vector<size_t> order;
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].stored)
      order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return out[a].offset != out[b].offset ? out[a].offset < out[b].offset
                                          : a < b;
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const PackageTensor &prev = out[order[k - 1]];
    if (prev.offset + prev.bytes > out[order[k]].offset) {
      f.fail(index(path, order[k]),
             "overlaps " + index(path, order[k - 1]) + " in weights.bin");
      return;
    }
  }
}

/// A value index, or null (-1) when `nullable`.
int readValueIndex(Fields &f, const Json &obj, const std::string &path,
                   const char *key, size_t values, const std::string &what,
                   bool nullable) {
  const Json *v = obj.find(key);
  if (!f.ok())
    return -1;
  if (!v) {
    f.fail(field(path, key), nullable ? "missing (expected an integer or null)"
                                      : "missing (expected an integer)");
    return -1;
  }
  if (nullable && v->isNull())
    return -1;
  return f.index(*v, field(path, key), values, what);
}

void readLaunch(Fields &f, const Json &l, const std::string &at,
                const moe::LayerPlan &layer, const std::string &layerPath,
                moe::Launch &launch) {
  std::string valuesWhat = field(layerPath, "values");
  std::string weightsWhat = field(layerPath, "weights");
  launch.kernel = f.string(l, at, "kernel");
  if (f.ok() && !isIdentifier(launch.kernel))
    f.fail(field(at, "kernel"),
           "expected a C identifier, found " + qt(launch.kernel));
  launch.origin = f.string(l, at, "origin");
  launch.blockThreads =
      static_cast<int>(f.integer(l, at, "block_threads", 1, 1024));
  launch.dynamicSharedBytes =
      f.integer(l, at, "dynamic_shared_bytes", 0, (int64_t(1) << 31) - 1);
  launch.tokensPerBlock =
      f.integer(l, at, "tokens_per_block", 1, (int64_t(1) << 31) - 1);
  launch.maxBlocks = f.integer(l, at, "max_blocks", 1, (int64_t(1) << 31) - 1);
  launch.rowsPerToken =
      f.integer(l, at, "rows_per_token", 1, (int64_t(1) << 31) - 1);
  launch.extraBlocks =
      f.integer(l, at, "extra_blocks", 0, (int64_t(1) << 31) - 1);
  launch.gridColumns =
      f.integer(l, at, "grid_columns", 1, (int64_t(1) << 31) - 1);
  launch.slotsPerToken =
      f.integer(l, at, "slots_per_token", 1, (int64_t(1) << 31) - 1);
  launch.minSlots = f.integer(l, at, "min_slots", 0, kMaxJsonInteger);
  if (f.ok()) {
    const Json *maxSlots = l.find("max_slots");
    if (!maxSlots)
      f.fail(field(at, "max_slots"), "missing (expected an integer or null)");
    else if (!maxSlots->isNull())
      launch.maxSlots = f.integer(*maxSlots, field(at, "max_slots"), 0,
                                  kMaxJsonInteger,
                                  "an integer from 0 to " +
                                      std::to_string(kMaxJsonInteger) +
                                      " or null (no upper bound)");
  }
  const Json::Array &args = f.array(l, at, "args");
  for (size_t a = 0; a < args.size() && f.ok(); ++a) {
    std::string argAt = index(field(at, "args"), a);
    if (!f.check(args[a], argAt, Json::Kind::Object))
      break;
    std::string kind = f.string(args[a], argAt, "kind");
    moe::Binding b;
    if (!f.ok())
      break;
    if (kind == "null") {
      b.kind = moe::Binding::Null;
      if (args[a].find("index"))
        f.fail(field(argAt, "index"), "expected no index for a null argument");
    } else if (kind == "value") {
      b.kind = moe::Binding::Value;
      b.value = readValueIndex(f, args[a], argAt, "index", layer.values.size(),
                               valuesWhat, false);
    } else if (kind == "weight") {
      b.kind = moe::Binding::Weight;
      b.weight = readValueIndex(f, args[a], argAt, "index",
                                layer.weights.size(), weightsWhat, false);
    } else {
      f.fail(field(argAt, "kind"),
             "expected \"value\", \"weight\" or \"null\", found " + qt(kind));
    }
    launch.args.push_back(b);
  }
  const Json::Array &zero = f.array(l, at, "zero_once");
  for (size_t z = 0; z < zero.size() && f.ok(); ++z)
    launch.zeroOnce.push_back(f.index(zero[z], index(field(at, "zero_once"), z),
                                      layer.values.size(), valuesWhat));
}

void readLayer(Fields &f, const Json &l, const std::string &at,
               size_t tensorCount, moe::LayerPlan &layer,
               std::vector<int> &tensorsOfLayer) {
  layer.layer = f.integer(l, at, "layer", 0, kMaxJsonInteger);
  layer.target = f.string(l, at, "target");
  layer.function = f.string(l, at, "function");
  const Json::Array &values = f.array(l, at, "values");
  for (size_t v = 0; v < values.size() && f.ok(); ++v) {
    std::string vAt = index(field(at, "values"), v);
    if (!f.check(values[v], vAt, Json::Kind::Object))
      break;
    moe::BufferShape shape;
    shape.type = readDtype(f, values[v], vAt);
    shape.perToken = f.integer(values[v], vAt, "per_token", 0, kMaxJsonInteger);
    shape.fixed = f.integer(values[v], vAt, "fixed", 0, kMaxJsonInteger);
    if (f.ok() && shape.perToken + shape.fixed < 1)
      f.fail(vAt, "expected a buffer of at least one element (per_token or "
                  "fixed positive), found per_token 0 and fixed 0");
    layer.values.push_back(shape);
  }
  const Json::Array &weights = f.array(l, at, "weights");
  for (size_t w = 0; w < weights.size() && f.ok(); ++w)
    tensorsOfLayer.push_back(f.index(weights[w], index(field(at, "weights"), w),
                                     tensorCount, "weights.tensors"));
  // Only the count matters to the launches' bindings; attachWeights fills
  // in the WeightRefs.
  layer.weights.resize(tensorsOfLayer.size());
  std::string valuesWhat = field(at, "values");
  layer.input =
      readValueIndex(f, l, at, "input", layer.values.size(), valuesWhat, false);
  layer.output = readValueIndex(f, l, at, "output", layer.values.size(),
                                valuesWhat, false);
  // Router 0 in routing_ids/routing_weights; routers 1.. in the optional
  // more_routings (absent from single-router layers and older manifests).
  moe::LayerPlan::Routing first;
  first.ids = readValueIndex(f, l, at, "routing_ids", layer.values.size(),
                             valuesWhat, true);
  first.weights = readValueIndex(f, l, at, "routing_weights",
                                 layer.values.size(), valuesWhat, true);
  if (first.ids >= 0 && first.weights >= 0)
    layer.routings.push_back(first);
  if (f.ok() && l.find("more_routings")) {
    std::string moreAt = field(at, "more_routings");
    const Json::Array &more = f.array(l, at, "more_routings");
    if (f.ok() && !more.empty() && layer.routings.empty())
      f.fail(moreAt, "needs routing_ids and routing_weights for router 0");
    for (size_t r = 0; r < more.size() && f.ok(); ++r) {
      moe::LayerPlan::Routing next;
      next.ids = readValueIndex(f, more[r], index(moreAt, r), "ids",
                                layer.values.size(), valuesWhat, false);
      next.weights = readValueIndex(f, more[r], index(moreAt, r), "weights",
                                    layer.values.size(), valuesWhat, false);
      layer.routings.push_back(next);
    }
  }
  layer.inputWidth = f.integer(l, at, "input_width", 1, kMaxJsonInteger);
  layer.outputWidth = f.integer(l, at, "output_width", 1, kMaxJsonInteger);
  layer.allExperts = f.integer(l, at, "all_experts", 0, kMaxJsonInteger);
  const Json::Array &launches = f.array(l, at, "launches");
  for (size_t k = 0; k < launches.size() && f.ok(); ++k) {
    std::string lAt = index(field(at, "launches"), k);
    if (!f.check(launches[k], lAt, Json::Kind::Object))
      break;
    moe::Launch launch;
    readLaunch(f, launches[k], lAt, layer, at, launch);
    layer.launches.push_back(std::move(launch));
  }
}

/// Checks a manifest and reads it into `out`. Errors are "PATH: ...".
Status decodeManifest(const Json &root, Decoded &out) {
  Fields f;
  if (!root.isObject())
    return Status::error("expected an object at the top level, found " +
                         describe(root));
  std::string format = f.string(root, "", "format");
  if (f.ok() && format != kPackageFormat)
    f.fail("format", std::string("expected \"") + kPackageFormat +
                         "\", found " + qt(format));
  if (!f.ok())
    return Status::error(f.error());
  // The version comes before any other field: another version may lay out
  // the rest differently.
  const Json *version = root.find("version");
  if (!version)
    return Status::error("version: missing (expected an integer)");
  if (!version->isInteger())
    return Status::error("version: expected an integer, found " +
                         describe(*version));
  if (*version->asInt64() != kPackageVersion)
    return Status::error("version: package format version " +
                         std::to_string(*version->asInt64()) +
                         " is not supported (this build reads version " +
                         std::to_string(kPackageVersion) + ")");

  out.producer = f.string(root, "", "producer");
  out.model = f.object(root, "", "model");
  out.source = readFileEntry(f, f.object(root, "", "source"), "source");

  const Json::Array &cubins = f.array(root, "", "cubins");
  for (size_t i = 0; i < cubins.size() && f.ok(); ++i) {
    std::string at = index("cubins", i);
    if (!f.check(cubins[i], at, Json::Kind::Object))
      break;
    std::string arch = f.string(cubins[i], at, "arch");
    if (f.ok() && !isArchName(arch))
      f.fail(field(at, "arch"),
             "expected an architecture name ([A-Za-z0-9_]+), found " +
                 qt(arch));
    for (const auto &c : out.cubins)
      if (f.ok() && c.first == arch)
        f.fail(field(at, "arch"),
               "expected each arch once, found " + qt(arch) + " again");
    FileEntry e = readFileEntry(f, cubins[i], at);
    out.cubins.emplace_back(arch, e);
  }

  if (f.ok()) {
    const Json *ir = f.get(root, "", "ir", Json::Kind::Object, true);
    if (ir && ir->isObject())
      out.ir = readFileEntry(f, *ir, "ir");
  }

  const Json::Array &kernels = f.array(root, "", "kernels");
  std::set<std::string> kernelSet;
  for (size_t i = 0; i < kernels.size() && f.ok(); ++i) {
    std::string at = index("kernels", i);
    if (!f.check(kernels[i], at, Json::Kind::Object))
      break;
    std::string name = f.string(kernels[i], at, "name");
    if (f.ok() && name.empty())
      f.fail(field(at, "name"), "expected a kernel name, found \"\"");
    if (f.ok() && !kernelSet.insert(name).second)
      f.fail(field(at, "name"),
             "expected each kernel once, found " + qt(name) + " again");
    (void)f.string(kernels[i], at, "origin");
    const Json &res = f.object(kernels[i], at, "resources");
    if (f.ok())
      readResources(f, res, field(at, "resources"), name, out.resources);
    out.kernelNames.push_back(name);
  }

  const Json &weights = f.object(root, "", "weights");
  if (f.ok()) {
    out.weights = readFileEntry(f, weights, "weights");
    f.integer(weights, "weights", "alignment", kPackageWeightAlignment,
              kPackageWeightAlignment);
    const Json::Array &tensors = f.array(weights, "weights", "tensors");
    if (f.ok())
      readTensors(f, tensors, "weights.tensors", out.weights.bytes,
                  out.tensors);
  }

  const Json::Array &layers = f.array(root, "", "layers");
  std::vector<bool> used(out.tensors.size(), false);
  for (size_t i = 0; i < layers.size() && f.ok(); ++i) {
    std::string at = index("layers", i);
    if (!f.check(layers[i], at, Json::Kind::Object))
      break;
    moe::LayerPlan layer;
    std::vector<int> tensorsOfLayer;
    readLayer(f, layers[i], at, out.tensors.size(), layer, tensorsOfLayer);
    if (!f.ok())
      break;
    for (int t : tensorsOfLayer)
      used[t] = true;
    for (size_t k = 0; k < layer.launches.size() && f.ok(); ++k)
      if (!kernelSet.count(layer.launches[k].kernel))
        f.fail(field(index(field(at, "launches"), k), "kernel"),
               "kernel " + qt(layer.launches[k].kernel) +
                   " is not listed in \"kernels\"");
    out.plan.layers.push_back(std::move(layer));
    out.layerTensors.push_back(std::move(tensorsOfLayer));
  }
  for (size_t t = 0; t < used.size() && f.ok(); ++t)
    if (!used[t])
      f.fail(index("weights.tensors", t), "is not used by any layer");

  // Every file once, and not the manifest.
  if (f.ok()) {
    std::vector<const FileEntry *> entries = {&out.source, &out.weights};
    for (const auto &c : out.cubins)
      entries.push_back(&c.second);
    if (out.ir)
      entries.push_back(&*out.ir);
    std::map<std::string, std::string> names;
    for (const FileEntry *e : entries) {
      if (e->file == kPackageManifestFile) {
        f.fail(field(e->path, "file"),
               std::string("expected a file other than ") +
                   kPackageManifestFile);
        break;
      }
      auto [it, fresh] = names.emplace(e->file, e->path);
      if (!fresh) {
        f.fail(field(e->path, "file"),
               qt(e->file) + " is also " + field(it->second, "file"));
        break;
      }
    }
  }
  if (!f.ok())
    return Status::error(f.error());
  return Status::success();
}

/// Every launch's kernel occurs in the source.
Status checkKernelsInSource(const moe::ModulePlan &plan,
                            const std::string &source,
                            const std::string &sourceFile) {
  std::set<std::string> checked;
  for (size_t l = 0; l < plan.layers.size(); ++l)
    for (size_t k = 0; k < plan.layers[l].launches.size(); ++k) {
      const std::string &name = plan.layers[l].launches[k].kernel;
      if (!checked.insert(name).second)
        continue;
      if (!occursAsIdentifier(source, name))
        return Status::error(
            field(index(field(index("layers", l), "launches"), k), "kernel") +
            ": kernel " + qt(name) + " does not occur in " + sourceFile);
    }
  return Status::success();
}

/// Fills each layer's WeightRefs from the tensors.
void attachWeights(Decoded &d) {
  for (size_t l = 0; l < d.plan.layers.size(); ++l) {
    moe::LayerPlan &layer = d.plan.layers[l];
    layer.weights.clear();
    for (int t : d.layerTensors[l])
      layer.weights.push_back(d.tensors[t].ref);
  }
}

//===----------------------------------------------------------------------===//
// Building a manifest
//===----------------------------------------------------------------------===//

Json fileEntryJson(const std::string &file, int64_t bytes,
                   const std::string &sha) {
  Json j = Json::object();
  j.set("file", file);
  j.set("bytes", bytes);
  j.set("sha256", sha);
  return j;
}

Json bindingJson(const moe::Binding &b) {
  Json j = Json::object();
  switch (b.kind) {
  case moe::Binding::Null:
    j.set("kind", "null");
    break;
  case moe::Binding::Value:
    j.set("kind", "value");
    j.set("index", b.value);
    break;
  case moe::Binding::Weight:
    j.set("kind", "weight");
    j.set("index", b.weight);
    break;
  default:
    j.set("kind", "invalid");
  }
  return j;
}

Json indexOrNull(int i) { return i < 0 ? Json() : Json(i); }

Json layerJson(const moe::LayerPlan &layer, const std::vector<int> &tensors) {
  Json j = Json::object();
  j.set("layer", layer.layer);
  j.set("target", layer.target);
  j.set("function", layer.function);
  j.set("input", layer.input);
  j.set("output", layer.output);
  const bool routed = !layer.routings.empty();
  j.set("routing_ids", indexOrNull(routed ? layer.routings[0].ids : -1));
  j.set("routing_weights",
        indexOrNull(routed ? layer.routings[0].weights : -1));
  if (layer.routings.size() > 1) {
    Json &more = j.set("more_routings", Json::array());
    for (size_t r = 1; r < layer.routings.size(); ++r) {
      Json pair = Json::object();
      pair.set("ids", layer.routings[r].ids);
      pair.set("weights", layer.routings[r].weights);
      more.push(std::move(pair));
    }
  }
  j.set("input_width", layer.inputWidth);
  j.set("output_width", layer.outputWidth);
  j.set("all_experts", layer.allExperts);
  Json &values = j.set("values", Json::array());
  for (const moe::BufferShape &v : layer.values) {
    Json &e = values.push(Json::object());
    e.set("dtype", moe::elementTypeName(v.type));
    e.set("per_token", v.perToken);
    e.set("fixed", v.fixed);
  }
  Json &weights = j.set("weights", Json::array());
  for (int t : tensors)
    weights.push(t);
  Json &launches = j.set("launches", Json::array());
  for (const moe::Launch &launch : layer.launches) {
    Json &e = launches.push(Json::object());
    e.set("kernel", launch.kernel);
    e.set("origin", launch.origin);
    e.set("block_threads", launch.blockThreads);
    e.set("dynamic_shared_bytes", launch.dynamicSharedBytes);
    e.set("tokens_per_block", launch.tokensPerBlock);
    e.set("max_blocks", launch.maxBlocks);
    e.set("rows_per_token", launch.rowsPerToken);
    e.set("extra_blocks", launch.extraBlocks);
    e.set("grid_columns", launch.gridColumns);
    e.set("slots_per_token", launch.slotsPerToken);
    e.set("min_slots", launch.minSlots);
    e.set("max_slots", launch.maxSlots < 0 ? Json() : Json(launch.maxSlots));
    Json &args = e.set("args", Json::array());
    for (const moe::Binding &b : launch.args)
      args.push(bindingJson(b));
    Json &zero = e.set("zero_once", Json::array());
    for (int z : launch.zeroOnce)
      zero.push(z);
  }
  return j;
}

Json resourcesJson(const KernelResources &r) {
  Json j = Json::object();
  j.set("entry", r.isEntry);
  j.set("registers", r.registers);
  j.set("barriers", r.barriers);
  j.set("stack_frame_bytes", r.stackFrameBytes);
  j.set("spill_stores_bytes", r.spillStoresBytes);
  j.set("spill_loads_bytes", r.spillLoadsBytes);
  j.set("shared_bytes", r.sharedBytes);
  j.set("constant_bytes", r.constantBytes);
  j.set("local_bytes", r.localBytes);
  return j;
}

/// The first string (key or value) of `j` that is not valid UTF-8.
bool findInvalidUtf8(const Json &j, const std::string &path,
                     std::string &where) {
  if (j.isString()) {
    if (!isValidUtf8(j.asString())) {
      where = path;
      return true;
    }
    return false;
  }
  if (j.isArray()) {
    for (size_t i = 0; i < j.items().size(); ++i)
      if (findInvalidUtf8(j.items()[i], index(path, i), where))
        return true;
    return false;
  }
  for (const Json::Member &m : j.members()) {
    if (!isValidUtf8(m.first)) {
      where =
          path.empty() ? "(a key at the top level)" : "(a key of " + path + ")";
      return true;
    }
    if (findInvalidUtf8(m.second, field(path, m.first), where))
      return true;
  }
  return false;
}

struct Layout {
  Json manifest;
  std::vector<int64_t> offsets; ///< Of each tensor in weights.bin.
  int64_t weightsBytes = 0;
};

/// The manifest of `c`, checked as openPackage would check it.
Expected<Layout> buildManifest(const PackageContents &c) {
  const moe::ModulePlan &plan = c.plan;
  Layout out;

  // Weights: each layer's WeightRefs against the tensors.
  if (c.layerTensors.size() != plan.layers.size())
    return Status::error(
        "layerTensors has " + std::to_string(c.layerTensors.size()) +
        " layers, the plan " + std::to_string(plan.layers.size()) +
        " (call collectWeights to fill tensors and layerTensors)");
  std::vector<const WeightRef *> refOf(c.tensors.size(), nullptr);
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    const moe::LayerPlan &layer = plan.layers[l];
    if (c.layerTensors[l].size() != layer.weights.size())
      return Status::error("layerTensors[" + std::to_string(l) + "] has " +
                           std::to_string(c.layerTensors[l].size()) +
                           " entries, plan.layers[" + std::to_string(l) +
                           "].weights " + std::to_string(layer.weights.size()));
    for (size_t w = 0; w < layer.weights.size(); ++w) {
      int t = c.layerTensors[l][w];
      std::string at =
          "layerTensors[" + std::to_string(l) + "][" + std::to_string(w) + "]";
      if (t < 0 || static_cast<size_t>(t) >= c.tensors.size())
        return Status::error(at + ": tensor " + std::to_string(t) +
                             " is out of range (" +
                             std::to_string(c.tensors.size()) + " tensors)");
      const WeightRef &ref = layer.weights[w];
      if (!refOf[t]) {
        refOf[t] = &ref;
      } else if (!sameWeight(*refOf[t], ref)) {
        return Status::error(at + ": plan.layers[" + std::to_string(l) +
                             "].weights[" + std::to_string(w) + "] (" +
                             weightLabel(ref) + ") shares tensor " +
                             std::to_string(t) + " with " +
                             weightLabel(*refOf[t]) + ", a different weight");
      }
    }
  }
  if (!c.external.empty() && c.external.size() != c.tensors.size())
    return Status::error("external has " + std::to_string(c.external.size()) +
                         " entries, tensors " +
                         std::to_string(c.tensors.size()));
  auto isExternal = [&](size_t t) {
    return !c.external.empty() && c.external[t];
  };
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    if (!refOf[t])
      return Status::error("tensors[" + std::to_string(t) +
                           "] is not used by any layer (layerTensors)");
    const WeightRef &ref = *refOf[t];
    if (isExternal(t) && !ref.inlineValues.empty())
      return Status::error("tensors[" + std::to_string(t) +
                           "] is a constant and cannot be external");
    if (isExternal(t) && !c.tensors[t].empty())
      return Status::error("tensors[" + std::to_string(t) + "] (" +
                           weightLabel(ref) +
                           ") is external but holds " +
                           std::to_string(c.tensors[t].size()) + " bytes");
    if (!ref.inlineValues.empty()) {
      std::vector<uint8_t> encoded =
          moe::encodeElements(ref.inlineValues, ref.type);
      if (encoded != c.tensors[t])
        return Status::error("tensors[" + std::to_string(t) + "] (" +
                             weightLabel(ref) +
                             ") does not hold its inline values encoded as " +
                             moe::elementTypeName(ref.type));
    }
  }

  // weights.bin: layout and hash.
  Sha256 weightsHash;
  static const uint8_t zeros[kPackageWeightAlignment] = {};
  int64_t end = 0;
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    if (isExternal(t)) {
      out.offsets.push_back(-1);
      continue;
    }
    int64_t offset = alignUp(end, kPackageWeightAlignment);
    weightsHash.update(zeros, static_cast<size_t>(offset - end));
    if (!c.tensors[t].empty()) // (Sha256::update memcpys even 0 bytes.)
      weightsHash.update(c.tensors[t].data(), c.tensors[t].size());
    out.offsets.push_back(offset);
    end = offset + static_cast<int64_t>(c.tensors[t].size());
  }
  out.weightsBytes = end;

  Json &m = out.manifest;
  m = Json::object();
  m.set("format", kPackageFormat);
  m.set("version", kPackageVersion);
  m.set("producer", c.producer);
  if (!c.model.isObject())
    return Status::error(std::string("model: expected an object, found ") +
                         jsonKindName(c.model.kind()));
  m.set("model", c.model);
  m.set("source", fileEntryJson(kPackageSourceFile,
                                static_cast<int64_t>(plan.source.size()),
                                Sha256::hex(plan.source)));
  Json &cubins = m.set("cubins", Json::array());
  for (const auto &[arch, bytes] : c.cubins) {
    if (!isArchName(arch))
      return Status::error("cubins: the arch " + qt(arch) +
                           " is not an architecture name ([A-Za-z0-9_]+)");
    Json e =
        fileEntryJson(packageCubinFile(arch),
                      static_cast<int64_t>(bytes.size()), Sha256::hex(bytes));
    Json entry = Json::object();
    entry.set("arch", arch);
    for (const Json::Member &mm : e.members())
      entry.set(mm.first, mm.second);
    cubins.push(std::move(entry));
  }
  m.set("ir", c.irText.empty()
                  ? Json()
                  : fileEntryJson(kPackageIrFile,
                                  static_cast<int64_t>(c.irText.size()),
                                  Sha256::hex(c.irText)));

  // Kernels: those the plan launches, in order of first launch, then the
  // other functions the resources mention, by name.
  std::vector<std::string> kernelNames;
  std::map<std::string, std::string> origins;
  for (const moe::LayerPlan &layer : plan.layers)
    for (const moe::Launch &launch : layer.launches)
      if (origins.emplace(launch.kernel, launch.origin).second)
        kernelNames.push_back(launch.kernel);
  std::map<std::string, std::map<std::string, const KernelResources *>> res;
  for (const KernelResources &r : c.resources) {
    if (!isArchName(r.arch))
      return Status::error("resources: the arch " + qt(r.arch) + " of " +
                           qt(r.name) + " is not an architecture name");
    if (!res[r.name].emplace(r.arch, &r).second)
      return Status::error("resources: " + qt(r.name) + " on " + r.arch +
                           " appears twice");
  }
  for (const auto &entry : res)
    if (!origins.count(entry.first))
      kernelNames.push_back(entry.first); // std::map: sorted by name.
  Json &kernels = m.set("kernels", Json::array());
  for (const std::string &name : kernelNames) {
    Json &k = kernels.push(Json::object());
    k.set("name", name);
    k.set("origin", origins.count(name) ? origins[name] : std::string());
    Json &r = k.set("resources", Json::object());
    auto it = res.find(name);
    if (it != res.end())
      for (const auto &[arch, kr] : it->second)
        r.set(arch, resourcesJson(*kr));
  }

  Json weights = fileEntryJson(kPackageWeightsFile, out.weightsBytes,
                               Sha256::toHex(weightsHash.finish()));
  weights.set("alignment", kPackageWeightAlignment);
  Json &tensors = weights.set("tensors", Json::array());
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    const WeightRef &ref = *refOf[t];
    Json &e = tensors.push(Json::object());
    Json names = Json::array(), files = Json::array(), shape = Json::array();
    for (const std::string &n : ref.names)
      names.push(n);
    for (const std::string &f : ref.files)
      files.push(f);
    for (int64_t d : ref.shape)
      shape.push(d);
    e.set("names", std::move(names));
    e.set("files", std::move(files));
    e.set("stacked", ref.stacked);
    e.set("constant", !ref.inlineValues.empty());
    e.set("shape", std::move(shape));
    e.set("dtype", moe::elementTypeName(ref.type));
    if (isExternal(t))
      e.set("offset", Json());
    else
      e.set("offset", out.offsets[t]);
    e.set("bytes", isExternal(t) ? tensorByteSize(ref.shape, ref.type)
                                 : static_cast<int64_t>(c.tensors[t].size()));
  }
  m.set("weights", std::move(weights));

  Json &layers = m.set("layers", Json::array());
  for (size_t l = 0; l < plan.layers.size(); ++l)
    layers.push(layerJson(plan.layers[l], c.layerTensors[l]));

  std::string where;
  if (findInvalidUtf8(m, "", where))
    return Status::error(where + ": not valid UTF-8");

  // The checks of openPackage.
  Decoded d;
  if (Status s = decodeManifest(m, d))
    return s;
  if (Status s = checkKernelsInSource(plan, plan.source, kPackageSourceFile))
    return s;
  return out;
}

//===----------------------------------------------------------------------===//
// Files
//===----------------------------------------------------------------------===//

std::string joinPath(const std::string &dir, const std::string &name) {
  if (dir.empty())
    return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

Status writeAll(int fd, const uint8_t *data, size_t size,
                const std::string &path) {
  while (size > 0) {
    size_t chunk = std::min<size_t>(size, size_t(1) << 30);
    ssize_t n = ::write(fd, data, chunk);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return Status::error("cannot write '" + path + "': " + errnoText(errno));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::success();
}

/// Writes a new file from pieces and fsyncs it.
Status writeFile(const std::string &path,
                 const std::vector<std::pair<const void *, size_t>> &pieces) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return Status::error("cannot create '" + path + "': " + errnoText(errno));
  Status s;
  for (const auto &[data, size] : pieces) {
    s = writeAll(fd, static_cast<const uint8_t *>(data), size, path);
    if (!s.ok())
      break;
  }
  if (s.ok() && ::fsync(fd) != 0)
    s = Status::error("cannot sync '" + path + "': " + errnoText(errno));
  if (::close(fd) != 0 && s.ok())
    s = Status::error("cannot close '" + path + "': " + errnoText(errno));
  return s;
}

Status writeFile(const std::string &path, const std::string &text) {
  return writeFile(path, {{text.data(), text.size()}});
}

Status syncDirectory(const std::string &dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return Status::error("cannot open '" + dir + "': " + errnoText(errno));
  Status s;
  if (::fsync(fd) != 0 && errno != EINVAL)
    s = Status::error("cannot sync '" + dir + "': " + errnoText(errno));
  ::close(fd);
  return s;
}

void removeTree(const std::string &path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/// renameat2; returns 0 or an errno (ENOSYS where it does not exist).
int renameWithFlags(const std::string &from, const std::string &to,
                    unsigned flags) {
#ifdef SYS_renameat2
  if (::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(),
                flags) == 0)
    return 0;
  return errno;
#else
  (void)from;
  (void)to;
  (void)flags;
  return ENOSYS;
#endif
}

bool unsupported(int error) {
  return error == ENOSYS || error == EINVAL || error == ENOTSUP ||
         error == EOPNOTSUPP;
}

/// Whether `dir` (which exists) may be replaced: an empty directory or one
/// holding a manifest.json, not a symbolic link.
Status checkReplaceable(const std::string &dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0)
    return Status::success(); // Gone: nothing to replace.
  if (S_ISLNK(st.st_mode))
    return Status::error("'" + dir +
                         "' is a symbolic link; refusing to replace it");
  if (!S_ISDIR(st.st_mode))
    return Status::error("'" + dir +
                         "' exists and is not a directory; refusing to "
                         "replace it");
  struct stat mst;
  if (::stat(joinPath(dir, kPackageManifestFile).c_str(), &mst) == 0)
    return Status::success();
  DIR *d = ::opendir(dir.c_str());
  if (!d)
    return Status::error("cannot read '" + dir + "': " + errnoText(errno));
  bool empty = true;
  while (struct dirent *e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(d);
  if (!empty)
    return Status::error("'" + dir +
                         "' is not empty and holds no manifest.json: not a "
                         "package; refusing to replace it");
  return Status::success();
}

/// Removes `<base>.tmp-XXXXXX` and `<base>.old-XXXXXX` directories in
/// `parent` that are over a day old (left by writers that died).
void removeStaleSiblings(const std::string &parent, const std::string &base) {
  DIR *d = ::opendir(parent.c_str());
  if (!d)
    return;
  std::vector<std::string> stale;
  time_t now = std::time(nullptr);
  while (struct dirent *e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() != base.size() + 11 || name.compare(0, base.size(), base))
      continue;
    std::string tag = name.substr(base.size(), 5);
    if (tag != ".tmp-" && tag != ".old-")
      continue;
    struct stat st;
    std::string path = joinPath(parent, name);
    if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
        now - st.st_mtime > 24 * 3600)
      stale.push_back(path);
  }
  ::closedir(d);
  for (const std::string &path : stale)
    removeTree(path);
}

/// Moves the finished temporary directory to `dir`.
Status commit(const std::string &temp, const std::string &dir, bool replace) {
  struct stat st;
  bool exists = ::lstat(dir.c_str(), &st) == 0;
  if (!exists) {
    int r = renameWithFlags(temp, dir, RENAME_NOREPLACE);
    if (r == 0)
      return Status::success();
    if (r == EEXIST || r == ENOTEMPTY) {
      if (!replace)
        return Status::error("'" + dir +
                             "' appeared while the package was written; "
                             "it was left untouched");
      exists = true;
    } else if (unsupported(r)) {
      // No renameat2: rename() cannot replace a non-empty directory, and the
      // destination was absent a moment ago.
      if (::rename(temp.c_str(), dir.c_str()) != 0)
        return Status::error("cannot rename '" + temp + "' to '" + dir +
                             "': " + errnoText(errno));
      return Status::success();
    } else {
      return Status::error("cannot rename '" + temp + "' to '" + dir +
                           "': " + errnoText(r));
    }
  }
  if (!replace)
    return Status::error("'" + dir +
                         "' already exists (replace it with the "
                         "replace option); it was left untouched");
  if (Status s = checkReplaceable(dir))
    return s;
  int r = renameWithFlags(temp, dir, RENAME_EXCHANGE);
  if (r == 0) {
    removeTree(temp); // Now the old package.
    return Status::success();
  }
  if (r == ENOENT) // The old one went away meanwhile.
    return commit(temp, dir, false);
  if (!unsupported(r))
    return Status::error("cannot exchange '" + temp + "' and '" + dir +
                         "': " + errnoText(r));
  // No exchange: move the old package aside first.
  std::string aside = dir + ".old-XXXXXX";
  if (!::mkdtemp(aside.data()))
    return Status::error("cannot create a directory next to '" + dir +
                         "': " + errnoText(errno));
  if (::rename(dir.c_str(), aside.c_str()) != 0) {
    int e = errno;
    ::rmdir(aside.c_str());
    return Status::error("cannot move '" + dir + "' aside: " + errnoText(e));
  }
  if (::rename(temp.c_str(), dir.c_str()) != 0) {
    int e = errno;
    ::rename(aside.c_str(), dir.c_str());
    return Status::error("cannot rename '" + temp + "' to '" + dir +
                         "': " + errnoText(e));
  }
  removeTree(aside);
  return Status::success();
}

/// A file mapped read-only (or read, where mmap fails).
class MappedFile {
public:
  ~MappedFile() {
    if (mapped_)
      ::munmap(mapped_, size_);
  }
  static Expected<std::unique_ptr<MappedFile>> open(const std::string &path,
                                                    size_t size) {
    auto file = std::unique_ptr<MappedFile>(new MappedFile());
    file->size_ = size;
    if (size == 0)
      return file;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return Status::error("cannot open '" + path + "': " + errnoText(errno));
    void *p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
      file->mapped_ = p;
      ::close(fd);
      return file;
    }
    file->copy_.resize(size);
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::read(fd, file->copy_.data() + done, size - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        int e = n < 0 ? errno : EIO;
        ::close(fd);
        return Status::error("cannot read '" + path + "': " + errnoText(e));
      }
      done += static_cast<size_t>(n);
    }
    ::close(fd);
    return file;
  }
  const uint8_t *data() const {
    return mapped_ ? static_cast<const uint8_t *>(mapped_) : copy_.data();
  }
  size_t size() const { return size_; }

private:
  MappedFile() = default;
  void *mapped_ = nullptr;
  std::vector<uint8_t> copy_;
  size_t size_ = 0;
};

Expected<std::string> readWholeFile(const std::string &path, size_t size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return Status::error("cannot open '" + path + "': " + errnoText(errno));
  std::string out(size, '\0');
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd, out.data() + done, size - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int e = n < 0 ? errno : 0;
      ::close(fd);
      return Status::error("cannot read '" + path +
                           "': " + (e ? errnoText(e) : "it became shorter"));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

/// Checks that the file of `e` exists with the size the manifest gives.
Status checkFilePresent(const std::string &dir, const FileEntry &e) {
  std::string path = joinPath(dir, e.file);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT)
      return Status::error(path + ": missing (manifest.json lists it as " +
                           field(e.path, "file") + ")");
    return Status::error(path + ": " + errnoText(errno));
  }
  if (!S_ISREG(st.st_mode))
    return Status::error(path + ": not a regular file");
  if (static_cast<int64_t>(st.st_size) != e.bytes)
    return Status::error(path + ": size " + std::to_string(st.st_size) +
                         " bytes, expected " + std::to_string(e.bytes) +
                         " (manifest.json " + field(e.path, "bytes") + ")");
  return Status::success();
}

Status checkHash(const std::string &dir, const FileEntry &e,
                 const std::string &actual) {
  if (actual == e.sha256)
    return Status::success();
  return Status::error(
      joinPath(dir, e.file) + ": SHA-256 mismatch: the file's is " + actual +
      ", manifest.json " + field(e.path, "sha256") + " expects " + e.sha256);
}

/// Reads a listed file and checks its size and hash.
Expected<std::string> readListedFile(const std::string &dir, const FileEntry &e,
                                     bool verify) {
  if (Status s = checkFilePresent(dir, e))
    return s;
  Expected<std::string> text =
      readWholeFile(joinPath(dir, e.file), static_cast<size_t>(e.bytes));
  if (!text)
    return text.status();
  if (verify)
    if (Status s = checkHash(dir, e, Sha256::hex(*text)))
      return s;
  return text;
}

} // namespace

//===----------------------------------------------------------------------===//
// Public functions
//===----------------------------------------------------------------------===//

std::string packageCubinFile(const std::string &arch) {
  return "kernels." + arch + ".cubin";
}

std::optional<ElementType> parseElementType(const std::string &name) {
  for (ElementType t : {ElementType::F32, ElementType::BF16, ElementType::F16,
                        ElementType::I32, ElementType::U32})
    if (name == moe::elementTypeName(t))
      return t;
  return std::nullopt;
}

bool sameWeight(const WeightRef &a, const WeightRef &b) {
  return a.names == b.names && a.stacked == b.stacked && a.shape == b.shape &&
         a.type == b.type && sameBits(a.inlineValues, b.inlineValues);
}

Expected<std::vector<float>> decodeTensorValues(const uint8_t *bytes,
                                                size_t size, ElementType type) {
  size_t width = static_cast<size_t>(moe::elementSize(type));
  if (size % width != 0)
    return Status::error(std::to_string(size) +
                         " bytes are not a whole number of " +
                         moe::elementTypeName(type) + " elements");
  size_t count = size / width;
  switch (type) {
  case ElementType::I32: {
    std::vector<float> out(count);
    for (size_t i = 0; i < count; ++i) {
      int32_t v;
      std::memcpy(&v, bytes + 4 * i, 4);
      out[i] = static_cast<float>(v);
    }
    return out;
  }
  case ElementType::U32: {
    std::vector<float> out(count);
    for (size_t i = 0; i < count; ++i) {
      uint32_t v;
      std::memcpy(&v, bytes + 4 * i, 4);
      out[i] = static_cast<float>(v);
    }
    return out;
  }
  default:
    return moe::decodeElements(bytes, static_cast<int64_t>(count), type);
  }
}

namespace {
/// `encode(provider, ref)` gives a checkpoint weight's bytes; with
/// `external`, checkpoint weights get none and are marked external.
template <typename Provider, typename Encode>
Status collect(PackageContents &c, const Provider &provider,
               const Encode &encode, bool external = false) {
  std::vector<std::vector<uint8_t>> tensors;
  std::vector<bool> externalTensors;
  std::vector<std::vector<int>> layerTensors;
  std::map<std::string, std::vector<int>> byKey; // identity -> tensors
  std::vector<const WeightRef *> refs;
  for (size_t l = 0; l < c.plan.layers.size(); ++l) {
    const moe::LayerPlan &layer = c.plan.layers[l];
    std::vector<int> &mine = layerTensors.emplace_back();
    for (size_t w = 0; w < layer.weights.size(); ++w) {
      const WeightRef &ref = layer.weights[w];
      std::string key = identityKey(ref);
      int found = -1;
      for (int t : byKey[key])
        if (sameWeight(*refs[t], ref)) {
          found = t;
          break;
        }
      if (found < 0) {
        std::string at = "plan.layers[" + std::to_string(l) + "].weights[" +
                         std::to_string(w) + "] (" + weightLabel(ref) + ")";
        int64_t bytes = tensorByteSize(ref.shape, ref.type);
        if (bytes < 0)
          return Status::error(at + ": the shape has a dimension below 1 or "
                                    "is too large");
        bool isExternal = external && ref.inlineValues.empty();
        Expected<std::vector<uint8_t>> data =
            isExternal ? Expected<std::vector<uint8_t>>(std::vector<uint8_t>())
            : ref.inlineValues.empty()
                ? encode(provider, ref)
                : Expected<std::vector<uint8_t>>(
                      moe::encodeElements(ref.inlineValues, ref.type));
        if (!data)
          return data.takeError(at);
        if (!isExternal && static_cast<int64_t>(data->size()) != bytes)
          return Status::error(at + ": got " + std::to_string(data->size()) +
                               " bytes, the shape and dtype need " +
                               std::to_string(bytes));
        found = static_cast<int>(tensors.size());
        tensors.push_back(std::move(*data));
        externalTensors.push_back(isExternal);
        refs.push_back(&ref);
        byKey[key].push_back(found);
      }
      mine.push_back(found);
    }
  }
  c.tensors = std::move(tensors);
  c.layerTensors = std::move(layerTensors);
  c.external.clear();
  if (external)
    c.external = std::move(externalTensors);
  return Status::success();
}
} // namespace

Status collectWeights(PackageContents &contents,
                      const moe::WeightProvider &provider) {
  return collect(contents, provider,
                 [](const moe::WeightProvider &p,
                    const WeightRef &ref) -> Expected<std::vector<uint8_t>> {
                   if (!p)
                     return Status::error("no weight provider");
                   Expected<std::vector<float>> values = p(ref);
                   if (!values)
                     return values.status();
                   return moe::encodeElements(*values, ref.type);
                 });
}

Status collectWeightBytes(PackageContents &contents,
                          const RawWeightProvider &provider) {
  return collect(contents, provider,
                 [](const RawWeightProvider &p,
                    const WeightRef &ref) -> Expected<std::vector<uint8_t>> {
                   if (!p)
                     return Status::error("no weight provider");
                   return p(ref);
                 });
}

Status collectWeightShapes(PackageContents &contents) {
  RawWeightProvider none;
  return collect(
      contents, none,
      [](const RawWeightProvider &,
         const WeightRef &) -> Expected<std::vector<uint8_t>> {
        return Status::error("internal error: a checkpoint weight's data was "
                             "requested for a shape-only package");
      },
      /*external=*/true);
}

Status writePackage(const PackageContents &contents, const std::string &dirIn,
                    const WritePackageOptions &options) {
  std::string dir = dirIn;
  while (dir.size() > 1 && dir.back() == '/')
    dir.pop_back();
  std::string context = "cannot write the package '" + dir + "'";
  size_t slash = dir.rfind('/');
  std::string base = slash == std::string::npos ? dir : dir.substr(slash + 1);
  std::string parent = slash == std::string::npos ? "."
                       : slash == 0               ? "/"
                                                  : dir.substr(0, slash);
  if (base.empty() || base == "." || base == "..")
    return Status::error(context + ": expected a directory name, found '" +
                         dirIn + "'");

  struct stat st;
  if (::lstat(dir.c_str(), &st) == 0) {
    if (!options.replace)
      return Status::error(context + ": it already exists (replace it with "
                                     "the replace option); it was left "
                                     "untouched");
    if (Status s = checkReplaceable(dir))
      return s.withContext(context);
  }

  Expected<Layout> layout = buildManifest(contents);
  if (!layout)
    return layout.takeError(context + ": invalid package contents");
  std::string manifestText = layout->manifest.dump(2);

  removeStaleSiblings(parent, base);
  std::string temp = dir + ".tmp-XXXXXX";
  if (!::mkdtemp(temp.data()))
    return Status::error(context +
                         ": cannot create a temporary directory "
                         "next to it: " +
                         errnoText(errno));
  ::chmod(temp.c_str(), 0755);

  // Each step runs only when every step before it succeeded.
  Status s =
      writeFile(joinPath(temp, kPackageSourceFile), contents.plan.source);
  for (auto it = contents.cubins.begin(); s.ok() && it != contents.cubins.end();
       ++it)
    s = writeFile(joinPath(temp, packageCubinFile(it->first)), it->second);
  if (s.ok() && !contents.irText.empty())
    s = writeFile(joinPath(temp, kPackageIrFile), contents.irText);
  if (s.ok()) {
    static const uint8_t zeros[kPackageWeightAlignment] = {};
    std::vector<std::pair<const void *, size_t>> pieces;
    int64_t end = 0;
    for (size_t t = 0; t < contents.tensors.size(); ++t) {
      int64_t offset = layout->offsets[t];
      if (offset < 0) // External: not in weights.bin.
        continue;
      if (offset > end)
        pieces.emplace_back(zeros, static_cast<size_t>(offset - end));
      pieces.emplace_back(contents.tensors[t].data(),
                          contents.tensors[t].size());
      end = offset + static_cast<int64_t>(contents.tensors[t].size());
    }
    s = writeFile(joinPath(temp, kPackageWeightsFile), pieces);
  }
  // The manifest last: a temporary directory without one is plainly
  // unfinished.
  if (s.ok())
    s = writeFile(joinPath(temp, kPackageManifestFile), manifestText);
  if (s.ok())
    s = syncDirectory(temp);
  if (s.ok() && options.beforeCommit)
    s = options.beforeCommit(temp);
  if (s.ok())
    s = commit(temp, dir, options.replace);
  if (!s.ok()) {
    removeTree(temp);
    return s.withContext(context);
  }
  // The rename itself is durable once the parent is synced.
  if (Status sync = syncDirectory(parent))
    return Status::error(context +
                         ": it is in place, but syncing its parent "
                         "directory failed: " +
                         sync.message());
  return Status::success();
}

//===----------------------------------------------------------------------===//
// LoadedPackage
//===----------------------------------------------------------------------===//

struct LoadedPackage::State {
  std::string directory;
  Json manifest;
  std::string producer;
  Json model;
  moe::ModulePlan plan;
  std::map<std::string, std::string> cubins;
  std::vector<KernelResources> resources;
  std::string irFile; ///< "" when none.
  std::vector<PackageTensor> tensors;
  std::vector<std::vector<int>> layerTensors;
  std::unique_ptr<MappedFile> weights;
  std::map<std::string, size_t> byIdentity; ///< Non-constant tensors.
};

const std::string &LoadedPackage::directory() const {
  return state_->directory;
}
const Json &LoadedPackage::manifest() const { return state_->manifest; }
const std::string &LoadedPackage::producer() const { return state_->producer; }
const Json &LoadedPackage::model() const { return state_->model; }
const moe::ModulePlan &LoadedPackage::plan() const { return state_->plan; }
const std::string &LoadedPackage::source() const { return state_->plan.source; }

std::vector<std::string> LoadedPackage::cubinArchs() const {
  std::vector<std::string> out;
  for (const auto &c : state_->cubins)
    out.push_back(c.first);
  return out;
}

const std::string *LoadedPackage::cubin(const std::string &arch) const {
  auto it = state_->cubins.find(arch);
  return it == state_->cubins.end() ? nullptr : &it->second;
}

const std::vector<KernelResources> &LoadedPackage::resources() const {
  return state_->resources;
}

const KernelResources *
LoadedPackage::findResources(const std::string &kernel,
                             const std::string &arch) const {
  for (const KernelResources &r : state_->resources)
    if (r.name == kernel && r.arch == arch)
      return &r;
  return nullptr;
}

std::string LoadedPackage::irPath() const {
  return state_->irFile.empty() ? std::string()
                                : joinPath(state_->directory, state_->irFile);
}

const std::vector<PackageTensor> &LoadedPackage::tensors() const {
  return state_->tensors;
}

int LoadedPackage::tensorIndex(size_t layer, size_t weight) const {
  if (layer >= state_->layerTensors.size() ||
      weight >= state_->layerTensors[layer].size())
    return -1;
  return state_->layerTensors[layer][weight];
}

ByteView LoadedPackage::tensorBytes(size_t tensor) const {
  if (tensor >= state_->tensors.size())
    return {};
  const PackageTensor &t = state_->tensors[tensor];
  if (!t.stored)
    return {};
  return {state_->weights->data() + t.offset, static_cast<size_t>(t.bytes)};
}

namespace {
/// Why an external tensor has no values.
Status externalTensorError(const LoadedPackage::State &s, size_t tensor) {
  return Status::error(
      "weight tensor " + std::to_string(tensor) + " (" +
      weightLabel(s.tensors[tensor].ref) + ") has no data in the package '" +
      s.directory +
      "' (a shape-only package, compiled with --weights none): bind it "
      "before running (Model::bindTensor, moe_model_bind_tensor)");
}
} // namespace

Expected<std::vector<float>> LoadedPackage::tensorValues(size_t tensor) const {
  if (tensor >= state_->tensors.size())
    return Status::error("tensor " + std::to_string(tensor) +
                         " is out of range (the package has " +
                         std::to_string(state_->tensors.size()) + ")");
  if (!state_->tensors[tensor].stored)
    return externalTensorError(*state_, tensor);
  ByteView b = tensorBytes(tensor);
  return decodeTensorValues(b.data, b.size, state_->tensors[tensor].ref.type);
}

namespace {
Expected<size_t> findTensorIn(const LoadedPackage::State &s,
                              const WeightRef &ref) {
  if (ref.inlineValues.empty()) {
    auto it = s.byIdentity.find(identityKey(ref));
    if (it != s.byIdentity.end())
      return it->second;
  } else {
    for (size_t t = 0; t < s.tensors.size(); ++t)
      if (s.tensors[t].constant && sameWeight(s.tensors[t].ref, ref))
        return t;
  }
  return Status::error("the package '" + s.directory + "' has no weight " +
                       weightLabel(ref));
}
} // namespace

Expected<size_t> LoadedPackage::findTensor(const WeightRef &ref) const {
  return findTensorIn(*state_, ref);
}

moe::WeightProvider LoadedPackage::weightProvider() const {
  std::shared_ptr<const State> state = state_;
  return [state](const WeightRef &ref) -> Expected<std::vector<float>> {
    std::less<const WeightRef *> before;
    std::optional<size_t> tensor;
    for (size_t l = 0; l < state->plan.layers.size() && !tensor; ++l) {
      const std::vector<WeightRef> &w = state->plan.layers[l].weights;
      if (!w.empty() && !before(&ref, w.data()) &&
          before(&ref, w.data() + w.size()))
        tensor = static_cast<size_t>(
            state->layerTensors[l][static_cast<size_t>(&ref - w.data())]);
    }
    if (!tensor) {
      Expected<size_t> found = findTensorIn(*state, ref);
      if (!found)
        return found.status();
      tensor = *found;
    }
    const PackageTensor &t = state->tensors[*tensor];
    if (!t.stored)
      return externalTensorError(*state, *tensor);
    return decodeTensorValues(state->weights->data() + t.offset,
                              static_cast<size_t>(t.bytes), t.ref.type);
  };
}

Expected<PackageContents> LoadedPackage::toContents() const {
  const State &s = *state_;
  PackageContents c;
  c.producer = s.producer;
  c.model = s.model;
  c.plan = s.plan;
  c.cubins = s.cubins;
  c.resources = s.resources;
  c.layerTensors = s.layerTensors;
  for (size_t t = 0; t < s.tensors.size(); ++t) {
    ByteView b = tensorBytes(t);
    c.tensors.emplace_back(b.data, b.data + b.size);
    if (!s.tensors[t].stored) {
      c.external.resize(s.tensors.size(), false);
      c.external[t] = true;
    }
  }
  if (!s.irFile.empty()) {
    std::string path = irPath();
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
      return Status::error("cannot read '" + path + "': " + errnoText(errno));
    Expected<std::string> ir =
        readWholeFile(path, static_cast<size_t>(st.st_size));
    if (!ir)
      return ir.status();
    c.irText = std::move(*ir);
  }
  return c;
}

Expected<LoadedPackage> openPackage(const std::string &dir,
                                    const OpenPackageOptions &options) {
  auto state = std::make_shared<LoadedPackage::State>();
  state->directory = dir;
  std::string manifestPath = joinPath(dir, kPackageManifestFile);
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    return Status::error("cannot open the package '" + dir +
                         "': " + errnoText(errno));
  if (!S_ISDIR(st.st_mode))
    return Status::error("cannot open the package '" + dir +
                         "': not a directory");
  if (::stat(manifestPath.c_str(), &st) != 0)
    return Status::error(manifestPath + ": " +
                         (errno == ENOENT ? std::string("missing (not a "
                                                        "package?)")
                                          : errnoText(errno)));
  if (!S_ISREG(st.st_mode))
    return Status::error(manifestPath + ": not a regular file");
  Expected<std::string> text =
      readWholeFile(manifestPath, static_cast<size_t>(st.st_size));
  if (!text)
    return text.status();
  Expected<Json> parsed = parseJson(*text);
  if (!parsed)
    return parsed.takeError(manifestPath);
  state->manifest = std::move(*parsed);

  Decoded d;
  if (Status s = decodeManifest(state->manifest, d))
    return s.withContext(manifestPath);

  bool verify = options.verifyHashes;
  Expected<std::string> source = readListedFile(dir, d.source, verify);
  if (!source)
    return source.status();
  d.plan.source = std::move(*source);
  for (const auto &[arch, entry] : d.cubins) {
    Expected<std::string> bytes = readListedFile(dir, entry, verify);
    if (!bytes)
      return bytes.status();
    state->cubins[arch] = std::move(*bytes);
  }
  if (d.ir) {
    if (verify) {
      Expected<std::string> ir = readListedFile(dir, *d.ir, true);
      if (!ir)
        return ir.status();
    } else if (Status s = checkFilePresent(dir, *d.ir)) {
      return s;
    }
    state->irFile = d.ir->file;
  }
  if (Status s = checkFilePresent(dir, d.weights))
    return s;
  Expected<std::unique_ptr<MappedFile>> weights = MappedFile::open(
      joinPath(dir, d.weights.file), static_cast<size_t>(d.weights.bytes));
  if (!weights)
    return weights.status();
  state->weights = std::move(*weights);
  if (verify) {
    Sha256 h;
    if (state->weights->size() > 0)
      h.update(state->weights->data(), state->weights->size());
    if (Status s = checkHash(dir, d.weights, Sha256::toHex(h.finish())))
      return s;
  }

  if (Status s = checkKernelsInSource(d.plan, d.plan.source, d.source.file))
    return s.withContext(manifestPath);

  // Constants carry their values in the plan, as the code generator made
  // them.
  for (PackageTensor &t : d.tensors) {
    if (!t.constant)
      continue;
    Expected<std::vector<float>> values =
        decodeTensorValues(state->weights->data() + t.offset,
                           static_cast<size_t>(t.bytes), t.ref.type);
    if (!values)
      return values.takeError(manifestPath);
    t.ref.inlineValues = std::move(*values);
  }
  attachWeights(d);
  for (size_t t = 0; t < d.tensors.size(); ++t)
    if (!d.tensors[t].constant)
      state->byIdentity.emplace(identityKey(d.tensors[t].ref), t);

  state->producer = std::move(d.producer);
  state->model = std::move(d.model);
  state->plan = std::move(d.plan);
  state->resources = std::move(d.resources);
  state->tensors = std::move(d.tensors);
  state->layerTensors = std::move(d.layerTensors);
  LoadedPackage package;
  package.state_ = std::move(state);
  return package;
}

} // namespace moe::runtime
