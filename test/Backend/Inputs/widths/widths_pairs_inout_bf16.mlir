// Experts of unequal width, bf16 weights (tensor cores on the grouped path), gpt-oss's layout: a fused gate_up of interleaved
// pairs stored [in, out] (weight_layout in_out), clamped swiglu with biases, top-2 of 4; widths 24, 100, 128, 56 of 128 (ends
// inside 16-byte words and tiles: IVec 4, scalar loads on the decode path); a gated shared expert of one width (128).
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.router.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %ids, %vals = moe.topk %logits {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.softmax %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %w_gu = moe.weight ["model.layers.0.mlp.experts.gate_up_proj"] from ["model.safetensors"] : tensor<4x64x256xbf16>
    %b_gu = moe.weight ["model.layers.0.mlp.experts.gate_up_proj_bias"] from ["model.safetensors"] : tensor<4x256xbf16>
    %w_down = moe.weight ["model.layers.0.mlp.experts.down_proj"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %b_down = moe.weight ["model.layers.0.mlp.experts.down_proj_bias"] from ["model.safetensors"] : tensor<4x64xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate_up(%w_gu) down(%w_down) gate_up_bias(%b_gu) down_bias(%b_down) {activation = #moe.activation<swiglu_clamped>, gate_up_layout = #moe.gate_up_layout<interleaved>, weight_layout = #moe.weight_layout<in_out>, widths = array<i64: 24, 100, 128, 56>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x64x256xbf16>, tensor<4x128x64xbf16>, tensor<4x256xbf16>, tensor<4x64xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %s_gate = moe.weight ["model.layers.0.mlp.shared_expert.gate_proj.weight"] from ["model.safetensors"] : tensor<128x64xbf16>
    %s_up = moe.weight ["model.layers.0.mlp.shared_expert.up_proj.weight"] from ["model.safetensors"] : tensor<128x64xbf16>
    %s_down = moe.weight ["model.layers.0.mlp.shared_expert.down_proj.weight"] from ["model.safetensors"] : tensor<64x128xbf16>
    %sh = moe.ffn %x gate(%s_gate) up(%s_up) down(%s_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<128x64xbf16>, tensor<128x64xbf16>, tensor<64x128xbf16>) -> tensor<?x64xbf16>
    %out = arith.addf %y, %sh : tensor<?x64xbf16>
    return %out : tensor<?x64xbf16>
  }
}
