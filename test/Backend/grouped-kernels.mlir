// The grouped (prefill) expert kernels: with a dynamic token count
// (layout runtime) the emitter instantiates the decode kernels (gate/up and
// down, the shared expert's chunks included) and the grouped kernels
// (gate/up GEMM, down GEMM, the same two for the shared expert), and one
// combine for both; a forced layout keeps one path and the combine. The routing kernel also
// writes slotRow, the inverse of rows, for the combine. The GEMMs take the
// pipelined k loop (a third template argument, Gemm::Pipelined) unless
// --moe-cuda-gemm=mma (none) or wgmma (Gemm::Wgmma); an unknown path is an
// error that lists the paths.
// RUN: moe-opt %s --moe-optimize | moe-translate --moe-to-cuda | FileCheck %s --check-prefixes=CHECK,RUNTIME '-DPIPE=, moe_k::grouped::Gemm::Pipelined'
// RUN: moe-opt %s --moe-optimize | sed -e 's/#moe.layout<runtime>/#moe.layout<grouped>/' | moe-translate --moe-to-cuda | FileCheck %s --check-prefixes=CHECK,GROUPED '-DPIPE=, moe_k::grouped::Gemm::Pipelined'
// RUN: moe-opt %s --moe-optimize | moe-translate --moe-to-cuda --moe-cuda-gemm=mma | FileCheck %s --check-prefixes=CHECK,RUNTIME -DPIPE=
// RUN: moe-opt %s --moe-optimize | moe-translate --moe-to-cuda --moe-cuda-gemm=wgmma | FileCheck %s --check-prefixes=CHECK,RUNTIME '-DPIPE=, moe_k::grouped::Gemm::Wgmma'
// RUN: moe-opt %s --moe-optimize | not moe-translate --moe-to-cuda --moe-cuda-gemm=cutlass 2>&1 | FileCheck %s --check-prefix=BADGEMM
// RUN: moe-opt %s --moe-optimize | sed -e 's/#moe.layout<runtime>/#moe.layout<per_token>/' | moe-translate --moe-to-cuda | FileCheck %s --check-prefix=PERTOKEN

// CHECK: #include "moe_grouped.cuh"
// CHECK: {{moe_route_[0-9a-f]+}}(MoEKernelArgs args)
// CHECK: int *slotRow = static_cast<int *>(args.buffers[MOE_ROUTE_SLOT_SLOT_ROW]);
// CHECK: moe_k::route::planDispatch<4, 2, 4>(outIds, T, counts, offsets, rows, slotRow);
// RUNTIME: // moe.fused_experts (layout runtime: decode kernels up to 64 routed slots, grouped kernels above)
// GROUPED: // moe.fused_experts (layout grouped: grouped kernels)
// CHECK: struct Routed {
// CHECK-NEXT: using TW = __nv_bfloat16;
// CHECK: static constexpr int H = 64, I = 96, E = 4;
// CHECK: struct Shared {
// CHECK-NEXT: using TW = __nv_bfloat16;
// CHECK: static constexpr int H = 64, I = 160, E = 1;
// CHECK: struct Cfg {
// CHECK-NEXT: using TX = float;
// CHECK: static constexpr int K = 2;
// CHECK-NEXT: static constexpr bool ScaleInput = false, Unweighted = false, HasShared = true, SharedGate = true;
// RUNTIME: struct Decode {
// RUNTIME-NEXT: static constexpr int UpUnits = 4, DownCols = 4, SharedUpUnits = 4, SharedDownCols = 4;
// GROUPED-NOT: struct Decode
// RUNTIME: extern "C" __global__ void __launch_bounds__(128, 4) {{moe_experts_[0-9a-f]+}}_decode_up(MoEKernelArgs args) {
// RUNTIME-NEXT: moe_k::experts::decodeUp<{{moe_experts_[0-9a-f]+}}_cfg::Cfg, {{moe_experts_[0-9a-f]+}}_cfg::Decode>(args);
// RUNTIME: extern "C" __global__ void __launch_bounds__(128, 6) {{moe_experts_[0-9a-f]+}}_decode_down(MoEKernelArgs args) {
// RUNTIME-NEXT: moe_k::experts::decodeDown<{{moe_experts_[0-9a-f]+}}_cfg::Cfg, {{moe_experts_[0-9a-f]+}}_cfg::Decode>(args);
// GROUPED-NOT: moe_k::experts::decode
// CHECK: static_assert(moe_k::grouped::BM == 64 && moe_k::grouped::BN == 64 && moe_k::grouped::Threads == 128
// CHECK: extern "C" __global__ void __launch_bounds__(128) {{moe_experts_[0-9a-f]+}}_up(MoEKernelArgs args) {
// CHECK-NEXT: moe_k::grouped::gateUp<{{moe_experts_[0-9a-f]+}}_cfg::Cfg, false[[PIPE]]>(args);
// CHECK: MOE_EMU_EXPORT_KERNEL({{moe_experts_[0-9a-f]+}}_up)
// CHECK: extern "C" __global__ void __launch_bounds__(128) {{moe_experts_[0-9a-f]+}}_down(MoEKernelArgs args) {
// CHECK-NEXT: moe_k::grouped::down<{{moe_experts_[0-9a-f]+}}_cfg::Cfg, false[[PIPE]]>(args);
// CHECK: extern "C" __global__ void __launch_bounds__(128) {{moe_experts_[0-9a-f]+}}_shared_up(MoEKernelArgs args) {
// CHECK-NEXT: moe_k::grouped::gateUp<{{moe_experts_[0-9a-f]+}}_cfg::Cfg, true[[PIPE]]>(args);
// CHECK: extern "C" __global__ void __launch_bounds__(128) {{moe_experts_[0-9a-f]+}}_shared_down(MoEKernelArgs args) {
// CHECK-NEXT: moe_k::grouped::down<{{moe_experts_[0-9a-f]+}}_cfg::Cfg, true[[PIPE]]>(args);
// CHECK: extern "C" __global__ void __launch_bounds__(128) {{moe_experts_[0-9a-f]+}}_combine(MoEKernelArgs args) {
// CHECK-NEXT: moe_k::grouped::combine<{{moe_experts_[0-9a-f]+}}_cfg::Cfg>(args);
// CHECK: MOE_EMU_EXPORT_KERNEL({{moe_experts_[0-9a-f]+}}_combine)

// BADGEMM: --moe-cuda-gemm: expected pipelined, mma, wgmma or tma, got 'cutlass'

// PERTOKEN: // moe.fused_experts (layout per_token: decode kernels)
// PERTOKEN: moe_k::experts::decodeUp<{{moe_experts_[0-9a-f]+}}_cfg::Cfg, {{moe_experts_[0-9a-f]+}}_cfg::Decode>(args);
// PERTOKEN: moe_k::experts::decodeDown<{{moe_experts_[0-9a-f]+}}_cfg::Cfg, {{moe_experts_[0-9a-f]+}}_cfg::Decode>(args);
// PERTOKEN-NOT: moe_k::grouped::{{gateUp|down|combine}}

func.func @layer_5(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 5 : i64} {
  %wg = moe.weight ["router"] from ["m.safetensors"] : tensor<4x64xbf16>
  %l = moe.router_linear %x, %wg : (tensor<?x64xf32>, tensor<4x64xbf16>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %cnt, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %v : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
  %g = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x96x64xbf16>
  %u = moe.weight ["up"] from ["m.safetensors"] : tensor<4x96x64xbf16>
  %d = moe.weight ["down"] from ["m.safetensors"] : tensor<4x64x96xbf16>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x96x64xbf16>, tensor<4x96x64xbf16>, tensor<4x64x96xbf16>) -> tensor<?x64xf32>
  %y = moe.combine %ys, %rows, %v : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
  %sg = moe.weight ["shared.gate"] from ["m.safetensors"] : tensor<160x64xbf16>
  %su = moe.weight ["shared.up"] from ["m.safetensors"] : tensor<160x64xbf16>
  %sd = moe.weight ["shared.down"] from ["m.safetensors"] : tensor<64x160xbf16>
  %sh = moe.ffn %x gate(%sg) up(%su) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<160x64xbf16>, tensor<160x64xbf16>, tensor<64x160xbf16>) -> tensor<?x64xf32>
  %sgw = moe.weight ["shared_gate"] from ["m.safetensors"] : tensor<1x64xbf16>
  %sgl = moe.router_linear %x, %sgw : (tensor<?x64xf32>, tensor<1x64xbf16>) -> tensor<?x1xf32>
  %sgs = moe.sigmoid %sgl : tensor<?x1xf32>
  %shg = moe.row_scale %sh, %sgs : (tensor<?x64xf32>, tensor<?x1xf32>) -> tensor<?x64xf32>
  %out = arith.addf %y, %shg : tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}
