//===- FusedExperts.cpp - What a moe.fused_experts body computes ----------===//
//
// Part of moe-opt. See FusedExperts.h.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/FusedExperts.h"

#include "llvm/ADT/SmallPtrSet.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The block argument indices of a fused_experts body (the op's operands).
enum BodyArg { kX, kIds, kWeights, kRows, kOffsets, kNumArgs };

class Matcher {
public:
  Matcher(Block &body, FusedExpertsRefusal &refusal)
      : body(body), refusal(refusal) {}

  FailureOr<FusedExpertsBody> match() {
    Operation *owner = body.getParentOp();
    if (body.getNumArguments() != kNumArgs)
      return refuse(owner, "the body must take x, ids, weights, rows and "
                           "offsets");
    auto yield = dyn_cast<YieldOp>(body.getTerminator());
    if (!yield || yield.getValues().size() != 1)
      return refuse(owner, "the body must yield one value with moe.yield");
    matched.insert(yield);
    if (failed(matchResult(yield.getValues()[0], yield)))
      return failure();
    if (failed(matchRouted()) || failed(matchShared()))
      return failure();
    // Every other op of the body would be ignored by the kernels.
    for (Operation &op : body) {
      if (matched.contains(&op))
        continue;
      if (isa<WeightOp, arith::ConstantOp>(op))
        return refuse(&op, "is not read by the body's result (the kernels "
                           "would ignore it)");
      return refuse(&op, "is not part of what the expert kernels compute: "
                         "permute, expert_ffn (weights optionally "
                         "moe.low_rank) and combine of the routed "
                         "experts, plus optional shared experts (moe.ffn, "
                         "optionally scaled by sigmoid(router_linear))");
    }
    return result;
  }

private:
  Value arg(BodyArg i) { return body.getArgument(i); }

  LogicalResult refuse(Operation *op, const Twine &why) {
    refusal.op = op;
    refusal.reason = why.str();
    return failure();
  }

  /// The op defining `v` if it is an op of the body, else null.
  Operation *def(Value v) {
    Operation *d = v.getDefiningOp();
    return d && d->getBlock() == &body ? d : nullptr;
  }

  /// `op` is matched; each of its operands in `leaves` must be a weight.
  LogicalResult take(Operation *op, ValueRange leaves) {
    matched.insert(op);
    for (Value v : leaves) {
      if (!v)
        continue;
      Operation *d = def(v);
      if (d && isa<WeightOp>(d)) {
        matched.insert(d);
        continue;
      }
      if (auto c = dyn_cast_or_null<arith::ConstantOp>(d)) {
        auto dense = dyn_cast<DenseElementsAttr>(c.getValue());
        if (dense && isa<FloatType>(dense.getElementType())) {
          matched.insert(d);
          continue;
        }
      }
      return refuse(d ? d : op, "a weight operand of '" +
                                    op->getName().getStringRef() +
                                    "' must be a moe.weight or a dense float "
                                    "arith.constant of the body");
    }
    return success();
  }

  /// The yielded value: the combine, or the combine plus shared experts.
  LogicalResult matchResult(Value y, Operation *user) {
    Operation *d = def(y);
    if (!d)
      return refuse(user, "yields a block argument: the body's result must "
                          "be the moe.combine of the routed experts");
    if (auto combine = dyn_cast<CombineOp>(d)) {
      result.combine = combine;
      matched.insert(d);
      return success();
    }
    auto sum = dyn_cast<arith::AddFOp>(d);
    if (!sum)
      return refuse(d, "computes the body's result; the expert kernels "
                       "generate moe.combine, optionally plus shared experts "
                       "(arith.addf)");
    result.sum = sum;
    matched.insert(d);
    Operation *lhs = def(sum.getLhs()), *rhs = def(sum.getRhs());
    Value other;
    if (auto c = dyn_cast_or_null<CombineOp>(lhs)) {
      result.combine = c;
      other = sum.getRhs();
    } else if (auto c = dyn_cast_or_null<CombineOp>(rhs)) {
      result.combine = c;
      other = sum.getLhs();
    } else {
      return refuse(d, "adds two values of which neither is the moe.combine "
                       "of the routed experts");
    }
    matched.insert(result.combine);
    sharedValue = other;
    return success();
  }

  LogicalResult matchRouted() {
    CombineOp combine = result.combine;
    if (combine.getRows() != arg(kRows) ||
        combine.getWeights() != arg(kWeights))
      return refuse(combine, "must read the body's rows and weights");
    auto routed = dyn_cast_or_null<ExpertFFNOp>(def(combine.getInput()));
    if (!routed)
      return refuse(def(combine.getInput()) ? def(combine.getInput())
                                            : combine.getOperation(),
                    "the input of moe.combine must be a moe.expert_ffn");
    if (routed.getOffsets() != arg(kOffsets))
      return refuse(routed, "must read the body's offsets");
    auto permute = dyn_cast_or_null<PermuteOp>(def(routed.getInput()));
    if (!permute)
      return refuse(def(routed.getInput()) ? def(routed.getInput())
                                           : routed.getOperation(),
                    "the input of moe.expert_ffn must be a moe.permute");
    if (permute.getInput() != arg(kX) || permute.getRows() != arg(kRows) ||
        permute.getWeights() != arg(kWeights))
      return refuse(permute, "must gather the body's x with its rows and "
                             "weights");
    result.routed = routed;
    result.permute = permute;
    matched.insert(permute);
    // Factored projections: the product's two factors are the weights.
    for (auto [v, field] :
         {std::pair<Value, LowRankOp *>{routed.getGate(), &result.routedGate},
          {routed.getUp(), &result.routedUp},
          {routed.getGateUp(), &result.routedGateUp},
          {routed.getDown(), &result.routedDown}}) {
      auto product = dyn_cast_or_null<LowRankOp>(v ? def(v) : nullptr);
      if (!product)
        continue;
      if (routed.getWidths())
        return refuse(product, "factored expert weights (moe.low_rank) of a "
                               "moe.expert_ffn with 'widths' are not "
                               "generated: the factored kernels assume one "
                               "intermediate size");
      if (routed.getNonGated())
        return refuse(product, "factored expert weights (moe.low_rank) of a "
                               "non_gated moe.expert_ffn are not generated: "
                               "the factored kernels compute a gate");
      if (!product->hasOneUse())
        return refuse(product, "factored expert weights must be read by "
                               "the moe.expert_ffn only");
      *field = product;
      if (failed(take(product, {product.getA(), product.getB()})))
        return failure();
    }
    auto plain = [](Value v) {
      return v && v.getDefiningOp<LowRankOp>() ? Value() : v;
    };
    return take(routed, {plain(routed.getGate()), plain(routed.getUp()),
                         plain(routed.getGateUp()), plain(routed.getDown()),
                         routed.getGateBias(), routed.getUpBias(),
                         routed.getGateUpBias(), routed.getDownBias(),
                         routed.getGateScale(), routed.getUpScale(),
                         routed.getGateUpScale(), routed.getDownScale()});
  }

  LogicalResult matchShared() {
    if (!sharedValue)
      return success();
    Operation *d = def(sharedValue);
    if (!d)
      return refuse(result.sum, "adds a block argument to the routed "
                                "experts; only shared experts (moe.ffn) can "
                                "be added");
    Value ffnValue = sharedValue;
    if (auto scale = dyn_cast<RowScaleOp>(d)) {
      result.sharedScale = scale;
      matched.insert(d);
      auto sigmoid = dyn_cast_or_null<SigmoidOp>(def(scale.getFactor()));
      if (!sigmoid)
        return refuse(def(scale.getFactor()) ? def(scale.getFactor()) : d,
                      "computes the shared experts' gate; the kernels "
                      "generate sigmoid(router_linear(x)) only");
      result.sharedSigmoid = sigmoid;
      matched.insert(sigmoid);
      auto gate = dyn_cast_or_null<RouterLinearOp>(def(sigmoid.getInput()));
      if (!gate)
        return refuse(def(sigmoid.getInput()) ? def(sigmoid.getInput())
                                              : sigmoid.getOperation(),
                      "computes the shared experts' gate logit; the "
                      "kernels generate moe.router_linear of x only");
      if (gate.getInput() != arg(kX))
        return refuse(gate, "the shared experts' gate must read the body's "
                            "x");
      if (gate.getNormalize() != RouterNormalize::none)
        return refuse(gate, "the shared experts' gate is a plain linear "
                            "router in the kernels; a cosine gate "
                            "('normalize') is not generated");
      result.sharedGate = gate;
      if (failed(take(gate, {gate.getWeight(), gate.getBias()})))
        return failure();
      ffnValue = scale.getInput();
      d = def(ffnValue);
    }
    auto ffn = dyn_cast_or_null<FFNOp>(d);
    if (!ffn)
      return refuse(d ? d : result.sum.getOperation(),
                    "computes the value added to the routed experts; the "
                    "kernels add shared experts (moe.ffn of x) only");
    if (ffn.getInput() != arg(kX))
      return refuse(ffn, "the shared experts must read the body's x");
    result.shared = ffn;
    return take(ffn, {ffn.getGate(), ffn.getUp(), ffn.getGateUp(),
                      ffn.getDown(), ffn.getGateBias(), ffn.getUpBias(),
                      ffn.getGateUpBias(), ffn.getDownBias(),
                      ffn.getGateScale(), ffn.getUpScale(),
                      ffn.getGateUpScale(), ffn.getDownScale()});
  }

  Block &body;
  FusedExpertsRefusal &refusal;
  FusedExpertsBody result;
  Value sharedValue;
  llvm::SmallPtrSet<Operation *, 16> matched;
};

} // namespace

FailureOr<FusedExpertsBody>
mlir::moe::matchFusedExpertsBody(Block &body, FusedExpertsRefusal &refusal) {
  return Matcher(body, refusal).match();
}

ArrayRef<StringRef> mlir::moe::fusedExpertsBodyOpNames() {
  static const StringRef names[] = {
      PermuteOp::getOperationName(),         ExpertFFNOp::getOperationName(),
      CombineOp::getOperationName(),         FFNOp::getOperationName(),
      arith::AddFOp::getOperationName(),     RowScaleOp::getOperationName(),
      SigmoidOp::getOperationName(),         RouterLinearOp::getOperationName(),
      LowRankOp::getOperationName(),         WeightOp::getOperationName(),
      arith::ConstantOp::getOperationName(), YieldOp::getOperationName()};
  return names;
}
