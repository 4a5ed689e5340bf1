// Sizes that are not multiples of the grouped kernels' tiles (BM = BN = 64,
// BK = 32) nor always of a 16-byte vector, for every weight layout and
// activation/weight type pair the grouped kernels specialise on: partial row,
// column and reduction tiles, element-wise tile loads, split f32 operands.
module attributes {moe.weight_root = "."} {
  // bf16 activations and weights, [out, in] gate and up, gelu_tanh, K = 3 of
  // 5 experts, a shared expert (I = 36) scaled by sigmoid(x w_sg).
  func.func @layer_0(%x: tensor<?x40xbf16>) -> tensor<?x40xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["l0.router"] from ["model.safetensors"] : tensor<5x40xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x40xbf16>, tensor<5x40xbf16>) -> tensor<?x5xf32>
    %p = moe.softmax %logits : tensor<?x5xf32>
    %ids, %vals = moe.topk %p {k = 3 : i64} : tensor<?x5xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
    %w = moe.normalize %vals : tensor<?x3xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 5 : i64} : tensor<?x3xi32> -> tensor<5xi32>, tensor<6xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x40xbf16>, tensor<?xi32>, tensor<?x3xf32>) -> tensor<?x40xbf16>
    %g = moe.weight ["l0.e0.gate", "l0.e1.gate", "l0.e2.gate", "l0.e3.gate", "l0.e4.gate"] from ["model.safetensors"] : tensor<5x72x40xbf16>
    %u = moe.weight ["l0.e0.up", "l0.e1.up", "l0.e2.up", "l0.e3.up", "l0.e4.up"] from ["model.safetensors"] : tensor<5x72x40xbf16>
    %d = moe.weight ["l0.e0.down", "l0.e1.down", "l0.e2.down", "l0.e3.down", "l0.e4.down"] from ["model.safetensors"] : tensor<5x40x72xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%g) up(%u) down(%d) {activation = #moe.activation<gelu_tanh>} : (tensor<?x40xbf16>, tensor<6xi32>, tensor<5x72x40xbf16>, tensor<5x72x40xbf16>, tensor<5x40x72xbf16>) -> tensor<?x40xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x40xbf16>, tensor<?xi32>, tensor<?x3xf32>) -> tensor<?x40xbf16>
    %sg = moe.weight ["l0.shared.gate"] from ["model.safetensors"] : tensor<36x40xbf16>
    %su = moe.weight ["l0.shared.up"] from ["model.safetensors"] : tensor<36x40xbf16>
    %sd = moe.weight ["l0.shared.down"] from ["model.safetensors"] : tensor<40x36xbf16>
    %sh = moe.ffn %x gate(%sg) up(%su) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x40xbf16>, tensor<36x40xbf16>, tensor<36x40xbf16>, tensor<40x36xbf16>) -> tensor<?x40xbf16>
    %sgw = moe.weight ["l0.shared_gate"] from ["model.safetensors"] : tensor<1x40xbf16>
    %sgl = moe.router_linear %x, %sgw : (tensor<?x40xbf16>, tensor<1x40xbf16>) -> tensor<?x1xf32>
    %sgs = moe.sigmoid %sgl : tensor<?x1xf32>
    %shg = moe.row_scale %sh, %sgs : (tensor<?x40xbf16>, tensor<?x1xf32>) -> tensor<?x40xbf16>
    %out = arith.addf %y, %shg : tensor<?x40xbf16>
    return %out : tensor<?x40xbf16>
  }
  // f32 activations, bf16 weights (split A operands): gpt-oss's interleaved
  // [in, out] gate_up with biases and clamped swiglu; I = 20 (2 I = 40: whole
  // 16-byte pairs, but I is not a multiple of 8), H = 24.
  func.func @layer_1(%x: tensor<?x24xf32>) -> tensor<?x24xf32> attributes {moe.layer = 1 : i64} {
    %wg = moe.weight ["l1.router"] from ["model.safetensors"] : tensor<3x24xbf16>
    %bg = moe.weight ["l1.router_bias"] from ["model.safetensors"] : tensor<3xf32>
    %logits = moe.router_linear %x, %wg bias %bg : (tensor<?x24xf32>, tensor<3x24xbf16>, tensor<3xf32>) -> tensor<?x3xf32>
    %ids, %vals = moe.topk %logits {k = 2 : i64} : tensor<?x3xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.softmax %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 3 : i64} : tensor<?x2xi32> -> tensor<3xi32>, tensor<4xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x24xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x24xf32>
    %gu = moe.weight ["l1.gate_up"] from ["model.safetensors"] : tensor<3x24x40xbf16>
    %gub = moe.weight ["l1.gate_up_bias"] from ["model.safetensors"] : tensor<3x40xbf16>
    %d = moe.weight ["l1.down"] from ["model.safetensors"] : tensor<3x20x24xbf16>
    %db = moe.weight ["l1.down_bias"] from ["model.safetensors"] : tensor<3x24xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate_up(%gu) down(%d) gate_up_bias(%gub) down_bias(%db) {activation = #moe.activation<swiglu_clamped>, alpha = 1.702000e+00 : f32, gate_up_layout = #moe.gate_up_layout<interleaved>, limit = 7.000000e+00 : f32, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x24xf32>, tensor<4xi32>, tensor<3x24x40xbf16>, tensor<3x20x24xbf16>, tensor<3x40xbf16>, tensor<3x24xbf16>) -> tensor<?x24xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x24xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x24xf32>
    return %y : tensor<?x24xf32>
  }
  // f32 activations and weights (CUDA-core tiles): Llama 4's input scaling
  // and concat [in, out] gate_up, gelu, H = 18 (rows of x are not 16-byte
  // aligned), I = 10, a shared expert of I = 14 without gate.
  func.func @layer_2(%x: tensor<?x18xf32>) -> tensor<?x18xf32> attributes {moe.layer = 2 : i64} {
    %wg = moe.weight ["l2.router"] from ["model.safetensors"] : tensor<4x18xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x18xf32>, tensor<4x18xf32>) -> tensor<?x4xf32>
    %ids, %vals = moe.topk %logits {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.sigmoid %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w scale_by_weight : (tensor<?x18xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x18xf32>
    %gu = moe.weight ["l2.gate_up"] from ["model.safetensors"] : tensor<4x18x20xf32>
    %d = moe.weight ["l2.down"] from ["model.safetensors"] : tensor<4x10x18xf32>
    %ys = moe.expert_ffn %xs, %offsets gate_up(%gu) down(%d) {activation = #moe.activation<gelu>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x18xf32>, tensor<5xi32>, tensor<4x18x20xf32>, tensor<4x10x18xf32>) -> tensor<?x18xf32>
    %y = moe.combine %ys, %rows, %w unweighted : (tensor<?x18xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x18xf32>
    %sg = moe.weight ["l2.shared.gate"] from ["model.safetensors"] : tensor<14x18xf32>
    %su = moe.weight ["l2.shared.up"] from ["model.safetensors"] : tensor<14x18xf32>
    %sd = moe.weight ["l2.shared.down"] from ["model.safetensors"] : tensor<18x14xf32>
    %sh = moe.ffn %x gate(%sg) up(%su) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x18xf32>, tensor<14x18xf32>, tensor<14x18xf32>, tensor<18x14xf32>) -> tensor<?x18xf32>
    %out = arith.addf %y, %sh : tensor<?x18xf32>
    return %out : tensor<?x18xf32>
  }
  // f16 activations and weights: concat [out, in] gate_up with biases, H =
  // 96 (three reduction steps), I = 80, K = 2 of 6 experts.
  func.func @layer_3(%x: tensor<?x96xf16>) -> tensor<?x96xf16> attributes {moe.layer = 3 : i64} {
    %wg = moe.weight ["l3.router"] from ["model.safetensors"] : tensor<6x96xf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x96xf16>, tensor<6x96xf16>) -> tensor<?x6xf32>
    %p = moe.softmax %logits : tensor<?x6xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x6xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 6 : i64} : tensor<?x2xi32> -> tensor<6xi32>, tensor<7xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %vals : (tensor<?x96xf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x96xf16>
    %gu = moe.weight ["l3.gate_up"] from ["model.safetensors"] : tensor<6x160x96xf16>
    %gub = moe.weight ["l3.gate_up_bias"] from ["model.safetensors"] : tensor<6x160xf16>
    %d = moe.weight ["l3.down"] from ["model.safetensors"] : tensor<6x96x80xf16>
    %db = moe.weight ["l3.down_bias"] from ["model.safetensors"] : tensor<6x96xf16>
    %ys = moe.expert_ffn %xs, %offsets gate_up(%gu) down(%d) gate_up_bias(%gub) down_bias(%db) {activation = #moe.activation<silu>} : (tensor<?x96xf16>, tensor<7xi32>, tensor<6x160x96xf16>, tensor<6x96x80xf16>, tensor<6x160xf16>, tensor<6x96xf16>) -> tensor<?x96xf16>
    %y = moe.combine %ys, %rows, %vals : (tensor<?x96xf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x96xf16>
    return %y : tensor<?x96xf16>
  }
}
