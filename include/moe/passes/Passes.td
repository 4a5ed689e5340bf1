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
  }];
  let options = [
    Option<"decodeMaxTokens", "decode-max-tokens", "int64_t", "16",
           "Largest static token count that gets the per-token layout">
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
    `moe.lora_mixture` (its adapters are already low rank), weights that
    are not `moe.weight`, and a rank that would not reduce the parameters
    of a matrix.
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

def MoEOptimize : Pass<"moe-optimize", "::mlir::ModuleOp"> {
  let summary = "The moe optimisation pipeline";
  let description = [{
    Canonicalises, fuses routing (`--moe-fuse-routing`), fuses experts
    (`--moe-fuse-experts`), then canonicalises and removes common
    subexpressions, leaving two fused operations (two kernels) per MoE
    layer. With `stats`, prints the `--moe-stats` table before and after.
  }];
  let options = [
    Option<"decodeMaxTokens", "decode-max-tokens", "int64_t", "16",
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

#endif // MOE_PASSES_TD
