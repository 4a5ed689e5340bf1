//===- moe_grouped.cuh - The grouped (prefill) expert kernels -------------===//
//
// Part of moe-opt. The prefill path of moe.fused_experts: the routed slots
// are grouped by expert (the routing kernel's `offsets` [E + 1] and `rows`
// [R]), each expert's rows go through two tiled GEMMs, and a combine kernel
// sums every token's slots back in slot order. Weights are read once per
// tile of BM rows instead of once per token. See docs/codegen.md.
//
//   gateUp<Cfg, Shared>  h[r, :] = act(x[token(r)] . gate, x[token(r)] . up)
//                        (non-gated: act(x[token(r)] . up + b), one B tile)
//   down<Cfg, Shared>    out[r, :] = w(r) * roundAs<TX>(h[r] . down + bias)
//   combine<Cfg>         y[t] = sum over slots s of out[slotRow[t, s]]
//                               (+ shared experts), CombineCols outputs
//                               of one token per work item
//
// The shared FFN (Shared = true) goes through the same GEMM templates as one
// more "expert" whose rows are all T tokens in order; combine adds it.
//
// Factored routed weights (LowRank: W = A . B, A [out, r], B [r, in]) are
// never formed: each projection is two thin GEMMs on the same tiles
// (thinGemm), the first into the decode path's f32 scratch, indexed like h
// by the row's position:
//   factor<Cfg, true>    z[r, :] = x[token(r)] . B_g^T, x . B_u^T (FACTOR_IN)
//   gateUp<Cfg, false>   h[r, :] = act(z_g[r] . A_g^T, z_u[r] . A_u^T)
//   factor<Cfg, false>   zd[r, :] = h[r] . B_d^T (FACTOR_DOWN)
//   down<Cfg, false>     out[r, :] = w(r) * roundAs<TX>(zd[r] . A_d^T + bias)
//
// Tiles: a block of Threads = 128 (4 warps, 2 x 2) computes a BM x BN = 64 x
// 64 tile of one expert's output, stepping through the reduction dimension
// BK = 32 at a time through shared memory; each warp owns a 32 x 32 sub-tile
// of MI x NI = 2 x 4 fragments of mma.sync.m16n8k16 (f32 accumulators in the
// PTX fragment layout). With bf16/f16 weights, A (gathered rows, converted
// to the weight type) and B (weights, as stored) are read from shared
// memory with ldmatrix and multiplied on the tensor cores. With f32 weights
// there is no tensor-core path that keeps f32 accuracy (tf32 would round the
// operands to 10 mantissa bits): the same tiles are multiplied on the CUDA
// cores, each thread computing the accumulator elements that the mma
// fragment layout gives it, so that loaders and epilogues are shared.
//
// Buffers: every expert kernel of one fused op, decode (moe_experts.cuh) or
// grouped, gets the same list, the MOE_EXPERTS slots of KernelABI.h.
// h and out are indexed by the position of the row in `rows` (grouped by
// expert); slotRow (written by the routing kernel) maps a slot t * K + s to
// that position, -1 for an empty slot.
//
// Experts of unequal width (Widths, moe.expert_ffn `widths`; the stacks
// are I wide, expert e uses its first width(e) units): gateUp has
// ceil(IW / BN) column tiles (IW: the widest expert); a tile at or past
// width(e) is skipped before any load, and the tile that straddles it
// copies only the width(e) - n0 real rows (columns, in_out) of gate and up,
// zero-filling the rest of shared memory, and writes h for j < width(e)
// only. down stops its reduction after ceil(width(e) / BK) steps; the last
// step loads h and down up to width(e) and zero-fills past it. The padding
// of the weights is never read; the only work spent past a width is the
// tensor-core product of the zero-filled part of one BN (gateUp) or BK
// (down) tile, the rounding of any size to a tile.
//
// Grids are upper bounds computed by the host from T alone: the GEMMs take
// (ceil(T * K / BM) + E) * ceil(N / BN) blocks (every expert may end in a
// partial tile), blocks past the last real tile stop at once; every kernel
// also loops grid-stride so that a clamped grid stays correct.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_GROUPED_CUH
#define MOE_KERNELS_GROUPED_CUH

#include "moe_async.cuh"
#include "moe_experts.cuh"
#include "moe_tma.cuh"
#include "moe_wgmma.cuh"

namespace moe_k {

//===----------------------------------------------------------------------===//
// Tensor-core primitives: inline PTX on the GPU, the emulation's warp
// collectives under MOE_EMU (same fragment layouts, PTX ISA "Matrix
// Fragments for mma.m16n8k16 with floating point type").
//===----------------------------------------------------------------------===//

namespace mma {

/// The bits of a 16-bit element.
template <typename T> __device__ __forceinline__ unsigned bits16(T v);
template <>
__device__ __forceinline__ unsigned bits16<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat16_as_ushort(v);
}
template <> __device__ __forceinline__ unsigned bits16<__half>(__half v) {
  return __half_as_ushort(v);
}

/// Two f32 values as one register of two 16-bit T (lo in the low half).
template <typename T>
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  return bits16<T>(fromF32<T>(lo)) | (bits16<T>(fromF32<T>(hi)) << 16);
}

/// d += a * b: mma.sync.aligned.m16n8k16.row.col.f32.T.T.f32, T = bf16 or
/// f16. a: 4 registers (16 x 16, row), b: 2 (16 x 8, col), d: 4 f32.
template <typename T>
__device__ __forceinline__ void m16n8k16(float d[4], const unsigned a[4],
                                         const unsigned b[2]) {
#ifdef MOE_EMU
  moe_emu::mma_m16n8k16<T>(d, a, b, d);
#else
  if constexpr (IsBF16<T>::value)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

/// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8m .. 8m + 7
/// give the (16-byte aligned) row addresses of matrix m; r[m] receives
/// this lane's two elements of matrix m (of its transpose with Trans).
template <bool Trans>
__device__ __forceinline__ void ldmatrixX4(unsigned r[4], const void *row) {
#ifdef MOE_EMU
  if constexpr (Trans)
    moe_emu::ldmatrix_x4_trans(r, row);
  else
    moe_emu::ldmatrix_x4(r, row);
#else
  unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 "
                 "{%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 "
                 "{%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

} // namespace mma

namespace grouped {

// Tile sizes (compile-time, chosen for H200: 4 warps, 2 x 2 over the tile).
constexpr int BM = 64, BN = 64, BK = 32;
constexpr int WarpsM = 2, WarpsN = 2, Threads = 32 * WarpsM * WarpsN;
constexpr int WM = BM / WarpsM, WN = BN / WarpsN; // a warp's sub-tile
constexpr int MI = WM / 16, NI = WN / 8;          // its mma fragments
/// Elements of A a thread converts per reduction step.
constexpr int AChunk = 16;
static_assert(BM * BK == Threads * AChunk, "one A chunk per thread");
static_assert(NI % 2 == 0, "B fragments are loaded two n8 tiles at a time");

/// How gateUp and down load and multiply their tiles (the tools' --gemm,
/// CudaEmitOptions::gemm).
enum class Gemm {
  /// One stage: synchronous loads, a barrier, mma.sync.
  Mma,
  /// Up to MaxStages cp.async stages in flight while mma.sync multiplies.
  Pipelined,
  /// The pipelined k loop into wgmma's core-matrix tiles, multiplied by one
  /// warpgroup with wgmma.mma_async m64n64k16 (sm_90a; wgmmaTiles says
  /// which FFNs, the others take Pipelined).
  Wgmma,
  /// The pipelined mma.sync path with its weight tiles brought by TMA
  /// tensor copies into an mbarrier pipeline (tmaKLoop; sm_90; the code
  /// generator passes it for TmaWeights<F> only, Pipelined for the others).
  Tma,
};

/// Whether the wgmma path multiplies FFN F: 16-bit weights stored [out, in]
/// (K-major B tiles; wgmma's transposed B is not used), not quantized, not
/// factored.
template <typename F> struct WgmmaTiles {
  static constexpr bool value = sizeof(typename F::TW) == 2 && !F::InOut &&
                                F::Quant == 0 && !F::LowRank;
};

/// The tile row and column of accumulator i of fragment (mi, ni) of this
/// thread. mma.sync (!WG): warp (wm, wn) of the 2 x 2 grid owns a WM x WN
/// sub-tile of MI x NI m16n8 fragments (PTX ISA mma.m16n8k16 C layout).
/// wgmma (WG): the warpgroup's accumulators of one m64n64k16, the 32
/// floats of acc[nb] as one array: warp w owns rows 16 w .. 16 w + 15,
/// fragment (mi, ni) is the n8 chunk c = mi * NI + ni (PTX ISA wgmma
/// "Register Fragments" for D, moe_wgmma.cuh).
template <bool WG> __device__ __forceinline__ int fragRow(int mi, int i) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int r = lane / 4 + (i >= 2 ? 8 : 0);
  return WG ? 16 * warp + r : (warp / WarpsN) * WM + mi * 16 + r;
}
template <bool WG>
__device__ __forceinline__ int fragCol(int mi, int ni, int i) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int c = 2 * (lane % 4) + (i & 1);
  return WG ? 8 * (mi * NI + ni) + c : (warp % WarpsN) * WN + ni * 8 + c;
}

/// The same with the thread's coordinates precomputed: warp = threadIdx.x /
/// 32, (wm, wn) = (warp / WarpsN, warp % WarpsN), g = lane / 4, t = lane %
/// 4; fragColAt adds the tile's first column n0. Two forms of one mapping
/// because ptxas allocates differently with each (NVRTC 13.0, sm_90a): the
/// FP8 down kernel spills 12 bytes with fragRow/fragCol, the shared gate/up
/// GEMM with f32 activations (examples/read_me) 24 bytes with these.
template <bool WG>
__device__ __forceinline__ int fragRowAt(int warp, int wm, int g, int mi,
                                         int i) {
  if constexpr (WG)
    return 16 * warp + g + (i >= 2 ? 8 : 0);
  else
    return wm * WM + mi * 16 + g + (i >= 2 ? 8 : 0);
}
template <bool WG>
__device__ __forceinline__ int fragColAt(int n0, int wn, int t, int mi,
                                         int ni, int i) {
  if constexpr (WG)
    return n0 + 8 * (mi * NI + ni) + 2 * t + (i & 1);
  else
    return n0 + wn * WN + ni * 8 + 2 * t + (i & 1);
}
static_assert(MI * NI * 8 == BN && Threads == 128 && BM == 64,
              "a wgmma tile is one warpgroup's m64n64");

/// Shared-memory geometry for weights of type TW (the tile type: A is
/// converted to it). Rows are padded so that the 8 rows an ldmatrix reads
/// (and the rows the scalar path reads) fall in distinct banks.
template <typename TW> struct Smem {
  static constexpr bool Tensor = sizeof(TW) == 2;
  static constexpr int Pad = Tensor ? 8 : 4;
  /// A: [BM][SK]; B of an [out, in] matrix: [BN][SK] (k contiguous); B of
  /// an [in, out] matrix: [BK][SN] (n contiguous).
  static constexpr int SK = BK + Pad, SN = BN + Pad;
  static constexpr int A = BM * SK;
  static constexpr int BOutIn = BN * SK, BInOut = BK * SN;
};

/// The routed or the shared FFN of a configuration.
template <bool SharedFFN, typename R, typename S> struct Choose {
  using type = R;
};
template <typename R, typename S> struct Choose<true, R, S> {
  using type = S;
};
template <typename Cfg> struct Sel {
  template <bool SharedFFN>
  using FFN = typename Choose<SharedFFN, typename Cfg::Routed,
                              typename Cfg::Shared>::type;
};

/// How many 16-bit terms carry an f32 A operand on the tensor cores: bf16
/// keeps 8 significant bits, so three terms (hi + mid + lo) reach f32's 24;
/// f16 keeps 11, two terms reach 22. Used when the IR's activations are f32
/// (or of another 16-bit type than the weights): the grouped path then
/// keeps the accuracy of f32 activations (products of 16-bit terms are
/// exact, accumulation is f32), at NA times the tensor-core work on A.
template <typename TW> struct SplitTerms {
  static constexpr int value = IsBF16<TW>::value ? 3 : 2;
};
template <> struct SplitTerms<float> {
  static constexpr int value = 1;
};
/// 16-bit terms of h in the down projection when the IR's activations are
/// 16-bit. The IR keeps h in f32 inside moe.expert_ffn (only the FFN's
/// result is rounded to the activation type); one bf16 term would round h
/// by up to 2^-9 relative, which moves outputs by up to a few bf16 ulps
/// against the reference (measured: up to 1e-2 of max |y| on the examples,
/// against 1e-3 for the f32 sums of the decode path). Two terms (hi + lo,
/// 2^-17) keep the grouped path as close to the reference as the decode
/// path, at twice the tensor-core work of the down projection's A side. 1 is
/// the usual production trade-off (a bf16 intermediate), a tuning knob for the
/// GPU.
constexpr int HiddenTerms = 2;

template <typename A, typename B> struct SameType {
  static constexpr bool value = false;
};
template <typename A> struct SameType<A, A> {
  static constexpr bool value = true;
};

/// acc[nb] += A * B[nb] over one BK step, for this warp's sub-tile.
/// Tensor cores for 16-bit TW; otherwise f32 FMAs on the CUDA cores with
/// the same ownership of accumulator elements (lane = 4 g + t holds rows
/// g, g + 8 and columns 2 t, 2 t + 1 of each m16n8 fragment).
/// With NA > 1 (tensor cores only), A is the sum of NA 16-bit tiles
/// (As + q * Smem<TW>::A), each multiplied by the same B fragments.
/// BSpan > 0: the B tiles are [BN][BK] without padding, as a tensor copy
/// with a swizzle of BSpan bytes left them (the TMA path; !InOut only).
template <typename TW, bool InOut, int NB, int NA, int BSpan = 0>
__device__ __forceinline__ void warpTile(float (&acc)[NB][MI][NI][4],
                                         const TW *As, const TW *B0,
                                         const TW *B1) {
  static_assert(BSpan == 0 || (!InOut && sizeof(TW) == 2),
                "swizzled B tiles are 16-bit [out, in] tiles");
  using S = Smem<TW>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = warp / WarpsN, wn = warp % WarpsN;
  if constexpr (S::Tensor) {
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      unsigned a[NA][MI][4];
#pragma unroll
      for (int q = 0; q < NA; ++q)
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
          mma::ldmatrixX4<false>(
              a[q][mi], As + q * S::A +
                            (wm * WM + mi * 16 + lane % 16) * S::SK + kk +
                            (lane / 16) * 8);
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        const TW *B = nb == 0 ? B0 : B1;
#pragma unroll
        for (int ni = 0; ni < NI; ni += 2) {
          // Matrices: (n8 tile ni, k 0-7), (ni, k 8-15), (ni + 1, k 0-7),
          // (ni + 1, k 8-15): b[0..1] for ni, b[2..3] for ni + 1.
          unsigned b[4];
          if constexpr (InOut)
            mma::ldmatrixX4<true>(
                b, B + (kk + lane % 8 + ((lane / 8) % 2) * 8) * S::SN +
                       wn * WN + ni * 8 + (lane / 16) * 8);
          else if constexpr (BSpan > 0)
            mma::ldmatrixX4<false>(
                b, reinterpret_cast<const unsigned char *>(B) +
                       tma::swizzle<BSpan>(
                           ((wn * WN + ni * 8 + lane % 8 + (lane / 16) * 8) *
                                BK +
                            kk + ((lane / 8) % 2) * 8) *
                           sizeof(TW)));
          else
            mma::ldmatrixX4<false>(
                b, B + (wn * WN + ni * 8 + lane % 8 + (lane / 16) * 8) *
                           S::SK +
                       kk + ((lane / 8) % 2) * 8);
          // The smallest terms first.
#pragma unroll
          for (int q = NA - 1; q >= 0; --q)
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
              mma::m16n8k16<TW>(acc[nb][mi][ni], a[q][mi], b);
              mma::m16n8k16<TW>(acc[nb][mi][ni + 1], a[q][mi], b + 2);
            }
        }
      }
    }
  } else {
    static_assert(NA == 1, "f32 tiles are not split");
    const int g = lane / 4, t = lane % 4;
#pragma unroll 4
    for (int k = 0; k < BK; ++k) {
      float a[MI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        a[mi][0] = As[(wm * WM + mi * 16 + g) * S::SK + k];
        a[mi][1] = As[(wm * WM + mi * 16 + g + 8) * S::SK + k];
      }
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        const TW *B = nb == 0 ? B0 : B1;
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const int c = wn * WN + ni * 8 + 2 * t;
          float b0, b1;
          if constexpr (InOut) {
            b0 = B[k * S::SN + c];
            b1 = B[k * S::SN + c + 1];
          } else {
            b0 = B[c * S::SK + k];
            b1 = B[(c + 1) * S::SK + k];
          }
#pragma unroll
          for (int mi = 0; mi < MI; ++mi) {
            acc[nb][mi][ni][0] += a[mi][0] * b0;
            acc[nb][mi][ni][1] += a[mi][0] * b1;
            acc[nb][mi][ni][2] += a[mi][1] * b0;
            acc[nb][mi][ni][3] += a[mi][1] * b1;
          }
        }
      }
    }
  }
}

/// Copies a Rows x Cols tile of weights (no conversion) into shared memory
/// (row stride Stride): dst[r][c] = src[(rowOff + rowStep * (r0 + r)) *
/// pitch + c0 + c], zero where r >= rowValid or c >= colValid. 16-byte
/// copies where the chunk is whole and Vec says the source rows are 16-byte
/// aligned; with Async those are cp.async copies (the pipelined k loop).
/// Core: the tile goes in wgmma's core-matrix layout
/// (wgmma::CoreTile<Rows, Cols>, Stride unused) instead of padded rows.
template <typename TW, int Rows, int Cols, int Stride, bool Vec,
          bool Async = false, bool Core = false>
__device__ __forceinline__ void copyTile(TW *dst, const TW *src,
                                         long long pitch, int rowOff,
                                         int rowStep, int r0, int rowValid,
                                         long long c0, int colValid) {
  constexpr int V = 16 / sizeof(TW);
  constexpr int PerRow = Cols / V;
  static_assert(Cols % V == 0, "tile rows are whole 16-byte chunks");
  for (int i = threadIdx.x; i < Rows * PerRow; i += Threads) {
    const int r = i / PerRow, c = (i % PerRow) * V;
    TW *d = dst + (Core ? wgmma::CoreTile<Rows, Cols>::at(r, c)
                        : r * Stride + c);
    const TW *s =
        src + static_cast<long long>(rowOff + rowStep * (r0 + r)) * pitch +
        c0 + c;
    if (Vec && r < rowValid && c + V <= colValid) {
      if constexpr (Async)
        async::copy16(d, s);
      else
        *reinterpret_cast<uint4 *>(d) = *reinterpret_cast<const uint4 *>(s);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j)
        d[j] = r < rowValid && c + j < colValid ? s[j] : fromF32<TW>(0.0f);
    }
  }
}

/// The interleaved [in, out] gate_up tile (gpt-oss): source columns
/// 2 (n0 + c) and 2 (n0 + c) + 1 of row r0 + r go to gate[r][c] and
/// up[r][c]; zero where r >= rowValid or c >= colValid.
template <typename TW, int Rows, int Cols, int Stride, bool Vec>
__device__ __forceinline__ void copyPairs(TW *gate, TW *up, const TW *src,
                                          long long pitch, int r0,
                                          int rowValid, int n0,
                                          int colValid) {
  constexpr int V = 16 / sizeof(TW), P = V / 2; // pairs per 16 bytes
  constexpr int PerRow = Cols / P;
  for (int i = threadIdx.x; i < Rows * PerRow; i += Threads) {
    const int r = i / PerRow, c = (i % PerRow) * P;
    const TW *s = src + static_cast<long long>(r0 + r) * pitch +
                  2LL * (n0 + c);
    TW *g = gate + r * Stride + c, *u = up + r * Stride + c;
    if (Vec && r < rowValid && c + P <= colValid) {
      const uint4 v = *reinterpret_cast<const uint4 *>(s);
      if constexpr (sizeof(TW) == 2) {
        *reinterpret_cast<uint2 *>(g) = make_uint2(
            __byte_perm(v.x, v.y, 0x5410), __byte_perm(v.z, v.w, 0x5410));
        *reinterpret_cast<uint2 *>(u) = make_uint2(
            __byte_perm(v.x, v.y, 0x7632), __byte_perm(v.z, v.w, 0x7632));
      } else {
        *reinterpret_cast<uint2 *>(g) = make_uint2(v.x, v.z);
        *reinterpret_cast<uint2 *>(u) = make_uint2(v.y, v.w);
      }
    } else {
#pragma unroll
      for (int j = 0; j < P; ++j) {
        bool ok = r < rowValid && c + j < colValid;
        g[j] = ok ? s[2 * j] : fromF32<TW>(0.0f);
        u[j] = ok ? s[2 * j + 1] : fromF32<TW>(0.0f);
      }
    }
  }
}

/// One AChunk-element piece of a row of A in f32: v[j] = f(src[k + j])
/// with f(v) = roundAs<TX>(v * scale) when Scale (the input scaled by its
/// routing weight, rounded as the IR's permute result is), else v; zero
/// past kLimit or when the row does not exist (src null). VecSrc: the
/// source rows are 16-byte aligned.
template <typename TS, typename TX, bool Scale, bool VecSrc>
__device__ __forceinline__ void loadAValues(float (&v)[AChunk], const TS *src,
                                            int k, int kLimit, float scale) {
  if (VecSrc && src != nullptr && k + AChunk <= kLimit) {
    constexpr int V = 16 / sizeof(TS);
#pragma unroll
    for (int q = 0; q < AChunk / V; ++q) {
      const uint4 p = *reinterpret_cast<const uint4 *>(src + k + q * V);
#pragma unroll
      for (int j = 0; j < V; ++j)
        v[q * V + j] = unpack<TS>(p, j);
    }
  } else {
#pragma unroll
    for (int j = 0; j < AChunk; ++j)
      v[j] = src != nullptr && k + j < kLimit ? toF32<TS>(src[k + j]) : 0.0f;
  }
  if constexpr (Scale) {
#pragma unroll
    for (int j = 0; j < AChunk; ++j)
      v[j] = roundAs<TX>(v[j] * scale);
  }
}

/// The piece of loadAValues converted to the tile type: dst[j] = TW(v[j]),
/// as NA 16-bit terms (SplitTerms) for tensor cores.
/// Async: a whole chunk that needs no conversion (TS = TW, one term, no
/// scale) is copied with cp.async. Core: A is in wgmma's core-matrix layout
/// (ATile<true>), where the chunk's 8-element pieces are core matrices
/// apart.
template <typename TS, typename TW, typename TX, bool Scale, bool VecSrc,
          int NA, bool Async = false, bool Core = false>
__device__ __forceinline__ void loadAChunk(TW *dst, const TS *src, int k,
                                           int kLimit, float scale) {
  // Elements between the chunk's 8-element pieces, and between terms.
  constexpr int QStride = Core ? 64 : 8;
  constexpr int TermStride = Core ? BM * BK : Smem<TW>::A;
  if constexpr (Async && VecSrc && !Scale && NA == 1 &&
                SameType<TS, TW>::value && sizeof(TW) == 2) {
    if (src != nullptr && k + AChunk <= kLimit) {
#pragma unroll
      for (int q = 0; q < AChunk * 2 / 16; ++q)
        async::copy16(dst + q * QStride, src + k + q * 8);
      return;
    }
  }
  float v[AChunk];
  loadAValues<TS, TX, Scale, VecSrc>(v, src, k, kLimit, scale);
  if constexpr (sizeof(TW) == 2) {
    // Term p is the 16-bit rounding of what the terms before it left.
#pragma unroll
    for (int p = 0; p < NA; ++p) {
#pragma unroll
      for (int q = 0; q < AChunk / 8; ++q)
        *reinterpret_cast<uint4 *>(dst + p * TermStride + q * QStride) =
            make_uint4(mma::pack2<TW>(v[q * 8 + 0], v[q * 8 + 1]),
                       mma::pack2<TW>(v[q * 8 + 2], v[q * 8 + 3]),
                       mma::pack2<TW>(v[q * 8 + 4], v[q * 8 + 5]),
                       mma::pack2<TW>(v[q * 8 + 6], v[q * 8 + 7]));
      if (p + 1 < NA) {
#pragma unroll
        for (int j = 0; j < AChunk; ++j)
          v[j] -= roundAs<TW>(v[j]);
      }
    }
  } else {
#pragma unroll
    for (int q = 0; q < AChunk / 4; ++q)
      *reinterpret_cast<float4 *>(dst + q * 4) = make_float4(
          v[q * 4 + 0], v[q * 4 + 1], v[q * 4 + 2], v[q * 4 + 3]);
  }
}

/// The rows of one work item: `count` (<= BM) consecutive rows from
/// position `start` of the grouped order, all of expert `e`.
struct RowTile {
  int e, start, count;
};

/// Row tile `tile` of the routed rows: tiles are numbered expert by expert
/// (ceil(count_e / BM) each). False past the last one.
template <int E>
__device__ __forceinline__ bool findTile(const int *offsets, long long tile,
                                         RowTile &rt) {
  for (int e = 0; e < E; ++e) {
    const int begin = offsets[e], n = offsets[e + 1] - begin;
    const long long tiles = (n + BM - 1) / BM;
    if (tile < tiles) {
      rt.e = e;
      rt.start = begin + static_cast<int>(tile) * BM;
      rt.count = n - static_cast<int>(tile) * BM;
      rt.count = rt.count < BM ? rt.count : BM;
      return true;
    }
    tile -= tiles;
  }
  return false;
}

/// Row tile `tile` of the shared FFN: rows are the tokens in order.
__device__ __forceinline__ bool denseTile(long long T, long long tile,
                                          RowTile &rt) {
  if (tile * BM >= T)
    return false;
  rt.e = 0;
  rt.start = static_cast<int>(tile * BM);
  long long left = T - tile * BM;
  rt.count = left < BM ? static_cast<int>(left) : BM;
  return true;
}

/// The row tiles a grouped GEMM walks: ceil(T / BM) of the tokens in order
/// (Dense: the shared FFN), or the routed rows expert by expert, at most
/// ceil(T K / BM) full tiles plus one partial tile per expert.
template <bool Dense, int E, int K>
__device__ __forceinline__ long long rowTileCount(long long T) {
  return Dense ? (T + BM - 1) / BM : (T * K + BM - 1) / BM + E;
}

/// Row tile `tile` of rowTileCount's order; false past the last one.
template <bool Dense, int E>
__device__ __forceinline__ bool rowTile(long long T, const int *offsets,
                                        long long tile, RowTile &rt) {
  return Dense ? denseTile(T, tile, rt) : findTile<E>(offsets, tile, rt);
}

/// Zeroed accumulators of one tile.
template <int NB>
__device__ __forceinline__ void zeroAcc(float (&acc)[NB][MI][NI][4]) {
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          acc[nb][mi][ni][i] = 0.0f;
}

/// The input row (H values of x) of row `ar` of tile rt, null past the
/// tile's rows: the token itself (Dense), or the token of the routed slot,
/// whose routing weight goes to `scale` (left alone for Dense).
template <bool Dense, int K, int H, typename TX>
__device__ __forceinline__ const TX *inputRow(const TX *x, const int *rows,
                                              const float *weights,
                                              const RowTile &rt, int ar,
                                              float &scale) {
  if (ar >= rt.count)
    return nullptr;
  if constexpr (Dense)
    return x + static_cast<long long>(rt.start + ar) * H;
  const int slot = rows[rt.start + ar];
  scale = weights[slot];
  return x + static_cast<long long>(slot / K) * H;
}

/// gateUp's epilogue for the accumulators of one tile (acc[0] gate's,
/// acc[NB - 1] up's): biases, activation, h in f32 for the tile's rows and
/// the columns below `width`.
template <typename F, int NB, bool WG = false>
__device__ __forceinline__ void
gateUpEpilogue(const float (&acc)[NB][MI][NI][4], float *h,
               const experts::FFNWeights<F> &w, const RowTile &rt, int n0,
               int width) {
  constexpr int I = F::I;
  const long long e = rt.e;
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = fragRow<WG>(mi, i);
        const int j = n0 + fragCol<WG>(mi, ni, i);
        if (r >= rt.count || j >= width)
          continue;
        float gv = acc[0][mi][ni][i], uv = acc[NB - 1][mi][ni][i];
        if constexpr (F::Fused) {
          if constexpr (F::GateUpBias) {
            const int gRow = F::Interleaved ? 2 * j : j;
            const int uRow = F::Interleaved ? 2 * j + 1 : I + j;
            gv += toF32(w.gateUpBias[e * 2 * I + gRow]);
            uv += toF32(w.gateUpBias[e * 2 * I + uRow]);
          }
        } else {
          if constexpr (F::GateBias)
            gv += toF32(w.gateBias[e * I + j]);
          if constexpr (F::UpBias)
            uv += toF32(w.upBias[e * I + j]);
        }
        // Non-gated: act(up x + b), as act(g, 1) (exact).
        h[static_cast<long long>(rt.start + r) * I + j] =
            F::NoGate
                ? experts::activate<F::Act>(uv, 1.0f, F::Alpha, F::Limit)
                : experts::activate<F::Act>(gv, uv, F::Alpha, F::Limit);
      }
}

/// down's epilogue for the accumulators of one tile: out[row] =
/// roundAs<TX>(acc + bias), times the row's routing weight (routed rows,
/// unless Unweighted).
template <typename Cfg, typename F, bool SharedFFN, bool WG = false>
__device__ __forceinline__ void
downEpilogue(const float (&acc)[1][MI][NI][4], float *out, const float *weights,
             const int *rows, const experts::FFNWeights<F> &w,
             const RowTile &rt, int n0) {
  using TX = typename Cfg::TX;
  constexpr int H = F::H;
  const long long e = rt.e;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = warp / WarpsN, wn = warp % WarpsN;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = fragRowAt<WG>(warp, wm, g, mi, i);
        const int o = fragColAt<WG>(n0, wn, t, mi, ni, i);
        if (r >= rt.count || o >= H)
          continue;
        float v = acc[0][mi][ni][i];
        if constexpr (F::DownBias)
          v += toF32(w.downBias[e * H + o]);
        v = roundAs<TX>(v);
        if constexpr (!SharedFFN && !Cfg::Unweighted)
          v *= weights[rows[rt.start + r]];
        out[static_cast<long long>(rt.start + r) * H + o] = v;
      }
}

/// Shared-memory words (uint4: 16-byte aligned carving) of a GEMM with NB
/// B tiles and NA terms of A; Core: wgmma's core-matrix tiles (no padding).
template <typename TW, bool InOut, int NB, int NA, bool Core = false>
struct GemmSmem {
  /// Elements of one A term and of one B tile.
  static constexpr int A = Core ? BM * BK : Smem<TW>::A;
  static constexpr int B = Core     ? BN * BK
                           : InOut ? Smem<TW>::BInOut
                                   : Smem<TW>::BOutIn;
  static constexpr int Elements = NA * A + NB * B;
  static constexpr int Words = Elements * sizeof(TW) / 16;
  static_assert(A * sizeof(TW) % 16 == 0 && B * sizeof(TW) % 16 == 0,
                "16-byte aligned tiles");
};



/// Waits for every wgmma group of this thread; acc may be read after it.
template <int NB>
__device__ __forceinline__ void wgmmaDrain(float (&acc)[NB][MI][NI][4]) {
  wgmma::wait<0>();
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
    wgmma::fenceOperands(reinterpret_cast<float(&)[32]>(acc[nb]));
}

/// acc[nb] += A . B[nb]^T over one BK step of core-matrix tiles (As: NA
/// terms, BM x BK each; B0, B1: BN x BK) with wgmma, the smallest terms
/// first as warpTile: BK / 16 k steps of NA * NB m64n64k16 in one group.
/// Returns with InFlight groups (this one and earlier ones) still running:
/// their stages must not be refilled (kLoop's Lag) and acc must not be
/// read before wgmmaDrain.
template <typename TW, int NB, int NA, int InFlight>
__device__ __forceinline__ void wgmmaTile(float (&acc)[NB][MI][NI][4],
                                          const TW *As, const TW *B0,
                                          const TW *B1) {
  using Tile = wgmma::CoreTile<BM, BK>;
  using BTile = wgmma::CoreTile<BN, BK>;
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < BK; kk += 16)
#pragma unroll
    for (int q = NA - 1; q >= 0; --q)
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        const unsigned long long a = wgmma::descriptor(
            As + q * Tile::Elements + Tile::at(0, kk), Tile::LBO, Tile::SBO);
        const unsigned long long b = wgmma::descriptor(
            (nb == 0 ? B0 : B1) + BTile::at(0, kk), BTile::LBO, BTile::SBO);
        wgmma::m64n64k16<TW>(reinterpret_cast<float(&)[32]>(acc[nb]), a, b,
                             true);
      }
  wgmma::commit();
  if constexpr (InFlight == 0)
    wgmmaDrain(acc);
  else
    wgmma::wait<InFlight>();
}

/// NA of an f32 intermediate (h, or z = B . x of factored weights) as the
/// A operand: split into 16-bit terms like h in `down`.
template <typename TX, typename TW> struct ScratchTerms {
  static constexpr int value = !Smem<TW>::Tensor ? 1
                               : sizeof(TX) == 4 ? SplitTerms<TW>::value
                                                 : HiddenTerms;
};

//===----------------------------------------------------------------------===//
// The pipelined k loop (GroupedGemm::pipelined)
//===----------------------------------------------------------------------===//

/// Static shared memory a pipelined GEMM may take (the limit without the
/// dynamic-shared-memory opt-in).
constexpr int PipeSmemBytes = 48 * 1024;
/// Most stages of the pipelined k loop.
constexpr int MaxStages = 4;

/// Stages of the k loop of a GEMM whose step needs GemmSmem<TW, InOut, NB,
/// NA>: as many as fit PipeSmemBytes, at most MaxStages, when Pipe; 1 (the
/// single-buffered loop of the mma path) otherwise or when two do not fit.
template <bool Pipe, typename TW, bool InOut, int NB, int NA,
          bool Core = false>
struct Stages {
  static constexpr int Fit =
      PipeSmemBytes / (GemmSmem<TW, InOut, NB, NA, Core>::Words * 16);
  static constexpr int value =
      !Pipe || Fit < 2 ? 1 : Fit > MaxStages ? MaxStages : Fit;
};

/// The k loop of a grouped GEMM over `steps` steps of BK. load(step, stage)
/// fills stage buffer `stage` with the tiles of `step`; compute(stage)
/// multiplies them. St = 1: load, barrier, compute, barrier (the mma
/// path). St > 1: the loads of St - 1 steps are in flight (cp.async groups,
/// one per step, committed even when empty so that the counting holds)
/// while a step is multiplied: at step ks, wait for this thread's group ks,
/// a barrier (every thread's copies of step ks have landed, and every warp
/// is done with the stage that step ks + St - 1 refills), issue that step,
/// multiply step ks. AsyncProxy: the tiles are read by wgmma (the async
/// proxy): each thread fences its writes before the barrier that publishes
/// them. Lag (St > 2): compute(stage) may still read its stage during the
/// next Lag steps (wgmma groups in flight, wgmmaTile's InFlight); the loads
/// then run St - 1 - Lag steps ahead, so that step ks refills the stage of
/// step ks - 1 - Lag, whose readers every thread has waited for before the
/// barrier of step ks.
template <int St, bool AsyncProxy = false, int Lag = 0, typename Load,
          typename Compute>
__device__ __forceinline__ void kLoop(int steps, Load &&load,
                                      Compute &&compute) {
  static_assert(Lag == 0 || St - 1 - Lag >= 1,
                "at least one step of loads ahead");
  if constexpr (St == 1) {
    for (int ks = 0; ks < steps; ++ks) {
      __syncthreads(); // the previous step's tiles are consumed
      load(ks, 0);
      if constexpr (AsyncProxy)
        wgmma::fenceSharedWrites();
      __syncthreads();
      compute(0);
    }
  } else {
    constexpr int Ahead = St - 1 - Lag; // steps of loads in flight
    __syncthreads(); // the previous work item's stages are consumed
#pragma unroll
    for (int s = 0; s < Ahead; ++s) {
      if (s < steps)
        load(s, s);
      async::commit();
    }
    for (int ks = 0; ks < steps; ++ks) {
      async::wait<Ahead - 1>();
      if constexpr (AsyncProxy)
        wgmma::fenceSharedWrites();
      __syncthreads();
      const int next = ks + Ahead;
      if (next < steps)
        load(next, next % St);
      async::commit();
      compute(ks % St);
    }
    async::wait<0>();
  }
}

//===----------------------------------------------------------------------===//
// The TMA k loop (GroupedGemm::tma, sm_90)
//===----------------------------------------------------------------------===//

/// Whether the GEMMs of FFN F load their weight tiles with tensor copies:
/// 16-bit [out, in] weights, not factored, quantized or interleaved, of
/// one width, whose rows are whole 16-byte chunks (a tensor map's row
/// stride). Otherwise --gemm=tma runs the pipelined cp.async loop. The
/// code generator's rule (CudaEmitter.cpp, tmaWeights) decides which
/// GEMMs ask the host for maps; the generated source asserts that both
/// agree.
template <typename F> struct TmaWeights {
  static constexpr bool value =
      sizeof(typename F::TW) == 2 && !F::InOut && !F::LowRank &&
      F::Quant == 0 && !(F::Fused && F::Interleaved) && !F::Widths &&
      F::H % 8 == 0 && F::I % 8 == 0;
};

/// The swizzle of the weight tiles: a BK row of 16-bit weights is 64
/// bytes, so the 64-byte pattern, which spreads the 8 rows an ldmatrix
/// reads over distinct banks.
constexpr int TmaSpan = BK * 2;

/// One stage of the TMA k loop: NB weight tiles [BN][BK] (dense, swizzled;
/// each a whole number of 8-line patterns from a 1024-byte aligned stage),
/// then NA A tiles [BM][SK] written by the threads as on the other paths.
template <typename TW, int NB, int NA> struct alignas(1024) TmaStage {
  static constexpr int BBytes = BN * BK * static_cast<int>(sizeof(TW));
  static_assert(BBytes % (8 * TmaSpan) == 0, "whole swizzle patterns");
  unsigned char b[NB][BBytes];
  unsigned char a[NA * Smem<TW>::A * sizeof(TW)];
};

/// Stages of the TMA k loop: as many as fit PipeSmemBytes (less the
/// barriers), at most MaxStages: 3 with 16-bit activations (13-14 KB a
/// stage), 2 with f32 ones in three terms (gateUp: 23 KB a stage).
/// tmaKLoop also handles one stage (with one more barrier a step), which
/// no current tile needs, so no test runs it.
template <typename TW, int NB, int NA> struct TmaStages {
  static constexpr int Fit =
      (PipeSmemBytes - 1024) / static_cast<int>(sizeof(TmaStage<TW, NB, NA>));
  static constexpr int value = Fit > MaxStages ? MaxStages : Fit;
  static_assert(value >= 1, "a TMA stage fits the shared memory");
};
/// TmaStages when Use, else 1 (nothing instantiated).
template <bool Use, typename TW, int NB, int NA> struct TmaStagesIf {
  static constexpr int value = 1;
};
template <typename TW, int NB, int NA> struct TmaStagesIf<true, TW, NB, NA> {
  static constexpr int value = TmaStages<TW, NB, NA>::value;
};

/// The maps of FFN set `SharedFFN` in the TENSOR_MAPS table, indexed by
/// MoEFFNSlot.
template <bool SharedFFN>
__device__ __forceinline__ const tma::TensorMap *
tmaMaps(const MoEKernelArgs &args) {
  const tma::TensorMap *table = static_cast<const tma::TensorMap *>(
      args.buffers[MOE_EXPERTS_SLOT_TENSOR_MAPS]);
  return table + ((SharedFFN ? MOE_EXPERTS_SLOT_SHARED_GATE
                             : MOE_EXPERTS_SLOT_ROUTED_GATE) -
                  MOE_EXPERTS_SLOT_ROUTED_GATE);
}

/// The barriers of the TMA loop: full[s] (one arrival, the producer's,
/// plus the stage's transaction bytes) and empty[s] (one arrival per warp
/// once it has read the stage), initialised once per block.
template <int St> struct TmaBarriers {
  tma::Bar *full, *empty;
  __device__ __forceinline__ void init() {
    if (threadIdx.x == 0) {
      for (int s = 0; s < St; ++s) {
        tma::init(&full[s], 1);
        tma::init(&empty[s], Threads / 32);
      }
      tma::fenceProxyAsync(); // the initialised barriers, for the copies
    }
    __syncthreads();
  }
};

/// tmaKLoop's state in one GEMM kernel (gateUp, down): with Use, St stages
/// and their full/empty barriers in shared memory, initialised by init()
/// (every thread), and the step count g that tmaKLoop carries across the
/// block's work items; without, nothing is allocated.
template <bool Use, typename TW, int NB, int NA> struct TmaPipe {
  static constexpr int St = TmaStagesIf<Use, TW, NB, NA>::value;
  using Stage = TmaStage<TW, NB, NA>;
  Stage *stages = nullptr;
  TmaBarriers<St> bars{};
  unsigned step = 0;
  __device__ __forceinline__ void init() {
    if constexpr (Use) {
      MOE_SHARED(Stage, tmaPipeStages, St);
      MOE_SHARED(tma::Bar, tmaPipeBars, 2 * St);
      stages = &tmaPipeStages[0];
      bars = TmaBarriers<St>{&tmaPipeBars[0], &tmaPipeBars[St]};
      bars.init();
    }
  }
};

/// The k loop with weight tiles by TMA: a block's k steps are numbered on
/// from `g` across its work items (g advances by `steps`), step g uses
/// stage g % St, whose barriers are in phase g / St. Thread 0 is the
/// producer: it issues step g's NB tensor copies (maps[nb] at column k0,
/// row rows[nb]; entries past NB unused) into the stage once empty[stage] says every warp has read
/// step g - St, St steps ahead of the consumers. Every thread writes its
/// piece of step g's A (loadA(ks, As): the rows are gathered tokens, which
/// a tensor map cannot describe), a barrier publishes it, then the
/// consumers wait on full[stage], multiply (compute(As, B0, B1)) and
/// release the stage (one arrival per warp on empty[stage]).
template <int St, int NB, typename TW, int NA, typename LoadA,
          typename Compute>
__device__ __forceinline__ void
tmaKLoop(int steps, unsigned &g, TmaStage<TW, NB, NA> *stages,
         const TmaBarriers<St> &bars, const tma::TensorMap *const (&maps)[2],
         const int (&rows)[2], LoadA &&loadA, Compute &&compute) {
#if !defined(MOE_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  static_assert(St < 0, "--gemm=tma needs sm_90 or later (tensor-map copies "
                        "and mbarrier transaction counts); use "
                        "--gemm=pipelined on this GPU");
#endif
  using Stage = TmaStage<TW, NB, NA>;
  auto issue = [&](int ks) {
    const unsigned gg = g + ks, st = gg % St;
    if (gg >= St)
      tma::wait(&bars.empty[st], (gg / St - 1) & 1u);
    tma::arriveExpectTx(&bars.full[st], NB * Stage::BBytes);
#pragma unroll
    for (int nb = 0; nb < NB; ++nb)
      tma::copy2d(stages[st].b[nb], maps[nb], ks * BK, rows[nb],
                  &bars.full[st]);
  };
  if (threadIdx.x == 0)
    for (int ks = 0; ks < St && ks < steps; ++ks)
      issue(ks);
  for (int ks = 0; ks < steps; ++ks) {
    const unsigned gg = g + ks, st = gg % St;
    TW *As = reinterpret_cast<TW *>(stages[st].a);
    if constexpr (St == 1)
      __syncthreads(); // one stage: every warp has read step ks - 1's A
    loadA(ks, As);
    __syncthreads(); // A of step ks is written; with St > 1, the stage's
                     // previous A (step ks - St) was read before the
                     // barrier of step ks - St + 1
    tma::wait(&bars.full[st], (gg / St) & 1u);
    compute(static_cast<const TW *>(As),
            reinterpret_cast<const TW *>(stages[st].b[0]),
            reinterpret_cast<const TW *>(stages[st].b[NB - 1]));
    __syncwarp();
    if (threadIdx.x % 32 == 0)
      tma::arrive(&bars.empty[st]);
    if (threadIdx.x == 0 && ks + St < steps)
      issue(ks + St);
  }
  g += steps;
}

/// Factored weights (moe.low_rank, out_in): acc += A . M^T for one tile
/// over a reduction of KDim, on one B tile. A's rows come from `src` (this
/// thread's row of the tile: AChunk pieces as loadAChunk reads them, null
/// past the tile); M's rows are rowOff + rowStep * n (copyTile) of an
/// [out, KDim] matrix, from n0 on, nValid of them. The k loop of gateUp and
/// down on one matrix: the thin GEMMs of factored weights reuse the tiles,
/// loaders and warp tiles of the dense ones.
template <typename TS, typename TW, typename TX, bool Scale, bool VecSrc,
          int NA, int KDim>
__device__ __forceinline__ void
thinGemm(float (&acc)[1][MI][NI][4], TW *As, TW *Bs, const TS *src, float scale,
         const TW *m, int rowOff, int rowStep, int n0, int nValid) {
  using S = Smem<TW>;
  constexpr int V = 16 / static_cast<int>(sizeof(TW));
  const int ar = threadIdx.x / (BK / AChunk);
  const int ac = (threadIdx.x % (BK / AChunk)) * AChunk;
  for (int k0 = 0; k0 < KDim; k0 += BK) {
    __syncthreads(); // the previous step's (or call's) tiles are consumed
    loadAChunk<TS, TW, TX, Scale, VecSrc, NA>(As + ar * S::SK + ac, src,
                                              k0 + ac, KDim, scale);
    copyTile<TW, BN, BK, S::SK, KDim % V == 0>(Bs, m, KDim, rowOff, rowStep, n0,
                                               nValid, k0, KDim - k0);
    __syncthreads();
    warpTile<TW, false, 1, NA>(acc, As, Bs, Bs);
  }
}

/// One of the two accumulators of gateUp as thinGemm's.
__device__ __forceinline__ float (&oneAcc(float (&acc)[2][MI][NI][4],
                                          int nb))[1][MI][NI][4] {
  return reinterpret_cast<float(&)[1][MI][NI][4]>(acc[nb]);
}

/// GEMM 1 and activation: h[row] = act(a . gate + bg, a . up + bu) for the
/// rows of one expert, a = the row's token (scaled by its routing weight
/// with ScaleInput), converted to the weight type. One BM x BN tile of h
/// per work item, gate and up accumulated side by side so that the thread
/// that holds gate column j also holds up column j. Pipe: the pipelined k
/// loop (kLoop, Stages); Wgmma: that loop into core-matrix tiles, wgmmaTile
/// (FFNs that WgmmaTiles takes; the others take Pipelined); Tma: weight
/// tiles by tensor copies (tmaKLoop; the code generator passes it for
/// TmaWeights<F> only).
template <typename Cfg, bool SharedFFN, Gemm Path = Gemm::Mma>
__device__ void gateUp(const MoEKernelArgs &args) {
  using TX = typename Cfg::TX;
  using F = typename Sel<Cfg>::template FFN<SharedFFN>;
  using TW = typename F::TW;
  using S = Smem<TW>;
  constexpr int H = F::H, I = F::I, K = Cfg::K;
  constexpr int E = SharedFFN ? 1 : F::E;
  constexpr bool InOut = F::InOut;
  constexpr bool Scale = Cfg::ScaleInput && !SharedFFN;
  // Column tiles up to the widest expert.
  constexpr int NT = (F::IW + BN - 1) / BN;
  constexpr int V = 16 / static_cast<int>(sizeof(TW));

  const TX *x = static_cast<const TX *>(args.buffers[MOE_EXPERTS_SLOT_INPUT]);
  const float *weights =
      static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_WEIGHTS]);
  const int *offsets =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_OFFSETS]);
  const int *rows =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_ROWS]);
  float *h = experts::hiddenBuffer<SharedFFN>(args);
  const experts::FFNWeights<F> w =
      experts::ffnWeights<F>(args, SharedFFN ? 12 : 4);

  // x is exact in the tile type when it has the weights' type. Factored
  // weights: A is z = B . x (f32 scratch of factor<Cfg, true>).
  constexpr int NA = F::LowRank ? ScratchTerms<TX, TW>::value
                     : SameType<TX, TW>::value || !S::Tensor
                         ? 1
                         : SplitTerms<TW>::value;
  static_assert(!F::LowRank || (!SharedFFN && !InOut),
                "factored weights are routed and out_in");
  static_assert(!F::LowRank || !F::NoGate, "factored weights have a gate");
  static_assert(!F::LowRank || !F::Widths, "factored weights have one width");
  // B tiles per k step: gate and up, or up alone (NoGate: the gate is
  // neither read nor multiplied). acc[NB - 1] is up's.
  constexpr int NB = F::NoGate ? 1 : 2;
  constexpr bool UseTma = Path == Gemm::Tma;
  static_assert(!UseTma || TmaWeights<F>::value,
                "the TMA path takes 16-bit [out, in] weights (TmaWeights)");
  constexpr bool WG = Path == Gemm::Wgmma && WgmmaTiles<F>::value;
  constexpr bool Pipe = Path != Gemm::Mma;
  using G = GemmSmem<TW, InOut, NB, NA, WG>;
  constexpr int St = Stages<Pipe && !F::LowRank, TW, InOut, NB, NA, WG>::value;
  // wgmma: one group left in flight per step where three stages or more fit.
  constexpr int Lag = WG && St > 2 ? 1 : 0;
  constexpr bool Async = St > 1;
  constexpr int StageWords = G::Words;
  MOE_SHARED(uint4, smemWords, (UseTma ? 1 : StageWords * St));
  using TmaState = TmaPipe<UseTma, TW, NB, NA>;
  [[maybe_unused]] TmaState tmaState;
  tmaState.init();
  TW *As = reinterpret_cast<TW *>(&smemWords[0]);
  TW *Bg = As + NA * G::A;
  TW *Bu = F::NoGate ? Bg : Bg + G::B;

  const long long T = args.num_tokens;
  const long long rowTiles = rowTileCount<SharedFFN, E, K>(T);
  // This thread's piece of A: row ar, columns ac .. ac + AChunk of a step.
  const int ar = threadIdx.x / (BK / AChunk);
  const int ac = (threadIdx.x % (BK / AChunk)) * AChunk;

  for (long long item = blockIdx.x; item < rowTiles * NT;
       item += gridDim.x) {
    const int n0 = static_cast<int>(item % NT) * BN;
    RowTile rt;
    if (!rowTile<SharedFFN, E>(T, offsets, item / NT, rt))
      break; // items are ordered: every later one is past the end too
    // The expert's width: tiles past it are padding, never loaded.
    const int width = F::width(rt.e);
    if (n0 >= width)
      continue;
    float scale = 1.0f;
    // Factored weights: A is z, read by position below.
    const TX *src =
        F::LowRank ? nullptr
                   : inputRow<SharedFFN, K, H>(x, rows, weights, rt, ar, scale);
    const long long e = rt.e;
    float acc[NB][MI][NI][4];
    zeroAcc(acc);

    if constexpr (F::LowRank) {
      // h = act(z_g . A_g^T, z_u . A_u^T): two thin GEMMs over the ranks,
      // z read from FACTOR_IN by the row's position (gate's segment, then
      // up's; one segment for a fused gate_up, whose A rows are as the
      // dense gate_up's).
      constexpr int RG = F::RG, RU = F::Fused ? F::RG : F::RU;
      constexpr int W = experts::factorInWidth<F>();
      const float *zg = ar < rt.count
                            ? static_cast<const float *>(
                                  args.buffers[MOE_EXPERTS_SLOT_FACTOR_IN]) +
                                  static_cast<long long>(rt.start + ar) * W
                            : nullptr;
      const float *zu =
          zg != nullptr && !F::Fused ? zg + experts::padFactor(RG) : zg;
      if constexpr (F::Fused) {
        const TW *m = w.gateUp + e * 2 * I * RG;
        thinGemm<float, TW, TX, false, true, NA, RG>(
            oneAcc(acc, 0), As, Bg, zg, 1.0f, m, 0, F::Interleaved ? 2 : 1, n0,
            width - n0);
        thinGemm<float, TW, TX, false, true, NA, RU>(
            oneAcc(acc, 1), As, Bu, zu, 1.0f, m, F::Interleaved ? 1 : I,
            F::Interleaved ? 2 : 1, n0, width - n0);
      } else {
        thinGemm<float, TW, TX, false, true, NA, RG>(oneAcc(acc, 0), As, Bg, zg,
                                                     1.0f, w.gate + e * I * RG,
                                                     0, 1, n0, width - n0);
        thinGemm<float, TW, TX, false, true, NA, RU>(oneAcc(acc, 1), As, Bu, zu,
                                                     1.0f, w.up + e * I * RU, 0,
                                                     1, n0, width - n0);
      }
    } else if constexpr (UseTma) {
      // Weight rows of the tile in the maps' 2-D views: [E * I, H] (gate,
      // up), [E * 2 I, H] (gate_up: gate's rows, then up's).
      const tma::TensorMap *maps = tmaMaps<SharedFFN>(args);
      const tma::TensorMap *const tileMaps[2] = {
          F::NoGate  ? &maps[MOE_FFN_SLOT_UP]
          : F::Fused ? &maps[MOE_FFN_SLOT_GATE_UP]
                     : &maps[MOE_FFN_SLOT_GATE],
          F::Fused ? &maps[MOE_FFN_SLOT_GATE_UP] : &maps[MOE_FFN_SLOT_UP]};
      const int base = static_cast<int>(e) * (F::Fused ? 2 * I : I) + n0;
      const int tileRows[2] = {base, F::Fused ? base + I : base};
      tmaKLoop<TmaState::St, NB, TW, NA>(
          (H + BK - 1) / BK, tmaState.step, tmaState.stages, tmaState.bars,
          tileMaps, tileRows,
          [&](int ks, TW *As) {
            loadAChunk<TX, TW, TX, Scale, H % (16 / sizeof(TX)) == 0, NA>(
                As + ar * S::SK + ac, src, ks * BK + ac, H, scale);
          },
          [&](const TW *As, const TW *B0, const TW *B1) {
            warpTile<TW, false, NB, NA, TmaSpan>(acc, As, B0, B1);
          });
    } else {
      // Stage st's tiles: As, Bg, Bu shifted by st * StageWords.
      auto load = [&](int ks, int st) {
        const int k0 = ks * BK;
        TW *As = reinterpret_cast<TW *>(&smemWords[st * StageWords]);
        TW *Bg = As + NA * G::A;
        TW *Bu = F::NoGate ? Bg : Bg + G::B;
        // This thread's chunk of A (written as the mma paths always did:
        // another form of the sum makes ptxas spill in the quantized gate/up
        // kernels, NVRTC 13.0).
        TW *a = As + ar * S::SK + ac;
        if constexpr (WG)
          a = As + wgmma::CoreTile<BM, BK>::at(ar, ac);
        loadAChunk<TX, TW, TX, Scale, H % (16 / sizeof(TX)) == 0, NA, Async,
                   WG>(a, src, k0 + ac, H, scale);
        if constexpr (!InOut) {
          // [out, in]: whole rows of the gate and up outputs.
          if constexpr (F::Quant != 0) {
            // Codes dequantized into the bf16 tiles (moe_quant.cuh).
            constexpr int Out = F::Fused ? 2 * I : I;
            using quant::copyQuantTile;
            if constexpr (F::NoGate) {
              copyQuantTile<F, TW, BN, BK, S::SK, Out, H, Threads>(
                  Bu, w.up, w.upScale, e, 0, 1, n0, width - n0, k0, H - k0);
            } else if constexpr (F::Fused) {
              copyQuantTile<F, TW, BN, BK, S::SK, Out, H, Threads>(
                  Bg, w.gateUp, w.gateUpScale, e, 0, F::Interleaved ? 2 : 1,
                  n0, width - n0, k0, H - k0);
              copyQuantTile<F, TW, BN, BK, S::SK, Out, H, Threads>(
                  Bu, w.gateUp, w.gateUpScale, e, F::Interleaved ? 1 : I,
                  F::Interleaved ? 2 : 1, n0, width - n0, k0, H - k0);
            } else {
              copyQuantTile<F, TW, BN, BK, S::SK, Out, H, Threads>(
                  Bg, w.gate, w.gateScale, e, 0, 1, n0, width - n0, k0,
                  H - k0);
              copyQuantTile<F, TW, BN, BK, S::SK, Out, H, Threads>(
                  Bu, w.up, w.upScale, e, 0, 1, n0, width - n0, k0, H - k0);
            }
          } else if constexpr (F::NoGate) {
            copyTile<TW, BN, BK, S::SK, H % V == 0, Async, WG>(
                Bu, w.up + e * I * H, H, 0, 1, n0, width - n0, k0, H - k0);
          } else if constexpr (F::Fused) {
            const TW *m = w.gateUp + e * 2 * I * H;
            copyTile<TW, BN, BK, S::SK, H % V == 0, Async, WG>(
                Bg, m, H, 0, F::Interleaved ? 2 : 1, n0, width - n0, k0, H - k0);
            copyTile<TW, BN, BK, S::SK, H % V == 0, Async, WG>(
                Bu, m, H, F::Interleaved ? 1 : I, F::Interleaved ? 2 : 1, n0,
                width - n0, k0, H - k0);
          } else {
            copyTile<TW, BN, BK, S::SK, H % V == 0, Async, WG>(
                Bg, w.gate + e * I * H, H, 0, 1, n0, width - n0, k0, H - k0);
            copyTile<TW, BN, BK, S::SK, H % V == 0, Async, WG>(
                Bu, w.up + e * I * H, H, 0, 1, n0, width - n0, k0, H - k0);
          }
        } else {
          // [in, out]: rows k0 .. k0 + BK, the tile's output columns.
          if constexpr (F::NoGate) {
            copyTile<TW, BK, BN, S::SN, I % V == 0, Async>(Bu, w.up + e * H * I, I, 0,
                                                    1, k0, H - k0, n0, width - n0);
          } else if constexpr (F::Fused && F::Interleaved) {
            copyPairs<TW, BK, BN, S::SN, (2 * I) % V == 0>(
                Bg, Bu, w.gateUp + e * H * 2 * I, 2 * I, k0, H - k0, n0,
                width - n0);
          } else if constexpr (F::Fused) {
            const TW *m = w.gateUp + e * H * 2 * I;
            copyTile<TW, BK, BN, S::SN, I % V == 0, Async>(Bg, m, 2 * I, 0, 1, k0,
                                                    H - k0, n0, width - n0);
            copyTile<TW, BK, BN, S::SN, I % V == 0, Async>(Bu, m, 2 * I, 0, 1, k0,
                                                    H - k0, I + n0, width - n0);
          } else {
            copyTile<TW, BK, BN, S::SN, I % V == 0, Async>(
                Bg, w.gate + e * H * I, I, 0, 1, k0, H - k0, n0, width - n0);
            copyTile<TW, BK, BN, S::SN, I % V == 0, Async>(Bu, w.up + e * H * I, I, 0,
                                                    1, k0, H - k0, n0, width - n0);
          }
        }
      };
      kLoop<St, WG, Lag>((H + BK - 1) / BK, load, [&](int st) {
        TW *As = reinterpret_cast<TW *>(&smemWords[st * StageWords]);
        TW *Bg = As + NA * G::A;
        TW *Bu = F::NoGate ? Bg : Bg + G::B;
        if constexpr (WG)
          wgmmaTile<TW, NB, NA, Lag>(acc, As, Bg, Bu);
        else
          warpTile<TW, InOut, NB, NA>(acc, As, Bg, Bu);
      });
      if constexpr (WG)
        wgmmaDrain(acc);
    }

    gateUpEpilogue<F, NB, WG>(acc, h, w, rt, n0, width);
  }
}

/// GEMM 2: out[row] = roundAs<TX>(h[row] . down + bias), times the row's
/// routing weight (routed rows, unless Unweighted), in f32. h is kept in
/// f32 scratch; on the way into shared memory it is split into 16-bit terms
/// of the weight type (the tensor cores take 16-bit operands): SplitTerms
/// with f32 activations (f32 accuracy), HiddenTerms with 16-bit ones.
/// Path: as gateUp's.
template <typename Cfg, bool SharedFFN, Gemm Path = Gemm::Mma>
__device__ void down(const MoEKernelArgs &args) {
  using TX = typename Cfg::TX;
  using F = typename Sel<Cfg>::template FFN<SharedFFN>;
  using TW = typename F::TW;
  using S = Smem<TW>;
  constexpr int H = F::H, I = F::I, K = Cfg::K;
  constexpr int E = SharedFFN ? 1 : F::E;
  constexpr bool InOut = F::InOut;
  constexpr int NT = (H + BN - 1) / BN;
  constexpr int V = 16 / static_cast<int>(sizeof(TW));

  const float *weights =
      static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_WEIGHTS]);
  const int *offsets =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_OFFSETS]);
  const int *rows =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_ROWS]);
  const float *h = experts::hiddenBuffer<SharedFFN>(args);
  float *out = experts::outBuffer<SharedFFN>(args);
  const experts::FFNWeights<F> w =
      experts::ffnWeights<F>(args, SharedFFN ? 12 : 4);

  // h (f32) is split into 16-bit terms: SplitTerms when the IR's
  // activations are f32, HiddenTerms when they are 16-bit.
  // (Factored weights: zd = B_d . h, the same way.)
  constexpr int NA = ScratchTerms<TX, TW>::value;
  static_assert(!F::LowRank || (!SharedFFN && !InOut),
                "factored weights are routed and out_in");
  constexpr bool UseTma = Path == Gemm::Tma;
  static_assert(!UseTma || TmaWeights<F>::value,
                "the TMA path takes 16-bit [out, in] weights (TmaWeights)");
  constexpr bool WG = Path == Gemm::Wgmma && WgmmaTiles<F>::value;
  constexpr bool Pipe = Path != Gemm::Mma;
  using G = GemmSmem<TW, InOut, 1, NA, WG>;
  constexpr int St = Stages<Pipe && !F::LowRank, TW, InOut, 1, NA, WG>::value;
  // wgmma: one group left in flight per step where three stages or more fit.
  constexpr int Lag = WG && St > 2 ? 1 : 0;
  constexpr bool Async = St > 1;
  constexpr int StageWords = G::Words;
  MOE_SHARED(uint4, smemWords, (UseTma ? 1 : StageWords * St));
  using TmaState = TmaPipe<UseTma, TW, 1, NA>;
  [[maybe_unused]] TmaState tmaState;
  tmaState.init();
  TW *As = reinterpret_cast<TW *>(&smemWords[0]);
  TW *Bs = As + NA * G::A;

  const long long T = args.num_tokens;
  const long long rowTiles = rowTileCount<SharedFFN, E, K>(T);
  const int ar = threadIdx.x / (BK / AChunk);
  const int ac = (threadIdx.x % (BK / AChunk)) * AChunk;

  for (long long item = blockIdx.x; item < rowTiles * NT;
       item += gridDim.x) {
    const int n0 = static_cast<int>(item % NT) * BN;
    RowTile rt;
    if (!rowTile<SharedFFN, E>(T, offsets, item / NT, rt))
      break;
    const float *src =
        ar < rt.count ? h + static_cast<long long>(rt.start + ar) * I
                      : nullptr;
    const long long e = rt.e;
    // The reduction runs over the expert's width: h and down past it are
    // padding, never loaded.
    [[maybe_unused]] const int width = F::width(e);
    float acc[1][MI][NI][4];
    zeroAcc(acc);

    if constexpr (F::LowRank) {
      // out = zd . A_d^T over RD, zd read from FACTOR_DOWN by position.
      constexpr int RD = F::RD, W = experts::factorDownWidth<F>();
      const float *zd = ar < rt.count
                            ? static_cast<const float *>(
                                  args.buffers[MOE_EXPERTS_SLOT_FACTOR_DOWN]) +
                                  static_cast<long long>(rt.start + ar) * W
                            : nullptr;
      thinGemm<float, TW, TX, false, true, NA, RD>(
          acc, As, Bs, zd, 1.0f, w.down + e * H * RD, 0, 1, n0, H - n0);
    } else if constexpr (UseTma) {
      // Weight rows of the tile in the map's 2-D view [E * H, I].
      const tma::TensorMap *const downMap =
          &tmaMaps<SharedFFN>(args)[MOE_FFN_SLOT_DOWN];
      const tma::TensorMap *const tileMaps[2] = {downMap, downMap};
      const int row = static_cast<int>(e) * H + n0;
      const int tileRows[2] = {row, row};
      tmaKLoop<TmaState::St, 1, TW, NA>(
          (width + BK - 1) / BK, tmaState.step, tmaState.stages, tmaState.bars,
          tileMaps, tileRows,
          [&](int ks, TW *As) {
            loadAChunk<float, TW, TX, false, I % 4 == 0, NA>(
                As + ar * S::SK + ac, src, ks * BK + ac, width, 1.0f);
          },
          [&](const TW *As, const TW *B0, const TW *) {
            warpTile<TW, false, 1, NA, TmaSpan>(acc, As, B0, B0);
          });
    } else {
      // Stage st's tiles: As, Bs shifted by st * StageWords.
      auto load = [&](int ks, int st) {
        const int k0 = ks * BK;
        TW *As = reinterpret_cast<TW *>(&smemWords[st * StageWords]);
        TW *Bs = As + NA * G::A;
        TW *a = As + ar * S::SK + ac; // as gateUp's
        if constexpr (WG)
          a = As + wgmma::CoreTile<BM, BK>::at(ar, ac);
        loadAChunk<float, TW, TX, false, I % 4 == 0, NA, false, WG>(
            a, src, k0 + ac, width, 1.0f);
        if constexpr (F::Quant != 0)
          quant::copyQuantTile<F, TW, BN, BK, S::SK, H, I, Threads>(
              Bs, w.down, w.downScale, e, 0, 1, n0, H - n0, k0, width - k0);
        else if constexpr (!InOut)
          copyTile<TW, BN, BK, S::SK, I % V == 0, Async, WG>(
              Bs, w.down + e * H * I, I, 0, 1, n0, H - n0, k0, width - k0);
        else
          copyTile<TW, BK, BN, S::SN, H % V == 0, Async>(
              Bs, w.down + e * I * H, H, 0, 1, k0, width - k0, n0, H - n0);
      };
      kLoop<St, WG, Lag>((width + BK - 1) / BK, load, [&](int st) {
        TW *As = reinterpret_cast<TW *>(&smemWords[st * StageWords]);
        if constexpr (WG)
          wgmmaTile<TW, 1, NA, Lag>(acc, As, As + NA * G::A, As + NA * G::A);
        else
          warpTile<TW, InOut, 1, NA>(acc, As, As + NA * G::A, As + NA * G::A);
      });
      if constexpr (WG)
        wgmmaDrain(acc);
    }

    downEpilogue<Cfg, F, SharedFFN, WG>(acc, out, weights, rows, w, rt, n0);
  }
}

/// Factored weights (moe.low_rank), the first thin GEMM of a projection:
/// the routed rows of one expert times B^T, into f32 scratch indexed by the
/// row's position (as h). In: z = a . B^T, a the row's token as gateUp
/// reads it, gate's RG columns then up's RU (B_gate_up's RG for a fused
/// gate_up) into FACTOR_IN, each segment padded to experts::FactorPad; !In:
/// zd = h . B_d^T into FACTOR_DOWN. Work item: (row tile, column tile), the
/// column tiles of gate and up apart (their segments are).
template <typename Cfg, bool In>
__device__ void factor(const MoEKernelArgs &args) {
  using TX = typename Cfg::TX;
  using F = typename Cfg::Routed;
  using TW = typename F::TW;
  using S = Smem<TW>;
  static_assert(F::LowRank && !F::InOut, "factored weights are out_in");
  constexpr int H = F::H, I = F::I, K = Cfg::K, E = F::E;
  constexpr int RA = In ? F::RG : F::RD, RB = In ? F::RU : 0;
  constexpr int TilesA = (RA + BN - 1) / BN, NT = TilesA + (RB + BN - 1) / BN;
  constexpr int KDim = In ? H : I;
  constexpr int W =
      In ? experts::factorInWidth<F>() : experts::factorDownWidth<F>();
  // A: the gathered input (as gateUp's), or h (as down's).
  using TS = typename Choose<In, float, TX>::type;
  constexpr bool Scale = In && Cfg::ScaleInput;
  constexpr int NA = !In ? ScratchTerms<TX, TW>::value
                     : SameType<TX, TW>::value || !S::Tensor
                         ? 1
                         : SplitTerms<TW>::value;
  constexpr bool VecSrc = In ? KDim % (16 / sizeof(TS)) == 0 : I % 4 == 0;

  const TX *x = static_cast<const TX *>(args.buffers[MOE_EXPERTS_SLOT_INPUT]);
  const float *weights =
      static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_WEIGHTS]);
  const int *offsets =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_OFFSETS]);
  const int *rows =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_ROWS]);
  const float *h =
      static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_HIDDEN]);
  float *z =
      static_cast<float *>(args.buffers[In ? MOE_EXPERTS_SLOT_FACTOR_IN
                                           : MOE_EXPERTS_SLOT_FACTOR_DOWN]);
  const experts::FFNWeights<F> w =
      experts::ffnWeights<F>(args, MOE_EXPERTS_SLOT_ROUTED_GATE);

  MOE_SHARED(uint4, smemWords, (GemmSmem<TW, false, 1, NA>::Words));
  TW *As = reinterpret_cast<TW *>(&smemWords[0]);
  TW *Bs = As + NA * S::A;

  const long long T = args.num_tokens;
  const long long rowTiles = rowTileCount<false, E, K>(T);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = warp / WarpsN, wn = warp % WarpsN;
  const int g = lane / 4, t = lane % 4;
  const int ar = threadIdx.x / (BK / AChunk);

  for (long long item = blockIdx.x; item < rowTiles * NT; item += gridDim.x) {
    const int nt = static_cast<int>(item % NT);
    RowTile rt;
    if (!findTile<E>(offsets, item / NT, rt))
      break;
    const long long e = rt.e;
    // Which factor: gate's (or down's) rows, or up's.
    const bool second = nt >= TilesA;
    const int n0 = (second ? nt - TilesA : nt) * BN;
    const int rank = second ? RB : RA;
    const int col0 = second ? experts::padFactor(RA) : 0;
    const TW *m;
    if constexpr (In)
      m = second     ? w.upB + e * RB * H
          : F::Fused ? w.gateUpB + e * RA * H
                     : w.gateB + e * RA * H;
    else
      m = w.downB + e * RA * I;
    float scale = 1.0f;
    const TS *src =
        In ? inputRow<false, K, H>(reinterpret_cast<const TS *>(x), rows,
                                   weights, rt, ar, scale)
           : inputRow<true, K, I>(reinterpret_cast<const TS *>(h), rows,
                                  weights, rt, ar, scale);
    float acc[1][MI][NI][4];
    zeroAcc(acc);
    thinGemm<TS, TW, TX, Scale, VecSrc, NA, KDim>(acc, As, Bs, src, scale, m, 0,
                                                  1, n0, rank - n0);

#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int r = wm * WM + mi * 16 + g + (i >= 2 ? 8 : 0);
          const int j = n0 + wn * WN + ni * 8 + 2 * t + (i & 1);
          if (r < rt.count && j < rank)
            z[static_cast<long long>(rt.start + r) * W + col0 + j] =
                acc[0][mi][ni][i];
        }
  }
}

/// Outputs of one combine work item (two per thread): a token's H outputs
/// are split over ceil(H / CombineCols) blocks, so that at decode (T = 1)
/// the sums are not one block's latency-bound loop.
constexpr int CombineCols = 256;

/// The combine: work item (token t, chunk of CombineCols outputs),
/// grid-stride, sums the token's slot rows in slot order (the reference's
/// order of the weighted sum), then adds the shared experts (times
/// sigmoid(x . w_gate + b_gate) with a shared gate). Deterministic, no atomics.
template <typename Cfg> __device__ void combine(const MoEKernelArgs &args) {
  constexpr int H = Cfg::Routed::H, K = Cfg::K;
  constexpr int Chunks = (H + CombineCols - 1) / CombineCols;
  const int *slotRow =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_SLOT_ROW]);
  MOE_SHARED(int, rowOf, K);
  MOE_SHARED(float, gateValue, 1);

  const long long T = args.num_tokens;
  for (long long item = blockIdx.x; item < T * Chunks; item += gridDim.x) {
    const long long t = item / Chunks;
    const int o0 = static_cast<int>(item % Chunks) * CombineCols;
    const int o1 = o0 + CombineCols < H ? o0 + CombineCols : H;
    for (int s = threadIdx.x; s < K; s += blockDim.x)
      rowOf[s] = slotRow[t * K + s];
    if constexpr (Cfg::HasShared && Cfg::SharedGate) {
      if (threadIdx.x < 32) {
        const float g = experts::sharedGateOf<Cfg>(args, t);
        if (threadIdx.x == 0)
          gateValue[0] = g;
      }
    }
    __syncthreads();
    for (int o = o0 + threadIdx.x; o < o1; o += blockDim.x)
      experts::combineOutput<Cfg, false>(
          args, t, o, rowOf, Cfg::SharedGate ? gateValue[0] : 1.0f);
    __syncthreads();
  }
}

} // namespace grouped
} // namespace moe_k

#endif // MOE_KERNELS_GROUPED_CUH
