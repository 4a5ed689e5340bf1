//===- TranslateRegistration.cpp - moe-translate --moe-to-cuda ------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"
#include "moe/dialects/MoE/MoEDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Tools/mlir-translate/Translation.h"

#include "llvm/Support/CommandLine.h"

namespace moe {

void registerMoEToCudaTranslation() {
  // Registered with the translation (only tools that offer it see it).
  static llvm::cl::opt<std::string> gemm(
      "moe-cuda-gemm",
      llvm::cl::desc(kGroupedGemmHelp),
      llvm::cl::init("pipelined"));
  mlir::TranslateFromMLIRRegistration registration(
      "moe-to-cuda",
      "CUDA C++ of the kernels of fused moe IR (one per fused op)",
      [](mlir::Operation *op, llvm::raw_ostream &os) -> mlir::LogicalResult {
        auto module = llvm::dyn_cast<mlir::ModuleOp>(op);
        if (!module)
          return op->emitError("expected a module");
        std::optional<GroupedGemm> path = parseGroupedGemm(gemm);
        if (!path)
          return mlir::emitError(op->getLoc())
                 << "--moe-cuda-gemm: expected " << kGroupedGemmNames
                 << ", got '" << gemm << "'";
        CudaEmitOptions options;
        options.gemm = *path;
        llvm::Expected<ModulePlan> plan = emitCudaModule(module, options);
        if (!plan) {
          // Reported at the module's location without the module attached
          // (emitting on the op would print all of it, in generic form);
          // the message names the op and its location.
          std::string message = llvm::toString(plan.takeError());
          return mlir::emitError(op->getLoc()) << message;
        }
        os << plan->source;
        return mlir::success();
      },
      [](mlir::DialectRegistry &registry) {
        registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                        mlir::arith::ArithDialect,
                        mlir::tensor::TensorDialect>();
      });
}

} // namespace moe
