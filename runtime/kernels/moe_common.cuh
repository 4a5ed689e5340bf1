//===- moe_common.cuh - Shared pieces of the moe kernel templates ---------===//
//
// Part of moe-opt. Compiled by NVRTC for the GPU, and by the host compiler
// with -DMOE_EMU for the CPU emulation (runtime/emu/moe_emu.h), from the
// same source. Kernels are specialised by a configuration struct of
// compile-time constants that the code generator writes (codegen/).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_COMMON_CUH
#define MOE_KERNELS_COMMON_CUH

#ifdef MOE_EMU
#include "moe_emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define MOE_SHARED(type, name, count) __shared__ type name[count]
#define MOE_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

#include "moe/runtime/KernelABI.h"

namespace moe_k {

/// -infinity (a function: the bit cast is not a constant expression).
__device__ __forceinline__ float negInf() { return __int_as_float(0xff800000); }

// Element conversions: every computation is in f32.
/// Whether a 16-bit type is bf16 (rather than f16).
template <typename T> struct IsBF16 {
  static constexpr bool value = false;
};
template <> struct IsBF16<__nv_bfloat16> {
  static constexpr bool value = true;
};

template <typename T> __device__ __forceinline__ float toF32(T v);
template <> __device__ __forceinline__ float toF32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float toF32<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <> __device__ __forceinline__ float toF32<__half>(__half v) {
  return __half2float(v);
}

template <typename T> __device__ __forceinline__ T fromF32(float v);
template <> __device__ __forceinline__ float fromF32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromF32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half fromF32<__half>(float v) {
  return __float2half_rn(v);
}

/// Rounds `v` as a value of type T would hold it (activations of bf16/f16
/// type are rounded where the IR produces them).
template <typename T> __device__ __forceinline__ float roundAs(float v) {
  return toF32<T>(fromF32<T>(v));
}

/// The `16 / sizeof(TW)` elements packed in a 16-byte word, as f32: bit
/// operations only, so that the word stays in registers.
template <typename TW>
__device__ __forceinline__ float unpack(const uint4 &v, int j) {
  const unsigned word4 = j < (sizeof(TW) == 4 ? 1 : 2)   ? v.x
                        : j < (sizeof(TW) == 4 ? 2 : 4) ? v.y
                        : j < (sizeof(TW) == 4 ? 3 : 6) ? v.z
                                                        : v.w;
  if constexpr (sizeof(TW) == 4) {
    return __uint_as_float(word4);
  } else {
    unsigned word = word4;
    unsigned short bits =
        static_cast<unsigned short>(j % 2 ? word >> 16 : word & 0xffffu);
    if constexpr (sizeof(TW) == 2 && IsBF16<TW>::value)
      return __uint_as_float(static_cast<unsigned>(bits) << 16);
    else
      return __half2float(__ushort_as_half(bits));
  }
}

/// Dot product of N elements of `a` (f32 staging) and `w` (weights),
/// reading `w` 16 bytes at a time when N allows (rows of [out, in] weights
/// are 16-byte aligned whenever in * sizeof(TW) is a multiple of 16).
template <typename TW, int N>
__device__ __forceinline__ float dotRow(const float *a, const TW *w) {
  float acc = 0.0f;
  constexpr int kVec = 16 / sizeof(TW);
  if constexpr (N % kVec == 0) {
    const uint4 *w4 = reinterpret_cast<const uint4 *>(w);
#pragma unroll 2
    for (int i = 0; i < N / kVec; ++i) {
      uint4 packed = w4[i];
#pragma unroll
      for (int j = 0; j < kVec; ++j)
        acc += a[i * kVec + j] * unpack<TW>(packed, j);
    }
  } else {
    for (int i = 0; i < N; ++i)
      acc += a[i] * toF32<TW>(w[i]);
  }
  return acc;
}

/// Sum over a warp.
__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float sigmoid(float v) {
  return 1.0f / (1.0f + expf(-v));
}

} // namespace moe_k

#endif // MOE_KERNELS_COMMON_CUH
