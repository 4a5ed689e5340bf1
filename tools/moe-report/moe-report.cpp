//===- moe-report.cpp - Reports on what a rewrite did to a model ----------===//
//
// Part of moe-opt.
//
//   moe-report compare ORIGINAL.mlir REWRITTEN.mlir --input HELDOUT.npy
//              [--layer L | --all-layers] [--format text|json]
//
// Runs both models with the reference interpreter and prints, per MoE
// layer, the experts, parameters and bytes before and after, the relative
// error of the layer's output (each layer on the same input) and the
// agreement of the expert sets; with --all-layers also the error at the end
// of the whole chain. Subcommands leave room for more reports.
//
//===----------------------------------------------------------------------===//

#include "Compare.h"

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/lib/Reference/Chain.h"
#include "moe/lib/Reference/Interpreter.h"
#include "moe/lib/Weights/InputFile.h"
#include "moe/lib/Weights/Npy.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "RoutingReport.h"
#include "StatsReport.h"
#include "llvm/ADT/StringExtras.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <map>
#include <optional>

using namespace llvm;
namespace report = moe::report;

static cl::SubCommand compareCommand(
    "compare",
    "Compare an original and a rewritten model on held-out input.\n\n"
    "Runs both with the reference interpreter and prints, per MoE layer:\n"
    "  experts before/after    routed experts (moe.dispatch num_experts)\n"
    "  params, bytes           of the layer's moe.weight tensors, each\n"
    "                          distinct weight counted once\n"
    "  rel. error              ||y' - y|| / ||y|| of the layer's output,\n"
    "                          both layers run on the same input\n"
    "  agreement               mean over tokens of |S n S'| / |S|: S the\n"
    "                          original router's experts taken to the\n"
    "                          rewritten ids (moe.expert_origin: a dropped\n"
    "                          expert is a miss; moe.remap_experts mapping:\n"
    "                          slots of one merged expert count once), S' the\n"
    "                          rewritten model's experts\n"
    "and a total row: sums, and with --all-layers an end-to-end error and\n"
    "agreement (each model's layers run in order, each on its own previous\n"
    "output).");

static cl::opt<std::string> originalPath(cl::Positional, cl::Required,
                                         cl::desc("<original IR>"),
                                         cl::sub(compareCommand));
static cl::opt<std::string> rewrittenPath(cl::Positional, cl::Required,
                                          cl::desc("<rewritten IR>"),
                                          cl::sub(compareCommand));
static cl::opt<std::string>
    inputPath("input", cl::desc("Held-out input .npy, float [T, H]"),
              cl::value_desc("file"), cl::sub(compareCommand));
static cl::opt<int64_t> layerIndex("layer",
                                   cl::desc("Compare this model layer only"),
                                   cl::init(-1), cl::sub(compareCommand));
static cl::opt<bool> allLayers(
    "all-layers",
    cl::desc("Compare every MoE layer, each on the input, and also run the "
             "whole chain for the end-to-end error"),
    cl::init(false), cl::sub(compareCommand));
static cl::opt<std::string> chainName(
    "chain",
    cl::desc("How --all-layers chains each model's layers end to end, as "
             "moe-run --all-layers: prenorm (default; x + layer(rmsnorm(x))), "
             "residual (x + layer(x)) or none (layer(x))"),
    cl::init("prenorm"), cl::sub(compareCommand));
static cl::opt<std::string>
    outputFormat("format", cl::desc("Output format: text or json"),
                 cl::init("text"), cl::sub(compareCommand));

static int fail(const Twine &message) {
  errs() << "moe-report: error: " << message << "\n";
  return 1;
}

namespace {

/// One model: its module, its weights and its MoE layers by index.
struct Model {
  std::string path;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::unique_ptr<moe::WeightLoader> weights;
  std::map<int64_t, mlir::func::FuncOp> layers;
};

/// One row of the table.
struct Row {
  int64_t layer = -1;
  std::optional<int64_t> expertsBefore, expertsAfter;
  report::WeightTotals before, after;
  double error = 0.0;
  report::Agreement agreement;
};

} // namespace

static Expected<Model> loadModel(mlir::MLIRContext &context,
                                 const std::string &path) {
  Model model;
  model.path = path;
  auto buffer = moe::readIRFile(path);
  if (!buffer)
    return buffer.takeError();
  // Parse errors quote the file's line.
  llvm::SourceMgr sourceMgr;
  mlir::SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  sourceMgr.AddNewSourceBuffer(std::move(*buffer), SMLoc());
  model.module = mlir::parseSourceFile<mlir::ModuleOp>(
      sourceMgr, mlir::ParserConfig(&context));
  if (!model.module)
    return createStringError("cannot parse " + path);
  model.weights =
      std::make_unique<moe::WeightLoader>(moe::weightRoot(*model.module, path));
  for (auto fn : model.module->getOps<mlir::func::FuncOp>()) {
    auto l = fn->getAttrOfType<mlir::IntegerAttr>(mlir::moe::kLayerAttrName);
    // LoRA-wrapped projections are not MoE blocks: moe-run --target runs them.
    if (!l || fn->hasAttr("moe.lora_target"))
      continue;
    if (!model.layers.try_emplace(l.getInt(), fn).second)
      return createStringError(path + ": two functions are MoE layer " +
                               Twine(l.getInt()));
  }
  if (model.layers.empty())
    return createStringError(path + " has no MoE layer (no function with '" +
                             mlir::moe::kLayerAttrName + "')");
  return model;
}

static std::string layerList(const Model &m) {
  std::string s;
  for (const auto &[l, fn] : m.layers)
    s += (s.empty() ? "" : ", ") + std::to_string(l);
  return s;
}

/// Checks that `fn` takes [?, H] with H the input's width.
static Error checkWidth(const Model &m, int64_t layer, mlir::func::FuncOp fn,
                        const moe::HostTensor &x) {
  auto type = fn.getFunctionType();
  auto arg = type.getNumInputs() == 1
                 ? dyn_cast<mlir::RankedTensorType>(type.getInput(0))
                 : nullptr;
  if (!arg || arg.getRank() != 2 || type.getNumResults() != 1)
    return createStringError(m.path + ": layer " + Twine(layer) +
                             " is not a function of one [T, H] tensor");
  if (!arg.isDynamicDim(1) && arg.getDimSize(1) != x.shape[1])
    return createStringError(inputPath + ": the input is " + Twine(x.shape[1]) +
                             " wide but layer " + Twine(layer) + " of " +
                             m.path + " takes " + Twine(arg.getDimSize(1)));
  return Error::success();
}

static Expected<moe::HostTensor> runLayer(Model &m, int64_t layer,
                                          const moe::HostTensor &x,
                                          moe::RoutingTrace *trace) {
  auto y = moe::interpret(m.layers.at(layer), x, *m.weights, trace);
  if (!y)
    return createStringError(m.path + ": layer " + Twine(layer) + ": " +
                             toString(y.takeError()));
  return y;
}

static std::string formatError(double e) {
  if (std::isnan(e))
    return "nan";
  if (std::isinf(e))
    return "inf";
  std::string s;
  raw_string_ostream(s) << format("%.3e", e);
  return s;
}

static std::string formatCount(std::optional<int64_t> v) {
  return v ? std::to_string(*v) : "-";
}

static std::string formatSaved(int64_t before, int64_t after) {
  if (before == 0)
    return "-";
  std::string s;
  raw_string_ostream(s) << format("%.1f%%",
                                  100.0 * static_cast<double>(before - after) /
                                      static_cast<double>(before));
  return s;
}

static void printText(const std::vector<Row> &rows, const Row &total,
                      bool endToEnd, int64_t tokens) {
  outs() << "moe-report compare: " << originalPath << " -> " << rewrittenPath
         << " on " << inputPath << " (" << tokens << " tokens)\n";
  auto line = [](StringRef layer, StringRef eb, StringRef ea, StringRef pb,
                 StringRef pa, StringRef bb, StringRef ba, StringRef saved,
                 StringRef error, StringRef agreement) {
    outs() << format("%-6s %7s %7s %13s %13s %13s %13s %7s %10s %9s\n",
                     layer.str().c_str(), eb.str().c_str(), ea.str().c_str(),
                     pb.str().c_str(), pa.str().c_str(), bb.str().c_str(),
                     ba.str().c_str(), saved.str().c_str(), error.str().c_str(),
                     agreement.str().c_str());
  };
  line("layer", "experts", "experts", "params", "params", "bytes", "bytes",
       "bytes", "rel.", "expert");
  line("", "before", "after", "before", "after", "before", "after", "saved",
       "error", "agreement");
  auto agreementText = [](const report::Agreement &a) -> std::string {
    std::optional<double> m = a.mean();
    if (!m)
      return "-";
    std::string s;
    raw_string_ostream(s) << format("%.4f", *m);
    return s;
  };
  auto print = [&](const Row &r, StringRef name, double error) {
    line(name, formatCount(r.expertsBefore), formatCount(r.expertsAfter),
         std::to_string(r.before.params), std::to_string(r.after.params),
         std::to_string(r.before.bytes), std::to_string(r.after.bytes),
         formatSaved(r.before.bytes, r.after.bytes), formatError(error),
         agreementText(r.agreement));
  };
  for (const Row &r : rows)
    print(r, std::to_string(r.layer), r.error);
  print(total, "total", total.error);
  if (endToEnd)
    outs() << "(the total's rel. error and agreement are end to end: each "
              "model's layers run in order on the input, on the residual "
              "stream as moe-run --all-layers)\n";
}

static void printJson(const std::vector<Row> &rows, const Row &total,
                      bool endToEnd, int64_t tokens) {
  json::OStream j(outs(), 2);
  auto number = [&](StringRef key, double v) {
    // JSON has no inf or nan.
    if (std::isfinite(v))
      j.attribute(key, v);
    else
      j.attribute(key, nullptr);
  };
  auto fields = [&](const Row &r) {
    auto optional = [&](StringRef key, std::optional<int64_t> v) {
      if (v)
        j.attribute(key, *v);
      else
        j.attribute(key, nullptr);
    };
    optional("experts_before", r.expertsBefore);
    optional("experts_after", r.expertsAfter);
    j.attribute("params_before", r.before.params);
    j.attribute("params_after", r.after.params);
    j.attribute("bytes_before", r.before.bytes);
    j.attribute("bytes_after", r.after.bytes);
    if (std::optional<double> m = r.agreement.mean())
      j.attribute("agreement", *m);
    else
      j.attribute("agreement", nullptr);
    j.attribute("agreement_tokens", r.agreement.tokens);
  };
  j.object([&] {
    j.attribute("original", originalPath);
    j.attribute("rewritten", rewrittenPath);
    j.attribute("input", inputPath);
    j.attribute("tokens", tokens);
    j.attributeArray("layers", [&] {
      for (const Row &r : rows)
        j.object([&] {
          j.attribute("layer", r.layer);
          fields(r);
          number("relative_error", r.error);
        });
    });
    j.attributeObject("total", [&] {
      // Error and agreement: the chain's with --all-layers, the one
      // layer's with --layer.
      fields(total);
      number("relative_error", total.error);
      j.attribute("end_to_end", endToEnd);
    });
  });
  outs() << "\n";
}

static int compare() {
  if (inputPath.empty())
    return fail("--input HELDOUT.npy is required");
  if (layerIndex >= 0 && allLayers)
    return fail("give --layer or --all-layers, not both");
  if (layerIndex < -1)
    return fail("--layer must be a layer index (at least 0)");
  if (layerIndex < 0 && !allLayers)
    return fail("--layer L (the model's layer index) or --all-layers is "
                "required");
  std::optional<moe::ChainMode> chainMode = moe::parseChainMode(chainName);
  if (!chainMode)
    return fail("unknown --chain '" + chainName +
                "'; available: prenorm, residual, none");
  if (outputFormat != "text" && outputFormat != "json")
    return fail("unknown --format '" + outputFormat +
                "'; available: text, json");

  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect>();
  mlir::MLIRContext context(registry);

  auto original = loadModel(context, originalPath);
  if (!original)
    return fail(toString(original.takeError()));
  auto rewritten = loadModel(context, rewrittenPath);
  if (!rewritten)
    return fail(toString(rewritten.takeError()));

  // The layers to compare.
  std::vector<int64_t> layers;
  if (layerIndex >= 0) {
    for (const Model *m : {&*original, &*rewritten})
      if (!m->layers.count(layerIndex))
        return fail("layer " + Twine(layerIndex) + " is not an MoE layer of " +
                    m->path + "; MoE layers: " + layerList(*m));
    layers.push_back(layerIndex);
  } else {
    std::string a = layerList(*original), b = layerList(*rewritten);
    if (a != b)
      return fail("the models have different MoE layers: " + originalPath +
                  " has " + a + ", " + rewrittenPath + " has " + b);
    for (const auto &[l, fn] : original->layers)
      layers.push_back(l);
  }

  // The held-out input.
  auto array = moe::readNpy(inputPath);
  if (!array)
    return fail(toString(array.takeError()));
  if (array->shape.size() != 2)
    return fail(inputPath + ": expected a 2-D array [T, H], got rank " +
                Twine(array->shape.size()));
  if (array->dtype == moe::NpyDType::I32 || array->dtype == moe::NpyDType::I64)
    return fail(inputPath + ": expected float data, got integers");
  if (array->shape[0] < 1)
    return fail(inputPath + ": the input has no tokens");
  moe::HostTensor x;
  x.shape = array->shape;
  x.f = array->toF32();

  std::vector<Row> rows;
  Row total;
  std::map<int64_t, std::pair<report::ExpertMap, report::ExpertMap>> maps;
  // A layer without routers (a LoRA mixture without routing) has no
  // expert sets to agree on.
  auto agree = [&](int64_t l, const moe::RoutingTrace &traceA,
                   const moe::RoutingTrace &traceB,
                   report::Agreement &out) -> Error {
    if (traceA.routers.empty() && traceB.routers.empty())
      return Error::success();
    auto agreement =
        report::expertAgreement(traceA, maps[l].first, traceB, maps[l].second);
    if (!agreement)
      return createStringError("layer " + Twine(l) + ": " +
                               toString(agreement.takeError()));
    out = *agreement;
    return Error::success();
  };
  for (int64_t l : layers) {
    mlir::func::FuncOp a = original->layers.at(l), b = rewritten->layers.at(l);
    if (Error e = checkWidth(*original, l, a, x))
      return fail(toString(std::move(e)));
    if (Error e = checkWidth(*rewritten, l, b, x))
      return fail(toString(std::move(e)));
    Row row;
    row.layer = l;
    row.expertsBefore = report::routedExperts(a);
    row.expertsAfter = report::routedExperts(b);
    row.before = report::weightTotals(a);
    row.after = report::weightTotals(b);
    auto mapA = report::readExpertMap(a);
    if (!mapA)
      return fail(originalPath + ": " + toString(mapA.takeError()));
    auto mapB = report::readExpertMap(b);
    if (!mapB)
      return fail(rewrittenPath + ": " + toString(mapB.takeError()));
    maps[l] = {*mapA, *mapB};
    moe::RoutingTrace traceA, traceB;
    auto ya = runLayer(*original, l, x, &traceA);
    if (!ya)
      return fail(toString(ya.takeError()));
    auto yb = runLayer(*rewritten, l, x, &traceB);
    if (!yb)
      return fail(toString(yb.takeError()));
    auto error = report::relativeError(*ya, *yb);
    if (!error)
      return fail("layer " + Twine(l) + ": " + toString(error.takeError()));
    row.error = *error;
    if (Error e = agree(l, traceA, traceB, row.agreement))
      return fail(toString(std::move(e)));
    // Totals: sums, and the agreement over every (layer, token) pair.
    auto add = [](std::optional<int64_t> &sum, std::optional<int64_t> v) {
      if (v)
        sum = sum.value_or(0) + *v;
    };
    add(total.expertsBefore, row.expertsBefore);
    add(total.expertsAfter, row.expertsAfter);
    total.before.params += row.before.params;
    total.before.bytes += row.before.bytes;
    total.after.params += row.after.params;
    total.after.bytes += row.after.bytes;
    total.agreement.sum += row.agreement.sum;
    total.agreement.tokens += row.agreement.tokens;
    rows.push_back(row);
  }
  // One layer (--layer): the total's error is that layer's; with
  // --all-layers error and agreement are the chain's, below.
  total.error = rows.front().error;

  // End to end: each model's layers in order, each on its own previous
  // output; the agreement of every layer's expert sets on those inputs.
  if (allLayers) {
    moe::HostTensor ya = x, yb = x;
    total.agreement = report::Agreement();
    for (int64_t l : layers) {
      moe::RoutingTrace traceA, traceB;
      auto na =
          runLayer(*original, l, moe::chainInput(*chainMode, ya), &traceA);
      if (!na)
        return fail(toString(na.takeError()));
      auto nb =
          runLayer(*rewritten, l, moe::chainInput(*chainMode, yb), &traceB);
      if (!nb)
        return fail(toString(nb.takeError()));
      report::Agreement agreement;
      if (Error e = agree(l, traceA, traceB, agreement))
        return fail("end to end: " + toString(std::move(e)));
      total.agreement.sum += agreement.sum;
      total.agreement.tokens += agreement.tokens;
      auto nextA = moe::chainNext(*chainMode, ya, std::move(*na));
      if (!nextA)
        return fail(original->path + ": layer " + Twine(l) + ": " +
                    toString(nextA.takeError()));
      auto nextB = moe::chainNext(*chainMode, yb, std::move(*nb));
      if (!nextB)
        return fail(rewritten->path + ": layer " + Twine(l) + ": " +
                    toString(nextB.takeError()));
      ya = std::move(*nextA);
      yb = std::move(*nextB);
    }
    auto error = report::relativeError(ya, yb);
    if (!error)
      return fail("end to end: " + toString(error.takeError()));
    total.error = *error;
  }

  if (outputFormat == "json")
    printJson(rows, total, allLayers, x.shape[0]);
  else
    printText(rows, total, allLayers, x.shape[0]);
  return 0;
}

static cl::SubCommand statsCommand(
    "stats",
    "Draw the expert load of moe-run --stats FILE.json as an SVG: a heat map "
    "of tokens per expert (a row per layer and router, a column per expert) "
    "and a bar chart of each row's imbalance (max/mean tokens per expert; "
    "docs/stats.md)");
static cl::opt<std::string> statsInput(cl::Positional, cl::Required,
                                       cl::desc("<moe-run --stats file>"),
                                       cl::sub(statsCommand));
static cl::opt<std::string> statsOutput("o", cl::Required,
                                        cl::desc("Output SVG file"),
                                        cl::value_desc("FILE.svg"),
                                        cl::sub(statsCommand));

static int stats() {
  auto rows = report::readStats(statsInput);
  if (!rows)
    return fail(toString(rows.takeError()));
  std::error_code ec;
  raw_fd_ostream os(statsOutput, ec);
  if (ec)
    return fail("cannot write " + statsOutput + ": " + ec.message());
  os << report::statsSvg(*rows, "moe-report stats " + statsInput);
  outs() << "moe-report stats: " << rows->size()
         << " layer/router row(s) drawn to " << statsOutput << "\n";
  return 0;
}

static cl::SubCommand routingCommand(
    "routing",
    "Draw routing decisions as an SVG: per layer and router, the "
    "co-activation matrix (tokens that chose both expert i and expert j; "
    "the diagonal: tokens per expert) and a histogram of the routing "
    "weights of the routed slots, from moe-run --routing-out PREFIX files "
    "or the coactivation counts of a moe-run --record-profile file "
    "(docs/stats.md)");
static cl::opt<std::string> routingPrefix(
    "routing",
    cl::desc("The PREFIX given to moe-run --routing-out: PREFIX.ids.npy and "
             "PREFIX.weights.npy (routers >= 1: PREFIX.r<N>.*), or with "
             "--all-layers PREFIX.L<layer>.*"),
    cl::value_desc("prefix"), cl::sub(routingCommand));
static cl::opt<std::string> routingProfile(
    "profile",
    cl::desc("A moe-run --record-profile file: its coactivation tensors (no "
             "weight histograms: a profile keeps counts only)"),
    cl::value_desc("file"), cl::sub(routingCommand));
static cl::opt<int64_t> routingExperts(
    "experts",
    cl::desc("Experts per layer (default: one more than the largest id)"),
    cl::init(0), cl::sub(routingCommand));
static cl::opt<int64_t>
    routingLayer("layer",
                 cl::desc("The layer of PREFIX.ids.npy (moe-run --layer L "
                          "writes no layer into the name; default 0)"),
                 cl::init(0), cl::sub(routingCommand));
static cl::opt<int64_t>
    routingBins("bins", cl::desc("Bins of the weight histograms (default 20)"),
                cl::init(20), cl::sub(routingCommand));
static cl::opt<std::string> routingOutput("o", cl::Required,
                                          cl::desc("Output SVG file"),
                                          cl::value_desc("FILE.svg"),
                                          cl::sub(routingCommand));

static int routing() {
  if (routingPrefix.empty() == routingProfile.empty())
    return fail("moe-report routing: give --routing PREFIX or --profile "
                "FILE (one of them)");
  auto rows = !routingProfile.empty()
                  ? report::readProfileRows(routingProfile)
                  : report::readRoutingFiles(routingPrefix, routingExperts,
                                             routingLayer, routingBins);
  if (!rows)
    return fail(toString(rows.takeError()));
  std::error_code ec;
  raw_fd_ostream os(routingOutput, ec);
  if (ec)
    return fail("cannot write " + routingOutput + ": " + ec.message());
  os << report::routingSvg(*rows, "moe-report routing " +
                                      (routingProfile.empty()
                                           ? routingPrefix.getValue()
                                           : routingProfile.getValue()));
  outs() << "moe-report routing: " << rows->size()
         << " layer/router row(s) drawn to " << routingOutput << "\n";
  return 0;
}

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  cl::ParseCommandLineOptions(
      argc, argv,
      "moe-report: reports what a rewrite (pruning, merging, compressing "
      "experts) did to a model\n\n"
      "  moe-report compare ORIGINAL.mlir REWRITTEN.mlir --input "
      "HELDOUT.npy\n"
      "             [--layer L | --all-layers] [--format text|json]\n\n"
      "  moe-report stats STATS.json -o LOAD.svg   (moe-run --stats)\n\n"
      "  moe-report routing (--routing PREFIX | --profile P.safetensors) "
      "-o ROUTING.svg\n\n"
      "'moe-report compare --help' documents the table.\n");
  if (compareCommand)
    return compare();
  if (statsCommand)
    return stats();
  if (routingCommand)
    return routing();
  return fail("give a subcommand: compare, stats or routing (see moe-report "
              "--help)");
}
