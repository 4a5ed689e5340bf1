//===- CodegenTest.cpp - Every op of a fused body is generated or refused -===//
//
// Part of moe-opt. Walks the ops registered by the moe and arith dialects:
// each op kind that the moe.fused_experts matcher accepts must appear in
// the sample body below, which the CUDA emitter generates; every other kind,
// placed in a fused body (in the dataflow of the result, or beside it), is
// refused by the matcher and by the emitter with a message naming it. A new
// op kind without code generation therefore fails here unless it is refused
// by name.
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"
#include "moe/dialects/MoE/FusedExperts.h"
#include "moe/dialects/MoE/MoEDialect.h"
#include "moe/dialects/MoE/MoEOps.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace mlir::moe;

namespace {

/// A layer whose fused_experts body holds every kind the kernels generate:
/// routed experts (factored: moe.low_rank), shared experts and their gate
/// with a bias.
constexpr const char *kLayer = R"mlir(
func.func @layer_0(%x: tensor<?x32xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %wg = moe.weight ["router"] from ["m.safetensors"] : tensor<4x32xf32>
  %logits = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<4x32xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %logits : tensor<?x4xf32>
  %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %ga = moe.weight ["ga"] from ["m.safetensors"] : tensor<4x16x4xf32>
  %gb2 = moe.weight ["gb2"] from ["m.safetensors"] : tensor<4x4x32xf32>
  %g = moe.low_rank %ga, %gb2 : tensor<4x16x4xf32>, tensor<4x4x32xf32> -> tensor<4x16x32xf32>
  %ua = moe.weight ["ua"] from ["m.safetensors"] : tensor<4x16x4xf32>
  %ub = moe.weight ["ub"] from ["m.safetensors"] : tensor<4x4x32xf32>
  %u = moe.low_rank %ua, %ub : tensor<4x16x4xf32>, tensor<4x4x32xf32> -> tensor<4x16x32xf32>
  %da = moe.weight ["da"] from ["m.safetensors"] : tensor<4x32x4xf32>
  %db = moe.weight ["db"] from ["m.safetensors"] : tensor<4x4x16xf32>
  %d = moe.low_rank %da, %db : tensor<4x32x4xf32>, tensor<4x4x16xf32> -> tensor<4x32x16xf32>
  %ys = moe.expert_ffn %xs, %offsets gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<5xi32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %rows, %vals : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %sg = moe.weight ["sg"] from ["m.safetensors"] : tensor<24x32xf32>
  %su = moe.weight ["su"] from ["m.safetensors"] : tensor<24x32xf32>
  %sd = arith.constant dense<0.5> : tensor<32x24xf32>
  %sh = moe.ffn %x gate(%sg) up(%su) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<24x32xf32>, tensor<24x32xf32>, tensor<32x24xf32>) -> tensor<?x32xf32>
  %gw = moe.weight ["gw"] from ["m.safetensors"] : tensor<1x32xf32>
  %gb = moe.weight ["gb"] from ["m.safetensors"] : tensor<1xf32>
  %gl = moe.router_linear %x, %gw bias %gb : (tensor<?x32xf32>, tensor<1x32xf32>, tensor<1xf32>) -> tensor<?x1xf32>
  %gs = moe.sigmoid %gl : tensor<?x1xf32>
  %shg = moe.row_scale %sh, %gs : (tensor<?x32xf32>, tensor<?x1xf32>) -> tensor<?x32xf32>
  %out = arith.addf %y, %shg : tensor<?x32xf32>
  return %out : tensor<?x32xf32>
}
)mlir";

class FusedBodyOps : public ::testing::Test {
protected:
  void SetUp() override {
    context.loadDialect<MoEDialect, func::FuncDialect, arith::ArithDialect>();
  }

  /// The sample layer after --moe-optimize.
  OwningOpRef<ModuleOp> fusedLayer() {
    OwningOpRef<ModuleOp> module =
        parseSourceString<ModuleOp>(kLayer, &context);
    EXPECT_TRUE(module);
    PassManager pm(&context);
    pm.addPass(createMoEOptimize());
    EXPECT_TRUE(succeeded(pm.run(*module)));
    return module;
  }

  static FusedExpertsOp fusedExperts(ModuleOp module) {
    FusedExpertsOp found;
    module.walk([&](FusedExpertsOp op) { found = op; });
    return found;
  }

  /// The registered op kinds of the dialects a fused body may use.
  std::vector<RegisteredOperationName> bodyOpKinds() {
    std::vector<RegisteredOperationName> kinds;
    for (RegisteredOperationName name : context.getRegisteredOperations()) {
      StringRef ns = name.getDialectNamespace();
      if (ns == "moe" || ns == "arith")
        kinds.push_back(name);
    }
    return kinds;
  }

  MLIRContext context;
};

TEST_F(FusedBodyOps, TheSampleBodyIsGeneratedWhole) {
  OwningOpRef<ModuleOp> module = fusedLayer();
  FusedExpertsOp op = fusedExperts(*module);
  ASSERT_TRUE(op);
  FusedExpertsRefusal refusal;
  FailureOr<FusedExpertsBody> body =
      matchFusedExpertsBody(op.getBody().front(), refusal);
  ASSERT_TRUE(succeeded(body)) << refusal.reason;
  EXPECT_TRUE(body->shared && body->sharedGate && body->sharedGate.getBias());
  EXPECT_TRUE(body->routedGate && body->routedUp && body->routedDown);
  llvm::Expected<::moe::ModulePlan> plan = ::moe::emitCudaModule(*module);
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  // Every part of the body is in the kernels' configuration.
  for (const char *expected :
       {"HasShared = true, SharedGate = true", "SharedGateBias = true",
        "ScaleInput = false, Unweighted = false", "LowRank = true",
        "RG = 4, RU = 4, RD = 4"})
    EXPECT_NE(plan->source.find(expected), std::string::npos) << expected;
}

TEST_F(FusedBodyOps, EveryAcceptedKindIsInTheGeneratedSample) {
  OwningOpRef<ModuleOp> module = fusedLayer();
  FusedExpertsOp op = fusedExperts(*module);
  ASSERT_TRUE(op);
  llvm::StringSet<> inSample;
  op.getBody().walk([&](Operation *inner) {
    inSample.insert(inner->getName().getStringRef());
  });
  for (StringRef name : fusedExpertsBodyOpNames())
    EXPECT_TRUE(inSample.contains(name))
        << name.str() << " is accepted in a moe.fused_experts body but the "
        << "generated sample does not exercise it: add it to kLayer";
  // And the list holds registered ops only.
  for (StringRef name : fusedExpertsBodyOpNames())
    EXPECT_TRUE(RegisteredOperationName::lookup(name, &context)) << name.str();
}

TEST_F(FusedBodyOps, EveryOtherKindIsRefusedByName) {
  int refused = 0;
  for (RegisteredOperationName kind : bodyOpKinds()) {
    if (llvm::is_contained(fusedExpertsBodyOpNames(), kind.getStringRef()))
      continue;
    for (bool inDataflow : {true, false}) {
      OwningOpRef<ModuleOp> module = fusedLayer();
      FusedExpertsOp op = fusedExperts(*module);
      ASSERT_TRUE(op);
      Block &body = op.getBody().front();
      auto yield = cast<YieldOp>(body.getTerminator());
      // An instance of the kind (not verified: only its name matters):
      // either between the sum and the yield, or beside the dataflow.
      OperationState state(UnknownLoc::get(&context), kind);
      if (inDataflow) {
        state.addOperands(yield.getOperand(0));
        state.addTypes(yield.getOperand(0).getType());
      }
      OpBuilder b(yield);
      Operation *extra = b.create(state);
      if (inDataflow)
        yield->setOperand(0, extra->getResult(0));
      FusedExpertsRefusal refusal;
      EXPECT_TRUE(failed(matchFusedExpertsBody(body, refusal)))
          << kind.getStringRef().str() << " is accepted";
      EXPECT_EQ(refusal.op, extra) << kind.getStringRef().str();
      llvm::Expected<::moe::ModulePlan> plan = ::moe::emitCudaModule(*module);
      ASSERT_FALSE(static_cast<bool>(plan)) << kind.getStringRef().str();
      std::string message = llvm::toString(plan.takeError());
      EXPECT_NE(message.find("'" + kind.getStringRef().str() + "'"),
                std::string::npos)
          << message;
      ++refused;
    }
  }
  // The walk saw the dialects' ops (not an empty list).
  EXPECT_GT(refused, 40);
}

} // namespace
