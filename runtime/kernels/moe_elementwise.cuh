//===- moe_elementwise.cuh - Elementwise glue between fused ops -----------===//
//
// Part of moe-opt. Arithmetic on [T, N] token values between the fused ops
// (a residual add between two routing iterations, the scaling of a layer's
// output): one thread per element, grid-stride. The code generator fuses a
// tree of arith ops into one kernel and writes its configuration struct
//   using TY;                          // the result's element type
//   static constexpr int N;            // the row width
//   static constexpr int Inputs;       // operand buffers read
//   static __device__ float apply(void *const *in, long long i);
// where `apply` computes element i (flat index into [T, N]) of the result
// from the operand buffers `in` (slots MOE_ELEMENTWISE_SLOT_FIRST_INPUT...),
// rounding each op's result to its IR type as the reference executor does.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_ELEMENTWISE_CUH
#define MOE_KERNELS_ELEMENTWISE_CUH

#include "moe_common.cuh"

namespace moe_k {
namespace elementwise {

/// Element i of operand buffer `p` of type T, as f32.
template <typename T>
__device__ __forceinline__ float load(const void *p, long long i) {
  return toF32<T>(static_cast<const T *>(p)[i]);
}

/// arith.maximumf / arith.minimumf: NaN if either operand is NaN, and
/// -0 < +0 (fmaxf/fminf return the other operand for NaN).
__device__ __forceinline__ float maximum(float a, float b) {
  if (a != a || b != b)
    return __uint_as_float(0x7fc00000u);
  if (a > b)
    return a;
  if (b > a)
    return b;
  return __float_as_int(a) < 0 ? b : a;
}
__device__ __forceinline__ float minimum(float a, float b) {
  if (a != a || b != b)
    return __uint_as_float(0x7fc00000u);
  if (a < b)
    return a;
  if (b < a)
    return b;
  return __float_as_int(a) < 0 ? a : b;
}

template <typename Cfg> __device__ void apply(const MoEKernelArgs &args) {
  static_assert(Cfg::Inputs <= MOE_ELEMENTWISE_MAX_INPUTS,
                "more operands than argument slots");
  using TY = typename Cfg::TY;
  TY *y = static_cast<TY *>(args.buffers[MOE_ELEMENTWISE_SLOT_OUTPUT]);
  void *const *in = args.buffers + MOE_ELEMENTWISE_SLOT_FIRST_INPUT;
  const long long n = args.num_tokens * Cfg::N;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i =
           static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += stride)
    y[i] = fromF32<TY>(Cfg::apply(in, i));
}

} // namespace elementwise
} // namespace moe_k

#endif // MOE_KERNELS_ELEMENTWISE_CUH
