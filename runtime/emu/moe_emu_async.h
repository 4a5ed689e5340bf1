//===- moe_emu_async.h - Asynchronous copies and mbarriers ------*- C++ -*-===//
//
// Part of moe-opt. The CPU emulation of the sm_80/sm_90 asynchronous copy
// instructions and of mbarrier objects (moe_emu.h includes it), with the
// names of the PTX instructions they stand for:
//
//  * cp_async (cp.async.{ca,cg}.shared.global, 4/8/16 bytes, optional
//    source size that zero-fills the rest), cp_async_commit_group,
//    cp_async_wait_group(N), cp_async_wait_all: a copy reads its source
//    when it is issued and writes its destination only when a
//    cp.async.wait_group of the issuing thread completes its group. From
//    issue to completion the destination holds the shared-memory poison
//    (all-ones bytes, NaN as a float), which is what the PTX ISA allows
//    (the destination is undefined until the wait): a kernel that reads a
//    tile before the wait, or that reuses a buffer while a copy into it is
//    in flight, computes NaNs instead of passing by luck. A barrier
//    (__syncthreads) completes nothing, as on a GPU.
//  * mbarrier_init / mbarrier_arrive / mbarrier_arrive_expect_tx /
//    mbarrier_expect_tx / mbarrier_try_wait_parity / mbarrier_wait_parity
//    (mbarrier.* .shared.b64): a phase completes when its pending arrival
//    count and its transaction count both reach zero; the arrival count is
//    then reset to the init count. try_wait.parity(p) is true once the phase
//    of parity p has completed. The 8 bytes of the object hold a handle to
//    the emulation's state; using them before mbarrier_init is an error.
//  * cp_async_bulk (cp.async.bulk.shared::cluster.global.mbarrier::
//    complete_tx::bytes, the TMA's non-tensor form): the copy completes
//    (lands and decrements the barrier's transaction count) when some
//    thread tests the barrier, i.e. as late as the PTX ISA allows.
//
//  * cp_async_bulk_tensor_2d (cp.async.bulk.tensor.2d.shared::cluster.
//    global.tile.mbarrier::complete_tx::bytes [dst], [map, {c0, c1}],
//    [bar]): copies the box of the tensor map (KernelABI.h's
//    MoEEmuTensorMap, written by the runtime's encoder) whose first
//    element is column c0, row c1; elements outside the tensor (negative
//    coordinates included) are zero. The box lands densely (row r of the
//    box at r * box bytes per row), then the map's swizzle moves each
//    16-byte chunk: with a span of S bytes (32, 64, 128), bits [4, 4 + n)
//    of the shared-memory byte address, n = log2(S / 16), are xor-ed with
//    bits [7, 7 + n) (the PTX ISA's "tensor swizzling modes": the chunk
//    index within a 128-byte line xor the line index modulo S / 16). The
//    address is the offset from the start of the block's shared memory, so
//    a destination aligned to 8 lines (S * 8 bytes) starts the pattern at
//    its row 0, as on a GPU whose shared window starts at address 0. The
//    whole box's bytes, out-of-bounds ones included, complete on the
//    barrier when it lands (like cp_async_bulk).
//  * fence_proxy_async (fence.proxy.async.shared::cta): orders generic
//    writes to shared memory before later async-proxy copies; the emulation
//    has one proxy, so it only checks that a thread calls it.
//
// A phase that waits for transaction bytes no copy will bring (an
// expect_tx larger than the copies, or copies larger than expected, which
// leave the count below zero) never completes: the launch fails with the
// livelock report, which lists every mbarrier whose phase is incomplete
// (moe_emu_runtime.h).
//
// Not emulated: other tensor ranks and modes (im2col, multicast), stores
// from shared memory, cp.async.mbarrier.arrive and cluster scopes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_EMU_ASYNC_H
#define MOE_EMU_ASYNC_H

#include "moe_emu_runtime.h"
#include "moe/runtime/KernelABI.h"

#pragma GCC visibility push(hidden)

namespace moe_emu {
namespace detail {

constexpr unsigned kUncommitted = ~0u;
/// The high half of an mbarrier word that holds a handle (the low half is
/// the index of its state in the block).
constexpr uint64_t kMBarrierTag = 0x6d62617200000000ull; // "mbar"

inline bool in_shared(const Block &b, const void *p, size_t n) {
  const unsigned char *c = static_cast<const unsigned char *>(p);
  return c >= b.smem && c + n <= b.smem + b.smemLimit;
}

inline void check_shared(const Block &b, const void *p, size_t n,
                         size_t align, const char *what, const char *file,
                         int line) {
  if (!in_shared(b, p, n))
    fail(format("%s at %s:%d: address %p is not in the block's shared "
                "memory",
                what, file, line, p));
  if ((reinterpret_cast<uintptr_t>(p) & (align - 1)) != 0)
    fail(format("%s at %s:%d: shared address %p is not %zu-byte aligned",
                what, file, line, p, align));
}

inline void land(AsyncCopy &c) {
  std::memcpy(c.dst, c.big.empty() ? c.small : c.big.data(), c.bytes);
}

/// The state of the mbarrier at `bar` (checked: in shared memory, aligned,
/// initialised).
inline MBarrier &mbarrier_state(uint64_t *bar, const char *what,
                                const char *file, int line) {
  Block &b = *cur(what).block;
  check_shared(b, bar, 8, 8, what, file, line);
  const uint64_t w = *bar;
  const uint64_t index = w & 0xffffffffull;
  if ((w & ~0xffffffffull) != kMBarrierTag || index >= b.mbarriers.size() ||
      b.mbarriers[index].addr != bar)
    fail(format("%s at %s:%d: the mbarrier at %p was not initialised "
                "(mbarrier.init) or was overwritten",
                what, file, line, static_cast<void *>(bar)));
  return b.mbarriers[index];
}

inline void mbarrier_check_phase(MBarrier &m) {
  if (m.pending == 0 && m.tx == 0) {
    ++m.phase;
    m.pending = m.expected;
  }
}

inline void mbarrier_arrive_one(MBarrier &m, const char *what,
                                const char *file, int line) {
  if (m.pending == 0)
    fail(format("%s at %s:%d: more arrivals than the mbarrier's count %u in "
                "one phase",
                what, file, line, m.expected));
  --m.pending;
  mbarrier_check_phase(m);
}

/// One thread's arrive on `m` (the arrive ops): returns the state token
/// (the phase it arrived in) and wakes the block's waiters.
inline uint64_t mbarrier_thread_arrive(MBarrier &m, const char *what,
                                       const char *file, int line) {
  const uint64_t state = m.phase;
  mbarrier_arrive_one(m, what, file, line);
  ++cur().block->events;
  return state;
}

/// Completes every bulk copy that signals `m` (lands it, counts its bytes).
inline void mbarrier_land_bulk(Block &b, MBarrier &m) {
  const int index = static_cast<int>(&m - b.mbarriers.data());
  bool any = false;
  for (AsyncCopy &c : b.bulkCopies)
    if (c.mbar == index) {
      land(c);
      m.tx -= c.bytes;
      c.mbar = -2; // done
      any = true;
    }
  if (!any)
    return;
  b.bulkCopies.erase(std::remove_if(b.bulkCopies.begin(), b.bulkCopies.end(),
                                    [](const AsyncCopy &c) {
                                      return c.mbar == -2;
                                    }),
                     b.bulkCopies.end());
  ++b.events;
  if (m.pending == 0)
    mbarrier_check_phase(m);
}

} // namespace detail

/// cp.async.{ca,cg}.shared.global [dst], [src], cpSize, srcSize: copies
/// srcSize bytes and zero-fills up to cpSize (4, 8 or 16; both addresses
/// aligned to it). Completes at the cp_async_wait_group that covers its
/// group.
inline void cp_async(void *dst, const void *src, unsigned cpSize,
                     unsigned srcSize, const char *file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  detail::Thread &t = detail::cur("cp.async");
  if (cpSize != 4 && cpSize != 8 && cpSize != 16)
    detail::fail(detail::format("cp.async at %s:%d: copy size %u is not 4, "
                                "8 or 16 bytes",
                                file, line, cpSize));
  if (srcSize > cpSize)
    detail::fail(detail::format("cp.async at %s:%d: source size %u is larger "
                                "than the copy size %u",
                                file, line, srcSize, cpSize));
  detail::check_shared(*t.block, dst, cpSize, cpSize, "cp.async", file, line);
  if (srcSize > 0 && (reinterpret_cast<uintptr_t>(src) & (cpSize - 1)) != 0)
    detail::fail(detail::format("cp.async at %s:%d: global address %p is not "
                                "%u-byte aligned",
                                file, line, src, cpSize));
  detail::AsyncCopy c;
  c.group = detail::kUncommitted;
  c.mbar = -1;
  c.dst = static_cast<unsigned char *>(dst);
  c.bytes = cpSize;
  std::memset(c.small, 0, sizeof c.small);
  if (srcSize > 0)
    std::memcpy(c.small, src, srcSize);
  std::memset(dst, detail::kSharedPoison, cpSize); // undefined until the wait
  t.asyncCopies.push_back(std::move(c));
}

/// cp.async.commit_group: the thread's copies issued since the last commit
/// form one group (an empty group is allowed).
inline void cp_async_commit_group() {
  detail::Thread &t = detail::cur("cp.async.commit_group");
  const unsigned g = t.asyncCommitted++;
  for (size_t i = t.asyncCopies.size(); i > t.asyncHead; --i) {
    detail::AsyncCopy &c = t.asyncCopies[i - 1];
    if (c.group != detail::kUncommitted)
      break;
    c.group = g;
  }
}

/// cp.async.wait_group n: completes the thread's committed groups but the
/// newest n.
inline void cp_async_wait_group(unsigned n) {
  detail::Thread &t = detail::cur("cp.async.wait_group");
  if (t.asyncCommitted <= n)
    return;
  const unsigned last = t.asyncCommitted - n; // groups [0, last) complete
  while (t.asyncHead < t.asyncCopies.size()) {
    detail::AsyncCopy &c = t.asyncCopies[t.asyncHead];
    if (c.group == detail::kUncommitted || c.group >= last)
      break;
    detail::land(c);
    ++t.asyncHead;
  }
  if (t.asyncHead == t.asyncCopies.size()) {
    t.asyncCopies.clear();
    t.asyncHead = 0;
  }
}

/// cp.async.wait_all: commit, then wait for every group.
inline void cp_async_wait_all() {
  cp_async_commit_group();
  cp_async_wait_group(0);
}

/// mbarrier.init.shared.b64 [bar], count.
inline void mbarrier_init(uint64_t *bar, unsigned count,
                          const char *file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  detail::Block &b = *detail::cur("mbarrier.init").block;
  detail::check_shared(b, bar, 8, 8, "mbarrier.init", file, line);
  if (count == 0 || count >= (1u << 20))
    detail::fail(detail::format("mbarrier.init at %s:%d: count %u is not in "
                                "[1, 2^20 - 1]",
                                file, line, count));
  size_t index = b.mbarriers.size();
  for (size_t i = 0; i < b.mbarriers.size(); ++i)
    if (b.mbarriers[i].addr == bar)
      index = i;
  if (index == b.mbarriers.size())
    b.mbarriers.push_back(detail::MBarrier{});
  b.mbarriers[index] = detail::MBarrier{bar, count, count, 0, 0};
  *bar = detail::kMBarrierTag | index;
}

/// mbarrier.arrive.shared.b64: returns the state (the phase it arrived in).
inline uint64_t mbarrier_arrive(uint64_t *bar,
                                const char *file = __builtin_FILE(),
                                int line = __builtin_LINE()) {
  detail::MBarrier &m =
      detail::mbarrier_state(bar, "mbarrier.arrive", file, line);
  return detail::mbarrier_thread_arrive(m, "mbarrier.arrive", file, line);
}

/// mbarrier.expect_tx.shared.b64 [bar], bytes.
inline void mbarrier_expect_tx(uint64_t *bar, unsigned bytes,
                               const char *file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  detail::MBarrier &m =
      detail::mbarrier_state(bar, "mbarrier.expect_tx", file, line);
  m.tx += bytes;
}

/// mbarrier.arrive.expect_tx.shared.b64 [bar], bytes: expect_tx, then
/// arrive.
inline uint64_t mbarrier_arrive_expect_tx(uint64_t *bar, unsigned bytes,
                                          const char *file = __builtin_FILE(),
                                          int line = __builtin_LINE()) {
  detail::MBarrier &m =
      detail::mbarrier_state(bar, "mbarrier.arrive.expect_tx", file, line);
  m.tx += bytes;
  return detail::mbarrier_thread_arrive(m, "mbarrier.arrive.expect_tx", file,
                                        line);
}

/// mbarrier.try_wait.parity.shared.b64: true once the phase of parity
/// `parity` has completed. Lets the other threads run when it has not.
inline bool mbarrier_try_wait_parity(uint64_t *bar, unsigned parity,
                                     const char *file = __builtin_FILE(),
                                     int line = __builtin_LINE()) {
  detail::Block &b = *detail::cur("mbarrier.try_wait").block;
  detail::MBarrier &m =
      detail::mbarrier_state(bar, "mbarrier.try_wait.parity", file, line);
  detail::mbarrier_land_bulk(b, m);
  if ((m.phase & 1u) != (parity & 1u))
    return true;
  detail::yield();
  return false;
}

/// Waits with try_wait.parity until the phase of parity `parity` completes.
inline void mbarrier_wait_parity(uint64_t *bar, unsigned parity,
                                 const char *file = __builtin_FILE(),
                                 int line = __builtin_LINE()) {
  while (!mbarrier_try_wait_parity(bar, parity, file, line)) {
  }
}

/// cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes
/// [dst], [src], bytes, [bar]: bytes a multiple of 16, both addresses
/// 16-byte aligned; completes `bytes` transactions on `bar` when it lands.
inline void cp_async_bulk(void *dst, const void *src, unsigned bytes,
                          uint64_t *bar, const char *file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  detail::Block &b = *detail::cur("cp.async.bulk").block;
  if (bytes == 0 || bytes % 16 != 0)
    detail::fail(detail::format("cp.async.bulk at %s:%d: size %u is not a "
                                "positive multiple of 16 bytes",
                                file, line, bytes));
  detail::check_shared(b, dst, bytes, 16, "cp.async.bulk", file, line);
  if ((reinterpret_cast<uintptr_t>(src) & 15u) != 0)
    detail::fail(detail::format("cp.async.bulk at %s:%d: global address %p "
                                "is not 16-byte aligned",
                                file, line, src));
  detail::MBarrier &m =
      detail::mbarrier_state(bar, "cp.async.bulk", file, line);
  detail::AsyncCopy c;
  c.group = detail::kUncommitted;
  c.mbar = static_cast<int>(&m - b.mbarriers.data());
  c.dst = static_cast<unsigned char *>(dst);
  c.bytes = bytes;
  c.big.assign(static_cast<const unsigned char *>(src),
               static_cast<const unsigned char *>(src) + bytes);
  std::memset(dst, detail::kSharedPoison, bytes);
  b.bulkCopies.push_back(std::move(c));
}

namespace detail {

/// The shared-memory byte offset `o` after the tensor copy's swizzle of
/// span `span` bytes (0: none).
inline size_t tensor_swizzle(size_t o, unsigned span) {
  if (span == 0)
    return o;
  const size_t mask = span / 16 - 1; // 1, 3 or 7: the chunk bits swapped
  return o ^ (((o >> 7) & mask) << 4);
}

/// The emulation's tensor map at `map` (checked: aligned, encoded).
inline const MoEEmuTensorMap &tensor_map(const void *map, const char *what,
                                         const char *file, int line) {
  if (map == nullptr || (reinterpret_cast<uintptr_t>(map) & 63u) != 0)
    fail(format("%s at %s:%d: tensor map address %p is not 64-byte aligned",
                what, file, line, map));
  const MoEEmuTensorMap &m = *static_cast<const MoEEmuTensorMap *>(map);
  if (m.magic != MOE_EMU_TENSOR_MAP_MAGIC)
    fail(format("%s at %s:%d: the 128 bytes at %p are not a tensor map "
                "encoded for the emulation (moe::encodeEmuTensorMap)",
                what, file, line, map));
  return m;
}

} // namespace detail

/// cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::
/// complete_tx::bytes [dst], [map, {c0, c1}], [bar]: the box at column c0,
/// row c1 of the map's tensor, zero-filled out of bounds and swizzled as
/// the map says, into `dst` (128-byte aligned shared memory); completes the
/// box's bytes on `bar` when it lands.
inline void cp_async_bulk_tensor_2d(void *dst, const void *map, int c0,
                                    int c1, uint64_t *bar,
                                    const char *file = __builtin_FILE(),
                                    int line = __builtin_LINE()) {
  const char *what = "cp.async.bulk.tensor.2d";
  detail::Block &b = *detail::cur(what).block;
  const MoEEmuTensorMap &m = detail::tensor_map(map, what, file, line);
  const unsigned eb = m.element_bytes;
  const size_t rowBytes = size_t(m.box[0]) * eb;
  const size_t bytes = rowBytes * m.box[1];
  detail::check_shared(b, dst, bytes, 128, what, file, line);
  detail::MBarrier &mb = detail::mbarrier_state(bar, what, file, line);
  detail::AsyncCopy c;
  c.group = detail::kUncommitted;
  c.mbar = static_cast<int>(&mb - b.mbarriers.data());
  c.dst = static_cast<unsigned char *>(dst);
  c.bytes = static_cast<unsigned>(bytes);
  c.big.assign(bytes, 0);
  const size_t base = static_cast<size_t>(c.dst - b.smem);
  const unsigned char *src =
      reinterpret_cast<const unsigned char *>(static_cast<uintptr_t>(m.address));
  for (unsigned r = 0; r < m.box[1]; ++r) {
    const long long gr = static_cast<long long>(c1) + r;
    for (unsigned k = 0; k < m.box[0]; ++k) {
      const long long gc = static_cast<long long>(c0) + k;
      const size_t o = r * rowBytes + size_t(k) * eb;
      const size_t so = detail::tensor_swizzle(base + o, m.swizzle_bytes);
      if (so < base || so + eb > base + bytes)
        detail::fail(detail::format(
            "%s at %s:%d: the %u-byte swizzle moves box byte %zu outside "
            "the box's %zu bytes (make the box a whole number of %u-byte "
            "lines from a 128-byte aligned address)",
            what, file, line, m.swizzle_bytes, o, bytes, 128u));
      if (gr >= 0 && gc >= 0 && static_cast<unsigned long long>(gr) < m.dims[1] &&
          static_cast<unsigned long long>(gc) < m.dims[0])
        std::memcpy(&c.big[so - base],
                    src + static_cast<unsigned long long>(gr) * m.row_stride +
                        static_cast<unsigned long long>(gc) * eb,
                    eb);
    }
  }
  std::memset(dst, detail::kSharedPoison, bytes);
  b.bulkCopies.push_back(std::move(c));
}

/// fence.proxy.async.shared::cta.
inline void fence_proxy_async() { (void)detail::cur("fence.proxy.async"); }

} // namespace moe_emu

#pragma GCC visibility pop

#endif // MOE_EMU_ASYNC_H
