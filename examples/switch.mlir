// Switch Transformer / T5-style MoE FFN (also SMoE-Dropout's experts): softmax router, top-1, the expert's output scaled by its
// router probability (no renormalisation); non-gated experts with biases: E_i(x) = wo_i(relu(wi_i x + bi_i)) + bo_i.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.router.classifier.weight"] from ["model.safetensors"] : tensor<4x64xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %w = moe.topk %p {k = 1 : i64} : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xf32>
    %w_in = moe.weight ["model.layers.0.mlp.experts.0.wi.weight", "model.layers.0.mlp.experts.1.wi.weight", "model.layers.0.mlp.experts.2.wi.weight", "model.layers.0.mlp.experts.3.wi.weight"] from ["model.safetensors"] : tensor<4x128x64xf32>
    %b_in = moe.weight ["model.layers.0.mlp.experts.0.wi.bias", "model.layers.0.mlp.experts.1.wi.bias", "model.layers.0.mlp.experts.2.wi.bias", "model.layers.0.mlp.experts.3.wi.bias"] from ["model.safetensors"] : tensor<4x128xf32>
    %w_out = moe.weight ["model.layers.0.mlp.experts.0.wo.weight", "model.layers.0.mlp.experts.1.wo.weight", "model.layers.0.mlp.experts.2.wo.weight", "model.layers.0.mlp.experts.3.wo.weight"] from ["model.safetensors"] : tensor<4x64x128xf32>
    %b_out = moe.weight ["model.layers.0.mlp.experts.0.wo.bias", "model.layers.0.mlp.experts.1.wo.bias", "model.layers.0.mlp.experts.2.wo.bias", "model.layers.0.mlp.experts.3.wo.bias"] from ["model.safetensors"] : tensor<4x64xf32>
    %ys = moe.expert_ffn %xs, %offsets non_gated up(%w_in) down(%w_out) up_bias(%b_in) down_bias(%b_out) {activation = #moe.activation<relu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x128x64xf32>, tensor<4x64x128xf32>, tensor<4x128xf32>, tensor<4x64xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}
