// --moe-compress-experts: every routed expert matrix becomes moe.low_rank of
// two factors written beside the output IR; refusals are remarks. The
// weights come from a synthetic Mixtral (4 experts, hidden 16, inter 32).
// RUN: rm -rf %t && mkdir -p %t
// RUN: moe-import --synthetic mixtral -o %t/m --dtype f32 --layers 1 --experts 4 --intermediate 32 --hidden 16 --seed 3
// RUN: cp %s %t/m/layers.mlir
// RUN: moe-opt %t/m/layers.mlir --split-input-file --verify-diagnostics --moe-compress-experts=rank=4 -o %t/m/out.mlir 2> %t/log
// RUN: FileCheck %s < %t/m/out.mlir
// RUN: FileCheck %s --check-prefix=LOG < %t/log
// RUN: moe-import %t/m -o %t/m.mlir
// RUN: moe-opt %t/m.mlir --moe-compress-experts="param-ratio=0.25 weights-out=%t/ratio.safetensors" -o %t/ratio.mlir 2>&1 | FileCheck %s --check-prefix=RATIO
// RUN: FileCheck %s --check-prefix=RATIO-IR < %t/ratio.mlir
// RUN: not moe-opt %t/m.mlir --moe-compress-experts -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=NOOPT
// RUN: not moe-opt %t/m.mlir --moe-compress-experts="rank=4 param-ratio=0.5" -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=NOOPT
// RUN: not moe-opt %t/m.mlir --moe-compress-experts="rank=4 whiten=gram" -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=NOPROFILE
// RUN: not moe-opt %t/m.mlir --moe-compress-experts="rank=4 whiten=pca" -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=WHITEN
// RUN: not moe-opt %t/m.mlir --moe-compress-experts="rank=4 whiten=gram profile=%t/none.safetensors" -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=BADPROFILE

// NOOPT: error: moe-compress-experts: give exactly one of rank=R (R >= 1) and param-ratio=F (0 < F < 1)
// NOPROFILE: error: moe-compress-experts: whiten=gram needs profile=P
// WHITEN: error: moe-compress-experts: whiten must be none or gram, got 'pca'
// BADPROFILE: error: moe-compress-experts: {{.*}}none.safetensors

// param-ratio 0.25 of a [32 x 16] matrix: r (32 + 16) <= 128, r = 2.
// RATIO: moe-compress-experts: @layer_0 (layer 0): 4 routed experts, parameters 6144 -> 1152 (18.8%), bytes 24576 -> 4608; rank gate 2, up 2, down 2
// RATIO-IR: moe.weight ["layer_0.experts.gate.a"] from ["{{.*}}ratio.safetensors"] : tensor<4x32x2xf32>
// RATIO-IR: moe.low_rank {{.*}} : tensor<4x32x2xf32>, tensor<4x2x16xf32> -> tensor<4x32x16xf32>

// LOG: moe-compress-experts: @layer_0 (layer 0): 4 routed experts, parameters 6144 -> 2304 (37.5%), bytes 24576 -> 9216; rank gate 4, up 4, down 4
// LOG: moe-compress-experts: @in_out (layer 1): 4 routed experts, parameters 6144 -> 2304 (37.5%), bytes 24576 -> 9216; rank gate 4, up 4, down 4
// LOG: moe-compress-experts: @expert_choice (layer 2): 4 routed experts

// CHECK-LABEL: func.func @layer_0
// CHECK-NOT: experts.0.w1
// CHECK: %[[GA:.*]] = moe.weight ["layer_0.experts.gate.a"] from ["out.compress.safetensors"] : tensor<4x32x4xf32>
// CHECK: %[[GB:.*]] = moe.weight ["layer_0.experts.gate.b"] from ["out.compress.safetensors"] : tensor<4x4x16xf32>
// CHECK: %[[G:.*]] = moe.low_rank %[[GA]], %[[GB]] : tensor<4x32x4xf32>, tensor<4x4x16xf32> -> tensor<4x32x16xf32>
// CHECK: %[[U:.*]] = moe.low_rank {{.*}} : tensor<4x32x4xf32>, tensor<4x4x16xf32> -> tensor<4x32x16xf32>
// CHECK: %[[DA:.*]] = moe.weight ["layer_0.experts.down.a"] from ["out.compress.safetensors"] : tensor<4x16x4xf32>
// CHECK: %[[D:.*]] = moe.low_rank %[[DA]], %{{.*}} : tensor<4x16x4xf32>, tensor<4x4x32xf32> -> tensor<4x16x32xf32>
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%[[G]]) up(%[[U]]) down(%[[D]]) {activation = #moe.activation<silu>}
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%arg0: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
    %0 = moe.weight ["model.layers.0.block_sparse_moe.gate.weight"] from ["model.safetensors"] : tensor<4x16xf32>
    %1 = moe.router_linear %arg0, %0 : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %2 = moe.softmax %1 : tensor<?x4xf32>
    %ids, %values = moe.topk %2 {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %3 = moe.normalize %values : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %4 = moe.permute %arg0, %rows, %3 : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %5 = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w1.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight"] from ["model.safetensors"] : tensor<4x32x16xf32>
    %6 = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w3.weight", "model.layers.0.block_sparse_moe.experts.1.w3.weight", "model.layers.0.block_sparse_moe.experts.2.w3.weight", "model.layers.0.block_sparse_moe.experts.3.w3.weight"] from ["model.safetensors"] : tensor<4x32x16xf32>
    %7 = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w2.weight", "model.layers.0.block_sparse_moe.experts.1.w2.weight", "model.layers.0.block_sparse_moe.experts.2.w2.weight", "model.layers.0.block_sparse_moe.experts.3.w2.weight"] from ["model.safetensors"] : tensor<4x16x32xf32>
    %8 = moe.expert_ffn %4, %offsets gate(%5) up(%6) down(%7) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
    %9 = moe.combine %8, %rows, %3 : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    return %9 : tensor<?x16xf32>
  }
}

// -----

// in_out experts (gpt-oss, Llama 4) become out_in products: gate [E, 16, 32]
// stored [E, in, out] is a [32 x 16] matrix per expert (the layout attribute
// goes back to its default).
// CHECK-LABEL: func.func @in_out
// CHECK: %[[G:.*]] = moe.low_rank {{.*}} : tensor<4x32x4xf32>, tensor<4x4x16xf32> -> tensor<4x32x16xf32>
// CHECK: %[[U:.*]] = moe.low_rank {{.*}} : tensor<4x32x4xf32>, tensor<4x4x16xf32> -> tensor<4x32x16xf32>
// CHECK: %[[D:.*]] = moe.low_rank {{.*}} : tensor<4x16x4xf32>, tensor<4x4x32xf32> -> tensor<4x16x32xf32>
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%[[G]]) up(%[[U]]) down(%[[D]]) {activation = #moe.activation<silu>} :
module attributes {moe.weight_root = "."} {
  func.func @in_out(%xs: tensor<?x16xf32>, %offsets: tensor<5xi32>) -> tensor<?x16xf32> attributes {moe.layer = 1 : i64} {
    %gu = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w2.weight", "model.layers.0.block_sparse_moe.experts.1.w2.weight", "model.layers.0.block_sparse_moe.experts.2.w2.weight", "model.layers.0.block_sparse_moe.experts.3.w2.weight"] from ["model.safetensors"] : tensor<4x16x32xf32>
    %d = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w1.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight"] from ["model.safetensors"] : tensor<4x32x16xf32>
    %y = moe.expert_ffn %xs, %offsets gate(%gu) up(%gu) down(%d) {activation = #moe.activation<silu>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x16xf32>
    return %y : tensor<?x16xf32>
  }
}

// -----

// Expert choice is handled: the factorisation does not depend on routing.
// CHECK-LABEL: func.func @expert_choice
// CHECK: moe.expert_choice
// CHECK-COUNT-3: moe.low_rank
module attributes {moe.weight_root = "."} {
  func.func @expert_choice(%arg0: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 2 : i64} {
    %0 = moe.weight ["model.layers.0.block_sparse_moe.gate.weight"] from ["model.safetensors"] : tensor<4x16xf32>
    %1 = moe.router_linear %arg0, %0 : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %2 = moe.softmax %1 : tensor<?x4xf32>
    %ids, %w = moe.expert_choice %2 {capacity = 4 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %4 = moe.permute %arg0, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x16xf32>
    %5 = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w1.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight"] from ["model.safetensors"] : tensor<4x32x16xf32>
    %6 = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w3.weight", "model.layers.0.block_sparse_moe.experts.1.w3.weight", "model.layers.0.block_sparse_moe.experts.2.w3.weight", "model.layers.0.block_sparse_moe.experts.3.w3.weight"] from ["model.safetensors"] : tensor<4x32x16xf32>
    %7 = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w2.weight", "model.layers.0.block_sparse_moe.experts.1.w2.weight", "model.layers.0.block_sparse_moe.experts.2.w2.weight", "model.layers.0.block_sparse_moe.experts.3.w2.weight"] from ["model.safetensors"] : tensor<4x16x32xf32>
    %8 = moe.expert_ffn %4, %offsets gate(%5) up(%6) down(%7) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
    %9 = moe.combine %8, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x16xf32>
    return %9 : tensor<?x16xf32>
  }
}

// -----

// Fused IR is refused: the pass runs before --moe-optimize.
// CHECK-LABEL: func.func @fused
// CHECK-NOT: moe.low_rank
// CHECK: moe.expert_ffn
module attributes {moe.weight_root = "."} {
  // expected-remark @+1 {{moe-compress-experts: layer 3 not compressed: it holds fused ops (moe.fused_experts / moe.fused_route); run --moe-compress-experts before --moe-optimize}}
  func.func @fused(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %rows: tensor<?xi32>, %offsets: tensor<5xi32>) -> tensor<?x16xf32> attributes {moe.layer = 3 : i64} {
    %0 = moe.fused_experts %x, %ids, %w, %rows, %offsets {layout = #moe.layout<runtime>} : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<?xi32>, tensor<5xi32>) -> tensor<?x16xf32> {
    ^bb0(%arg1: tensor<?x16xf32>, %arg2: tensor<?x2xi32>, %arg3: tensor<?x2xf32>, %arg4: tensor<?xi32>, %arg5: tensor<5xi32>):
      %1 = moe.weight ["g"] from ["model.safetensors"] : tensor<4x32x16xf32>
      %2 = moe.weight ["u"] from ["model.safetensors"] : tensor<4x32x16xf32>
      %3 = moe.weight ["d"] from ["model.safetensors"] : tensor<4x16x32xf32>
      %4 = moe.permute %arg1, %arg4, %arg3 : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
      %5 = moe.expert_ffn %4, %arg5 gate(%1) up(%2) down(%3) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
      %6 = moe.combine %5, %arg4, %arg3 : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
      moe.yield %6 : tensor<?x16xf32>
    }
    return %0 : tensor<?x16xf32>
  }
}

// -----

// LoRA mixtures are left alone (their adapters are low rank already).
// CHECK-LABEL: func.func @lora
// CHECK-NOT: moe.low_rank
module attributes {moe.weight_root = "."} {
  func.func @lora(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 4 : i64} {
    %base = moe.weight ["base"] from ["model.safetensors"] : tensor<16x16xf32>
    %a = moe.weight ["a"] from ["model.safetensors"] : tensor<2x4x16xf32>
    %b = moe.weight ["b"] from ["model.safetensors"] : tensor<2x16x4xf32>
    // expected-remark @+1 {{moe-compress-experts: layer 4 not compressed: moe.lora_mixture is left as it is: its adapters are already low rank}}
    %y = moe.lora_mixture %x base(%base) lora(%a, %b) {scales = [1.0 : f32, 1.0 : f32]} : (tensor<?x16xf32>, tensor<16x16xf32>, tensor<2x4x16xf32>, tensor<2x16x4xf32>) -> tensor<?x16xf32>
    return %y : tensor<?x16xf32>
  }
}

// -----

// A rank that saves nothing, and weights that are not moe.weight, are
// refused; the layer is unchanged.
// CHECK-LABEL: func.func @refused
// CHECK-NOT: moe.low_rank
module attributes {moe.weight_root = "."} {
  func.func @refused(%xs: tensor<?x16xf32>, %offsets: tensor<5xi32>, %g: tensor<4x32x16xf32>) -> (tensor<?x16xf32>, tensor<?x16xf32>) attributes {moe.layer = 5 : i64} {
    %s = moe.weight ["s"] from ["model.safetensors"] : tensor<4x4x16xf32>
    %sd = moe.weight ["sd"] from ["model.safetensors"] : tensor<4x16x4xf32>
    // expected-remark @+1 {{moe-compress-experts: layer 5 not compressed: rank 4 of 'gate' [4 x 16] keeps 80 parameters of 64: nothing to save}}
    %y = moe.expert_ffn %xs, %offsets gate(%s) up(%s) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x4x16xf32>, tensor<4x4x16xf32>, tensor<4x16x4xf32>) -> tensor<?x16xf32>
    %d = moe.weight ["d"] from ["model.safetensors"] : tensor<4x16x32xf32>
    // expected-remark @+1 {{moe-compress-experts: layer 5 not compressed: 'gate' is not a moe.weight (the pass reads the values it factors from the weight files)}}
    %z = moe.expert_ffn %xs, %offsets gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
    return %y, %z : tensor<?x16xf32>, tensor<?x16xf32>
  }
}
