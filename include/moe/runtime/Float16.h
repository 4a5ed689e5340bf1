//===- Float16.h - bf16 and f16 conversions ---------------------*- C++ -*-===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//
//
// Bit-exact conversions between IEEE binary32 and the two 16-bit float
// formats found in checkpoints. Widening is exact. Narrowing rounds to
// nearest, ties to even, overflows to infinity, keeps the sign of zero,
// produces subnormals where the result is below the smallest normal, and
// turns every NaN into a quiet NaN of the same sign.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_FLOAT16_H
#define MOE_RUNTIME_FLOAT16_H

#include <cstdint>

namespace moe {

/// Widens bfloat16 bits to float (exact).
float bf16ToFloat(uint16_t bits);

/// Widens IEEE half-precision bits to float (exact).
float f16ToFloat(uint16_t bits);

/// Narrows a float to bfloat16 bits, rounding to nearest even.
uint16_t floatToBF16(float value);

/// Narrows a float to IEEE half-precision bits, rounding to nearest even.
uint16_t floatToF16(float value);

/// The bits of a float and back, without aliasing tricks.
uint32_t floatToBits(float value);
float bitsToFloat(uint32_t bits);

} // namespace moe

#endif // MOE_RUNTIME_FLOAT16_H
