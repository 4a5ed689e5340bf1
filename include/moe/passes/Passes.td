//===- Passes.td - Passes of moe-opt -----------------------*- tablegen -*-===//
//
// Part of moe-opt. Each pass is defined in passes/<Name>.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_TD
#define MOE_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoEFuseRouting : Pass<"moe-fuse-routing", "::mlir::func::FuncOp"> {
  let summary = "Fuses router scoring, selection, weights and dispatch into "
                "moe.fused_route";
  let description = [{
    For every `moe.dispatch`, takes the chain of router ops that computes its
    ids and the routing weights used by the following `moe.permute` /
    `moe.combine` (scoring, group limits, any selection, weight gathering,
    null-expert dropping, normalisation, scaling, and the `moe.weight` /
    `arith.constant` they read) and moves it into the body of one
    `moe.fused_route`, which also plans the dispatch. The router of a routed
    `moe.lora_mixture` is fused the same way (the mixture then reads the
    fused op's ids and weights). Works for every router of the dialect
    because it moves the composition as it is.

    In a layer whose routing is given (`x, ids, weights -> y`), router ops
    that read the given ids and weights (say `moe.remap_experts`) fuse into
    `moe.fused_route ... given(ids, weights)`. A dispatch of the given ids
    with permute and combine reading the given weights, both unchanged, has
    no router: it stays a `moe.dispatch` (the code generator's
    dispatch-planning kernel), and `--moe-fuse-experts` builds
    `moe.fused_experts` on the arguments and its plan.

    The pass refuses, with a remark that says why, when the chain reads
    anything but one token tensor, weights and constants, contains an op
    that is not a router op, or when permute and combine use different
    weights.
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoEFuseExperts : Pass<"moe-fuse-experts", "::mlir::func::FuncOp"> {
  let summary = "Fuses gather, expert FFNs, combine and shared experts into "
                "moe.fused_experts";
  let description = [{
    For every `moe.combine` of a `moe.expert_ffn` of a `moe.permute` (with
    the same rows), builds one `moe.fused_experts` whose body holds the
    gather, the experts, the combine and, when the combined output is added
    to shared experts of the same tokens (`moe.ffn`, optionally scaled by
    `sigmoid(router_linear(x))`), the shared experts too. LoRA mixtures need
    no rewrite: `moe.lora_mixture` already is one operation.

    The op records its dispatch layout: `per_token` when the token count is
    static and at most `decode-max-tokens` (no permutation: the decode
    path), `grouped` when it is static and larger, and `runtime` when it is
    dynamic (the choice is made from the token count at run time). The pass
    refuses, with a remark, when an intermediate value has other users.

    With `fp8-activations`, each fused op gets `moe.fp8_activations`: the
    grouped (prefill) GEMMs of its FP8 E4M3FN weights then run on the FP8
    tensor cores (sm_89 and later; the emulation too) with the activations
    quantized on the fly to E4M3 per row and block of input channels, as
    DeepSeek-V3 does. Off by default: FP8 weights are then dequantized
    into bf16 tiles and the activations kept (docs/codegen.md, "Quantized
    experts", states both error contracts). Other weights ignore it.
  }];
  let options = [
    Option<"decodeMaxTokens", "decode-max-tokens", "int64_t", "16",
           "Largest static token count that gets the per-token layout">,
    Option<"fp8Activations", "fp8-activations", "bool", "false",
           "FP8 weights' grouped GEMMs on FP8 tensor cores, activations "
           "quantized to E4M3 on the fly">
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoECompressExperts : Pass<"moe-compress-experts", "::mlir::ModuleOp"> {
  let summary = "Replaces each routed expert matrix by a truncated SVD "
                "factorisation (moe.low_rank)";
  let description = [{
    For every MoE layer (a `func.func` with `moe.layer`), each projection of
    its routed experts (`moe.expert_ffn`: `gate`, `up`, `down`, or the fused
    `gate_up` as one matrix) becomes `moe.low_rank(A, B)` with, per expert,
    `A = U_r sqrt(S_r)` `[out, r]` and `B = sqrt(S_r) V_rᵀ` `[r, in]` from
    the truncated SVD `W ≈ U_r S_r V_rᵀ` (LAPACK `dgesdd`, in f64). The
    factors are written to a safetensors file beside the output IR (or
    `weights-out`) in the weights' element type, and read with
    `moe.weight`; `in_out` experts are stored transposed so the rewritten
    `moe.expert_ffn` is `out_in`. The rank is `rank`, or from
    `param-ratio` F the largest r with `r (out + in) <= F out in`, at most
    `min(out, in)`.

    `whiten=gram` (needs `profile`) minimises the error on the layer's
    inputs instead of in the weights: for the projections that read the
    layer input (`gate`, `up`, `gate_up`) it factors `W S` with
    `S = G^{1/2}` of the profile's `layer.L.input_gram` G (`dsyevd`;
    eigenvalues below `1e-3 * mean` are raised to it: a regulariser that
    keeps `S^{-1}` bounded on input directions the calibration never
    saw), truncates, and multiplies `B` back by `S^{-1}`. `down` reads the
    expert's hidden activations, which the profile does not record: it is
    compressed plainly.

    Prints per layer (stderr) the routed experts' parameters and bytes
    before and after and the rank of each projection. Shared experts
    (`moe.ffn`) stay dense and are not counted. Handled: every router,
    expert choice included (the factorisation does not depend on the
    routing). Refused with a remark, the IR left unchanged: a layer with
    fused ops (`moe.fused_experts`: run before `--moe-optimize`), a
    `moe.lora_mixture` (its adapters are already low rank), non-gated
    experts and experts of unequal width (`widths`: the factored kernels
    have one gate and one width), weights that are not `moe.weight`, and a
    rank that would not reduce the parameters of a matrix.
  }];
  let options = [
    Option<"rank", "rank", "int64_t", "0",
           "Rank r of every factorisation (or give param-ratio)">,
    Option<"paramRatio", "param-ratio", "double", "0.0",
           "Kept parameters over original ones per matrix, in (0, 1) (or "
           "give rank)">,
    Option<"profile", "profile", "std::string", "\"\"",
           "Calibration profile (moe-run --record-profile) for whiten=gram">,
    Option<"whiten", "whiten", "std::string", "\"none\"",
           "none, or gram: whiten gate/up by the profile's input_gram">,
    Option<"weightsOut", "weights-out", "std::string", "\"\"",
           "The safetensors file of the factors (default: beside the "
           "output IR, <stem>.compress.safetensors)">
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoEQuantizeExperts : Pass<"moe-quantize-experts", "::mlir::ModuleOp"> {
  let summary = "Quantizes the expert weights to block-scaled FP8 (E4M3) or "
                "MXFP4";
  let description = [{
    For every MoE layer (a `func.func` with `moe.layer`), the f32/bf16/f16
    weights (`moe.weight`) of each `moe.expert_ffn` and of the shared
    experts (`moe.ffn`) become block-quantized codes with their scales, in
    the formats of the released checkpoints (docs/hf-layouts.md), written
    to a safetensors file beside the output IR (`<stem>.quant.safetensors`,
    or `weights-out`) and read back with `moe.weight`; the op gets the
    `*_scale` operands and `quant_block`. `in_out` weights are stored
    transposed, so the rewritten op is `out_in` (`[.., out, in]`).

    - `dtype=fp8_e4m3` (DeepSeek-V3): per `block` (`R`x`C`, default
      `128x128`; the edge blocks are partial) of `[out, in]`, the scale is
      `amax / 448` in f32 (1 for an all-zero block) and the code is
      `w / scale` (f32) rounded to the nearest E4M3FN value, ties to even,
      saturating at 448. Stored as `F8_E4M3` `[E, out, in]` and the scale
      as `F32` `[E, ceil(out/R), ceil(in/C)]` (`weight_scale_inv`).
    - `dtype=mxfp4` (gpt-oss, OCP MX): 32 consecutive input values share an
      E8M0 scale `2^X` with `X = floor(log2(amax)) - 2` (the E2M1 emax),
      clamped to [-127, 127] (an all-zero block gets `X = -127`); each value
      is `w / 2^X` rounded to the nearest E2M1 value, ties to even,
      saturating at 6 (values in (6, 8) of the scaled block clamp). Stored
      as `U8` blocks `[E, out, in/32, 16]` (two values per byte, low nibble
      first) and `U8` scales `[E, out, in/32]`. `block` must be 32 (or left
      out).

    Prints per layer and op (stderr) the weights' bytes before and after and
    the relative Frobenius error `||W - deq(Q(W))|| / ||W||` of each
    projection over all its experts. Refused with a remark, the op left
    unchanged: weights that are already quantized or not `moe.weight`
    (e.g. `moe.low_rank`), experts of unequal width (`widths`), a layer
    with fused ops (run before `--moe-optimize`) and, for mxfp4, an input
    size that is not a multiple of 32; `moe.lora_mixture` is not quantized
    (remark). Weights with NaN or infinite values are an error.
  }];
  let options = [
    Option<"dtype", "dtype", "std::string", "\"\"",
           "fp8_e4m3 or mxfp4">,
    Option<"block", "block", "std::string", "\"\"",
           "fp8_e4m3: the scale block RxC of [out, in] (default 128x128); "
           "mxfp4: 32 (the default)">,
    Option<"weightsOut", "weights-out", "std::string", "\"\"",
           "The safetensors file of the codes and scales (default: beside "
           "the output IR, <stem>.quant.safetensors)">
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoEOptimize : Pass<"moe-optimize", "::mlir::ModuleOp"> {
  let summary = "The moe optimisation pipeline";
  let description = [{
    Canonicalises, fuses routing (`--moe-fuse-routing`), fuses experts
    (`--moe-fuse-experts`), then canonicalises and removes common
    subexpressions, leaving two fused operations per MoE layer
    (`fused_route`, `fused_experts`), which run as 3 kernel launches at
    decode up to 8 tokens (router projection and routing in one kernel,
    the two decode expert kernels, the combine in the second's tail), 4
    above, and up to 7 at prefill (`MOE_LOG_LAUNCHES=1` lists them). With
    `stats`, prints the `--moe-stats` table before and after.
  }];
  let options = [
    Option<"decodeMaxTokens", "decode-max-tokens", "int64_t", "16",
           "Passed to --moe-fuse-experts">,
    Option<"fp8Activations", "fp8-activations", "bool", "false",
           "Passed to --moe-fuse-experts">,
    Option<"stats", "stats", "bool", "false",
           "Print op and kernel counts per layer before and after">
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::arith::ArithDialect"];
}

def MoEStats : Pass<"moe-stats", "::mlir::ModuleOp"> {
  let summary = "Prints op and kernel counts per MoE layer";
  let description = [{
    Prints one line per function with a `moe.layer` attribute: the number of
    compute ops (every op but weights, constants and terminators, counting
    the bodies of fused ops), the top-level ops (fused ops and compute ops
    outside them), and, when every op is fused, the kernel launches of the
    layer's CUDA code (the emulation runs the same) at decode (T = 1) and
    at prefill (T = 4096): a fused op is one or more kernels (a router
    projection, decode or grouped expert GEMMs, a combine). Writes to
    stderr; the IR is unchanged.
  }];
  let options = [
    Option<"label", "label", "std::string", "\"\"",
           "A word printed on each line (for example before/after)">
  ];
}

def MoEPlanPlacement : Pass<"moe-plan-placement", "::mlir::ModuleOp"> {
  let summary = "Places the experts of every MoE layer on the GPUs of a "
                "topology";
  let description = [{
    Reads a calibration profile (`moe-run --record-profile`, every MoE layer
    of this model) and a topology file (docs/layout.md) and attaches to the
    `func.func` of each MoE layer its placement: `moe.placement.slot_expert`
    (`array<i64>`: physical slot -> logical expert), `moe.placement.slot_gpu`
    (`array<i64>`: slot -> GPU; slots are numbered GPU by GPU),
    `moe.placement.gpus` (the GPU count) and `moe.placement.policy`. Emits a
    remark per layer with its load balance (max / mean GPU load) and the
    fraction of layer-to-layer token pairs that cross GPUs, each against the
    contiguous placement.

    Policies: `contiguous` (expert e on GPU e / (E/G)); `balanced`
    (EPLB-style with `redundant` replica slots per layer, hierarchical over
    nodes when `groups` is a multiple of the nodes; never two replicas of
    one expert on a GPU); `affinity` (one slot per expert, E/G per GPU,
    minimising the transitions whose experts sit on different GPUs: an ILP
    solved by GLPK (`solver=glpk`) or CBC (`solver=cbc`) within `time-limit`
    seconds, greedy's placement where it finds nothing better in time, or
    `solver=greedy`; each
    GPU's load kept within `max-balance` times the mean GPU load of the
    layer, or the heaviest GPU of a count-balanced packing (heaviest
    expert first onto the lightest GPU) where one hot expert makes that
    more).
    `previous` names an earlier placement file (the format of `out`): moves
    against it are undone while the policy's measure stays within
    `move-tolerance`.

    Refused with an error, writing nothing: a profile of another model (its
    identity against the SHA-256 of the input IR file; from stdin, the
    layers and expert counts only, with a warning), a topology whose GPUs
    cannot hold their slots (`hbm_bytes` against the bytes of one expert's
    weights in the IR), `redundant` that the policy does not allow or that
    does not split evenly over the GPUs, a previous placement that is not
    valid (an expert twice on one GPU, ...).
  }];
  let options = [
    Option<"profile", "profile", "std::string", "\"\"",
           "Calibration profile (safetensors) of this model">,
    Option<"topology", "topology", "std::string", "\"\"",
           "Topology file (JSON, docs/layout.md)">,
    Option<"policy", "policy", "std::string", "\"balanced\"",
           "contiguous, balanced or affinity">,
    Option<"redundant", "redundant", "int64_t", "0",
           "Redundant expert slots per layer (balanced)">,
    Option<"groups", "groups", "int64_t", "0",
           "Expert groups for hierarchical balancing (0: global)">,
    Option<"solver", "solver", "std::string", "\"glpk\"",
           "affinity: glpk or cbc (the ILP, greedy where it finds nothing "
           "in time) or greedy">,
    Option<"timeLimit", "time-limit", "double", "60",
           "Seconds the ILP may take (building it included)">,
    Option<"previous", "previous", "std::string", "\"\"",
           "An earlier placement file to stay close to">,
    Option<"moveTolerance", "move-tolerance", "double", "0.02",
           "Relative loss of the measure accepted to avoid moves">,
    Option<"maxBalance", "max-balance", "double", "1.25",
           "affinity: the most load one GPU of a layer may carry, as a "
           "multiple of the mean (0: no bound)">,
    Option<"out", "out", "std::string", "\"\"",
           "Also write the placement file (JSON, atomically)">,
    Option<"sglangOut", "sglang-out", "std::string", "\"\"",
           "Also write SGLang's --init-expert-location JSON "
           "(physical_to_logical_map)">,
    Option<"sglangCountsOut", "sglang-counts-out", "std::string", "\"\"",
           "Also write the profile's counts as SGLang's "
           "--init-expert-location JSON (logical_count)">
  ];
}

def MoEApplyPlacement : Pass<"moe-apply-placement", "::mlir::ModuleOp"> {
  let summary = "Attaches a placement file's placement to the MoE layers";
  let description = [{
    Reads a placement file (the `out` of `--moe-plan-placement`,
    docs/layout.md) and attaches each layer's placement to the `func.func`
    of the MoE layer of the same index, as `--moe-plan-placement` does
    (`moe.placement.slot_expert`, `moe.placement.slot_gpu`,
    `moe.placement.gpus`; `moe.placement.policy` is `"file"`). Used by
    `moe-compile --placement` before `--moe-shard-experts`.

    Refused with an error naming the file and the layer, leaving the IR
    unchanged: a file that does not parse or whose placements are not
    valid (an expert twice on one GPU, an expert without a slot, unequal
    slots per GPU), a layer of the module that the file does not place, a
    layer of the file that the module does not have, or a different number
    of experts.
  }];
  let options = [
    Option<"placement", "placement", "std::string", "\"\"",
           "Placement file (JSON, format moe-placement)">
  ];
}

def MoESimulateLayout : Pass<"moe-simulate-layout", "::mlir::ModuleOp"> {
  let summary = "Simulates an expert-parallel step of the placed layers";
  let description = [{
    Analysis only (the IR is unchanged). For the placement attached by
    `--moe-plan-placement` (the contiguous placement where no layer has one),
    the profile's token counts and the topology, computes per MoE layer and
    in total: the load balance (max / mean GPU load per layer, then
    averaged), the all-to-all bytes (dispatch and combine) within and
    between nodes, the fraction of layer-to-layer token pairs whose experts
    are on different GPUs, and a simulated step time (per layer the slowest
    GPU's dispatch, expert work and combine). Writes the report atomically to
    `report` (JSON, fields in docs/layout.md) and prints a summary line per
    layer to stderr. Errors (a profile of another model, a placement naming
    an expert twice on a GPU, ...) write nothing.
  }];
  let options = [
    Option<"profile", "profile", "std::string", "\"\"",
           "Calibration profile (safetensors) of this model">,
    Option<"topology", "topology", "std::string", "\"\"",
           "Topology file (JSON, docs/layout.md)">,
    Option<"report", "report", "std::string", "\"\"",
           "The report to write (JSON)">
  ];
}

def MoESelectParallelism : Pass<"moe-select-parallelism",
                                 "::mlir::ModuleOp"> {
  let summary = "Chooses expert-parallel, replicated or sharded experts per "
                "MoE layer from a byte and latency model";
  let description = [{
    Tutel's rule generalised: per MoE layer and step of `tokens` tokens
    (default: the profile's token count) on the topology's G GPUs, the time
    of three layouts, each the bytes one GPU moves over the links plus the
    latency of its messages plus the slowest GPU's expert work:
    `expert_parallel` (experts split over the GPUs, tokens moved: an
    all-to-all dispatch and combine of T K rows, the work as uneven as the
    profile's loads on the placement attached, or contiguous);
    `sharded` (every expert's weights split over the GPUs: an all-gather of
    the T token rows and a reduce-scatter of the outputs); `replicated`
    (every GPU holds every expert, the weights gathered: E x the bytes of
    one expert, all-gathered; refused when they do not fit `hbm_bytes`).
    The fastest is recorded on the layer's `func.func` as
    `moe.parallelism = {choice, expert_parallel_seconds, sharded_seconds,
    replicated_seconds, token_bytes, weight_bytes}` (replicated_seconds is
    absent when it does not fit), with a remark that gives the numbers.
  }];
  let options = [
    Option<"profile", "profile", "std::string", "\"\"",
           "Calibration profile (safetensors) of this model">,
    Option<"topology", "topology", "std::string", "\"\"",
           "Topology file (JSON, docs/layout.md)">,
    Option<"tokens", "tokens", "int64_t", "0",
           "Tokens per step (0: the profile's token count)">
  ];
}

def MoEShardExperts : Pass<"moe-shard-experts", "::mlir::ModuleOp"> {
  let summary = "Keeps one rank's share of every placed MoE layer";
  let description = [{
    For every MoE layer with a placement (`--moe-plan-placement`), keeps
    the routed experts whose physical slots sit on GPU `rank` (replicas
    included), with their weights, and inserts before
    the dispatch a `moe.remap_experts` that empties the slots of experts
    other ranks serve (id -1, weight 0) and renumbers the others to the
    rank's local experts. An expert with several replicas splits the tokens:
    token `t` (its row in the batch) goes to replica `t mod replicas`, the
    replicas numbered in slot order, so that every (token, slot) is served
    by exactly one rank. Shared experts (`moe.ffn`) are computed by rank 0
    only. The sum over ranks of the rank layers' outputs is the layer's
    output. The function records `moe.rank = R` and `moe.rank.experts =
    array<i64: ...>` (the layer expert of each local expert). Experts of
    unequal width keep their widths (`widths` lists the local experts'),
    stacked at the layer's size.

    No expert weight is held in memory: a `moe.weight` naming one
    checkpoint tensor per expert keeps the names of the rank's experts (no
    new file); one tensor holding every expert becomes a new weight of the
    rank's rows, copied row by row into the new weights' file (beside
    moe-opt's `-o` file, or `weights-out`) when the pass ends; a constant
    is sliced where it is, in the IR. The memory needed is one expert's
    slice, whatever the model's size. Block-quantized experts
    (`quant_block`: DeepSeek-V3 FP8, gpt-oss MXFP4) are kept the same way,
    each expert's codes with its scales, as stored (FP4 two codes per
    byte); nothing is dequantized.

    With `routing=given` the routing comes from the caller (an engine that
    ran the router and dispatched the tokens): each placed layer's function
    takes `(x, ids, weights)`, where `ids` [T, K] are physical slots in
    `[0, S)` (the placement's slots, numbered GPU by GPU as
    `moe.placement.slot_expert`) or -1; a `moe.remap_experts` with S
    entries maps the slots on GPU `rank` to the local experts (the same
    order as `routing=internal`) and empties the others (the engine chose
    the replica, so there is no replica rule). The router leaves the layer
    for a router-only function `<function>_router` (`moe.role = "router"`,
    the same `moe.layer`) holding the full router unchanged: it returns the
    layer's (ids, weights) over the logical experts. Both functions record
    `moe.rank` and `moe.rank.experts`.

    Refused with an error, writing nothing: no `rank`, a rank outside the
    placement's GPUs, an MoE layer without a placement or with an invalid
    one, a layer already sharded, a rank holding no slot of a layer, a
    `routing` other than `internal` or `given`, and (`routing=given`) a
    layer whose moe.permute and moe.combine read different routing weights.
  }];
  let options = [
    Option<"rank", "rank", "int64_t", "-1",
           "The GPU (rank) of the placement whose share is kept">,
    Option<"routing", "routing", "std::string", "\"internal\"",
           "Where each rank's routing comes from: internal (the layer's "
           "router, replicas split tokens by row) or given (the caller's "
           "physical slot ids; the router becomes <function>_router)">,
    Option<"weightsOut", "weights-out", "std::string", "\"\"",
           "Where the rank's new expert weights go, if any (default: "
           "beside -o)">,
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoEPruneExperts : Pass<"moe-prune-experts", "::mlir::ModuleOp"> {
  let summary = "Removes the least useful routed experts of each MoE layer";
  let description = [{
    Reads a calibration profile (`moe-run --record-profile`, docs/profile.md)
    and, in every function with a `moe.layer` whose routed experts are the
    chain `moe.dispatch` -> `moe.permute` -> `moe.expert_ffn` ->
    `moe.combine`, keeps `keep` experts (or `ratio` of them, rounded) and
    removes the others: their slices of every expert weight, their rows of
    the router projection (and of its bias), their entries of a
    `moe.bias_add` (correction bias) and `moe.rms_norm` weight. The
    selection then chooses among the kept experts; `moe.dispatch
    num_experts` and a `moe.drop_null_experts` bound shrink accordingly.
    The function records `moe.expert_origin = array<i64: ...>`: the index
    each kept expert had in the original model (composed when pruned
    twice).

    Criteria: `frequency` keeps the most routed experts (`expert_count`);
    `reap` keeps those with the largest mean of gate x ||expert output||
    over their routed tokens (`output_norm_mass / expert_count`);
    `output-error` (NAEE) keeps the subset whose removal changes the layer
    output least, in squared Frobenius norm, on the tokens of
    `calibration` (an .npy of [T, H]), each candidate layer run by the
    reference interpreter (a layer with extra inputs, e.g. RMoE's router
    state, on the .npy files of `calibration-inputs`, in argument order,
    the same for every such layer as the tokens are; without them its
    refusal names the inputs): every subset when there are at most
    `max-subsets` of them, else greedily, one expert at a time (a remark
    says which). With a group-limited router (`moe.group_limit`) the same
    number is kept in every group (`frequency`, `reap`: the best of each
    group; `output-error`: balanced subsets only), else the pass refuses.

    New weights go to `weights-out`, or beside moe-opt's `-o` file as
    `<stem>.prune.safetensors`. Each layer gets a remark (stderr): experts
    before and after, parameters and bytes of the routed experts before
    and after. The pass refuses a layer with a remark, leaving it unchanged,
    when: the profile has no such layer or another expert count
    (`layer.L.expert_count`) or hidden size; the router is expert choice;
    the experts are already fused (run before `--moe-optimize`); the
    top-k (or `max_k`) is larger than the experts kept. Experts of unequal
    width keep their widths (`widths` lists the kept experts'; the stack
    keeps its size even when the widest expert goes). The profile's model
    hash is not compared (the profile describes the original model, which
    earlier passes may have rewritten); its layer indices, expert counts and
    hidden sizes are.
  }];
  let options = [
    Option<"profile", "profile", "std::string", "\"\"",
           "Calibration profile (.safetensors) of the model">,
    Option<"keep", "keep", "int64_t", "0", "Experts to keep per layer">,
    Option<"ratio", "ratio", "double", "0.0",
           "Fraction of the experts to keep (when keep is 0)">,
    Option<"criterion", "criterion", "std::string", "\"frequency\"",
           "frequency, reap or output-error">,
    Option<"calibration", "calibration", "std::string", "\"\"",
           "Tokens [T, H] (.npy) that output-error runs the layer on">,
    ListOption<"calibrationInputs", "calibration-inputs", "std::string",
               "The extra inputs (.npy, argument order) that output-error "
               "runs a layer with extra inputs on, with the calibration "
               "tokens">,
    Option<"maxSubsets", "max-subsets", "int64_t", "5000",
           "output-error enumerates every subset up to this many, else is "
           "greedy">,
    Option<"weightsOut", "weights-out", "std::string", "\"\"",
           "Where the new weights go (default: beside the output IR)">
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoEMergeExperts : Pass<"moe-merge-experts", "::mlir::ModuleOp"> {
  let summary = "Merges similar routed experts (MC-SMoE, HC-SMoE)";
  let description = [{
    Reads a calibration profile and, in every function with a `moe.layer`
    whose routed experts are the chain `moe.dispatch` -> `moe.permute` ->
    `moe.expert_ffn` -> `moe.combine`, groups the E experts into `groups`
    (or `ratio` x E, rounded) merged experts. The router is unchanged: a
    `moe.remap_experts` before the dispatch maps each router slot to its
    merged expert and adds the gates of slots that land on the same merged
    expert, so that each runs once per token; `--moe-fuse-routing` moves it
    into the routing kernel.

    Similarity: `router-logits`, the cosine of the router-logit columns
    over the calibration tokens from `logit_gram` (centred with `logit_sum`
    into a correlation unless `centre-logits=false`); `expert-output`, the
    cosine of the experts' mean outputs (`expert_output_mean`, recorded
    with `moe-run --record-profile --profile-expert-outputs`). Clustering:
    `dominant` (MC-SMoE: the `groups` most routed experts are centres, every
    other expert joins its most similar centre) or `hierarchical` (HC-SMoE:
    average-linkage agglomerative clustering). Merged weights are the
    average of the members' gate, up and down projections (and biases),
    weighted by `expert_count` (`frequency`) or equally (`uniform`); with
    `align=weight` each member's intermediate neurons are first permuted to
    best match the member of largest weight (an optimal assignment on the
    dot products of the neurons' gate, up and down weights). Merged experts
    are numbered by their smallest member. A layer merged before is merged
    again over its merged experts (with `expert-output`: a profile of a
    merged layer has no `logit_gram`, docs/profile.md); its one
    `moe.remap_experts` takes the composed mapping.

    New weights go to `weights-out`, or beside moe-opt's `-o` file as
    `<stem>.merge.safetensors`. Each layer gets remarks (stderr): the
    groups, the similarity used, and experts, parameters and bytes of the
    routed experts before and after. The pass refuses a layer with a
    remark, leaving it unchanged, when: the profile lacks the layer, the
    statistic asked for, or has another expert count or hidden size; the
    router is expert choice; the experts are already fused (run before
    `--moe-optimize`); `align=weight` meets a fused gate_up projection; the
    experts have unequal widths (`widths`: a merged unit would be real in
    one member and padding in another).
    As for `--moe-prune-experts`, the profile's model hash is not compared
    (it identifies the model the profile was recorded on); its layer
    indices, expert counts and hidden sizes are.
  }];
  let options = [
    Option<"profile", "profile", "std::string", "\"\"",
           "Calibration profile (.safetensors) of the model">,
    Option<"groups", "groups", "int64_t", "0", "Merged experts per layer">,
    Option<"ratio", "ratio", "double", "0.0",
           "Merged experts as a fraction of the experts (when groups is 0)">,
    Option<"similarity", "similarity", "std::string", "\"router-logits\"",
           "router-logits or expert-output">,
    Option<"centreLogits", "centre-logits", "bool", "true",
           "Centre the router logits (correlation) before the cosine">,
    Option<"cluster", "cluster", "std::string", "\"dominant\"",
           "dominant (MC-SMoE) or hierarchical (HC-SMoE)">,
    Option<"weighting", "weighting", "std::string", "\"frequency\"",
           "frequency or uniform">,
    Option<"align", "align", "std::string", "\"none\"",
           "none or weight (permute neurons before averaging)">,
    Option<"weightsOut", "weights-out", "std::string", "\"\"",
           "Where the new weights go (default: beside the output IR)">
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

#endif // MOE_PASSES_TD
