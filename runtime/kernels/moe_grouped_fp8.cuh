//===- moe_grouped_fp8.cuh - FP8 tensor cores for FP8 expert weights -----===//
//
// Part of moe-opt. The grouped (prefill) GEMMs of moe_grouped.cuh for FP8
// E4M3FN expert weights with f32 block scales (DeepSeek-V3) on the FP8
// tensor cores, mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32
// (sm_89 and later), as DeepSeek's own kernels compute them:
//
//   fp8GateUp<Cfg, Shared, Pipe>  gateUp with FP8 operands
//   fp8Down<Cfg, Shared, Pipe>    down with FP8 operands
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
// 16-byte words (In % 16 == 0), cp.async ones on the pipelined k loop
// (Pipe: moe_grouped.cuh's kLoop with fp8::Pipeline's steps and stages; a
// block then takes one or more steps, its partial sums kept in registers
// until its last one, so the sums and promotions are those of the
// single-stage loop).
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

/// Codes per step of the k loop and its stages (kLoop, moe_grouped.cuh)
/// for blocks of KB codes and NB B tiles: with Pipe, a step is the whole
/// block when two stages of Smem8<KB, NB> fit PipeSmemBytes, else 64 or 32
/// codes (dividing KB; the block's partial products then stay in registers
/// over its KB / KS steps), with as many stages as fit, at most MaxStages;
/// without Pipe, one block and one stage (load, barrier, multiply).
template <bool Pipe, int KB, int NB> struct Pipeline {
  template <int KS>
  static constexpr int Fit = PipeSmemBytes / (Smem8<KS, NB>::Words * 16);
  static constexpr int KS = !Pipe || Fit<KB> >= 2             ? KB
                            : KB % 64 == 0 && Fit<64> >= 2 ? 64
                                                           : 32;
  static constexpr int Stages =
      !Pipe ? 1 : Fit<KS> > MaxStages ? MaxStages : Fit<KS>;
  static_assert(KB % KS == 0 && Stages >= 1, "whole steps per block");
};

/// Quantizes the A codes of one step, KS of the block of KB channels that
/// holds k0 (k0 % KS == 0): row r = threadIdx.x / 2 of the tile. The row's
/// scale s = amax / 448 over the whole block (each thread half of it,
/// loadAValues pieces from `src`, zero past kLimit or without a row) goes
/// to aScale[r]; the codes E4M3(v / s) of channels k0 .. k0 + KS (each
/// thread half of them) to As[r][0 .. KS).
template <typename TS, typename TX, bool Scale, bool VecSrc, int KB, int KS>
__device__ __forceinline__ void quantizeA(unsigned char *As, float *aScale,
                                          const TS *src, float scale, int k0,
                                          int kLimit) {
  static_assert(Threads == 2 * BM, "two threads per row of A");
  constexpr int P = KB / 2, PS = KS / 2; // values per thread
  static_assert(P % AChunk == 0 && PS % AChunk == 0 && AChunk == 16,
                "16 codes per store");
  const int r = threadIdx.x / 2, half = threadIdx.x % 2;
  const int kb = k0 - k0 % KB;
  float amax = 0.0f;
#pragma unroll 1
  for (int q = 0; q < P; q += AChunk) {
    float v[AChunk];
    loadAValues<TS, TX, Scale, VecSrc>(v, src, kb + half * P + q, kLimit,
                                       scale);
#pragma unroll
    for (int j = 0; j < AChunk; ++j)
      amax = fmaxf(amax, fabsf(v[j]));
  }
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  const float s = amax > 0.0f ? amax / E4M3Max : 1.0f;
  if (half == 0)
    aScale[r] = s;
#pragma unroll 1
  for (int q = 0; q < PS; q += AChunk) {
    float v[AChunk];
    loadAValues<TS, TX, Scale, VecSrc>(v, src, k0 + half * PS + q, kLimit,
                                       scale);
    unsigned word[4];
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      word[p] = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        word[p] |= quant::encodeE4M3FN(v[4 * p + j] / s) << (8 * j);
    }
    *reinterpret_cast<uint4 *>(As + r * Smem8<KS, 1>::SK + half * PS + q) =
        make_uint4(word[0], word[1], word[2], word[3]);
  }
}

/// One B tile of a step: rows rowOff + rowStep * (r0 + r) (r < BN, valid
/// below rowValid) of expert e's [Out, In] codes, columns k0 .. k0 + KS
/// (valid below colValid), into Bs[r][0 .. KS) with zero codes outside;
/// each row's block scale of this step into bScale[r] (0 outside). 16-byte
/// code loads where the rows are whole words, cp.async ones with Async
/// (the pipelined k loop).
template <typename F, int KS, int Out, int In, bool Async>
__device__ __forceinline__ void
copyCodeTile(unsigned char *Bs, float *bScale, const void *codes,
             const float *scales, long long e, int rowOff, int rowStep, int r0,
             int rowValid, int k0, int colValid) {
  constexpr int SK = Smem8<KS, 1>::SK, PerRow = KS / 16;
  constexpr int SR = (Out + F::QB0 - 1) / F::QB0;
  constexpr int SC = (In + F::QB1 - 1) / F::QB1;
  const unsigned char *m = static_cast<const unsigned char *>(codes);
  for (int i = threadIdx.x; i < BN * PerRow; i += Threads) {
    const int r = i / PerRow, c = (i % PerRow) * 16;
    unsigned char *d = Bs + r * SK + c;
    const long long row = rowOff + rowStep * (r0 + r);
    const unsigned char *s = m + (e * Out + row) * In + k0 + c;
    if (In % 16 == 0 && r < rowValid && c + 16 <= colValid) {
      if constexpr (Async)
        async::copy16(d, s);
      else
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

/// part += A . B over one step of KS codes for this warp's sub-tile: KS / 32
/// k32 mma steps on the tensor cores; each A fragment is read once per k32
/// step, each B fragment once per pair of n8 tiles.
template <int KS>
__device__ __forceinline__ void mmaStepE4M3(float (&part)[MI][NI][4],
                                            const unsigned char *As,
                                            const unsigned char *B) {
  constexpr int SK = Smem8<KS, 1>::SK;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = warp / WarpsN, wn = warp % WarpsN;
  // The k32 steps stay a loop: unrolled at KB = 128, ptxas kept every
  // step's fragments live and spilled (255 registers, sm_90a).
#pragma unroll 1
  for (int kk = 0; kk < KS / 32; ++kk) {
    // A fragments: matrices (rows 0-7, bytes 0-15), (rows 8-15, 0-15),
    // (rows 0-7, 16-31), (rows 8-15, 16-31) of each 16 x 32 piece:
    // a0..a3, a4..a7, a8..a11, a12..a15.
    unsigned a[MI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
      mma::ldmatrixX4<false>(a[mi], As + (wm * WM + mi * 16 + lane % 16) * SK +
                                        kk * 32 + (lane / 16) * 16);
#pragma unroll
    for (int ni = 0; ni < NI; ni += 2) {
      // Matrices (n8 tile ni, k bytes 0-15), (ni, 16-31), (ni + 1, 0-15),
      // (ni + 1, 16-31): b[0..1] for ni, b[2..3] for ni + 1.
      unsigned b[4];
      mma::ldmatrixX4<false>(
          b, B + (wn * WN + ni * 8 + lane % 8 + (lane / 16) * 8) * SK +
                 kk * 32 + ((lane / 8) % 2) * 16);
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        mma::m16n8k32E4M3(part[mi][ni], a[mi], b);
        mma::m16n8k32E4M3(part[mi][ni + 1], a[mi], b + 2);
      }
    }
  }
}

/// The promotion of one block's partial products: acc += part *
/// aScale[row] * bScale[col] (column 2 t + (i & 1) of each n8 tile).
__device__ __forceinline__ void promote(float (&acc)[MI][NI][4],
                                        const float (&part)[MI][NI][4],
                                        const float *aScale,
                                        const float *bScale) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = warp / WarpsN, wn = warp % WarpsN;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
    const float sa0 = aScale[wm * WM + mi * 16 + g];
    const float sa1 = aScale[wm * WM + mi * 16 + g + 8];
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
      const int c = wn * WN + ni * 8 + 2 * t;
      const float sb0 = bScale[c], sb1 = bScale[c + 1];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        acc[mi][ni][i] +=
            part[mi][ni][i] * ((i / 2 ? sa1 : sa0) * (i & 1 ? sb1 : sb0));
    }
  }
}

/// The k loop of an FP8 GEMM over KDim channels: kLoop (moe_grouped.cuh)
/// with Pipeline<Pipe, KB, NB>'s steps and stages (St * Smem8<KS, NB>
/// bytes at `smem`). load(stage buffer (As, Bs, aScale, bScale), k0)
/// fills a stage (cp.async copies when St > 1) with the A codes and
/// the NB B tiles of the KS channels from k0; each block of KB channels is
/// summed from zero on the tensor cores and promoted into acc[nb] at its
/// last step.
template <bool Pipe, int KB, int NB, int KDim, typename Load>
__device__ __forceinline__ void fp8KLoop(float (&acc)[NB][MI][NI][4],
                                         unsigned char *smem, Load &&load) {
  using P = Pipeline<Pipe, KB, NB>;
  constexpr int KS = P::KS;
  using S = Smem8<KS, NB>;
  auto stage = [&](int st, unsigned char *&As, unsigned char *&Bs,
                   float *&aScale, float *&bScale) {
    As = smem + st * S::Words * 16;
    Bs = As + S::A;
    aScale = reinterpret_cast<float *>(Bs + NB * S::B);
    bScale = aScale + BM;
  };
  // A block's partial products when it takes several steps.
  float part[NB][MI][NI][4];
  int ks = 0;
  kLoop<P::Stages>(
      (KDim + KS - 1) / KS,
      [&](int step, int st) {
        unsigned char *As, *Bs;
        float *aScale, *bScale;
        stage(st, As, Bs, aScale, bScale);
        load(As, Bs, aScale, bScale, step * KS);
      },
      [&](int st) {
        unsigned char *As, *Bs;
        float *aScale, *bScale;
        stage(st, As, Bs, aScale, bScale);
        const int k0 = ks++ * KS;
        if constexpr (KS == KB) {
#pragma unroll
          for (int nb = 0; nb < NB; ++nb) {
            float p[MI][NI][4] = {};
            mmaStepE4M3<KS>(p, As, Bs + nb * S::B);
            promote(acc[nb], p, aScale, bScale + nb * BN);
          }
        } else {
          if (k0 % KB == 0)
            zeroAcc(part);
#pragma unroll
          for (int nb = 0; nb < NB; ++nb)
            mmaStepE4M3<KS>(part[nb], As, Bs + nb * S::B);
          if ((k0 + KS) % KB == 0 || k0 + KS >= KDim)
#pragma unroll
            for (int nb = 0; nb < NB; ++nb)
              promote(acc[nb], part[nb], aScale, bScale + nb * BN);
        }
      });
}

} // namespace fp8

/// gateUp for FP8 weights on FP8 tensor cores (see the file comment).
/// Pipe: the pipelined k loop (fp8KLoop).
template <typename Cfg, bool SharedFFN, bool Pipe = false>
__device__ void fp8GateUp(const MoEKernelArgs &args) {
#if !MOE_FP8_MMA
  gateUp<Cfg, SharedFFN, Pipe ? Gemm::Pipelined : Gemm::Mma>(args);
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
  using P = fp8::Pipeline<Pipe, KB, NB>;
  constexpr int KS = P::KS;
  constexpr bool Async = P::Stages > 1;
  using S = fp8::Smem8<KS, NB>;

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

  MOE_SHARED(uint4, smemWords, P::Stages * S::Words);
  unsigned char *smem = reinterpret_cast<unsigned char *>(&smemWords[0]);

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
    fp8::fp8KLoop<Pipe, KB, NB, H>(
        acc, smem,
        [&](unsigned char *As, unsigned char *Bs, float *aScale,
            float *bScale, int k0) {
          fp8::quantizeA<TX, TX, Scale, H % (16 / sizeof(TX)) == 0, KB, KS>(
              As, aScale, src, scale, k0, H);
          auto tile = [&](int nb, const void *codes, const float *scales,
                          int rowOff, int rowStep) {
            fp8::copyCodeTile<F, KS, Out, H, Async>(
                Bs + nb * S::B, bScale + nb * BN, codes, scales, e, rowOff,
                rowStep, n0, I - n0, k0, H - k0);
          };
          if constexpr (F::NoGate) {
            tile(0, w.up, w.upScale, 0, 1);
          } else if constexpr (F::Fused) {
            tile(0, w.gateUp, w.gateUpScale, 0, F::Interleaved ? 2 : 1);
            tile(1, w.gateUp, w.gateUpScale, F::Interleaved ? 1 : I,
                 F::Interleaved ? 2 : 1);
          } else {
            tile(0, w.gate, w.gateScale, 0, 1);
            tile(1, w.up, w.upScale, 0, 1);
          }
        });
    gateUpEpilogue<F, NB>(acc, h, w, rt, n0, I);
  }
#endif
}

/// down for FP8 weights on FP8 tensor cores: h (f32) quantized per row and
/// KB block like the input of fp8GateUp. Pipe: the pipelined k loop.
template <typename Cfg, bool SharedFFN, bool Pipe = false>
__device__ void fp8Down(const MoEKernelArgs &args) {
#if !MOE_FP8_MMA
  down<Cfg, SharedFFN, Pipe ? Gemm::Pipelined : Gemm::Mma>(args);
#else
  using F = typename Sel<Cfg>::template FFN<SharedFFN>;
  static_assert(F::Quant == 1 && !F::InOut && !F::LowRank && !F::Widths,
                "FP8 codes of one width, [out, in]");
  constexpr int H = F::H, I = F::I, K = Cfg::K, KB = F::QB1;
  constexpr int E = SharedFFN ? 1 : F::E;
  constexpr int NT = (H + BN - 1) / BN;
  using P = fp8::Pipeline<Pipe, KB, 1>;
  constexpr int KS = P::KS;
  constexpr bool Async = P::Stages > 1;
  using S = fp8::Smem8<KS, 1>;

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

  MOE_SHARED(uint4, smemWords, P::Stages * S::Words);
  unsigned char *smem = reinterpret_cast<unsigned char *>(&smemWords[0]);

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
    fp8::fp8KLoop<Pipe, KB, 1, I>(
        acc, smem,
        [&](unsigned char *As, unsigned char *Bs, float *aScale,
            float *bScale, int k0) {
          fp8::quantizeA<float, float, false, I % 4 == 0, KB, KS>(
              As, aScale, src, 1.0f, k0, I);
          fp8::copyCodeTile<F, KS, H, I, Async>(Bs, bScale, w.down,
                                                w.downScale, e, 0, 1, n0,
                                                H - n0, k0, I - k0);
        });
    downEpilogue<Cfg, F, SharedFFN>(acc, out, weights, rows, w, rt, n0);
  }
#endif
}

} // namespace grouped
} // namespace moe_k

#endif // MOE_KERNELS_GROUPED_FP8_CUH
