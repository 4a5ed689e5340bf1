//===- moe_tma.cuh - Tensor-map copies into an mbarrier pipeline ----------===//
//
// Part of moe-opt. The sm_90 Tensor Memory Accelerator for the kernels:
// mbarrier objects, 2-D tiled cp.async.bulk.tensor copies that complete
// transaction bytes on them, and the proxy fence, as inline PTX on the GPU
// and as the CPU emulation's copies under MOE_EMU (moe_emu_async.h: a copy
// lands, swizzled and zero-filled out of bounds, when a thread tests its
// barrier). Tensor maps (128 bytes, 64-byte aligned) are encoded on the
// host (moe/runtime/TensorMap.h) and read from global memory. Below sm_90
// there is no TMA: the functions trap, and the code generator never emits
// a kernel that calls them there.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_TMA_CUH
#define MOE_KERNELS_TMA_CUH

#include "moe_common.cuh"

#if !defined(MOE_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define MOE_TMA_PTX 1
#endif

namespace moe_k {
namespace tma {

/// An mbarrier object (8 bytes of shared memory): the emulation's
/// functions take uint64_t, NVRTC has no <cstdint>.
#ifdef MOE_EMU
using Bar = uint64_t;
#else
using Bar = unsigned long long;
#endif

/// A tensor map as the kernels receive it (opaque 128 bytes).
struct alignas(64) TensorMap {
  unsigned long long bytes[MOE_TENSOR_MAP_BYTES / 8];
};

#ifdef MOE_TMA_PTX
__device__ __forceinline__ unsigned smemAddr(const void *p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
#endif

/// mbarrier.init.shared::cta.b64 [bar], count.
__device__ __forceinline__ void init(Bar *bar, unsigned count) {
#ifdef MOE_EMU
  moe_emu::mbarrier_init(bar, count);
#elif defined(MOE_TMA_PTX)
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(
                   smemAddr(bar)),
               "r"(count)
               : "memory");
#else
  __trap();
#endif
}

/// fence.proxy.async.shared::cta: generic-proxy writes to shared memory
/// (the barriers' initialisation, a buffer's last reads) are ordered
/// before the async-proxy copies issued after it.
__device__ __forceinline__ void fenceProxyAsync() {
#ifdef MOE_EMU
  moe_emu::fence_proxy_async();
#elif defined(MOE_TMA_PTX)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// mbarrier.arrive.expect_tx.shared::cta.b64: this thread's arrival, and
/// `bytes` more transaction bytes for the current phase.
__device__ __forceinline__ void arriveExpectTx(Bar *bar,
                                               unsigned bytes) {
#ifdef MOE_EMU
  moe_emu::mbarrier_arrive_expect_tx(bar, bytes);
#elif defined(MOE_TMA_PTX)
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::
                   "r"(smemAddr(bar)),
               "r"(bytes)
               : "memory");
#else
  __trap();
#endif
}

/// mbarrier.arrive.shared::cta.b64: this thread's arrival.
__device__ __forceinline__ void arrive(Bar *bar) {
#ifdef MOE_EMU
  moe_emu::mbarrier_arrive(bar);
#elif defined(MOE_TMA_PTX)
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(
                   smemAddr(bar))
               : "memory");
#else
  __trap();
#endif
}

/// Waits (mbarrier.try_wait.parity in a loop) until the phase of parity
/// `parity` of `bar` has completed.
__device__ __forceinline__ void wait(Bar *bar, unsigned parity) {
#ifdef MOE_EMU
  moe_emu::mbarrier_wait_parity(bar, parity);
#elif defined(MOE_TMA_PTX)
  asm volatile("{\n"
               ".reg .pred done;\n"
               "WAIT_%=:\n"
               "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
               "@!done bra WAIT_%=;\n"
               "}\n" ::"r"(smemAddr(bar)),
               "r"(parity)
               : "memory");
#else
  __trap();
#endif
}

/// cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::
/// complete_tx::bytes: the box of `map` at column c0, row c1 into `dst`
/// (128-byte aligned; aligned to 8 swizzle lines when the map swizzles),
/// completing its bytes on `bar`.
__device__ __forceinline__ void copy2d(void *dst, const TensorMap *map,
                                       int c0, int c1, Bar *bar) {
#ifdef MOE_EMU
  moe_emu::cp_async_bulk_tensor_2d(dst, map, c0, c1, bar);
#elif defined(MOE_TMA_PTX)
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile."
               "mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
                   "r"(smemAddr(dst)),
               "l"(map), "r"(c0), "r"(c1), "r"(smemAddr(bar))
               : "memory");
#else
  __trap();
#endif
}

/// The byte offset of a shared-memory address after a tensor copy's
/// swizzle of span `Span` bytes (0: none), for a destination aligned to 8
/// lines of the pattern: 16-byte chunk bits [4, 4 + n) xor bits [7, 7 + n),
/// n = log2(Span / 16).
template <int Span> __device__ __forceinline__ unsigned swizzle(unsigned o) {
  static_assert(Span == 0 || Span == 32 || Span == 64 || Span == 128,
                "a tensor map swizzles 32, 64 or 128 bytes");
  if constexpr (Span == 0)
    return o;
  else
    return o ^ (((o >> 7) & (Span / 16 - 1)) << 4);
}

} // namespace tma
} // namespace moe_k

#endif // MOE_KERNELS_TMA_CUH
