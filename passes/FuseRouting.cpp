//===- FuseRouting.cpp - Router and dispatch into moe.fused_route ---------===//
//
// Part of moe-opt. Moves the composed router of each dispatch, as it is, into
// the body of one moe.fused_route: every router variant fuses the same way.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/dialects/MoE/Routing.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/SmallPtrSet.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEFUSEROUTING
#include "moe/passes/Passes.h.inc"

namespace {

/// Ops a router is composed of.
bool isRouterOp(Operation *op) { return isa<RouterOpInterface>(op); }

/// Ops without operands that a fused body may carry: weights and constants.
bool isLeaf(Operation *op) { return isa<WeightOp, arith::ConstantOp>(op); }

/// A router op that `op` reads, directly or through other ops of its block
/// (then `op` sits inside a router without being a router op); null if
/// none.
Operation *routerOpAbove(Operation *op) {
  llvm::SmallPtrSet<Operation *, 16> seen;
  SmallVector<Operation *> worklist = {op};
  while (!worklist.empty()) {
    Operation *cur = worklist.pop_back_val();
    for (Value v : cur->getOperands()) {
      Operation *def = v.getDefiningOp();
      if (!def || def->getBlock() != op->getBlock() || !seen.insert(def).second)
        continue;
      if (isRouterOp(def))
        return def;
      worklist.push_back(def);
    }
  }
  return nullptr;
}

/// Fuses the router computing (`ids`, `weights`) for `anchor` (a
/// moe.dispatch, replaced by the fused op, or a moe.lora_mixture, which then
/// reads the fused op's routing); emits a remark and leaves the IR alone
/// when it cannot.
void fuseRouter(Operation *anchor, Value ids, Value weights,
                int64_t numExperts) {
  auto refuse = [&](const Twine &why) {
    anchor->emitRemark() << "moe-fuse-routing: not fused: " << why;
  };
  auto dispatch = dyn_cast<DispatchOp>(anchor);

  // Backward slice of (ids, weights) through router ops, weights and
  // constants; anything else is the router's input (or, in a layer whose
  // routing is given, one of the function's three arguments).
  llvm::SetVector<Operation *> slice;
  llvm::SetVector<Value> leaves;
  // (value, the router op that reads it; null for the anchor's own).
  SmallVector<std::pair<Value, Operation *>> worklist = {{ids, nullptr},
                                                         {weights, nullptr}};
  while (!worklist.empty()) {
    auto [v, reader] = worklist.pop_back_val();
    Operation *def = v.getDefiningOp();
    if (def && (isRouterOp(def) || isLeaf(def))) {
      if (def->getBlock() != anchor->getBlock())
        return refuse("the router is split across blocks");
      if (slice.insert(def))
        for (Value operand : def->getOperands())
          worklist.push_back({operand, def});
      continue;
    }
    if (def && !isa<RankedTensorType>(v.getType()))
      return refuse("the router reads a non-tensor value");
    // A value read as scores (not as a projection's token input) that an op
    // computes from a router op's result: that op sits inside the router
    // without being a router op (say an arith.mulf scaling the logits).
    bool tokenInput =
        reader && ((isa<RouterLinearOp>(reader) &&
                    cast<RouterLinearOp>(reader).getInput() == v) ||
                   (isa<SimilarityMixOp>(reader) &&
                    cast<SimilarityMixOp>(reader).getInput() == v));
    if (def && !tokenInput)
      if (Operation *above = routerOpAbove(def)) {
        InFlightDiagnostic diag = anchor->emitRemark();
        diag << "moe-fuse-routing: not fused: '" << def->getName()
             << "' is part of the router (it reads the result of '"
             << above->getName()
             << "') but is not a router op: only router ops, moe.weight and "
                "constants fuse (a constant factor is moe.scale)";
        diag.attachNote(def->getLoc()) << "the op is here";
        return;
      }
    leaves.insert(v);
  }

  // A given routing: the router reads the function's ids and weights
  // arguments (x, ids, weights), which the fused op takes as operands.
  Value input, givenIds, givenWeights;
  SmallVector<Value> extras;
  auto fn = anchor->getParentOfType<func::FuncOp>();
  std::string why;
  if (fn && getLayerForm(fn, why) == LayerForm::GivenRouting &&
      llvm::any_of(leaves, [&](Value v) {
        return v == fn.getArgument(1) || v == fn.getArgument(2);
      })) {
    for (Value v : leaves)
      if (!llvm::is_contained(fn.getArguments(), v))
        return refuse("the router reads the given routing (the function's "
                      "ids and weights arguments) and a value computed in "
                      "the function");
    // The given routing reaches the dispatch unchanged: the dispatch is the
    // whole of the layer's routing (moe.fused_experts reads the arguments
    // and the dispatch's plan); there is no router to fuse.
    if (dispatch && slice.empty() && ids == fn.getArgument(1) &&
        weights == fn.getArgument(2))
      return;
    input = fn.getArgument(0);
    givenIds = fn.getArgument(1);
    givenWeights = fn.getArgument(2);
  } else {
    // Extra layer inputs (moe.input arguments, e.g. sequence scores) become
    // the fused op's extra operands, in argument order.
    bool extraForm = fn && getLayerForm(fn, why) == LayerForm::ExtraInputs;
    for (unsigned i = 1; extraForm && i < fn.getNumArguments(); ++i)
      if (leaves.contains(fn.getArgument(i)))
        extras.push_back(fn.getArgument(i));
    for (Value v : leaves) {
      if (llvm::is_contained(extras, v))
        continue;
      if (input && input != v) {
        InFlightDiagnostic diag = anchor->emitRemark();
        diag << "moe-fuse-routing: not fused: the router reads more than "
                "one tensor that is neither a weight nor a constant";
        if (Operation *def = v.getDefiningOp())
          diag.attachNote(def->getLoc())
              << "one of them is computed by '" << def->getName() << "'";
        else if (Operation *def = input.getDefiningOp())
          diag.attachNote(def->getLoc())
              << "one of them is computed by '" << def->getName() << "'";
        return;
      }
      input = v;
    }
  }
  if (!input)
    return refuse("the router reads no token tensor");

  SmallVector<Operation *> ordered(slice.begin(), slice.end());
  llvm::sort(ordered, [](Operation *a, Operation *b) {
    return a->isBeforeInBlock(b);
  });

  OpBuilder b(anchor);
  Location loc = anchor->getLoc();
  auto i32 = b.getI32Type();
  auto fused = FusedRouteOp::create(
      b, loc, ids.getType(), weights.getType(),
      RankedTensorType::get({numExperts}, i32),
      RankedTensorType::get({numExperts + 1}, i32),
      RankedTensorType::get({ShapedType::kDynamic}, i32), input, givenIds,
      givenWeights, extras, b.getI64IntegerAttr(numExperts));
  Block *body = new Block();
  fused.getBody().push_back(body);
  IRMapping map;
  for (Value v : {input, givenIds, givenWeights})
    if (v)
      map.map(v, body->addArgument(v.getType(), v.getLoc()));
  for (Value v : extras)
    map.map(v, body->addArgument(v.getType(), v.getLoc()));
  {
    OpBuilder inner = OpBuilder::atBlockEnd(body);
    for (Operation *op : ordered)
      inner.clone(*op, map);
    YieldOp::create(inner, loc,
                    ValueRange{map.lookup(ids), map.lookup(weights)});
  }
  // The body must be one the routing kernel can generate (the verifier
  // and the emitter ask the same matcher).
  if (std::optional<RouteMismatch> m = matchRouteBody(*body)) {
    InFlightDiagnostic diag = anchor->emitRemark();
    diag << "moe-fuse-routing: not fused: '" << m->op->getName() << "' "
         << m->reason;
    // Name the op where the user wrote it, not its copy in the body.
    for (auto [orig, copy] : llvm::zip(ordered, body->getOperations()))
      if (&copy == m->op)
        diag.attachNote(orig->getLoc()) << "the op is here";
    diag.report();
    fused.erase();
    return;
  }

  if (dispatch) {
    dispatch.getCounts().replaceAllUsesWith(fused.getCounts());
    dispatch.getOffsets().replaceAllUsesWith(fused.getOffsets());
    dispatch.getRows().replaceAllUsesWith(fused.getRows());
    dispatch.erase();
  }
  // Not the fused op's own operands (the given routing's arguments).
  auto outside = [&](OpOperand &use) {
    return use.getOwner() != fused && !fused->isProperAncestor(use.getOwner());
  };
  ids.replaceUsesWithIf(fused.getIds(), outside);
  weights.replaceUsesWithIf(fused.getWeights(), outside);
  for (Operation *op : llvm::reverse(ordered))
    if (op->use_empty())
      op->erase();
}

struct MoEFuseRoutingPass
    : impl::MoEFuseRoutingBase<MoEFuseRoutingPass> {
  void runOnOperation() override {
    SmallVector<Operation *> anchors;
    getOperation().walk([&](Operation *op) {
      if (isa<DispatchOp>(op) ||
          (isa<LoraMixtureOp>(op) && cast<LoraMixtureOp>(op).getIds()))
        anchors.push_back(op);
      // A router-only function returns its routing (no dispatch).
      std::string why;
      if (auto ret = dyn_cast<func::ReturnOp>(op))
        if (auto fn = dyn_cast<func::FuncOp>(ret->getParentOp());
            fn && getLayerForm(fn, why) == LayerForm::Router &&
            !ret.getOperand(0).getDefiningOp<FusedRouteOp>())
          anchors.push_back(op);
    });
    for (Operation *op : anchors) {
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        std::optional<IdRange> range = getIdRange(ret.getOperand(0));
        if (!range) {
          ret.emitRemark("moe-fuse-routing: not fused: the router function "
                         "returns ids whose number of experts is unknown (not "
                         "from a selection or moe.drop_null_experts)");
          continue;
        }
        fuseRouter(ret, ret.getOperand(0), ret.getOperand(1), range->bound);
        continue;
      }
      if (auto lora = dyn_cast<LoraMixtureOp>(op)) {
        fuseRouter(lora, lora.getIds(), lora.getWeights(),
                   lora.getLoraA().getType().getDimSize(0));
        continue;
      }
      auto dispatch = cast<DispatchOp>(op);
      // The routing weights are those that permute and combine apply.
      Value weights;
      bool conflict = false;
      for (Operation *user : dispatch.getRows().getUsers()) {
        Value w;
        if (auto permute = dyn_cast<PermuteOp>(user))
          w = permute.getWeights();
        else if (auto combine = dyn_cast<CombineOp>(user))
          w = combine.getWeights();
        else
          continue;
        conflict |= weights && w != weights;
        weights = w;
      }
      if (conflict) {
        dispatch.emitRemark("moe-fuse-routing: not fused: moe.permute and "
                            "moe.combine use different routing weights");
        continue;
      }
      if (!weights) {
        dispatch.emitRemark("moe-fuse-routing: not fused: its rows feed no "
                            "moe.permute or moe.combine, so the routing "
                            "weights are unknown");
        continue;
      }
      fuseRouter(dispatch, dispatch.getIds(), weights,
                 dispatch.getNumExperts());
    }
  }
};

} // namespace
} // namespace mlir::moe
