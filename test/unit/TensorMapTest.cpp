//===- TensorMapTest.cpp - Tensor maps and emulated TMA copies ------------===//
//
// Part of moe-opt. The runtime's tensor-map encoder (TensorMap.h: the
// driver's rules, the emulation's layout) and the CPU emulation of
// cp.async.bulk.tensor.2d (moe_emu_async.h, through moe_tma.cuh): every
// swizzle mode against an index formula of its own, boxes across the
// matrix's edges (zero fill), transaction bytes on the mbarrier, misuse;
// the CUDA path's call of cuTensorMapEncodeTiled through a stand-in driver.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/CudaApi.h"
#include "moe/runtime/EmuModule.h"
#include "moe/runtime/KernelABI.h"
#include "moe/runtime/KernelHeaders.h"
#include "moe/runtime/TensorMap.h"

#include "EmuKernelFixture.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

using moe::ElementType;
using moe::TensorMapDesc;
using moe::TensorMapSwizzle;
using moe::runtime::EmuModule;
using moe::runtime::Status;

namespace {

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

alignas(64) unsigned char gMatrix[64 * 1024];

TensorMapDesc validDesc() {
  TensorMapDesc d;
  d.address = gMatrix;
  d.type = ElementType::BF16;
  d.rows = 40;
  d.cols = 72;
  d.rowStrideBytes = 160;
  d.boxRows = 16;
  d.boxCols = 64;
  d.swizzle = TensorMapSwizzle::B128;
  d.name = "w";
  return d;
}

TEST(TensorMapEncode, RefusesWhatTheDriverRefuses) {
  struct Case {
    void (*edit)(TensorMapDesc &);
    const char *expect;
  } cases[] = {
      {[](TensorMapDesc &d) { d.address = gMatrix + 8; },
       "address is not 16-byte aligned"},
      {[](TensorMapDesc &d) { d.rowStrideBytes = 152; },
       "row stride 152 bytes is not a multiple of 16"},
      {[](TensorMapDesc &d) { d.rowStrideBytes = 128; },
       "is less than a row of 144 bytes"},
      {[](TensorMapDesc &d) { d.boxRows = 257; }, "box rows 257"},
      {[](TensorMapDesc &d) { d.boxCols = 0; }, "box columns 0"},
      {[](TensorMapDesc &d) { d.boxCols = 12; },
       "(24) are not a multiple of 16 bytes"},
      {[](TensorMapDesc &d) { d.swizzle = TensorMapSwizzle::B64; },
       "128 bytes exceed the 64-byte span of the swizzle"},
      {[](TensorMapDesc &d) { d.rows = 0; }, "rows 0 are not in [1, 2^32]"},
      {[](TensorMapDesc &d) { d.type = ElementType::I32; },
       "element type i32"},
  };
  for (const Case &c : cases) {
    TensorMapDesc d = validDesc();
    c.edit(d);
    alignas(64) unsigned char map[128];
    Status s = moe::encodeEmuTensorMap(d, map);
    ASSERT_FALSE(s.ok()) << c.expect;
    EXPECT_TRUE(contains(s.message(), "tensor map of 'w'")) << s.message();
    EXPECT_TRUE(contains(s.message(), c.expect)) << s.message();
  }
}

TEST(TensorMapEncode, EmuLayout) {
  alignas(64) MoEEmuTensorMap m;
  ASSERT_TRUE(moe::encodeEmuTensorMap(validDesc(), &m).ok());
  EXPECT_EQ(m.magic, MOE_EMU_TENSOR_MAP_MAGIC);
  EXPECT_EQ(m.address, reinterpret_cast<uintptr_t>(gMatrix));
  EXPECT_EQ(m.dims[0], 72u);
  EXPECT_EQ(m.dims[1], 40u);
  EXPECT_EQ(m.row_stride, 160u);
  EXPECT_EQ(m.box[0], 64u);
  EXPECT_EQ(m.box[1], 16u);
  EXPECT_EQ(m.element_bytes, 2u);
  EXPECT_EQ(m.swizzle_bytes, 128u);
}

// The driver's encoder as the CUDA path calls it: what it receives.
struct EncodeCall {
  int dataType = -1, swizzle = -1, interleave = -1, oobFill = -1;
  unsigned rank = 0;
  void *address = nullptr;
  unsigned long long dims[2] = {}, stride = 0;
  unsigned box[2] = {}, elementStrides[2] = {};
} gCall;

int fakeEncode(void *, int dataType, unsigned rank, void *address,
               const unsigned long long *dims,
               const unsigned long long *strides, const unsigned *box,
               const unsigned *elementStrides, int interleave, int swizzle,
               int, int oobFill) {
  gCall.dataType = dataType;
  gCall.rank = rank;
  gCall.address = address;
  gCall.dims[0] = dims[0];
  gCall.dims[1] = dims[1];
  gCall.stride = strides[0];
  gCall.box[0] = box[0];
  gCall.box[1] = box[1];
  gCall.elementStrides[0] = elementStrides[0];
  gCall.elementStrides[1] = elementStrides[1];
  gCall.interleave = interleave;
  gCall.swizzle = swizzle;
  gCall.oobFill = oobFill;
  return 0;
}

TEST(TensorMapEncode, CudaPathCallsTheDriverInnerDimensionFirst) {
  moe::runtime::DriverApi api;
  api.libraryFile = "libcuda-test.so";
  alignas(64) unsigned char map[128];
  Status s = moe::encodeCudaTensorMap(api, validDesc(), map);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "libcuda-test.so has no "
                                    "cuTensorMapEncodeTiled"))
      << s.message();
  api.cuTensorMapEncodeTiled = fakeEncode;
  TensorMapDesc d = validDesc();
  d.type = ElementType::F8E4M3FN;
  d.boxCols = 128;
  ASSERT_TRUE(moe::encodeCudaTensorMap(api, d, map).ok());
  EXPECT_EQ(gCall.dataType, 0); // UINT8
  EXPECT_EQ(gCall.rank, 2u);
  EXPECT_EQ(gCall.address, static_cast<void *>(gMatrix));
  EXPECT_EQ(gCall.dims[0], 72u);
  EXPECT_EQ(gCall.dims[1], 40u);
  EXPECT_EQ(gCall.stride, 160u);
  EXPECT_EQ(gCall.box[0], 128u);
  EXPECT_EQ(gCall.box[1], 16u);
  EXPECT_EQ(gCall.elementStrides[0], 1u);
  EXPECT_EQ(gCall.elementStrides[1], 1u);
  EXPECT_EQ(gCall.interleave, 0);
  EXPECT_EQ(gCall.swizzle, 3); // CU_TENSOR_MAP_SWIZZLE_128B
  EXPECT_EQ(gCall.oobFill, 0); // zeros
  d.type = ElementType::BF16;
  d.boxCols = 32;
  d.swizzle = TensorMapSwizzle::B64;
  ASSERT_TRUE(moe::encodeCudaTensorMap(api, d, map).ok());
  EXPECT_EQ(gCall.dataType, 9); // BFLOAT16
  EXPECT_EQ(gCall.swizzle, 2);
  // The driver's rules are checked before the driver is called.
  gCall.rank = 0;
  d.boxRows = 300;
  EXPECT_FALSE(moe::encodeCudaTensorMap(api, d, map).ok());
  EXPECT_EQ(gCall.rank, 0u);
}

const char *kSource = R"cuda(
#include "moe_emu.h"
#include "moe/runtime/KernelABI.h"
#include "moe_tma.cuh"

// buffers: [0] the tensor map, [1] out (the box's bytes as they landed in
// shared memory); scalars: c0, c1, the bytes expected on the barrier, the
// box's bytes, and a shared-memory offset for the destination.
extern "C" __global__ void k_tma_box(MoEKernelArgs args) {
  MOE_DYNAMIC_SHARED(unsigned char, smem);
  MOE_SHARED(uint64_t, bar, 1);
  const auto *map = static_cast<const moe_k::tma::TensorMap *>(args.buffers[0]);
  unsigned char *out = static_cast<unsigned char *>(args.buffers[1]);
  const int c0 = static_cast<int>(args.scalars[0]);
  const int c1 = static_cast<int>(args.scalars[1]);
  const unsigned expect = static_cast<unsigned>(args.scalars[2]);
  const unsigned bytes = static_cast<unsigned>(args.scalars[3]);
  unsigned char *dst = smem + args.num_tokens; // the destination offset
  if (threadIdx.x == 0) {
    moe_k::tma::init(&bar[0], 1);
    moe_k::tma::fenceProxyAsync();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    moe_k::tma::arriveExpectTx(&bar[0], expect);
    moe_k::tma::copy2d(dst, map, c0, c1, &bar[0]);
  }
  moe_k::tma::wait(&bar[0], 0);
  for (unsigned i = threadIdx.x; i < bytes; i += blockDim.x)
    out[i] = dst[i];
}
MOE_EMU_EXPORT_KERNEL(k_tma_box)
)cuda";

struct TensorMapEmuTestSource {
  static inline const char *const kText = kSource;
  static constexpr const char *kName = "tensor-map-test";
};

class TensorMapEmuTest : public moe::test::EmuKernelFixture<TensorMapEmuTestSource> {
protected:

  /// Copies the box at (c0, c1) of the map of `d`, with `expect` bytes
  /// expected on the barrier (-1: the box's), into shared memory at
  /// `offset`; returns the landed bytes in `out`.
  static Status copy(const TensorMapDesc &d, int c0, int c1,
                     std::vector<unsigned char> &out, long long expect = -1,
                     unsigned offset = 0) {
    alignas(64) static unsigned char map[128];
    if (Status s = moe::encodeEmuTensorMap(d, map))
      return s;
    const unsigned bytes = d.boxRows * d.boxCols *
                           static_cast<unsigned>(moe::elementSize(d.type));
    out.assign(bytes, 0xee);
    MoEKernelArgs args{};
    args.buffers[0] = map;
    args.buffers[1] = out.data();
    args.scalars[0] = c0;
    args.scalars[1] = c1;
    args.scalars[2] = expect < 0 ? bytes : expect;
    args.scalars[3] = bytes;
    args.num_tokens = offset;
    return launch("k_tma_box", args, 64, 16384);
  }

};

/// Where byte p of the dense box lands with a swizzle of `span` bytes, as
/// the PTX ISA pictures the pattern: the box is cut into 128-byte lines;
/// in line L, 16-byte chunk j goes to chunk j xor (L mod (span / 16)).
size_t swizzled(size_t p, unsigned span) {
  if (span == 0)
    return p;
  const size_t line = p / 128, chunk = (p % 128) / 16;
  return line * 128 + (chunk ^ (line % (span / 16))) * 16 + p % 16;
}

/// Checks the landed box against the matrix: every element of the box at
/// (c0, c1), or zero out of bounds, at its swizzled position.
void expectBox(const TensorMapDesc &d, int c0, int c1,
               const std::vector<unsigned char> &out) {
  const unsigned eb = static_cast<unsigned>(moe::elementSize(d.type));
  const unsigned span = static_cast<unsigned>(moe::swizzleBytes(d.swizzle));
  const auto *m = static_cast<const unsigned char *>(d.address);
  int wrong = 0;
  for (unsigned r = 0; r < d.boxRows; ++r)
    for (unsigned k = 0; k < d.boxCols; ++k) {
      const long long gr = c1 + static_cast<long long>(r);
      const long long gc = c0 + static_cast<long long>(k);
      const bool in = gr >= 0 && gc >= 0 && gr < static_cast<long long>(d.rows) &&
                      gc < static_cast<long long>(d.cols);
      const size_t at = swizzled((r * d.boxCols + k) * eb, span);
      for (unsigned b = 0; b < eb; ++b) {
        unsigned char want = in ? m[gr * d.rowStrideBytes + gc * eb + b] : 0;
        if (out[at + b] != want && ++wrong <= 5)
          ADD_FAILURE() << "box (" << c0 << ", " << c1 << ") swizzle " << span
                        << ": element (" << r << ", " << k << ") byte " << b
                        << " is " << int(out[at + b]) << ", want "
                        << int(want);
      }
    }
  EXPECT_EQ(wrong, 0);
}

void fillMatrix() {
  for (size_t i = 0; i < sizeof gMatrix; ++i)
    gMatrix[i] = static_cast<unsigned char>((i * 131 + 7) % 251 + 1);
}

TEST_F(TensorMapEmuTest, EverySwizzleInsideAndAcrossEdges) {
  fillMatrix();
  struct Mode {
    TensorMapSwizzle swizzle;
    unsigned boxCols; // bf16: the span's width, or 40 without a swizzle
  } modes[] = {{TensorMapSwizzle::None, 40},
               {TensorMapSwizzle::B32, 16},
               {TensorMapSwizzle::B64, 32},
               {TensorMapSwizzle::B128, 64}};
  for (const Mode &mode : modes) {
    TensorMapDesc d = validDesc();
    d.swizzle = mode.swizzle;
    d.boxCols = mode.boxCols;
    const int corners[][2] = {{0, 0},  {8, 3},   {72 - 8, 40 - 5},
                              {-8, 0}, {0, -16}, {100, 2}};
    for (const auto &c : corners) {
      std::vector<unsigned char> out;
      Status s = copy(d, c[0], c[1], out);
      ASSERT_TRUE(s.ok()) << s.message();
      expectBox(d, c[0], c[1], out);
    }
  }
}

TEST_F(TensorMapEmuTest, BytesWithA128ByteSwizzle) {
  fillMatrix();
  TensorMapDesc d = validDesc();
  d.type = ElementType::F8E4M3FN;
  d.cols = 200;
  d.rows = 30;
  d.rowStrideBytes = 208;
  d.boxCols = 128;
  d.boxRows = 8;
  for (int c1 : {0, 27}) {
    std::vector<unsigned char> out;
    Status s = copy(d, 96, c1, out);
    ASSERT_TRUE(s.ok()) << s.message();
    expectBox(d, 96, c1, out);
  }
}

TEST_F(TensorMapEmuTest, TransactionBytesMustMatchTheBox) {
  fillMatrix();
  TensorMapDesc d = validDesc();
  std::vector<unsigned char> out;
  // A box half out of bounds still counts its whole 2048 bytes.
  ASSERT_TRUE(copy(d, 40, 30, out, 2048).ok());
  for (long long expect : {1024LL, 4096LL}) {
    Status s = copy(d, 40, 30, out, expect);
    ASSERT_FALSE(s.ok()) << expect;
    EXPECT_TRUE(contains(s.message(), "with no copy in flight: it can never "
                                      "complete"))
        << s.message();
    EXPECT_TRUE(contains(s.message(),
                         std::to_string(expect - 2048) + " transaction byte"))
        << s.message();
  }
}

TEST_F(TensorMapEmuTest, Misuse) {
  TensorMapDesc d = validDesc();
  std::vector<unsigned char> out;
  Status s = copy(d, 0, 0, out, -1, /*offset=*/64);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "is not 128-byte aligned")) << s.message();
  alignas(64) unsigned char junk[128] = {};
  MoEKernelArgs args{};
  args.buffers[0] = junk;
  args.buffers[1] = out.data();
  args.scalars[2] = args.scalars[3] = 16;
  s = launch("k_tma_box", args, 32, 16384);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(contains(s.message(), "are not a tensor map encoded for the "
                                    "emulation"))
      << s.message();
}

} // namespace
