//===- SimulateLayout.cpp - Cost of an expert placement -------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "LayoutInputs.h"

#include "moe/lib/Weights/AtomicFile.h"
#include "moe/passes/Passes.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <numeric>

namespace mlir::moe {
#define GEN_PASS_DEF_MOESIMULATELAYOUT
#include "moe/passes/Passes.h.inc"

namespace {

using ::moe::LayerPlacement;

/// share[e * gpus + g]: the fraction of expert e's tokens served on GPU g.
std::vector<double> sharesOf(const LayerPlacement &p, int64_t gpus) {
  std::vector<int64_t> counts = p.replicaCounts();
  std::vector<double> s(p.experts * gpus, 0.0);
  for (int64_t k = 0; k < p.slots(); ++k)
    s[p.slotExpert[k] * gpus + p.slotGpu[k]] +=
        1.0 / static_cast<double>(counts[p.slotExpert[k]]);
  return s;
}

/// The slowest sender's time for `bytes[from * gpus + to]`: each message
/// pays its link's latency and bytes / bandwidth, a GPU's sends in sequence.
double exchangeSeconds(const ::moe::Topology &t, ArrayRef<double> bytes,
                       bool transpose) {
  int64_t gpus = t.gpus();
  double worst = 0;
  for (int64_t r = 0; r < gpus; ++r) {
    double sum = 0;
    for (int64_t g = 0; g < gpus; ++g) {
      double b = transpose ? bytes[g * gpus + r] : bytes[r * gpus + g];
      if (g == r || b <= 0)
        continue;
      sum += t.latency(r, g) + b / t.bandwidth(r, g);
    }
    worst = std::max(worst, sum);
  }
  return worst;
}

struct MoESimulateLayoutPass
    : impl::MoESimulateLayoutBase<MoESimulateLayoutPass> {
  using MoESimulateLayoutBase::MoESimulateLayoutBase;

  void runOnOperation() override {
    markAllAnalysesPreserved();
    ModuleOp module = getOperation();
    if (report.empty()) {
      module.emitError("the option report=FILE.json is required");
      return signalPassFailure();
    }
    FailureOr<LayoutInputs> in = readLayoutInputs(module, profile, topology);
    if (failed(in))
      return signalPassFailure();
    const ::moe::Topology &topo = in->topology;
    int64_t gpus = topo.gpus();

    // The placements: attached by --moe-plan-placement on every layer, or
    // on none (then contiguous).
    std::vector<LayerPlacement> plan;
    size_t attached = 0;
    for (const LayoutLayer &l : in->layers) {
      auto p = readPlacementAttrs(l, gpus);
      if (failed(p))
        return signalPassFailure();
      if (*p) {
        ++attached;
        plan.push_back(std::move(**p));
      } else {
        plan.emplace_back();
      }
    }
    if (attached != 0 && attached != in->layers.size()) {
      module.emitError() << attached << " of " << in->layers.size()
                         << " MoE layers carry a placement: every layer "
                            "needs one, or none (contiguous)";
      return signalPassFailure();
    }
    if (attached == 0) {
      auto contig = ::moe::planPlacement(in->loads, topo, {});
      if (!contig) {
        module.emitError() << "no placement attached and the contiguous one "
                              "does not fit: "
                           << toString(contig.takeError());
        return signalPassFailure();
      }
      plan = std::move(*contig);
    }

    llvm::json::Array layersJson;
    double balanceSum = 0, intraTotal = 0, interTotal = 0, stepTotal = 0;
    ::moe::Crossing crossTotal;
    for (size_t k = 0; k < plan.size(); ++k) {
      const LayoutLayer &l = in->layers[k];
      const LayerPlacement &p = plan[k];
      const std::vector<double> &count = in->loads[k].load;
      std::vector<double> loads = ::moe::gpuLoads(p, gpus, count);
      double bal = ::moe::balance(p, gpus, count);
      balanceSum += bal;

      // Where each expert's tokens come from: the GPUs of their experts in
      // the previous layer (through the transition counts), else evenly
      // from every GPU (data-parallel attention before the first layer).
      std::vector<double> share = sharesOf(p, gpus);
      std::vector<double> origin(p.experts * gpus, 1.0 / gpus);
      if (k > 0 && !in->loads[k - 1].transition.empty()) {
        const std::vector<double> &t = in->loads[k - 1].transition;
        std::vector<double> prevShare = sharesOf(plan[k - 1], gpus);
        for (int64_t j = 0; j < p.experts; ++j) {
          double sum = 0;
          std::vector<double> o(gpus, 0.0);
          for (int64_t i = 0; i < plan[k - 1].experts; ++i) {
            double w = t[i * p.experts + j];
            sum += w;
            for (int64_t g = 0; g < gpus; ++g)
              o[g] += w * prevShare[i * gpus + g];
          }
          if (sum > 0)
            for (int64_t g = 0; g < gpus; ++g)
              origin[j * gpus + g] = o[g] / sum;
        }
      }
      double rowBytes = static_cast<double>(l.hidden * l.activationBytes);
      std::vector<double> bytes(gpus * gpus, 0.0);
      for (int64_t j = 0; j < p.experts; ++j)
        for (int64_t r = 0; r < gpus; ++r)
          for (int64_t g = 0; g < gpus; ++g)
            if (r != g)
              bytes[r * gpus + g] += count[j] * origin[j * gpus + r] *
                                     share[j * gpus + g] * rowBytes;
      double intra = 0, inter = 0;
      for (int64_t r = 0; r < gpus; ++r)
        for (int64_t g = 0; g < gpus; ++g)
          (topo.nodeOf(r) == topo.nodeOf(g) ? intra : inter) +=
              bytes[r * gpus + g];
      // Dispatch and combine move the same rows, there and back.
      intra *= 2;
      inter *= 2;
      intraTotal += intra;
      interTotal += inter;
      double dispatchS = exchangeSeconds(topo, bytes, false);
      double combineS = exchangeSeconds(topo, bytes, true);
      double computeS = *std::max_element(loads.begin(), loads.end()) *
                        l.slotFlops / topo.gpuFlops;
      double step = dispatchS + computeS + combineS;
      stepTotal += step;

      llvm::json::Object o{{"layer", l.layer},
                           {"experts", p.experts},
                           {"slots", p.slots()},
                           {"balance", bal},
                           {"gpu_load", llvm::json::Array(loads)},
                           {"all_to_all_bytes_intra_node", intra},
                           {"all_to_all_bytes_inter_node", inter},
                           {"dispatch_seconds", dispatchS},
                           {"expert_seconds", computeS},
                           {"combine_seconds", combineS},
                           {"step_seconds", step}};
      std::string crossText = "-";
      if (k + 1 < plan.size() && !in->loads[k].transition.empty()) {
        ::moe::Crossing c =
            ::moe::crossGpu(p, plan[k + 1], gpus, in->loads[k].transition);
        crossTotal.crossing += c.crossing;
        crossTotal.total += c.total;
        o["cross_gpu_fraction_to_next"] = c.fraction();
        crossText = llvm::formatv("{0:F4}", c.fraction()).str();
      } else {
        o["cross_gpu_fraction_to_next"] = nullptr;
      }
      layersJson.push_back(std::move(o));
      llvm::errs() << llvm::formatv(
          "moe-simulate-layout: layer {0}: balance {1:F4}, all-to-all bytes "
          "intra {2} inter {3}, cross-GPU to next {4}, step {5:e} s\n",
          l.layer, bal, intra, inter, crossText, step);
    }
    double meanBalance = balanceSum / static_cast<double>(plan.size());
    llvm::json::Value doc = llvm::json::Object{
        {"format", "moe-layout-report"},
        {"version", 1},
        {"gpus", gpus},
        {"nodes", topo.nodes},
        {"tokens", in->profile.tokens},
        {"placement", attached ? "attached" : "contiguous"},
        {"layers", std::move(layersJson)},
        {"total",
         llvm::json::Object{{"balance", meanBalance},
                            {"all_to_all_bytes_intra_node", intraTotal},
                            {"all_to_all_bytes_inter_node", interTotal},
                            {"cross_gpu_fraction",
                             crossTotal.total > 0
                                 ? llvm::json::Value(crossTotal.fraction())
                                 : llvm::json::Value(nullptr)},
                            {"step_seconds", stepTotal}}}};
    // "-" where the profile has no transitions (the report's null).
    std::string crossTotalText =
        crossTotal.total > 0
            ? llvm::formatv("{0:F4}", crossTotal.fraction()).str()
            : std::string("-");
    llvm::errs() << llvm::formatv(
        "moe-simulate-layout: total: balance {0:F4}, all-to-all bytes intra "
        "{1} inter {2}, cross-GPU {3}, step {4:e} s\n",
        meanBalance, intraTotal, interTotal, crossTotalText, stepTotal);
    if (llvm::Error e = ::moe::writeFileAtomically(
            report, llvm::formatv("{0:2}", doc).str() + "\n")) {
      module.emitError(toString(std::move(e)));
      return signalPassFailure();
    }
  }
};

} // namespace
} // namespace mlir::moe
