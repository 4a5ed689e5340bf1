// Issue 10, defect 4: router ops after moe.expert_choice (normalize, then
// scale) run on the kernels as on the reference.
// ROUTERS: 1
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["router.weight"] from ["model.safetensors"] : tensor<4x64xf32>
    %l = moe.router_linear %x, %wg : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
    %p = moe.softmax %l : tensor<?x4xf32>
    %ids, %v = moe.expert_choice %p {capacity = 3 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    %n = moe.normalize %v : tensor<?x4xf32>
    %w = moe.scale %n {factor = 2.500000e+00 : f32} : tensor<?x4xf32>
    %acnt, %aoff, %arows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %ag = moe.weight ["experts.0.gate", "experts.1.gate", "experts.2.gate", "experts.3.gate"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %au = moe.weight ["experts.0.up", "experts.1.up", "experts.2.up", "experts.3.up"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %ad = moe.weight ["experts.0.down", "experts.1.down", "experts.2.down", "experts.3.down"] from ["model.safetensors"] : tensor<4x64x32xf32>
    %axs = moe.permute %x, %arows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x64xf32>
    %ays = moe.expert_ffn %axs, %aoff gate(%ag) up(%au) down(%ad) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ays, %arows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}
