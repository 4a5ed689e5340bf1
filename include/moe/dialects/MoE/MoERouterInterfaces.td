//===- MoERouterInterfaces.td - Kinds of router ops --------*- tablegen -*-===//
//
// Part of moe-opt. The router ops (scoring, selection, weight
// post-processing) carry RouterOpInterface, so that the fusion pass, the
// reference executor and the code generator ask the op for its kind instead
// of keeping their own lists; selections also carry SelectionOpInterface,
// which says the range of the ids they produce.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ROUTER_INTERFACES_TD
#define MOE_ROUTER_INTERFACES_TD

include "mlir/IR/OpBase.td"

def MoE_CrossTokenOpInterface : OpInterface<"CrossTokenOpInterface"> {
  let cppNamespace = "::mlir::moe";
  let description = [{
    A router op whose result for a token depends on the rows of other
    tokens of the batch (expert choice, capacity limits, Sinkhorn
    balancing). The routing kernel runs it once over the whole batch: every
    token's warp stores the op's row operands to global memory (phase 1),
    the last block to finish runs the op block-wide over all tokens and
    then the router ops that follow it, token by token (phase 2, before the
    dispatch plan). At most one such op per router.
  }];
  let methods = [
    InterfaceMethod<[{
        The operands read as rows of every token (each `[T, n]`), which the
        routing kernel keeps in global memory until the last block runs the
        op; all operands unless the op says otherwise.
      }], "::mlir::OperandRange", "getTokenRowOperands", (ins), [{}],
      [{ return $_op->getOperands(); }]>,
  ];
}

def MoE_RouterOpInterface : OpInterface<"RouterOpInterface"> {
  let cppNamespace = "::mlir::moe";
  let description = [{
    An op a router is composed of: scoring, selection or weight
    post-processing. `--moe-fuse-routing` moves these ops into the body of a
    `moe.fused_route`, and the routing kernel has a row template for each.
    A router op computes a token's row from that token's rows only, unless
    it is a cross-token op (`CrossTokenOpInterface`, `readsOtherTokens`).
  }];
  let methods = [
    InterfaceMethod<[{
        Whether a token's result depends on other tokens' rows: true for
        the ops with `CrossTokenOpInterface` (expert choice ranks the
        tokens of each expert).
      }], "bool", "readsOtherTokens", (ins), [{}],
      [{ return ::llvm::isa<::mlir::moe::CrossTokenOpInterface>(
             $_op.getOperation()); }]>,
  ];
}

def MoE_SelectionOpInterface : OpInterface<"SelectionOpInterface"> {
  let cppNamespace = "::mlir::moe";
  let description = [{
    A selection: from scores `[T, N]` it produces `ids : [T, K]` in
    `[0, N)` (or -1 for an empty slot) and their `values : [T, K]`.
    Consumers of the ids check their own bounds against `getCandidateCount`
    when the selection is visible.
  }];
  let methods = [
    InterfaceMethod<"The scores the selection chooses from.", "::mlir::Value",
      "getSelectionScores", (ins), [{}],
      [{ return $_op->getOperand(0); }]>,
    InterfaceMethod<"The selected ids (-1: empty slot).", "::mlir::Value",
      "getSelectedIds", (ins), [{}], [{ return $_op->getResult(0); }]>,
    InterfaceMethod<"The values of the selected slots (0 when empty).",
      "::mlir::Value", "getSelectedValues", (ins), [{}],
      [{ return $_op->getResult(1); }]>,
    InterfaceMethod<[{
        The number of candidates N (dimension 1 of the scores): every id is
        in [0, N). Dynamic (ShapedType::kDynamic) when the scores' width is.
      }], "int64_t", "getCandidateCount", (ins), [{}], [{
        return ::llvm::cast<::mlir::RankedTensorType>(
            $_op->getOperand(0).getType()).getDimSize(1);
      }]>,
    InterfaceMethod<[{
        Whether slot s of the result is candidate s (expert choice: one slot
        per expert), so that the values are per-expert scores another
        selection may read. Otherwise slots are in selection order and a
        selection over the values would return slot numbers as ids (the
        verifiers reject that).
      }], "bool", "slotsAreCandidates", (ins), [{}], [{ return false; }]>,
  ];
}

#endif // MOE_ROUTER_INTERFACES_TD
