// LoRA-Mixer / MixLoRA: q_proj(x) plus a routed mixture of 4 LoRA experts (top-2, renormalised).
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wr = moe.weight ["router.weight"] from ["router.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wr : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %base = moe.weight ["model.layers.0.self_attn.q_proj.weight"] from ["model.safetensors"] : tensor<64x64xbf16>
    %a = moe.weight ["adapter0/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter1/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter2/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter3/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] from ["model.safetensors"] : tensor<4x8x64xbf16>
    %bb = moe.weight ["adapter0/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter1/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter2/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter3/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] from ["model.safetensors"] : tensor<4x64x8xbf16>
    %y = moe.lora_mixture %x base(%base) lora(%a, %bb) routing(%ids, %w) {scales = [2.0 : f32, 2.0 : f32, 1.0 : f32, 4.0 : f32]} : (tensor<?x64xbf16>, tensor<64x64xbf16>, tensor<4x8x64xbf16>, tensor<4x64x8xbf16>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    return %y : tensor<?x64xbf16>
  }
}
