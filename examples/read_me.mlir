// Read-ME (Cai et al. 2024): a pre-gating router, decoupled from the layers, picks each token's expert once before the first layer (softmax, top-1); every layer takes that routing as given (its arguments ids and weights) and applies its routed expert, weighted by the router probability, plus an always-on FFN. The pre-gating function carries moe.role = "pregate": moe-run --all-layers (and the APIs' run_all) runs it once, on the first layer's input, and gives its routing to every layer.
module attributes {moe.weight_root = "."} {
  func.func @pregate(%x: tensor<?x64xf32>) -> (tensor<?x1xi32>, tensor<?x1xf32>) attributes {moe.layer = 0 : i64, moe.role = "pregate"} {
    %wr = moe.weight ["router.weight"] from ["model.safetensors"] : tensor<4x64xf32>
    %logits = moe.router_linear %x, %wr : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %w = moe.topk %p {k = 1 : i64} : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
    return %ids, %w : tensor<?x1xi32>, tensor<?x1xf32>
  }
  func.func @layer_0(%x: tensor<?x64xf32>, %ids: tensor<?x1xi32>, %w: tensor<?x1xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xf32>
    %w_gate = moe.weight ["model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.1.gate_proj.weight", "model.layers.0.mlp.experts.2.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xf32>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xf32>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x128xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x128x64xf32>, tensor<4x128x64xf32>, tensor<4x64x128xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xf32>
    %s_gate = moe.weight ["model.layers.0.mlp.shared.gate_proj.weight"] from ["model.safetensors"] : tensor<128x64xf32>
    %s_up = moe.weight ["model.layers.0.mlp.shared.up_proj.weight"] from ["model.safetensors"] : tensor<128x64xf32>
    %s_down = moe.weight ["model.layers.0.mlp.shared.down_proj.weight"] from ["model.safetensors"] : tensor<64x128xf32>
    %sh = moe.ffn %x gate(%s_gate) up(%s_up) down(%s_down) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x64xf32>
    %out = arith.addf %y, %sh : tensor<?x64xf32>
    return %out : tensor<?x64xf32>
  }
  func.func @layer_1(%x: tensor<?x64xf32>, %ids: tensor<?x1xi32>, %w: tensor<?x1xf32>) -> tensor<?x64xf32> attributes {moe.layer = 1 : i64} {
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xf32>
    %w_gate = moe.weight ["model.layers.1.mlp.experts.0.gate_proj.weight", "model.layers.1.mlp.experts.1.gate_proj.weight", "model.layers.1.mlp.experts.2.gate_proj.weight", "model.layers.1.mlp.experts.3.gate_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xf32>
    %w_up = moe.weight ["model.layers.1.mlp.experts.0.up_proj.weight", "model.layers.1.mlp.experts.1.up_proj.weight", "model.layers.1.mlp.experts.2.up_proj.weight", "model.layers.1.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xf32>
    %w_down = moe.weight ["model.layers.1.mlp.experts.0.down_proj.weight", "model.layers.1.mlp.experts.1.down_proj.weight", "model.layers.1.mlp.experts.2.down_proj.weight", "model.layers.1.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x128xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x128x64xf32>, tensor<4x128x64xf32>, tensor<4x64x128xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xf32>
    %s_gate = moe.weight ["model.layers.1.mlp.shared.gate_proj.weight"] from ["model.safetensors"] : tensor<128x64xf32>
    %s_up = moe.weight ["model.layers.1.mlp.shared.up_proj.weight"] from ["model.safetensors"] : tensor<128x64xf32>
    %s_down = moe.weight ["model.layers.1.mlp.shared.down_proj.weight"] from ["model.safetensors"] : tensor<64x128xf32>
    %sh = moe.ffn %x gate(%s_gate) up(%s_up) down(%s_down) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x64xf32>
    %out = arith.addf %y, %sh : tensor<?x64xf32>
    return %out : tensor<?x64xf32>
  }
}
