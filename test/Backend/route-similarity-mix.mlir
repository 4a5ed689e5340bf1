// moe.similarity_mix in the routing kernel: token t's warp takes the largest
// similarity (pass 1), then for every token j up to t (causal) weighs token
// j's probabilities, recomputed by the router ops before the mix with t = j
// (its logits row, its softmax), by exp(s[t, j] - max); then divides by the
// sum and recomputes token t's own rows before the top-k. No last-block work
// but the dispatch plan.
// RUN: moe-opt %s --moe-optimize | moe-translate --moe-to-cuda | FileCheck %s

// CHECK-LABEL: // moe.fused_route
// CHECK-NOT: MOE_ROUTE_SLOT_CHOICE_SCORES
// CHECK: // moe.similarity_mix
// CHECK-NEXT: {
// CHECK-NEXT: const long long mixEnd = t + 1;
// CHECK-NEXT: const float mixMax = moe_k::route::similarityMax<16>(x, t, mixEnd, 0.25f);
// CHECK: for (long long mixJ = 0; mixJ < mixEnd; ++mixJ) {
// CHECK-NEXT: const float mixW = expf(moe_k::route::similarity<16>(x, t, mixJ, 0.25f) - mixMax);
// CHECK: const long long t = mixJ;
// CHECK: moe_k::route::loadLogits<4>(lg{{[0-9]+}}, t, [[LOGITS:\(r[0-9]+ \+ warp \* 4\)]], lane);
// CHECK: moe_k::route::softmax<4>([[LOGITS]], [[P:\(r[0-9]+ \+ warp \* 4\)]]);
// CHECK: moe_k::route::mixAccumulate<4>([[P]], mixW, [[M:\(r[0-9]+ \+ warp \* 4\)]]);
// CHECK: moe_k::route::mixFinish<4>([[M]], mixSum);
// CHECK: // token t's own rows again
// CHECK: moe_k::route::loadLogits<4>(
// CHECK: moe_k::route::softmax<4>([[LOGITS]], [[P]]);
// CHECK: moe_k::route::topK<4, 2>([[M]],
// CHECK: if (moe_k::route::lastBlockDone(counter, lastFlag)) {
// CHECK-NEXT: moe_k::route::planDispatch<4, 2, 4>(outIds, T, counts, offsets, rows, slotRow);
func.func @layer_0(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %m = moe.similarity_mix %x, %p {temperature = 0.25 : f32, causal} : tensor<?x16xf32>, tensor<?x4xf32>
  %ids, %v = moe.topk %m {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %w = moe.normalize %v : tensor<?x2xf32>
  %cnt, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %gt = moe.weight ["g"] from ["m.safetensors"] : tensor<4x32x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x32xf32>
  %ys = moe.expert_ffn %xs, %off gate(%gt) up(%gt) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
