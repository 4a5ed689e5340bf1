// Issue 10, defect 3: moe.softmax over a variable-k selection is masked:
// empty slots (id -1) get weight exactly 0, the real slots sum to 1.
// ROUTERS: 1 MASKED
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["router.weight"] from ["model.safetensors"] : tensor<8x64xf32>
    %l = moe.router_linear %x, %wg : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
    %ids, %v = moe.threshold %l {max_k = 3 : i64, threshold = 0.000000e+00 : f32} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
    %w = moe.softmax %v : tensor<?x3xf32>
    %acnt, %aoff, %arows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x3xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
    %ag = moe.weight ["experts.0.gate", "experts.1.gate", "experts.2.gate", "experts.3.gate", "experts.4.gate", "experts.5.gate", "experts.6.gate", "experts.7.gate"] from ["model.safetensors"] : tensor<8x32x64xf32>
    %au = moe.weight ["experts.0.up", "experts.1.up", "experts.2.up", "experts.3.up", "experts.4.up", "experts.5.up", "experts.6.up", "experts.7.up"] from ["model.safetensors"] : tensor<8x32x64xf32>
    %ad = moe.weight ["experts.0.down", "experts.1.down", "experts.2.down", "experts.3.down", "experts.4.down", "experts.5.down", "experts.6.down", "experts.7.down"] from ["model.safetensors"] : tensor<8x64x32xf32>
    %axs = moe.permute %x, %arows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x3xf32>) -> tensor<?x64xf32>
    %ays = moe.expert_ffn %axs, %aoff gate(%ag) up(%au) down(%ad) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<9xi32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ays, %arows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x3xf32>) -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}
