// Elementwise glue after the fused ops, bf16: a layer output scaled by
// splat constants and combined with the input; %a has two uses (a kernel of
// its own), the rest fuses into one elementwise kernel.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.block_sparse_moe.gate.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %w_gate = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w1.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_up = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w3.weight", "model.layers.0.block_sparse_moe.experts.1.w3.weight", "model.layers.0.block_sparse_moe.experts.2.w3.weight", "model.layers.0.block_sparse_moe.experts.3.w3.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_down = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w2.weight", "model.layers.0.block_sparse_moe.experts.1.w2.weight", "model.layers.0.block_sparse_moe.experts.2.w2.weight", "model.layers.0.block_sparse_moe.experts.3.w2.weight"] from ["model.safetensors"] : tensor<4x64x128xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x128x64xbf16>, tensor<4x128x64xbf16>, tensor<4x64x128xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %c0 = arith.constant 0 : index
    %t = tensor.dim %x, %c0 : tensor<?x64xbf16>
    %half = arith.constant 0.5 : bf16
    %three = arith.constant 3.0 : bf16
    %s = tensor.splat %half[%t] : tensor<?x64xbf16>
    %s2 = tensor.splat %three[%t] : tensor<?x64xbf16>
    %a = arith.mulf %y, %s : tensor<?x64xbf16>
    %b = arith.subf %a, %x : tensor<?x64xbf16>
    %n = arith.negf %b : tensor<?x64xbf16>
    %m = arith.maximumf %n, %a : tensor<?x64xbf16>
    %d = arith.divf %m, %s2 : tensor<?x64xbf16>
    %e = arith.minimumf %d, %x : tensor<?x64xbf16>
    %f = arith.addf %e, %s : tensor<?x64xbf16>
    return %f : tensor<?x64xbf16>
  }
}
