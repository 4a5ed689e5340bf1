//===- moe_route_mma.cuh - The router projection on tensor cores ----------===//
//
// Part of moe-opt. moe.router_linear at large T (from the code generator's
// kRouterMmaMinTokens on, a branch of the router projection's kernel) as a
// GEMM on mma.sync.m16n8k16 with f32
// accumulators: logits [T, N] = x [T, H] . w [N, H]^T (+ bias), for 16-bit
// router weights (TW bf16, or f16 with f16 activations) and plain
// (not cosine) routers.
//
// Rounding contract. The reference computes each logit in f32 from the
// f32 values of x and w. A 16-bit weight is exact as an mma operand. An
// activation is split exactly into Pieces 16-bit terms of TW (splitPieces:
// f32 into three bf16 terms, each the top 8 significant bits of what the
// ones before left; a TX == TW activation is one term), so every product
// the tensor cores form is exact and the logit is a sum of exact products
// in f32, as the CUDA-core kernel's (routerLogits) is: only the order of
// the additions differs (k steps of 16; inside a step the hardware's order,
// which the CPU emulation models as one rounding of the exact sum). The
// small-T and CUDA-core kernels add in another order, so a token's logits
// may differ in the last bits between T below and above the threshold; a
// near tie at the top-k boundary can then pick the other expert, as it can
// against the reference (whose sums run in yet another order).
//
// Work: a block of 4 warps takes a tile of 64 tokens (16 per warp) and 32
// router rows (four n8 tiles), looping over the tiles grid-stride; each
// warp loads its fragments straight from global memory (x and w tiles are
// re-read through L1/L2 by the blocks that share them), MmaKSteps k steps
// of loads before their mma's.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_ROUTE_MMA_CUH
#define MOE_KERNELS_ROUTE_MMA_CUH

#include "moe_grouped.cuh"
#include "moe_route.cuh"

namespace moe_k {
namespace route {

/// Tokens and router rows of a block of routerLogitsMma, k steps whose
/// loads a warp issues before the first mma.
constexpr int MmaTokens = 64, MmaRows = 32, MmaKSteps = 4;

/// 16-bit terms of TW that an activation of type TX splits into exactly
/// (0: no exact split, the tensor-core router does not apply).
template <typename TX, typename TW>
__host__ __device__ constexpr int mmaPieces() {
  if constexpr (IsBF16<TW>::value)
    return IsBF16<TX>::value ? 1 : sizeof(TX) == 4 ? 3 : 0;
  else if constexpr (sizeof(TW) == 2)
    return sizeof(TX) == 2 && !IsBF16<TX>::value ? 1 : 0;
  else
    return 0;
}

/// Term p of the exact split of v into 16-bit TW values: v == the sum of
/// the Pieces terms (f32 into bf16: the top 16 bits, then the top 16 bits
/// of the rest, then the rest, which has at most 8 significant bits). A
/// non-finite v is its first term alone.
template <typename TW, int Pieces>
__device__ __forceinline__ float splitPiece(float v, int p) {
  if constexpr (Pieces == 1) {
    return v;
  } else {
    if ((__float_as_uint(v) & 0x7F800000u) == 0x7F800000u) // inf, NaN
      return p == 0 ? v : 0.0f;
    float rest = v;
#pragma unroll
    for (int q = 0; q < Pieces - 1; ++q) {
      const float top = __uint_as_float(__float_as_uint(rest) & 0xFFFF0000u);
      if (q == p)
        return top;
      rest -= top; // exact: the bits below the top 16
    }
    return rest;
  }
}

/// Two activations as a register of two TW terms p of their splits.
template <typename TW, int Pieces>
__device__ __forceinline__ unsigned splitPair(float lo, float hi, int p) {
  return mma::pack2<TW>(splitPiece<TW, Pieces>(lo, p),
                        splitPiece<TW, Pieces>(hi, p));
}

/// Two consecutive 16-bit weights as one register (low element first).
template <typename TW>
__device__ __forceinline__ unsigned weightPair(const TW *p) {
  return *reinterpret_cast<const unsigned *>(p);
}

/// moe.router_linear on tensor cores: logits[t, n] = x[t] . w[n] (+
/// bias[n]), f32. Block b: tokens [64 * (b / C), + 64) and router rows
/// [32 * (b % C), + 32), C = ceil(N / 32); the grid loops. H is a multiple
/// of 16 (the code generator checks it).
template <typename TX, typename TW, typename TB, int H, int N, bool HasBias>
__device__ void routerLogitsMma(const TX *x, const TW *w, const TB *bias,
                                float *logits, long long T) {
  constexpr int Pieces = mmaPieces<TX, TW>();
  static_assert(Pieces > 0, "no exact split of the activations into TW");
  static_assert(H % 16 == 0, "k steps of 16");
  constexpr int Columns = (N + MmaRows - 1) / MmaRows;
  constexpr int NT = MmaRows / 8; // n8 tiles per warp
  constexpr int Steps = H / 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tq = lane % 4;
  const long long items = (T + MmaTokens - 1) / MmaTokens * Columns;
  for (long long item = blockIdx.x; item < items; item += gridDim.x) {
    const long long t0 = item / Columns * MmaTokens + warp * 16;
    const int n0 = static_cast<int>(item % Columns) * MmaRows;
    if (t0 >= T)
      continue;
    // This lane's rows of x (g, g + 8 of the warp's 16; past T: the last
    // token, never stored) and of w (n0 + 8j + g; past N: the last row).
    const TX *xr[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const long long t = t0 + g + 8 * h;
      xr[h] = x + (t < T ? t : T - 1) * H + 2 * tq;
    }
    const TW *wr[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int n = n0 + 8 * j + g;
      wr[j] = w + static_cast<long long>(n < N ? n : N - 1) * H + 2 * tq;
    }
    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        acc[j][i] = 0.0f;
#pragma unroll 1
    for (int s0 = 0; s0 < Steps; s0 += MmaKSteps) {
      // A: rows g / g + 8, columns 2tq, 2tq + 1 (+ 8): a0..a7 as f32.
      float av[MmaKSteps][8];
      unsigned bv[MmaKSteps][NT][2];
#pragma unroll
      for (int s = 0; s < MmaKSteps; ++s) {
        if (Steps % MmaKSteps != 0 && s0 + s >= Steps)
          break;
        const int k = (s0 + s) * 16;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          // q: (row half q % 2, column half q / 2) as a0a1, a2a3, a4a5, a6a7.
          const TX *p = xr[q % 2] + k + 8 * (q / 2);
          av[s][2 * q] = toF32<TX>(p[0]);
          av[s][2 * q + 1] = toF32<TX>(p[1]);
        }
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          bv[s][j][0] = weightPair<TW>(wr[j] + k);
          bv[s][j][1] = weightPair<TW>(wr[j] + k + 8);
        }
      }
#pragma unroll
      for (int s = 0; s < MmaKSteps; ++s) {
        if (Steps % MmaKSteps != 0 && s0 + s >= Steps)
          break;
        // From the smallest term up.
#pragma unroll
        for (int p = Pieces - 1; p >= 0; --p) {
          unsigned a[4];
#pragma unroll
          for (int q = 0; q < 4; ++q)
            a[q] = splitPair<TW, Pieces>(av[s][2 * q], av[s][2 * q + 1], p);
#pragma unroll
          for (int j = 0; j < NT; ++j)
            mma::m16n8k16<TW>(acc[j], a, bv[s][j]);
        }
      }
    }
    // C: c0, c1 at (g, 2tq + {0, 1}), c2, c3 at (g + 8, ...).
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const long long t = t0 + g + 8 * (i / 2);
        const int n = n0 + 8 * j + 2 * tq + i % 2;
        if (t < T && n < N) {
          float v = acc[j][i];
          if constexpr (HasBias)
            v += toF32<TB>(bias[n]);
          logits[t * N + n] = v;
        }
      }
  }
}

} // namespace route
} // namespace moe_k

#endif // MOE_KERNELS_ROUTE_MMA_CUH
