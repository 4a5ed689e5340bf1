//===- CApi.cpp - The C API over moe::Model -------------------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/moe.h"
#include "moe/Model.h"

#include <cstring>
#include <new>

struct moe_model {
  std::unique_ptr<moe::Model> model;
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
  *model = new (std::nothrow) moe_model{std::move(opened.value())};
  if (!*model)
    return report(moe::runtime::Status::error("out of memory"), error,
                  error_size);
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

double moe_model_last_ms(const moe_model *model) {
  return model ? model->model->lastMilliseconds() : 0.0;
}

} // extern "C"
