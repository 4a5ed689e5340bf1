//===- FuseExperts.cpp - Gather, experts and combine into one op ----------===//
//
// Part of moe-opt. Builds moe.fused_experts from permute -> expert_ffn ->
// combine (and shared experts added to the result).
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/SmallPtrSet.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEFUSEEXPERTS
#include "moe/passes/Passes.h.inc"

namespace {

bool isLeaf(Operation *op) { return isa<WeightOp, arith::ConstantOp>(op); }

/// The shared-expert ops computing `v` from `x`: `moe.ffn(x)`, optionally
/// `moe.row_scale(moe.ffn(x), moe.sigmoid(moe.router_linear(x, w)))`.
/// Returns them in any order, or nothing when `v` is not of that form.
SmallVector<Operation *> matchShared(Value v, Value x) {
  if (auto ffn = v.getDefiningOp<FFNOp>()) {
    if (ffn.getInput() == x && ffn->hasOneUse())
      return {ffn};
    return {};
  }
  auto scale = v.getDefiningOp<RowScaleOp>();
  if (!scale || !scale->hasOneUse())
    return {};
  auto ffn = scale.getInput().getDefiningOp<FFNOp>();
  auto sigmoid = scale.getFactor().getDefiningOp<SigmoidOp>();
  if (!ffn || !sigmoid || ffn.getInput() != x || !ffn->hasOneUse() ||
      !sigmoid->hasOneUse())
    return {};
  auto gate = sigmoid.getInput().getDefiningOp<RouterLinearOp>();
  if (!gate || gate.getInput() != x || !gate->hasOneUse())
    return {};
  return {scale, ffn, sigmoid, gate};
}

void fuseExperts(CombineOp combine, int64_t decodeMaxTokens) {
  auto refuse = [&](const Twine &why) {
    combine.emitRemark() << "moe-fuse-experts: not fused: " << why;
  };
  auto experts = combine.getInput().getDefiningOp<ExpertFFNOp>();
  if (!experts)
    return refuse("its input is not computed by moe.expert_ffn");
  auto permute = experts.getInput().getDefiningOp<PermuteOp>();
  if (!permute)
    return refuse("the experts' input is not computed by moe.permute");
  if (permute.getRows() != combine.getRows())
    return refuse("moe.permute and moe.combine use different rows");
  if (permute.getWeights() != combine.getWeights())
    return refuse("moe.permute and moe.combine use different routing "
                  "weights");
  if (!experts->hasOneUse() || !permute->hasOneUse())
    return refuse("an intermediate value (gathered rows or expert outputs) "
                  "has other users");

  Value rows = combine.getRows();
  Value ids;
  Operation *router = rows.getDefiningOp();
  if (auto fused = dyn_cast_or_null<FusedRouteOp>(router)) {
    ids = fused.getIds();
    if (experts.getOffsets() != fused.getOffsets())
      return refuse("the experts' offsets and the rows come from different "
                    "routing ops");
  } else if (auto dispatch = dyn_cast_or_null<DispatchOp>(router)) {
    ids = dispatch.getIds();
    if (experts.getOffsets() != dispatch.getOffsets())
      return refuse("the experts' offsets and the rows come from different "
                    "routing ops");
  } else {
    return refuse("the rows do not come from moe.dispatch or "
                  "moe.fused_route");
  }

  Value x = permute.getInput();
  SmallVector<Operation *> compute = {permute, experts, combine};
  Operation *last = combine;
  if (combine->hasOneUse()) {
    if (auto add = dyn_cast<arith::AddFOp>(*combine->user_begin())) {
      Value other = add.getLhs() == combine.getResult() ? add.getRhs()
                                                         : add.getLhs();
      SmallVector<Operation *> shared = matchShared(other, x);
      if (!shared.empty()) {
        llvm::append_range(compute, shared);
        compute.push_back(add);
        last = add;
      }
    }
  }
  llvm::sort(compute, [](Operation *a, Operation *b) {
    return a->isBeforeInBlock(b);
  });
  // Weights and constants the body reads are copied into it; anything else
  // from outside must be one of the fused op's operands.
  llvm::SetVector<Operation *> leaves;
  Value weights = combine.getWeights();
  Value offsets = experts.getOffsets();
  llvm::SmallPtrSet<Operation *, 8> inside(compute.begin(), compute.end());
  for (Operation *op : compute)
    for (Value operand : op->getOperands()) {
      Operation *def = operand.getDefiningOp();
      if (def && isLeaf(def)) {
        leaves.insert(def);
        continue;
      }
      if ((def && inside.contains(def)) ||
          llvm::is_contained({x, ids, weights, rows, offsets}, operand))
        continue;
      return refuse("'" + op->getName().getStringRef() +
                    "' reads a value that is neither a moe.weight, a "
                    "constant nor the routing (weights must be moe.weight "
                    "or arith.constant ops to move into the fused body)");
    }

  DispatchLayout layout = DispatchLayout::runtime;
  int64_t tokens = cast<RankedTensorType>(x.getType()).getDimSize(0);
  if (!ShapedType::isDynamic(tokens))
    layout = tokens <= decodeMaxTokens ? DispatchLayout::per_token
                                       : DispatchLayout::grouped;

  OpBuilder b(last);
  Location loc = combine.getLoc();
  auto fused = FusedExpertsOp::create(
      b, loc, last->getResult(0).getType(), x, ids, weights, rows, offsets,
      DispatchLayoutAttr::get(b.getContext(), layout));
  Block *body = new Block();
  fused.getBody().push_back(body);
  IRMapping map;
  for (Value v : {x, ids, weights, rows, offsets})
    map.map(v, body->addArgument(v.getType(), v.getLoc()));
  {
    OpBuilder inner = OpBuilder::atBlockEnd(body);
    for (Operation *leaf : leaves)
      inner.clone(*leaf, map);
    for (Operation *op : compute)
      inner.clone(*op, map);
    YieldOp::create(inner, loc, ValueRange{map.lookup(last->getResult(0))});
  }
  last->getResult(0).replaceAllUsesWith(fused.getResult());
  for (Operation *op : llvm::reverse(compute))
    op->erase();
  for (Operation *leaf : leaves)
    if (leaf->use_empty())
      leaf->erase();
}

struct MoEFuseExpertsPass
    : impl::MoEFuseExpertsBase<MoEFuseExpertsPass> {
  using MoEFuseExpertsBase::MoEFuseExpertsBase;
  void runOnOperation() override {
    SmallVector<CombineOp> combines;
    getOperation().walk([&](CombineOp op) {
      // Combines already inside a fused body are done.
      if (!op->getParentOfType<FusedExpertsOp>())
        combines.push_back(op);
    });
    for (CombineOp op : combines)
      fuseExperts(op, decodeMaxTokens);
  }
};

} // namespace
} // namespace mlir::moe
