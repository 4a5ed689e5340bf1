//===- CudaEmitter.cpp - CUDA C++ from fused moe IR -----------------------===//
//
// Part of moe-opt. One kernel per fused op: moe.fused_route becomes a routing
// kernel composed of the row templates of moe_route.cuh (one call per op of
// its body), moe.fused_experts an instantiation of moe_experts.cuh, and
// moe.lora_mixture of moe_lora.cuh. Each kernel carries a comment naming
// the op it came from (no location: the text depends on the IR only).
//
// A kernel's text is written between beginKernel(prefix), which returns a
// placeholder for its name, and endKernel(), which names it from a hash of
// the text: a kernel of the same configuration in another layer is the same
// kernel, emitted once. Arguments are bound by the slot names of
// moe/runtime/KernelABI.h (SlotArgs).
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"
#include "moe/dialects/MoE/FusedExperts.h"
#include "moe/dialects/MoE/MoEOps.h"
#include "moe/dialects/MoE/Routing.h"
#include "moe/runtime/KernelABI.h"
#include "moe/runtime/KernelContract.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"

#include <array>
#include <numeric>
#include <type_traits>

using namespace mlir;
using namespace mlir::moe;
using llvm::Error;
using llvm::Expected;

namespace {

Error makeError(Operation *op, const llvm::Twine &message) {
  std::string loc;
  llvm::raw_string_ostream os(loc);
  os << op->getLoc();
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 loc + ": '" + op->getName().getStringRef() +
                                     "': " + message);
}

std::string locString(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << op->getLoc();
  return s;
}

FailureOr<::moe::ElementType> elementType(Type t) {
  if (auto shaped = dyn_cast<ShapedType>(t))
    t = shaped.getElementType();
  if (t.isF32())
    return ::moe::ElementType::F32;
  if (t.isBF16())
    return ::moe::ElementType::BF16;
  if (t.isF16())
    return ::moe::ElementType::F16;
  if (t.isInteger(32))
    return ::moe::ElementType::I32;
  // Quantized codes of block-scaled weights (moe_quant.cuh reads them).
  if (isa<Float8E4M3FNType>(t))
    return ::moe::ElementType::F8E4M3FN;
  if (isa<Float4E2M1FNType>(t))
    return ::moe::ElementType::F4E2M1FN;
  if (isa<Float8E8M0FNUType>(t))
    return ::moe::ElementType::F8E8M0FNU;
  return failure();
}

const char *cxxType(::moe::ElementType t) {
  switch (t) {
  case ::moe::ElementType::BF16:
    return "__nv_bfloat16";
  case ::moe::ElementType::F16:
    return "__half";
  case ::moe::ElementType::I32:
    return "int";
  case ::moe::ElementType::U32:
    return "unsigned";
  default:
    return "float";
  }
}

std::string cxxType(Type t) {
  FailureOr<::moe::ElementType> e = elementType(t);
  return failed(e) ? "float" : cxxType(*e);
}

/// A float literal that round-trips exactly.
std::string floatLiteral(float v) {
  if (std::isinf(v))
    return v > 0 ? "__int_as_float(0x7f800000)" : "(-__int_as_float(0x7f800000))";
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::format("%.9g", static_cast<double>(v));
  if (s.find_first_of(".eE") == std::string::npos)
    s += ".0";
  return s + "f";
}

int64_t dim(Value v, unsigned i) {
  return cast<RankedTensorType>(v.getType()).getDimSize(i);
}

/// The grouped expert kernels' tile (moe_grouped.cuh; the generated source
/// asserts that they agree): rows and columns of output per block, threads.
constexpr int64_t kTileRows = 64, kTileCols = 64, kTileThreads = 128;
/// The reduction step of a grouped tile (moe_k::grouped::BK): the TMA
/// path's weight boxes are kTileCols x kTileDepth.
constexpr int64_t kTileDepth = 32;
/// Outputs per block of the combine (moe_k::grouped::CombineCols).
constexpr int64_t kCombineCols = 256;

/// The decode expert kernels' block size (moe_k::experts::DecodeThreads)
/// and the number of work items they aim at for one token: a few per SM of
/// a large GPU (132 on an H200), so that T = 1 streams weights on all SMs.
constexpr int64_t kDecodeThreads = 128, kDecodeBlocks = 512;
/// Blocks per SM the decode kernels' registers must allow (up to 128
/// registers a thread): enough warps in flight to cover memory latency,
/// and room for the unrolled loads (ptxas caps a plain
/// __launch_bounds__(128) kernel at 64 registers and spills).
constexpr int64_t kDecodeMinBlocks = 4;
/// decode_down's: 6 blocks of 128 threads cap it at 80 registers a thread
/// (65536 / 768), enough for its 4 loads in flight per lane
/// (moe_k::experts::DecodeDownLoads) without spills at the five shapes of
/// docs/codegen.md once its batches hold 2 rows of h rather than 4
/// (DecodeDownRows: 4 rows of 4 words of h each kept ptxas at 93-96
/// registers, and spilled at 80).
constexpr int64_t kDecodeDownMinBlocks = 6;

/// Units (hidden units or outputs) per decode work item for `units` units
/// at T = 1: the largest power of two in [4, 64] that still gives
/// kDecodeBlocks items (4 when none does: one per warp).
int64_t decodeChunk(int64_t units) {
  int64_t c = 64;
  while (c > 4 && units / c < kDecodeBlocks)
    c /= 2;
  return c;
}

/// The power of two in [4, 64] nearest below `units` (at least 4).
int64_t decodeChunkNear(int64_t units) {
  int64_t c = 4;
  while (c < 64 && 2 * c <= units)
    c *= 2;
  return c;
}

/// A kernel's buffer slots by name (KernelABI.h): each slot of the family
/// is bound or explicitly null before the argument list is taken.
template <int N> class SlotArgs {
public:
  explicit SlotArgs(const char *family) : family(family) {}
  void set(int slot, ::moe::Binding b) {
    assert(slot >= 0 && slot < N && "not a slot of this kernel family");
    args[slot] = b;
    bound[slot] = true;
  }
  void setNull(int slot) { set(slot, ::moe::Binding()); }
  std::vector<::moe::Binding> take() const {
    for (int i = 0; i < N; ++i)
      if (!bound[i])
        llvm::report_fatal_error(llvm::Twine("code generator: slot ") +
                                 llvm::Twine(i) + " of the " + family +
                                 " kernels is neither bound nor null");
    return std::vector<::moe::Binding>(args.begin(), args.end());
  }

private:
  const char *family;
  std::array<::moe::Binding, N> args;
  std::array<bool, N> bound{};
};

/// The module's kernels, each once. A kernel is named from its text (a hash
/// of it, its own name left out), so layers of the same configuration share
/// one kernel, and the text holds no file path or layer index.
class KernelModule {
public:
  /// Adds a kernel whose `text` calls it `placeholder`; returns its name.
  std::string add(StringRef prefix, StringRef placeholder, StringRef text) {
    std::string canonical = replaceAll(text, placeholder, "@kernel@");
    uint64_t hash = llvm::xxh3_64bits(canonical);
    std::string base =
        (prefix + "_" + llvm::utohexstr(hash >> 16, /*LowerCase=*/true)).str();
    std::string name = base;
    // A hash collision between different texts gets another name.
    for (int n = 2;; ++n) {
      auto [it, added] = canonicalOf.try_emplace(name, canonical);
      if (added) {
        pending += replaceAll(text, placeholder, name);
        break;
      }
      if (it->second == canonical)
        break;
      name = base + "_" + std::to_string(n);
    }
    return name;
  }
  /// The text of the kernels added since the last call.
  std::string takeNew() { return std::exchange(pending, std::string()); }
  size_t size() const { return canonicalOf.size(); }

  static std::string replaceAll(StringRef text, StringRef from, StringRef to) {
    std::string out;
    while (true) {
      size_t at = text.find(from);
      out += text.take_front(at).str();
      if (at == StringRef::npos)
        return out;
      out += to.str();
      text = text.drop_front(at + from.size());
    }
  }

private:
  llvm::StringMap<std::string> canonicalOf;
  std::string pending;
};

/// The text of the kernels being written (nested: the router projection's
/// kernel is written while the routing kernel is): writes go to the
/// innermost.
class KernelStream : public llvm::raw_ostream {
public:
  KernelStream() { SetUnbuffered(); }
  std::vector<std::string> open{1};

private:
  void write_impl(const char *p, size_t n) override {
    open.back().append(p, n);
  }
  uint64_t current_pos() const override { return open.back().size(); }
};

/// Builds one layer's plan and the kernels' source text.
class LayerEmitter {
public:
  LayerEmitter(func::FuncOp fn, int64_t layer, KernelModule &kernels,
               const ::moe::CudaEmitOptions &options = {})
      : fn(fn), kernels(kernels), options(options) {
    plan.layer = layer;
    plan.function = fn.getSymName().str();
    if (auto t = fn->getAttrOfType<StringAttr>("moe.lora_target"))
      plan.target = t.getValue().str();
  }

  Expected<::moe::LayerPlan> emit() {
    std::string why;
    std::optional<LayerForm> form = getLayerForm(fn, why);
    if (!form)
      return makeError(fn, why);
    Value x = fn.getArgument(0);
    if (ShapedType::isDynamic(dim(x, 1)))
      return makeError(fn, "the hidden size must be static");
    plan.inputWidth = dim(x, 1);
    FailureOr<int> in = tokenValue(x);
    if (failed(in))
      return makeError(fn, "unsupported activation type");
    plan.input = *in;
    if (*form == LayerForm::GivenRouting) {
      // The caller's routing: copied into these values before the first
      // launch.
      plan.givenIds = *tokenValue(fn.getArgument(1));
      plan.givenWeights = *tokenValue(fn.getArgument(2));
    }
    if (*form == LayerForm::Router)
      plan.role = fn->getAttrOfType<StringAttr>(kRoleAttr).getValue().str();
    if (*form == LayerForm::ExtraInputs)
      if (Error err = extraInputs())
        return std::move(err);
    for (Operation &op : fn.getBody().front()) {
      Error err = llvm::TypeSwitch<Operation *, Error>(&op)
                      .Case([&](FusedRouteOp o) { return route(o); })
                      .Case([&](DispatchOp o) { return dispatch(o); })
                      .Case([&](FusedExpertsOp o) { return experts(o); })
                      .Case([&](LoraMixtureOp o) { return lora(o); })
                      .Case([&](GruCellOp o) { return gruCell(o); })
                      // RMoE's W1 x: computed by the gru_cell kernel that
                      // reads it.
                      .Case([&](RouterLinearOp o) -> Error {
                        if (foldsIntoGruCell(o))
                          return Error::success();
                        return unsupported(o);
                      })
                      .Case([&](WeightOp) -> Error { return Error::success(); })
                      .Case([&](arith::ConstantOp) -> Error { return Error::success(); })
                      // Shape queries feed tensor.splat's size only.
                      .Case([&](tensor::DimOp) -> Error {
                        return Error::success();
                      })
                      .Case([&](func::ReturnOp o) -> Error {
                        if (*form == LayerForm::Router)
                          return routerResults(o);
                        if (Error err = extraResults(o))
                          return err;
                        auto it = values.find(o.getOperand(0));
                        if (it == values.end())
                          return makeError(o, "the returned value is not "
                                              "computed by a kernel");
                        plan.output = it->second;
                        plan.outputWidth = dim(o.getOperand(0), 1);
                        return Error::success();
                      })
                      .Default([&](Operation *other) -> Error {
                        if (isGlue(other))
                          return glue(other);
                        return unsupported(other);
                      });
      if (err)
        return std::move(err);
    }
    // Kernel text is written between beginKernel and endKernel only.
    if (!openKernels.empty() || !stream.open.front().empty())
      llvm::report_fatal_error("code generator: kernel text written outside "
                               "beginKernel/endKernel");
    // Launches name kernels by placeholder until their text is complete.
    for (::moe::Launch &launch : plan.launches)
      for (const auto &[placeholder, name] : names)
        if (StringRef(launch.kernel).starts_with(placeholder))
          launch.kernel = name + launch.kernel.substr(placeholder.size());
    return std::move(plan);
  }

private:
  /// The layer's extra inputs (moe.input arguments): their plan values and
  /// what the runtime checks before launch. A dynamic dimension is the
  /// token count when the input is a sequence map (one entry per token),
  /// else any size given at run time; a sequence map's values index the
  /// rows of its sequence scores.
  Error extraInputs() {
    // Where the routers use each argument as a sequence map.
    llvm::DenseMap<unsigned, unsigned> mapOf; // map arg -> scores arg
    for (auto [m, sc] : getSequenceMapArguments(fn))
      mapOf[m] = sc;
    for (unsigned i = 1; i < fn.getNumArguments(); ++i) {
      Value arg = fn.getArgument(i);
      auto type = cast<RankedTensorType>(arg.getType());
      ::moe::LayerInput in;
      in.name = getLayerInputName(fn, i);
      in.type = type.getElementType().isInteger(32) ? ::moe::ElementType::I32
                                                    : ::moe::ElementType::F32;
      auto map = mapOf.find(i);
      bool isMap = map != mapOf.end();
      if (isMap)
        in.indexes = static_cast<int>(map->second) - 1;
      // A moe.gru_cell state: one row per token.
      bool tokenRows = isMap || llvm::any_of(arg.getUsers(), [&](Operation *u) {
                         auto cell = dyn_cast<GruCellOp>(u);
                         return cell && cell.getState() == arg;
                       });
      ::moe::BufferShape shape;
      shape.type = in.type;
      int64_t rest = 1;
      for (auto [d, size] : llvm::enumerate(type.getShape())) {
        if (!ShapedType::isDynamic(size)) {
          in.dims.push_back(size);
          if (d > 0)
            rest *= size;
          continue;
        }
        if (d > 0)
          return makeError(fn, "extra input '" + in.name +
                                   "' has a dynamic dimension past the "
                                   "first; only dimension 0 may vary");
        in.dims.push_back(tokenRows && d == 0 ? ::moe::LayerInput::kTokenDim
                                              : ::moe::LayerInput::kAnyDim);
      }
      // Token-major inputs grow with T; the others are sized at run time
      // (one row here).
      if (!in.dims.empty() && in.dims[0] == ::moe::LayerInput::kTokenDim)
        shape.perToken = rest;
      else
        shape.fixed = rest * (in.dims.empty() || in.dims[0] < 0 ? 1
                                                                : in.dims[0]);
      in.value = addValue(shape);
      values[arg] = in.value;
      plan.inputs.push_back(std::move(in));
    }
    return Error::success();
  }

  /// The results after y (moe.output, e.g. RMoE's router state): [T, n]
  /// f32 values a kernel computes (or extra inputs returned as they are),
  /// recorded in the plan's outputs in result order.
  Error extraResults(func::ReturnOp ret) {
    for (unsigned i = 1; i < ret.getNumOperands(); ++i) {
      Value v = ret.getOperand(i);
      std::string name = getLayerOutputName(fn, i);
      auto type = cast<RankedTensorType>(v.getType());
      if (type.getRank() != 2 || !type.isDynamicDim(0) ||
          type.isDynamicDim(1) || !type.getElementType().isF32())
        return makeError(ret, "extra result '" + name + "' of function @" +
                                  fn.getSymName() +
                                  ": the kernel backends return extra "
                                  "results of [T, n] f32 (one row per token, "
                                  "static n) only");
      auto it = values.find(v);
      if (it == values.end())
        return makeError(ret, "extra result '" + name + "' of function @" +
                                  fn.getSymName() +
                                  " is not computed by a kernel");
      const ::moe::BufferShape &shape = plan.values[it->second];
      if (shape.perToken != type.getDimSize(1) || shape.fixed != 0)
        return makeError(ret, "extra result '" + name + "' of function @" +
                                  fn.getSymName() +
                                  " does not have one row per token (an "
                                  "extra input of any number of rows): the "
                                  "kernel backends return extra results of "
                                  "[T, n] f32 only");
      ::moe::LayerOutput out;
      out.name = name;
      out.value = it->second;
      out.width = type.getDimSize(1);
      plan.outputs.push_back(std::move(out));
    }
    return Error::success();
  }

  /// A router-only function returns the (ids, weights) of one of its
  /// moe.fused_route ops: that routing is the plan's routings[0], and the
  /// plan has no output.
  Error routerResults(func::ReturnOp ret) {
    auto route = ret.getOperand(0).getDefiningOp<FusedRouteOp>();
    if (!route || ret.getOperand(0) != route.getIds() ||
        ret.getOperand(1) != route.getWeights())
      return makeError(ret, "a router-only function (moe.role = \"router\") "
                            "must return the ids and weights of one "
                            "moe.fused_route (run --moe-fuse-routing)");
    int ids = values.lookup(route.getIds());
    int weights = values.lookup(route.getWeights());
    auto it = llvm::find_if(plan.routings, [&](const auto &r) {
      return r.ids == ids && r.weights == weights;
    });
    std::rotate(plan.routings.begin(), it, it + 1);
    plan.output = -1;
    plan.outputWidth = 0;
    return Error::success();
  }

  /// A [T, n] value.
  FailureOr<int> tokenValue(Value v) {
    FailureOr<::moe::ElementType> t = elementType(v.getType());
    if (failed(t))
      return failure();
    ::moe::BufferShape shape;
    shape.type = *t;
    shape.perToken = dim(v, 1);
    int id = addValue(shape);
    values[v] = id;
    return id;
  }

  int addValue(::moe::BufferShape shape) {
    plan.values.push_back(shape);
    return static_cast<int>(plan.values.size()) - 1;
  }

  int fixedValue(::moe::ElementType type, int64_t n, int64_t perToken = 0) {
    ::moe::BufferShape shape;
    shape.type = type;
    shape.fixed = n;
    shape.perToken = perToken;
    return addValue(shape);
  }

  /// A binding for a moe.weight or arith.constant feeding a kernel.
  FailureOr<::moe::Binding> weightBinding(Value v) {
    ::moe::WeightRef ref;
    auto type = cast<RankedTensorType>(v.getType());
    FailureOr<::moe::ElementType> et = elementType(type);
    if (failed(et))
      return failure();
    ref.type = *et;
    ref.shape.assign(type.getShape().begin(), type.getShape().end());
    if (auto w = v.getDefiningOp<WeightOp>()) {
      for (StringRef n : w.getNames().getAsValueRange<StringAttr>())
        ref.names.push_back(n.str());
      for (StringRef f : w.getFiles().getAsValueRange<StringAttr>())
        ref.files.push_back(f.str());
      ref.stacked = w.isStack();
    } else if (auto c = v.getDefiningOp<arith::ConstantOp>()) {
      auto dense = dyn_cast<DenseElementsAttr>(c.getValue());
      if (!dense || !isa<FloatType>(type.getElementType()))
        return failure();
      for (APFloat f : dense.getValues<APFloat>())
        ref.inlineValues.push_back(static_cast<float>(f.convertToDouble()));
    } else {
      return failure();
    }
    plan.weights.push_back(std::move(ref));
    ::moe::Binding b;
    b.kind = ::moe::Binding::Weight;
    b.weight = static_cast<int>(plan.weights.size()) - 1;
    return b;
  }

  static ::moe::Binding valueBinding(int id) {
    ::moe::Binding b;
    b.kind = ::moe::Binding::Value;
    b.value = id;
    return b;
  }

  Expected<int> lookup(Operation *user, Value v) {
    auto it = values.find(v);
    if (it == values.end())
      return makeError(user, "an operand is not produced by a kernel or the "
                             "layer input");
    return it->second;
  }

  //===--------------------------------------------------------------------===//
  // moe.fused_route
  //===--------------------------------------------------------------------===//

  /// The router projection's kernel: tokens per block and router rows per
  /// block (moe_k::route::routerLogits).
  static constexpr int kLogitsTokens = 32, kLogitsRows = 8;
  /// Warps that the small-T routing kernel's projection aims to keep busy:
  /// 4 per block, a block per SM of an H100 / H200 (132 SMs).
  static constexpr int64_t kRouterTargetWarps = 4 * 132;
  /// Whether router rows may be split over H (off: a warp per whole row).
  static constexpr bool kSplitRouterRows = true;
  /// Where the routing kernels read the router's logits (the load differs
  /// between the two-launch and the small-T kernel).
  static constexpr llvm::StringLiteral kLogitsPlaceholder = "@MOE_LOGITS";

  /// Tokens from which moe.router_linear runs on tensor cores
  /// (moe_k::route::routerLogitsMma), where it applies.
  static constexpr int64_t kRouterMmaMinTokens = 64;

  /// Whether the tensor-core router applies: a plain (not cosine) router,
  /// H a multiple of the k step (16), bf16 weights with f32 or bf16
  /// activations, or f16 weights with f16 activations (the activations
  /// split exactly into weight-typed terms: moe_k::route::mmaPieces).
  static bool routerMmaApplies(StringRef tx, StringRef tw, int64_t H,
                               bool cosine) {
    if (cosine || H % 16 != 0)
      return false;
    if (tw == "__nv_bfloat16")
      return tx == "float" || tx == "__nv_bfloat16";
    return tw == "__half" && tx == "__half";
  }

  /// The router projection kernel's tensor-core branch: from
  /// kRouterMmaMinTokens tokens on, moe_k::route::routerLogitsMma over
  /// the launch's grid (it loops over its 64-token x 32-row tiles, fewer
  /// than the CUDA-core kernel's 32 x 8 blocks), then `else` and the
  /// CUDA-core call.
  static std::string routerMmaCall(StringRef tx, StringRef tw, StringRef tb,
                                   int64_t H, int64_t N, bool hasBias) {
    return llvm::formatv(
               "if (args.num_tokens >= {6})\n    "
               "moe_k::route::routerLogitsMma<{0}, {1}, {2}, {3}, {4}, {5}>("
               "static_cast<const {0} *>(args.buffers[MOE_LOGITS_SLOT_INPUT]), "
               "static_cast<const {1} *>("
               "args.buffers[MOE_LOGITS_SLOT_WEIGHT]), "
               "static_cast<const {2} *>(args.buffers[MOE_LOGITS_SLOT_BIAS]), "
               "static_cast<float *>(args.buffers[MOE_LOGITS_SLOT_OUTPUT]), "
               "args.num_tokens);\n  else\n    ",
               tx, tw, tb, H, N, hasBias ? "true" : "false",
               kRouterMmaMinTokens)
        .str();
  }

  /// Elements per chunk of the router projection's reduction (H): the
  /// small-T kernel splits each router row into ceil(H / chunk) chunks, one
  /// warp each, so that N rows x chunks items reach kRouterTargetWarps
  /// where the router is large enough; a chunk is at least one 16-byte load
  /// per lane (32 x the vector width). H: no split (cosine routers, which
  /// need whole rows for their norms, and routers of enough rows).
  static int64_t routerChunk(int64_t H, int64_t N, int64_t weightBytes,
                             bool cosine) {
    if (!kSplitRouterRows || cosine || N <= 0)
      return H;
    const int64_t perWord = 16 / weightBytes;
    const int64_t V = H % perWord == 0 ? perWord : 1;
    const int64_t iters = ((H + V - 1) / V + 31) / 32;
    const int64_t want =
        std::min(iters, (kRouterTargetWarps + N - 1) / N);
    if (want <= 1)
      return H;
    // Whole loads per lane, and a divisor of the row (a chunk that ends
    // early costs the projection kernels a few bytes of spills).
    if (H % (32 * V) != 0)
      return H;
    int64_t m = std::max<int64_t>(1, iters / want);
    while (iters % m != 0)
      --m;
    const int64_t chunk = m * 32 * V;
    return chunk >= H ? H : chunk;
  }

  /// Where moe.similarity_mix's recomputation restages a token's rows (the
  /// staging code is known once the whole body is generated).
  static constexpr llvm::StringLiteral kStagePlaceholder = "@MOE_STAGE@\n";

  /// Row ops whose templates the whole warp runs (selections in registers
  /// and shuffles, elementwise ops split over the lanes); the others run on
  /// lane 0.
  static bool warpWideRowOp(Operation *o) {
    return isa<TopKOp, TopPOp, ThresholdOp, GroupLimitOp, SigmoidOp, ReluOp,
               BiasAddOp, GatherScoresOp, DropNullExpertsOp, ScaleOp>(o);
  }
  /// The opening of a row op's block in the generated kernel.
  static const char *rowGuard(Operation *o) {
    return warpWideRowOp(o) ? "      {\n        "
                            : "      if (lane == 0) {\n        ";
  }

  Error route(FusedRouteOp op) {
    constexpr int kWarps = 4;
    std::string name = beginKernel("moe_route");
    Block &body = op.getBody().front();
    // The matcher the verifier uses: the body's program, or the op that
    // cannot be generated.
    RouteProgram program;
    if (std::optional<RouteMismatch> m = matchRouteBody(body, &program))
      return makeError(m->op, m->reason + " (in moe.fused_route at " +
                                  locString(op) + ")");
    Value arg = body.getArgument(0);
    int64_t K = dim(op.getIds(), 1);
    int64_t E = op.getNumExperts();
    if (ShapedType::isDynamic(K) || ShapedType::isDynamic(dim(arg, 1)))
      return makeError(op, "slot count and input width must be static");

    // Small T (::moe::kSmallRouteMaxTokens tokens or fewer) runs the router
    // projection and the routing in one launch (a second kernel, below)
    // when the body has one router_linear; larger T runs the projection's
    // kernel, then this one. Launch gates choose at run time.
    int projections = 0;
    for (Operation *o : program.perToken)
      projections += isa<RouterLinearOp>(o) ? 1 : 0;
    const bool smallT = projections == 1;
    struct Projection {
      ::moe::Binding weight, bias;
      std::string tw, tb, cosineParams, cosineArgs;
      int64_t N = 0, chunk = 0;
      bool hasBias = false;
      int slot = -1, logits = -1;
      std::string row;
    } proj;
    // Each router_linear's placeholder in the body's text and its load in
    // the two-launch routing kernel.
    SmallVector<std::pair<std::string, std::string>> logitLoads;

    ::moe::Launch launch;
    launch.kernel = name;
    launch.origin = "moe.fused_route at " + locString(op);
    launch.blockThreads = 32 * kWarps;
    launch.tokensPerBlock = kWarps;
    launch.maxBlocks = 4096;
    Expected<int> input = lookup(op, op.getInput());
    if (!input)
      return input.takeError();
    int ids = fixedValue(::moe::ElementType::I32, 0, K);
    int weights = fixedValue(::moe::ElementType::F32, 0, K);
    int counts = fixedValue(::moe::ElementType::I32, E);
    int offsets = fixedValue(::moe::ElementType::I32, E + 1);
    int rows = fixedValue(::moe::ElementType::I32, 0, K);
    int counter = fixedValue(::moe::ElementType::U32, 1);
    // The inverse of rows (slot -> position in rows, -1 when empty): the
    // grouped expert kernels' combine reads it.
    int slotRow = fixedValue(::moe::ElementType::I32, 0, K);
    slotRowOf[op.getRows()] = slotRow;
    values[op.getIds()] = ids;
    values[op.getWeights()] = weights;
    values[op.getCounts()] = counts;
    values[op.getOffsets()] = offsets;
    values[op.getRows()] = rows;
    plan.routings.push_back({ids, weights, E});
    launch.zeroOnce.push_back(counter);
    // The fixed slots (KernelABI.h), then the router's weights and logits.
    SlotArgs<MOE_ROUTE_SLOT_FIRST_OPERAND> fixed("route");
    fixed.set(MOE_ROUTE_SLOT_INPUT, valueBinding(*input));
    fixed.set(MOE_ROUTE_SLOT_IDS, valueBinding(ids));
    fixed.set(MOE_ROUTE_SLOT_WEIGHTS, valueBinding(weights));
    fixed.set(MOE_ROUTE_SLOT_COUNTS, valueBinding(counts));
    fixed.set(MOE_ROUTE_SLOT_OFFSETS, valueBinding(offsets));
    fixed.set(MOE_ROUTE_SLOT_ROWS, valueBinding(rows));
    fixed.set(MOE_ROUTE_SLOT_COUNTER, valueBinding(counter));
    fixed.set(MOE_ROUTE_SLOT_SLOT_ROW, valueBinding(slotRow));
    // The cross-token op's first row operand (set below when there is one).
    fixed.setNull(MOE_ROUTE_SLOT_CHOICE_SCORES);
    // A given routing (an engine's dispatch) is read like the input.
    // Binds a pair of the fused op's operands to two fixed slots (both null
    // when the op has no such pair).
    auto bindPair = [&](Value a, Value b, int slotA, int slotB) -> Error {
      if (!a) {
        fixed.setNull(slotA);
        fixed.setNull(slotB);
        return Error::success();
      }
      Expected<int> va = lookup(op, a);
      if (!va)
        return va.takeError();
      Expected<int> vb = lookup(op, b);
      if (!vb)
        return vb.takeError();
      fixed.set(slotA, valueBinding(*va));
      fixed.set(slotB, valueBinding(*vb));
      return Error::success();
    };
    if (Error err = bindPair(op.getGivenIds(), op.getGivenWeights(),
                             MOE_ROUTE_SLOT_GIVEN_IDS,
                             MOE_ROUTE_SLOT_GIVEN_WEIGHTS))
      return std::move(err);
    // Sequence scores and map (extra layer inputs) of
    // moe.add_sequence_scores, read from global memory.
    Value seqScores, seqMap;
    for (Operation &inner : body)
      if (auto add = dyn_cast<AddSequenceScoresOp>(inner)) {
        auto outer = [&](Value v) {
          unsigned first = 1 + (op.getGivenIds() ? 2 : 0);
          return op.getExtraInputs()[cast<BlockArgument>(v).getArgNumber() -
                                     first];
        };
        Value s = outer(add.getSequenceScores());
        Value m = outer(add.getSequenceMap());
        if (seqScores && (s != seqScores || m != seqMap))
          return makeError(add, "a second pair of sequence scores and map in "
                                "one router (the routing kernel reads one)");
        seqScores = s;
        seqMap = m;
      }
    if (Error err = bindPair(seqScores, seqMap, MOE_ROUTE_SLOT_SEQ_SCORES,
                             MOE_ROUTE_SLOT_SEQ_MAP))
      return std::move(err);
    launch.args = fixed.take();
    int scratchSlot = MOE_ROUTE_SLOT_CHOICE_SCORES;

    std::string tx = cxxType(arg.getType());
    int64_t H = dim(arg, 1);
    std::string shared, phase1, phase2;
    llvm::raw_string_ostream sh(shared), p1(phase1), p2(phase2);
    llvm::DenseMap<Value, std::string> rowsOf;
    int rowCount = 0;
    bool stagedArg = false;
    // The body arguments of the given routing read as rows (staged per
    // token from global memory, as the input row is).
    Value givenArgs[2];
    bool stagedGiven[2] = {false, false};
    if (op.getGivenIds()) {
      givenArgs[0] = body.getArgument(1);
      givenArgs[1] = body.getArgument(2);
    }
    auto noteGiven = [&](Value v) {
      for (int i = 0; i < 2; ++i)
        if (givenArgs[i] && v == givenArgs[i])
          stagedGiven[i] = true;
    };
    // A row of shared memory per value, per warp.
    auto row = [&](Value v) -> std::string {
      auto it = rowsOf.find(v);
      if (it != rowsOf.end())
        return it->second;
      std::string r = "r" + std::to_string(rowCount++);
      bool isInt = cast<RankedTensorType>(v.getType()).getElementType()
                       .isInteger(32);
      sh << llvm::formatv("  MOE_SHARED({0}, {1}, {2} * {3});\n",
                          isInt ? "int" : "float", r, kWarps, dim(v, 1));
      rowsOf[v] = r;
      return r;
    };
    auto at = [&](Value v) {
      return "(" + row(v) + " + warp * " + std::to_string(dim(v, 1)) + ")";
    };
    std::string pointers;
    llvm::raw_string_ostream ptr(pointers);
    auto bindWeight = [&](Value v) -> Expected<std::string> {
      auto found = weightPtr.find(v);
      if (found != weightPtr.end())
        return found->second;
      FailureOr<::moe::Binding> b = weightBinding(v);
      if (failed(b))
        return makeError(op, "a weight of the router is neither a moe.weight "
                             "nor a float constant");
      int slot = static_cast<int>(launch.args.size());
      launch.args.push_back(*b);
      std::string p = "w" + std::to_string(slot);
      ptr << llvm::formatv("  const {0} *{1} = static_cast<const {0} *>("
                           "args.buffers[{2}]);\n",
                           cxxType(v.getType()), p, slot);
      weightPtr[v] = p;
      return p;
    };
    // One row template per router op: the call that computes `o`'s rows of
    // one token on lane 0, reading its operands' rows through `in`. Every
    // router op is a case here; the fallback names any op without one.
    auto rowCall = [&](Operation *o, llvm::function_ref<std::string(Value)> in)
        -> Expected<std::string> {
      std::string call;
      llvm::raw_string_ostream c(call);
      Error err =
          llvm::TypeSwitch<Operation *, Error>(o)
              .Case([&](SoftmaxOp s) -> Error {
                if (Value mask = getImplicitMask(s))
                  c << llvm::formatv(
                      "moe_k::route::maskedSoftmax<{0}>({1}, {2}, {3});",
                      dim(s.getInput(), 1), in(s.getInput()), in(mask),
                      at(s.getResult()));
                else
                  c << llvm::formatv("moe_k::route::softmax<{0}>({1}, {2});",
                                     dim(s.getInput(), 1), in(s.getInput()),
                                     at(s.getResult()));
                return Error::success();
              })
              .Case([&](AddSequenceScoresOp s) -> Error {
                c << llvm::formatv(
                    "moe_k::route::addSequenceScores<{0}>({1}, seqScores, "
                    "seqMap, t, {2}, {3});",
                    dim(s.getInput(), 1), in(s.getInput()),
                    floatLiteral(s.getFactor().convertToFloat()),
                    at(s.getResult()));
                return Error::success();
              })
              .Case([&](SigmoidOp s) -> Error {
                c << llvm::formatv("moe_k::route::sigmoid<{0}>({1}, {2});",
                                   dim(s.getInput(), 1), in(s.getInput()),
                                   at(s.getResult()));
                return Error::success();
              })
              .Case([&](ReluOp s) -> Error {
                c << llvm::formatv("moe_k::route::relu<{0}>({1}, {2});",
                                   dim(s.getInput(), 1), in(s.getInput()),
                                   at(s.getResult()));
                return Error::success();
              })
              .Case([&](RmsNormOp s) -> Error {
                std::string g = "static_cast<const float *>(nullptr)";
                if (s.getWeight()) {
                  Expected<std::string> w = bindWeight(s.getWeight());
                  if (!w)
                    return w.takeError();
                  g = *w;
                }
                c << llvm::formatv(
                    "moe_k::route::rmsNorm<{0}, {1}>({2}, {3}, {4}, {5});",
                    dim(s.getInput(), 1), s.getWeight() ? "true" : "false",
                    in(s.getInput()), g,
                    floatLiteral(s.getEpsilon().convertToFloat()),
                    at(s.getResult()));
                return Error::success();
              })
              .Case([&](BiasAddOp s) -> Error {
                Expected<std::string> b = bindWeight(s.getBias());
                if (!b)
                  return b.takeError();
                c << llvm::formatv(
                    "moe_k::route::biasAdd<{0}, {1}>({2}, {3}, {4});",
                    dim(s.getInput(), 1), cxxType(s.getBias().getType()),
                    in(s.getInput()), *b, at(s.getResult()));
                return Error::success();
              })
              .Case([&](GroupLimitOp s) -> Error {
                c << llvm::formatv(
                    "moe_k::route::groupLimit<{0}, {1}, {2}, {3}>({4}, {5});",
                    dim(s.getInput(), 1), s.getNumGroups(), s.getKeepGroups(),
                    s.getGroupScore() == GroupScore::top2_sum ? "true"
                                                              : "false",
                    in(s.getInput()), at(s.getResult()));
                return Error::success();
              })
              .Case([&](TopKOp s) -> Error {
                c << llvm::formatv(
                    "moe_k::route::topK<{0}, {1}>({2}, {3}, {4});",
                    dim(s.getInput(), 1), s.getK(), in(s.getInput()),
                    at(s.getIds()), at(s.getValues()));
                return Error::success();
              })
              .Case([&](TopPOp s) -> Error {
                c << llvm::formatv(
                    "moe_k::route::topP<{0}, {1}, {6}, {7}>({2}, {3}, {4}, "
                    "{5});",
                    dim(s.getInput(), 1), s.getMaxK(), in(s.getInput()),
                    floatLiteral(s.getP().convertToFloat()), at(s.getIds()),
                    at(s.getValues()), s.getMinK(),
                    s.getPrefix() == TopPPrefix::within ? "true" : "false");
                return Error::success();
              })
              .Case([&](EntropyFallbackOp s) -> Error {
                // The entropy test runs here, on lane 0 of the token's
                // warp, over the token's row of probabilities.
                c << llvm::formatv(
                    "moe_k::route::entropyFallback<{0}, {1}, {2}>({3}, {4}, "
                    "{5}, {6}, {7}, {8}, {9}, {10});",
                    dim(s.getProbs(), 1), dim(s.getSparseIds(), 1),
                    s.getNormalized() ? "true" : "false", in(s.getProbs()),
                    in(s.getSparseIds()), in(s.getSparseValues()),
                    floatLiteral(s.getQ().convertToFloat()),
                    floatLiteral(s.getEpsilon().convertToFloat()),
                    floatLiteral(s.getThreshold().convertToFloat()),
                    at(s.getIds()), at(s.getValues()));
                return Error::success();
              })
              .Case([&](ThresholdOp s) -> Error {
                c << llvm::formatv(
                    "moe_k::route::threshold<{0}, {1}>({2}, {3}, {4}, {5});",
                    dim(s.getInput(), 1), s.getMaxK(), in(s.getInput()),
                    floatLiteral(s.getThreshold().convertToFloat()),
                    at(s.getIds()), at(s.getValues()));
                return Error::success();
              })
              .Case([&](GatherScoresOp s) -> Error {
                c << llvm::formatv(
                    "moe_k::route::gatherScores<{0}, {1}>({2}, {3}, {4});",
                    dim(s.getScores(), 1), dim(s.getIds(), 1),
                    in(s.getScores()), in(s.getIds()), at(s.getResult()));
                return Error::success();
              })
              .Case([&](DropNullExpertsOp s) -> Error {
                c << llvm::formatv("moe_k::route::dropNullExperts<{0}>({1}, "
                                   "{2}, {3}, {4}, {5});",
                                   dim(s.getIds(), 1), in(s.getIds()),
                                   in(s.getWeights()), s.getNumExperts(),
                                   at(s.getResultIds()),
                                   at(s.getResultWeights()));
                return Error::success();
              })
              .Case([&](RemapExpertsOp s) -> Error {
                // The mapping and replica rule are constants of the
                // generated code; `t` is the token's row in the batch.
                auto table = [](ArrayRef<int64_t> v) {
                  std::string text;
                  llvm::raw_string_ostream t(text);
                  llvm::interleaveComma(v, t);
                  return text;
                };
                std::string replicas = "nullptr, nullptr";
                if (std::optional<ArrayRef<int64_t>> count =
                        s.getReplicaCount()) {
                  c << llvm::formatv(
                      "{{ const int count[] = {{{0}}; const int index[] = "
                      "{{{1}}; ",
                      table(*count), table(*s.getReplicaIndex()));
                  replicas = "count, index";
                } else {
                  c << "{ ";
                }
                c << llvm::formatv(
                    "const int mapping[] = {{{0}}; "
                    "moe_k::route::remapExperts<{1}, {2}>({3}, {4}, mapping, "
                    "{7}, t, {5}, {6}); }",
                    table(s.getMapping()), dim(s.getIds(), 1),
                    s.getMapping().size(), in(s.getIds()), in(s.getWeights()),
                    at(s.getResultIds()), at(s.getResultWeights()), replicas);
                return Error::success();
              })
              .Case([&](NormalizeOp s) -> Error {
                std::string eps = floatLiteral(s.getEpsilon().convertToFloat());
                if (Value mask = getImplicitMask(s))
                  c << llvm::formatv("moe_k::route::maskedNormalize<{0}>({1}, "
                                     "{2}, {3}, {4});",
                                     dim(s.getInput(), 1), in(s.getInput()),
                                     in(mask), eps, at(s.getResult()));
                else
                  c << llvm::formatv(
                      "moe_k::route::normalize<{0}>({1}, {2}, {3});",
                      dim(s.getInput(), 1), in(s.getInput()), eps,
                      at(s.getResult()));
                return Error::success();
              })
              .Case([&](ScaleOp s) -> Error {
                c << llvm::formatv("moe_k::route::scale<{0}>({1}, {2}, {3});",
                                   dim(s.getInput(), 1), in(s.getInput()),
                                   floatLiteral(s.getFactor().convertToFloat()),
                                   at(s.getResult()));
                return Error::success();
              })
              .Default([&](Operation *other) -> Error {
                return makeError(other, "the routing kernel has no row "
                                        "template for this op (in "
                                        "moe.fused_route at " +
                                            locString(op) + ")");
              });
      if (err)
        return std::move(err);
      return call;
    };

    // Phase 1: every token's warp runs the ops before the cross-token op
    // (all of them when there is none).
    Operation *choice = program.crossToken;
    for (Operation *o : program.perToken) {
      auto comment = [&](llvm::raw_string_ostream &s) {
        s << "      // " << o->getName() << "\n";
      };
      // Operands that are the body argument are read from a staged row.
      auto in = [&](Value v) -> std::string {
        if (v == arg)
          stagedArg = true;
        noteGiven(v);
        return at(v);
      };
      if (auto rl = dyn_cast<RouterLinearOp>(o)) {
        FailureOr<::moe::Binding> weight = weightBinding(rl.getWeight());
        FailureOr<::moe::Binding> bias =
            rl.getBias() ? weightBinding(rl.getBias())
                         : FailureOr<::moe::Binding>(::moe::Binding());
        if (failed(weight) || failed(bias))
          return makeError(op, "a weight of the router is neither a "
                               "moe.weight nor a float constant");
        std::string tb =
            rl.getBias() ? cxxType(rl.getBias().getType()) : "float";
        // The projection is a kernel of its own, launched before this one
        // (all of the GPU streams the router's weights); this kernel reads
        // its logits.
        int64_t N = dim(rl.getResult(), 1);
        std::string logitsKernel = beginKernel("moe_route_logits");
        int logits = fixedValue(::moe::ElementType::F32, 0, N);
        ::moe::Launch projection;
        projection.kernel = logitsKernel;
        projection.origin = "moe.router_linear of " + launch.origin;
        projection.blockThreads = 128;
        projection.tokensPerBlock = kLogitsTokens;
        projection.gridColumns = (N + kLogitsRows - 1) / kLogitsRows;
        projection.maxBlocks = int64_t(1) << 20;
        if (smallT)
          projection.minSlots = ::moe::kSmallRouteMaxTokens + 1;
        SlotArgs<MOE_LOGITS_NUM_SLOTS> projectionArgs("router logits");
        projectionArgs.set(MOE_LOGITS_SLOT_INPUT, valueBinding(*input));
        projectionArgs.set(MOE_LOGITS_SLOT_WEIGHT, *weight);
        projectionArgs.set(MOE_LOGITS_SLOT_BIAS, *bias);
        projectionArgs.set(MOE_LOGITS_SLOT_OUTPUT, valueBinding(logits));
        projection.args = projectionArgs.take();
        // Cosine routers only: a plain router's kernel text (and hash)
        // stays as it was.
        std::string cosineParams, cosineArgs;
        if (rl.getNormalize() != RouterNormalize::none) {
          cosineParams = llvm::formatv(
              ", {0}, {1}", rl.normalizesInput() ? "true" : "false",
              rl.normalizesWeight() ? "true" : "false");
          cosineArgs = llvm::formatv(
              ", {0}, {1}", floatLiteral(rl.getScale().convertToFloat()),
              floatLiteral(rl.getEpsilon().convertToFloat()));
        }
        // Both launches add the chunks of a split reduction in the same
        // order, so a token's logits do not depend on which one runs.
        int64_t chunk = routerChunk(
            H, N,
            ::moe::elementSize(
                plan.weights[static_cast<size_t>(weight->weight)].type),
            rl.getNormalize() != RouterNormalize::none);
        std::string chunkParam =
            chunk < H ? llvm::formatv(", false, false, {0}", chunk).str()
                      : std::string();
        os << "// moe.router_linear of moe.fused_route\n";
        // From kRouterMmaMinTokens tokens on, the same launch computes the
        // logits on tensor cores where that applies (routerMmaCall).
        const std::string tw = cxxType(rl.getWeight().getType());
        const std::string mma =
            routerMmaApplies(tx, tw, H,
                             rl.getNormalize() != RouterNormalize::none)
                ? routerMmaCall(tx, tw, tb, H, N, rl.getBias() != nullptr)
                : std::string();
        // Split rows (and the tensor-core form): one block per SM is
        // enough, and without the minimum ptxas caps the registers and
        // spills (chunk sums; gpt-oss's mma tiles: 16 bytes at 72).
        kernelEntry(
            logitsKernel, chunk < H || !mma.empty() ? "128, 1" : "128",
            mma + llvm::formatv(
                "moe_k::route::routerLogits<{0}, {1}, {2}, {3}, {4}, {5}, "
                "{6}, {7}{8}{10}>(static_cast<const {0} *>("
                "args.buffers[MOE_LOGITS_SLOT_INPUT]), "
                "static_cast<const {1} "
                "*>(args.buffers[MOE_LOGITS_SLOT_WEIGHT]), "
                "static_cast<const {2} *>(args.buffers[MOE_LOGITS_SLOT_BIAS]), "
                "static_cast<float *>(args.buffers[MOE_LOGITS_SLOT_OUTPUT]), "
                "args.num_tokens{9})",
                tx, cxxType(rl.getWeight().getType()), tb, H, N,
                rl.getBias() ? "true" : "false", kLogitsTokens, kLogitsRows,
                cosineParams, cosineArgs, chunkParam)
                .str());
        os << "\n";
        pushLaunch(std::move(projection));
        endKernel();
        int slot = static_cast<int>(launch.args.size());
        launch.args.push_back(valueBinding(logits));
        ptr << llvm::formatv("  const float *lg{0} = static_cast<const float "
                             "*>(args.buffers[{0}]);\n",
                             slot);
        p1 << "      __syncwarp();\n";
        comment(p1);
        std::string load = (kLogitsPlaceholder + llvm::Twine(slot) + "@").str();
        p1 << "      " << load << "\n";
        logitLoads.push_back(
            {load, llvm::formatv("moe_k::route::loadLogits<{0}>(lg{1}, t, "
                                 "{2}, lane);",
                                 N, slot, at(rl.getResult()))});
        proj.weight = *weight;
        proj.bias = *bias;
        proj.tw = cxxType(rl.getWeight().getType());
        proj.tb = tb;
        proj.cosineParams = cosineParams;
        proj.cosineArgs = cosineArgs;
        proj.N = N;
        proj.chunk = chunk;
        proj.hasBias = static_cast<bool>(rl.getBias());
        proj.slot = slot;
        proj.logits = logits;
        proj.row = at(rl.getResult());
        continue;
      }
      if (auto mix = dyn_cast<SimilarityMixOp>(o)) {
        // Graph of Tokens, by token t's warp: the softmax over its
        // similarities to every token j (the lanes split each dot), and
        // token j's probabilities recomputed by the router ops before the
        // mix (the text so far, with t = j), so that no warp waits for
        // another's rows. Then token t's rows again.
        std::string prefix = p1.str();
        int64_t N = dim(mix.getProbs(), 1);
        std::string probs = in(mix.getProbs()), res = at(mix.getResult());
        std::string tau = floatLiteral(mix.getTemperature().convertToFloat());
        comment(p1);
        p1 << llvm::formatv(
            "      {{\n"
            "        const long long mixEnd = {0};\n"
            "        const float mixMax = moe_k::route::similarityMax<{1}>("
            "x, t, mixEnd, {2});\n"
            "        float mixSum = 0.0f;\n"
            "        if (lane == 0)\n"
            "          for (int i = 0; i < {3}; ++i) {4}[i] = 0.0f;\n"
            "        __syncwarp();\n"
            "        for (long long mixJ = 0; mixJ < mixEnd; ++mixJ) {{\n"
            "          const float mixW = expf(moe_k::route::similarity<{1}>("
            "x, t, mixJ, {2}) - mixMax);\n"
            "          mixSum += mixW;\n"
            "          {{\n"
            "            // token mixJ's router ops, recomputed\n"
            "            const long long t = mixJ;\n",
            mix.getCausal() ? "t + 1" : "T", H, tau, N, res);
        p1 << kStagePlaceholder << prefix;
        p1 << llvm::formatv("          }\n"
                            "          if (lane == 0)\n"
                            "            moe_k::route::mixAccumulate<{0}>({1}, "
                            "mixW, {2});\n"
                            "          __syncwarp();\n"
                            "        }\n"
                            "        if (lane == 0)\n"
                            "          moe_k::route::mixFinish<{0}>({2}, "
                            "mixSum);\n"
                            "        __syncwarp();\n"
                            "        // token t's own rows again\n",
                            N, probs, res);
        p1 << kStagePlaceholder << prefix << "      }\n";
        continue;
      }
      // Everything else runs on the token's warp (lane 0 alone for the
      // ops without a warp-wide template).
      Expected<std::string> call = rowCall(o, in);
      if (!call)
        return call.takeError();
      comment(p1);
      p1 << rowGuard(o) << *call << "\n      }\n";
      p1 << "      __syncwarp();\n";
    }

    Block::iterator yieldIt = body.getTerminator()->getIterator();
    auto yield = cast<YieldOp>(*yieldIt);
    Value yIds = yield.getValues()[0], yWeights = yield.getValues()[1];
    // A body may yield the given routing as it is.
    noteGiven(yIds);
    noteGiven(yWeights);
    auto bufferPtr = [&](Value like, StringRef prefix) {
      bool isInt =
          cast<RankedTensorType>(like.getType()).getElementType().isInteger(32);
      int buffer =
          fixedValue(isInt ? ::moe::ElementType::I32 : ::moe::ElementType::F32,
                     0, dim(like, 1));
      int slot = static_cast<int>(launch.args.size());
      launch.args.push_back(valueBinding(buffer));
      std::string p = (prefix + std::to_string(slot)).str();
      ptr << llvm::formatv("  {0} *{1} = static_cast<{0} *>("
                           "args.buffers[{2}]);\n",
                           isInt ? "int" : "float", p, slot);
      return p;
    };
    // The block-wide call of a cross-token op over the whole batch: `in`
    // are its row operands in global memory ([T, n] each), `out` its
    // results'.
    auto crossCall = [&](Operation *o, ArrayRef<std::string> in,
                         ArrayRef<std::string> out) -> Expected<std::string> {
      std::string call;
      llvm::raw_string_ostream c(call);
      Error err =
          llvm::TypeSwitch<Operation *, Error>(o)
              .Case([&](ExpertChoiceOp s) -> Error {
                c << llvm::formatv("moe_k::route::expertChoice<{0}, {1}>({2}, "
                                   "T, {3}, {4});",
                                   dim(s.getInput(), 1), s.getCapacity(), in[0],
                                   out[0], out[1]);
                return Error::success();
              })
              .Case([&](CapacityOp s) -> Error {
                // The capacity is enforced here, over every token's slots,
                // before the dispatch plan reads the ids.
                c << llvm::formatv(
                    "moe_k::route::capacity<{0}, {1}>({2}, {3}, T, {4}, {5}, "
                    "{6});",
                    dim(s.getIds(), 1), s.getNumExperts(), in[0], in[1],
                    floatLiteral(s.getCapacityFactor().convertToFloat()),
                    out[0], out[1]);
                return Error::success();
              })
              .Case([&](SinkhornOp s) -> Error {
                c << llvm::formatv(
                    "moe_k::route::sinkhorn<{0}>({1}, T, {2}, {3}, {4});",
                    dim(s.getInput(), 1), in[0], s.getIterations(),
                    floatLiteral(s.getEpsilon().convertToFloat()), out[0]);
                return Error::success();
              })
              .Default([&](Operation *other) -> Error {
                return makeError(other, "the routing kernel has no "
                                        "cross-token template for this op "
                                        "(in moe.fused_route at " +
                                            locString(op) + ")");
              });
      if (err)
        return std::move(err);
      return call;
    };
    std::string crossIn0Type;
    if (choice) {
      auto cross = cast<CrossTokenOpInterface>(choice);
      // Phase 1 ends with every token's rows of the op's operands in
      // global memory; the last block runs the op over the batch.
      SmallVector<std::string> ins, outs;
      for (auto [i, v] : llvm::enumerate(cross.getTokenRowOperands())) {
        int64_t n = dim(v, 1);
        std::string buffer;
        if (i == 0) {
          // The first operand goes to the fixed scratch slot.
          bool isInt = cast<RankedTensorType>(v.getType())
                           .getElementType()
                           .isInteger(32);
          int scratch = fixedValue(
              isInt ? ::moe::ElementType::I32 : ::moe::ElementType::F32, 0, n);
          launch.args[scratchSlot] = valueBinding(scratch);
          crossIn0Type = isInt ? "int" : "float";
          buffer = "crossIn0";
        } else {
          buffer = bufferPtr(v, "crossIn");
        }
        if (v == arg)
          stagedArg = true;
        noteGiven(v);
        p1 << "      // " << choice->getName() << " (operand " << i << ")\n";
        p1 << llvm::formatv("      if (lane == 0) {\n        for (int i = 0; "
                            "i < {0}; ++i) {1}[t * {0} + i] = ({2})[i];\n"
                            "      }\n      __syncwarp();\n",
                            n, buffer, at(v));
        ins.push_back(buffer);
      }
      // Whether phase 2 runs ops per token after the cross-token op (then
      // the op writes to scratch, not to the outputs).
      bool late =
          !program.afterCrossToken.empty() || choice->getNumResults() != 2 ||
          yIds != choice->getResult(0) || yWeights != choice->getResult(1);
      if (late) {
        for (Value r : choice->getResults())
          outs.push_back(bufferPtr(r, "crossOut"));
      } else {
        outs = {"outIds", "outWeights"};
      }
      Expected<std::string> call = crossCall(choice, ins, outs);
      if (!call)
        return call.takeError();
      p2 << "    // " << choice->getName() << "\n    " << *call << "\n";
      if (late) {
        // Rows computed in phase 1 and read in phase 2 stay in global
        // memory in between.
        std::string load;
        llvm::raw_string_ostream ld(load);
        auto carry = [&](Value v, const std::string &buffer) {
          int64_t n = dim(v, 1);
          p1 << llvm::formatv("      if (lane == 0)\n        for (int i = 0; "
                              "i < {0}; ++i) {1}[t * {0} + i] = {2}[i];\n",
                              n, buffer, at(v));
          ld << llvm::formatv("        for (int i = 0; i < {0}; ++i) {1}[i] "
                              "= {2}[t * {0} + i];\n",
                              n, at(v), buffer);
        };
        for (auto [r, buffer] : llvm::zip(choice->getResults(), outs))
          ld << llvm::formatv("        for (int i = 0; i < {0}; ++i) {1}[i] "
                              "= {2}[t * {0} + i];\n",
                              dim(r, 1), at(r), buffer);
        for (Value v : program.carried)
          carry(v, bufferPtr(v, "carry"));
        p1 << "      __syncwarp();\n";
        p2 << llvm::formatv("    // router ops after {0}, per token\n"
                            "    for (long long t = warp; t < T; t += {1}) {{\n"
                            "      if (lane == 0) {{\n{2}      }\n"
                            "      __syncwarp();\n",
                            choice->getName(), kWarps, load);
        auto in = [&](Value v) -> std::string { return at(v); };
        for (Operation *o : program.afterCrossToken) {
          Expected<std::string> call = rowCall(o, in);
          if (!call)
            return call.takeError();
          p2 << "      // " << o->getName() << "\n";
          p2 << rowGuard(o) << *call << "\n      }\n";
          p2 << "      __syncwarp();\n";
        }
        p2 << llvm::formatv("      if (lane == 0)\n"
                            "        for (int s = 0; s < {0}; ++s) {{\n"
                            "          outIds[t * {0} + s] = {1}[s];\n"
                            "          outWeights[t * {0} + s] = {2}[s];\n"
                            "        }\n      __syncwarp();\n    }\n"
                            "    __syncthreads();\n",
                            K, at(yIds), at(yWeights));
      }
    } else {
      p1 << llvm::formatv("      if (lane == 0)\n"
                          "        for (int s = 0; s < {0}; ++s) {{\n"
                          "          outIds[t * {0} + s] = {1}[s];\n"
                          "          outWeights[t * {0} + s] = {2}[s];\n"
                          "        }\n",
                          K, at(yIds), at(yWeights));
    }

    // The text both routing kernels share: buffers, shared rows, indices.
    std::string head;
    llvm::raw_string_ostream hd(head);
    hd << llvm::formatv("  const {0} *x = static_cast<const {0} *>(args."
                        "buffers[MOE_ROUTE_SLOT_INPUT]);\n",
                        tx);
    hd << "  int *outIds = static_cast<int "
          "*>(args.buffers[MOE_ROUTE_SLOT_IDS]);"
          "\n  float *outWeights = static_cast<float *>("
          "args.buffers[MOE_ROUTE_SLOT_WEIGHTS]);\n"
          "  int *counts = static_cast<int *>("
          "args.buffers[MOE_ROUTE_SLOT_COUNTS]);\n"
          "  int *offsets = static_cast<int *>("
          "args.buffers[MOE_ROUTE_SLOT_OFFSETS]);\n"
          "  int *rows = static_cast<int *>(args.buffers[MOE_ROUTE_SLOT_ROWS]);"
          "\n  unsigned *counter = static_cast<unsigned *>("
          "args.buffers[MOE_ROUTE_SLOT_COUNTER]);\n"
          "  int *slotRow = static_cast<int *>("
          "args.buffers[MOE_ROUTE_SLOT_SLOT_ROW]);\n";
    if (choice)
      hd << llvm::formatv("  {0} *crossIn0 = static_cast<{0} *>("
                          "args.buffers[MOE_ROUTE_SLOT_CHOICE_SCORES]);\n",
                          crossIn0Type);
    if (seqScores)
      hd << "  const float *seqScores = static_cast<const float *>("
            "args.buffers[MOE_ROUTE_SLOT_SEQ_SCORES]);\n"
            "  const int *seqMap = static_cast<const int *>("
            "args.buffers[MOE_ROUTE_SLOT_SEQ_MAP]);\n";
    if (stagedGiven[0])
      hd << "  const int *givenIds = static_cast<const int *>("
            "args.buffers[MOE_ROUTE_SLOT_GIVEN_IDS]);\n";
    if (stagedGiven[1])
      hd << "  const float *givenWeights = static_cast<const float *>("
            "args.buffers[MOE_ROUTE_SLOT_GIVEN_WEIGHTS]);\n";
    hd << pointers << shared;
    hd << "  MOE_SHARED(unsigned, lastFlag, 1);\n";
    hd << "  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;\n"
          "  const long long T = args.num_tokens;\n";
    std::string stage;
    llvm::raw_string_ostream st(stage);
    if (stagedArg)
      st << llvm::formatv(
          "      if (lane == 0)\n        for (int i = 0; i < "
          "{0}; ++i)\n          {1}[warp * {0} + i] = "
          "moe_k::toF32(x[t * {0} + i]);\n      __syncwarp();\n",
          H, rowsOf[arg]);
    for (int i = 0; i < 2; ++i)
      if (stagedGiven[i])
        st << llvm::formatv("      if (lane == 0)\n        for (int i = 0; i < "
                            "{0}; ++i)\n          {1}[warp * {0} + i] = "
                            "{2}[t * {0} + i];\n      __syncwarp();\n",
                            dim(givenArgs[i], 1), rowsOf[givenArgs[i]],
                            i == 0 ? "givenIds" : "givenWeights");
    // moe.similarity_mix restages the rows of the tokens it recomputes.
    for (size_t pos = phase1.find(kStagePlaceholder); pos != std::string::npos;
         pos = phase1.find(kStagePlaceholder, pos + stage.size()))
      phase1.replace(pos, kStagePlaceholder.size(), stage);
    auto replaceAll = [](std::string text, StringRef from, StringRef to) {
      for (size_t pos = text.find(from); pos != std::string::npos;
           pos = text.find(from, pos + to.size()))
        text.replace(pos, from.size(), to.str());
      return text;
    };
    std::string routePhase1 = phase1;
    for (const auto &[placeholder, load] : logitLoads)
      routePhase1 = replaceAll(routePhase1, placeholder, load);
    std::string dispatch = llvm::formatv(
        "    moe_k::route::planDispatch<{0}, {1}, {2}>(outIds, T, counts, "
        "offsets, rows, slotRow);\n  }\n}\n",
        E, K, kWarps);

    os << "// moe.fused_route\n";
    os << "extern \"C\" __global__ void __launch_bounds__(" << 32 * kWarps
       << ") " << name << "(MoEKernelArgs args) {\n";
    os << head;
    os << llvm::formatv("  for (long long first = (long long)blockIdx.x * {0}; "
                        "first < T; first += (long long)gridDim.x * {0}) {{\n"
                        "    const long long t = first + warp;\n"
                        "    if (t < T) {{\n",
                        kWarps);
    os << stage << routePhase1 << "    }\n  }\n";
    os << "  if (moe_k::route::lastBlockDone(counter, lastFlag)) {\n";
    os << phase2 << dispatch;
    os << "#ifdef MOE_EMU\nMOE_EMU_EXPORT_KERNEL(" << name << ")\n#endif\n\n";
    if (launch.args.size() > MOE_MAX_KERNEL_BUFFERS)
      return makeError(op, "the router reads " +
                               llvm::Twine(launch.args.size()) +
                               " buffers, more than a kernel's " +
                               llvm::Twine(MOE_MAX_KERNEL_BUFFERS));
    ::moe::Launch small = launch;
    if (smallT)
      launch.minSlots = ::moe::kSmallRouteMaxTokens + 1;
    pushLaunch(std::move(launch));
    endKernel();
    if (!smallT)
      return Error::success();

    // The small-T kernel: every block computes its share of the router
    // projection (routerParts: N x S items of a row chunk each, one per
    // warp), and the last block to finish routes the T tokens (its warps
    // in turn), runs phase 2 and plans the dispatch: one launch.
    std::string smallName = beginKernel("moe_route_small");
    const int64_t S = (H + proj.chunk - 1) / proj.chunk;
    const int64_t N = proj.N;
    int parts = S == 1 ? proj.logits
                       : fixedValue(::moe::ElementType::F32, 0, N * S);
    small.kernel = smallName;
    small.origin = "moe.router_linear and " + small.origin + " (small T)";
    small.args[proj.slot] = valueBinding(parts);
    int weightSlot = static_cast<int>(small.args.size());
    small.args.push_back(proj.weight);
    small.args.push_back(proj.bias);
    small.maxSlots = ::moe::kSmallRouteMaxTokens;
    small.tokensPerBlock = ::moe::kSmallRouteMaxTokens;
    small.gridColumns = (N * S + kWarps - 1) / kWarps;
    small.maxBlocks = int64_t(1) << 20;
    if (small.args.size() > MOE_MAX_KERNEL_BUFFERS)
      return makeError(op, "the small-T router reads " +
                               llvm::Twine(small.args.size()) +
                               " buffers, more than a kernel's " +
                               llvm::Twine(MOE_MAX_KERNEL_BUFFERS));
    std::string smallPhase1 = phase1;
    for (const auto &[placeholder, load] : logitLoads)
      smallPhase1 = replaceAll(
          smallPhase1, placeholder,
          llvm::formatv("moe_k::route::loadLogitParts<{0}, {1}, {2}, {3}>("
                        "lg{4}, pb, t, {5}, lane);",
                        N, S, S > 1 && proj.hasBias ? "true" : "false",
                        proj.tb, proj.slot, proj.row)
              .str());
    // One block per SM is all it needs: without the minimum, ptxas caps
    // the registers for occupancy and spills (gpt-oss, bf16 activations).
    os << "// moe.router_linear and moe.fused_route at small T (one launch)\n";
    os << "extern \"C\" __global__ void __launch_bounds__(" << 32 * kWarps
       << ", 1) " << smallName << "(MoEKernelArgs args) {\n";
    os << head;
    os << llvm::formatv(
        "  const {0} *pw = static_cast<const {0} *>(args.buffers[{2}]);\n"
        "  const {1} *pb = static_cast<const {1} *>(args.buffers[{3}]);\n"
        "  moe_k::route::routerParts<{4}, {0}, {1}, {5}, {6}, {7}, {8}{9}>(x, "
        "pw, pb, static_cast<float *>(args.buffers[{10}]), T{11});\n",
        proj.tw, proj.tb, weightSlot, weightSlot + 1, tx, H, N,
        proj.hasBias ? "true" : "false", proj.chunk, proj.cosineParams,
        proj.slot, proj.cosineArgs);
    os << "  if (moe_k::route::lastBlockDone(counter, lastFlag)) {\n";
    os << llvm::formatv("    for (long long t = warp; t < T; t += {0}) {{\n",
                        kWarps);
    os << stage << smallPhase1 << "    }\n";
    os << "    __syncthreads();\n";
    os << phase2 << dispatch;
    os << "#ifdef MOE_EMU\nMOE_EMU_EXPORT_KERNEL(" << smallName
       << ")\n#endif\n\n";
    pushLaunch(std::move(small));
    endKernel();
    return Error::success();
  }

  //===--------------------------------------------------------------------===//
  // moe.fused_experts
  //===--------------------------------------------------------------------===//

  struct FFNInfo {
    Operation *op = nullptr;
    Value gate, up, gateUp, down, gateBias, upBias, gateUpBias, downBias;
    int64_t H = 0, I = 0, E = 1;
    bool fused = false, interleaved = false, inOut = false;
    /// down(act(up x + b)): no gate projection (non_gated).
    bool nonGated = false;
    Activation act = Activation::silu;
    float alpha = 1.702f, limit = 7.0f;
    /// Factored weights (moe.low_rank): gate/up/gateUp/down above are the
    /// A factors, these the B factors; ranks of gate (or gate_up), up and
    /// down.
    bool lowRank = false;
    Value gateB, upB, gateUpB, downB;
    int64_t rg = 0, ru = 0, rd = 0;
    /// Per-expert intermediate sizes (moe.expert_ffn widths; empty: I for
    /// every expert) and the widest of them (I without widths).
    SmallVector<int64_t> widths;
    int64_t iw = 0;
    /// Block-scaled weights (quant_block): 1 FP8 E4M3FN with f32 scales, 2
    /// MXFP4 with E8M0 scales; the block; the scales of each projection.
    int quant = 0;
    int64_t qb0 = 1, qb1 = 1;
    Value gateScale, upScale, gateUpScale, downScale;
    /// FP8 weights on FP8 tensor cores (moe.fp8_activations): the grouped
    /// GEMMs are fp8GateUp / fp8Down (moe_grouped_fp8.cuh).
    bool fp8Mma = false;
  };

  /// Whether the grouped GEMMs of `f` take their weight tiles by TMA
  /// under --gemm=tma: the rule of moe_k::grouped::TmaWeights (the
  /// generated source asserts that both agree).
  static bool tmaWeights(const FFNInfo &f) {
    Type t = cast<ShapedType>((f.fused ? f.gateUp : f.up).getType())
                 .getElementType();
    return !f.quant && !f.fp8Mma && (t.isBF16() || t.isF16()) && !f.inOut &&
           !f.lowRank && !(f.fused && f.interleaved) && f.widths.empty() &&
           f.H % 8 == 0 && f.I % 8 == 0;
  }

  /// The tensor maps of one grouped GEMM on the TMA path: gateUp reads gate
  /// and up (or gate_up, or up alone), down reads down, each in
  /// moe_k::grouped tiles (BN rows of BK weights, the 64-byte swizzle).
  static void addTensorMapRequests(::moe::Launch &launch, const FFNInfo &f,
                                   bool gateUp, bool sharedFFN) {
    const int first =
        sharedFFN ? MOE_EXPERTS_SLOT_SHARED_GATE : MOE_EXPERTS_SLOT_ROUTED_GATE;
    SmallVector<int> ffnSlots;
    if (!gateUp)
      ffnSlots.push_back(MOE_FFN_SLOT_DOWN);
    else if (f.nonGated)
      ffnSlots.push_back(MOE_FFN_SLOT_UP);
    else if (f.fused)
      ffnSlots.push_back(MOE_FFN_SLOT_GATE_UP);
    else
      ffnSlots.append({MOE_FFN_SLOT_GATE, MOE_FFN_SLOT_UP});
    for (int ffnSlot : ffnSlots) {
      ::moe::TensorMapRequest request;
      request.slot = first + ffnSlot;
      request.table = MOE_EXPERTS_SLOT_TENSOR_MAPS;
      request.entry = first + ffnSlot - MOE_EXPERTS_SLOT_ROUTED_GATE;
      request.boxRows = kTileCols;
      request.boxCols = kTileDepth;
      request.swizzleBytes = 2 * kTileDepth;
      launch.tensorMaps.push_back(request);
    }
  }

  template <typename OpT> FFNInfo ffnInfo(OpT o, bool perExpert) {
    FFNInfo f;
    f.op = o;
    f.gate = o.getGate();
    f.up = o.getUp();
    f.gateUp = o.getGateUp();
    f.down = o.getDown();
    f.gateBias = o.getGateBias();
    f.upBias = o.getUpBias();
    f.gateUpBias = o.getGateUpBias();
    f.downBias = o.getDownBias();
    f.fused = static_cast<bool>(f.gateUp);
    f.nonGated = o.getNonGated();
    f.interleaved = o.getGateUpLayout() == GateUpLayout::interleaved;
    f.inOut = o.getWeightLayout() == WeightLayout::in_out;
    f.act = o.getActivation();
    f.alpha = o.getAlpha().convertToFloat();
    f.limit = o.getLimit().convertToFloat();
    f.H = dim(o.getInput(), 1);
    auto down = cast<RankedTensorType>(o.getDown().getType());
    f.I = f.inOut ? down.getDimSize(down.getRank() - 2)
                  : down.getDimSize(down.getRank() - 1);
    f.E = perExpert ? down.getDimSize(0) : 1;
    f.iw = f.I;
    if (std::optional<ArrayRef<int64_t>> block = o.getQuantBlock()) {
      f.quant = isa<Float4E2M1FNType>(
                    cast<ShapedType>(f.down.getType()).getElementType())
                    ? 2
                    : 1;
      f.qb0 = (*block)[0];
      f.qb1 = (*block)[1];
      f.gateScale = o.getGateScale();
      f.upScale = o.getUpScale();
      f.gateUpScale = o.getGateUpScale();
      f.downScale = o.getDownScale();
    }
    if constexpr (std::is_same_v<OpT, ExpertFFNOp>) {
      if (std::optional<ArrayRef<int64_t>> w = o.getWidths()) {
        f.widths.assign(w->begin(), w->end());
        f.iw = *llvm::max_element(f.widths);
      }
    }
    return f;
  }

  void ffnStruct(llvm::raw_ostream &s, StringRef name, const FFNInfo &f) {
    Value anyWeight = f.fused ? f.gateUp : f.up;
    Value anyBias = f.gateUpBias ? f.gateUpBias
                    : f.gateBias ? f.gateBias
                    : f.upBias   ? f.upBias
                                 : f.downBias;
    s << "struct " << name << " {\n";
    // Block-scaled codes: TW is the grouped kernels' tile type (bf16), the
    // codes are read as bytes (moe_quant.cuh).
    s << "  using TW = "
      << (f.quant ? "__nv_bfloat16" : cxxType(anyWeight.getType())) << ";\n";
    s << llvm::formatv("  static constexpr int Quant = {0}, QB0 = {1}, QB1 = "
                       "{2}; // {3}\n",
                       f.quant, f.qb0, f.qb1,
                       f.quant == 2   ? "MXFP4: FP4 E2M1 codes, E8M0 scales"
                       : f.quant == 1 ? "FP8 E4M3FN codes, f32 scales"
                                      : "not quantized");
    s << "  using TS = " << (f.quant == 2 ? "unsigned char" : "float")
      << ";\n";
    s << "  using TB = " << (anyBias ? cxxType(anyBias.getType()) : "float")
      << ";\n";
    s << llvm::formatv("  static constexpr int H = {0}, I = {1}, E = {2};\n",
                       f.H, f.I, f.E);
    s << llvm::formatv("  static constexpr bool Fused = {0}, Interleaved = "
                       "{1}, InOut = {2};\n",
                       f.fused, f.interleaved, f.inOut);
    s << llvm::formatv("  static constexpr int Act = {0}; // {1}\n",
                       static_cast<int>(f.act), stringifyActivation(f.act));
    s << "  static constexpr float Alpha = " << floatLiteral(f.alpha)
      << ", Limit = " << floatLiteral(f.limit) << ";\n";
    s << llvm::formatv("  static constexpr bool GateBias = {0}, UpBias = {1}, "
                       "GateUpBias = {2}, DownBias = {3};\n",
                       static_cast<bool>(f.gateBias),
                       static_cast<bool>(f.upBias),
                       static_cast<bool>(f.gateUpBias),
                       static_cast<bool>(f.downBias));
    s << llvm::formatv("  static constexpr bool LowRank = {0};\n"
                       "  static constexpr int RG = {1}, RU = {2}, RD = {3};\n",
                       f.lowRank, f.rg, f.ru, f.rd);
    // Non-gated: the kernels read and multiply the up projection only.
    s << llvm::formatv("  static constexpr bool NoGate = {0};\n", f.nonGated);
    // Experts of unequal width: the kernels stop every loop over the
    // intermediate units at width(e) (a chain of comparisons over runs of
    // equal widths: registers only, no table in memory); IVec divides I and
    // every width, so vector loads never straddle an expert's end.
    int64_t ivec = f.I;
    for (int64_t w : f.widths)
      ivec = std::gcd(ivec, w);
    s << llvm::formatv("  static constexpr bool Widths = {0};\n"
                       "  static constexpr int IW = {1}, IVec = {2};\n",
                       !f.widths.empty(), f.iw, ivec);
    s << "  __host__ __device__ static constexpr int width(long long e) {\n"
         "    return ";
    if (f.widths.empty()) {
      s << "I;";
    } else {
      for (size_t i = 0; i < f.widths.size(); ++i) {
        size_t end = i;
        while (end + 1 < f.widths.size() && f.widths[end + 1] == f.widths[i])
          ++end;
        if (end + 1 == f.widths.size()) {
          s << f.widths[i] << ";";
          break;
        }
        s << "e < " << end + 1 << " ? " << f.widths[i] << " : ";
        i = end;
      }
    }
    s << "\n  }\n";
    s << "};\n";
  }

  /// Binds an FFN set's eight slots (MoEFFNSlot order) from `first`.
  template <int N>
  Error bindFFN(SlotArgs<N> &args, int first, const FFNInfo &f,
                Operation *where) {
    const std::pair<int, Value> slots[] = {
        {MOE_FFN_SLOT_GATE, f.gate},
        {MOE_FFN_SLOT_UP, f.up},
        {MOE_FFN_SLOT_GATE_UP, f.gateUp},
        {MOE_FFN_SLOT_DOWN, f.down},
        {MOE_FFN_SLOT_GATE_BIAS, f.gateBias},
        {MOE_FFN_SLOT_UP_BIAS, f.upBias},
        {MOE_FFN_SLOT_GATE_UP_BIAS, f.gateUpBias},
        {MOE_FFN_SLOT_DOWN_BIAS, f.downBias}};
    for (auto [slot, v] : slots) {
      if (!v) {
        args.setNull(first + slot);
        continue;
      }
      FailureOr<::moe::Binding> b = weightBinding(v);
      if (failed(b))
        return makeError(where, "an expert weight is neither a moe.weight "
                                "nor a float constant");
      args.set(first + slot, *b);
    }
    // The scales of block-scaled weights (MoEFFNScaleSlot order), null
    // otherwise.
    int scales = first == MOE_EXPERTS_SLOT_SHARED_GATE
                     ? MOE_EXPERTS_SLOT_SHARED_GATE_SCALE
                     : MOE_EXPERTS_SLOT_ROUTED_GATE_SCALE;
    const std::pair<int, Value> scaleSlots[] = {
        {MOE_FFN_SLOT_GATE_SCALE, f.gateScale},
        {MOE_FFN_SLOT_UP_SCALE, f.upScale},
        {MOE_FFN_SLOT_GATE_UP_SCALE, f.gateUpScale},
        {MOE_FFN_SLOT_DOWN_SCALE, f.downScale}};
    for (auto [slot, v] : scaleSlots) {
      if (!v) {
        args.setNull(scales + slot);
        continue;
      }
      FailureOr<::moe::Binding> b = weightBinding(v);
      if (failed(b))
        return makeError(where, "the scales of quantized expert weights are "
                                "not a moe.weight");
      args.set(scales + slot, *b);
    }
    return Error::success();
  }

  /// Starts the text of a kernel (or of a kernel family sharing one
  /// configuration): returns the placeholder that stands for its name until
  /// endKernel() names it from its text.
  std::string beginKernel(StringRef prefix) {
    std::string placeholder =
        "@kernel" + std::to_string(names.size() + openKernels.size()) + "@";
    openKernels.push_back({prefix.str(), placeholder});
    stream.open.emplace_back();
    return placeholder;
  }

  void endKernel() {
    auto [prefix, placeholder] = openKernels.pop_back_val();
    std::string text = std::move(stream.open.back());
    stream.open.pop_back();
    names.push_back({placeholder, kernels.add(prefix, placeholder, text)});
  }

  /// Adds a launch of the kernel being written (between its beginKernel
  /// and endKernel) and writes its contract (KernelContract.h) into the
  /// kernel's text: the contract is then part of the text that names the
  /// kernel, and a package's plan is checked against it when it is opened.
  void pushLaunch(::moe::Launch launch) {
    if (openKernels.empty() ||
        !StringRef(launch.kernel).starts_with(openKernels.back().second))
      llvm::report_fatal_error("code generator: launch of " +
                               llvm::Twine(launch.kernel) +
                               " outside its kernel's text");
    os << ::moe::formatKernelContract(::moe::contractOf(launch, plan))
       << "\n";
    plan.launches.push_back(std::move(launch));
  }

  /// A kernel entry point `name(MoEKernelArgs args) { call; }` with its
  /// launch bounds, and its entry for the CPU emulation.
  void kernelEntry(StringRef name, StringRef bounds, StringRef call) {
    os << "extern \"C\" __global__ void __launch_bounds__(" << bounds << ") "
       << name << "(MoEKernelArgs args) {\n  " << call << ";\n}\n";
    os << "#ifdef MOE_EMU\nMOE_EMU_EXPORT_KERNEL(" << name << ")\n#endif\n";
  }

  Error experts(FusedExpertsOp op) {
    // The body as the kernels implement it (the verifier's matcher): every
    // field below is generated, nothing else is in the body.
    FusedExpertsRefusal refusal;
    FailureOr<FusedExpertsBody> body =
        matchFusedExpertsBody(op.getBody().front(), refusal);
    if (failed(body))
      return makeError(refusal.op, refusal.reason);
    FFNOp shared = body->shared;
    RouterLinearOp sharedGate = body->sharedGate;
    std::string name = beginKernel("moe_experts");
    FFNInfo r = ffnInfo(body->routed, true);
    FFNInfo s = shared ? ffnInfo(shared, false) : r;
    int64_t K = dim(op.getIds(), 1);
    std::string tx = cxxType(op.getInput().getType());
    int64_t decodeSlots = ::moe::decodeMaxSlots(r.E, K);

    // Which kernels: the decode kernels, the grouped kernels (prefill), or
    // both with a slot-count gate (layout runtime). Both read the dispatch
    // plan of the moe.fused_route (counts, offsets, rows, slotRow).
    DispatchLayout layout = op.getLayout();
    bool withDecode = layout != DispatchLayout::grouped;
    bool withGrouped = layout != DispatchLayout::per_token;
    // Where `runtime` switches paths: the decode kernels up to this many
    // routed slots (the expected rows per distinct expert, Plan.h).
    // Factored weights run as two thin GEMMs per projection, never as the
    // product: z = B . x into f32 scratch, then A against z, in the decode
    // kernels (one more stage per projection pair) and in the grouped ones
    // (moe_k::grouped::factor before gateUp and before down).
    if (body->hasFactoredWeights()) {
      if (!body->routedDown ||
          !(body->routedGateUp || (body->routedGate && body->routedUp)))
        return makeError(body->routed,
                         "factored expert weights: every projection (gate "
                         "and up, or gate_up, and down) must be moe.low_rank, "
                         "as --moe-compress-experts writes them");
      if (r.inOut)
        return makeError(body->routed, "factored expert weights must be "
                                       "out_in (moe.low_rank products are "
                                       "[E, out, in])");
      LowRankOp gate =
          body->routedGateUp ? body->routedGateUp : body->routedGate;
      r.lowRank = true;
      r.gate = body->routedGate ? body->routedGate.getA() : Value();
      r.gateB = body->routedGate ? body->routedGate.getB() : Value();
      r.up = body->routedUp ? body->routedUp.getA() : Value();
      r.upB = body->routedUp ? body->routedUp.getB() : Value();
      r.gateUp = body->routedGateUp ? body->routedGateUp.getA() : Value();
      r.gateUpB = body->routedGateUp ? body->routedGateUp.getB() : Value();
      r.down = body->routedDown.getA();
      r.downB = body->routedDown.getB();
      r.rg = gate.getRank();
      r.ru = body->routedUp ? body->routedUp.getRank() : 0;
      r.rd = body->routedDown.getRank();
    }
    auto slotRowIt = slotRowOf.find(op.getRows());
    if (slotRowIt == slotRowOf.end())
      return makeError(op, "the expert kernels need the dispatch plan of a "
                           "moe.fused_route");
    if (shared && s.H != r.H)
      return makeError(op, "the shared experts' width differs from the "
                           "routed experts'");
    // Block-scaled weights: the kernels stream [out, in] rows of codes
    // (moe_quant.cuh); what they do not read is refused by name.
    for (const FFNInfo *f : {&r, &s}) {
      if (!f->quant)
        continue;
      std::string t;
      llvm::raw_string_ostream ts(t);
      ts << cast<ShapedType>(f->down.getType()).getElementType();
      StringRef why = f->inOut ? "in_out weights (the kernels read [out, in] "
                                 "rows of codes)"
                      : !f->widths.empty() ? "experts of unequal widths"
                      : f->lowRank         ? "factored weights"
                                           : "";
      if (!why.empty())
        return makeError(f->op, "quantized expert weights (" + t +
                                    " with block scales) with " + why +
                                    " are not supported by the CUDA backend; "
                                    "run the reference executor (moe-run "
                                    "--backend reference)");
    }

    // FP8 tensor cores for FP8 weights (moe_grouped_fp8.cuh): a reduction
    // step is one block of QB1 input channels, whole k32 mma steps.
    if (op->hasAttr(kFp8ActivationsAttrName)) {
      for (FFNInfo *f : {&r, &s}) {
        if (f->quant != 1)
          continue;
        if (f->qb1 % 32 != 0 || f->qb1 > 128)
          return makeError(f->op, llvm::formatv(
                                      "moe.fp8_activations: the FP8 weights' "
                                      "block has {0} input channels; the FP8 "
                                      "tensor-core path needs a multiple of "
                                      "32 up to 128 (DeepSeek-V3: 128)",
                                      f->qb1)
                                      .str());
        f->fp8Mma = true;
      }
    }

    // Argument slots shared by every kernel of the op (KernelABI.h,
    // MOE_EXPERTS_SLOT_*).
    SlotArgs<MOE_EXPERTS_NUM_SLOTS> args("experts");
    std::string origin = "moe.fused_experts at " + locString(op);
    for (auto [slot, v] :
         {std::pair<int, Value>{MOE_EXPERTS_SLOT_INPUT, op.getInput()},
          {MOE_EXPERTS_SLOT_IDS, op.getIds()},
          {MOE_EXPERTS_SLOT_WEIGHTS, op.getWeights()},
          {MOE_EXPERTS_SLOT_OFFSETS, op.getOffsets()},
          {MOE_EXPERTS_SLOT_ROWS, op.getRows()}}) {
      Expected<int> id = lookup(op, v);
      if (!id)
        return id.takeError();
      args.set(slot, valueBinding(*id));
    }
    args.set(MOE_EXPERTS_SLOT_SLOT_ROW, valueBinding(slotRowIt->second));
    FailureOr<int> y = tokenValue(op.getResult());
    if (failed(y))
      return makeError(op, "unsupported result type");
    args.set(MOE_EXPERTS_SLOT_OUTPUT, valueBinding(*y));
    if (Error err = bindFFN(args, MOE_EXPERTS_SLOT_ROUTED_GATE, r, op))
      return err;
    for (auto [slot, v] :
         {std::pair<int, Value>{MOE_EXPERTS_SLOT_ROUTED_GATE_B, r.gateB},
          {MOE_EXPERTS_SLOT_ROUTED_UP_B, r.upB},
          {MOE_EXPERTS_SLOT_ROUTED_GATE_UP_B, r.gateUpB},
          {MOE_EXPERTS_SLOT_ROUTED_DOWN_B, r.downB}}) {
      if (!v) {
        args.setNull(slot);
        continue;
      }
      FailureOr<::moe::Binding> b = weightBinding(v);
      if (failed(b))
        return makeError(op, "a factor of the expert weights is neither a "
                             "moe.weight nor a float constant");
      args.set(slot, *b);
    }
    if (shared) {
      if (Error err = bindFFN(args, MOE_EXPERTS_SLOT_SHARED_GATE, s, op))
        return err;
    } else {
      for (int i = 0; i < MOE_FFN_NUM_SLOTS; ++i)
        args.setNull(MOE_EXPERTS_SLOT_SHARED_GATE + i);
      for (int i = 0; i < MOE_FFN_SCALE_NUM_SLOTS; ++i)
        args.setNull(MOE_EXPERTS_SLOT_SHARED_GATE_SCALE + i);
    }
    // The shared experts' gate sigmoid(x . w + b), bias included.
    Value gateBias = sharedGate ? sharedGate.getBias() : Value();
    for (auto [slot, v] :
         {std::pair<int, Value>{MOE_EXPERTS_SLOT_SCALE_WEIGHT,
                                sharedGate ? sharedGate.getWeight() : Value()},
          {MOE_EXPERTS_SLOT_SCALE_BIAS, gateBias}}) {
      if (!v) {
        args.setNull(slot);
        continue;
      }
      FailureOr<::moe::Binding> b = weightBinding(v);
      if (failed(b))
        return makeError(sharedGate, "a weight of the shared-expert gate is "
                                     "neither a moe.weight nor a float "
                                     "constant");
      args.set(slot, *b);
    }

    os << "// moe.fused_experts (layout " << stringifyDispatchLayout(layout)
       << ": "
       << (r.lowRank ? "factored weights (moe.low_rank), two thin GEMMs "
                       "per projection: "
                     : "")
       << (withDecode && withGrouped
               ? "decode kernels up to " + std::to_string(decodeSlots) +
                     " routed slots, grouped kernels "
                     "above"
           : withDecode ? "decode kernels"
                        : "grouped kernels")
       << ")\n";
    os << "namespace " << name << "_cfg {\n";
    ffnStruct(os, "Routed", r);
    if (shared)
      ffnStruct(os, "Shared", s);
    os << "struct Cfg {\n  using TX = " << tx << ";\n  using Routed = "
       << name << "_cfg::Routed;\n  using Shared = " << name << "_cfg::"
       << (shared ? "Shared" : "Routed") << ";\n";
    os << llvm::formatv("  static constexpr int K = {0};\n", K);
    os << llvm::formatv(
        "  static constexpr bool ScaleInput = {0}, Unweighted "
        "= {1}, HasShared = {2}, SharedGate = {3};\n",
        body->permute.getScaleByWeight(), body->combine.getUnweighted(),
        static_cast<bool>(shared), static_cast<bool>(sharedGate));
    os << "  using TG = "
       << (sharedGate ? cxxType(sharedGate.getWeight().getType()) : "float")
       << ";\n  using TGB = "
       << (gateBias ? cxxType(gateBias.getType()) : "float") << ";\n";
    os << llvm::formatv("  static constexpr bool SharedGateBias = {0};\n",
                        static_cast<bool>(gateBias));
    os << "};\n";
    // The decode kernels' work items: (active expert, chunk) then the
    // shared FFN's chunks (moe_experts.cuh). Chunks are as large as still
    // gives kDecodeBlocks items at T = 1 (K active experts), so that a
    // single token keeps every SM streaming weights; a shared chunk does
    // about the work of a routed one.
    int64_t active1 = std::min<int64_t>(K, r.E);
    int64_t upUnits = decodeChunk(active1 * r.iw + (shared ? s.I : 0));
    int64_t downCols = decodeChunk((active1 + (shared ? 1 : 0)) * r.H);
    int64_t sharedUpUnits = upUnits;
    int64_t sharedDownCols =
        shared ? decodeChunkNear(downCols * r.I / std::max<int64_t>(s.I, 1))
               : downCols;
    // Factor stages of factored weights: RG + RU rows of B . x, RD rows of
    // B_d . h per routed row.
    auto pad8 = [](int64_t n) { return (n + 7) / 8 * 8; };
    int64_t factorIn = r.rg + r.ru;
    int64_t factorInUnits = decodeChunk(active1 * factorIn);
    int64_t factorDownUnits = decodeChunk(active1 * r.rd);
    if (withDecode) {
      os << llvm::formatv("struct Decode {{\n  static constexpr int UpUnits = "
                          "{0}, DownCols = {1}, SharedUpUnits = {2}, "
                          "SharedDownCols = {3};\n",
                          upUnits, downCols, sharedUpUnits, sharedDownCols);
      if (r.lowRank)
        os << llvm::formatv("  static constexpr int FactorInUnits = {0}, "
                            "FactorDownUnits = {1};\n",
                            factorInUnits, factorDownUnits);
      os << "};\n";
    }
    os << "} // namespace " << name << "_cfg\n";

    // Scratch, per token: h and the per-row outputs of the K routed slots
    // (f32), the shared FFN's h and output.
    args.set(MOE_EXPERTS_SLOT_HIDDEN,
             valueBinding(fixedValue(::moe::ElementType::F32, 0, K * r.I)));
    args.set(MOE_EXPERTS_SLOT_OUT,
             valueBinding(fixedValue(::moe::ElementType::F32, 0, K * r.H)));
    if (shared) {
      args.set(MOE_EXPERTS_SLOT_SHARED_HIDDEN,
               valueBinding(fixedValue(::moe::ElementType::F32, 0, s.I)));
      args.set(MOE_EXPERTS_SLOT_SHARED_OUT,
               valueBinding(fixedValue(::moe::ElementType::F32, 0, r.H)));
    } else {
      args.setNull(MOE_EXPERTS_SLOT_SHARED_HIDDEN);
      args.setNull(MOE_EXPERTS_SLOT_SHARED_OUT);
    }
    // Factored weights: B . x of gate and up, B_d . h, per routed row, in
    // segments padded to 8 f32 (moe_k::experts::FactorPad).
    if (r.lowRank) {
      args.set(MOE_EXPERTS_SLOT_FACTOR_IN,
               valueBinding(fixedValue(::moe::ElementType::F32, 0,
                                       K * (pad8(r.rg) + pad8(r.ru)))));
      args.set(
          MOE_EXPERTS_SLOT_FACTOR_DOWN,
          valueBinding(fixedValue(::moe::ElementType::F32, 0, K * pad8(r.rd))));
    } else {
      args.setNull(MOE_EXPERTS_SLOT_FACTOR_IN);
      args.setNull(MOE_EXPERTS_SLOT_FACTOR_DOWN);
    }
    auto ceilDiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
    // decodeDown's per-output-chunk counters of finished items: the block
    // that finishes a chunk combines it (no combine launch at decode).
    int downDone = -1;
    if (withDecode) {
      downDone =
          fixedValue(::moe::ElementType::U32, ceilDiv(r.H, downCols), 0);
      args.set(MOE_EXPERTS_SLOT_DOWN_DONE, valueBinding(downDone));
    } else {
      args.setNull(MOE_EXPERTS_SLOT_DOWN_DONE);
    }
    // --gemm=tma: the table of tensor maps of the GEMMs whose weight tiles
    // come by TMA (tmaWeights), filled by the host before each launch.
    bool tma = options.gemm == ::moe::GroupedGemm::Tma && withGrouped;
    bool routedTma = tma && tmaWeights(r);
    bool sharedTma = tma && shared && tmaWeights(s);
    if (routedTma || sharedTma) {
      args.set(MOE_EXPERTS_SLOT_TENSOR_MAPS,
               valueBinding(fixedValue(::moe::ElementType::U32,
                                       MOE_EXPERTS_TENSOR_MAPS *
                                           MOE_TENSOR_MAP_BYTES / 4)));
    } else {
      args.setNull(MOE_EXPERTS_SLOT_TENSOR_MAPS);
    }
    std::vector<::moe::Binding> argList = args.take();

    if (withDecode) {
      os << "static_assert(moe_k::experts::DecodeThreads == " << kDecodeThreads
         << ", \"the launch plan's block size\");\n";
      // Grid: (min(T * K, E) active experts + the shared FFN's rows of
      // chunks) x the routed chunks: T * K rows of `chunks` blocks, clamped
      // to E rows.
      auto decode = [&](StringRef suffix, StringRef call, int64_t chunks,
                        int64_t sharedChunks, bool combines = false) {
        ::moe::Launch launch;
        launch.kernel = (name + "_" + suffix).str();
        launch.origin = origin;
        launch.blockThreads = kDecodeThreads;
        launch.tokensPerBlock = 1;
        launch.rowsPerToken = K;
        launch.extraBlocks = ceilDiv(sharedChunks, chunks);
        launch.gridColumns = chunks;
        launch.maxBlocks = std::min<int64_t>(
            (r.E + launch.extraBlocks) * chunks, (int64_t(1) << 31) - 1);
        launch.args = argList;
        if (withGrouped) {
          launch.slotsPerToken = K;
          launch.maxSlots = decodeSlots;
        }
        if (combines)
          launch.zeroOnce.push_back(downDone);
        kernelEntry(launch.kernel,
                    llvm::formatv("{0}, {1}", kDecodeThreads,
                                  combines ? kDecodeDownMinBlocks
                                           : kDecodeMinBlocks)
                        .str(),
                    llvm::formatv("moe_k::experts::{0}<{1}_cfg::Cfg, "
                                  "{1}_cfg::Decode>(args)",
                                  call, name)
                        .str());
        pushLaunch(std::move(launch));
      };
      if (r.lowRank)
        decode("decode_factor_in", "decodeFactorIn",
               ceilDiv(factorIn, factorInUnits), 0);
      decode("decode_up", "decodeUp", ceilDiv(r.iw, upUnits),
             shared ? ceilDiv(s.I, sharedUpUnits) : 0);
      if (r.lowRank)
        decode("decode_factor_down", "decodeFactorDown",
               ceilDiv(r.rd, factorDownUnits), 0);
      decode("decode_down", "decodeDown", ceilDiv(r.H, downCols),
             shared ? ceilDiv(r.H, sharedDownCols) : 0, /*combines=*/true);
    }
    if (withGrouped) {
      os << "static_assert(moe_k::grouped::BM == " << kTileRows
         << " && moe_k::grouped::BN == " << kTileCols
         << " && moe_k::grouped::Threads == " << kTileThreads
         << ", \"the launch plan's grid assumes these tiles\");\n";
      if (tma)
        os << "static_assert(moe_k::grouped::BK == " << kTileDepth
           << " && moe_k::grouped::TmaWeights<" << name
           << "_cfg::Cfg::Routed>::value == " << (routedTma ? "true" : "false")
           << (shared ? std::string(" && moe_k::grouped::TmaWeights<") +
                            name + "_cfg::Cfg::Shared>::value == " +
                            (sharedTma ? "true" : "false")
                      : std::string())
           << ", \"the launch plan's tensor maps assume these boxes and "
              "weights\");\n";
      // GEMM kernels: (ceil(rows / BM) + partial tiles) x column tiles.
      // `flag` is the template's second argument (Shared of gateUp and
      // down, In of factor).
      auto gemm = [&](StringRef suffix, StringRef call, bool sharedRows,
                      int64_t colTiles, bool flag) {
        ::moe::Launch launch;
        launch.kernel = (name + "_" + suffix).str();
        launch.origin = origin;
        launch.blockThreads = kTileThreads;
        launch.tokensPerBlock = kTileRows;
        launch.rowsPerToken = sharedRows ? 1 : K;
        launch.extraBlocks = sharedRows ? 0 : r.E;
        launch.gridColumns = colTiles;
        launch.maxBlocks = int64_t(1) << 20;
        launch.args = argList;
        if (withDecode) {
          launch.slotsPerToken = K;
          launch.minSlots = decodeSlots + 1;
        }
        // gateUp, down and the FP8 tensor-core GEMMs take the k loop as a
        // third argument; factor and the thin GEMMs of factored routed
        // weights have the single-buffered one only.
        // --gemm=tma: gateUp and down of an FFN of tmaWeights take their
        // weight tiles by TMA (fourth template argument); the others run
        // the pipelined loop.
        bool tmaGemm = (call == "gateUp" || call == "down") &&
                       (sharedRows ? sharedTma : routedTma);
        bool pipe = call != "factor" &&
                    (flag || !r.lowRank) &&
                    options.gemm != ::moe::GroupedGemm::Mma;
        if (tmaGemm)
          addTensorMapRequests(launch, sharedRows ? s : r, call == "gateUp",
                               sharedRows);
        // The FP8 GEMMs take a bool (their pipelined loop or not); gateUp
        // and down a moe_k::grouped::Gemm.
        const char *path =
            !pipe                        ? ""
            : call.starts_with("fp8")    ? ", true"
            : tmaGemm                    ? ", moe_k::grouped::Gemm::Tma"
            : options.gemm == ::moe::GroupedGemm::Wgmma
                ? ", moe_k::grouped::Gemm::Wgmma"
                : ", moe_k::grouped::Gemm::Pipelined";
        kernelEntry(
            launch.kernel, std::to_string(kTileThreads),
            llvm::formatv("moe_k::grouped::{0}<{1}_cfg::Cfg, {2}{3}>(args)",
                          call, name, flag ? "true" : "false", path)
                .str());
        pushLaunch(std::move(launch));
      };
      auto tiles = [&](int64_t cols) { return ceilDiv(cols, kTileCols); };
      // Factored weights: a factor stage before each GEMM, its column tiles
      // those of each factor apart (gate's, then up's).
      if (r.lowRank)
        gemm("factor_in", "factor", false, tiles(r.rg) + tiles(r.ru), true);
      gemm("up", r.fp8Mma ? "fp8GateUp" : "gateUp", false, tiles(r.iw),
           false);
      if (r.lowRank)
        gemm("factor_down", "factor", false, tiles(r.rd), false);
      gemm("down", r.fp8Mma ? "fp8Down" : "down", false, tiles(r.H), false);
      if (shared) {
        gemm("shared_up", s.fp8Mma ? "fp8GateUp" : "gateUp", true, tiles(s.I),
             true);
        gemm("shared_down", s.fp8Mma ? "fp8Down" : "down", true, tiles(r.H),
             true);
      }
    }
    // The grouped path's combine: a token's slots in slot order, then the
    // shared experts (times their gate); a block per kCombineCols outputs
    // of a token. The decode path combines in decodeDown.
    if (!withGrouped) {
      os << "\n";
      endKernel();
      return Error::success();
    }
    ::moe::Launch launch;
    launch.kernel = name + "_combine";
    launch.origin = origin;
    launch.blockThreads = 128;
    launch.tokensPerBlock = 1;
    launch.gridColumns = ceilDiv(r.H, kCombineCols);
    launch.maxBlocks = 65535;
    launch.args = argList;
    if (withDecode) {
      launch.slotsPerToken = K;
      launch.minSlots = decodeSlots + 1;
    }
    os << "static_assert(moe_k::grouped::CombineCols == " << kCombineCols
       << ", \"the launch plan's combine grid\");\n";
    kernelEntry(launch.kernel, "128",
                "moe_k::grouped::combine<" + name + "_cfg::Cfg>(args)");
    pushLaunch(std::move(launch));
    os << "\n";
    endKernel();
    return Error::success();
  }

  //===--------------------------------------------------------------------===//
  // Elementwise glue between the fused ops
  //===--------------------------------------------------------------------===//

  /// Ops generated as elementwise kernels (moe_elementwise.cuh) between the
  /// fused ops: arithmetic on [T, N] values and splat constants.
  static bool isGlue(Operation *op) {
    return isa<arith::AddFOp, arith::SubFOp, arith::MulFOp, arith::DivFOp,
               arith::MaximumFOp, arith::MinimumFOp, arith::NegFOp,
               tensor::SplatOp>(op);
  }

  /// Whether a glue op is computed inside the kernel of its user rather
  /// than by a kernel of its own: a splat read by glue ops only, or a
  /// result with one use, by a glue op.
  static bool fusesIntoUser(Operation *op) {
    Value r = op->getResult(0);
    if (r.use_empty())
      return false;
    bool allGlue = llvm::all_of(r.getUsers(), [&](Operation *u) {
      return isGlue(u) && u->getBlock() == op->getBlock();
    });
    return allGlue && (isa<tensor::SplatOp>(op) || r.hasOneUse());
  }

  Error unsupported(Operation *op) {
    if (isa_and_nonnull<MoEDialect>(op->getDialect()))
      return makeError(op, "this op is left outside the fused ops, and the "
                           "CUDA backend runs fused IR only: run moe-opt "
                           "--moe-optimize first (if it ran, its "
                           "'moe-fuse-*: not fused' remarks say why this op "
                           "was left)");
    return makeError(op, "the CUDA backend cannot generate this op between "
                         "the fused ops: it generates moe.fused_route, "
                         "moe.fused_experts, moe.lora_mixture, moe.gru_cell "
                         "(with the moe.router_linear of its input) and "
                         "elementwise "
                         "arith.addf, subf, mulf, divf, maximumf, minimumf, "
                         "negf on [T, N] values (constants as tensor.splat "
                         "of an arith.constant)");
  }

  /// One elementwise kernel being generated: the body of its Cfg::apply.
  struct GlueKernel {
    std::string body;
    std::vector<int> inputs; ///< Values read, in slot order.
    llvm::DenseMap<Value, std::string> locals;
    int count = 0;
  };

  /// The local of `body` that holds element i of `v`, computing it (and
  /// the glue ops it depends on that fuse into this kernel) if needed.
  Expected<std::string> glueLocal(Value v, Operation *root, GlueKernel &k) {
    auto found = k.locals.find(v);
    if (found != k.locals.end())
      return found->second;
    Operation *def = v.getDefiningOp();
    std::string local = "v" + std::to_string(k.count++);
    auto it = values.find(v);
    if (def != root && it != values.end()) {
      int slot = static_cast<int>(k.inputs.size());
      k.inputs.push_back(it->second);
      k.body += llvm::formatv("    const float {0} = moe_k::elementwise::"
                              "load<{1}>(in[{2}], i);\n",
                              local, cxxType(v.getType()), slot);
      k.locals[v] = local;
      return local;
    }
    if (!def || !isGlue(def))
      return makeError(root, "an operand is not produced by a kernel or the "
                             "layer input");
    auto type = dyn_cast<RankedTensorType>(v.getType());
    if (!type || type.getRank() != 2 || type.isDynamicDim(1) ||
        !isa<Float32Type, BFloat16Type, Float16Type>(type.getElementType())) {
      std::string t;
      llvm::raw_string_ostream ts(t);
      ts << v.getType();
      return makeError(def, "the CUDA backend generates elementwise ops on "
                            "[T, N] tensors of f32, bf16 or f16 only, not on " +
                                t);
    }
    std::string expr;
    if (auto splat = dyn_cast<tensor::SplatOp>(def)) {
      auto c = splat.getInput().getDefiningOp<arith::ConstantOp>();
      auto f = c ? dyn_cast<FloatAttr>(c.getValue()) : FloatAttr();
      if (!f)
        return makeError(def, "the CUDA backend generates splats of a float "
                              "arith.constant only (the splatted value is "
                              "computed)");
      expr = floatLiteral(static_cast<float>(f.getValueAsDouble()));
    } else {
      SmallVector<std::string, 2> a;
      for (Value operand : def->getOperands()) {
        Expected<std::string> l = glueLocal(operand, root, k);
        if (!l)
          return l.takeError();
        a.push_back(*l);
      }
      expr = llvm::TypeSwitch<Operation *, std::string>(def)
                 .Case([&](arith::AddFOp) { return a[0] + " + " + a[1]; })
                 .Case([&](arith::SubFOp) { return a[0] + " - " + a[1]; })
                 .Case([&](arith::MulFOp) { return a[0] + " * " + a[1]; })
                 .Case([&](arith::DivFOp) { return a[0] + " / " + a[1]; })
                 .Case([&](arith::MaximumFOp) {
                   return "moe_k::elementwise::maximum(" + a[0] + ", " + a[1] +
                          ")";
                 })
                 .Case([&](arith::MinimumFOp) {
                   return "moe_k::elementwise::minimum(" + a[0] + ", " + a[1] +
                          ")";
                 })
                 .Case([&](arith::NegFOp) { return "-" + a[0]; })
                 .Default([](Operation *) { return std::string(); });
    }
    // Each op's result rounded to its type, as the reference executor does.
    k.body += llvm::formatv("    const float {0} = moe_k::roundAs<{1}>({2}); "
                            "// {3}\n",
                            local, cxxType(v.getType()), expr, def->getName());
    k.locals[v] = local;
    return local;
  }

  /// Elements per block of the elementwise kernels (a grid-stride loop:
  /// any clamped grid is correct).
  static constexpr int kGlueThreads = 256, kGlueElementsPerBlock = 1024;

  /// A kernel computing the glue op `root` and the glue ops that fuse into
  /// it (fusesIntoUser), or nothing when `root` itself fuses into its user.
  Error glue(Operation *root) {
    if (fusesIntoUser(root))
      return Error::success();
    Value result = root->getResult(0);
    GlueKernel k;
    Expected<std::string> out = glueLocal(result, root, k);
    if (!out)
      return out.takeError();
    if (k.inputs.size() > MOE_ELEMENTWISE_MAX_INPUTS)
      return makeError(root, "the elementwise kernel reads " +
                                 llvm::Twine(k.inputs.size()) +
                                 " operands, more than its " +
                                 llvm::Twine(MOE_ELEMENTWISE_MAX_INPUTS) +
                                 " argument slots");
    FailureOr<int> y = tokenValue(result);
    if (failed(y))
      return makeError(root, "unsupported result type");
    int64_t N = dim(result, 1);
    std::string name = beginKernel("moe_glue");
    ::moe::Launch launch;
    launch.kernel = name;
    launch.origin =
        root->getName().getStringRef().str() + " at " + locString(root);
    launch.blockThreads = kGlueThreads;
    launch.rowsPerToken = N;
    launch.tokensPerBlock = kGlueElementsPerBlock;
    launch.maxBlocks = 65535;
    launch.args.resize(MOE_ELEMENTWISE_SLOT_FIRST_INPUT + k.inputs.size());
    launch.args[MOE_ELEMENTWISE_SLOT_OUTPUT] = valueBinding(*y);
    for (auto [j, id] : llvm::enumerate(k.inputs))
      launch.args[MOE_ELEMENTWISE_SLOT_FIRST_INPUT + j] = valueBinding(id);

    // The text names the op, not its location: equal glue kernels of other
    // layers share it.
    os << "// " << root->getName() << " (elementwise)\n";
    os << "namespace " << name << "_cfg {\nstruct Cfg {\n";
    os << "  using TY = " << cxxType(result.getType()) << ";\n";
    os << llvm::formatv("  static constexpr int N = {0}, Inputs = {1};\n", N,
                        k.inputs.size());
    os << "  static __device__ __forceinline__ float apply(void *const *in, "
          "long long i) {\n";
    if (k.inputs.empty())
      os << "    (void)in;\n    (void)i;\n";
    os << k.body << "    return " << *out << ";\n  }\n};\n} // namespace "
       << name << "_cfg\n";
    kernelEntry(name, std::to_string(kGlueThreads),
                "moe_k::elementwise::apply<" + name + "_cfg::Cfg>(args)");
    os << "\n";
    pushLaunch(std::move(launch));
    endKernel();
    return Error::success();
  }

  //===--------------------------------------------------------------------===//
  // moe.gru_cell
  //===--------------------------------------------------------------------===//

  /// The projection that the gru_cell kernel computes itself: a plain
  /// moe.router_linear (no bias, no normalisation) read only as the input
  /// of `cell` (RMoE's W1 x); null otherwise.
  static RouterLinearOp foldedProjection(GruCellOp cell) {
    auto linear = cell.getInput().getDefiningOp<RouterLinearOp>();
    if (!linear || linear.getBias() ||
        linear.getNormalize() != RouterNormalize::none ||
        !linear->hasOneUse() || linear->getBlock() != cell->getBlock())
      return {};
    return linear;
  }
  static bool foldsIntoGruCell(RouterLinearOp linear) {
    if (!linear->hasOneUse())
      return false;
    auto cell = dyn_cast<GruCellOp>(*linear->user_begin());
    return cell && foldedProjection(cell) == linear;
  }

  Error gruCell(GruCellOp op) {
    RouterLinearOp proj = foldedProjection(op);
    Value in = proj ? proj.getInput() : op.getInput();
    int64_t I = dim(op.getInput(), 1), S = dim(op.getState(), 1);
    int64_t H = proj ? dim(in, 1) : I;
    if (ShapedType::isDynamic(I) || ShapedType::isDynamic(S) ||
        ShapedType::isDynamic(H))
      return makeError(op, "the CUDA backend needs static widths of the "
                           "input and the state");
    constexpr int64_t kWarps = 4;
    int64_t shared = kWarps * (I + S) * 4;
    if (shared > 48 * 1024)
      return makeError(op, "the input and state widths (" + Twine(I) + " + " +
                               Twine(S) +
                               ") exceed the kernel's shared memory (48 KiB "
                               "for 4 warps' rows)");
    Expected<int> x = lookup(op, in);
    if (!x)
      return x.takeError();
    Expected<int> h = lookup(op, op.getState());
    if (!h)
      return h.takeError();
    FailureOr<int> out = tokenValue(op.getResult());
    if (failed(out))
      return makeError(op, "unsupported result type");

    SlotArgs<MOE_GRU_NUM_SLOTS> args("gru");
    args.set(MOE_GRU_SLOT_INPUT, valueBinding(*x));
    args.set(MOE_GRU_SLOT_STATE, valueBinding(*h));
    args.set(MOE_GRU_SLOT_OUTPUT, valueBinding(*out));
    for (auto [slot, v] :
         {std::pair<int, Value>{MOE_GRU_SLOT_PROJECTION,
                                proj ? proj.getWeight() : Value()},
          {MOE_GRU_SLOT_WEIGHT_IH, op.getWeightIh()},
          {MOE_GRU_SLOT_WEIGHT_HH, op.getWeightHh()},
          {MOE_GRU_SLOT_BIAS_IH, op.getBiasIh()},
          {MOE_GRU_SLOT_BIAS_HH, op.getBiasHh()}}) {
      if (!v) {
        args.setNull(slot);
        continue;
      }
      FailureOr<::moe::Binding> b = weightBinding(v);
      if (failed(b))
        return makeError(op, "a GRU weight is neither a moe.weight nor a "
                             "float constant");
      args.set(slot, *b);
    }
    if (op.getBiasIh() &&
        op.getBiasIh().getType() != op.getBiasHh().getType())
      return makeError(op, "the CUDA backend needs bias_ih and bias_hh of "
                           "one element type");

    std::string name = beginKernel("moe_gru");
    ::moe::Launch launch;
    launch.kernel = name;
    launch.origin = "moe.gru_cell at " + locString(op);
    launch.blockThreads = kWarps * 32;
    launch.tokensPerBlock = kWarps;
    launch.dynamicSharedBytes = shared;
    launch.args = args.take();

    os << "// moe.gru_cell"
       << (proj ? " with the moe.router_linear of its input" : "") << "\n";
    os << "namespace " << name << "_cfg {\nstruct Cfg {\n";
    os << "  using TX = " << cxxType(in.getType()) << ";\n";
    os << "  using TP = "
       << (proj ? cxxType(proj.getWeight().getType()) : "float") << ";\n";
    os << "  using TIH = " << cxxType(op.getWeightIh().getType()) << ";\n";
    os << "  using THH = " << cxxType(op.getWeightHh().getType()) << ";\n";
    os << "  using TB = "
       << (op.getBiasIh() ? cxxType(op.getBiasIh().getType()) : "float")
       << ";\n";
    os << llvm::formatv("  static constexpr int H = {0}, I = {1}, S = {2};\n",
                        H, I, S);
    os << "  static constexpr bool Project = " << (proj ? "true" : "false")
       << ", HasBias = " << (op.getBiasIh() ? "true" : "false") << ";\n";
    os << "};\n} // namespace " << name << "_cfg\n";
    os << "static_assert(moe_k::gru::Warps == " << kWarps
       << ", \"the code generator's warps per block\");\n";
    kernelEntry(name, std::to_string(kWarps * 32),
                "moe_k::gru::cell<" + name + "_cfg::Cfg>(args)");
    os << "\n";
    pushLaunch(std::move(launch));
    endKernel();
    return Error::success();
  }

  //===--------------------------------------------------------------------===//
  // moe.lora_mixture
  //===--------------------------------------------------------------------===//

  Error lora(LoraMixtureOp op) {
    std::string name = beginKernel("moe_lora");
    int64_t in = dim(op.getInput(), 1), out = dim(op.getBase(), 0);
    auto a = op.getLoraA().getType();
    int64_t E = a.getDimSize(0), R = a.getDimSize(1);
    int64_t K = op.getIds() ? dim(op.getIds(), 1) : 0;

    ::moe::Launch launch;
    launch.kernel = name;
    launch.origin = "moe.lora_mixture at " + locString(op);
    launch.blockThreads = 128;
    launch.dynamicSharedBytes = (in + R + out) * 4;
    SlotArgs<MOE_LORA_NUM_SLOTS> args("lora");
    Expected<int> x = lookup(op, op.getInput());
    if (!x)
      return x.takeError();
    args.set(MOE_LORA_SLOT_INPUT, valueBinding(*x));
    FailureOr<int> y = tokenValue(op.getResult());
    if (failed(y))
      return makeError(op, "unsupported result type");
    args.set(MOE_LORA_SLOT_OUTPUT, valueBinding(*y));
    for (auto [slot, v] :
         {std::pair<int, Value>{MOE_LORA_SLOT_BASE, op.getBase()},
          {MOE_LORA_SLOT_BASE_BIAS, op.getBaseBias()},
          {MOE_LORA_SLOT_LORA_A, op.getLoraA()},
          {MOE_LORA_SLOT_LORA_B, op.getLoraB()}}) {
      if (!v) {
        args.setNull(slot);
        continue;
      }
      FailureOr<::moe::Binding> b = weightBinding(v);
      if (failed(b))
        return makeError(op, "a LoRA weight is neither a moe.weight nor a "
                             "constant");
      args.set(slot, *b);
    }
    for (auto [slot, v] :
         {std::pair<int, Value>{MOE_LORA_SLOT_IDS, op.getIds()},
          {MOE_LORA_SLOT_WEIGHTS, op.getWeights()}}) {
      if (!v) {
        args.setNull(slot);
        continue;
      }
      Expected<int> id = lookup(op, v);
      if (!id)
        return id.takeError();
      args.set(slot, valueBinding(*id));
    }
    launch.args = args.take();
    if (!op.getIds()) {
      // Every adapter with weight 1: report that routing.
      plan.routings.clear();
      plan.allExperts = E;
    }

    os << "// moe.lora_mixture\nnamespace " << name << "_cfg {\n";
    os << "struct Cfg {\n  using TX = " << cxxType(op.getInput().getType())
       << ";\n  using TW = " << cxxType(op.getBase().getType())
       << ";\n  using TA = " << cxxType(op.getLoraA().getType())
       << ";\n  using TB = "
       << (op.getBaseBias() ? cxxType(op.getBaseBias().getType()) : "float")
       << ";\n";
    os << llvm::formatv("  static constexpr int In = {0}, Out = {1}, E = {2}, "
                        "R = {3}, K = {4};\n",
                        in, out, E, R, K);
    os << "  static constexpr bool HasBias = "
       << (op.getBaseBias() ? "true" : "false") << ";\n";
    os << "  static __device__ float scale(int e) {\n    switch (e) {\n";
    for (auto [i, s] : llvm::enumerate(op.getScales()))
      os << "    case " << i << ": return "
         << floatLiteral(cast<FloatAttr>(s).getValueAsDouble()) << ";\n";
    os << "    default: return 0.0f;\n    }\n  }\n};\n} // namespace " << name
       << "_cfg\n";
    kernelEntry(name, "128, 1",
                "moe_k::lora::mixture<" + name + "_cfg::Cfg>(args)");
    os << "\n";
    pushLaunch(std::move(launch));
    endKernel();
    return Error::success();
  }

  /// A layer whose routing is given and goes to moe.fused_experts as it is:
  /// moe.dispatch of the given ids, one block planning the dispatch with
  /// the routing kernel's planDispatch (moe_route.cuh).
  Error dispatch(DispatchOp op) {
    constexpr int kWarps = 4;
    auto ids = values.find(op.getIds());
    // Any other dispatch belongs in moe.fused_route.
    if (plan.givenIds < 0 || ids == values.end() ||
        ids->second != plan.givenIds)
      return unsupported(op);
    int64_t K = dim(op.getIds(), 1);
    int64_t E = op.getNumExperts();
    if (ShapedType::isDynamic(K))
      return makeError(op, "the slot count must be static");
    int counts = fixedValue(::moe::ElementType::I32, E);
    int offsets = fixedValue(::moe::ElementType::I32, E + 1);
    int rows = fixedValue(::moe::ElementType::I32, 0, K);
    int slotRow = fixedValue(::moe::ElementType::I32, 0, K);
    values[op.getCounts()] = counts;
    values[op.getOffsets()] = offsets;
    values[op.getRows()] = rows;
    slotRowOf[op.getRows()] = slotRow;
    plan.routings.push_back({plan.givenIds, plan.givenWeights, E});

    std::string name = beginKernel("moe_dispatch");
    ::moe::Launch launch;
    launch.kernel = name;
    launch.origin = "moe.dispatch at " + locString(op);
    launch.blockThreads = 32 * kWarps;
    // One block plans every token's slots.
    launch.maxBlocks = 1;
    SlotArgs<MOE_DISPATCH_NUM_SLOTS> fixed("dispatch");
    fixed.set(MOE_DISPATCH_SLOT_IDS, valueBinding(ids->second));
    fixed.set(MOE_DISPATCH_SLOT_COUNTS, valueBinding(counts));
    fixed.set(MOE_DISPATCH_SLOT_OFFSETS, valueBinding(offsets));
    fixed.set(MOE_DISPATCH_SLOT_ROWS, valueBinding(rows));
    fixed.set(MOE_DISPATCH_SLOT_SLOT_ROW, valueBinding(slotRow));
    launch.args = fixed.take();
    os << "// moe.dispatch\n";
    os << "extern \"C\" __global__ void __launch_bounds__(" << 32 * kWarps
       << ") " << name << "(MoEKernelArgs args) {\n";
    os << llvm::formatv(
        "  moe_k::route::planDispatch<{0}, {1}, {2}>(\n"
        "      static_cast<const int *>(args.buffers[MOE_DISPATCH_SLOT_IDS]),\n"
        "      args.num_tokens,\n"
        "      static_cast<int *>(args.buffers[MOE_DISPATCH_SLOT_COUNTS]),\n"
        "      static_cast<int *>(args.buffers[MOE_DISPATCH_SLOT_OFFSETS]),\n"
        "      static_cast<int *>(args.buffers[MOE_DISPATCH_SLOT_ROWS]),\n"
        "      static_cast<int *>(args.buffers[MOE_DISPATCH_SLOT_SLOT_ROW]));"
        "\n}\n",
        E, K, kWarps);
    os << "#ifdef MOE_EMU\nMOE_EMU_EXPORT_KERNEL(" << name << ")\n#endif\n\n";
    pushLaunch(std::move(launch));
    endKernel();
    return Error::success();
  }

  func::FuncOp fn;
  KernelModule &kernels;
  ::moe::CudaEmitOptions options;
  KernelStream stream;
  llvm::raw_ostream &os = stream;
  SmallVector<std::pair<std::string, std::string>> openKernels;
  /// (placeholder, name) of each finished kernel.
  SmallVector<std::pair<std::string, std::string>> names;
  ::moe::LayerPlan plan;
  llvm::DenseMap<Value, int> values;
  llvm::DenseMap<Value, std::string> weightPtr;
  /// The slotRow value of each fused_route's rows result.
  llvm::DenseMap<Value, int> slotRowOf;
};

/// A static_assert that the slots of a kernel family are those this code
/// generator was built with (KernelABI.h): a source generated for other
/// slots fails to compile.
void slotCheck(llvm::raw_ostream &os, StringRef family, StringRef prefix,
               ArrayRef<const char *> names) {
  os << "static_assert(MOE_" << family << "_NUM_SLOTS == " << names.size();
  for (auto [i, n] : llvm::enumerate(names))
    os << " &&\n              MOE_" << prefix << "_SLOT_" << n << " == " << i;
  os << ",\n              \"moe-opt generated this source for other MOE_"
     << family << " argument slots (moe/runtime/KernelABI.h): generate it "
     << "again\");\n";
}

#define MOE_SLOT_NAME_(name) #name,
const char *const kFFNSlots[] = {MOE_FFN_SLOT_LIST(MOE_SLOT_NAME_)};
const char *const kFFNScaleSlots[] = {
    MOE_FFN_SCALE_SLOT_LIST(MOE_SLOT_NAME_)};
const char *const kExpertsSlots[] = {MOE_EXPERTS_SLOT_LIST(MOE_SLOT_NAME_)};
const char *const kRouteSlots[] = {MOE_ROUTE_SLOT_LIST(MOE_SLOT_NAME_)};
const char *const kLogitsSlots[] = {MOE_LOGITS_SLOT_LIST(MOE_SLOT_NAME_)};
const char *const kLoraSlots[] = {MOE_LORA_SLOT_LIST(MOE_SLOT_NAME_)};
const char *const kElementwiseSlots[] = {
    MOE_ELEMENTWISE_SLOT_LIST(MOE_SLOT_NAME_)};
const char *const kGruSlots[] = {MOE_GRU_SLOT_LIST(MOE_SLOT_NAME_)};
const char *const kDispatchSlots[] = {MOE_DISPATCH_SLOT_LIST(MOE_SLOT_NAME_)};
#undef MOE_SLOT_NAME_

} // namespace

namespace moe {

std::optional<GroupedGemm> parseGroupedGemm(StringRef name) {
  if (name == "pipelined")
    return GroupedGemm::Pipelined;
  if (name == "mma")
    return GroupedGemm::Mma;
  if (name == "wgmma")
    return GroupedGemm::Wgmma;
  if (name == "tma")
    return GroupedGemm::Tma;
  return std::nullopt;
}

const char *groupedGemmArch(GroupedGemm gemm) {
  return gemm == GroupedGemm::Wgmma ? "sm_90a" : nullptr;
}

Expected<ModulePlan> emitCudaModule(ModuleOp module,
                                    const CudaEmitOptions &options) {
  ModulePlan result;
  llvm::raw_string_ostream os(result.source);
  os << "// Generated by moe-opt: kernels instantiated from the templates of\n"
        "// runtime/kernels (see docs/codegen.md). Each kernel names the IR op "
        "it\n// came from and is named from its text: layers of the same "
        "configuration\n// share it.\n";
  os << "#include \"moe_route.cuh\"\n#include \"moe_route_mma.cuh\"\n"
        "#include \"moe_experts.cuh\"\n"
        "#include \"moe_grouped.cuh\"\n#include \"moe_grouped_fp8.cuh\"\n"
        "#include \"moe_lora.cuh\"\n"
        "#include \"moe_elementwise.cuh\"\n#include \"moe_gru.cuh\"\n\n";
  os << "// The argument slots this source was generated for.\n";
  slotCheck(os, "FFN", "FFN", kFFNSlots);
  slotCheck(os, "FFN_SCALE", "FFN", kFFNScaleSlots);
  slotCheck(os, "EXPERTS", "EXPERTS", kExpertsSlots);
  slotCheck(os, "ROUTE", "ROUTE", kRouteSlots);
  slotCheck(os, "LOGITS", "LOGITS", kLogitsSlots);
  slotCheck(os, "LORA", "LORA", kLoraSlots);
  slotCheck(os, "ELEMENTWISE", "ELEMENTWISE", kElementwiseSlots);
  slotCheck(os, "GRU", "GRU", kGruSlots);
  slotCheck(os, "DISPATCH", "DISPATCH", kDispatchSlots);
  os << "\n";
  KernelModule kernels;
  for (auto fn : module.getOps<func::FuncOp>()) {
    auto layer = fn->getAttrOfType<IntegerAttr>(kLayerAttrName);
    if (!layer)
      continue;
    LayerEmitter emitter(fn, layer.getInt(), kernels, options);
    Expected<LayerPlan> plan = emitter.emit();
    if (!plan)
      return plan.takeError();
    // Which kernels the layer launches; those new in this layer follow.
    llvm::SetVector<StringRef> used;
    for (const Launch &launch : plan->launches)
      used.insert(launch.kernel);
    os << "//===--- @" << fn.getSymName() << " (layer " << layer.getInt()
       << ") launches: " << llvm::join(used, ", ") << " ---===//\n";
    // Every launch in order, for the check of a package's plan.
    os << formatLayerContract(*plan) << "\n\n";
    os << kernels.takeNew();
    result.layers.push_back(std::move(*plan));
  }
  return result;
}

Expected<LayerPlan> planCudaLayer(func::FuncOp fn) {
  auto layer = fn->getAttrOfType<IntegerAttr>(kLayerAttrName);
  if (!layer)
    return makeError(fn, "not a layer function (no moe.layer attribute)");
  KernelModule kernels;
  return LayerEmitter(fn, layer.getInt(), kernels).emit();
}

} // namespace moe
