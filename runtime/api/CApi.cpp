//===- CApi.cpp - The C API over moe::Model -------------------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/moe.h"
#include "moe/Model.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <vector>

struct moe_model {
  std::unique_ptr<moe::Model> model;
  /// What the string getters point into: the tensors' descriptions and the
  /// kernel names and each layer's activation type (they do not change
  /// while the model is open).
  std::vector<moe::TensorInfo> tensors;
  std::vector<std::string> kernels;
  std::map<int64_t, std::string> activationTypes;
};

namespace {
int report(const moe::runtime::Status &s, char *error, size_t size) {
  if (s.ok())
    return 0;
  if (error && size > 0) {
    std::strncpy(error, s.message().c_str(), size - 1);
    error[size - 1] = '\0';
  }
  return 1;
}
} // namespace

namespace {
/// Router `router` of an entry per router, or an error naming both.
template <typename T>
moe::runtime::Expected<T> routerOf(moe::runtime::Expected<std::vector<T>> all,
                                   const char *fn, int64_t layer, int router) {
  if (!all)
    return moe::runtime::Status::error(std::string(fn) + ": " +
                                       all.message());
  if (router < 0 || static_cast<size_t>(router) >= all.value().size())
    return moe::runtime::Status::error(
        std::string(fn) + ": router " + std::to_string(router) +
        " is out of range (layer " + std::to_string(layer) + " has " +
        std::to_string(all.value().size()) + " router(s))");
  return std::move(all.value()[router]);
}
} // namespace

namespace {
/// The extra inputs of a C call (data[i], shapes[i][0..ranks[i])) as
/// moe::Model takes them, or an error naming `fn` and the input.
moe::runtime::Status extraInputs(const char *fn, int num_inputs,
                                 const void *const *data,
                                 const int64_t *const *shapes, const int *ranks,
                                 std::vector<const void *> &arrays,
                                 std::vector<std::vector<int64_t>> &dims) {
  for (int i = 0; i < num_inputs; ++i) {
    if (ranks[i] < 0 || (ranks[i] > 0 && !shapes[i]))
      return moe::runtime::Status::error(std::string(fn) + ": input " +
                                         std::to_string(i) + " has no shape");
    arrays.push_back(data[i]);
    dims.emplace_back(shapes[i], shapes[i] + ranks[i]);
  }
  return moe::runtime::Status::success();
}

/// Copies extra results ([tokens, width] f32 each) into the caller's
/// `num_outputs` buffers (0: dropped; another count than the results' is an
/// error naming `fn`).
moe::runtime::Status
copyExtraResults(const char *fn, const char *whose,
                 const std::vector<std::vector<float>> &extras, int num_outputs,
                 float *const *outputs) {
  if (num_outputs > 0 && static_cast<size_t>(num_outputs) != extras.size())
    return moe::runtime::Status::error(
        std::string(fn) + ": " + whose + " returns " +
        std::to_string(extras.size()) + " extra result(s), " +
        std::to_string(num_outputs) + " output buffer(s) given");
  for (int i = 0; i < num_outputs; ++i)
    if (!outputs[i])
      return moe::runtime::Status::error(std::string(fn) + ": output " +
                                         std::to_string(i) + " is null");
  for (int i = 0; i < num_outputs; ++i)
    std::copy(extras[i].begin(), extras[i].end(), outputs[i]);
  return moe::runtime::Status::success();
}
} // namespace

extern "C" {

int moe_model_open(const char *package_dir, const char *backend, int device,
                   moe_model **model, char *error, size_t error_size) {
  if (!package_dir || !model)
    return report(moe::runtime::Status::error(
                      "moe_model_open: package_dir and model must not be "
                      "null"),
                  error, error_size);
  moe::ModelOptions options;
  options.backend = backend ? backend : "auto";
  options.device = device;
  auto opened = moe::Model::open(package_dir, options);
  if (!opened)
    return report(opened.status(), error, error_size);
  *model = new (std::nothrow) moe_model{std::move(opened.value()), {}, {}, {}};
  if (!*model)
    return report(moe::runtime::Status::error("out of memory"), error,
                  error_size);
  moe::Model &m = *(*model)->model;
  for (size_t t = 0; t < m.numTensors(); ++t)
    (*model)->tensors.push_back(m.tensor(t).value());
  (*model)->kernels = m.kernelNames();
  for (int64_t layer : m.layers())
    (*model)->activationTypes[layer] = m.activationType(layer).value();
  return 0;
}

void moe_model_close(moe_model *model) { delete model; }

const char *moe_model_backend(const moe_model *model) {
  return model ? model->model->backend().c_str() : "";
}

int moe_model_num_layers(const moe_model *model) {
  return model ? static_cast<int>(model->model->layers().size()) : 0;
}

int64_t moe_model_layer(const moe_model *model, int i) {
  if (!model)
    return -1;
  std::vector<int64_t> layers = model->model->layers();
  return i >= 0 && i < static_cast<int>(layers.size()) ? layers[i] : -1;
}

int64_t moe_model_hidden(const moe_model *model, int64_t layer) {
  if (!model)
    return -1;
  auto h = model->model->hidden(layer);
  return h ? h.value() : -1;
}

int moe_model_run_layer(moe_model *model, int64_t layer, const float *x,
                        int64_t tokens, float *y, char *error,
                        size_t error_size) {
  if (!model || !x || !y)
    return report(moe::runtime::Status::error(
                      "moe_model_run_layer: null argument"),
                  error, error_size);
  return report(model->model->runLayer(layer, x, tokens, y), error,
                error_size);
}

int moe_model_run_all(moe_model *model, const float *x, int64_t tokens,
                      float *y, char *error, size_t error_size) {
  if (!model || !x || !y)
    return report(moe::runtime::Status::error(
                      "moe_model_run_all: null argument"),
                  error, error_size);
  return report(model->model->runAll(x, tokens, y), error, error_size);
}

/// The chain mode of a MOE_CHAIN_* value; an error naming `fn` otherwise.
static moe::runtime::Expected<moe::ChainMode> chainMode(int chain,
                                                        const char *fn) {
  switch (chain) {
  case MOE_CHAIN_PRENORM:
    return moe::ChainMode::PreNorm;
  case MOE_CHAIN_RESIDUAL:
    return moe::ChainMode::Residual;
  case MOE_CHAIN_NONE:
    return moe::ChainMode::None;
  default:
    return moe::runtime::Status::error(
        std::string(fn) + ": unknown chain mode " + std::to_string(chain) +
        "; expected MOE_CHAIN_PRENORM (0), MOE_CHAIN_RESIDUAL (1) or "
        "MOE_CHAIN_NONE (2)");
  }
}

int moe_model_run_all_chain(moe_model *model, const float *x, int64_t tokens,
                            float *y, int chain, char *error,
                            size_t error_size) {
  if (!model || !x || !y)
    return report(moe::runtime::Status::error(
                      "moe_model_run_all_chain: null argument"),
                  error, error_size);
  auto mode = chainMode(chain, "moe_model_run_all_chain");
  if (!mode)
    return report(mode.takeError(), error, error_size);
  return report(model->model->runAll(x, tokens, y, mode.value()), error,
                error_size);
}

int64_t moe_model_num_extra_outputs(const moe_model *model, int64_t layer) {
  if (!model)
    return -1;
  auto outputs = model->model->extraOutputs(layer);
  return outputs ? static_cast<int64_t>(outputs.value().size()) : -1;
}

int moe_model_extra_output_info(const moe_model *model, int64_t layer,
                                int64_t i, char *name, size_t name_size,
                                int64_t *width) {
  if (!model)
    return 1;
  auto outputs = model->model->extraOutputs(layer);
  if (!outputs || i < 0 || i >= static_cast<int64_t>(outputs.value().size()))
    return 1;
  const moe::Model::OutputInfo &out = outputs.value()[static_cast<size_t>(i)];
  if (name && name_size > 0) {
    size_t n = std::min(name_size - 1, out.name.size());
    std::memcpy(name, out.name.data(), n);
    name[n] = '\0';
  }
  if (width)
    *width = out.width;
  return 0;
}

int moe_model_run_all_inputs(moe_model *model, const float *x, int64_t tokens,
                             int chain, int num_inputs,
                             const void *const *data,
                             const int64_t *const *shapes, const int *ranks,
                             float *y, int num_outputs, float *const *outputs,
                             char *error, size_t error_size) {
  if (!model || !x || !y || num_inputs < 0 || num_outputs < 0 ||
      (num_inputs > 0 && (!data || !shapes || !ranks)) ||
      (num_outputs > 0 && !outputs))
    return report(moe::runtime::Status::error(
                      "moe_model_run_all_inputs: null argument"),
                  error, error_size);
  auto mode = chainMode(chain, "moe_model_run_all_inputs");
  if (!mode)
    return report(mode.takeError(), error, error_size);
  std::vector<const void *> arrays;
  std::vector<std::vector<int64_t>> dims;
  if (moe::runtime::Status s =
          extraInputs("moe_model_run_all_inputs", num_inputs, data, shapes,
                      ranks, arrays, dims))
    return report(s, error, error_size);
  std::vector<std::vector<float>> extras;
  if (moe::runtime::Status s = model->model->runAllWithInputs(
          x, tokens, arrays, dims, y, mode.value(), &extras))
    return report(s, error, error_size);
  return report(copyExtraResults("moe_model_run_all_inputs", "the last layer",
                                 extras, num_outputs, outputs),
                error, error_size);
}

int moe_model_run_layer_device(moe_model *model, int64_t layer, const void *x,
                               void *y, int64_t tokens, void *stream,
                               char *error, size_t error_size) {
  if (!model || !x || !y)
    return report(moe::runtime::Status::error(
                      "moe_model_run_layer_device: null argument"),
                  error, error_size);
  return report(model->model->runLayerOnDevice(layer, x, y, tokens, stream),
                error, error_size);
}

int64_t moe_model_routing_slots(const moe_model *model, int64_t layer) {
  if (!model)
    return -1;
  auto k = model->model->routingSlots(layer);
  return k ? k.value() : -1;
}

int moe_model_takes_routing(const moe_model *model, int64_t layer) {
  return model && model->model->takesRouting(layer) ? 1 : 0;
}

int moe_model_route(moe_model *model, int64_t layer, const float *x,
                    int64_t tokens, int32_t *ids, float *weights, char *error,
                    size_t error_size) {
  if (!model || !x || !ids || !weights)
    return report(moe::runtime::Status::error("moe_model_route: null argument"),
                  error, error_size);
  return report(model->model->route(layer, x, tokens, ids, weights), error,
                error_size);
}

int moe_model_run_layer_dispatched(moe_model *model, int64_t layer,
                                   const float *x, const int32_t *ids,
                                   const float *weights, int64_t tokens,
                                   float *y, char *error, size_t error_size) {
  if (!model || !x || !ids || !weights || !y)
    return report(moe::runtime::Status::error(
                      "moe_model_run_layer_dispatched: null argument"),
                  error, error_size);
  return report(
      model->model->runLayerDispatched(layer, x, ids, weights, tokens, y),
      error, error_size);
}

int64_t moe_model_num_inputs(const moe_model *model, int64_t layer) {
  if (!model)
    return -1;
  auto inputs = model->model->inputs(layer);
  return inputs ? static_cast<int64_t>(inputs.value().size()) : -1;
}

int moe_model_input_info(const moe_model *model, int64_t layer, int64_t i,
                         char *name, size_t name_size, int *is_int,
                         int *rank, int64_t *dims, int max_rank) {
  if (!model)
    return 1;
  auto inputs = model->model->inputs(layer);
  if (!inputs || i < 0 || i >= static_cast<int64_t>(inputs.value().size()))
    return 1;
  const moe::Model::InputInfo &in = inputs.value()[static_cast<size_t>(i)];
  if (name && name_size > 0) {
    size_t n = std::min(name_size - 1, in.name.size());
    std::memcpy(name, in.name.data(), n);
    name[n] = '\0';
  }
  if (is_int)
    *is_int = in.dtype == "i32";
  if (rank)
    *rank = static_cast<int>(in.dims.size());
  for (size_t d = 0; dims && d < in.dims.size() &&
                     d < static_cast<size_t>(std::max(max_rank, 0));
       ++d)
    dims[d] = in.dims[d];
  return 0;
}

int moe_model_run_layer_inputs(moe_model *model, int64_t layer,
                               const float *x, int64_t tokens, int num_inputs,
                               const void *const *data,
                               const int64_t *const *shapes, const int *ranks,
                               float *y, char *error, size_t error_size) {
  return moe_model_run_layer_inputs_outputs(model, layer, x, tokens, num_inputs,
                                            data, shapes, ranks, y, 0, nullptr,
                                            error, error_size);
}

int moe_model_run_layer_inputs_outputs(moe_model *model, int64_t layer,
                                       const float *x, int64_t tokens,
                                       int num_inputs, const void *const *data,
                                       const int64_t *const *shapes,
                                       const int *ranks, float *y,
                                       int num_outputs, float *const *outputs,
                                       char *error, size_t error_size) {
  if (!model || !x || !y || num_inputs < 0 || num_outputs < 0 ||
      (num_inputs > 0 && (!data || !shapes || !ranks)) ||
      (num_outputs > 0 && !outputs))
    return report(moe::runtime::Status::error(
                      "moe_model_run_layer_inputs: null argument"),
                  error, error_size);
  std::vector<const void *> arrays;
  std::vector<std::vector<int64_t>> dims;
  if (moe::runtime::Status s =
          extraInputs("moe_model_run_layer_inputs", num_inputs, data, shapes,
                      ranks, arrays, dims))
    return report(s, error, error_size);
  std::vector<std::vector<float>> extras;
  if (moe::runtime::Status s = model->model->runLayerWithInputs(
          layer, x, tokens, arrays, dims, y, &extras))
    return report(s, error, error_size);
  return report(copyExtraResults("moe_model_run_layer_inputs", "the layer",
                                 extras, num_outputs, outputs),
                error, error_size);
}

int moe_model_run_layer_dispatched_device(moe_model *model, int64_t layer,
                                          const void *x, const void *ids,
                                          const void *weights, void *y,
                                          int64_t tokens, void *stream,
                                          char *error, size_t error_size) {
  if (!model || !x || !ids || !weights || !y)
    return report(moe::runtime::Status::error(
                      "moe_model_run_layer_dispatched_device: null argument"),
                  error, error_size);
  return report(model->model->runLayerDispatchedOnDevice(
                    layer, x, ids, weights, y, tokens, stream),
                error, error_size);
}

int64_t moe_model_num_tensors(const moe_model *model) {
  return model ? static_cast<int64_t>(model->model->numTensors()) : -1;
}

int moe_model_bind_tensor(moe_model *model, int64_t tensor, const void *data,
                          int64_t bytes, char *error, size_t error_size) {
  if (!model)
    return report(
        moe::runtime::Status::error("moe_model_bind_tensor: null model"),
        error, error_size);
  if (tensor < 0 || bytes < 0)
    return report(moe::runtime::Status::error(
                      "moe_model_bind_tensor: negative tensor index or size"),
                  error, error_size);
  return report(model->model->bindTensor(static_cast<size_t>(tensor), data,
                                         static_cast<size_t>(bytes)),
                error, error_size);
}

int64_t moe_model_output_width(const moe_model *model, int64_t layer) {
  if (!model)
    return -1;
  auto w = model->model->outputWidth(layer);
  return w ? w.value() : -1;
}

const char *moe_model_activation_type(const moe_model *model, int64_t layer) {
  if (!model)
    return "";
  auto it = model->activationTypes.find(layer);
  return it == model->activationTypes.end() ? "" : it->second.c_str();
}

int moe_model_num_kernels(const moe_model *model) {
  return model ? static_cast<int>(model->kernels.size()) : 0;
}

const char *moe_model_kernel_name(const moe_model *model, int i) {
  if (!model || i < 0 || i >= static_cast<int>(model->kernels.size()))
    return nullptr;
  return model->kernels[i].c_str();
}

namespace {
const moe::TensorInfo *tensorInfo(const moe_model *model, int64_t tensor) {
  if (!model || tensor < 0 ||
      tensor >= static_cast<int64_t>(model->tensors.size()))
    return nullptr;
  return &model->tensors[static_cast<size_t>(tensor)];
}
} // namespace

int moe_model_tensor_rank(const moe_model *model, int64_t tensor) {
  const moe::TensorInfo *t = tensorInfo(model, tensor);
  return t ? static_cast<int>(t->shape.size()) : -1;
}

int64_t moe_model_tensor_dim(const moe_model *model, int64_t tensor, int dim) {
  const moe::TensorInfo *t = tensorInfo(model, tensor);
  if (!t || dim < 0 || dim >= static_cast<int>(t->shape.size()))
    return -1;
  return t->shape[dim];
}

const char *moe_model_tensor_dtype(const moe_model *model, int64_t tensor) {
  const moe::TensorInfo *t = tensorInfo(model, tensor);
  return t ? t->dtype.c_str() : "";
}

int64_t moe_model_tensor_bytes(const moe_model *model, int64_t tensor) {
  const moe::TensorInfo *t = tensorInfo(model, tensor);
  return t ? t->bytes : -1;
}

int moe_model_tensor_num_names(const moe_model *model, int64_t tensor) {
  const moe::TensorInfo *t = tensorInfo(model, tensor);
  return t ? static_cast<int>(t->names.size()) : -1;
}

const char *moe_model_tensor_name(const moe_model *model, int64_t tensor,
                                  int i) {
  const moe::TensorInfo *t = tensorInfo(model, tensor);
  if (!t || i < 0 || i >= static_cast<int>(t->names.size()))
    return nullptr;
  return t->names[i].c_str();
}

int moe_model_tensor_flags(const moe_model *model, int64_t tensor) {
  const moe::TensorInfo *t = tensorInfo(model, tensor);
  if (!t)
    return -1;
  // Binding changes; ask the model.
  auto now = model->model->tensor(static_cast<size_t>(tensor));
  return (t->stacked ? MOE_TENSOR_STACKED : 0) |
         (t->constant ? MOE_TENSOR_CONSTANT : 0) |
         (t->stored ? MOE_TENSOR_STORED : 0) |
         (now && now.value().bound ? MOE_TENSOR_BOUND : 0);
}

int moe_model_record_routing(moe_model *model, int enable) {
  if (!model)
    return 1;
  model->model->recordRouting(enable != 0);
  return 0;
}

int moe_model_num_routers(const moe_model *model, int64_t layer, char *error,
                          size_t error_size) {
  if (!model) {
    report(moe::runtime::Status::error("moe_model_num_routers: null model"),
           error, error_size);
    return -1;
  }
  auto last = model->model->lastRouting(layer);
  if (!last) {
    report(last.takeError(), error, error_size);
    return -1;
  }
  return static_cast<int>(last.value().size());
}


int moe_model_last_routing_shape(const moe_model *model, int64_t layer,
                                 int router, int64_t *tokens, int64_t *slots,
                                 int64_t *experts, char *error,
                                 size_t error_size) {
  if (!model)
    return report(moe::runtime::Status::error(
                      "moe_model_last_routing_shape: null model"),
                  error, error_size);
  auto r = routerOf(model->model->lastRouting(layer),
                    "moe_model_last_routing_shape", layer, router);
  if (!r)
    return report(r.takeError(), error, error_size);
  if (tokens)
    *tokens = r.value().tokens;
  if (slots)
    *slots = r.value().slots;
  if (experts)
    *experts = r.value().experts;
  return 0;
}

int moe_model_last_routing(const moe_model *model, int64_t layer, int router,
                           int32_t *ids, float *weights, char *error,
                           size_t error_size) {
  if (!model || !ids || !weights)
    return report(moe::runtime::Status::error(
                      "moe_model_last_routing: null argument"),
                  error, error_size);
  auto r = routerOf(model->model->lastRouting(layer), "moe_model_last_routing",
                    layer, router);
  if (!r)
    return report(r.takeError(), error, error_size);
  std::copy(r.value().ids.begin(), r.value().ids.end(), ids);
  std::copy(r.value().weights.begin(), r.value().weights.end(), weights);
  return 0;
}

int moe_model_routing_stats(const moe_model *model, int64_t layer, int router,
                            moe_routing_stats *stats,
                            int64_t *tokens_per_expert, double *gate_mass,
                            char *error, size_t error_size) {
  if (!model || !stats)
    return report(moe::runtime::Status::error(
                      "moe_model_routing_stats: null argument"),
                  error, error_size);
  auto r = routerOf(model->model->routingStats(layer),
                    "moe_model_routing_stats", layer, router);
  if (!r)
    return report(r.takeError(), error, error_size);
  const moe::RoutingStats &s = r.value();
  *stats = {s.tokens,       s.slots,        s.experts,   s.routedSlots(),
            s.emptySlots,   s.invalidSlots, s.minLoad(), s.maxLoad(),
            s.meanLoad(),   s.imbalance(),  s.unusedExperts()};
  if (tokens_per_expert)
    std::copy(s.tokensPerExpert.begin(), s.tokensPerExpert.end(),
              tokens_per_expert);
  if (gate_mass)
    std::copy(s.gateMass.begin(), s.gateMass.end(), gate_mass);
  return 0;
}

void moe_model_reset_routing_stats(moe_model *model) {
  if (model)
    model->model->resetRoutingStats();
}

double moe_model_last_ms(const moe_model *model) {
  return model ? model->model->lastMilliseconds() : 0.0;
}

} // extern "C"
