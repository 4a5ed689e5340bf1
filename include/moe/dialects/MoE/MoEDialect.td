//===- MoEDialect.td - The moe dialect ---------------------*- tablegen -*-===//
//
// Part of moe-opt. The dialect definition and the base class of its ops.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_TD
#define MOE_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Mixture-of-Experts layers and LoRA mixtures";
  let description = [{
    The `moe` dialect describes Mixture-of-Experts (MoE) layers and mixtures of
    LoRA experts as a composition of small operations on ranked tensors:

    * **router scoring**: `moe.router_linear` (x Wgᵀ + b, always in f32),
      then row-wise `moe.softmax`, `moe.sigmoid`, `moe.relu`, `moe.rms_norm`
      and `moe.bias_add`;
    * **selection**: `moe.topk`, `moe.group_limit` (group-limited routing),
      `moe.top_p`, `moe.threshold`, `moe.expert_choice`, `moe.gather_scores`
      (weights read from a score other than the one that selected),
      `moe.drop_null_experts` and `moe.entropy_fallback` (every expert for
      the tokens whose router is uncertain, DynMoLE);
    * **cross-token routing** (a token's routing depends on the batch):
      `moe.expert_choice`, `moe.capacity` (expert capacity limits, GShard /
      Switch / Tutel `capacity_factor`) and `moe.sinkhorn` (balanced
      assignment by Sinkhorn iterations before a selection);
      `moe.similarity_mix` (Graph of Tokens: each token's probabilities
      mixed with those of similar tokens);
    * **router state**: `moe.gru_cell` (RMoE's recurrent router state,
      carried from layer to layer as an extra input);
    * **weight post-processing**: `moe.normalize`, `moe.scale`, and the
      softmax/sigmoid ops applied to the selected values;
    * **dispatch and combine**: `moe.dispatch` (per-expert counts, offsets
      and the token order grouped by expert), `moe.permute` (gather rows into
      that order, optionally scaled by their routing weight) and
      `moe.combine` (weighted sum back into token order);
    * **experts**: `moe.expert_ffn` (E gated FFNs over grouped rows),
      `moe.ffn` (one dense gated FFN: shared experts), `moe.row_scale`;
    * **LoRA**: `moe.lora_mixture` (a base projection plus routed low-rank
      experts);
    * **weights**: `moe.weight` names tensors in safetensors files, so that
      weights never live in the IR text. Small weights may be written inline
      with `arith.constant`.

    Routing is carried in a dense, token-major form: `ids : tensor<T x K x i32>`
    and `weights : tensor<T x K x f32>`, where `K` is the maximum number of
    slots per token. An empty slot has id `-1` and weight `0`; every op that
    produces a routing keeps that invariant, and every op that consumes one
    relies on it. The token count `T` is normally dynamic (`?`).

    A function carrying the `moe.layer = N` attribute is the MoE block of the
    model's layer `N`: `(tensor<T x H x dt>) -> tensor<T x H x dt>`.

    Each op's description below states its exact semantics (this text is
    generated into `docs/dialect.md`); `docs/hf-layouts.md` says how the
    released models' routers map onto these ops, and `docs/seed-methods.md`
    how the seed papers' methods compose from them.
  }];
  let useDefaultAttributePrinterParser = 1;
  let hasOperationAttrVerify = 1;
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOE_DIALECT_TD
