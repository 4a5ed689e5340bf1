//===- QuantDecodeTest.cpp - FP8/FP4/E8M0 decoders, every code ------------===//
//
// Part of moe-opt. Each decoder is checked on every code against the value
// computed here from the format's definition by a different route (sums of
// powers of two over the bit fields), so a wrong bias, a swapped field or
// a wrong nibble order fails.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Reference/QuantDecode.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace moe::quant;

namespace {

/// (-1)^s * 2^(e - bias) * (1 + m / 2^mbits), subnormal at e = 0.
double formula(unsigned s, unsigned e, unsigned m, int bias, int mbits) {
  double frac = static_cast<double>(m) / static_cast<double>(1 << mbits);
  double v = e == 0 ? std::pow(2.0, 1 - bias) * frac
                    : std::pow(2.0, static_cast<int>(e) - bias) * (1.0 + frac);
  return s ? -v : v;
}

TEST(QuantDecode, EveryE4M3FNCode) {
  int nans = 0;
  for (unsigned c = 0; c < 256; ++c) {
    unsigned s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    float got = decodeE4M3FN(static_cast<uint8_t>(c));
    if (e == 15 && m == 7) {
      EXPECT_TRUE(std::isnan(got)) << "code 0x" << std::hex << c;
      ++nans;
      continue;
    }
    EXPECT_EQ(static_cast<double>(got), formula(s, e, m, 7, 3))
        << "code 0x" << std::hex << c;
    EXPECT_EQ(std::signbit(got), s == 1) << "code 0x" << std::hex << c;
  }
  EXPECT_EQ(nans, 2); // 0x7F and 0xFF only: E4M3FN has no infinities.
  EXPECT_EQ(decodeE4M3FN(0x7E), 448.0f);
  EXPECT_EQ(decodeE4M3FN(0xFE), -448.0f);
  EXPECT_EQ(decodeE4M3FN(0x78), 256.0f); // exponent 15 is a normal binade
  EXPECT_EQ(decodeE4M3FN(0x01), 0.001953125f); // 2^-9, smallest subnormal
  EXPECT_EQ(decodeE4M3FN(0x08), 0.015625f);    // 2^-6, smallest normal
  EXPECT_EQ(decodeE4M3FN(0x38), 1.0f);
}

TEST(QuantDecode, EveryE2M1CodeTimesE8M0Scales) {
  const float table[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (unsigned c = 0; c < 16; ++c) {
    unsigned s = c >> 3, e = (c >> 1) & 3, m = c & 1;
    float got = decodeE2M1(static_cast<uint8_t>(c));
    EXPECT_EQ(static_cast<double>(got), formula(s, e, m, 1, 1))
        << "code " << c;
    EXPECT_EQ(got, s ? -table[c & 7] : table[c & 7]) << "code " << c;
    EXPECT_EQ(std::signbit(got), s == 1) << "code " << c;
    // Only the low nibble counts.
    EXPECT_EQ(decodeE2M1(static_cast<uint8_t>(c | 0xA0)), got);
    for (int scale : {0, 1, 100, 118, 126, 127, 128, 130, 200, 252}) {
      float v = got * decodeE8M0(static_cast<uint8_t>(scale));
      double want = formula(s, e, m, 1, 1) * std::pow(2.0, scale - 127);
      // The product of two powers-of-two-scaled values is exact in f32
      // unless it falls below the subnormal range (6 * 2^-127 does not).
      EXPECT_EQ(static_cast<double>(v), want)
          << "code " << c << " scale " << scale;
    }
  }
}

TEST(QuantDecode, E8M0) {
  for (unsigned c = 0; c < 255; ++c)
    EXPECT_EQ(static_cast<double>(decodeE8M0(static_cast<uint8_t>(c))),
              std::pow(2.0, static_cast<int>(c) - 127))
        << "code " << c;
  EXPECT_TRUE(std::isnan(decodeE8M0(255)));
  EXPECT_EQ(decodeE8M0(127), 1.0f);
}

TEST(QuantDecode, PackedNibbleOrder) {
  // 0x72: low nibble 2 (1.0) is value 0, high nibble 7 (6.0) is value 1.
  const uint8_t bytes[2] = {0x72, 0x9F};
  EXPECT_EQ(decodePackedE2M1(bytes, 0), 1.0f);
  EXPECT_EQ(decodePackedE2M1(bytes, 1), 6.0f);
  EXPECT_EQ(decodePackedE2M1(bytes, 2), -6.0f);
  EXPECT_EQ(decodePackedE2M1(bytes, 3), -0.5f);
}

} // namespace
