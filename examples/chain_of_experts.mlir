// Chain-of-Experts: two routing iterations over one set of experts, each
// with its own router, and a residual add after each:
// x1 = x + moe_0(x), y = x1 + moe_1(x1).
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %w_gate = moe.weight ["model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.1.gate_proj.weight", "model.layers.0.mlp.experts.2.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight"] from ["model.safetensors"] : tensor<4x96x64xf32>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x96x64xf32>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x96xf32>
    // Iteration 0: its own router over the shared experts.
    %wr0 = moe.weight ["model.layers.0.mlp.gate.0.weight"] from ["model.safetensors"] : tensor<4x64xf32>
    %logits0 = moe.router_linear %x, %wr0 : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
    %p0 = moe.softmax %logits0 : tensor<?x4xf32>
    %ids0, %vals0 = moe.topk %p0 {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w0 = moe.normalize %vals0 : tensor<?x2xf32>
    %counts0, %offsets0, %rows0 = moe.dispatch %ids0 {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs0 = moe.permute %x, %rows0, %w0 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %ys0 = moe.expert_ffn %xs0, %offsets0 gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x96x64xf32>, tensor<4x96x64xf32>, tensor<4x64x96xf32>) -> tensor<?x64xf32>
    %m0 = moe.combine %ys0, %rows0, %w0 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %x1 = arith.addf %x, %m0 : tensor<?x64xf32>
    // Iteration 1: its own router over the shared experts.
    %wr1 = moe.weight ["model.layers.0.mlp.gate.1.weight"] from ["model.safetensors"] : tensor<4x64xf32>
    %logits1 = moe.router_linear %x1, %wr1 : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
    %p1 = moe.softmax %logits1 : tensor<?x4xf32>
    %ids1, %vals1 = moe.topk %p1 {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w1 = moe.normalize %vals1 : tensor<?x2xf32>
    %counts1, %offsets1, %rows1 = moe.dispatch %ids1 {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs1 = moe.permute %x1, %rows1, %w1 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %ys1 = moe.expert_ffn %xs1, %offsets1 gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x96x64xf32>, tensor<4x96x64xf32>, tensor<4x64x96xf32>) -> tensor<?x64xf32>
    %m1 = moe.combine %ys1, %rows1, %w1 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %y = arith.addf %x1, %m1 : tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}
