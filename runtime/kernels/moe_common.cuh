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

/// Called by one thread after its block's writes are fenced
/// (__threadfence, then __syncthreads): counts one arrival at `counter` and
/// returns whether it was the `expected`-th, i.e. every other arrival's
/// writes are visible (read them through L2: volatile loads). The last
/// arrival resets the counter for the next launch.
__device__ __forceinline__ bool arriveLast(unsigned *counter,
                                           unsigned expected) {
  const bool last = atomicAdd(counter, 1u) == expected - 1u;
  if (last)
    counter[0] = 0;
  return last;
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

// Warp-wide dot products of weight rows with a few activation rows: the
// bandwidth-bound building block of the decode expert kernels
// (moe_experts.cuh) and of the router projection (moe_route.cuh).

/// Rows (routed slots or tokens) whose sums a thread holds at once: a
/// weight row used by more rows is read again per DecodeRows rows, from
/// L1/L2 (it was just read).
constexpr int DecodeRows = 4;

/// Elements per load along a row of N elements of type TW: a 16-byte word
/// when rows stay 16-byte aligned, else one element.
template <typename TW, int N> __host__ __device__ constexpr int vecWidth() {
  return N % (16 / static_cast<int>(sizeof(TW))) == 0
             ? 16 / static_cast<int>(sizeof(TW))
             : 1;
}

/// V consecutive elements of `p` as f32: 16-byte loads when V elements are
/// whole 16-byte words (the caller keeps `p` aligned), else one at a time.
template <typename T, int V>
__device__ __forceinline__ void loadVec(const T *p, float (&out)[V]) {
  if constexpr (V > 1 && (V * sizeof(T)) % 16 == 0) {
    constexpr int P = 16 / static_cast<int>(sizeof(T));
    const uint4 *p4 = reinterpret_cast<const uint4 *>(p);
#pragma unroll
    for (int q = 0; q < V / P; ++q) {
      const uint4 packed = p4[q];
#pragma unroll
      for (int j = 0; j < P; ++j)
        out[q * P + j] = unpack<T>(packed, j);
    }
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j)
      out[j] = toF32<T>(p[j]);
  }
}

/// Weight words a lane of the decode kernels loads before it uses the
/// first (16-byte words when rows allow): the loads in flight per lane.
constexpr int DecodeLoadsInFlight = 8;
/// Steps of rowDotsUpTo whose loads a lane issues at once for NW rows of
/// Iters steps: Depth words in all, at least one step, at most Iters.
template <int NW, int Iters, int Depth>
__host__ __device__ constexpr int rowDotsDepth() {
  return Depth / NW < 1 ? 1 : Depth / NW > Iters ? Iters : Depth / NW;
}

/// V consecutive elements of type T as loaded: one 16-byte word when V
/// elements are whole 16-byte words (the caller keeps them aligned), else
/// V separate elements. Kept packed until used, so that a batch of loads
/// costs 4 registers per 16-byte word.
template <typename T, int V> struct Packed {
  static constexpr bool Vector = V > 1 && (V * sizeof(T)) % 16 == 0;
  static constexpr int Words = Vector ? V * sizeof(T) / 16 : 1;
  uint4 word[Vector ? Words : 1];
  T element[Vector ? 1 : V];
  __device__ __forceinline__ void load(const T *p) {
    if constexpr (Vector) {
#pragma unroll
      for (int q = 0; q < Words; ++q)
        word[q] = reinterpret_cast<const uint4 *>(p)[q];
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j)
        element[j] = p[j];
    }
  }
  /// Element j as f32.
  __device__ __forceinline__ float get(int j) const {
    if constexpr (Vector) {
      constexpr int P = 16 / static_cast<int>(sizeof(T));
      return unpack<T>(word[j / P], j % P);
    } else {
      return toF32<T>(element[j]);
    }
  }
};

/// The activation rows of one batch (Rows at most): row pointers, how many
/// are real, and the scale of each (ScaleInput: the input is roundAs<TX>(x
/// * w)).
template <typename TA, int Rows = DecodeRows> struct Batch {
  const TA *row[Rows];
  float scale[Rows];
  int count;
};

/// One activation element of batch row `b`, as the IR's input to the
/// projection holds it.
template <typename TX, bool Scale>
__device__ __forceinline__ float scaled(float v, float scale) {
  if constexpr (Scale)
    return roundAs<TX>(v * scale);
  else
    return v;
}

/// Dot products of NW weight rows (of an [out, in] matrix, In elements
/// each) with the batch's rows over their first n elements (n <= In, a
/// multiple of VecN: rows of an expert narrower than the stack, `widths`;
/// nothing past n is loaded), split over the warp: lane l reads words l,
/// l + 32, ... (consecutive lanes, consecutive 16-byte words: coalesced),
/// then a warp-wide sum. Every lane returns the sums. VecN (a divisor of
/// In) fixes the load width; Bounded says n may end a row early.
///
/// Bytes in flight: a lane issues the loads of L steps of all NW rows
/// (L * NW <= Depth words) before it uses the first; words
/// past n are predicated off, not branched around. Each sum still adds its
/// terms in step order (bit-identical to a step-by-step loop).
template <int NW, int In, int VecN, bool Bounded, typename TX, bool Scale,
          int Depth = DecodeLoadsInFlight, typename TW, typename TA, int Rows>
__device__ __forceinline__ void rowDotsUpTo(const TW *const (&w)[NW],
                                            const Batch<TA, Rows> &a,
                                            float (&acc)[NW][Rows], int n) {
  constexpr int V = vecWidth<TW, VecN>();
  static_assert(In % V == 0, "VecN divides In");
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < NW; ++i)
#pragma unroll
    for (int b = 0; b < Rows; ++b)
      acc[i][b] = 0.0f;
  constexpr int Iters = (In / V + 31) / 32;
  constexpr bool Tail = Bounded || (In / V) % 32 != 0;
  constexpr int L = rowDotsDepth<NW, Iters, Depth>();
#pragma unroll 1
  for (int it0 = 0; it0 < Iters; it0 += L) {
    Packed<TW, V> wv[L][NW];
    bool valid[L];
#pragma unroll
    for (int l = 0; l < L; ++l) {
      const int k = ((it0 + l) * 32 + lane) * V;
      valid[l] = (Iters % L == 0 || it0 + l < Iters) && (!Tail || k < n);
      if (valid[l])
#pragma unroll
        for (int i = 0; i < NW; ++i)
          wv[l][i].load(w[i] + k);
    }
#pragma unroll
    for (int l = 0; l < L; ++l) {
      if (!valid[l])
        continue;
      const int k = ((it0 + l) * 32 + lane) * V;
#pragma unroll
      for (int b = 0; b < Rows; ++b) {
        if (b >= a.count)
          continue;
        float av[V];
        loadVec<TA, V>(a.row[b] + k, av);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const float v = scaled<TX, Scale>(av[j], a.scale[b]);
#pragma unroll
          for (int i = 0; i < NW; ++i)
            acc[i][b] += v * wv[l][i].get(j);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < NW; ++i)
#pragma unroll
    for (int b = 0; b < Rows; ++b)
      acc[i][b] = warpSum(acc[i][b]);
}

/// rowDots over whole rows (In elements).
template <int NW, int In, typename TX, bool Scale, typename TW, typename TA,
          int Rows>
__device__ __forceinline__ void rowDots(const TW *const (&w)[NW],
                                        const Batch<TA, Rows> &a,
                                        float (&acc)[NW][Rows]) {
  rowDotsUpTo<NW, In, In, false, TX, Scale>(w, a, acc, In);
}

} // namespace moe_k

#endif // MOE_KERNELS_COMMON_CUH
