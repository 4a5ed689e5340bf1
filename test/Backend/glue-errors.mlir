// The CUDA emitter names an op it cannot generate and says what is wrong:
// "run --moe-optimize" only when unfused moe ops are left.
// RUN: moe-opt --moe-optimize --split-input-file %s | not moe-translate --moe-to-cuda --split-input-file 2>&1 | FileCheck %s --check-prefix=OPT
// RUN: not moe-translate --moe-to-cuda %s --split-input-file 2>&1 | FileCheck %s --check-prefix=RAW

// An arith op that is no elementwise glue the backend generates, after
// optimisation: named, with what the backend generates; no advice to run
// --moe-optimize.
// OPT: error: {{.*}}'arith.remf': the CUDA backend cannot generate this op between the fused ops: it generates moe.fused_route, moe.fused_experts, moe.lora_mixture, moe.gru_cell (with the moe.router_linear of its input) and elementwise arith.addf, subf, mulf, divf, maximumf, minimumf, negf on [T, N] values
// OPT-NOT: --moe-optimize
// The same IR unoptimised: the unfused moe op comes first.
// RAW: 'moe.router_linear': this op is left outside the fused ops, and the CUDA backend runs fused IR only: run moe-opt --moe-optimize first
// The module is not printed with the error (it was, in generic form).
// RAW-NOT: see current operation
// RAW-NOT: "builtin.module"
module {
  func.func @layer_0(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["g"] from ["m.safetensors"] : tensor<4x16xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %w = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %w_gate = moe.weight ["a"] from ["m.safetensors"] : tensor<4x32x16xf32>
    %w_up = moe.weight ["b"] from ["m.safetensors"] : tensor<4x32x16xf32>
    %w_down = moe.weight ["c"] from ["m.safetensors"] : tensor<4x16x32xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %r = arith.remf %y, %x : tensor<?x16xf32>
    return %r : tensor<?x16xf32>
  }
}

// -----

// Glue that the backend generates: no error for this chunk.
// OPT-NOT: error
module {
  func.func @layer_0(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["g"] from ["m.safetensors"] : tensor<4x16xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %w = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %w_gate = moe.weight ["a"] from ["m.safetensors"] : tensor<4x32x16xf32>
    %w_up = moe.weight ["b"] from ["m.safetensors"] : tensor<4x32x16xf32>
    %w_down = moe.weight ["c"] from ["m.safetensors"] : tensor<4x16x32xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, tensor<4x16x32xf32>) -> tensor<?x16xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %r = arith.addf %y, %x : tensor<?x16xf32>
    return %r : tensor<?x16xf32>
  }
}
