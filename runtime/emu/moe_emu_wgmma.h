//===- moe_emu_wgmma.h - Warpgroup matrix multiply-accumulate ---*- C++ -*-===//
//
// Part of moe-opt. The CPU emulation of the sm_90a warpgroup MMA
// instructions (moe_emu.h includes it), PTX ISA section "Asynchronous
// Warpgroup Level Matrix Multiply-Accumulate Instructions":
//
//  * wgmma_fence (wgmma.fence.sync.aligned): required before a thread's
//    first wgmma_mma_async (checked).
//  * wgmma_mma_async (wgmma.mma_async.sync.aligned.m64nNk16.f32.T.T, T =
//    bf16 or f16, N a multiple of 8 up to 256, A and B from shared memory
//    through matrix descriptors, no transposes, scale-d): D = A * B + D, or
//    D = A * B when scale-d is false. Each of the 128 threads of a
//    warpgroup (4 consecutive warps, the first of rank 4 w) owns N / 2
//    accumulators: warp w4 = warp % 4 of the group, groupID g = lane / 4,
//    t = lane % 4; d[4 c + i] is row 16 w4 + g (+ 8 for i >= 2), column
//    8 c + 2 t + (i & 1) (PTX ISA "Register Fragments", wgmma 64NxK D).
//  * wgmma_commit_group / wgmma_wait_group(n): the thread's operations
//    issued since the last commit form a group; wait_group(n) completes all
//    groups but the newest n.
//
// Asynchrony as late as the PTX ISA allows: an operation reads its shared
// memory operands and writes the accumulators only when the wait_group that
// covers it completes; from issue to then the accumulators hold NaN. A
// kernel that overwrites a stage before the wait, or reads the accumulators
// before it, computes wrong values instead of passing by luck. An
// operation whose accumulators are those of an earlier operation still in
// flight (the usual chain over k, also across wait_group n > 0) takes
// that operation's result as C, and the accumulators stay NaN until the
// last operation of the chain completes.
//
// Rounding: as mma.sync's emulation (complete_mma): the 16 products of one
// k16 step are exact, summed in double with C and rounded once to f32.
//
// Matrix descriptors (PTX ISA "Matrix Descriptor Format"): bits 0-13 the
// start address >> 4 (in the shared window), 16-29 the leading dimension
// byte offset >> 4 (LBO: between core matrices adjacent in K), 32-45 the
// stride dimension byte offset >> 4 (SBO: between core matrices adjacent in
// M or N), 49-51 the matrix base offset, 62-63 the swizzle mode. A core
// matrix is 8 rows of 16 contiguous bytes (8 elements of K). Only the
// no-swizzle K-major layout is emulated: element (r, k) of A (r < 64) or
// of B (its column r < N) is at start + (r / 8) SBO + (r % 8) 16 +
// (k / 8) LBO + (k % 8) 2 bytes. A swizzle mode, a base offset, reserved
// bits or a footprint outside the block's shared memory are launch errors.
//
// Not emulated: register A operands, transposed (MN-major) operands,
// swizzled layouts, other types (tf32, fp8, integer), .sp.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_EMU_WGMMA_H
#define MOE_EMU_WGMMA_H

#include "moe_emu_runtime.h"

#pragma GCC visibility push(hidden)

namespace moe_emu {
namespace detail {

constexpr unsigned kWgmmaUncommitted = ~0u;

/// A decoded no-swizzle K-major operand: `rows` rows of 16 elements.
struct WgmmaOperand {
  unsigned start, lbo, sbo;
  /// Byte offset of element (r, k) in the shared window.
  unsigned offset(int r, int k) const {
    return start + (r / 8) * sbo + (r % 8) * 16 + (k / 8) * lbo + (k % 8) * 2;
  }
};

/// Decodes `desc` (operand `which`, "A" or "B", of `rows` rows) and checks
/// that the emulation can read it: no swizzle, no base offset, no reserved
/// bits, every element inside the block's shared memory.
inline WgmmaOperand wgmma_decode(const Block &b, uint64_t desc,
                                 const char *which, int rows, const char *file,
                                 int line) {
  const uint64_t known = 0x3fffull | (0x3fffull << 16) | (0x3fffull << 32) |
                         (0x7ull << 49) | (0x3ull << 62);
  const unsigned swizzle = static_cast<unsigned>(desc >> 62);
  const unsigned base = static_cast<unsigned>((desc >> 49) & 7u);
  if (swizzle != 0)
    fail(format("wgmma.mma_async at %s:%d: descriptor %s 0x%016llx has "
                "swizzle mode %u; only mode 0 (no swizzle) is emulated",
                file, line, which, static_cast<unsigned long long>(desc),
                swizzle));
  if (base != 0)
    fail(format("wgmma.mma_async at %s:%d: descriptor %s 0x%016llx has "
                "matrix base offset %u; only 0 is emulated",
                file, line, which, static_cast<unsigned long long>(desc),
                base));
  if ((desc & ~known) != 0)
    fail(format("wgmma.mma_async at %s:%d: descriptor %s 0x%016llx sets "
                "reserved bits 0x%016llx",
                file, line, which, static_cast<unsigned long long>(desc),
                static_cast<unsigned long long>(desc & ~known)));
  WgmmaOperand o;
  o.start = static_cast<unsigned>(desc & 0x3fffu) << 4;
  o.lbo = static_cast<unsigned>((desc >> 16) & 0x3fffu) << 4;
  o.sbo = static_cast<unsigned>((desc >> 32) & 0x3fffu) << 4;
  // The farthest byte: the offsets only grow with r and k.
  const size_t last = static_cast<size_t>(o.offset(rows - 1, 15)) + 2;
  if (last > b.smemLimit)
    fail(format("wgmma.mma_async at %s:%d: descriptor %s 0x%016llx (start "
                "%u, leading byte offset %u, stride byte offset %u, %d rows "
                "x 16) reaches byte %zu of the shared window; the block has "
                "%zu bytes",
                file, line, which, static_cast<unsigned long long>(desc),
                o.start, o.lbo, o.sbo, rows, last, b.smemLimit));
  return o;
}

inline float wgmma_element(const Block &b, unsigned offset, int kind) {
  uint16_t bits;
  std::memcpy(&bits, b.smem + offset, 2);
  return mma_element(bits, kind);
}

/// Completes `op` for thread `t`: its N / 2 accumulators from the shared
/// memory of now, into `out` (C is op.c: captured at issue, or handed on
/// by the operation it chains on).
inline void wgmma_complete(Thread &t, const WgmmaOp &op, float *out) {
  const Block &b = *t.block;
  const WgmmaOperand A =
      wgmma_decode(b, op.descA, "A", 64, op.file, op.line);
  const WgmmaOperand B =
      wgmma_decode(b, op.descB, "B", op.n, op.file, op.line);
  const int w4 = static_cast<int>(t.warp % 4);
  const int g = static_cast<int>(t.lane / 4), tq = static_cast<int>(t.lane % 4);
  float a[2][16];
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 16; ++k)
      a[h][k] = wgmma_element(b, A.offset(16 * w4 + g + 8 * h, k), op.kind);
  for (int c = 0; c < op.n / 8; ++c)
    for (int j = 0; j < 2; ++j) {
      const int col = 8 * c + 2 * tq + j;
      float bk[16];
      for (int k = 0; k < 16; ++k)
        bk[k] = wgmma_element(b, B.offset(col, k), op.kind);
      for (int h = 0; h < 2; ++h) {
        const int i = 4 * c + 2 * h + j;
        double acc = 0.0;
        for (int k = 0; k < 16; ++k)
          acc += static_cast<double>(a[h][k]) * static_cast<double>(bk[k]);
        const double cin = op.scaleD ? op.c[i] : 0.0;
        out[i] = static_cast<float>(acc + cin);
      }
    }
}

} // namespace detail

/// wgmma.fence.sync.aligned.
inline void wgmma_fence() { detail::cur("wgmma.fence").wgmmaFenced = true; }

/// wgmma.mma_async.sync.aligned.m64nNk16.f32.T.T d, descA, descB, scaleD,
/// 1, 1, 0, 0 (T: kind 0 bf16, 1 f16). `d`: this thread's N / 2
/// accumulators, NaN until the wait_group that completes the operation.
inline void wgmma_mma_async(float *d, int n, int kind, uint64_t descA,
                            uint64_t descB, bool scaleD,
                            const char *file = __builtin_FILE(),
                            int line = __builtin_LINE()) {
  detail::Thread &t = detail::cur("wgmma.mma_async");
  const detail::Block &b = *t.block;
  if (n < 8 || n > 256 || n % 8 != 0)
    detail::fail(detail::format("wgmma.mma_async at %s:%d: N = %d is not a "
                                "multiple of 8 in [8, 256]",
                                file, line, n));
  if (b.n < (t.linear / 128 + 1) * 128)
    detail::fail(detail::format("wgmma.mma_async at %s:%d: thread %u is in "
                                "an incomplete warpgroup (the block has %u "
                                "threads, a warpgroup is 128)",
                                file, line, t.linear, b.n));
  if (!t.wgmmaFenced)
    detail::fail(detail::format("wgmma.mma_async at %s:%d: no wgmma.fence "
                                "before the first wgmma.mma_async",
                                file, line));
  // Refuse an undecodable descriptor at issue (and again at completion).
  detail::wgmma_decode(b, descA, "A", 64, file, line);
  detail::wgmma_decode(b, descB, "B", n, file, line);
  detail::WgmmaOp op;
  op.group = detail::kWgmmaUncommitted;
  op.descA = descA;
  op.descB = descB;
  op.n = n;
  op.kind = kind;
  op.scaleD = scaleD;
  op.chained = false;
  for (const detail::WgmmaOp &o : t.wgmmaOps) {
    if (o.d == d && o.n == n)
      op.chained = true;
    else if (o.d < d + n / 2 && d < o.d + o.n / 2)
      detail::fail(detail::format("wgmma.mma_async at %s:%d: accumulators "
                                  "overlap those of the operation in flight "
                                  "from %s:%d",
                                  file, line, o.file, o.line));
  }
  op.d = d;
  if (!op.chained)
    op.c.assign(d, d + n / 2);
  op.file = file;
  op.line = line;
  for (int i = 0; i < n / 2; ++i)
    d[i] = std::numeric_limits<float>::quiet_NaN();
  t.wgmmaOps.push_back(std::move(op));
}

/// wgmma.commit_group.sync.aligned.
inline void wgmma_commit_group() {
  detail::Thread &t = detail::cur("wgmma.commit_group");
  const unsigned g = t.wgmmaCommitted++;
  for (detail::WgmmaOp &op : t.wgmmaOps)
    if (op.group == detail::kWgmmaUncommitted)
      op.group = g;
}

/// wgmma.wait_group.sync.aligned n: completes the thread's committed
/// groups but the newest n, oldest first.
inline void wgmma_wait_group(unsigned n) {
  detail::Thread &t = detail::cur("wgmma.wait_group");
  if (t.wgmmaCommitted <= n)
    return;
  const unsigned last = t.wgmmaCommitted - n; // groups [0, last) complete
  size_t done = 0;
  float out[128];
  while (done < t.wgmmaOps.size()) {
    detail::WgmmaOp &op = t.wgmmaOps[done];
    if (op.group == detail::kWgmmaUncommitted || op.group >= last)
      break;
    if (op.chained)
      detail::fail(detail::format("wgmma.wait_group: the operation from "
                                  "%s:%d completes before the one it "
                                  "accumulates on",
                                  op.file, op.line));
    detail::wgmma_complete(t, op, out);
    // The result goes to the next operation in flight on the same
    // accumulators (they stay NaN), else to the accumulators.
    detail::WgmmaOp *next = nullptr;
    for (size_t j = done + 1; j < t.wgmmaOps.size() && !next; ++j)
      if (t.wgmmaOps[j].d == op.d)
        next = &t.wgmmaOps[j];
    if (next) {
      next->c.assign(out, out + op.n / 2);
      next->chained = false;
    } else {
      std::memcpy(op.d, out, sizeof(float) * (op.n / 2));
    }
    ++done;
  }
  t.wgmmaOps.erase(t.wgmmaOps.begin(), t.wgmmaOps.begin() + done);
}

/// The address of `p` in the shared window (what cvta.to.shared gives on a
/// GPU): the offset from the start of the block's shared memory.
inline unsigned shared_address(const void *p,
                               const char *file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  const detail::Block &b = *detail::cur("cvta.to.shared").block;
  const unsigned char *c = static_cast<const unsigned char *>(p);
  if (c < b.smem || c >= b.smem + b.smemLimit)
    detail::fail(detail::format("cvta.to.shared at %s:%d: address %p is not "
                                "in the block's shared memory",
                                file, line, p));
  return static_cast<unsigned>(c - b.smem);
}

} // namespace moe_emu

#pragma GCC visibility pop

#endif // MOE_EMU_WGMMA_H
