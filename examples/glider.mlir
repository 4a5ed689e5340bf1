// GLIDER: q_proj(x) plus a mixture of 8 LoRA experts under multi-scale routing. The local router scores each token by the cosine similarity of its hidden state and each expert's gate vector (scale 8 = sqrt(H), as GLIDER's code gets from standardised vectors and its 1/sqrt(H) factor); the global router's per-sequence scores (an extra layer input, [B, 8], one row per query from its task embedding) are added to every token of the sequence through the token-to-sequence map (an extra input, [T]); then softmax, top-2, renormalised weights.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>, %task: tensor<?x8xf32> {moe.input = "seq_scores"}, %seq: tensor<?xi32> {moe.input = "seq_map"}) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %wr = moe.weight ["router.weight"] from ["router.safetensors"] : tensor<8x64xf32>
    %local = moe.router_linear %x, %wr {normalize = #moe.router_normalize<both>, scale = 8.000000e+00 : f32} : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
    %s = moe.add_sequence_scores %local, %task, %seq : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xi32>
    %p = moe.softmax %s : tensor<?x8xf32>
    %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %v {epsilon = 9.99999997E-7 : f32} : tensor<?x2xf32>
    %base = moe.weight ["model.layers.0.self_attn.q_proj.weight"] from ["model.safetensors"] : tensor<64x64xf32>
    %a = moe.weight ["adapter0/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter1/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter2/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter3/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter4/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter5/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter6/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter7/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] from ["model.safetensors"] : tensor<8x4x64xf32>
    %bb = moe.weight ["adapter0/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter1/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter2/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter3/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter4/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter5/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter6/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter7/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] from ["model.safetensors"] : tensor<8x64x4xf32>
    %y = moe.lora_mixture %x base(%base) lora(%a, %bb) routing(%ids, %w) {scales = [1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32]} : (tensor<?x64xf32>, tensor<64x64xf32>, tensor<8x4x64xf32>, tensor<8x64x4xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}
