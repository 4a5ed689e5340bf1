// --moe-quantize-experts rewrites expert_ffn / ffn weights to block-scaled
// FP8 (here 16x24 blocks: 32 = 16 + 16 and 64 = 24 + 24 + 16, partial edge
// blocks) or MXFP4, writes codes and scales beside the output IR in the
// checkpoints' layouts, reports the error per projection, and refuses (a
// remark naming the op, the op unchanged) what it cannot quantize. The
// numbers are checked against numpy by test/Oracle/quantize_pass.test.
// REQUIRES: numpy
// RUN: rm -rf %t && mkdir -p %t
// RUN: moe-import --synthetic mixtral -o %t/m --dtype f32 --layers 1 --experts 4 --intermediate 32 --hidden 64 --seed 3 -q
// RUN: cp %s %t/m/layers.mlir
// RUN: %python -c "import numpy as np, json, struct; g = np.zeros((2, 32, 64), np.float32); g[1, 3, 5] = np.nan; d = np.zeros((2, 64, 32), np.float32); h = json.dumps({'g': {'dtype': 'F32', 'shape': [2, 32, 64], 'data_offsets': [0, g.nbytes]}, 'd': {'dtype': 'F32', 'shape': [2, 64, 32], 'data_offsets': [g.nbytes, g.nbytes + d.nbytes]}}).encode(); h += b' ' * (-len(h) %% 8); open('%t/m/nan.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + g.tobytes() + d.tobytes())"
// RUN: moe-opt %t/m/layers.mlir --split-input-file --verify-diagnostics --moe-quantize-experts="dtype=fp8_e4m3 block=16x24" -o %t/m/out.mlir 2> %t/log
// RUN: FileCheck %s < %t/m/out.mlir
// RUN: FileCheck %s --check-prefix=LOG < %t/log

// The imported model as MXFP4, and it runs on the reference executor.
// RUN: moe-import %t/m -o %t/m.mlir
// RUN: moe-opt %t/m.mlir --moe-quantize-experts=dtype=mxfp4 -o %t/mx.mlir 2>&1 | FileCheck %s --check-prefix=MX
// RUN: FileCheck %s --check-prefix=MX-IR < %t/mx.mlir
// RUN: %python %S/Inputs/safetensors_header.py %t/mx.quant.safetensors | FileCheck %s --check-prefix=MX-FILE
// RUN: %python -c "import numpy as np; np.save('%t/x.npy', np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32))"
// RUN: moe-run %t/mx.mlir --layer 0 --input %t/x.npy --output %t/mx.npy --backend reference

// gpt-oss (in_out, fused interleaved gate_up, biases): stored [out, in],
// the layout goes back to out_in; it runs (on the reference executor, also
// after --moe-optimize, which must not change the result) within MXFP4's
// error of the bf16 layer.
// RUN: moe-import --synthetic gpt_oss --dtype bf16 --layers 1 -o %t/go -q
// RUN: moe-import %t/go -o %t/go.mlir
// RUN: moe-opt %t/go.mlir --moe-quantize-experts=dtype=mxfp4 -o %t/go4.mlir 2>&1 | FileCheck %s --check-prefix=GO
// RUN: FileCheck %s --check-prefix=GO-IR < %t/go4.mlir
// RUN: moe-opt --moe-optimize %t/go4.mlir -o %t/go4.opt.mlir
// RUN: moe-run %t/go.mlir --layer 0 --input %t/x.npy --output %t/go.npy --backend reference
// RUN: moe-run %t/go4.mlir --layer 0 --input %t/x.npy --output %t/go4.npy --backend reference
// RUN: moe-run %t/go4.opt.mlir --layer 0 --input %t/x.npy --output %t/go4.opt.npy --backend reference
// RUN: %python -c "import numpy as np, sys; a, b, c = (np.load('%t/' + n + '.npy') for n in ('go', 'go4', 'go4.opt')); e = np.linalg.norm(b - a) / np.linalg.norm(a); sys.exit(0 if np.array_equal(b, c) and 0 < e < 0.3 else 'gpt_oss mxfp4: error %%g, optimized equal: %%s' %% (e, np.array_equal(b, c)))"
// GO: moe-quantize-experts: @layer_0 (layer 0) moe.expert_ffn (8 experts): mxfp4 blocks 1x32, bytes {{[0-9]+}} -> {{[0-9]+}} ({{.*}}%); relative error gate_up {{[0-9.]+e-01}}, down {{[0-9.]+e-01}}
// GO-IR: moe.expert_ffn {{.*}} gate_up_scale(%{{.*}}) down_scale(%{{.*}}) {activation = #moe.activation<swiglu_clamped>, gate_up_layout = #moe.gate_up_layout<interleaved>, quant_block = array<i64: 1, 32>} : (tensor<?x64xf32>, tensor<9xi32>, tensor<8x256x64xf4E2M1FN>, tensor<8x64x128xf4E2M1FN>

// An input size that is not a multiple of 32 is refused for mxfp4 (down
// reads the width 40), not for fp8.
// RUN: moe-import --synthetic mixtral -o %t/m40 --dtype bf16 --layers 1 --experts 4 --intermediate 40 --hidden 64 -q
// RUN: moe-import %t/m40 -o %t/m40.mlir
// RUN: moe-opt %t/m40.mlir --mlir-print-op-on-diagnostic=false --moe-quantize-experts=dtype=mxfp4 -o %t/m40q.mlir 2>&1 | FileCheck %s --check-prefix=MX40
// RUN: moe-opt %t/m40.mlir --moe-quantize-experts=dtype=fp8_e4m3 -o %t/m40f.mlir 2>&1 | FileCheck %s --check-prefix=FP840
// RUN: %python %S/Inputs/safetensors_header.py %t/m40f.quant.safetensors | FileCheck %s --check-prefix=FP8-FILE

// Bad options.
// RUN: not moe-opt %t/m.mlir --moe-quantize-experts -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=NODTYPE
// RUN: not moe-opt %t/m.mlir --moe-quantize-experts=dtype=int8 -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=NODTYPE
// RUN: not moe-opt %t/m.mlir --moe-quantize-experts="dtype=fp8_e4m3 block=0x128" -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=BLOCK
// RUN: not moe-opt %t/m.mlir --moe-quantize-experts="dtype=fp8_e4m3 block=128" -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=BLOCK
// RUN: not moe-opt %t/m.mlir --moe-quantize-experts="dtype=mxfp4 block=16" -o %t/x.mlir 2>&1 | FileCheck %s --check-prefix=MXBLOCK
// RUN: not moe-opt %t/m.mlir --moe-quantize-experts=dtype=mxfp4 2>&1 | FileCheck %s --check-prefix=NOFILE

// NODTYPE: error: moe-quantize-experts: dtype must be fp8_e4m3 or mxfp4, got '{{(int8)?}}'
// BLOCK: error: moe-quantize-experts: block must be RxC with R, C >= 1 (e.g. 128x128), got '{{0x128|128}}'
// MXBLOCK: error: moe-quantize-experts: mxfp4 scales 32 values along the input (OCP MX); block must be 32, got '16'
// NOFILE: error: the new weights need a file: give moe-opt -o FILE.mlir

// LOG: moe-quantize-experts: @layer_0 (layer 0) moe.expert_ffn (4 experts): fp8_e4m3 blocks 16x24, bytes 98304 -> 24896 (25.3%); relative error gate {{[0-9.]+e-0[23]}}, up {{[0-9.]+e-0[23]}}, down {{[0-9.]+e-0[23]}}
// LOG: moe-quantize-experts: @in_out (layer 1) moe.expert_ffn (4 experts): fp8_e4m3 blocks 16x24
// LOG: moe-quantize-experts: @shared (layer 2) moe.ffn: fp8_e4m3 blocks 16x24, bytes 24576 -> 6224 (25.3%)

// The checkpoints' layouts: gpt-oss blocks [E, out, in/32, 16] and
// scales [E, out, in/32] (U8); DeepSeek-V3 F8_E4M3 [E, out, in] and F32
// weight_scale_inv [E, ceil(out/128), ceil(in/128)].
// MX-FILE: layer_0.experts.down_blocks U8 [4, 64, 1, 16]
// MX-FILE: layer_0.experts.down_scales U8 [4, 64, 1]
// MX-FILE: layer_0.experts.gate_blocks U8 [4, 32, 2, 16]
// MX-FILE: layer_0.experts.gate_scales U8 [4, 32, 2]
// FP8-FILE: layer_0.experts.down.weight F8_E4M3 [4, 64, 40]
// FP8-FILE: layer_0.experts.down.weight_scale_inv F32 [4, 1, 1]
// FP8-FILE: layer_0.experts.gate.weight F8_E4M3 [4, 40, 64]

// MX: moe-quantize-experts: @layer_0 (layer 0) moe.expert_ffn (4 experts): mxfp4 blocks 1x32, bytes 98304 -> 13056 (13.3%); relative error gate {{.*}}, up {{.*}}, down {{.*}}
// MX-IR: moe.weight ["layer_0.experts.gate_blocks"] from ["{{.*}}mx.quant.safetensors"] : tensor<4x32x64xf4E2M1FN>
// MX-IR: moe.weight ["layer_0.experts.gate_scales"] from ["{{.*}}mx.quant.safetensors"] : tensor<4x32x2xf8E8M0FNU>
// MX-IR: moe.expert_ffn {{.*}} gate_scale(%{{.*}}) up_scale(%{{.*}}) down_scale(%{{.*}}) {activation = #moe.activation<silu>, quant_block = array<i64: 1, 32>}

// MX40: remark: moe-quantize-experts: layer 0 not quantized: 'moe.expert_ffn' operand 'down' has input size 40, not a multiple of 32 (mxfp4 scales 32 input values)
// FP840: moe-quantize-experts: @layer_0 (layer 0) moe.expert_ffn (4 experts): fp8_e4m3 blocks 128x128

// CHECK-LABEL: func.func @layer_0
// CHECK-NOT: experts.0.w1
// CHECK: %[[G:.*]] = moe.weight ["layer_0.experts.gate.weight"] from ["out.quant.safetensors"] : tensor<4x32x64xf8E4M3FN>
// CHECK: %[[GS:.*]] = moe.weight ["layer_0.experts.gate.weight_scale_inv"] from ["out.quant.safetensors"] : tensor<4x2x3xf32>
// CHECK: %[[U:.*]] = moe.weight ["layer_0.experts.up.weight"]
// CHECK: %[[US:.*]] = moe.weight ["layer_0.experts.up.weight_scale_inv"]
// CHECK: %[[D:.*]] = moe.weight ["layer_0.experts.down.weight"] from ["out.quant.safetensors"] : tensor<4x64x32xf8E4M3FN>
// CHECK: %[[DS:.*]] = moe.weight ["layer_0.experts.down.weight_scale_inv"] from ["out.quant.safetensors"] : tensor<4x4x2xf32>
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%[[G]]) up(%[[U]]) down(%[[D]]) gate_scale(%[[GS]]) up_scale(%[[US]]) down_scale(%[[DS]]) {activation = #moe.activation<silu>, quant_block = array<i64: 16, 24>}
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%arg0: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %0 = moe.weight ["model.layers.0.block_sparse_moe.gate.weight"] from ["model.safetensors"] : tensor<4x64xf32>
    %1 = moe.router_linear %arg0, %0 : (tensor<?x64xf32>, tensor<4x64xf32>) -> tensor<?x4xf32>
    %2 = moe.softmax %1 : tensor<?x4xf32>
    %ids, %values = moe.topk %2 {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %3 = moe.normalize %values : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %4 = moe.permute %arg0, %rows, %3 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    %5 = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w1.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %6 = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w3.weight", "model.layers.0.block_sparse_moe.experts.1.w3.weight", "model.layers.0.block_sparse_moe.experts.2.w3.weight", "model.layers.0.block_sparse_moe.experts.3.w3.weight"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %7 = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w2.weight", "model.layers.0.block_sparse_moe.experts.1.w2.weight", "model.layers.0.block_sparse_moe.experts.2.w2.weight", "model.layers.0.block_sparse_moe.experts.3.w2.weight"] from ["model.safetensors"] : tensor<4x64x32xf32>
    %8 = moe.expert_ffn %4, %offsets gate(%5) up(%6) down(%7) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
    %9 = moe.combine %8, %rows, %3 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    return %9 : tensor<?x64xf32>
  }
}

// -----

// in_out experts (gpt-oss) are stored [out, in]: the layout goes back to
// its default; gate and up read one weight and get their own codes.
// CHECK-LABEL: func.func @in_out
// CHECK: moe.weight ["in_out.experts.gate.weight"] from ["out.quant.safetensors"] : tensor<4x32x64xf8E4M3FN>
// CHECK: moe.weight ["in_out.experts.down.weight"] from ["out.quant.safetensors"] : tensor<4x64x32xf8E4M3FN>
// CHECK: moe.expert_ffn {{.*}} {activation = #moe.activation<silu>, quant_block = array<i64: 16, 24>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf8E4M3FN>, tensor<4x32x64xf8E4M3FN>, tensor<4x64x32xf8E4M3FN>, tensor<4x2x3xf32>, tensor<4x2x3xf32>, tensor<4x4x2xf32>)
module attributes {moe.weight_root = "."} {
  func.func @in_out(%xs: tensor<?x64xf32>, %offsets: tensor<5xi32>) -> tensor<?x64xf32> attributes {moe.layer = 1 : i64} {
    %gu = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w2.weight", "model.layers.0.block_sparse_moe.experts.1.w2.weight", "model.layers.0.block_sparse_moe.experts.2.w2.weight", "model.layers.0.block_sparse_moe.experts.3.w2.weight"] from ["model.safetensors"] : tensor<4x64x32xf32>
    %d = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w1.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %y = moe.expert_ffn %xs, %offsets gate(%gu) up(%gu) down(%d) {activation = #moe.activation<silu>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x64x32xf32>, tensor<4x64x32xf32>, tensor<4x32x64xf32>) -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}

// -----

// A shared expert (moe.ffn): 2-D codes and scales.
// CHECK-LABEL: func.func @shared
// CHECK: moe.weight ["shared.shared.gate.weight"] from ["out.quant.safetensors"] : tensor<32x64xf8E4M3FN>
// CHECK: moe.weight ["shared.shared.gate.weight_scale_inv"] from ["out.quant.safetensors"] : tensor<2x3xf32>
// CHECK: moe.ffn {{.*}} quant_block = array<i64: 16, 24>} : (tensor<?x64xf32>, tensor<32x64xf8E4M3FN>, tensor<32x64xf8E4M3FN>, tensor<64x32xf8E4M3FN>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<4x2xf32>)
module attributes {moe.weight_root = "."} {
  func.func @shared(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 2 : i64} {
    %g = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w1.weight"] from ["model.safetensors"] : tensor<32x64xf32>
    %u = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w3.weight"] from ["model.safetensors"] : tensor<32x64xf32>
    %d = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w2.weight"] from ["model.safetensors"] : tensor<64x32xf32>
    %y = moe.ffn %x gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x32xf32>) -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}

// -----

// Fused IR is refused: the pass runs before --moe-optimize.
// CHECK-LABEL: func.func @fused
// CHECK-NOT: quant_block
module attributes {moe.weight_root = "."} {
  // expected-remark @+1 {{moe-quantize-experts: layer 3 not quantized: it holds fused ops (moe.fused_experts / moe.fused_route); run --moe-quantize-experts before --moe-optimize}}
  func.func @fused(%x: tensor<?x64xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %rows: tensor<?xi32>, %offsets: tensor<5xi32>) -> tensor<?x64xf32> attributes {moe.layer = 3 : i64} {
    %0 = moe.fused_experts %x, %ids, %w, %rows, %offsets {layout = #moe.layout<runtime>} : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<?xi32>, tensor<5xi32>) -> tensor<?x64xf32> {
    ^bb0(%arg1: tensor<?x64xf32>, %arg2: tensor<?x2xi32>, %arg3: tensor<?x2xf32>, %arg4: tensor<?xi32>, %arg5: tensor<5xi32>):
      %1 = moe.weight ["g"] from ["model.safetensors"] : tensor<4x32x64xf32>
      %2 = moe.weight ["u"] from ["model.safetensors"] : tensor<4x32x64xf32>
      %3 = moe.weight ["d"] from ["model.safetensors"] : tensor<4x64x32xf32>
      %4 = moe.permute %arg1, %arg4, %arg3 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
      %5 = moe.expert_ffn %4, %arg5 gate(%1) up(%2) down(%3) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
      %6 = moe.combine %5, %arg4, %arg3 : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
      moe.yield %6 : tensor<?x64xf32>
    }
    return %0 : tensor<?x64xf32>
  }
}

// -----

// LoRA mixtures, already quantized experts, experts of unequal width and
// weights that are not moe.weight are refused; the ops are unchanged.
// CHECK-LABEL: func.func @refused
// CHECK-NOT: .quant.safetensors
// CHECK: moe.lora_mixture
// CHECK: moe.expert_ffn {{.*}} gate_scale
// CHECK: widths = array<i64: 32, 16, 8, 32>
module attributes {moe.weight_root = "."} {
  func.func @refused(%x: tensor<?x64xf32>, %xs: tensor<?x64xf32>, %offsets: tensor<5xi32>, %g: tensor<4x32x64xf32>,
      %q: tensor<4x32x64xf8E4M3FN>, %qd: tensor<4x64x32xf8E4M3FN>, %s: tensor<4x1x1xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) attributes {moe.layer = 4 : i64} {
    %base = moe.weight ["base"] from ["model.safetensors"] : tensor<64x64xf32>
    %a = moe.weight ["a"] from ["model.safetensors"] : tensor<2x4x64xf32>
    %b = moe.weight ["b"] from ["model.safetensors"] : tensor<2x64x4xf32>
    // expected-remark @+1 {{moe-quantize-experts: layer 4: 'moe.lora_mixture' is not quantized (its adapters have no block-scaled form)}}
    %y0 = moe.lora_mixture %x base(%base) lora(%a, %b) {scales = [1.0 : f32, 1.0 : f32]} : (tensor<?x64xf32>, tensor<64x64xf32>, tensor<2x4x64xf32>, tensor<2x64x4xf32>) -> tensor<?x64xf32>
    // expected-remark @+1 {{moe-quantize-experts: layer 4 not quantized: 'moe.expert_ffn' is already quantized (quant_block)}}
    %y1 = moe.expert_ffn %xs, %offsets gate(%q) up(%q) down(%qd) gate_scale(%s) up_scale(%s) down_scale(%s) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf8E4M3FN>, tensor<4x32x64xf8E4M3FN>, tensor<4x64x32xf8E4M3FN>, tensor<4x1x1xf32>, tensor<4x1x1xf32>, tensor<4x1x1xf32>) -> tensor<?x64xf32>
    %wg = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w1.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %wd = moe.weight ["model.layers.0.block_sparse_moe.experts.0.w2.weight", "model.layers.0.block_sparse_moe.experts.1.w2.weight", "model.layers.0.block_sparse_moe.experts.2.w2.weight", "model.layers.0.block_sparse_moe.experts.3.w2.weight"] from ["model.safetensors"] : tensor<4x64x32xf32>
    // expected-remark @+1 {{moe-quantize-experts: layer 4 not quantized: 'moe.expert_ffn' has experts of unequal width ('widths'); quantized experts are one stacked tensor per projection}}
    %y2 = moe.expert_ffn %xs, %offsets gate(%wg) up(%wg) down(%wd) {activation = #moe.activation<silu>, widths = array<i64: 32, 16, 8, 32>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
    // expected-remark @+1 {{moe-quantize-experts: layer 4 not quantized: 'moe.expert_ffn' operand 'gate' is not a moe.weight (the pass reads the values it quantizes from the weight files)}}
    %y3 = moe.expert_ffn %xs, %offsets gate(%g) up(%g) down(%wd) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
    return %y0, %y1, %y2, %y3 : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
  }
}

// -----

// A weight with a NaN is an error naming the operand and the element.
module attributes {moe.weight_root = "."} {
  func.func @nan(%xs: tensor<?x64xf32>, %offsets: tensor<3xi32>) -> tensor<?x64xf32> attributes {moe.layer = 6 : i64} {
    // expected-error @+1 {{moe-quantize-experts: operand 'gate' of 'moe.expert_ffn' has a non-finite value at [1, 3, 5] ([E, out, in]); cannot quantize}}
    %g = moe.weight ["g"] from ["nan.safetensors"] : tensor<2x32x64xf32>
    %d = moe.weight ["d"] from ["nan.safetensors"] : tensor<2x64x32xf32>
    %y = moe.expert_ffn %xs, %offsets gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<3xi32>, tensor<2x32x64xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>) -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}
