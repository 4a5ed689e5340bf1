// ReGLU (gated relu: down(relu(gate x) * up x)), f32, top-2, with a gated relu shared expert: the relu activation of the
// gated form.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.gate.weight"] from ["model.safetensors"] : tensor<4x64xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %vals : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %w_gate = moe.weight ["model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.1.gate_proj.weight", "model.layers.0.mlp.experts.2.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight"] from ["model.safetensors"] : tensor<4x72x64xf32>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x72x64xf32>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x72xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<relu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x72x64xf32>, tensor<4x72x64xf32>, tensor<4x64x72xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ys, %rows, %vals : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %s_gate = moe.weight ["model.layers.0.mlp.shared_expert.gate_proj.weight"] from ["model.safetensors"] : tensor<48x64xf32>
    %s_up = moe.weight ["model.layers.0.mlp.shared_expert.up_proj.weight"] from ["model.safetensors"] : tensor<48x64xf32>
    %s_down = moe.weight ["model.layers.0.mlp.shared_expert.down_proj.weight"] from ["model.safetensors"] : tensor<64x48xf32>
    %sh = moe.ffn %x gate(%s_gate) up(%s_up) down(%s_down) {activation = #moe.activation<relu>} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<48x64xf32>, tensor<64x48xf32>) -> tensor<?x64xf32>
    %out = arith.addf %y, %sh : tensor<?x64xf32>
    return %out : tensor<?x64xf32>
  }
}
