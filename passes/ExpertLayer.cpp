//===- ExpertLayer.cpp - The routed experts of an MoE layer ---------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "ExpertLayer.h"

#include "moe/lib/Reference/Interpreter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/BuiltinAttributes.h"

#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::experts;

FailureOr<ExpertLayer> experts::findExpertLayer(func::FuncOp fn,
                                                std::string &why,
                                                bool wholeExperts) {
  why.clear();
  auto index = fn->getAttrOfType<IntegerAttr>(kLayerAttrName);
  if (!index)
    return failure();
  bool fused = false, lora = false;
  Operation *crossToken = nullptr;
  SmallVector<DispatchOp> dispatches;
  fn.walk([&](Operation *op) {
    fused |= isa<FusedRouteOp, FusedExpertsOp>(op);
    if (auto r = dyn_cast<RouterOpInterface>(op); r && r.readsOtherTokens())
      crossToken = op;
    lora |= isa<LoraMixtureOp>(op);
    if (auto d = dyn_cast<DispatchOp>(op))
      dispatches.push_back(d);
  });
  if (fused) {
    why = "the layer is fused (moe.fused_route / moe.fused_experts): run "
          "before --moe-optimize";
    return failure();
  }
  if (dispatches.empty()) {
    if (lora)
      why = "the routed experts are LoRA adapters (moe.lora_mixture), not "
            "moe.expert_ffn";
    return failure();
  }
  if (crossToken) {
    why = ("cross-token routing (" + crossToken->getName().getStringRef() +
           ") is not supported: a token's experts depend on the other "
           "tokens (expert choice, capacities, balancing, token mixing), "
           "so removing or merging experts changes every token's routing")
              .str();
    return failure();
  }
  if (dispatches.size() != 1) {
    why = llvm::formatv("the layer has {0} moe.dispatch ops; one set of "
                        "routed experts per layer is supported",
                        dispatches.size());
    return failure();
  }
  ExpertLayer layer;
  layer.fn = fn;
  layer.index = index.getInt();
  layer.dispatch = dispatches.front();
  layer.experts = layer.dispatch.getNumExperts();
  for (Operation *user : layer.dispatch.getRows().getUsers()) {
    if (auto p = dyn_cast<PermuteOp>(user))
      layer.permute = layer.permute ? PermuteOp() : p;
    if (auto c = dyn_cast<CombineOp>(user))
      layer.combine = layer.combine ? CombineOp() : c;
  }
  if (layer.permute && layer.permute->hasOneUse())
    layer.ffn = dyn_cast<ExpertFFNOp>(*layer.permute->getUsers().begin());
  if (!layer.permute || !layer.combine || !layer.ffn ||
      layer.ffn.getInput() != layer.permute.getResult() ||
      layer.ffn.getOffsets() != layer.dispatch.getOffsets() ||
      layer.combine.getInput() != layer.ffn.getResult()) {
    why = "the routed experts are not the chain moe.dispatch -> moe.permute "
          "-> moe.expert_ffn -> moe.combine";
    return failure();
  }
  if (layer.ffn.getQuantBlock() && !wholeExperts) {
    why = "the routed experts are block-quantized (quant_block); this pass "
          "rewrites f32/bf16/f16 expert weights and does not handle "
          "quantized ones yet";
    return failure();
  }
  layer.hidden =
      cast<RankedTensorType>(layer.permute.getInput().getType()).getDimSize(1);
  for (OpOperand *w : expertWeightOperands(layer.ffn)) {
    auto t = cast<RankedTensorType>(w->get().getType());
    if (!t.hasStaticShape() || t.getDimSize(0) != layer.experts) {
      why = llvm::formatv("expert weight operand #{0} of moe.expert_ffn has "
                          "type {1}; expected a static shape with {2} experts",
                          w->getOperandNumber(), t, layer.experts);
      return failure();
    }
  }
  return layer;
}

SmallVector<OpOperand *> experts::expertWeightOperands(ExpertFFNOp ffn) {
  SmallVector<OpOperand *> out;
  auto add = [&](MutableOperandRange r) {
    for (unsigned i = 0; i < r.size(); ++i)
      out.push_back(&r[i]);
  };
  add(ffn.getGateMutable());
  add(ffn.getUpMutable());
  add(ffn.getGateUpMutable());
  out.push_back(&ffn.getDownMutable());
  add(ffn.getGateBiasMutable());
  add(ffn.getUpBiasMutable());
  add(ffn.getGateUpBiasMutable());
  add(ffn.getDownBiasMutable());
  add(ffn.getGateScaleMutable());
  add(ffn.getUpScaleMutable());
  add(ffn.getGateUpScaleMutable());
  add(ffn.getDownScaleMutable());
  return out;
}

Size experts::routedExpertSize(ExpertFFNOp ffn) {
  Size s;
  for (OpOperand *w : expertWeightOperands(ffn)) {
    auto t = cast<RankedTensorType>(w->get().getType());
    s.params += t.getNumElements();
    s.bytes += t.getNumElements() * t.getElementTypeBitWidth() / 8;
  }
  return s;
}

FailureOr<std::vector<float>>
experts::weightValues(Value v, ::moe::WeightLoader &loader, std::string &why) {
  Operation *def = v.getDefiningOp();
  if (auto w = dyn_cast_or_null<WeightOp>(def)) {
    llvm::Expected<::moe::HostTensor> t = loader.load(w);
    if (!t) {
      why = llvm::toString(t.takeError());
      return failure();
    }
    return std::move(t->f);
  }
  if (auto c = dyn_cast_or_null<arith::ConstantOp>(def))
    if (auto dense = dyn_cast<DenseFPElementsAttr>(c.getValue())) {
      std::vector<float> out;
      for (APFloat f : dense.getValues<APFloat>()) {
        bool lost;
        f.convert(APFloat::IEEEsingle(), APFloat::rmNearestTiesToEven, &lost);
        out.push_back(f.convertToFloat());
      }
      return out;
    }
  why = "a weight is neither a moe.weight nor a dense float constant";
  return failure();
}

FailureOr<const ::moe::LayerProfile *>
experts::layerProfile(const ::moe::Profile &profile, StringRef path,
                      const ExpertLayer &layer, std::string &why) {
  llvm::Expected<const ::moe::LayerProfile *> lp =
      profile.layer(layer.index, path);
  if (!lp) {
    why = llvm::toString(lp.takeError());
    return failure();
  }
  if ((*lp)->experts != layer.experts) {
    why = llvm::formatv("profile '{0}': layer.{1}.expert_count has {2} "
                        "experts but the layer routes {3} (a profile of "
                        "another model, or of the model before pruning?)",
                        path, layer.index, (*lp)->experts, layer.experts);
    return failure();
  }
  if ((*lp)->hidden != 0 && (*lp)->hidden != layer.hidden) {
    why = llvm::formatv("profile '{0}': layer {1} has hidden size {2} but "
                        "the layer's is {3}",
                        path, layer.index, (*lp)->hidden, layer.hidden);
    return failure();
  }
  return *lp;
}

RankedTensorType experts::withDim(Type type, unsigned d, int64_t size) {
  auto t = cast<RankedTensorType>(type);
  SmallVector<int64_t> shape(t.getShape());
  shape[d] = size;
  return RankedTensorType::get(shape, t.getElementType());
}

void experts::setDispatchExperts(DispatchOp dispatch, int64_t n) {
  dispatch.setNumExperts(n);
  dispatch.getCounts().setType(withDim(dispatch.getCounts().getType(), 0, n));
  dispatch.getOffsets().setType(
      withDim(dispatch.getOffsets().getType(), 0, n + 1));
}

void experts::sliceExpertWidths(ExpertFFNOp ffn, ArrayRef<int64_t> kept) {
  std::optional<ArrayRef<int64_t>> widths = ffn.getWidths();
  if (!widths)
    return;
  SmallVector<int64_t> out;
  for (int64_t e : kept)
    out.push_back((*widths)[e]);
  ffn.setWidths(out);
}

StringRef experts::expertOperandName(ExpertFFNOp ffn, OpOperand *o) {
  Value v = o->get();
  if (v == ffn.getGate())
    return "gate";
  if (v == ffn.getUp())
    return "up";
  if (v == ffn.getGateUp())
    return "gate_up";
  if (v == ffn.getDown())
    return "down";
  if (v == ffn.getGateBias())
    return "gate_bias";
  if (v == ffn.getUpBias())
    return "up_bias";
  if (v == ffn.getGateUpBias())
    return "gate_up_bias";
  if (v == ffn.getDownBias())
    return "down_bias";
  if (v == ffn.getGateScale())
    return "gate_scale";
  if (v == ffn.getUpScale())
    return "up_scale";
  if (v == ffn.getGateUpScale())
    return "gate_up_scale";
  return "down_scale";
}

LogicalResult experts::rebuildExpertWeights(
    ExpertLayer &layer, ::moe::WeightLoader &loader, MakeWeight make,
    StringRef prefix, int64_t n,
    llvm::function_ref<void(StringRef, ArrayRef<float>, int64_t, int64_t,
                            float *)>
        build,
    std::string &why) {
  OpBuilder b(layer.ffn);
  for (OpOperand *o : expertWeightOperands(layer.ffn)) {
    auto type = cast<RankedTensorType>(o->get().getType());
    FailureOr<std::vector<float>> old = weightValues(o->get(), loader, why);
    if (failed(old))
      return failure();
    int64_t rest = type.getNumElements() / layer.experts;
    std::vector<float> out(n * rest);
    StringRef name = expertOperandName(layer.ffn, o);
    for (int64_t i = 0; i < n; ++i)
      build(name, *old, rest, i, out.data() + i * rest);
    FailureOr<Value> w = make(b, o->get().getLoc(), (prefix + "." + name).str(),
                              withDim(type, 0, n), out);
    if (failed(w)) {
      why =
          "cannot create the new weight '" + (prefix + "." + name).str() + "'";
      return failure();
    }
    o->set(*w);
  }
  return success();
}

std::string experts::sizeReport(StringRef pass, const ExpertLayer &layer,
                                int64_t expertsBefore, Size before,
                                Size after) {
  return llvm::formatv("{0}: layer {1}: experts {2} -> {3}, routed expert "
                       "parameters {4} -> {5}, bytes {6} -> {7}",
                       pass, layer.index, expertsBefore, layer.experts,
                       before.params, after.params, before.bytes, after.bytes);
}

LogicalResult mlir::moe::experts::rewriteLayersFromProfile(
    ModuleOp module, StringRef pass, StringRef verb, StringRef tag,
    StringRef profilePath, StringRef weightsOut, LayerRewrite rewrite,
    const bool &broken) {
  auto refuse = [&](Operation *at, const Twine &why) {
    at->emitRemark() << pass << ": " << why;
  };
  if (profilePath.empty()) {
    refuse(module, "no profile given (profile=P.safetensors, recorded by "
                   "moe-run --record-profile); nothing " + verb);
    return success();
  }
  llvm::Expected<::moe::Profile> prof = ::moe::readProfile(profilePath);
  if (!prof) {
    refuse(module, "cannot use the profile: " +
                       llvm::toString(prof.takeError()) + "; nothing " + verb);
    return success();
  }
  ::moe::WeightLoader loader(::moe::weightRoot(module, getInputIRPath(module)));
  NewWeights newWeights(module, tag, weightsOut);
  if (newWeights.path().empty())
    return module.emitError()
           << pass
           << ": the new weights need a file: give moe-opt -o FILE.mlir "
              "(they go beside it) or weights-out=FILE.safetensors";
  bool changed = false;
  for (auto fn : llvm::to_vector(module.getOps<func::FuncOp>())) {
    std::string why;
    FailureOr<ExpertLayer> layer = findExpertLayer(fn, why);
    if (failed(layer)) {
      if (!why.empty())
        refuse(fn, "layer not " + verb + ": " + why);
      continue;
    }
    if (failed(rewrite(*layer, *prof, loader, newWeights, why))) {
      refuse(fn, "layer " + Twine(layer->index) + " not " + verb + ": " + why);
      continue;
    }
    changed = true;
  }
  if (broken || (changed && failed(newWeights.commit())))
    return failure();
  return success();
}
