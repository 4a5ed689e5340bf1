//===- moe-opt.cpp - The moe optimizer driver -----------------------------===//
//
// Part of moe-opt. An mlir-opt style driver with the moe dialect and passes.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEDialect.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect,
                  mlir::linalg::LinalgDialect>();
  mlir::registerTransformsPasses();
  mlir::moe::registerMoEPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "moe-opt: MoE layer optimizer\n", registry));
}
