// Llama 4: top-1 over logits, sigmoid of the selected logit scales the expert's input; fused gate/up (concat) in [E, in, out] layout; a shared expert.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.feed_forward.router.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %ids, %vals = moe.topk %logits {k = 1 : i64} : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
    %w = moe.sigmoid %vals : tensor<?x1xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w scale_by_weight : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xbf16>
    %gate_up = moe.weight ["model.layers.0.feed_forward.experts.gate_up_proj"] from ["model.safetensors"] : tensor<4x64x256xbf16>
    %down = moe.weight ["model.layers.0.feed_forward.experts.down_proj"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate_up(%gate_up) down(%down) {activation = #moe.activation<silu>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x64x256xbf16>, tensor<4x128x64xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w unweighted : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xbf16>
    %s_gate = moe.weight ["model.layers.0.feed_forward.shared_expert.gate_proj.weight"] from ["model.safetensors"] : tensor<128x64xbf16>
    %s_up = moe.weight ["model.layers.0.feed_forward.shared_expert.up_proj.weight"] from ["model.safetensors"] : tensor<128x64xbf16>
    %s_down = moe.weight ["model.layers.0.feed_forward.shared_expert.down_proj.weight"] from ["model.safetensors"] : tensor<64x128xbf16>
    %sh = moe.ffn %x gate(%s_gate) up(%s_up) down(%s_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<128x64xbf16>, tensor<128x64xbf16>, tensor<64x128xbf16>) -> tensor<?x64xbf16>
    %out = arith.addf %y, %sh : tensor<?x64xbf16>
    return %out : tensor<?x64xbf16>
  }
}
