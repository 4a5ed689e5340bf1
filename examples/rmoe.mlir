// RMoE (Qiu et al. 2024, "Layerwise Recurrent Router for Mixture-of-Experts"): the router of layer L reads a GRU state that crosses layers, h_L = GRUCell(W1 x, h_{L-1}) (torch.nn.GRUCell), and scores the experts from it: softmax(W2 h_L), top-2, renormalised; gated-SiLU experts. Each layer takes the previous state as its extra input "state" (moe.input) and returns the new one as its extra result "state" (moe.output): moe-run --all-layers carries it from layer to layer. The kernels: moe.gru_cell computes W1 x and the GRU step in one kernel, and the router of the new state fuses into moe.fused_route with the state as its routed tokens.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>, %h: tensor<?x32xf32> {moe.input = "state"}) -> (tensor<?x64xf32>, tensor<?x32xf32> {moe.output = "state"}) attributes {moe.layer = 0 : i64} {
    %w1 = moe.weight ["model.layers.0.mlp.router.input_proj.weight"] from ["model.safetensors"] : tensor<16x64xf32>
    %wih = moe.weight ["model.layers.0.mlp.router.gru.weight_ih"] from ["model.safetensors"] : tensor<96x16xf32>
    %whh = moe.weight ["model.layers.0.mlp.router.gru.weight_hh"] from ["model.safetensors"] : tensor<96x32xf32>
    %bih = moe.weight ["model.layers.0.mlp.router.gru.bias_ih"] from ["model.safetensors"] : tensor<96xf32>
    %bhh = moe.weight ["model.layers.0.mlp.router.gru.bias_hh"] from ["model.safetensors"] : tensor<96xf32>
    %w2 = moe.weight ["model.layers.0.mlp.router.output_proj.weight"] from ["model.safetensors"] : tensor<8x32xf32>
    %u = moe.router_linear %x, %w1 : (tensor<?x64xf32>, tensor<16x64xf32>) -> tensor<?x16xf32>
    %h1 = moe.gru_cell %u, %h weights(%wih, %whh) biases(%bih, %bhh) : tensor<?x16xf32>, tensor<?x32xf32>, tensor<96x16xf32>, tensor<96x32xf32>, tensor<96xf32>, tensor<96xf32>
    %logits = moe.router_linear %h1, %w2 : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
    %p = moe.softmax %logits : tensor<?x8xf32>
    %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %v : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %w_gate = moe.weight ["model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.1.gate_proj.weight", "model.layers.0.mlp.experts.2.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight", "model.layers.0.mlp.experts.4.gate_proj.weight", "model.layers.0.mlp.experts.5.gate_proj.weight", "model.layers.0.mlp.experts.6.gate_proj.weight", "model.layers.0.mlp.experts.7.gate_proj.weight"] from ["model.safetensors"] : tensor<8x128x64xf32>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight", "model.layers.0.mlp.experts.4.up_proj.weight", "model.layers.0.mlp.experts.5.up_proj.weight", "model.layers.0.mlp.experts.6.up_proj.weight", "model.layers.0.mlp.experts.7.up_proj.weight"] from ["model.safetensors"] : tensor<8x128x64xf32>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight", "model.layers.0.mlp.experts.4.down_proj.weight", "model.layers.0.mlp.experts.5.down_proj.weight", "model.layers.0.mlp.experts.6.down_proj.weight", "model.layers.0.mlp.experts.7.down_proj.weight"] from ["model.safetensors"] : tensor<8x64x128xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    return %y, %h1 : tensor<?x64xf32>, tensor<?x32xf32>
  }
  func.func @layer_1(%x: tensor<?x64xf32>, %h: tensor<?x32xf32> {moe.input = "state"}) -> (tensor<?x64xf32>, tensor<?x32xf32> {moe.output = "state"}) attributes {moe.layer = 1 : i64} {
    %w1 = moe.weight ["model.layers.1.mlp.router.input_proj.weight"] from ["model.safetensors"] : tensor<16x64xf32>
    %wih = moe.weight ["model.layers.1.mlp.router.gru.weight_ih"] from ["model.safetensors"] : tensor<96x16xf32>
    %whh = moe.weight ["model.layers.1.mlp.router.gru.weight_hh"] from ["model.safetensors"] : tensor<96x32xf32>
    %bih = moe.weight ["model.layers.1.mlp.router.gru.bias_ih"] from ["model.safetensors"] : tensor<96xf32>
    %bhh = moe.weight ["model.layers.1.mlp.router.gru.bias_hh"] from ["model.safetensors"] : tensor<96xf32>
    %w2 = moe.weight ["model.layers.1.mlp.router.output_proj.weight"] from ["model.safetensors"] : tensor<8x32xf32>
    %u = moe.router_linear %x, %w1 : (tensor<?x64xf32>, tensor<16x64xf32>) -> tensor<?x16xf32>
    %h1 = moe.gru_cell %u, %h weights(%wih, %whh) biases(%bih, %bhh) : tensor<?x16xf32>, tensor<?x32xf32>, tensor<96x16xf32>, tensor<96x32xf32>, tensor<96xf32>, tensor<96xf32>
    %logits = moe.router_linear %h1, %w2 : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
    %p = moe.softmax %logits : tensor<?x8xf32>
    %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %v : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %w_gate = moe.weight ["model.layers.1.mlp.experts.0.gate_proj.weight", "model.layers.1.mlp.experts.1.gate_proj.weight", "model.layers.1.mlp.experts.2.gate_proj.weight", "model.layers.1.mlp.experts.3.gate_proj.weight", "model.layers.1.mlp.experts.4.gate_proj.weight", "model.layers.1.mlp.experts.5.gate_proj.weight", "model.layers.1.mlp.experts.6.gate_proj.weight", "model.layers.1.mlp.experts.7.gate_proj.weight"] from ["model.safetensors"] : tensor<8x128x64xf32>
    %w_up = moe.weight ["model.layers.1.mlp.experts.0.up_proj.weight", "model.layers.1.mlp.experts.1.up_proj.weight", "model.layers.1.mlp.experts.2.up_proj.weight", "model.layers.1.mlp.experts.3.up_proj.weight", "model.layers.1.mlp.experts.4.up_proj.weight", "model.layers.1.mlp.experts.5.up_proj.weight", "model.layers.1.mlp.experts.6.up_proj.weight", "model.layers.1.mlp.experts.7.up_proj.weight"] from ["model.safetensors"] : tensor<8x128x64xf32>
    %w_down = moe.weight ["model.layers.1.mlp.experts.0.down_proj.weight", "model.layers.1.mlp.experts.1.down_proj.weight", "model.layers.1.mlp.experts.2.down_proj.weight", "model.layers.1.mlp.experts.3.down_proj.weight", "model.layers.1.mlp.experts.4.down_proj.weight", "model.layers.1.mlp.experts.5.down_proj.weight", "model.layers.1.mlp.experts.6.down_proj.weight", "model.layers.1.mlp.experts.7.down_proj.weight"] from ["model.safetensors"] : tensor<8x64x128xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<9xi32>, tensor<8x128x64xf32>, tensor<8x128x64xf32>, tensor<8x64x128xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    return %y, %h1 : tensor<?x64xf32>, tensor<?x32xf32>
  }
}
