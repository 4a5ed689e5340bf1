//===- QuantDecode.h - Exact decoders of FP8/FP4/E8M0 codes -----*- C++ -*-===//
//
// Part of moe-opt. Bit-by-bit decoders of the quantized weight formats of
// released MoE checkpoints (docs/hf-layouts.md, "Quantized checkpoints"):
// FP8 E4M3FN (DeepSeek-V3), FP4 E2M1 and the E8M0 block exponent (MXFP4,
// gpt-oss). Every code decodes to its exact value in f32 (all are
// representable); no lookup table, so a test can compare against the
// formula. Header-only and MLIR-free so that the runtime may share it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_REFERENCE_QUANTDECODE_H
#define MOE_LIB_REFERENCE_QUANTDECODE_H

#include <cmath>
#include <cstdint>
#include <limits>

namespace moe::quant {

/// FP8 E4M3FN: sign, 4 exponent bits (bias 7), 3 mantissa bits; subnormals
/// at exponent 0; no infinities; S.1111.111 is the only NaN (returned as a
/// quiet NaN, which then propagates).
inline float decodeE4M3FN(uint8_t code) {
  unsigned sign = code >> 7, exponent = (code >> 3) & 0xF, mantissa = code & 7;
  float magnitude;
  if (exponent == 0xF && mantissa == 7)
    magnitude = std::numeric_limits<float>::quiet_NaN();
  else if (exponent == 0)
    magnitude = std::ldexp(static_cast<float>(mantissa), -9); // 2^-6 * m/8
  else
    magnitude = std::ldexp(static_cast<float>(8 + mantissa),
                           static_cast<int>(exponent) - 10); // 2^(e-7)(1+m/8)
  return sign ? -magnitude : magnitude;
}

/// FP4 E2M1 (the low 4 bits of `code`): sign, 2 exponent bits (bias 1),
/// 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives.
inline float decodeE2M1(uint8_t code) {
  unsigned sign = (code >> 3) & 1, exponent = (code >> 1) & 3,
           mantissa = code & 1;
  float magnitude =
      exponent == 0
          ? 0.5f * static_cast<float>(mantissa)
          : std::ldexp(static_cast<float>(2 + mantissa),
                       static_cast<int>(exponent) - 2); // 2^(e-1)(1+m/2)
  return sign ? -magnitude : magnitude;
}

/// E8M0 block exponent: 2^(e - 127); 255 is NaN (OCP MX). 0 gives 2^-127,
/// an exact f32 subnormal.
inline float decodeE8M0(uint8_t code) {
  if (code == 0xFF)
    return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(code) - 127);
}

/// Value `i` of a packed FP4 array: two values per byte, low nibble first.
inline float decodePackedE2M1(const uint8_t *bytes, int64_t i) {
  uint8_t byte = bytes[i / 2];
  return decodeE2M1(i % 2 == 0 ? (byte & 0xF) : (byte >> 4));
}

} // namespace moe::quant

#endif // MOE_LIB_REFERENCE_QUANTDECODE_H
