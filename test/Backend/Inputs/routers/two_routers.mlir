// Issue 10, defect 5: two routers in one layer (Chain-of-Experts without
// the residual): --routing-out writes PREFIX.ids.npy for router 0 and
// PREFIX.r1.ids.npy for router 1, the same on every backend.
// ROUTERS: 2
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %wg0 = moe.weight ["router0.weight"] from ["model.safetensors"] : tensor<4x64xf32>
    %l0 = moe.router_linear %x, %wg0 : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
    %p0 = moe.softmax %l0 : tensor<?x4xf32>
    %ids0, %v0 = moe.topk %p0 {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w0 = moe.normalize %v0 : tensor<?x2xf32>
    %acnt, %aoff, %arows = moe.dispatch %ids0 {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %ag = moe.weight ["first.0.gate", "first.1.gate", "first.2.gate", "first.3.gate"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %au = moe.weight ["first.0.up", "first.1.up", "first.2.up", "first.3.up"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %ad = moe.weight ["first.0.down", "first.1.down", "first.2.down", "first.3.down"] from ["model.safetensors"] : tensor<4x64x32xf32>
    %axs = moe.permute %x, %arows, %w0 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %ays = moe.expert_ffn %axs, %aoff gate(%ag) up(%au) down(%ad) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
    %y0 = moe.combine %ays, %arows, %w0 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %wg1 = moe.weight ["router1.weight"] from ["model.safetensors"] : tensor<4x64xf32>
    %l1 = moe.router_linear %y0, %wg1 : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
    %s1 = moe.sigmoid %l1 : tensor<?x4xf32>
    %ids1, %w1 = moe.topk %s1 {k = 3 : i64} : tensor<?x4xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
    %bcnt, %boff, %brows = moe.dispatch %ids1 {num_experts = 4 : i64} : tensor<?x3xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %bg = moe.weight ["second.0.gate", "second.1.gate", "second.2.gate", "second.3.gate"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %bu = moe.weight ["second.0.up", "second.1.up", "second.2.up", "second.3.up"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %bd = moe.weight ["second.0.down", "second.1.down", "second.2.down", "second.3.down"] from ["model.safetensors"] : tensor<4x64x32xf32>
    %bxs = moe.permute %y0, %brows, %w1 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x3xf32>) -> tensor<?x64xf32>
    %bys = moe.expert_ffn %bxs, %boff gate(%bg) up(%bu) down(%bd) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
    %y1 = moe.combine %bys, %brows, %w1 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x3xf32>) -> tensor<?x64xf32>
    return %y1 : tensor<?x64xf32>
  }
}
