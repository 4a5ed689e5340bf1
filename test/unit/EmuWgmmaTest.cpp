//===- EmuWgmmaTest.cpp - wgmma on the CPU emulation ----------------------===//
//
// Part of moe-opt. Tests of runtime/emu/moe_emu_wgmma.h through the kernels'
// wrappers (runtime/kernels/moe_wgmma.cuh): a 64 x 64 x 64 product of
// random bf16 tiles laid out as no-swizzle K-major core matrices against a
// plain matmul on the host, the accumulators NaN until the wait, a wrong
// descriptor stride that computes a wrong product, operands read at the
// wait (not at issue), and the errors for descriptors the emulation cannot
// decode.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/EmuModule.h"
#include "moe/runtime/KernelHeaders.h"

#include "EmuKernelFixture.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

using moe::runtime::EmuModule;
using moe::runtime::Status;

namespace {

const char *kSource = R"cuda(
#include "moe_emu.h"
#include "moe/runtime/KernelABI.h"
#include "moe_wgmma.cuh"

using namespace moe_k;

// out[64][64] = A[64][64] . B[64][64]^T (A row-major, B n-major, k
// contiguous; bf16), one warpgroup, four k16 steps chained on the same
// accumulators. scalars[0] selects a mistake: 1 SBO doubled, 2 LBO and SBO
// swapped, 3 a 128-byte swizzle, 4 no fence, 5 an SBO past shared memory,
// 6 the accumulators read before the wait (flags[t] = isnan(d[0])), 7 B
// zeroed after the commit and before the wait (the bug of a k loop that
// refills a stage too early), 8 one group per k16 step with the previous
// one still in flight (wait_group 1), as the grouped kernels' k loop.
extern "C" __global__ void k_wgmma_64x64x64(MoEKernelArgs args) {
  using Tile = wgmma::CoreTile<64, 64>;
  const __nv_bfloat16 *a = static_cast<const __nv_bfloat16 *>(args.buffers[0]);
  const __nv_bfloat16 *b = static_cast<const __nv_bfloat16 *>(args.buffers[1]);
  float *out = static_cast<float *>(args.buffers[2]);
  int *flags = static_cast<int *>(args.buffers[3]);
  const int mode = static_cast<int>(args.scalars[0]);
  MOE_SHARED(uint4, words, 2 * Tile::Elements / 8);
  __nv_bfloat16 *As = reinterpret_cast<__nv_bfloat16 *>(words);
  __nv_bfloat16 *Bs = As + Tile::Elements;
  for (int i = threadIdx.x; i < 64 * 8; i += blockDim.x) {
    const int r = i / 8, c = (i % 8) * 8;
    *reinterpret_cast<uint4 *>(As + Tile::at(r, c)) =
        *reinterpret_cast<const uint4 *>(a + r * 64 + c);
    *reinterpret_cast<uint4 *>(Bs + Tile::at(r, c)) =
        *reinterpret_cast<const uint4 *>(b + r * 64 + c);
  }
  __syncthreads();
  unsigned lbo = Tile::LBO, sbo = Tile::SBO;
  if (mode == 1)
    sbo *= 2;
  if (mode == 2)
    lbo = Tile::SBO, sbo = Tile::LBO;
  if (mode == 5)
    sbo = 0x3fff0;
  float d[32];
  for (int i = 0; i < 32; ++i)
    d[i] = 1e30f; // overwritten: the first step does not accumulate
  if (mode != 4)
    wgmma::fence();
  for (int ks = 0; ks < 4; ++ks) {
    unsigned long long da = wgmma::descriptor(As + Tile::at(0, 16 * ks), lbo, sbo);
    unsigned long long db = wgmma::descriptor(Bs + Tile::at(0, 16 * ks), lbo, sbo);
    if (mode == 3)
      db |= 1ull << 62;
    if (mode == 8)
      wgmma::fence();
    wgmma::m64n64k16<__nv_bfloat16>(d, da, db, ks > 0);
    if (mode == 8) {
      wgmma::commit();
      wgmma::wait<1>();
    }
  }
  wgmma::commit();
  if (mode == 6)
    flags[threadIdx.x] = isnan(d[0]) ? 1 : 0;
  if (mode == 7) {
    __syncthreads();
    for (int i = threadIdx.x; i < Tile::Elements / 8; i += blockDim.x)
      reinterpret_cast<uint4 *>(Bs)[i] = make_uint4(0, 0, 0, 0);
    __syncthreads();
  }
  wgmma::wait<0>();
  wgmma::fenceOperands(d);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int c = 0; c < 8; ++c)
    for (int i = 0; i < 4; ++i)
      out[(16 * w + lane / 4 + (i >= 2 ? 8 : 0)) * 64 + 8 * c +
          2 * (lane % 4) + (i & 1)] = d[4 * c + i];
}
MOE_EMU_EXPORT_KERNEL(k_wgmma_64x64x64)
)cuda";

struct EmuWgmmaTestSource {
  static inline const char *const kText = kSource;
  static constexpr const char *kName = "emu-wgmma-test";
};

class EmuWgmmaTest : public moe::test::EmuKernelFixture<EmuWgmmaTestSource> {
protected:

  /// Runs the kernel in `mode` on random tiles; a, b: their values.
  Status run(int mode, std::vector<float> &a, std::vector<float> &b,
             std::vector<float> &out, std::vector<int> &flags) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<uint16_t> abits(64 * 64), bbits(64 * 64);
    a.resize(64 * 64);
    b.resize(64 * 64);
    for (int i = 0; i < 64 * 64; ++i) {
      for (auto [v, bits] : {std::pair{&a[i], &abits[i]}, {&b[i], &bbits[i]}}) {
        float f = dist(rng);
        uint32_t u;
        std::memcpy(&u, &f, 4);
        *bits = static_cast<uint16_t>(u >> 16); // truncated: exact in bf16
        u = static_cast<uint32_t>(*bits) << 16;
        std::memcpy(v, &u, 4);
      }
    }
    out.assign(64 * 64, 0.0f);
    flags.assign(128, -1);
    MoEKernelArgs args{};
    args.buffers[0] = abits.data();
    args.buffers[1] = bbits.data();
    args.buffers[2] = out.data();
    args.buffers[3] = flags.data();
    args.scalars[0] = mode;
    return launch("k_wgmma_64x64x64", args, 128);
  }

  /// Largest |out - A . B^T| over the tile.
  static double maxError(const std::vector<float> &a,
                         const std::vector<float> &b,
                         const std::vector<float> &out) {
    double worst = 0.0;
    for (int m = 0; m < 64; ++m)
      for (int n = 0; n < 64; ++n) {
        double ref = 0.0;
        for (int k = 0; k < 64; ++k)
          ref += static_cast<double>(a[m * 64 + k]) * b[n * 64 + k];
        worst = std::max(worst, std::fabs(ref - out[m * 64 + n]));
      }
    return worst;
  }

};

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

TEST_F(EmuWgmmaTest, MatchesAPlainMatmul) {
  std::vector<float> a, b, out;
  std::vector<int> flags;
  Status s = run(0, a, b, out, flags);
  ASSERT_TRUE(s.ok()) << s.message();
  // Four f32 roundings of sums below 16 in magnitude: under 4 * 2^-20.
  EXPECT_LT(maxError(a, b, out), 4e-6);
}

TEST_F(EmuWgmmaTest, ChainsAcrossGroupsInFlight) {
  std::vector<float> a, b, out;
  std::vector<int> flags;
  Status s = run(8, a, b, out, flags);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_LT(maxError(a, b, out), 4e-6);
}

TEST_F(EmuWgmmaTest, AWrongStrideComputesAWrongProduct) {
  for (int mode : {1, 2}) {
    std::vector<float> a, b, out;
    std::vector<int> flags;
    Status s = run(mode, a, b, out, flags);
    ASSERT_TRUE(s.ok()) << mode << ": " << s.message();
    EXPECT_GT(maxError(a, b, out), 0.1) << "mode " << mode;
  }
}

TEST_F(EmuWgmmaTest, AccumulatorsAreNaNUntilTheWait) {
  std::vector<float> a, b, out;
  std::vector<int> flags;
  Status s = run(6, a, b, out, flags);
  ASSERT_TRUE(s.ok()) << s.message();
  for (int t = 0; t < 128; ++t)
    EXPECT_EQ(flags[t], 1) << "thread " << t;
  EXPECT_LT(maxError(a, b, out), 4e-6);
}

TEST_F(EmuWgmmaTest, OperandsAreReadAtTheWait) {
  std::vector<float> a, b, out;
  std::vector<int> flags;
  Status s = run(7, a, b, out, flags);
  ASSERT_TRUE(s.ok()) << s.message();
  for (int i = 0; i < 64 * 64; ++i)
    ASSERT_EQ(out[i], 0.0f) << "element " << i;
}

TEST_F(EmuWgmmaTest, UndecodableDescriptorsAreLaunchErrors) {
  const std::pair<int, const char *> cases[] = {
      {3, "descriptor B"},
      {4, "no wgmma.fence before the first wgmma.mma_async"},
      {5, "reaches byte"}};
  for (auto [mode, expect] : cases) {
    std::vector<float> a, b, out;
    std::vector<int> flags;
    Status s = run(mode, a, b, out, flags);
    ASSERT_FALSE(s.ok()) << mode;
    EXPECT_TRUE(contains(s.message(), expect)) << mode << ": " << s.message();
  }
  std::vector<float> a, b, out;
  std::vector<int> flags;
  Status s = run(3, a, b, out, flags);
  EXPECT_TRUE(contains(s.message(), "swizzle mode 1")) << s.message();
}

} // namespace
