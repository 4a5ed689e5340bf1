//===- ApplyPlacement.cpp - Attach a placement file to the MoE layers -----===//
//
// Part of moe-opt. The placement of a file written by --moe-plan-placement
// (out=) goes back onto the layers of a model, checked against them, so that
// a plan made once can be compiled per rank (moe-compile --placement).
//
//===----------------------------------------------------------------------===//

#include "ExpertLayer.h"
#include "LayoutInputs.h"

#include "moe/lib/Analysis/Placement.h"
#include "moe/passes/Passes.h"

#include "llvm/Support/FormatVariadic.h"

#include <map>

namespace mlir::moe {
#define GEN_PASS_DEF_MOEAPPLYPLACEMENT
#include "moe/passes/Passes.h.inc"

namespace {

using namespace experts;

struct ApplyPlacementPass
    : public impl::MoEApplyPlacementBase<ApplyPlacementPass> {
  using MoEApplyPlacementBase::MoEApplyPlacementBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fail = [&](Operation *at, const Twine &why) {
      at->emitError() << "moe-apply-placement: " << why;
      signalPassFailure();
    };
    if (placement.empty())
      return fail(module, "give placement=FILE (a placement file written by "
                          "--moe-plan-placement out=FILE)");
    int64_t gpus = 0;
    llvm::Expected<std::vector<::moe::LayerPlacement>> read =
        ::moe::readPlacementFile(placement, &gpus);
    if (!read)
      return fail(module, llvm::toString(read.takeError()));
    std::map<int64_t, const ::moe::LayerPlacement *> byLayer;
    for (const ::moe::LayerPlacement &p : *read)
      byLayer[p.layer] = &p;

    // Every layer is checked before any attribute is written.
    std::vector<std::pair<LayoutLayer, const ::moe::LayerPlacement *>> apply;
    for (auto fn : module.getOps<func::FuncOp>()) {
      std::string why;
      FailureOr<ExpertLayer> layer = findExpertLayer(fn, why, /*wholeExperts=*/true);
      if (failed(layer)) {
        if (!why.empty())
          return fail(fn, "cannot place the layer: " + why);
        continue;
      }
      auto it = byLayer.find(layer->index);
      if (it == byLayer.end())
        return fail(fn, llvm::formatv("{0} places no layer {1} (it places "
                                      "{2} layers); plan every MoE layer of "
                                      "the model",
                                      placement.getValue(), layer->index,
                                      read->size()));
      if (it->second->experts != layer->experts)
        return fail(fn, llvm::formatv("{0}: layer {1} has {2} experts in the "
                                      "file but {3} in the IR (a placement "
                                      "of another model?)",
                                      placement.getValue(), layer->index,
                                      it->second->experts, layer->experts));
      LayoutLayer ll;
      ll.fn = fn;
      ll.layer = layer->index;
      ll.experts = layer->experts;
      apply.push_back({ll, it->second});
      byLayer.erase(it);
    }
    if (!byLayer.empty())
      return fail(module,
                  llvm::formatv("{0} places layer {1}, which is not an MoE "
                                "layer of the module",
                                placement.getValue(), byLayer.begin()->first));
    if (apply.empty())
      return fail(module, "the module has no MoE layer with routed experts "
                          "to place");
    for (auto &[ll, p] : apply)
      writePlacementAttrs(ll, *p, gpus, "file");
  }
};

} // namespace
} // namespace mlir::moe
