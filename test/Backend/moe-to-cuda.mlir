// The emitter instantiates the kernel templates with the op's constants and
// names the op each kernel came from.
// RUN: moe-opt %s --moe-optimize | moe-translate --moe-to-cuda | FileCheck %s

// CHECK: #include "moe_route.cuh"
// Kernels are named from their text (a hash) and comments hold no location.
// CHECK-NOT: loc(
// CHECK: //===--- @layer_3 (layer 3) launches: [[LOGITS:moe_route_logits_[0-9a-f]+]], [[ROUTE:moe_route_[0-9a-f]+]], [[SMALL:moe_route_small_[0-9a-f]+]], [[EXPERTS:moe_experts_[0-9a-f]+]]_decode_up,
// The router projection is a kernel of its own, launched first.
// CHECK: // moe.router_linear of moe.fused_route
// From 64 tokens on, on tensor cores (bf16 router weights, f32 input).
// CHECK-NEXT: extern "C" __global__ void __launch_bounds__(128, 1) [[LOGITS]](MoEKernelArgs args)
// CHECK-NEXT: if (args.num_tokens >= 64)
// CHECK-NEXT: moe_k::route::routerLogitsMma<float, __nv_bfloat16, float, 16, 8, true>(
// CHECK-NEXT: else
// CHECK-NEXT: moe_k::route::routerLogits<float, __nv_bfloat16, float, 16, 8, true, 32, 8>(
// CHECK: MOE_EMU_EXPORT_KERNEL([[LOGITS]])
// CHECK: // moe.fused_route
// CHECK: extern "C" __global__ void __launch_bounds__(128) [[ROUTE]](MoEKernelArgs args)
// CHECK: moe_k::route::loadLogits<8>(lg{{[0-9]+}}, t, 
// CHECK: moe_k::route::sigmoid<8>(
// CHECK: moe_k::route::biasAdd<8, float>(
// CHECK: moe_k::route::groupLimit<8, 4, 2, true>(
// Selections and elementwise ops run on the whole warp (no lane-0 guard);
// the normalisation on lane 0.
// CHECK: // moe.topk
// CHECK-NEXT: {
// CHECK-NEXT: moe_k::route::topK<8, 2>(
// CHECK: moe_k::route::gatherScores<8, 2>(
// Over the slots of the top-k (its ids mark the empty slots): masked.
// CHECK: moe_k::route::maskedNormalize<2>({{.*}}, {{.*}}, 9.99999968e-21f,
// CHECK: moe_k::route::scale<2>({{.*}}, 2.5f,
// CHECK: moe_k::route::planDispatch<8, 2, 4>(outIds, T, counts, offsets, rows, slotRow);
// CHECK: MOE_EMU_EXPORT_KERNEL([[ROUTE]])
// The small-T kernel (T <= 8): the projection by every block (H = 16: rows
// not split), then the same row ops in the last block to finish.
// CHECK: // moe.router_linear and moe.fused_route at small T (one launch)
// CHECK-NEXT: extern "C" __global__ void __launch_bounds__(128, 1) [[SMALL]](MoEKernelArgs args)
// CHECK: moe_k::route::routerParts<float, __nv_bfloat16, float, 16, 8, true, 16>(x, pw, pb,
// CHECK-NEXT: if (moe_k::route::lastBlockDone(counter, lastFlag)) {
// CHECK: moe_k::route::loadLogitParts<8, 1, false, float>(lg{{[0-9]+}}, pb, t,
// CHECK: moe_k::route::topK<8, 2>(
// CHECK: __syncthreads();
// CHECK-NEXT: moe_k::route::planDispatch<8, 2, 4>(outIds, T, counts, offsets, rows, slotRow);
// CHECK: MOE_EMU_EXPORT_KERNEL([[SMALL]])
// CHECK: // moe-contract: [[SMALL]] block_threads=128 {{.*}} tokens_per_block=8 {{.*}} grid_columns=2 slots_per_token=1 min_slots=0 max_slots=8
// CHECK: // moe.fused_experts (layout runtime: decode kernels up to 64 routed slots, grouped kernels above)
// CHECK: struct Routed {
// CHECK-NEXT: using TW = __nv_bfloat16;
// CHECK: static constexpr int H = 16, I = 32, E = 8;
// CHECK-NEXT: static constexpr bool Fused = true, Interleaved = true, InOut = true;
// CHECK-NEXT: static constexpr int Act = 3; // swiglu_clamped
// CHECK-NEXT: static constexpr float Alpha = 1.70200002f, Limit = 7.0f;
// CHECK: static constexpr int K = 2;
// CHECK-NEXT: static constexpr bool ScaleInput = false, Unweighted = false, HasShared = false, SharedGate = false;
// CHECK-NEXT: using TG = float;
// CHECK-NEXT: using TGB = float;
// CHECK-NEXT: static constexpr bool SharedGateBias = false;
// CHECK: struct Decode {
// CHECK-NEXT: static constexpr int UpUnits = 4, DownCols = 4, SharedUpUnits = 4, SharedDownCols = 4;
// CHECK: } // namespace [[EXPERTS]]_cfg
// CHECK: extern "C" __global__ void __launch_bounds__(128, 4) [[EXPERTS]]_decode_up(MoEKernelArgs args) {
// CHECK-NEXT: moe_k::experts::decodeUp<[[EXPERTS]]_cfg::Cfg, [[EXPERTS]]_cfg::Decode>(args);
// CHECK: MOE_EMU_EXPORT_KERNEL([[EXPERTS]]_decode_up)
// CHECK: extern "C" __global__ void __launch_bounds__(128, 6) [[EXPERTS]]_decode_down(MoEKernelArgs args) {
// CHECK-NEXT: moe_k::experts::decodeDown<[[EXPERTS]]_cfg::Cfg, [[EXPERTS]]_cfg::Decode>(args);
// CHECK: MOE_EMU_EXPORT_KERNEL([[EXPERTS]]_decode_down)
// CHECK: moe_k::grouped::gateUp<[[EXPERTS]]_cfg::Cfg, false, moe_k::grouped::Gemm::Pipelined>(args);
// CHECK: moe_k::grouped::down<[[EXPERTS]]_cfg::Cfg, false, moe_k::grouped::Gemm::Pipelined>(args);
// CHECK: moe_k::grouped::combine<[[EXPERTS]]_cfg::Cfg>(args);

func.func @layer_3(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 3 : i64} {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<8x16xbf16>
  %bg = moe.weight ["gate_bias"] from ["m.safetensors"] : tensor<8xf32>
  %l = moe.router_linear %x, %wg bias %bg : (tensor<?x16xf32>, tensor<8x16xbf16>, tensor<8xf32>) -> tensor<?x8xf32>
  %s = moe.sigmoid %l : tensor<?x8xf32>
  %cb = moe.weight ["correction"] from ["m.safetensors"] : tensor<8xf32>
  %c = moe.bias_add %s, %cb : tensor<?x8xf32>, tensor<8xf32>
  %g = moe.group_limit %c {group_score = #moe.group_score<top2_sum>, keep_groups = 2 : i64, num_groups = 4 : i64} : tensor<?x8xf32>
  %ids, %v = moe.topk %g {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gw = moe.gather_scores %s, %ids : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %n = moe.normalize %gw {epsilon = 1.0e-20 : f32} : tensor<?x2xf32>
  %w = moe.scale %n {factor = 2.5 : f32} : tensor<?x2xf32>
  %cnt, %off, %rows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %gu = moe.weight ["gate_up"] from ["m.safetensors"] : tensor<8x16x64xbf16>
  %gub = moe.weight ["gate_up_bias"] from ["m.safetensors"] : tensor<8x64xbf16>
  %d = moe.weight ["down"] from ["m.safetensors"] : tensor<8x32x16xbf16>
  %ys = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) gate_up_bias(%gub) {activation = #moe.activation<swiglu_clamped>, gate_up_layout = #moe.gate_up_layout<interleaved>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x16xf32>, tensor<9xi32>, tensor<8x16x64xbf16>, tensor<8x32x16xbf16>, tensor<8x64xbf16>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
