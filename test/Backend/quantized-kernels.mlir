// Block-scaled expert weights in the CUDA backend (moe_quant.cuh): the FFN
// configuration says which format the codes are in and the block, the
// weight slots hold the codes and the MOE_EXPERTS *_SCALE slots their
// scales (routed here; the shared slots null), every launch's contract
// names them with their dtypes.
// RUN: moe-opt --moe-optimize %s | moe-translate --moe-to-cuda | FileCheck %s
// RUN: sed -e 's/f8E4M3FN/f4E2M1FN/g' -e 's/tensor<4x2x1xf32>/tensor<4x32x1xf8E8M0FNU>/g' -e 's/array<i64: 16, 32>/array<i64: 1, 32>/' %s | moe-opt --moe-optimize | moe-translate --moe-to-cuda | FileCheck %s --check-prefix=FP4
// FP8 tensor cores (moe_grouped_fp8.cuh) with fp8-activations: the grouped
// GEMMs of FP8 weights are fp8GateUp / fp8Down (both on the default
// pipelined k loop, or the single-stage one with --gemm mma); MXFP4 weights
// keep the dequantizing ones; a block of 16 input channels is refused by
// name.
// RUN: moe-opt --moe-optimize=fp8-activations=true %s | FileCheck %s --check-prefix=ATTR
// RUN: moe-opt --moe-optimize=fp8-activations=true %s | moe-translate --moe-to-cuda | FileCheck %s --check-prefix=FP8MMA
// RUN: sed -e 's/f8E4M3FN/f4E2M1FN/g' -e 's/tensor<4x2x1xf32>/tensor<4x32x1xf8E8M0FNU>/g' -e 's/array<i64: 16, 32>/array<i64: 1, 32>/' %s | moe-opt --moe-optimize=fp8-activations=true | moe-translate --moe-to-cuda | FileCheck %s --check-prefix=FP4MMA
// RUN: sed -e 's/tensor<4x2x1xf32>/tensor<4x2x2xf32>/g' -e 's/array<i64: 16, 32>/array<i64: 16, 16>/' %s | moe-opt --moe-optimize=fp8-activations=true | not moe-translate --moe-to-cuda -o /dev/null 2>&1 | FileCheck %s --check-prefix=BLOCK16
// ATTR: moe.fused_experts {{.*}}moe.fp8_activations
// FP8MMA: moe_k::grouped::fp8GateUp<{{.*}}_cfg::Cfg, false, true>(args)
// FP8MMA: moe_k::grouped::fp8Down<{{.*}}_cfg::Cfg, false, true>(args)
// FP4MMA-NOT: fp8GateUp
// FP4MMA: moe_k::grouped::gateUp<{{.*}}_cfg::Cfg, false, moe_k::grouped::Gemm::Pipelined>(args)
// FP4MMA-NOT: fp8Down
// BLOCK16: error: {{.*}}'moe.expert_ffn': moe.fp8_activations: the FP8 weights' block has 16 input channels; the FP8 tensor-core path needs a multiple of 32 up to 128 (DeepSeek-V3: 128)
// What the kernels do not read is still refused by name: [in, out] codes.
// RUN: sed -e 's/activation = #moe.activation<silu>,/activation = #moe.activation<silu>, weight_layout = #moe.weight_layout<in_out>,/' %s | moe-opt --moe-optimize | not moe-translate --moe-to-cuda -o /dev/null 2>&1 | FileCheck %s --check-prefix=INOUT
// CHECK: static constexpr int Quant = 1, QB0 = 16, QB1 = 32; // FP8 E4M3FN codes, f32 scales
// CHECK-NEXT: using TS = float;
// CHECK: moe-contract: {{.*}}_decode_up {{.*}}slots={{.*}}weight:f8E4M3FN:0:4096,weight:f8E4M3FN:0:4096,null,weight:f8E4M3FN:0:4096,{{.*}},weight:f32:0:8,weight:f32:0:8,null,weight:f32:0:8,null,null,null,null,value:u32:0:8,null{{$}}
// FP4: static constexpr int Quant = 2, QB0 = 1, QB1 = 32; // MXFP4: FP4 E2M1 codes, E8M0 scales
// FP4-NEXT: using TS = unsigned char;
// FP4: moe-contract: {{.*}}_decode_up {{.*}}slots={{.*}}weight:f4E2M1FN:0:4096,{{.*}},weight:f8E8M0FNU:0:128,weight:f8E8M0FNU:0:128,null,weight:f8E8M0FNU:0:128,null,null,null,null,value:u32:0:8,null{{$}}
// INOUT: error: {{.*}}'moe.expert_ffn': quantized expert weights (f8E4M3FN with block scales) with in_out weights (the kernels read [out, in] rows of codes) are not supported by the CUDA backend; run the reference executor (moe-run --backend reference)

func.func @layer_0(%x: tensor<?x32xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %wg = moe.weight ["router"] from ["m.safetensors"] : tensor<4x32xf32>
  %logits = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<4x32xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %logits : tensor<?x4xf32>
  %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x32x32xf8E4M3FN>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x32x32xf8E4M3FN>
  %sg = moe.weight ["sg"] from ["m.safetensors"] : tensor<4x2x1xf32>
  %sd = moe.weight ["sd"] from ["m.safetensors"] : tensor<4x2x1xf32>
  %ys = moe.expert_ffn %xs, %offsets gate(%g) up(%g) down(%d) gate_scale(%sg) up_scale(%sg) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 16, 32>} : (tensor<?x32xf32>, tensor<5xi32>, tensor<4x32x32xf8E4M3FN>, tensor<4x32x32xf8E4M3FN>, tensor<4x32x32xf8E4M3FN>, tensor<4x2x1xf32>, tensor<4x2x1xf32>, tensor<4x2x1xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
