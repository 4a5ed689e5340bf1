//===- Routing.cpp - Facts about routings shared by verifiers and backends ===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/Routing.h"
#include "moe/dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::moe;

std::optional<IdRange> mlir::moe::getIdRange(Value ids) {
  if (auto arg = dyn_cast<BlockArgument>(ids)) {
    // The ids argument of a moe.fused_experts body is its ids operand.
    auto fused = dyn_cast<FusedExpertsOp>(arg.getOwner()->getParentOp());
    if (fused && arg.getArgNumber() == 1)
      return getIdRange(fused.getIds());
    return std::nullopt;
  }
  Operation *def = ids.getDefiningOp();
  if (auto sel = dyn_cast<SelectionOpInterface>(def)) {
    int64_t n = sel.getCandidateCount();
    if (ids != sel.getSelectedIds() || ShapedType::isDynamic(n))
      return std::nullopt;
    return IdRange{n, def};
  }
  if (auto drop = dyn_cast<DropNullExpertsOp>(def)) {
    if (ids != drop.getResultIds())
      return std::nullopt;
    return IdRange{static_cast<int64_t>(drop.getNumExperts()), def};
  }
  if (auto route = dyn_cast<FusedRouteOp>(def)) {
    if (ids != route.getIds() || route.getBody().empty())
      return std::nullopt;
    auto yield = dyn_cast<YieldOp>(route.getBody().front().getTerminator());
    if (!yield || yield.getValues().empty())
      return std::nullopt;
    return getIdRange(yield.getValues()[0]);
  }
  return std::nullopt;
}

Value mlir::moe::getSlotMask(Value v) {
  while (Operation *def = v.getDefiningOp()) {
    if (auto sel = dyn_cast<SelectionOpInterface>(def))
      return v == sel.getSelectedValues() ? sel.getSelectedIds() : Value();
    if (auto gather = dyn_cast<GatherScoresOp>(def))
      return gather.getIds();
    if (auto drop = dyn_cast<DropNullExpertsOp>(def))
      return v == drop.getResultWeights() ? drop.getResultIds() : Value();
    if (auto route = dyn_cast<FusedRouteOp>(def))
      return v == route.getWeights() ? route.getIds() : Value();
    // Slot-wise ops keep the slots where they are.
    if (!isa<SoftmaxOp, SigmoidOp, ReluOp, NormalizeOp, ScaleOp>(def))
      return Value();
    v = def->getOperand(0);
  }
  return Value();
}

Value mlir::moe::getImplicitMask(Operation *op) {
  if (isa<SoftmaxOp, NormalizeOp>(op))
    return getSlotMask(op->getOperand(0));
  return Value();
}

/// A weight the routing kernel binds as a buffer: a moe.weight or a dense
/// float constant.
static bool isWeightLeaf(Value v) {
  Operation *def = v.getDefiningOp();
  if (isa_and_nonnull<WeightOp>(def))
    return true;
  auto c = dyn_cast_or_null<arith::ConstantOp>(def);
  auto dense = c ? dyn_cast<DenseElementsAttr>(c.getValue()) : nullptr;
  return dense && isa<FloatType>(dense.getElementType());
}

/// The operands of a router op read from weight memory rather than as rows.
static SmallVector<Value> weightOperands(Operation *op) {
  return llvm::TypeSwitch<Operation *, SmallVector<Value>>(op)
      .Case([](RouterLinearOp o) {
        SmallVector<Value> w = {o.getWeight()};
        if (o.getBias())
          w.push_back(o.getBias());
        return w;
      })
      .Case([](RmsNormOp o) {
        return o.getWeight() ? SmallVector<Value>{o.getWeight()}
                             : SmallVector<Value>{};
      })
      .Case([](BiasAddOp o) { return SmallVector<Value>{o.getBias()}; })
      .Default([](Operation *) { return SmallVector<Value>{}; });
}

/// The operands of a router op read from the layer's extra inputs in
/// global memory rather than as rows (the sequence scores and map).
static SmallVector<Value> sideInputOperands(Operation *op) {
  if (auto add = dyn_cast<AddSequenceScoresOp>(op))
    return {add.getSequenceScores(), add.getSequenceMap()};
  return {};
}

static int64_t width(Value v) {
  return cast<RankedTensorType>(v.getType()).getDimSize(1);
}

std::optional<RouteMismatch> mlir::moe::matchRouteBody(Block &body,
                                                       RouteProgram *out) {
  auto mismatch = [](Operation *op, const Twine &why) {
    return RouteMismatch{op, why.str()};
  };
  Operation *parent = body.getParentOp();
  // The body's arguments: the routed tokens, the given routing's ids and
  // weights (when given), then the extra layer inputs.
  auto fused = dyn_cast_or_null<FusedRouteOp>(parent);
  unsigned given = fused ? (fused.getGivenIds() ? 2 : 0)
                         : (body.getNumArguments() == 3 ? 2 : 0);
  unsigned extra = fused ? fused.getExtraInputs().size() : 0;
  if (body.getNumArguments() != 1 + given + extra)
    return mismatch(parent, "the body must take the routed tokens as its "
                            "argument, followed by the given routing's ids "
                            "and weights when the routing is given, then the "
                            "extra layer inputs");
  Value arg = body.getArgument(0);
  // The given routing's rows, staged per token like the input row.
  auto isGiven = [&](Value v) {
    return given == 2 &&
           (v == body.getArgument(1) || v == body.getArgument(2));
  };
  // Extra layer inputs are read from global memory by the ops that take
  // them (sideInputOperands), never as score rows.
  auto isExtra = [&](Value v) {
    auto a = dyn_cast<BlockArgument>(v);
    return a && a.getOwner() == &body && a.getArgNumber() >= 1 + given;
  };
  if (given == 2)
    for (unsigned i : {1u, 2u})
      if (ShapedType::isDynamic(width(body.getArgument(i))))
        return mismatch(parent, "the given routing must have a static "
                                "number of slots");
  auto argType = dyn_cast<RankedTensorType>(arg.getType());
  if (!argType || argType.getRank() != 2 ||
      ShapedType::isDynamic(argType.getDimSize(1)))
    return mismatch(parent, "the routed tokens must be [T, H] with a static "
                            "H");

  RouteProgram program;
  llvm::DenseSet<Value> late; // computed by or after the cross-token op
  llvm::SetVector<Value> carried;
  // Records that a late op (or the yield) reads `v`.
  auto readLate = [&](Operation *op, Value v) -> std::optional<RouteMismatch> {
    if (late.contains(v))
      return std::nullopt;
    if (v == arg || isGiven(v))
      return mismatch(op, llvm::Twine("reads the ") +
                              (v == arg ? "routed tokens" : "given routing") +
                              " after the cross-token selection '" +
                              program.crossToken->getName().getStringRef() +
                              "' (only score rows are kept across the "
                              "batch)");
    carried.insert(v);
    return std::nullopt;
  };

  for (Operation &inner : body) {
    Operation *op = &inner;
    if (auto yield = dyn_cast<YieldOp>(op)) {
      for (Value v : yield.getValues()) {
        if (v == arg || isWeightLeaf(v) || isExtra(v))
          return mismatch(op, "yields the routed tokens, a weight or an "
                              "extra layer input, not a routing computed by "
                              "router ops");
        if (program.crossToken)
          if (std::optional<RouteMismatch> m = readLate(op, v))
            return m;
      }
      continue;
    }
    if (isa<WeightOp>(op))
      continue;
    if (isa<arith::ConstantOp>(op)) {
      if (!isWeightLeaf(op->getResult(0)))
        return mismatch(op, "is not a dense float constant: the routing "
                            "kernel reads constants as weights");
      continue;
    }
    auto router = dyn_cast<RouterOpInterface>(op);
    if (!router)
      return mismatch(op, "is not a router op (no RouterOpInterface): the "
                          "routing kernel has no row template for it");
    for (Value r : op->getResults())
      if (ShapedType::isDynamic(width(r)))
        return mismatch(op, "has a result with a dynamic number of columns: "
                            "the routing kernel keeps rows of static width");
    SmallVector<Value> weights = weightOperands(op);
    for (Value w : weights)
      if (!isWeightLeaf(w))
        return mismatch(op, "reads a weight that is neither a moe.weight "
                            "nor a dense float constant");
    if (auto linear = dyn_cast<RouterLinearOp>(op);
        linear && linear.getInput() != arg)
      return mismatch(op, "must project the routed tokens (the body "
                          "argument): the projection is a kernel of its own "
                          "over the layer's input");

    // moe.similarity_mix reads the token vectors from the layer input in
    // global memory (every token's, not a row), then runs per token.
    auto mix = dyn_cast<SimilarityMixOp>(op);
    if (mix) {
      if (mix.getInput() != arg)
        return mismatch(op, "must mix by the routed tokens (the body "
                            "argument): the kernel reads every token's "
                            "vector from the layer's input");
      if (program.crossToken)
        return mismatch(op, "comes after the cross-token selection '" +
                                program.crossToken->getName().getStringRef() +
                                "': the routing kernel mixes before it");
      if (program.tokenMix)
        return mismatch(op, "is a second moe.similarity_mix in one router "
                            "(the routing kernel mixes once)");
    }
    SmallVector<Value> side = sideInputOperands(op);
    for (Value v : side)
      if (!isExtra(v))
        return mismatch(op, "must read its sequence scores and map from the "
                            "layer's extra inputs (arguments of the fused "
                            "body after the routed tokens): the routing "
                            "kernel reads them from global memory");

    // The rows the op reads: operands other than weights and extra inputs,
    // and its mask.
    SmallVector<Value> reads;
    for (OpOperand &use : op->getOpOperands()) {
      Value v = use.get();
      if (mix && use.getOperandNumber() == 0)
        continue;
      if (!llvm::is_contained(weights, v) && !llvm::is_contained(side, v))
        reads.push_back(v);
    }
    if (Value mask = getImplicitMask(op))
      reads.push_back(mask);
    for (Value v : reads) {
      if (isWeightLeaf(v))
        return mismatch(op, "reads a weight or constant where a score row "
                            "is expected");
      if (isExtra(v))
        return mismatch(op, "reads an extra layer input where a score row "
                            "is expected (only moe.add_sequence_scores "
                            "reads extra inputs)");
    }

    bool isLate =
        llvm::any_of(reads, [&](Value v) { return late.contains(v); });
    if (mix) {
      if (llvm::is_contained(reads, arg) || isGiven(mix.getProbs()))
        return mismatch(op, "must mix probabilities computed by router ops, "
                            "not the routed tokens or the given routing");
      program.tokenMix = op;
      program.perToken.push_back(op);
      continue;
    }
    if (router.readsOtherTokens()) {
      if (program.crossToken)
        return mismatch(op, "is a second cross-token selection in one router "
                            "(the routing kernel ranks the batch once, after "
                            "'" +
                                program.crossToken->getName().getStringRef() +
                                "')");
      program.crossToken = op;
      for (Value r : op->getResults())
        late.insert(r);
      continue;
    }
    if (!isLate) {
      program.perToken.push_back(op);
      continue;
    }
    for (Value v : reads)
      if (std::optional<RouteMismatch> m = readLate(op, v))
        return m;
    program.afterCrossToken.push_back(op);
    for (Value r : op->getResults())
      late.insert(r);
  }
  program.carried.assign(carried.begin(), carried.end());
  if (out)
    *out = std::move(program);
  return std::nullopt;
}

/// Whether `t` is a [T, n] tensor (n static when `staticWidth`) of
/// element type `element` (any when null).
static bool isTokenRows(Type t, Type element, bool staticWidth = true) {
  auto r = dyn_cast<RankedTensorType>(t);
  return r && r.getRank() == 2 &&
         (!staticWidth || !ShapedType::isDynamic(r.getDimSize(1))) &&
         (!element || r.getElementType() == element);
}

std::string mlir::moe::getLayerInputName(FunctionOpInterface fn, unsigned i) {
  if (auto attr = fn.getArgAttrOfType<StringAttr>(i, kInputAttr))
    return attr.getValue().str();
  return "argument #" + std::to_string(i);
}

std::string mlir::moe::getLayerOutputName(FunctionOpInterface fn, unsigned i) {
  if (auto attr = fn.getResultAttrOfType<StringAttr>(i, kOutputAttr))
    return attr.getValue().str();
  return "result #" + std::to_string(i);
}

/// The argument number of `fn` that `v` is, directly or as the body
/// argument of a moe.fused_route extra input.
static std::optional<unsigned> functionArgument(FunctionOpInterface fn,
                                                Value v) {
  auto a = dyn_cast<BlockArgument>(v);
  if (!a)
    return std::nullopt;
  if (a.getOwner()->getParentOp() == fn.getOperation())
    return a.getArgNumber();
  auto route = dyn_cast<FusedRouteOp>(a.getOwner()->getParentOp());
  if (!route)
    return std::nullopt;
  unsigned first = 1 + (route.getGivenIds() ? 2 : 0);
  if (a.getArgNumber() < first)
    return std::nullopt;
  return functionArgument(fn, route.getExtraInputs()[a.getArgNumber() - first]);
}

llvm::SmallVector<std::pair<unsigned, unsigned>>
mlir::moe::getSequenceMapArguments(FunctionOpInterface fn) {
  llvm::SmallVector<std::pair<unsigned, unsigned>> pairs;
  fn->walk([&](AddSequenceScoresOp add) {
    std::optional<unsigned> m = functionArgument(fn, add.getSequenceMap());
    std::optional<unsigned> s = functionArgument(fn, add.getSequenceScores());
    if (m && s && !llvm::is_contained(pairs, std::make_pair(*m, *s)))
      pairs.push_back({*m, *s});
  });
  return pairs;
}

std::optional<LayerForm> mlir::moe::getLayerForm(FunctionOpInterface fn,
                                                 std::string &why) {
  std::string name = ("function @" + fn.getName()).str();
  ArrayRef<Type> args = fn.getArgumentTypes(), results = fn.getResultTypes();
  Builder b(fn.getContext());
  Type i32 = b.getI32Type(), f32 = b.getF32Type();
  auto role = fn->getAttrOfType<StringAttr>(kRoleAttr);
  if (fn->hasAttr(kRoleAttr) && (!role || (role.getValue() != "router" &&
                                           role.getValue() != "pregate"))) {
    why = name + ": '" + kRoleAttr.str() +
          "' must be \"router\" (a router-only function), \"pregate\" (a "
          "router-only function routing every layer that takes its routing, "
          "Read-ME) or absent";
    return std::nullopt;
  }
  if (role) {
    if (args.size() != 1 || !isTokenRows(args[0], nullptr) ||
        results.size() != 2 || !isTokenRows(results[0], i32) ||
        !isTokenRows(results[1], f32)) {
      why = name + " (moe.role = \"" + role.getValue().str() +
            "\"): expected one argument x [T, H] "
            "and two results, ids [T, K] i32 and weights [T, K] f32";
      return std::nullopt;
    }
    return LayerForm::Router;
  }
  if (results.size() == 1 && args.size() == 1 && isTokenRows(args[0], nullptr))
    return LayerForm::Layer;
  // Named extra inputs and results: every argument after x and every
  // result after y names itself.
  bool named = false;
  for (unsigned i = 1; i < args.size(); ++i)
    named |= static_cast<bool>(fn.getArgAttr(i, kInputAttr));
  for (unsigned i = 1; i < results.size(); ++i)
    named |= static_cast<bool>(fn.getResultAttr(i, kOutputAttr));
  if (named) {
    if (results.empty() || args.empty() || !isTokenRows(args[0], nullptr)) {
      why = name + ": a layer with extra inputs or results takes x [T, H] "
                   "first and returns y first";
      return std::nullopt;
    }
    for (unsigned i = 1; i < results.size(); ++i) {
      auto attr = fn.getResultAttrOfType<StringAttr>(i, kOutputAttr);
      auto type = dyn_cast<RankedTensorType>(results[i]);
      if (!attr || attr.getValue().empty()) {
        why = name + ": result #" + std::to_string(i) + " needs a '" +
              kOutputAttr.str() +
              "' name (a non-empty string): every result after y is a "
              "named extra result";
        return std::nullopt;
      }
      if (!type ||
          (type.getElementType() != f32 && type.getElementType() != i32)) {
        why = name + ": extra result '" + attr.getValue().str() +
              "' must be a ranked tensor of f32 or i32";
        return std::nullopt;
      }
    }
    for (unsigned i = 1; i < args.size(); ++i) {
      auto attr = fn.getArgAttrOfType<StringAttr>(i, kInputAttr);
      auto type = dyn_cast<RankedTensorType>(args[i]);
      if (!attr || attr.getValue().empty()) {
        why = name + ": argument #" + std::to_string(i) +
              " needs a '" + kInputAttr.str() +
              "' name (a non-empty string) like the other extra inputs";
        return std::nullopt;
      }
      if (!type || (type.getElementType() != f32 &&
                    type.getElementType() != i32)) {
        why = name + ": extra input '" + attr.getValue().str() +
              "' must be a ranked tensor of f32 or i32";
        return std::nullopt;
      }
    }
    return LayerForm::ExtraInputs;
  }
  if (results.size() == 1 && args.size() == 3 &&
      isTokenRows(args[0], nullptr) && isTokenRows(args[1], i32) &&
      isTokenRows(args[2], f32) &&
      cast<RankedTensorType>(args[1]).getDimSize(1) ==
          cast<RankedTensorType>(args[2]).getDimSize(1))
    return LayerForm::GivenRouting;
  why = name + ": expected a layer (x [T, H]) -> y, a layer with a given "
               "routing (x [T, H], ids [T, K] i32, weights [T, K] f32) -> y, "
               "or a router (moe.role = \"router\") (x [T, H]) -> (ids, "
               "weights); got " +
        std::to_string(args.size()) + " argument(s) and " +
        std::to_string(results.size()) + " result(s) of other types";
  return std::nullopt;
}
