//===- EmuTest.cpp - The CPU emulation of CUDA kernels --------------------===//
//
// Part of moe-opt. Tests of runtime/emu: kernels written as CUDA C++ source
// strings are compiled through EmuModule (one shared module, so that the
// host compiler runs once for most tests) and launched; the value-level
// parts (16-bit float conversions, intrinsics) and a direct launch use
// moe_emu.h in this file.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/EmuModule.h"
#include "moe/runtime/KernelHeaders.h"
#include "moe/lib/Reference/QuantDecode.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

// Last: it defines threadIdx, __global__, ... as macros.
#include "moe_emu.h"

using moe::runtime::EmuDim3;
using moe::runtime::EmuModule;
using moe::runtime::Status;

namespace {

//===----------------------------------------------------------------------===//
// 16-bit floats
//===----------------------------------------------------------------------===//

uint16_t bf16Bits(float f) { return __bfloat16_as_ushort(__float2bfloat16(f)); }
uint16_t halfBits(float f) { return __half_as_ushort(__float2half(f)); }
float fromBits(uint32_t u) { return __uint_as_float(u); }

/// Round-to-nearest-even to bfloat16 by comparing distances to the two
/// neighbours (independent of the emulation's bit trick).
uint16_t referenceBf16(float f) {
  uint32_t u = __float_as_uint(f);
  uint16_t lo = static_cast<uint16_t>(u >> 16); // toward zero
  uint16_t hi = static_cast<uint16_t>(lo + 1);  // away from zero
  double x = std::fabs(static_cast<double>(f));
  double vlo = std::fabs(static_cast<double>(fromBits(uint32_t(lo) << 16)));
  double vhi = (hi & 0x7fff) == 0x7f80
                   ? std::ldexp(1.0, 128) // the binade above the largest
                   : std::fabs(static_cast<double>(fromBits(uint32_t(hi) << 16)));
  double dlo = x - vlo, dhi = vhi - x;
  if (dlo < dhi)
    return lo;
  if (dhi < dlo)
    return hi;
  return (lo & 1) ? hi : lo;
}

TEST(EmuTypes, Bf16ConversionBitPatterns) {
  EXPECT_EQ(bf16Bits(1.0f), 0x3f80);
  EXPECT_EQ(bf16Bits(-2.0f), 0xc000);
  EXPECT_EQ(bf16Bits(0.0f), 0x0000);
  EXPECT_EQ(bf16Bits(-0.0f), 0x8000);
  // Ties to even: 1 + 2^-8 lies halfway between 0x3f80 and 0x3f81.
  EXPECT_EQ(bf16Bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(bf16Bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(bf16Bits(fromBits(0x3f808001)), 0x3f81); // just above the tie
  EXPECT_EQ(bf16Bits(fromBits(0x3f807fff)), 0x3f80); // just below
  EXPECT_EQ(bf16Bits(INFINITY), 0x7f80);
  EXPECT_EQ(bf16Bits(-INFINITY), 0xff80);
  EXPECT_EQ(bf16Bits(NAN), 0x7fff);
  EXPECT_EQ(bf16Bits(fromBits(0xffc00001)), 0x7fff); // any NaN: canonical
  EXPECT_EQ(bf16Bits(FLT_MAX), 0x7f80);              // rounds up to inf
  EXPECT_EQ(bf16Bits(fromBits(0x7f7f7fff)), 0x7f7f); // largest finite
  EXPECT_EQ(bf16Bits(std::ldexp(1.0f, -133)), 0x0001); // smallest subnormal
  EXPECT_EQ(bf16Bits(std::ldexp(1.0f, -134)), 0x0000); // tie to even (0)
  EXPECT_EQ(bf16Bits(std::ldexp(3.0f, -135)), 0x0001); // 0.75 ulp: up
  EXPECT_EQ(bf16Bits(fromBits(0x00000001)), 0x0000);
  // Directed roundings.
  float x = 1.0f + 3 * std::ldexp(1.0f, -9); // between 0x3f80 and 0x3f81
  EXPECT_EQ(__bfloat16_as_ushort(__float2bfloat16_rz(x)), 0x3f80);
  EXPECT_EQ(__bfloat16_as_ushort(__float2bfloat16_rd(x)), 0x3f80);
  EXPECT_EQ(__bfloat16_as_ushort(__float2bfloat16_ru(x)), 0x3f81);
  EXPECT_EQ(__bfloat16_as_ushort(__float2bfloat16_rd(-x)), 0xbf81);
  EXPECT_EQ(__bfloat16_as_ushort(__float2bfloat16_rz(FLT_MAX)), 0x7f7f);
  EXPECT_EQ(__bfloat16_as_ushort(__float2bfloat16_ru(FLT_MAX)), 0x7f80);
  // Back to float: exact.
  EXPECT_EQ(__bfloat162float(__ushort_as_bfloat16(0x3f81)),
            1.0f + std::ldexp(1.0f, -7));
  EXPECT_EQ(__float_as_uint(__bfloat162float(__ushort_as_bfloat16(0x0001))),
            0x00010000u);
}

TEST(EmuTypes, Bf16RoundingMatchesReferenceOverFloatSweep) {
  int checked = 0;
  for (uint64_t u = 0; u < (1ull << 32); u += 40009) {
    for (uint32_t low : {0u, 0x7fffu, 0x8000u, 0x8001u}) {
      uint32_t bits = (static_cast<uint32_t>(u) & 0xffff0000u) | low;
      float f = fromBits(bits);
      if (std::isnan(f))
        continue;
      ASSERT_EQ(bf16Bits(f), referenceBf16(f)) << std::hex << bits;
      // The general rounding routine agrees with the bit trick.
      ASSERT_EQ(moe_emu::detail::round16(static_cast<double>(f), 7, 8,
                                         moe_emu::detail::kRoundNearestEven),
                bf16Bits(f))
          << std::hex << bits;
      ++checked;
    }
  }
  EXPECT_GT(checked, 300000);
  for (uint32_t h = 0; h < 0x10000; ++h) { // every bf16 round-trips
    float f = __bfloat162float(__ushort_as_bfloat16(static_cast<uint16_t>(h)));
    if (!std::isnan(f)) {
      ASSERT_EQ(bf16Bits(f), h);
    }
  }
}

TEST(EmuTypes, HalfConversionsMatchFloat16) {
  EXPECT_EQ(halfBits(1.0f), 0x3c00);
  EXPECT_EQ(halfBits(65504.0f), 0x7bff);
  EXPECT_EQ(halfBits(65519.996f), 0x7bff);
  EXPECT_EQ(halfBits(65520.0f), 0x7c00); // tie between 65504 and 2^16
  EXPECT_EQ(halfBits(-INFINITY), 0xfc00);
  EXPECT_EQ(halfBits(NAN), 0x7fff);
  EXPECT_EQ(halfBits(-0.0f), 0x8000);
  EXPECT_EQ(halfBits(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(halfBits(std::ldexp(1.0f, -25)), 0x0000); // tie to even
  EXPECT_EQ(halfBits(std::ldexp(3.0f, -26)), 0x0001);
  EXPECT_EQ(halfBits(std::ldexp(3.0f, -25)), 0x0002); // 1.5 ulp: tie, even
  EXPECT_EQ(halfBits(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(halfBits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(__half_as_ushort(__float2half_rz(65519.0f)), 0x7bff);
  EXPECT_EQ(__half_as_ushort(__float2half_rz(1e6f)), 0x7bff);
  EXPECT_EQ(__half_as_ushort(__float2half_ru(1.0f + 1e-4f)), 0x3c01);
  EXPECT_EQ(__half_as_ushort(__float2half_rd(-1.0f - 1e-4f)), 0xbc01);
  // Against the compiler's correctly rounded _Float16.
  int checked = 0;
  for (uint64_t u = 0; u < (1ull << 32); u += 30011) {
    float f = fromBits(static_cast<uint32_t>(u));
    if (std::isnan(f))
      continue;
    _Float16 ref = static_cast<_Float16>(f);
    uint16_t rb;
    std::memcpy(&rb, &ref, 2);
    ASSERT_EQ(halfBits(f), rb) << std::hex << u;
    ++checked;
  }
  EXPECT_GT(checked, 100000);
  for (uint32_t h = 0; h < 0x10000; ++h) {
    _Float16 v;
    uint16_t hb = static_cast<uint16_t>(h);
    std::memcpy(&v, &hb, 2);
    float mine = __half2float(__ushort_as_half(hb));
    if (std::isnan(static_cast<float>(v))) {
      ASSERT_TRUE(std::isnan(mine));
      continue;
    }
    ASSERT_EQ(__float_as_uint(mine), __float_as_uint(static_cast<float>(v)))
        << std::hex << h;
    ASSERT_EQ(halfBits(mine), h); // round trip
    if ((h & 0x7fff) < 0x7bff) {  // the tie above every finite half
      float next = __half2float(__ushort_as_half(static_cast<uint16_t>(h + 1)));
      float mid = static_cast<float>((static_cast<double>(mine) + next) / 2);
      _Float16 r = static_cast<_Float16>(mid);
      uint16_t rb;
      std::memcpy(&rb, &r, 2);
      ASSERT_EQ(halfBits(mid), rb) << std::hex << h;
    }
  }
}

TEST(EmuTypes, SixteenBitArithmeticRoundsOnce) {
  // bf16: 1 + 2^-8 is a tie; 256 + 1 rounds back to 256.
  __nv_bfloat16 one = __float2bfloat16(1.0f);
  __nv_bfloat16 tiny = __float2bfloat16(std::ldexp(1.0f, -8));
  EXPECT_EQ(__bfloat16_as_ushort(one + tiny), 0x3f80);
  EXPECT_EQ(__bfloat162float(__float2bfloat16(256.0f) + one), 256.0f);
  // (a * b) rounds once: 1.0078125^2 = 1.01568603515625 -> 1.015625.
  __nv_bfloat16 a = __float2bfloat16(1.0078125f);
  EXPECT_EQ(__bfloat162float(a * a), 1.015625f);
  // __hfma rounds once: a*a - 1 = 0.01568603515625 exactly in bf16 range.
  __nv_bfloat16 m1 = __float2bfloat16(-1.0f);
  EXPECT_EQ(__bfloat162float(__hfma(a, a, m1)),
            __bfloat162float(__float2bfloat16(0.01568603515625f)));
  // half: 2048 + 1 is a tie -> 2048; 2048 + 3 -> 2052.
  __half h2048 = __float2half(2048.0f);
  EXPECT_EQ(__half2float(h2048 + __float2half(1.0f)), 2048.0f);
  EXPECT_EQ(__half2float(h2048 + __float2half(3.0f)), 2052.0f);
  EXPECT_EQ(__half2float(__hmax(__float2half(NAN), __float2half(2.0f))), 2.0f);
  __nv_bfloat162 p = __floats2bfloat162_rn(1.5f, -2.25f);
  EXPECT_EQ(__low2float(p), 1.5f);
  EXPECT_EQ(__high2float(p), -2.25f);
  __half2 hp = __floats2half2_rn(0.5f, 3.0f);
  EXPECT_EQ(__low2float(hp), 0.5f);
  EXPECT_EQ(__high2float(hp), 3.0f);
  EXPECT_EQ(sizeof(__nv_bfloat162), 4u);
  EXPECT_EQ(alignof(float4), 16u);
  EXPECT_EQ(alignof(uint2), 8u);
  // Implicit conversions as in CUDA.
  __nv_bfloat16 c = 3;
  float f = c;
  EXPECT_EQ(f, 3.0f);
  c = 0.5;
  EXPECT_EQ(static_cast<float>(c), 0.5f);
}

TEST(EmuTypes, Intrinsics) {
  EXPECT_EQ(__clz(0), 32);
  EXPECT_EQ(__clz(1), 31);
  EXPECT_EQ(__clz(-1), 0);
  EXPECT_EQ(__clzll(1ll << 40), 23);
  EXPECT_EQ(__popc(0xf0f0u), 8);
  EXPECT_EQ(__popcll(~0ull), 64);
  EXPECT_EQ(__ffs(0), 0);
  EXPECT_EQ(__ffs(0x18), 4);
  EXPECT_EQ(__brev(1u), 0x80000000u);
  EXPECT_EQ(__byte_perm(0x33221100u, 0x77665544u, 0x7531u), 0x77553311u);
  EXPECT_EQ(__funnelshift_l(0x80000000u, 0x1u, 1), 0x3u);
  EXPECT_EQ(__funnelshift_r(0x2u, 0x1u, 1), 0x80000001u);
  EXPECT_EQ(__umulhi(0x80000000u, 4u), 2u);
  EXPECT_EQ(min(3, 5), 3);
  EXPECT_EQ(max(-1, 2u), 0xffffffffu); // CUDA: unsigned comparison
  EXPECT_EQ(min(2.5f, -1.0f), -1.0f);
  EXPECT_EQ(max(1ll, 7ll), 7ll);
  constexpr float negInf = -__int_as_float(0x7f800000); // constexpr as used
  EXPECT_TRUE(std::isinf(negInf) && negInf < 0);
  EXPECT_EQ(__float_as_uint(1.0f), 0x3f800000u);
  EXPECT_EQ(__float2int_rn(2.5f), 2);
  EXPECT_EQ(__float2int_rn(3.5f), 4);
  EXPECT_EQ(__float2int_rz(-2.7f), -2);
  EXPECT_EQ(__float2int_rd(-2.2f), -3);
  EXPECT_EQ(__float2int_ru(2.2f), 3);
  EXPECT_EQ(__float2int_rn(1e20f), INT_MAX);
  EXPECT_EQ(__float2int_rn(NAN), 0);
  EXPECT_EQ(__float2uint_rn(-5.0f), 0u);
  EXPECT_EQ(__saturatef(1.5f), 1.0f);
  EXPECT_EQ(__saturatef(NAN), 0.0f);
  EXPECT_FLOAT_EQ(rsqrtf(4.0f), 0.5f);
  EXPECT_EQ(__frcp_rn(4.0f), 0.25f);
  EXPECT_EQ(__fmaf_rn(2.0f, 3.0f, 1.0f), 7.0f);
  EXPECT_EQ(warpSize, 32);
  dim3 d(4);
  EXPECT_EQ(d.y, 1u);
  int4 v4 = make_int4(1, 2, 3, 4);
  EXPECT_EQ(v4.w, 4);
  EXPECT_EQ(__ldg(&v4.y), 2);
}

//===----------------------------------------------------------------------===//
// A kernel launched directly (moe_emu.h in this file)
//===----------------------------------------------------------------------===//

struct DirectArgs {
  int *out;
  int rounds;
};

__global__ void directKernel(DirectArgs a) {
  MOE_SHARED(int, acc, 1);
  if (threadIdx.x == 0 && threadIdx.y == 0)
    acc[0] = 0;
  __syncthreads();
  for (int r = 0; r < a.rounds; ++r) {
    atomicAdd(&acc[0], 1);
    __syncthreads();
  }
  const unsigned linear = threadIdx.y * blockDim.x + threadIdx.x;
  a.out[blockIdx.x * blockDim.x * blockDim.y + linear] =
      acc[0] * 1000 + static_cast<int>(linear);
}

TEST(EmuLaunch, DirectLaunchOfAKernelInThisFile) {
  std::vector<int> out(2 * 6 * 5, -7);
  DirectArgs a{out.data(), 3};
  char err[512] = "";
  ASSERT_EQ(moe_emu::launch(&directKernel, &a, 2, 1, 1, 6, 5, 1, 0, err,
                            sizeof err, "directKernel"),
            0)
      << err;
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 30; ++t)
      EXPECT_EQ(out[b * 30 + t], 3 * 30 * 1000 + t);
  // Bad configurations are errors, not crashes.
  EXPECT_NE(moe_emu::launch(&directKernel, &a, 1, 1, 1, 1025, 1, 1, 0, err,
                            sizeof err),
            0);
  EXPECT_NE(std::string(err).find("per-dimension limits"), std::string::npos)
      << err;
  EXPECT_NE(moe_emu::launch(&directKernel, &a, 1, 1, 1, 32, 33, 1, 0, err,
                            sizeof err),
            0);
  EXPECT_NE(std::string(err).find("1056 threads"), std::string::npos) << err;
  EXPECT_NE(moe_emu::launch(&directKernel, &a, 1, 1, 1, 1, 1, 65, 0, err,
                            sizeof err),
            0);
  EXPECT_NE(moe_emu::launch(&directKernel, &a, 1, 70000, 1, 32, 1, 1, 0, err,
                            sizeof err),
            0);
  EXPECT_NE(moe_emu::launch(&directKernel, &a, 0, 1, 1, 32, 1, 1, 0, err,
                            sizeof err),
            0);
  EXPECT_NE(std::string(err).find("empty launch"), std::string::npos) << err;
  EXPECT_NE(moe_emu::launch(&directKernel, &a, 1, 1, 1, 32, 1, 1, 300000, err,
                            sizeof err),
            0);
  EXPECT_NE(std::string(err).find("dynamic shared memory"), std::string::npos)
      << err;
}

//===----------------------------------------------------------------------===//
// Kernels compiled through EmuModule
//===----------------------------------------------------------------------===//

const char *kHelpers = R"cuda(
#pragma once
#include "moe_emu.h"
__device__ __forceinline__ int warpSumXor(int v, unsigned mask, int width) {
  for (int o = width / 2; o > 0; o /= 2)
    v += __shfl_xor_sync(mask, v, o, width);
  return v;
}
)cuda";

const char *kSource = R"cuda(
#include "moe_emu.h"
#include "moe/runtime/KernelABI.h"
#include "helpers/test_helpers.cuh"

#include <stdexcept>

// __syncthreads: a tree reduction over any block size.
extern "C" __global__ void k_block_reduce(MoEKernelArgs args) {
  MOE_SHARED(int, buf, 1024);
  int *out = static_cast<int *>(args.buffers[0]);
  const unsigned t = threadIdx.x, n = blockDim.x;
  buf[t] = static_cast<int>(blockIdx.x * 1000 + t + 1);
  __syncthreads();
  for (unsigned s = 1; s < n; s *= 2) {
    if (t % (2 * s) == 0 && t + s < n)
      buf[t] += buf[t + s];
    __syncthreads();
  }
  if (t == 0)
    out[blockIdx.x] = buf[0];
}
MOE_EMU_EXPORT_KERNEL(k_block_reduce)

extern "C" __global__ void k_first_exits(MoEKernelArgs) {
  if (threadIdx.x == 0)
    return;
  __syncthreads();
}
MOE_EMU_EXPORT_KERNEL(k_first_exits)

extern "C" __global__ void k_last_exits(MoEKernelArgs) {
  if (threadIdx.x == blockDim.x - 1)
    return;
  __syncthreads();
}
MOE_EMU_EXPORT_KERNEL(k_last_exits)

extern "C" __global__ void k_divergent_barrier(MoEKernelArgs) {
  if (threadIdx.x < 16)
    __syncthreads();
  else
    __syncthreads();
}
MOE_EMU_EXPORT_KERNEL(k_divergent_barrier)

extern "C" __global__ void k_sync_count(MoEKernelArgs args) {
  int *out = static_cast<int *>(args.buffers[0]);
  const unsigned t = threadIdx.x;
  int c = __syncthreads_count(t % 3 == 0);
  int a = __syncthreads_and(t < 1000);
  int a2 = __syncthreads_and(t != 50);
  int o = __syncthreads_or(t == 77);
  out[t] = c * 1000 + a * 100 + a2 * 10 + o;
}
MOE_EMU_EXPORT_KERNEL(k_sync_count)

// Shuffles in a block of 80 threads: warps of 32, 32 and 16 lanes.
extern "C" __global__ void k_shfl(MoEKernelArgs args) {
  int **out = reinterpret_cast<int **>(args.buffers);
  const unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
  const unsigned mask = __activemask();
  const int width = blockDim.x - warp * 32 >= 32 ? 32 : 16;
  const int v = static_cast<int>(t) * 3 + 1;
  out[0][t] = warpSumXor(v, mask, width);
  out[1][t] = __shfl_down_sync(mask, v, 1);
  out[2][t] = __shfl_up_sync(mask, v, 2);
  out[3][t] = __shfl_sync(mask, v, 5);
  out[4][t] = __shfl_sync(mask, v, 3, 8);
  out[5][t] = __shfl_xor_sync(mask, v, 16, 16);
  int x = v;
  for (int o = 1; o < 32; o *= 2) {
    int y = __shfl_up_sync(mask, x, o);
    if (static_cast<int>(lane) >= o)
      x += y;
  }
  out[6][t] = x;
  double d = __shfl_xor_sync(mask, v + 0.5, 1);
  out[7][t] = static_cast<int>(d * 2);
  long long ll = __shfl_down_sync(mask, static_cast<long long>(v) << 33, 4, 8);
  out[8][t] = static_cast<int>(ll >> 33);
  out[9][t] = __shfl_sync(mask, v, -1, 16);
  float f = __shfl_sync(mask, static_cast<float>(v), 31);
  out[10][t] = __float_as_int(f);
  __nv_bfloat16 hb =
      __shfl_down_sync(mask, __float2bfloat16(static_cast<float>(v)), 2, 4);
  out[11][t] = static_cast<int>(__bfloat162float(hb));
  out[12][t] = __shfl_up_sync(mask, v, 3, 8);
}
MOE_EMU_EXPORT_KERNEL(k_shfl)

extern "C" __global__ void k_vote(MoEKernelArgs args) {
  unsigned **out = reinterpret_cast<unsigned **>(args.buffers);
  const unsigned t = threadIdx.x, lane = t % 32;
  const unsigned mask = __activemask();
  out[0][t] = __ballot_sync(mask, t % 3 == 0);
  // Two disjoint collectives of the same warp at once.
  if (lane % 2 == 0)
    out[1][t] = __ballot_sync(0x55555555u & mask, lane % 4 == 0);
  else
    out[1][t] = __ballot_sync(0xaaaaaaaau & mask, 1);
  out[2][t] = __any_sync(mask, lane == 7) | (__all_sync(mask, lane < 40) << 1) |
              (__all_sync(mask, lane != 3) << 2) | (__any_sync(mask, 0) << 3);
  __syncwarp(mask);
  out[3][t] = mask;
  out[4][t] = __reduce_add_sync(mask, lane);
  out[5][t] = __match_any_sync(mask, lane / 4);
  int pred = -1;
  out[6][t] = __match_all_sync(mask, 42, &pred);
  out[7][t] = static_cast<unsigned>(pred);
  out[8][t] = static_cast<unsigned>(__reduce_max_sync(mask, static_cast<int>(lane) - 10));
}
MOE_EMU_EXPORT_KERNEL(k_vote)

extern "C" __global__ void k_warp_exit(MoEKernelArgs args) {
  if (threadIdx.x == 3)
    return;
  float v = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  static_cast<float *>(args.buffers[0])[threadIdx.x] = v;
}
MOE_EMU_EXPORT_KERNEL(k_warp_exit)

extern "C" __global__ void k_warp_exit_first(MoEKernelArgs args) {
  if (threadIdx.x == 0)
    return;
  float v = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  static_cast<float *>(args.buffers[0])[threadIdx.x] = v;
}
MOE_EMU_EXPORT_KERNEL(k_warp_exit_first)

extern "C" __global__ void k_warp_vs_barrier(MoEKernelArgs) {
  if (threadIdx.x % 32 < 16)
    __shfl_sync(0xffffffffu, 1, 0);
  else
    __syncthreads();
}
MOE_EMU_EXPORT_KERNEL(k_warp_vs_barrier)

// Same mask, different intrinsics: never completes.
extern "C" __global__ void k_mixed_collectives(MoEKernelArgs) {
  if (threadIdx.x % 2 == 0)
    __shfl_sync(0xffffffffu, 1, 0);
  else
    __ballot_sync(0xffffffffu, 1);
}
MOE_EMU_EXPORT_KERNEL(k_mixed_collectives)

extern "C" __global__ void k_not_in_mask(MoEKernelArgs) {
  __shfl_sync(1u << ((threadIdx.x + 1) % 32), 1, 0);
}
MOE_EMU_EXPORT_KERNEL(k_not_in_mask)

extern "C" __global__ void k_bad_width(MoEKernelArgs) {
  __shfl_xor_sync(0xffffffffu, 1, 1, 12);
}
MOE_EMU_EXPORT_KERNEL(k_bad_width)

extern "C" __global__ void k_trap(MoEKernelArgs) {
  if (threadIdx.x == 5)
    __trap();
  __syncthreads();
}
MOE_EMU_EXPORT_KERNEL(k_trap)

// Atomics from every thread of several blocks, and a spin lock whose
// holder yields inside the critical section.
extern "C" __global__ void k_atomics(MoEKernelArgs args) {
  int *ic = static_cast<int *>(args.buffers[0]);
  float *fc = static_cast<float *>(args.buffers[1]);
  unsigned long long *uc = static_cast<unsigned long long *>(args.buffers[2]);
  double *dc = static_cast<double *>(args.buffers[3]);
  unsigned *un = static_cast<unsigned *>(args.buffers[4]);
  int *olds = static_cast<int *>(args.buffers[5]);
  __nv_bfloat16 *bc = static_cast<__nv_bfloat16 *>(args.buffers[6]);
  int *perBlock = static_cast<int *>(args.buffers[7]);
  const int gid = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(&ic[0], 1);
  atomicMax(&ic[1], gid);
  atomicMin(&ic[2], -gid);
  int old = ic[3], assumed;
  do {
    assumed = old;
    old = atomicCAS(&ic[3], assumed, assumed + 2);
  } while (old != assumed);
  olds[gid] = atomicExch(&ic[4], gid);
  atomicSub(&ic[5], 3);
  atomicAdd(fc, 0.5f);
  atomicAdd(uc, 1ull << 33);
  atomicAdd(dc, 0.25);
  atomicInc(&un[0], 9u);
  atomicSub(&un[1], 1u);
  atomicOr(&un[2], 1u << (gid % 32));
  atomicAdd(bc, __float2bfloat16(1.0f));

  MOE_SHARED(int, lock, 1);
  MOE_SHARED(int, inside, 3);
  if (threadIdx.x == 0) {
    lock[0] = 0;
    inside[0] = inside[1] = inside[2] = 0;
  }
  __syncthreads();
  while (atomicCAS(&lock[0], 0, 1) != 0) {
  }
  inside[0] += 1;
  if (inside[0] > inside[1])
    inside[1] = inside[0];
  __nanosleep(100); // yields while holding the lock
  inside[2] += 1;
  inside[0] -= 1;
  __threadfence_block();
  atomicExch(&lock[0], 0);
  __syncthreads();
  if (threadIdx.x == 0)
    perBlock[blockIdx.x] = inside[1] * 10000 + inside[2];
}
MOE_EMU_EXPORT_KERNEL(k_atomics)

__device__ int *helperShared() {
  MOE_SHARED(int, h, 4);
  return h;
}
template <int N> __device__ int *templateShared() {
  MOE_SHARED(int, s, N);
  return s;
}

extern "C" __global__ void k_shared(MoEKernelArgs args) {
  int *out = static_cast<int *>(args.buffers[0]);
  int *flags = static_cast<int *>(args.buffers[1]);
  const unsigned t = threadIdx.x, n = blockDim.x, b = blockIdx.x;
  MOE_DYNAMIC_SHARED(float, dyn);
  MOE_SHARED(int, a, 64);
  MOE_SHARED(float, f, 64);
  if (t == 0) { // fresh storage is poisoned, not the previous block's
    flags[b * 8 + 0] = a[0];
    flags[b * 8 + 1] = __float_as_int(dyn[0]);
  }
  __syncthreads();
  a[t] = static_cast<int>(b * 100 + t);
  f[t] = t * 0.5f;
  dyn[t] = static_cast<float>(t + b);
  __syncthreads();
  out[(b * n + t) * 3 + 0] = a[(t + 1) % n];
  out[(b * n + t) * 3 + 1] = static_cast<int>(f[(t + 5) % n] * 2);
  float sum = 0;
  for (unsigned i = 0; i < n; ++i)
    sum += dyn[i];
  out[(b * n + t) * 3 + 2] = static_cast<int>(sum);
  if (t == 0) {
    flags[b * 8 + 2] = helperShared() == helperShared();
    flags[b * 8 + 3] = templateShared<4>() != templateShared<8>();
    const char *dynEnd = reinterpret_cast<const char *>(dyn) + args.scalars[0];
    flags[b * 8 + 4] = reinterpret_cast<const char *>(a) >= dynEnd &&
                       reinterpret_cast<const char *>(f) >= dynEnd;
    flags[b * 8 + 5] =
        reinterpret_cast<const char *>(f) >= reinterpret_cast<const char *>(a + 64) ||
        reinterpret_cast<const char *>(a) >= reinterpret_cast<const char *>(f + 64);
    flags[b * 8 + 6] = reinterpret_cast<uintptr_t>(dyn) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(a) % 16 == 0;
    flags[b * 8 + 7] = sizeof(a) == 64 * sizeof(int);
  }
}
MOE_EMU_EXPORT_KERNEL(k_shared)

extern "C" __global__ void k_shared_big(MoEKernelArgs args) {
  MOE_SHARED(char, big, 200000);
  big[threadIdx.x] = 1;
  __syncthreads();
  if (threadIdx.x == 0)
    static_cast<int *>(args.buffers[0])[0] = big[1];
}
MOE_EMU_EXPORT_KERNEL(k_shared_big)

// Every (block, thread) of a 3-d grid of 3-d blocks, once.
extern "C" __global__ void k_grid(MoEKernelArgs args) {
  int *count = static_cast<int *>(args.buffers[0]);
  int *coords = static_cast<int *>(args.buffers[1]);
  const unsigned blockLinear =
      (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const unsigned threadLinear =
      (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const unsigned idx =
      blockLinear * (blockDim.x * blockDim.y * blockDim.z) + threadLinear;
  atomicAdd(&count[idx], 1);
  if (threadLinear == 0) // blocks run in order: x fastest, then y, then z
    static_cast<int *>(args.buffers[2])[blockLinear] =
        atomicAdd(static_cast<int *>(args.buffers[3]), 1);
  int *c = coords + idx * 6;
  c[0] = blockIdx.x;
  c[1] = blockIdx.y;
  c[2] = blockIdx.z;
  c[3] = threadIdx.x;
  c[4] = threadIdx.y;
  c[5] = threadIdx.z;
}
MOE_EMU_EXPORT_KERNEL(k_grid)

template <typename T> __device__ unsigned pack2(const T &lo, const T &hi) {
  unsigned short l, h;
  memcpy(&l, &lo, 2);
  memcpy(&h, &hi, 2);
  return l | (static_cast<unsigned>(h) << 16);
}

// D = A B + C with m16n8k16 fragments built as in the PTX ISA, and again
// through ldmatrix from shared memory; each warp has its own C.
template <typename T> __device__ void mmaTest(const MoEKernelArgs &args) {
  const T *A = static_cast<const T *>(args.buffers[0]); // [16][16]
  const T *B = static_cast<const T *>(args.buffers[1]); // [16][8] (k, n)
  const float *C = static_cast<const float *>(args.buffers[2]);
  float *D = static_cast<float *>(args.buffers[3]);
  float *D2 = static_cast<float *>(args.buffers[4]);
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned g = lane >> 2, q = lane % 4;
  const float *Cw = C + warp * 128;
  unsigned a[4], b[2];
  float c[4], d[4];
  a[0] = pack2(A[g * 16 + 2 * q], A[g * 16 + 2 * q + 1]);
  a[1] = pack2(A[(g + 8) * 16 + 2 * q], A[(g + 8) * 16 + 2 * q + 1]);
  a[2] = pack2(A[g * 16 + 2 * q + 8], A[g * 16 + 2 * q + 9]);
  a[3] = pack2(A[(g + 8) * 16 + 2 * q + 8], A[(g + 8) * 16 + 2 * q + 9]);
  b[0] = pack2(B[(2 * q) * 8 + g], B[(2 * q + 1) * 8 + g]);
  b[1] = pack2(B[(2 * q + 8) * 8 + g], B[(2 * q + 9) * 8 + g]);
  c[0] = Cw[g * 8 + 2 * q];
  c[1] = Cw[g * 8 + 2 * q + 1];
  c[2] = Cw[(g + 8) * 8 + 2 * q];
  c[3] = Cw[(g + 8) * 8 + 2 * q + 1];
  moe_emu::mma_m16n8k16<T>(d, a, b, c);
  float *Dw = D + warp * 128;
  Dw[g * 8 + 2 * q] = d[0];
  Dw[g * 8 + 2 * q + 1] = d[1];
  Dw[(g + 8) * 8 + 2 * q] = d[2];
  Dw[(g + 8) * 8 + 2 * q + 1] = d[3];

  MOE_SHARED(T, As, 256);
  MOE_SHARED(T, Bs, 128);
  for (unsigned i = threadIdx.x; i < 256; i += blockDim.x)
    As[i] = A[i];
  for (unsigned i = threadIdx.x; i < 128; i += blockDim.x)
    Bs[i] = B[i];
  __syncthreads();
  unsigned a2[4], b2[2];
  moe_emu::ldmatrix_x4(a2, &As[((lane % 8) + 8 * ((lane / 8) % 2)) * 16 + 8 * (lane / 16)]);
  moe_emu::ldmatrix_x2_trans(b2, &Bs[(lane % 16) * 8]);
  float acc[4] = {c[0], c[1], c[2], c[3]};
  moe_emu::mma_m16n8k16<T>(acc, a2, b2, acc); // d aliases c
  float *D2w = D2 + warp * 128;
  D2w[g * 8 + 2 * q] = acc[0];
  D2w[g * 8 + 2 * q + 1] = acc[1];
  D2w[(g + 8) * 8 + 2 * q] = acc[2];
  D2w[(g + 8) * 8 + 2 * q + 1] = acc[3];
}
extern "C" __global__ void k_mma_bf16(MoEKernelArgs args) { mmaTest<__nv_bfloat16>(args); }
MOE_EMU_EXPORT_KERNEL(k_mma_bf16)
extern "C" __global__ void k_mma_f16(MoEKernelArgs args) { mmaTest<__half>(args); }
MOE_EMU_EXPORT_KERNEL(k_mma_f16)

extern "C" __global__ void k_mma_partial_warp(MoEKernelArgs) {
  unsigned a[4] = {}, b[2] = {};
  float c[4] = {}, d[4];
  moe_emu::mma_m16n8k16(d, a, b, c);
}
MOE_EMU_EXPORT_KERNEL(k_mma_partial_warp)

extern "C" __global__ void k_assert(MoEKernelArgs args) {
  assert(threadIdx.x != args.scalars[0]);
}
MOE_EMU_EXPORT_KERNEL(k_assert)

extern "C" __global__ void k_throw(MoEKernelArgs) {
  if (threadIdx.x == 2)
    throw std::runtime_error("boom");
}
MOE_EMU_EXPORT_KERNEL(k_throw)

// Waits for a flag that nobody sets.
extern "C" __global__ void k_spin_forever(MoEKernelArgs args) {
  int *flag = static_cast<int *>(args.buffers[0]);
  while (atomicCAS(flag, 1, 2) != 1) {
  }
}
MOE_EMU_EXPORT_KERNEL(k_spin_forever)

extern "C" __global__ void k_ldmatrix_bad(MoEKernelArgs args) {
  MOE_SHARED(__nv_bfloat16, tile, 8 * 16 + 8);
  unsigned r[4];
  const unsigned lane = threadIdx.x % 32;
  if (args.scalars[0] == 0) // global memory
    moe_emu::ldmatrix_x4(r, static_cast<const __nv_bfloat16 *>(args.buffers[0]) + lane * 8);
  else // shared, but rows 2 bytes off 16-byte alignment
    moe_emu::ldmatrix_x4(r, &tile[1 + (lane % 8) * 16]);
}
MOE_EMU_EXPORT_KERNEL(k_ldmatrix_bad)

// Cost measurements.
extern "C" __global__ void k_barriers(MoEKernelArgs args) {
  for (long long i = 0; i < args.scalars[0]; ++i)
    __syncthreads();
}
MOE_EMU_EXPORT_KERNEL(k_barriers)

extern "C" __global__ void k_shuffles(MoEKernelArgs args) {
  float v = static_cast<float>(threadIdx.x);
  for (long long i = 0; i < args.scalars[0]; ++i)
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  static_cast<float *>(args.buffers[0])[threadIdx.x] = v;
}
MOE_EMU_EXPORT_KERNEL(k_shuffles)

extern "C" __global__ void k_empty(MoEKernelArgs args) {
  if (threadIdx.x == 100000)
    static_cast<int *>(args.buffers[0])[0] = 1;
}
MOE_EMU_EXPORT_KERNEL(k_empty)
)cuda";

std::map<std::string, std::string> testHeaders() {
  return {{"helpers/test_helpers.cuh", kHelpers}};
}

class EmuModuleTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/moe-emu-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    cacheDir_ = tmpl;
    const auto before = EmuModule::stats();
    const auto start = std::chrono::steady_clock::now();
    auto m = EmuModule::compile(kSource, testHeaders(), cacheDir_);
    compileSeconds_ = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count();
    if (!m) {
      compileError_ = m.message();
      return;
    }
    compilationsDuringSetUp_ =
        EmuModule::stats().compilations - before.compilations;
    module_ = m->release();
  }
  static void TearDownTestSuite() {
    delete module_;
    module_ = nullptr;
    std::error_code ec;
    std::filesystem::remove_all(cacheDir_, ec);
  }
  void SetUp() override { ASSERT_NE(module_, nullptr) << compileError_; }

  static Status run(const std::string &kernel, MoEKernelArgs &args,
                    EmuDim3 grid, EmuDim3 block, unsigned shared = 0) {
    return module_->launch(kernel, args, grid, block, shared);
  }
  static EmuDim3 dim(unsigned x, unsigned y = 1, unsigned z = 1) {
    EmuDim3 d;
    d.x = x;
    d.y = y;
    d.z = z;
    return d;
  }

  static EmuModule *module_;
  static std::string cacheDir_, compileError_;
  static double compileSeconds_;
  static uint64_t compilationsDuringSetUp_;
};
EmuModule *EmuModuleTest::module_ = nullptr;
std::string EmuModuleTest::cacheDir_, EmuModuleTest::compileError_;
double EmuModuleTest::compileSeconds_ = 0;
uint64_t EmuModuleTest::compilationsDuringSetUp_ = 0;

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

TEST_F(EmuModuleTest, BlockReductionThroughSharedMemory) {
  for (unsigned n : {1u, 100u, 256u, 1024u}) {
    std::vector<int> out(3, 0);
    MoEKernelArgs args{};
    args.buffers[0] = out.data();
    Status s = run("k_block_reduce", args, dim(3), dim(n));
    ASSERT_TRUE(s.ok()) << s.message();
    for (int b = 0; b < 3; ++b) {
      long long expect = 0;
      for (unsigned t = 0; t < n; ++t)
        expect += b * 1000 + t + 1;
      EXPECT_EQ(out[b], expect) << "block " << b << " of " << n;
    }
  }
}

TEST_F(EmuModuleTest, ExitWhileOthersWaitAtBarrierIsADeadlock) {
  MoEKernelArgs args{};
  Status s = run("k_first_exits", args, dim(2), dim(64));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "deadlock")) << s.message();
  EXPECT_TRUE(contains(s.message(), "__syncthreads")) << s.message();
  EXPECT_TRUE(contains(s.message(), "block (0,0,0)")) << s.message();
  EXPECT_TRUE(contains(s.message(), "k_first_exits")) << s.message();
  s = run("k_last_exits", args, dim(1), dim(40));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "exited while 39 thread(s) wait"))
      << s.message();
  EXPECT_TRUE(contains(s.message(), "thread (39,0,0)")) << s.message();
  s = run("k_divergent_barrier", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "divergent barriers")) << s.message();
  // The module stays usable after failed launches.
  std::vector<int> out(1);
  args.buffers[0] = out.data();
  ASSERT_TRUE(run("k_block_reduce", args, dim(1), dim(8)).ok());
  EXPECT_EQ(out[0], 36);
}

TEST_F(EmuModuleTest, SyncthreadsCountAndOr) {
  std::vector<int> out(100, -1);
  MoEKernelArgs args{};
  args.buffers[0] = out.data();
  Status s = run("k_sync_count", args, dim(1), dim(100));
  ASSERT_TRUE(s.ok()) << s.message();
  for (int t = 0; t < 100; ++t)
    EXPECT_EQ(out[t], 34 * 1000 + 100 + 0 + 1) << t;
}

TEST_F(EmuModuleTest, ShufflesFollowPtxSemantics) {
  const unsigned n = 80;
  const int poison = static_cast<int>(0xffbadbadu);
  std::vector<std::vector<int>> out(13, std::vector<int>(n, 0));
  MoEKernelArgs args{};
  for (int k = 0; k < 13; ++k)
    args.buffers[k] = out[k].data();
  Status s = run("k_shfl", args, dim(1), dim(n));
  ASSERT_TRUE(s.ok()) << s.message();
  for (unsigned t = 0; t < n; ++t) {
    const int l = t % 32, w = t / 32, lanes = w < 2 ? 32 : 16;
    auto V = [&](int lane) {
      return lane < lanes ? (w * 32 + lane) * 3 + 1 : poison;
    };
    int sum = 0, prefix = 0;
    for (int k = 0; k < lanes; ++k)
      sum += V(k);
    for (int k = 0; k <= l; ++k)
      prefix += V(k);
    SCOPED_TRACE("thread " + std::to_string(t));
    EXPECT_EQ(out[0][t], sum);
    EXPECT_EQ(out[1][t], l + 1 <= 31 ? V(l + 1) : V(l)); // lane 15 of warp 2: poison
    EXPECT_EQ(out[2][t], l >= 2 ? V(l - 2) : V(l));
    EXPECT_EQ(out[3][t], V(5));
    EXPECT_EQ(out[4][t], V((l & ~7) + 3));
    EXPECT_EQ(out[5][t], l < 16 ? V(l) : V(l - 16)); // earlier groups only
    EXPECT_EQ(out[6][t], prefix);
    EXPECT_EQ(out[7][t], 2 * V(l ^ 1) + 1);
    EXPECT_EQ(out[8][t], l + 4 <= ((l & 24) | 7) ? V(l + 4) : V(l));
    EXPECT_EQ(out[9][t], V((l & 16) + 15));
    EXPECT_EQ(out[10][t], w < 2 ? __float_as_int(static_cast<float>(V(31)))
                                : poison);
    EXPECT_EQ(out[11][t], l + 2 <= ((l & 28) | 3) ? V(l + 2) : V(l));
    EXPECT_EQ(out[12][t], l - 3 >= (l & 24) ? V(l - 3) : V(l));
  }
  EXPECT_EQ(out[1][64 + 15], poison);
}

TEST_F(EmuModuleTest, VotesWithPartialMasks) {
  const unsigned n = 80;
  std::vector<std::vector<unsigned>> out(9, std::vector<unsigned>(n, 7));
  MoEKernelArgs args{};
  for (int k = 0; k < 9; ++k)
    args.buffers[k] = out[k].data();
  Status s = run("k_vote", args, dim(1), dim(n));
  ASSERT_TRUE(s.ok()) << s.message();
  for (unsigned t = 0; t < n; ++t) {
    const unsigned l = t % 32, w = t / 32;
    const unsigned exist = w < 2 ? 0xffffffffu : 0xffffu;
    unsigned ballot = 0;
    for (unsigned k = 0; k < 32; ++k)
      if ((exist >> k & 1) && (w * 32 + k) % 3 == 0)
        ballot |= 1u << k;
    SCOPED_TRACE("thread " + std::to_string(t));
    EXPECT_EQ(out[0][t], ballot);
    EXPECT_EQ(out[1][t], l % 2 == 0 ? 0x11111111u & exist : 0xaaaaaaaau & exist);
    EXPECT_EQ(out[2][t], 3u);
    EXPECT_EQ(out[3][t], exist);
    EXPECT_EQ(out[4][t], w < 2 ? 496u : 120u);
    EXPECT_EQ(out[5][t], (0xfu << (4 * (l / 4))) & exist);
    EXPECT_EQ(out[6][t], exist);
    EXPECT_EQ(out[7][t], 1u);
    EXPECT_EQ(static_cast<int>(out[8][t]), w < 2 ? 21 : 5);
  }
}

TEST_F(EmuModuleTest, WarpCollectiveMismatchesAreDiagnosed) {
  std::vector<float> out(64);
  MoEKernelArgs args{};
  args.buffers[0] = out.data();
  // A lane exits while earlier lanes wait for it.
  Status s = run("k_warp_exit", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "exited")) << s.message();
  EXPECT_TRUE(contains(s.message(), "__shfl_xor_sync")) << s.message();
  // Lanes arrive after one exited.
  s = run("k_warp_exit_first", args, dim(1), dim(64));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "0x00000001")) << s.message();
  EXPECT_TRUE(contains(s.message(), "already exited")) << s.message();
  // Half a warp at a shuffle, the other half at a barrier: no hang.
  s = run("k_warp_vs_barrier", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "deadlock")) << s.message();
  EXPECT_TRUE(contains(s.message(), "threads 0-15")) << s.message();
  EXPECT_TRUE(contains(s.message(), "__shfl_sync(mask 0xffffffff)"))
      << s.message();
  EXPECT_TRUE(contains(s.message(), "threads 16-31")) << s.message();
  EXPECT_TRUE(contains(s.message(), "wait at __syncthreads")) << s.message();
  s = run("k_mixed_collectives", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "deadlock")) << s.message();
  EXPECT_TRUE(contains(s.message(), "thread 0 (0,0,0) wait at __shfl_sync"))
      << s.message();
  EXPECT_TRUE(contains(s.message(), "thread 1 (1,0,0) wait at __ballot_sync"))
      << s.message();
  s = run("k_not_in_mask", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "not in its mask")) << s.message();
  s = run("k_bad_width", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "width 12")) << s.message();
  s = run("k_trap", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "__trap")) << s.message();
  EXPECT_TRUE(contains(s.message(), "thread (5,0,0)")) << s.message();
}

TEST_F(EmuModuleTest, ExceptionsAndLivelocksAreErrors) {
  MoEKernelArgs args{};
  Status s = run("k_throw", args, dim(1), dim(8));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "C++ exception escaped the kernel: boom"))
      << s.message();
  EXPECT_TRUE(contains(s.message(), "thread (2,0,0)")) << s.message();
  args.scalars[0] = 6;
  s = run("k_assert", args, dim(1), dim(8));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "assertion `threadIdx.x != args.scalars[0]' "
                                    "failed at kernel.cpp:"))
      << s.message();
  EXPECT_TRUE(contains(s.message(), "thread (6,0,0)")) << s.message();
  args.scalars[0] = 100;
  EXPECT_TRUE(run("k_assert", args, dim(1), dim(8)).ok());
  int flag = 0;
  args.buffers[0] = &flag;
  s = run("k_spin_forever", args, dim(1), dim(8));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "livelock")) << s.message();
  EXPECT_TRUE(contains(s.message(), "threads 0-7")) << s.message();
}

TEST_F(EmuModuleTest, ConcurrentLaunchesFromHostThreads) {
  std::vector<std::vector<int>> outs(4, std::vector<int>(5, 0));
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      MoEKernelArgs args{};
      args.buffers[0] = outs[i].data();
      for (int rep = 0; rep < 5 && errors[i].empty(); ++rep) {
        Status s = module_->launch("k_block_reduce", args, dim(5),
                                   dim(64 * (i + 1)));
        if (!s.ok())
          errors[i] = s.message();
      }
    });
  for (std::thread &t : threads)
    t.join();
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(errors[i], "");
    const long long n = 64 * (i + 1);
    for (int b = 0; b < 5; ++b)
      EXPECT_EQ(outs[i][b], b * 1000 * n + n * (n + 1) / 2);
  }
}

TEST_F(EmuModuleTest, AtomicsFromEveryThreadOfSeveralBlocks) {
  const int blocks = 4, threads = 96, N = blocks * threads;
  std::vector<int> ic = {0, -1, 0, 0, -1, 10000};
  float fc = 0;
  unsigned long long uc = 0;
  double dc = 0;
  std::vector<unsigned> un = {0, 1000, 0};
  std::vector<int> olds(N, -2), perBlock(blocks, 0);
  __nv_bfloat16 bc = __float2bfloat16(0.0f);
  MoEKernelArgs args{};
  args.buffers[0] = ic.data();
  args.buffers[1] = &fc;
  args.buffers[2] = &uc;
  args.buffers[3] = &dc;
  args.buffers[4] = un.data();
  args.buffers[5] = olds.data();
  args.buffers[6] = &bc;
  args.buffers[7] = perBlock.data();
  Status s = run("k_atomics", args, dim(blocks), dim(threads));
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(ic[0], N);
  EXPECT_EQ(ic[1], N - 1);
  EXPECT_EQ(ic[2], -(N - 1));
  EXPECT_EQ(ic[3], 2 * N);
  EXPECT_EQ(ic[5], 10000 - 3 * N);
  std::multiset<int> seen(olds.begin(), olds.end());
  seen.insert(ic[4]);
  std::multiset<int> expect;
  expect.insert(-1);
  for (int i = 0; i < N; ++i)
    expect.insert(i);
  EXPECT_EQ(seen, expect); // atomicExch hands every value on exactly once
  EXPECT_EQ(fc, 0.5f * N);
  EXPECT_EQ(uc, static_cast<unsigned long long>(N) << 33);
  EXPECT_EQ(dc, 0.25 * N);
  EXPECT_EQ(un[0], static_cast<unsigned>(N % 10)); // atomicInc wraps at 9
  EXPECT_EQ(un[1], 1000u - N);
  EXPECT_EQ(un[2], 0xffffffffu);
  EXPECT_EQ(__bfloat162float(bc), 256.0f); // 256 + 1 rounds to 256 in bf16
  for (int b = 0; b < blocks; ++b) // mutual exclusion held, all got in
    EXPECT_EQ(perBlock[b], 1 * 10000 + threads) << b;
}

TEST_F(EmuModuleTest, SharedMemoryIsPerBlock) {
  const unsigned blocks = 3, n = 64;
  std::vector<int> out(blocks * n * 3, 0), flags(blocks * 8, 0);
  MoEKernelArgs args{};
  args.buffers[0] = out.data();
  args.buffers[1] = flags.data();
  args.scalars[0] = n * 4;
  Status s = run("k_shared", args, dim(blocks), dim(n), n * 4);
  ASSERT_TRUE(s.ok()) << s.message();
  for (unsigned b = 0; b < blocks; ++b) {
    SCOPED_TRACE("block " + std::to_string(b));
    EXPECT_EQ(flags[b * 8 + 0], -1); // poison, not block b-1's data
    EXPECT_EQ(static_cast<unsigned>(flags[b * 8 + 1]), 0xffffffffu);
    for (int k = 2; k < 8; ++k)
      EXPECT_EQ(flags[b * 8 + k], 1) << "flag " << k;
    for (unsigned t = 0; t < n; ++t) {
      EXPECT_EQ(out[(b * n + t) * 3 + 0], static_cast<int>(b * 100 + (t + 1) % n));
      EXPECT_EQ(out[(b * n + t) * 3 + 1], static_cast<int>((t + 5) % n));
      EXPECT_EQ(out[(b * n + t) * 3 + 2], static_cast<int>(2016 + 64 * b));
    }
  }
  // Static plus dynamic shared memory beyond 227 KiB is an error.
  std::vector<int> one(1, 0);
  args.buffers[0] = one.data();
  s = run("k_shared_big", args, dim(1), dim(32), 40000);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "shared memory overflow")) << s.message();
  s = run("k_shared_big", args, dim(1), dim(32), 0);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(one[0], 1);
}

TEST_F(EmuModuleTest, GridCoversEveryThreadOnce) {
  const EmuDim3 grid = dim(3, 2, 2), block = dim(4, 3, 2);
  const unsigned total = 3 * 2 * 2 * 4 * 3 * 2;
  std::vector<int> count(total, 0), coords(total * 6, -1), order(12, -1);
  int ticket = 0;
  MoEKernelArgs args{};
  args.buffers[0] = count.data();
  args.buffers[1] = coords.data();
  args.buffers[2] = order.data();
  args.buffers[3] = &ticket;
  Status s = run("k_grid", args, grid, block);
  ASSERT_TRUE(s.ok()) << s.message();
  for (int b = 0; b < 12; ++b)
    EXPECT_EQ(order[b], b);
  for (unsigned i = 0; i < total; ++i) {
    ASSERT_EQ(count[i], 1) << i;
    const int *c = &coords[i * 6];
    unsigned blockLinear = (c[2] * 2 + c[1]) * 3 + c[0];
    unsigned threadLinear = (c[5] * 3 + c[4]) * 4 + c[3];
    EXPECT_EQ(blockLinear * 24 + threadLinear, i);
    EXPECT_TRUE(c[0] < 3 && c[1] < 2 && c[2] < 2 && c[3] < 4 && c[4] < 3 &&
                c[5] < 2);
  }
}

/// Small integers, exact in bf16/f16 and in every f32 sum.
float smallInt(unsigned i, unsigned salt) {
  return static_cast<float>(static_cast<int>((i * 7919u + salt * 104729u) % 9u) - 4);
}

template <typename T>
void checkMma(const EmuModule &module, const std::string &kernel) {
  std::vector<T> A(256), B(128);
  std::vector<float> Af(256), Bf(128), C(256), D(256, -1), D2(256, -1);
  for (unsigned i = 0; i < 256; ++i) {
    Af[i] = smallInt(i, 1);
    A[i] = T(Af[i]);
  }
  for (unsigned i = 0; i < 128; ++i) {
    Bf[i] = smallInt(i, 2);
    B[i] = T(Bf[i]);
  }
  for (unsigned i = 0; i < 256; ++i)
    C[i] = smallInt(i, 3) + (i >= 128 ? 1000.0f : 0.0f);
  auto product = [&](bool transposeA, int warp) {
    std::vector<float> R(128);
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) {
        float acc = C[warp * 128 + m * 8 + n];
        for (int k = 0; k < 16; ++k)
          acc += (transposeA ? Af[k * 16 + m] : Af[m * 16 + k]) * Bf[k * 8 + n];
        R[m * 8 + n] = acc;
      }
    return R;
  };
  // The data tells a transposed layout apart.
  ASSERT_NE(product(false, 0), product(true, 0));
  MoEKernelArgs args{};
  args.buffers[0] = A.data();
  args.buffers[1] = B.data();
  args.buffers[2] = C.data();
  args.buffers[3] = D.data();
  args.buffers[4] = D2.data();
  Status s = module.launch(kernel, args, EmuDim3{1, 1, 1}, EmuDim3{64, 1, 1});
  ASSERT_TRUE(s.ok()) << s.message();
  for (int w = 0; w < 2; ++w) {
    std::vector<float> expect = product(false, w);
    std::vector<float> got(D.begin() + w * 128, D.begin() + (w + 1) * 128);
    std::vector<float> got2(D2.begin() + w * 128, D2.begin() + (w + 1) * 128);
    EXPECT_EQ(got, expect) << kernel << " warp " << w;
    EXPECT_EQ(got2, expect) << kernel << " (ldmatrix) warp " << w;
  }
}

TEST_F(EmuModuleTest, MmaBf16MatchesScalarMatmul) {
  checkMma<__nv_bfloat16>(*module_, "k_mma_bf16");
}

TEST_F(EmuModuleTest, MmaF16MatchesScalarMatmul) {
  checkMma<__half>(*module_, "k_mma_f16");
}

TEST_F(EmuModuleTest, MmaNeedsAFullWarp) {
  MoEKernelArgs args{};
  Status s = run("k_mma_partial_warp", args, dim(1), dim(48));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "needs all 32 lanes")) << s.message();
}

TEST_F(EmuModuleTest, LdmatrixNeedsAlignedSharedRows) {
  std::vector<__nv_bfloat16> global(32 * 8);
  MoEKernelArgs args{};
  args.buffers[0] = global.data();
  args.scalars[0] = 0;
  Status s = run("k_ldmatrix_bad", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "not in the block's shared memory"))
      << s.message();
  args.scalars[0] = 1;
  s = run("k_ldmatrix_bad", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "not 16-byte aligned")) << s.message();
}

TEST_F(EmuModuleTest, LaunchErrors) {
  MoEKernelArgs args{};
  Status s = run("no_such_kernel", args, dim(1), dim(32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "moe_emu_launch_no_such_kernel"))
      << s.message();
  s = run("k_empty", args, dim(1), dim(64, 32));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "2048 threads, over the limit of 1024"))
      << s.message();
  s = run("k_empty", args, dim(1), dim(32), 1u << 20);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "dynamic shared memory")) << s.message();
}

TEST_F(EmuModuleTest, SecondCompileIsACacheHit) {
  EXPECT_EQ(compilationsDuringSetUp_, 1u);
  EXPECT_FALSE(module_->cacheHit());
  const auto before = EmuModule::stats();
  const auto start = std::chrono::steady_clock::now();
  auto again = EmuModule::compile(kSource, testHeaders(), cacheDir_);
  const double seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - start)
                             .count();
  ASSERT_TRUE(again.ok()) << again.message();
  const auto after = EmuModule::stats();
  EXPECT_EQ(after.compilations, before.compilations); // no compiler run
  EXPECT_EQ(after.cacheHits, before.cacheHits + 1);
  EXPECT_TRUE((*again)->cacheHit());
  EXPECT_EQ((*again)->key(), module_->key());
  EXPECT_EQ((*again)->libraryPath(), module_->libraryPath());
  EXPECT_LT(seconds, compileSeconds_);
  EXPECT_EQ((*again)->libraryPath(), cacheDir_ + "/emu/" + module_->key() + ".so");
  // The cached module runs too.
  std::vector<int> out(1);
  MoEKernelArgs args{};
  args.buffers[0] = out.data();
  ASSERT_TRUE((*again)->launch("k_block_reduce", args, dim(1), dim(4)).ok());
  EXPECT_EQ(out[0], 10);
  std::printf("[ emu      ] first compile %.2f s, cache hit %.4f s\n",
              compileSeconds_, seconds);
}

TEST_F(EmuModuleTest, CompileErrorsCarryTheCompilerMessage) {
  const auto before = EmuModule::stats();
  auto m = EmuModule::compile(
      "#include \"moe_emu.h\"\n"
      "extern \"C\" __global__ void k(int) { undeclared_identifier_xyz = 1; }\n",
      {}, cacheDir_);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(contains(m.message(), "undeclared_identifier_xyz")) << m.message();
  EXPECT_TRUE(contains(m.message(), "host compiler failed")) << m.message();
  EXPECT_TRUE(contains(m.message(), "-DMOE_EMU")) << m.message();
  EXPECT_EQ(EmuModule::stats().compilations, before.compilations + 1);
  // Header names must stay inside the include folder; no compiler runs.
  auto bad = EmuModule::compile("int x;", {{"../evil.h", ""}}, cacheDir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(contains(bad.message(), "invalid header name")) << bad.message();
  EXPECT_EQ(EmuModule::stats().compilations, before.compilations + 1);
}

TEST_F(EmuModuleTest, EmbeddedHeaders) {
  const auto &h = EmuModule::embeddedHeaders();
  ASSERT_TRUE(h.count("moe_emu.h"));
  ASSERT_TRUE(h.count("moe_emu_runtime.h"));
  ASSERT_TRUE(h.count("moe_emu_types.h"));
  ASSERT_TRUE(h.count("moe/runtime/KernelABI.h"));
  EXPECT_TRUE(contains(h.at("moe_emu_runtime.h"), "MOE_EMU_EXPORT_KERNEL"));
}

/// Costs, printed for the record (generous bounds only).
TEST_F(EmuModuleTest, SchedulingCost) {
  using Clock = std::chrono::steady_clock;
  MoEKernelArgs args{};
  std::vector<float> sink(1024);
  args.buffers[0] = sink.data();
  // Barriers: each is one switch out of and back into every thread.
  const long long rounds = 200;
  args.scalars[0] = rounds;
  auto t0 = Clock::now();
  ASSERT_TRUE(run("k_barriers", args, dim(1), dim(1024)).ok());
  double barrierSeconds = std::chrono::duration<double>(Clock::now() - t0).count();
  args.scalars[0] = 0;
  t0 = Clock::now();
  ASSERT_TRUE(run("k_barriers", args, dim(1), dim(1024)).ok());
  double base = std::chrono::duration<double>(Clock::now() - t0).count();
  const double perSwitch = (barrierSeconds - base) / (rounds * 1024.0);
  // Shuffles.
  args.scalars[0] = rounds;
  t0 = Clock::now();
  ASSERT_TRUE(run("k_shuffles", args, dim(1), dim(1024)).ok());
  const double perShuffle =
      (std::chrono::duration<double>(Clock::now() - t0).count() - base) /
      (rounds * 1024.0);
  // Fibers: many blocks of an empty kernel.
  t0 = Clock::now();
  ASSERT_TRUE(run("k_empty", args, dim(2000), dim(256)).ok());
  const double emptySeconds =
      std::chrono::duration<double>(Clock::now() - t0).count();
  const double fibersPerSecond = 2000.0 * 256 / emptySeconds;
  std::printf("[ emu      ] __syncthreads: %.1f ns per thread switch; "
              "__shfl_xor_sync: %.1f ns per lane; %.2f M fibers/s "
              "(2000 blocks x 256 threads in %.3f s)\n",
              perSwitch * 1e9, perShuffle * 1e9, fibersPerSecond / 1e6,
              emptySeconds);
  RecordProperty("ns_per_barrier_switch", std::to_string(perSwitch * 1e9));
  RecordProperty("fibers_per_second", std::to_string(fibersPerSecond));
  EXPECT_LT(perSwitch, 20e-6);
  EXPECT_GT(fibersPerSecond, 1e4);
}

} // namespace

//===----------------------------------------------------------------------===//
// Kernel building blocks of runtime/kernels on the emulation
//===----------------------------------------------------------------------===//

/// moe_k::route::planDispatch against a sequential stable counting sort:
/// the block-parallel plan must be exactly the walk over the slots in
/// order, for few and many slots, empty and out-of-range ids, experts that
/// get no slot or every slot, and the one-thread path of large E.
const char *kPlanSource = R"cuda(
#include "moe_route.cuh"
#define PLAN_KERNEL(E, K)                                                    \
  extern "C" __global__ void k_plan_##E##_##K(MoEKernelArgs args) {          \
    moe_k::route::planDispatch<E, K, 4>(                                     \
        static_cast<const int *>(args.buffers[0]), args.num_tokens,          \
        static_cast<int *>(args.buffers[1]),                                 \
        static_cast<int *>(args.buffers[2]),                                 \
        static_cast<int *>(args.buffers[3]),                                 \
        static_cast<int *>(args.buffers[4]));                                \
  }                                                                          \
  MOE_EMU_EXPORT_KERNEL(k_plan_##E##_##K)
PLAN_KERNEL(8, 2)
PLAN_KERNEL(64, 8)
PLAN_KERNEL(256, 8)
PLAN_KERNEL(2048, 1)
)cuda";

TEST(EmuKernels, PlanDispatchIsTheSequentialStableSort) {
  char tmpl[] = "/tmp/moe-emu-plan-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string cacheDir = tmpl;
  auto module = EmuModule::compile(kPlanSource, moe::kernelHeaders(), cacheDir);
  ASSERT_TRUE(module.ok()) << module.message();
  std::mt19937 rng(7);
  struct Case {
    int E, K;
  };
  for (Case c : {Case{8, 2}, Case{64, 8}, Case{256, 8}, Case{2048, 1}}) {
    for (long long T : {1LL, 7LL, 64LL, 300LL, 2048LL}) {
      for (int pattern = 0; pattern < 3; ++pattern) {
        const long long n = T * c.K;
        std::vector<int> ids(n);
        for (long long s = 0; s < n; ++s) {
          int r = static_cast<int>(rng() % 100);
          // 0: random experts with empty (-1) and out-of-range slots;
          // 1: every slot on one expert; 2: few experts, most get none.
          ids[s] = pattern == 0   ? (r < 5    ? -1
                                     : r < 7  ? c.E + r
                                              : static_cast<int>(rng() % c.E))
                   : pattern == 1 ? c.E - 1
                                  : static_cast<int>(rng() % 3) * (c.E / 3);
        }
        std::vector<int> counts(c.E, -7), offsets(c.E + 1, -7), rows(n, -7),
            slotRow(n, -7);
        MoEKernelArgs args;
        std::memset(&args, 0, sizeof args);
        args.buffers[0] = ids.data();
        args.buffers[1] = counts.data();
        args.buffers[2] = offsets.data();
        args.buffers[3] = rows.data();
        args.buffers[4] = slotRow.data();
        args.num_tokens = T;
        EmuDim3 grid{1, 1, 1}, block{128, 1, 1};
        std::string kernel =
            "k_plan_" + std::to_string(c.E) + "_" + std::to_string(c.K);
        Status s = (*module)->launch(kernel, args, grid, block);
        ASSERT_TRUE(s.ok()) << kernel << ": " << s.message();

        // The sequential plan.
        std::vector<int> wantCounts(c.E, 0), wantOffsets(c.E + 1, 0),
            wantSlotRow(n, -1), wantRows;
        for (int e : ids)
          if (e >= 0 && e < c.E)
            ++wantCounts[e];
        for (int e = 0; e < c.E; ++e)
          wantOffsets[e + 1] = wantOffsets[e] + wantCounts[e];
        std::vector<int> cursor(wantOffsets.begin(), wantOffsets.end() - 1);
        wantRows.assign(wantOffsets[c.E], -7);
        for (long long s2 = 0; s2 < n; ++s2)
          if (ids[s2] >= 0 && ids[s2] < c.E) {
            wantSlotRow[s2] = cursor[ids[s2]];
            wantRows[cursor[ids[s2]]++] = static_cast<int>(s2);
          }
        std::string where = kernel + " T=" + std::to_string(T) +
                            " pattern " + std::to_string(pattern);
        EXPECT_EQ(counts, wantCounts) << where;
        EXPECT_EQ(offsets, wantOffsets) << where;
        EXPECT_EQ(slotRow, wantSlotRow) << where;
        rows.resize(wantRows.size());
        EXPECT_EQ(rows, wantRows) << where;
      }
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(cacheDir, ec);
}

namespace {
//===----------------------------------------------------------------------===//
// Quantized weight codes (moe_quant.cuh)
//===----------------------------------------------------------------------===//

/// Thread c decodes code c (E4M3FN, E2M1 of its low nibble, E8M0), and the
/// values of a 16-byte word whose bytes are c, c + 1, ... through wordCode
/// (FP8: 16 values; FP4: 32, low nibble first).
const char *kQuantSource = R"cuda(
#include "moe_quant.cuh"
extern "C" __global__ void k_quant_decode(MoEKernelArgs args) {
  float *out = static_cast<float *>(args.buffers[0]);
  const unsigned c = threadIdx.x;
  out[c] = moe_k::quant::decodeE4M3FN(c);
  out[256 + c] = moe_k::quant::decodeE2M1(c & 15u);
  out[512 + c] = moe_k::quant::decodeE8M0(c);
  unsigned b[4];
  for (int i = 0; i < 4; ++i)
    b[i] = ((c + 4 * i) & 255u) | (((c + 4 * i + 1) & 255u) << 8) |
           (((c + 4 * i + 2) & 255u) << 16) | (((c + 4 * i + 3) & 255u) << 24);
  const uint4 word = make_uint4(b[0], b[1], b[2], b[3]);
  for (int j = 0; j < 16; ++j)
    out[768 + c * 48 + j] = moe_k::quant::wordCode<1>(word, j);
  for (int j = 0; j < 32; ++j)
    out[768 + c * 48 + 16 + j] = moe_k::quant::wordCode<2>(word, j);
  // The encoder: every code's value, the midpoint above it (positive finite
  // codes below 448), and past the range.
  float *enc = out + 768 + 256 * 48;
  using moe_k::quant::decodeE4M3FN;
  using moe_k::quant::encodeE4M3FN;
  enc[c] = static_cast<float>(encodeE4M3FN(decodeE4M3FN(c)));
  if (c < 0x7Eu)
    enc[256 + c] = static_cast<float>(
        encodeE4M3FN((decodeE4M3FN(c) + decodeE4M3FN(c + 1)) * 0.5f));
  if (c == 0) {
    enc[512] = static_cast<float>(encodeE4M3FN(1000.0f));
    enc[513] = static_cast<float>(encodeE4M3FN(-__int_as_float(0x7f800000)));
    enc[514] = static_cast<float>(encodeE4M3FN(__int_as_float(0x7fc00000)));
    enc[515] = static_cast<float>(encodeE4M3FN(464.0f));
  }
}
MOE_EMU_EXPORT_KERNEL(k_quant_decode)
)cuda";

/// Equal values, or both NaN.
bool sameValue(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) ||
         (a == b && std::signbit(a) == std::signbit(b));
}

} // namespace

// The kernels' decoders give the reference executor's value for every code
// (QuantDecode.h; NaN codes NaN, signed zeros kept), and a 16-byte word's
// codes come out in memory order (FP4: low nibble first).
TEST(EmuKernels, QuantDecodersMatchTheReference) {
  char tmpl[] = "/tmp/moe-emu-quant-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string cacheDir = tmpl;
  auto module =
      EmuModule::compile(kQuantSource, moe::kernelHeaders(), cacheDir);
  ASSERT_TRUE(module.ok()) << module.message();
  std::vector<float> out(768 + 256 * 48 + 516, -7.0f);
  MoEKernelArgs args;
  std::memset(&args, 0, sizeof args);
  args.buffers[0] = out.data();
  Status s = (*module)->launch("k_quant_decode", args, EmuDim3{1, 1, 1},
                               EmuDim3{256, 1, 1});
  ASSERT_TRUE(s.ok()) << s.message();
  int nan8 = 0, nanE8 = 0;
  for (unsigned c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    EXPECT_TRUE(sameValue(out[c], moe::quant::decodeE4M3FN(code)))
        << "E4M3FN code " << c << ": " << out[c];
    EXPECT_TRUE(sameValue(out[256 + c], moe::quant::decodeE2M1(code & 15)))
        << "E2M1 code " << (c & 15) << ": " << out[256 + c];
    EXPECT_TRUE(sameValue(out[512 + c], moe::quant::decodeE8M0(code)))
        << "E8M0 code " << c << ": " << out[512 + c];
    nan8 += std::isnan(out[c]);
    nanE8 += std::isnan(out[512 + c]);
    uint8_t bytes[16];
    for (int i = 0; i < 16; ++i)
      bytes[i] = static_cast<uint8_t>((c + i) & 255u);
    for (int j = 0; j < 16; ++j)
      EXPECT_TRUE(sameValue(out[768 + c * 48 + j],
                            moe::quant::decodeE4M3FN(bytes[j])))
          << "word " << c << " FP8 value " << j;
    for (int j = 0; j < 32; ++j)
      EXPECT_TRUE(sameValue(out[768 + c * 48 + 16 + j],
                            moe::quant::decodePackedE2M1(bytes, j)))
          << "word " << c << " FP4 value " << j;
  }
  // encodeE4M3FN: each finite code's value gives the code back (-0 too),
  // a midpoint the even one of its two codes; saturation at +-448 (0x7E),
  // NaN to the NaN code.
  const float *enc = out.data() + 768 + 256 * 48;
  for (unsigned c = 0; c < 256; ++c) {
    if ((c & 0x7Fu) != 0x7Fu)
      EXPECT_EQ(enc[c], static_cast<float>(c)) << "E4M3FN code " << c;
    if (c < 0x7Eu)
      EXPECT_EQ(enc[256 + c], static_cast<float>(c % 2 ? c + 1 : c))
          << "midpoint above E4M3FN code " << c;
  }
  EXPECT_EQ(enc[512], static_cast<float>(0x7E));
  EXPECT_EQ(enc[513], static_cast<float>(0xFE));
  EXPECT_EQ(enc[514], static_cast<float>(0x7F));
  EXPECT_EQ(enc[515], static_cast<float>(0x7E));
  EXPECT_EQ(nan8, 2);  // S.1111.111
  EXPECT_EQ(nanE8, 1); // 0xFF
  EXPECT_EQ(out[512], std::ldexp(1.0f, -127)); // E8M0 0: a subnormal
  std::error_code ec;
  std::filesystem::remove_all(cacheDir, ec);
}
