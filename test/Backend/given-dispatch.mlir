// A layer that dispatches its given routing as it is (Read-ME's layers):
// after --moe-optimize it is moe.dispatch of its ids argument and
// moe.fused_experts on the arguments, and the CUDA code generator maps that
// dispatch onto one kernel (the DISPATCH slots of KernelABI.h) that plans
// the dispatch with the routing kernel's planDispatch; no routing kernel.
// A dispatch of ids computed in the layer is left to moe.fused_route and
// refused here.
// RUN: moe-opt --moe-optimize --split-input-file %s -o %t.mlir 2> /dev/null
// RUN: not moe-translate --moe-to-cuda --split-input-file %t.mlir 2> %t.err | FileCheck %s
// RUN: FileCheck %s --check-prefix=ERR < %t.err

// CHECK-NOT: moe.fused_route
// CHECK: static_assert(MOE_DISPATCH_NUM_SLOTS == 5 &&
// The layer's launches: the dispatch-planning kernel, then the experts.
// CHECK: moe-layer: layer=0 function=layer_0 launches=moe_dispatch_{{[0-9a-f]+}},moe_experts_
// CHECK-NOT: // moe.fused_route
// CHECK: // moe.dispatch
// CHECK-NEXT: extern "C" __global__ void __launch_bounds__(128) moe_dispatch_{{[0-9a-f]+}}(MoEKernelArgs args) {
// CHECK-NEXT: moe_k::route::planDispatch<4, 2, 4>(
// CHECK-NEXT: static_cast<const int *>(args.buffers[MOE_DISPATCH_SLOT_IDS]),
// One block; the given ids (i32, 2 per token), then the plan.
// CHECK: moe-contract: moe_dispatch_{{[0-9a-f]+}} block_threads=128 {{.*}} max_blocks=1 {{.*}} slots=value:i32:2:0,value:i32:0:4,value:i32:0:5,value:i32:2:0,value:i32:2:0
// CHECK-NOT: // moe.fused_route
func.func @layer_0(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
  %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %w_gate = moe.weight ["a"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %w_up = moe.weight ["b"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %w_down = moe.weight ["c"] from ["m.safetensors"] : tensor<4x16x32xf32>
  %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// The same dispatch in a layer whose ids are a named extra input (not a
// given routing): the router fusion leaves it, and the code generator
// refuses it as any unfused op.
// ERR: error: {{.*}}'moe.dispatch': this op is left outside the fused ops, and the CUDA backend runs fused IR only: run moe-opt --moe-optimize first
func.func @layer_0(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32> {moe.input = "ids"}, %w: tensor<?x2xf32> {moe.input = "w"}) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
  %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %w_gate = moe.weight ["a"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %w_up = moe.weight ["b"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %w_down = moe.weight ["c"] from ["m.safetensors"] : tensor<4x16x32xf32>
  %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
