//===- MoEOps.td - Operations of the moe dialect -----------*- tablegen -*-===//
//
// Part of moe-opt. Every op here is one step of an MoE layer; a router is a
// chain of scoring, selection and weight ops, not one op with a mode switch.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_OPS_TD
#define MOE_OPS_TD

include "moe/dialects/MoE/MoEDialect.td"
include "moe/dialects/MoE/MoEAttrs.td"
include "moe/dialects/MoE/MoERouterInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/IR/CommonAttrConstraints.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

def MoE_ElementType : AnyTypeOf<[F32, BF16, F16]>;
// Activations and weights: f32, bf16 or f16 of any rank (ranks are checked
// by each op's verifier so that the message can say which dimension is off).
def MoE_Tensor : RankedTensorOf<[F32, BF16, F16]>;
// Router scores and routing weights: [T, N] in f32.
def MoE_Scores : 2DTensorOf<[F32]>;
// Routing ids: [T, K] in i32, -1 for an empty slot.
def MoE_Ids : 2DTensorOf<[I32]>;
def MoE_I32Vector : 1DTensorOf<[I32]>;
def MoE_F32Vector : 1DTensorOf<[F32]>;
// Expert weights: f32/bf16/f16, or block-quantized FP8 (E4M3) and FP4
// (E2M1, MXFP4) whose block scales are separate operands. The tensor shape
// is the logical one; storage is packed (two FP4 values per byte).
def MoE_QuantizedElementType : AnyTypeOf<[F8E4M3FN, F4E2M1FN]>;
def MoE_WeightTensor : RankedTensorOf<[F32, BF16, F16, F8E4M3FN, F4E2M1FN]>;
// Block scales: f32 (FP8 `weight_scale_inv`) or E8M0 exponents (MXFP4).
def MoE_ScaleTensor : RankedTensorOf<[F32, F8E8M0FNU]>;
// What moe.weight may load: any of the above.
def MoE_StoredTensor
    : RankedTensorOf<[F32, BF16, F16, F8E4M3FN, F4E2M1FN, F8E8M0FNU]>;

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

def MoE_WeightOp : MoE_Op<"weight", [Pure]> {
  let summary = "a weight tensor stored in safetensors files";
  let description = [{
    Names one tensor, or a stack of tensors, in safetensors files instead of
    embedding the values in the IR. With one name the result is that tensor;
    with N names the result is their stack along a new leading dimension of
    size N (per-expert checkpoints become one `[E, ...]` tensor). `stacked`
    makes a single name a stack of one (`[1, ...]`: a LoRA mixture of one
    adapter). A stacked
    tensor may be smaller than its slice in any dimension (LoRA adapters of
    different ranks): it is zero-padded at the end of each dimension.

    `files` holds either one file for every name or exactly one file per
    name (sharded checkpoints). A relative path is resolved against the
    module's `moe.weight_root` string attribute when present, otherwise
    against the directory of the IR file. The result's element type is the
    stored dtype (F32, BF16 or F16); the loader checks dtype and shape.
    Quantized expert weights and their block scales are weights too:
    `f8E4M3FN` (safetensors `F8_E4M3`), `f4E2M1FN` (MXFP4 `*_blocks`,
    `U8` holding two values per byte, low nibble first: the result has the
    logical shape) and `f8E8M0FNU` (MXFP4 `*_scales`, `U8`); see
    `moe.expert_ffn` for how they combine and docs/hf-layouts.md for the
    formats.

    ```mlir
    %wg = moe.weight ["model.layers.1.mlp.gate.weight"] from ["model.safetensors"]
        : tensor<8x64xbf16>
    %w1 = moe.weight ["l.experts.0.w1", "l.experts.1.w1"] from ["a.safetensors", "b.safetensors"]
        : tensor<2x128x64xbf16>
    ```
  }];
  let arguments = (ins StrArrayAttr:$names, StrArrayAttr:$files,
                   UnitAttr:$stacked);
  let results = (outs MoE_StoredTensor:$result);
  let assemblyFormat = [{
    (`stacked` $stacked^)? $names `from` $files attr-dict `:` type($result)
  }];
  let extraClassDeclaration = [{
    /// Whether the result stacks the named tensors along a new dimension 0.
    bool isStack() { return getStacked() || getNames().size() > 1; }
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Router scoring
//===----------------------------------------------------------------------===//

def MoE_RouterLinearOp : MoE_Op<"router_linear", [Pure, MoE_RouterOpInterface]> {
  let summary = "router logits x Wᵀ + b, computed in f32";
  let description = [{
    `input : [T, H]` (f32/bf16/f16), `weight : [N, H]`, optional
    `bias : [N]` (any float type); the result `[T, N]` is always f32: inputs and weights are
    converted to f32 first, whatever their dtype (every real router does its
    math in f32). `N` is the number of experts (plus null experts), or 1 for
    a shared-expert gate.

    Cosine routers (`normalize`): `input` selects the rows of `input`,
    `weight` the rows of `weight`, `both` both of them, to be divided by
    their L2 norm before the dot product (a norm below `epsilon` counts as
    `epsilon`, as torch's `F.normalize`), and the product is multiplied by
    `scale` (an inverse temperature) before the bias is added:
    `result[t, n] = scale * (x_t / max(|x_t|, eps)) . (w_n / max(|w_n|, eps))
    + b[n]`. With `both`, `result - b` is `scale` times the cosine
    similarity of token and expert vector (GLIDER's local router; its
    released code standardises the token and gate vectors, LayerNorm without
    affine, and scales the product by `1/sqrt(H)`: the cosine of the centred
    vectors). `scale` and `epsilon` apply only with a `normalize` other than
    `none`; `epsilon` must be > 0. Norms are computed in f32 from the
    converted values.

    ```mlir
    %s = moe.router_linear %x, %w {normalize = #moe.router_normalize<both>,
                                   scale = 10.0 : f32}
        : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor:$input, MoE_Tensor:$weight,
                   Optional<MoE_Tensor>:$bias,
                   DefaultValuedAttr<MoE_RouterNormalizeAttr,
                       "::mlir::moe::RouterNormalize::none">:$normalize,
                   DefaultValuedAttr<F32Attr, "1.0">:$scale,
                   DefaultValuedAttr<F32Attr, "1.0e-12">:$epsilon);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? attr-dict `:` functional-type(operands, results)
  }];
  let builders = [
    // A plain linear router (no normalisation), as most importers build.
    OpBuilder<(ins "::mlir::Type":$result, "::mlir::Value":$input,
                   "::mlir::Value":$weight, "::mlir::Value":$bias), [{
      build($_builder, $_state, result, input, weight, bias,
            RouterNormalizeAttr(), FloatAttr(), FloatAttr());
    }]>];
  let extraClassDeclaration = [{
    /// Whether the input rows are L2-normalised (cosine router).
    bool normalizesInput() {
      return getNormalize() == RouterNormalize::input ||
             getNormalize() == RouterNormalize::both;
    }
    /// Whether the weight rows are L2-normalised (cosine router).
    bool normalizesWeight() {
      return getNormalize() == RouterNormalize::weight ||
             getNormalize() == RouterNormalize::both;
    }
  }];
  let hasVerifier = 1;
}

class MoE_RowOp<string mnemonic, list<Trait> traits = []>
    : MoE_Op<mnemonic, !listconcat(traits, [Pure, SameOperandsAndResultType,
                                            MoE_RouterOpInterface])> {
  let arguments = (ins MoE_Scores:$input);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def MoE_SoftmaxOp : MoE_RowOp<"softmax"> {
  let summary = "softmax over the last dimension";
  let description = [{
    `result[t, i] = exp(x[t, i] - m) / sum_j exp(x[t, j] - m)` with
    `m = max_j x[t, j]`. Applied to router logits `[T, E]`, or to the values
    of a selection `[T, K]` (gpt-oss: softmax over the selected logits).
    Entries equal to -inf get probability 0.

    Over a selection with empty slots (a masked softmax): when `input` is
    the `values` of a selection (`moe.topk`, `moe.top_p`, `moe.threshold`,
    `moe.expert_choice`, `moe.capacity`), possibly through slot-wise ops
    (`moe.softmax`,
    `moe.sigmoid`, `moe.relu`, `moe.normalize`, `moe.scale`,
    `moe.gather_scores`, `moe.drop_null_experts`), the slots whose id is -1
    are empty: they get weight exactly 0 and the maximum and the sum run
    over the real slots only, so that the real slots sum to 1 (a row with
    no real slot gives zeros). This holds on every backend.
  }];
}

def MoE_SigmoidOp : MoE_RowOp<"sigmoid"> {
  let summary = "elementwise logistic function";
  let description = [{
    `result = 1 / (1 + exp(-x))`. DeepSeek-V3 scores, Llama 4's weight of the
    selected logit, Qwen2-MoE's shared-expert gate.
  }];
}

def MoE_ReluOp : MoE_RowOp<"relu"> {
  let summary = "elementwise max(x, 0)";
  let description = [{
    BlockFFN's router activation (followed by `moe.rms_norm`).
  }];
}

def MoE_RmsNormOp : MoE_Op<"rms_norm", [Pure, MoE_RouterOpInterface,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "row-wise RMSNorm of router scores";
  let description = [{
    `result[t, i] = x[t, i] / sqrt(mean_j x[t, j]^2 + epsilon) * g[i]`, with
    `g = 1` when no `weight : [N]` is given. BlockFFN's router:
    `rms_norm(relu(x Wᵀ))`.
  }];
  let arguments = (ins MoE_Scores:$input, Optional<MoE_F32Vector>:$weight,
                   DefaultValuedAttr<F32Attr, "1.0e-6">:$epsilon);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = [{
    $input (`weight` $weight^ `:` type($weight))? attr-dict `:` type($input)
  }];
  let hasVerifier = 1;
}

def MoE_BiasAddOp : MoE_Op<"bias_add", [Pure, MoE_RouterOpInterface,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "adds a per-expert bias to scores";
  let description = [{
    `result[t, e] = x[t, e] + bias[e]`. DeepSeek-V3's
    `e_score_correction_bias` produces the choice score that steers selection
    only; the weights are then read from the unbiased score with
    `moe.gather_scores`.
  }];
  let arguments = (ins MoE_Scores:$input, MoE_Tensor:$bias);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = [{
    $input `,` $bias attr-dict `:` type($input) `,` type($bias)
  }];
  let hasVerifier = 1;
}

def MoE_AddSequenceScoresOp : MoE_Op<"add_sequence_scores", [Pure,
    MoE_RouterOpInterface, AllTypesMatch<["input", "result"]>]> {
  let summary = "adds each token's sequence-level scores (a global router)";
  let description = [{
    `result[t, e] = input[t, e] + factor * sequence_scores[sequence_map[t], e]`:
    a score per sequence (`sequence_scores : [B, E]` f32, e.g. GLIDER's
    global router, computed once per query from a task embedding) added to
    every token of that sequence (`sequence_map : [T]` i32, the sequence of
    each token of the batch). Both are extra inputs of the layer function
    (arguments after `x` named by `moe.input`); `input` is the token-level
    score (the local router). Every map value must be in `[0, B)`: the
    reference executor and the runtime check this before anything runs
    (the kernels never read outside the sequence scores) and report the
    first token whose value is outside. `factor` weighs the global scores
    (GLIDER's released code adds them scaled by `bias_routing_scale`).

    ```mlir
    %l = moe.router_linear %x, %wg {normalize = #moe.router_normalize<both>}
        : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
    %s = moe.add_sequence_scores %l, %seq, %map {factor = 0.5 : f32}
        : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins MoE_Scores:$input, MoE_Scores:$sequence_scores,
                   MoE_I32Vector:$sequence_map,
                   DefaultValuedAttr<F32Attr, "1.0">:$factor);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = [{
    $input `,` $sequence_scores `,` $sequence_map attr-dict `:` type($input)
    `,` type($sequence_scores) `,` type($sequence_map)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Selection
//===----------------------------------------------------------------------===//

def MoE_GroupLimitOp : MoE_Op<"group_limit", [Pure, SameOperandsAndResultType,
    MoE_RouterOpInterface]> {
  let summary = "masks every expert outside the best groups";
  let description = [{
    Splits the E experts into `num_groups` contiguous groups of E/num_groups,
    scores each group (`max`: the best score in the group, DeepSeek-V2;
    `top2_sum`: the sum of its two best scores, DeepSeek-V3), keeps the
    `keep_groups` best groups (ties: lower group index) and sets the score of
    every expert of a dropped group to -inf, so that a following `moe.topk`
    never picks it, even when every kept score is negative.
  }];
  let arguments = (ins MoE_Scores:$input, I64Attr:$num_groups,
                   I64Attr:$keep_groups, MoE_GroupScoreAttr:$group_score);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasVerifier = 1;
}

class MoE_SelectOp<string mnemonic,
                   list<Trait> router = [MoE_RouterOpInterface]>
    : MoE_Op<mnemonic, !listconcat(router, [Pure, MoE_SelectionOpInterface])> {
  let results = (outs MoE_Ids:$ids, MoE_Scores:$values);
}

def MoE_TopKOp : MoE_SelectOp<"topk"> {
  let summary = "the k best entries of each row";
  let description = [{
    For each token, the `k` largest scores in descending order (ties: the
    lower expert index first): `ids : [T, k]` and `values : [T, k]`, the
    scores themselves. A score of -inf is never selected unless fewer than k
    finite scores exist; then the slot is empty (id -1, value 0).
  }];
  let arguments = (ins MoE_Scores:$input, I64Attr:$k);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type(results)";
  let hasVerifier = 1;
}

def MoE_TopPOp : MoE_SelectOp<"top_p"> {
  let summary = "a prefix of the best experts bounded by a mass p (dynamic k)";
  let description = [{
    Sorts each row in descending order (ties: the lower expert index first)
    and keeps a prefix of it, chosen by `prefix` from the running sums
    `c_j = v_1 + ... + v_j` of the sorted values `v_1 >= v_2 >= ...`
    (for probabilities; in general, experts are taken best first while
    fewer than `min_k` are taken or the rule below still admits the next
    one, at most `max_k`):

    - `reach` (the default): the shortest prefix whose sum is at least `p`,
      that is every expert whose preceding sum `c_(j-1)` is strictly below
      `p`: the expert that crosses `p` is kept. Top-p sampling and the
      usual top-p routers (dynamic-k MoE) do this.
    - `within`: the longest prefix whose sum is at most `p`
      (`c_j <= p`): the expert that would cross `p` is left out, so the
      prefix can be empty before `min_k` applies. DynMoLE's router does
      this (its mask is `cumsum(sorted p) <= top_p`, then its `keep_top_k`
      best experts are forced on).

    The two agree when some `c_j` equals `p` exactly (both keep j experts)
    and differ by the crossing expert otherwise. The count is then raised
    to at least `min_k` (DynMoLE's `keep_top_k`; default 1) and capped at
    `max_k`, the number of slots. Slots past the count are empty (id -1,
    value 0); the values are the scores themselves (not renormalised). The
    input should be probabilities (after `moe.softmax`).
  }];
  let arguments = (ins MoE_Scores:$input, F32Attr:$p, I64Attr:$max_k,
                   DefaultValuedAttr<I64Attr, "1">:$min_k,
                   DefaultValuedAttr<MoE_TopPPrefixAttr,
                                     "::mlir::moe::TopPPrefix::reach">:$prefix);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type(results)";
  let hasVerifier = 1;
}

def MoE_EntropyFallbackOp : MoE_SelectOp<"entropy_fallback"> {
  let summary = "uncertain tokens take every expert (Tsallis entropy test)";
  let description = [{
    DynMoLE's hybrid routing as a selection that composes with any other:
    for each token t, the Tsallis entropy of its probability row
    `probs : [T, N]`,

    `S_q(t) = (1 - sum_e (probs[t, e] + epsilon)^q) / (q - 1)`,

    divided by its largest value over N candidates,
    `(1 - N^(1 - q)) / (q - 1)`, when `normalized` is set (then a
    probability row scores in [0, 1]: 0 for one-hot, 1 for uniform), is
    compared with `threshold`. A token with `S_q(t) > threshold` (an
    uncertain router) is routed to every expert: slot `e` holds expert `e`
    with value `probs[t, e]`. Every other token keeps the sparse
    selection (`sparse_ids`, `sparse_values` : `[T, K]`, e.g. from
    `moe.top_p`) in its first K slots; its slots K..N-1 are empty (id -1,
    value 0). The results are
    `[T, N]`; the values are not renormalised (add `moe.normalize` for
    that). `q` is the entropic index (`q -> 1` would be the Shannon
    entropy, which this op does not take: use `q != 1`); `epsilon` is added
    to every probability before the power (DynMoLE adds 1e-5).

    ```mlir
    %p = moe.softmax %logits : tensor<?x8xf32>
    %i, %v = moe.top_p %p {p = 0.75 : f32, max_k = 8 : i64, min_k = 2 : i64,
                           prefix = #moe.top_p_prefix<within>}
        : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
    %ids, %w = moe.entropy_fallback %p, %i, %v
        {q = 1.5 : f32, threshold = 0.5 : f32, normalized}
        : tensor<?x8xf32>, tensor<?x8xi32>, tensor<?x8xf32>
        -> tensor<?x8xi32>, tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_Scores:$probs, MoE_Ids:$sparse_ids,
                   MoE_Scores:$sparse_values, F32Attr:$q,
                   F32Attr:$threshold, UnitAttr:$normalized,
                   DefaultValuedAttr<F32Attr, "0.0">:$epsilon);
  let assemblyFormat = [{
    $probs `,` $sparse_ids `,` $sparse_values attr-dict `:` type($probs)
    `,` type($sparse_ids) `,` type($sparse_values) `->` type(results)
  }];
  let hasVerifier = 1;
}

def MoE_ThresholdOp : MoE_SelectOp<"threshold"> {
  let summary = "every expert whose score exceeds a threshold";
  let description = [{
    Selects, in descending score order, every expert with
    `score > threshold`, at most `max_k` of them (the best ones). BlockFFN:
    `threshold = 0` after ReLU, `max_k = E`: every expert with a non-zero
    score is active. Unused slots are empty (id -1, value 0).
  }];
  let arguments = (ins MoE_Scores:$input,
                   DefaultValuedAttr<F32Attr, "0.0">:$threshold,
                   I64Attr:$max_k);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type(results)";
  let hasVerifier = 1;
}

def MoE_ExpertChoiceOp : MoE_SelectOp<"expert_choice",
    [MoE_RouterOpInterface, MoE_CrossTokenOpInterface,
     DeclareOpInterfaceMethods<MoE_SelectionOpInterface,
                               ["slotsAreCandidates"]>]> {
  let summary = "each expert picks its best tokens, up to a capacity";
  let description = [{
    Expert-choice routing: for each expert e, the `capacity` tokens with the
    highest `input[:, e]` (ties: lower token index) are assigned to it; a
    token picked by nobody is dropped. The result is token-major with one
    slot per expert: `ids[t, e] = e` when expert e picked token t, else -1,
    and `values[t, e]` the score, else 0. With fewer than `capacity` tokens
    every token is picked.
  }];
  let arguments = (ins MoE_Scores:$input, I64Attr:$capacity);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type(results)";
  let hasVerifier = 1;
}

def MoE_CapacityOp : MoE_Op<"capacity", [Pure, MoE_RouterOpInterface,
    MoE_CrossTokenOpInterface,
    DeclareOpInterfaceMethods<MoE_SelectionOpInterface,
                              ["getSelectionScores", "getCandidateCount"]>,
    AllTypesMatch<["ids", "result_ids"]>,
    AllTypesMatch<["weights", "result_weights"]>]> {
  let summary = "expert capacity limits (GShard, Switch, Tutel capacity_factor)";
  let description = [{
    Each of the `num_experts` experts takes at most
    `C = ceil(capacity_factor * T * K / num_experts)` slots of the batch,
    where `T` is the number of tokens at run time (the rows of `ids`) and
    `K` the slots per token (its columns); `C` is computed in double
    precision as `ceil(double(capacity_factor) * T * K / num_experts)`.
    Slots past an expert's capacity are dropped: they become empty (id -1,
    weight 0) and the token keeps its other slots; the kept weights are not
    renormalised (as in GShard, Switch and Tutel: normalise before this op,
    or add `moe.normalize` after it).

    Priority (Tutel's `extract_critical`): slot 0 of every token in token
    order first, then slot 1 of every token, and so on. That is, slot
    `(t, s)` holding expert `e` is kept when fewer than `C` slots
    `(t', s')` with id `e` come before it in the order `s' < s`, or
    `s' == s` and `t' < t`. Empty input slots (id -1) take no capacity and
    stay empty.

    `num_experts` is an attribute (the capacity formula's `E`, the experts
    the ids index): every id must be in `[0, num_experts)` or -1, which the
    verifier checks when the ids come from a visible selection. The result
    ids are a selection over `num_experts` candidates.

    Cross-token: in the routing kernel (`moe.fused_route`) every token's
    warp stores its ids and weights, and the last block enforces the
    capacities over the whole batch (one thread per expert walks the slots
    in priority order) before the router ops that follow and the dispatch
    plan; see docs/codegen.md.

    ```mlir
    %cids, %cw = moe.capacity %ids, %w
        {capacity_factor = 1.25 : f32, num_experts = 8 : i64}
        : tensor<?x2xi32>, tensor<?x2xf32>
    ```
  }];
  let arguments = (ins MoE_Ids:$ids, MoE_Scores:$weights,
                   F32Attr:$capacity_factor, I64Attr:$num_experts);
  let results = (outs MoE_Ids:$result_ids, MoE_Scores:$result_weights);
  let assemblyFormat = [{
    $ids `,` $weights attr-dict `:` type($ids) `,` type($weights)
  }];
  let extraClassDeclaration = [{
    /// C for a batch of `tokens` tokens of `slots` slots each.
    int64_t getExpertCapacity(int64_t tokens, int64_t slots);
  }];
  let hasVerifier = 1;
}

def MoE_SinkhornOp : MoE_Op<"sinkhorn", [Pure, MoE_RouterOpInterface,
    MoE_CrossTokenOpInterface, SameOperandsAndResultType]> {
  let summary = "balanced assignment: Sinkhorn iterations over the batch";
  let description = [{
    Rebalances the score matrix `input : [T, E]` of the whole batch towards
    an assignment in which every expert receives the same share of tokens
    (entropy-regularised optimal transport; the Sinkhorn routing of S-BASE,
    "Unified Scaling Laws for Routed Language Models", as implemented in
    Megatron-LM's `sinkhorn`), before a per-token selection:

    ```
    P[t, e] = exp((input[t, e] - max_j input[t, j]) / epsilon)
    repeat `iterations` times:
      P[t, e] = P[t, e] / sum_j P[t, j]              (each token's total: 1)
      P[t, e] = P[t, e] * (T / E) / sum_u P[u, e]    (each expert's total: T/E)
    result = P
    ```

    T is the number of tokens at run time. Rows are normalised first, as in
    Megatron-LM (`d0` before `d1`), so subtracting each row's maximum
    changes nothing but the range of the exponentials; the marginals are
    Megatron's (1/T per token, 1/E per expert) times T, a uniform scale
    that a following selection ignores; `epsilon` is the entropic
    temperature (Megatron: 1); the iteration count is fixed instead of a
    tolerance. After the last (column) step every expert's column sums to
    T/E and the rows sum to 1 approximately (exactly at convergence). A row
    or column that sums to 0 is left as it is; a row whose maximum is -inf
    gives zeros. Sums are accumulated and scaled in double precision and
    each step's result is stored as f32, on every backend in the same order.

    The result feeds a per-token selection, e.g. `moe.topk`, usually with
    weights read from the unbalanced probabilities (`moe.gather_scores`,
    S-BASE). With T = 1 every expert's column is forced to the same total,
    so the scores of a single token tie: balancing needs a batch.

    Cross-token: in the routing kernel every token's warp stores its input
    row, the last block runs the iterations over the batch (a thread per
    token for the row steps, a thread per expert for the column steps),
    then the ops that follow run per token, then the dispatch plan.

    ```mlir
    %b = moe.sinkhorn %logits {iterations = 4 : i64, epsilon = 1.0 : f32}
        : tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_Scores:$input, I64Attr:$iterations,
                   F32Attr:$epsilon);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def MoE_SimilarityMixOp : MoE_Op<"similarity_mix", [Pure,
    DeclareOpInterfaceMethods<MoE_RouterOpInterface, ["readsOtherTokens"]>,
    AllTypesMatch<["probs", "result"]>]> {
  let summary = "mixes routing probabilities across similar tokens (Graph of Tokens)";
  let description = [{
    Similarity-aware routing ("Improving Routing in Sparse Mixture of
    Experts with Graph of Tokens"): each token's routing probabilities are
    replaced by an average of the probabilities of the tokens it resembles,
    weighted by a softmax over token similarities:

    ```
    s[t, j]      = (x_t . x_j) / temperature      for j in J(t)
    result[t, e] = sum_{j in J(t)} softmax_j(s[t, :]) * probs[j, e]
    ```

    `input : [T, H]` are the token vectors `x` (the routed tokens, the
    layer's input; bf16/f16 are converted to f32 first), `probs : [T, N]`
    the routing probabilities (e.g. `moe.softmax` of the router logits),
    the result has the type of `probs`. `J(t)` is every token of the batch
    (`0 <= j < T`), or with `causal` the tokens up to and including `t`
    (`j <= t`). The softmax subtracts the largest `s[t, j]` over `J(t)`; the
    dot products, exponentials and sums are f32, the sums in ascending `j`.
    Each row of the result is a convex combination of rows of `probs`, so
    rows that sum to 1 still do. `temperature` must be finite and > 0.

    Sequences: the tokens of one call are one sequence (prefill of one
    prompt, rows in sequence order); a batch of several sequences is run
    one call per sequence (tokens of different calls never mix). Decode:
    the op sees only the tokens of the call, so at T = 1 the result is
    `probs` itself; mixing a new token with the earlier tokens of its
    sequence needs a cache of their vectors and probabilities, which the
    dialect does not keep (out of scope; a decode step gives the
    unmixed routing).

    `probs` must be rows over experts, not the values of a selection
    (slots of different tokens hold different experts). In
    `moe.fused_route`, `input` is the body argument and the op comes before
    any cross-token selection; one per router. The routing kernel runs it
    on each token's warp, spread over the grid: the warp of token `t`
    computes `s[t, j]` for every `j` (the lanes split the H products), and
    recomputes token `j`'s router ops that lead to `probs` (per-token, from
    the router logits in global memory) instead of reading another warp's
    rows: O(T (H + N)) per token, no cross-block synchronisation; see
    docs/codegen.md.

    ```mlir
    %p = moe.softmax %logits : tensor<?x8xf32>
    %m = moe.similarity_mix %x, %p {temperature = 8.0 : f32, causal}
        : tensor<?x64xbf16>, tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor:$input, MoE_Scores:$probs,
                   F32Attr:$temperature, UnitAttr:$causal);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = [{
    $input `,` $probs attr-dict `:` type($input) `,` type($probs)
  }];
  let hasVerifier = 1;
}

def MoE_GruCellOp : MoE_Op<"gru_cell", [Pure, AttrSizedOperandSegments,
    AllTypesMatch<["state", "result"]>]> {
  let summary = "one GRU step per token (a router state carried across layers)";
  let description = [{
    PyTorch's `torch.nn.GRUCell` for every token: `input : [T, I]` (any
    float type, converted to f32), `state : [T, S]` f32 (the previous hidden
    state `h`), `weight_ih : [3S, I]`, `weight_hh : [3S, S]` (the reset,
    update and new gates' rows stacked in that order, PyTorch's layout),
    optional `bias_ih`, `bias_hh : [3S]`; the result is the new state
    `[T, S]` f32:

    ```
    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
    ```

    RMoE's recurrent router: `h_L = GRU(W1 x, h_{L-1})`, router logits
    `W2 h_L`; the state comes from the previous layer (an extra layer input,
    `moe.input`) and goes to the next one. Both biases are given or
    neither. S is `weight_hh`'s rows / 3: `state` must have S columns and
    `weight_hh` S columns. The reference executor accumulates the sums in
    double and stores f32.

    Kernels: the op is a kernel of its own (runtime/kernels/moe_gru.cuh,
    one warp per token, f32 sums), not part of `moe.fused_route`; when its
    input is a plain `moe.router_linear` (no bias, no `normalize`) read by
    this op only (RMoE's `W1 x`), the kernel computes that projection too.
    The router that reads the new state (`W2 h`, softmax, top-k) fuses into
    `moe.fused_route` with the state as its routed tokens, so its
    projection and selection are the usual routing kernels.

    ```mlir
    %h1 = moe.gru_cell %u, %h0 weights(%wih, %whh) biases(%bih, %bhh)
        : tensor<?x16xf32>, tensor<?x32xf32>, tensor<96x16xf32>,
          tensor<96x32xf32>, tensor<96xf32>, tensor<96xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor:$input, MoE_Scores:$state,
                   MoE_Tensor:$weight_ih, MoE_Tensor:$weight_hh,
                   Optional<MoE_Tensor>:$bias_ih,
                   Optional<MoE_Tensor>:$bias_hh);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = [{
    $input `,` $state `weights` `(` $weight_ih `,` $weight_hh `)`
    (`biases` `(` $bias_ih^ `,` $bias_hh `)`)? attr-dict `:` type($input)
    `,` type($state) `,` type($weight_ih) `,` type($weight_hh)
    (`,` type($bias_ih)^ `,` type($bias_hh))?
  }];
  let hasVerifier = 1;
}

def MoE_GatherScoresOp : MoE_Op<"gather_scores", [Pure, MoE_RouterOpInterface]> {
  let summary = "reads the weights of the selected experts from a score";
  let description = [{
    `result[t, s] = scores[t, ids[t, s]]`, or 0 for an empty slot. Every id
    must index a column of `scores`: the verifier rejects ids from a
    selection over more candidates than `scores` has columns. Used when
    the score that selects differs from the score that weighs (DeepSeek-V3:
    selection on `sigmoid + bias`, weights from the plain sigmoid).
  }];
  let arguments = (ins MoE_Scores:$scores, MoE_Ids:$ids);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = [{
    $scores `,` $ids attr-dict `:` type($scores) `,` type($ids) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_DropNullExpertsOp : MoE_Op<"drop_null_experts", [Pure, MoE_RouterOpInterface,
    AllTypesMatch<["ids", "result_ids"]>, AllTypesMatch<["weights", "result_weights"]>]> {
  let summary = "empties the slots that selected a null expert (AdaMoE)";
  let description = [{
    Ids `>= num_experts` denote null experts: they take part in selection and
    in weight normalisation but compute nothing. This op turns their slots
    into empty ones (id -1, weight 0), so that dispatch skips them.
  }];
  let arguments = (ins MoE_Ids:$ids, MoE_Scores:$weights, I64Attr:$num_experts);
  let results = (outs MoE_Ids:$result_ids, MoE_Scores:$result_weights);
  let assemblyFormat = [{
    $ids `,` $weights attr-dict `:` type($ids) `,` type($weights)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
}

def MoE_RemapExpertsOp : MoE_Op<"remap_experts", [Pure, MoE_RouterOpInterface,
    DeclareOpInterfaceMethods<MoE_SelectionOpInterface,
                              ["getSelectionScores", "getCandidateCount"]>,
    AllTypesMatch<["ids", "result_ids"]>,
    AllTypesMatch<["weights", "result_weights"]>]> {
  let summary = "maps router slots to merged experts (merged experts run once)";
  let description = [{
    Built by `--moe-merge-experts`: the router still chooses among its E
    experts, and `mapping` (E entries) names the merged expert (in
    `[0, N)`, N = max + 1, every merged expert used) each of them became.
    For each token, slot by slot, the id `e` becomes `mapping[e]`; when an
    earlier slot of the same token already holds that merged expert, this
    slot's weight is added to that earlier slot and this slot becomes empty
    (id -1, weight 0), so that each merged expert runs once per token with
    the summed gate. Empty slots (-1) and ids outside `[0, E)` stay or
    become empty. The result ids are in `[0, N)`: a selection over N
    candidates for the id-range checks of `moe.dispatch` and the expert ops.

    Built by `--moe-shard-experts` (one rank's share of an expert-parallel
    layer): `mapping[e] = -1` drops expert `e` (its slots become empty: the
    expert is served by another rank), the others are renumbered to the
    rank's local experts. With replicas, `replica_count[e]` is the number of
    replicas of expert `e` and `replica_index[e]` the one this rank holds:
    token `t` (its row in the batch) keeps a slot of `e` only when
    `t mod replica_count[e] == replica_index[e]`, so that every rank applies
    the same rule and each (token, slot) is served by exactly one replica.

    ```mlir
    %mids, %mw = moe.remap_experts %ids, %w mapping = [0, 1, 0, 1]
        : tensor<?x2xi32>, tensor<?x2xf32>
    %rids, %rw = moe.remap_experts %ids, %w mapping = [-1, 0, 1, -1]
        {replica_count = array<i64: 1, 2, 1, 1>,
         replica_index = array<i64: 0, 1, 0, 0>}
        : tensor<?x2xi32>, tensor<?x2xf32>
    ```
  }];
  let arguments = (ins MoE_Ids:$ids, MoE_Scores:$weights,
                   DenseI64ArrayAttr:$mapping,
                   OptionalAttr<DenseI64ArrayAttr>:$replica_count,
                   OptionalAttr<DenseI64ArrayAttr>:$replica_index);
  let results = (outs MoE_Ids:$result_ids, MoE_Scores:$result_weights);
  let assemblyFormat = [{
    $ids `,` $weights `mapping` `=` $mapping attr-dict `:` type($ids) `,`
    type($weights)
  }];
  let extraClassDeclaration = [{
    /// The number of merged experts N (max of the mapping + 1).
    int64_t getMergedCount();
    /// Whether token `t` keeps a slot of router expert `e` (in range): the
    /// mapping keeps `e` and the replica rule picks this rank's replica.
    bool keepsSlot(int64_t t, int64_t e);
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Weight post-processing
//===----------------------------------------------------------------------===//

def MoE_NormalizeOp : MoE_Op<"normalize", [Pure, SameOperandsAndResultType,
    MoE_RouterOpInterface]> {
  let summary = "divides each row of routing weights by its sum";
  let description = [{
    `result[t, s] = w[t, s] / (sum_j w[t, j] + epsilon)`; a row that sums to
    0 stays 0. Over a selection with empty slots (id -1; the input is a
    selection's values, possibly through slot-wise ops, as for
    `moe.softmax`), the sum runs over the real slots only and the empty
    slots get weight exactly 0, whatever value they held.
  }];
  let arguments = (ins MoE_Scores:$input,
                   DefaultValuedAttr<F32Attr, "0.0">:$epsilon);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def MoE_ScaleOp : MoE_Op<"scale", [Pure, SameOperandsAndResultType,
    MoE_RouterOpInterface]> {
  let summary = "multiplies routing weights by a constant";
  let description = [{
    `result = factor * w` (`routed_scaling_factor`).
  }];
  let arguments = (ins MoE_Scores:$input, F32Attr:$factor);
  let results = (outs MoE_Scores:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasFolder = 1;
  let hasCanonicalizer = 1;
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Dispatch and combine
//===----------------------------------------------------------------------===//

def MoE_DispatchOp : MoE_Op<"dispatch", [Pure]> {
  let summary = "groups the routed slots by expert";
  let description = [{
    From `ids : [T, K]`, computes `counts : [E]` (slots routed to each
    expert), `offsets : [E + 1]` (exclusive prefix sum of counts, the last
    entry is the number of routed slots R) and `rows : [R]`: the flat slot
    indices `t * K + s` of the non-empty slots, sorted by expert, then by
    token, then by slot. Ids must be in `[0, E)` or -1 (empty): when the
    ids come straight from a selection over N candidates (or from
    `moe.drop_null_experts`), the verifier checks N <= E; drop null
    experts with `moe.drop_null_experts`. At run time ids outside `[0, E)`
    are treated as empty.

    A layer whose routing is given (`x, ids, weights -> y`, e.g. Read-ME's
    layers) and dispatches it unchanged keeps this op after fusion, with the
    ids argument as operand: `moe.fused_experts` reads the arguments and
    this op's rows and offsets, and the code generator maps it onto one
    kernel that plans the dispatch (the routing kernel's planning). Any
    other `moe.dispatch` is fused into `moe.fused_route`.
  }];
  let arguments = (ins MoE_Ids:$ids, I64Attr:$num_experts);
  let results = (outs MoE_I32Vector:$counts, MoE_I32Vector:$offsets,
                      MoE_I32Vector:$rows);
  let assemblyFormat = "$ids attr-dict `:` type($ids) `->` type(results)";
  let hasVerifier = 1;
}

def MoE_PermuteOp : MoE_Op<"permute", [Pure]> {
  let summary = "gathers token rows into expert order";
  let description = [{
    `result[i] = x[rows[i] / K]` where `K` is the slot count of `weights`
    (`[T, K]`); with `scale_by_weight`, multiplied by
    `weights.flat[rows[i]]` (Llama 4 applies the routing weight to the
    expert's input).
  }];
  let arguments = (ins MoE_Tensor:$input, MoE_I32Vector:$rows,
                   MoE_Scores:$weights, UnitAttr:$scale_by_weight);
  let results = (outs MoE_Tensor:$result);
  let assemblyFormat = [{
    $input `,` $rows `,` $weights (`scale_by_weight` $scale_by_weight^)? attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_CombineOp : MoE_Op<"combine", [Pure]> {
  let summary = "weighted sum of expert outputs back into token order";
  let description = [{
    `result[t] = sum over i with rows[i] / K == t of w * y[i]`, where
    `w = weights.flat[rows[i]]`, or 1 with `unweighted` (when the weight was
    applied to the input). `result` is `[T, H]` with T from `weights`; a
    token with no routed slot gets zeros. Sums are in f32.
  }];
  let arguments = (ins MoE_Tensor:$input, MoE_I32Vector:$rows,
                   MoE_Scores:$weights, UnitAttr:$unweighted);
  let results = (outs MoE_Tensor:$result);
  let assemblyFormat = [{
    $input `,` $rows `,` $weights (`unweighted` $unweighted^)? attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

class MoE_GatedFFNOp<string mnemonic, string sum, string desc,
                     dag extraIns = (ins), dag extraAttrs = (ins)>
    : MoE_Op<mnemonic, [Pure, AttrSizedOperandSegments]> {
  let summary = sum;
  let description = desc # [{

    Weights: either separate `gate` and `up` projections, or one fused
    `gate_up` projection whose columns hold gate and up as `gate_up_layout`
    says (`concat`: gate is the first half; `interleaved`: gate is at even
    indices, up at odd ones, as in gpt-oss). `weight_layout = out_in`
    stores each matrix as `[out, in]` (torch.nn.Linear); `in_out` as
    `[in, out]` (fused 3-D checkpoints of gpt-oss and Llama 4). Optional
    biases are `[.., out]`.

    Activations: `silu` (`down(silu(g) * u)`), `gelu` (erf form),
    `gelu_tanh`, `relu` (ReGLU), and `swiglu_clamped` (gpt-oss:
    `g = min(g, limit)`, `u = clamp(u, -limit, limit)`,
    `out = down((u + 1) * g * sigmoid(alpha * g))`).
    Accumulation is in f32; the result has the input's type.

    Non-gated form (`non_gated`): `out = down(act(up x + up_bias)) +
    down_bias`, one projection before the activation (BlockFFN:
    `down(silu(up x))`; Switch/T5 and SMoE-Dropout: `down(relu(up x + b))`
    or gelu). It takes `up` and `down` (and their optional biases) only: a
    `gate`, `gate_up`, `gate_bias` or `gate_up_bias` is an error, and the
    activation is one of `silu`, `gelu`, `gelu_tanh`, `relu` (clamped
    swiglu needs a gate). The keyword is explicit, not implied by a missing
    `gate`, so that a gated FFN that lost its gate stays an error and the
    printed IR says which function is computed. The kernels compute the
    `up` projection only (half the first GEMM of a gated FFN of the same
    width).

    Quantized weights (block-scaled): the projections may be `f8E4M3FN`
    (DeepSeek-V3 FP8) or `f4E2M1FN` (MXFP4, gpt-oss), all of one element
    type, each with its scale operand (`gate_scale`, `up_scale`,
    `gate_up_scale`, `down_scale`) and the op's `quant_block =
    array<i64: b0, b1>`: one scale per `b0 x b1` block of the last two
    dimensions of the weight as stored (so `[1, 32]` with `out_in` is 32
    consecutive input channels). A weight `[.., d0, d1]` takes a scale
    `[.., ceil(d0 / b0), ceil(d1 / b1)]` (expert dimension first for
    `moe.expert_ffn`); the value is `code * scale`, code decoded exactly.
    - `f8E4M3FN`: scales `f32` (the checkpoint's `weight_scale_inv`, a
      multiplier despite its name); the edge blocks may be partial
      (DeepSeek-V3: `[128, 128]`).
    - `f4E2M1FN`: scales `f8E8M0FNU` (`2^(e - 127)`, e = 255 is NaN); the
      block is 32 values along the input dimension (`[1, 32]` with `out_in`,
      `[32, 1]` with `in_out`) and the input size is a multiple of 32.
    Biases and activations stay f32/bf16/f16. The reference executor
    dequantizes exactly; the CUDA backend and emu decode the codes in the
    kernels (`out_in` weights of one width; docs/codegen.md).

    ```mlir
    // DeepSeek-V3 FP8 experts: 128 x 128 blocks, f32 scales.
    %ys = moe.expert_ffn %xs, %offsets gate(%wg) up(%wu) down(%wd)
        gate_scale(%sg) up_scale(%su) down_scale(%sd)
        {activation = #moe.activation<silu>,
         quant_block = array<i64: 128, 128>}
        : (tensor<?x7168xbf16>, tensor<257xi32>,
           tensor<256x2048x7168xf8E4M3FN>, tensor<256x2048x7168xf8E4M3FN>,
           tensor<256x7168x2048xf8E4M3FN>, tensor<256x16x56xf32>,
           tensor<256x16x56xf32>, tensor<256x56x16xf32>)
        -> tensor<?x7168xbf16>
    ```
  }];
  let arguments = !con(extraIns, (ins
      Optional<MoE_WeightTensor>:$gate, Optional<MoE_WeightTensor>:$up,
      Optional<MoE_WeightTensor>:$gate_up, MoE_WeightTensor:$down,
      Optional<MoE_Tensor>:$gate_bias, Optional<MoE_Tensor>:$up_bias,
      Optional<MoE_Tensor>:$gate_up_bias, Optional<MoE_Tensor>:$down_bias,
      Optional<MoE_ScaleTensor>:$gate_scale,
      Optional<MoE_ScaleTensor>:$up_scale,
      Optional<MoE_ScaleTensor>:$gate_up_scale,
      Optional<MoE_ScaleTensor>:$down_scale,
      MoE_ActivationAttr:$activation,
      DefaultValuedAttr<MoE_GateUpLayoutAttr, "::mlir::moe::GateUpLayout::concat">:$gate_up_layout,
      DefaultValuedAttr<MoE_WeightLayoutAttr, "::mlir::moe::WeightLayout::out_in">:$weight_layout,
      DefaultValuedAttr<F32Attr, "1.702">:$alpha,
      DefaultValuedAttr<F32Attr, "7.0">:$limit, UnitAttr:$non_gated,
      OptionalAttr<DenseI64ArrayAttr>:$quant_block),
      extraAttrs);
  let results = (outs MoE_Tensor:$result);
  let hasVerifier = 1;
}

def MoE_ExpertFFNOp : MoE_GatedFFNOp<"expert_ffn",
    "E FFNs (gated, or non-gated) applied to rows grouped by expert", [{
    `input : [R, H]` holds rows grouped by expert as `moe.permute` produced
    them; rows `offsets[e] .. offsets[e+1]` go through expert `e`. Each
    projection carries a leading expert dimension `E`:
    `gate/up : [E, I, H]`, `down : [E, H, I]` (`out_in`).

    ```mlir
    // BlockFFN's experts: down(silu(up x)), no gate projection.
    %ys = moe.expert_ffn %xs, %offsets non_gated up(%w_up) down(%w_down)
        {activation = #moe.activation<silu>}
        : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x128x64xbf16>,
           tensor<4x64x128xbf16>) -> tensor<?x64xbf16>
    ```

    Experts of unequal width (`widths`, Duo-LLM's small and big FFN per
    layer): `widths = array<i64: w_0, ..., w_{E-1}>` gives expert `e` the
    intermediate size `w_e`, `1 <= w_e <= I`; the weights stay stacked at
    the widest size `I` and expert `e` is the FFN of its first `w_e`
    intermediate channels: rows `0 .. w_e` of `gate`/`up` (of a fused
    `gate_up`: rows `[0, w_e)` and `[I, I + w_e)` with `concat`, pairs
    `2j, 2j + 1` for `j < w_e` with `interleaved`), columns `0 .. w_e` of
    `down`, entries `0 .. w_e` of the intermediate biases. The rest is
    padding that no consumer reads: the reference executor sums over the
    first `w_e` channels only, and the expert kernels neither load nor
    multiply it (docs/codegen.md says how per path), so its values do not
    matter (NaN included). Storage: stacked with padding, because a
    tensor has one shape; on disk each expert may keep its own width, as
    `moe.weight` zero-pads stacked tensors that are smaller than their
    slice (per-expert `[w_e, H]` and `[H, w_e]` checkpoints stack into
    `[E, I, H]` and `[E, H, I]`). The widest expert may be narrower than
    `I` (a stack that lost its widest expert to `--moe-prune-experts` or
    to a rank's share keeps its size: the padding costs storage only).
    Skipping an expert entirely is a null expert (`moe.drop_null_experts`),
    not a width of 0.

    ```mlir
    // Duo-LLM: a small (32) and a big (128) FFN, stacked at 128.
    %ys = moe.expert_ffn %xs, %offsets gate(%wg) up(%wu) down(%wd)
        {activation = #moe.activation<silu>, widths = array<i64: 32, 128>}
        : (tensor<?x64xf32>, tensor<3xi32>, tensor<2x128x64xf32>,
           tensor<2x128x64xf32>, tensor<2x64x128xf32>) -> tensor<?x64xf32>
    ```
  }], (ins MoE_Tensor:$input, MoE_I32Vector:$offsets),
  (ins OptionalAttr<DenseI64ArrayAttr>:$widths)> {
  let extraClassDeclaration = [{
    /// The intermediate size of expert `e`: widths[e], or the stacked
    /// size `stacked` without `widths`.
    int64_t getExpertWidth(int64_t e, int64_t stacked) {
      if (std::optional<ArrayRef<int64_t>> w = getWidths())
        return (*w)[e];
      return stacked;
    }
    /// The verifier's rules for `widths`.
    ::mlir::LogicalResult verifyWidths(int64_t experts);
  }];
  let assemblyFormat = [{
    $input `,` $offsets
    (`non_gated` $non_gated^)?
    (`gate` `(` $gate^ `)`)? (`up` `(` $up^ `)`)? (`gate_up` `(` $gate_up^ `)`)?
    `down` `(` $down `)`
    (`gate_bias` `(` $gate_bias^ `)`)? (`up_bias` `(` $up_bias^ `)`)?
    (`gate_up_bias` `(` $gate_up_bias^ `)`)? (`down_bias` `(` $down_bias^ `)`)?
    (`gate_scale` `(` $gate_scale^ `)`)? (`up_scale` `(` $up_scale^ `)`)?
    (`gate_up_scale` `(` $gate_up_scale^ `)`)?
    (`down_scale` `(` $down_scale^ `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def MoE_FFNOp : MoE_GatedFFNOp<"ffn",
    "one dense FFN (gated, or non-gated) applied to every token (shared experts)", [{
    `input : [T, H]`, `gate/up : [I, H]`, `down : [H, I]` (`out_in`). Shared
    experts: DeepSeek's `n_shared_experts` are one FFN of
    `n_shared_experts * moe_intermediate_size`.
  }], (ins MoE_Tensor:$input)> {
  let assemblyFormat = [{
    $input
    (`non_gated` $non_gated^)?
    (`gate` `(` $gate^ `)`)? (`up` `(` $up^ `)`)? (`gate_up` `(` $gate_up^ `)`)?
    `down` `(` $down `)`
    (`gate_bias` `(` $gate_bias^ `)`)? (`up_bias` `(` $up_bias^ `)`)?
    (`gate_up_bias` `(` $gate_up_bias^ `)`)? (`down_bias` `(` $down_bias^ `)`)?
    (`gate_scale` `(` $gate_scale^ `)`)? (`up_scale` `(` $up_scale^ `)`)?
    (`gate_up_scale` `(` $gate_up_scale^ `)`)?
    (`down_scale` `(` $down_scale^ `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
}

def MoE_LowRankOp : MoE_Op<"low_rank", [Pure]> {
  let summary = "a stack of matrices given as products of two thin factors";
  let description = [{
    `result[e] = a[e] · b[e]` for `a : [E, out, r]`, `b : [E, r, in]`,
    `result : [E, out, in]`: the truncated-SVD factorisation that
    `--moe-compress-experts` gives each routed expert matrix. It feeds the
    `gate`, `up` or `down` operand of `moe.expert_ffn` (stored `out_in`),
    so the expert op stays as it is; the reference executor materialises
    the product (sums in f32, not rounded to the element type: the factors
    are what is stored), while the expert kernels run the two factors as
    two thin GEMMs (`B x`, then `A (B x)`) without forming the product. `a`, `b` and the result share one element
    type, and `r` is at least 1.

    ```mlir
    %gate = moe.low_rank %ga, %gb
        : tensor<8x128x16xf32>, tensor<8x16x64xf32> -> tensor<8x128x64xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor:$a, MoE_Tensor:$b);
  let results = (outs MoE_Tensor:$result);
  let assemblyFormat = [{
    $a `,` $b attr-dict `:` type($a) `,` type($b) `->` type($result)
  }];
  let extraClassDeclaration = [{
    /// The rank r of the factorisation (dimension 2 of `a`).
    int64_t getRank() { return getA().getType().getDimSize(2); }
  }];
  let hasVerifier = 1;
}

def MoE_RowScaleOp : MoE_Op<"row_scale", [Pure]> {
  let summary = "multiplies each row by a per-token factor";
  let description = [{
    `result[t, :] = x[t, :] * factor[t, 0]`, with `factor : [T, 1]` f32
    (Qwen2-MoE's shared-expert gate `sigmoid(x w_sg)`).
  }];
  let arguments = (ins MoE_Tensor:$input, MoE_Scores:$factor);
  let results = (outs MoE_Tensor:$result);
  let assemblyFormat = [{
    $input `,` $factor attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// LoRA
//===----------------------------------------------------------------------===//

def MoE_LoraMixtureOp : MoE_Op<"lora_mixture",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "a base projection plus routed low-rank (LoRA) experts";
  let description = [{
    `result = x Wᵀ + b + sum over slots s of w[t, s] * scales[e] * B_e A_e x`
    with `e = ids[t, s]` (empty slots skipped). `base : [out, in]`,
    `base_bias : [out]`, `lora_a : [E, r, in]`, `lora_b : [E, out, r]`,
    `scales`: E factors (`lora_alpha / r`, or `lora_alpha / sqrt(r)` with
    rsLoRA). Adapters of smaller rank are zero-padded to `r`. The ids must
    name adapters: the verifier rejects ids from a selection over more
    candidates than `lora_a` has adapters. Without
    `routing(ids, weights)` every adapter is applied with weight 1: a single
    PEFT adapter is the one-expert case. Accumulation in f32; the result has
    the input's element type.
  }];
  let arguments = (ins MoE_Tensor:$input, MoE_Tensor:$base,
                   Optional<MoE_Tensor>:$base_bias, MoE_Tensor:$lora_a,
                   MoE_Tensor:$lora_b, Optional<MoE_Ids>:$ids,
                   Optional<MoE_Scores>:$weights, F32ArrayAttr:$scales);
  let results = (outs MoE_Tensor:$result);
  let assemblyFormat = [{
    $input `base` `(` $base `)` (`base_bias` `(` $base_bias^ `)`)?
    `lora` `(` $lora_a `,` $lora_b `)`
    (`routing` `(` $ids^ `,` $weights `)`)?
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Fused operations (built by the fusion passes; one kernel each)
//===----------------------------------------------------------------------===//

def MoE_FusedRouteOp : MoE_Op<"fused_route",
    [IsolatedFromAbove, SingleBlock, AttrSizedOperandSegments]> {
  let summary = "router scoring, selection, weights and dispatch planning";
  let description = [{
    One routing step of an MoE layer as one operation (and one kernel): the
    body computes the routing `(ids, weights)` of the tokens of `input` with
    the composed router ops (any scoring, selection and weight
    post-processing of the dialect) and yields them; the op then plans the
    dispatch as `moe.dispatch` does. Results: `ids`, `weights`, and the
    dispatch plan `counts`, `offsets`, `rows` for `num_experts` experts.
    The body is isolated from above: it holds its own `moe.weight` ops.
    Built by `--moe-fuse-routing`.

    The verifier accepts only bodies the routing kernel can generate (one
    matcher, shared with the pass and the code generator): router ops
    (scoring, selection, weight post-processing), `moe.weight` and dense
    float constants; `moe.router_linear` projects the body argument; every
    row has a static width; at most one cross-token op
    (`CrossTokenOpInterface`: `moe.expert_choice`, `moe.capacity`,
    `moe.sinkhorn`), which router ops may follow. A refused body is
    reported with the op that cannot be generated and why.

    Given routing: a layer whose routing comes from the caller (an engine's
    dispatch, e.g. one rank's share of an expert-parallel layer) passes it
    as `given(given_ids, given_weights)`, both `[T, K']` (i32 ids, f32
    weights, the tokens of `input`). The body then takes three arguments,
    `(input, ids, weights)`: its router ops may read the given rows (e.g.
    `moe.remap_experts` from physical slots to the local experts, then
    `moe.normalize` or `moe.scale`), or it yields them as they are. The
    routing kernel stages each token's given rows as it stages its input
    row. Built by `--moe-fuse-routing` from a dispatch whose ids router ops
    compute from the function's arguments; a layer that dispatches the
    given routing as it is has no router to fuse and keeps its
    `moe.dispatch` (see there).

    Extra layer inputs: a router that reads arguments of a layer with extra
    inputs (`moe.input`, e.g. the sequence scores and map of
    `moe.add_sequence_scores`) takes them as `inputs(...)`; the body then
    takes them as its last arguments, in that order. The routing kernel
    reads them from global memory (the sequence scores row of each token's
    sequence), not as staged rows.

    ```mlir
    %ids, %w, %counts, %offsets, %rows = moe.fused_route %x
        given(%gids, %gw : tensor<?x8xi32>, tensor<?x8xf32>)
        {num_experts = 4 : i64} : tensor<?x64xf32> -> (...) {
    ^bb0(%t: tensor<?x64xf32>, %i: tensor<?x8xi32>, %g: tensor<?x8xf32>):
      %li, %lw = moe.remap_experts %i, %g mapping = [0, 1, -1, -1, 2, 3]
          : tensor<?x8xi32>, tensor<?x8xf32>
      moe.yield %li, %lw : tensor<?x8xi32>, tensor<?x8xf32>
    }
    ```
  }];
  let arguments = (ins MoE_Tensor:$input, Optional<MoE_Ids>:$given_ids,
                   Optional<MoE_Scores>:$given_weights,
                   Variadic<RankedTensorOf<[F32, I32]>>:$extra_inputs,
                   I64Attr:$num_experts);
  let results = (outs MoE_Ids:$ids, MoE_Scores:$weights,
                      MoE_I32Vector:$counts, MoE_I32Vector:$offsets,
                      MoE_I32Vector:$rows);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $input (`given` `(` $given_ids^ `,` $given_weights `:` type($given_ids)
    `,` type($given_weights) `)`)?
    (`inputs` `(` $extra_inputs^ `:` type($extra_inputs) `)`)?
    attr-dict `:` type($input) `->` type(results) $body
  }];
  let builders = [
    // Without extra layer inputs (every router but GLIDER-style ones).
    OpBuilder<(ins "::mlir::Type":$ids, "::mlir::Type":$weights,
                   "::mlir::Type":$counts, "::mlir::Type":$offsets,
                   "::mlir::Type":$rows, "::mlir::Value":$input,
                   "::mlir::Value":$given_ids, "::mlir::Value":$given_weights,
                   "::mlir::IntegerAttr":$num_experts), [{
      build($_builder, $_state, ids, weights, counts, offsets, rows, input,
            given_ids, given_weights, ::mlir::ValueRange(), num_experts);
    }]>];
  let extraClassDeclaration = [{
    /// The body argument of extra input `i` (after the input and the given
    /// routing's ids and weights).
    ::mlir::BlockArgument getExtraInputArgument(unsigned i) {
      return getBody().front().getArgument(1 + (getGivenIds() ? 2 : 0) + i);
    }
  }];
  let hasVerifier = 1;
}

def MoE_FusedExpertsOp : MoE_Op<"fused_experts",
    [IsolatedFromAbove, SingleBlock]> {
  let summary = "gather, expert FFNs, weighted combine and shared experts";
  let description = [{
    The expert side of an MoE layer as one operation (and one kernel): the
    body receives `input`, the routing (`ids`, `weights`) and the dispatch
    plan (`rows`, `offsets`) as block arguments and computes the layer's
    output with `moe.permute`, `moe.expert_ffn`, `moe.combine` and, when the
    layer has them, shared experts (`moe.ffn`, their sigmoid gate and the
    sum). `layout` records how a kernel visits the routed rows: `grouped` by
    expert, `per_token` (few tokens, no permutation: the decode path), or
    `runtime` when the token count is dynamic and the choice is made at run
    time. Built by `--moe-fuse-experts`.

    The body must have the form the expert kernels generate:
    `combine(expert_ffn(permute(x, rows, weights), offsets), rows, weights)`,
    optionally plus (`arith.addf`, either order) shared experts
    `moe.ffn(x)`, optionally scaled (`moe.row_scale`) by
    `moe.sigmoid(moe.router_linear(x, w [bias b]))`; weights are `moe.weight`
    or float `arith.constant` ops of the body, and the routed experts'
    `gate`, `up`, `gate_up` and `down` may each be `moe.low_rank` of two
    such weights (factored experts). The routed `moe.expert_ffn` may be
    `non_gated` or carry `widths` (experts of unequal width; the kernels
    stop at each expert's width), but neither with factored weights. The
    verifier names any other op (it would not be generated).
  }];
  let arguments = (ins MoE_Tensor:$input, MoE_Ids:$ids, MoE_Scores:$weights,
                   MoE_I32Vector:$rows, MoE_I32Vector:$offsets,
                   MoE_DispatchLayoutAttr:$layout);
  let results = (outs MoE_Tensor:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $input `,` $ids `,` $weights `,` $rows `,` $offsets attr-dict
    `:` functional-type(operands, results) $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
}

def MoE_YieldOp : MoE_Op<"yield", [Pure, Terminator,
    ParentOneOf<["FusedRouteOp", "FusedExpertsOp"]>]> {
  let summary = "yields the values of a fused op's body";
  let arguments = (ins Variadic<AnyRankedTensor>:$values);
  let assemblyFormat = "$values attr-dict `:` type($values)";
}

#endif // MOE_OPS_TD
