//===- LayoutInputs.cpp - What the layout passes read ---------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "LayoutInputs.h"

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/passes/NewWeights.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"

#include "llvm/Support/MemoryBuffer.h"

using namespace llvm;

namespace mlir::moe {

namespace {

int64_t elementBytes(Type t) {
  return (getElementTypeOrSelf(t).getIntOrFloatBitWidth() + 7) / 8;
}

/// The file the module was parsed from, when its location names one.
std::optional<std::string> inputFile(ModuleOp module) {
  std::string name = getInputIRPath(module);
  if (name == "-")
    return std::nullopt;
  return name;
}

} // namespace

FailureOr<LayoutInputs> readLayoutInputs(ModuleOp module, StringRef profilePath,
                                         StringRef topologyPath) {
  LayoutInputs in;
  if (profilePath.empty())
    return module.emitError("the option profile=P (a calibration profile, "
                            "moe-run --record-profile) is required"),
           failure();
  if (topologyPath.empty())
    return module.emitError("the option topology=T (a topology file, "
                            "docs/layout.md) is required"),
           failure();
  Expected<::moe::Profile> profile = ::moe::readProfile(profilePath);
  if (!profile)
    return module.emitError(toString(profile.takeError())), failure();
  in.profile = std::move(*profile);
  Expected<::moe::Topology> topo = ::moe::readTopology(topologyPath);
  if (!topo)
    return module.emitError(toString(topo.takeError())), failure();
  in.topology = std::move(*topo);

  // The model identity: the SHA-256 of the IR file the profile was recorded
  // on. When the input file is not known (stdin), the layers and expert
  // counts are all that can be compared.
  // A module placed by --moe-plan-placement carries the identity of the
  // model it was planned for (its own text differs by the attributes).
  auto planned = module->getAttrOfType<StringAttr>(kPlannedModelAttr);
  if (planned && planned.getValue() != in.profile.model)
    return module.emitError()
               << profilePath << ": profile of another model: it was "
               << "recorded on model " << in.profile.model
               << ", the placement was planned for model " << planned.getValue()
               << " (" << kPlannedModelAttr << ")",
           failure();
  if (planned) {
    // Checked above.
  } else if (std::optional<std::string> file = inputFile(module)) {
    ErrorOr<std::unique_ptr<MemoryBuffer>> bytes =
        MemoryBuffer::getFile(*file, /*IsText=*/false);
    if (bytes) {
      std::string hash = ::moe::profileModelHash((*bytes)->getBuffer());
      if (hash != in.profile.model)
        return module.emitError()
                   << profilePath << ": profile of another model: it was "
                   << "recorded on model " << in.profile.model << ", the input "
                   << *file << " hashes to " << hash
                   << " (docs/profile.md, model identity)",
               failure();
    }
  } else {
    module.emitWarning() << "the input IR file is not known (stdin): the "
                            "profile's model identity is not checked, only "
                            "its layers and expert counts";
  }

  for (auto fn : module.getOps<func::FuncOp>()) {
    auto layerAttr = fn->getAttrOfType<IntegerAttr>(kLayerAttrName);
    if (!layerAttr)
      continue;
    LayoutLayer l;
    l.fn = fn;
    l.layer = layerAttr.getInt();
    SmallVector<int64_t> dispatched;
    fn.walk([&](Operation *op) {
      if (auto d = dyn_cast<DispatchOp>(op))
        dispatched.push_back(d.getNumExperts());
      else if (auto r = dyn_cast<FusedRouteOp>(op))
        dispatched.push_back(r.getNumExperts());
    });
    if (dispatched.empty()) {
      // No routed experts (a LoRA mixture): nothing to place.
      if (in.profile.layers.count(l.layer))
        return fn.emitError() << "layer " << l.layer
                              << " has no routed experts but the profile "
                              << profilePath << " has statistics for it",
               failure();
      continue;
    }
    if (dispatched.size() > 1)
      return fn.emitError() << "layer " << l.layer << " dispatches experts "
                            << dispatched.size()
                            << " times (several routers): one placement "
                               "per layer cannot serve them",
             failure();
    l.experts = dispatched.front();
    if (fn.getNumArguments() < 1)
      return fn.emitError("an MoE layer function takes the tokens"), failure();
    auto input = dyn_cast<RankedTensorType>(fn.getArgument(0).getType());
    if (!input || input.getRank() != 2 || input.isDynamicDim(1))
      return fn.emitError("the layer's input must be a tensor [T, H] of "
                          "static H"),
             failure();
    l.hidden = input.getDimSize(1);
    l.activationBytes = elementBytes(input);
    double bytes = 0, flopParams = 0;
    fn.walk([&](ExpertFFNOp ffn) {
      double stacked = 0;
      for (Value w : ffn->getOperands().drop_front(2)) {
        auto t = dyn_cast<ShapedType>(w.getType());
        if (!t || !t.hasStaticShape())
          continue;
        stacked += static_cast<double>(t.getNumElements());
        bytes += static_cast<double>(t.getNumElements()) * elementBytes(t);
      }
      // Experts of unequal width compute their own width only: the mean
      // width over the stacked one (the padding is stored, not computed).
      double share = 1.0;
      if (std::optional<ArrayRef<int64_t>> widths = ffn.getWidths()) {
        auto down = cast<ShapedType>(ffn.getDown().getType());
        int64_t inter = ffn.getWeightLayout() == WeightLayout::out_in
                            ? down.getDimSize(2)
                            : down.getDimSize(1);
        double sum = 0;
        for (int64_t w : *widths)
          sum += static_cast<double>(w);
        if (!widths->empty() && inter > 0)
          share = sum / static_cast<double>(widths->size()) /
                  static_cast<double>(inter);
      }
      flopParams += stacked * share;
    });
    l.expertBytes = bytes / static_cast<double>(l.experts);
    l.slotFlops = 2.0 * flopParams / static_cast<double>(l.experts);

    auto it = in.profile.layers.find(l.layer);
    if (it == in.profile.layers.end())
      return fn.emitError()
                 << profilePath << ": the profile has no layer " << l.layer
                 << " (it holds " << in.profile.layers.size() << " layers)",
             failure();
    if (it->second.experts != l.experts)
      return fn.emitError() << profilePath << ": layer " << l.layer
                            << " of the profile has " << it->second.experts
                            << " experts, the IR " << l.experts,
             failure();
    in.layers.push_back(l);
  }
  if (in.layers.empty())
    return module.emitError("no MoE layer with routed experts (func.func "
                            "with moe.layer and a moe.dispatch or "
                            "moe.fused_route)"),
           failure();
  if (in.layers.size() != in.profile.layers.size())
    return module.emitError()
               << profilePath << ": the profile has "
               << in.profile.layers.size() << " layers, the IR "
               << in.layers.size() << " MoE layers with routed experts",
           failure();
  std::stable_sort(in.layers.begin(), in.layers.end(),
                   [](const LayoutLayer &a, const LayoutLayer &b) {
                     return a.layer < b.layer;
                   });
  for (size_t k = 0; k < in.layers.size(); ++k) {
    const ::moe::LayerProfile &p = in.profile.layers.at(in.layers[k].layer);
    ::moe::LayerLoad load;
    load.layer = in.layers[k].layer;
    load.load = p.expertCount;
    if (k + 1 < in.layers.size() && p.nextExperts == in.layers[k + 1].experts)
      load.transition = p.transition;
    in.loads.push_back(std::move(load));
  }
  return in;
}

FailureOr<std::optional<::moe::LayerPlacement>>
readPlacementAttrs(const LayoutLayer &layer, int64_t gpus) {
  func::FuncOp fn = layer.fn;
  auto experts = fn->getAttrOfType<DenseI64ArrayAttr>(kSlotExpertAttr);
  auto slotGpu = fn->getAttrOfType<DenseI64ArrayAttr>(kSlotGpuAttr);
  auto gpusAttr = fn->getAttrOfType<IntegerAttr>(kGpusAttr);
  if (!experts && !slotGpu && !gpusAttr)
    return std::optional<::moe::LayerPlacement>();
  if (!experts || !slotGpu || !gpusAttr)
    return fn.emitError() << "a placement needs the three attributes "
                          << kSlotExpertAttr << ", " << kSlotGpuAttr << " and "
                          << kGpusAttr,
           failure();
  if (gpusAttr.getInt() != gpus)
    return fn.emitError() << kGpusAttr << " is " << gpusAttr.getInt()
                          << " but the topology has " << gpus << " GPUs",
           failure();
  ::moe::LayerPlacement p;
  p.layer = layer.layer;
  p.experts = layer.experts;
  p.slotExpert.assign(experts.asArrayRef().begin(), experts.asArrayRef().end());
  p.slotGpu.assign(slotGpu.asArrayRef().begin(), slotGpu.asArrayRef().end());
  std::string what = ("placement of @" + fn.getSymName()).str();
  if (Error e = ::moe::validatePlacement(p, gpus, what))
    return fn.emitError(toString(std::move(e))), failure();
  return std::optional<::moe::LayerPlacement>(std::move(p));
}

void writePlacementAttrs(const LayoutLayer &layer,
                         const ::moe::LayerPlacement &p, int64_t gpus,
                         StringRef policy) {
  func::FuncOp fn = layer.fn;
  Builder b(fn.getContext());
  fn->setAttr(kSlotExpertAttr, b.getDenseI64ArrayAttr(p.slotExpert));
  fn->setAttr(kSlotGpuAttr, b.getDenseI64ArrayAttr(p.slotGpu));
  fn->setAttr(kGpusAttr, b.getI64IntegerAttr(gpus));
  fn->setAttr(kPolicyAttr, b.getStringAttr(policy));
}

} // namespace mlir::moe
