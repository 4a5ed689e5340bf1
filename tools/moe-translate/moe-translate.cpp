//===- moe-translate.cpp - Translations out of moe IR ---------------------===//
//
// Part of moe-opt. `moe-translate --moe-to-cuda IN.mlir` prints the CUDA C++
// of every fused op.
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"
#include "moe/lib/Weights/InputFile.h"

#include "mlir/Tools/mlir-translate/MlirTranslateMain.h"
#include "llvm/Support/CommandLine.h"

int main(int argc, char **argv) {
  // Hostile nesting would overflow the parser's stack: check the input
  // files named on the command line first (options and their values are
  // skipped; standard input is left to the parser).
  for (int i = 1; i < argc; ++i) {
    llvm::StringRef a = argv[i];
    if (a == "-o" || a == "--o") {
      ++i;
      continue;
    }
    if (a.starts_with("-"))
      continue;
    if (auto buffer = moe::readIRFile(a); !buffer) {
      llvm::errs() << "moe-translate: error: "
                   << llvm::toString(buffer.takeError()) << "\n";
      return 1;
    }
  }
  // The options registered so far are LLVM's own (every backend linked
  // into libLLVM: AMDGPU, x86, ...); none applies to moe-translate. Hide
  // them from --help (they still parse); the translation's options,
  // registered inside mlirTranslateMain, and --help/--version stay listed.
  // LLVM's own HideUnrelatedOptions walks its options (calling into them
  // from here trips UBSan's vptr check: libLLVM has no RTTI).
  static llvm::cl::OptionCategory translateCategory("moe-translate options");
  llvm::cl::HideUnrelatedOptions(translateCategory);
  moe::registerMoEToCudaTranslation();
  return mlir::failed(
      mlir::mlirTranslateMain(argc, argv, "moe-translate: moe IR to CUDA C++"));
}
