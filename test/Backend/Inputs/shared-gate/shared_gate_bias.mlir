// A shared-expert gate with a bias, sigmoid(x w_sg + b_sg) (issue 10: the
// kernels used to drop b_sg), on both activation types; the gate's weight
// and bias have other element types than the shared experts' weights.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["l0.router"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %vals : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %g = moe.weight ["l0.e0.gate", "l0.e1.gate", "l0.e2.gate", "l0.e3.gate"] from ["model.safetensors"] : tensor<4x32x64xbf16>
    %u = moe.weight ["l0.e0.up", "l0.e1.up", "l0.e2.up", "l0.e3.up"] from ["model.safetensors"] : tensor<4x32x64xbf16>
    %d = moe.weight ["l0.e0.down", "l0.e1.down", "l0.e2.down", "l0.e3.down"] from ["model.safetensors"] : tensor<4x64x32xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x32x64xbf16>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %vals : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %sg = moe.weight ["l0.shared.gate"] from ["model.safetensors"] : tensor<48x64xbf16>
    %su = moe.weight ["l0.shared.up"] from ["model.safetensors"] : tensor<48x64xbf16>
    %sd = moe.weight ["l0.shared.down"] from ["model.safetensors"] : tensor<64x48xbf16>
    %sh = moe.ffn %x gate(%sg) up(%su) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<48x64xbf16>, tensor<48x64xbf16>, tensor<64x48xbf16>) -> tensor<?x64xbf16>
    %gw = moe.weight ["l0.shared_gate.weight"] from ["model.safetensors"] : tensor<1x64xf32>
    %gb = moe.weight ["l0.shared_gate.bias"] from ["model.safetensors"] : tensor<1xbf16>
    %gl = moe.router_linear %x, %gw bias %gb : (tensor<?x64xbf16>, tensor<1x64xf32>, tensor<1xbf16>) -> tensor<?x1xf32>
    %gs = moe.sigmoid %gl : tensor<?x1xf32>
    %shg = moe.row_scale %sh, %gs : (tensor<?x64xbf16>, tensor<?x1xf32>) -> tensor<?x64xbf16>
    %out = arith.addf %shg, %y : tensor<?x64xbf16>
    return %out : tensor<?x64xbf16>
  }
  func.func @layer_1(%x: tensor<?x32xf32>) -> tensor<?x32xf32> attributes {moe.layer = 1 : i64} {
    %wg = moe.weight ["l1.router"] from ["model.safetensors"] : tensor<4x32xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<4x32xf32>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
    %g = moe.weight ["l1.e0.gate", "l1.e1.gate", "l1.e2.gate", "l1.e3.gate"] from ["model.safetensors"] : tensor<4x16x32xf32>
    %u = moe.weight ["l1.e0.up", "l1.e1.up", "l1.e2.up", "l1.e3.up"] from ["model.safetensors"] : tensor<4x16x32xf32>
    %d = moe.weight ["l1.e0.down", "l1.e1.down", "l1.e2.down", "l1.e3.down"] from ["model.safetensors"] : tensor<4x32x16xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<5xi32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x32xf32>
    %y = moe.combine %ys, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
    %sg = moe.weight ["l1.shared.gate"] from ["model.safetensors"] : tensor<24x32xf32>
    %su = moe.weight ["l1.shared.up"] from ["model.safetensors"] : tensor<24x32xf32>
    %sd = moe.weight ["l1.shared.down"] from ["model.safetensors"] : tensor<32x24xf32>
    %sh = moe.ffn %x gate(%sg) up(%su) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<24x32xf32>, tensor<24x32xf32>, tensor<32x24xf32>) -> tensor<?x32xf32>
    %gw = moe.weight ["l1.shared_gate.weight"] from ["model.safetensors"] : tensor<1x32xf32>
    %gb = moe.weight ["l1.shared_gate.bias"] from ["model.safetensors"] : tensor<1xf32>
    %gl = moe.router_linear %x, %gw bias %gb : (tensor<?x32xf32>, tensor<1x32xf32>, tensor<1xf32>) -> tensor<?x1xf32>
    %gs = moe.sigmoid %gl : tensor<?x1xf32>
    %shg = moe.row_scale %sh, %gs : (tensor<?x32xf32>, tensor<?x1xf32>) -> tensor<?x32xf32>
    %out = arith.addf %y, %shg : tensor<?x32xf32>
    return %out : tensor<?x32xf32>
  }
}
