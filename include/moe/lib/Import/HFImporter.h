//===- HFImporter.h - Hugging Face models to moe IR -------------*- C++ -*-===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_IMPORT_HFIMPORTER_H
#define MOE_LIB_IMPORT_HFIMPORTER_H

#include "moe/lib/Import/ModelSpec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace moe {

struct ImportOptions {
  std::string modelDir;
  std::vector<std::string> adapterDirs;
  std::string loraRouter;
  /// Element type of the activations of the emitted functions: "f32" (the
  /// default: reference-grade), or "model" for the checkpoint's dtype.
  std::string activationType = "f32";
};

/// Emits one function per MoE layer (`@layer_L`, attribute `moe.layer = L`)
/// and one per LoRA-wrapped projection (`@lora_L_<target>`, attributes
/// `moe.layer = L` and `moe.lora_target`).
mlir::OwningOpRef<mlir::ModuleOp> emitModel(mlir::MLIRContext &context,
                                            const ModelSpec &spec,
                                            const ImportOptions &options);

/// Reads the model (and adapters) and emits verified IR.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
importHuggingFaceModel(mlir::MLIRContext &context,
                       const ImportOptions &options);

} // namespace moe

#endif // MOE_LIB_IMPORT_HFIMPORTER_H
