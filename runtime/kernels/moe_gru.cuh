//===- moe_gru.cuh - One GRU step per token (RMoE's router state) ---------===//
//
// Part of moe-opt. The kernel of moe.gru_cell (torch.nn.GRUCell semantics,
// docs/dialect.md): h' = (1 - z) * n + z * h with the reset, update and new
// gates' rows stacked [r; z; n] in weight_ih [3S, I] and weight_hh [3S, S].
// One warp per token, grid-stride over the tokens. When the code generator
// folds the moe.router_linear that computes the cell's input (RMoE's W1 x,
// a projection read by the cell only), the warp first computes u = W1 x
// (lanes split the H products, one warp sum per row of W1) instead of
// reading u from a buffer. u and h are staged in shared memory, then each
// lane computes the gates of its own state units (j = lane, lane + 32, ...),
// the six dot products in f32 in ascending index order.
//
// Buffers (MOE_GRU_SLOT_*): INPUT x [T, H] (Cfg::Project) or u [T, I];
// STATE h [T, S] f32; OUTPUT h' [T, S] f32; PROJECTION W1 [I, H] or null;
// WEIGHT_IH, WEIGHT_HH; BIAS_IH, BIAS_HH [3S] or null (Cfg::HasBias).
// Configuration struct written by the code generator:
//   using TX, TP, TIH, THH, TB;   // element types of x (or u) and weights
//   static constexpr int H, I, S; // widths: x (when projected), u, state
//   static constexpr bool Project, HasBias;
//
//===----------------------------------------------------------------------===//

#ifndef MOE_KERNELS_GRU_CUH
#define MOE_KERNELS_GRU_CUH

#include "moe_common.cuh"

namespace moe_k {
namespace gru {

/// Warps per block (one token each at a time).
constexpr int Warps = 4;

template <typename Cfg> __device__ void cell(const MoEKernelArgs &args) {
  using TX = typename Cfg::TX;
  constexpr int H = Cfg::H, I = Cfg::I, S = Cfg::S;
  const TX *x = static_cast<const TX *>(args.buffers[MOE_GRU_SLOT_INPUT]);
  const float *state =
      static_cast<const float *>(args.buffers[MOE_GRU_SLOT_STATE]);
  float *out = static_cast<float *>(args.buffers[MOE_GRU_SLOT_OUTPUT]);
  const auto *w1 = static_cast<const typename Cfg::TP *>(
      args.buffers[MOE_GRU_SLOT_PROJECTION]);
  const auto *wih = static_cast<const typename Cfg::TIH *>(
      args.buffers[MOE_GRU_SLOT_WEIGHT_IH]);
  const auto *whh = static_cast<const typename Cfg::THH *>(
      args.buffers[MOE_GRU_SLOT_WEIGHT_HH]);
  const auto *bih =
      static_cast<const typename Cfg::TB *>(args.buffers[MOE_GRU_SLOT_BIAS_IH]);
  const auto *bhh =
      static_cast<const typename Cfg::TB *>(args.buffers[MOE_GRU_SLOT_BIAS_HH]);
  (void)w1;
  (void)bih;
  (void)bhh;

  MOE_DYNAMIC_SHARED(float, staged);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float *u = staged + warp * (I + S);
  float *h = u + I;
  const long long T = args.num_tokens;
  for (long long t = static_cast<long long>(blockIdx.x) * Warps + warp; t < T;
       t += static_cast<long long>(gridDim.x) * Warps) {
    if constexpr (Cfg::Project) {
      const TX *row = x + t * H;
      for (int i = 0; i < I; ++i) {
        const typename Cfg::TP *wr = w1 + static_cast<long long>(i) * H;
        float acc = 0.0f;
        for (int k = lane; k < H; k += 32)
          acc += toF32<typename Cfg::TP>(wr[k]) * toF32<TX>(row[k]);
        acc = warpSum(acc);
        if (lane == 0)
          u[i] = acc;
      }
    } else {
      for (int i = lane; i < I; i += 32)
        u[i] = toF32<TX>(x[t * I + i]);
    }
    for (int j = lane; j < S; j += 32)
      h[j] = state[t * S + j];
    __syncwarp();
    for (int j = lane; j < S; j += 32) {
      float gi[3], gh[3];
#pragma unroll
      for (int g = 0; g < 3; ++g) {
        const long long rowIdx = static_cast<long long>(g) * S + j;
        float a = 0.0f, b = 0.0f;
        for (int i = 0; i < I; ++i)
          a += toF32<typename Cfg::TIH>(wih[rowIdx * I + i]) * u[i];
        for (int k = 0; k < S; ++k)
          b += toF32<typename Cfg::THH>(whh[rowIdx * S + k]) * h[k];
        if constexpr (Cfg::HasBias) {
          a += toF32<typename Cfg::TB>(bih[rowIdx]);
          b += toF32<typename Cfg::TB>(bhh[rowIdx]);
        }
        gi[g] = a;
        gh[g] = b;
      }
      const float r = sigmoid(gi[0] + gh[0]);
      const float z = sigmoid(gi[1] + gh[1]);
      const float n = tanhf(gi[2] + r * gh[2]);
      out[t * S + j] = (1.0f - z) * n + z * h[j];
    }
    // The next token's staging overwrites u and h.
    __syncwarp();
  }
}

} // namespace gru
} // namespace moe_k

#endif // MOE_KERNELS_GRU_CUH
