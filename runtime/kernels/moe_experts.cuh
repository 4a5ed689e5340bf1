//===- moe_experts.cuh - The fused expert kernels -------------------------===//
//
// Part of moe-opt. Templates of the moe.fused_experts kernels: gather of the
// routed tokens, gate/up projection, activation, down projection, weighted
// combine and shared experts. A configuration struct written by the code
// generator fixes every size, dtype, layout and option at compile time:
//
//   struct FFN {                         // one set of gated FFNs
//     using TW = ...; using TB = ...;    // weight and bias element types
//     static constexpr int H, I, E;      // hidden, intermediate, experts
//     static constexpr bool Fused, Interleaved, InOut;
//     static constexpr int Act;          // 0 silu, 1 gelu, 2 gelu_tanh,
//                                        // 3 clamped swiglu (gpt-oss)
//     static constexpr float Alpha, Limit;
//     static constexpr bool GateBias, UpBias, GateUpBias, DownBias;
//   };
//   struct Cfg {
//     using TX = ...;                    // activation element type
//     using Routed = FFN; using Shared = FFN;
//     static constexpr int K, Threads;
//     static constexpr bool ScaleInput, Unweighted, HasShared, SharedGate;
//   };
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_EXPERTS_CUH
#define MOE_KERNELS_EXPERTS_CUH

#include "moe_common.cuh"

namespace moe_k {
namespace experts {

/// The gated activation of one hidden unit.
template <int Act>
__device__ __forceinline__ float activate(float g, float u, float alpha,
                                          float limit) {
  if constexpr (Act == 0) {
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
};

/// One projection row: `out` index `o` of expert `e` of a matrix with
/// `Out` outputs and `In` inputs, dotted with the f32 vector `a`.
template <typename F, int Out, int In>
__device__ __forceinline__ float project(const typename F::TW *w, int e,
                                         int o, const float *a) {
  const long long base = static_cast<long long>(e) * Out * In;
  if constexpr (F::InOut)
    return dotStrided(a, w + base + o, In, Out);
  else
    return dotRow<typename F::TW, In>(a, w + base + static_cast<long long>(o) * In);
}

/// h[j] = act(gate_j . x, up_j . x) for j < I, split over the block.
template <typename F>
__device__ void hidden(const FFNWeights<F> &w, int e, const float *x,
                       float *h) {
  constexpr int H = F::H, I = F::I;
  for (int j = threadIdx.x; j < I; j += blockDim.x) {
    float g, u;
    if constexpr (F::Fused) {
      int gRow = F::Interleaved ? 2 * j : j;
      int uRow = F::Interleaved ? 2 * j + 1 : I + j;
      g = project<F, 2 * I, H>(w.gateUp, e, gRow, x);
      u = project<F, 2 * I, H>(w.gateUp, e, uRow, x);
      if constexpr (F::GateUpBias) {
        g += toF32(w.gateUpBias[static_cast<long long>(e) * 2 * I + gRow]);
        u += toF32(w.gateUpBias[static_cast<long long>(e) * 2 * I + uRow]);
      }
    } else {
      g = project<F, I, H>(w.gate, e, j, x);
      u = project<F, I, H>(w.up, e, j, x);
      if constexpr (F::GateBias)
        g += toF32(w.gateBias[static_cast<long long>(e) * I + j]);
      if constexpr (F::UpBias)
        u += toF32(w.upBias[static_cast<long long>(e) * I + j]);
    }
    h[j] = activate<F::Act>(g, u, F::Alpha, F::Limit);
  }
}

/// The down projection of output `o` of expert `e`.
template <typename F>
__device__ __forceinline__ float down(const FFNWeights<F> &w, int e, int o,
                                      const float *h) {
  float v = project<F, F::H, F::I>(w.down, e, o, h);
  if constexpr (F::DownBias)
    v += toF32(w.downBias[static_cast<long long>(e) * F::H + o]);
  return v;
}

/// The decode path: one block per token (a grid-stride loop over tokens),
/// no permutation. For each selected slot in slot order, the expert's
/// weights are streamed once (16-byte loads along rows of [out, in]
/// matrices), the hidden vector stays in shared memory, and the weighted
/// outputs accumulate in shared memory: no atomics, deterministic.
///
/// Buffers: x [T, H], ids [T, K], weights [T, K], y [T, H], then the routed
/// FFN's gate, up, gate_up, down, gate_bias, up_bias, gate_up_bias,
/// down_bias (null when absent), then the shared FFN's eight, then the
/// shared gate's weight [1, H]. Dynamic shared memory: sharedBytes<Cfg>().
/// The eight weight pointers of an FFN set, from argument slot `first`.
template <typename F>
__device__ __forceinline__ FFNWeights<F> ffnWeights(const MoEKernelArgs &args,
                                                    int first) {
  FFNWeights<F> w;
  w.gate = static_cast<const typename F::TW *>(args.buffers[first + 0]);
  w.up = static_cast<const typename F::TW *>(args.buffers[first + 1]);
  w.gateUp = static_cast<const typename F::TW *>(args.buffers[first + 2]);
  w.down = static_cast<const typename F::TW *>(args.buffers[first + 3]);
  w.gateBias = static_cast<const typename F::TB *>(args.buffers[first + 4]);
  w.upBias = static_cast<const typename F::TB *>(args.buffers[first + 5]);
  w.gateUpBias = static_cast<const typename F::TB *>(args.buffers[first + 6]);
  w.downBias = static_cast<const typename F::TB *>(args.buffers[first + 7]);
  return w;
}

template <typename Cfg>
__device__ void perToken(const MoEKernelArgs &args) {
  using TX = typename Cfg::TX;
  using R = typename Cfg::Routed;
  using S = typename Cfg::Shared;
  constexpr int H = R::H, K = Cfg::K;
  constexpr int MaxI = R::I > S::I ? R::I : S::I;
  const TX *x = static_cast<const TX *>(args.buffers[0]);
  const int *ids = static_cast<const int *>(args.buffers[1]);
  const float *weights = static_cast<const float *>(args.buffers[2]);
  TX *y = static_cast<TX *>(args.buffers[3]);
  const FFNWeights<R> routed = ffnWeights<R>(args, 4);
  const FFNWeights<S> shared = ffnWeights<S>(args, 12);
  const typename S::TW *sharedGate =
      static_cast<const typename S::TW *>(args.buffers[20]);

  // Dynamic shared memory of (3 H + max(I) + 1) floats: the token, the
  // expert's input, the accumulated output, the hidden vector, the gate.
  MOE_DYNAMIC_SHARED(float, smem);
  float *xs = smem, *xin = xs + H, *acc = xin + H, *h = acc + H;
  float *gateValue = h + MaxI;

  const long long T = args.num_tokens;
  for (long long t = blockIdx.x; t < T; t += gridDim.x) {
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
      xs[i] = toF32<TX>(x[t * H + i]);
      acc[i] = 0.0f;
    }
    __syncthreads();
    for (int s = 0; s < K; ++s) {
      int e = ids[t * K + s];
      if (e < 0 || e >= R::E)
        continue;
      float w = weights[t * K + s];
      for (int i = threadIdx.x; i < H; i += blockDim.x)
        xin[i] = Cfg::ScaleInput ? roundAs<TX>(xs[i] * w) : xs[i];
      __syncthreads();
      hidden<R>(routed, e, xin, h);
      __syncthreads();
      float scale = Cfg::Unweighted ? 1.0f : w;
      for (int o = threadIdx.x; o < H; o += blockDim.x)
        acc[o] += scale * roundAs<TX>(down<R>(routed, e, o, h));
      __syncthreads();
    }
    if constexpr (Cfg::HasShared) {
      if constexpr (Cfg::SharedGate) {
        // sigmoid(x . w_gate): one dot product reduced over the block.
        if (threadIdx.x < 32) {
          float partial = 0.0f;
          for (int i = threadIdx.x; i < H; i += 32)
            partial += xs[i] * toF32(sharedGate[i]);
          partial = warpSum(partial);
          if (threadIdx.x == 0)
            gateValue[0] = moe_k::sigmoid(partial);
        }
      }
      hidden<S>(shared, 0, xs, h);
      __syncthreads();
      for (int o = threadIdx.x; o < H; o += blockDim.x) {
        float v = roundAs<TX>(down<S>(shared, 0, o, h));
        if constexpr (Cfg::SharedGate)
          v = roundAs<TX>(v * gateValue[0]);
        y[t * H + o] = fromF32<TX>(roundAs<TX>(acc[o]) + v);
      }
    } else {
      for (int o = threadIdx.x; o < H; o += blockDim.x)
        y[t * H + o] = fromF32<TX>(acc[o]);
    }
    __syncthreads();
  }
}

} // namespace experts
} // namespace moe_k

#endif // MOE_KERNELS_EXPERTS_CUH
