// Router ops after moe.expert_choice (issue 10): the choice writes to
// scratch, then the last block runs the later ops per token (one warp per
// token) and writes the yielded routing; a row computed before the choice
// and read after it (the sigmoid scores) is kept in global memory.
// RUN: moe-opt %s --moe-optimize | moe-translate --moe-to-cuda | FileCheck %s

// CHECK: extern "C" __global__ void __launch_bounds__(128) moe_route_{{[0-9a-f]+}}(MoEKernelArgs args)
// CHECK: float *crossIn0 = static_cast<float *>(args.buffers[MOE_ROUTE_SLOT_CHOICE_SCORES]);
// CHECK-DAG: int *crossOut[[I:[0-9]+]] = static_cast<int *>(args.buffers[[[I]]]);
// CHECK-DAG: float *crossOut[[V:[0-9]+]] = static_cast<float *>(args.buffers[[[V]]]);
// CHECK-DAG: float *carry[[C:[0-9]+]] = static_cast<float *>(args.buffers[[[C]]]);
// CHECK: moe_k::route::sigmoid<4>(
// CHECK: crossIn0[t * 4 + i] =
// CHECK: carry[[C]][t * 4 + i] =
// CHECK: if (moe_k::route::lastBlockDone(counter, lastFlag)) {
// CHECK-NEXT: // moe.expert_choice
// CHECK-NEXT: moe_k::route::expertChoice<4, 3>(crossIn0, T, crossOut[[I]], crossOut[[V]]);
// CHECK-NEXT: // router ops after moe.expert_choice, per token
// CHECK-NEXT: for (long long t = warp; t < T; t += 4) {
// CHECK: = crossOut[[I]][t * 4 + i];
// CHECK: = carry[[C]][t * 4 + i];
// CHECK: moe_k::route::gatherScores<4, 4>(
// CHECK: moe_k::route::maskedNormalize<4>(
// CHECK: outWeights[t * 4 + s] =
// CHECK: __syncthreads();
// CHECK-NEXT: moe_k::route::planDispatch<4, 4, 4>(outIds, T, counts, offsets, rows, slotRow);

func.func @layer_0(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %s = moe.sigmoid %l : tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %ids, %v = moe.expert_choice %p {capacity = 3 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %g = moe.gather_scores %s, %ids : tensor<?x4xf32>, tensor<?x4xi32> -> tensor<?x4xf32>
  %w = moe.normalize %g : tensor<?x4xf32>
  %cnt, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x16xf32>
  %gt = moe.weight ["g"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x32xf32>
  %ys = moe.expert_ffn %xs, %off gate(%gt) up(%gt) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
