//===- Routing.h - Facts about routings shared by verifiers and backends -===//
//
// Part of moe-opt. What the verifiers, the fusion pass, the reference
// executor and the code generator all need to know about a routing, written
// once: the range of its ids, which slots of a weight row are empty, and
// whether (and how) a moe.fused_route body becomes one routing kernel.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_ROUTING_H
#define MOE_DIALECTS_MOE_ROUTING_H

#include "mlir/IR/Block.h"
#include "mlir/IR/Value.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/SmallVector.h"

#include <optional>
#include <string>

namespace mlir::moe {

/// The range of routing ids: each is in [0, bound), or -1 (empty slot).
struct IdRange {
  int64_t bound;
  /// The op that fixes the bound (a selection or moe.drop_null_experts).
  Operation *source;
};

/// The range of `ids` when its producer is visible: a selection over N
/// candidates gives [0, N), moe.drop_null_experts [0, num_experts); the ids
/// of a moe.fused_route (or a moe.fused_experts body argument) are those of
/// the value its body yields (or of its operand).
std::optional<IdRange> getIdRange(Value ids);

/// The ids whose empty slots (-1) are the empty slots of the `[T, K]`
/// routing values `v`, when `v` is the values of a selection, possibly
/// through slot-wise ops (softmax, sigmoid, relu, normalize, scale,
/// gather_scores, drop_null_experts); null otherwise. moe.softmax and
/// moe.normalize of such a value reduce over the real slots only and give
/// the empty ones weight 0.
Value getSlotMask(Value v);

/// The slot mask a router op reads besides its operands (the mask of the
/// input of moe.softmax and moe.normalize), or null.
Value getImplicitMask(Operation *op);

/// A moe.fused_route body as the routing kernel runs it: per-token row
/// ops, at most one cross-token selection (moe.expert_choice, run by the
/// last block over every token), then per-token ops on its results.
struct RouteProgram {
  /// Router ops before the cross-token op (or all of them), body order.
  llvm::SmallVector<Operation *> perToken;
  /// The cross-token selection, if any.
  Operation *crossToken = nullptr;
  /// The moe.similarity_mix, if any (also in perToken: each token's warp
  /// mixes, recomputing the other tokens' probabilities).
  Operation *tokenMix = nullptr;
  /// Router ops that read the cross-token op's results, body order.
  llvm::SmallVector<Operation *> afterCrossToken;
  /// Values computed before the cross-token op and read after it (kept in
  /// global memory between the two phases), besides its own input.
  llvm::SmallVector<Value> carried;
};

/// Why a body cannot be generated: the op and the reason.
struct RouteMismatch {
  Operation *op;
  std::string reason;
};

/// The one matcher of moe.fused_route bodies, used by its verifier,
/// --moe-fuse-routing and the CUDA emitter: the body's program, or the op
/// the routing kernel cannot generate and why.
std::optional<RouteMismatch> matchRouteBody(Block &body,
                                            RouteProgram *program = nullptr);

/// The forms of a layer function the backends run.
enum class LayerForm {
  /// (x [T, H]) -> y [T, H']: the layer routes its tokens itself.
  Layer,
  /// (x [T, H], ids [T, K] i32, weights [T, K] f32) -> y: the routing is
  /// given by the caller (an engine's dispatch); the layer's router ops may
  /// still rewrite it (e.g. moe.remap_experts to the local experts).
  GivenRouting,
  /// `moe.role = "router"`: (x [T, H]) -> (ids [T, K] i32, weights [T, K]
  /// f32), the layer's routing only.
  Router,
  /// (x [T, H], in_1, ..., in_n) -> y: a layer with named extra inputs
  /// (every argument after x carries `moe.input = "name"`; f32 or i32
  /// tensors), e.g. GLIDER's sequence scores [B, E] and token-to-sequence
  /// map [T]. The caller gives them in argument order. Such a layer may
  /// also return extra results after y, each named by `moe.output` (e.g.
  /// RMoE's router state for the next layer): (x, in_1, ...) -> (y, out_1,
  /// ...); so may a layer without extra inputs.
  ExtraInputs,
};

/// The argument attribute naming an extra input of a layer function.
inline constexpr llvm::StringLiteral kInputAttr = "moe.input";

/// The name of argument `i` of `fn`: its `moe.input`, or "argument #i".
std::string getLayerInputName(FunctionOpInterface fn, unsigned i);

/// The result attribute naming an extra result of a layer function.
inline constexpr llvm::StringLiteral kOutputAttr = "moe.output";

/// The name of result `i` of `fn`: its `moe.output`, or "result #i".
std::string getLayerOutputName(FunctionOpInterface fn, unsigned i);

/// The extra inputs of `fn` used as a sequence map, each with the input it
/// indexes (the sequence scores of the same moe.add_sequence_scores, in
/// `fn` or in a moe.fused_route body): (map argument, scores argument)
/// pairs of argument numbers. The map has one entry per token and its
/// values must be in [0, rows of the scores).
llvm::SmallVector<std::pair<unsigned, unsigned>>
getSequenceMapArguments(FunctionOpInterface fn);

/// The attribute naming a function's role ("router" for LayerForm::Router).
inline constexpr llvm::StringLiteral kRoleAttr = "moe.role";

/// The form of `fn` from its signature and `moe.role`; on mismatch, a
/// message (naming the function) of what was expected.
std::optional<LayerForm> getLayerForm(FunctionOpInterface fn,
                                      std::string &why);

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_ROUTING_H
