// A layer small enough to compute by hand: two experts with identity-like
// weights, top-1 routing.
// REQUIRES: numpy
// RUN: rm -rf %t && mkdir -p %t
// RUN: %python %S/Inputs/npy.py write %t/x.npy float32 '[[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]]'
// RUN: moe-run %s --layer 0 --input %t/x.npy --output %t/y.npy --routing-out %t/r
// RUN: %python %S/Inputs/npy.py print %t/r.ids.npy | FileCheck %s --check-prefix=IDS
// RUN: %python %S/Inputs/npy.py print %t/r.weights.npy | FileCheck %s --check-prefix=W
// RUN: %python %S/Inputs/npy.py print %t/y.npy | FileCheck %s --check-prefix=Y

// Logits: token 0 -> [1, 0], token 1 -> [0, 2], token 2 -> [3, 1].
// IDS: shape [3, 1] int32
// IDS-NEXT: 0
// IDS-NEXT: 1
// IDS-NEXT: 0
// Top-1 then renormalise: every weight is 1.
// W: shape [3, 1] float32
// W-NEXT: 1.000000
// W-NEXT: 1.000000
// W-NEXT: 1.000000
// Expert e: gate = x, up = 1 (column of ones), down: [1, 1] * 2 for e = 0,
// [1, 1] * 3 for e = 1 applied to silu(g) * u summed over I = 1:
//   I = 1, g = x[e], so y = c_e * silu(x[e]) in both outputs.
// silu(1) = 0.731059, silu(2) = 1.761594, silu(3) = 2.857722 (x 2 = 5.715445 in f32).
// Y: shape [3, 2] float32
// Y-NEXT: 1.462117 1.462117
// Y-NEXT: 5.284782 5.284782
// Y-NEXT: 5.715445 5.715445

func.func @layer_0(%x: tensor<?x2xf32>) -> tensor<?x2xf32> attributes {moe.layer = 0 : i64} {
  %wg = arith.constant dense<[[1.0, 0.0], [0.0, 1.0]]> : tensor<2x2xf32>
  %logits = moe.router_linear %x, %wg : (tensor<?x2xf32>, tensor<2x2xf32>) -> tensor<?x2xf32>
  %p = moe.softmax %logits : tensor<?x2xf32>
  %ids, %v = moe.topk %p {k = 1 : i64} : tensor<?x2xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  %w = moe.normalize %v : tensor<?x1xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 2 : i64} : tensor<?x1xi32> -> tensor<2xi32>, tensor<3xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x2xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x2xf32>
  // gate[e] = row e of the identity; up[e] = 0 * x + bias 1.
  %gate = arith.constant dense<[[[1.0, 0.0]], [[0.0, 1.0]]]> : tensor<2x1x2xf32>
  %up = arith.constant dense<0.0> : tensor<2x1x2xf32>
  %upb = arith.constant dense<1.0> : tensor<2x1xf32>
  %down = arith.constant dense<[[[2.0], [2.0]], [[3.0], [3.0]]]> : tensor<2x2x1xf32>
  %ys = moe.expert_ffn %xs, %off gate(%gate) up(%up) down(%down) up_bias(%upb) {activation = #moe.activation<silu>} : (tensor<?x2xf32>, tensor<3xi32>, tensor<2x1x2xf32>, tensor<2x1x2xf32>, tensor<2x2x1xf32>, tensor<2x1xf32>) -> tensor<?x2xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x2xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x2xf32>
  return %y : tensor<?x2xf32>
}
