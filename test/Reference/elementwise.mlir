// Elementwise arith ops and splat constants, by hand, on the reference
// executor and on the generated kernels (emu): maximumf/minimumf propagate
// NaN and order -0 below +0 (not fmaxf/fminf).
// REQUIRES: numpy
// RUN: rm -rf %t && mkdir -p %t
// RUN: %python %S/Inputs/npy.py write %t/x.npy float32 '[[1.0, -2.0, 0.0, float("nan")], [-0.0, 4.0, 3.0, -1.0]]'
// RUN: moe-run %s --layer 0 --input %t/x.npy --output %t/ref.npy --backend reference
// RUN: %python %S/Inputs/npy.py print %t/ref.npy | FileCheck %s
// RUN: moe-run %s --layer 0 --input %t/x.npy --output %t/emu.npy --backend emu
// RUN: %python %S/Inputs/npy.py print %t/emu.npy | FileCheck %s

// b = max(x, 0.5) / 3, c = -x, d = min(b, c), f = (d - x) * 0.5,
// z = max(x, c) (+0 for x = -0 and for x = 0), y = f - z.
// CHECK: shape [2, 4] float32
// CHECK-NEXT: -2.000000 -0.916667 -0.000000 nan
// CHECK-NEXT: 0.000000 -8.000000 -6.000000 -0.416667

func.func @layer_0(%x: tensor<?x4xf32>) -> tensor<?x4xf32> attributes {moe.layer = 0 : i64} {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x4xf32>
  %half = arith.constant 0.5 : f32
  %three = arith.constant 3.0 : f32
  %h = tensor.splat %half[%t] : tensor<?x4xf32>
  %s3 = tensor.splat %three[%t] : tensor<?x4xf32>
  %a = arith.maximumf %x, %h : tensor<?x4xf32>
  %b = arith.divf %a, %s3 : tensor<?x4xf32>
  %c = arith.negf %x : tensor<?x4xf32>
  %d = arith.minimumf %b, %c : tensor<?x4xf32>
  %e = arith.subf %d, %x : tensor<?x4xf32>
  %f = arith.mulf %e, %h : tensor<?x4xf32>
  %z = arith.maximumf %x, %c : tensor<?x4xf32>
  %y = arith.subf %f, %z : tensor<?x4xf32>
  return %y : tensor<?x4xf32>
}
