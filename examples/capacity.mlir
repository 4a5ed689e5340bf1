// GShard / Tutel top-2 with capacity_factor 1.25 (Switch-like small layer): softmax, top-2, gates normalised over the
// two slots, then each expert takes at most C = ceil(1.25 * T * 2 / 4) slots (slot 0 of every token first, then slot 1);
// slots past capacity are dropped (weight 0). The routing kernel enforces C in its last block, before the dispatch plan.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.router.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %top, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %gates = moe.normalize %vals : tensor<?x2xf32>
    %ids, %w = moe.capacity %top, %gates {capacity_factor = 1.25 : f32, num_experts = 4 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %w_gate = moe.weight ["model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.1.gate_proj.weight", "model.layers.0.mlp.experts.2.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x128xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x128x64xbf16>, tensor<4x128x64xbf16>, tensor<4x64x128xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    return %y : tensor<?x64xbf16>
  }
}
