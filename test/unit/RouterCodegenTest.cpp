//===- RouterCodegenTest.cpp - Every router op has a row template --------===//
//
// Part of moe-opt. Walks the ops of the moe dialect that carry
// RouterOpInterface: each must have a sample router here, and that router,
// fused by --moe-optimize, must generate a routing kernel that runs the op
// (the emitter writes a `// <op name>` line before each op's code). A new
// router op without a sample, or without a case in the emitter's visitor,
// fails this test.
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"
#include "moe/dialects/MoE/MoEOps.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace {

/// Router lines computing %ids : tensor<?xKxi32> and %w : tensor<?xKxf32>
/// from %l = router_linear(%x) : tensor<?xNxf32>, and K, N.
struct Sample {
  const char *router;
  int k, n;
  /// Extra function arguments after %x (moe.input), if the router reads any.
  const char *args = "";
};

// N = 6 only for drop_null_experts (4 experts + 2 null experts) and
// remap_experts (6 router experts merged into 4).
const std::map<std::string, Sample> &samples() {
  static const std::map<std::string, Sample> s = {
      {"moe.router_linear",
       {"%ids, %w = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.softmax",
       {"%p = moe.softmax %l : tensor<?x4xf32>\n"
        "%ids, %w = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.sigmoid",
       {"%p = moe.sigmoid %l : tensor<?x4xf32>\n"
        "%ids, %w = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.relu",
       {"%p = moe.relu %l : tensor<?x4xf32>\n"
        "%ids, %w = moe.threshold %p {max_k = 4 : i64} : tensor<?x4xf32> -> "
        "tensor<?x4xi32>, tensor<?x4xf32>",
        4, 4}},
      {"moe.rms_norm",
       {"%p = moe.rms_norm %l : tensor<?x4xf32>\n"
        "%ids, %w = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.bias_add",
       {"%b = moe.weight [\"bias\"] from [\"m.safetensors\"] : tensor<4xf32>\n"
        "%p = moe.bias_add %l, %b : tensor<?x4xf32>, tensor<4xf32>\n"
        "%ids, %w = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.group_limit",
       {"%p = moe.group_limit %l {group_score = #moe.group_score<max>, "
        "keep_groups = 1 : i64, num_groups = 2 : i64} : tensor<?x4xf32>\n"
        "%ids, %w = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.topk",
       {"%ids, %w = moe.topk %l {k = 3 : i64} : tensor<?x4xf32> -> "
        "tensor<?x3xi32>, tensor<?x3xf32>",
        3, 4}},
      {"moe.top_p",
       {"%p = moe.softmax %l : tensor<?x4xf32>\n"
        "%ids, %w = moe.top_p %p {max_k = 3 : i64, p = 0.5 : f32} : "
        "tensor<?x4xf32> -> tensor<?x3xi32>, tensor<?x3xf32>",
        3, 4}},
      {"moe.entropy_fallback",
       {"%p = moe.softmax %l : tensor<?x4xf32>\n"
        "%i, %v = moe.top_p %p {max_k = 2 : i64, min_k = 2 : i64, p = 0.5 : "
        "f32, prefix = #moe.top_p_prefix<within>} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>\n"
        "%ids, %w = moe.entropy_fallback %p, %i, %v {q = 2.0 : f32, "
        "threshold = 0.5 : f32, normalized} : tensor<?x4xf32>, "
        "tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x4xi32>, "
        "tensor<?x4xf32>",
        4, 4}},
      {"moe.threshold",
       {"%ids, %w = moe.threshold %l {max_k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.expert_choice",
       {"%ids, %w = moe.expert_choice %l {capacity = 2 : i64} : "
        "tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>",
        4, 4}},
      {"moe.capacity",
       {"%i, %v = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>\n"
        "%ids, %w = moe.capacity %i, %v {capacity_factor = 1.25 : f32, "
        "num_experts = 4 : i64} : tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.sinkhorn",
       {"%b = moe.sinkhorn %l {iterations = 2 : i64, epsilon = 1.0 : f32} : "
        "tensor<?x4xf32>\n"
        "%ids, %w = moe.topk %b {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.similarity_mix",
       {"%p = moe.softmax %l : tensor<?x4xf32>\n"
        "%m = moe.similarity_mix %x, %p {temperature = 4.0 : f32, causal} : "
        "tensor<?x16xf32>, tensor<?x4xf32>\n"
        "%ids, %w = moe.topk %m {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4}},
      {"moe.gather_scores",
       {"%s = moe.sigmoid %l : tensor<?x4xf32>\n"
        "%ids, %v = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>\n"
        "%w = moe.gather_scores %s, %ids : tensor<?x4xf32>, tensor<?x2xi32> "
        "-> tensor<?x2xf32>",
        2, 4}},
      {"moe.drop_null_experts",
       {"%i6, %v = moe.topk %l {k = 2 : i64} : tensor<?x6xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>\n"
        "%ids, %w = moe.drop_null_experts %i6, %v {num_experts = 4 : i64} : "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 6}},
      {"moe.remap_experts",
       {"%i6, %v = moe.topk %l {k = 2 : i64} : tensor<?x6xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>\n"
        "%ids, %w = moe.remap_experts %i6, %v mapping = [0, 1, 2, 3, 0, 1] : "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 6}},
      {"moe.add_sequence_scores",
       {"%s = moe.add_sequence_scores %l, %gs, %m : tensor<?x4xf32>, "
        "tensor<?x4xf32>, tensor<?xi32>\n"
        "%ids, %w = moe.topk %s {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>",
        2, 4,
        ", %gs: tensor<?x4xf32> {moe.input = \"seq_scores\"}, %m: "
        "tensor<?xi32> {moe.input = \"seq_map\"}"}},
      {"moe.normalize",
       {"%ids, %v = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>\n"
        "%w = moe.normalize %v : tensor<?x2xf32>",
        2, 4}},
      {"moe.scale",
       {"%ids, %v = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> "
        "tensor<?x2xi32>, tensor<?x2xf32>\n"
        "%w = moe.scale %v {factor = 2.0 : f32} : tensor<?x2xf32>",
        2, 4}},
  };
  return s;
}

/// A layer: the sample router, then dispatch, experts and combine.
std::string layerIR(const Sample &s) {
  std::string k = std::to_string(s.k), n = std::to_string(s.n);
  std::string ids = "tensor<?x" + k + "xi32>", w = "tensor<?x" + k + "xf32>";
  return "func.func @layer_0(%x: tensor<?x16xf32>" + std::string(s.args) +
         ") -> tensor<?x16xf32> "
         "attributes {moe.layer = 0 : i64} {\n"
         "%wg = moe.weight [\"gate\"] from [\"m.safetensors\"] : tensor<" +
         n + "x16xf32>\n%l = moe.router_linear %x, %wg : (tensor<?x16xf32>, "
             "tensor<" +
         n + "x16xf32>) -> tensor<?x" + n + "xf32>\n" + s.router +
         "\n%cnt, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : " +
         ids +
         " -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>\n"
         "%xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, "
         "tensor<?xi32>, " +
         w +
         ") -> tensor<?x16xf32>\n"
         "%g = moe.weight [\"g\"] from [\"m.safetensors\"] : "
         "tensor<4x32x16xf32>\n"
         "%d = moe.weight [\"d\"] from [\"m.safetensors\"] : "
         "tensor<4x16x32xf32>\n"
         "%ys = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) "
         "{activation = #moe.activation<silu>} : (tensor<?x16xf32>, "
         "tensor<5xi32>, tensor<4x32x16xf32>, tensor<4x32x16xf32>, "
         "tensor<4x16x32xf32>) -> tensor<?x16xf32>\n"
         "%y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, "
         "tensor<?xi32>, " +
         w +
         ") -> tensor<?x16xf32>\n"
         "return %y : tensor<?x16xf32>\n}\n";
}

TEST(RouterCodegen, EveryRouterOpIsGenerated) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect>();
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  int routerOps = 0;
  for (mlir::RegisteredOperationName name :
       context.getRegisteredOperations()) {
    if (name.getDialectNamespace() != "moe" ||
        !name.hasInterface<mlir::moe::RouterOpInterface>())
      continue;
    ++routerOps;
    std::string op = name.getStringRef().str();
    auto it = samples().find(op);
    ASSERT_NE(it, samples().end())
        << op << " is a router op without a sample here: add one so that "
                 "its code generation is tested";
    std::string ir = layerIR(it->second);
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::parseSourceString<mlir::ModuleOp>(ir, &context);
    ASSERT_TRUE(module) << op << ": the sample does not parse:\n" << ir;
    mlir::PassManager pm(&context, mlir::ModuleOp::getOperationName());
    pm.addPass(mlir::moe::createMoEOptimize());
    ASSERT_TRUE(mlir::succeeded(pm.run(*module))) << op;
    int fused = 0;
    module->walk([&](mlir::moe::FusedRouteOp) { ++fused; });
    ASSERT_EQ(fused, 1) << op << ": the sample router was not fused";
    llvm::Expected<moe::ModulePlan> plan = moe::emitCudaModule(*module);
    ASSERT_TRUE(static_cast<bool>(plan))
        << op << ": " << llvm::toString(plan.takeError());
    EXPECT_NE(plan->source.find("// " + op), std::string::npos)
        << op << ": the routing kernel has no code for the op:\n"
        << plan->source;
  }
  // Every op of the table is a router op (no stale samples).
  EXPECT_EQ(routerOps, static_cast<int>(samples().size()));
}

} // namespace
