//===- EmuAsyncTest.cpp - cp.async and mbarriers on the CPU emulation -----===//
//
// Part of moe-opt. Tests of runtime/emu/moe_emu_async.h: kernels written as
// CUDA C++ source strings, compiled through EmuModule and launched. They
// check when copies land (only at the wait that covers them, never at a
// barrier), that a kernel which forgets a wait computes poison, the phases
// of mbarriers, bulk copies that complete on one, and the errors.
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
#include <string>
#include <vector>

using moe::runtime::EmuModule;
using moe::runtime::Status;

namespace {

const char *kSource = R"cuda(
#include "moe_emu.h"
#include "moe/runtime/KernelABI.h"
#include "moe_async.cuh"

// All-ones bytes: the emulation's poison for memory not yet written.
__device__ bool poisoned(const unsigned char *p, int n) {
  for (int i = 0; i < n; ++i)
    if (p[i] != 0xff)
      return false;
  return true;
}

// Thread t copies src[t] (16 bytes) to buf[t]. flags[t * 4 + i]: i = 0,
// buf[t] is poison right after the copy; 1, buf[t ^ 1] is still poison
// after a barrier without a wait; 2, after wait_group 0 and a barrier,
// buf[t ^ 1] holds the data.
extern "C" __global__ void k_cp_async_lands_at_wait(MoEKernelArgs args) {
  const uint4 *src = static_cast<const uint4 *>(args.buffers[0]);
  int *flags = static_cast<int *>(args.buffers[1]);
  MOE_SHARED(uint4, buf, 64);
  const unsigned t = threadIdx.x;
  buf[t] = make_uint4(1, 2, 3, 4);
  __syncthreads();
  moe_emu::cp_async(&buf[t], &src[t], 16, 16);
  moe_emu::cp_async_commit_group();
  flags[t * 4 + 0] = poisoned(reinterpret_cast<unsigned char *>(&buf[t]), 16);
  __syncthreads();
  flags[t * 4 + 1] =
      poisoned(reinterpret_cast<unsigned char *>(&buf[t ^ 1]), 16);
  __syncthreads();
  moe_emu::cp_async_wait_group(0);
  __syncthreads();
  flags[t * 4 + 2] = memcmp(&buf[t ^ 1], &src[t ^ 1], 16) == 0;
}
MOE_EMU_EXPORT_KERNEL(k_cp_async_lands_at_wait)

// Groups complete oldest first; a source size below the copy size
// zero-fills. out: 4 words per thread.
extern "C" __global__ void k_cp_async_groups(MoEKernelArgs args) {
  const unsigned *src = static_cast<const unsigned *>(args.buffers[0]);
  unsigned *out = static_cast<unsigned *>(args.buffers[1]);
  MOE_SHARED(uint4, a, 32);
  MOE_SHARED(uint4, b, 32);
  const unsigned t = threadIdx.x;
  moe_emu::cp_async(&a[t], src + 4 * t, 16, 16);
  moe_emu::cp_async_commit_group();
  moe_emu::cp_async(&b[t], src + 4 * t, 16, 6); // 6 bytes, then zeros
  moe_emu::cp_async_commit_group();
  moe_emu::cp_async_wait_group(1); // a's group, not b's
  out[4 * t + 0] = memcmp(&a[t], src + 4 * t, 16) == 0;
  out[4 * t + 1] = poisoned(reinterpret_cast<unsigned char *>(&b[t]), 16);
  moe_emu::cp_async_wait_group(0);
  unsigned expect[4] = {src[4 * t], src[4 * t + 1] & 0xffffu, 0, 0};
  out[4 * t + 2] = memcmp(&b[t], expect, 16) == 0;
  // moe_k::async (the kernels' wrappers) are the same operations.
  moe_k::async::copy16(&a[t], src + 4 * ((t + 1) % 32));
  moe_k::async::commit();
  moe_k::async::wait<0>();
  out[4 * t + 3] = memcmp(&a[t], src + 4 * ((t + 1) % 32), 16) == 0;
}
MOE_EMU_EXPORT_KERNEL(k_cp_async_groups)

// A double-buffered sum of n rows of 32 floats: row i is copied with
// cp.async into stage i % 2 while row i - 1 is added. scalars[1] = 1 skips
// the wait (the bug this emulation must expose).
extern "C" __global__ void k_double_buffered_sum(MoEKernelArgs args) {
  const float *rows = static_cast<const float *>(args.buffers[0]);
  float *out = static_cast<float *>(args.buffers[1]);
  const int n = static_cast<int>(args.scalars[0]);
  const bool forget = args.scalars[1] != 0;
  MOE_SHARED(float, stage, 2 * 32);
  const unsigned t = threadIdx.x; // 8 threads, 16 bytes each
  float acc = 0.0f;
  moe_emu::cp_async(&stage[4 * t], rows + 4 * t, 16, 16);
  moe_emu::cp_async_commit_group();
  for (int i = 0; i < n; ++i) {
    if (i + 1 < n)
      moe_emu::cp_async(&stage[((i + 1) % 2) * 32 + 4 * t],
                        rows + (i + 1) * 32 + 4 * t, 16, 16);
    moe_emu::cp_async_commit_group();
    if (!forget)
      moe_emu::cp_async_wait_group(1);
    __syncthreads();
    for (int j = 0; j < 4; ++j)
      acc += stage[(i % 2) * 32 + ((4 * t + 8 * j) % 32)];
    __syncthreads();
  }
  out[t] = acc;
}
MOE_EMU_EXPORT_KERNEL(k_double_buffered_sum)

// mbarrier phases. Phase 0: every thread arrives. Phase 1: thread 0
// expects 512 bytes and arrives, the others arrive, thread 0 issues a bulk
// copy of 512 bytes that completes the transactions. flags[t * 4 + i]:
// 0, try_wait(parity 0) was false before this thread arrived; 1, the
// arrive returned phase 0; 2, the bulk copy's destination was poison until
// the wait; 3, it holds the data after.
extern "C" __global__ void k_mbarrier_phases(MoEKernelArgs args) {
  const unsigned char *src = static_cast<const unsigned char *>(args.buffers[0]);
  int *flags = static_cast<int *>(args.buffers[1]);
  MOE_SHARED(uint64_t, bar, 1);
  MOE_SHARED(uint4, dst, 32);
  const unsigned t = threadIdx.x;
  if (t == 0)
    moe_emu::mbarrier_init(bar, blockDim.x);
  __syncthreads();
  flags[t * 4 + 0] = !moe_emu::mbarrier_try_wait_parity(bar, 0);
  flags[t * 4 + 1] = moe_emu::mbarrier_arrive(bar) == 0;
  moe_emu::mbarrier_wait_parity(bar, 0);
  if (t == 0) {
    moe_emu::mbarrier_arrive_expect_tx(bar, 512);
    moe_emu::cp_async_bulk(dst, src, 512, bar);
  } else {
    moe_emu::mbarrier_arrive(bar);
  }
  const bool before =
      poisoned(reinterpret_cast<unsigned char *>(dst), 512);
  moe_emu::mbarrier_wait_parity(bar, 1);
  flags[t * 4 + 2] = t == 0 ? before : 1;
  flags[t * 4 + 3] = memcmp(dst, src, 512) == 0;
}
MOE_EMU_EXPORT_KERNEL(k_mbarrier_phases)

// Misuse, chosen by scalars[0].
extern "C" __global__ void k_async_errors(MoEKernelArgs args) {
  MOE_SHARED(uint64_t, bar, 2);
  MOE_SHARED(uint4, buf, 4);
  const unsigned char *g = static_cast<const unsigned char *>(args.buffers[0]);
  switch (args.scalars[0]) {
  case 0: // an mbarrier that was never initialised
    moe_emu::mbarrier_arrive(&bar[0]);
    break;
  case 1: // more arrivals than its count in a phase (waiting for bytes)
    moe_emu::mbarrier_init(&bar[0], 1);
    moe_emu::mbarrier_arrive_expect_tx(&bar[0], 16);
    moe_emu::mbarrier_arrive(&bar[0]);
    break;
  case 2: // a destination outside shared memory
    moe_emu::cp_async(const_cast<unsigned char *>(g), g, 16, 16);
    break;
  case 3: // a misaligned global source
    moe_emu::cp_async(&buf[0], g + 4, 16, 16);
    break;
  case 4: // a phase that never completes (count 2, one arrival)
    moe_emu::mbarrier_init(&bar[1], 2);
    moe_emu::mbarrier_arrive(&bar[1]);
    moe_emu::mbarrier_wait_parity(&bar[1], 0);
    break;
  }
}
MOE_EMU_EXPORT_KERNEL(k_async_errors)
)cuda";

struct EmuAsyncTestSource {
  static inline const char *const kText = kSource;
  static constexpr const char *kName = "emu-async-test";
};

class EmuAsyncTest : public moe::test::EmuKernelFixture<EmuAsyncTestSource> {
protected:

  static Status run(const std::string &kernel, MoEKernelArgs &args,
                    unsigned threads) {
    return launch(kernel, args, threads);
  }

};

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

TEST_F(EmuAsyncTest, CpAsyncLandsAtTheWaitNotAtABarrier) {
  std::vector<uint32_t> src(64 * 4);
  for (size_t i = 0; i < src.size(); ++i)
    src[i] = static_cast<uint32_t>(i * 2654435761u);
  std::vector<int> flags(64 * 4, -1);
  MoEKernelArgs args{};
  args.buffers[0] = src.data();
  args.buffers[1] = flags.data();
  Status s = run("k_cp_async_lands_at_wait", args, 64);
  ASSERT_TRUE(s.ok()) << s.message();
  for (int t = 0; t < 64; ++t) {
    EXPECT_EQ(flags[t * 4 + 0], 1) << "thread " << t;
    EXPECT_EQ(flags[t * 4 + 1], 1) << "thread " << t;
    EXPECT_EQ(flags[t * 4 + 2], 1) << "thread " << t;
  }
}

TEST_F(EmuAsyncTest, GroupsCompleteOldestFirstAndZeroFill) {
  std::vector<uint32_t> src(32 * 4);
  for (size_t i = 0; i < src.size(); ++i)
    src[i] = 0x01020304u + static_cast<uint32_t>(i) * 0x01010101u;
  std::vector<uint32_t> out(32 * 4, 7);
  MoEKernelArgs args{};
  args.buffers[0] = src.data();
  args.buffers[1] = out.data();
  Status s = run("k_cp_async_groups", args, 32);
  ASSERT_TRUE(s.ok()) << s.message();
  for (int t = 0; t < 32; ++t)
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(out[t * 4 + i], 1u) << "thread " << t << " check " << i;
}

TEST_F(EmuAsyncTest, AForgottenWaitComputesPoison) {
  const int n = 5;
  std::vector<float> rows(n * 32);
  for (int i = 0; i < n * 32; ++i)
    rows[i] = static_cast<float>(i % 7) - 2.0f;
  for (int forget : {0, 1}) {
    std::vector<float> out(8, 0.0f);
    MoEKernelArgs args{};
    args.buffers[0] = rows.data();
    args.buffers[1] = out.data();
    args.scalars[0] = n;
    args.scalars[1] = forget;
    Status s = run("k_double_buffered_sum", args, 8);
    ASSERT_TRUE(s.ok()) << s.message();
    for (int t = 0; t < 8; ++t) {
      float expect = 0.0f;
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < 4; ++j)
          expect += rows[i * 32 + (4 * t + 8 * j) % 32];
      if (forget)
        EXPECT_TRUE(std::isnan(out[t])) << "thread " << t << ": " << out[t];
      else
        EXPECT_EQ(out[t], expect) << "thread " << t;
    }
  }
}

TEST_F(EmuAsyncTest, MBarrierPhasesAndBulkCopies) {
  std::vector<unsigned char> src(512);
  for (int i = 0; i < 512; ++i)
    src[i] = static_cast<unsigned char>(i * 7 + 1);
  std::vector<int> flags(96 * 4, -1);
  MoEKernelArgs args{};
  args.buffers[0] = src.data();
  args.buffers[1] = flags.data();
  Status s = run("k_mbarrier_phases", args, 96);
  ASSERT_TRUE(s.ok()) << s.message();
  for (int t = 0; t < 96; ++t)
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(flags[t * 4 + i], 1) << "thread " << t << " check " << i;
}

TEST_F(EmuAsyncTest, MisuseIsALaunchError) {
  alignas(16) unsigned char global[64] = {};
  const char *expect[] = {
      "was not initialised", "more arrivals than the mbarrier's count 1",
      "is not in the block's shared memory", "is not 16-byte aligned",
      "livelock"};
  for (int which = 0; which < 5; ++which) {
    MoEKernelArgs args{};
    args.buffers[0] = global;
    args.scalars[0] = which;
    Status s = run("k_async_errors", args, which == 4 ? 1 : 32);
    ASSERT_FALSE(s.ok()) << which;
    EXPECT_TRUE(contains(s.message(), expect[which]))
        << which << ": " << s.message();
  }
}

} // namespace
