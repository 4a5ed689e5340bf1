//===- Optimize.cpp - The moe optimisation pipeline -----------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEOPTIMIZE
#include "moe/passes/Passes.h.inc"

namespace {
struct MoEOptimizePass : impl::MoEOptimizeBase<MoEOptimizePass> {
  using MoEOptimizeBase::MoEOptimizeBase;

  void runOnOperation() override {
    OpPassManager pm(ModuleOp::getOperationName());
    if (stats)
      pm.addPass(createMoEStats(MoEStatsOptions{"before"}));
    pm.addPass(createCanonicalizerPass());
    OpPassManager &fpm = pm.nest<func::FuncOp>();
    fpm.addPass(createMoEFuseRouting());
    fpm.addPass(createMoEFuseExperts(
        MoEFuseExpertsOptions{decodeMaxTokens, fp8Activations}));
    pm.addPass(createCanonicalizerPass());
    pm.addPass(createCSEPass());
    if (stats)
      pm.addPass(createMoEStats(MoEStatsOptions{"after"}));
    if (failed(runPipeline(pm, getOperation())))
      signalPassFailure();
  }
};
} // namespace
} // namespace mlir::moe
