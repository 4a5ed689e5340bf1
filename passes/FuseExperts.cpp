//===- FuseExperts.cpp - Gather, experts and combine into one op ----------===//
//
// Part of moe-opt. Builds moe.fused_experts from permute -> expert_ffn ->
// combine (and shared experts added to the result).
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/FusedExperts.h"
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

/// The ops that compute `v` from `x` and weights only, each used only by
/// the others or by `user`: what may move into the fused body with the sum
/// `user` (shared experts; the body's matcher decides whether the kernels
/// can generate it). Empty when `v` reads anything else.
SmallVector<Operation *> sharedSlice(Value v, Value x, Operation *user) {
  llvm::SetVector<Operation *> slice;
  SmallVector<Value> work = {v};
  while (!work.empty()) {
    Value u = work.pop_back_val();
    if (u == x)
      continue;
    Operation *def = u.getDefiningOp();
    if (!def || def->getBlock() != user->getBlock() ||
        def->getNumRegions() != 0)
      return {};
    if (isLeaf(def) || !slice.insert(def))
      continue;
    llvm::append_range(work, def->getOperands());
  }
  for (Operation *op : slice)
    for (Operation *u : op->getUsers())
      if (u != user && !slice.contains(u))
        return {};
  return SmallVector<Operation *>(slice.begin(), slice.end());
}

void fuseExperts(CombineOp combine, int64_t decodeMaxTokens,
                 bool fp8Activations) {
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
  Value weights = combine.getWeights();
  Value offsets = experts.getOffsets();
  DispatchLayout layout = DispatchLayout::runtime;
  int64_t tokens = cast<RankedTensorType>(x.getType()).getDimSize(0);
  if (!ShapedType::isDynamic(tokens))
    layout = tokens <= decodeMaxTokens ? DispatchLayout::per_token
                                       : DispatchLayout::grouped;

  // Builds the fused op of `compute` (whose last op is `last`) and checks
  // its body with the op's matcher; on a refusal the op is erased again.
  auto build = [&](SmallVector<Operation *> compute, Operation *last,
                   FusedExpertsRefusal &refusal) -> FusedExpertsOp {
    llvm::sort(compute, [](Operation *a, Operation *b) {
      return a->isBeforeInBlock(b);
    });
    // Weights and constants the body reads are copied into it; anything
    // else from outside must be one of the fused op's operands.
    llvm::SetVector<Operation *> leaves;
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
        refusal.op = op;
        refusal.reason = "reads a value that is neither a moe.weight, a "
                         "constant nor the routing (weights must be "
                         "moe.weight or arith.constant ops to move into the "
                         "fused body)";
        return nullptr;
      }
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
    OpBuilder inner = OpBuilder::atBlockEnd(body);
    llvm::DenseMap<Operation *, Operation *> original;
    for (Operation *op : leaves)
      original[inner.clone(*op, map)] = op;
    for (Operation *op : compute)
      original[inner.clone(*op, map)] = op;
    YieldOp::create(inner, loc, ValueRange{map.lookup(last->getResult(0))});
    if (failed(matchFusedExpertsBody(*body, refusal))) {
      // Name the original op, not its clone in the erased body.
      refusal.op = original.lookup(refusal.op);
      if (!refusal.op)
        refusal.op = last;
      fused->erase();
      return nullptr;
    }
    if (fp8Activations)
      fused->setAttr(kFp8ActivationsAttrName, b.getUnitAttr());
    last->getResult(0).replaceAllUsesWith(fused.getResult());
    for (Operation *op : llvm::reverse(compute))
      op->erase();
    for (Operation *leaf : leaves)
      if (leaf->use_empty())
        leaf->erase();
    return fused;
  };
  auto refuseOp = [&](const FusedExpertsRefusal &r, StringRef what) {
    combine.emitRemark() << "moe-fuse-experts: " << what << ": '"
                         << r.op->getName() << "' " << r.reason;
  };

  SmallVector<Operation *> core = {permute, experts, combine};
  // Factored expert weights (moe.low_rank of two weights) move with the
  // experts: the kernels read the factors.
  for (Value w : experts->getOperands())
    if (auto product = w.getDefiningOp<LowRankOp>())
      if (product->hasOneUse() && !llvm::is_contained(core, product))
        core.push_back(product);
  // Shared experts added to the combine join the body when the kernels can
  // generate them; otherwise the remark names the op and the sum stays
  // outside.
  if (combine->hasOneUse()) {
    if (auto add = dyn_cast<arith::AddFOp>(*combine->user_begin())) {
      Value other =
          add.getLhs() == combine.getResult() ? add.getRhs() : add.getLhs();
      SmallVector<Operation *> shared = sharedSlice(other, x, add);
      if (!shared.empty()) {
        SmallVector<Operation *> compute = core;
        llvm::append_range(compute, shared);
        compute.push_back(add);
        FusedExpertsRefusal refusal;
        if (build(compute, add, refusal))
          return;
        refuseOp(refusal, "shared experts not fused");
      }
    }
  }
  FusedExpertsRefusal refusal;
  if (!build(core, combine, refusal))
    refuseOp(refusal, "not fused");
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
      fuseExperts(op, decodeMaxTokens, fp8Activations);
  }
};

} // namespace
} // namespace mlir::moe
