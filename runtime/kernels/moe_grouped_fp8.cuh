//===- moe_grouped_fp8.cuh - FP8 tensor cores for FP8 expert weights -----===//
//
// Part of moe-opt. The grouped (prefill) GEMMs of moe_grouped.cuh for FP8
// E4M3FN expert weights with f32 block scales (DeepSeek-V3) on the FP8
// tensor cores, mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32
// (sm_89 and later), as DeepSeek's own kernels compute them:
//
//   fp8GateUp<Cfg, Shared>  gateUp with FP8 operands
//   fp8Down<Cfg, Shared>    down with FP8 operands
//
// The code generator calls them instead of gateUp / down for an FFN with
// FP8 weights when the moe.fused_experts op carries moe.fp8_activations
// (--moe-optimize="fp8-activations=true"); compiled for an arch without
// the instruction (sm_80, sm_86, sm_87) they are gateUp / down, which
// dequantize the codes into bf16 tiles. The emulation runs the FP8 path.
//
// Activations (the gathered token rows for gate/up, h for down) are
// quantized on the fly per row and per block of KB = QB1 input channels
// (DeepSeek-V3: 128): s = amax / 448 over the block (1 for an all-zero
// block), codes encodeE4M3FN(v / s) (ties to even, saturating). Weights
// enter as stored. A reduction step is one KB block: the partial products
// of the block's KB / 32 k32 mma steps are summed on the tensor cores from
// zero, then promoted into the f32 accumulators times s_row * scale_w
// (the weight block's scale of the column's output row): the same scales
// hold over the whole block, so the promotion is exact but for its f32
// rounding.
//
// Tiles: BM x BN = 64 x 64 as in moe_grouped.cuh (4 warps, 2 x 2, each
// warp MI x NI = 2 x 4 fragments of m16n8), shared memory holding A and B
// as bytes, rows of KB codes padded by 16 bytes (ldmatrix reads 8 rows of
// 16 bytes; with KB + 16 bytes per row those fall in distinct banks).
// B tiles are copied with 16-byte code loads where the rows are whole
// 16-byte words (In % 16 == 0).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_GROUPED_FP8_CUH
#define MOE_KERNELS_GROUPED_FP8_CUH

#include "moe_grouped.cuh"

#if defined(MOE_EMU) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890)
#define MOE_FP8_MMA 1
#else
#define MOE_FP8_MMA 0
#endif

namespace moe_k {
namespace mma {

/// d += a * b: mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32. a: 4
/// registers of four E4M3 codes (16 x 32, row), b: 2 (32 x 8, col), d: 4
/// f32. Only where MOE_FP8_MMA (sm_89 and later, or the emulation).
__device__ __forceinline__ void m16n8k32E4M3(float d[4], const unsigned a[4],
                                             const unsigned b[2]) {
#ifdef MOE_EMU
  moe_emu::mma_m16n8k32_e4m3(d, a, b, d);
#elif MOE_FP8_MMA
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

} // namespace mma

namespace grouped {
namespace fp8 {

/// The largest finite E4M3FN value: an activation block's amax maps to it.
constexpr float E4M3Max = 448.0f;

/// Shared memory of a GEMM with NB B tiles, a step of KB codes: A [BM][SK]
/// and B [NB][BN][SK] bytes, then the step's scales: A's per row [BM],
/// B's per output row of each tile [NB][BN].
template <int KB, int NB> struct Smem8 {
  static_assert(KB % 32 == 0 && KB <= 128,
                "a step is whole k32 mma steps, at most 128 codes");
  static constexpr int SK = KB + 16;
  static constexpr int A = BM * SK, B = BN * SK;
  static constexpr int Bytes = A + NB * B + 4 * (BM + NB * BN);
  static constexpr int Words = (Bytes + 15) / 16;
};

/// Quantizes the step's A block: row r = threadIdx.x / 2 of the tile, each
/// thread half of the KB values (loadAValues pieces from `src`, k0 on,
/// zero past kLimit or without a row). The row's scale s = amax / 448 goes
/// to aScale[r], its codes E4M3(v / s) to As[r][0 .. KB).
template <typename TS, typename TX, bool Scale, bool VecSrc, int KB>
__device__ __forceinline__ void quantizeA(unsigned char *As, float *aScale,
                                          const TS *src, float scale, int k0,
                                          int kLimit) {
  static_assert(Threads == 2 * BM, "two threads per row of A");
  constexpr int P = KB / 2; // values per thread, whole AChunk pieces
  static_assert(P % AChunk == 0 && AChunk == 16, "16 codes per store");
  const int r = threadIdx.x / 2, c0 = (threadIdx.x % 2) * P;
  float amax = 0.0f;
#pragma unroll 1
  for (int q = 0; q < P; q += AChunk) {
    float v[AChunk];
    loadAValues<TS, TX, Scale, VecSrc>(v, src, k0 + c0 + q, kLimit, scale);
#pragma unroll
    for (int j = 0; j < AChunk; ++j)
      amax = fmaxf(amax, fabsf(v[j]));
  }
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  const float s = amax > 0.0f ? amax / E4M3Max : 1.0f;
  if (threadIdx.x % 2 == 0)
    aScale[r] = s;
#pragma unroll 1
  for (int q = 0; q < P; q += AChunk) {
    float v[AChunk];
    loadAValues<TS, TX, Scale, VecSrc>(v, src, k0 + c0 + q, kLimit, scale);
    unsigned word[4];
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      word[p] = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        word[p] |= quant::encodeE4M3FN(v[4 * p + j] / s) << (8 * j);
    }
    *reinterpret_cast<uint4 *>(As + r * Smem8<KB, 1>::SK + c0 + q) =
        make_uint4(word[0], word[1], word[2], word[3]);
  }
}

/// One B tile of a step: rows rowOff + rowStep * (r0 + r) (r < BN, valid
/// below rowValid) of expert e's [Out, In] codes, columns k0 .. k0 + KB
/// (valid below colValid), into Bs[r][0 .. KB) with zero codes outside;
/// each row's block scale of this step into bScale[r] (0 outside). 16-byte
/// code loads where the rows are whole words.
template <typename F, int KB, int Out, int In>
__device__ __forceinline__ void
copyCodeTile(unsigned char *Bs, float *bScale, const void *codes,
             const float *scales, long long e, int rowOff, int rowStep, int r0,
             int rowValid, int k0, int colValid) {
  constexpr int SK = Smem8<KB, 1>::SK, PerRow = KB / 16;
  constexpr int SR = (Out + F::QB0 - 1) / F::QB0;
  constexpr int SC = (In + F::QB1 - 1) / F::QB1;
  const unsigned char *m = static_cast<const unsigned char *>(codes);
  for (int i = threadIdx.x; i < BN * PerRow; i += Threads) {
    const int r = i / PerRow, c = (i % PerRow) * 16;
    unsigned char *d = Bs + r * SK + c;
    const long long row = rowOff + rowStep * (r0 + r);
    const unsigned char *s = m + (e * Out + row) * In + k0 + c;
    if (In % 16 == 0 && r < rowValid && c + 16 <= colValid) {
      *reinterpret_cast<uint4 *>(d) = *reinterpret_cast<const uint4 *>(s);
    } else {
#pragma unroll
      for (int j = 0; j < 16; ++j)
        d[j] = r < rowValid && c + j < colValid ? s[j] : 0;
    }
  }
  for (int r = threadIdx.x; r < BN; r += Threads) {
    const int row = rowOff + rowStep * (r0 + r);
    bScale[r] = r < rowValid
                    ? scales[(e * SR + row / F::QB0) * SC + k0 / F::QB1]
                    : 0.0f;
  }
}

/// acc[nb] += (A . B[nb]) * aScale[row] * bScale[nb][col] over one step of
/// KB codes, for this warp's sub-tile: each fragment's KB / 32 mma steps
/// are summed from zero on the tensor cores, then promoted.
template <int KB, int NB>
__device__ __forceinline__ void warpTileE4M3(float (&acc)[NB][MI][NI][4],
                                             const unsigned char *As,
                                             const unsigned char *Bs,
                                             const float *aScale,
                                             const float *bScale) {
  using S = Smem8<KB, NB>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = warp / WarpsN, wn = warp % WarpsN;
  const int g = lane / 4, t = lane % 4;
  float sa[MI][2];
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
    sa[mi][0] = aScale[wm * WM + mi * 16 + g];
    sa[mi][1] = aScale[wm * WM + mi * 16 + g + 8];
  }
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    const unsigned char *B = Bs + nb * S::B;
#pragma unroll
    for (int ni = 0; ni < NI; ni += 2) {
      float part[MI][2][4];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          part[mi][0][i] = part[mi][1][i] = 0.0f;
      // The k32 steps stay a loop: unrolled at KB = 128, ptxas kept every
      // step's fragments live and spilled (255 registers, sm_90a).
#pragma unroll 1
      for (int kk = 0; kk < KB / 32; ++kk) {
        // Matrices (n8 tile ni, k bytes 0-15), (ni, 16-31), (ni + 1,
        // 0-15), (ni + 1, 16-31): b[0..1] for ni, b[2..3] for ni + 1.
        unsigned b[4];
        mma::ldmatrixX4<false>(
            b, B + (wn * WN + ni * 8 + lane % 8 + (lane / 16) * 8) * S::SK +
                   kk * 32 + ((lane / 8) % 2) * 16);
        // A fragments (read again for each pair of n8 tiles): matrices
        // (rows 0-7, bytes 0-15), (rows 8-15, 0-15), (rows 0-7, 16-31),
        // (rows 8-15, 16-31) of the 16 x 32 piece: a0..a3, a4..a7, a8..a11,
        // a12..a15.
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          unsigned a[4];
          mma::ldmatrixX4<false>(
              a, As + (wm * WM + mi * 16 + lane % 16) * S::SK + kk * 32 +
                     (lane / 16) * 16);
          mma::m16n8k32E4M3(part[mi][0], a, b);
          mma::m16n8k32E4M3(part[mi][1], a, b + 2);
        }
      }
      // Promotion: column 2 t + (i & 1) of n8 tile ni + q.
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int c = wn * WN + (ni + q) * 8 + 2 * t;
        const float sb0 = bScale[nb * BN + c], sb1 = bScale[nb * BN + c + 1];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int i = 0; i < 4; ++i)
            acc[nb][mi][ni + q][i] +=
                part[mi][q][i] * (sa[mi][i / 2] * (i & 1 ? sb1 : sb0));
      }
    }
  }
}

} // namespace fp8

/// gateUp for FP8 weights on FP8 tensor cores (see the file comment).
template <typename Cfg, bool SharedFFN>
__device__ void fp8GateUp(const MoEKernelArgs &args) {
#if !MOE_FP8_MMA
  gateUp<Cfg, SharedFFN>(args);
#else
  using TX = typename Cfg::TX;
  using F = typename Sel<Cfg>::template FFN<SharedFFN>;
  static_assert(F::Quant == 1 && !F::InOut && !F::LowRank && !F::Widths,
                "FP8 codes of one width, [out, in]");
  constexpr int H = F::H, I = F::I, K = Cfg::K, KB = F::QB1;
  constexpr int E = SharedFFN ? 1 : F::E;
  constexpr bool Scale = Cfg::ScaleInput && !SharedFFN;
  constexpr int NT = (I + BN - 1) / BN;
  constexpr int NB = F::NoGate ? 1 : 2;
  constexpr int Out = F::Fused ? 2 * I : I;
  using S = fp8::Smem8<KB, NB>;

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

  MOE_SHARED(uint4, smemWords, S::Words);
  unsigned char *As = reinterpret_cast<unsigned char *>(&smemWords[0]);
  unsigned char *Bs = As + S::A;
  float *aScale = reinterpret_cast<float *>(Bs + NB * S::B);
  float *bScale = aScale + BM;

  const long long T = args.num_tokens;
  const long long rowTiles = rowTileCount<SharedFFN, E, K>(T);
  const int ar = threadIdx.x / 2;

  for (long long item = blockIdx.x; item < rowTiles * NT; item += gridDim.x) {
    const int n0 = static_cast<int>(item % NT) * BN;
    RowTile rt;
    if (!rowTile<SharedFFN, E>(T, offsets, item / NT, rt))
      break;
    float scale = 1.0f;
    const TX *src =
        inputRow<SharedFFN, K, H>(x, rows, weights, rt, ar, scale);
    const long long e = rt.e;
    float acc[NB][MI][NI][4];
    zeroAcc(acc);

    for (int k0 = 0; k0 < H; k0 += KB) {
      __syncthreads(); // the previous step's tiles are consumed
      fp8::quantizeA<TX, TX, Scale, H % (16 / sizeof(TX)) == 0, KB>(
          As, aScale, src, scale, k0, H);
      using fp8::copyCodeTile;
      if constexpr (F::NoGate) {
        copyCodeTile<F, KB, Out, H>(Bs, bScale, w.up, w.upScale, e, 0, 1, n0,
                                    I - n0, k0, H - k0);
      } else if constexpr (F::Fused) {
        copyCodeTile<F, KB, Out, H>(Bs, bScale, w.gateUp, w.gateUpScale, e, 0,
                                    F::Interleaved ? 2 : 1, n0, I - n0, k0,
                                    H - k0);
        copyCodeTile<F, KB, Out, H>(Bs + S::B, bScale + BN, w.gateUp,
                                    w.gateUpScale, e, F::Interleaved ? 1 : I,
                                    F::Interleaved ? 2 : 1, n0, I - n0, k0,
                                    H - k0);
      } else {
        copyCodeTile<F, KB, Out, H>(Bs, bScale, w.gate, w.gateScale, e, 0, 1,
                                    n0, I - n0, k0, H - k0);
        copyCodeTile<F, KB, Out, H>(Bs + S::B, bScale + BN, w.up, w.upScale, e,
                                    0, 1, n0, I - n0, k0, H - k0);
      }
      __syncthreads();
      fp8::warpTileE4M3<KB, NB>(acc, As, Bs, aScale, bScale);
    }
    gateUpEpilogue<F, NB>(acc, h, w, rt, n0, I);
  }
#endif
}

/// down for FP8 weights on FP8 tensor cores: h (f32) quantized per row and
/// KB block like the input of fp8GateUp.
template <typename Cfg, bool SharedFFN>
__device__ void fp8Down(const MoEKernelArgs &args) {
#if !MOE_FP8_MMA
  down<Cfg, SharedFFN>(args);
#else
  using F = typename Sel<Cfg>::template FFN<SharedFFN>;
  static_assert(F::Quant == 1 && !F::InOut && !F::LowRank && !F::Widths,
                "FP8 codes of one width, [out, in]");
  constexpr int H = F::H, I = F::I, K = Cfg::K, KB = F::QB1;
  constexpr int E = SharedFFN ? 1 : F::E;
  constexpr int NT = (H + BN - 1) / BN;
  using S = fp8::Smem8<KB, 1>;

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

  MOE_SHARED(uint4, smemWords, S::Words);
  unsigned char *As = reinterpret_cast<unsigned char *>(&smemWords[0]);
  unsigned char *Bs = As + S::A;
  float *aScale = reinterpret_cast<float *>(Bs + S::B);
  float *bScale = aScale + BM;

  const long long T = args.num_tokens;
  const long long rowTiles = rowTileCount<SharedFFN, E, K>(T);
  const int ar = threadIdx.x / 2;

  for (long long item = blockIdx.x; item < rowTiles * NT; item += gridDim.x) {
    const int n0 = static_cast<int>(item % NT) * BN;
    RowTile rt;
    if (!rowTile<SharedFFN, E>(T, offsets, item / NT, rt))
      break;
    const float *src =
        ar < rt.count ? h + static_cast<long long>(rt.start + ar) * I : nullptr;
    const long long e = rt.e;
    float acc[1][MI][NI][4];
    zeroAcc(acc);
    for (int k0 = 0; k0 < I; k0 += KB) {
      __syncthreads();
      fp8::quantizeA<float, float, false, I % 4 == 0, KB>(As, aScale, src, 1.0f,
                                                          k0, I);
      fp8::copyCodeTile<F, KB, H, I>(Bs, bScale, w.down, w.downScale, e, 0, 1,
                                     n0, H - n0, k0, I - k0);
      __syncthreads();
      fp8::warpTileE4M3<KB, 1>(acc, As, Bs, aScale, bScale);
    }
    downEpilogue<Cfg, F, SharedFFN>(acc, out, weights, rows, w, rt, n0);
  }
#endif
}

} // namespace grouped
} // namespace moe_k

#endif // MOE_KERNELS_GROUPED_FP8_CUH
