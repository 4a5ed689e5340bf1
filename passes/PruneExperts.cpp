//===- PruneExperts.cpp - Removes routed experts --------------------------===//
//
// Part of moe-opt. Frequency, REAP and NAEE (output-error) pruning over a
// calibration profile: removes experts, their router rows and their
// per-expert router parameters.
//
//===----------------------------------------------------------------------===//

#include "ExpertLayer.h"

#include "moe/dialects/MoE/Routing.h"
#include "moe/lib/Reference/Interpreter.h"
#include "moe/lib/Weights/Npy.h"
#include "moe/passes/NewWeights.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/IR/Verifier.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/Support/FormatVariadic.h"

#include <map>
#include <numeric>

namespace mlir::moe {
#define GEN_PASS_DEF_MOEPRUNEEXPERTS
#include "moe/passes/Passes.h.inc"

namespace {

using namespace experts;

inline constexpr llvm::StringLiteral kOriginAttrName = "moe.expert_origin";

/// The router of a layer: its projection, the row ops on its scores, the
/// selections reading them.
struct Router {
  RouterLinearOp linear;
  DropNullExpertsOp drop;
  GroupLimitOp groupLimit;
  /// Ops whose results are score rows of the router's width.
  llvm::SetVector<Operation *> rowOps;
  SmallVector<Operation *> selections;
  int64_t width = 0;
};

bool isRowOp(Operation *op) {
  return isa<SoftmaxOp, SigmoidOp, ReluOp, RmsNormOp, BiasAddOp, GroupLimitOp>(
      op);
}

FailureOr<Router> findRouter(ExpertLayer &layer, std::string &why) {
  Router r;
  Value ids = layer.dispatch.getIds();
  if (ids.getDefiningOp<RemapExpertsOp>()) {
    why = "the layer's experts were merged (moe.remap_experts): its router "
          "chooses among the experts before merging; prune before merging";
    return failure();
  }
  if (auto drop = ids.getDefiningOp<DropNullExpertsOp>()) {
    r.drop = drop;
    ids = drop.getIds();
  }
  auto sel = ids.getDefiningOp<SelectionOpInterface>();
  if (!sel || sel.getSelectedIds() != ids) {
    why = "the dispatch's ids do not come from a selection (moe.topk, "
          "moe.top_p, moe.threshold)";
    return failure();
  }
  Value s = sel.getSelectionScores();
  while (Operation *def = s.getDefiningOp()) {
    if (auto linear = dyn_cast<RouterLinearOp>(def)) {
      r.linear = linear;
      break;
    }
    if (!isRowOp(def))
      break;
    s = def->getOperand(0);
  }
  if (!r.linear) {
    why = "the selection's scores do not come from a moe.router_linear "
          "through row ops (softmax, sigmoid, relu, rms_norm, bias_add, "
          "group_limit)";
    return failure();
  }
  r.width =
      cast<RankedTensorType>(r.linear.getResult().getType()).getDimSize(1);
  SmallVector<Value> work = {r.linear.getResult()};
  while (!work.empty()) {
    Value v = work.pop_back_val();
    for (Operation *user : v.getUsers()) {
      if (isRowOp(user)) {
        if (auto g = dyn_cast<GroupLimitOp>(user))
          r.groupLimit = g;
        if (r.rowOps.insert(user))
          work.push_back(user->getResult(0));
        continue;
      }
      if (isa<SelectionOpInterface>(user)) {
        r.selections.push_back(user);
        continue;
      }
      if (auto gather = dyn_cast<GatherScoresOp>(user);
          gather && gather.getScores() == v)
        continue;
      why = llvm::formatv("'{0}' reads the router scores; only row ops, "
                          "selections and moe.gather_scores are understood",
                          user->getName());
      return failure();
    }
  }
  if (r.width < layer.experts) {
    why = llvm::formatv("the router scores {0} candidates, fewer than the "
                        "{1} routed experts",
                        r.width, layer.experts);
    return failure();
  }
  return r;
}

/// The router rows that stay: the kept experts, then null experts.
std::vector<int64_t> keptRows(const Router &r, int64_t experts,
                              ArrayRef<int64_t> kept) {
  std::vector<int64_t> rows(kept.begin(), kept.end());
  for (int64_t e = experts; e < r.width; ++e)
    rows.push_back(e);
  return rows;
}

/// Why keeping `kept` is impossible, or empty.
std::string checkKept(const Router &r, const ExpertLayer &layer,
                      ArrayRef<int64_t> kept) {
  int64_t n = kept.size();
  for (Operation *op : r.selections) {
    if (isa<EntropyFallbackOp>(op))
      return "'moe.entropy_fallback' has one slot per expert of its "
             "probabilities: pruning would change its width (not "
             "supported)";
    int64_t k = 0;
    StringRef what = "max_k";
    if (auto t = dyn_cast<TopKOp>(op)) {
      k = t.getK();
      what = "k";
    } else if (auto t = dyn_cast<TopPOp>(op)) {
      k = t.getMaxK();
    } else if (auto t = dyn_cast<ThresholdOp>(op)) {
      k = t.getMaxK();
    }
    if (k > n)
      return llvm::formatv("'{0}' selects {1} = {2} experts but only {3} "
                           "would remain",
                           op->getName(), what, k, n);
  }
  if (r.groupLimit) {
    int64_t groups = GroupLimitOp(r.groupLimit).getNumGroups();
    int64_t size = r.width / groups;
    std::vector<int64_t> perGroup(groups, 0);
    for (int64_t e : keptRows(r, layer.experts, kept))
      ++perGroup[e / size];
    for (int64_t g = 1; g < groups; ++g)
      if (perGroup[g] != perGroup[0])
        return llvm::formatv("moe.group_limit has {0} groups and the kept "
                             "experts would leave {1} in group 0 but {2} in "
                             "group {3}: groups must stay equally large",
                             groups, perGroup[0], perGroup[g], g);
    if (GroupLimitOp(r.groupLimit).getGroupScore() == GroupScore::top2_sum &&
        perGroup[0] < 2)
      return llvm::formatv("moe.group_limit scores groups by top2_sum, which "
                           "needs 2 experts per group, but only {0} of each "
                           "of its {1} groups would remain",
                           perGroup[0], groups);
  }
  return "";
}

/// Prunes `layer` to `kept` (sorted), rewriting its router; weights come
/// from `make`. The checks of checkKept must have passed.
LogicalResult applyPrune(ExpertLayer &layer, Router &r, ArrayRef<int64_t> kept,
                         ::moe::WeightLoader &loader, MakeWeight make,
                         std::string &why) {
  int64_t E = layer.experts, n = kept.size();
  std::vector<int64_t> rows = keptRows(r, E, kept);
  int64_t width = rows.size();
  std::string prefix = llvm::formatv("layer.{0}.pruned", layer.index);
  // A per-router-row tensor [N] or [N, H] keeps the rows of `rows`.
  auto sliceRows = [&](OpOperand &o, StringRef name) -> LogicalResult {
    auto type = cast<RankedTensorType>(o.get().getType());
    if (!type.hasStaticShape() || type.getDimSize(0) != r.width) {
      why = llvm::formatv("operand '{0}' has type {1}; expected {2} router "
                          "rows",
                          name, type, r.width);
      return failure();
    }
    FailureOr<std::vector<float>> old = weightValues(o.get(), loader, why);
    if (failed(old))
      return failure();
    int64_t rest = type.getNumElements() / r.width;
    std::vector<float> out;
    for (int64_t row : rows)
      out.insert(out.end(), old->begin() + row * rest,
                 old->begin() + (row + 1) * rest);
    OpBuilder b(o.getOwner());
    FailureOr<Value> w = make(b, o.get().getLoc(), (prefix + "." + name).str(),
                              withDim(type, 0, width), out);
    if (failed(w)) {
      why =
          "cannot create the new weight '" + (prefix + "." + name).str() + "'";
      return failure();
    }
    o.set(*w);
    return success();
  };
  if (failed(sliceRows(r.linear.getWeightMutable(), "router")))
    return failure();
  if (r.linear.getBias() &&
      failed(sliceRows(r.linear.getBiasMutable()[0], "router_bias")))
    return failure();
  for (Operation *op : r.rowOps) {
    if (auto bias = dyn_cast<BiasAddOp>(op))
      if (failed(sliceRows(bias.getBiasMutable(), "score_bias")))
        return failure();
    if (auto norm = dyn_cast<RmsNormOp>(op); norm && norm.getWeight())
      if (failed(sliceRows(norm.getWeightMutable()[0], "rms_norm_weight")))
        return failure();
  }
  // The score rows shrink to the kept width.
  r.linear.getResult().setType(
      withDim(r.linear.getResult().getType(), 1, width));
  for (Operation *op : r.rowOps)
    op->getResult(0).setType(withDim(op->getResult(0).getType(), 1, width));
  if (failed(rebuildExpertWeights(
          layer, loader, make, prefix, n,
          [&](StringRef, ArrayRef<float> old, int64_t rest, int64_t i,
              float *out) {
            std::copy(old.begin() + kept[i] * rest,
                      old.begin() + (kept[i] + 1) * rest, out);
          },
          why)))
    return failure();
  sliceExpertWidths(layer.ffn, kept);
  setDispatchExperts(layer.dispatch, n);
  if (r.drop)
    r.drop.setNumExperts(n);
  layer.experts = n;
  // The original index of every kept expert, composed with earlier prunes.
  SmallVector<int64_t> origin(kept.begin(), kept.end());
  if (auto before = layer.fn->getAttrOfType<DenseI64ArrayAttr>(kOriginAttrName);
      before && int64_t(before.size()) == E)
    for (int64_t &o : origin)
      o = before[o];
  layer.fn->setAttr(kOriginAttrName,
                    DenseI64ArrayAttr::get(layer.fn.getContext(), origin));
  SmallVector<Operation *> dead;
  layer.fn.walk([&](Operation *op) {
    if (isa<WeightOp, arith::ConstantOp>(op) && op->use_empty())
      dead.push_back(op);
  });
  for (Operation *op : dead)
    op->erase();
  return success();
}

/// The `keep` best experts by `score` (ties: lower index), the same number
/// per group when the router is group-limited; sorted.
FailureOr<std::vector<int64_t>> bestByScore(const std::vector<double> &score,
                                            int64_t keep, const Router &r,
                                            std::string &why) {
  int64_t E = score.size();
  int64_t groups =
      r.groupLimit ? int64_t(GroupLimitOp(r.groupLimit).getNumGroups()) : 1;
  if (r.groupLimit && r.width != E) {
    why = "a group-limited router with null experts is not supported";
    return failure();
  }
  if (keep % groups) {
    why = llvm::formatv("moe.group_limit has {0} groups: keep={1} cannot "
                        "leave them equally large",
                        groups, keep);
    return failure();
  }
  int64_t size = E / groups;
  std::vector<int64_t> kept;
  for (int64_t g = 0; g < groups; ++g) {
    std::vector<int64_t> order(size);
    std::iota(order.begin(), order.end(), g * size);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return score[a] > score[b]; });
    kept.insert(kept.end(), order.begin(), order.begin() + keep / groups);
  }
  llvm::sort(kept);
  return kept;
}

struct PruneExpertsPass : public impl::MoEPruneExpertsBase<PruneExpertsPass> {
  using MoEPruneExpertsBase::MoEPruneExpertsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto refuse = [&](Operation *at, const Twine &why) {
      at->emitRemark() << "moe-prune-experts: " << why;
    };
    if (criterion != "frequency" && criterion != "reap" &&
        criterion != "output-error") {
      module.emitError() << "moe-prune-experts: criterion must be frequency, "
                            "reap or output-error, got '"
                         << criterion << "'";
      return signalPassFailure();
    }
    if (keep < 0 || ratio < 0.0 || ratio > 1.0 || (keep == 0 && ratio == 0.0)) {
      module.emitError() << "moe-prune-experts: give keep=N (N >= 1) or "
                            "ratio=R (0 < R <= 1)";
      return signalPassFailure();
    }
    if (criterion == "output-error") {
      if (calibration.empty()) {
        refuse(module, "criterion=output-error runs the layer on calibration "
                       "tokens: give calibration=X.npy; nothing pruned");
        return;
      }
      llvm::Expected<::moe::NpyArray> x = ::moe::readNpy(calibration);
      if (!x) {
        refuse(module, "cannot read calibration='" + calibration + "': " +
                           llvm::toString(x.takeError()) + "; nothing pruned");
        return;
      }
      if (x->shape.size() != 2) {
        refuse(module, "calibration='" + calibration +
                           "' must be [T, H] tokens; nothing pruned");
        return;
      }
      tokens = ::moe::HostTensor::floats(x->shape);
      tokens.f = x->toF32();
      for (const std::string &path : calibrationInputs) {
        llvm::Expected<::moe::HostTensor> in = ::moe::readLayerInput(path);
        if (!in) {
          refuse(module, "cannot read calibration-inputs '" + path +
                             "': " + llvm::toString(in.takeError()) +
                             "; nothing pruned");
          return;
        }
        extraTokens.push_back(std::move(*in));
      }
    }
    auto rewrite = [&](ExpertLayer &layer, const ::moe::Profile &prof,
                       ::moe::WeightLoader &loader, NewWeights &newWeights,
                       std::string &why) {
      return pruneLayer(layer, prof, loader, newWeights, why);
    };
    if (failed(rewriteLayersFromProfile(module, "moe-prune-experts", "pruned",
                                        "prune", profile, weightsOut, rewrite,
                                        weightError)))
      return signalPassFailure();
  }

  LogicalResult pruneLayer(ExpertLayer &layer, const ::moe::Profile &prof,
                           ::moe::WeightLoader &loader, NewWeights &newWeights,
                           std::string &why) {
    FailureOr<const ::moe::LayerProfile *> lpOr =
        layerProfile(prof, profile, layer, why);
    if (failed(lpOr))
      return failure();
    const ::moe::LayerProfile &lp = **lpOr;
    FailureOr<Router> router = findRouter(layer, why);
    if (failed(router))
      return failure();
    int64_t E = layer.experts;
    int64_t n = keep > 0 ? int64_t(keep)
                         : std::max<int64_t>(1, std::llround(ratio * E));
    if (n > E) {
      why = llvm::formatv("keep={0} is more than the {1} experts", n, E);
      return failure();
    }
    std::vector<int64_t> kept;
    std::string how;
    if (criterion == "frequency" || criterion == "reap") {
      std::vector<double> score = lp.expertCount;
      if (criterion == "reap") {
        if (lp.outputNormMass.empty()) {
          why = llvm::formatv("profile '{0}' has no layer.{1}.output_norm_mass",
                              profile, layer.index);
          return failure();
        }
        for (int64_t e = 0; e < E; ++e)
          score[e] = lp.expertCount[e] > 0.0
                         ? lp.outputNormMass[e] / lp.expertCount[e]
                         : 0.0;
      }
      FailureOr<std::vector<int64_t>> best =
          bestByScore(score, n, *router, why);
      if (failed(best))
        return failure();
      kept = std::move(*best);
      how = criterion == "reap" ? "mean gate x ||output|| (reap)"
                                : "expert_count (frequency)";
    } else {
      FailureOr<std::vector<int64_t>> best =
          leastOutputError(layer, *router, n, loader, how, why);
      if (failed(best))
        return failure();
      kept = std::move(*best);
    }
    if (std::string bad = checkKept(*router, layer, kept); !bad.empty()) {
      why = bad;
      return failure();
    }
    Size before = routedExpertSize(layer.ffn);
    auto make = [&](OpBuilder &b, Location loc, StringRef name,
                    RankedTensorType type,
                    ArrayRef<float> values) -> FailureOr<Value> {
      FailureOr<WeightOp> w = newWeights.add(b, loc, name, type, values);
      if (failed(w)) {
        weightError = true; // the layer may be half rewritten
        return failure();
      }
      return w->getResult();
    };
    if (failed(applyPrune(layer, *router, kept, loader, make, why)))
      return failure();
    if (failed(verify(layer.fn)))
      return failure(); // the verifier's error names the op
    std::string keptText;
    llvm::raw_string_ostream ks(keptText);
    llvm::interleaveComma(
        layer.fn->getAttrOfType<DenseI64ArrayAttr>(kOriginAttrName)
            .asArrayRef(),
        ks);
    layer.fn.emitRemark() << llvm::formatv(
        "moe-prune-experts: layer {0}: kept experts [{1}] (original indices) "
        "by {2}",
        layer.index, keptText, how);
    layer.fn.emitRemark() << sizeReport("moe-prune-experts", layer, E, before,
                                        routedExpertSize(layer.ffn));
    return success();
  }

  /// NAEE: the kept set whose layer output on the calibration tokens is
  /// closest (squared Frobenius norm) to the unpruned layer's, each
  /// candidate run by the reference interpreter on a pruned copy.
  FailureOr<std::vector<int64_t>>
  leastOutputError(ExpertLayer &layer, const Router &router, int64_t n,
                   ::moe::WeightLoader &loader, std::string &how,
                   std::string &why) {
    int64_t E = layer.experts;
    if (tokens.shape[1] != layer.hidden) {
      why = llvm::formatv("calibration='{0}' has {1} columns but the layer's "
                          "hidden size is {2}",
                          calibration, tokens.shape[1], layer.hidden);
      return failure();
    }
    // A layer with extra inputs (RMoE's router state) runs on
    // calibration-inputs, in argument order.
    std::string formWhy;
    bool takesInputs =
        getLayerForm(layer.fn, formWhy) == LayerForm::ExtraInputs;
    unsigned extraArgs = layer.fn.getNumArguments() - 1;
    if (takesInputs && extraArgs != extraTokens.size()) {
      std::string names;
      for (unsigned i = 1; i <= extraArgs; ++i)
        names += (i > 1 ? "', '" : "'") + getLayerInputName(layer.fn, i);
      why = llvm::formatv("the layer takes {0} extra input(s) after x ({1}'), "
                          "and criterion=output-error runs it on the "
                          "calibration tokens with them: give "
                          "calibration-inputs=A.npy[,...] in argument order "
                          "({2} given)",
                          extraArgs, names, extraTokens.size());
      return failure();
    }
    // The layer's output y on the calibration tokens (its extra results,
    // e.g. the new router state, are not compared).
    auto runLayer =
        [&](func::FuncOp fn,
            ::moe::WeightLoader &with) -> llvm::Expected<::moe::HostTensor> {
      if (!takesInputs)
        return ::moe::interpret(fn, tokens, with);
      llvm::Expected<std::vector<::moe::HostTensor>> all =
          ::moe::interpretWithOutputs(fn, tokens, extraTokens, with);
      if (!all)
        return all.takeError();
      return std::move(all->front());
    };
    llvm::Expected<::moe::HostTensor> reference = runLayer(layer.fn, loader);
    if (!reference) {
      why = "the reference interpreter failed on the layer: " +
            llvm::toString(reference.takeError());
      return failure();
    }
    // Candidate weights live in memory; the rest load from the files.
    std::map<std::string, std::vector<float>> memory;
    ::moe::WeightLoader candidateLoader("");
    candidateLoader.setProvider(
        [&](const std::vector<std::string> &names,
            const std::vector<std::string> &files, bool stacked,
            const std::vector<int64_t> &shape,
            StringRef elementType) -> llvm::Expected<std::vector<float>> {
          if (files.size() == 1 && files[0] == "<memory>")
            return memory.at(names[0]);
          llvm::Expected<::moe::HostTensor> t =
              loader.load(names, files, stacked, shape, elementType);
          if (!t)
            return t.takeError();
          return std::move(t->f);
        });
    int64_t evaluated = 0;
    auto error = [&](ArrayRef<int64_t> kept) -> FailureOr<double> {
      memory.clear();
      OwningOpRef<ModuleOp> copy = ModuleOp::create(layer.fn.getLoc());
      auto fn = cast<func::FuncOp>(layer.fn->clone());
      copy->push_back(fn);
      std::string inner;
      FailureOr<ExpertLayer> l = findExpertLayer(fn, inner);
      FailureOr<Router> r =
          succeeded(l) ? findRouter(*l, inner) : FailureOr<Router>(failure());
      auto make = [&](OpBuilder &b, Location loc, StringRef name,
                      RankedTensorType type,
                      ArrayRef<float> values) -> FailureOr<Value> {
        memory[name.str()] = values.vec();
        return WeightOp::create(b, loc, type, b.getStrArrayAttr({name}),
                                b.getStrArrayAttr({"<memory>"}), false)
            .getResult();
      };
      if (failed(r) ||
          failed(applyPrune(*l, *r, kept, candidateLoader, make, inner))) {
        why = "pruning a copy of the layer failed: " + inner;
        return failure();
      }
      std::string invalid;
      {
        ScopedDiagnosticHandler capture(fn.getContext(), [&](Diagnostic &d) {
          if (invalid.empty())
            invalid = d.str();
          return success();
        });
        if (failed(verify(fn))) {
          why = "a pruned copy of the layer does not verify: " + invalid;
          return failure();
        }
      }
      llvm::Expected<::moe::HostTensor> y = runLayer(fn, candidateLoader);
      if (!y) {
        why = "the reference interpreter failed on a pruned copy: " +
              llvm::toString(y.takeError());
        return failure();
      }
      ++evaluated;
      double e2 = 0.0;
      for (size_t i = 0; i < y->f.size(); ++i) {
        double d = double(y->f[i]) - reference->f[i];
        e2 += d * d;
      }
      return e2;
    };

    // Every subset of n experts (lexicographic), when few enough.
    std::vector<std::vector<int64_t>> subsets;
    std::vector<int64_t> c(n);
    std::iota(c.begin(), c.end(), 0);
    bool tooMany = false;
    std::string reason; // why subsets were refused (groups last)
    while (true) {
      std::string bad = checkKept(router, layer, c);
      if (!bad.empty() &&
          (reason.empty() || reason.find("equally large") != std::string::npos))
        reason = bad;
      if (bad.empty()) {
        if (int64_t(subsets.size()) >= maxSubsets) {
          tooMany = true;
          break;
        }
        subsets.push_back(c);
      }
      int64_t i = n - 1;
      while (i >= 0 && c[i] == E - n + i)
        --i;
      if (i < 0)
        break;
      ++c[i];
      for (int64_t j = i + 1; j < n; ++j)
        c[j] = c[j - 1] + 1;
    }
    std::vector<int64_t> best;
    double bestError = 0.0;
    if (!tooMany) {
      if (subsets.empty()) {
        why = "no subset of " + std::to_string(n) +
              " experts suits the router: " + reason;
        return failure();
      }
      for (const std::vector<int64_t> &s : subsets) {
        FailureOr<double> e = error(s);
        if (failed(e))
          return failure();
        if (best.empty() || *e < bestError) {
          best = s;
          bestError = *e;
        }
      }
      how = llvm::formatv("least output error on {0} calibration tokens "
                          "(output-error, all {1} subsets enumerated, squared "
                          "error {2:e})",
                          tokens.shape[0], evaluated, bestError);
      return best;
    }
    if (router.groupLimit) {
      why = llvm::formatv("more than max-subsets={0} subsets and a "
                          "group-limited router: the greedy search does not "
                          "keep groups equal",
                          int64_t(maxSubsets));
      return failure();
    }
    // Greedy: drop, one at a time, the expert whose removal costs least.
    best.resize(E);
    std::iota(best.begin(), best.end(), 0);
    while (int64_t(best.size()) > n) {
      int64_t drop = -1;
      double dropError = 0.0;
      for (size_t i = 0; i < best.size(); ++i) {
        std::vector<int64_t> s = best;
        s.erase(s.begin() + i);
        FailureOr<double> e = error(s);
        if (failed(e))
          return failure();
        if (drop < 0 || *e < dropError) {
          drop = i;
          dropError = *e;
        }
      }
      best.erase(best.begin() + drop);
      bestError = dropError;
    }
    how = llvm::formatv("least output error on {0} calibration tokens "
                        "(output-error, greedy: more than max-subsets={1} "
                        "subsets; {2} candidates run, squared error {3:e})",
                        tokens.shape[0], int64_t(maxSubsets), evaluated,
                        bestError);
    return best;
  }

  ::moe::HostTensor tokens;
  /// calibration-inputs: the extra inputs of a layer that takes any.
  std::vector<::moe::HostTensor> extraTokens;
  bool weightError = false;
};

} // namespace
} // namespace mlir::moe
