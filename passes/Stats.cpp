//===- Stats.cpp - Op and kernel counts per MoE layer ---------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"

#include "llvm/Support/raw_ostream.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOESTATS
#include "moe/passes/Passes.h.inc"

namespace {

bool isBookkeeping(Operation *op) {
  return isa<WeightOp, arith::ConstantOp, YieldOp, func::ReturnOp,
             func::FuncOp>(op) ||
         op->hasTrait<OpTrait::IsTerminator>();
}

struct MoEStatsPass : impl::MoEStatsBase<MoEStatsPass> {
  using MoEStatsBase::MoEStatsBase;

  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>()) {
      auto layer = fn->getAttrOfType<IntegerAttr>(kLayerAttrName);
      if (!layer)
        continue;
      int64_t ops = 0;
      SmallVector<std::string> kernels;
      fn.walk([&](Operation *op) {
        if (isBookkeeping(op) || isa<FusedRouteOp, FusedExpertsOp>(op))
          return;
        ++ops;
      });
      for (Operation &op : fn.getBody().front()) {
        if (isBookkeeping(&op))
          continue;
        kernels.push_back(op.getName().stripDialect().str());
      }
      llvm::errs() << "moe-stats";
      if (!label.empty())
        llvm::errs() << " " << label;
      llvm::errs() << ": @" << fn.getSymName() << " (layer " << layer.getInt()
                   << "): " << ops << " ops, " << kernels.size()
                   << " kernels: " << llvm::join(kernels, ", ") << "\n";
    }
  }
};

} // namespace
} // namespace mlir::moe
