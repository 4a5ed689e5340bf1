//===- moe-import.cpp - Hugging Face models to moe IR ---------------------===//
//
// Part of moe-opt.
//
//   moe-import MODEL_DIR -o OUT.mlir [--adapter DIR]... [--lora-router F]
//   moe-import --synthetic ARCH -o DIR [--seed N] [--dtype bf16] ...
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEDialect.h"
#include "moe/lib/Import/HFImporter.h"
#include "moe/lib/Weights/AtomicFile.h"
#include "moe/lib/Models/SyntheticModels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

static cl::OptionCategory category("moe-import options");
static cl::opt<std::string> modelDir(cl::Positional, cl::desc("<model dir>"),
                                     cl::cat(category));
static cl::opt<std::string>
    output("o", cl::desc("Output IR file ('-' for stdout), or the folder to "
                         "write with --synthetic"),
           cl::value_desc("path"), cl::cat(category));
static cl::list<std::string>
    adapters("adapter", cl::desc("PEFT LoRA adapter folder (repeatable)"),
             cl::value_desc("dir"), cl::cat(category));
static cl::opt<std::string>
    loraRouter("lora-router",
               cl::desc("safetensors file with the router of a mixture of "
                        "adapters (layout in docs/import.md)"),
               cl::value_desc("file"), cl::cat(category));
static cl::opt<std::string> activationType(
    "activation-type",
    cl::desc("Element type of the activations: f32 (default), bf16, f16, or "
             "model (the checkpoint's dtype)"),
    cl::init("f32"), cl::cat(category));
static cl::opt<std::string>
    synthetic("synthetic",
              cl::desc("Write a small deterministic model folder of this "
                       "architecture to -o instead of importing"),
              cl::value_desc("arch"), cl::cat(category));
static cl::opt<uint64_t> seed("seed", cl::desc("--synthetic: random seed"),
                              cl::init(0), cl::cat(category));
static cl::opt<std::string>
    dtype("dtype", cl::desc("--synthetic: f32, bf16 (default) or f16"),
          cl::init("bf16"), cl::cat(category));
static cl::opt<int64_t> layers("layers",
                               cl::desc("--synthetic: number of layers"),
                               cl::init(0), cl::cat(category));
static cl::opt<int64_t> hidden("hidden",
                               cl::desc("--synthetic: hidden size"),
                               cl::init(0), cl::cat(category));
static cl::opt<int64_t> intermediate(
    "intermediate", cl::desc("--synthetic: width of one routed expert"),
    cl::init(0), cl::cat(category));
static cl::opt<int64_t> experts("experts",
                                cl::desc("--synthetic: number of experts"),
                                cl::init(0), cl::cat(category));
static cl::opt<int64_t> topK("top-k",
                             cl::desc("--synthetic: experts per token"),
                             cl::init(0), cl::cat(category));
static cl::opt<int64_t> shards("shards",
                               cl::desc("--synthetic: number of shards"),
                               cl::init(1), cl::cat(category));
static cl::opt<bool> fusedExperts(
    "fused-experts",
    cl::desc("--synthetic: store experts as fused 3-D tensors"),
    cl::init(false), cl::cat(category));
static cl::opt<bool> shapesOnly(
    "shapes-only",
    cl::desc("--synthetic: tensor names and shapes only, the data a hole of "
             "zeros (no disk space): a folder to compile kernels for a "
             "shape, at any size, not a model to run"),
    cl::init(false), cl::cat(category));
static cl::opt<int64_t>
    nGroup("n-group", cl::desc("--synthetic deepseek: number of expert groups"),
           cl::init(0), cl::cat(category));
static cl::opt<int64_t> topkGroup(
    "topk-group", cl::desc("--synthetic deepseek: expert groups kept"),
    cl::init(0), cl::cat(category));
static cl::opt<int64_t> denseLayers(
    "dense-layers",
    cl::desc("--synthetic deepseek_v2/v3, qwen2_moe/qwen3_moe: the first N "
             "layers are dense MLP layers (first_k_dense_replace, "
             "mlp_only_layers); -1: the architecture's default"),
    cl::init(-1), cl::cat(category));
static cl::opt<std::string> quant(
    "quant",
    cl::desc("--synthetic: quantized experts as released: fp8 (deepseek_v3, "
             "F8_E4M3 + weight_scale_inv) or mxfp4 (gpt_oss, _blocks + "
             "_scales)"),
    cl::init(""), cl::cat(category));
static cl::opt<int64_t> quantBlock(
    "quant-block",
    cl::desc("--synthetic --quant fp8: the square block of one scale "
             "(weight_block_size, default 128)"),
    cl::init(128), cl::cat(category));
static cl::opt<bool> force("force",
                           cl::desc("--synthetic: replace an existing folder"),
                           cl::init(false), cl::cat(category));

static int fail(const Twine &message) {
  errs() << "moe-import: error: " << message << "\n";
  return 1;
}

static int writeSynthetic() {
  if (output.empty())
    return fail("--synthetic needs -o DIR");
  Expected<moe::SyntheticOptions> defaults =
      moe::defaultSyntheticOptions(synthetic);
  if (!defaults)
    return fail(toString(defaults.takeError()));
  moe::SyntheticOptions opts = *defaults;
  opts.seed = seed;
  if (dtype == "f32")
    opts.dtype = moe::DType::F32;
  else if (dtype == "bf16")
    opts.dtype = moe::DType::BF16;
  else if (dtype == "f16")
    opts.dtype = moe::DType::F16;
  else
    return fail("--dtype is '" + dtype + "'; expected f32, bf16 or f16");
  if (layers > 0)
    opts.numLayers = layers;
  if (hidden > 0)
    opts.hidden = hidden;
  if (intermediate > 0)
    opts.intermediate = intermediate;
  if (experts > 0)
    opts.numExperts = experts;
  if (topK > 0)
    opts.topK = topK;
  if (shards < 1)
    return fail("--shards must be >= 1");
  opts.numShards = shards;
  opts.fusedExperts = fusedExperts;
  opts.overwrite = force;
  opts.shapesOnly = shapesOnly;
  opts.quant = quant;
  opts.quantBlock = quantBlock;
  if (nGroup > 0)
    opts.nGroup = nGroup;
  if (topkGroup > 0)
    opts.topkGroup = topkGroup;
  if (denseLayers.getNumOccurrences())
    if (Error err = moe::setLeadingDenseLayers(opts, denseLayers))
      return fail("--dense-layers " + Twine(denseLayers) + ": " +
                  toString(std::move(err)));
  if (Error err = moe::writeSyntheticModel(opts, output))
    return fail(toString(std::move(err)));
  outs() << "moe-import: wrote a synthetic " << synthetic << " model ("
         << opts.numLayers << " layers, hidden " << opts.hidden << ", "
         << opts.numExperts << " experts, top-" << opts.topK << ", "
         << dtype << (shapesOnly ? ", shapes only" : "") << ") to " << output
         << "\n";
  return 0;
}

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "moe-import: Hugging Face MoE models and PEFT adapters to moe IR\n\n"
      "  moe-import MODEL_DIR -o OUT.mlir [--adapter DIR]... "
      "[--lora-router FILE]\n"
      "  moe-import --synthetic ARCH -o DIR [--seed N] [--dtype bf16]\n");
  if (!synthetic.empty())
    return writeSynthetic();
  if (modelDir.empty())
    return fail("no model folder given (moe-import MODEL_DIR -o OUT.mlir)");
  if (output.empty())
    return fail("no output given: -o OUT.mlir (or -o - for stdout)");

  mlir::MLIRContext context;
  moe::ImportOptions options;
  options.modelDir = modelDir;
  options.adapterDirs.assign(adapters.begin(), adapters.end());
  options.loraRouter = loraRouter;
  options.activationType = activationType;
  auto module = moe::importHuggingFaceModel(context, options);
  if (!module)
    return fail(toString(module.takeError()));
  // Written atomically: a temporary file renamed into place, nothing on
  // failure.
  if (output == "-") {
    (*module)->print(outs());
    return 0;
  }
  if (Error err = moe::writeFileAtomically(output, [&](raw_ostream &os) {
        (*module)->print(os);
        return Error::success();
      }))
    return fail("cannot write " + output + ": " + toString(std::move(err)));
  return 0;
}
