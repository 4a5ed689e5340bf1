//===- moe_emu_runtime.h - Blocks of threads as cooperative fibers -*- C++ -*-===//
//
// Part of moe-opt. The execution half of the CPU emulation of CUDA C++
// (runtime/emu/moe_emu.h includes it). A launch runs the blocks of the grid
// one after the other in the calling OS thread (blockIdx.x fastest, then y,
// then z: deterministic); a block runs as blockDim.x*y*z Boost.Context
// fibers, one per CUDA thread, scheduled cooperatively in the order of the
// linear thread index. A thread runs until it blocks:
//
//  * at __syncthreads, which completes when every thread of the block is
//    there, at the same call site (else: "divergent barriers"). Stricter
//    than a GPU, which releases a barrier for threads that exited: a thread
//    that exits while others wait, or a barrier reached after a thread
//    exited, is reported as a deadlock (an early `return` before a barrier
//    is a latent hang as soon as it moves into a loop);
//  * at a warp collective (__shfl*_sync, __ballot_sync, __syncwarp, mma,
//    ...), which completes when every lane named in its mask is at the same
//    collective with the same mask; only then are values exchanged. A mask
//    that names an exited lane is an error (a GPU would read undefined
//    values). Lanes beyond the end of a partial last warp do not exist: mask
//    bits for them are ignored, and a shuffle that reads from them (or from
//    any lane outside the mask) gets a poison value (NaN as float);
//
// When no thread can run and some have not finished, the launch fails with
// a report of where every thread waits: no hang. Errors never unwind the
// fibers: the launch abandons them (their stacks are reused) and returns the
// message; no C++ exception leaves a launch.
//
// Everything is header-only (inline functions and variables) so that a
// kernel compiled with `g++ -shared -DMOE_EMU` needs only libboost_context.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_EMU_RUNTIME_H
#define MOE_EMU_RUNTIME_H

#include "moe_emu_types.h"

#include <boost/context/fiber.hpp>
#include <boost/context/preallocated.hpp>
#include <boost/context/stack_context.hpp>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

// Hidden: every kernel module keeps its own scheduler state. (Default
// visibility would make the inline variables and function-local statics
// STB_GNU_UNIQUE symbols, shared by every module of the process and
// blocking dlclose.)
#pragma GCC visibility push(hidden)

constexpr int warpSize = 32;

namespace moe_emu {

/// Limits checked at launch, as on an sm_90 GPU (H100/H200).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDimXY = 1024, kMaxBlockDimZ = 64;
constexpr unsigned kMaxGridDimYZ = 65535;
/// Shared memory per block (static + dynamic): the opt-in maximum of
/// sm_90, 227 KiB. MOE_EMU_MAX_SHARED_BYTES overrides it.
constexpr size_t kDefaultSharedLimit = 232448;

namespace detail {

using fiber = boost::context::fiber;

enum class St : unsigned char {
  Fresh,   // not started
  Ready,   // runnable
  Running, // the current fiber
  Barrier, // waits at __syncthreads
  Warp,    // waits at a warp collective
  Exited,  // returned from the kernel
  Failed,  // raised the launch's error; never resumed
};

enum class Op : unsigned char {
  SyncWarp,
  ShflIdx,
  ShflUp,
  ShflDown,
  ShflXor,
  Ballot,
  Any,
  All,
  Uni,
  MatchAny,
  MatchAll,
  ReduceAdd,
  ReduceMin,
  ReduceMax,
  ReduceAnd,
  ReduceOr,
  ReduceXor,
  Mma,
  LdMatrix,
};

inline const char *op_name(Op op) {
  switch (op) {
  case Op::SyncWarp: return "__syncwarp";
  case Op::ShflIdx: return "__shfl_sync";
  case Op::ShflUp: return "__shfl_up_sync";
  case Op::ShflDown: return "__shfl_down_sync";
  case Op::ShflXor: return "__shfl_xor_sync";
  case Op::Ballot: return "__ballot_sync";
  case Op::Any: return "__any_sync";
  case Op::All: return "__all_sync";
  case Op::Uni: return "__uni_sync";
  case Op::MatchAny: return "__match_any_sync";
  case Op::MatchAll: return "__match_all_sync";
  case Op::ReduceAdd: return "__reduce_add_sync";
  case Op::ReduceMin: return "__reduce_min_sync";
  case Op::ReduceMax: return "__reduce_max_sync";
  case Op::ReduceAnd: return "__reduce_and_sync";
  case Op::ReduceOr: return "__reduce_or_sync";
  case Op::ReduceXor: return "__reduce_xor_sync";
  case Op::Mma: return "mma.sync.m16n8k16";
  case Op::LdMatrix: return "ldmatrix.sync";
  }
  return "?";
}

/// What a lane brings to a warp collective, and what it gets back.
struct WarpSlot {
  Op op = Op::SyncWarp;
  unsigned mask = 0;
  const char *file = "";
  int line = 0;
  uint64_t value = 0; // the lane's operand (shfl value, predicate, ...)
  int arg = 0;        // srcLane / delta / laneMask; signedness; ldmatrix num
  int width = 32;     // shfl width; mma element kind; ldmatrix .trans
  unsigned size = 0;  // bytes of `value`
  const void *ptr = nullptr;
  uint32_t regs[10] = {}; // mma: a[4], b[2], c[4] (bits of the floats)
  uint64_t result = 0;
  int pred = 0;
  uint32_t out[4] = {};
};

struct Block;

/// A cp.async (or bulk copy) in flight (moe_emu_async.h): its source bytes
/// are read at issue, its destination written only when it completes.
struct AsyncCopy {
  unsigned group;     // cp.async group (~0u until commit_group)
  int mbar;           // bulk copies: the mbarrier it completes tx on
  unsigned char *dst; // in the block's shared memory
  unsigned bytes;     // destination bytes (the tail past the source's is 0)
  unsigned char small[16];        // cp.async (up to 16 bytes)
  std::vector<unsigned char> big; // bulk copies
};
/// An mbarrier object's state (the 8 bytes in shared memory hold a handle).
struct MBarrier {
  const void *addr;
  unsigned expected, pending; // arrivals per phase, still to come
  long long tx;               // transaction bytes still to come
  unsigned phase;             // completed phases
};

/// A wgmma.mma_async in flight (moe_emu_wgmma.h): computed from shared
/// memory and written to the thread's accumulators when a
/// wgmma.wait_group completes its group.
struct WgmmaOp {
  unsigned group;       // wgmma group (~0u until commit_group)
  uint64_t descA, descB; // shared-memory matrix descriptors
  int n, kind;          // N of m64nNk16; 0 bf16, 1 f16
  bool scaleD;          // D = A * B + D (else D = A * B)
  bool chained;         // C: handed on by an earlier op in flight
  float *d;             // this thread's N / 2 accumulators
  std::vector<float> c; // C (captured at issue unless chained)
  const char *file;
  int line;
};

/// One CUDA thread.
struct Thread {
  ::uint3 tid{0, 0, 0};
  ::uint3 bid{0, 0, 0};
  ::dim3 bdim, gdim;
  unsigned linear = 0, lane = 0, warp = 0;
  St state = St::Fresh;
  Block *block = nullptr;
  const char *barFile = "";
  int barLine = 0;
  int barValue = 0;
  // cp.async in flight, in issue order from asyncHead on, and the groups
  // committed so far (moe_emu_async.h)
  std::vector<AsyncCopy> asyncCopies;
  size_t asyncHead = 0;
  unsigned asyncCommitted = 0;
  // wgmma.mma_async in flight, their committed groups, and whether a
  // wgmma.fence came before the first one (moe_emu_wgmma.h)
  std::vector<WgmmaOp> wgmmaOps;
  unsigned wgmmaCommitted = 0;
  bool wgmmaFenced = false;
  WarpSlot ws;
  // Fibers are managed by hand: a failed launch abandons suspended fibers
  // instead of unwinding them, so their destructors must never run then.
  union {
    fiber fib;
  };
  union {
    fiber sink;
  };
  Thread() {
    new (&fib) fiber();
    new (&sink) fiber();
  }
  ~Thread() {}
};

struct SharedDecl {
  const void *site;
  size_t offset, bytes;
  const char *name;
};

/// One block of the launch.
struct Block {
  Thread *threads = nullptr;
  unsigned n = 0, nwarps = 0;
  ::uint3 bid{0, 0, 0};
  const char *kernel = "";
  unsigned exited = 0;
  // __syncthreads
  unsigned atBarrier = 0;
  const char *barFile = "";
  int barLine = 0;
  int barKind = 0;
  int barAccum = 0;
  // warps: which lanes exist, which exited, which wait at a collective
  unsigned warpExist[32] = {};
  unsigned warpExited[32] = {};
  unsigned warpWaiting[32] = {};
  // shared memory: dynamic at offset 0, static declarations after it
  unsigned char *smem = nullptr;
  size_t smemLimit = 0, dynBytes = 0, smemTop = 0;
  std::vector<SharedDecl> decls;
  // bulk copies in flight and mbarriers (moe_emu_async.h)
  std::vector<AsyncCopy> bulkCopies;
  std::vector<MBarrier> mbarriers;
  // progress and errors
  uint64_t events = 0;
  bool failed = false;
  std::string error;
};

inline thread_local Thread *g_current = nullptr;

[[noreturn]] inline void no_context(const char *what) {
  std::fprintf(stderr,
               "moe_emu: %s used outside a kernel launch of the CPU "
               "emulation\n",
               what);
  std::abort();
}

inline Thread &cur(const char *what = "a CUDA device builtin") {
  Thread *t = g_current;
  if (__builtin_expect(t == nullptr, 0))
    no_context(what);
  return *t;
}

inline std::string format(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
inline std::string format(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

inline std::string describe_thread(const Thread &t) {
  return format("thread (%u,%u,%u) [lane %u of warp %u]", t.tid.x, t.tid.y,
                t.tid.z, t.lane, t.warp);
}

/// Suspends the calling fiber and returns to the scheduler.
inline void park(Thread &t) { t.sink = std::move(t.sink).resume(); }

/// Ends the launch with `msg` (attributed to the calling thread). Never
/// returns: the fiber is abandoned.
[[noreturn]] inline void fail(const std::string &msg) {
  Thread *t = g_current;
  if (!t) {
    std::fprintf(stderr, "moe_emu: %s\n", msg.c_str());
    std::abort();
  }
  Block &b = *t->block;
  if (!b.failed) {
    b.failed = true;
    b.error = describe_thread(*t) + ": " + msg;
  }
  t->state = St::Failed;
  park(*t);
  std::abort(); // unreachable: failed launches never resume their fibers
}

/// Lets the other threads run (spin loops on atomics, __nanosleep).
inline void yield() {
  Thread *t = g_current;
  if (!t)
    return;
  t->state = St::Ready;
  park(*t);
}

inline std::string site(const char *file, int line) {
  return format("%s:%d", file, line);
}

//===----------------------------------------------------------------------===//
// __syncthreads
//===----------------------------------------------------------------------===//

enum BarrierKind { kBarSync = 0, kBarCount = 1, kBarAnd = 2, kBarOr = 3 };

inline const char *barrier_name(int kind) {
  switch (kind) {
  case kBarCount: return "__syncthreads_count";
  case kBarAnd: return "__syncthreads_and";
  case kBarOr: return "__syncthreads_or";
  default: return "__syncthreads";
  }
}

inline const Thread *first_exited(const Block &b) {
  for (unsigned i = 0; i < b.n; ++i)
    if (b.threads[i].state == St::Exited)
      return &b.threads[i];
  return nullptr;
}

inline int barrier(int kind, int pred, const char *file, int line) {
  Thread &t = cur("__syncthreads");
  Block &b = *t.block;
  if (b.exited) {
    const Thread *e = first_exited(b);
    fail(format("deadlock: %s at %s:%d can never complete: %u thread(s) of "
                "the block already exited (e.g. thread (%u,%u,%u))",
                barrier_name(kind), file, line, b.exited, e ? e->tid.x : 0,
                e ? e->tid.y : 0, e ? e->tid.z : 0));
  }
  if (b.atBarrier == 0) {
    b.barFile = file;
    b.barLine = line;
    b.barKind = kind;
    b.barAccum = kind == kBarAnd ? 1 : 0;
  } else if (b.barLine != line || std::strcmp(b.barFile, file) != 0 ||
             b.barKind != kind) {
    fail(format("divergent barriers: this thread reached %s at %s:%d while "
                "%u thread(s) wait at %s at %s:%d (every thread of a block "
                "must reach the same __syncthreads)",
                barrier_name(kind), file, line, b.atBarrier,
                barrier_name(b.barKind), b.barFile, b.barLine));
  }
  const int p = pred != 0;
  if (kind == kBarCount)
    b.barAccum += p;
  else if (kind == kBarAnd)
    b.barAccum &= p;
  else if (kind == kBarOr)
    b.barAccum |= p;
  t.barFile = file;
  t.barLine = line;
  ++b.atBarrier;
  ++b.events;
  if (b.atBarrier == b.n) {
    const int result = b.barAccum;
    for (unsigned i = 0; i < b.n; ++i) {
      Thread &o = b.threads[i];
      if (o.state == St::Barrier) {
        o.state = St::Ready;
        o.barValue = result;
      }
    }
    b.atBarrier = 0;
    return result;
  }
  t.state = St::Barrier;
  park(t);
  return t.barValue;
}

//===----------------------------------------------------------------------===//
// Warp collectives
//===----------------------------------------------------------------------===//

/// What an undefined read returns: a shuffle from a lane that does not take
/// part (not in the mask, or beyond a partial warp) gets this pattern, a
/// NaN as float or double, so that using it shows.
inline uint64_t poison(unsigned size) {
  switch (size) {
  case 1: return 0xffu;
  case 2: return 0xffbau;
  case 4: return 0xffbadbadu;
  default: return 0xfffbadbadbadbadbull;
  }
}

inline void complete_shfl(Thread *base, unsigned eff) {
  for (unsigned m = eff; m; m &= m - 1) {
    const int lane = __builtin_ctz(m);
    WarpSlot &s = base[lane].ws;
    // PTX ISA, shfl.sync: c = ((32 - width) << 8) | clamp, with clamp 0 for
    // .up and 0x1f otherwise.
    const int segmask = (32 - s.width) & 0x1f;
    const int cval = s.op == Op::ShflUp ? 0 : 0x1f;
    const int bval = s.arg & 0x1f;
    const int maxLane = (lane & segmask) | (cval & ~segmask);
    const int minLane = lane & segmask;
    int j = lane;
    bool pval = false;
    switch (s.op) {
    case Op::ShflUp:
      j = lane - bval;
      pval = j >= maxLane;
      break;
    case Op::ShflDown:
      j = lane + bval;
      pval = j <= maxLane;
      break;
    case Op::ShflXor:
      j = lane ^ bval;
      pval = j <= maxLane;
      break;
    default: // ShflIdx
      j = minLane | (bval & ~segmask);
      pval = j <= maxLane;
      break;
    }
    if (!pval)
      j = lane;
    if (j == lane)
      s.result = s.value;
    else if ((eff >> j) & 1u)
      s.result = base[j].ws.value;
    else
      s.result = poison(s.size);
  }
}

/// WarpSlot::width of an mma: 0 bf16, 1 f16 (m16n8k16), kMmaE4M3 (m16n8k32).
constexpr int kMmaE4M3 = 2;

inline float mma_element(uint16_t bits, int kind) {
  return kind == 1 ? half_to_float(bits) : bf16_to_float(bits);
}

/// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 with the
/// fragment layouts of the PTX ISA, section "Matrix Fragments for
/// mma.m16n8k16 with floating point type" (9.7.14.5.8 in PTX ISA 9.0,
/// #warp-level-matrix-fragment-mma-16816-float):
///   groupID = laneid >> 2, threadID_in_group = laneid % 4;
///   A (16x16, .f16x2 registers, elements a0..a7 low to high):
///     row = groupID for a0,a1,a4,a5, groupID + 8 otherwise;
///     col = threadID_in_group * 2 + (i & 1), + 8 for i >= 4;
///   B (16x8, b0..b3): row = threadID_in_group * 2 + (i & 1), + 8 for
///     i >= 2; col = groupID;
///   C/D (16x8, c0..c3): row = groupID for i < 2, groupID + 8 otherwise;
///     col = threadID_in_group * 2 + (i & 1).
/// The products are exact and summed in double, then rounded once to f32
/// (the hardware's accumulation order and rounding are unspecified: for
/// inputs whose sums are exact in f32 the result is bit-identical).
/// The exact value of an FP8 E4M3FN code (the tensor cores' operand
/// decoding: bias 7, subnormals m * 2^-9, S.1111.111 NaN).
inline double e4m3_value(uint32_t code) {
  const uint32_t e = (code >> 3) & 15u, m = code & 7u;
  double v = e == 15u && m == 7u ? std::nan("")
             : e == 0u           ? std::ldexp(static_cast<double>(m), -9)
                       : std::ldexp(static_cast<double>(8u + m),
                                    static_cast<int>(e) - 10);
  return (code & 0x80u) ? -v : v;
}

/// mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 (sm_89 and later)
/// with the fragment layouts of the PTX ISA, section "Matrix Fragments for
/// mma.m16n8k32" (8-bit types; #warp-level-matrix-fragment-mma-16832):
///   A (16x32, four E4M3 codes per register, a0..a15 low byte first):
///     row = groupID for a0..a3 and a8..a11, groupID + 8 otherwise;
///     col = threadID_in_group * 4 + (i & 3), + 16 for i >= 8;
///   B (32x8, b0..b7): row = threadID_in_group * 4 + (i & 3), + 16 for
///     i >= 4; col = groupID;
///   C/D as for m16n8k16.
/// Codes decode exactly; products (exact in double) are summed in double
/// and rounded once to f32 with C, as complete_mma does for bf16.
inline void complete_mma_e4m3(Thread *base) {
  double A[16][32], B[32][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const uint32_t *r = base[lane].ws.regs;
    const int g = lane >> 2, tq = lane & 3;
    for (int i = 0; i < 16; ++i) {
      const uint32_t code = (r[i / 4] >> (8 * (i & 3))) & 0xFFu;
      const int row = (i < 4 || (i >= 8 && i < 12)) ? g : g + 8;
      const int col = tq * 4 + (i & 3) + (i >= 8 ? 16 : 0);
      A[row][col] = e4m3_value(code);
    }
    for (int i = 0; i < 8; ++i) {
      const uint32_t code = (r[4 + i / 4] >> (8 * (i & 3))) & 0xFFu;
      B[tq * 4 + (i & 3) + (i >= 4 ? 16 : 0)][g] = e4m3_value(code);
    }
    for (int i = 0; i < 4; ++i)
      C[i < 2 ? g : g + 8][tq * 2 + (i & 1)] = __uint_as_float(r[6 + i]);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, tq = lane & 3;
    for (int i = 0; i < 4; ++i) {
      const int m = i < 2 ? g : g + 8, n = tq * 2 + (i & 1);
      double acc = 0.0;
      for (int k = 0; k < 32; ++k)
        acc += A[m][k] * B[k][n];
      base[lane].ws.out[i] = __float_as_uint(static_cast<float>(acc + C[m][n]));
    }
  }
}

inline void complete_mma(Thread *base) {
  float A[16][16], B[16][8];
  double C[16][8];
  const int kind = base[0].ws.width;
  if (kind == kMmaE4M3) {
    complete_mma_e4m3(base);
    return;
  }
  for (int lane = 0; lane < 32; ++lane) {
    const uint32_t *r = base[lane].ws.regs;
    const int g = lane >> 2, tq = lane & 3;
    for (int i = 0; i < 8; ++i) {
      const uint16_t bits =
          static_cast<uint16_t>(r[i / 2] >> (16 * (i & 1)));
      const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
      const int col = tq * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      A[row][col] = mma_element(bits, kind);
    }
    for (int i = 0; i < 4; ++i) {
      const uint16_t bits =
          static_cast<uint16_t>(r[4 + i / 2] >> (16 * (i & 1)));
      const int row = tq * 2 + (i & 1) + (i >= 2 ? 8 : 0);
      B[row][g] = mma_element(bits, kind);
    }
    for (int i = 0; i < 4; ++i) {
      const int row = i < 2 ? g : g + 8;
      const int col = tq * 2 + (i & 1);
      C[row][col] = __uint_as_float(r[6 + i]);
    }
  }
  float D[16][8];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double acc = 0.0;
      for (int k = 0; k < 16; ++k)
        acc += static_cast<double>(A[m][k]) * static_cast<double>(B[k][n]);
      D[m][n] = static_cast<float>(acc + C[m][n]);
    }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, tq = lane & 3;
    for (int i = 0; i < 4; ++i)
      base[lane].ws.out[i] =
          __float_as_uint(D[i < 2 ? g : g + 8][tq * 2 + (i & 1)]);
  }
}

/// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.b16, PTX ISA section
/// "Warp-level matrix load instruction: ldmatrix": lanes 8m..8m+7 give the
/// row addresses of matrix m; lane l receives row l/4, columns 2(l%4) and
/// 2(l%4)+1 of each matrix (of its transpose with .trans).
inline void complete_ldmatrix(Thread *base) {
  const int num = base[0].ws.arg;
  const bool trans = base[0].ws.width != 0;
  for (int lane = 0; lane < 32; ++lane) {
    for (int m = 0; m < num; ++m) {
      uint32_t v;
      if (!trans) {
        const unsigned char *row =
            static_cast<const unsigned char *>(base[m * 8 + lane / 4].ws.ptr);
        std::memcpy(&v, row + 4 * (lane % 4), 4);
      } else {
        uint16_t lo, hi;
        const unsigned char *r0 = static_cast<const unsigned char *>(
            base[m * 8 + 2 * (lane % 4)].ws.ptr);
        const unsigned char *r1 = static_cast<const unsigned char *>(
            base[m * 8 + 2 * (lane % 4) + 1].ws.ptr);
        std::memcpy(&lo, r0 + 2 * (lane / 4), 2);
        std::memcpy(&hi, r1 + 2 * (lane / 4), 2);
        v = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
      }
      base[lane].ws.out[m] = v;
    }
  }
}

inline void complete(Thread *base, unsigned eff, Op op) {
  switch (op) {
  case Op::SyncWarp:
    return;
  case Op::ShflIdx:
  case Op::ShflUp:
  case Op::ShflDown:
  case Op::ShflXor:
    complete_shfl(base, eff);
    return;
  case Op::Ballot:
  case Op::Any:
  case Op::All:
  case Op::Uni: {
    unsigned bits = 0;
    for (unsigned m = eff; m; m &= m - 1) {
      int l = __builtin_ctz(m);
      if (base[l].ws.value)
        bits |= 1u << l;
    }
    uint64_t r = bits;
    if (op == Op::Any)
      r = bits != 0;
    else if (op == Op::All)
      r = bits == eff;
    else if (op == Op::Uni)
      r = bits == 0 || bits == eff;
    for (unsigned m = eff; m; m &= m - 1)
      base[__builtin_ctz(m)].ws.result = r;
    return;
  }
  case Op::MatchAny:
    for (unsigned m = eff; m; m &= m - 1) {
      int l = __builtin_ctz(m);
      unsigned same = 0;
      for (unsigned k = eff; k; k &= k - 1) {
        int o = __builtin_ctz(k);
        if (base[o].ws.value == base[l].ws.value)
          same |= 1u << o;
      }
      base[l].ws.result = same;
    }
    return;
  case Op::MatchAll: {
    bool all = true;
    const uint64_t v0 = base[__builtin_ctz(eff)].ws.value;
    for (unsigned m = eff; m; m &= m - 1)
      all = all && base[__builtin_ctz(m)].ws.value == v0;
    for (unsigned m = eff; m; m &= m - 1) {
      WarpSlot &s = base[__builtin_ctz(m)].ws;
      s.result = all ? eff : 0u;
      s.pred = all;
    }
    return;
  }
  case Op::ReduceAdd:
  case Op::ReduceMin:
  case Op::ReduceMax:
  case Op::ReduceAnd:
  case Op::ReduceOr:
  case Op::ReduceXor: {
    const bool isSigned = base[__builtin_ctz(eff)].ws.arg != 0;
    uint32_t acc = static_cast<uint32_t>(base[__builtin_ctz(eff)].ws.value);
    for (unsigned m = eff & (eff - 1); m; m &= m - 1) {
      uint32_t v = static_cast<uint32_t>(base[__builtin_ctz(m)].ws.value);
      switch (op) {
      case Op::ReduceAdd: acc += v; break;
      case Op::ReduceAnd: acc &= v; break;
      case Op::ReduceOr: acc |= v; break;
      case Op::ReduceXor: acc ^= v; break;
      case Op::ReduceMin:
        if (isSigned ? static_cast<int32_t>(v) < static_cast<int32_t>(acc)
                     : v < acc)
          acc = v;
        break;
      default: // ReduceMax
        if (isSigned ? static_cast<int32_t>(v) > static_cast<int32_t>(acc)
                     : v > acc)
          acc = v;
        break;
      }
    }
    for (unsigned m = eff; m; m &= m - 1)
      base[__builtin_ctz(m)].ws.result = acc;
    return;
  }
  case Op::Mma:
    complete_mma(base);
    return;
  case Op::LdMatrix:
    complete_ldmatrix(base);
    return;
  }
}

/// The calling lane arrives at the collective described by its `ws`;
/// returns once every lane of the mask has arrived and the results are in
/// each lane's `ws`.
inline void warp_collective(Thread &t) {
  Block &b = *t.block;
  WarpSlot &s = t.ws;
  const unsigned bit = 1u << t.lane;
  if (!(s.mask & bit))
    fail(format("%s at %s:%d: the calling lane %u is not in its mask 0x%08x",
                op_name(s.op), s.file, s.line, t.lane, s.mask));
  const unsigned exist = b.warpExist[t.warp];
  if ((s.op == Op::Mma || s.op == Op::LdMatrix) && exist != 0xffffffffu)
    fail(format("%s at %s:%d needs all 32 lanes of the warp; warp %u of "
                "this block has only %d thread(s)",
                op_name(s.op), s.file, s.line, t.warp, __builtin_popcount(exist)));
  const unsigned eff = s.mask & exist;
  if (const unsigned gone = eff & b.warpExited[t.warp])
    fail(format("deadlock: %s(mask 0x%08x) at %s:%d waits for lane(s) 0x%08x "
                "of warp %u, which already exited",
                op_name(s.op), s.mask, s.file, s.line, gone, t.warp));
  t.state = St::Warp;
  ++b.events;
  unsigned &waiting = b.warpWaiting[t.warp];
  waiting |= bit;
  Thread *base = b.threads + 32u * t.warp;
  bool ready = (waiting & eff) == eff;
  for (unsigned m = eff; ready && m; m &= m - 1) {
    const Thread &o = base[__builtin_ctz(m)];
    ready = o.ws.op == s.op && o.ws.mask == s.mask;
  }
  if (!ready) {
    park(t); // resumed by the lane that completes the collective
    return;
  }
  complete(base, eff, s.op);
  waiting &= ~eff;
  for (unsigned m = eff & ~bit; m; m &= m - 1)
    base[__builtin_ctz(m)].state = St::Ready;
  t.state = St::Running;
}

inline void check_width(int width, Op op, const char *file, int line) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail(format("%s at %s:%d: width %d is not a power of two in [1, 32]",
                op_name(op), file, line, width));
}

template <typename T>
inline T shfl(Op op, unsigned mask, T var, int b, int width, const char *file,
              int line) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                "shuffles move values of at most 8 bytes");
  Thread &t = cur(op_name(op));
  check_width(width, op, file, line);
  WarpSlot &s = t.ws;
  s.op = op;
  s.mask = mask;
  s.file = file;
  s.line = line;
  s.value = 0;
  std::memcpy(&s.value, &var, sizeof(T));
  s.arg = b;
  s.width = width;
  s.size = sizeof(T);
  warp_collective(t);
  T r;
  std::memcpy(&r, &s.result, sizeof(T));
  return r;
}

inline uint64_t simple_collective(Op op, unsigned mask, uint64_t value,
                                  unsigned size, int arg, const char *file,
                                  int line, int *pred = nullptr) {
  Thread &t = cur(op_name(op));
  WarpSlot &s = t.ws;
  s.op = op;
  s.mask = mask;
  s.file = file;
  s.line = line;
  s.value = value;
  s.size = size;
  s.arg = arg;
  s.width = 32;
  warp_collective(t);
  if (pred)
    *pred = s.pred;
  return s.result;
}

//===----------------------------------------------------------------------===//
// Shared memory
//===----------------------------------------------------------------------===//

template <typename T, size_t N> using array_t = T[N];

/// Poison for fresh shared memory: all-ones bytes (NaN as f32/bf16/f16,
/// -1 as an integer), so that reading before writing shows.
constexpr unsigned char kSharedPoison = 0xff;

/// The block's storage of the declaration at `site` (the address of a
/// static local of the declaring function, one per template instance):
/// allocated by the first thread that executes the declaration, in
/// execution order, after the dynamic shared memory.
inline void *shared_alloc(const void *declSite, size_t bytes, size_t align,
                          const char *name) {
  Thread &t = cur("MOE_SHARED");
  Block &b = *t.block;
  for (const SharedDecl &d : b.decls)
    if (d.site == declSite)
      return b.smem + d.offset;
  if (align < 16)
    align = 16;
  const size_t offset = (b.smemTop + align - 1) / align * align;
  if (offset + bytes > b.smemLimit)
    fail(format("shared memory overflow: MOE_SHARED %s of %zu bytes needs "
                "%zu bytes in all (%zu dynamic), over the limit of %zu bytes",
                name, bytes, offset + bytes, b.dynBytes, b.smemLimit));
  std::memset(b.smem + offset, kSharedPoison, bytes);
  b.decls.push_back(SharedDecl{declSite, offset, bytes, name});
  b.smemTop = offset + bytes;
  return b.smem + offset;
}

inline void *dynamic_shared() { return cur("MOE_DYNAMIC_SHARED").block->smem; }

//===----------------------------------------------------------------------===//
// Fiber stacks
//===----------------------------------------------------------------------===//

inline size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

/// Stack bytes per thread: MOE_EMU_STACK_KB (default 256 KiB).
inline size_t stack_bytes() {
  static const size_t bytes = [] {
    size_t kb = 256;
    if (const char *e = std::getenv("MOE_EMU_STACK_KB")) {
      long v = std::atol(e);
      if (v >= 16 && v <= 65536)
        kb = static_cast<size_t>(v);
    }
    size_t b = kb * 1024;
    return (b + page_size() - 1) / page_size() * page_size();
  }();
  return bytes;
}

/// `count` stacks, each above a PROT_NONE guard page (an overflow faults
/// instead of corrupting the neighbouring stack).
struct StackRegion {
  unsigned char *base = nullptr;
  size_t count = 0, stride = 0, size = 0;
  void *top(size_t i) const { return base + i * stride + stride; }
};

struct StackPool {
  std::mutex mu;
  std::vector<StackRegion> free;
  ~StackPool() {
    for (StackRegion &r : free)
      munmap(r.base, r.count * r.stride);
  }
  bool acquire(size_t count, StackRegion &out) {
    const size_t size = stack_bytes();
    {
      std::lock_guard<std::mutex> lock(mu);
      for (size_t i = 0; i < free.size(); ++i)
        if (free[i].count >= count && free[i].size == size) {
          out = free[i];
          free.erase(free.begin() + static_cast<long>(i));
          return true;
        }
    }
    size_t cap = 32;
    while (cap < count)
      cap *= 2;
    const size_t guard = page_size(), stride = size + guard;
    void *p = mmap(nullptr, cap * stride, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      return false;
    StackRegion r;
    r.base = static_cast<unsigned char *>(p);
    r.count = cap;
    r.stride = stride;
    r.size = size;
    for (size_t i = 0; i < cap; ++i)
      mprotect(r.base + i * stride, guard, PROT_NONE);
    out = r;
    return true;
  }
  void release(const StackRegion &r) {
    std::lock_guard<std::mutex> lock(mu);
    free.push_back(r);
  }
};

inline StackPool &stack_pool() {
  static StackPool pool;
  return pool;
}

/// The stack allocator of fibers built on preallocated stacks: the pool
/// owns the memory, so deallocation does nothing.
struct PooledStack {
  boost::context::stack_context allocate() { std::abort(); }
  void deallocate(boost::context::stack_context &) noexcept {}
};

//===----------------------------------------------------------------------===//
// The scheduler
//===----------------------------------------------------------------------===//

inline void on_exit(Thread &t) {
  Block &b = *t.block;
  ++b.exited;
  ++b.events;
  const unsigned bit = 1u << t.lane;
  b.warpExited[t.warp] |= bit;
  t.state = St::Exited;
  if (b.atBarrier > 0)
    fail(format("deadlock: this thread exited while %u thread(s) wait at %s "
                "at %s:%d",
                b.atBarrier, barrier_name(b.barKind), b.barFile, b.barLine));
  Thread *base = b.threads + 32u * t.warp;
  for (unsigned m = b.warpExist[t.warp] & ~bit; m; m &= m - 1) {
    const Thread &o = base[__builtin_ctz(m)];
    if (o.state == St::Warp && (o.ws.mask & bit))
      fail(format("deadlock: this lane exited while lane %u waits for it at "
                  "%s(mask 0x%08x) at %s:%d",
                  o.lane, op_name(o.ws.op), o.ws.mask, o.ws.file, o.ws.line));
  }
}

template <typename Args>
inline void run_thread(Thread &t, void (*fn)(Args), const Args *args) {
  std::string what;
  bool threw = false;
  try {
    fn(*args);
  } catch (const std::exception &e) {
    threw = true;
    what = e.what();
  } catch (...) {
    threw = true;
    what = "unknown exception";
  }
  if (threw)
    fail("a C++ exception escaped the kernel: " + what);
  on_exit(t);
}

template <typename Args>
inline void start_fiber(Thread &t, void (*fn)(Args), const Args *args,
                        void *top, size_t size) {
  boost::context::stack_context sctx;
  sctx.size = size;
  sctx.sp = top;
  boost::context::preallocated pre(top, size, sctx);
  Thread *tp = &t;
  t.fib = fiber(std::allocator_arg, pre, PooledStack(),
                [tp, fn, args](fiber &&sink) -> fiber {
                  tp->sink = std::move(sink);
                  run_thread(*tp, fn, args);
                  return std::move(tp->sink);
                });
}

inline std::string describe_wait(const Thread &t) {
  switch (t.state) {
  case St::Barrier:
    return format("wait at __syncthreads at %s:%d", t.barFile, t.barLine);
  case St::Warp:
    return format("wait at %s(mask 0x%08x) at %s:%d", op_name(t.ws.op),
                  t.ws.mask, t.ws.file, t.ws.line);
  case St::Exited:
    return "exited";
  default:
    return "spin (runnable)";
  }
}

/// Runs of threads in the same state, in thread order.
inline std::string thread_states(const Block &b) {
  std::string r;
  unsigned i = 0, groups = 0;
  while (i < b.n) {
    std::string what = describe_wait(b.threads[i]);
    unsigned j = i + 1;
    while (j < b.n && describe_wait(b.threads[j]) == what)
      ++j;
    if (++groups > 16) {
      r += " ...";
      break;
    }
    const Thread &f = b.threads[i], &l = b.threads[j - 1];
    if (j - i == 1)
      r += format(" thread %u (%u,%u,%u) %s;", i, f.tid.x, f.tid.y, f.tid.z,
                  what.c_str());
    else
      r += format(" threads %u-%u ((%u,%u,%u)-(%u,%u,%u)) %s;", i, j - 1,
                  f.tid.x, f.tid.y, f.tid.z, l.tid.x, l.tid.y, l.tid.z,
                  what.c_str());
    i = j;
  }
  return r;
}

/// The mbarriers of the block whose current phase is incomplete, for the
/// livelock report: a wait on one whose arrivals are all in and whose
/// transaction count is not zero with no copy in flight can never complete
/// (an expect_tx that does not match the bytes copied).
inline std::string mbarrier_states(const Block &b) {
  std::string text;
  for (size_t i = 0; i < b.mbarriers.size(); ++i) {
    const MBarrier &m = b.mbarriers[i];
    if (m.pending == m.expected && m.tx == 0)
      continue;
    bool inFlight = false;
    for (const AsyncCopy &c : b.bulkCopies)
      inFlight |= c.mbar == static_cast<int>(i);
    text += format(" mbarrier at shared offset %zu: phase %u waits for %u "
                   "arrival(s) and %lld transaction byte(s)%s;",
                   static_cast<size_t>(
                       static_cast<const unsigned char *>(m.addr) - b.smem),
                   m.phase, m.pending, m.tx,
                   m.pending == 0 && !inFlight
                       ? " with no copy in flight: it can never complete"
                       : "");
  }
  return text;
}

inline std::string deadlock_report(const Block &b) {
  return "deadlock: no thread can proceed;" + thread_states(b) +
         " (every thread of a block must reach the same __syncthreads, and "
         "every lane named in a warp collective's mask must reach it)";
}

/// Consecutive scheduling passes in which every resumed thread only yielded
/// (no barrier, collective or exit anywhere) before the launch is declared
/// livelocked. A chain of spin-lock hand-offs needs at most one pass per
/// thread, so this is far above any legitimate run.
constexpr uint64_t kLivelockPasses = uint64_t(1) << 16;

template <typename Args>
inline bool run_block(Block &b, void (*fn)(Args), const Args *args,
                      const StackRegion &stacks) {
  for (unsigned i = 0; i < b.n; ++i) {
    Thread &t = b.threads[i];
    t.state = St::Fresh;
    t.bid = b.bid;
    t.block = &b;
  }
  for (unsigned w = 0; w < b.nwarps; ++w) {
    unsigned lanes = std::min(32u, b.n - 32u * w);
    b.warpExist[w] = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
    b.warpExited[w] = 0;
    b.warpWaiting[w] = 0;
  }
  b.exited = 0;
  b.atBarrier = 0;
  b.events = 0;
  b.decls.clear();
  b.bulkCopies.clear();
  b.mbarriers.clear();
  for (unsigned i = 0; i < b.n; ++i) {
    b.threads[i].asyncCopies.clear();
    b.threads[i].asyncHead = 0;
    b.threads[i].asyncCommitted = 0;
    b.threads[i].wgmmaOps.clear();
    b.threads[i].wgmmaCommitted = 0;
    b.threads[i].wgmmaFenced = false;
  }
  b.smemTop = b.dynBytes;
  std::memset(b.smem, kSharedPoison, b.dynBytes);
  unsigned live = b.n;
  uint64_t idlePasses = 0;
  for (;;) {
    bool resumed = false;
    const uint64_t eventsBefore = b.events;
    for (unsigned i = 0; i < b.n; ++i) {
      Thread &t = b.threads[i];
      if (t.state != St::Ready && t.state != St::Fresh)
        continue;
      if (t.state == St::Fresh)
        start_fiber(t, fn, args, stacks.top(i), stacks.size);
      t.state = St::Running;
      g_current = &t;
      t.fib = std::move(t.fib).resume();
      g_current = nullptr;
      resumed = true;
      if (b.failed)
        return false;
      if (t.state == St::Exited)
        --live;
    }
    if (live == 0)
      return true;
    if (!resumed) {
      b.failed = true;
      b.error = deadlock_report(b);
      return false;
    }
    if (b.events != eventsBefore) {
      idlePasses = 0;
    } else if (++idlePasses > kLivelockPasses) {
      b.failed = true;
      b.error = format("livelock: in %llu scheduling passes every runnable "
                       "thread only yielded (spinning on atomicCAS or "
                       "__nanosleep for something that never happens);%s%s",
                       static_cast<unsigned long long>(idlePasses),
                       thread_states(b).c_str(),
                       mbarrier_states(b).c_str());
      return false;
    }
  }
}

inline size_t shared_limit() {
  static const size_t limit = [] {
    size_t v = kDefaultSharedLimit;
    if (const char *e = std::getenv("MOE_EMU_MAX_SHARED_BYTES")) {
      long long x = std::atoll(e);
      if (x > 0)
        v = static_cast<size_t>(x);
    }
    return v;
  }();
  return limit;
}

inline void write_error(char *error, unsigned errorSize, const std::string &m) {
  if (error && errorSize > 0)
    std::snprintf(error, errorSize, "%s", m.c_str());
}

struct ArenaDeleter {
  void operator()(unsigned char *p) const { std::free(p); }
};

template <typename Args>
inline int launch_impl(void (*fn)(Args), const Args *args, unsigned gx,
                       unsigned gy, unsigned gz, unsigned bx, unsigned by,
                       unsigned bz, unsigned dyn, char *error,
                       unsigned errorSize, const char *name) {
  auto bad = [&](const std::string &m) {
    write_error(error, errorSize, format("kernel %s: ", name) + m);
    return 1;
  };
  if (!fn || !args)
    return bad("null kernel or argument pointer");
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0)
    return bad(format("empty launch: grid (%u,%u,%u), block (%u,%u,%u)", gx,
                      gy, gz, bx, by, bz));
  if (bx > kMaxBlockDimXY || by > kMaxBlockDimXY || bz > kMaxBlockDimZ)
    return bad(format("block (%u,%u,%u) exceeds the per-dimension limits "
                      "(%u,%u,%u)",
                      bx, by, bz, kMaxBlockDimXY, kMaxBlockDimXY,
                      kMaxBlockDimZ));
  const unsigned long long nthreads =
      static_cast<unsigned long long>(bx) * by * bz;
  if (nthreads > kMaxThreadsPerBlock)
    return bad(format("block (%u,%u,%u) has %llu threads, over the limit of "
                      "%u",
                      bx, by, bz, nthreads, kMaxThreadsPerBlock));
  if (gx > 0x7fffffffu || gy > kMaxGridDimYZ || gz > kMaxGridDimYZ)
    return bad(format("grid (%u,%u,%u) exceeds the limits (2^31-1,%u,%u)", gx,
                      gy, gz, kMaxGridDimYZ, kMaxGridDimYZ));
  const size_t limit = shared_limit();
  if (dyn > limit)
    return bad(format("%u bytes of dynamic shared memory exceed the limit of "
                      "%zu bytes per block",
                      dyn, limit));

  StackRegion stacks;
  if (!stack_pool().acquire(nthreads, stacks))
    return bad("cannot map the fiber stacks");
  struct ReleaseStacks {
    StackRegion r;
    ~ReleaseStacks() { stack_pool().release(r); }
  } releaseStacks{stacks};

  const size_t arenaBytes = (limit + 4095) / 4096 * 4096;
  std::unique_ptr<unsigned char, ArenaDeleter> arena(
      static_cast<unsigned char *>(std::aligned_alloc(4096, arenaBytes)));
  if (!arena)
    return bad("cannot allocate the shared memory arena");

  std::vector<Thread> threads(nthreads);
  Block b;
  b.threads = threads.data();
  b.n = static_cast<unsigned>(nthreads);
  b.nwarps = (b.n + 31) / 32;
  b.kernel = name;
  b.smem = arena.get();
  b.smemLimit = limit;
  b.dynBytes = dyn;
  for (unsigned i = 0; i < b.n; ++i) {
    Thread &t = threads[i];
    t.tid = make_uint3(i % bx, (i / bx) % by, i / (bx * by));
    t.bdim = ::dim3(bx, by, bz);
    t.gdim = ::dim3(gx, gy, gz);
    t.linear = i;
    t.lane = i % 32;
    t.warp = i / 32;
  }
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        b.bid = make_uint3(x, y, z);
        if (!run_block(b, fn, args, stacks)) {
          // The fibers of the failed block are abandoned, never unwound:
          // their stacks go back to the pool as they are.
          return bad(format("block (%u,%u,%u): ", x, y, z) + b.error);
        }
      }
  return 0;
}

} // namespace detail

/// Runs `fn` over the grid (see the top of this file). Returns 0, or
/// non-zero with a message in `error`. Never throws.
template <typename Args>
inline int launch(void (*fn)(Args), const Args *args, unsigned gridX,
                  unsigned gridY, unsigned gridZ, unsigned blockX,
                  unsigned blockY, unsigned blockZ, unsigned dynamicShared,
                  char *error, unsigned errorSize,
                  const char *name = "kernel") noexcept {
  try {
    return detail::launch_impl(fn, args, gridX, gridY, gridZ, blockX, blockY,
                               blockZ, dynamicShared, error, errorSize, name);
  } catch (const std::exception &e) {
    detail::write_error(error, errorSize,
                        std::string("kernel ") + name + ": " + e.what());
  } catch (...) {
    detail::write_error(error, errorSize,
                        std::string("kernel ") + name + ": unknown exception");
  }
  return 1;
}

//===----------------------------------------------------------------------===//
// Tensor cores
//===----------------------------------------------------------------------===//

namespace detail {
template <typename T> struct MmaKind;
template <> struct MmaKind<__nv_bfloat16> { static constexpr int value = 0; };
template <> struct MmaKind<__half> { static constexpr int value = 1; };

/// One mma.sync of the calling lane (its fragments a, b, c; element kind
/// `kind`) as a warp collective completed by complete_mma: d = A * B + C.
inline void mma_collective(const char *name, int kind, float d[4],
                           const unsigned a[4], const unsigned b[2],
                           const float c[4], const char *file, int line) {
  Thread &t = cur(name);
  WarpSlot &s = t.ws;
  s.op = Op::Mma;
  s.mask = 0xffffffffu;
  s.file = file;
  s.line = line;
  s.width = kind;
  for (int i = 0; i < 4; ++i)
    s.regs[i] = a[i];
  s.regs[4] = b[0];
  s.regs[5] = b[1];
  for (int i = 0; i < 4; ++i)
    s.regs[6 + i] = __float_as_uint(c[i]);
  warp_collective(t);
  for (int i = 0; i < 4; ++i)
    d[i] = __uint_as_float(s.out[i]);
}
} // namespace detail

/// D = A * B + C for one 16x16 (bf16 or f16, T) by 16x8 product with f32
/// accumulation: PTX mma.sync.aligned.m16n8k16.row.col.f32.T.T.f32 with its
/// register fragments (see detail::complete_mma for the layout). Warp
/// collective: all 32 lanes of the warp must call it. `d` may alias `c`.
template <typename T = __nv_bfloat16>
inline void mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2],
                         const float c[4],
                         const char *file = __builtin_FILE(),
                         int line = __builtin_LINE()) {
  detail::mma_collective("mma_m16n8k16", detail::MmaKind<T>::value, d, a, b,
                         c, file, line);
}
inline void mma_m16n8k16_bf16(float d[4], const unsigned a[4],
                              const unsigned b[2], const float c[4],
                              const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  mma_m16n8k16<__nv_bfloat16>(d, a, b, c, file, line);
}
inline void mma_m16n8k16_f16(float d[4], const unsigned a[4],
                             const unsigned b[2], const float c[4],
                             const char *file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  mma_m16n8k16<__half>(d, a, b, c, file, line);
}

/// D = A * B + C for one 16x32 by 32x8 product of FP8 E4M3FN codes with f32
/// accumulation: PTX mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32
/// (sm_89 and later; see detail::complete_mma_e4m3 for the layout). Warp
/// collective. `d` may alias `c`.
inline void mma_m16n8k32_e4m3(float d[4], const unsigned a[4],
                              const unsigned b[2], const float c[4],
                              const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  detail::mma_collective("mma_m16n8k32_e4m3", detail::kMmaE4M3, d, a, b, c,
                         file, line);
}

namespace detail {
inline void ldmatrix(unsigned *r, int num, bool trans, const void *rowAddr,
                     const char *file, int line) {
  Thread &t = cur("ldmatrix");
  if (t.lane < static_cast<unsigned>(8 * num)) {
    const Block &b = *t.block;
    const unsigned char *p = static_cast<const unsigned char *>(rowAddr);
    if (p < b.smem || p + 16 > b.smem + b.smemLimit)
      fail(format("ldmatrix at %s:%d: row address %p of lane %u is not in "
                  "the block's shared memory",
                  file, line, rowAddr, t.lane));
    if ((reinterpret_cast<uintptr_t>(rowAddr) & 15u) != 0)
      fail(format("ldmatrix at %s:%d: row address %p of lane %u is not "
                  "16-byte aligned",
                  file, line, rowAddr, t.lane));
  }
  WarpSlot &s = t.ws;
  s.op = Op::LdMatrix;
  s.mask = 0xffffffffu;
  s.file = file;
  s.line = line;
  s.arg = num;
  s.width = trans ? 1 : 0;
  s.ptr = rowAddr;
  warp_collective(t);
  for (int i = 0; i < num; ++i)
    r[i] = s.out[i];
}
} // namespace detail

/// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16: `rowAddr` is
/// this lane's row address (lanes 8m..8m+7 address matrix m).
inline void ldmatrix_x1(unsigned r[1], const void *rowAddr,
                        const char *file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
  detail::ldmatrix(r, 1, false, rowAddr, file, line);
}
inline void ldmatrix_x2(unsigned r[2], const void *rowAddr,
                        const char *file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
  detail::ldmatrix(r, 2, false, rowAddr, file, line);
}
inline void ldmatrix_x4(unsigned r[4], const void *rowAddr,
                        const char *file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
  detail::ldmatrix(r, 4, false, rowAddr, file, line);
}
inline void ldmatrix_x1_trans(unsigned r[1], const void *rowAddr,
                              const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  detail::ldmatrix(r, 1, true, rowAddr, file, line);
}
inline void ldmatrix_x2_trans(unsigned r[2], const void *rowAddr,
                              const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  detail::ldmatrix(r, 2, true, rowAddr, file, line);
}
inline void ldmatrix_x4_trans(unsigned r[4], const void *rowAddr,
                              const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  detail::ldmatrix(r, 4, true, rowAddr, file, line);
}

} // namespace moe_emu

//===----------------------------------------------------------------------===//
// CUDA's names
//===----------------------------------------------------------------------===//

namespace moe_emu {
namespace detail {
inline const ::uint3 &thread_idx() { return cur("threadIdx").tid; }
inline const ::uint3 &block_idx() { return cur("blockIdx").bid; }
inline const ::dim3 &block_dim() { return cur("blockDim").bdim; }
inline const ::dim3 &grid_dim() { return cur("gridDim").gdim; }
} // namespace detail
} // namespace moe_emu

#define threadIdx (::moe_emu::detail::thread_idx())
#define blockIdx (::moe_emu::detail::block_idx())
#define blockDim (::moe_emu::detail::block_dim())
#define gridDim (::moe_emu::detail::grid_dim())

// Barriers and fences ------------------------------------------------------

inline void __syncthreads(const char *file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  ::moe_emu::detail::barrier(::moe_emu::detail::kBarSync, 0, file, line);
}
inline int __syncthreads_count(int pred, const char *file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  return ::moe_emu::detail::barrier(::moe_emu::detail::kBarCount, pred, file,
                                    line);
}
inline int __syncthreads_and(int pred, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  return ::moe_emu::detail::barrier(::moe_emu::detail::kBarAnd, pred, file,
                                    line);
}
inline int __syncthreads_or(int pred, const char *file = __builtin_FILE(),
                            int line = __builtin_LINE()) {
  return ::moe_emu::detail::barrier(::moe_emu::detail::kBarOr, pred, file,
                                    line);
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// Warp collectives --------------------------------------------------------

inline void __syncwarp(unsigned mask = 0xffffffffu,
                       const char *file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  ::moe_emu::detail::simple_collective(::moe_emu::detail::Op::SyncWarp, mask,
                                       0, 0, 0, file, line);
}

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,
                     const char *file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  return ::moe_emu::detail::shfl(::moe_emu::detail::Op::ShflIdx, mask, var,
                                 srcLane, width, file, line);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta,
                        int width = warpSize,
                        const char *file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
  return ::moe_emu::detail::shfl(::moe_emu::detail::Op::ShflUp, mask, var,
                                 static_cast<int>(delta), width, file, line);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta,
                          int width = warpSize,
                          const char *file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  return ::moe_emu::detail::shfl(::moe_emu::detail::Op::ShflDown, mask, var,
                                 static_cast<int>(delta), width, file, line);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask,
                         int width = warpSize,
                         const char *file = __builtin_FILE(),
                         int line = __builtin_LINE()) {
  return ::moe_emu::detail::shfl(::moe_emu::detail::Op::ShflXor, mask, var,
                                 laneMask, width, file, line);
}

inline unsigned __ballot_sync(unsigned mask, int pred,
                              const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return static_cast<unsigned>(::moe_emu::detail::simple_collective(
      ::moe_emu::detail::Op::Ballot, mask, pred != 0, 4, 0, file, line));
}
inline int __any_sync(unsigned mask, int pred,
                      const char *file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return static_cast<int>(::moe_emu::detail::simple_collective(
      ::moe_emu::detail::Op::Any, mask, pred != 0, 4, 0, file, line));
}
inline int __all_sync(unsigned mask, int pred,
                      const char *file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return static_cast<int>(::moe_emu::detail::simple_collective(
      ::moe_emu::detail::Op::All, mask, pred != 0, 4, 0, file, line));
}
inline int __uni_sync(unsigned mask, int pred,
                      const char *file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return static_cast<int>(::moe_emu::detail::simple_collective(
      ::moe_emu::detail::Op::Uni, mask, pred != 0, 4, 0, file, line));
}
/// The lanes of the calling warp that exist and have not exited (the
/// emulation has no notion of divergence: all of them count as active).
inline unsigned __activemask() {
  ::moe_emu::detail::Thread &t = ::moe_emu::detail::cur("__activemask");
  return t.block->warpExist[t.warp] & ~t.block->warpExited[t.warp];
}
inline unsigned __lanemask_lt() {
  return (1u << ::moe_emu::detail::cur("__lanemask_lt").lane) - 1u;
}

template <typename T>
inline unsigned __match_any_sync(unsigned mask, T value,
                                 const char *file = __builtin_FILE(),
                                 int line = __builtin_LINE()) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "");
  uint64_t v = 0;
  std::memcpy(&v, &value, sizeof(T));
  return static_cast<unsigned>(::moe_emu::detail::simple_collective(
      ::moe_emu::detail::Op::MatchAny, mask, v, sizeof(T), 0, file, line));
}
template <typename T>
inline unsigned __match_all_sync(unsigned mask, T value, int *pred,
                                 const char *file = __builtin_FILE(),
                                 int line = __builtin_LINE()) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "");
  uint64_t v = 0;
  std::memcpy(&v, &value, sizeof(T));
  return static_cast<unsigned>(::moe_emu::detail::simple_collective(
      ::moe_emu::detail::Op::MatchAll, mask, v, sizeof(T), 0, file, line,
      pred));
}

#define MOE_EMU_REDUCE(NAME, OP, T, SIGNED)                                    \
  inline T NAME(unsigned mask, T value, const char *file = __builtin_FILE(),   \
                int line = __builtin_LINE()) {                                 \
    return static_cast<T>(::moe_emu::detail::simple_collective(                \
        ::moe_emu::detail::Op::OP, mask,                                       \
        static_cast<uint32_t>(value), 4, SIGNED, file, line));                 \
  }
MOE_EMU_REDUCE(__reduce_add_sync, ReduceAdd, unsigned, 0)
MOE_EMU_REDUCE(__reduce_add_sync, ReduceAdd, int, 1)
MOE_EMU_REDUCE(__reduce_min_sync, ReduceMin, unsigned, 0)
MOE_EMU_REDUCE(__reduce_min_sync, ReduceMin, int, 1)
MOE_EMU_REDUCE(__reduce_max_sync, ReduceMax, unsigned, 0)
MOE_EMU_REDUCE(__reduce_max_sync, ReduceMax, int, 1)
MOE_EMU_REDUCE(__reduce_and_sync, ReduceAnd, unsigned, 0)
MOE_EMU_REDUCE(__reduce_or_sync, ReduceOr, unsigned, 0)
MOE_EMU_REDUCE(__reduce_xor_sync, ReduceXor, unsigned, 0)
#undef MOE_EMU_REDUCE

// Atomics ------------------------------------------------------------------
//
// Real atomic read-modify-writes (several host threads may launch at once).
// A failed atomicCAS yields, so that spin locks between the threads of a
// block make progress under cooperative scheduling.

#define MOE_EMU_ATOMIC_INT(T)                                                  \
  inline T atomicAdd(T *p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); } \
  inline T atomicSub(T *p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); } \
  inline T atomicExch(T *p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); } \
  inline T atomicAnd(T *p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); } \
  inline T atomicOr(T *p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); } \
  inline T atomicXor(T *p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); } \
  inline T atomicMin(T *p, T v) {                                              \
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                              \
    while (!__atomic_compare_exchange_n(p, &old, old < v ? old : v, false,     \
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) { \
    }                                                                          \
    return old;                                                                \
  }                                                                            \
  inline T atomicMax(T *p, T v) {                                              \
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                              \
    while (!__atomic_compare_exchange_n(p, &old, old > v ? old : v, false,     \
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) { \
    }                                                                          \
    return old;                                                                \
  }                                                                            \
  inline T atomicCAS(T *p, T compare, T v) {                                   \
    T old = compare;                                                           \
    if (!__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST,      \
                                     __ATOMIC_SEQ_CST))                        \
      ::moe_emu::detail::yield();                                              \
    return old;                                                                \
  }
MOE_EMU_ATOMIC_INT(int)
MOE_EMU_ATOMIC_INT(unsigned int)
MOE_EMU_ATOMIC_INT(long long)
MOE_EMU_ATOMIC_INT(unsigned long long)
#undef MOE_EMU_ATOMIC_INT

inline unsigned short atomicCAS(unsigned short *p, unsigned short compare,
                                unsigned short v) {
  unsigned short old = compare;
  if (!__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST,
                                   __ATOMIC_SEQ_CST))
    ::moe_emu::detail::yield();
  return old;
}
/// ((old >= val) ? 0 : (old + 1))
inline unsigned int atomicInc(unsigned int *p, unsigned int val) {
  unsigned int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (!__atomic_compare_exchange_n(p, &old, old >= val ? 0u : old + 1u,
                                      false, __ATOMIC_SEQ_CST,
                                      __ATOMIC_SEQ_CST)) {
  }
  return old;
}
/// (((old == 0) || (old > val)) ? val : (old - 1))
inline unsigned int atomicDec(unsigned int *p, unsigned int val) {
  unsigned int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (!__atomic_compare_exchange_n(p, &old,
                                      (old == 0 || old > val) ? val : old - 1u,
                                      false, __ATOMIC_SEQ_CST,
                                      __ATOMIC_SEQ_CST)) {
  }
  return old;
}

namespace moe_emu {
namespace detail {
/// Atomic update of a trivially copyable value of 2, 4 or 8 bytes through
/// a compare-and-swap loop on its bits.
template <typename T, typename Fn> inline T atomic_update(T *p, Fn fn) {
  using Bits = typename std::conditional<
      sizeof(T) == 2, uint16_t,
      typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type>::type;
  static_assert(sizeof(T) == sizeof(Bits), "");
  Bits *q = reinterpret_cast<Bits *>(p);
  Bits old = __atomic_load_n(q, __ATOMIC_SEQ_CST);
  for (;;) {
    T cur;
    std::memcpy(&cur, &old, sizeof(T));
    T next = fn(cur);
    Bits nb;
    std::memcpy(&nb, &next, sizeof(T));
    if (__atomic_compare_exchange_n(q, &old, nb, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
      return cur;
  }
}
} // namespace detail
} // namespace moe_emu

inline float atomicAdd(float *p, float v) {
  return ::moe_emu::detail::atomic_update(p, [v](float x) { return x + v; });
}
inline double atomicAdd(double *p, double v) {
  return ::moe_emu::detail::atomic_update(p, [v](double x) { return x + v; });
}
inline float atomicExch(float *p, float v) {
  return ::moe_emu::detail::atomic_update(p, [v](float) { return v; });
}
inline __half atomicAdd(__half *p, __half v) {
  return ::moe_emu::detail::atomic_update(p, [v](__half x) { return __hadd(x, v); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16 *p, __nv_bfloat16 v) {
  return ::moe_emu::detail::atomic_update(
      p, [v](__nv_bfloat16 x) { return __hadd(x, v); });
}
inline __half2 atomicAdd(__half2 *p, __half2 v) {
  return ::moe_emu::detail::atomic_update(p, [v](__half2 x) { return __hadd2(x, v); });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162 *p, __nv_bfloat162 v) {
  return ::moe_emu::detail::atomic_update(
      p, [v](__nv_bfloat162 x) { return __hadd2(x, v); });
}

// The _block and _system scopes are the same here.
#define MOE_EMU_ATOMIC_SCOPE(NAME)                                             \
  template <typename T, typename U> inline T NAME##_block(T *p, U v) {         \
    return NAME(p, static_cast<T>(v));                                         \
  }                                                                            \
  template <typename T, typename U> inline T NAME##_system(T *p, U v) {        \
    return NAME(p, static_cast<T>(v));                                         \
  }
MOE_EMU_ATOMIC_SCOPE(atomicAdd)
MOE_EMU_ATOMIC_SCOPE(atomicSub)
MOE_EMU_ATOMIC_SCOPE(atomicExch)
MOE_EMU_ATOMIC_SCOPE(atomicMin)
MOE_EMU_ATOMIC_SCOPE(atomicMax)
MOE_EMU_ATOMIC_SCOPE(atomicAnd)
MOE_EMU_ATOMIC_SCOPE(atomicOr)
MOE_EMU_ATOMIC_SCOPE(atomicXor)
MOE_EMU_ATOMIC_SCOPE(atomicInc)
MOE_EMU_ATOMIC_SCOPE(atomicDec)
#undef MOE_EMU_ATOMIC_SCOPE
template <typename T> inline T atomicCAS_block(T *p, T c, T v) {
  return atomicCAS(p, c, v);
}
template <typename T> inline T atomicCAS_system(T *p, T c, T v) {
  return atomicCAS(p, c, v);
}

// Miscellaneous -------------------------------------------------------------

inline long long clock64() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
inline void __nanosleep(unsigned int) { ::moe_emu::detail::yield(); }
namespace moe_emu {
namespace detail {
[[noreturn]] inline void assert_fail(const char *expr, const char *file,
                                     int line, const char *function) {
  if (!g_current) {
    std::fprintf(stderr, "%s:%d: %s: Assertion `%s' failed.\n", file, line,
                 function, expr);
    std::abort();
  }
  fail(format("assertion `%s' failed at %s:%d in %s", expr, file, line,
              function));
}
} // namespace detail
} // namespace moe_emu

[[noreturn]] inline void __trap() {
  ::moe_emu::detail::fail("the kernel executed __trap()");
}
[[noreturn]] inline void __brkpt() {
  ::moe_emu::detail::fail("the kernel executed __brkpt()");
}

// Shared memory -------------------------------------------------------------

/// A per-block array `type name[count]` (CUDA: __shared__ type
/// name[count]). Every thread of a block that executes the declaration gets
/// the same storage; each template instance of the declaring function has
/// its own; each block gets fresh (poisoned) storage.
#define MOE_SHARED(type, name, count)                                          \
  static char moe_emu_shared_site_##name;                                      \
  ::moe_emu::detail::array_t<type, (count)> &name =                            \
      *static_cast<::moe_emu::detail::array_t<type, (count)> *>(               \
          ::moe_emu::detail::shared_alloc(                                     \
              &moe_emu_shared_site_##name,                                     \
              sizeof(::moe_emu::detail::array_t<type, (count)>),               \
              alignof(type), #name))

/// The launch's dynamic shared memory as `type *name` (CUDA: extern
/// __shared__ type name[]), 4096-byte aligned.
#define MOE_DYNAMIC_SHARED(type, name)                                         \
  type *name = static_cast<type *>(::moe_emu::detail::dynamic_shared())

// The launch entry point ----------------------------------------------------

/// Placed after each kernel NAME (`extern "C" __global__ void
/// NAME(MoEKernelArgs)`): defines the C entry point moe_emu_launch_NAME of
/// KernelABI.h.
#define MOE_EMU_EXPORT_KERNEL(NAME)                                            \
  extern "C" __attribute__((visibility("default"))) int                        \
      moe_emu_launch_##NAME(const MoEKernelArgs *args, unsigned grid_x,        \
                            unsigned grid_y, unsigned grid_z,                  \
                            unsigned block_x, unsigned block_y,                \
                            unsigned block_z, unsigned dynamic_shared_bytes,   \
                            char *error, unsigned error_size) {                \
    return ::moe_emu::launch(&NAME, args, grid_x, grid_y, grid_z, block_x,     \
                             block_y, block_z, dynamic_shared_bytes, error,    \
                             error_size, #NAME);                               \
  }                                                                            \
  static_assert(std::is_same<decltype(&moe_emu_launch_##NAME),                 \
                             MoEEmuLaunchFn>::value,                           \
                "moe_emu_launch_" #NAME " must match MoEEmuLaunchFn");

#pragma GCC visibility pop

#endif // MOE_EMU_RUNTIME_H
