//===- Compare.cpp - What moe-report compare measures ---------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "Compare.h"

#include "moe/dialects/MoE/MoEOps.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Interfaces/FunctionInterfaces.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/Twine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

using namespace llvm;

namespace moe::report {

static Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

static std::string functionName(mlir::Operation *fn) {
  if (auto f = dyn_cast<mlir::FunctionOpInterface>(fn))
    return "@" + f.getName().str();
  return "'" + fn->getName().getStringRef().str() + "'";
}

WeightTotals weightTotals(mlir::Operation *fn) {
  WeightTotals totals;
  StringSet<> seen;
  fn->walk([&](mlir::moe::WeightOp op) {
    // A weight read twice (a fused body and the op beside it) is one
    // tensor in memory.
    std::string key = op.getStacked() ? "stacked" : "";
    for (mlir::Attribute a : op.getNames())
      key += "\x1f" + cast<mlir::StringAttr>(a).getValue().str();
    key += "\x1e";
    for (mlir::Attribute a : op.getFiles())
      key += "\x1f" + cast<mlir::StringAttr>(a).getValue().str();
    if (!seen.insert(key).second)
      return;
    auto type = cast<mlir::RankedTensorType>(op.getResult().getType());
    int64_t n = type.getNumElements();
    totals.params += n;
    totals.bytes += n * (type.getElementTypeBitWidth() / 8);
  });
  return totals;
}

std::optional<int64_t> routedExperts(mlir::Operation *fn) {
  std::optional<int64_t> experts;
  auto note = [&](int64_t e) { experts = std::max(experts.value_or(0), e); };
  fn->walk([&](mlir::Operation *op) {
    if (auto d = dyn_cast<mlir::moe::DispatchOp>(op))
      note(d.getNumExperts());
    else if (auto r = dyn_cast<mlir::moe::FusedRouteOp>(op))
      note(r.getNumExperts());
  });
  return experts;
}

/// The indices of an array<i64> attribute, or an error naming `what`.
static Expected<std::vector<int64_t>> readIndices(mlir::Attribute attr,
                                                  const Twine &what) {
  auto array = dyn_cast<mlir::DenseI64ArrayAttr>(attr);
  if (!array) {
    std::string text;
    raw_string_ostream os(text);
    attr.print(os);
    return makeError(what + " must be an array<i64> of expert indices, got " +
                     text);
  }
  std::vector<int64_t> values(array.asArrayRef().begin(),
                              array.asArrayRef().end());
  for (auto [i, v] : enumerate(values))
    if (v < 0)
      return makeError(what + " entry " + Twine(i) + " is " + Twine(v) +
                       "; expert indices are non-negative");
  return values;
}

Expected<ExpertMap> readExpertMap(mlir::Operation *fn) {
  ExpertMap map;
  std::string name = functionName(fn);
  if (mlir::Attribute a = fn->getAttr(kExpertOriginAttrName)) {
    auto origin = readIndices(a, "function " + name + ": '" +
                                     kExpertOriginAttrName + "'");
    if (!origin)
      return origin.takeError();
    DenseMap<int64_t, size_t> first;
    for (auto [i, v] : enumerate(*origin)) {
      auto [it, inserted] = first.try_emplace(v, i);
      if (!inserted)
        return makeError("function " + name + ": '" + kExpertOriginAttrName +
                         "' names original expert " + Twine(v) +
                         " twice (entries " + Twine(it->second) + " and " +
                         Twine(i) + ")");
    }
    map.origin = std::move(*origin);
  }
  Error err = Error::success();
  fn->walk([&](mlir::Operation *op) {
    if (err || op->getName().getStringRef() != kRemapOpName)
      return;
    std::string what = "function " + name + ": '" + kRemapOpName.str() + "'";
    mlir::Attribute a = op->getAttr(kRemapMappingAttrName);
    if (!a) {
      err =
          makeError(what + " has no '" + kRemapMappingAttrName + "' attribute");
      return;
    }
    auto mapping = readIndices(a, what + " '" + kRemapMappingAttrName + "'");
    if (!mapping) {
      err = mapping.takeError();
      return;
    }
    // Several routers over one expert set share one merge.
    if (map.mapping && *map.mapping != *mapping) {
      err = makeError(what + " ops disagree on the mapping; moe-report "
                             "compares one merge per layer");
      return;
    }
    map.mapping = std::move(*mapping);
  });
  if (err)
    return std::move(err);
  // The attributes against the experts the function dispatches to: origin
  // has one entry per router slot, which are the experts unless merged.
  if (std::optional<int64_t> experts = routedExperts(fn)) {
    if (map.origin && !map.mapping &&
        static_cast<int64_t>(map.origin->size()) != *experts)
      return makeError("function " + name + ": '" + kExpertOriginAttrName +
                       "' names " + Twine(map.origin->size()) +
                       " experts but the function routes to " +
                       Twine(*experts));
    if (map.mapping)
      for (auto [i, v] : enumerate(*map.mapping))
        if (v >= *experts)
          return makeError("function " + name + ": '" + kRemapOpName.str() +
                           "' '" + kRemapMappingAttrName + "' entry " +
                           Twine(i) + " is " + Twine(v) +
                           " but the function routes to " + Twine(*experts) +
                           " experts");
  }
  if (map.origin && map.mapping && map.origin->size() != map.mapping->size())
    return makeError("function " + name + ": '" + kRemapOpName.str() + "' '" +
                     kRemapMappingAttrName + "' has " +
                     Twine(map.mapping->size()) + " entries but '" +
                     kExpertOriginAttrName + "' names " +
                     Twine(map.origin->size()) +
                     " experts; expected one entry per router slot");
  return map;
}

Expected<Agreement> expertAgreement(const RoutingTrace &original,
                                    const ExpertMap &originalMap,
                                    const RoutingTrace &rewritten,
                                    const ExpertMap &rewrittenMap) {
  if (originalMap.mapping)
    return makeError("the original model is merged ('" + kRemapOpName.str() +
                     "'): its expert sets cannot be taken back to the "
                     "router's; compare against the model before merging");
  if (original.routers.size() != rewritten.routers.size())
    return makeError("the original has " + Twine(original.routers.size()) +
                     " router(s) but the rewritten model " +
                     Twine(rewritten.routers.size()));
  // Original expert index -> remaining expert (absent: dropped).
  DenseMap<int64_t, int64_t> remaining;
  if (rewrittenMap.origin)
    for (auto [i, v] : enumerate(*rewrittenMap.origin))
      remaining[v] = static_cast<int64_t>(i);

  Agreement result;
  std::vector<int64_t> mapped, chosen;
  for (auto [r, pair] :
       enumerate(zip_equal(original.routers, rewritten.routers))) {
    const RoutingTrace::Router &a = std::get<0>(pair);
    const RoutingTrace::Router &b = std::get<1>(pair);
    if (!a.hasIds || !b.hasIds || a.ids.shape.size() != 2 ||
        b.ids.shape.size() != 2)
      return makeError("router " + Twine(r) + " reported no expert ids");
    int64_t tokens = a.ids.shape[0];
    if (b.ids.shape[0] != tokens)
      return makeError("router " + Twine(r) + " routed " + Twine(tokens) +
                       " tokens in the original but " + Twine(b.ids.shape[0]) +
                       " in the rewritten model");
    int64_t ka = a.ids.shape[1], kb = b.ids.shape[1];
    for (int64_t t = 0; t < tokens; ++t) {
      // S taken to the rewritten model's ids; misses are dropped experts.
      mapped.clear();
      int64_t misses = 0;
      for (int64_t s = 0; s < ka; ++s) {
        int64_t id = a.ids.i[t * ka + s];
        if (id < 0)
          continue;
        if (originalMap.origin) {
          if (id >= static_cast<int64_t>(originalMap.origin->size()))
            return makeError("router " + Twine(r) +
                             " of the original picked "
                             "expert " +
                             Twine(id) + " but its '" + kExpertOriginAttrName +
                             "' names only " +
                             Twine(originalMap.origin->size()) + " experts");
          id = (*originalMap.origin)[id];
        }
        if (rewrittenMap.origin) {
          auto it = remaining.find(id);
          if (it == remaining.end()) {
            ++misses;
            continue;
          }
          id = it->second;
        }
        if (rewrittenMap.mapping) {
          if (id >= static_cast<int64_t>(rewrittenMap.mapping->size()))
            return makeError("router slot " + Twine(id) + " is outside the " +
                             Twine(rewrittenMap.mapping->size()) +
                             " entries of '" + kRemapOpName.str() + "' '" +
                             kRemapMappingAttrName + "'");
          id = (*rewrittenMap.mapping)[id];
        }
        mapped.push_back(id);
      }
      llvm::sort(mapped);
      mapped.erase(std::unique(mapped.begin(), mapped.end()), mapped.end());
      int64_t size = static_cast<int64_t>(mapped.size()) + misses;
      if (size == 0)
        continue;
      chosen.clear();
      for (int64_t s = 0; s < kb; ++s)
        if (b.ids.i[t * kb + s] >= 0)
          chosen.push_back(b.ids.i[t * kb + s]);
      int64_t hits = 0;
      for (int64_t id : mapped)
        hits += llvm::is_contained(chosen, id);
      result.sum += static_cast<double>(hits) / static_cast<double>(size);
      ++result.tokens;
    }
  }
  return result;
}

Expected<double> relativeError(const HostTensor &y,
                               const HostTensor &yRewritten) {
  if (y.shape != yRewritten.shape || y.isInt || yRewritten.isInt) {
    auto text = [](const HostTensor &t) {
      std::string s = "[";
      for (auto [i, d] : enumerate(t.shape))
        s += (i ? ", " : "") + std::to_string(d);
      return s + "]" + (t.isInt ? " i32" : "");
    };
    return makeError("the outputs differ in shape: " + text(y) +
                     " (original) and " + text(yRewritten) + " (rewritten)");
  }
  double diff = 0.0, norm = 0.0;
  for (auto [a, b] : zip_equal(y.f, yRewritten.f)) {
    double d = static_cast<double>(b) - static_cast<double>(a);
    diff += d * d;
    norm += static_cast<double>(a) * static_cast<double>(a);
  }
  if (norm == 0.0)
    return diff == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(diff / norm);
}

} // namespace moe::report
