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
static cl::opt<std::string>
    backend("backend", cl::desc("Execution backend: reference"),
            cl::init("reference"), cl::cat(category));
static cl::opt<std::string> routingOut(
    "routing-out",
    cl::desc("Write PREFIX.ids.npy (int32 [T, K], -1 for empty slots) and "
             "PREFIX.weights.npy (float32 [T, K])"),
    cl::value_desc("prefix"), cl::cat(category));

static int fail(const Twine &message) {
  errs() << "moe-run: error: " << message << "\n";
  return 1;
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
  if (backend != "reference")
    return fail("unknown backend '" + backend + "'; available: reference");

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
  moe::RoutingTrace trace;
  auto result = moe::interpret(entry, input, weights, &trace);
  if (!result)
    return fail(toString(result.takeError()));

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
