//===- Float16.cpp - bf16 and f16 conversions -----------------------------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Float16.h"

#include <cstring>

namespace moe {

uint32_t floatToBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

float bitsToFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

float bf16ToFloat(uint16_t bits) {
  return bitsToFloat(static_cast<uint32_t>(bits) << 16);
}

float f16ToFloat(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) // Inf or NaN; the payload moves to the top bits.
    return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0)
    return bitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0)
    return bitsToFloat(sign);
  // Subnormal half: normalise; every half subnormal is a normal float.
  uint32_t floatExponent = 113;
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --floatExponent;
  }
  mantissa &= 0x3ffu;
  return bitsToFloat(sign | (floatExponent << 23) | (mantissa << 13));
}

uint16_t floatToBF16(float value) {
  uint32_t bits = floatToBits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) // NaN: truncate and force quiet.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  uint32_t lsb = (bits >> 16) & 1u;
  bits += 0x7fffu + lsb; // Carries into the exponent give Inf as required.
  return static_cast<uint16_t>(bits >> 16);
}

uint16_t floatToF16(float value) {
  uint32_t bits = floatToBits(value);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) // NaN: keep the top payload bits, quiet.
    return sign | 0x7e00u | static_cast<uint16_t>((magnitude >> 13) & 0x3ffu);
  uint32_t exponent = magnitude >> 23;
  uint32_t mantissa = magnitude & 0x7fffffu;
  if (exponent >= 143) // >= 2^16, or Inf: past the largest half.
    return sign | 0x7c00u;
  if (exponent >= 113) {
    // Normal half. Rounding may carry into the exponent, up to Inf.
    uint32_t half = ((exponent - 112) << 10) | (mantissa >> 13);
    uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
      ++half;
    return sign | static_cast<uint16_t>(half);
  }
  // Below 2^-14: a subnormal half in units of 2^-24, or zero. Below 2^-25
  // everything rounds to zero; 2^-25 itself is a tie, to zero, below.
  if (exponent < 102)
    return sign;
  uint32_t significand = mantissa | 0x800000u;
  uint32_t shift = 126 - exponent; // 14..24
  uint32_t half = significand >> shift;
  uint32_t rest = significand & ((1u << shift) - 1);
  uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (half & 1u)))
    ++half; // May become 0x400, the smallest normal: still correct.
  return sign | static_cast<uint16_t>(half);
}

} // namespace moe
