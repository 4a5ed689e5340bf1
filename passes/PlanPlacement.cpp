//===- PlanPlacement.cpp - Expert placement of every MoE layer ------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "LayoutInputs.h"

#include "moe/lib/Weights/AtomicFile.h"
#include "moe/passes/Passes.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <cmath>

namespace mlir::moe {
#define GEN_PASS_DEF_MOEPLANPLACEMENT
#include "moe/passes/Passes.h.inc"

namespace {

using ::moe::LayerPlacement;

/// SGLang's --init-expert-location files: rows are the model's layers 0 to
/// the last MoE layer; a layer the IR has no MoE layer for (a dense layer)
/// gets the trivial map (slot s -> expert s mod E of the first MoE layer).
std::string sglangJson(ArrayRef<LayoutLayer> layers,
                       ArrayRef<std::vector<double>> counts,
                       ArrayRef<LayerPlacement> plan, bool mapping) {
  int64_t last = layers.back().layer;
  llvm::json::Array rows;
  for (int64_t l = 0; l <= last; ++l) {
    llvm::json::Array row;
    auto it = llvm::find_if(layers,
                            [&](const LayoutLayer &x) { return x.layer == l; });
    size_t k = it == layers.end() ? 0 : it - layers.begin();
    bool moe = it != layers.end();
    if (mapping) {
      for (int64_t s = 0, n = plan[k].slots(); s < n; ++s)
        row.push_back(moe ? plan[k].slotExpert[s] : s % plan[k].experts);
    } else {
      for (double c : counts[k])
        row.push_back(moe ? c : 0.0);
    }
    rows.push_back(std::move(row));
  }
  llvm::json::Value v = llvm::json::Object{
      {mapping ? "physical_to_logical_map" : "logical_count", std::move(rows)}};
  return llvm::formatv("{0}", v).str() + "\n";
}

struct MoEPlanPlacementPass : impl::MoEPlanPlacementBase<MoEPlanPlacementPass> {
  using MoEPlanPlacementBase::MoEPlanPlacementBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fail = [&](const Twine &message) {
      module.emitError(message);
      signalPassFailure();
    };
    ::moe::PlanOptions opt;
    if (policy == "contiguous")
      opt.policy = ::moe::PlacementPolicy::Contiguous;
    else if (policy == "balanced")
      opt.policy = ::moe::PlacementPolicy::Balanced;
    else if (policy == "affinity")
      opt.policy = ::moe::PlacementPolicy::Affinity;
    else
      return fail("policy=" + policy +
                  ": expected contiguous, balanced or affinity");
    if (solver == "glpk")
      opt.solver = ::moe::AffinitySolver::Glpk;
    else if (solver == "greedy")
      opt.solver = ::moe::AffinitySolver::Greedy;
    else if (solver == "cbc")
      opt.solver = ::moe::AffinitySolver::Cbc;
    else
      return fail("solver=" + solver + ": expected glpk, cbc or greedy");
    if (!(timeLimit > 0) || timeLimit > 86400)
      return fail("time-limit=" + std::to_string(timeLimit) +
                  ": expected seconds in (0, 86400]");
    if (!(moveTolerance >= 0) || moveTolerance > 1)
      return fail("move-tolerance=" + std::to_string(moveTolerance) +
                  ": expected a fraction in [0, 1]");
    if (groups < 0)
      return fail("groups=" + std::to_string(groups) + ": expected 0 or more");
    if (!(maxBalance == 0 || (maxBalance >= 1 && maxBalance <= 1e6)))
      return fail("max-balance=" + std::to_string(maxBalance) +
                  ": expected 0 (no bound) or a ratio of at least 1");
    opt.maxBalance = maxBalance;
    opt.redundant = redundant;
    opt.groups = groups;
    opt.timeLimit = timeLimit;
    opt.moveTolerance = moveTolerance;

    FailureOr<LayoutInputs> in = readLayoutInputs(module, profile, topology);
    if (failed(in))
      return signalPassFailure();
    int64_t gpus = in->topology.gpus();
    for (const LayoutLayer &l : in->layers)
      opt.expertBytes = std::max(opt.expertBytes, l.expertBytes);

    std::vector<LayerPlacement> prev;
    if (!previous.empty()) {
      int64_t prevGpus = 0;
      auto read = ::moe::readPlacementFile(previous, &prevGpus);
      if (!read)
        return fail(toString(read.takeError()));
      if (prevGpus != gpus)
        return fail(previous + ": a placement on " + Twine(prevGpus) +
                    " GPUs, the topology has " + Twine(gpus));
      prev = std::move(*read);
      opt.previous = &prev;
    }

    ::moe::PlanStats stats;
    auto plan = ::moe::planPlacement(in->loads, in->topology, opt, &stats);
    if (!plan)
      return fail(topology + ": " + toString(plan.takeError()));

    // The contiguous placement, for the remarks (when E splits evenly).
    ::moe::PlanOptions contigOpt;
    auto contig = ::moe::planPlacement(in->loads, in->topology, contigOpt);
    if (!contig)
      llvm::consumeError(contig.takeError());

    // Files first: if one cannot be written the IR is left without
    // placements (and moe-opt writes no output).
    std::vector<std::vector<double>> counts;
    for (const ::moe::LayerLoad &l : in->loads)
      counts.push_back(l.load);
    std::pair<StringRef, std::string> files[] = {
        {out, out.empty() ? "" : ::moe::placementToJson(*plan, gpus)},
        {sglangOut,
         sglangOut.empty() ? "" : sglangJson(in->layers, counts, *plan, true)},
        {sglangCountsOut, sglangCountsOut.empty()
                              ? ""
                              : sglangJson(in->layers, counts, *plan, false)}};
    for (auto &[path, text] : files)
      if (!path.empty())
        if (llvm::Error e = ::moe::writeFileAtomically(path, text))
          return fail(toString(std::move(e)));

    module->setAttr(kPlannedModelAttr,
                    StringAttr::get(module.getContext(), in->profile.model));
    for (size_t k = 0; k < in->layers.size(); ++k) {
      const LayoutLayer &l = in->layers[k];
      const LayerPlacement &p = (*plan)[k];
      writePlacementAttrs(l, p, gpus, policy);
      const std::vector<double> &load = in->loads[k].load;
      std::string msg =
          llvm::formatv("placement {0} on {1} GPUs, {2} slots: balance {3:F4}",
                        policy, gpus, p.slots(), ::moe::balance(p, gpus, load));
      if (contig)
        msg += llvm::formatv(" (contiguous {0:F4})",
                             ::moe::balance((*contig)[k], gpus, load));
      if (k + 1 < in->layers.size() && !in->loads[k].transition.empty()) {
        double f =
            ::moe::crossGpu(p, (*plan)[k + 1], gpus, in->loads[k].transition)
                .fraction();
        msg += llvm::formatv(", cross-GPU to next layer {0:F4}", f);
        if (contig)
          msg += llvm::formatv(" (contiguous {0:F4})",
                               ::moe::crossGpu((*contig)[k], (*contig)[k + 1],
                                               gpus, in->loads[k].transition)
                                   .fraction());
      }
      // At the function's location, without the note that prints it.
      mlir::emitRemark(l.fn->getLoc(), msg);
    }
    if (opt.policy == ::moe::PlacementPolicy::Affinity) {
      std::string msg = llvm::formatv(
          "affinity: {0} ({1:F2} s); crossing weight greedy {2}, final {3}",
          stats.method, stats.solverSeconds, stats.greedyCrossing,
          stats.finalCrossing);
      // The ILP's proof: the staying weight against its proven upper bound.
      if (std::isfinite(stats.finalBound))
        msg += llvm::formatv("; staying weight {0}, proven bound {1}",
                             stats.finalObjective, stats.finalBound);
      // Each bound on its own (docs/layout.md, "Upper bounds on the
      // staying weight").
      if (std::isfinite(stats.pairBound))
        msg += llvm::formatv("; bounds: layer pairs {0}", stats.pairBound);
      if (std::isfinite(stats.spectralBound))
        msg += llvm::formatv(", eigenvalues {0} ({1:F2} s)",
                             stats.spectralBound, stats.spectralSeconds);
      mlir::emitRemark(module.getLoc(), msg);
    }
    if (opt.previous)
      mlir::emitRemark(
          module.getLoc(),
          llvm::formatv(
              "previous {0}: {1} moves against it, {2} after keeping experts "
              "in place (tolerance {3:F3})",
              previous, stats.movesBefore, stats.movesAfter,
              static_cast<double>(moveTolerance)));
  }
};

} // namespace
} // namespace mlir::moe
