//===- moe_route.cuh - Building blocks of the fused routing kernel --------===//
//
// Part of moe-opt. The code generator composes a routing kernel from these
// templates, one call per op of a moe.fused_route body, in the order of the
// body: each token is handled by one warp; rows of scores live in shared
// memory; the last block to finish plans the dispatch (counts, offsets and
// the token order grouped by expert), so routing is one launch.
//
// Selections (top-k, top-p, threshold, group limit) and elementwise row ops
// run on the whole warp, in registers and shuffles (no local memory); the
// others (softmax, normalize, ...) on lane 0 of the token's warp over at
// most a few hundred values. The router projection (T x H x E
// multiply-adds) is a kernel of its own before this one (routerLogits),
// spread over the GPU; at small T (moe::kSmallRouteMaxTokens) one kernel
// does both: every block a share of the projection (routerParts), the last
// block the routing (loadLogitParts, then the same row ops).
// Semantics follow docs/dialect.md exactly, including tie breaking (the
// lower index wins) and empty slots (id -1, weight 0).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_ROUTE_CUH
#define MOE_KERNELS_ROUTE_CUH

#include "moe_common.cuh"

namespace moe_k {
namespace route {

/// 1 / max(|row|, eps) over the H values of a row, by a whole warp.
template <int H, typename T>
__device__ __forceinline__ float invRowNorm(const T *row, float eps) {
  float ss = 0.0f;
  for (int h = static_cast<int>(threadIdx.x % 32); h < H; h += 32) {
    float v = toF32<T>(row[h]);
    ss += v * v;
  }
  ss = warpSum(ss);
  float n = sqrtf(ss);
  return 1.0f / (n > eps ? n : eps);
}

/// The dots of router row `row` (H elements) with tokens r0 .. r0 + count
/// (count <= DecodeRows) of x over chunk c of Chunk elements (the last
/// chunk may be shorter), by one warp; every lane gets them. Chunk == H:
/// the whole row, as rowDots reads it.
template <typename TX, typename TW, int H, int Chunk>
__device__ __forceinline__ void chunkDots(const TX *x, long long r0,
                                          int count, const TW *row, int c,
                                          float (&out)[DecodeRows]) {
  Batch<TX> b;
  b.count = count;
#pragma unroll
  for (int i = 0; i < DecodeRows; ++i) {
    b.row[i] = x + (r0 + (i < count ? i : 0)) * H + c * Chunk;
    b.scale[i] = 1.0f;
  }
  const TW *rows[1] = {row + c * Chunk};
  float acc[1][DecodeRows];
  if constexpr (Chunk == H) {
    rowDots<1, H, TX, false>(rows, b, acc);
  } else {
    const int n = H - c * Chunk < Chunk ? H - c * Chunk : Chunk;
    rowDotsUpTo<1, Chunk, H, H % Chunk != 0, TX, false>(rows, b, acc, n);
  }
#pragma unroll
  for (int i = 0; i < DecodeRows; ++i)
    out[i] = acc[0][i];
}

/// Router row n's logits for tokens [t0, tEnd), by one warp, into
/// logits[t * N + n]: the row is dotted with DecodeRows tokens at a time,
/// chunk by chunk (Chunk elements; the chunks' warp sums added in order,
/// so that the split projection of the small-T kernel, routerParts and
/// loadLogitParts, computes the same f32 values), then scaled (cosine
/// routers) and biased.
template <typename TX, typename TW, typename TB, int H, int N, bool HasBias,
          int Chunk, bool NormInput, bool NormWeight>
__device__ __forceinline__ void logitsRow(const TX *x, const TW *w, const TB *bias, int n,
                          long long t0, long long tEnd, float *logits,
                          float scale, float eps) {
  constexpr int S = (H + Chunk - 1) / Chunk;
  static_assert(S == 1 || !(NormInput || NormWeight),
                "cosine routers read whole rows");
  const int lane = threadIdx.x % 32;
  const TW *row = w + static_cast<long long>(n) * H;
  float rowScale = 1.0f;
  if constexpr (NormInput || NormWeight)
    rowScale = scale;
  if constexpr (NormWeight)
    rowScale *= invRowNorm<H>(row, eps);
  for (long long r0 = t0; r0 < tEnd; r0 += DecodeRows) {
    const int count =
        static_cast<int>(tEnd - r0 < DecodeRows ? tEnd - r0 : DecodeRows);
    float acc[DecodeRows];
    if constexpr (S == 1) {
      // The whole row, as the projection kernel always read it.
      Batch<TX> a;
      a.count = count;
#pragma unroll
      for (int i = 0; i < DecodeRows; ++i) {
        a.row[i] = x + (r0 + (i < count ? i : 0)) * H;
        a.scale[i] = 1.0f;
      }
      const TW *rows[1] = {row};
      float whole[1][DecodeRows];
      rowDots<1, H, TX, false>(rows, a, whole);
#pragma unroll
      for (int i = 0; i < DecodeRows; ++i)
        acc[i] = whole[0][i];
    } else {
#pragma unroll
      for (int i = 0; i < DecodeRows; ++i)
        acc[i] = 0.0f;
#pragma unroll 1
      for (int c = 0; c < S; ++c) {
        float part[DecodeRows];
        chunkDots<TX, TW, H, Chunk>(x, r0, count, row, c, part);
#pragma unroll
        for (int i = 0; i < DecodeRows; ++i)
          acc[i] += part[i];
      }
    }
    float tokenScale[DecodeRows];
#pragma unroll
    for (int i = 0; i < DecodeRows; ++i) {
      tokenScale[i] = rowScale;
      if constexpr (NormInput)
        tokenScale[i] *= invRowNorm<H>(x + (r0 + (i < count ? i : 0)) * H,
                                       eps);
    }
#pragma unroll
    for (int i = 0; i < DecodeRows; ++i)
      if (lane == i && i < count) {
        float v = acc[i];
        if constexpr (NormInput || NormWeight)
          v *= tokenScale[i];
        if constexpr (HasBias)
          v += toF32<TB>(bias[n]);
        logits[(r0 + i) * N + n] = v;
      }
  }
}

/// moe.router_linear, as a kernel of its own launched before the routing
/// kernel (T above the small-T kernel's limit): logits[t, n] = x[t] . w[n]
/// (+ bias[n]), f32, for every token t and router row n < N. Block b takes
/// the Tokens tokens of tile b / Columns and the Rows router rows of chunk
/// b % Columns, a warp per row (logitsRow): the lanes read the row with
/// 16-byte loads (coalesced) and dot it with DecodeRows tokens at a time
/// (moe_common.cuh rowDots), so that each row is read from memory once per
/// block and the tokens come from L1/L2. The grid is ceil(T / Tokens) x
/// Columns blocks. The grid loops, so a clamped grid is still correct.
///
/// Cosine routers (NormInput / NormWeight): the dot is divided by the L2
/// norm of the token row and/or the weight row (floored at eps) and
/// multiplied by scale, then the bias is added. The warp computes a weight
/// row's norm once per row and a token's norm per batch of DecodeRows
/// tokens (the rows come from L1/L2, like the dot's).
template <typename TX, typename TW, typename TB, int H, int N, bool HasBias,
          int Tokens, int Rows, bool NormInput = false,
          bool NormWeight = false, int Chunk = H>
__device__ void routerLogits(const TX *x, const TW *w, const TB *bias,
                             float *logits, long long T, float scale = 1.0f,
                             float eps = 1e-12f) {
  constexpr int Columns = (N + Rows - 1) / Rows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warps = blockDim.x / 32;
  const long long items = (T + Tokens - 1) / Tokens * Columns;
  for (long long item = blockIdx.x; item < items; item += gridDim.x) {
    const long long t0 = item / Columns * Tokens;
    const long long tEnd = t0 + Tokens < T ? t0 + Tokens : T;
    const int n0 = static_cast<int>(item % Columns) * Rows;
    for (int n = n0 + warp; n < n0 + Rows && n < N; n += warps) {
      if constexpr (Chunk < H) {
        logitsRow<TX, TW, TB, H, N, HasBias, Chunk, NormInput, NormWeight>(
            x, w, bias, n, t0, tEnd, logits, scale, eps);
        continue;
      }
      // Whole rows: the body of logitsRow with S == 1, written out here
      // (through logitsRow ptxas spills a few bytes).
      const TW *row[1] = {w + static_cast<long long>(n) * H};
      float rowScale = 1.0f;
      if constexpr (NormInput || NormWeight)
        rowScale = scale;
      if constexpr (NormWeight)
        rowScale *= invRowNorm<H>(row[0], eps);
      for (long long r0 = t0; r0 < tEnd; r0 += DecodeRows) {
        const int count = static_cast<int>(
            tEnd - r0 < DecodeRows ? tEnd - r0 : DecodeRows);
        Batch<TX> a;
        a.count = count;
#pragma unroll
        for (int i = 0; i < DecodeRows; ++i) {
          a.row[i] = x + (r0 + (i < count ? i : 0)) * H;
          a.scale[i] = 1.0f;
        }
        float acc[1][DecodeRows];
        rowDots<1, H, TX, false>(row, a, acc);
        float tokenScale[DecodeRows];
#pragma unroll
        for (int i = 0; i < DecodeRows; ++i) {
          tokenScale[i] = rowScale;
          if constexpr (NormInput)
            tokenScale[i] *= invRowNorm<H>(a.row[i], eps);
        }
#pragma unroll
        for (int i = 0; i < DecodeRows; ++i)
          if (lane == i && i < count) {
            float v = acc[0][i];
            if constexpr (NormInput || NormWeight)
              v *= tokenScale[i];
            if constexpr (HasBias)
              v += toF32<TB>(bias[n]);
            logits[(r0 + i) * N + n] = v;
          }
      }
    }
  }
}

/// The router projection of the small-T routing kernel (phase 0, every
/// block of the grid): the work is split into N x S items (router row n,
/// chunk c of Chunk elements, S = ceil(H / Chunk)), one warp each, spread
/// over all warps of the grid, so that at T = 1 the router's weights are
/// streamed by N * S / 4 blocks rather than ceil(N / 8). With S == 1 an
/// item is logitsRow over all T tokens (parts is then [T, N] of logits,
/// bias and cosine scaling included); with S > 1 it writes the chunk's warp
/// sums unbiased to parts [T, S, N], which loadLogitParts adds in chunk
/// order (the same values as logitsRow's). Deterministic: no atomics, each
/// value written by one lane.
template <typename TX, typename TW, typename TB, int H, int N, bool HasBias,
          int Chunk, bool NormInput = false, bool NormWeight = false>
__device__ void routerParts(const TX *x, const TW *w, const TB *bias,
                            float *parts, long long T, float scale = 1.0f,
                            float eps = 1e-12f) {
  constexpr int S = (H + Chunk - 1) / Chunk;
  if constexpr (S == 1) {
    // Whole rows: a row per warp over all T tokens.
    const int warps = blockDim.x / 32;
    for (long long n = static_cast<long long>(blockIdx.x) * warps +
                       threadIdx.x / 32;
         n < N; n += static_cast<long long>(gridDim.x) * warps)
      logitsRow<TX, TW, TB, H, N, HasBias, Chunk, NormInput, NormWeight>(
          x, w, bias, static_cast<int>(n), 0, T, parts, scale, eps);
    return;
  }
  const int lane = threadIdx.x % 32;
  const int warps = blockDim.x / 32;
  const long long first = static_cast<long long>(blockIdx.x) * warps +
                          threadIdx.x / 32;
  for (long long item = first; item < static_cast<long long>(N) * S;
       item += static_cast<long long>(gridDim.x) * warps) {
    const int n = static_cast<int>(item / S), c = static_cast<int>(item % S);
    const TW *row = w + static_cast<long long>(n) * H;
    for (long long r0 = 0; r0 < T; r0 += DecodeRows) {
      const int count =
          static_cast<int>(T - r0 < DecodeRows ? T - r0 : DecodeRows);
      float part[DecodeRows];
      chunkDots<TX, TW, H, Chunk>(x, r0, count, row, c, part);
#pragma unroll
      for (int i = 0; i < DecodeRows; ++i)
        if (lane == i && i < count)
          parts[((r0 + i) * S + c) * N + n] = part[i];
    }
  }
}

/// Token t's router logits from routerParts' output into the token's row
/// of shared memory, by the token's warp: the S chunk sums of each row
/// added in order (from 0, as logitsRow adds them), then the bias (S > 1:
/// routerParts left it out). Volatile loads: the parts were written by
/// other blocks of this launch (the caller is the last block to finish,
/// lastBlockDone), so they must come from L2, not from a stale L1 line.
template <int N, int S, bool HasBias, typename TB>
__device__ __forceinline__ void loadLogitParts(const float *parts,
                                               const TB *bias, long long t,
                                               float *out, int lane) {
  const volatile float *p = parts;
  for (int n = lane; n < N; n += 32) {
    float v;
    if constexpr (S == 1) {
      v = p[t * N + n];
    } else {
      v = 0.0f;
      for (int c = 0; c < S; ++c)
        v += p[(t * S + c) * N + n];
    }
    if constexpr (HasBias)
      v += toF32<TB>(bias[n]);
    out[n] = v;
  }
  __syncwarp();
}

/// The router logits of token t (a row of routerLogits' output) into the
/// token's row of shared memory, by the token's warp.
template <int N>
__device__ __forceinline__ void loadLogits(const float *logits, long long t,
                                           float *out, int lane) {
  for (int n = lane; n < N; n += 32)
    out[n] = logits[t * N + n];
  __syncwarp();
}

/// Softmax over the N values that `real(i)` admits, in two passes over
/// memory: an online max/sum pass, then the normalising pass. Values not
/// admitted and -inf values get 0; a row with none left gives zeros. A +inf
/// value makes the sum NaN (exp(inf - inf)), as in the reference executor
/// and in PyTorch, and so does a NaN value: then every admitted value is
/// NaN and no expert is selected.
template <int N, typename RealFn>
__device__ void softmaxOver(const float *in, float *out, RealFn real) {
  float m = negInf(), sum = 0.0f;
  for (int i = 0; i < N; ++i) {
    float v = in[i];
    if (!real(i) || v == negInf())
      continue;
    if (v > m) {
      sum = sum * expf(m - v) + 1.0f;
      m = v;
    } else {
      sum += expf(v - m);
    }
  }
  if (m > 3.402823466e38f)
    sum = m - m;
  for (int i = 0; i < N; ++i)
    out[i] = (!real(i) || m == negInf()) ? 0.0f
             : sum != sum                ? sum
             : in[i] == negInf()         ? 0.0f
                                         : expf(in[i] - m) / sum;
}

template <int N> __device__ void softmax(const float *in, float *out) {
  softmaxOver<N>(in, out, [](int) { return true; });
}

/// moe.softmax over the slots of a selection (ids: -1 for an empty slot):
/// the softmax of the real slots only; empty slots get exactly 0.
template <int K>
__device__ void maskedSoftmax(const float *in, const int *ids, float *out) {
  softmaxOver<K>(in, out, [ids](int i) { return ids[i] >= 0; });
}

/// moe.add_sequence_scores for token t: the row of its sequence (the host
/// checked every seqMap value against the rows of seqScores before launch).
template <int N>
__device__ void addSequenceScores(const float *in, const float *seqScores,
                                  const int *seqMap, long long t, float factor,
                                  float *out) {
  const float *row = seqScores + static_cast<long long>(seqMap[t]) * N;
  for (int i = 0; i < N; ++i)
    out[i] = in[i] + factor * row[i];
}

/// moe.similarity_mix: s[t, j] = (x_t . x_j) / tau, by the whole warp (the
/// lanes split the H products in f32; every lane gets the value).
template <int H, typename T>
__device__ __forceinline__ float similarity(const T *x, long long t,
                                            long long j, float tau) {
  const T *a = x + t * H, *b = x + j * H;
  float acc = 0.0f;
  for (int h = static_cast<int>(threadIdx.x % 32); h < H; h += 32)
    acc += toF32<T>(a[h]) * toF32<T>(b[h]);
  return warpSum(acc) / tau;
}

/// The largest s[t, j] over j < end: the shift of the mix's softmax.
template <int H, typename T>
__device__ float similarityMax(const T *x, long long t, long long end,
                               float tau) {
  float m = negInf();
  for (long long j = 0; j < end; ++j)
    m = fmaxf(m, similarity<H>(x, t, j, tau));
  return m;
}

/// acc += w * p over a row of N probabilities (token j's share of the mix).
template <int N>
__device__ void mixAccumulate(const float *p, float w, float *acc) {
  for (int i = 0; i < N; ++i)
    acc[i] += w * p[i];
}

/// Divides the mixed row by the softmax's sum.
template <int N> __device__ void mixFinish(float *acc, float sum) {
  for (int i = 0; i < N; ++i)
    acc[i] /= sum;
}

// Elementwise row ops, by the whole warp (lane l takes l, l + 32, ...):
// the same arithmetic per element as one thread, in any order.

/// The lane's first element of a row split over the warp.
__device__ __forceinline__ int laneBegin() {
  return static_cast<int>(threadIdx.x % 32);
}

template <int N> __device__ void sigmoid(const float *in, float *out) {
  for (int i = laneBegin(); i < N; i += 32)
    out[i] = moe_k::sigmoid(in[i]);
}

template <int N> __device__ void relu(const float *in, float *out) {
  for (int i = laneBegin(); i < N; i += 32)
    out[i] = fmaxf(in[i], 0.0f);
}

template <int N, bool HasWeight>
__device__ void rmsNorm(const float *in, const float *g, float eps,
                        float *out) {
  float ss = 0.0f;
  for (int i = 0; i < N; ++i)
    ss += in[i] * in[i];
  float inv = rsqrtf(ss / N + eps);
  for (int i = 0; i < N; ++i)
    out[i] = in[i] * inv * (HasWeight ? g[i] : 1.0f);
}

template <int N, typename TB>
__device__ void biasAdd(const float *in, const TB *bias, float *out) {
  for (int i = laneBegin(); i < N; i += 32)
    out[i] = in[i] + toF32<TB>(bias[i]);
}

// Selection by the whole warp. A row of N values is spread over the lanes,
// lane l holding values l, l + 32, ... in P = ceil(N / 32) registers whose
// indices are compile-time constants after unrolling (no local memory). The
// best candidate comes from a butterfly of warp shuffles over (value,
// index) pairs: the greater value wins, equal values go to the lower index,
// so every lane ends with the candidate that the sequential scan of the
// reference executor (strictly greater than the best so far, in index
// order) picks.

/// Whether candidate (v, i) beats (best, arg): valid candidates have
/// arg >= 0; greater value first, then the lower index.
__device__ __forceinline__ bool beats(float v, int i, float best, int arg) {
  if (i < 0)
    return false;
  if (arg < 0)
    return true;
  return v > best || (v == best && i < arg);
}

/// The warp's best (value, index) over every lane's candidate; every lane
/// gets it. Candidates with a negative index take no part.
__device__ __forceinline__ void warpBest(float &best, int &arg) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(0xffffffffu, best, offset);
    const int i = __shfl_xor_sync(0xffffffffu, arg, offset);
    if (beats(v, i, best, arg)) {
      best = v;
      arg = i;
    }
  }
}

/// Keeps the `Keep` best of `G` contiguous groups (scored by their max or
/// the sum of their two best) and sets the others to -inf, by the whole
/// warp: lane g % 32 scores group g (in order over the group, as the
/// sequential code did), the kept groups are a bit mask every lane holds.
/// The pick among groups not yet kept is the sequential scan's: the first
/// such group when its score is NaN, else the best non-NaN score (the
/// lower index on ties; -inf counts).
template <int N, int G, int Keep, bool Top2>
__device__ void groupLimit(const float *in, float *out) {
  constexpr int S = N / G;
  constexpr int PG = (G + 31) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  float score[PG];
  unsigned kept[PG];
#pragma unroll
  for (int p = 0; p < PG; ++p) {
    const int g = p * 32 + lane;
    float best = negInf(), second = negInf();
    if (g < G)
      for (int i = 0; i < S; ++i) {
        float v = in[g * S + i];
        if (v > best) {
          second = best;
          best = v;
        } else if (v > second) {
          second = v;
        }
      }
    score[p] = Top2 ? best + second : best;
    kept[p] = 0u;
  }
  for (int k = 0; k < Keep; ++k) {
    // The first group not kept yet, and whether its score is NaN.
    int first = -1;
    bool firstNaN = false;
#pragma unroll
    for (int p = PG - 1; p >= 0; --p) {
      const unsigned inGroup =
          p * 32 + 32 <= G ? 0xffffffffu : (1u << (G - p * 32)) - 1u;
      const unsigned free = ~kept[p] & inGroup;
      if (free) {
        first = p * 32 + __ffs(free) - 1;
        const int nan = score[p] != score[p] ? 1 : 0;
        firstNaN = __shfl_sync(0xffffffffu, nan, __ffs(free) - 1) != 0;
      }
    }
    int arg = first;
    if (!firstNaN) {
      float best = negInf();
      arg = -1;
#pragma unroll
      for (int p = 0; p < PG; ++p) {
        const int g = p * 32 + lane;
        const float v = score[p];
        if (g < G && !((kept[p] >> lane) & 1u) && v == v &&
            beats(v, g, best, arg)) {
          best = v;
          arg = g;
        }
      }
      warpBest(best, arg);
    }
#pragma unroll
    for (int p = 0; p < PG; ++p)
      if (arg >= 0 && arg / 32 == p)
        kept[p] |= 1u << (arg % 32);
  }
  for (int i = lane; i < N; i += 32) {
    const int g = i / S;
    bool k = false;
#pragma unroll
    for (int p = 0; p < PG; ++p)
      if (g / 32 == p)
        k = (kept[p] >> (g % 32)) & 1u;
    out[i] = k ? in[i] : negInf();
  }
}

/// Selection by repeated argmax, by the whole warp: `keep(count, value,
/// cumulative)` says whether the next best candidate is taken (every lane
/// evaluates it on the same values, so the loop stays uniform). The best
/// candidate not yet taken is strictly greater than -inf (NaN never is);
/// a taken one is set to -inf in its lane's register.
template <int N, int K, typename KeepFn>
__device__ void selectBest(const float *in, int *ids, float *vals,
                           KeepFn keep) {
  constexpr int P = (N + 31) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  float v[P];
#pragma unroll
  for (int p = 0; p < P; ++p)
    v[p] = p * 32 + lane < N ? in[p * 32 + lane] : negInf();
  int count = 0;
  float cumulative = 0.0f;
  while (count < K) {
    float best = negInf();
    int arg = -1;
#pragma unroll
    for (int p = 0; p < P; ++p)
      if (v[p] > best) {
        best = v[p];
        arg = p * 32 + lane;
      }
    warpBest(best, arg);
    if (arg < 0 || !keep(count, best, cumulative))
      break;
#pragma unroll
    for (int p = 0; p < P; ++p)
      if (arg == p * 32 + lane)
        v[p] = negInf();
    if (lane == 0) {
      ids[count] = arg;
      vals[count] = best;
    }
    cumulative += best;
    ++count;
  }
  for (int s = count + lane; s < K; s += 32) {
    ids[s] = -1;
    vals[s] = 0.0f;
  }
}

template <int N, int K>
__device__ void topK(const float *in, int *ids, float *vals) {
  selectBest<N, K>(in, ids, vals, [](int, float, float) { return true; });
}

/// moe.top_p: best first while fewer than MinK are taken, or the sum so
/// far is below p (reach: the fewest experts whose sum reaches p), or
/// (Within) the sum with the next one stays <= p; at most K.
template <int N, int K, int MinK = 1, bool Within = false>
__device__ void topP(const float *in, float p, int *ids, float *vals) {
  selectBest<N, K>(in, ids, vals,
                   [p](int count, float v, float cumulative) {
                     return count < MinK ||
                            (Within ? cumulative + v <= p : cumulative < p);
                   });
}

/// moe.entropy_fallback (DynMoLE), on lane 0 of the token's warp: the
/// Tsallis entropy (1 - sum (p + eps)^q) / (q - 1) of the token's N
/// probabilities (divided by its maximum (1 - N^(1-q)) / (q - 1) when
/// Normalized) against `threshold`. Above it, slot e takes expert e with
/// weight p[e]; otherwise the K slots of the selection, then empty slots.
template <int N, int K, bool Normalized>
__device__ void entropyFallback(const float *p, const int *selIds,
                                const float *selVals, float q, float eps,
                                float threshold, int *ids, float *vals) {
  float sum = 0.0f;
  for (int e = 0; e < N; ++e)
    sum += powf(p[e] + eps, q);
  float entropy = (1.0f - sum) / (q - 1.0f);
  if (Normalized)
    entropy /= (1.0f - powf(static_cast<float>(N), 1.0f - q)) / (q - 1.0f);
  const bool all = entropy > threshold;
  for (int e = 0; e < N; ++e) {
    ids[e] = all ? e : e < K ? selIds[e] : -1;
    vals[e] = all ? p[e] : e < K ? selVals[e] : 0.0f;
  }
}

template <int N, int K>
__device__ void threshold(const float *in, float limit, int *ids,
                          float *vals) {
  selectBest<N, K>(in, ids, vals,
                   [limit](int, float v, float) { return v > limit; });
}

template <int N, int K>
__device__ void gatherScores(const float *scores, const int *ids,
                             float *out) {
  for (int s = laneBegin(); s < K; s += 32)
    out[s] = ids[s] < 0 ? 0.0f : scores[ids[s]];
}

template <int K>
__device__ void dropNullExperts(const int *ids, const float *w, int real,
                                int *outIds, float *outW) {
  for (int s = laneBegin(); s < K; s += 32) {
    bool null = ids[s] >= real;
    outIds[s] = null ? -1 : ids[s];
    outW[s] = null ? 0.0f : w[s];
  }
}

/// moe.remap_experts: maps each slot's id through `mapping` (E entries,
/// -1: dropped); a slot whose merged expert an earlier slot of the token
/// holds adds its weight there and becomes empty. With `count` (replicas
/// per expert), token `t` keeps a slot of expert e only when
/// t mod count[e] == index[e] (the replica this rank holds).
template <int K, int E>
__device__ void remapExperts(const int *ids, const float *w,
                             const int *mapping, const int *count,
                             const int *index, long long t, int *outIds,
                             float *outW) {
  for (int s = 0; s < K; ++s) {
    int id = ids[s];
    outIds[s] = -1;
    outW[s] = 0.0f;
    if (id < 0 || id >= E)
      continue;
    int m = mapping[id];
    if (m < 0 || (count && t % count[id] != index[id]))
      continue;
    int p = 0;
    while (p < s && outIds[p] != m)
      ++p;
    if (p < s) {
      outW[p] += w[s];
    } else {
      outIds[s] = m;
      outW[s] = w[s];
    }
  }
}

template <int K>
__device__ void normalize(const float *in, float eps, float *out) {
  float sum = eps;
  for (int s = 0; s < K; ++s)
    sum += in[s];
  for (int s = 0; s < K; ++s)
    out[s] = sum == 0.0f ? in[s] : in[s] / sum;
}

/// moe.normalize over the slots of a selection: the sum runs over the real
/// slots only; empty slots get exactly 0.
template <int K>
__device__ void maskedNormalize(const float *in, const int *ids, float eps,
                                float *out) {
  float sum = eps;
  for (int s = 0; s < K; ++s)
    if (ids[s] >= 0)
      sum += in[s];
  for (int s = 0; s < K; ++s)
    out[s] = ids[s] < 0 ? 0.0f : sum == 0.0f ? in[s] : in[s] / sum;
}

template <int K>
__device__ void scale(const float *in, float factor, float *out) {
  for (int s = laneBegin(); s < K; s += 32)
    out[s] = in[s] * factor;
}

/// Expert choice over all T tokens (run by one block once every token's
/// scores are in `scores` [T, N]): expert e takes its `Capacity` best
/// tokens (the lower token index wins ties). ids/vals are [T, N].
template <int N, int Capacity>
__device__ void expertChoice(const float *scores, long long T, int *ids,
                             float *vals) {
  for (long long i = threadIdx.x; i < T * N; i += blockDim.x) {
    ids[i] = -1;
    vals[i] = 0.0f;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < N; e += blockDim.x) {
    long long take = Capacity < T ? Capacity : T;
    for (long long c = 0; c < take; ++c) {
      long long arg = -1;
      float best = negInf();
      for (long long t = 0; t < T; ++t)
        if (ids[t * N + e] < 0 && (arg < 0 || scores[t * N + e] > best)) {
          best = scores[t * N + e];
          arg = t;
        }
      ids[arg * N + e] = e;
      vals[arg * N + e] = best;
    }
  }
  __syncthreads();
}

/// moe.capacity's C = ceil(factor * T * K / E), in double precision as the
/// reference executor computes it.
__device__ __forceinline__ long long expertCapacity(float factor, long long T,
                                                    int K, int E) {
  return static_cast<long long>(
      ceil(static_cast<double>(factor) * static_cast<double>(T) *
           static_cast<double>(K) / static_cast<double>(E)));
}

/// moe.capacity over all T tokens (run by one block once every token's ids
/// [T, K] and weights are in global memory): each expert keeps its first C
/// slots in priority order (slot 0 of every token in token order, then
/// slot 1, ...) and the later ones become empty (-1, 0). One thread per
/// expert walks the slots in that order, so the result is the sequential
/// walk's; it only writes slots of its own expert, so no two threads touch
/// one slot.
template <int K, int E>
__device__ void capacity(const int *ids, const float *weights, long long T,
                         float factor, int *outIds, float *outWeights) {
  const long long n = T * K;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    outIds[i] = ids[i];
    outWeights[i] = weights[i];
  }
  __syncthreads();
  const long long C = expertCapacity(factor, T, K, E);
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    long long taken = 0;
    for (int s = 0; s < K; ++s)
      for (long long t = 0; t < T; ++t) {
        const long long i = t * K + s;
        if (ids[i] != e)
          continue;
        if (taken < C) {
          ++taken;
        } else {
          outIds[i] = -1;
          outWeights[i] = 0.0f;
        }
      }
  }
  __syncthreads();
}

/// moe.sinkhorn over all T tokens (run by one block once every token's
/// scores are in `in` [T, E]): P = exp((s - row max) / epsilon), then
/// `iterations` rounds of row normalisation (each token's total 1) and
/// column normalisation (each expert's total T / E) into `out` [T, E]. A
/// thread per token for the row steps, a thread per expert for the column
/// steps, each summing in order, so the result is the reference
/// executor's; exponentials, sums and scales in double (IEEE on the device
/// as on the host), each step stored as f32.
template <int E>
__device__ void sinkhorn(const float *in, long long T, int iterations,
                         float epsilon, float *out) {
  const double eps = epsilon;
  for (long long t = threadIdx.x; t < T; t += blockDim.x) {
    float m = in[t * E];
    for (int e = 1; e < E; ++e)
      if (in[t * E + e] > m)
        m = in[t * E + e];
    const bool empty = m == negInf();
    for (int e = 0; e < E; ++e)
      out[t * E + e] =
          empty ? 0.0f
                : static_cast<float>(
                      exp((static_cast<double>(in[t * E + e]) - m) / eps));
  }
  __syncthreads();
  const double target = static_cast<double>(T) / static_cast<double>(E);
  for (int it = 0; it < iterations; ++it) {
    for (long long t = threadIdx.x; t < T; t += blockDim.x) {
      double sum = 0.0;
      for (int e = 0; e < E; ++e)
        sum += out[t * E + e];
      if (sum > 0.0)
        for (int e = 0; e < E; ++e)
          out[t * E + e] = static_cast<float>(out[t * E + e] / sum);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      double sum = 0.0;
      for (long long t = 0; t < T; ++t)
        sum += out[t * E + e];
      if (sum > 0.0) {
        const double f = target / sum;
        for (long long t = 0; t < T; ++t)
          out[t * E + e] = static_cast<float>(out[t * E + e] * f);
      }
    }
    __syncthreads();
  }
}

/// moe.dispatch: counts, offsets and rows (flat slot indices t * K + s
/// grouped by expert, in token then slot order) of ids [T, K], and the
/// inverse map slotRow [T * K] (the position of each slot in `rows`, -1 for
/// an empty slot: the grouped expert kernels' combine reads it); run by the
/// last block, all of its Warps warps: a stable counting sort, so the
/// result is the sequential walk's, deterministic.
///   1. each warp counts the experts of its contiguous range of slots
///      (shared-memory integer atomics: exact in any order);
///   2. counts and offsets over experts, a block-wide prefix sum; each
///      warp's cursor per expert starts after the earlier warps' slots;
///   3. each warp places its range 32 slots at a time in order: the lanes
///      of one expert rank themselves with __match_any_sync.
/// At T * K = 512 (decode) that is a few steps per warp, not 512 dependent
/// steps of one thread. Above 16 KB of per-warp counters (E > 1024), one
/// thread walks the slots instead.
template <int E, int K, int Warps = 4>
__device__ void planDispatch(const int *ids, long long T, int *counts,
                             int *offsets, int *rows, int *slotRow) {
  const long long n = T * K;
  if constexpr (E * Warps * 4 > 16384) {
    if (threadIdx.x == 0) {
      for (int e = 0; e < E; ++e)
        counts[e] = 0;
      for (long long s = 0; s < n; ++s)
        if (ids[s] >= 0 && ids[s] < E)
          ++counts[ids[s]];
      offsets[0] = 0;
      for (int e = 0; e < E; ++e)
        offsets[e + 1] = offsets[e] + counts[e];
      for (int e = 0; e < E; ++e)
        counts[e] = offsets[e]; // reused as cursors
      for (long long s = 0; s < n; ++s) {
        if (ids[s] >= 0 && ids[s] < E) {
          slotRow[s] = counts[ids[s]];
          rows[counts[ids[s]]++] = static_cast<int>(s);
        } else {
          slotRow[s] = -1;
        }
      }
      for (int e = 0; e < E; ++e)
        counts[e] = offsets[e + 1] - offsets[e];
    }
    __syncthreads();
  } else {
    constexpr int Threads = 32 * Warps;
    constexpr int Segment = (E + Threads - 1) / Threads;
    // cursor[w * E + e]: warp w's count of expert e, then its next row.
    MOE_SHARED(int, cursor, Warps * E);
    MOE_SHARED(int, warpTotals, Warps);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const long long chunk = (n + Warps - 1) / Warps;
    const long long begin = chunk * warp;
    const long long end = begin + chunk < n ? begin + chunk : n;

    for (int i = tid; i < Warps * E; i += Threads)
      cursor[i] = 0;
    __syncthreads();
    for (long long s = begin + lane; s < end; s += 32) {
      int e = ids[s];
      if (e >= 0 && e < E)
        atomicAdd(&cursor[warp * E + e], 1);
    }
    __syncthreads();

    // Each thread owns experts [tid * Segment, ...): their totals, then an
    // exclusive prefix sum over the threads (warp shuffles, then warps).
    const int first = tid * Segment;
    int local = 0;
    for (int e = first; e < first + Segment && e < E; ++e)
      for (int w = 0; w < Warps; ++w)
        local += cursor[w * E + e];
    int inclusive = local;
    for (int d = 1; d < 32; d *= 2) {
      int v = __shfl_up_sync(0xffffffffu, inclusive, d);
      if (lane >= d)
        inclusive += v;
    }
    if (lane == 31)
      warpTotals[warp] = inclusive;
    __syncthreads();
    int running = inclusive - local;
    for (int w = 0; w < warp; ++w)
      running += warpTotals[w];
    for (int e = first; e < first + Segment && e < E; ++e) {
      offsets[e] = running;
      int total = 0;
      for (int w = 0; w < Warps; ++w) {
        int c = cursor[w * E + e];
        cursor[w * E + e] = running + total;
        total += c;
      }
      counts[e] = total;
      running += total;
    }
    if (tid == Threads - 1)
      offsets[E] = running;
    __syncthreads();

    for (long long base = begin; base < end; base += 32) {
      long long s = base + lane;
      int e = s < end ? ids[s] : -1;
      bool valid = e >= 0 && e < E;
      int key = valid ? e : -1;
      unsigned peers = __match_any_sync(0xffffffffu, key);
      int rank = __popc(peers & ((1u << lane) - 1u));
      int row = valid ? cursor[warp * E + e] + rank : -1;
      __syncwarp();
      if (valid) {
        rows[row] = static_cast<int>(s);
        // The group's highest lane moves the cursor past the group.
        if (lane == 31 - __clz(peers))
          cursor[warp * E + e] += __popc(peers);
      }
      if (s < end)
        slotRow[s] = row;
      __syncwarp();
    }
    __syncthreads();
  }
}

/// True in the block that finishes last (all others' writes visible).
/// `counter` starts at 0 and is reset for the next launch.
__device__ __forceinline__ bool lastBlockDone(unsigned *counter,
                                              unsigned *flag) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0)
    flag[0] = arriveLast(counter, gridDim.x) ? 1u : 0u;
  __syncthreads();
  return flag[0] != 0;
}

} // namespace route
} // namespace moe_k

#endif // MOE_KERNELS_ROUTE_CUH
