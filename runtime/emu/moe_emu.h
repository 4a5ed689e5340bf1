//===- moe_emu.h - CUDA C++ on the CPU with real CUDA semantics ---*- C++ -*-===//
//
// Part of moe-opt. The header that kernel sources get instead of the CUDA
// headers when they are compiled by the host compiler with -DMOE_EMU:
//
//   g++ -std=c++17 -O2 -shared -fPIC -DMOE_EMU -I<this folder> k.cpp
//       -lboost_context
//
// It provides, with CUDA's names and semantics:
//  * keywords: __global__, __device__, __host__, __forceinline__,
//    __noinline__, __launch_bounds__(...), __align__(n), __constant__
//    (__restrict__ is native to g++; __shared__ is a compile error: use
//    MOE_SHARED / MOE_DYNAMIC_SHARED, which give per-block storage);
//  * assert() that fails the launch instead of aborting the process;
//  * threadIdx, blockIdx, blockDim, gridDim (per fiber), warpSize, dim3 and
//    the vector types (moe_emu_types.h);
//  * __syncthreads(_count/_and/_or), __syncwarp, fences, the warp shuffles,
//    votes, matches and reductions, atomics, clock64, __nanosleep, __trap;
//  * __half / __nv_bfloat16 (and the x2 pairs) with exact conversions and
//    arithmetic, and the float/integer intrinsics;
//  * moe_emu::mma_m16n8k16<T> (PTX mma.sync m16n8k16 with f32 accumulate,
//    T = __nv_bfloat16 or __half) and moe_emu::ldmatrix_x{1,2,4}[_trans];
//  * cp.async with its commit/wait groups, mbarriers and the bulk (TMA,
//    non-tensor) copy that completes on one (moe_emu_async.h);
//  * wgmma.mma_async from shared-memory descriptors with its fence,
//    commit and wait groups (moe_emu_wgmma.h);
//  * MOE_EMU_EXPORT_KERNEL(NAME), which defines the C entry point
//    moe_emu_launch_NAME of moe/runtime/KernelABI.h.
//
// Threads of a block run as cooperative fibers (moe_emu_runtime.h): barriers
// and warp collectives synchronise as on a GPU, and mismatches (a thread
// that exits while others wait, divergent barriers, a warp collective whose
// mask names an exited lane) are reported as launch errors, never hangs.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_EMU_H
#define MOE_EMU_H

#ifndef MOE_EMU
#define MOE_EMU 1
#endif

// Standard headers first: libstdc++ spells attributes as
// __attribute__((__noinline__)), which the __noinline__ macro below would
// break in headers included after it.
#include <algorithm>
#include <array>
#include <atomic>
#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "moe_emu_types.h"
#include "moe_emu_runtime.h"
#include "moe_emu_async.h"
#include "moe_emu_wgmma.h"

#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#ifndef __forceinline__
#define __forceinline__ __inline__ __attribute__((always_inline))
#endif
#ifndef __noinline__
#define __noinline__ __attribute__((noinline))
#endif
#define __launch_bounds__(...)
// CUDA's pragmas (#pragma unroll) mean nothing to the host compiler.
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
// __shared__ variables would be per thread here: say so at compile time.
#define __shared__ moe_emu_use_MOE_SHARED_or_MOE_DYNAMIC_SHARED_not___shared__

// A failed assert() in a kernel fails the launch (with the thread and the
// condition) instead of aborting the process, like a device-side assert
// that traps. (Including <assert.h> again after this header restores the
// aborting one.)
#undef assert
#ifdef NDEBUG
#define assert(e) ((void)0)
#else
#define assert(e)                                                              \
  ((e) ? (void)0                                                               \
       : ::moe_emu::detail::assert_fail(#e, __FILE__, __LINE__,                \
                                        __PRETTY_FUNCTION__))
#endif

#endif // MOE_EMU_H
