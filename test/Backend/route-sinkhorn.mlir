// moe.sinkhorn in the routing kernel: every token's warp stores its logits
// row (phase 1) and keeps the softmax row that the weights are gathered
// from; the last block runs the Sinkhorn iterations over the batch, then
// the top-k on the balanced scores and the gather per token, then plans the
// dispatch.
// RUN: moe-opt %s --moe-optimize | moe-translate --moe-to-cuda | FileCheck %s

// CHECK-LABEL: // moe.fused_route
// CHECK: float *crossIn0 = static_cast<float *>(args.buffers[MOE_ROUTE_SLOT_CHOICE_SCORES]);
// CHECK-DAG: float *crossOut[[B:[0-9]+]] = static_cast<float *>(args.buffers[[[B]]]);
// CHECK-DAG: float *carry[[C:[0-9]+]] = static_cast<float *>(args.buffers[[[C]]]);
// CHECK: moe_k::route::softmax<4>(
// CHECK: crossIn0[t * 4 + i] =
// CHECK: carry[[C]][t * 4 + i] =
// CHECK: if (moe_k::route::lastBlockDone(counter, lastFlag)) {
// CHECK-NEXT: // moe.sinkhorn
// CHECK-NEXT: moe_k::route::sinkhorn<4>(crossIn0, T, 3, 0.5f, crossOut[[B]]);
// CHECK-NEXT: // router ops after moe.sinkhorn, per token
// CHECK: = crossOut[[B]][t * 4 + i];
// CHECK: = carry[[C]][t * 4 + i];
// CHECK: moe_k::route::topK<4, 1>(
// CHECK: moe_k::route::gatherScores<4, 1>(
// CHECK: outWeights[t * 1 + s] =
// CHECK: __syncthreads();
// CHECK-NEXT: moe_k::route::planDispatch<4, 1, 4>(outIds, T, counts, offsets, rows, slotRow);
func.func @layer_0(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %b = moe.sinkhorn %l {iterations = 3 : i64, epsilon = 0.5 : f32} : tensor<?x4xf32>
  %ids, %v = moe.topk %b {k = 1 : i64} : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  %w = moe.gather_scores %p, %ids : tensor<?x4xf32>, tensor<?x1xi32> -> tensor<?x1xf32>
  %cnt, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x16xf32>
  %gt = moe.weight ["g"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x32xf32>
  %ys = moe.expert_ffn %xs, %off gate(%gt) up(%gt) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
