//===- Manifest.cpp - The package manifest's schema -----------------------===//
//
// Part of moe-opt. The manifest is described field by field in
// docs/package.md. One decoder (decodeManifest) checks a manifest; the
// writer runs it on the manifest it is about to write, so that it never
// writes a package that openPackage would refuse.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Manifest.h"

#include "moe/runtime/KernelCache.h"
#include "moe/runtime/KernelContract.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

namespace moe::runtime {

using moe::ElementType;
using moe::WeightRef;

namespace detail {

std::string qt(const std::string &s) { return jsonQuote(s); }

std::string index(const std::string &path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}
std::string field(const std::string &path, const std::string &key) {
  return path.empty() ? key : path + "." + key;
}

/// storageBytes(product(shape)) (elementSize bytes per element; packed
/// FP4 two per byte), or -1 when a dimension is not positive or the size
/// passes 2^53.
int64_t tensorByteSize(const std::vector<int64_t> &shape, ElementType type) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 1 || d > kMaxJsonInteger || n > kMaxJsonInteger / d)
      return -1;
    n *= d;
  }
  if (n > kMaxJsonInteger / moe::elementSize(type))
    return -1;
  return moe::storageBytes(type, n);
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

} // namespace detail

using namespace detail;

namespace {

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
  // Optional: the tensor maps of a --gemm=tma launch (moe::TensorMapRequest).
  // The numbers are bounded here; that they are the ones the kernel was
  // generated for is the contract check's (checkPlanContracts).
  if (f.ok() && l.find("tensor_maps")) {
    const Json::Array &maps = f.array(l, at, "tensor_maps");
    const int64_t slots = static_cast<int64_t>(launch.args.size());
    for (size_t m = 0; m < maps.size() && f.ok(); ++m) {
      std::string mAt = index(field(at, "tensor_maps"), m);
      if (!f.check(maps[m], mAt, Json::Kind::Object))
        break;
      moe::TensorMapRequest r;
      r.slot = static_cast<int>(
          f.integer(maps[m], mAt, "slot", 0, std::max<int64_t>(slots - 1, 0)));
      r.table = static_cast<int>(
          f.integer(maps[m], mAt, "table", 0, std::max<int64_t>(slots - 1, 0)));
      r.entry = static_cast<int>(f.integer(maps[m], mAt, "entry", 0, 255));
      r.boxRows = f.integer(maps[m], mAt, "box_rows", 1, 256);
      r.boxCols = f.integer(maps[m], mAt, "box_cols", 1, 256);
      r.swizzleBytes =
          static_cast<int>(f.integer(maps[m], mAt, "swizzle_bytes", 0, 128));
      launch.tensorMaps.push_back(r);
    }
  }
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
  // Optional (absent from older manifests): "", "router" or "pregate".
  if (f.ok() && l.find("role")) {
    layer.role = f.string(l, at, "role");
    if (f.ok() && !layer.role.empty() && !isRouterRole(layer.role))
      f.fail(field(at, "role"),
             "expected \"\" (a layer), \"router\" or \"pregate\", found " +
                 qt(layer.role));
  }
  layer.input =
      readValueIndex(f, l, at, "input", layer.values.size(), valuesWhat, false);
  // A router-only plan has no output value.
  layer.output = readValueIndex(f, l, at, "output", layer.values.size(),
                                valuesWhat, isRouterRole(layer.role));
  if (f.ok() && isRouterRole(layer.role) && layer.output >= 0)
    f.fail(field(at, "output"), "expected null for a router-only plan (role " +
                                    qt(layer.role) + "), found an index");
  // Optional: the values a caller's routing is copied into.
  if (f.ok() && (l.find("given_ids") || l.find("given_weights"))) {
    layer.givenIds = readValueIndex(f, l, at, "given_ids", layer.values.size(),
                                    valuesWhat, true);
    layer.givenWeights = readValueIndex(f, l, at, "given_weights",
                                        layer.values.size(), valuesWhat, true);
    if (f.ok() && (layer.givenIds < 0) != (layer.givenWeights < 0))
      f.fail(field(at, "given_ids"), "given_ids and given_weights must both "
                                     "be indices or both null");
  }
  // Optional: the layer's extra inputs (moe.input arguments after x), in
  // argument order.
  if (f.ok() && l.find("inputs")) {
    std::string inAt = field(at, "inputs");
    const Json::Array &inputs = f.array(l, at, "inputs");
    for (size_t i = 0; i < inputs.size() && f.ok(); ++i) {
      std::string iAt = index(inAt, i);
      if (!f.check(inputs[i], iAt, Json::Kind::Object))
        break;
      moe::LayerInput in;
      in.name = f.string(inputs[i], iAt, "name");
      if (f.ok() && in.name.empty())
        f.fail(field(iAt, "name"), "expected a non-empty name");
      in.type = readDtype(f, inputs[i], iAt);
      if (f.ok() && in.type != ElementType::F32 && in.type != ElementType::I32)
        f.fail(field(iAt, "dtype"), "expected \"f32\" or \"i32\" for an "
                                    "extra input");
      in.value = readValueIndex(f, inputs[i], iAt, "value",
                                layer.values.size(), valuesWhat, false);
      const Json::Array &dims = f.array(inputs[i], iAt, "dims");
      for (size_t d = 0; d < dims.size() && f.ok(); ++d)
        in.dims.push_back(f.integer(
            dims[d], index(field(iAt, "dims"), d), moe::LayerInput::kAnyDim,
            kMaxJsonInteger,
            "a size >= 0, -1 (the token count) or -2 (any size)"));
      if (f.ok() && dims.empty())
        f.fail(field(iAt, "dims"), "expected at least one dimension, found []");
      in.indexes = static_cast<int>(f.integer(
          inputs[i], iAt, "indexes", -1,
          static_cast<int64_t>(inputs.size()) - 1));
      if (f.ok() && in.indexes >= 0 && in.type != ElementType::I32)
        f.fail(field(iAt, "indexes"), "only an i32 input holds indices, "
                                      "found dtype f32");
      if (f.ok() && in.indexes == static_cast<int>(i))
        f.fail(field(iAt, "indexes"), "an input cannot index itself");
      if (f.ok() && layer.values[in.value].type != in.type)
        f.fail(field(iAt, "value"),
               std::string("value ") + std::to_string(in.value) + " is " +
                   moe::elementTypeName(layer.values[in.value].type) +
                   ", the input " + moe::elementTypeName(in.type));
      layer.inputs.push_back(std::move(in));
    }
    if (f.ok() && !layer.inputs.empty() && layer.givenIds >= 0)
      f.fail(inAt, "a layer with a given routing takes no extra inputs");
  }
  // Optional: the layer's extra results (moe.output results after y), in
  // result order.
  if (f.ok() && l.find("outputs")) {
    std::string outAt = field(at, "outputs");
    const Json::Array &outputs = f.array(l, at, "outputs");
    for (size_t i = 0; i < outputs.size() && f.ok(); ++i) {
      std::string oAt = index(outAt, i);
      if (!f.check(outputs[i], oAt, Json::Kind::Object))
        break;
      moe::LayerOutput out;
      out.name = f.string(outputs[i], oAt, "name");
      if (f.ok() && out.name.empty())
        f.fail(field(oAt, "name"), "expected a non-empty name");
      out.value = readValueIndex(f, outputs[i], oAt, "value",
                                 layer.values.size(), valuesWhat, false);
      out.width = f.integer(outputs[i], oAt, "width", 1, kMaxJsonInteger);
      if (f.ok() && (layer.values[out.value].type != ElementType::F32 ||
                     layer.values[out.value].perToken != out.width ||
                     layer.values[out.value].fixed != 0))
        f.fail(field(oAt, "value"),
               "value " + std::to_string(out.value) +
                   " is not [T, " + std::to_string(out.width) +
                   "] f32 (an extra result is f32 with width per token)");
      for (size_t j = 0; j < i && f.ok(); ++j)
        if (layer.outputs[j].name == out.name)
          f.fail(field(oAt, "name"), "the name " + qt(out.name) +
                                         " is also outputs[" +
                                         std::to_string(j) + "]'s");
      layer.outputs.push_back(std::move(out));
    }
    if (f.ok() && !layer.outputs.empty() && isRouterRole(layer.role))
      f.fail(outAt, "a router-only plan has no extra results");
  }
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
  // Experts per router (optional: older manifests lack it, 0 = unknown).
  if (f.ok() && l.find("routing_experts")) {
    std::string eAt = field(at, "routing_experts");
    const Json::Array &experts = f.array(l, at, "routing_experts");
    if (f.ok() && experts.size() != layer.routings.size())
      f.fail(eAt, "expected one expert count per router (" +
                      std::to_string(layer.routings.size()) + "), got " +
                      std::to_string(experts.size()));
    for (size_t r = 0; r < experts.size() && f.ok(); ++r)
      layer.routings[r].experts =
          f.integer(experts[r], index(eAt, r), 0, kMaxJsonInteger);
  }
  layer.inputWidth = f.integer(l, at, "input_width", 1, kMaxJsonInteger);
  // A router-only plan has no output: its width is 0.
  bool router = isRouterRole(layer.role);
  layer.outputWidth = f.integer(l, at, "output_width", router ? 0 : 1,
                                router ? 0 : kMaxJsonInteger);
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

} // namespace

namespace detail {

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

} // namespace detail

namespace {

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
  j.set("output", indexOrNull(layer.output));
  if (!layer.role.empty())
    j.set("role", layer.role);
  if (layer.givenIds >= 0 || layer.givenWeights >= 0) {
    j.set("given_ids", indexOrNull(layer.givenIds));
    j.set("given_weights", indexOrNull(layer.givenWeights));
  }
  if (!layer.inputs.empty()) {
    Json &inputs = j.set("inputs", Json::array());
    for (const moe::LayerInput &in : layer.inputs) {
      Json e = Json::object();
      e.set("name", in.name);
      e.set("dtype", moe::elementTypeName(in.type));
      e.set("value", in.value);
      Json &dims = e.set("dims", Json::array());
      for (int64_t d : in.dims)
        dims.push(Json(d));
      e.set("indexes", in.indexes);
      inputs.push(std::move(e));
    }
  }
  if (!layer.outputs.empty()) {
    Json &outputs = j.set("outputs", Json::array());
    for (const moe::LayerOutput &out : layer.outputs) {
      Json e = Json::object();
      e.set("name", out.name);
      e.set("value", out.value);
      e.set("width", out.width);
      outputs.push(std::move(e));
    }
  }
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
  if (routed) {
    Json &experts = j.set("routing_experts", Json::array());
    for (const moe::LayerPlan::Routing &r : layer.routings)
      experts.push(Json(r.experts));
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
    if (!launch.tensorMaps.empty()) {
      Json &maps = e.set("tensor_maps", Json::array());
      for (const moe::TensorMapRequest &r : launch.tensorMaps) {
        Json &m = maps.push(Json::object());
        m.set("slot", r.slot);
        m.set("table", r.table);
        m.set("entry", r.entry);
        m.set("box_rows", r.boxRows);
        m.set("box_cols", r.boxCols);
        m.set("swizzle_bytes", r.swizzleBytes);
      }
    }
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

} // namespace

namespace detail {

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
  if (!c.streamed.empty() && c.streamed.size() != c.tensors.size())
    return Status::error("streamed has " + std::to_string(c.streamed.size()) +
                         " entries, tensors " +
                         std::to_string(c.tensors.size()));
  auto isStreamed = [&](size_t t) {
    return !c.streamed.empty() && c.streamed[t];
  };
  // The bytes tensor t has in weights.bin (a streamed tensor's are not
  // here yet: its shape and dtype say how many).
  auto sizeOf = [&](size_t t) {
    return isStreamed(t) ? tensorByteSize(refOf[t]->shape, refOf[t]->type)
                         : static_cast<int64_t>(c.tensors[t].size());
  };
  bool anyStreamed = false;
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    if (!refOf[t])
      return Status::error("tensors[" + std::to_string(t) +
                           "] is not used by any layer (layerTensors)");
    const WeightRef &ref = *refOf[t];
    if (isStreamed(t)) {
      std::string what =
          "tensors[" + std::to_string(t) + "] (" + weightLabel(ref) + ")";
      if (!ref.inlineValues.empty() || isExternal(t))
        return Status::error(what + " is streamed but is a constant or "
                                    "external: only checkpoint weights "
                                    "stored in weights.bin are streamed");
      if (!c.tensors[t].empty())
        return Status::error(what + " is streamed but holds " +
                             std::to_string(c.tensors[t].size()) +
                             " bytes");
      if (!c.streamTensor)
        return Status::error(what + " is streamed but streamTensor is not "
                                    "set");
      if (tensorByteSize(ref.shape, ref.type) < 0)
        return Status::error(what + ": the shape has a dimension below 1 or "
                                    "is too large");
      anyStreamed = true;
    }
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
    out.sizes.push_back(isExternal(t) ? 0 : sizeOf(t));
    if (isExternal(t)) {
      out.offsets.push_back(-1);
      continue;
    }
    int64_t offset = alignUp(end, kPackageWeightAlignment);
    weightsHash.update(zeros, static_cast<size_t>(offset - end));
    if (!c.tensors[t].empty()) // (Sha256::update memcpys even 0 bytes.)
      weightsHash.update(c.tensors[t].data(), c.tensors[t].size());
    out.offsets.push_back(offset);
    end = offset + sizeOf(t);
  }
  out.weightsBytes = end;
  // With streamed tensors the hash is known once weights.bin is written:
  // writePackage puts it in (a placeholder of the right form until then).
  out.weightsHashPending = anyStreamed;

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
                               anyStreamed
                                   ? std::string(64, '0')
                                   : Sha256::toHex(weightsHash.finish()));
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
                                 : sizeOf(t));
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
  if (Status s = moe::checkPlanContracts(plan, kPackageSourceFile))
    return s;
  return out;
}

} // namespace detail

//===----------------------------------------------------------------------===//
// Public functions
//===----------------------------------------------------------------------===//

std::string packageCubinFile(const std::string &arch) {
  return "kernels." + arch + ".cubin";
}

std::optional<ElementType> parseElementType(const std::string &name) {
  for (ElementType t : kElementTypes)
    if (name == moe::elementTypeName(t))
      return t;
  return std::nullopt;
}

bool sameWeight(const WeightRef &a, const WeightRef &b) {
  return a.names == b.names && a.stacked == b.stacked && a.shape == b.shape &&
         a.type == b.type && sameBits(a.inlineValues, b.inlineValues);
}

} // namespace moe::runtime
