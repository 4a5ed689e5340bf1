/*===- KernelABI.h - How host code passes buffers to kernels -----*- C -*-===*
 *
 * Part of moe-opt. Shared by host code (the runtime, moe-run) and device
 * code (kernels compiled by NVRTC or by the host compiler for the CPU
 * emulation): plain C, no includes.
 *
 * Every generated kernel is `extern "C" __global__ void NAME(MoEKernelArgs)`.
 * Which buffer sits in which slot is recorded by the code generator in the
 * launch plan of the kernel.
 *
 * Argument slots. Each kernel family declares its buffer slots once, here,
 * as an X-macro list MOE_<FAMILY>_SLOT_LIST(X) from which the enum
 * MOE_<FAMILY>_SLOT_<NAME> (0, 1, ...) and MOE_<FAMILY>_NUM_SLOTS follow.
 * The code generator binds buffers by these names (each slot set or
 * explicitly null), the kernel templates read args.buffers[MOE_..._SLOT_..],
 * and every generated source repeats the values the generator was built
 * with in a static_assert (MOE_<FAMILY>_NUM_SLOTS == N && each slot's
 * value), so a source generated against another version of this header
 * fails to compile instead of reading shifted buffers. To add a kernel
 * family: add a list and its enum below, MOE_SLOT_CHECK it in the code
 * generator (codegen/CudaEmitter.cpp, slotCheck), read the names in the
 * kernel. Families:
 *   EXPERTS  every kernel of one moe.fused_experts (decode, grouped GEMMs,
 *            combine): they share one argument list.
 *   ROUTE    the routing kernel of moe.fused_route: fixed slots, then the
 *            router's weights and logits from MOE_ROUTE_SLOT_FIRST_OPERAND.
 *   LOGITS   the router projection of moe.router_linear (routerLogits).
 *   LORA     moe.lora_mixture.
 *   ELEMENTWISE  elementwise glue between fused ops: the result, then its
 *            operands from MOE_ELEMENTWISE_SLOT_FIRST_INPUT.
 *   GRU      moe.gru_cell (RMoE's router state), with the projection of
 *            its input when the code generator folds it.
 *   DISPATCH a standalone moe.dispatch of a given routing (one block:
 *            the routing kernel's dispatch planning, moe_route.cuh).
 *
 *===---------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_KERNELABI_H
#define MOE_RUNTIME_KERNELABI_H

#define MOE_MAX_KERNEL_BUFFERS 48

/* The lists keep one line per group of slots. */
/* clang-format off */
/* One FFN set (moe.expert_ffn or moe.ffn): eight consecutive slots, null
 * when the op has no such operand. */
#define MOE_FFN_SLOT_LIST(X)                                                 \
  X(GATE) X(UP) X(GATE_UP) X(DOWN) X(GATE_BIAS) X(UP_BIAS) X(GATE_UP_BIAS)   \
  X(DOWN_BIAS)
/* The scales of one block-scaled FFN set: four consecutive slots. */
#define MOE_FFN_SCALE_SLOT_LIST(X)                                           \
  X(GATE_SCALE) X(UP_SCALE) X(GATE_UP_SCALE) X(DOWN_SCALE)

/* moe.fused_experts. Shapes: x, y [T, H]; ids, weights [T, K];
 * ROUTED_* the moe.expert_ffn weights, SHARED_* the moe.ffn weights (shared
 * experts; null without); SCALE_WEIGHT [1, H] and SCALE_BIAS [1] the
 * shared experts' gate sigmoid(router_linear(x, w, b)) (null without);
 * offsets [E + 1], rows [T * K], slot_row [T * K] the dispatch plan; then
 * f32 scratch: h [T * K, I], out [T * K, H], shared h [T, I_shared],
 * shared out [T, H]. Factored routed weights (moe.low_rank A . B): the
 * ROUTED_GATE/UP/GATE_UP/DOWN slots hold the A factors [E, out, r], the
 * ROUTED_*_B slots the B factors [E, r, in] (null when not factored), and
 * two more f32 scratch buffers hold B . x of the gate/up inputs
 * [T * K, RIn] and B . h of the down input [T * K, RD] (padded widths,
 * moe_experts.cuh). Block-scaled weights (quant_block: FP8 E4M3 or packed
 * FP4 E2M1 codes in the ROUTED_* / SHARED_* weight slots): the scales of
 * each projection, f32 (FP8) or E8M0 bytes (MXFP4), [.., ceil(out / b0),
 * ceil(in / b1)], in the *_SCALE slots (MoEFFNScaleSlot order; null when
 * the weights are not quantized). DOWN_DONE: u32 [ceil(H / DownCols)],
 * per output chunk of the decode kernel decodeDown, its finished work
 * items (zeroed before the layer's first launch; the block that finishes a
 * chunk resets it and combines the chunk; null without decode kernels).
 * TENSOR_MAPS: the grouped GEMMs' tensor maps under --gemm=tma
 * (moe_grouped.cuh; null otherwise): MOE_EXPERTS_TENSOR_MAPS maps of 128
 * bytes, the map of the weight in slot s (ROUTED_GATE .. SHARED_DOWN_BIAS)
 * at entry s - MOE_EXPERTS_SLOT_ROUTED_GATE, encoded on the host before
 * the launch (moe::Launch::tensorMaps); entries no GEMM reads are zero. */
#define MOE_EXPERTS_SLOT_LIST(X)                                             \
  X(INPUT) X(IDS) X(WEIGHTS) X(OUTPUT)                                       \
  X(ROUTED_GATE) X(ROUTED_UP) X(ROUTED_GATE_UP) X(ROUTED_DOWN)               \
  X(ROUTED_GATE_BIAS) X(ROUTED_UP_BIAS) X(ROUTED_GATE_UP_BIAS)               \
  X(ROUTED_DOWN_BIAS)                                                        \
  X(SHARED_GATE) X(SHARED_UP) X(SHARED_GATE_UP) X(SHARED_DOWN)               \
  X(SHARED_GATE_BIAS) X(SHARED_UP_BIAS) X(SHARED_GATE_UP_BIAS)               \
  X(SHARED_DOWN_BIAS)                                                        \
  X(SCALE_WEIGHT) X(SCALE_BIAS)                                              \
  X(OFFSETS) X(ROWS) X(SLOT_ROW)                                             \
  X(HIDDEN) X(OUT) X(SHARED_HIDDEN) X(SHARED_OUT)                           \
  X(ROUTED_GATE_B) X(ROUTED_UP_B) X(ROUTED_GATE_UP_B) X(ROUTED_DOWN_B)       \
  X(FACTOR_IN) X(FACTOR_DOWN)                                                \
  X(ROUTED_GATE_SCALE) X(ROUTED_UP_SCALE) X(ROUTED_GATE_UP_SCALE)            \
  X(ROUTED_DOWN_SCALE)                                                       \
  X(SHARED_GATE_SCALE) X(SHARED_UP_SCALE) X(SHARED_GATE_UP_SCALE)            \
  X(SHARED_DOWN_SCALE)                                                       \
  X(DOWN_DONE) X(TENSOR_MAPS)

/* moe.fused_route: x [T, H]; the routing ids, weights [T, K]; the dispatch
 * plan counts [E], offsets [E + 1], rows [T * K], slot_row [T * K]; a
 * zeroed block counter [1]; the cross-token op's first row operand
 * [T, N] (expert choice's scores, capacity's ids, Sinkhorn's scores; or
 * null); the given routing's ids [T, K'] i32 and weights [T, K'] f32 (an
 * engine's dispatch; null when the layer routes its tokens itself); the
 * sequence scores [B, E] f32 and token-to-sequence map [T] i32 of
 * moe.add_sequence_scores (extra layer inputs; null without; every map
 * value is checked to be in [0, B) on the host before launch); then one
 * slot per router weight or logits buffer the kernel reads, in the order
 * of its body (the generated kernel names them). */
#define MOE_ROUTE_SLOT_LIST(X)                                               \
  X(INPUT) X(IDS) X(WEIGHTS) X(COUNTS) X(OFFSETS) X(ROWS) X(COUNTER)         \
  X(SLOT_ROW) X(CHOICE_SCORES) X(GIVEN_IDS) X(GIVEN_WEIGHTS)                 \
  X(SEQ_SCORES) X(SEQ_MAP)                                                   \
  X(FIRST_OPERAND)

/* moe.router_linear as a kernel: x [T, H], weight [N, H], bias [N] or
 * null, logits [T, N] f32. */
#define MOE_LOGITS_SLOT_LIST(X) X(INPUT) X(WEIGHT) X(BIAS) X(OUTPUT)

/* moe.lora_mixture: x [T, In], y [T, Out], base [Out, In], bias [Out] or
 * null, A [E, R, In], B [E, Out, R], ids and weights [T, K] (null without
 * routing). */
#define MOE_LORA_SLOT_LIST(X)                                                \
  X(INPUT) X(OUTPUT) X(BASE) X(BASE_BIAS) X(LORA_A) X(LORA_B) X(IDS)         \
  X(WEIGHTS)

/* Elementwise glue between fused ops (moe_elementwise.cuh): the result
 * [T, N], then the operands [T, N] from MOE_ELEMENTWISE_SLOT_FIRST_INPUT on,
 * in the order the generated expression reads them. */
#define MOE_ELEMENTWISE_SLOT_LIST(X) X(OUTPUT) X(FIRST_INPUT)

/* moe.gru_cell (moe_gru.cuh): the cell's input u [T, I], or x [T, H] when
 * the projection W1 [I, H] that computes u is folded into the kernel
 * (PROJECTION; null otherwise); the previous state h [T, S] f32; the new
 * state [T, S] f32; weight_ih [3S, I], weight_hh [3S, S]; bias_ih, bias_hh
 * [3S] (null without). */
#define MOE_GRU_SLOT_LIST(X)                                                 \
  X(INPUT) X(STATE) X(OUTPUT) X(PROJECTION) X(WEIGHT_IH) X(WEIGHT_HH)        \
  X(BIAS_IH) X(BIAS_HH)

/* moe.dispatch of a layer's given routing (the caller's ids [T, K] i32):
 * the dispatch plan counts [E], offsets [E + 1], rows [T * K] and slot_row
 * [T * K], as moe.fused_route's. */
#define MOE_DISPATCH_SLOT_LIST(X)                                            \
  X(IDS) X(COUNTS) X(OFFSETS) X(ROWS) X(SLOT_ROW)

/* clang-format on */

#define MOE_FFN_SLOT_(name) MOE_FFN_SLOT_##name,
enum MoEFFNSlot { MOE_FFN_SLOT_LIST(MOE_FFN_SLOT_) MOE_FFN_NUM_SLOTS };
#undef MOE_FFN_SLOT_
#define MOE_FFN_SCALE_SLOT_(name) MOE_FFN_SLOT_##name,
enum MoEFFNScaleSlot {
  MOE_FFN_SCALE_SLOT_LIST(MOE_FFN_SCALE_SLOT_) MOE_FFN_SCALE_NUM_SLOTS
};
#undef MOE_FFN_SCALE_SLOT_
#define MOE_EXPERTS_SLOT_(name) MOE_EXPERTS_SLOT_##name,
enum MoEExpertsSlot {
  MOE_EXPERTS_SLOT_LIST(MOE_EXPERTS_SLOT_) MOE_EXPERTS_NUM_SLOTS
};
#undef MOE_EXPERTS_SLOT_
#define MOE_ROUTE_SLOT_(name) MOE_ROUTE_SLOT_##name,
enum MoERouteSlot { MOE_ROUTE_SLOT_LIST(MOE_ROUTE_SLOT_) MOE_ROUTE_NUM_SLOTS };
#undef MOE_ROUTE_SLOT_
#define MOE_LOGITS_SLOT_(name) MOE_LOGITS_SLOT_##name,
enum MoELogitsSlot {
  MOE_LOGITS_SLOT_LIST(MOE_LOGITS_SLOT_) MOE_LOGITS_NUM_SLOTS
};
#undef MOE_LOGITS_SLOT_
#define MOE_LORA_SLOT_(name) MOE_LORA_SLOT_##name,
enum MoELoraSlot { MOE_LORA_SLOT_LIST(MOE_LORA_SLOT_) MOE_LORA_NUM_SLOTS };
#undef MOE_LORA_SLOT_
#define MOE_GRU_SLOT_(name) MOE_GRU_SLOT_##name,
enum MoEGruSlot { MOE_GRU_SLOT_LIST(MOE_GRU_SLOT_) MOE_GRU_NUM_SLOTS };
#undef MOE_GRU_SLOT_
#define MOE_DISPATCH_SLOT_(name) MOE_DISPATCH_SLOT_##name,
enum MoEDispatchSlot {
  MOE_DISPATCH_SLOT_LIST(MOE_DISPATCH_SLOT_) MOE_DISPATCH_NUM_SLOTS
};
#undef MOE_DISPATCH_SLOT_
#define MOE_ELEMENTWISE_SLOT_(name) MOE_ELEMENTWISE_SLOT_##name,
enum MoEElementwiseSlot {
  MOE_ELEMENTWISE_SLOT_LIST(MOE_ELEMENTWISE_SLOT_) MOE_ELEMENTWISE_NUM_SLOTS
};
#undef MOE_ELEMENTWISE_SLOT_
/* Operands an elementwise kernel can read. */
#define MOE_ELEMENTWISE_MAX_INPUTS                                             \
  (MOE_MAX_KERNEL_BUFFERS - MOE_ELEMENTWISE_SLOT_FIRST_INPUT)

/* Entries of the TENSOR_MAPS table: one per routed or shared FFN slot. */
#define MOE_EXPERTS_TENSOR_MAPS                                                \
  (MOE_EXPERTS_SLOT_SHARED_DOWN_BIAS - MOE_EXPERTS_SLOT_ROUTED_GATE + 1)

/* The ROUTED_* and SHARED_* slots follow MoEFFNSlot's order (the kernels
 * read an FFN set from its first slot), and every family fits. C has no
 * static_assert before C11: a negative array size fails instead. */
typedef char moe_experts_ffn_order_check
    [(MOE_EXPERTS_SLOT_ROUTED_DOWN_BIAS - MOE_EXPERTS_SLOT_ROUTED_GATE ==
          MOE_FFN_NUM_SLOTS - 1 &&
      MOE_EXPERTS_SLOT_SHARED_DOWN_BIAS - MOE_EXPERTS_SLOT_SHARED_GATE ==
          MOE_FFN_NUM_SLOTS - 1 &&
      MOE_EXPERTS_SLOT_ROUTED_DOWN_SCALE - MOE_EXPERTS_SLOT_ROUTED_GATE_SCALE ==
          MOE_FFN_SCALE_NUM_SLOTS - 1 &&
      MOE_EXPERTS_SLOT_SHARED_DOWN_SCALE - MOE_EXPERTS_SLOT_SHARED_GATE_SCALE ==
          MOE_FFN_SCALE_NUM_SLOTS - 1 &&
      MOE_EXPERTS_NUM_SLOTS <= MOE_MAX_KERNEL_BUFFERS &&
      MOE_ROUTE_NUM_SLOTS <= MOE_MAX_KERNEL_BUFFERS)
         ? 1
         : -1];

typedef struct MoEKernelArgs {
  /* Device pointers (host pointers under the CPU emulation). */
  void *buffers[MOE_MAX_KERNEL_BUFFERS];
  /* The token count T of this launch (the IR's dynamic dimension). */
  long long num_tokens;
  /* Spare scalar operands (for example the routed row count R). */
  long long scalars[4];
} MoEKernelArgs;

/* The CPU emulation exports, for each kernel NAME, a C entry point
 *   int moe_emu_launch_NAME(const MoEKernelArgs *args,
 *                           unsigned grid_x, unsigned grid_y, unsigned grid_z,
 *                           unsigned block_x, unsigned block_y,
 *                           unsigned block_z, unsigned dynamic_shared_bytes,
 *                           char *error, unsigned error_size);
 * returning 0 on success, else non-zero with a message in `error`. */
typedef int (*MoEEmuLaunchFn)(const MoEKernelArgs *, unsigned, unsigned,
                              unsigned, unsigned, unsigned, unsigned,
                              unsigned, char *, unsigned);

/* Tensor maps (TMA, sm_90): the 128-byte, 64-byte aligned CUtensorMap a
 * cp.async.bulk.tensor instruction reads. On a GPU its contents are the
 * driver's (cuTensorMapEncodeTiled) and opaque. Under the CPU emulation the
 * runtime's encoder (moe/runtime/TensorMap.h) writes, and the emulated copy
 * (moe_emu_async.h) reads, this layout of a 2-D tiled map with element
 * stride 1, no interleave and zero fill out of bounds:
 *   magic         MOE_EMU_TENSOR_MAP_MAGIC (a map not encoded for the
 *                 emulation is refused);
 *   address       the tensor's first element;
 *   dims[2]       elements per row (inner, dimension 0), then rows;
 *   row_stride    bytes from a row to the next (dimension 1's stride);
 *   box[2]        the box copied: elements per row, then rows;
 *   element_bytes 1, 2 or 4;
 *   swizzle_bytes 0 (none), 32, 64 or 128: the span of the swizzle pattern.
 * The rest is zero. */
#define MOE_TENSOR_MAP_BYTES 128
#define MOE_EMU_TENSOR_MAP_MAGIC 0x3170616d726f7374ull /* "tsormap1" */
typedef struct MoEEmuTensorMap {
  unsigned long long magic;
  unsigned long long address;
  unsigned long long dims[2];
  unsigned long long row_stride;
  unsigned int box[2];
  unsigned int element_bytes;
  unsigned int swizzle_bytes;
  unsigned char reserved[MOE_TENSOR_MAP_BYTES - 5 * 8 - 4 * 4];
} MoEEmuTensorMap;
typedef char moe_emu_tensor_map_size_check
    [sizeof(MoEEmuTensorMap) == MOE_TENSOR_MAP_BYTES ? 1 : -1];

#endif /* MOE_RUNTIME_KERNELABI_H */
