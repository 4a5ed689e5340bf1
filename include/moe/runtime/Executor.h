//===- Executor.h - Runs a layer's launch plan ------------------*- C++ -*-===//
//
// Part of moe-opt. Allocates a layer's buffers, uploads its weights in the
// kernels' dtypes, and launches its kernels in order on a backend: the CUDA
// driver, or the CPU emulation of the same kernels. Weights travel as bytes
// in their stored dtype: a package's weights.bin, read tensor by tensor,
// goes to the device (or, on the emulation, is run on in place) without an
// f32 copy. Plain C++, no MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_EXECUTOR_H
#define MOE_RUNTIME_EXECUTOR_H

#include "moe/runtime/KernelABI.h"
#include "moe/runtime/Plan.h"
#include "moe/runtime/Status.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace moe {

/// Where kernels run: memory and launches.
struct TensorMapDesc;

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
  /// Whether kernels read host memory directly (emu): then a weight's bytes
  /// that stay alive and are aligned need no copy at all.
  virtual bool readsHostMemory() const { return false; }
  /// Queues later launches on `stream` (a CUstream; null: the default).
  virtual void setStream(void * /*stream*/) {}
  /// Milliseconds between two calls to mark(), when the backend can time.
  virtual void mark() {}
  virtual double elapsedMs() { return -1.0; }
  /// Encodes the tensor map of `desc` (TensorMap.h) as this backend's
  /// kernels read it, into the 128 bytes at `map` (host memory, 64-byte
  /// aligned), to be uploaded with the kernel's arguments. By default: an
  /// error saying the backend has no tensor maps.
  virtual runtime::Status encodeTensorMap(const TensorMapDesc &desc,
                                          void *map);
};

/// f32 values of a weight (the whole tensor, stacked and padded), in
/// row-major order: provided by the caller (safetensors, packages, ...).
/// For tools that want values (the reference, collectWeights); the
/// executor takes bytes (WeightBytesProvider).
using WeightProvider =
    std::function<runtime::Expected<std::vector<float>>(const WeightRef &)>;

/// The bytes of a whole weight tensor (stacked and padded, row-major,
/// little-endian) in some dtype, as a provider hands them to the executor.
struct WeightBytes {
  /// The dtype of `data`; when it differs from the WeightRef's, the
  /// executor converts once.
  ElementType type = ElementType::F32;
  const uint8_t *data = nullptr;
  size_t size = 0;
  /// Bytes readable from `data` (at least `size`): the slack past the end
  /// that the kernels' 16-byte loads may touch.
  size_t readable = 0;
  /// Keeps `data` alive: the executor may then run on `data` itself (on a
  /// backend that reads host memory) and holds `owner` as long as it does.
  /// Null: `data` is valid during loadWeights only and is copied.
  std::shared_ptr<const void> owner;

  /// A view of memory that `owner` keeps alive (or, without one, that lives
  /// until loadWeights returns).
  static WeightBytes view(ElementType type, const uint8_t *data, size_t size,
                          size_t readable,
                          std::shared_ptr<const void> owner = nullptr);
  /// Bytes the provider made; they get 16 zero bytes of slack and are
  /// owned by the result (no further copy on the emulation).
  static WeightBytes fromVector(ElementType type, std::vector<uint8_t> bytes);
};

/// The bytes of a weight (the whole tensor): read from a package's
/// weights.bin, a checkpoint's, ...
using WeightBytesProvider =
    std::function<runtime::Expected<WeightBytes>(const WeightRef &)>;

/// A WeightBytesProvider over f32 values: encodes them in the WeightRef's
/// dtype (one conversion).
WeightBytesProvider bytesFromValues(WeightProvider values);

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
  /// The layer's extra results (LayerPlan::outputs), in result order:
  /// [T, width] f32 each.
  std::vector<std::vector<float>> extras;
};

/// An extra input of a layer (LayerPlan::inputs) as the caller gives it:
/// its elements (host memory for run, the backend's memory for
/// runOnDevice; f32 or i32 as the input is) and its shape.
struct InputArray {
  const void *data = nullptr;
  std::vector<int64_t> shape;
};

/// Runs one layer's plan; weights are uploaded once, buffers grow with T.
class LayerExecutor {
public:
  LayerExecutor(const LayerPlan &plan, KernelBackend &backend);
  ~LayerExecutor();

  /// Uploads every weight that is not bound, as the provider's bytes: in
  /// place when the backend reads host memory and the bytes are 16-byte
  /// aligned, stay alive (WeightBytes::owner) and have 16 bytes of slack;
  /// else copied once to the backend (converted first when their dtype is
  /// not the WeightRef's).
  runtime::Status loadWeights(const WeightBytesProvider &provider);
  /// Runs weight `w` on memory of the caller's (the backend's memory: device
  /// memory for cuda, host memory for emu) in the WeightRef's dtype and
  /// shape, which must outlive the executor's runs; replaces what was
  /// loaded.
  void bindWeight(size_t w, const void *data);
  /// What the kernels read for weight `w` (backend memory; null before
  /// loadWeights or bindWeight), and whether the executor allocated it (a
  /// copy) rather than using the provider's or the caller's memory.
  const void *weightData(size_t w) const { return weights[w]; }
  bool weightCopied(size_t w) const { return ownsWeight[w]; }
  /// x is [T, inputWidth] f32 (converted to the input's dtype). Launches
  /// run in plan order, those whose slot gate excludes T skipped
  /// (launchRuns: the decode or the grouped expert kernels); with
  /// MOE_LOG_LAUNCHES=1 in the environment each launch and its grid is
  /// printed on stderr.
  ///
  /// A layer with a given routing (LayerPlan::givenIds) takes the caller's
  /// [T, K] ids and weights (host arrays; required, and refused for a layer
  /// that routes itself). A router-only plan (role "router") returns its
  /// routing and an empty y, whatever wantRouting says.
  runtime::Expected<LayerOutputs> run(const float *x, int64_t tokens,
                                      bool wantRouting,
                                      const int32_t *givenIds = nullptr,
                                      const float *givenWeights = nullptr);

  /// The same on the backend's memory: x and y are [T, width] arrays of the
  /// layer's activation type, owned by the caller; the launches are queued
  /// on `stream` and not waited for. For a layer with a given routing,
  /// givenIds/givenWeights are [T, K] i32/f32 arrays in the backend's
  /// memory. Not for router-only plans.
  runtime::Status runOnDevice(const void *x, void *y, int64_t tokens,
                              void *stream, const void *givenIds = nullptr,
                              const void *givenWeights = nullptr);

  /// run and runOnDevice for a layer with extra inputs (LayerPlan::inputs),
  /// given in argument order. Before anything is uploaded or launched, each
  /// input is checked against its declared shape (a missing or misshapen
  /// input is an error naming it and the shape expected) and every value of
  /// a sequence map against [0, rows of its sequence scores) on the host
  /// (runOnDevice copies the map to the host for that), so that no kernel
  /// reads outside an input.
  runtime::Expected<LayerOutputs>
  runWithInputs(const float *x, int64_t tokens, bool wantRouting,
                const std::vector<InputArray> &inputs);
  runtime::Status runOnDeviceWithInputs(const void *x, void *y, int64_t tokens,
                                        void *stream,
                                        const std::vector<InputArray> &inputs);

  /// The routing of the last runOnDevice* of T tokens (one entry per router
  /// of the plan), copied to the host after waiting for the device: the
  /// routing buffers are the executor's own, so they hold it until the
  /// next run.
  runtime::Expected<std::vector<LayerOutputs::Routing>>
  lastDeviceRouting(int64_t tokens);

  /// The extra results (LayerPlan::outputs) of the last runOnDevice* of T
  /// tokens, copied to the host after waiting for the device (the
  /// executor's own buffers hold them until the next run).
  runtime::Expected<std::vector<std::vector<float>>>
  lastDeviceExtras(int64_t tokens);

  /// The expected shape of extra input `i` for T tokens, e.g. "[T=7] i32"
  /// or "[B, 8] f32" (B: any number of rows).
  std::string expectedShape(size_t i, int64_t tokens) const;

private:
  runtime::Status checkInputs(const std::vector<InputArray> *inputs,
                              int64_t tokens, bool onDevice);
  runtime::Expected<LayerOutputs>
  runImpl(const float *x, int64_t tokens, bool wantRouting,
          const int32_t *givenIds, const float *givenWeights,
          const std::vector<InputArray> *inputs);
  runtime::Status runOnDeviceImpl(const void *x, void *y, int64_t tokens,
                                  void *stream, const void *givenIds,
                                  const void *givenWeights,
                                  const std::vector<InputArray> *inputs);
  /// Grows value v's buffer to at least `bytes` (+ slack).
  runtime::Status ensureBytes(int v, size_t bytes);
  runtime::Status ensureValues(int64_t tokens);
  /// Whether the caller's routing arguments fit the plan.
  runtime::Status checkGiven(bool haveIds, bool haveWeights) const;
  runtime::Status launchAll(int64_t tokens);
  /// Encodes the launch's tensor maps (Launch::tensorMaps) into its table.
  runtime::Status encodeTensorMaps(const Launch &launch);
  /// Copies each extra result's [T, width] values to the host.
  runtime::Status downloadExtras(int64_t tokens,
                                 std::vector<std::vector<float>> &out);
  /// Copies each router's [T, slots] ids and weights to the host.
  runtime::Status downloadRouting(int64_t tokens,
                                  std::vector<LayerOutputs::Routing> &out);

  const LayerPlan &plan;
  KernelBackend &backend;
  std::vector<void *> weights;
  /// Per launch (index in plan.launches) with tensor maps: the table and
  /// weight addresses its maps were last encoded for (re-encoded when a
  /// weight or the table moves).
  std::vector<std::vector<const void *>> encodedMaps;
  /// Whether weights[w] was allocated here (not bound).
  std::vector<bool> ownsWeight;
  /// Tokens of the last successful runOnDevice* (0 after a host run).
  int64_t lastDeviceTokens = 0;
  /// What keeps a provider's bytes alive that kernels read in place.
  std::vector<std::shared_ptr<const void>> held;
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
/// `count` elements of `from` converted to `to`, element by element (no f32
/// copy of the whole tensor); i32/u32 go through their integer values.
std::vector<uint8_t> convertElements(const uint8_t *bytes, int64_t count,
                                     ElementType from, ElementType to);

} // namespace moe

#endif // MOE_RUNTIME_EXECUTOR_H
