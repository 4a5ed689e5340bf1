// moe.gru_cell as a kernel of its own (moe_gru.cuh): with RMoE's W1 x (a
// plain moe.router_linear read by the cell only) computed in the kernel,
// then the router of the new state in moe.fused_route (its projection
// reads the state); the new state is the plan's extra result. A cell
// reading x directly has no projection; a projection the kernel cannot
// compute (with a bias) is named.
// RUN: moe-opt %s --moe-optimize --split-input-file | not moe-translate --moe-to-cuda --split-input-file 2>/dev/null | FileCheck %s
// RUN: moe-opt %s --moe-optimize --split-input-file | not moe-translate --moe-to-cuda --split-input-file 2>&1 | FileCheck %s --check-prefix=ERR

// CHECK: static_assert(MOE_GRU_NUM_SLOTS == 8 &&
// CHECK: // moe-layer: layer=0 function=layer_0 launches=[[GRU:moe_gru_[0-9a-f]+]],[[LOGITS:moe_route_logits_[0-9a-f]+]],
// CHECK: // moe.gru_cell with the moe.router_linear of its input
// CHECK-NEXT: namespace [[GRU]]_cfg {
// CHECK: using TX = __nv_bfloat16;
// CHECK-NEXT: using TP = __nv_bfloat16;
// CHECK-NEXT: using TIH = float;
// CHECK-NEXT: using THH = float;
// CHECK-NEXT: using TB = float;
// CHECK-NEXT: static constexpr int H = 16, I = 4, S = 8;
// CHECK-NEXT: static constexpr bool Project = true, HasBias = true;
// CHECK: extern "C" __global__ void __launch_bounds__(128) [[GRU]](MoEKernelArgs args) {
// CHECK-NEXT: moe_k::gru::cell<[[GRU]]_cfg::Cfg>(args);
// The slots: x, the state, the new state, W1, W_ih, W_hh, both biases; 4
// warps of (I + S) floats of shared memory.
// CHECK: // moe-contract: [[GRU]] block_threads=128 dynamic_shared_bytes=192 tokens_per_block=4 {{.*}} slots=value:bf16:16:0,value:f32:8:0,value:f32:8:0,weight:bf16:0:64,weight:f32:0:96,weight:f32:0:192,weight:f32:0:24,weight:f32:0:24
// The router of the new state projects it (8 per token).
// CHECK: // moe-contract: [[LOGITS]] block_threads=128 {{.*}} slots=value:f32:8:0,weight:f32:0:32,null,value:f32:4:0
func.func @layer_0(%x: tensor<?x16xbf16>, %h: tensor<?x8xf32> {moe.input = "state"}) -> (tensor<?x16xbf16>, tensor<?x8xf32> {moe.output = "state"}) attributes {moe.layer = 0 : i64} {
  %w1 = moe.weight ["w1"] from ["m.safetensors"] : tensor<4x16xbf16>
  %wih = moe.weight ["wih"] from ["m.safetensors"] : tensor<24x4xf32>
  %whh = moe.weight ["whh"] from ["m.safetensors"] : tensor<24x8xf32>
  %bih = moe.weight ["bih"] from ["m.safetensors"] : tensor<24xf32>
  %bhh = moe.weight ["bhh"] from ["m.safetensors"] : tensor<24xf32>
  %w2 = moe.weight ["w2"] from ["m.safetensors"] : tensor<4x8xf32>
  %u = moe.router_linear %x, %w1 : (tensor<?x16xbf16>, tensor<4x16xbf16>) -> tensor<?x4xf32>
  %h1 = moe.gru_cell %u, %h weights(%wih, %whh) biases(%bih, %bhh) : tensor<?x4xf32>, tensor<?x8xf32>, tensor<24x4xf32>, tensor<24x8xf32>, tensor<24xf32>, tensor<24xf32>
  %l = moe.router_linear %h1, %w2 : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 1 : i64} : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  %c, %o, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %v : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x16xbf16>
  %wg = moe.weight ["g0", "g1", "g2", "g3"] from ["m.safetensors"] : tensor<4x8x16xbf16>
  %wu = moe.weight ["u0", "u1", "u2", "u3"] from ["m.safetensors"] : tensor<4x8x16xbf16>
  %wd = moe.weight ["d0", "d1", "d2", "d3"] from ["m.safetensors"] : tensor<4x16x8xbf16>
  %ys = moe.expert_ffn %xs, %o gate(%wg) up(%wu) down(%wd) {activation = #moe.activation<silu>} : (tensor<?x16xbf16>, tensor<5xi32>, tensor<4x8x16xbf16>, tensor<4x8x16xbf16>, tensor<4x16x8xbf16>) -> tensor<?x16xbf16>
  %y = moe.combine %ys, %rows, %v : (tensor<?x16xbf16>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x16xbf16>
  return %y, %h1 : tensor<?x16xbf16>, tensor<?x8xf32>
}

// -----

// A cell over x itself: no projection, no biases.
// CHECK: // moe.gru_cell
// CHECK-NOT: with the moe.router_linear
// CHECK: using TX = float;
// CHECK-NEXT: using TP = float;
// CHECK: static constexpr int H = 4, I = 4, S = 8;
// CHECK-NEXT: static constexpr bool Project = false, HasBias = false;
// CHECK: slots=value:f32:4:0,value:f32:8:0,value:f32:8:0,null,weight:f32:0:96,weight:f32:0:192,null,null
func.func @layer_0(%x: tensor<?x4xf32>, %h: tensor<?x8xf32> {moe.input = "state"}) -> (tensor<?x4xf32>, tensor<?x8xf32> {moe.output = "state"}) attributes {moe.layer = 0 : i64} {
  %wih = moe.weight ["wih"] from ["m.safetensors"] : tensor<24x4xf32>
  %whh = moe.weight ["whh"] from ["m.safetensors"] : tensor<24x8xf32>
  %w2 = moe.weight ["w2"] from ["m.safetensors"] : tensor<4x8xf32>
  %h1 = moe.gru_cell %x, %h weights(%wih, %whh) : tensor<?x4xf32>, tensor<?x8xf32>, tensor<24x4xf32>, tensor<24x8xf32>
  %l = moe.router_linear %h1, %w2 : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 1 : i64} : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  %c, %o, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %v : (tensor<?x4xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x4xf32>
  %wg = moe.weight ["g0", "g1", "g2", "g3"] from ["m.safetensors"] : tensor<4x8x4xf32>
  %wu = moe.weight ["u0", "u1", "u2", "u3"] from ["m.safetensors"] : tensor<4x8x4xf32>
  %wd = moe.weight ["d0", "d1", "d2", "d3"] from ["m.safetensors"] : tensor<4x4x8xf32>
  %ys = moe.expert_ffn %xs, %o gate(%wg) up(%wu) down(%wd) {activation = #moe.activation<silu>} : (tensor<?x4xf32>, tensor<5xi32>, tensor<4x8x4xf32>, tensor<4x8x4xf32>, tensor<4x4x8xf32>) -> tensor<?x4xf32>
  %y = moe.combine %ys, %rows, %v : (tensor<?x4xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x4xf32>
  return %y, %h1 : tensor<?x4xf32>, tensor<?x8xf32>
}

// -----

// W1 with a bias: the gru_cell kernel does not compute it, and a
// moe.router_linear has no kernel of its own outside moe.fused_route.
// ERR: error: {{.*}}'moe.router_linear': this op is left outside the fused ops
func.func @layer_0(%x: tensor<?x16xf32>, %h: tensor<?x8xf32> {moe.input = "state"}) -> (tensor<?x16xf32>, tensor<?x8xf32> {moe.output = "state"}) attributes {moe.layer = 0 : i64} {
  %w1 = moe.weight ["w1"] from ["m.safetensors"] : tensor<4x16xf32>
  %b1 = moe.weight ["b1"] from ["m.safetensors"] : tensor<4xf32>
  %wih = moe.weight ["wih"] from ["m.safetensors"] : tensor<24x4xf32>
  %whh = moe.weight ["whh"] from ["m.safetensors"] : tensor<24x8xf32>
  %w2 = moe.weight ["w2"] from ["m.safetensors"] : tensor<4x8xf32>
  %u = moe.router_linear %x, %w1 bias %b1 : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4xf32>) -> tensor<?x4xf32>
  %h1 = moe.gru_cell %u, %h weights(%wih, %whh) : tensor<?x4xf32>, tensor<?x8xf32>, tensor<24x4xf32>, tensor<24x8xf32>
  %l = moe.router_linear %h1, %w2 : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 1 : i64} : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  %c, %o, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %v : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x16xf32>
  %wg = moe.weight ["g0", "g1", "g2", "g3"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %wu = moe.weight ["u0", "u1", "u2", "u3"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %wd = moe.weight ["d0", "d1", "d2", "d3"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %ys = moe.expert_ffn %xs, %o gate(%wg) up(%wu) down(%wd) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %v : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x16xf32>
  return %y, %h1 : tensor<?x16xf32>, tensor<?x8xf32>
}
