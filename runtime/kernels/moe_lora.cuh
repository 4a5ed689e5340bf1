//===- moe_lora.cuh - The LoRA mixture kernel -----------------------------===//
//
// Part of moe-opt. y = x Wᵀ + b + sum over the token's slots of
// w * scale_e * B_e (A_e x): one block per token, the low-rank vector in
// shared memory. The configuration struct fixes
//   using TX, TW (base), TA (adapters), TB (bias);
//   static constexpr int In, Out, E, R, K;  // K = 0: every adapter, weight 1
//   static constexpr bool HasBias;
//   static __device__ float scale(int e);   // lora_alpha / r per adapter
// Buffers: the MOE_LORA slots of KernelABI.h.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_LORA_CUH
#define MOE_KERNELS_LORA_CUH

#include "moe_common.cuh"

namespace moe_k {
namespace lora {

template <typename Cfg>
__device__ void mixture(const MoEKernelArgs &args) {
  using TX = typename Cfg::TX;
  constexpr int In = Cfg::In, Out = Cfg::Out, R = Cfg::R;
  constexpr int K = Cfg::K > 0 ? Cfg::K : Cfg::E;
  const TX *x = static_cast<const TX *>(args.buffers[MOE_LORA_SLOT_INPUT]);
  TX *y = static_cast<TX *>(args.buffers[MOE_LORA_SLOT_OUTPUT]);
  const typename Cfg::TW *base =
      static_cast<const typename Cfg::TW *>(args.buffers[MOE_LORA_SLOT_BASE]);
  const typename Cfg::TB *bias = static_cast<const typename Cfg::TB *>(
      args.buffers[MOE_LORA_SLOT_BASE_BIAS]);
  const typename Cfg::TA *a =
      static_cast<const typename Cfg::TA *>(args.buffers[MOE_LORA_SLOT_LORA_A]);
  const typename Cfg::TA *b =
      static_cast<const typename Cfg::TA *>(args.buffers[MOE_LORA_SLOT_LORA_B]);
  const int *ids = static_cast<const int *>(args.buffers[MOE_LORA_SLOT_IDS]);
  const float *weights =
      static_cast<const float *>(args.buffers[MOE_LORA_SLOT_WEIGHTS]);

  // Dynamic shared memory of (In + R + Out) floats.
  MOE_DYNAMIC_SHARED(float, smem);
  float *xs = smem, *z = xs + In, *acc = z + R;
  const long long T = args.num_tokens;
  for (long long t = blockIdx.x; t < T; t += gridDim.x) {
    for (int i = threadIdx.x; i < In; i += blockDim.x)
      xs[i] = toF32<TX>(x[t * In + i]);
    __syncthreads();
    for (int o = threadIdx.x; o < Out; o += blockDim.x) {
      float v = dotRow<typename Cfg::TW, In>(xs, base + static_cast<long long>(o) * In);
      if constexpr (Cfg::HasBias)
        v += toF32(bias[o]);
      acc[o] = v;
    }
    for (int s = 0; s < K; ++s) {
      int e = Cfg::K > 0 ? ids[t * K + s] : s;
      if (e < 0 || e >= Cfg::E)
        continue;
      float w = (Cfg::K > 0 ? weights[t * K + s] : 1.0f) * Cfg::scale(e);
      __syncthreads();
      for (int j = threadIdx.x; j < R; j += blockDim.x)
        z[j] = dotRow<typename Cfg::TA, In>(
            xs, a + (static_cast<long long>(e) * R + j) * In);
      __syncthreads();
      for (int o = threadIdx.x; o < Out; o += blockDim.x)
        acc[o] += w * dotRow<typename Cfg::TA, R>(
                          z, b + (static_cast<long long>(e) * Out + o) * R);
    }
    __syncthreads();
    for (int o = threadIdx.x; o < Out; o += blockDim.x)
      y[t * Out + o] = fromF32<TX>(acc[o]);
    __syncthreads();
  }
}

} // namespace lora
} // namespace moe_k

#endif // MOE_KERNELS_LORA_CUH
