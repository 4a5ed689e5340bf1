//===- KernelContract.cpp - What each generated kernel expects ------------===//
//
// Part of moe-opt. Writing, reading and checking the contract lines of
// generated kernels (KernelContract.h).
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/KernelContract.h"

#include <cerrno>
#include <cstdlib>
#include <set>

namespace moe {
namespace {

using runtime::Expected;
using runtime::Status;

/// The geometry fields of a Launch, by their manifest names.
struct GeometryField {
  const char *name;
  int64_t (*get)(const Launch &);
  void (*set)(Launch &, int64_t);
};

#define MOE_GEOMETRY_FIELD(NAME, MEMBER, TYPE)                                 \
  GeometryField {                                                              \
    NAME, [](const Launch &l) -> int64_t { return l.MEMBER; },                 \
        [](Launch &l, int64_t v) { l.MEMBER = static_cast<TYPE>(v); }          \
  }
const GeometryField kGeometry[] = {
    MOE_GEOMETRY_FIELD("block_threads", blockThreads, int),
    MOE_GEOMETRY_FIELD("dynamic_shared_bytes", dynamicSharedBytes, int64_t),
    MOE_GEOMETRY_FIELD("tokens_per_block", tokensPerBlock, int64_t),
    MOE_GEOMETRY_FIELD("max_blocks", maxBlocks, int64_t),
    MOE_GEOMETRY_FIELD("rows_per_token", rowsPerToken, int64_t),
    MOE_GEOMETRY_FIELD("extra_blocks", extraBlocks, int64_t),
    MOE_GEOMETRY_FIELD("grid_columns", gridColumns, int64_t),
    MOE_GEOMETRY_FIELD("slots_per_token", slotsPerToken, int64_t),
    MOE_GEOMETRY_FIELD("min_slots", minSlots, int64_t),
    MOE_GEOMETRY_FIELD("max_slots", maxSlots, int64_t),
};
#undef MOE_GEOMETRY_FIELD

const char *kindName(Binding::Kind kind) {
  switch (kind) {
  case Binding::Value:
    return "value";
  case Binding::Weight:
    return "weight";
  default:
    return "null";
  }
}

bool parseType(const std::string &s, ElementType &out) {
  for (ElementType t : kElementTypes)
    if (s == elementTypeName(t)) {
      out = t;
      return true;
    }
  return false;
}

bool parseInt(const std::string &s, int64_t &out) {
  if (s.empty())
    return false;
  errno = 0;
  char *end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end)
    return false;
  out = v;
  return true;
}

std::vector<std::string> split(const std::string &s, char sep) {
  std::vector<std::string> out;
  size_t at = 0;
  while (true) {
    size_t next = s.find(sep, at);
    out.push_back(s.substr(at, next - at));
    if (next == std::string::npos)
      return out;
    at = next + 1;
  }
}

/// Space-separated words, empty ones dropped.
std::vector<std::string> words(const std::string &s) {
  std::vector<std::string> out;
  for (std::string &w : split(s, ' '))
    if (!w.empty())
      out.push_back(std::move(w));
  return out;
}

std::string describe(const ContractSlot &s) {
  std::string t = elementTypeName(s.type);
  if (s.kind == Binding::Weight)
    return t + " with " + std::to_string(s.fixed) + " elements";
  return t + " with " + std::to_string(s.perToken) + " per token + " +
         std::to_string(s.fixed);
}

std::string formatMap(const TensorMapRequest &r) {
  return std::to_string(r.slot) + ":" + std::to_string(r.table) + ":" +
         std::to_string(r.entry) + ":" + std::to_string(r.boxRows) + ":" +
         std::to_string(r.boxCols) + ":" + std::to_string(r.swizzleBytes);
}

std::string describeMap(const TensorMapRequest &r) {
  return "slot " + std::to_string(r.slot) + " into entry " +
         std::to_string(r.entry) + " of table slot " + std::to_string(r.table) +
         ", box " + std::to_string(r.boxRows) + "x" +
         std::to_string(r.boxCols) + ", swizzle " +
         std::to_string(r.swizzleBytes) + " B";
}

Expected<KernelContract> parseKernelLine(const std::string &rest,
                                         const std::string &where) {
  auto fail = [&](const std::string &m) {
    return Status::error(where + ": " + m);
  };
  std::vector<std::string> ws = words(rest);
  if (ws.empty() || ws[0].find('=') != std::string::npos)
    return fail("expected a kernel name after the tag");
  KernelContract c;
  c.kernel = ws[0];
  std::set<std::string> seen;
  bool haveSlots = false;
  for (size_t i = 1; i < ws.size(); ++i) {
    size_t eq = ws[i].find('=');
    if (eq == std::string::npos)
      return fail("expected KEY=VALUE, found '" + ws[i] + "'");
    std::string key = ws[i].substr(0, eq), val = ws[i].substr(eq + 1);
    if (!seen.insert(key).second)
      return fail("'" + key + "' given twice");
    if (key == "slots") {
      haveSlots = true;
      if (val.empty())
        continue;
      std::vector<std::string> slots = split(val, ',');
      for (size_t s = 0; s < slots.size(); ++s) {
        std::string at = "slot " + std::to_string(s) + " ('" + slots[s] + "')";
        ContractSlot slot;
        if (slots[s] == "null") {
          c.slots.push_back(slot);
          continue;
        }
        std::vector<std::string> parts = split(slots[s], ':');
        if (parts.size() != 4)
          return fail(at + ": expected null or KIND:DTYPE:PER_TOKEN:FIXED");
        if (parts[0] == "value")
          slot.kind = Binding::Value;
        else if (parts[0] == "weight")
          slot.kind = Binding::Weight;
        else
          return fail(at + ": expected the kind value or weight");
        if (!parseType(parts[1], slot.type))
          return fail(at + ": expected a dtype (f32, bf16, f16, i32, u32)");
        if (!parseInt(parts[2], slot.perToken) ||
            !parseInt(parts[3], slot.fixed) || slot.perToken < 0 ||
            slot.fixed < 0)
          return fail(at + ": expected non-negative integer extents");
        if (slot.kind == Binding::Weight && slot.perToken != 0)
          return fail(at + ": a weight has no per-token extent");
        c.slots.push_back(slot);
      }
      continue;
    }
    if (key == "maps") {
      if (val.empty())
        continue;
      std::vector<std::string> maps = split(val, ',');
      for (size_t m = 0; m < maps.size(); ++m) {
        std::string at = "map " + std::to_string(m) + " ('" + maps[m] + "')";
        std::vector<std::string> parts = split(maps[m], ':');
        int64_t v[6];
        bool ok = parts.size() == 6;
        for (size_t q = 0; ok && q < 6; ++q)
          ok = parseInt(parts[q], v[q]) && v[q] >= 0 && v[q] <= 65535;
        if (!ok)
          return fail(at + ": expected SLOT:TABLE:ENTRY:BOX_ROWS:BOX_COLS:"
                           "SWIZZLE, six integers from 0 to 65535");
        TensorMapRequest r;
        r.slot = static_cast<int>(v[0]);
        r.table = static_cast<int>(v[1]);
        r.entry = static_cast<int>(v[2]);
        r.boxRows = v[3];
        r.boxCols = v[4];
        r.swizzleBytes = static_cast<int>(v[5]);
        c.maps.push_back(r);
      }
      continue;
    }
    const GeometryField *field = nullptr;
    for (const GeometryField &g : kGeometry)
      if (key == g.name)
        field = &g;
    if (!field)
      return fail("unknown key '" + key + "'");
    int64_t v;
    if (!parseInt(val, v))
      return fail("'" + key + "': expected an integer, found '" + val + "'");
    field->set(c.geometry, v);
  }
  for (const GeometryField &g : kGeometry)
    if (!seen.count(g.name))
      return fail(std::string("missing '") + g.name + "'");
  if (!haveSlots)
    return fail("missing 'slots'");
  return c;
}

Expected<LayerContract> parseLayerLine(const std::string &rest,
                                       const std::string &where) {
  auto fail = [&](const std::string &m) {
    return Status::error(where + ": " + m);
  };
  LayerContract l;
  std::set<std::string> seen;
  for (const std::string &w : words(rest)) {
    size_t eq = w.find('=');
    if (eq == std::string::npos)
      return fail("expected KEY=VALUE, found '" + w + "'");
    std::string key = w.substr(0, eq), val = w.substr(eq + 1);
    if (!seen.insert(key).second)
      return fail("'" + key + "' given twice");
    if (key == "layer") {
      if (!parseInt(val, l.layer))
        return fail("'layer': expected an integer, found '" + val + "'");
    } else if (key == "function") {
      l.function = val;
    } else if (key == "launches") {
      if (!val.empty())
        l.launches = split(val, ',');
    } else {
      return fail("unknown key '" + key + "'");
    }
  }
  for (const char *k : {"layer", "function", "launches"})
    if (!seen.count(k))
      return fail(std::string("missing '") + k + "'");
  return l;
}

std::string launchPath(size_t l, size_t k) {
  return "layers[" + std::to_string(l) + "].launches[" + std::to_string(k) +
         "]";
}

Status checkLaunch(const LayerPlan &layer, size_t l, size_t k,
                   const KernelContract &c) {
  const Launch &launch = layer.launches[k];
  std::string at = launchPath(l, k);
  std::string kernel = "kernel " + launch.kernel;
  for (const GeometryField &g : kGeometry)
    if (g.get(launch) != g.get(c.geometry))
      return Status::error(
          at + "." + g.name + ": " + std::to_string(g.get(launch)) + ", but " +
          kernel + " was generated for " + std::to_string(g.get(c.geometry)));
  if (launch.args.size() != c.slots.size())
    return Status::error(at + ".args: " + std::to_string(launch.args.size()) +
                         " bindings, but " + kernel + " has " +
                         std::to_string(c.slots.size()) + " argument slots");
  for (size_t i = 0; i < launch.args.size(); ++i) {
    const Binding &b = launch.args[i];
    const ContractSlot &want = c.slots[i];
    std::string arg = at + ".args[" + std::to_string(i) + "]";
    int index = b.kind == Binding::Value ? b.value : b.weight;
    size_t count =
        b.kind == Binding::Value ? layer.values.size() : layer.weights.size();
    if (b.kind != Binding::Null &&
        (index < 0 || static_cast<size_t>(index) >= count))
      return Status::error(arg + ": " + kindName(b.kind) + " " +
                           std::to_string(index) + " does not exist");
    if (b.kind != want.kind) {
      std::string expects = want.kind == Binding::Null
                                ? "nothing (null)"
                                : std::string("a ") + kindName(want.kind) +
                                      " (" + describe(want) + ")";
      return Status::error(
          arg + ": binds " +
          (b.kind == Binding::Null
               ? std::string("nothing (null)")
               : std::string(kindName(b.kind)) + " " + std::to_string(index)) +
          ", but " + kernel + " expects " + expects + " in this slot");
    }
    if (b.kind == Binding::Null)
      continue;
    ContractSlot have = contractOf(launch, layer).slots[i];
    if (!(have == want))
      return Status::error(arg + ": binds " + kindName(b.kind) + " " +
                           std::to_string(index) + " (" + describe(have) +
                           "), but " + kernel + " reads " + describe(want));
  }
  if (launch.tensorMaps.size() != c.maps.size())
    return Status::error(at + ".tensor_maps: " +
                         std::to_string(launch.tensorMaps.size()) +
                         " tensor maps, but " + kernel + " reads " +
                         std::to_string(c.maps.size()));
  for (size_t m = 0; m < c.maps.size(); ++m)
    if (!(launch.tensorMaps[m] == c.maps[m]))
      return Status::error(at + ".tensor_maps[" + std::to_string(m) + "]: " +
                           describeMap(launch.tensorMaps[m]) + ", but " +
                           kernel + " was generated for " +
                           describeMap(c.maps[m]));
  for (size_t z = 0; z < launch.zeroOnce.size(); ++z) {
    int v = launch.zeroOnce[z];
    if (v < 0 || static_cast<size_t>(v) >= layer.values.size())
      return Status::error(at + ".zero_once[" + std::to_string(z) +
                           "]: value " + std::to_string(v) + " does not exist");
  }
  return Status::success();
}

/// The layer's own buffers: what the executor uploads into and reads back
/// from with input_width / output_width, and --routing-out's values.
Status checkLayerValues(const LayerPlan &layer, size_t l) {
  std::string at = "layers[" + std::to_string(l) + "]";
  auto value = [&](int v) -> const BufferShape * {
    if (v < 0 || static_cast<size_t>(v) >= layer.values.size())
      return nullptr;
    return &layer.values[v];
  };
  auto tokenRows = [&](const char *name, int v, int64_t width,
                       const char *widthName) -> Status {
    const BufferShape *s = value(v);
    if (!s)
      return Status::error(at + "." + name + ": value " + std::to_string(v) +
                           " does not exist");
    if (s->perToken != width || s->fixed != 0)
      return Status::error(at + "." + name + ": value " + std::to_string(v) +
                           " has " + std::to_string(s->perToken) +
                           " per token + " + std::to_string(s->fixed) +
                           ", but " + widthName + " is " +
                           std::to_string(width) + " (expected " +
                           std::to_string(width) + " per token + 0)");
    return Status::success();
  };
  if (!layer.launches.empty() || layer.input >= 0) {
    if (Status s =
            tokenRows("input", layer.input, layer.inputWidth, "input_width"))
      return s;
    if (isRouterRole(layer.role)) {
      if (layer.output >= 0)
        return Status::error(at + ".output: a router-only plan has no output "
                                  "value (expected null)");
      if (layer.outputWidth != 0)
        return Status::error(at + ".output_width: a router-only plan has no "
                                  "output (expected 0)");
      if (layer.routings.empty())
        return Status::error(at + ".routing_ids: a router-only plan must name "
                                  "its routing (expected an index)");
    } else if (Status s = tokenRows("output", layer.output, layer.outputWidth,
                                    "output_width")) {
      return s;
    }
  }
  if ((layer.givenIds < 0) != (layer.givenWeights < 0))
    return Status::error(at + ".given_ids: given_ids and given_weights must "
                              "both be values or both absent");
  if (layer.givenIds >= 0) {
    const BufferShape *i = value(layer.givenIds);
    const BufferShape *w = value(layer.givenWeights);
    if (!i || !w)
      return Status::error(at + ".given_ids: value " +
                           std::to_string(i ? layer.givenWeights
                                            : layer.givenIds) +
                           " does not exist");
    if (i->type != ElementType::I32 || i->perToken <= 0 || i->fixed != 0)
      return Status::error(at + ".given_ids: value " +
                           std::to_string(layer.givenIds) + " is " +
                           elementTypeName(i->type) + " with " +
                           std::to_string(i->perToken) + " per token + " +
                           std::to_string(i->fixed) +
                           ", expected i32 with K > 0 per token + 0");
    if (w->type != ElementType::F32 || w->perToken != i->perToken ||
        w->fixed != 0)
      return Status::error(at + ".given_weights: value " +
                           std::to_string(layer.givenWeights) + " is " +
                           elementTypeName(w->type) + " with " +
                           std::to_string(w->perToken) + " per token + " +
                           std::to_string(w->fixed) + ", expected f32 with " +
                           std::to_string(i->perToken) +
                           " per token + 0 (as given_ids)");
    if (isRouterRole(layer.role))
      return Status::error(at + ".given_ids: a router-only plan computes its "
                                "routing; it cannot be given one");
  }
  for (size_t i = 0; i < layer.inputs.size(); ++i) {
    const LayerInput &in = layer.inputs[i];
    std::string inAt = at + ".inputs[" + std::to_string(i) + "]";
    const BufferShape *v = value(in.value);
    if (!v)
      return Status::error(inAt + ".value: value " + std::to_string(in.value) +
                           " does not exist");
    if (v->type != in.type)
      return Status::error(inAt + ".value: value " + std::to_string(in.value) +
                           " is " + elementTypeName(v->type) +
                           ", the input " + elementTypeName(in.type));
    if (in.indexes >= static_cast<int>(layer.inputs.size()) ||
        in.indexes == static_cast<int>(i) ||
        (in.indexes >= 0 && in.type != ElementType::I32))
      return Status::error(inAt + ".indexes: " + std::to_string(in.indexes) +
                           " is not another input this i32 input can index");
  }
  // Extra results: [T, width] f32 token rows, each a distinct value that is
  // not the layer's input or output.
  for (size_t i = 0; i < layer.outputs.size(); ++i) {
    const LayerOutput &out = layer.outputs[i];
    std::string outAt = "outputs[" + std::to_string(i) + "]";
    std::string valueAt = outAt + ".value", widthAt = outAt + ".width";
    if (isRouterRole(layer.role))
      return Status::error(at + ".outputs: a router-only plan has no extra "
                                "results");
    if (out.width <= 0)
      return Status::error(at + "." + widthAt + ": expected > 0, found " +
                           std::to_string(out.width));
    if (Status s = tokenRows(valueAt.c_str(), out.value, out.width,
                             widthAt.c_str()))
      return s;
    if (layer.values[out.value].type != ElementType::F32)
      return Status::error(at + "." + valueAt + ": value " +
                           std::to_string(out.value) + " is " +
                           elementTypeName(layer.values[out.value].type) +
                           ", expected f32");
    if (out.value == layer.output || out.value == layer.input)
      return Status::error(at + "." + valueAt + ": value " +
                           std::to_string(out.value) +
                           " is the layer's " +
                           (out.value == layer.output ? "output" : "input") +
                           ", not an extra result");
  }
  for (size_t r = 0; r < layer.routings.size(); ++r) {
    std::string ids = r == 0
                          ? "routing_ids"
                          : "more_routings[" + std::to_string(r - 1) + "].ids";
    std::string weights =
        r == 0 ? "routing_weights"
               : "more_routings[" + std::to_string(r - 1) + "].weights";
    const BufferShape *i = value(layer.routings[r].ids);
    const BufferShape *w = value(layer.routings[r].weights);
    if (!i)
      return Status::error(at + "." + ids + ": value " +
                           std::to_string(layer.routings[r].ids) +
                           " does not exist");
    if (!w)
      return Status::error(at + "." + weights + ": value " +
                           std::to_string(layer.routings[r].weights) +
                           " does not exist");
    if (i->type != ElementType::I32 || i->perToken <= 0 || i->fixed != 0)
      return Status::error(
          at + "." + ids + ": value " + std::to_string(layer.routings[r].ids) +
          " is " + elementTypeName(i->type) + " with " +
          std::to_string(i->perToken) + " per token + " +
          std::to_string(i->fixed) + ", expected i32 with K > 0 per token + 0");
    if (w->type != ElementType::F32 || w->perToken != i->perToken ||
        w->fixed != 0)
      return Status::error(
          at + "." + weights + ": value " +
          std::to_string(layer.routings[r].weights) + " is " +
          elementTypeName(w->type) + " with " + std::to_string(w->perToken) +
          " per token + " + std::to_string(w->fixed) + ", expected f32 with " +
          std::to_string(i->perToken) + " per token + 0 (as " + ids + ")");
  }
  return Status::success();
}

} // namespace

bool KernelContract::operator==(const KernelContract &o) const {
  if (kernel != o.kernel || slots != o.slots || maps != o.maps)
    return false;
  for (const GeometryField &g : kGeometry)
    if (g.get(geometry) != g.get(o.geometry))
      return false;
  return true;
}

KernelContract contractOf(const Launch &launch, const LayerPlan &layer) {
  KernelContract c;
  c.kernel = launch.kernel;
  for (const GeometryField &g : kGeometry)
    g.set(c.geometry, g.get(launch));
  for (const Binding &b : launch.args) {
    ContractSlot s;
    s.kind = b.kind;
    if (b.kind == Binding::Value) {
      const BufferShape &v = layer.values.at(b.value);
      s.type = v.type;
      s.perToken = v.perToken;
      s.fixed = v.fixed;
    } else if (b.kind == Binding::Weight) {
      const WeightRef &w = layer.weights.at(b.weight);
      s.type = w.type;
      s.fixed = 1;
      for (int64_t d : w.shape)
        s.fixed *= d;
    }
    c.slots.push_back(s);
  }
  c.maps = launch.tensorMaps;
  return c;
}

std::string formatKernelContract(const KernelContract &c) {
  std::string out = std::string(kKernelContractTag) + " " + c.kernel;
  for (const GeometryField &g : kGeometry)
    out += std::string(" ") + g.name + "=" + std::to_string(g.get(c.geometry));
  out += " slots=";
  for (size_t i = 0; i < c.slots.size(); ++i) {
    const ContractSlot &s = c.slots[i];
    if (i)
      out += ",";
    if (s.kind == Binding::Null) {
      out += "null";
      continue;
    }
    out += std::string(kindName(s.kind)) + ":" + elementTypeName(s.type) + ":" +
           std::to_string(s.perToken) + ":" + std::to_string(s.fixed);
  }
  // Only launches that read tensor maps carry the key, so the text (and
  // with it the name) of every other kernel is as before.
  for (size_t m = 0; m < c.maps.size(); ++m)
    out += (m ? "," : " maps=") + formatMap(c.maps[m]);
  return out;
}

std::string formatLayerContract(const LayerPlan &layer) {
  std::string out = std::string(kLayerContractTag) +
                    " layer=" + std::to_string(layer.layer) +
                    " function=" + layer.function + " launches=";
  for (size_t k = 0; k < layer.launches.size(); ++k)
    out += (k ? "," : "") + layer.launches[k].kernel;
  return out;
}

Expected<SourceContracts> parseContracts(const std::string &source,
                                         const std::string &sourceFile) {
  SourceContracts out;
  size_t at = 0;
  for (int line = 1; at < source.size(); ++line) {
    size_t end = source.find('\n', at);
    if (end == std::string::npos)
      end = source.size();
    std::string text = source.substr(at, end - at);
    at = end + 1;
    std::string where = sourceFile + ":" + std::to_string(line);
    std::string kernelTag = kKernelContractTag, layerTag = kLayerContractTag;
    if (text.compare(0, kernelTag.size(), kernelTag) == 0) {
      Expected<KernelContract> c =
          parseKernelLine(text.substr(kernelTag.size()), where);
      if (!c)
        return c.status();
      auto [it, added] = out.kernels.emplace(c->kernel, *c);
      // A kernel's launches (its text is emitted once) agree.
      if (!added && !(it->second == *c))
        return Status::error(where + ": a second, different contract for " +
                             c->kernel);
    } else if (text.compare(0, layerTag.size(), layerTag) == 0) {
      Expected<LayerContract> l =
          parseLayerLine(text.substr(layerTag.size()), where);
      if (!l)
        return l.status();
      out.layers.push_back(std::move(*l));
    }
  }
  return out;
}

// Extents are compared exactly (per token and fixed), so a binding agrees
// with its kernel for every token count T the plan admits, not only for the
// T a test runs: both sides are perToken * T + fixed.
Status checkPlanContracts(const ModulePlan &plan,
                          const std::string &sourceFile) {
  bool anyLaunch = false;
  for (const LayerPlan &layer : plan.layers)
    anyLaunch |= !layer.launches.empty();
  if (!anyLaunch)
    return Status::success();
  Expected<SourceContracts> contracts = parseContracts(plan.source, sourceFile);
  if (!contracts)
    return contracts.status();
  if (contracts->kernels.empty() || contracts->layers.empty())
    return Status::error(
        sourceFile + ": no '" + std::string(kKernelContractTag) + "' or '" +
        kLayerContractTag +
        "' lines: the kernels were not generated by this version of "
        "moe-compile (or were edited); recompile the package");
  if (contracts->layers.size() != plan.layers.size())
    return Status::error("layers: " + std::to_string(plan.layers.size()) +
                         " layers, but " + sourceFile + " was generated for " +
                         std::to_string(contracts->layers.size()));
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    const LayerPlan &layer = plan.layers[l];
    const LayerContract &lc = contracts->layers[l];
    // The layer's own buffers first: they name the root of a bad extent.
    if (Status s = checkLayerValues(layer, l))
      return s;
    std::string at = "layers[" + std::to_string(l) + "]";
    if (layer.layer != lc.layer || layer.function != lc.function)
      return Status::error(at + ": layer " + std::to_string(layer.layer) +
                           " (" + layer.function + "), but " + sourceFile +
                           " was generated for layer " +
                           std::to_string(lc.layer) + " (" + lc.function +
                           ") here");
    for (size_t k = 0; k < std::max(layer.launches.size(), lc.launches.size());
         ++k) {
      if (k >= layer.launches.size())
        return Status::error(
            at + ".launches: " + std::to_string(layer.launches.size()) +
            " launches, but " + sourceFile + " launches " +
            std::to_string(lc.launches.size()) +
            " kernels in this layer (launch " + std::to_string(k) + ": " +
            lc.launches[k] + " is missing)");
      const std::string &name = layer.launches[k].kernel;
      if (k >= lc.launches.size() || name != lc.launches[k])
        return Status::error(
            launchPath(l, k) + ".kernel: " + name + ", but " + sourceFile +
            (k >= lc.launches.size()
                 ? " launches only " + std::to_string(lc.launches.size()) +
                       " kernels in this layer"
                 : " launches " + lc.launches[k] + " here"));
      auto it = contracts->kernels.find(name);
      if (it == contracts->kernels.end())
        return Status::error(launchPath(l, k) + ".kernel: kernel " + name +
                             " has no contract line in " + sourceFile);
      if (Status s = checkLaunch(layer, l, k, it->second))
        return s;
    }
  }
  return Status::success();
}

} // namespace moe
