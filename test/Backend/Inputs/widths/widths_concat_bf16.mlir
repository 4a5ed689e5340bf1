// Experts of unequal width, bf16 weights stored [out, in], a fused gate_up of concatenated halves (gate rows [0, w), up rows
// [136, 136 + w)), top-2 of 3 plus a null expert; widths 8, 72, 40 of 136 (IVec 8: 16-byte loads; the widest, 72, is narrower
// than the stack: 2 column tiles instead of 3).
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.router.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %ids_ffn, %w = moe.drop_null_experts %ids, %vals {num_experts = 3 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids_ffn {num_experts = 3 : i64} : tensor<?x2xi32> -> tensor<3xi32>, tensor<4xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %w_gu = moe.weight ["model.layers.0.mlp.experts.gate_up_proj"] from ["model.safetensors"] : tensor<3x272x64xbf16>
    %w_down = moe.weight ["model.layers.0.mlp.experts.down_proj"] from ["model.safetensors"] : tensor<3x64x136xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate_up(%w_gu) down(%w_down) {activation = #moe.activation<gelu>, widths = array<i64: 8, 72, 40>} : (tensor<?x64xbf16>, tensor<4xi32>, tensor<3x272x64xbf16>, tensor<3x64x136xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    return %y : tensor<?x64xbf16>
  }
}
