// DynMoLE: q_proj(x) plus a mixture of 4 LoRA experts under hybrid routing. Top-p with DynMoLE's prefix (cumulative probability <= 0.75, at least keep_top_k = 2 experts); a token whose normalised Tsallis entropy (q = 1.1, epsilon 1e-5) exceeds 0.9 takes every expert instead. Weights are the softmax probabilities, not renormalised.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wr = moe.weight ["router.weight"] from ["router.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wr : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %top, %topw = moe.top_p %p {max_k = 4 : i64, min_k = 2 : i64, p = 7.500000e-01 : f32, prefix = #moe.top_p_prefix<within>} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    %ids, %w = moe.entropy_fallback %p, %top, %topw {epsilon = 9.99999974E-6 : f32, normalized, q = 1.100000e+00 : f32, threshold = 0.899999976 : f32} : tensor<?x4xf32>, tensor<?x4xi32>, tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    %base = moe.weight ["model.layers.0.self_attn.q_proj.weight"] from ["model.safetensors"] : tensor<64x64xbf16>
    %a = moe.weight ["adapter0/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter1/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter2/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "adapter3/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] from ["model.safetensors"] : tensor<4x8x64xbf16>
    %bb = moe.weight ["adapter0/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter1/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter2/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "adapter3/base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] from ["model.safetensors"] : tensor<4x64x8xbf16>
    %y = moe.lora_mixture %x base(%base) lora(%a, %bb) routing(%ids, %w) {scales = [2.0 : f32, 2.0 : f32, 2.0 : f32, 2.0 : f32]} : (tensor<?x64xbf16>, tensor<64x64xbf16>, tensor<4x8x64xbf16>, tensor<4x64x8xbf16>, tensor<?x4xi32>, tensor<?x4xf32>) -> tensor<?x64xbf16>
    return %y : tensor<?x64xbf16>
  }
}
