// moe.capacity in the routing kernel: every token's warp stores its ids and
// weights (phase 1); the last block enforces the capacities over the whole
// batch (slot 0 of every token first, then slot 1) and only then plans the
// dispatch, so the plan sees the dropped slots as empty. Yielded as it is,
// the op writes the outputs directly; followed by a router op, it writes
// scratch and the op runs per token after it.
// RUN: moe-opt %s --moe-optimize | moe-translate --moe-to-cuda | FileCheck %s

// CHECK-LABEL: {{^}}// moe.fused_route{{$}}
// CHECK: int *crossIn0 = static_cast<int *>(args.buffers[MOE_ROUTE_SLOT_CHOICE_SCORES]);
// CHECK: moe_k::route::topK<4, 2>(
// CHECK: crossIn0[t * 2 + i] =
// CHECK: crossIn[[W:[0-9]+]][t * 2 + i] =
// CHECK: if (moe_k::route::lastBlockDone(counter, lastFlag)) {
// CHECK-NEXT: // moe.capacity
// CHECK-NEXT: moe_k::route::capacity<2, 4>(crossIn0, crossIn[[W]], T, 1.25f, outIds, outWeights);
// CHECK-NEXT: moe_k::route::planDispatch<4, 2, 4>(outIds, T, counts, offsets, rows, slotRow);
func.func @layer_0(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %i, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %ids, %w = moe.capacity %i, %v {capacity_factor = 1.25 : f32, num_experts = 4 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  %cnt, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %gt = moe.weight ["g"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x32xf32>
  %ys = moe.expert_ffn %xs, %off gate(%gt) up(%gt) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// CHECK-LABEL: {{^}}// moe.fused_route{{$}}
// CHECK-DAG: int *crossOut[[I:[0-9]+]] = static_cast<int *>(args.buffers[[[I]]]);
// CHECK-DAG: float *crossOut[[V:[0-9]+]] = static_cast<float *>(args.buffers[[[V]]]);
// CHECK: if (moe_k::route::lastBlockDone(counter, lastFlag)) {
// CHECK-NEXT: // moe.capacity
// CHECK-NEXT: moe_k::route::capacity<2, 4>(crossIn0, crossIn{{[0-9]+}}, T, 1.0f, crossOut[[I]], crossOut[[V]]);
// CHECK-NEXT: // router ops after moe.capacity, per token
// CHECK: = crossOut[[I]][t * 2 + i];
// CHECK: = crossOut[[V]][t * 2 + i];
// CHECK: moe_k::route::maskedNormalize<2>(
// CHECK: outWeights[t * 2 + s] =
// CHECK: __syncthreads();
// CHECK-NEXT: moe_k::route::planDispatch<4, 2, 4>(outIds, T, counts, offsets, rows, slotRow);
func.func @layer_1(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 1 : i64} {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %i, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %ids, %cw = moe.capacity %i, %v {capacity_factor = 1.0 : f32, num_experts = 4 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  %w = moe.normalize %cw : tensor<?x2xf32>
  %cnt, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %gt = moe.weight ["g"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x32xf32>
  %ys = moe.expert_ffn %xs, %off gate(%gt) up(%gt) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
