/*===- moe.h - The C API: run a compiled package --------------------*- C -*-===*
 *
 * Part of moe-opt. A C interface to moe::Model (include/moe/Model.h): open a
 * package written by moe-compile, run layers on host or device memory.
 * Every function that can fail returns 0 on success, or non-zero with a
 * message in `error` (at most error_size bytes, NUL-terminated).
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOE_MOE_H
#define MOE_MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_model moe_model;

/* backend: "cuda", "emu" or "auto"; device: the GPU ordinal. */
int moe_model_open(const char *package_dir, const char *backend, int device,
                   moe_model **model, char *error, size_t error_size);
void moe_model_close(moe_model *model);

/* "cuda" or "emu". */
const char *moe_model_backend(const moe_model *model);
int moe_model_num_layers(const moe_model *model);
/* The model layer index of the i-th MoE layer, or -1. */
int64_t moe_model_layer(const moe_model *model, int i);
/* Width of a layer's input and output, or -1. */
int64_t moe_model_hidden(const moe_model *model, int64_t layer);

/* y = layer(x); x and y are host float32 arrays [tokens, hidden]. */
int moe_model_run_layer(moe_model *model, int64_t layer, const float *x,
                        int64_t tokens, float *y, char *error,
                        size_t error_size);
/* Every MoE layer in order on a residual stream, as moe-run --all-layers
 * --chain: MOE_CHAIN_PRENORM x + layer(rmsnorm(x)) (unit gain, eps 1e-6),
 * MOE_CHAIN_RESIDUAL x + layer(x), MOE_CHAIN_NONE each layer on the previous
 * one's output. Another value is an error. moe_model_run_all is
 * moe_model_run_all_chain with MOE_CHAIN_PRENORM, moe-run's default. */
enum { MOE_CHAIN_PRENORM = 0, MOE_CHAIN_RESIDUAL = 1, MOE_CHAIN_NONE = 2 };
int moe_model_run_all(moe_model *model, const float *x, int64_t tokens,
                      float *y, char *error, size_t error_size);
int moe_model_run_all_chain(moe_model *model, const float *x, int64_t tokens,
                            float *y, int chain, char *error,
                            size_t error_size);
/* On device memory in the layer's activation type, queued on `stream`
 * (a CUstream, NULL for the default stream); cuda only. */
int moe_model_run_layer_device(moe_model *model, int64_t layer, const void *x,
                               void *y, int64_t tokens, void *stream,
                               char *error, size_t error_size);
/* Expert parallelism with another engine's dispatch (moe::Model::route and
 * runLayerDispatched, include/moe/Model.h; rank packages of moe-compile
 * --placement, docs/layout.md). The routing's slots per token K, or -1;
 * whether a layer takes its routing from the caller (1) or not (0). */
int64_t moe_model_routing_slots(const moe_model *model, int64_t layer);
int moe_model_takes_routing(const moe_model *model, int64_t layer);
/* The layer's full router on x [tokens, hidden]: ids int32 and weights
 * float32 [tokens, K] (logical experts, -1 for an empty slot). */
int moe_model_route(moe_model *model, int64_t layer, const float *x,
                    int64_t tokens, int32_t *ids, float *weights, char *error,
                    size_t error_size);
/* The rank's share on dispatched rows: ids [tokens, K] physical slot ids
 * (-1, or a slot of another rank: no contribution), y [tokens, hidden] the
 * partial output. */
int moe_model_run_layer_dispatched(moe_model *model, int64_t layer,
                                   const float *x, const int32_t *ids,
                                   const float *weights, int64_t tokens,
                                   float *y, char *error, size_t error_size);
/* The same on device memory (cuda only), queued on `stream`. */
int moe_model_run_layer_dispatched_device(moe_model *model, int64_t layer,
                                          const void *x, const void *ids,
                                          const void *weights, void *y,
                                          int64_t tokens, void *stream,
                                          char *error, size_t error_size);
/* Layers with extra inputs (moe.input arguments after x, e.g. GLIDER's
 * sequence scores [B, E] float32 and token-to-sequence map [T] int32;
 * moe::Model::inputs and runLayerWithInputs, include/moe/Model.h). The
 * number of extra inputs of a layer, or -1. */
int64_t moe_model_num_inputs(const moe_model *model, int64_t layer);
/* Extra input `i` of a layer: its name (NUL-terminated, truncated to
 * name_size), whether it is int32 (*is_int = 1) or float32 (0), its rank
 * and its dimensions in dims[0..rank) (at most max_rank of them; >= 0
 * static, -1 the token count, -2 any size). 0 on success. */
int moe_model_input_info(const moe_model *model, int64_t layer, int64_t i,
                         char *name, size_t name_size, int *is_int,
                         int *rank, int64_t *dims, int max_rank);
/* y = layer(x, inputs...): data[i] points to extra input i's elements (host
 * memory), shapes[i] to its ranks[i] dimensions; inputs in argument order.
 * A missing or misshapen input, or a sequence map value outside [0, B), is
 * an error before anything runs. */
int moe_model_run_layer_inputs(moe_model *model, int64_t layer,
                               const float *x, int64_t tokens, int num_inputs,
                               const void *const *data,
                               const int64_t *const *shapes, const int *ranks,
                               float *y, char *error, size_t error_size);
/* moe_model_run_layer_inputs that also returns the layer's extra results
 * (moe.output, e.g. RMoE's new router state; moe::Model::runLayerWithInputs
 * with outputs): outputs[i] receives extra result i ([tokens, width]
 * float32, moe_model_extra_output_info), num_outputs being their number (or
 * 0 to drop them), as moe_model_run_all_inputs gives the last layer's. */
int moe_model_run_layer_inputs_outputs(moe_model *model, int64_t layer,
                                       const float *x, int64_t tokens,
                                       int num_inputs, const void *const *data,
                                       const int64_t *const *shapes,
                                       const int *ranks, float *y,
                                       int num_outputs, float *const *outputs,
                                       char *error, size_t error_size);
/* Extra results of a layer (moe.output results after y, e.g. RMoE's router
 * state): their number, or -1; result i's name (NUL-terminated, truncated
 * to name_size) and width (a [T, width] float32 array), 0 on success. */
int64_t moe_model_num_extra_outputs(const moe_model *model, int64_t layer);
int moe_model_extra_output_info(const moe_model *model, int64_t layer,
                                int64_t i, char *name, size_t name_size,
                                int64_t *width);
/* moe_model_run_all_chain for layers with extra inputs and results
 * (moe::Model::runAllWithInputs): data/shapes/ranks are the extra inputs of
 * the chain's first layer that takes any (as moe_model_run_layer_inputs); a
 * layer's extra result replaces the next layers' input of the same name;
 * outputs[i] receives the last layer's extra result i ([tokens, width]
 * float32), num_outputs being their number (or 0 to drop them). */
int moe_model_run_all_inputs(moe_model *model, const float *x, int64_t tokens,
                             int chain, int num_inputs,
                             const void *const *data,
                             const int64_t *const *shapes, const int *ranks,
                             float *y, int num_outputs, float *const *outputs,
                             char *error, size_t error_size);
/* The package's weight tensors (manifest.json weights.tensors), or -1. */
int64_t moe_model_num_tensors(const moe_model *model);
/* Runs the layers that use weight tensor `tensor` (an index into
 * manifest.json weights.tensors) on `data`: device memory (cuda) or host
 * memory (emu) holding it in its manifest dtype and shape, row-major,
 * 16-byte aligned, 16 readable bytes past the end, `bytes` as in the
 * manifest, valid while the model runs. Every tensor of a shape-only
 * package (moe-compile --weights none) must be bound before its layers run. */
int moe_model_bind_tensor(moe_model *model, int64_t tensor, const void *data,
                          int64_t bytes, char *error, size_t error_size);
/* Width of a layer's output, or -1 (moe_model_hidden gives its input's). */
int64_t moe_model_output_width(const moe_model *model, int64_t layer);
/* The element type of a layer's activations on device ("f32", "bf16" or
 * "f16"), or "" for an unknown layer. */
const char *moe_model_activation_type(const moe_model *model, int64_t layer);
/* The kernels the package's layers launch (in order of first launch): their
 * count, and the i-th name or NULL. */
int moe_model_num_kernels(const moe_model *model);
const char *moe_model_kernel_name(const moe_model *model, int i);

/* Weight tensor `tensor` (manifest.json weights.tensors[tensor]): its
 * rank and dimensions, dtype ("f32", "bf16", "f16", "i32" or "u32"), size
 * in bytes, checkpoint names (one, or one per stacked slice; none for a
 * constant of the IR) and flags. Out of range: -1, "", NULL. Strings live
 * as long as the model. */
int moe_model_tensor_rank(const moe_model *model, int64_t tensor);
int64_t moe_model_tensor_dim(const moe_model *model, int64_t tensor, int dim);
const char *moe_model_tensor_dtype(const moe_model *model, int64_t tensor);
int64_t moe_model_tensor_bytes(const moe_model *model, int64_t tensor);
int moe_model_tensor_num_names(const moe_model *model, int64_t tensor);
const char *moe_model_tensor_name(const moe_model *model, int64_t tensor,
                                  int i);
/* Flags of moe_model_tensor_flags (-1 when out of range). */
#define MOE_TENSOR_STACKED 1  /* one slice per name, stacked */
#define MOE_TENSOR_CONSTANT 2 /* a constant of the IR (never bound) */
#define MOE_TENSOR_STORED 4   /* has data in weights.bin (not shape-only) */
#define MOE_TENSOR_BOUND 8    /* bound by moe_model_bind_tensor */
int moe_model_tensor_flags(const moe_model *model, int64_t tensor);

/* Milliseconds the last run took. */
double moe_model_last_ms(const moe_model *model);

/* Routing decisions and expert load (moe::Model::recordRouting,
 * include/moe/Model.h; docs/stats.md). With recording on (off by default),
 * every host run of a layer that routes its tokens keeps its routing and
 * adds to the layer's load counters. */
int moe_model_record_routing(moe_model *model, int enable);
/* Routers of the layer's last recorded run, or -1 (error: none recorded). */
int moe_model_num_routers(const moe_model *model, int64_t layer, char *error,
                          size_t error_size);
/* The last recorded routing of router `router` of `layer`: its shape (any
 * pointer may be NULL), then ids int32 and weights float32 [tokens, slots]
 * copied into arrays of at least tokens * slots elements. */
int moe_model_last_routing_shape(const moe_model *model, int64_t layer,
                                 int router, int64_t *tokens, int64_t *slots,
                                 int64_t *experts, char *error,
                                 size_t error_size);
int moe_model_last_routing(const moe_model *model, int64_t layer, int router,
                           int32_t *ids, float *weights, char *error,
                           size_t error_size);
/* The load of router `router` of `layer` summed over the recorded runs. */
typedef struct moe_routing_stats {
  int64_t tokens, slots, experts;
  int64_t routed_slots; /* slots that picked an expert */
  int64_t empty_slots;  /* id -1: dropped, null expert, below threshold */
  int64_t invalid_slots;
  int64_t min_load, max_load; /* tokens per expert */
  double mean_load;
  double imbalance; /* max / mean tokens per expert */
  int64_t unused_experts;
} moe_routing_stats;
/* tokens_per_expert (int64) and gate_mass (double) may be NULL, else hold
 * `experts` elements (moe_routing_stats.experts; call once with NULL to
 * learn it). */
int moe_model_routing_stats(const moe_model *model, int64_t layer, int router,
                            moe_routing_stats *stats,
                            int64_t *tokens_per_expert, double *gate_mass,
                            char *error, size_t error_size);
void moe_model_reset_routing_stats(moe_model *model);

#ifdef __cplusplus
}
#endif

#endif /* MOE_MOE_H */
