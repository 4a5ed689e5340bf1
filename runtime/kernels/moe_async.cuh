//===- moe_async.cuh - Asynchronous copies to shared memory ---------------===//
//
// Part of moe-opt. cp.async (sm_80 and later) for the kernels: inline PTX on
// the GPU, the CPU emulation's queued copies under MOE_EMU (moe_emu_async.h:
// a copy's destination is poison until the cp.async.wait_group that covers
// it). Before sm_80 the copies are synchronous and the waits do nothing.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_ASYNC_CUH
#define MOE_KERNELS_ASYNC_CUH

#include "moe_common.cuh"

namespace moe_k {
namespace async {

/// cp.async.cg.shared.global: 16 bytes from `src` to `dst` (both 16-byte
/// aligned), bypassing L1.
__device__ __forceinline__ void copy16(void *dst, const void *src) {
#ifdef MOE_EMU
  moe_emu::cp_async(dst, src, 16, 16);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr),
               "l"(src)
               : "memory");
#else
  *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
#endif
}

/// cp.async.commit_group: the copies issued since the last commit form a
/// group.
__device__ __forceinline__ void commit() {
#ifdef MOE_EMU
  moe_emu::cp_async_commit_group();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

/// cp.async.wait_group N: this thread's groups but the newest N have
/// landed (other threads' copies need a barrier after it).
template <int N> __device__ __forceinline__ void wait() {
#ifdef MOE_EMU
  moe_emu::cp_async_wait_group(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

} // namespace async
} // namespace moe_k

#endif // MOE_KERNELS_ASYNC_CUH
