// Folds and canonicalization patterns of the moe dialect.
// RUN: moe-opt %s --canonicalize --split-input-file | FileCheck %s

// A scale by exactly 1 is the identity.
// CHECK-LABEL: func.func @scale_by_one
// CHECK-SAME: (%[[W:.*]]: tensor<?x2xf32>)
// CHECK-NOT: moe.scale
// CHECK: return %[[W]]
func.func @scale_by_one(%w: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %0 = moe.scale %w {factor = 1.0 : f32} : tensor<?x2xf32>
  return %0 : tensor<?x2xf32>
}

// -----

// Two scales merge into one with the product of their factors.
// CHECK-LABEL: func.func @scale_chain
// CHECK: %[[S:.*]] = moe.scale %{{.*}} {factor = 5.000000e+00 : f32}
// CHECK-NOT: moe.scale
// CHECK: return %[[S]]
func.func @scale_chain(%w: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %0 = moe.scale %w {factor = 2.0 : f32} : tensor<?x2xf32>
  %1 = moe.scale %0 {factor = 2.5 : f32} : tensor<?x2xf32>
  return %1 : tensor<?x2xf32>
}

// -----

// Two finite factors whose product overflows f32 are not merged (the
// merged scale would be +inf, which the verifier refuses).
// CHECK-LABEL: func.func @scale_overflow
// CHECK: moe.scale %{{.*}} {factor = 1.000000e+30 : f32}
// CHECK: moe.scale %{{.*}} {factor = 1.000000e+30 : f32}
func.func @scale_overflow(%w: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %0 = moe.scale %w {factor = 1.0e30 : f32} : tensor<?x2xf32>
  %1 = moe.scale %0 {factor = 1.0e30 : f32} : tensor<?x2xf32>
  return %1 : tensor<?x2xf32>
}

// -----

// Scales whose product is 1 vanish.
// CHECK-LABEL: func.func @scale_inverse
// CHECK-NOT: moe.scale
func.func @scale_inverse(%w: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %0 = moe.scale %w {factor = 4.0 : f32} : tensor<?x2xf32>
  %1 = moe.scale %0 {factor = 0.25 : f32} : tensor<?x2xf32>
  return %1 : tensor<?x2xf32>
}

// -----

// A top-k over no more candidates than real experts cannot pick a null
// expert: dropping null experts is the identity.
// CHECK-LABEL: func.func @no_null_candidates
// CHECK: %[[IDS:.*]], %[[VALS:.*]] = moe.topk
// CHECK-NOT: moe.drop_null_experts
// CHECK: return %[[IDS]], %[[VALS]]
func.func @no_null_candidates(%s: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %ids, %v = moe.topk %s {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %i, %w = moe.drop_null_experts %ids, %v {num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// With null candidates (10 scores, 8 real experts) the op stays.
// CHECK-LABEL: func.func @null_candidates
// CHECK: moe.drop_null_experts %{{.*}}, %{{.*}} {num_experts = 8 : i64}
func.func @null_candidates(%s: tensor<?x10xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %ids, %v = moe.topk %s {k = 2 : i64} : tensor<?x10xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %i, %w = moe.drop_null_experts %ids, %v {num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Ids of unknown origin may hold null experts: the op stays.
// CHECK-LABEL: func.func @unknown_ids
// CHECK: moe.drop_null_experts
func.func @unknown_ids(%ids: tensor<?x2xi32>, %v: tensor<?x2xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.drop_null_experts %ids, %v {num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}
