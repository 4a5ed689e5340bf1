//===- moe-opt.cpp - The moe optimizer driver -----------------------------===//
//
// Part of moe-opt. An mlir-opt style driver with the moe dialect and passes.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEDialect.h"
#include "moe/lib/Weights/InputFile.h"
#include "moe/passes/NewWeights.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/Support/InitLLVM.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect,
                  mlir::linalg::LinalgDialect>();
  mlir::registerTransformsPasses();
  mlir::moe::registerMoEPasses();
  llvm::InitLLVM init(argc, argv);
  auto [inputFile, outputFile] = mlir::registerAndParseCLIOptions(
      argc, argv, "moe-opt: MoE layer optimizer\n", registry);
  // Hostile nesting would overflow the parser's stack: refuse it first.
  // Standard input is left to the parser (it cannot be read twice).
  if (inputFile != "-") {
    auto buffer = moe::readIRFile(inputFile);
    if (!buffer) {
      llvm::errs() << "moe-opt: error: " << llvm::toString(buffer.takeError())
                   << "\n";
      return 1;
    }
  }
  // Passes that create weights write them beside the output IR.
  mlir::moe::setOutputIRPath(outputFile);
  // Passes that read the existing weights resolve them beside the input.
  mlir::moe::setInputIRPath(inputFile);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, inputFile, outputFile, registry));
}
