//===- Model.h - The C++ API: run a compiled package ------------*- C++ -*-===//
//
// Part of moe-opt. Opens a package written by moe-compile and runs its
// layers on the GPU (cuda) or the CPU emulation of the same kernels (emu),
// on host arrays or, on the GPU, on device pointers with the caller's
// stream (for serving frameworks). Links no MLIR.
//
//   auto model = moe::Model::open("pkg", {"auto"});
//   std::vector<float> y(T * H);
//   model.value()->runLayer(3, x.data(), T, y.data());
//
//===----------------------------------------------------------------------===//

#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include "moe/runtime/Chain.h"
#include "moe/runtime/RoutingStats.h"
#include "moe/runtime/Status.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moe {

struct ModelOptions {
  /// "cuda", "emu", or "auto" (cuda when a GPU is usable, else emu).
  std::string backend = "auto";
  int device = 0;
  /// Kernel cache directory; empty: MOE_CACHE_DIR or the user's cache.
  std::string cacheDir;
};

/// A weight tensor of a package (manifest.json weights.tensors[t]).
struct TensorInfo {
  /// The checkpoint tensors (one, or one per stacked slice); empty for a
  /// constant of the IR.
  std::vector<std::string> names;
  std::vector<int64_t> shape;
  /// One slice per name, stacked along the first dimension.
  bool stacked = false;
  /// "f32", "bf16", "f16", "i32" or "u32".
  std::string dtype;
  int64_t bytes = 0;
  bool constant = false;
  /// False in a shape-only package: the data must be bound (bindTensor).
  bool stored = true;
  /// Bound by bindTensor.
  bool bound = false;
};

class Model {
public:
  static runtime::Expected<std::unique_ptr<Model>>
  open(const std::string &packageDir, const ModelOptions &options = {});
  ~Model();

  /// "cuda" or "emu".
  const std::string &backend() const;
  /// What runs the kernels (device name, or the host compiler).
  const std::string &description() const;
  /// The MoE layers (model layer indices), in order.
  std::vector<int64_t> layers() const;
  /// Width of a layer's input and output.
  runtime::Expected<int64_t> hidden(int64_t layer) const;
  /// Width of a layer's output (equal to hidden() for an MoE block).
  runtime::Expected<int64_t> outputWidth(int64_t layer) const;
  /// The kernels the package's layers launch, in order of first launch.
  std::vector<std::string> kernelNames() const;

  /// y = layer(x) with x and y host arrays of float32 [tokens, hidden].
  runtime::Status runLayer(int64_t layer, const float *x, int64_t tokens,
                           float *y);
  /// Every MoE layer in order on a residual stream, as moe-run --all-layers
  /// --chain does (moe/runtime/Chain.h): prenorm (default) x + layer(
  /// rmsnorm(x)), residual x + layer(x), none each layer on the previous
  /// one's output.
  runtime::Status runAll(const float *x, int64_t tokens, float *y,
                         ChainMode chain = ChainMode::PreNorm);
  /// runAll for layers with extra inputs and results (RMoE's router state),
  /// as moe-run --all-layers carries them: `data`/`shapes` (host memory, as
  /// runLayerWithInputs takes them) are the extra inputs of the first layer
  /// that takes any; an extra result (moe.output "N") of a layer replaces
  /// the input "N" of the layers after it; `outputs`, when not null,
  /// receives the last layer's extra results ([T, width] f32 each, in
  /// result order; see extraOutputs). runAll refuses a chain with extra
  /// inputs, naming the layer.
  runtime::Status runAllWithInputs(const float *x, int64_t tokens,
                                   const std::vector<const void *> &data,
                                   const std::vector<std::vector<int64_t>> &shapes,
                                   float *y, ChainMode chain,
                                   std::vector<std::vector<float>> *outputs);
  /// A layer's extra results (moe.output), in result order: each a
  /// [T, width] f32 array.
  struct OutputInfo {
    std::string name;
    int64_t width = 0;
  };
  runtime::Expected<std::vector<OutputInfo>> extraOutputs(int64_t layer) const;
  /// The same on device memory (cuda only): x and y are device pointers to
  /// [tokens, hidden] arrays of the layer's activation type, and the work
  /// is queued on `stream` (a CUstream; null: the default stream). No copy.
  runtime::Status runLayerOnDevice(int64_t layer, const void *x, void *y,
                                   int64_t tokens, void *stream);
  /// Expert parallelism with another engine's dispatch (a rank package of
  /// moe-compile --placement, docs/layout.md): route() runs the layer's full
  /// router on x and writes [T, K] logical expert ids (-1: empty slot) and
  /// weights (a package without a router-only plan runs the whole layer
  /// for them); runLayerDispatched() runs a layer that takes its routing
  /// (takesRouting()) on the rows an engine sent: ids [T, K] are the
  /// placement's physical slot ids (-1 or a slot of another rank: nothing),
  /// y [T, hidden] the rank's partial output. routingSlots() is K.
  runtime::Expected<int64_t> routingSlots(int64_t layer) const;
  bool takesRouting(int64_t layer) const;
  runtime::Status route(int64_t layer, const float *x, int64_t tokens,
                        int32_t *ids, float *weights);
  runtime::Status runLayerDispatched(int64_t layer, const float *x,
                                     const int32_t *ids, const float *weights,
                                     int64_t tokens, float *y);
  /// The same on device memory (cuda only): ids/weights are [T, K] i32/f32
  /// device arrays, x/y as in runLayerOnDevice.
  runtime::Status runLayerDispatchedOnDevice(int64_t layer, const void *x,
                                             const void *ids,
                                             const void *weights, void *y,
                                             int64_t tokens, void *stream);
  /// Layers with extra inputs (moe.input arguments after x, e.g. GLIDER's
  /// sequence scores [B, E] f32 and token-to-sequence map [T] i32):
  /// inputs() describes them in argument order (dims: >= 0 static, -1 the
  /// token count, -2 any size >= 1); runLayerWithInputs() runs such a layer
  /// with `data[i]` pointing to input i's elements (host memory; f32 or i32
  /// as described) of shape `shapes[i]`. A missing or misshapen input is
  /// an error naming it and the shape expected, and a sequence map value
  /// outside [0, B) is an error before anything runs. `outputs`, when not
  /// null, receives the layer's extra results (moe.output, e.g. RMoE's new
  /// router state: [T, width] f32 each, in result order; see extraOutputs),
  /// as runAllWithInputs gives the last layer's. The device variant (cuda
  /// only) takes device pointers; it copies each sequence map to the host
  /// for that check.
  struct InputInfo {
    std::string name;
    std::string dtype;
    std::vector<int64_t> dims;
  };
  runtime::Expected<std::vector<InputInfo>> inputs(int64_t layer) const;
  runtime::Status
  runLayerWithInputs(int64_t layer, const float *x, int64_t tokens,
                     const std::vector<const void *> &data,
                     const std::vector<std::vector<int64_t>> &shapes, float *y,
                     std::vector<std::vector<float>> *outputs = nullptr);
  runtime::Status runLayerWithInputsOnDevice(
      int64_t layer, const void *x, const std::vector<const void *> &data,
      const std::vector<std::vector<int64_t>> &shapes, void *y,
      int64_t tokens, void *stream);
  /// The activation element type of a layer ("f32", "bf16" or "f16").
  runtime::Expected<std::string> activationType(int64_t layer) const;
  /// The package's weight tensors (manifest.json weights.tensors).
  size_t numTensors() const;
  runtime::Expected<TensorInfo> tensor(size_t t) const;
  /// Runs every layer that uses weight tensor `tensor` (an index into
  /// manifest.json weights.tensors) on `data` instead of the package's
  /// copy: memory of the backend's (device memory for cuda, host memory for
  /// emu) holding the tensor in its manifest dtype and shape, row-major,
  /// 16-byte aligned, with 16 readable bytes past the end (vector loads),
  /// `bytes` equal to the manifest's. It must stay valid while the model
  /// runs. Required for every tensor of a shape-only package (moe-compile
  /// --weights none, "offset": null), whose layers fail to run otherwise.
  runtime::Status bindTensor(size_t tensor, const void *data, size_t bytes);
  /// Milliseconds the last run took (host runs: including copies).
  double lastMilliseconds() const;

  /// Routing decisions and expert load (docs/stats.md). Off by default:
  /// with recordRouting(true), every host run of a layer that routes its
  /// tokens (runLayer, runAll, runLayerWithInputs) copies the routing of
  /// each of its routers back, keeps it as the layer's last routing and adds
  /// it to the layer's load counters, on cuda and emu alike (one code path:
  /// the executor's routing buffers, as moe-run --routing-out reads them).
  /// runLayerOnDevice is recorded too: it then waits for the device and
  /// copies the routing back after queuing the launches. The other device
  /// calls (with extra inputs, dispatched) and layers that take their
  /// routing (runLayerDispatched) are not recorded.
  struct LayerRouting {
    int64_t tokens = 0, slots = 0;
    /// Experts of the router (0 when the package does not record it).
    int64_t experts = 0;
    /// [tokens, slots]: expert ids (-1: empty slot) and routing weights.
    std::vector<int32_t> ids;
    std::vector<float> weights;
  };
  void recordRouting(bool enable);
  bool recordsRouting() const;
  /// One entry per router of the layer (router 0 first), from its last
  /// recorded run; an error naming the layer when none was recorded.
  runtime::Expected<std::vector<LayerRouting>> lastRouting(int64_t layer) const;
  /// Per router: the load summed over every recorded run since open() or
  /// resetRoutingStats() (tokens per expert, gate mass, empty slots,
  /// imbalance); an error naming the layer when none was recorded.
  runtime::Expected<std::vector<RoutingStats>>
  routingStats(int64_t layer) const;
  void resetRoutingStats();

  struct Impl;

private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace moe

#endif // MOE_MODEL_H
