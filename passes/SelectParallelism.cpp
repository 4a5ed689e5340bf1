//===- SelectParallelism.cpp - Parallel layout of each MoE layer ----------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "LayoutInputs.h"

#include "moe/passes/Passes.h"

#include "llvm/Support/FormatVariadic.h"

#include <numeric>

namespace mlir::moe {
#define GEN_PASS_DEF_MOESELECTPARALLELISM
#include "moe/passes/Passes.h.inc"

namespace {

/// Seconds for one GPU to move `bytes` spread evenly over its G - 1 peers
/// (in G - 1 messages): each peer's share at that link's bandwidth.
double spreadSeconds(const ::moe::Topology &t, double bytes) {
  int64_t gpus = t.gpus();
  if (gpus == 1 || bytes <= 0)
    return 0;
  double worst = 0;
  for (int64_t r = 0; r < gpus; ++r) {
    double s = 0;
    for (int64_t g = 0; g < gpus; ++g)
      if (g != r)
        s += t.latency(r, g) +
             bytes / static_cast<double>(gpus - 1) / t.bandwidth(r, g);
    worst = std::max(worst, s);
  }
  return worst;
}

struct MoESelectParallelismPass
    : impl::MoESelectParallelismBase<MoESelectParallelismPass> {
  using MoESelectParallelismBase::MoESelectParallelismBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (tokens < 0) {
      module.emitError("tokens=" + std::to_string(tokens) +
                       ": expected 0 (the profile's) or more");
      return signalPassFailure();
    }
    FailureOr<LayoutInputs> in = readLayoutInputs(module, profile, topology);
    if (failed(in))
      return signalPassFailure();
    const ::moe::Topology &topo = in->topology;
    int64_t gpus = topo.gpus();
    double g = static_cast<double>(gpus);
    double T = static_cast<double>(tokens ? tokens : in->profile.tokens);
    double profTokens = std::max<double>(1.0, in->profile.tokens);

    for (size_t k = 0; k < in->layers.size(); ++k) {
      const LayoutLayer &l = in->layers[k];
      const std::vector<double> &count = in->loads[k].load;
      auto placed = readPlacementAttrs(l, gpus);
      if (failed(placed))
        return signalPassFailure();
      ::moe::LayerPlacement p;
      if (*placed) {
        p = std::move(**placed);
      } else {
        auto contig = ::moe::planPlacement(in->loads[k], topo, {});
        if (!contig) {
          module.emitError(toString(contig.takeError()));
          return signalPassFailure();
        }
        p = std::move((*contig)[0]);
      }
      double slots = std::accumulate(count.begin(), count.end(), 0.0);
      double K = slots / profTokens; // routed slots per token
      double row = static_cast<double>(l.hidden * l.activationBytes);
      double work = T * K * l.slotFlops / g / topo.gpuFlops;
      double imbalance = ::moe::balance(p, gpus, count);

      // Bytes one GPU sends per step.
      double epBytes = 2.0 * T / g * K * row * (g - 1) / g;
      double shardBytes = 2.0 * T / g * row * (g - 1);
      double weightBytes = static_cast<double>(l.experts) * l.expertBytes;
      double repBytes = weightBytes / g * (g - 1);
      double ep = 2 * spreadSeconds(topo, epBytes / 2) + imbalance * work;
      double shard = 2 * spreadSeconds(topo, shardBytes / 2) + work;
      bool fits = weightBytes <= topo.hbmBytes;
      double rep = spreadSeconds(topo, repBytes) + work;

      StringRef choice = "expert_parallel";
      double best = ep;
      if (shard < best) {
        choice = "sharded";
        best = shard;
      }
      if (fits && rep < best)
        choice = "replicated";

      Builder b(module.getContext());
      SmallVector<NamedAttribute> fields = {
          b.getNamedAttr("choice", b.getStringAttr(choice)),
          b.getNamedAttr("expert_parallel_seconds", b.getF64FloatAttr(ep)),
          b.getNamedAttr("sharded_seconds", b.getF64FloatAttr(shard)),
          b.getNamedAttr("token_bytes", b.getF64FloatAttr(epBytes)),
          b.getNamedAttr("weight_bytes", b.getF64FloatAttr(repBytes))};
      if (fits)
        fields.push_back(
            b.getNamedAttr("replicated_seconds", b.getF64FloatAttr(rep)));
      l.fn->setAttr("moe.parallelism", b.getDictionaryAttr(fields));
      std::string repText =
          fits ? llvm::formatv("{0:e}", rep).str()
               : llvm::formatv("does not fit ({0} > hbm_bytes {1})",
                               weightBytes, topo.hbmBytes)
                     .str();
      mlir::emitRemark(
          l.fn->getLoc(),
          llvm::formatv("parallelism {0} at {1} tokens: expert-parallel "
                        "{2:e} s (token bytes {3} per GPU, balance {4:F4}), "
                        "sharded {5:e} s, replicated {6} (weight bytes {7} "
                        "per GPU)",
                        choice, T, ep, epBytes, imbalance, shard,
                        fits ? repText + " s" : repText, repBytes));
    }
  }
};

} // namespace
} // namespace mlir::moe
