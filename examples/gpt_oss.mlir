// gpt-oss: router with bias, top-k over logits, softmax over the selected; interleaved gate/up in [E, in, out] layout with biases; clamped swiglu.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.router.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %bg = moe.weight ["model.layers.0.mlp.router.bias"] from ["model.safetensors"] : tensor<4xf32>
    %logits = moe.router_linear %x, %wg bias %bg : (tensor<?x64xbf16>, tensor<4x64xbf16>, tensor<4xf32>) -> tensor<?x4xf32>
    %ids, %vals = moe.topk %logits {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.softmax %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %gate_up = moe.weight ["model.layers.0.mlp.experts.gate_up_proj"] from ["model.safetensors"] : tensor<4x64x256xbf16>
    %gate_up_b = moe.weight ["model.layers.0.mlp.experts.gate_up_proj_bias"] from ["model.safetensors"] : tensor<4x256xbf16>
    %down = moe.weight ["model.layers.0.mlp.experts.down_proj"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %down_b = moe.weight ["model.layers.0.mlp.experts.down_proj_bias"] from ["model.safetensors"] : tensor<4x64xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate_up(%gate_up) down(%down) gate_up_bias(%gate_up_b) down_bias(%down_b) {activation = #moe.activation<swiglu_clamped>, alpha = 1.702000e+00 : f32, gate_up_layout = #moe.gate_up_layout<interleaved>, limit = 7.000000e+00 : f32, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x64x256xbf16>, tensor<4x128x64xbf16>, tensor<4x256xbf16>, tensor<4x64xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    return %y : tensor<?x64xbf16>
  }
}
