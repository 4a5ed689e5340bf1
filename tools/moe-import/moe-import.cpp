//===- moe-import.cpp - Hugging Face models to moe IR ---------------------===//
//
// Part of moe-opt.
//
//   moe-import MODEL_DIR -o OUT.mlir [--adapter DIR]... [--lora-router F]
//   moe-import --synthetic ARCH -o DIR [--seed N] [--dtype bf16] ...
//   moe-import --random-weights IR.mlir -o DIR [--seed N]
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEDialect.h"
#include "moe/dialects/MoE/MoEOps.h"
#include "moe/lib/Import/HFImporter.h"
#include "moe/lib/Models/SyntheticModels.h"
#include "moe/lib/Weights/AtomicFile.h"
#include "moe/lib/Weights/InputFile.h"
#include "moe/lib/Weights/Safetensors.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "../ToolProgress.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <map>

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
static cl::opt<uint64_t>
    seed("seed", cl::desc("--synthetic, --random-weights: random seed"),
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

static cl::opt<std::string> randomWeights(
    "random-weights",
    cl::desc("Make moe IR runnable without a checkpoint: write -o DIR with "
             "seeded random safetensors (--seed) for every moe.weight of this "
             "IR file, in the files, names, shapes and dtypes it names, and a "
             "copy of the IR that reads them (DIR/<name>.mlir)"),
    cl::value_desc("IR.mlir"), cl::cat(category));
static cl::opt<bool> quiet(
    "q", cl::desc("--synthetic, --random-weights: no progress lines on stderr"),
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
  moe::ToolProgress progress("moe-import", quiet);
  opts.progress = [&](const std::string &text) { progress.step(text); };
  Error written = moe::writeSyntheticModel(opts, output);
  progress.done();
  if (written)
    return fail(toString(std::move(written)));
  outs() << "moe-import: wrote a synthetic " << synthetic << " model ("
         << opts.numLayers << " layers, hidden " << opts.hidden << ", "
         << opts.numExperts << " experts, top-" << opts.topK << ", "
         << dtype << (shapesOnly ? ", shapes only" : "") << ") to " << output
         << "\n";
  return 0;
}

namespace {
/// One tensor that --random-weights writes.
struct RandomTensor {
  std::vector<int64_t> shape;
  moe::DType dtype;
  std::string firstUse; // "file:line" of the first moe.weight naming it.
};
} // namespace

/// Seeded random values for every moe.weight of `irPath`, written into -o
/// DIR as the files the IR names, and the IR copied there (its weight root
/// set to the copy's folder). Values are normal with standard deviation
/// 1/sqrt(last dimension) (0.02 for vectors), keyed by tensor name: the same
/// name and seed give the same values in any IR.
static int writeRandomWeights() {
  if (output.empty())
    return fail("--random-weights needs -o DIR");
  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect>();
  mlir::MLIRContext context(registry);
  llvm::SourceMgr sourceMgr;
  mlir::SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  auto buffer = moe::readIRFile(randomWeights);
  if (!buffer)
    return fail(toString(buffer.takeError()));
  sourceMgr.AddNewSourceBuffer(std::move(*buffer), SMLoc());
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr,
                                            mlir::ParserConfig(&context));
  if (!module)
    return fail("cannot parse " + randomWeights);

  // file -> name -> tensor, in a fixed order.
  std::map<std::string, std::map<std::string, RandomTensor>> files;
  bool bad = false;
  module->walk([&](mlir::moe::WeightOp op) {
    if (bad)
      return;
    auto type = cast<mlir::RankedTensorType>(op.getType());
    std::string where;
    if (auto loc = dyn_cast<mlir::FileLineColLoc>(op.getLoc()))
      where = (loc.getFilename().getValue() + ":" + Twine(loc.getLine())).str();
    else
      where = randomWeights;
    mlir::Type e = type.getElementType();
    moe::DType dtype = e.isF32()    ? moe::DType::F32
                       : e.isBF16() ? moe::DType::BF16
                                    : moe::DType::F16;
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    if (op.isStack())
      shape.erase(shape.begin());
    auto names = op.getNames().getAsValueRange<mlir::StringAttr>();
    auto fileNames = op.getFiles().getAsValueRange<mlir::StringAttr>();
    std::vector<std::string> fileList(fileNames.begin(), fileNames.end());
    for (auto [i, name] : llvm::enumerate(names)) {
      std::string file = fileList.size() == 1 ? fileList[0] : fileList[i];
      StringRef f(file);
      if (sys::path::is_absolute(f) || f.contains(".."))
        return (void)(bad = true,
                      fail(where + ": moe.weight file '" + file +
                           "': --random-weights writes the files into -o "
                           "DIR, so they must be relative paths inside it"));
      auto [it, inserted] = files[file].try_emplace(
          name.str(), RandomTensor{shape, dtype, where});
      if (!inserted && (it->second.shape != shape || it->second.dtype != dtype))
        return (void)(bad = true,
                      fail(where + ": tensor '" + name + "' of " + file +
                           " has another shape or dtype than at " +
                           it->second.firstUse +
                           "; one tensor cannot be both"));
    }
  });
  if (bad)
    return 1;
  if (files.empty())
    return fail(randomWeights + " has no moe.weight: nothing to write");

  bool exists = sys::fs::exists(output);
  if (exists && !sys::fs::is_directory(output))
    return fail(output + " exists and is not a folder");
  if (exists && !force) {
    std::error_code ec;
    if (sys::fs::directory_iterator(output, ec) !=
        sys::fs::directory_iterator())
      return fail("refusing to write into the non-empty folder " + output +
                  " (--force writes into it)");
  }
  moe::ToolProgress progress("moe-import", quiet);
  size_t tensors = 0;
  for (auto &[file, byName] : files) {
    SmallString<256> path(output);
    sys::path::append(path, file);
    if (std::error_code ec =
            sys::fs::create_directories(sys::path::parent_path(path)))
      return fail("cannot create the folder of " + path + ": " + ec.message());
    progress.step("writing " + file + " (" + Twine(byName.size()) +
                  " tensors)");
    moe::SafetensorsWriter writer;
    writer.setMetadata("format", "pt");
    writer.setMetadata("moe.random_weights_seed", std::to_string(seed));
    for (auto &[name, t] : byName) {
      int64_t n = 1;
      for (int64_t d : t.shape)
        n *= d;
      double stddev =
          t.shape.size() >= 2 ? 1.0 / std::sqrt(double(t.shape.back())) : 0.02;
      // Generated while the file is written: one tensor in memory at a
      // time, whatever the model's size.
      moe::DType type = t.dtype;
      std::string key = name;
      if (Error err = writer.addStreamedTensor(
              name, t.dtype, t.shape,
              [key, n, stddev, type](moe::SafetensorsWriter::Sink sink) {
                moe::SplitMix64 rng = moe::SplitMix64::forKey(seed, key);
                std::vector<float> values(n);
                for (float &v : values)
                  v = static_cast<float>(stddev * rng.normal());
                Expected<std::vector<uint8_t>> bytes =
                    moe::encodeFloats(values, type);
                if (!bytes)
                  return bytes.takeError();
                return sink(*bytes);
              }))
        return fail(path + ": " + name + ": " + toString(std::move(err)));
      ++tensors;
    }
    if (Error err = writer.write(path))
      return fail("cannot write " + path + ": " + toString(std::move(err)));
  }
  progress.done();

  // The copy of the IR reads the weights from its own folder.
  (*module)->setAttr("moe.weight_root", mlir::StringAttr::get(&context, "."));
  SmallString<256> irOut(output);
  sys::path::append(irOut, sys::path::filename(randomWeights));
  if (Error err = moe::writeFileAtomically(irOut, [&](raw_ostream &os) {
        (*module)->print(os);
        return Error::success();
      }))
    return fail("cannot write " + irOut + ": " + toString(std::move(err)));
  outs() << "moe-import: wrote " << tensors << " random tensors (seed " << seed
         << ") in " << files.size() << " file(s) and " << irOut << "\n";
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
  if (!synthetic.empty() && !randomWeights.empty())
    return fail("give --synthetic or --random-weights, not both");
  if (!synthetic.empty())
    return writeSynthetic();
  if (!randomWeights.empty()) {
    if (!modelDir.empty())
      return fail("--random-weights takes the IR file as its value; the "
                  "extra input '" +
                  modelDir + "' is not used");
    return writeRandomWeights();
  }
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
