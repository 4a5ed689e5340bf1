//===- moe_route.cuh - Building blocks of the fused routing kernel --------===//
//
// Part of moe-opt. The code generator composes a routing kernel from these
// templates, one call per op of a moe.fused_route body, in the order of the
// body: each token is handled by one warp; rows of scores live in shared
// memory; the last block to finish plans the dispatch (counts, offsets and
// the token order grouped by expert), so routing is one launch.
//
// Row ops run on lane 0 of the token's warp over at most a few hundred
// values; the router projection (T x H x E multiply-adds) is a kernel of
// its own before this one (routerLogits), spread over the GPU.
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

/// moe.router_linear, as a kernel of its own launched before the routing
/// kernel: logits[t, n] = x[t] . w[n] (+ bias[n]), f32, for every token t
/// and router row n < N. Block b takes the Tokens tokens of tile
/// b / Columns and the Rows router rows of chunk b % Columns, a warp per
/// row: the lanes read the row with 16-byte loads (coalesced) and dot it
/// with DecodeRows tokens at a time (moe_common.cuh rowDots), so that each
/// row is read from memory once per block and the tokens come from L1/L2.
/// At decode the router's weights are streamed by ceil(N / Rows) blocks in
/// parallel (one warp per token used to read all of them); at prefill the
/// grid is ceil(T / Tokens) x Columns blocks. The grid loops, so a clamped
/// grid is still correct.
///
/// Cosine routers (NormInput / NormWeight): the dot is divided by the L2
/// norm of the token row and/or the weight row (floored at eps) and
/// multiplied by scale, then the bias is added. The warp computes a weight
/// row's norm once per row and a token's norm per batch of DecodeRows
/// tokens (the rows come from L1/L2, like the dot's).
template <typename TX, typename TW, typename TB, int H, int N, bool HasBias,
          int Tokens, int Rows, bool NormInput = false,
          bool NormWeight = false>
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

template <int N> __device__ void sigmoid(const float *in, float *out) {
  for (int i = 0; i < N; ++i)
    out[i] = moe_k::sigmoid(in[i]);
}

template <int N> __device__ void relu(const float *in, float *out) {
  for (int i = 0; i < N; ++i)
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
  for (int i = 0; i < N; ++i)
    out[i] = in[i] + toF32<TB>(bias[i]);
}

/// Keeps the `Keep` best of `G` contiguous groups (scored by their max or
/// the sum of their two best) and sets the others to -inf.
template <int N, int G, int Keep, bool Top2>
__device__ void groupLimit(const float *in, float *out) {
  constexpr int S = N / G;
  float score[G];
  bool kept[G];
  for (int g = 0; g < G; ++g) {
    float best = negInf(), second = negInf();
    for (int i = 0; i < S; ++i) {
      float v = in[g * S + i];
      if (v > best) {
        second = best;
        best = v;
      } else if (v > second) {
        second = v;
      }
    }
    score[g] = Top2 ? best + second : best;
    kept[g] = false;
  }
  for (int k = 0; k < Keep; ++k) {
    int arg = -1;
    float best = 0.0f;
    for (int g = 0; g < G; ++g)
      if (!kept[g] && (arg < 0 || score[g] > best)) {
        arg = g;
        best = score[g];
      }
    kept[arg] = true;
  }
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < S; ++i)
      out[g * S + i] = kept[g] ? in[g * S + i] : negInf();
}

/// The best value of `in` not yet taken (strictly greater than -inf and
/// than every later candidate: the lower index wins ties), or -1.
template <int N>
__device__ __forceinline__ int argmaxFree(const float *in,
                                          const bool *taken) {
  int arg = -1;
  float best = negInf();
  for (int i = 0; i < N; ++i)
    if (!taken[i] && in[i] > best) {
      best = in[i];
      arg = i;
    }
  return arg;
}

/// Selection by repeated argmax: `Keep(count, value, cumulative)` says
/// whether the next best candidate is taken.
template <int N, int K, typename KeepFn>
__device__ void selectBest(const float *in, int *ids, float *vals,
                           KeepFn keep) {
  bool taken[N];
  for (int i = 0; i < N; ++i)
    taken[i] = false;
  int count = 0;
  float cumulative = 0.0f;
  while (count < K) {
    int arg = argmaxFree<N>(in, taken);
    if (arg < 0 || !keep(count, in[arg], cumulative))
      break;
    taken[arg] = true;
    ids[count] = arg;
    vals[count] = in[arg];
    cumulative += in[arg];
    ++count;
  }
  for (int s = count; s < K; ++s) {
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
  for (int s = 0; s < K; ++s)
    out[s] = ids[s] < 0 ? 0.0f : scores[ids[s]];
}

template <int K>
__device__ void dropNullExperts(const int *ids, const float *w, int real,
                                int *outIds, float *outW) {
  for (int s = 0; s < K; ++s) {
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
  for (int s = 0; s < K; ++s)
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
  if (threadIdx.x == 0) {
    unsigned done = atomicAdd(counter, 1u);
    flag[0] = done == gridDim.x - 1 ? 1u : 0u;
    if (flag[0])
      counter[0] = 0;
  }
  __syncthreads();
  return flag[0] != 0;
}

} // namespace route
} // namespace moe_k

#endif // MOE_KERNELS_ROUTE_CUH
