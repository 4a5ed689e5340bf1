// What the expert kernels still cannot run with factored weights is
// refused by name, in both layouts: a layer whose down projection stays
// dense while gate and up are moe.low_rank (the grouped and decode kernels
// run all projections factored, or none).
// RUN: moe-opt --moe-optimize %s | not moe-translate --moe-to-cuda -o /dev/null 2>&1 | FileCheck %s
// RUN: moe-opt --moe-optimize %s | sed 's/#moe.layout<runtime>/#moe.layout<grouped>/' | not moe-translate --moe-to-cuda -o /dev/null 2>&1 | FileCheck %s
// CHECK: error: {{.*}}'moe.expert_ffn': factored expert weights: every projection (gate and up, or gate_up, and down) must be moe.low_rank, as --moe-compress-experts writes them

func.func @layer_0(%x: tensor<?x32xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %wg = moe.weight ["router"] from ["m.safetensors"] : tensor<4x32xf32>
  %logits = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<4x32xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %logits : tensor<?x4xf32>
  %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %ga = moe.weight ["ga"] from ["m.safetensors"] : tensor<4x16x4xf32>
  %gb2 = moe.weight ["gb2"] from ["m.safetensors"] : tensor<4x4x32xf32>
  %g = moe.low_rank %ga, %gb2 : tensor<4x16x4xf32>, tensor<4x4x32xf32> -> tensor<4x16x32xf32>
  %ua = moe.weight ["ua"] from ["m.safetensors"] : tensor<4x16x4xf32>
  %ub = moe.weight ["ub"] from ["m.safetensors"] : tensor<4x4x32xf32>
  %u = moe.low_rank %ua, %ub : tensor<4x16x4xf32>, tensor<4x4x32xf32> -> tensor<4x16x32xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %ys = moe.expert_ffn %xs, %offsets gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<5xi32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %sg = moe.weight ["sg"] from ["m.safetensors"] : tensor<24x32xf32>
  %su = moe.weight ["su"] from ["m.safetensors"] : tensor<24x32xf32>
  %sd = arith.constant dense<0.5> : tensor<32x24xf32>
  %sh = moe.ffn %x gate(%sg) up(%su) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<24x32xf32>, tensor<24x32xf32>, tensor<32x24xf32>) -> tensor<?x32xf32>
  %gw = moe.weight ["gw"] from ["m.safetensors"] : tensor<1x32xf32>
  %gb = moe.weight ["gb"] from ["m.safetensors"] : tensor<1xf32>
  %gl = moe.router_linear %x, %gw bias %gb : (tensor<?x32xf32>, tensor<1x32xf32>, tensor<1xf32>) -> tensor<?x1xf32>
  %gs = moe.sigmoid %gl : tensor<?x1xf32>
  %shg = moe.row_scale %sh, %gs : (tensor<?x32xf32>, tensor<?x1xf32>) -> tensor<?x32xf32>
  %out = arith.addf %y, %shg : tensor<?x32xf32>
  return %out : tensor<?x32xf32>
}
