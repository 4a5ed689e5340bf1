//===- moe-translate.cpp - Translations out of moe IR ---------------------===//
//
// Part of moe-opt. `moe-translate --moe-to-cuda IN.mlir` prints the CUDA C++
// of every fused op.
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"

#include "mlir/Tools/mlir-translate/MlirTranslateMain.h"

int main(int argc, char **argv) {
  moe::registerMoEToCudaTranslation();
  return mlir::failed(
      mlir::mlirTranslateMain(argc, argv, "moe-translate: moe IR to CUDA C++"));
}
