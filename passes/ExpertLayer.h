//===- ExpertLayer.h - The routed experts of an MoE layer -------*- C++ -*-===//
//
// Part of moe-opt. What --moe-prune-experts and --moe-merge-experts share:
// finding a layer's routed experts (dispatch -> permute -> expert_ffn ->
// combine), reading weight values, checking the profile against the layer
// and reporting sizes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_EXPERTLAYER_H
#define MOE_PASSES_EXPERTLAYER_H

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/lib/Analysis/Profile.h"
#include "moe/passes/NewWeights.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include "llvm/ADT/STLFunctionalExtras.h"

#include <string>
#include <vector>

namespace moe {
class WeightLoader;
} // namespace moe

namespace mlir::moe::experts {

/// The routed experts of one layer function, unfused.
struct ExpertLayer {
  func::FuncOp fn;
  int64_t index = -1;
  DispatchOp dispatch;
  PermuteOp permute;
  ExpertFFNOp ffn;
  CombineOp combine;
  /// Routed experts E (moe.dispatch num_experts) and hidden width H.
  int64_t experts = 0, hidden = 0;
};

/// The routed experts of `fn`. On failure `why` says why the layer cannot be
/// rewritten, or is empty when `fn` is not an MoE layer with routed experts
/// (nothing to do). Block-quantized experts (quant_block) are refused unless
/// `wholeExperts` is set: a pass that only keeps or reorders whole experts
/// (placement, a rank's share) moves each expert's codes and scales as they
/// are, where one that computes new values (prune, merge) would need them
/// dequantized.
FailureOr<ExpertLayer> findExpertLayer(func::FuncOp fn, std::string &why,
                                       bool wholeExperts = false);

/// The expert FFN's operands that carry the leading expert dimension:
/// weights, biases and block scales.
SmallVector<OpOperand *> expertWeightOperands(ExpertFFNOp ffn);

/// The name of an expert weight operand of `ffn` ("gate", "up", "gate_up",
/// "down", their biases "gate_bias", ... or scales "gate_scale", ...): the
/// last part of the names of the new weights that replace it.
StringRef expertOperandName(ExpertFFNOp ffn, OpOperand *o);

/// Parameters and bytes of the routed experts.
struct Size {
  int64_t params = 0, bytes = 0;
};
Size routedExpertSize(ExpertFFNOp ffn);

/// The values of a weight: a moe.weight (through `loader`) or a float
/// arith.constant; else failure with `why`.
FailureOr<std::vector<float>> weightValues(Value v, ::moe::WeightLoader &loader,
                                           std::string &why);

/// The profile's statistics of the layer, checked against it (expert count
/// and hidden width); failure names the profile file and the tensor.
FailureOr<const ::moe::LayerProfile *>
layerProfile(const ::moe::Profile &profile, StringRef path,
             const ExpertLayer &layer, std::string &why);

/// Makes a weight value holding `values` (the pass: NewWeights::add; the
/// output-error search: weights held in memory).
using MakeWeight = llvm::function_ref<FailureOr<Value>(
    OpBuilder &, Location, StringRef name, RankedTensorType,
    ArrayRef<float> values)>;

/// `type` with dimension `d` set to `size`.
RankedTensorType withDim(Type type, unsigned d, int64_t size);

/// Sets the dispatch's expert count; its counts and offsets follow.
void setDispatchExperts(DispatchOp dispatch, int64_t n);

/// Keeps the `widths` of the experts `kept` (in that order) on `ffn`, whose
/// stacked weights were rebuilt from the same selection; no-op without
/// widths.
void sliceExpertWidths(ExpertFFNOp ffn, ArrayRef<int64_t> kept);

/// Replaces every expert weight operand of the FFN by a new weight whose
/// expert `i` is `build(operand values, rest, i)` for `n` experts (`rest`:
/// the elements of one expert's slice). Names are `<prefix>.<operand>`.
LogicalResult rebuildExpertWeights(
    ExpertLayer &layer, ::moe::WeightLoader &loader, MakeWeight make,
    StringRef prefix, int64_t n,
    llvm::function_ref<void(StringRef operand, ArrayRef<float> old,
                            int64_t rest, int64_t expert, float *out)>
        build,
    std::string &why);

/// A rewrite of one layer's routed experts; on failure `why` says why the
/// layer is left unchanged.
using LayerRewrite = llvm::function_ref<LogicalResult(
    ExpertLayer &layer, const ::moe::Profile &profile,
    ::moe::WeightLoader &loader, NewWeights &newWeights, std::string &why)>;

/// The driver both passes share: reads the profile at `profilePath`
/// (absent or unreadable: a remark, nothing rewritten), opens the input's
/// weights and the new weights' file (`tag`, `weightsOut`), calls `rewrite`
/// on every MoE layer (a remark for each layer it refuses) and writes the
/// new weights. Remarks and errors start with `pass:`; `verb` ("pruned")
/// words them. Fails when the pass must: no file for the new weights, a
/// failed write, or `broken` set by `rewrite` (a layer half rewritten).
LogicalResult rewriteLayersFromProfile(ModuleOp module, StringRef pass,
                                       StringRef verb, StringRef tag,
                                       StringRef profilePath,
                                       StringRef weightsOut,
                                       LayerRewrite rewrite,
                                       const bool &broken);

/// The remark line both passes print per layer.
std::string sizeReport(StringRef pass, const ExpertLayer &layer,
                       int64_t expertsBefore, Size before, Size after);

} // namespace mlir::moe::experts

#endif // MOE_PASSES_EXPERTLAYER_H
