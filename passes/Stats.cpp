//===- Stats.cpp - Op and kernel counts per MoE layer ---------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"
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

/// The token counts the launch counts are given for: one token (decode)
/// and a prefill batch (every moe.fused_experts of `runtime` layout takes
/// its grouped kernels).
constexpr int64_t kDecodeTokens = 1, kPrefillTokens = 4096;

struct MoEStatsPass : impl::MoEStatsBase<MoEStatsPass> {
  using MoEStatsBase::MoEStatsBase;

  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>()) {
      auto layer = fn->getAttrOfType<IntegerAttr>(kLayerAttrName);
      if (!layer)
        continue;
      int64_t ops = 0;
      SmallVector<std::string> topLevel;
      fn.walk([&](Operation *op) {
        if (isBookkeeping(op) || isa<FusedRouteOp, FusedExpertsOp>(op))
          return;
        ++ops;
      });
      for (Operation &op : fn.getBody().front()) {
        if (isBookkeeping(&op))
          continue;
        topLevel.push_back(op.getName().stripDialect().str());
      }
      llvm::errs() << "moe-stats";
      if (!label.empty())
        llvm::errs() << " " << label;
      llvm::errs() << ": @" << fn.getSymName() << " (layer " << layer.getInt()
                   << "): " << ops << " ops, " << topLevel.size()
                   << " top-level ops: " << llvm::join(topLevel, ", ")
                   << "; kernel launches: ";
      // What the CUDA code generator launches (the emulation runs the same
      // plan).
      llvm::Expected<::moe::LayerPlan> plan = ::moe::planCudaLayer(fn);
      if (!plan) {
        llvm::consumeError(plan.takeError());
        llvm::errs() << "none (not every op is fused)\n";
        continue;
      }
      auto launches = [&](int64_t tokens) {
        return llvm::count_if(plan->launches, [&](const ::moe::Launch &l) {
          return ::moe::launchRuns(l, tokens);
        });
      };
      llvm::errs() << launches(kDecodeTokens)
                   << " at decode (T = " << kDecodeTokens << "), "
                   << launches(kPrefillTokens)
                   << " at prefill (T = " << kPrefillTokens << ")\n";
    }
  }
};

} // namespace
} // namespace mlir::moe
