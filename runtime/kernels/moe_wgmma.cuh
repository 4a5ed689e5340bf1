//===- moe_wgmma.cuh - Warpgroup MMA (sm_90a) -----------------------------===//
//
// Part of moe-opt. wgmma for the kernels: inline PTX under NVRTC for
// sm_90a, the CPU emulation under MOE_EMU (moe_emu_wgmma.h: the same
// descriptors, fragment layout and asynchrony). Any other target gets a
// compile-time error when a wrapper is instantiated.
//
// Shared-memory operands are K-major tiles without swizzle, stored as core
// matrices (8 rows of 16 contiguous bytes, PTX ISA "Shared Memory Matrix
// Layout"): CoreTile<Rows, Cols> places element (r, k) of a Rows x Cols
// tile (k contiguous) in core matrix (r / 8, k / 8), core matrices of one
// row group adjacent in k (LBO = 128 bytes), row groups Cols / 8 core
// matrices apart (SBO = Cols * 16 bytes).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_WGMMA_CUH
#define MOE_KERNELS_WGMMA_CUH

#include "moe_common.cuh"

#if defined(MOE_EMU) ||                                                        \
    (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
#define MOE_HAS_WGMMA 1
#else
#define MOE_HAS_WGMMA 0
#endif

namespace moe_k {
namespace wgmma {

/// Element offsets of the no-swizzle K-major core-matrix layout of a Rows x
/// Cols tile of 16-bit elements (k = the Cols dimension, contiguous in
/// groups of 8).
template <int Rows, int Cols> struct CoreTile {
  static_assert(Rows % 8 == 0 && Cols % 8 == 0, "whole core matrices");
  static constexpr int Elements = Rows * Cols;
  /// Bytes between core matrices adjacent in k, and in rows.
  static constexpr unsigned LBO = 128, SBO = Cols * 16;
  /// Element (r, c); c .. c + 7 are contiguous when c % 8 == 0.
  static __device__ __forceinline__ int at(int r, int c) {
    return ((r / 8) * (Cols / 8) + c / 8) * 64 + (r % 8) * 8 + c % 8;
  }
};

/// The shared-window address of `p` (cvta.to.shared).
__device__ __forceinline__ unsigned sharedAddress(const void *p) {
#ifdef MOE_EMU
  return moe_emu::shared_address(p);
#else
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
#endif
}

/// A no-swizzle matrix descriptor for the operand that starts at `p`
/// (16-byte aligned, in shared memory): start >> 4 in bits 0-13, LBO >> 4
/// in 16-29, SBO >> 4 in 32-45, base offset and swizzle mode 0.
__device__ __forceinline__ unsigned long long descriptor(const void *p,
                                                         unsigned lbo,
                                                         unsigned sbo) {
  return static_cast<unsigned long long>((sharedAddress(p) >> 4) & 0x3fffu) |
         static_cast<unsigned long long>((lbo >> 4) & 0x3fffu) << 16 |
         static_cast<unsigned long long>((sbo >> 4) & 0x3fffu) << 32;
}

/// Instantiated by every wrapper: an error on targets without wgmma.
template <int I> struct Target {
  static_assert(MOE_HAS_WGMMA && I >= 0,
                "wgmma needs sm_90a (compile with --gemm=pipelined or mma "
                "for other architectures)");
};

/// wgmma.fence.sync.aligned: orders this thread's accumulator register
/// accesses before the wgmma.mma_async that follow.
template <int Dummy = 0> __device__ __forceinline__ void fence() {
  (void)Target<Dummy>{};
#ifdef MOE_EMU
  moe_emu::wgmma_fence();
#elif MOE_HAS_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

/// fence.proxy.async.shared::cta: this thread's earlier writes to shared
/// memory (st.shared, completed cp.async) become visible to the async proxy
/// that wgmma.mma_async reads its operands through; issued by the writers
/// before the barrier that precedes the wgmma. (The emulation has one
/// proxy: nothing to do.)
template <int Dummy = 0> __device__ __forceinline__ void fenceSharedWrites() {
  (void)Target<Dummy>{};
#if !defined(MOE_EMU) && MOE_HAS_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// wgmma.commit_group.sync.aligned.
template <int Dummy = 0> __device__ __forceinline__ void commit() {
  (void)Target<Dummy>{};
#ifdef MOE_EMU
  moe_emu::wgmma_commit_group();
#elif MOE_HAS_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

/// wgmma.wait_group.sync.aligned N: this thread's groups but the newest N
/// have completed. Their accumulators need fenceOperands before use.
template <int N> __device__ __forceinline__ void wait() {
  (void)Target<N>{};
#ifdef MOE_EMU
  moe_emu::wgmma_wait_group(N);
#elif MOE_HAS_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

/// Keeps the compiler from moving accesses of the accumulators `d` across
/// this point (after a wait: their values exist only from here on).
__device__ __forceinline__ void fenceOperands(float (&d)[32]) {
#if !defined(MOE_EMU) && MOE_HAS_WGMMA
#pragma unroll
  for (int i = 0; i < 32; ++i)
    asm volatile("" : "+f"(d[i])::"memory");
#else
  (void)d;
#endif
}

/// d = a * b (+ d when `accumulate`): wgmma.mma_async.sync.aligned.
/// m64n64k16.f32.T.T, T = bf16 or f16; a (64 x 16) and b (64 columns x 16,
/// k contiguous) by descriptor. d[4 c + i]: row 16 (warp % 4) + lane / 4
/// (+ 8 for i >= 2), column 8 c + 2 (lane % 4) + (i & 1).
template <typename T>
__device__ __forceinline__ void m64n64k16(float (&d)[32], unsigned long long a,
                                          unsigned long long b,
                                          bool accumulate) {
  (void)Target<static_cast<int>(sizeof(T))>{};
#ifdef MOE_EMU
  moe_emu::wgmma_mma_async(d, 64, IsBF16<T>::value ? 0 : 1, a, b, accumulate);
#elif MOE_HAS_WGMMA
#define MOE_WGMMA_M64N64K16(TY)                                                \
  asm volatile(                                                                \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                             \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "              \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, "     \
      "%15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, " \
      "%29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"                          \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]),            \
        "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),            \
        "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),       \
        "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),       \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),       \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),       \
        "+f"(d[30]), "+f"(d[31])                                               \
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate))                      \
      : "memory")
  if constexpr (IsBF16<T>::value)
    MOE_WGMMA_M64N64K16("bf16");
  else
    MOE_WGMMA_M64N64K16("f16");
#undef MOE_WGMMA_M64N64K16
#endif
}

} // namespace wgmma
} // namespace moe_k

#endif // MOE_KERNELS_WGMMA_CUH
