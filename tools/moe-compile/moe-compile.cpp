//===- moe-compile.cpp - Ahead-of-time compilation into a package ---------===//
//
// Part of moe-opt.
//
//   moe-compile MODEL_DIR_OR_IR [--adapter DIR]... [--lora-router FILE]
//               [--arch sm_90a[,sm_80,...]] -o PKG_DIR [--force]
//               [--placement PLACEMENT.json [--ranks r,r,...]]
//
// Imports a Hugging Face folder (or reads IR), runs --moe-optimize, emits the
// kernels, compiles them with NVRTC for every named architecture (through
// the kernel cache), and writes a package (docs/package.md) atomically.
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"
#include "moe/dialects/MoE/MoEOps.h"
#include "moe/lib/Analysis/Placement.h"
#include "moe/lib/Import/HFImporter.h"
#include "moe/lib/Reference/Interpreter.h"
#include "moe/lib/Weights/InputFile.h"
#include "moe/passes/Passes.h"
#include "moe/runtime/AtomicDirectory.h"
#include "moe/runtime/Compiler.h"
#include "moe/runtime/KernelCache.h"
#include "moe/runtime/KernelHeaders.h"
#include "moe/runtime/Package.h"

#include "../ToolProgress.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cstdlib>
#include <optional>
#include <set>
#include <thread>

using namespace llvm;

static cl::OptionCategory category("moe-compile options");
static cl::opt<std::string> input(cl::Positional,
                                  cl::desc("<model dir or IR file>"),
                                  cl::cat(category));
static cl::opt<std::string> output("o", cl::desc("Package directory to write"),
                                   cl::value_desc("dir"), cl::cat(category));
static cl::opt<std::string>
    archs("arch",
          cl::desc("Comma-separated NVRTC targets, e.g. sm_90a,sm_80 "
                   "(default sm_90a), or none"),
          cl::init("sm_90a"), cl::cat(category));
static cl::opt<std::string> gemmPath(
    "gemm",
    cl::desc(moe::kGroupedGemmHelp),
    cl::init("pipelined"), cl::cat(category));
static cl::list<std::string>
    adapters("adapter", cl::desc("PEFT LoRA adapter folder (repeatable)"),
             cl::value_desc("dir"), cl::cat(category));
static cl::opt<std::string>
    loraRouter("lora-router", cl::desc("Router of a mixture of adapters"),
               cl::value_desc("file"), cl::cat(category));
static cl::opt<std::string> activationType(
    "activation-type",
    cl::desc("Activations of the compiled layers (a model folder's): model "
             "(default: the checkpoint's dtype, f32 for f32 weights), f32, "
             "bf16 or f16"),
    cl::init("model"), cl::cat(category));
static cl::opt<std::string> weightsMode(
    "weights",
    cl::desc("pack (default): copy every weight into weights.bin; none: a "
             "shape-only package without checkpoint weights, bound at run "
             "time (Model::bindTensor, moe_model_bind_tensor)"),
    cl::init("pack"), cl::cat(category));
static cl::opt<std::string> placementPath(
    "placement",
    cl::desc("Expert parallelism: a placement file (moe-opt "
             "--moe-plan-placement out=FILE, docs/layout.md); writes one "
             "package per rank, PKG_DIR/rank<r>, holding that rank's experts "
             "(replicas included), its router and PKG_DIR/placement.json"),
    cl::value_desc("file"), cl::cat(category));
static cl::opt<std::string> ranksList(
    "ranks",
    cl::desc("With --placement: the ranks to compile, comma-separated "
             "(default: every GPU of the placement)"),
    cl::value_desc("r,r,..."), cl::cat(category));
static cl::opt<bool> force("force", cl::desc("Replace an existing package"),
                           cl::init(false), cl::cat(category));
static cl::opt<bool> quiet("q", cl::desc("Print the summary only: no progress "
                                          "lines and no line per kernel"),
                           cl::init(false), cl::cat(category));

static int fail(const Twine &message) {
  errs() << "moe-compile: error: " << message << "\n";
  return 1;
}

namespace {
using Progress = moe::ToolProgress;

double seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                       since)
      .count();
}
} // namespace

/// Optimises `module`, generates and compiles its kernels, packs its
/// weights and writes the package `outDir`; prints the summary.
int compilePackage(mlir::ModuleOp module, const std::string &irPathForWeights,
                   const std::string &outDir, bool replace,
                   ArrayRef<StringRef> archList, Progress &progress,
                   std::chrono::steady_clock::time_point start) {
  progress.step("optimising (--moe-optimize)");
  mlir::PassManager pm(module->getContext(),
                        mlir::ModuleOp::getOperationName());
  pm.addPass(mlir::moe::createMoEOptimize());
  if (mlir::failed(pm.run(module)))
    return fail("--moe-optimize failed");

  progress.step("generating kernels");
  std::optional<moe::GroupedGemm> gemm = moe::parseGroupedGemm(gemmPath);
  if (!gemm)
    return fail("--gemm: expected " + std::string(moe::kGroupedGemmNames) +
                ", got '" + gemmPath + "'");
  moe::CudaEmitOptions emitOptions;
  emitOptions.gemm = *gemm;
  auto plan = moe::emitCudaModule(module, emitOptions);
  if (!plan)
    return fail(toString(plan.takeError()));

  for (const moe::LayerPlan &l : plan->layers) {
    std::string kernels;
    for (const moe::Launch &launch : l.launches)
      kernels += (kernels.empty() ? "" : ", ") + launch.kernel;
    progress.step("layer " + Twine(l.layer) +
                  (l.target.empty() ? "" : ":" + l.target) + ": " +
                  Twine(l.launches.size()) + " kernels (" + kernels + ")");
  }

  moe::runtime::PackageContents contents;
  contents.producer = "moe-compile";
  contents.plan = std::move(*plan);
  std::string ir;
  {
    raw_string_ostream os(ir);
    module.print(os);
  }
  contents.irText = ir;
  if (auto type = module->getAttrOfType<mlir::StringAttr>("moe.model_type"))
    contents.model.set("model_type", type.getValue().str());
  contents.model.set("source", input.getValue());
  contents.model.set("activation_type", activationType.getValue());

  // Every architecture compiles through the kernel cache, each on a thread
  // of its own (NVRTC compiles separate programs concurrently).
  if (!archList.empty())
    progress.step("compiling the kernels for " + archs + " (NVRTC, " +
                  Twine(archList.size()) + " in parallel, through the cache)");
  uint64_t nvrtcBefore = moe::runtime::nvrtcCompileCount();
  double nvrtcStart = progress.seconds();
  std::vector<std::optional<moe::runtime::Expected<moe::runtime::CompiledModule>>>
      results(archList.size());
  {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < archList.size(); ++i)
      threads.emplace_back([&, i] {
        moe::runtime::CompileRequest request;
        request.source = contents.plan.source;
        request.headers = moe::kernelHeaders();
        request.arch = archList[i].str();
        results[i].emplace(moe::runtime::compileCached(request));
        const auto &r = *results[i];
        progress.step("  " + archList[i] +
                      (!r                    ? ": failed"
                       : r.value().fromCache ? ": from the cache"
                                             : formatv(": compiled in {0:f1} s",
                                                       r.value().compileSeconds)
                                                   .str()));
      });
    for (std::thread &t : threads)
      t.join();
  }
  uint64_t nvrtcCalls = moe::runtime::nvrtcCompileCount() - nvrtcBefore;
  int cacheHits = 0;
  double nvrtcSeconds = 0;
  if (!archList.empty())
    progress.step("compiled the kernels for " + archs + " in " +
                  formatv("{0:f1}", progress.seconds() - nvrtcStart) +
                  " s (NVRTC calls: " + Twine(nvrtcCalls) + ")");
  for (size_t i = 0; i < archList.size(); ++i) {
    const moe::runtime::Expected<moe::runtime::CompiledModule> &compiled =
        *results[i];
    if (!compiled) {
      progress.done();
      return fail("compiling the kernels for " + archList[i] + ": " +
                  compiled.message());
    }
    for (const std::string &w : compiled.value().warnings)
      errs() << "moe-compile: warning: " << w << "\n";
    cacheHits += compiled.value().fromCache ? 1 : 0;
    if (!compiled.value().fromCache)
      nvrtcSeconds += compiled.value().compileSeconds;
    contents.cubins[archList[i].str()] = compiled.value().cubin;
    for (const auto &r : compiled.value().resources)
      if (r.isEntry)
        contents.resources.push_back(r);
  }

  moe::WeightLoader loader(moe::weightRoot(module, irPathForWeights));
  bool packWeights = weightsMode == "pack";
  // Weights are packed as the checkpoint stores them: bytes copied once,
  // never through f32, and streamed: each tensor is read while weights.bin
  // is written and dropped before the next, so that the memory needed is
  // that of the largest tensor, whatever the model's size.
  size_t packed = 0;
  moe::runtime::Status collected =
      !packWeights ? moe::runtime::collectWeightShapes(contents)
                   : moe::runtime::collectWeightStreams(
      contents, [&](const moe::WeightRef &ref)
                    -> moe::runtime::Expected<std::vector<uint8_t>> {
        progress.step("packing weights (" + Twine(++packed) + " of " +
                      Twine(contents.tensors.size()) + "): " +
                      (ref.names.empty() ? std::string("<constant>")
                                         : ref.names.front()));
        auto t = loader.loadBytes(ref.names, ref.files, ref.stacked,
                                  ref.shape, moe::elementTypeName(ref.type));
        if (!t)
          return moe::runtime::Status::error(toString(t.takeError()));
        return std::move(*t);
      });
  if (collected) {
    progress.done();
    return fail(collected.message());
  }
  progress.step("writing " + outDir);
  moe::runtime::WritePackageOptions writeOptions;
  writeOptions.replace = replace;
  if (moe::runtime::Status s =
          moe::runtime::writePackage(contents, outDir, writeOptions)) {
    progress.done();
    return fail(s.message());
  }
  progress.done();

  // Summary.
  // Distinct kernels, against the launch sites of all layers (what each
  // layer would compile if no kernel were shared).
  std::set<std::string> kernels;
  size_t launchSites = 0;
  int64_t experts = 0;
  for (const moe::LayerPlan &l : contents.plan.layers)
    for (const moe::Launch &launch : l.launches) {
      kernels.insert(launch.kernel);
      ++launchSites;
    }
  for (const moe::WeightRef &w : contents.plan.layers.empty()
                                     ? std::vector<moe::WeightRef>()
                                     : contents.plan.layers.front().weights)
    if ((w.stacked || w.shape.size() == 3) && !w.shape.empty())
      experts = std::max<int64_t>(experts, w.shape.front());
  uint64_t weightBytes = 0, externalBytes = 0, externalCount = 0;
  std::vector<const moe::WeightRef *> refOf(contents.tensors.size(), nullptr);
  for (size_t l = 0; l < contents.plan.layers.size(); ++l)
    for (size_t w = 0; w < contents.layerTensors[l].size(); ++w)
      if (!refOf[contents.layerTensors[l][w]])
        refOf[contents.layerTensors[l][w]] = &contents.plan.layers[l].weights[w];
  for (size_t t = 0; t < contents.tensors.size(); ++t) {
    int64_t count = 1;
    for (int64_t d : refOf[t]->shape)
      count *= d;
    uint64_t n = static_cast<uint64_t>(moe::storageBytes(refOf[t]->type, count));
    bool streamed = !contents.streamed.empty() && contents.streamed[t];
    weightBytes += streamed ? n : contents.tensors[t].size();
    if (contents.external.empty() || !contents.external[t])
      continue;
    externalBytes += n;
    ++externalCount;
  }
  outs() << "moe-compile: wrote " << outDir << "\n";
  outs() << "  layers: " << contents.plan.layers.size() << " (";
  for (size_t i = 0; i < contents.plan.layers.size(); ++i)
    outs() << (i ? ", " : "") << contents.plan.layers[i].layer
           << (contents.plan.layers[i].target.empty()
                   ? ""
                   : ":" + contents.plan.layers[i].target);
  outs() << "), experts per layer: " << experts << "\n";
  outs() << "  kernels: " << kernels.size() << " distinct for "
         << launchSites << " launch sites, architectures: " << archs
         << ", weights: " << format("%.1f", weightBytes / 1048576.0)
         << " MiB in " << contents.tensors.size() << " tensors";
  if (externalCount)
    outs() << " (shape-only: " << externalCount << " tensors, "
           << format("%.1f", externalBytes / 1048576.0)
           << " MiB, to bind at run time)";
  outs() << "\n";
  // -q keeps the summary: the per-kernel lines are left out.
  for (const auto &r : contents.resources) {
    if (quiet)
      break;
    outs() << format("  %-26s %-7s %3d registers, %lld/%lld bytes spilled "
                     "(stores/loads), %lld bytes static shared\n",
                     r.name.c_str(), r.arch.c_str(), r.registers,
                     static_cast<long long>(r.spillStoresBytes),
                     static_cast<long long>(r.spillLoadsBytes),
                     static_cast<long long>(r.sharedBytes));
  }
  moe::runtime::KernelCacheStats cacheStats =
      moe::runtime::compileCachedStats();
  outs() << format("  time: %.2f s in all, %.2f s of NVRTC work (summed over "
                   "architectures); NVRTC calls: "
                   "%llu; cache hits: %d of %zu architectures",
                   seconds(start), nvrtcSeconds,
                   static_cast<unsigned long long>(nvrtcCalls), cacheHits,
                   archList.size());
  if (cacheStats.corruptEntries)
    outs() << format(" (%llu unusable entries recompiled)",
                     static_cast<unsigned long long>(
                         cacheStats.corruptEntries));
  outs() << "\n";
  return 0;
}

/// The ranks of --ranks (or every GPU of the placement), checked.
Expected<std::vector<int64_t>> selectedRanks(int64_t gpus) {
  std::vector<int64_t> ranks;
  if (ranksList.empty()) {
    for (int64_t r = 0; r < gpus; ++r)
      ranks.push_back(r);
    return ranks;
  }
  SmallVector<StringRef> parts;
  StringRef(ranksList).split(parts, ',', -1, false);
  for (StringRef part : parts) {
    int64_t r = -1;
    if (part.trim().getAsInteger(10, r) || r < 0 || r >= gpus)
      return createStringError(
          inconvertibleErrorCode(),
          "--ranks: '" + part + "' is not a rank of the placement (0 to " +
              Twine(gpus - 1) + ")");
    if (llvm::is_contained(ranks, r))
      return createStringError(inconvertibleErrorCode(),
                               "--ranks names rank " + Twine(r) + " twice");
    ranks.push_back(r);
  }
  if (ranks.empty())
    return createStringError(inconvertibleErrorCode(),
                             "--ranks names no rank");
  return ranks;
}

/// --placement: one package per rank, PKG/rank<r>, each the rank's share
/// (--moe-apply-placement, --moe-shard-experts routing=given: a router-only
/// plan and the rank's experts on given routing), plus PKG/placement.json.
/// The set is written in a temporary sibling and renamed into place.
int compileRanks(mlir::ModuleOp module, const std::string &irPathForWeights,
                 ArrayRef<StringRef> archList, Progress &progress,
                 std::chrono::steady_clock::time_point start) {
  if (weightsMode != "pack")
    return fail("--placement needs the checkpoint's weights (each rank's "
                "experts are cut from them); it cannot be combined with "
                "--weights none");
  int64_t gpus = 0;
  auto placements = moe::readPlacementFile(placementPath, &gpus);
  if (!placements)
    return fail("--placement: " + toString(placements.takeError()));
  auto ranks = selectedRanks(gpus);
  if (!ranks)
    return fail(toString(ranks.takeError()));
  // The shard pass cuts the weights from the checkpoint the module names:
  // an imported module stands for MODEL_DIR/model.mlir.
  if (!isa<mlir::FileLineColLoc>(module.getLoc()))
    module->setLoc(
        mlir::FileLineColLoc::get(module->getContext(), irPathForWeights, 0, 0));

  SmallString<256> parent(output.getValue());
  sys::fs::make_absolute(parent);
  std::string temp = (parent + ".tmp-XXXXXX").str();
  if (!::mkdtemp(temp.data()))
    return fail("cannot create a temporary directory beside '" + output +
                "': " + moe::runtime::detail::errnoText(errno));
  auto abandon = [&](int rc) {
    moe::runtime::detail::removeTree(temp);
    return rc;
  };
  for (int64_t rank : *ranks) {
    progress.step("rank " + Twine(rank) + " of " + Twine(gpus) +
                  ": sharding the experts");
    mlir::OwningOpRef<mlir::ModuleOp> share(module.clone());
    std::string weights =
        moe::runtime::detail::joinPath(temp, "rank" + std::to_string(rank) +
                                                 ".safetensors");
    mlir::PassManager pm(module->getContext(),
                         mlir::ModuleOp::getOperationName());
    // Passes of the module itself (pm is anchored on it: a
    // "builtin.module(...)" wrapper would nest them onto inner modules).
    std::string pipeline =
        "moe-apply-placement{placement=\"" + placementPath.getValue() +
        "\"},moe-shard-experts{rank=" + std::to_string(rank) +
        " routing=given weights-out=\"" + weights + "\"}";
    if (mlir::failed(mlir::parsePassPipeline(pipeline, pm, errs())))
      return abandon(fail("cannot build the pipeline " + pipeline));
    if (mlir::failed(pm.run(*share)))
      return abandon(fail("--placement: rank " + Twine(rank) +
                          ": placing and sharding the layers failed (see "
                          "above)"));
    std::string dir =
        moe::runtime::detail::joinPath(temp, "rank" + std::to_string(rank));
    if (int rc = compilePackage(*share, irPathForWeights, dir, false, archList,
                                progress, start))
      return abandon(rc);
    // Packed into the rank's package.
    sys::fs::remove(weights);
  }
  if (moe::runtime::Status s = moe::runtime::detail::writeFile(
          moe::runtime::detail::joinPath(temp, "placement.json"),
          moe::placementToJson(*placements, gpus)))
    return abandon(fail(s.message()));
  if (moe::runtime::Status s = moe::runtime::detail::commit(temp, output, force))
    return abandon(fail(s.message()));
  progress.done();
  outs() << "moe-compile: wrote " << output << ": " << ranks->size()
         << " rank package(s) of " << gpus << " and placement.json\n";
  return 0;
}

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  // --placement builds its pipeline from pass names.
  mlir::moe::registerMoEPasses();
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "moe-compile: compiles a model ahead of time into a package\n");
  if (input.empty())
    return fail("no model folder or IR file given");
  if (output.empty())
    return fail("no output given: -o PKG_DIR");
  if (weightsMode != "pack" && weightsMode != "none")
    return fail("--weights is '" + weightsMode + "'; expected pack or none");
  if (!ranksList.empty() && placementPath.empty())
    return fail("--ranks selects ranks of a --placement; give --placement "
                "FILE");
  // --arch none: no cubin; the package's kernels.cu is compiled where it
  // runs (through the cache) or runs on the CPU emulation.
  SmallVector<StringRef> archList;
  if (archs != "none")
    StringRef(archs).split(archList, ',', -1, false);
  if (archList.empty() && archs != "none")
    return fail("--arch names no architecture (use --arch none for a "
                "package without cubins)");
  for (StringRef a : archList)
    if (moe::runtime::Status s = moe::runtime::validateArch(a.str()))
      return fail("--arch " + a + ": " + s.message());
  if (std::optional<moe::GroupedGemm> gemm = moe::parseGroupedGemm(gemmPath))
    if (const char *need = moe::groupedGemmArch(*gemm))
      for (StringRef a : archList)
        if (a != need)
          return fail("--gemm=" + gemmPath + " needs --arch " + need +
                      " only (its kernels use instructions that only " +
                      need + " has); got --arch " + a);

  // An existing destination is refused before any work, in the tool's own
  // words (its flag, not the library's option).
  if (!force && sys::fs::exists(output))
    return fail("'" + output + "' already exists; pass --force to replace "
                "it (it was left untouched)");

  auto start = std::chrono::steady_clock::now();
  Progress progress("moe-compile", quiet);
  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect>();
  mlir::MLIRContext context(registry);
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::string irPathForWeights = input;
  if (sys::fs::is_directory(input)) {
    progress.step("importing " + input);
    moe::ImportOptions options;
    options.modelDir = input;
    options.adapterDirs.assign(adapters.begin(), adapters.end());
    options.loraRouter = loraRouter;
    options.activationType = activationType;
    auto imported = moe::importHuggingFaceModel(context, options);
    if (!imported)
      return fail(toString(imported.takeError()));
    module = std::move(*imported);
    irPathForWeights = (Twine(input) + "/model.mlir").str();
  } else {
    if (!adapters.empty() || !loraRouter.empty())
      return fail("--adapter and --lora-router need a model folder, not IR");
    llvm::SourceMgr sourceMgr;
    mlir::SourceMgrDiagnosticHandler handler(sourceMgr, &context);
    auto buffer = moe::readIRFile(input);
    if (!buffer)
      return fail(toString(buffer.takeError()));
    sourceMgr.AddNewSourceBuffer(std::move(*buffer), SMLoc());
    module = mlir::parseSourceFile<mlir::ModuleOp>(
        sourceMgr, mlir::ParserConfig(&context));
    if (!module)
      return fail("cannot parse " + input);
  }

  if (!placementPath.empty())
    return compileRanks(*module, irPathForWeights, archList, progress, start);
  return compilePackage(*module, irPathForWeights, output, force, archList,
                        progress, start);
}
