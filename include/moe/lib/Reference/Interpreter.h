//===- Interpreter.h - The reference executor of moe IR ---------*- C++ -*-===//
//
// Part of moe-opt. Interprets moe functions op by op on the host, in f32 with
// f64 accumulation. It is the oracle of every pass and kernel: simple loops,
// no kernels, no code generation.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_REFERENCE_INTERPRETER_H
#define MOE_LIB_REFERENCE_INTERPRETER_H

#include "moe/dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace moe {

class SafetensorsFile;
struct TensorInfo;

/// A host tensor: f32 values (every float type is held as f32, rounded to
/// its own type) or i32 values.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> f;
  std::vector<int32_t> i;
  bool isInt = false;

  int64_t numElements() const;
  static HostTensor floats(std::vector<int64_t> shape, float fill = 0.0f);
  static HostTensor ints(std::vector<int64_t> shape, int32_t fill = 0);
};

/// An extra layer input (a `moe.input` argument) read from an .npy file:
/// int32 and int64 arrays become i32 tensors, any other dtype f32 (what
/// moe-run --input and the calibration of --moe-prune-experts read).
llvm::Expected<HostTensor> readLayerInput(llvm::StringRef path);

/// Loads `moe.weight` tensors from safetensors files, converting F32, BF16
/// and F16 exactly to f32; files are opened once, their tensors read with
/// pread (SafetensorsFile::read), so no file page stays resident.
class WeightLoader {
public:
  /// Relative file names resolve against `root`.
  explicit WeightLoader(std::string root);
  ~WeightLoader();

  llvm::Expected<HostTensor> load(mlir::moe::WeightOp op);
  /// The name load() and loadBytes() take for a weight's element type:
  /// "f32", "bf16", "f16", "f8E4M3FN", "f4E2M1FN" or "f8E8M0FNU".
  static llvm::StringRef weightElementName(mlir::Type elem);
  /// The same for a weight described by its parts (launch plans);
  /// `elementType` is "f32", "bf16" or "f16".
  llvm::Expected<HostTensor> load(const std::vector<std::string> &names,
                                  const std::vector<std::string> &files,
                                  bool stacked,
                                  const std::vector<int64_t> &shape,
                                  llvm::StringRef elementType);

  /// The same weight as bytes of `elementType`, row-major and zero-padded
  /// like load(): what the kernel backends run on. The checkpoint's bytes
  /// are copied once, with no f32 copy (the stored dtype must be the IR's,
  /// as for load()); a provider's f32 values are encoded once.
  llvm::Expected<std::vector<uint8_t>>
  loadBytes(const std::vector<std::string> &names,
            const std::vector<std::string> &files, bool stacked,
            const std::vector<int64_t> &shape, llvm::StringRef elementType);

  /// Hands `sink` the bytes of the rows `rows` (of the leading dimension, in
  /// that order) of the weight that is the single checkpoint tensor `name`
  /// of `file`, of `shape` and `elementType` (f32, bf16, f16, or quantized
  /// codes and scales as stored, FP4 two per byte; checked as loadBytes
  /// checks them), each read from the file as loadBytes reads
  /// it: a selection of the experts of a fused expert tensor needs the
  /// memory of one expert. Not for a provider's weights.
  llvm::Error
  forEachRow(const std::string &name, const std::string &file,
             const std::vector<int64_t> &shape, llvm::StringRef elementType,
             llvm::ArrayRef<int64_t> rows,
             llvm::function_ref<llvm::Error(llvm::ArrayRef<uint8_t>)> sink);

  /// Serves every weight from `provider` instead of safetensors files
  /// (packages): it receives the weight's description and returns f32
  /// values of the whole tensor.
  using Provider = std::function<llvm::Expected<std::vector<float>>(
      const std::vector<std::string> &names,
      const std::vector<std::string> &files, bool stacked,
      const std::vector<int64_t> &shape, llvm::StringRef elementType)>;
  void setProvider(Provider p) { provider = std::move(p); }

private:
  llvm::Expected<const SafetensorsFile *> file(llvm::StringRef name);
  /// Checks each named tensor (dtype, shape against the slice it fills)
  /// and calls `fill` with its index, file and header entry.
  llvm::Error
  forEachSlice(const std::vector<std::string> &names,
               const std::vector<std::string> &files, bool stacked,
               const std::vector<int64_t> &shape, llvm::StringRef elementType,
               llvm::function_ref<llvm::Error(size_t, const SafetensorsFile &,
                                              const TensorInfo &)>
                   fill);
  Provider provider;

  std::string root;
  llvm::StringMap<std::unique_ptr<SafetensorsFile>> files;
};

/// The directory relative weight paths of `module` resolve against: its
/// `moe.weight_root` attribute (itself relative to the IR file's folder),
/// else the folder of `irPath`.
std::string weightRoot(mlir::ModuleOp module, llvm::StringRef irPath);

/// The routings a function used, one per router in execution order: the
/// ids given to a `moe.dispatch` and the routing weights of the first
/// `moe.permute` or `moe.combine` reading its rows; the (ids, weights) of a
/// `moe.fused_route`; or those of a `moe.lora_mixture` (a mixture without
/// routing reports every adapter with weight 1).
///
/// With `statistics` set (calibration profiles, docs/profile.md), a router
/// that dispatches experts also reports the `moe.router_linear` output its
/// scores are computed from and the norm of each slot's expert output; with
/// `denseExpertOutputs`, the sum over tokens of every expert's output on
/// every token (each expert run on each token, not only the routed ones).
struct RoutingTrace {
  struct Router {
    HostTensor ids, weights;
    bool hasIds = false, hasWeights = false;
    /// Experts the router dispatches to (moe.dispatch / moe.fused_route
    /// num_experts); 0 for a LoRA mixture.
    int64_t experts = 0;
    /// [T, E'] router logits (E' >= experts: null experts are columns past
    /// `experts`); empty if no moe.router_linear feeds the ids.
    HostTensor logits;
    /// The ids pass through a moe.remap_experts: `experts` counts merged
    /// experts and the logits' columns are router slots, not those experts.
    bool merged = false;
    /// [T, K]: ||output of the expert of slot (t, k)|| (the moe.expert_ffn
    /// row of that slot); 0 for empty slots.
    std::vector<double> slotOutputNorm;
    /// [experts, H]: sum over tokens t of expert e applied to token t (the
    /// input of the moe.permute feeding the experts).
    std::vector<double> expertOutputSum;
  };
  bool statistics = false;
  bool denseExpertOutputs = false;
  std::vector<Router> routers;
};

/// Runs `fn` (one tensor argument, one result) on `input`. A function of
/// another form (mlir::moe::getLayerForm) is refused with a message naming
/// the entry point that runs it.
llvm::Expected<HostTensor> interpret(mlir::func::FuncOp fn,
                                     const HostTensor &input,
                                     WeightLoader &weights,
                                     RoutingTrace *trace = nullptr);

/// Runs a layer whose routing is given by the caller (an engine's
/// dispatch): `fn` takes (x [T, H], ids [T, K] i32, weights [T, K] f32) and
/// returns the layer's (partial) output; `ids` and `weights` are passed as
/// its second and third arguments. The trace, if any, reports the routing
/// the layer dispatched (after its router ops, e.g. moe.remap_experts).
llvm::Expected<HostTensor> interpretGiven(mlir::func::FuncOp fn,
                                          const HostTensor &input,
                                          const HostTensor &ids,
                                          const HostTensor &givenWeights,
                                          WeightLoader &weights,
                                          RoutingTrace *trace = nullptr);

/// Runs a layer with named extra inputs (mlir::moe::LayerForm::ExtraInputs):
/// `fn` takes x [T, H] and then the `moe.input` arguments, given in `extra`
/// in argument order (i32 tensors for i32 arguments, floats otherwise; a
/// missing or misshapen one is an error naming the argument and its
/// expected shape).
llvm::Expected<HostTensor>
interpretWithInputs(mlir::func::FuncOp fn, const HostTensor &input,
                    const std::vector<HostTensor> &extra,
                    WeightLoader &weights, RoutingTrace *trace = nullptr);

/// Like interpretWithInputs, for a layer that may also return extra results
/// (`moe.output`): every result, y first, then the extra results in result
/// order (`extra` may be empty for a layer without extra inputs).
llvm::Expected<std::vector<HostTensor>>
interpretWithOutputs(mlir::func::FuncOp fn, const HostTensor &input,
                     const std::vector<HostTensor> &extra,
                     WeightLoader &weights, RoutingTrace *trace = nullptr);

/// A routing: ids [T, K] i32 (-1: empty slot) and weights [T, K] f32.
struct HostRouting {
  HostTensor ids, weights;
};

/// Runs a router-only function (`moe.role = "router"`: one argument x
/// [T, H], results ids [T, K] i32 and weights [T, K] f32) on `input`.
llvm::Expected<HostRouting> interpretRouter(mlir::func::FuncOp fn,
                                            const HostTensor &input,
                                            WeightLoader &weights);

} // namespace moe

#endif // MOE_LIB_REFERENCE_INTERPRETER_H
