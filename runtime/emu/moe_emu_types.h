//===- moe_emu_types.h - CUDA types and intrinsics for the host ---*- C++ -*-===//
//
// Part of moe-opt. The value-level half of the CPU emulation of CUDA C++
// (runtime/emu/moe_emu.h includes it): vector types, dim3, bit casts, the
// integer and floating-point intrinsics, min/max, and the 16-bit float types
// __half / __nv_bfloat16 with exact round-to-nearest-even conversions.
// Nothing here needs a kernel launch, so tests may use it on its own.
//
// Everything is defined with CUDA's names in the global namespace; helpers
// live in moe_emu::detail. Fast-math intrinsics (__expf, rsqrtf, ...) are
// computed with the accurate libm functions: results can differ from a GPU
// in the last bits, conversions and 16-bit arithmetic cannot.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_EMU_TYPES_H
#define MOE_EMU_TYPES_H

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <math.h>
#include <type_traits>

#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif

//===----------------------------------------------------------------------===//
// Vector types (layout and alignment as in CUDA's vector_types.h)
//===----------------------------------------------------------------------===//

#define MOE_EMU_VEC1(T, N, A)                                                  \
  struct __align__(A) N { T x; };                                              \
  inline N make_##N(T x) { N r; r.x = x; return r; }
#define MOE_EMU_VEC2(T, N, A)                                                  \
  struct __align__(A) N { T x, y; };                                           \
  inline N make_##N(T x, T y) { N r; r.x = x; r.y = y; return r; }
#define MOE_EMU_VEC3(T, N, A)                                                  \
  struct __align__(A) N { T x, y, z; };                                        \
  inline N make_##N(T x, T y, T z) { N r; r.x = x; r.y = y; r.z = z; return r; }
#define MOE_EMU_VEC4(T, N, A)                                                  \
  struct __align__(A) N { T x, y, z, w; };                                     \
  inline N make_##N(T x, T y, T z, T w) {                                      \
    N r; r.x = x; r.y = y; r.z = z; r.w = w; return r;                         \
  }

MOE_EMU_VEC1(signed char, char1, 1)
MOE_EMU_VEC2(signed char, char2, 2)
MOE_EMU_VEC3(signed char, char3, 1)
MOE_EMU_VEC4(signed char, char4, 4)
MOE_EMU_VEC1(unsigned char, uchar1, 1)
MOE_EMU_VEC2(unsigned char, uchar2, 2)
MOE_EMU_VEC3(unsigned char, uchar3, 1)
MOE_EMU_VEC4(unsigned char, uchar4, 4)
MOE_EMU_VEC1(short, short1, 2)
MOE_EMU_VEC2(short, short2, 4)
MOE_EMU_VEC3(short, short3, 2)
MOE_EMU_VEC4(short, short4, 8)
MOE_EMU_VEC1(unsigned short, ushort1, 2)
MOE_EMU_VEC2(unsigned short, ushort2, 4)
MOE_EMU_VEC3(unsigned short, ushort3, 2)
MOE_EMU_VEC4(unsigned short, ushort4, 8)
MOE_EMU_VEC1(int, int1, 4)
MOE_EMU_VEC2(int, int2, 8)
MOE_EMU_VEC3(int, int3, 4)
MOE_EMU_VEC4(int, int4, 16)
MOE_EMU_VEC1(unsigned int, uint1, 4)
MOE_EMU_VEC2(unsigned int, uint2, 8)
MOE_EMU_VEC3(unsigned int, uint3, 4)
MOE_EMU_VEC4(unsigned int, uint4, 16)
MOE_EMU_VEC1(long, long1, 8)
MOE_EMU_VEC2(long, long2, 16)
MOE_EMU_VEC1(unsigned long, ulong1, 8)
MOE_EMU_VEC2(unsigned long, ulong2, 16)
MOE_EMU_VEC1(long long, longlong1, 8)
MOE_EMU_VEC2(long long, longlong2, 16)
MOE_EMU_VEC1(unsigned long long, ulonglong1, 8)
MOE_EMU_VEC2(unsigned long long, ulonglong2, 16)
MOE_EMU_VEC1(float, float1, 4)
MOE_EMU_VEC2(float, float2, 8)
MOE_EMU_VEC3(float, float3, 4)
MOE_EMU_VEC4(float, float4, 16)
MOE_EMU_VEC1(double, double1, 8)
MOE_EMU_VEC2(double, double2, 16)

#undef MOE_EMU_VEC1
#undef MOE_EMU_VEC2
#undef MOE_EMU_VEC3
#undef MOE_EMU_VEC4

/// dim3: a uint3 whose unspecified components are 1.
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1,
                 unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  operator uint3() const { return make_uint3(x, y, z); }
};

//===----------------------------------------------------------------------===//
// Bit casts
//===----------------------------------------------------------------------===//

constexpr float __int_as_float(int x) { return __builtin_bit_cast(float, x); }
constexpr float __uint_as_float(unsigned int x) {
  return __builtin_bit_cast(float, x);
}
constexpr int __float_as_int(float x) { return __builtin_bit_cast(int, x); }
constexpr unsigned int __float_as_uint(float x) {
  return __builtin_bit_cast(unsigned int, x);
}
constexpr long long __double_as_longlong(double x) {
  return __builtin_bit_cast(long long, x);
}
constexpr double __longlong_as_double(long long x) {
  return __builtin_bit_cast(double, x);
}
constexpr int __double2hiint(double x) {
  return static_cast<int>(__builtin_bit_cast(unsigned long long, x) >> 32);
}
constexpr int __double2loint(double x) {
  return static_cast<int>(
      static_cast<unsigned>(__builtin_bit_cast(unsigned long long, x)));
}
constexpr double __hiloint2double(int hi, int lo) {
  return __builtin_bit_cast(
      double, (static_cast<unsigned long long>(static_cast<unsigned>(hi)) << 32) |
                  static_cast<unsigned>(lo));
}

//===----------------------------------------------------------------------===//
// Integer intrinsics
//===----------------------------------------------------------------------===//

inline int __clz(int x) {
  return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x));
}
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
  unsigned int r = 0;
  for (int i = 0; i < 32; ++i)
    r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned long long __brevll(unsigned long long x) {
  unsigned long long r = 0;
  for (int i = 0; i < 64; ++i)
    r |= ((x >> i) & 1ull) << (63 - i);
  return r;
}
/// PTX prmt (default mode): each selector nibble picks one of the 8 bytes
/// of {y, x}.
inline unsigned int __byte_perm(unsigned int x, unsigned int y,
                                unsigned int s) {
  unsigned long long bytes =
      (static_cast<unsigned long long>(y) << 32) | static_cast<unsigned long long>(x);
  unsigned int r = 0;
  for (int i = 0; i < 4; ++i) {
    unsigned sel = (s >> (4 * i)) & 7u;
    r |= static_cast<unsigned>((bytes >> (8 * sel)) & 0xffu) << (8 * i);
  }
  return r;
}
inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi,
                                    unsigned int shift) {
  unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (shift & 31u)) >> 32);
}
inline unsigned int __funnelshift_lc(unsigned int lo, unsigned int hi,
                                     unsigned int shift) {
  unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  unsigned s = shift > 32u ? 32u : shift;
  return static_cast<unsigned>((v << s) >> 32);
}
inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi,
                                    unsigned int shift) {
  unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (shift & 31u));
}
inline unsigned int __funnelshift_rc(unsigned int lo, unsigned int hi,
                                     unsigned int shift) {
  unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  unsigned s = shift > 32u ? 32u : shift;
  return static_cast<unsigned>(v >> s);
}
inline int __mulhi(int x, int y) {
  return static_cast<int>((static_cast<long long>(x) * y) >> 32);
}
inline unsigned int __umulhi(unsigned int x, unsigned int y) {
  return static_cast<unsigned>((static_cast<unsigned long long>(x) * y) >> 32);
}
__extension__ typedef __int128 moe_emu_int128;
__extension__ typedef unsigned __int128 moe_emu_uint128;
inline long long __mul64hi(long long x, long long y) {
  return static_cast<long long>((static_cast<moe_emu_int128>(x) * y) >> 64);
}
inline unsigned long long __umul64hi(unsigned long long x,
                                     unsigned long long y) {
  return static_cast<unsigned long long>(
      (static_cast<moe_emu_uint128>(x) * y) >> 64);
}
inline int __mul24(int x, int y) {
  auto s24 = [](int v) { return static_cast<int>(static_cast<unsigned>(v) << 8) >> 8; };
  return s24(x) * s24(y);
}
inline unsigned int __umul24(unsigned int x, unsigned int y) {
  return (x & 0xffffffu) * (y & 0xffffffu);
}
inline unsigned int __sad(int x, int y, unsigned int z) {
  return z + static_cast<unsigned>(x > y ? static_cast<long long>(x) - y
                                         : static_cast<long long>(y) - x);
}
inline unsigned int __usad(unsigned int x, unsigned int y, unsigned int z) {
  return z + (x > y ? x - y : y - x);
}

//===----------------------------------------------------------------------===//
// min / max with CUDA's overload set
//===----------------------------------------------------------------------===//

#define MOE_EMU_MINMAX(R, A, B)                                                \
  inline R min(A a, B b) {                                                     \
    return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a)          \
                                                 : static_cast<R>(b);          \
  }                                                                            \
  inline R max(A a, B b) {                                                     \
    return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a)          \
                                                 : static_cast<R>(b);          \
  }
MOE_EMU_MINMAX(int, int, int)
MOE_EMU_MINMAX(unsigned int, unsigned int, unsigned int)
MOE_EMU_MINMAX(unsigned int, int, unsigned int)
MOE_EMU_MINMAX(unsigned int, unsigned int, int)
MOE_EMU_MINMAX(long, long, long)
MOE_EMU_MINMAX(unsigned long, unsigned long, unsigned long)
MOE_EMU_MINMAX(unsigned long, long, unsigned long)
MOE_EMU_MINMAX(unsigned long, unsigned long, long)
MOE_EMU_MINMAX(long long, long long, long long)
MOE_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
MOE_EMU_MINMAX(unsigned long long, long long, unsigned long long)
MOE_EMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef MOE_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline double max(double a, float b) { return fmax(a, b); }

//===----------------------------------------------------------------------===//
// Floating-point intrinsics (accurate versions of the fast ones)
//===----------------------------------------------------------------------===//

inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float *s, float *c) {
  *s = sinf(x);
  *c = cosf(x);
}
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(x)));
}
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) {
  return static_cast<float>(1.0 / std::cbrt(static_cast<double>(x)));
}
inline float __saturatef(float x) {
  return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); // NaN -> 0
}
// Correctly rounded operations (no contraction into an FMA).
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float __fsub_rn(float a, float b) {
  volatile float r = a - b;
  return r;
}
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return rsqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) {
  volatile double r = a + b;
  return r;
}
inline double __dmul_rn(double a, double b) {
  volatile double r = a * b;
  return r;
}
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }

namespace moe_emu {
namespace detail {
/// Float to integer as PTX cvt.rni/rzi/rmi/rpi.s32 etc.: saturating, NaN
/// gives 0.
template <typename I> inline I saturate_to(double v) {
  if (std::isnan(v))
    return 0;
  if (v <= static_cast<double>(std::numeric_limits<I>::min()))
    return std::numeric_limits<I>::min();
  if (v >= static_cast<double>(std::numeric_limits<I>::max()))
    return std::numeric_limits<I>::max();
  return static_cast<I>(v);
}
} // namespace detail
} // namespace moe_emu

#define MOE_EMU_F2I(NAME, I, F, ROUND)                                         \
  inline I NAME(F x) {                                                         \
    return ::moe_emu::detail::saturate_to<I>(ROUND(static_cast<double>(x)));   \
  }
MOE_EMU_F2I(__float2int_rn, int, float, std::nearbyint)
MOE_EMU_F2I(__float2int_rz, int, float, std::trunc)
MOE_EMU_F2I(__float2int_rd, int, float, std::floor)
MOE_EMU_F2I(__float2int_ru, int, float, std::ceil)
MOE_EMU_F2I(__float2uint_rn, unsigned int, float, std::nearbyint)
MOE_EMU_F2I(__float2uint_rz, unsigned int, float, std::trunc)
MOE_EMU_F2I(__float2uint_rd, unsigned int, float, std::floor)
MOE_EMU_F2I(__float2uint_ru, unsigned int, float, std::ceil)
MOE_EMU_F2I(__float2ll_rn, long long, float, std::nearbyint)
MOE_EMU_F2I(__float2ll_rz, long long, float, std::trunc)
MOE_EMU_F2I(__double2int_rn, int, double, std::nearbyint)
MOE_EMU_F2I(__double2int_rz, int, double, std::trunc)
MOE_EMU_F2I(__double2ll_rn, long long, double, std::nearbyint)
#undef MOE_EMU_F2I
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned int x) { return static_cast<float>(x); }
inline float __ll2float_rn(long long x) { return static_cast<float>(x); }
inline float __ull2float_rn(unsigned long long x) {
  return static_cast<float>(x);
}
inline double __int2double_rn(int x) { return static_cast<double>(x); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }

//===----------------------------------------------------------------------===//
// Cache-hinted loads and stores: plain memory accesses here
//===----------------------------------------------------------------------===//

template <typename T> inline T __ldg(const T *p) { return *p; }
template <typename T> inline T __ldcg(const T *p) { return *p; }
template <typename T> inline T __ldca(const T *p) { return *p; }
template <typename T> inline T __ldcs(const T *p) { return *p; }
template <typename T> inline T __ldlu(const T *p) { return *p; }
template <typename T> inline T __ldcv(const T *p) { return *p; }
template <typename T> inline void __stwb(T *p, T v) { *p = v; }
template <typename T> inline void __stcg(T *p, T v) { *p = v; }
template <typename T> inline void __stcs(T *p, T v) { *p = v; }
template <typename T> inline void __stwt(T *p, T v) { *p = v; }

//===----------------------------------------------------------------------===//
// 16-bit floats: exact conversions
//===----------------------------------------------------------------------===//

namespace moe_emu {
namespace detail {

enum RoundMode { kRoundNearestEven, kRoundZero, kRoundDown, kRoundUp };

/// Rounds (-1)^neg * sig * 2^exp (sig < 2^64) to a binary16-style format
/// with `manBits` stored mantissa bits and `expBits` exponent bits (IEEE
/// half: 10, 5; bfloat16: 7, 8), subnormals included, in `mode`.
inline uint16_t round16(bool neg, unsigned long long sig, int exp,
                        int manBits, int expBits, RoundMode mode) {
  const uint16_t sign = neg ? 0x8000u : 0u;
  if (sig == 0)
    return sign;
  const int bias = (1 << (expBits - 1)) - 1;
  const int expAllOnes = (1 << expBits) - 1;
  // The value lies in [2^top, 2^(top+1)).
  const int top = exp + 63 - __builtin_clzll(sig);
  int q = top - manBits; // exponent of the last kept bit
  const int qMin = 1 - bias - manBits;
  if (q < qMin)
    q = qMin; // subnormal range
  const int shift = q - exp;
  unsigned long long n;
  int rest; // -1: below half, 0: exactly half, 1: above half, 2: exact
  if (shift <= 0) {
    n = sig << (-shift); // exact (only small integers land here)
    rest = 2;
  } else if (shift >= 64) {
    n = 0;
    rest = -1; // sig < 2^64 <= 2^(shift): strictly below half a quantum
    if (shift == 64 && (sig >> 63))
      rest = (sig << 1) ? 1 : 0;
  } else {
    n = sig >> shift;
    unsigned long long r = sig & ((1ull << shift) - 1);
    unsigned long long half = 1ull << (shift - 1);
    rest = r == 0 ? 2 : (r < half ? -1 : (r == half ? 0 : 1));
  }
  if (rest != 2) {
    bool up = false;
    switch (mode) {
    case kRoundNearestEven:
      up = rest == 1 || (rest == 0 && (n & 1));
      break;
    case kRoundZero:
      break;
    case kRoundDown:
      up = neg;
      break;
    case kRoundUp:
      up = !neg;
      break;
    }
    n += up ? 1 : 0;
  }
  if (n >> (manBits + 1)) { // carried into the next binade
    n >>= 1;
    ++q;
  }
  if (n >> manBits) { // normal
    int field = q + manBits + bias;
    if (field >= expAllOnes) {
      bool toInf = mode == kRoundNearestEven ||
                   (mode == kRoundUp && !neg) || (mode == kRoundDown && neg);
      if (toInf)
        return sign | static_cast<uint16_t>(expAllOnes << manBits);
      return sign | static_cast<uint16_t>(((expAllOnes - 1) << manBits) |
                                          ((1 << manBits) - 1));
    }
    return sign | static_cast<uint16_t>((field << manBits) |
                                        (n & ((1ull << manBits) - 1)));
  }
  return sign | static_cast<uint16_t>(n); // subnormal or zero
}

/// A double (every float is one exactly) to the 16-bit format; NaN gives
/// the canonical NaN 0x7fff, as cvt.rn.{f16,bf16}.f32 does.
inline uint16_t round16(double x, int manBits, int expBits, RoundMode mode) {
  uint64_t u;
  std::memcpy(&u, &x, 8);
  const bool neg = (u >> 63) != 0;
  const unsigned ex = static_cast<unsigned>((u >> 52) & 0x7ff);
  const unsigned long long fr = u & ((1ull << 52) - 1);
  if (ex == 0x7ff) {
    if (fr)
      return 0x7fff;
    return (neg ? 0x8000u : 0u) |
           static_cast<uint16_t>(((1 << expBits) - 1) << manBits);
  }
  if (ex == 0)
    return round16(neg, fr, -1074, manBits, expBits, mode);
  return round16(neg, fr | (1ull << 52), static_cast<int>(ex) - 1075,
                 manBits, expBits, mode);
}

inline uint16_t round16(long long v, int manBits, int expBits,
                        RoundMode mode) {
  bool neg = v < 0;
  unsigned long long m = neg ? 0ull - static_cast<unsigned long long>(v)
                             : static_cast<unsigned long long>(v);
  return round16(neg, m, 0, manBits, expBits, mode);
}
inline uint16_t round16(unsigned long long v, int manBits, int expBits,
                        RoundMode mode) {
  return round16(false, v, 0, manBits, expBits, mode);
}

constexpr int kHalfMan = 10, kHalfExp = 5, kBf16Man = 7, kBf16Exp = 8;

/// float -> bfloat16, round to nearest even (the classic bit trick, exact
/// for every input; NaN -> 0x7fff).
inline uint16_t float_to_bf16_rn(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return 0x7fff;
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}
inline uint16_t float_to_half(float f, RoundMode mode) {
  return round16(static_cast<double>(f), kHalfMan, kHalfExp, mode);
}
inline uint16_t float_to_bf16(float f, RoundMode mode) {
  if (mode == kRoundNearestEven)
    return float_to_bf16_rn(f);
  return round16(static_cast<double>(f), kBf16Man, kBf16Exp, mode);
}
/// IEEE half -> float, exact (NaN payloads are kept).
inline float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t ex = (h >> 10) & 0x1fu, man = h & 0x3ffu, f;
  if (ex == 0x1f) {
    f = sign | 0x7f800000u | (man << 13);
  } else if (ex == 0) {
    if (man == 0) {
      f = sign;
    } else { // subnormal: man * 2^-24
      int p = 31 - __builtin_clz(man); // leading bit, 0..9
      uint32_t m = (man << (10 - p)) & 0x3ffu;
      f = sign | (static_cast<uint32_t>(p - 24 + 127) << 23) | (m << 13);
    }
  } else {
    f = sign | ((ex - 15 + 127) << 23) | (man << 13);
  }
  return __uint_as_float(f);
}

} // namespace detail
} // namespace moe_emu

#define __CUDA_FP16_TYPES_EXIST__
#define __CUDA_BF16_TYPES_EXIST__

struct __half_raw {
  unsigned short x;
};
struct __half2_raw {
  unsigned short x, y;
};
struct __nv_bfloat16_raw {
  unsigned short x;
};
struct __nv_bfloat162_raw {
  unsigned short x, y;
};

#define MOE_EMU_HALF_TYPE(T, RAW, MAN, EXP, TOF, FROMF)                          \
  struct __align__(2) T {                                                      \
    unsigned short __x;                                                        \
    T() = default;                                                             \
    constexpr T(const RAW &r) : __x(r.x) {}                                    \
    T(float f) : __x(FROMF(f)) {}                                              \
    T(double d)                                                                \
        : __x(::moe_emu::detail::round16(                                      \
              d, MAN, EXP, ::moe_emu::detail::kRoundNearestEven)) {}           \
    T(short v) : T(static_cast<long long>(v)) {}                               \
    T(unsigned short v) : T(static_cast<unsigned long long>(v)) {}             \
    T(int v) : T(static_cast<long long>(v)) {}                                 \
    T(unsigned int v) : T(static_cast<unsigned long long>(v)) {}               \
    T(long v) : T(static_cast<long long>(v)) {}                                \
    T(unsigned long v) : T(static_cast<unsigned long long>(v)) {}              \
    T(long long v)                                                             \
        : __x(::moe_emu::detail::round16(                                      \
              v, MAN, EXP, ::moe_emu::detail::kRoundNearestEven)) {}           \
    T(unsigned long long v)                                                    \
        : __x(::moe_emu::detail::round16(                                      \
              v, MAN, EXP, ::moe_emu::detail::kRoundNearestEven)) {}           \
    T &operator=(const RAW &r) {                                               \
      __x = r.x;                                                               \
      return *this;                                                            \
    }                                                                          \
    template <typename U, typename = typename std::enable_if<                  \
                              std::is_arithmetic<U>::value>::type>             \
    T &operator=(U v) {                                                        \
      __x = T(v).__x;                                                          \
      return *this;                                                            \
    }                                                                          \
    operator RAW() const {                                                     \
      RAW r;                                                                   \
      r.x = __x;                                                               \
      return r;                                                                \
    }                                                                          \
    operator float() const { return TOF(__x); }                                \
  };

namespace moe_emu {
namespace detail {
inline uint16_t half_rn(float f) { return float_to_half(f, kRoundNearestEven); }
} // namespace detail
} // namespace moe_emu

MOE_EMU_HALF_TYPE(__half, __half_raw, 10, 5, ::moe_emu::detail::half_to_float,
                  ::moe_emu::detail::half_rn)
MOE_EMU_HALF_TYPE(__nv_bfloat16, __nv_bfloat16_raw, 7, 8,
                  ::moe_emu::detail::bf16_to_float,
                  ::moe_emu::detail::float_to_bf16_rn)
#undef MOE_EMU_HALF_TYPE

struct __align__(4) __half2 {
  __half x, y;
  __half2() = default;
  constexpr __half2(const __half &a, const __half &b) : x(a), y(b) {}
  __half2(const __half2_raw &r) : x(__half_raw{r.x}), y(__half_raw{r.y}) {}
  operator __half2_raw() const { return __half2_raw{x.__x, y.__x}; }
};
struct __align__(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
  __nv_bfloat162() = default;
  constexpr __nv_bfloat162(const __nv_bfloat16 &a, const __nv_bfloat16 &b)
      : x(a), y(b) {}
  __nv_bfloat162(const __nv_bfloat162_raw &r)
      : x(__nv_bfloat16_raw{r.x}), y(__nv_bfloat16_raw{r.y}) {}
  operator __nv_bfloat162_raw() const {
    return __nv_bfloat162_raw{x.__x, y.__x};
  }
};

typedef __half half;
typedef __half2 half2;
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

namespace moe_emu {
namespace detail {
inline __half make_half_bits(uint16_t b) { return __half(__half_raw{b}); }
inline __nv_bfloat16 make_bf16_bits(uint16_t b) {
  return __nv_bfloat16(__nv_bfloat16_raw{b});
}
/// One rounding of an exact double result (sums, products and quotients
/// of 16-bit values are exact or far from a tie in double).
inline __half half_from_double(double d) {
  return make_half_bits(round16(d, kHalfMan, kHalfExp, kRoundNearestEven));
}
inline __nv_bfloat16 bf16_from_double(double d) {
  return make_bf16_bits(round16(d, kBf16Man, kBf16Exp, kRoundNearestEven));
}
inline __half round_like(const __half &, double d) { return half_from_double(d); }
inline __nv_bfloat16 round_like(const __nv_bfloat16 &, double d) {
  return bf16_from_double(d);
}
} // namespace detail
} // namespace moe_emu

// Conversions --------------------------------------------------------------

#define MOE_EMU_CONV(T, PREFIX, SUFFIX, FN, MODE)                              \
  inline T PREFIX##SUFFIX(float f) {                                           \
    return T(FN(f, ::moe_emu::detail::MODE));                                  \
  }
#define MOE_EMU_HALF_BITS(b) ::moe_emu::detail::make_half_bits(b)
#define MOE_EMU_BF16_BITS(b) ::moe_emu::detail::make_bf16_bits(b)

inline __half __float2half(float f) {
  return MOE_EMU_HALF_BITS(::moe_emu::detail::float_to_half(
      f, ::moe_emu::detail::kRoundNearestEven));
}
inline __half __float2half_rn(float f) { return __float2half(f); }
inline __half __float2half_rz(float f) {
  return MOE_EMU_HALF_BITS(
      ::moe_emu::detail::float_to_half(f, ::moe_emu::detail::kRoundZero));
}
inline __half __float2half_rd(float f) {
  return MOE_EMU_HALF_BITS(
      ::moe_emu::detail::float_to_half(f, ::moe_emu::detail::kRoundDown));
}
inline __half __float2half_ru(float f) {
  return MOE_EMU_HALF_BITS(
      ::moe_emu::detail::float_to_half(f, ::moe_emu::detail::kRoundUp));
}
inline float __half2float(__half h) {
  return ::moe_emu::detail::half_to_float(h.__x);
}
inline __half __double2half(double d) {
  return ::moe_emu::detail::half_from_double(d);
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  return MOE_EMU_BF16_BITS(::moe_emu::detail::float_to_bf16_rn(f));
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  return __float2bfloat16(f);
}
inline __nv_bfloat16 __float2bfloat16_rz(float f) {
  return MOE_EMU_BF16_BITS(
      ::moe_emu::detail::float_to_bf16(f, ::moe_emu::detail::kRoundZero));
}
inline __nv_bfloat16 __float2bfloat16_rd(float f) {
  return MOE_EMU_BF16_BITS(
      ::moe_emu::detail::float_to_bf16(f, ::moe_emu::detail::kRoundDown));
}
inline __nv_bfloat16 __float2bfloat16_ru(float f) {
  return MOE_EMU_BF16_BITS(
      ::moe_emu::detail::float_to_bf16(f, ::moe_emu::detail::kRoundUp));
}
inline float __bfloat162float(__nv_bfloat16 h) {
  return ::moe_emu::detail::bf16_to_float(h.__x);
}
inline __nv_bfloat16 __double2bfloat16(double d) {
  return ::moe_emu::detail::bf16_from_double(d);
}
inline __half __int2half_rn(int v) { return __half(v); }
inline __nv_bfloat16 __int2bfloat16_rn(int v) { return __nv_bfloat16(v); }
inline int __half2int_rz(__half h) { return __float2int_rz(__half2float(h)); }
inline int __half2int_rn(__half h) { return __float2int_rn(__half2float(h)); }
inline int __bfloat162int_rz(__nv_bfloat16 h) {
  return __float2int_rz(__bfloat162float(h));
}
inline int __bfloat162int_rn(__nv_bfloat16 h) {
  return __float2int_rn(__bfloat162float(h));
}
// Bit reinterpretation.
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }
inline __half __ushort_as_half(unsigned short b) { return MOE_EMU_HALF_BITS(b); }
inline __half __short_as_half(short b) {
  return MOE_EMU_HALF_BITS(static_cast<unsigned short>(b));
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline short __bfloat16_as_short(__nv_bfloat16 h) {
  return static_cast<short>(h.__x);
}
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) {
  return MOE_EMU_BF16_BITS(b);
}
inline __nv_bfloat16 __short_as_bfloat16(short b) {
  return MOE_EMU_BF16_BITS(static_cast<unsigned short>(b));
}
#undef MOE_EMU_HALF_BITS
#undef MOE_EMU_BF16_BITS
#undef MOE_EMU_CONV

// Pairs.
inline __half2 make_half2(__half x, __half y) { return __half2(x, y); }
inline __half2 __halves2half2(__half lo, __half hi) { return __half2(lo, hi); }
inline __half2 __half2half2(__half a) { return __half2(a, a); }
inline __half2 __floats2half2_rn(float a, float b) {
  return __half2(__float2half_rn(a), __float2half_rn(b));
}
inline __half2 __float2half2_rn(float a) {
  return __half2(__float2half_rn(a), __float2half_rn(a));
}
inline __half2 __float22half2_rn(float2 v) {
  return __floats2half2_rn(v.x, v.y);
}
inline float2 __half22float2(__half2 v) {
  return make_float2(__half2float(v.x), __half2float(v.y));
}
inline __half __low2half(__half2 v) { return v.x; }
inline __half __high2half(__half2 v) { return v.y; }
inline float __low2float(__half2 v) { return __half2float(v.x); }
inline float __high2float(__half2 v) { return __half2float(v.y); }
inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2(a.x, b.x); }
inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2(a.y, b.y); }
inline __half2 __lowhigh2highlow(__half2 a) { return __half2(a.y, a.x); }

inline __nv_bfloat162 make_bfloat162(__nv_bfloat16 x, __nv_bfloat16 y) {
  return __nv_bfloat162(x, y);
}
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return __nv_bfloat162(lo, hi);
}
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) {
  return __nv_bfloat162(a, a);
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162(__float2bfloat16_rn(a), __float2bfloat16_rn(b));
}
inline __nv_bfloat162 __float2bfloat162_rn(float a) {
  return __nv_bfloat162(__float2bfloat16_rn(a), __float2bfloat16_rn(a));
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) {
  return __floats2bfloat162_rn(v.x, v.y);
}
inline float2 __bfloat1622float2(__nv_bfloat162 v) {
  return make_float2(__bfloat162float(v.x), __bfloat162float(v.y));
}
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 v) { return v.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 v) { return v.y; }
inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
inline __nv_bfloat162 __lows2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) {
  return __nv_bfloat162(a.x, b.x);
}
inline __nv_bfloat162 __highs2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) {
  return __nv_bfloat162(a.y, b.y);
}
inline __nv_bfloat162 __lowhigh2highlow(__nv_bfloat162 a) {
  return __nv_bfloat162(a.y, a.x);
}

// Arithmetic: one rounding of the exact result (add.rn.bf16, mul.rn.f16,
// fma.rn.bf16, ... of sm_80+ / sm_90).
#define MOE_EMU_HALF_ARITH(T, T2, TOF)                                         \
  inline T __hadd(T a, T b) {                                                  \
    return ::moe_emu::detail::round_like(a, double(TOF(a)) + double(TOF(b)));  \
  }                                                                            \
  inline T __hsub(T a, T b) {                                                  \
    return ::moe_emu::detail::round_like(a, double(TOF(a)) - double(TOF(b)));  \
  }                                                                            \
  inline T __hmul(T a, T b) {                                                  \
    return ::moe_emu::detail::round_like(a, double(TOF(a)) * double(TOF(b)));  \
  }                                                                            \
  inline T __hdiv(T a, T b) {                                                  \
    return ::moe_emu::detail::round_like(a, double(TOF(a)) / double(TOF(b)));  \
  }                                                                            \
  inline T __hadd_rn(T a, T b) { return __hadd(a, b); }                        \
  inline T __hsub_rn(T a, T b) { return __hsub(a, b); }                        \
  inline T __hmul_rn(T a, T b) { return __hmul(a, b); }                        \
  inline T __hfma(T a, T b, T c) {                                             \
    return ::moe_emu::detail::round_like(                                      \
        a, std::fma(double(TOF(a)), double(TOF(b)), double(TOF(c))));         \
  }                                                                            \
  inline T __hneg(T a) {                                                       \
    T r = a;                                                                   \
    r.__x ^= 0x8000u;                                                          \
    return r;                                                                  \
  }                                                                            \
  inline T __habs(T a) {                                                       \
    T r = a;                                                                   \
    r.__x &= 0x7fffu;                                                          \
    return r;                                                                  \
  }                                                                            \
  inline T __hmax(T a, T b) {                                                  \
    float x = TOF(a), y = TOF(b);                                              \
    if (std::isnan(x))                                                         \
      return std::isnan(y) ? T(__uint_as_float(0x7fffffffu)) : b;              \
    if (std::isnan(y))                                                         \
      return a;                                                                \
    return x > y || (x == y && !(a.__x & 0x8000u)) ? a : b;                    \
  }                                                                            \
  inline T __hmin(T a, T b) {                                                  \
    float x = TOF(a), y = TOF(b);                                              \
    if (std::isnan(x))                                                         \
      return std::isnan(y) ? T(__uint_as_float(0x7fffffffu)) : b;              \
    if (std::isnan(y))                                                         \
      return a;                                                                \
    return x < y || (x == y && (a.__x & 0x8000u)) ? a : b;                     \
  }                                                                            \
  inline bool __heq(T a, T b) { return TOF(a) == TOF(b); }                     \
  inline bool __hne(T a, T b) { return TOF(a) != TOF(b); }                     \
  inline bool __hlt(T a, T b) { return TOF(a) < TOF(b); }                      \
  inline bool __hle(T a, T b) { return TOF(a) <= TOF(b); }                     \
  inline bool __hgt(T a, T b) { return TOF(a) > TOF(b); }                      \
  inline bool __hge(T a, T b) { return TOF(a) >= TOF(b); }                     \
  inline bool __hisnan(T a) { return std::isnan(TOF(a)); }                     \
  inline int __hisinf(T a) {                                                   \
    float x = TOF(a);                                                          \
    return std::isinf(x) ? (x < 0 ? -1 : 1) : 0;                               \
  }                                                                            \
  inline T operator+(const T &a, const T &b) { return __hadd(a, b); }          \
  inline T operator-(const T &a, const T &b) { return __hsub(a, b); }          \
  inline T operator*(const T &a, const T &b) { return __hmul(a, b); }          \
  inline T operator/(const T &a, const T &b) { return __hdiv(a, b); }          \
  inline T &operator+=(T &a, const T &b) { return a = __hadd(a, b); }          \
  inline T &operator-=(T &a, const T &b) { return a = __hsub(a, b); }          \
  inline T &operator*=(T &a, const T &b) { return a = __hmul(a, b); }          \
  inline T &operator/=(T &a, const T &b) { return a = __hdiv(a, b); }          \
  inline T operator+(const T &a) { return a; }                                 \
  inline T operator-(const T &a) { return __hneg(a); }                         \
  inline bool operator==(const T &a, const T &b) { return __heq(a, b); }       \
  inline bool operator!=(const T &a, const T &b) { return __hne(a, b); }       \
  inline bool operator<(const T &a, const T &b) { return __hlt(a, b); }        \
  inline bool operator<=(const T &a, const T &b) { return __hle(a, b); }       \
  inline bool operator>(const T &a, const T &b) { return __hgt(a, b); }        \
  inline bool operator>=(const T &a, const T &b) { return __hge(a, b); }       \
  inline T2 __hadd2(T2 a, T2 b) { return T2(__hadd(a.x, b.x), __hadd(a.y, b.y)); } \
  inline T2 __hsub2(T2 a, T2 b) { return T2(__hsub(a.x, b.x), __hsub(a.y, b.y)); } \
  inline T2 __hmul2(T2 a, T2 b) { return T2(__hmul(a.x, b.x), __hmul(a.y, b.y)); } \
  inline T2 __h2div(T2 a, T2 b) { return T2(__hdiv(a.x, b.x), __hdiv(a.y, b.y)); } \
  inline T2 __hfma2(T2 a, T2 b, T2 c) {                                        \
    return T2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y));                   \
  }                                                                            \
  inline T2 __hneg2(T2 a) { return T2(__hneg(a.x), __hneg(a.y)); }             \
  inline T2 __habs2(T2 a) { return T2(__habs(a.x), __habs(a.y)); }             \
  inline T2 __hmax2(T2 a, T2 b) { return T2(__hmax(a.x, b.x), __hmax(a.y, b.y)); } \
  inline T2 __hmin2(T2 a, T2 b) { return T2(__hmin(a.x, b.x), __hmin(a.y, b.y)); } \
  inline T2 operator+(const T2 &a, const T2 &b) { return __hadd2(a, b); }      \
  inline T2 operator-(const T2 &a, const T2 &b) { return __hsub2(a, b); }      \
  inline T2 operator*(const T2 &a, const T2 &b) { return __hmul2(a, b); }      \
  inline T2 operator/(const T2 &a, const T2 &b) { return __h2div(a, b); }      \
  inline T2 &operator+=(T2 &a, const T2 &b) { return a = __hadd2(a, b); }      \
  inline T2 &operator-=(T2 &a, const T2 &b) { return a = __hsub2(a, b); }      \
  inline T2 &operator*=(T2 &a, const T2 &b) { return a = __hmul2(a, b); }      \
  inline T2 operator-(const T2 &a) { return __hneg2(a); }                      \
  inline bool operator==(const T2 &a, const T2 &b) {                           \
    return __heq(a.x, b.x) && __heq(a.y, b.y);                                 \
  }                                                                            \
  inline bool operator!=(const T2 &a, const T2 &b) { return !(a == b); }

MOE_EMU_HALF_ARITH(__half, __half2, __half2float)
MOE_EMU_HALF_ARITH(__nv_bfloat16, __nv_bfloat162, __bfloat162float)
#undef MOE_EMU_HALF_ARITH

#endif // MOE_EMU_TYPES_H
