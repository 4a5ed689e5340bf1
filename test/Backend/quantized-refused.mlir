// No kernel decodes block-scaled expert weights yet: the CUDA backend (and
// so emu, which runs the same kernel source) refuses a quantized
// moe.expert_ffn by name and element type instead of reading FP8/FP4 codes
// as if they were bf16.
// RUN: moe-opt --moe-optimize %s | not moe-translate --moe-to-cuda -o /dev/null 2>&1 | FileCheck %s
// RUN: sed -e 's/f8E4M3FN/f4E2M1FN/g' -e 's/tensor<4x2x1xf32>/tensor<4x32x1xf8E8M0FNU>/g' -e 's/array<i64: 16, 32>/array<i64: 1, 32>/' %s | moe-opt --moe-optimize | not moe-translate --moe-to-cuda -o /dev/null 2>&1 | FileCheck %s --check-prefix=FP4
// The optimizer fuses the layer with its scales inside the body, so the
// kernel generator is what refuses it.
// RUN: moe-opt --moe-optimize %s 2>&1 | FileCheck %s --check-prefix=FUSED
// FUSED-NOT: not fused
// FUSED: moe.fused_experts
// FUSED: moe.expert_ffn {{.*}} gate_scale({{.*}}) up_scale({{.*}}) down_scale({{.*}}) {{.*}}quant_block = array<i64: 16, 32>
// CHECK: error: {{.*}}'moe.expert_ffn': quantized expert weights (f8E4M3FN with block scales) are not supported by the CUDA backend yet
// FP4: error: {{.*}}'moe.expert_ffn': quantized expert weights (f4E2M1FN with block scales) are not supported by the CUDA backend yet

func.func @layer_0(%x: tensor<?x32xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %wg = moe.weight ["router"] from ["m.safetensors"] : tensor<4x32xf32>
  %logits = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<4x32xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %logits : tensor<?x4xf32>
  %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x32x32xf8E4M3FN>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x32x32xf8E4M3FN>
  %sg = moe.weight ["sg"] from ["m.safetensors"] : tensor<4x2x1xf32>
  %sd = moe.weight ["sd"] from ["m.safetensors"] : tensor<4x2x1xf32>
  %ys = moe.expert_ffn %xs, %offsets gate(%g) up(%g) down(%d) gate_scale(%sg) up_scale(%sg) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 16, 32>} : (tensor<?x32xf32>, tensor<5xi32>, tensor<4x32x32xf8E4M3FN>, tensor<4x32x32xf8E4M3FN>, tensor<4x32x32xf8E4M3FN>, tensor<4x2x1xf32>, tensor<4x2x1xf32>, tensor<4x2x1xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
