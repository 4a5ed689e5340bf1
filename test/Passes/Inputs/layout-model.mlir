// Four MoE layers of 8 experts (Mixtral-style routing) for the layout
// pass tests; the weights are never read.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x16xbf16>) -> tensor<?x16xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["l0.gate"] from ["model.safetensors"] : tensor<8x16xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xf32>
    %p = moe.softmax %logits : tensor<?x8xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xbf16>
    %w_gate = moe.weight ["l0.e0.w1", "l0.e1.w1", "l0.e2.w1", "l0.e3.w1", "l0.e4.w1", "l0.e5.w1", "l0.e6.w1", "l0.e7.w1"] from ["model.safetensors"] : tensor<8x32x16xbf16>
    %w_up = moe.weight ["l0.e0.w3", "l0.e1.w3", "l0.e2.w3", "l0.e3.w3", "l0.e4.w3", "l0.e5.w3", "l0.e6.w3", "l0.e7.w3"] from ["model.safetensors"] : tensor<8x32x16xbf16>
    %w_down = moe.weight ["l0.e0.w2", "l0.e1.w2", "l0.e2.w2", "l0.e3.w2", "l0.e4.w2", "l0.e5.w2", "l0.e6.w2", "l0.e7.w2"] from ["model.safetensors"] : tensor<8x16x32xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x16xbf16>, tensor<9xi32>, tensor<8x32x16xbf16>, tensor<8x32x16xbf16>, tensor<8x16x32xbf16>) -> tensor<?x16xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xbf16>
    return %y : tensor<?x16xbf16>
  }
  func.func @layer_1(%x: tensor<?x16xbf16>) -> tensor<?x16xbf16> attributes {moe.layer = 1 : i64} {
    %wg = moe.weight ["l1.gate"] from ["model.safetensors"] : tensor<8x16xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xf32>
    %p = moe.softmax %logits : tensor<?x8xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xbf16>
    %w_gate = moe.weight ["l1.e0.w1", "l1.e1.w1", "l1.e2.w1", "l1.e3.w1", "l1.e4.w1", "l1.e5.w1", "l1.e6.w1", "l1.e7.w1"] from ["model.safetensors"] : tensor<8x32x16xbf16>
    %w_up = moe.weight ["l1.e0.w3", "l1.e1.w3", "l1.e2.w3", "l1.e3.w3", "l1.e4.w3", "l1.e5.w3", "l1.e6.w3", "l1.e7.w3"] from ["model.safetensors"] : tensor<8x32x16xbf16>
    %w_down = moe.weight ["l1.e0.w2", "l1.e1.w2", "l1.e2.w2", "l1.e3.w2", "l1.e4.w2", "l1.e5.w2", "l1.e6.w2", "l1.e7.w2"] from ["model.safetensors"] : tensor<8x16x32xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x16xbf16>, tensor<9xi32>, tensor<8x32x16xbf16>, tensor<8x32x16xbf16>, tensor<8x16x32xbf16>) -> tensor<?x16xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xbf16>
    return %y : tensor<?x16xbf16>
  }
  func.func @layer_2(%x: tensor<?x16xbf16>) -> tensor<?x16xbf16> attributes {moe.layer = 2 : i64} {
    %wg = moe.weight ["l2.gate"] from ["model.safetensors"] : tensor<8x16xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xf32>
    %p = moe.softmax %logits : tensor<?x8xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xbf16>
    %w_gate = moe.weight ["l2.e0.w1", "l2.e1.w1", "l2.e2.w1", "l2.e3.w1", "l2.e4.w1", "l2.e5.w1", "l2.e6.w1", "l2.e7.w1"] from ["model.safetensors"] : tensor<8x32x16xbf16>
    %w_up = moe.weight ["l2.e0.w3", "l2.e1.w3", "l2.e2.w3", "l2.e3.w3", "l2.e4.w3", "l2.e5.w3", "l2.e6.w3", "l2.e7.w3"] from ["model.safetensors"] : tensor<8x32x16xbf16>
    %w_down = moe.weight ["l2.e0.w2", "l2.e1.w2", "l2.e2.w2", "l2.e3.w2", "l2.e4.w2", "l2.e5.w2", "l2.e6.w2", "l2.e7.w2"] from ["model.safetensors"] : tensor<8x16x32xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x16xbf16>, tensor<9xi32>, tensor<8x32x16xbf16>, tensor<8x32x16xbf16>, tensor<8x16x32xbf16>) -> tensor<?x16xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xbf16>
    return %y : tensor<?x16xbf16>
  }
  func.func @layer_3(%x: tensor<?x16xbf16>) -> tensor<?x16xbf16> attributes {moe.layer = 3 : i64} {
    %wg = moe.weight ["l3.gate"] from ["model.safetensors"] : tensor<8x16xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xf32>
    %p = moe.softmax %logits : tensor<?x8xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xbf16>
    %w_gate = moe.weight ["l3.e0.w1", "l3.e1.w1", "l3.e2.w1", "l3.e3.w1", "l3.e4.w1", "l3.e5.w1", "l3.e6.w1", "l3.e7.w1"] from ["model.safetensors"] : tensor<8x32x16xbf16>
    %w_up = moe.weight ["l3.e0.w3", "l3.e1.w3", "l3.e2.w3", "l3.e3.w3", "l3.e4.w3", "l3.e5.w3", "l3.e6.w3", "l3.e7.w3"] from ["model.safetensors"] : tensor<8x32x16xbf16>
    %w_down = moe.weight ["l3.e0.w2", "l3.e1.w2", "l3.e2.w2", "l3.e3.w2", "l3.e4.w2", "l3.e5.w2", "l3.e6.w2", "l3.e7.w2"] from ["model.safetensors"] : tensor<8x16x32xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x16xbf16>, tensor<9xi32>, tensor<8x32x16xbf16>, tensor<8x32x16xbf16>, tensor<8x16x32xbf16>) -> tensor<?x16xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xbf16>
    return %y : tensor<?x16xbf16>
  }
}
