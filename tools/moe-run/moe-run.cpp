//===- moe-run.cpp - Runs MoE layers of moe IR or of a package ------------===//
//
// Part of moe-opt.
//
//   moe-run IR.mlir|PKG_DIR --layer L | --all-layers --input X.npy
//           -o|--output Y.npy [--backend auto|reference|emu|cuda]
//           (--input and --output repeat for a layer's extra inputs and
//           results: x and y first, then argument and result order)
//           [--routing-out PREFIX] [--routing-in PREFIX] [--rank R]
//           [--target MODULE] [--repeat N] [--time]
//           [--record-profile P.safetensors [--profile-expert-outputs]
//            [--profile-input-gram]]
//
// --all-layers chains the layers on a residual stream, as a pre-norm
// transformer block does: x + layer(rmsnorm(x)) (--chain residual: x +
// layer(x); --chain none: layer(x) alone). Under --all-layers, a layer's
// extra inputs are carried by name: the --input files after x are the first
// layer's extra inputs, and an extra result (moe.output "N") of a layer
// replaces the input "N" of the layers after it (RMoE's router state); the
// --output files after y receive the last layer's extra results. A
// pre-gating router (moe.role = "pregate", Read-ME) runs once, on the first
// layer's input, and routes every layer that takes its routing.
// reference interprets the IR (a package's model.opt.mlir with the
// package's weights); emu and cuda run the generated kernels, on the CPU
// emulation or the GPU; auto (a package's default) picks cuda when a GPU
// loads, else emu. An IR file runs on reference unless told otherwise. A
// package's cubin for the GPU's architecture is loaded without NVRTC; otherwise
// its kernels.cu is compiled (cached).
// --record-profile accumulates a calibration profile (docs/profile.md).
// --rank R runs rank R's package of a set written by moe-compile
// --placement: its router, the logical ids mapped to the placement's
// physical slots, and the rank's experts (docs/layout.md).
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"
#include "moe/dialects/MoE/MoEOps.h"
#include "moe/dialects/MoE/Routing.h"
#include "moe/lib/Analysis/Placement.h"
#include "moe/lib/Analysis/Profile.h"
#include "moe/lib/Analysis/ProfileRecorder.h"
#include "moe/lib/Reference/Chain.h"
#include "moe/lib/Reference/Interpreter.h"
#include "moe/lib/Weights/InputFile.h"
#include "moe/lib/Weights/Npy.h"
#include "moe/passes/Passes.h"
#include "moe/runtime/Backends.h"
#include "moe/runtime/Package.h"
#include "moe/runtime/RoutingStats.h"

#include "../ToolProgress.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <map>
#include <optional>

using namespace llvm;

static cl::OptionCategory category("moe-run options");
static cl::opt<std::string> inputPath(cl::Positional,
                                      cl::desc("<IR file or package dir>"),
                                      cl::cat(category));
static cl::opt<int64_t> layer("layer", cl::desc("Model layer index to run"),
                              cl::init(-1), cl::cat(category));
static cl::opt<bool> allLayers(
    "all-layers",
    cl::desc("Run every MoE layer in order on the residual stream, as a "
             "transformer's blocks do (--chain); the output is the last "
             "stream"),
    cl::init(false), cl::cat(category));
static cl::opt<std::string> chain(
    "chain",
    cl::desc("How --all-layers chains the layers: prenorm (default; a "
             "pre-norm block, x_{l+1} = x_l + layer_l(rmsnorm(x_l)), the "
             "RMS norm with unit gain and eps 1e-6), residual (x_{l+1} = x_l "
             "+ layer_l(x_l)) or none (x_{l+1} = layer_l(x_l)); the APIs' "
             "run_all take the same modes and default"),
    cl::init("prenorm"), cl::cat(category));
static cl::opt<std::string> target(
    "target",
    cl::desc("Run the LoRA-wrapped projection of this module of the layer "
             "(for example self_attn.q_proj) instead of its MoE block"),
    cl::cat(category));
static cl::list<std::string> inputPaths(
    "input",
    cl::desc("Input .npy, float32 [T, H]; repeated for a layer with extra "
             "inputs (moe.input arguments, e.g. GLIDER's sequence scores "
             "[B, E] float32 and token-to-sequence map [T] int32): x first, "
             "then one file per extra input in argument order"),
    cl::cat(category));
/// The first --input: the layer input x.
static std::string xPath;
static cl::list<std::string> outputPaths(
    "output",
    cl::desc("Output .npy, float32 [T, H]; repeated for a layer with extra "
             "results (moe.output results, e.g. RMoE's router state; "
             "every backend): y first, then one file per extra result "
             "in result order (-o for short)"),
    cl::cat(category));
/// The first --output: the layer output y.
static std::string yPath;
static cl::alias yPathShort("o", cl::desc("Alias for --output"),
                            cl::aliasopt(outputPaths), cl::cat(category));
static cl::opt<std::string> backend(
    "backend",
    cl::desc("Execution backend: reference (the interpreter), emu (the "
             "generated kernels on the CPU emulation), cuda (the generated "
             "kernels on the GPU) or auto (cuda when the CUDA driver and a "
             "GPU load, else emu; the backend chosen is printed). Default: "
             "auto for a package, reference for an IR file"),
    cl::cat(category));
static cl::opt<std::string> gemmPath(
    "gemm",
    cl::desc(moe::kGroupedGemmHelp),
    cl::init("pipelined"), cl::cat(category));
static cl::opt<std::string> routingOut(
    "routing-out",
    cl::desc("Write PREFIX.ids.npy (int32 [T, K], -1 for empty slots) and "
             "PREFIX.weights.npy (float32 [T, K]) of the layer's first "
             "router, PREFIX.r<N>.ids.npy and PREFIX.r<N>.weights.npy of "
             "router N >= 1 (in IR order); with --all-layers, "
             "PREFIX.L<layer>.ids.npy and so on"),
    cl::value_desc("prefix"), cl::cat(category));
static cl::opt<std::string> routingIn(
    "routing-in",
    cl::desc("For a layer that takes its routing (a rank package's, or a "
             "function with ids and weights arguments): read "
             "PREFIX.ids.npy (int32 [T, K]) and PREFIX.weights.npy (float32 "
             "[T, K]); with --all-layers PREFIX.L<layer>.ids.npy and so on. "
             "With --rank the ids are logical experts (as --routing-out "
             "writes them) and are mapped to the placement's slots; without "
             "it they are given to the layer as they are"),
    cl::value_desc("prefix"), cl::cat(category));
static cl::opt<int64_t> rankOpt(
    "rank",
    cl::desc("Run rank R's share: the input is a set of rank packages "
             "(moe-compile --placement); the output is the rank's partial "
             "output (the sum over ranks is the layer)"),
    cl::init(-1), cl::cat(category));
static cl::opt<unsigned> repeat("repeat",
                                cl::desc("Run each layer N times and print "
                                         "the median time per layer (as "
                                         "--time does)"),
                                cl::init(1), cl::cat(category));
static cl::opt<bool> timeIt("time",
                            cl::desc("Print the median time per layer over "
                                     "--repeat runs"),
                            cl::init(false), cl::cat(category));
static cl::opt<std::string> recordProfile(
    "record-profile",
    cl::desc("Record a calibration profile of the MoE layers run (routing, "
             "router-logit and expert-output statistics; docs/profile.md) "
             "into this safetensors file, adding to it if it exists"),
    cl::value_desc("P.safetensors"), cl::cat(category));
static cl::opt<bool> profileExpertOutputs(
    "profile-expert-outputs",
    cl::desc("With --record-profile: record expert_output_mean [E, H] (runs "
             "every expert on every token)"),
    cl::init(false), cl::cat(category));
static cl::opt<bool> profileInputGram(
    "profile-input-gram",
    cl::desc("With --record-profile: record input_gram [H, H] of the layer "
             "input"),
    cl::init(false), cl::cat(category));
// Made in main(), once LLVM's own -stats (statistics of its passes, not
// ours) has been registered and removed: the two cannot both be "stats".
static std::optional<cl::opt<std::string>> statsPath;
static void addStatsOption() {
  if (cl::Option *llvmStats = cl::getRegisteredOptions().lookup("stats"))
    llvmStats->removeArgument();
  statsPath.emplace(
    "stats",
    cl::desc("Write the routing's load per layer and router (tokens per "
             "expert, gate mass, empty slots, imbalance max/mean) to this "
             "JSON file (docs/stats.md; moe-report stats draws it) and print "
             "one summary line per router"),
    cl::value_desc("FILE.json"), cl::cat(category));
}
static cl::opt<bool> verbose("v", cl::desc("Say what the backend compiled"),
                             cl::init(false), cl::cat(category));
static cl::opt<bool> quiet(
    "q",
    cl::desc("No progress lines (a kernel compile longer than a second says "
             "so on stderr otherwise)"),
    cl::init(false), cl::cat(category));

static int fail(const Twine &message) {
  errs() << "moe-run: error: " << message << "\n";
  return 1;
}

static Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

namespace {

/// One layer's result.
struct LayerResult {
  moe::HostTensor y;
  /// The layer's extra results (moe.output), in result order.
  std::vector<moe::HostTensor> extraOutputs;
  moe::RoutingTrace routing;
  std::vector<double> ms;
};

/// What the selected layers are and how to run them: the IR (reference),
/// or launch plans on a kernel backend.
class Runner {
public:
  virtual ~Runner() = default;
  /// `given`: the routing of a layer that takes it (else null); `extra`:
  /// the extra inputs of a layer that takes them (else null).
  virtual Expected<LayerResult>
  run(const moe::LayerPlan *plan, mlir::func::FuncOp fn,
      const moe::HostTensor &x, const moe::HostRouting *given,
      const std::vector<moe::HostTensor> *extra = nullptr) = 0;
  /// A layer's router-only plan or function.
  virtual Expected<moe::HostRouting> route(const moe::LayerPlan *plan,
                                           mlir::func::FuncOp fn,
                                           const moe::HostTensor &x) = 0;
};

class ReferenceRunner : public Runner {
public:
  ReferenceRunner(moe::WeightLoader &weights, bool statistics, bool dense)
      : weights(weights), statistics(statistics), dense(dense) {}
  Expected<LayerResult> run(const moe::LayerPlan *, mlir::func::FuncOp fn,
                            const moe::HostTensor &x,
                            const moe::HostRouting *given,
                            const std::vector<moe::HostTensor> *extra =
                                nullptr) override {
    LayerResult r;
    for (unsigned i = 0; i < repeat; ++i) {
      r.routing = moe::RoutingTrace();
      r.routing.statistics = statistics;
      r.routing.denseExpertOutputs = dense;
      auto start = std::chrono::steady_clock::now();
      // A layer with extra results returns them after y.
      if (!given && fn.getNumResults() > 1) {
        auto all = moe::interpretWithOutputs(
            fn, x, extra ? *extra : std::vector<moe::HostTensor>(), weights,
            &r.routing);
        if (!all)
          return all.takeError();
        r.ms.push_back(std::chrono::duration<double, std::milli>(
                           std::chrono::steady_clock::now() - start)
                           .count());
        r.y = std::move(all->front());
        r.extraOutputs.assign(std::make_move_iterator(all->begin() + 1),
                              std::make_move_iterator(all->end()));
        continue;
      }
      auto y = given ? moe::interpretGiven(fn, x, given->ids, given->weights,
                                           weights, &r.routing)
               : extra ? moe::interpretWithInputs(fn, x, *extra, weights,
                                                  &r.routing)
                       : moe::interpret(fn, x, weights, &r.routing);
      if (!y)
        return y.takeError();
      r.ms.push_back(std::chrono::duration<double, std::milli>(
                         std::chrono::steady_clock::now() - start)
                         .count());
      r.y = std::move(*y);
    }
    return r;
  }

  Expected<moe::HostRouting> route(const moe::LayerPlan *,
                                   mlir::func::FuncOp fn,
                                   const moe::HostTensor &x) override {
    return moe::interpretRouter(fn, x, weights);
  }

private:
  moe::WeightLoader &weights;
  bool statistics, dense;
};

class KernelRunner : public Runner {
public:
  KernelRunner(std::unique_ptr<moe::KernelBackend> device,
               moe::WeightBytesProvider provider)
      : device(std::move(device)), provider(std::move(provider)) {}

  Expected<LayerResult> run(const moe::LayerPlan *plan, mlir::func::FuncOp,
                            const moe::HostTensor &x,
                            const moe::HostRouting *given,
                            const std::vector<moe::HostTensor> *extra =
                                nullptr) override {
    moe::LayerExecutor executor(*plan, *device);
    if (moe::runtime::Status s = executor.loadWeights(provider))
      return makeError(s.message());
    if (x.shape[1] != plan->inputWidth)
      return makeError("input dimension 1 is " + Twine(x.shape[1]) +
                       " but layer " + Twine(plan->layer) + " expects " +
                       Twine(plan->inputWidth));
    LayerResult r;
    int64_t tokens = x.shape[0];
    for (unsigned i = 0; i < repeat; ++i) {
      auto start = std::chrono::steady_clock::now();
      std::vector<moe::InputArray> arrays;
      for (size_t j = 0; extra && j < extra->size(); ++j)
        if (const moe::HostTensor &t = (*extra)[j]; true)
          arrays.push_back(
            {t.isInt ? static_cast<const void *>(t.i.data()) : t.f.data(),
             t.shape});
      auto out = given ? executor.run(x.f.data(), tokens, true,
                                      given->ids.i.data(),
                                      given->weights.f.data())
                 : extra ? executor.runWithInputs(x.f.data(), tokens, true,
                                                  arrays)
                         : executor.run(x.f.data(), tokens, true);
      if (!out)
        return makeError(out.message());
      r.ms.push_back(std::chrono::duration<double, std::milli>(
                         std::chrono::steady_clock::now() - start)
                         .count());
      r.y.shape = {tokens, plan->outputWidth};
      r.y.f = std::move(out.value().y);
      r.extraOutputs.clear();
      for (auto [j, e] : llvm::enumerate(out.value().extras)) {
        moe::HostTensor &t = r.extraOutputs.emplace_back(
            moe::HostTensor::floats({tokens, plan->outputs[j].width}));
        t.f = std::move(e);
      }
      r.routing = moe::RoutingTrace();
      for (auto [index, o] : llvm::enumerate(out.value().routings)) {
        moe::RoutingTrace::Router &router = r.routing.routers.emplace_back();
        router.experts = plan->routings[index].experts;
        router.ids = moe::HostTensor::ints({tokens, o.slots});
        router.ids.i = std::move(o.ids);
        router.weights = moe::HostTensor::floats({tokens, o.slots});
        router.weights.f = std::move(o.weights);
        router.hasIds = router.hasWeights = true;
      }
      if (plan->routings.empty() && plan->allExperts > 0) {
        int64_t e = plan->allExperts;
        moe::RoutingTrace::Router &router = r.routing.routers.emplace_back();
        router.ids = moe::HostTensor::ints({tokens, e});
        router.weights = moe::HostTensor::floats({tokens, e}, 1.0f);
        router.experts = e;
        for (int64_t t = 0; t < tokens; ++t)
          for (int64_t j = 0; j < e; ++j)
            router.ids.i[t * e + j] = static_cast<int32_t>(j);
        router.hasIds = router.hasWeights = true;
      }
    }
    return r;
  }

  Expected<moe::HostRouting> route(const moe::LayerPlan *plan,
                                   mlir::func::FuncOp,
                                   const moe::HostTensor &x) override {
    moe::LayerExecutor executor(*plan, *device);
    if (moe::runtime::Status s = executor.loadWeights(provider))
      return makeError(s.message());
    int64_t tokens = x.shape[0];
    auto out = executor.run(x.f.data(), tokens, true);
    if (!out)
      return makeError(out.message());
    if (out.value().routings.empty())
      return makeError("the router plan of layer " + Twine(plan->layer) +
                       " reported no routing");
    moe::LayerOutputs::Routing &o = out.value().routings.front();
    moe::HostRouting r;
    r.ids = moe::HostTensor::ints({tokens, o.slots});
    r.ids.i = std::move(o.ids);
    r.weights = moe::HostTensor::floats({tokens, o.slots});
    r.weights.f = std::move(o.weights);
    return r;
  }

private:
  std::unique_ptr<moe::KernelBackend> device;
  moe::WeightBytesProvider provider;
};

/// Logical expert ids to the placement's physical slots, as every rank
/// does: an expert with c replicas (numbered in slot order) serves token t
/// at replica t mod c; ids outside [0, E) become empty slots.
moe::HostTensor physicalSlots(const moe::HostTensor &ids,
                              const moe::LayerPlacement &p) {
  std::vector<std::vector<int32_t>> replicas(p.experts);
  for (int64_t s = 0; s < p.slots(); ++s)
    replicas[p.slotExpert[s]].push_back(static_cast<int32_t>(s));
  moe::HostTensor out = ids;
  int64_t K = ids.shape[1];
  for (int64_t t = 0; t < ids.shape[0]; ++t)
    for (int64_t k = 0; k < K; ++k) {
      int32_t e = ids.i[t * K + k];
      out.i[t * K + k] =
          e < 0 || e >= p.experts
              ? -1
              : replicas[e][t % static_cast<int64_t>(replicas[e].size())];
    }
  return out;
}

/// PREFIX.ids.npy and PREFIX.weights.npy: [T, K] int32 and float32.
Expected<moe::HostRouting> readRouting(const std::string &prefix,
                                       int64_t tokens) {
  moe::HostRouting r;
  auto ids = moe::readNpy(prefix + ".ids.npy");
  if (!ids)
    return ids.takeError();
  auto w = moe::readNpy(prefix + ".weights.npy");
  if (!w)
    return w.takeError();
  if (ids->shape.size() != 2 || ids->shape[0] != tokens)
    return makeError(prefix + ".ids.npy: expected a 2-D array [" +
                     Twine(tokens) + ", K] (the input's tokens), got rank " +
                     Twine(ids->shape.size()) +
                     (ids->shape.empty() ? "" : ", " + Twine(ids->shape[0]) +
                                                    " rows"));
  if (ids->dtype != moe::NpyDType::I32 && ids->dtype != moe::NpyDType::I64)
    return makeError(prefix + ".ids.npy: expected integer expert ids "
                              "(int32), got floats");
  if (w->shape != ids->shape)
    return makeError(prefix + ".weights.npy: expected the shape of " + prefix +
                     ".ids.npy [" + Twine(ids->shape[0]) + ", " +
                     Twine(ids->shape[1]) + "]");
  if (w->dtype == moe::NpyDType::I32 || w->dtype == moe::NpyDType::I64)
    return makeError(prefix + ".weights.npy: expected float weights");
  auto values = ids->toI64();
  if (!values)
    return values.takeError();
  r.ids = moe::HostTensor::ints(ids->shape);
  for (size_t i = 0; i < values->size(); ++i) {
    int64_t v = (*values)[i];
    // Out-of-range ids are empty slots: -1 keeps them so.
    r.ids.i[i] = v < -1 || v > INT32_MAX ? -1 : static_cast<int32_t>(v);
  }
  r.weights = moe::HostTensor::floats(w->shape);
  r.weights.f = w->toF32();
  return r;
}

/// One pair of files per router: PREFIX.ids.npy / PREFIX.weights.npy for
/// the first, PREFIX.r<N>.ids.npy / PREFIX.r<N>.weights.npy for router N.
Error writeRouting(const moe::RoutingTrace &trace, const std::string &prefix,
                   int64_t layerIndex) {
  if (trace.routers.empty())
    return makeError("--routing-out: layer " + Twine(layerIndex) +
                     " has no routed experts to report");
  for (auto [r, router] : llvm::enumerate(trace.routers)) {
    if (!router.hasIds || !router.hasWeights)
      return makeError("--routing-out: router " + Twine(r) + " of layer " +
                       Twine(layerIndex) +
                       " has no routing weights to report (its dispatch "
                       "rows feed no moe.permute or moe.combine)");
    std::string base = r == 0 ? prefix : prefix + ".r" + std::to_string(r);
    if (Error err =
            moe::writeNpyI32(base + ".ids.npy", router.ids.shape, router.ids.i))
      return err;
    if (Error err = moe::writeNpyF32(base + ".weights.npy",
                                     router.weights.shape, router.weights.f))
      return err;
  }
  return Error::success();
}

/// The router of a layer that a profile records: the one router that
/// dispatches routed experts, or an error (none, or several).
Expected<size_t> profiledRouter(const moe::RoutingTrace &trace,
                                int64_t layerIndex) {
  SmallVector<size_t> dispatching;
  for (auto [i, router] : llvm::enumerate(trace.routers))
    if (router.experts > 0)
      dispatching.push_back(i);
  if (dispatching.empty())
    return makeError("layer " + Twine(layerIndex) +
                     " has no router that dispatches routed experts (no "
                     "moe.dispatch or moe.fused_route): nothing to profile");
  if (dispatching.size() > 1)
    return makeError("layer " + Twine(layerIndex) + " has " +
                     Twine(dispatching.size()) +
                     " routers that dispatch experts (for example "
                     "chain-of-experts iterations); a profile records one "
                     "router per layer");
  return dispatching.front();
}

/// Adds one layer's statistics to `recorder`: the routing from `backend`
/// (the backend that ran the layer), everything else from `ref` (the
/// interpreter's trace of the same layer on the same input).
Error recordLayer(moe::ProfileRecorder &recorder, int64_t layerIndex,
                  const moe::HostTensor &input,
                  const moe::RoutingTrace &backend,
                  const moe::RoutingTrace &ref) {
  auto index = profiledRouter(ref, layerIndex);
  if (!index)
    return index.takeError();
  if (backend.routers.size() != ref.routers.size())
    return makeError("layer " + Twine(layerIndex) + ": the backend reported " +
                     Twine(backend.routers.size()) +
                     " routers but the interpreter " +
                     Twine(ref.routers.size()));
  const moe::RoutingTrace::Router &r = ref.routers[*index];
  const moe::RoutingTrace::Router &b = backend.routers[*index];
  if (!b.hasWeights || !r.hasWeights)
    return makeError("layer " + Twine(layerIndex) +
                     ": the router's routing weights are unknown (its "
                     "dispatch rows feed no moe.permute or moe.combine)");
  moe::LayerObservation o;
  o.layer = layerIndex;
  o.tokens = input.shape[0];
  o.experts = r.experts;
  o.slots = b.ids.shape.size() == 2 ? b.ids.shape[1] : 0;
  o.ids = b.ids.i;
  o.weights = b.weights.f;
  o.logitWidth = r.logits.shape.size() == 2 ? r.logits.shape[1] : 0;
  o.logits = r.logits.f;
  o.merged = r.merged;
  o.normSlots = r.ids.shape.size() == 2 ? r.ids.shape[1] : 0;
  o.normIds = r.ids.i;
  o.normWeights = r.weights.f;
  o.slotOutputNorm = r.slotOutputNorm;
  o.hidden = input.shape[1];
  o.expertOutputSum = r.expertOutputSum;
  o.input = input.f;
  return recorder.add(o);
}

/// A JSON string literal.
std::string jsonString(StringRef text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\')
      out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += llvm::formatv("\\u{0:x-4}", static_cast<int>(c)).str();
      continue;
    }
    out += c;
  }
  return out + "\"";
}

/// --stats: one layer's load, one entry per router (docs/stats.md).
struct LayerStats {
  int64_t layer;
  std::vector<moe::RoutingStats> routers;
};

Error writeStats(const std::vector<LayerStats> &layers, StringRef path,
                 StringRef model, StringRef input, StringRef backendName) {
  std::string j = "{\n  \"format\": \"moe-run-stats\",\n  \"version\": 1,\n";
  j += "  \"model\": " + jsonString(model) + ",\n";
  j += "  \"input\": " + jsonString(input) + ",\n";
  j += "  \"backend\": " + jsonString(backendName) + ",\n";
  j += "  \"layers\": [";
  for (auto [i, l] : llvm::enumerate(layers)) {
    j += std::string(i ? "," : "") + "\n    {\n      \"layer\": " +
         std::to_string(l.layer) + ",\n      \"routers\": [";
    for (auto [r, stats] : llvm::enumerate(l.routers))
      j += std::string(r ? ", " : "") + moe::routingStatsJson(stats, 6);
    j += "]\n    }";
  }
  j += "\n  ]\n}\n";
  std::error_code ec;
  raw_fd_ostream os(path, ec);
  if (ec)
    return makeError("--stats: cannot write " + path + ": " + ec.message());
  os << j;
  return Error::success();
}

} // namespace

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  addStatsOption();
  cl::ParseCommandLineOptions(argc, argv,
                              "moe-run: runs MoE layers of moe IR or of a "
                              "package\n");
  // Progress lines: "[seconds since the start]".
  moe::ToolProgress progress("moe-run", quiet);
  if (inputPath.empty())
    return fail("no IR file or package given");
  if (layer < 0 && !allLayers)
    return fail("--layer L (the model's layer index) or --all-layers is "
                "required");
  if (layer >= 0 && allLayers)
    return fail("give --layer or --all-layers, not both");
  std::optional<moe::ChainMode> parsedChain = moe::parseChainMode(chain);
  if (!parsedChain)
    return fail("unknown --chain '" + chain +
                "'; available: prenorm, residual, none");
  moe::ChainMode chainMode = *parsedChain;
  if (chain.getNumOccurrences() && !allLayers)
    return fail("--chain says how --all-layers chains the layers; it has no "
                "meaning with --layer");
  if (allLayers && rankOpt >= 0 && chain != "none")
    return fail("--all-layers --rank: a rank's output is its partial sum of "
                "the layer, not the layer, so no residual stream can be "
                "formed; pass --chain none to chain the partial outputs");
  if (allLayers && !target.empty())
    return fail("--target selects one LoRA projection: use it with --layer");
  if (!inputPaths.empty())
    xPath = inputPaths.front();
  if (!outputPaths.empty())
    yPath = outputPaths.front();
  if (xPath.empty())
    return fail("--input X.npy is required");
  if (yPath.empty() && recordProfile.empty())
    return fail("--output Y.npy (or --record-profile P) is required");
  if ((profileExpertOutputs || profileInputGram) && recordProfile.empty())
    return fail("--profile-expert-outputs and --profile-input-gram need "
                "--record-profile");
  if (!recordProfile.empty() && !target.empty())
    return fail("--record-profile records MoE layers, not a LoRA --target");
  if (backend.getNumOccurrences() && backend != "reference" &&
      backend != "emu" && backend != "cuda" && backend != "auto")
    return fail("unknown --backend '" + backend +
                "'; available: auto, reference, emu, cuda");
  if (repeat < 1)
    return fail("--repeat must be at least 1");
  if (!routingIn.empty() && !recordProfile.empty())
    return fail("--record-profile records layers that route their tokens "
                "themselves; it cannot be combined with --routing-in");

  // A set of rank packages (moe-compile --placement): rank R's package and
  // the placement that maps logical experts to its slots.
  std::string packageDir = inputPath;
  std::map<int64_t, moe::LayerPlacement> placementOf;
  std::string placementFile = inputPath + "/placement.json";
  bool rankSet = sys::fs::is_directory(inputPath) &&
                 sys::fs::exists(placementFile) &&
                 !sys::fs::exists(inputPath + "/manifest.json");
  if (rankSet && rankOpt < 0)
    return fail(inputPath + " is a set of rank packages (placement.json, "
                            "rank<r>/): give --rank R");
  if (rankOpt >= 0) {
    if (!rankSet)
      return fail("--rank runs a set of rank packages written by moe-compile "
                  "--placement; " + inputPath +
                  " has no placement.json beside rank<r>/ folders");
    if (!recordProfile.empty())
      return fail("--record-profile records whole layers; run it on the "
                  "model, not on a rank's share");
    int64_t gpus = 0;
    auto placements = moe::readPlacementFile(placementFile, &gpus);
    if (!placements)
      return fail(toString(placements.takeError()));
    if (rankOpt >= gpus)
      return fail("--rank " + Twine(rankOpt) + " is out of range: " +
                  placementFile + " places the experts on " + Twine(gpus) +
                  " GPUs (ranks 0 to " + Twine(gpus - 1) + ")");
    for (moe::LayerPlacement &lp : *placements)
      placementOf[lp.layer] = std::move(lp);
    packageDir = inputPath + "/rank" + std::to_string(rankOpt);
    if (!sys::fs::is_directory(packageDir))
      return fail(inputPath + " has no package for rank " + Twine(rankOpt) +
                  " (" + packageDir + "; moe-compile --ranks compiled "
                  "others)");
  }

  // --repeat N prints the times, with or without --time.
  bool timing = timeIt || repeat > 1;

  // A package or an IR file.
  std::optional<moe::runtime::LoadedPackage> package;
  std::string irFile = inputPath;
  if (sys::fs::is_directory(packageDir)) {
    auto opened = moe::runtime::openPackage(packageDir);
    if (!opened)
      return fail(opened.message());
    package = std::move(opened.value());
    irFile = package->irPath();
    if (irFile.empty() && backend == "reference")
      return fail(packageDir + " has no model.opt.mlir: the reference backend "
                              "needs the IR; use --backend emu or cuda");
    if (irFile.empty() && !recordProfile.empty())
      return fail(packageDir + " has no model.opt.mlir: --record-profile "
                              "computes router-logit and expert-output "
                              "statistics with the interpreter, which needs "
                              "the IR");
  }

  // A package runs its kernels unless told otherwise; an IR file runs on
  // the interpreter.
  if (backend.empty())
    backend = package ? "auto" : "reference";

  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect>();
  mlir::MLIRContext context(registry);
  llvm::SourceMgr sourceMgr;
  mlir::SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::string modelHash;
  if (!irFile.empty()) {
    auto buffer = moe::readIRFile(irFile);
    if (!buffer)
      return fail(toString(buffer.takeError()));
    // The profile's model identity: the IR text the layers run from.
    modelHash = moe::profileModelHash((*buffer)->getBuffer());
    sourceMgr.AddNewSourceBuffer(std::move(*buffer), llvm::SMLoc());
    module = mlir::parseSourceFile<mlir::ModuleOp>(
        sourceMgr, mlir::ParserConfig(&context));
    if (!module)
      return fail("cannot parse " + irFile);
  }

  // The launch plans: the package's, or generated from the IR.
  moe::ModulePlan generated;
  const moe::ModulePlan *plans = nullptr;
  if (package) {
    plans = &package->plan();
  } else if (backend != "reference") {
    // Kernels exist for the fused ops: optimise (a no-op on fused IR).
    mlir::PassManager pm(&context, mlir::ModuleOp::getOperationName());
    pm.addPass(mlir::moe::createMoEOptimize());
    if (mlir::failed(pm.run(*module)))
      return fail("--moe-optimize failed on " + irFile);
    moe::CudaEmitOptions emitOptions;
    std::optional<moe::GroupedGemm> gemm = moe::parseGroupedGemm(gemmPath);
    if (!gemm)
      return fail("--gemm: expected " + std::string(moe::kGroupedGemmNames) +
                  ", got '" + gemmPath + "'");
    emitOptions.gemm = *gemm;
    auto emitted = moe::emitCudaModule(*module, emitOptions);
    if (!emitted)
      return fail(toString(emitted.takeError()));
    generated = std::move(*emitted);
    plans = &generated;
  }

  // The layers to run, in order: (layer, plan or null, function or null).
  struct Selected {
    int64_t layer;
    const moe::LayerPlan *plan = nullptr;
    mlir::func::FuncOp fn;
  };
  std::vector<Selected> selected;
  // Router-only functions and plans (rank packages), by layer.
  std::map<int64_t, Selected> routers;
  // The pre-gating router (moe.role = "pregate", Read-ME): it routes every
  // layer that takes its routing and has no router of its own.
  std::optional<Selected> pregate;
  SmallVector<int64_t> moeLayers;
  SmallVector<std::string> loraTargets;
  auto findPlan = [&](StringRef fnName) -> const moe::LayerPlan * {
    if (plans)
      for (const moe::LayerPlan &p : plans->layers)
        if (p.function == fnName)
          return &p;
    return nullptr;
  };
  auto considerRouter = [&](int64_t l, StringRef fnName, bool pregating) {
    Selected r;
    r.layer = l;
    r.plan = findPlan(fnName);
    if (module)
      r.fn = module->lookupSymbol<mlir::func::FuncOp>(fnName);
    if (pregating)
      pregate = r;
    else
      routers[l] = r;
  };
  auto consider = [&](int64_t l, StringRef t, StringRef fnName) {
    if (!t.empty())
      loraTargets.push_back(std::to_string(l) + ":" + t.str());
    else
      moeLayers.push_back(l);
    bool wanted = allLayers ? t.empty()
                            : (l == layer && (target.empty() ? t.empty()
                                                             : t == target));
    if (!wanted)
      return;
    Selected s;
    s.layer = l;
    s.plan = findPlan(fnName);
    if (module)
      s.fn = module->lookupSymbol<mlir::func::FuncOp>(fnName);
    selected.push_back(s);
  };
  if (module) {
    for (auto fn : module->getOps<mlir::func::FuncOp>()) {
      auto l = fn->getAttrOfType<mlir::IntegerAttr>(mlir::moe::kLayerAttrName);
      if (!l)
        continue;
      auto role = fn->getAttrOfType<mlir::StringAttr>(mlir::moe::kRoleAttr);
      if (role &&
          (role.getValue() == "router" || role.getValue() == "pregate")) {
        considerRouter(l.getInt(), fn.getSymName(),
                       role.getValue() == "pregate");
        continue;
      }
      auto t = fn->getAttrOfType<mlir::StringAttr>("moe.lora_target");
      consider(l.getInt(), t ? t.getValue() : "", fn.getSymName());
    }
  } else {
    for (const moe::LayerPlan &p : plans->layers) {
      if (moe::isRouterRole(p.role)) {
        considerRouter(p.layer, p.function, p.role == "pregate");
        continue;
      }
      consider(p.layer, p.target, p.function);
    }
  }
  std::sort(selected.begin(), selected.end(),
            [](const Selected &a, const Selected &b) {
              return a.layer < b.layer;
            });
  if (selected.empty()) {
    std::string layersText;
    for (int64_t l : moeLayers)
      layersText += (layersText.empty() ? "" : ", ") + std::to_string(l);
    if (!target.empty())
      return fail(inputPath + " has no LoRA target '" + target +
                  "' in layer " + Twine(layer) +
                  "; LoRA targets (layer:module): " +
                  (loraTargets.empty() ? "none" : join(loraTargets, ", ")));
    if (allLayers)
      return fail(inputPath + " has no MoE layer");
    return fail("layer " + Twine(layer) + " is not an MoE layer of " +
                inputPath + "; MoE layers: " +
                (layersText.empty() ? "none" : layersText));
  }

  // The input.
  auto array = moe::readNpy(xPath);
  if (!array)
    return fail(toString(array.takeError()));
  if (array->shape.size() != 2)
    return fail(xPath + ": expected a 2-D array [T, H], got rank " +
                Twine(array->shape.size()));
  if (array->dtype == moe::NpyDType::I32 || array->dtype == moe::NpyDType::I64)
    return fail(xPath + ": expected float data, got integers");
  if (array->shape[0] < 1)
    return fail(xPath + ": the input has no tokens");
  moe::HostTensor x;
  x.shape = array->shape;
  x.f = array->toF32();
  // Extra layer inputs (moe.input arguments), in argument order: int32
  // arrays stay integers, anything else is read as float32.
  std::vector<moe::HostTensor> extraInputs;
  for (size_t i = 1; i < inputPaths.size(); ++i) {
    auto extra = moe::readLayerInput(inputPaths[i]);
    if (!extra)
      return fail("--input #" + Twine(i + 1) + ": " +
                  toString(extra.takeError()));
    extraInputs.push_back(std::move(*extra));
  }

  // The runner.
  std::string root = module ? moe::weightRoot(*module, irFile) : "";
  moe::WeightLoader weights(root);
  if (package) {
    // Every weight from the package, never from the original checkpoint.
    const moe::runtime::LoadedPackage &pkg = *package;
    weights.setProvider(
        [&pkg](const std::vector<std::string> &names,
               const std::vector<std::string> &files, bool stacked,
               const std::vector<int64_t> &shape,
               StringRef type) -> Expected<std::vector<float>> {
          moe::WeightRef ref;
          ref.names = names;
          ref.files = files;
          ref.stacked = stacked;
          ref.shape = shape;
          auto elementType = moe::runtime::parseElementType(type.str());
          if (!elementType)
            return makeError("unknown element type '" + type + "'");
          ref.type = *elementType;
          auto index = pkg.findTensor(ref);
          if (!index)
            return makeError(index.message());
          auto values = pkg.tensorValues(index.value());
          if (!values)
            return makeError(values.message());
          return std::move(values.value());
        });
  }
  std::unique_ptr<Runner> runner;
  bool profiling = !recordProfile.empty();
  if (backend == "reference") {
    runner = std::make_unique<ReferenceRunner>(
        weights, profiling, profiling && profileExpertOutputs);
  } else {
    moe::BackendReport report;
    std::map<std::string, std::string> cubins;
    if (package)
      for (const std::string &arch : package->cubinArchs())
        cubins[arch] = *package->cubin(arch);
    // The emulation compiles its kernels with the host compiler (tens of
    // seconds for a large model, once per kernel source): a compile that
    // takes more than a second says so.
    auto openEmu = [&] {
      return progress.slowStep(
          "emu: loading the kernels (compiled by the host C++ compiler on "
          "first use, then from the cache)",
          [&] { return moe::openEmuBackend(plans->source, "", &report); });
    };
    auto opened =
        backend == "emu"
            ? openEmu()
            : progress.slowStep(
                  "cuda: loading the kernels (the package's cubin, else "
                  "compiled by NVRTC on first use, then from the cache)",
                  [&] {
                    return moe::openCudaBackend(plans->source, 0, &report,
                                                package ? &cubins : nullptr);
                  });
    if (backend == "auto") {
      // auto: the GPU when the CUDA driver and a device load, else the
      // CPU emulation; either way the choice is said.
      if (opened) {
        backend = "cuda";
        errs() << "moe-run: backend: cuda (" << report.description
               << "; --backend auto)\n";
      } else {
        // The first line of the reason (the driver's search list follows).
        StringRef why = StringRef(opened.message()).split('\n').first;
        why.consume_back("; tried:");
        errs() << "moe-run: backend: emu, the CPU emulation (--backend auto "
                  "found no usable GPU: "
               << why << ")\n";
        report = moe::BackendReport();
        opened = openEmu();
        backend = "emu";
      }
    }
    if (!opened)
      return fail(backend + " backend: " + opened.message());
    for (const std::string &w : report.warnings)
      errs() << "moe-run: warning: " << w << "\n";
    if (backend == "cuda" && package && !report.precompiled)
      errs() << "moe-run: note: " << inputPath << " has no cubin for "
             << report.description
             << "; compiled its kernels.cu with NVRTC"
             << (report.fromCache ? " (from the cache)" : "") << "\n";
    if (verbose)
      errs() << "moe-run: " << backend << ": " << report.description
             << (report.precompiled  ? ", the package's cubin"
                 : report.fromCache ? ", kernels from the cache"
                                     : ", compiled")
             << llvm::format(" in %.2f s\n", report.compileSeconds);
    // Weights as bytes in the kernels' dtype: the package's mapped
    // weights.bin as it is, or the checkpoint's bytes copied once.
    moe::WeightBytesProvider provider;
    if (package) {
      provider = package->weightProvider();
    } else {
      provider = [&](const moe::WeightRef &ref)
          -> moe::runtime::Expected<moe::WeightBytes> {
        auto bytes =
            weights.loadBytes(ref.names, ref.files, ref.stacked, ref.shape,
                              moe::elementTypeName(ref.type));
        if (!bytes)
          return moe::runtime::Status::error(toString(bytes.takeError()));
        return moe::WeightBytes::fromVector(ref.type, std::move(*bytes));
      };
    }
    runner = std::make_unique<KernelRunner>(std::move(opened.value()),
                                            std::move(provider));
  }

  // A profile to add to: refused early if it is of another model.
  std::optional<moe::Profile> existing;
  if (profiling && sys::fs::exists(recordProfile)) {
    auto read = moe::readProfile(recordProfile);
    if (!read)
      return fail("--record-profile: cannot add to " + recordProfile + ": " +
                  toString(read.takeError()));
    if (read->model != modelHash)
      return fail("--record-profile: " + recordProfile +
                  " was recorded on another model (hash " + read->model +
                  "; this model's IR has hash " + modelHash +
                  "); record into a new file");
    existing = std::move(*read);
  }
  moe::ProfileRecorder::Options profileOptions;
  profileOptions.expertOutputs = profileExpertOutputs;
  profileOptions.inputGram = profileInputGram;
  profileOptions.transition = allLayers;
  moe::ProfileRecorder recorder(modelHash, profileOptions);
  int64_t profiledLayers = 0;

  // Run.
  std::vector<LayerStats> layerStats;
  moe::HostTensor current = std::move(x);
  // Read-ME: the pre-gating router's routing, computed once on the first
  // layer's input and given to every layer without a router of its own.
  std::optional<moe::HostRouting> pregated;
  // --all-layers: the extra inputs by name, carried from layer to layer.
  std::map<std::string, moe::HostTensor> carried;
  bool seeded = false;
  for (const Selected &s : selected) {
    // The layer runs on the residual stream, or its RMS norm (--chain).
    moe::HostTensor stream;
    if (allLayers) {
      stream = std::move(current);
      current = moe::chainInput(chainMode, stream);
    }
    if (backend == "reference" && !s.fn)
      return fail("no IR function for layer " + Twine(s.layer));
    if (backend != "reference" && !s.plan)
      return fail("no kernels for layer " + Twine(s.layer));
    // A layer that takes its routing: --routing-in, or its router (a rank
    // package's); logical ids are mapped to the placement's slots.
    std::string formWhy;
    bool takesRouting =
        s.plan ? s.plan->givenIds >= 0
               : s.fn && mlir::moe::getLayerForm(s.fn, formWhy) ==
                             mlir::moe::LayerForm::GivenRouting;
    if (pregate && !pregated && routingIn.empty() &&
        (allLayers || takesRouting)) {
      if (backend == "reference" ? !pregate->fn : !pregate->plan)
        return fail("the pre-gating router of " + inputPath + " has no " +
                    (backend == "reference" ? "IR function" : "kernels"));
      auto routed = runner->route(pregate->plan, pregate->fn, current);
      if (!routed)
        return fail("the pre-gating router: " + toString(routed.takeError()));
      pregated = std::move(*routed);
    }
    std::optional<moe::HostRouting> given;
    if (takesRouting) {
      if (!routingIn.empty()) {
        std::string prefix = allLayers
                                 ? routingIn + ".L" + std::to_string(s.layer)
                                 : routingIn.getValue();
        auto read = readRouting(prefix, current.shape[0]);
        if (!read)
          return fail("--routing-in: " + toString(read.takeError()));
        given = std::move(*read);
      } else {
        auto router = routers.find(s.layer);
        if (router == routers.end() && pregated) {
          given = *pregated;
        } else {
          if (router == routers.end() ||
              (backend == "reference" ? !router->second.fn
                                      : !router->second.plan))
            return fail("layer " + Twine(s.layer) +
                        " takes its routing from the caller and " + inputPath +
                        " has no router for it: give --routing-in PREFIX");
          auto routed =
              runner->route(router->second.plan, router->second.fn, current);
          if (!routed)
            return fail("the router of layer " + Twine(s.layer) + ": " +
                        toString(routed.takeError()));
          given = std::move(*routed);
        }
      }
      if (rankOpt >= 0) {
        auto p = placementOf.find(s.layer);
        if (p == placementOf.end())
          return fail(placementFile + " places no layer " + Twine(s.layer));
        given->ids = physicalSlots(given->ids, p->second);
      }
    } else if (!routingIn.empty()) {
      return fail("--routing-in: layer " + Twine(s.layer) + " of " +
                  inputPath + " routes its tokens itself (it takes no "
                  "routing; rank packages and functions with ids and "
                  "weights arguments do)");
    }
    // A layer with extra inputs takes the --input files after x.
    std::string why;
    if (!s.plan && s.fn && !mlir::moe::getLayerForm(s.fn, why))
      return fail(why);
    bool takesInputs =
        s.plan ? !s.plan->inputs.empty()
               : s.fn && mlir::moe::getLayerForm(s.fn, why) ==
                             mlir::moe::LayerForm::ExtraInputs;
    if (!takesInputs && !extraInputs.empty() && !allLayers)
      return fail("--input: layer " + Twine(s.layer) + " of " + inputPath +
                  " takes no extra inputs (only x), but " +
                  Twine(extraInputs.size()) + " more --input file(s) were "
                  "given");
    // The names of the layer's extra inputs, in argument order.
    std::vector<std::string> inputNames;
    if (takesInputs && s.plan)
      for (const moe::LayerInput &in : s.plan->inputs)
        inputNames.push_back(in.name);
    else if (takesInputs)
      for (unsigned i = 1; i < mlir::func::FuncOp(s.fn).getNumArguments(); ++i)
        inputNames.push_back(mlir::moe::getLayerInputName(s.fn, i));
    std::vector<moe::HostTensor> layerInputs;
    if (allLayers && takesInputs) {
      // The first layer with extra inputs names the --input files.
      if (!seeded) {
        if (extraInputs.size() != inputNames.size())
          return fail("--input: layer " + Twine(s.layer) + " of " + inputPath +
                      " (the chain's first layer with extra "
                      "inputs) takes " +
                      Twine(inputNames.size()) + " extra input(s) after x ('" +
                      join(inputNames, "', '") + "'); " +
                      Twine(extraInputs.size()) + " given");
        for (auto [name, t] : llvm::zip(inputNames, extraInputs))
          carried[name] = t;
        seeded = true;
      }
      for (const std::string &name : inputNames) {
        auto it = carried.find(name);
        if (it == carried.end())
          return fail("--all-layers: layer " + Twine(s.layer) + " of " +
                      inputPath + " takes the extra input '" + name +
                      "', which neither the chain's first --input files nor "
                      "an earlier layer's results (moe.output) give");
        layerInputs.push_back(it->second);
      }
    }
    // The extra inputs the layer runs on (its state, under --all-layers
    // the one an earlier layer returned), also for --record-profile's
    // interpreter run below.
    const std::vector<moe::HostTensor> *runInputs = !takesInputs ? nullptr
                                                    : allLayers  ? &layerInputs
                                                                 : &extraInputs;
    auto result = runner->run(s.plan, s.fn, current, given ? &*given : nullptr,
                              runInputs);
    if (!result)
      return fail(toString(result.takeError()));
    if (timing) {
      std::vector<double> sorted = result->ms;
      std::sort(sorted.begin(), sorted.end());
      outs() << llvm::format("moe-run: layer %lld on %s: median %.3f ms over "
                             "%u run(s), %lld tokens\n",
                             static_cast<long long>(s.layer), backend.c_str(),
                             sorted[sorted.size() / 2], repeat.getValue(),
                             static_cast<long long>(current.shape[0]));
    }
    if (!routingOut.empty()) {
      std::string prefix = allLayers
                               ? routingOut + ".L" + std::to_string(s.layer)
                               : routingOut.getValue();
      if (Error err = writeRouting(result->routing, prefix, s.layer))
        return fail(toString(std::move(err)));
    }
    if (!statsPath->empty()) {
      // The routing the backend reported, as --routing-out writes it.
      LayerStats &ls = layerStats.emplace_back();
      ls.layer = s.layer;
      for (auto [r, router] : llvm::enumerate(result->routing.routers)) {
        if (!router.hasIds || router.ids.shape.size() != 2)
          continue;
        moe::RoutingStats st = moe::makeRoutingStats(router.experts);
        st.add(router.ids.i.data(),
               router.hasWeights ? router.weights.f.data() : nullptr,
               router.ids.shape[0], router.ids.shape[1]);
        outs() << "moe-run: stats: layer " << s.layer << " router " << r
               << ": " << moe::routingStatsSummary(st) << "\n";
        ls.routers.push_back(std::move(st));
      }
      if (ls.routers.empty())
        outs() << "moe-run: stats: layer " << s.layer
               << ": no routing (the layer takes its routing or has no "
                  "router)\n";
    }
    if (profiling) {
      if (!s.fn)
        return fail("--record-profile: no IR function for layer " +
                    Twine(s.layer));
      // Kernel backends: the statistics beyond the routing come from the
      // interpreter on the same layer input.
      moe::RoutingTrace refTrace;
      const moe::RoutingTrace *ref = &result->routing;
      if (backend != "reference") {
        refTrace.statistics = true;
        refTrace.denseExpertOutputs = profileExpertOutputs;
        auto y =
            runInputs
                ? moe::interpretWithOutputs(s.fn, current, *runInputs, weights,
                                            &refTrace)
                      .takeError()
                : moe::interpret(s.fn, current, weights, &refTrace).takeError();
        if (y)
          return fail("--record-profile: " + toString(std::move(y)));
        ref = &refTrace;
      }
      bool routed = llvm::any_of(ref->routers,
                                 [](const auto &r) { return r.experts > 0; });
      if (!routed && allLayers) {
        errs() << "moe-run: note: --record-profile skips layer " << s.layer
               << ": it has no router that dispatches routed experts\n";
      } else {
        if (Error err =
                recordLayer(recorder, s.layer, current, result->routing, *ref))
          return fail("--record-profile: " + toString(std::move(err)));
        ++profiledLayers;
      }
    }
    // Extra results (moe.output): one --output each after y.
    // Under --all-layers they feed the next layers' inputs of their names,
    // and the last layer's go to the --output files.
    // The name of extra result i: the plan's (kernel backends, packages)
    // or the function's.
    auto outputName = [&](size_t i) {
      return s.plan && i < s.plan->outputs.size()
                 ? s.plan->outputs[i].name
                 : mlir::moe::getLayerOutputName(s.fn, i + 1);
    };
    if (allLayers)
      for (auto [i, t] : llvm::enumerate(result->extraOutputs))
        carried[outputName(i)] = t;
    bool lastLayer = &s == &selected.back();
    // Without --output (a --record-profile run) nothing is written.
    if (!outputPaths.empty() &&
        (!result->extraOutputs.empty() || outputPaths.size() > 1) &&
        (!allLayers || lastLayer)) {
      size_t want = result->extraOutputs.size();
      if (outputPaths.size() != want + 1) {
        std::string names;
        for (size_t i = 0; i < want; ++i)
          names += (i ? ", '" : "'") + outputName(i) + "'";
        return fail("--output: layer " + Twine(s.layer) + " of " + inputPath +
                    " returns y and " + Twine(want) + " extra result(s)" +
                    (names.empty() ? std::string() : " (" + names + ")") +
                    ": give " + Twine(want + 1) +
                    " --output file(s) in "
                    "result order, got " +
                    Twine(outputPaths.size()));
      }
      for (auto [i, t] : llvm::enumerate(result->extraOutputs)) {
        const std::string &path = outputPaths[i + 1];
        Error err = t.isInt ? moe::writeNpyI32(path, t.shape, t.i)
                            : moe::writeNpyF32(path, t.shape, t.f);
        if (err)
          return fail(toString(std::move(err)));
      }
    }
    if (allLayers) {
      auto next = moe::chainNext(chainMode, stream, std::move(result->y));
      if (!next)
        return fail("--all-layers: layer " + Twine(s.layer) + " of " +
                    inputPath + ": " + toString(next.takeError()));
      result->y = std::move(*next);
    }
    current = std::move(result->y);
  }
  if (!yPath.empty())
    if (Error err = moe::writeNpyF32(yPath, current.shape, current.f))
      return fail(toString(std::move(err)));
  if (!statsPath->empty())
    if (Error err = writeStats(layerStats, *statsPath, inputPath, xPath,
                               backend))
      return fail(toString(std::move(err)));
  if (profiling) {
    // Written only now, every layer having run: no partial profile.
    if (profiledLayers == 0)
      return fail("--record-profile: no layer of " + inputPath +
                  " has routed experts to profile");
    if (Error err = recorder.endInput(current.shape[0]))
      return fail("--record-profile: " + toString(std::move(err)));
    moe::Profile profile = recorder.profile();
    // Sums commute: merging the file into the new recording names the file
    // in the errors.
    if (existing)
      if (Error err = moe::mergeProfiles(profile, *existing, recordProfile))
        return fail("--record-profile: adding the statistics of " + xPath +
                    ": " + toString(std::move(err)));
    if (Error err = moe::writeProfile(profile, recordProfile))
      return fail("--record-profile: " + toString(std::move(err)));
  }
  return 0;
}
