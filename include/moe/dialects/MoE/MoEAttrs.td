//===- MoEAttrs.td - Attributes of the moe dialect ---------*- tablegen -*-===//
//
// Part of moe-opt. Enumerations used by moe ops.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ATTRS_TD
#define MOE_ATTRS_TD

include "moe/dialects/MoE/MoEDialect.td"
include "mlir/IR/EnumAttr.td"

def MoE_ActSilu : I32EnumAttrCase<"silu", 0>;
def MoE_ActGelu : I32EnumAttrCase<"gelu", 1>;
def MoE_ActGeluTanh : I32EnumAttrCase<"gelu_tanh", 2>;
def MoE_ActSwigluClamped : I32EnumAttrCase<"swiglu_clamped", 3>;
def MoE_ActRelu : I32EnumAttrCase<"relu", 4>;
def MoE_Activation : I32EnumAttr<"Activation",
    "activation of an FFN: silu, gelu (erf), gelu_tanh, relu, or gpt-oss's "
    "clamped swiglu (gated only)",
    [MoE_ActSilu, MoE_ActGelu, MoE_ActGeluTanh, MoE_ActSwigluClamped,
     MoE_ActRelu]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_ActivationAttr : EnumAttr<MoE_Dialect, MoE_Activation, "activation"> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_GroupMax : I32EnumAttrCase<"max", 0>;
def MoE_GroupTop2Sum : I32EnumAttrCase<"top2_sum", 1>;
def MoE_GroupScoreKind : I32EnumAttr<"GroupScore",
    "how a group of experts is scored: the max (DeepSeek-V2) or the sum of "
    "the two best (DeepSeek-V3)", [MoE_GroupMax, MoE_GroupTop2Sum]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_GroupScoreAttr
    : EnumAttr<MoE_Dialect, MoE_GroupScoreKind, "group_score"> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_GateUpConcat : I32EnumAttrCase<"concat", 0>;
def MoE_GateUpInterleaved : I32EnumAttrCase<"interleaved", 1>;
def MoE_GateUpLayoutKind : I32EnumAttr<"GateUpLayout",
    "where gate and up sit in a fused gate/up projection: gate in the first "
    "half (concat) or in the even columns (interleaved)",
    [MoE_GateUpConcat, MoE_GateUpInterleaved]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_GateUpLayoutAttr
    : EnumAttr<MoE_Dialect, MoE_GateUpLayoutKind, "gate_up_layout"> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_OutIn : I32EnumAttrCase<"out_in", 0>;
def MoE_InOut : I32EnumAttrCase<"in_out", 1>;
def MoE_WeightLayoutKind : I32EnumAttr<"WeightLayout",
    "orientation of projection matrices: [out, in] as torch.nn.Linear "
    "stores them, or [in, out] as fused 3-D expert tensors do",
    [MoE_OutIn, MoE_InOut]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_WeightLayoutAttr
    : EnumAttr<MoE_Dialect, MoE_WeightLayoutKind, "weight_layout"> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_LayoutGrouped : I32EnumAttrCase<"grouped", 0>;
def MoE_LayoutPerToken : I32EnumAttrCase<"per_token", 1>;
def MoE_LayoutRuntime : I32EnumAttrCase<"runtime", 2>;
def MoE_DispatchLayoutKind : I32EnumAttr<"DispatchLayout",
    "how a fused expert op visits the routed rows: grouped by expert (many "
    "tokens: one weight read per expert), per token (few tokens: no "
    "permutation, the decode path), or runtime (chosen at run time from the "
    "token count)", [MoE_LayoutGrouped, MoE_LayoutPerToken, MoE_LayoutRuntime]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_DispatchLayoutAttr
    : EnumAttr<MoE_Dialect, MoE_DispatchLayoutKind, "layout"> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_TopPReach : I32EnumAttrCase<"reach", 0>;
def MoE_TopPWithin : I32EnumAttrCase<"within", 1>;
def MoE_TopPPrefixKind : I32EnumAttr<"TopPPrefix",
    "which prefix of the sorted scores moe.top_p keeps: the shortest one "
    "whose sum reaches p (reach), or the longest one whose sum stays within "
    "p (within)", [MoE_TopPReach, MoE_TopPWithin]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_TopPPrefixAttr
    : EnumAttr<MoE_Dialect, MoE_TopPPrefixKind, "top_p_prefix"> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_CosineNone : I32EnumAttrCase<"none", 0>;
def MoE_CosineInput : I32EnumAttrCase<"input", 1>;
def MoE_CosineWeight : I32EnumAttrCase<"weight", 2>;
def MoE_CosineBoth : I32EnumAttrCase<"both", 3>;
def MoE_RouterNormalizeKind : I32EnumAttr<"RouterNormalize",
    "which operands of moe.router_linear are L2-normalised before the dot "
    "product: none (a plain linear router), the input rows, the weight rows, "
    "or both (cosine similarity)",
    [MoE_CosineNone, MoE_CosineInput, MoE_CosineWeight, MoE_CosineBoth]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}
def MoE_RouterNormalizeAttr
    : EnumAttr<MoE_Dialect, MoE_RouterNormalizeKind, "router_normalize"> {
  let assemblyFormat = "`<` $value `>`";
}

#endif // MOE_ATTRS_TD
