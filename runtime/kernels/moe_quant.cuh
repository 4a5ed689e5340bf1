//===- moe_quant.cuh - Block-scaled expert weights in the kernels ---------===//
//
// Part of moe-opt. Decoders of the quantized weight formats of released
// MoE checkpoints and the pieces of the expert kernels that read them
// (moe_experts.cuh, moe_grouped.cuh): FP8 E4M3FN codes with f32 scales
// (DeepSeek-V3, QB0 x QB1 blocks, partial edge blocks) and FP4 E2M1 codes
// packed two per byte, low nibble first, with E8M0 exponent scales per 32
// input values (MXFP4, gpt-oss). Weights are [out, in] (out_in) only.
//
// Every code decodes to its exact f32 value with bit operations only, the
// same values as the reference executor's decoders
// (include/moe/lib/Reference/QuantDecode.h; EmuKernels.QuantDecoders
// compares all codes), and a weight is `code * scale` rounded once to f32,
// as the reference dequantizes it. The decode kernels then compute in f32
// exactly as for f32 weights; the grouped kernels round that f32 weight to
// the bf16 tile type (exact for MXFP4: a 2-bit significand times a power
// of two; FP8 times an f32 scale loses the scale's low bits, relative error
// at most 2^-9 per weight) before the bf16 tensor-core products.
//
// FFN configuration fields (the code generator writes them for every FFN
// set, Quant = 0 for unquantized weights):
//   static constexpr int Quant;      // 0 none, 1 FP8 E4M3FN, 2 MXFP4
//   static constexpr int QB0, QB1;   // block: rows (out) x columns (in)
//   using TS = ...;                  // scale type: float, or unsigned char
//                                    // (E8M0)
// With Quant != 0, TW is the tile type of the grouped kernels (bf16) and
// the weight slots hold the codes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_QUANT_CUH
#define MOE_KERNELS_QUANT_CUH

#include "moe_common.cuh"

namespace moe_k {
namespace quant {

/// FP8 E4M3FN: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0
/// is subnormal (m * 2^-9); S.1111.111 is NaN; no infinities.
__host__ __device__ __forceinline__ float decodeE4M3FN(unsigned code) {
  const unsigned sign = (code & 0x80u) << 24, exponent = (code >> 3) & 0xFu,
                 mantissa = code & 7u;
  if (exponent == 0xFu && mantissa == 7u)
    return __uint_as_float(sign | 0x7fc00000u);
  if (exponent == 0u) {
    const float v = static_cast<float>(mantissa) * 0.001953125f; // 2^-9
    return sign ? -v : v;
  }
  // 2^(e - 7) (1 + m / 8): f32 exponent field e - 7 + 127.
  return __uint_as_float(sign | ((exponent + 120u) << 23) | (mantissa << 20));
}

/// The E4M3FN code nearest to v (ties to even), saturating to +-448 (the
/// largest finite value; PTX cvt.rn.satfinite.e4m3x2.f32 rounds the same);
/// NaN gives the NaN code S.1111.111. Bit operations only.
__host__ __device__ __forceinline__ unsigned encodeE4M3FN(float v) {
  const unsigned bits = __float_as_uint(v), sign = (bits >> 24) & 0x80u;
  const unsigned mag = bits & 0x7fffffffu;
  if (mag > 0x7f800000u)
    return sign | 0x7Fu;
  if (mag >= 0x43e00000u) // 448 or more (infinity included)
    return sign | 0x7Eu;
  if (mag < 0x3c800000u) { // below 2^-6: subnormal steps of 2^-9
    // m * 2^-9 with m = round(v * 2^9): the f32 addition of 2^23 * 2^-9
    // rounds to the nearest step, ties to even; m = 8 is the code of 2^-6.
    const float a = __uint_as_float(mag) + 16384.0f; // 2^14: ulp 2^-9
    return sign | (__float_as_uint(a) - 0x46800000u);
  }
  // Normal: keep 3 mantissa bits, rounding the 20 dropped ones to even;
  // a carry moves to the exponent. E4M3 exponent = f32 exponent - 120.
  const unsigned rounded = mag + 0x7FFFFu + ((mag >> 20) & 1u);
  const unsigned code = (rounded >> 20) - (120u << 3);
  return sign | (code > 0x7Eu ? 0x7Eu : code);
}

/// FP4 E2M1 (low 4 bits of `code`): sign, 2 exponent bits (bias 1), 1
/// mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives.
__host__ __device__ __forceinline__ float decodeE2M1(unsigned code) {
  const unsigned sign = (code & 0x8u) << 28, exponent = (code >> 1) & 3u,
                 mantissa = code & 1u;
  if (exponent == 0u)
    return __uint_as_float(sign | (mantissa ? 0x3f000000u : 0u)); // 0.5
  return __uint_as_float(sign | ((exponent + 126u) << 23) | (mantissa << 22));
}

/// E8M0: 2^(e - 127); 255 is NaN; 0 is 2^-127, an f32 subnormal.
__host__ __device__ __forceinline__ float decodeE8M0(unsigned code) {
  if (code == 0xFFu)
    return __uint_as_float(0x7fc00000u);
  if (code == 0u)
    return __uint_as_float(0x00400000u);
  return __uint_as_float(code << 23);
}

/// A scale as f32.
__host__ __device__ __forceinline__ float scaleValue(float s) { return s; }
__host__ __device__ __forceinline__ float scaleValue(unsigned char s) {
  return decodeE8M0(s);
}

/// Values per stored byte and per 16-byte word.
template <int Quant> __host__ __device__ constexpr int perByte() {
  return Quant == 2 ? 2 : 1;
}
template <int Quant> __host__ __device__ constexpr int perWord() {
  return 16 * perByte<Quant>();
}

/// Value `i` of a row of codes (FP4: two per byte, low nibble first).
template <int Quant>
__device__ __forceinline__ float code(const unsigned char *row, int i) {
  if constexpr (Quant == 2) {
    const unsigned byte = row[i / 2];
    return decodeE2M1(i % 2 ? byte >> 4 : byte & 0xFu);
  } else {
    return decodeE4M3FN(row[i]);
  }
}

/// Value `j` (< perWord) of a 16-byte word of codes: bit operations only.
template <int Quant>
__device__ __forceinline__ float wordCode(const uint4 &v, int j) {
  constexpr int PerU = 4 * perByte<Quant>(); // values per 32-bit part
  const unsigned part = j < PerU ? v.x : j < 2 * PerU ? v.y
                                       : j < 3 * PerU ? v.z
                                                      : v.w;
  const int i = j % PerU;
  if constexpr (Quant == 2)
    return decodeE2M1((part >> (4 * i)) & 0xFu);
  else
    return decodeE4M3FN((part >> (8 * i)) & 0xFFu);
}

/// One row of a block-scaled [out, in] matrix: its codes and the scales of
/// its block row (ceil(In / QB1) of them).
template <typename F> struct QRow {
  const unsigned char *codes;
  const typename F::TS *scales;
};

/// Row `r` (< Out) of expert e's [Out, In] codes, `codes` and `scales`
/// the tensors' starts.
template <typename F, int Out, int In>
__device__ __forceinline__ QRow<F> qrow(const void *codes,
                                        const typename F::TS *scales,
                                        long long e, long long r) {
  constexpr int SR = (Out + F::QB0 - 1) / F::QB0;
  constexpr int SC = (In + F::QB1 - 1) / F::QB1;
  QRow<F> q;
  q.codes = static_cast<const unsigned char *>(codes) +
            (e * Out + r) * (In / perByte<F::Quant>());
  q.scales = scales + (e * SR + r / F::QB0) * SC;
  return q;
}

/// The dequantized weight at column k of a row: code * scale, one f32
/// rounding (the reference's dequantization).
template <typename F>
__device__ __forceinline__ float weightAt(const QRow<F> &q, int k) {
  return code<F::Quant>(q.codes, k) * scaleValue(q.scales[k / F::QB1]);
}

/// rowDotsUpTo (moe_common.cuh) for block-scaled rows: NW rows of In
/// values against the batch's rows over their first n (n <= In). Lane l
/// reads 16-byte words l, l + 32, ... of codes (16 FP8 or 32 FP4 values)
/// when a row is whole words (In a multiple of perWord: rows stay 16-byte
/// aligned), else values l, l + 32, ...; the scale is read once per word
/// when QB1 is a multiple of the word's values (MXFP4: always one E8M0 per
/// word). Every lane returns the sums.
template <typename F, int NW, int In, typename TX, bool Scale, typename TA>
__device__ __forceinline__ void quantRowDots(const QRow<F> (&w)[NW],
                                             const Batch<TA> &a,
                                             float (&acc)[NW][DecodeRows],
                                             int n) {
  constexpr int Q = F::Quant;
  constexpr int V = perWord<Q>();
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < NW; ++i)
#pragma unroll
    for (int b = 0; b < DecodeRows; ++b)
      acc[i][b] = 0.0f;
  if constexpr (In % V == 0) {
    // Activations in pieces of P values (16 bytes of bf16, or of f32).
    constexpr int P = sizeof(TA) == 4 ? 4 : 8;
    constexpr bool OneScale = F::QB1 % V == 0;
#pragma unroll 1
    for (int k = lane * V; k < n; k += 32 * V) {
      uint4 word[NW];
      float s[NW];
#pragma unroll
      for (int i = 0; i < NW; ++i) {
        word[i] = *reinterpret_cast<const uint4 *>(w[i].codes +
                                                   k / perByte<Q>());
        s[i] = scaleValue(w[i].scales[k / F::QB1]);
      }
      // Two pieces at a time: a whole FP4 word's 32 values at once would
      // not fit __launch_bounds__(128, 4)'s registers.
#pragma unroll 2
      for (int p = 0; p < V / P; ++p) {
        float wv[NW][P];
#pragma unroll
        for (int i = 0; i < NW; ++i)
#pragma unroll
          for (int j = 0; j < P; ++j)
            wv[i][j] = wordCode<Q>(word[i], p * P + j) *
                       (OneScale ? s[i]
                                 : scaleValue(w[i].scales[(k + p * P + j) /
                                                          F::QB1]));
#pragma unroll
        for (int b = 0; b < DecodeRows; ++b) {
          if (b >= a.count)
            continue;
          float av[P];
          loadVec<TA, P>(a.row[b] + k + p * P, av);
#pragma unroll
          for (int j = 0; j < P; ++j) {
            const float v = scaled<TX, Scale>(av[j], a.scale[b]);
#pragma unroll
            for (int i = 0; i < NW; ++i)
              acc[i][b] += v * wv[i][j];
          }
        }
      }
    }
  } else {
#pragma unroll 1
    for (int k = lane; k < n; k += 32) {
      float wv[NW];
#pragma unroll
      for (int i = 0; i < NW; ++i)
        wv[i] = weightAt<F>(w[i], k);
#pragma unroll
      for (int b = 0; b < DecodeRows; ++b) {
        if (b >= a.count)
          continue;
        const float v = scaled<TX, Scale>(toF32<TA>(a.row[b][k]), a.scale[b]);
#pragma unroll
        for (int i = 0; i < NW; ++i)
          acc[i][b] += v * wv[i];
      }
    }
  }
#pragma unroll
  for (int i = 0; i < NW; ++i)
#pragma unroll
    for (int b = 0; b < DecodeRows; ++b)
      acc[i][b] = warpSum(acc[i][b]);
}

/// copyTile (moe_grouped.cuh) for block-scaled [out, in] weights: a Rows x
/// Cols tile (rows: outputs rowOff + rowStep * (r0 + r) of expert e's
/// [Out, In] matrix; columns c0 + c along In) dequantized into shared
/// memory as TT (the tile type, bf16): dst[r][c] = TT(code * scale), zero
/// where r >= rowValid or c >= colValid. Each thread converts one 16-byte
/// word of codes (16 FP8 or 32 FP4 values) of a row, read with one 16-byte
/// load when the rows are whole words (In a multiple of perWord) and the
/// word lies below colValid (else value by value), with one scale per word
/// when QB1 is a multiple of its values, and written 8 values (16 bytes) at
/// a time.
template <typename F, typename TT, int Rows, int Cols, int Stride, int Out,
          int In, int Threads>
__device__ __forceinline__ void
copyQuantTile(TT *dst, const void *codes, const typename F::TS *scales,
              long long e, int rowOff, int rowStep, int r0, int rowValid,
              int c0, int colValid) {
  constexpr int Q = F::Quant;
  constexpr int V = perWord<Q>();
  constexpr int PerRow = Cols / V;
  constexpr bool OneScale = F::QB1 % V == 0;
  static_assert(Cols % V == 0, "tile rows are whole 16-byte words of codes");
  static_assert(IsBF16<TT>::value, "codes dequantize into bf16 tiles");
  for (int i = threadIdx.x; i < Rows * PerRow; i += Threads) {
    const int r = i / PerRow, c = (i % PerRow) * V;
    TT *d = dst + r * Stride + c;
    const bool row = r < rowValid;
    const QRow<F> q = qrow<F, Out, In>(codes, scales, e,
                                       rowOff + rowStep * (r0 + (row ? r : 0)));
    if (In % V == 0 && row && c + V <= colValid) {
      const uint4 word = *reinterpret_cast<const uint4 *>(
          q.codes + (c0 + c) / perByte<Q>());
      const float s = OneScale ? scaleValue(q.scales[(c0 + c) / F::QB1]) : 0;
      // One 16-byte store at a time: unrolled, the grouped gate/up kernels
      // spilled a few bytes at 128 registers (NVRTC sm_90a).
#pragma unroll 1
      for (int p = 0; p < V / 8; ++p) {
        unsigned pk[4]; // 8 bf16, the lower index in the low half
#pragma unroll
        for (int h = 0; h < 4; ++h) {
          float w[2];
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int k = p * 8 + 2 * h + j;
            w[j] = wordCode<Q>(word, k) *
                   (OneScale ? s : scaleValue(q.scales[(c0 + c + k) / F::QB1]));
          }
          const unsigned lo = __bfloat16_as_ushort(fromF32<TT>(w[0]));
          const unsigned hi = __bfloat16_as_ushort(fromF32<TT>(w[1]));
          pk[h] = lo | hi << 16;
        }
        *reinterpret_cast<uint4 *>(d + p * 8) =
            make_uint4(pk[0], pk[1], pk[2], pk[3]);
      }
    } else {
      for (int j = 0; j < V; ++j)
        d[j] = fromF32<TT>(row && c + j < colValid ? weightAt<F>(q, c0 + c + j)
                                                   : 0.0f);
    }
  }
}

} // namespace quant
} // namespace moe_k

#endif // MOE_KERNELS_QUANT_CUH
