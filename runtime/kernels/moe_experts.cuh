//===- moe_experts.cuh - The decode expert kernels ------------------------===//
//
// Part of moe-opt. Templates of the moe.fused_experts decode path (few
// routed slots: T * K <= moe::decodeMaxSlots(E, K)), and the pieces that
// the grouped (prefill) kernels of moe_grouped.cuh share with it. A
// configuration struct written by the code generator fixes every size,
// dtype, layout and option at compile time:
//
//   struct FFN {                         // one set of gated FFNs
//     using TW = ...; using TB = ...;    // weight and bias element types
//     static constexpr int H, I, E;      // hidden, intermediate, experts
//     static constexpr bool Fused, Interleaved, InOut;
//     static constexpr int Act;          // 0 silu, 1 gelu, 2 gelu_tanh,
//                                        // 3 clamped swiglu (gpt-oss),
//                                        // 4 relu
//     static constexpr float Alpha, Limit;
//     static constexpr bool GateBias, UpBias, GateUpBias, DownBias;
//     static constexpr bool LowRank;     // factored weights (moe.low_rank)
//     static constexpr int RG, RU, RD;   // their ranks (RU 0 when Fused)
//     static constexpr bool NoGate;      // down(act(up x + b)): no gate is
//                                        // read or multiplied (non_gated)
//     static constexpr bool Widths;      // experts of unequal width
//     static constexpr int IW, IVec;     // the widest expert; a divisor of
//                                        // I and of every width (loads)
//     static int width(long long e);     // expert e's intermediate size
//   };
//   struct Cfg {
//     using TX = ...;                    // activation element type
//     using Routed = FFN; using Shared = FFN;
//     static constexpr int K;
//     static constexpr bool ScaleInput, Unweighted, HasShared, SharedGate;
//     using TG = ...; using TGB = ...;   // the shared gate's weight, bias
//     static constexpr bool SharedGateBias;
//   };
//   struct Decode {                      // the decode kernels' chunks
//     static constexpr int UpUnits, DownCols, SharedUpUnits, SharedDownCols;
//     static constexpr int FactorInUnits, FactorDownUnits;
//   };
//
// The decode path is two kernels:
//
//   decodeUp<Cfg, D>    h[r, j] = act(x[token(r)] . gate_j, x . up_j)
//                       (non-gated: act(x[token(r)] . up_j + b_j))
//   decodeDown<Cfg, D>  out[r, o] = w(r) * roundAs<TX>(h[r] . down_o + b),
//                       then y[t] = sum over slots of out (+ shared
//                       experts) per chunk of outputs, by the block that
//                       finishes the chunk's last work item
//
// Factored routed experts (LowRank: every projection W = A . B, A [out, r]
// and B [r, in], out_in) run four kernels instead of two, and W is never
// formed: decodeFactorIn z = B . x for the gate and up factors (one z row
// per routed row, f32, FACTOR_IN scratch: gate's RG values then up's RU,
// each segment padded to FactorPad), decodeUp h = act(A_g . z_g, A_u . z_u),
// decodeFactorDown zd = B_d . h (FACTOR_DOWN scratch), decodeDown
// out = A_d . zd. The grouped kernels run them the same way, as tiled GEMMs
// over the same scratch (moe_grouped.cuh, grouped::factor).
//
// At decode the layer is bound by reading the selected experts' weights,
// so the work is split so that every SM streams weights and each weight
// row is read once, however many tokens chose its expert. A work item is
// (an active expert, a chunk of UpUnits hidden units) for decodeUp and (an
// active expert, a chunk of DownCols outputs) for decodeDown; it computes
// its chunk for every row of the expert (the rows of the dispatch plan,
// grouped by expert), DecodeRows rows at a time. The shared FFN adds
// ceil(I_shared / SharedUpUnits) (ceil(H / SharedDownCols)) items whose
// rows are all T tokens. "Active" experts are those with rows, found from
// the dispatch plan's offsets by every block; the host's grid is an upper
// bound from T alone ((min(T * K, E) + shared rows) * chunks), blocks past
// the last item exit at once, and every kernel loops grid-stride.
//
// Experts of unequal width (Widths, moe.expert_ffn `widths`): the stacks
// are I wide, expert e uses its first width(e) units. decodeUp has
// ceil(IW / UpUnits) chunks per expert (IW: the widest); an item whose
// chunk starts at or past width(e) returns before loading anything, and a
// chunk that straddles width(e) computes units j < width(e) only. decodeDown
// reads the first width(e) elements of each down row (or of each column:
// in_out) and of h; rowDotsUpTo's loads are IVec-aligned, IVec dividing
// every width, so no load reaches past width(e). The padding of the
// weights is never read and h past width(e) is neither written nor read.
//
// Weight reads are coalesced: for [out, in] matrices a warp takes a row and
// its lanes read consecutive 16-byte words along `in` (a warp-wide sum
// reduces the dot product); for [in, out] matrices (weight_layout in_out)
// a thread takes a 16-byte word of consecutive outputs of a row (8 bf16;
// interleaved gate/up: 4 pairs), consecutive threads consecutive words,
// the block's thread groups split `in` (each thread issuing the loads of
// several rows before it uses the first), and their partial sums are
// added in group order through shared memory (columnWords, columnSum).
// Sums are f32, in a fixed order: deterministic, no atomics. h and the
// per-row outputs go to the f32 scratch buffers of the grouped path (the
// HIDDEN and OUT slots), with the rounding points of the reference executor
// (roundAs<TX>), and the combine sums a token's slots in slot order, as the
// grouped path's combine does (combineOutput, shared by both). Which block
// combines an output chunk depends on timing (the last of the chunk's items
// to finish, counted with an atomic per chunk), the sums and their order do
// not.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_EXPERTS_CUH
#define MOE_KERNELS_EXPERTS_CUH

#include "moe_common.cuh"
#include "moe_quant.cuh"

namespace moe_k {
namespace experts {

/// The gated activation of one hidden unit; a non-gated FFN (NoGate) calls
/// it with g = up x + b and u = 1 (exact: act(g) * 1 == act(g)).
template <int Act>
__device__ __forceinline__ float activate(float g, float u, float alpha,
                                          float limit) {
  if constexpr (Act == 4) {
    return fmaxf(g, 0.0f) * u;
  } else if constexpr (Act == 0) {
    return g / (1.0f + expf(-g)) * u;
  } else if constexpr (Act == 1) {
    return 0.5f * g * (1.0f + erff(g * 0.70710678118654752f)) * u;
  } else if constexpr (Act == 2) {
    float c = 0.79788456080286536f; // sqrt(2 / pi)
    return 0.5f * g * (1.0f + tanhf(c * (g + 0.044715f * g * g * g))) * u;
  } else {
    g = fminf(g, limit);
    u = fmaxf(fminf(u, limit), -limit);
    return (u + 1.0f) * (g / (1.0f + expf(-alpha * g)));
  }
}

/// The pointers of one FFN set, read from the kernel arguments.
template <typename F> struct FFNWeights {
  const typename F::TW *gate, *up, *gateUp, *down;
  const typename F::TB *gateBias, *upBias, *gateUpBias, *downBias;
  /// The B factors of factored weights (the slots above hold the A ones).
  const typename F::TW *gateB, *upB, *gateUpB, *downB;
  /// Block-scaled weights (F::Quant): the slots above hold codes, these
  /// their scales (moe_quant.cuh).
  const typename F::TS *gateScale, *upScale, *gateUpScale, *downScale;
};

/// Factor rows (z = B . x) are stored in segments padded to this many f32,
/// so that every segment starts on a 32-byte boundary (vector loads).
constexpr int FactorPad = 8;
__host__ __device__ constexpr int padFactor(int r) {
  return (r + FactorPad - 1) / FactorPad * FactorPad;
}
/// Widths of a FACTOR_IN row (gate's then up's segment) and a FACTOR_DOWN
/// row of an FFN set F.
template <typename F> __host__ __device__ constexpr int factorInWidth() {
  return padFactor(F::RG) + padFactor(F::RU);
}
template <typename F> __host__ __device__ constexpr int factorDownWidth() {
  return padFactor(F::RD);
}

/// The f32 hidden activations h (the shared FFN's, or the routed rows')
/// of the MOE_EXPERTS slots.
template <bool SharedFFN>
__device__ __forceinline__ float *hiddenBuffer(const MoEKernelArgs &args) {
  return static_cast<float *>(args.buffers[SharedFFN
                                               ? MOE_EXPERTS_SLOT_SHARED_HIDDEN
                                               : MOE_EXPERTS_SLOT_HIDDEN]);
}

/// The f32 down-projection output (the shared FFN's, or the routed rows').
template <bool SharedFFN>
__device__ __forceinline__ float *outBuffer(const MoEKernelArgs &args) {
  return static_cast<float *>(
      args.buffers[SharedFFN ? MOE_EXPERTS_SLOT_SHARED_OUT
                             : MOE_EXPERTS_SLOT_OUT]);
}

/// The eight weight pointers of an FFN set (MoEFFNSlot order), from
/// argument slot `first` (MOE_EXPERTS_SLOT_ROUTED_GATE or _SHARED_GATE).
/// The expert kernels' buffers are the MOE_EXPERTS slots of KernelABI.h.
template <typename F>
__device__ __forceinline__ FFNWeights<F> ffnWeights(const MoEKernelArgs &args,
                                                    int first) {
  FFNWeights<F> w;
  w.gate = static_cast<const typename F::TW *>(
      args.buffers[first + MOE_FFN_SLOT_GATE]);
  w.up = static_cast<const typename F::TW *>(
      args.buffers[first + MOE_FFN_SLOT_UP]);
  w.gateUp = static_cast<const typename F::TW *>(
      args.buffers[first + MOE_FFN_SLOT_GATE_UP]);
  w.down = static_cast<const typename F::TW *>(
      args.buffers[first + MOE_FFN_SLOT_DOWN]);
  w.gateBias = static_cast<const typename F::TB *>(
      args.buffers[first + MOE_FFN_SLOT_GATE_BIAS]);
  w.upBias = static_cast<const typename F::TB *>(
      args.buffers[first + MOE_FFN_SLOT_UP_BIAS]);
  w.gateUpBias = static_cast<const typename F::TB *>(
      args.buffers[first + MOE_FFN_SLOT_GATE_UP_BIAS]);
  w.downBias = static_cast<const typename F::TB *>(
      args.buffers[first + MOE_FFN_SLOT_DOWN_BIAS]);
  w.gateB = w.upB = w.gateUpB = w.downB = nullptr;
  w.gateScale = w.upScale = w.gateUpScale = w.downScale = nullptr;
  if constexpr (F::Quant != 0) {
    const int scales = first == MOE_EXPERTS_SLOT_SHARED_GATE
                           ? MOE_EXPERTS_SLOT_SHARED_GATE_SCALE
                           : MOE_EXPERTS_SLOT_ROUTED_GATE_SCALE;
    using TS = typename F::TS;
    w.gateScale = static_cast<const TS *>(
        args.buffers[scales + MOE_FFN_SLOT_GATE_SCALE]);
    w.upScale =
        static_cast<const TS *>(args.buffers[scales + MOE_FFN_SLOT_UP_SCALE]);
    w.gateUpScale = static_cast<const TS *>(
        args.buffers[scales + MOE_FFN_SLOT_GATE_UP_SCALE]);
    w.downScale = static_cast<const TS *>(
        args.buffers[scales + MOE_FFN_SLOT_DOWN_SCALE]);
  }
  if constexpr (F::LowRank) {
    w.gateB = static_cast<const typename F::TW *>(
        args.buffers[MOE_EXPERTS_SLOT_ROUTED_GATE_B]);
    w.upB = static_cast<const typename F::TW *>(
        args.buffers[MOE_EXPERTS_SLOT_ROUTED_UP_B]);
    w.gateUpB = static_cast<const typename F::TW *>(
        args.buffers[MOE_EXPERTS_SLOT_ROUTED_GATE_UP_B]);
    w.downB = static_cast<const typename F::TW *>(
        args.buffers[MOE_EXPERTS_SLOT_ROUTED_DOWN_B]);
  }
  return w;
}

//===----------------------------------------------------------------------===//
// Decode kernels
//===----------------------------------------------------------------------===//

/// Threads of a decode block (the code generator's launches agree).
constexpr int DecodeThreads = 128;
constexpr int DecodeWarps = DecodeThreads / 32;

/// 16-byte words of a down row a lane of decodeDown loads at once: fewer
/// than decodeUp's DecodeLoadsInFlight, so that with the f32 words of h it
/// needs the kernel fits 80 registers (6 blocks per SM: 4 x 16 B x 128
/// threads x 6 = 48 KB in flight per SM; the code generator's
/// kDecodeDownMinBlocks).
constexpr int DecodeDownLoads = 4;
/// Rows of h a lane of decodeDown dots a down row with at once ([out, in]
/// weights): each costs 2 x V words of h per step in registers, so fewer
/// than DecodeRows; a row's sum adds the same terms in the same order
/// whatever the batch (the row is read again per batch, from L1).
constexpr int DecodeDownRows = 2;

// [in, out] weights (weight_layout in_out): a thread takes a word of V
// consecutive outputs of an input row (one 16-byte load when V elements
// are whole 16-byte words) and the rows group, group + G, ... of the
// input; the Wc threads of a group read a chunk's consecutive words of a
// row (coalesced), and the block's G = DecodeThreads / Wc groups split the
// input, their partial sums added in group order (columnSum).

/// Outputs per word for outputs of a matrix row of N-aligned runs (N: a
/// divisor of the row and of every expert's end along it) when a chunk
/// spans Span consecutive outputs (a power of two): a 16-byte word when
/// runs allow, no wider than the chunk.
template <typename TW, int N, int Span>
__host__ __device__ constexpr int columnVec() {
  return vecWidth<TW, N>() < Span ? vecWidth<TW, N>() : Span;
}
/// Input rows whose words a thread of decodeUp (decodeDown) loads before
/// it uses the first: NW words per row, Depth words in all.
template <int NW, int Depth> __host__ __device__ constexpr int columnRows() {
  return Depth / NW < 1 ? 1 : Depth / NW;
}

/// Partial dot products of NW words of V weight columns (of an [in, out]
/// matrix: `base[i] + k * Out` for input rows k < n) with the batch's
/// rows, for the thread of `group` of G: rows group, group + G, ...; L
/// rows' loads are issued before the first is used (rows past n
/// predicated off). Each sum adds its terms in row order.
template <int NW, int V, int Out, int G, int L, typename TX, bool Scale,
          typename TW, typename TA>
__device__ __forceinline__ void
columnWords(const TW *const (&base)[NW], bool valid, int group,
            const Batch<TA> &a, float (&acc)[NW][V][DecodeRows], int n) {
#pragma unroll
  for (int i = 0; i < NW; ++i)
#pragma unroll
    for (int j = 0; j < V; ++j)
#pragma unroll
      for (int b = 0; b < DecodeRows; ++b)
        acc[i][j][b] = 0.0f;
  if (!valid)
    return;
#pragma unroll 1
  for (int k0 = group; k0 < n; k0 += L * G) {
    Packed<TW, V> wv[L][NW];
    bool ok[L];
#pragma unroll
    for (int l = 0; l < L; ++l) {
      const int k = k0 + l * G;
      ok[l] = k < n;
      if (ok[l])
#pragma unroll
        for (int i = 0; i < NW; ++i)
          wv[l][i].load(base[i] + static_cast<long long>(k) * Out);
    }
#pragma unroll
    for (int l = 0; l < L; ++l) {
      if (!ok[l])
        continue;
      const int k = k0 + l * G;
#pragma unroll
      for (int b = 0; b < DecodeRows; ++b) {
        if (b >= a.count)
          continue;
        const float v = scaled<TX, Scale>(toF32<TA>(a.row[b][k]), a.scale[b]);
#pragma unroll
        for (int i = 0; i < NW; ++i)
#pragma unroll
          for (int j = 0; j < V; ++j)
            acc[i][j][b] += v * wv[l][i].get(j);
      }
    }
  }
}

/// Floats of columnSum's shared buffer for NW words of V outputs.
template <int NW, int V> __host__ __device__ constexpr int columnRed() {
  return NW * V * DecodeRows * DecodeThreads;
}
/// Adds the partial sums of columnWords over the G = DecodeThreads / Wc
/// groups (thread t: word t % Wc of group t / Wc) in group order. After
/// it, columnTotal(red, i, o, b) is the sum of word i's output o (o < Wc
/// * V: word o / V, element o % V) of batch row b, for every thread.
/// Called by the whole block.
template <int NW, int V, int Wc>
__device__ __forceinline__ void columnSum(float (&acc)[NW][V][DecodeRows],
                                          float *red) {
  constexpr int G = DecodeThreads / Wc;
  constexpr int Totals = NW * V * DecodeRows * Wc;
  __syncthreads(); // the previous batch's reads of red are done
#pragma unroll
  for (int i = 0; i < NW; ++i)
#pragma unroll
    for (int j = 0; j < V; ++j)
#pragma unroll
      for (int b = 0; b < DecodeRows; ++b)
        red[((i * V + j) * DecodeRows + b) * DecodeThreads + threadIdx.x] =
            acc[i][j][b];
  __syncthreads();
  // Total q: word q % Wc, its (i, j, b) q / Wc; written over group 0's
  // term, which only this thread reads.
#pragma unroll 1
  for (int q = threadIdx.x; q < Totals; q += DecodeThreads) {
    float *column = red + (q / Wc) * DecodeThreads + q % Wc;
    float total = 0.0f;
#pragma unroll 1
    for (int g = 0; g < G; ++g)
      total += column[g * Wc];
    column[0] = total;
  }
  __syncthreads();
}
__device__ __forceinline__ float columnTotal(const float *red, int V, int i,
                                             int o, int b) {
  return red[((i * V + o % V) * DecodeRows + b) * DecodeThreads + o / V];
}

/// decodeUp's words for in_out weights of FFN set F, U units a chunk:
/// outputs per word (interleaved gate/up pairs: V / 2 units a word),
/// words per input row and unit (NW: gate and up words, or one).
template <typename F, int U> struct UpColumns {
  static constexpr bool Pairs = F::Fused && F::Interleaved && !F::NoGate;
  static constexpr int NW = Pairs || F::NoGate ? 1 : 2;
  static constexpr int Span = Pairs ? 2 * U : U;
  static constexpr int Run = Pairs ? 2 * F::IVec : F::IVec;
  static constexpr int V0 = columnVec<typename F::TW, Run, Span>();
  static constexpr int V = Pairs && V0 < 2 ? 2 : V0; // whole pairs
  static constexpr int Wc = Span / V;
  static constexpr int L = columnRows<NW, DecodeLoadsInFlight>();
  static constexpr int Red = columnRed<NW, V>();
};
/// decodeDown's, C outputs a chunk.
template <typename F, int C> struct DownColumns {
  static constexpr int V = columnVec<typename F::TW, F::H, C>();
  static constexpr int Wc = C / V;
  static constexpr int L = columnRows<1, DecodeDownLoads>();
  static constexpr int Red = columnRed<1, V>();
};

/// The activation rows r0 .. r0 + count of the expert's input: routed rows
/// are slots (rows[r] = t * K + s: token t, routing weight weights[slot]),
/// the shared FFN's rows are the tokens.
template <typename Cfg, bool SharedFFN>
__device__ __forceinline__ Batch<typename Cfg::TX>
inputBatch(const MoEKernelArgs &args, long long r0, int count) {
  using TX = typename Cfg::TX;
  constexpr int H = Cfg::Routed::H, K = Cfg::K;
  const TX *x = static_cast<const TX *>(args.buffers[MOE_EXPERTS_SLOT_INPUT]);
  const float *weights =
      static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_WEIGHTS]);
  const int *rows =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_ROWS]);
  Batch<TX> a;
  a.count = count;
#pragma unroll
  for (int b = 0; b < DecodeRows; ++b) {
    const long long r = r0 + (b < count ? b : 0);
    if constexpr (SharedFFN) {
      a.row[b] = x + r * H;
      a.scale[b] = 1.0f;
    } else {
      const int slot = rows[r];
      a.row[b] = x + static_cast<long long>(slot / K) * H;
      a.scale[b] = weights[slot];
    }
  }
  return a;
}

/// The rows r0 .. r0 + count of a factor scratch buffer (W f32 wide), from
/// column `offset` on.
template <int W>
__device__ __forceinline__ Batch<float>
factorBatch(const float *z, long long r0, int count, int offset) {
  Batch<float> a;
  a.count = count;
#pragma unroll
  for (int b = 0; b < DecodeRows; ++b) {
    a.row[b] = z + (r0 + (b < count ? b : 0)) * W + offset;
    a.scale[b] = 1.0f;
  }
  return a;
}

/// One decodeFactorIn work item: z[r, k] = B[k] . x_r for the factor rows
/// k of [k0, k0 + U) (gate's RG rows, then up's RU) and the rows
/// [rowBegin, rowEnd) of routed expert e; scaled inputs as decodeUp has
/// them.
template <typename Cfg, int U>
__device__ __forceinline__ void
factorInItem(const MoEKernelArgs &args,
             const FFNWeights<typename Cfg::Routed> &w, long long e, int k0,
             long long rowBegin, long long rowEnd) {
  using F = typename Cfg::Routed;
  using TX = typename Cfg::TX;
  using TW = typename F::TW;
  constexpr int H = F::H, RG = F::RG, RU = F::RU;
  constexpr int W = factorInWidth<F>();
  float *z = static_cast<float *>(args.buffers[MOE_EXPERTS_SLOT_FACTOR_IN]);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int u = warp; u < U && k0 + u < RG + RU; u += DecodeWarps) {
    const int k = k0 + u;
    const TW *row[1];
    int col;
    if (k < RG) {
      row[0] = (F::Fused ? w.gateUpB : w.gateB) + (e * RG + k) * H;
      col = k;
    } else {
      row[0] = w.upB + (e * RU + (k - RG)) * H;
      col = padFactor(RG) + (k - RG);
    }
    for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeRows) {
      const int count =
          static_cast<int>(rowEnd - r0 < DecodeRows ? rowEnd - r0 : DecodeRows);
      const Batch<TX> a = inputBatch<Cfg, false>(args, r0, count);
      float acc[1][DecodeRows];
      rowDots<1, H, TX, Cfg::ScaleInput>(row, a, acc);
#pragma unroll
      for (int b = 0; b < DecodeRows; ++b)
        if (lane == b && b < count)
          z[(r0 + b) * W + col] = acc[0][b];
    }
  }
}

/// One decodeUp work item: h[r, j] for hidden units j of [j0, j0 + U) and
/// the rows [rowBegin, rowEnd) of expert e (a routed expert, or the shared
/// FFN with the tokens as rows).
template <typename Cfg, typename F, bool SharedFFN, int U>
__device__ __forceinline__ void
upItem(const MoEKernelArgs &args, const FFNWeights<F> &w, long long e, int j0,
       long long rowBegin, long long rowEnd, float *red) {
  using TX = typename Cfg::TX;
  using TW = typename F::TW;
  constexpr int H = F::H, I = F::I;
  constexpr bool Scale = Cfg::ScaleInput && !SharedFFN;
  float *h = hiddenBuffer<SharedFFN>(args);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  // Units past the expert's width are padding: not loaded, not computed.
  const int width = F::width(e);
  if (j0 >= width)
    return;

  // The weight rows (or columns) of unit j: gate first, then up. Fused
  // matrices hold 2I outputs: concatenated (j, I + j) or interleaved (2j,
  // 2j + 1).
  auto gateIndex = [](int j) { return F::Interleaved ? 2 * j : j; };
  auto upIndex = [](int j) { return F::Interleaved ? 2 * j + 1 : I + j; };
  // The gate and up values of unit j from their dot products.
  auto finish = [&](int j, float g, float u) {
    if constexpr (F::Fused && F::GateUpBias) {
      g += toF32(w.gateUpBias[e * 2 * I + gateIndex(j)]);
      u += toF32(w.gateUpBias[e * 2 * I + upIndex(j)]);
    }
    if constexpr (!F::Fused && F::GateBias)
      g += toF32(w.gateBias[e * I + j]);
    if constexpr (!F::Fused && F::UpBias)
      u += toF32(w.upBias[e * I + j]);
    if constexpr (F::NoGate)
      return activate<F::Act>(u, 1.0f, F::Alpha, F::Limit);
    else
      return activate<F::Act>(g, u, F::Alpha, F::Limit);
  };
  // Dot products per unit: gate and up, or up alone without a gate (the
  // gate's weights are never read). acc[NP - 1] is up's.
  constexpr int NP = F::NoGate ? 1 : 2;

  if constexpr (F::LowRank) {
    // A warp per unit: its rows of A_g and A_u against z_g and z_u.
    static_assert(!F::InOut, "factored weights are out_in");
    static_assert(!F::NoGate, "factored weights have a gate");
    static_assert(!F::Widths, "factored weights have one width");
    constexpr int RG = F::RG, RU = F::Fused ? F::RG : F::RU;
    constexpr int W = factorInWidth<F>();
    const float *z =
        static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_FACTOR_IN]);
    for (int u = warp; u < U && j0 + u < I; u += DecodeWarps) {
      const int j = j0 + u;
      const TW *gateRow[1], *upRow[1];
      if constexpr (F::Fused) {
        gateRow[0] = w.gateUp + (e * 2 * I + gateIndex(j)) * RG;
        upRow[0] = w.gateUp + (e * 2 * I + upIndex(j)) * RG;
      } else {
        gateRow[0] = w.gate + (e * I + j) * RG;
        upRow[0] = w.up + (e * I + j) * RU;
      }
      for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeRows) {
        const int count = static_cast<int>(
            rowEnd - r0 < DecodeRows ? rowEnd - r0 : DecodeRows);
        float g[1][DecodeRows], v[1][DecodeRows];
        rowDots<1, RG, float, false>(gateRow, factorBatch<W>(z, r0, count, 0),
                                     g);
        rowDots<1, RU, float, false>(
            upRow, factorBatch<W>(z, r0, count, F::Fused ? 0 : padFactor(RG)),
            v);
#pragma unroll
        for (int b = 0; b < DecodeRows; ++b)
          if (lane == b && b < count)
            h[(r0 + b) * I + j] = finish(j, g[0][b], v[0][b]);
      }
    }
  } else if constexpr (F::Quant != 0) {
    // Block-scaled codes: a warp per unit, its gate and up rows streamed
    // as 16-byte words and dequantized in registers (moe_quant.cuh).
    static_assert(!F::InOut && !F::Widths, "quantized weights are out_in, "
                                           "of one width");
    constexpr int Out = F::Fused ? 2 * I : I;
    for (int u = warp; u < U && j0 + u < width; u += DecodeWarps) {
      const int j = j0 + u;
      quant::QRow<F> rowsOf[NP];
      if constexpr (F::NoGate) {
        rowsOf[0] = quant::qrow<F, Out, H>(w.up, w.upScale, e, j);
      } else if constexpr (F::Fused) {
        rowsOf[0] =
            quant::qrow<F, Out, H>(w.gateUp, w.gateUpScale, e, gateIndex(j));
        rowsOf[1] =
            quant::qrow<F, Out, H>(w.gateUp, w.gateUpScale, e, upIndex(j));
      } else {
        rowsOf[0] = quant::qrow<F, Out, H>(w.gate, w.gateScale, e, j);
        rowsOf[1] = quant::qrow<F, Out, H>(w.up, w.upScale, e, j);
      }
      for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeRows) {
        const int count = static_cast<int>(
            rowEnd - r0 < DecodeRows ? rowEnd - r0 : DecodeRows);
        const Batch<TX> a = inputBatch<Cfg, SharedFFN>(args, r0, count);
        float acc[NP][DecodeRows];
        quant::quantRowDots<F, NP, H, TX, Scale>(rowsOf, a, acc, H);
#pragma unroll
        for (int b = 0; b < DecodeRows; ++b)
          if (lane == b && b < count)
            h[(r0 + b) * I + j] = finish(j, acc[0][b], acc[NP - 1][b]);
      }
    }
  } else if constexpr (!F::InOut) {
    // A warp per unit: its gate and up rows (up's alone: NoGate), along H.
    for (int u = warp; u < U && j0 + u < width; u += DecodeWarps) {
      const int j = j0 + u;
      const TW *rowsOf[NP];
      if constexpr (F::NoGate) {
        rowsOf[0] = w.up + (e * I + j) * H;
      } else if constexpr (F::Fused) {
        rowsOf[0] = w.gateUp + (e * 2 * I + gateIndex(j)) * H;
        rowsOf[1] = w.gateUp + (e * 2 * I + upIndex(j)) * H;
      } else {
        rowsOf[0] = w.gate + (e * I + j) * H;
        rowsOf[1] = w.up + (e * I + j) * H;
      }
      for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeRows) {
        const int count = static_cast<int>(
            rowEnd - r0 < DecodeRows ? rowEnd - r0 : DecodeRows);
        const Batch<TX> a = inputBatch<Cfg, SharedFFN>(args, r0, count);
        float acc[NP][DecodeRows];
        rowDots<NP, H, TX, Scale>(rowsOf, a, acc);
#pragma unroll
        for (int b = 0; b < DecodeRows; ++b)
          if (lane == b && b < count)
            h[(r0 + b) * I + j] = finish(j, acc[0][b], acc[NP - 1][b]);
      }
    }
  } else {
    // Thread t: word t % Wc of the chunk's outputs (gate and up words of
    // V units, or V / 2 interleaved gate/up pairs), rows t / Wc, t / Wc +
    // G, ... of H; then the block finishes unit (t % U) of batch row t / U.
    using UC = UpColumns<F, U>;
    constexpr int V = UC::V, Wc = UC::Wc, NW = UC::NW;
    constexpr int G = DecodeThreads / Wc;
    static_assert(UC::Span % V == 0 && DecodeThreads % Wc == 0,
                  "a chunk is whole words, and its words divide the block");
    const int word = static_cast<int>(threadIdx.x) % Wc;
    const int group = static_cast<int>(threadIdx.x) / Wc;
    // The word's first unit; words never straddle an expert's width (V
    // units, or V / 2 pairs, divide IVec).
    const int ju = j0 + word * (UC::Pairs ? V / 2 : V);
    const bool valid = ju < width;
    const int jj = valid ? ju : 0;
    const TW *cols[NW];
    if constexpr (F::NoGate) {
      cols[0] = w.up + e * H * I + jj;
    } else if constexpr (UC::Pairs) {
      cols[0] = w.gateUp + e * H * 2 * I + 2 * jj;
    } else if constexpr (F::Fused) {
      cols[0] = w.gateUp + e * H * 2 * I + jj;
      cols[1] = w.gateUp + e * H * 2 * I + I + jj;
    } else {
      cols[0] = w.gate + e * H * I + jj;
      cols[1] = w.up + e * H * I + jj;
    }
    constexpr int Out = F::Fused ? 2 * I : I;
    for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeRows) {
      const int count =
          static_cast<int>(rowEnd - r0 < DecodeRows ? rowEnd - r0 : DecodeRows);
      const Batch<TX> a = inputBatch<Cfg, SharedFFN>(args, r0, count);
      float acc[NW][V][DecodeRows];
      columnWords<NW, V, Out, G, UC::L, TX, Scale>(cols, valid, group, a, acc,
                                                   H);
      columnSum<NW, V, Wc>(acc, red);
#pragma unroll 1
      for (int q = threadIdx.x; q < U * DecodeRows; q += DecodeThreads) {
        const int u = q % U, b = q / U, j = j0 + u;
        if (b >= count || j >= width)
          continue;
        float g = 0.0f, v;
        if constexpr (UC::Pairs) {
          g = columnTotal(red, V, 0, 2 * u, b);
          v = columnTotal(red, V, 0, 2 * u + 1, b);
        } else {
          if constexpr (!F::NoGate)
            g = columnTotal(red, V, 0, u, b);
          v = columnTotal(red, V, NW - 1, u, b);
        }
        h[(r0 + b) * I + j] = finish(j, g, v);
      }
    }
  }
}

/// 16-byte words of a down row a lane of decodeDown loads at once: fewer
/// The rows r0 .. r0 + count of h (f32 scratch, I wide) as a batch.
template <int I, int Rows = DecodeRows>
__device__ __forceinline__ Batch<float, Rows>
hiddenBatch(const float *h, long long r0, int count) {
  Batch<float, Rows> a;
  a.count = count;
#pragma unroll
  for (int b = 0; b < Rows; ++b) {
    a.row[b] = h + (r0 + (b < count ? b : 0)) * I;
    a.scale[b] = 1.0f;
  }
  return a;
}

/// One decodeDown work item: out[r, o] for outputs o of [o0, o0 + C) and
/// the rows [rowBegin, rowEnd) of expert e: roundAs<TX>(h[r] . down_o +
/// bias), times the row's routing weight for routed rows (unless
/// Unweighted), as the reference rounds the expert's output.
template <typename Cfg, typename F, bool SharedFFN, int C>
__device__ __forceinline__ void
downItem(const MoEKernelArgs &args, const FFNWeights<F> &w, long long e, int o0,
         long long rowBegin, long long rowEnd, float *red) {
  using TX = typename Cfg::TX;
  using TW = typename F::TW;
  constexpr int H = F::H, I = F::I;
  const float *weights =
      static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_WEIGHTS]);
  const int *rows =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_ROWS]);
  const float *h = hiddenBuffer<SharedFFN>(args);
  float *out = outBuffer<SharedFFN>(args);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  // The expert's width: down rows (columns) and h are read up to it.
  [[maybe_unused]] const int width = F::width(e);
  auto finish = [&](int o, long long r, float v) {
    if constexpr (F::DownBias)
      v += toF32(w.downBias[e * H + o]);
    v = roundAs<TX>(v);
    if constexpr (!SharedFFN && !Cfg::Unweighted)
      v *= weights[rows[r]];
    out[r * H + o] = v;
  };

  if constexpr (F::LowRank) {
    // A warp per output: its row of A_d against zd = B_d . h.
    constexpr int RD = F::RD, W = factorDownWidth<F>();
    const float *zd =
        static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_FACTOR_DOWN]);
    for (int c = warp; c < C && o0 + c < H; c += DecodeWarps) {
      const int o = o0 + c;
      const TW *row[1] = {w.down + (e * H + o) * RD};
      for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeRows) {
        const int count = static_cast<int>(
            rowEnd - r0 < DecodeRows ? rowEnd - r0 : DecodeRows);
        float acc[1][DecodeRows];
        rowDots<1, RD, float, false>(row, factorBatch<W>(zd, r0, count, 0),
                                     acc);
#pragma unroll
        for (int b = 0; b < DecodeRows; ++b)
          if (lane == b && b < count)
            finish(o, r0 + b, acc[0][b]);
      }
    }
  } else if constexpr (F::Quant != 0) {
    // Block-scaled codes: a warp per output, its down row along I.
    for (int c = warp; c < C && o0 + c < H; c += DecodeWarps) {
      const int o = o0 + c;
      const quant::QRow<F> row[1] = {
          quant::qrow<F, H, I>(w.down, w.downScale, e, o)};
      for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeRows) {
        const int count = static_cast<int>(
            rowEnd - r0 < DecodeRows ? rowEnd - r0 : DecodeRows);
        float acc[1][DecodeRows];
        quant::quantRowDots<F, 1, I, TX, false>(
            row, hiddenBatch<I>(h, r0, count), acc, I);
#pragma unroll
        for (int b = 0; b < DecodeRows; ++b)
          if (lane == b && b < count)
            finish(o, r0 + b, acc[0][b]);
      }
    }
  } else if constexpr (!F::InOut) {
    // A warp per output: its row of down, along I.
    for (int c = warp; c < C && o0 + c < H; c += DecodeWarps) {
      const int o = o0 + c;
      const TW *row[1] = {w.down + (e * H + o) * I};
      for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeDownRows) {
        const int count = static_cast<int>(
            rowEnd - r0 < DecodeDownRows ? rowEnd - r0 : DecodeDownRows);
        float acc[1][DecodeDownRows];
        rowDotsUpTo<1, I, F::IVec, F::Widths, TX, false, DecodeDownLoads>(
            row, hiddenBatch<I, DecodeDownRows>(h, r0, count), acc, width);
#pragma unroll
        for (int b = 0; b < DecodeDownRows; ++b)
          if (lane == b && b < count)
            finish(o, r0 + b, acc[0][b]);
      }
    }
  } else {
    // Thread t: word t % Wc of the chunk's outputs, rows t / Wc, t / Wc +
    // G, ... of the expert's width; then the block finishes output t % C
    // of batch row t / C.
    using DCol = DownColumns<F, C>;
    constexpr int V = DCol::V, Wc = DCol::Wc;
    constexpr int G = DecodeThreads / Wc;
    static_assert(C % V == 0 && DecodeThreads % Wc == 0,
                  "a chunk is whole words, and its words divide the block");
    const int o = o0 + static_cast<int>(threadIdx.x) % Wc * V;
    const int group = static_cast<int>(threadIdx.x) / Wc;
    const bool valid = o < H; // V divides H: a word is whole
    const TW *col[1] = {w.down + e * I * H + (valid ? o : 0)};
    for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeRows) {
      const int count =
          static_cast<int>(rowEnd - r0 < DecodeRows ? rowEnd - r0 : DecodeRows);
      float acc[1][V][DecodeRows];
      columnWords<1, V, H, G, DCol::L, TX, false>(
          col, valid, group, hiddenBatch<I>(h, r0, count), acc, width);
      columnSum<1, V, Wc>(acc, red);
#pragma unroll 1
      for (int q = threadIdx.x; q < C * DecodeRows; q += DecodeThreads) {
        const int c = q % C, b = q / C;
        if (b < count && o0 + c < H)
          finish(o0 + c, r0 + b, columnTotal(red, V, 0, c, b));
      }
    }
  }
}

/// What a lane of decodeUp / decodeDown keeps in flight while it streams a
/// routed expert's weights: independent loads issued before the first is
/// used, and bytes per load; {0, 0} where not modelled (quantized or
/// factored weights). From the constants the kernels use (rowDotsDepth,
/// DecodeLoadsInFlight, DecodeDownLoads, UpColumns, DownColumns); for
/// reports
/// (test/Backend/decode-report.test).
struct InFlight {
  int loads, bytes;
};
template <typename Cfg, typename D>
__host__ __device__ constexpr InFlight decodeUpInFlight() {
  using F = typename Cfg::Routed;
  constexpr int NW = F::NoGate ? 1 : 2;
  if constexpr (F::Quant != 0 || F::LowRank) {
    return {0, 0};
  } else if constexpr (F::InOut) {
    using UC = UpColumns<F, D::UpUnits>;
    return {UC::NW * UC::L, UC::V * static_cast<int>(sizeof(typename F::TW))};
  } else {
    constexpr int V = vecWidth<typename F::TW, F::H>();
    constexpr int Iters = (F::H / V + 31) / 32;
    return {NW * rowDotsDepth<NW, Iters, DecodeLoadsInFlight>(),
            V * static_cast<int>(sizeof(typename F::TW))};
  }
}
template <typename Cfg, typename D>
__host__ __device__ constexpr InFlight decodeDownInFlight() {
  using F = typename Cfg::Routed;
  if constexpr (F::Quant != 0 || F::LowRank) {
    return {0, 0};
  } else if constexpr (F::InOut) {
    using DCol = DownColumns<F, D::DownCols>;
    return {DCol::L, DCol::V * static_cast<int>(sizeof(typename F::TW))};
  } else {
    constexpr int V = vecWidth<typename F::TW, F::IVec>();
    constexpr int Iters = (F::I / V + 31) / 32;
    return {rowDotsDepth<1, Iters, DecodeDownLoads>(),
            V * static_cast<int>(sizeof(typename F::TW))};
  }
}

/// The experts with rows, in expert order, from the dispatch plan's
/// offsets [E + 1] (copied to `off`): their count, `active` [E] lists them.
/// Warp 0 scans 32 experts per step with a ballot. Called by the whole
/// block.
template <int E>
__device__ __forceinline__ int activeExperts(const int *offsets, int *off,
                                             int *active, int *count) {
  for (int i = threadIdx.x; i <= E; i += blockDim.x)
    off[i] = offsets[i];
  __syncthreads();
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    int n = 0;
    for (int base = 0; base < E; base += 32) {
      const int e = base + lane;
      const bool has = e < E && off[e + 1] > off[e];
      const unsigned mask = __ballot_sync(0xffffffffu, has);
      if (has)
        active[n + __popc(mask & ((1u << lane) - 1u))] = e;
      n += __popc(mask);
    }
    if (lane == 0)
      count[0] = n;
  }
  __syncthreads();
  return count[0];
}

/// Tokens of the shared FFN per decode work item: its T rows are split
/// into groups of this many, so that a shared item does about the work of
/// a routed one (whose rows are few at decode) however large T is, and
/// the shared FFN's rows spread over ceil(T / DecodeSharedRows) times
/// more blocks (DeepSeek-V3 at T = 64: 256 gate/up items instead of 64
/// that each took 16 batches of rows).
constexpr int DecodeSharedRows = 16;

/// The shared FFN's row groups at T tokens.
__host__ __device__ constexpr long long sharedRowGroups(long long T) {
  return (T + DecodeSharedRows - 1) / DecodeSharedRows;
}

/// Work items of one decode kernel: `SharedChunks` x sharedRowGroups(T)
/// of the shared FFN first (rows of the same chunk adjacent), then
/// `Chunks` per active routed expert, in expert order. Calls
/// `shared(chunk, rowBegin, rowEnd)` or `routed(e, chunk, rowBegin,
/// rowEnd)` for each of this block's items (grid-stride); `activeCount`
/// (when given) gets the number of active experts before the first call.
template <int E, int Chunks, int SharedChunks, typename RoutedFn,
          typename SharedFn>
__device__ __forceinline__ void forEachItem(const MoEKernelArgs &args,
                                            RoutedFn routed, SharedFn shared,
                                            int *activeCount = nullptr) {
  MOE_SHARED(int, off, E + 1);
  MOE_SHARED(int, active, E);
  MOE_SHARED(int, count, 1);
  const int *offsets =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_OFFSETS]);
  const int nActive = activeExperts<E>(offsets, off, active, count);
  if (activeCount)
    *activeCount = nActive;
  const long long T = args.num_tokens;
  const long long groups = sharedRowGroups(T);
  const long long sharedItems = SharedChunks * groups;
  const long long items =
      sharedItems + static_cast<long long>(nActive) * Chunks;
  for (long long item = blockIdx.x; item < items; item += gridDim.x) {
    if (item < sharedItems) {
      const long long r0 = item % groups * DecodeSharedRows;
      shared(static_cast<int>(item / groups), r0,
             r0 + DecodeSharedRows < T ? r0 + DecodeSharedRows : T);
    } else {
      const long long i = item - sharedItems;
      const int e = active[i / Chunks];
      routed(e, static_cast<int>(i % Chunks), off[e], off[e + 1]);
    }
  }
}

//===----------------------------------------------------------------------===//
// The combine: y[t] = the token's slot outputs + the shared experts'
//===----------------------------------------------------------------------===//

/// The shared experts' gate of token t, sigmoid(x[t] . w_gate + b_gate),
/// computed by a whole warp (lane-strided sums, then a warp sum); lane 0's
/// value is the one to use.
template <typename Cfg>
__device__ __forceinline__ float sharedGateOf(const MoEKernelArgs &args,
                                              long long t) {
  using TX = typename Cfg::TX;
  constexpr int H = Cfg::Routed::H;
  const TX *x = static_cast<const TX *>(args.buffers[MOE_EXPERTS_SLOT_INPUT]);
  const typename Cfg::TG *scaleWeight = static_cast<const typename Cfg::TG *>(
      args.buffers[MOE_EXPERTS_SLOT_SCALE_WEIGHT]);
  const typename Cfg::TGB *scaleBias = static_cast<const typename Cfg::TGB *>(
      args.buffers[MOE_EXPERTS_SLOT_SCALE_BIAS]);
  float partial = 0.0f;
  for (int i = threadIdx.x % 32; i < H; i += 32)
    partial += toF32<TX>(x[t * H + i]) * toF32(scaleWeight[i]);
  partial = warpSum(partial);
  if constexpr (Cfg::SharedGateBias)
    partial += toF32(scaleBias[0]);
  return moe_k::sigmoid(partial);
}

/// An f32 scratch element; through L2 (FromL2: a volatile load) when other
/// blocks of the running launch wrote it.
template <bool FromL2>
__device__ __forceinline__ float loadScratch(const float *p) {
  if constexpr (FromL2)
    return *static_cast<const volatile float *>(p);
  else
    return *p;
}

/// y[t, o]: the token's slot rows of out (`rowOf`, K of them, < 0 for an
/// empty slot) summed in slot order (the reference's order of the weighted
/// sum), then the shared FFN's output times `gate` (SharedGate), with the
/// reference's rounding points. Deterministic: no atomics.
template <typename Cfg, bool FromL2>
__device__ __forceinline__ void combineOutput(const MoEKernelArgs &args,
                                              long long t, int o,
                                              const int *rowOf, float gate) {
  using TX = typename Cfg::TX;
  constexpr int H = Cfg::Routed::H, K = Cfg::K;
  TX *y = static_cast<TX *>(args.buffers[MOE_EXPERTS_SLOT_OUTPUT]);
  const float *out =
      static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_OUT]);
  float acc = 0.0f;
  for (int s = 0; s < K; ++s)
    if (rowOf[s] >= 0)
      acc += loadScratch<FromL2>(out + static_cast<long long>(rowOf[s]) * H +
                                 o);
  if constexpr (Cfg::HasShared) {
    const float *sharedOut =
        static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_SHARED_OUT]);
    float v = loadScratch<FromL2>(sharedOut + t * H + o);
    if constexpr (Cfg::SharedGate)
      v = roundAs<TX>(v * gate);
    y[t * H + o] = fromF32<TX>(roundAs<TX>(acc) + v);
  } else {
    y[t * H + o] = fromF32<TX>(acc);
  }
}

/// The combine of outputs [o0, o1) of every token, by the whole block,
/// DecodeWarps tokens at a time (warp w computes token t0 + w's shared
/// gate): decodeDown's tail, once every item that writes these outputs
/// is done (their writes read through L2).
template <typename Cfg>
__device__ void combineColumns(const MoEKernelArgs &args, int o0, int o1) {
  constexpr int K = Cfg::K;
  MOE_SHARED(int, rowOf, DecodeWarps * K);
  MOE_SHARED(float, gate, DecodeWarps);
  const int *slotRow =
      static_cast<const int *>(args.buffers[MOE_EXPERTS_SLOT_SLOT_ROW]);
  const long long T = args.num_tokens;
  const int warp = threadIdx.x / 32, width = o1 - o0;
  for (long long t0 = 0; t0 < T; t0 += DecodeWarps) {
    const int n = static_cast<int>(T - t0 < DecodeWarps ? T - t0 : DecodeWarps);
    for (int i = threadIdx.x; i < n * K; i += DecodeThreads)
      rowOf[i] = slotRow[t0 * K + i];
    if constexpr (Cfg::HasShared && Cfg::SharedGate) {
      if (warp < n) {
        const float g = sharedGateOf<Cfg>(args, t0 + warp);
        if (threadIdx.x % 32 == 0)
          gate[warp] = g;
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n * width; i += DecodeThreads) {
      const int b = i / width;
      combineOutput<Cfg, true>(args, t0 + b, o0 + i % width, rowOf + b * K,
                               Cfg::SharedGate ? gate[b] : 1.0f);
    }
    __syncthreads();
  }
}

/// decodeDown's output chunks: routed items write DownCols outputs (chunk
/// c: [c * C, (c + 1) * C)), shared items SharedDownCols (CS); a routed
/// chunk is complete when every active expert's item for it and every
/// shared item overlapping it are done.
template <typename Cfg, typename D> struct DownChunks {
  static constexpr int H = Cfg::Routed::H;
  static constexpr int C = D::DownCols, CS = D::SharedDownCols;
  static constexpr int Chunks = (H + C - 1) / C;
  static constexpr int SharedChunks = Cfg::HasShared ? (H + CS - 1) / CS : 0;
  /// Routed chunks one item can complete (a shared item spans up to
  /// CS / C + 1 of them).
  static constexpr int MaxSpan = CS > C ? CS / C + 1 : 2;
  __device__ static int end(int c) { return (c + 1) * C < H ? (c + 1) * C : H; }
  /// Items that complete routed chunk c, given the active experts and the
  /// shared FFN's row groups.
  __device__ static unsigned expected(int c, int active, long long groups) {
    if constexpr (!Cfg::HasShared)
      return static_cast<unsigned>(active);
    else
      return static_cast<unsigned>(
          active + ((end(c) - 1) / CS - c * C / CS + 1) * groups);
  }
};

/// After a decodeDown item wrote outputs of the routed chunks [first,
/// last]: counts it in each chunk's counter (slot DOWN_DONE, one per routed
/// chunk, zeroed before the layer's first launch and reset by the last
/// arrival), and the block whose item completes a chunk combines the
/// chunk's outputs. Called by the whole block.
template <typename Cfg, typename D>
__device__ __forceinline__ void finishDownItem(const MoEKernelArgs &args,
                                               int first, int last,
                                               int active) {
  using DC = DownChunks<Cfg, D>;
  MOE_SHARED(int, ready, DC::MaxSpan);
  MOE_SHARED(int, readyCount, 1);
  unsigned *done =
      static_cast<unsigned *>(args.buffers[MOE_EXPERTS_SLOT_DOWN_DONE]);
  __threadfence(); // this thread's outputs, before the block's arrival
  __syncthreads();
  if (threadIdx.x == 0) {
    int n = 0;
    for (int c = first; c <= last; ++c)
      if (arriveLast(done + c, DC::expected(c, active,
                                            sharedRowGroups(args.num_tokens))))
        ready[n++] = c;
    readyCount[0] = n;
  }
  __syncthreads();
  const int n = readyCount[0];
  for (int i = 0; i < n; ++i)
    combineColumns<Cfg>(args, ready[i] * DC::C, DC::end(ready[i]));
}

/// Gate/up and activation of the decode path: h [T * K, I] (rows in the
/// dispatch plan's order) and, with shared experts, shared h [T, I_shared].
template <typename Cfg, typename D>
__device__ void decodeUp(const MoEKernelArgs &args) {
  using R = typename Cfg::Routed;
  using S = typename Cfg::Shared;
  constexpr int U = D::UpUnits, US = D::SharedUpUnits;
  // Chunks up to the widest expert (IW); narrower experts' items past
  // their width return at once.
  constexpr int Chunks = (R::IW + U - 1) / U;
  constexpr int SharedChunks = Cfg::HasShared ? (S::I + US - 1) / US : 0;
  // columnSum's buffer (in_out weights only).
  constexpr int RedR = R::InOut ? UpColumns<R, U>::Red : 1;
  constexpr int RedS = Cfg::HasShared && S::InOut ? UpColumns<S, US>::Red : 1;
  MOE_SHARED(float, red, RedR > RedS ? RedR : RedS);
  const FFNWeights<R> routed =
      ffnWeights<R>(args, MOE_EXPERTS_SLOT_ROUTED_GATE);
  const FFNWeights<S> shared =
      ffnWeights<S>(args, MOE_EXPERTS_SLOT_SHARED_GATE);
  forEachItem<R::E, Chunks, SharedChunks>(
      args,
      [&](int e, int chunk, int begin, int end) {
        upItem<Cfg, R, false, U>(args, routed, e, chunk * U, begin, end, red);
      },
      [&](int chunk, long long begin, long long end) {
        if constexpr (Cfg::HasShared)
          upItem<Cfg, S, true, US>(args, shared, 0, chunk * US, begin, end,
                                   red);
      });
}

/// Down projection and combine of the decode path: out [T * K, H]
/// (weighted, rows in the dispatch plan's order) and, with shared experts,
/// shared out [T, H]; the block that completes an output chunk then sums
/// the chunk's outputs per token into y (finishDownItem), so that no
/// combine launch follows.
template <typename Cfg, typename D>
__device__ void decodeDown(const MoEKernelArgs &args) {
  using R = typename Cfg::Routed;
  using S = typename Cfg::Shared;
  using DC = DownChunks<Cfg, D>;
  constexpr int C = DC::C, CS = DC::CS;
  static_assert(S::H == R::H, "one output width");
  // columnSum's buffer (in_out weights only).
  constexpr int RedR = R::InOut ? DownColumns<R, C>::Red : 1;
  constexpr int RedS = Cfg::HasShared && S::InOut ? DownColumns<S, CS>::Red : 1;
  MOE_SHARED(float, red, RedR > RedS ? RedR : RedS);
  const FFNWeights<R> routed =
      ffnWeights<R>(args, MOE_EXPERTS_SLOT_ROUTED_GATE);
  const FFNWeights<S> shared =
      ffnWeights<S>(args, MOE_EXPERTS_SLOT_SHARED_GATE);
  int active = 0;
  forEachItem<R::E, DC::Chunks, DC::SharedChunks>(
      args,
      [&](int e, int chunk, int begin, int end) {
        downItem<Cfg, R, false, C>(args, routed, e, chunk * C, begin, end, red);
        finishDownItem<Cfg, D>(args, chunk, chunk, active);
      },
      [&](int chunk, long long begin, long long end) {
        if constexpr (Cfg::HasShared) {
          downItem<Cfg, S, true, CS>(args, shared, 0, chunk * CS, begin, end,
                                     red);
          const int o1 = (chunk + 1) * CS < R::H ? (chunk + 1) * CS : R::H;
          finishDownItem<Cfg, D>(args, chunk * CS / C, (o1 - 1) / C, active);
        }
      },
      &active);
  // No items (every slot empty, no shared experts): y is zero, from the
  // same combine.
  if (!Cfg::HasShared && active == 0)
    for (int c = blockIdx.x; c < DC::Chunks; c += gridDim.x)
      combineColumns<Cfg>(args, c * C, DC::end(c));
}

/// One decodeFactorDown work item: zd[r, k] = B_d[k] . h[r] for the factor
/// rows k of [k0, k0 + U) and the rows [rowBegin, rowEnd) of routed
/// expert e.
template <typename Cfg, int U>
__device__ __forceinline__ void
factorDownItem(const MoEKernelArgs &args,
               const FFNWeights<typename Cfg::Routed> &w, long long e, int k0,
               long long rowBegin, long long rowEnd) {
  using F = typename Cfg::Routed;
  using TW = typename F::TW;
  constexpr int I = F::I, RD = F::RD, W = factorDownWidth<F>();
  const float *h =
      static_cast<const float *>(args.buffers[MOE_EXPERTS_SLOT_HIDDEN]);
  float *zd = static_cast<float *>(args.buffers[MOE_EXPERTS_SLOT_FACTOR_DOWN]);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int u = warp; u < U && k0 + u < RD; u += DecodeWarps) {
    const int k = k0 + u;
    const TW *row[1] = {w.downB + (e * RD + k) * I};
    for (long long r0 = rowBegin; r0 < rowEnd; r0 += DecodeRows) {
      const int count =
          static_cast<int>(rowEnd - r0 < DecodeRows ? rowEnd - r0 : DecodeRows);
      float acc[1][DecodeRows];
      rowDots<1, I, float, false>(row, hiddenBatch<I>(h, r0, count), acc);
#pragma unroll
      for (int b = 0; b < DecodeRows; ++b)
        if (lane == b && b < count)
          zd[(r0 + b) * W + k] = acc[0][b];
    }
  }
}

/// z = B . x of the factored gate and up projections (routed rows only;
/// runs before decodeUp).
template <typename Cfg, typename D>
__device__ void decodeFactorIn(const MoEKernelArgs &args) {
  using R = typename Cfg::Routed;
  static_assert(R::LowRank, "only factored experts have a factor stage");
  constexpr int U = D::FactorInUnits;
  constexpr int Chunks = (R::RG + R::RU + U - 1) / U;
  const FFNWeights<R> routed =
      ffnWeights<R>(args, MOE_EXPERTS_SLOT_ROUTED_GATE);
  forEachItem<R::E, Chunks, 0>(
      args,
      [&](int e, int chunk, int begin, int end) {
        factorInItem<Cfg, U>(args, routed, e, chunk * U, begin, end);
      },
      [&](int, long long, long long) {});
}

/// zd = B_d . h of the factored down projection (after decodeUp, before
/// decodeDown).
template <typename Cfg, typename D>
__device__ void decodeFactorDown(const MoEKernelArgs &args) {
  using R = typename Cfg::Routed;
  static_assert(R::LowRank, "only factored experts have a factor stage");
  constexpr int U = D::FactorDownUnits;
  constexpr int Chunks = (R::RD + U - 1) / U;
  const FFNWeights<R> routed =
      ffnWeights<R>(args, MOE_EXPERTS_SLOT_ROUTED_GATE);
  forEachItem<R::E, Chunks, 0>(
      args,
      [&](int e, int chunk, int begin, int end) {
        factorDownItem<Cfg, U>(args, routed, e, chunk * U, begin, end);
      },
      [&](int, long long, long long) {});
}

} // namespace experts
} // namespace moe_k

#endif // MOE_KERNELS_EXPERTS_CUH
