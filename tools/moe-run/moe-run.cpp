//===- moe-run.cpp - Runs one MoE layer of moe IR -------------------------===//
//
// Part of moe-opt.
//
//   moe-run IR.mlir --layer L --input X.npy --output Y.npy
//           [--backend reference] [--routing-out PREFIX] [--target MODULE]
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/lib/Reference/Interpreter.h"
#include "moe/lib/Weights/Npy.h"
#include "moe/codegen/CudaEmitter.h"
#include "moe/passes/Passes.h"
#include "moe/runtime/Backends.h"

#include "mlir/Pass/PassManager.h"
#include "llvm/Support/Format.h"

#include <algorithm>
#include <chrono>

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

static cl::OptionCategory category("moe-run options");
static cl::opt<std::string> irPath(cl::Positional, cl::desc("<IR file>"),
                                   cl::cat(category));
static cl::opt<int64_t> layer("layer", cl::desc("Model layer index to run"),
                              cl::init(-1), cl::cat(category));
static cl::opt<std::string> target(
    "target",
    cl::desc("Run the LoRA-wrapped projection of this module of the layer "
             "(for example self_attn.q_proj) instead of its MoE block"),
    cl::cat(category));
static cl::opt<std::string> inputPath("input",
                                      cl::desc("Input .npy, float32 [T, H]"),
                                      cl::cat(category));
static cl::opt<std::string> outputPath("output",
                                       cl::desc("Output .npy, float32 [T, H]"),
                                       cl::cat(category));
static cl::opt<std::string> backend(
    "backend",
    cl::desc("Execution backend: reference (the interpreter), emu (the "
             "generated kernels on the CPU emulation) or cuda (the generated "
             "kernels on the GPU)"),
    cl::init("reference"), cl::cat(category));
static cl::opt<unsigned> repeat("repeat",
                                cl::desc("Run the layer N times (with --time)"),
                                cl::init(1), cl::cat(category));
static cl::opt<bool> timeIt("time",
                            cl::desc("Print the median time of a run of the "
                                     "layer over --repeat runs"),
                            cl::init(false), cl::cat(category));
static cl::opt<bool> verbose("v", cl::desc("Say what the backend compiled"),
                             cl::init(false), cl::cat(category));
static cl::opt<std::string> routingOut(
    "routing-out",
    cl::desc("Write PREFIX.ids.npy (int32 [T, K], -1 for empty slots) and "
             "PREFIX.weights.npy (float32 [T, K])"),
    cl::value_desc("prefix"), cl::cat(category));

static int fail(const Twine &message) {
  errs() << "moe-run: error: " << message << "\n";
  return 1;
}

static Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

/// Runs the layer function `fn` through the generated kernels on the CPU
/// emulation or the GPU: optimises the IR when it is not fused yet, emits
/// the kernels and their launch plan, compiles them (through the cache),
/// uploads the weights and launches.
static Error runKernels(mlir::ModuleOp module, StringRef fn,
                        StringRef backendName, const moe::HostTensor &input,
                        moe::WeightLoader &weights, moe::HostTensor &output,
                        moe::RoutingTrace &trace, std::vector<double> &times) {
  // Kernels exist for the fused ops: optimise (a no-op on fused IR).
  mlir::PassManager pm(module.getContext(),
                       mlir::ModuleOp::getOperationName());
  pm.addPass(mlir::moe::createMoEOptimize());
  if (mlir::failed(pm.run(module)))
    return makeError("--moe-optimize failed on the input IR");
  Expected<moe::ModulePlan> plan = moe::emitCudaModule(module);
  if (!plan)
    return plan.takeError();
  const moe::LayerPlan *layerPlan = nullptr;
  for (const moe::LayerPlan &p : plan->layers)
    if (p.function == fn)
      layerPlan = &p;
  if (!layerPlan)
    return makeError("no kernels were generated for @" + fn);

  moe::BackendReport report;
  auto opened = backendName == "emu"
                    ? moe::openEmuBackend(plan->source, "", &report)
                    : moe::openCudaBackend(plan->source, 0, &report);
  if (!opened)
    return makeError(backendName + " backend: " + opened.message());
  std::unique_ptr<moe::KernelBackend> device = std::move(opened.value());
  for (const std::string &w : report.warnings)
    errs() << "moe-run: warning: " << w << "\n";
  if (verbose)
    errs() << "moe-run: " << backendName << ": " << report.description
           << (report.fromCache ? ", kernels from the cache" : ", compiled")
           << llvm::format(" in %.2f s\n", report.compileSeconds);

  moe::LayerExecutor executor(*layerPlan, *device);
  moe::runtime::Status loaded = executor.loadWeights(
      [&](const moe::WeightRef &ref)
          -> moe::runtime::Expected<std::vector<float>> {
        auto t = weights.load(ref.names, ref.files, ref.stacked, ref.shape,
                              moe::elementTypeName(ref.type));
        if (!t)
          return moe::runtime::Status::error(toString(t.takeError()));
        return std::move(t->f);
      });
  if (loaded)
    return makeError(loaded.message());
  int64_t tokens = input.shape[0];
  for (unsigned r = 0; r < repeat; ++r) {
    auto start = std::chrono::steady_clock::now();
    auto out = executor.run(input.f.data(), tokens, true);
    if (!out)
      return makeError(out.message());
    times.push_back(std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start)
                        .count());
    output.shape = {tokens, layerPlan->outputWidth};
    output.f = std::move(out.value().y);
    trace = moe::RoutingTrace();
    if (layerPlan->routingIds >= 0) {
      int64_t slots = out.value().slots;
      trace.ids = moe::HostTensor::ints({tokens, slots});
      trace.ids.i = out.value().ids;
      trace.weights = moe::HostTensor::floats({tokens, slots});
      trace.weights.f = out.value().weights;
      trace.hasIds = trace.hasWeights = true;
    } else if (layerPlan->allExperts > 0) {
      int64_t e = layerPlan->allExperts;
      trace.ids = moe::HostTensor::ints({tokens, e});
      trace.weights = moe::HostTensor::floats({tokens, e}, 1.0f);
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t i = 0; i < e; ++i)
          trace.ids.i[t * e + i] = static_cast<int32_t>(i);
      trace.hasIds = trace.hasWeights = true;
    }
  }
  return Error::success();
}

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(argc, argv,
                              "moe-run: runs one MoE layer of moe IR\n");
  if (irPath.empty())
    return fail("no IR file given");
  if (layer < 0)
    return fail("--layer L is required (the model's layer index)");
  if (inputPath.empty() || outputPath.empty())
    return fail("--input X.npy and --output Y.npy are required");
  if (backend != "reference" && backend != "emu" && backend != "cuda")
    return fail("unknown backend '" + backend +
                "'; available: reference, emu, cuda");
  if (repeat < 1)
    return fail("--repeat must be at least 1");

  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect>();
  mlir::MLIRContext context(registry);
  llvm::SourceMgr sourceMgr;
  mlir::SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(irPath, sourceMgr,
                                            mlir::ParserConfig(&context));
  if (!module)
    return fail("cannot parse " + irPath);

  // Find the entry point of the layer.
  mlir::func::FuncOp entry;
  SmallVector<int64_t> moeLayers;
  SmallVector<std::string> loraTargets;
  for (auto fn : module->getOps<mlir::func::FuncOp>()) {
    auto l = fn->getAttrOfType<mlir::IntegerAttr>(mlir::moe::kLayerAttrName);
    if (!l)
      continue;
    auto t = fn->getAttrOfType<mlir::StringAttr>("moe.lora_target");
    if (t)
      loraTargets.push_back(std::to_string(l.getInt()) + ":" +
                            t.getValue().str());
    else
      moeLayers.push_back(l.getInt());
    bool wanted = target.empty() ? !t : (t && t.getValue() == target);
    if (l.getInt() == layer && wanted)
      entry = fn;
  }
  if (!entry) {
    std::string layersText;
    for (int64_t l : moeLayers)
      layersText += (layersText.empty() ? "" : ", ") + std::to_string(l);
    if (!target.empty())
      return fail(irPath + " has no LoRA target '" + target + "' in layer " +
                  Twine(layer) + "; LoRA targets (layer:module): " +
                  (loraTargets.empty() ? "none" : join(loraTargets, ", ")));
    return fail("layer " + Twine(layer) + " is not an MoE layer of " +
                irPath + "; MoE layers: " +
                (layersText.empty() ? "none" : layersText));
  }

  auto array = moe::readNpy(inputPath);
  if (!array)
    return fail(toString(array.takeError()));
  if (array->shape.size() != 2)
    return fail(inputPath + ": expected a 2-D array [T, H], got rank " +
                Twine(array->shape.size()));
  if (array->dtype == moe::NpyDType::I32 || array->dtype == moe::NpyDType::I64)
    return fail(inputPath + ": expected float data, got integers");
  moe::HostTensor input;
  input.shape = array->shape;
  input.f = array->toF32();

  moe::WeightLoader weights(moe::weightRoot(*module, irPath));
  moe::HostTensor output;
  moe::RoutingTrace trace;
  std::vector<double> times;
  if (backend == "reference") {
    for (unsigned r = 0; r < repeat; ++r) {
      trace = moe::RoutingTrace();
      auto start = std::chrono::steady_clock::now();
      auto result = moe::interpret(entry, input, weights, &trace);
      if (!result)
        return fail(toString(result.takeError()));
      times.push_back(std::chrono::duration<double, std::milli>(
                          std::chrono::steady_clock::now() - start)
                          .count());
      output = std::move(*result);
    }
  } else {
    std::string layerFn = entry.getSymName().str();
    if (Error err = runKernels(*module, layerFn, backend, input, weights,
                               output, trace, times))
      return fail(toString(std::move(err)));
  }
  if (timeIt) {
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    outs() << llvm::format("moe-run: layer %lld on %s: median %.3f ms over "
                           "%u run(s), %lld tokens\n",
                           static_cast<long long>(layer), backend.c_str(),
                           sorted[sorted.size() / 2], repeat.getValue(),
                           static_cast<long long>(input.shape[0]));
  }
  auto result = &output;
  if (Error err = moe::writeNpyF32(outputPath, result->shape, result->f))
    return fail(toString(std::move(err)));
  if (!routingOut.empty()) {
    if (!trace.hasIds || !trace.hasWeights)
      return fail("--routing-out: layer " + Twine(layer) +
                  " has no routed experts to report");
    if (Error err = moe::writeNpyI32(routingOut + ".ids.npy", trace.ids.shape,
                                     trace.ids.i))
      return fail(toString(std::move(err)));
    if (Error err = moe::writeNpyF32(routingOut + ".weights.npy",
                                     trace.weights.shape, trace.weights.f))
      return fail(toString(std::move(err)));
  }
  return 0;
}
