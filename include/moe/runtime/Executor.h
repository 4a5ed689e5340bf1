//===- Executor.h - Runs a layer's launch plan ------------------*- C++ -*-===//
//
// Part of moe-opt. Allocates a layer's buffers, uploads its weights in the
// kernels' dtypes, and launches its kernels in order on a backend: the CUDA
// driver, or the CPU emulation of the same kernels. Plain C++, no MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_EXECUTOR_H
#define MOE_RUNTIME_EXECUTOR_H

#include "moe/runtime/KernelABI.h"
#include "moe/runtime/Plan.h"
#include "moe/runtime/Status.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace moe {

/// Where kernels run: memory and launches.
class KernelBackend {
public:
  virtual ~KernelBackend();
  virtual std::string name() const = 0;
  virtual runtime::Expected<void *> allocate(size_t bytes) = 0;
  virtual void release(void *ptr) = 0;
  virtual runtime::Status upload(void *dst, const void *src, size_t bytes) = 0;
  virtual runtime::Status download(void *dst, const void *src,
                                   size_t bytes) = 0;
  virtual runtime::Status zero(void *dst, size_t bytes) = 0;
  virtual runtime::Status launch(const std::string &kernel,
                                 const MoEKernelArgs &args, unsigned grid,
                                 unsigned block, unsigned dynamicShared) = 0;
  virtual runtime::Status synchronize() = 0;
  /// Queues later launches on `stream` (a CUstream; null: the default).
  virtual void setStream(void * /*stream*/) {}
  /// Milliseconds between two calls to mark(), when the backend can time.
  virtual void mark() {}
  virtual double elapsedMs() { return -1.0; }
};

/// f32 values of a weight (the whole tensor, stacked and padded), in
/// row-major order: provided by the caller (safetensors, packages, ...).
using WeightProvider =
    std::function<runtime::Expected<std::vector<float>>(const WeightRef &)>;

struct LayerOutputs {
  std::vector<float> y;
  /// The routing of one router: [T, slots] ids and weights.
  struct Routing {
    std::vector<int32_t> ids;
    std::vector<float> weights;
    int64_t slots = 0; ///< Columns of ids/weights.
  };
  /// One per router of the plan (LayerPlan::routings), when asked for.
  std::vector<Routing> routings;
};

/// Runs one layer's plan; weights are uploaded once, buffers grow with T.
class LayerExecutor {
public:
  LayerExecutor(const LayerPlan &plan, KernelBackend &backend);
  ~LayerExecutor();

  /// Uploads every weight that is not bound.
  runtime::Status loadWeights(const WeightProvider &provider);
  /// Runs weight `w` on memory of the caller's (the backend's memory: device
  /// memory for cuda, host memory for emu) in the WeightRef's dtype and
  /// shape, which must outlive the executor's runs; replaces what was
  /// loaded.
  void bindWeight(size_t w, const void *data);
  /// x is [T, inputWidth] f32 (converted to the input's dtype). Launches
  /// run in plan order, those whose slot gate excludes T skipped
  /// (launchRuns: the decode or the grouped expert kernels); with
  /// MOE_LOG_LAUNCHES=1 in the environment each launch and its grid is
  /// printed on stderr.
  runtime::Expected<LayerOutputs> run(const float *x, int64_t tokens,
                                      bool wantRouting);

  /// The same on the backend's memory: x and y are [T, width] arrays of the
  /// layer's activation type, owned by the caller; the launches are queued
  /// on `stream` and not waited for.
  runtime::Status runOnDevice(const void *x, void *y, int64_t tokens,
                              void *stream);

private:
  runtime::Status ensureValues(int64_t tokens);
  runtime::Status launchAll(int64_t tokens);

  const LayerPlan &plan;
  KernelBackend &backend;
  std::vector<void *> weights;
  /// Whether weights[w] was allocated here (not bound).
  std::vector<bool> ownsWeight;
  std::vector<void *> values;
  std::vector<size_t> valueBytes;
  bool zeroed = false;
};

/// Converts f32 values to the bytes of `type` (bf16/f16: round to nearest
/// even).
std::vector<uint8_t> encodeElements(const std::vector<float> &values,
                                    ElementType type);
std::vector<float> decodeElements(const uint8_t *bytes, int64_t count,
                                  ElementType type);

} // namespace moe

#endif // MOE_RUNTIME_EXECUTOR_H
