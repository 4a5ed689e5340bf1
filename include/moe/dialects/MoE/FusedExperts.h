//===- FusedExperts.h - What a moe.fused_experts body computes --*- C++ -*-===//
//
// Part of moe-opt. The one matcher of moe.fused_experts bodies, shared by
// the op's verifier, --moe-fuse-experts and the CUDA emitter: it reads the
// body's dataflow into the form the expert kernels implement, or names the
// op they cannot generate and why. Every op of an accepted body is a field
// of FusedExpertsBody (or a weight it reads), so a consumer that uses every
// field generates everything the body computes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_FUSEDEXPERTS_H
#define MOE_DIALECTS_MOE_FUSEDEXPERTS_H

#include "moe/dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include <string>

namespace mlir::moe {

/// Unit attribute of a moe.fused_experts: its FP8 weights run on FP8 tensor
/// cores with activations quantized on the fly (--moe-fuse-experts
/// fp8-activations; docs/codegen.md, "Quantized experts").
inline constexpr llvm::StringLiteral kFp8ActivationsAttrName =
    "moe.fp8_activations";

/// An accepted body:
///   y = combine(expert_ffn(permute(x, rows, w), offsets), rows, w)
///   [ + ffn(x) [ row_scale by sigmoid(router_linear(x, wg [bias bg])) ] ]
/// with the sum's operands in either order; each weight of the routed
/// experts' gate, up, gate_up and down may be moe.low_rank(a, b) of two
/// weights (gated experts only). Either FFN may be non_gated.
struct FusedExpertsBody {
  PermuteOp permute;
  ExpertFFNOp routed;
  CombineOp combine;
  /// Shared experts, and the sum that adds them (null without).
  FFNOp shared;
  arith::AddFOp sum;
  /// The shared experts' gate (null without): row_scale(shared, sigmoid(
  /// router_linear(x, weight [bias bias]))).
  RowScaleOp sharedScale;
  SigmoidOp sharedSigmoid;
  RouterLinearOp sharedGate;
  /// Factored routed weights (null when the projection is a plain weight):
  /// moe.low_rank(a, b) of two weights as the gate, up, gate_up or down
  /// operand of `routed`.
  LowRankOp routedGate, routedUp, routedGateUp, routedDown;
  bool hasFactoredWeights() const {
    return routedGate || routedUp || routedGateUp || routedDown;
  }
};

/// Why a body was refused: the op that cannot be generated (the body's
/// owner when the body itself is malformed) and a sentence saying why.
struct FusedExpertsRefusal {
  Operation *op = nullptr;
  std::string reason;
};

/// Matches the body of a moe.fused_experts (its block takes x, ids,
/// weights, rows and offsets, the op's operands). Weights must be moe.weight
/// or float arith.constant ops of the body; any other op that is not one of
/// the fields above, or that is but sits elsewhere in the dataflow, is
/// refused.
FailureOr<FusedExpertsBody> matchFusedExpertsBody(Block &body,
                                                  FusedExpertsRefusal &refusal);

/// The op kinds an accepted body may hold (the fields' kinds, moe.weight,
/// arith.constant and moe.yield): every other registered op is refused by
/// name. For tests that walk the dialect's op list.
ArrayRef<StringRef> fusedExpertsBodyOpNames();

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_FUSEDEXPERTS_H
