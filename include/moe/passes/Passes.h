//===- Passes.h - Passes of moe-opt -----------------------------*- C++ -*-===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_PASSES_H
#define MOE_PASSES_PASSES_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "moe/dialects/MoE/MoEDialect.h"
#include "mlir/Pass/Pass.h"

namespace mlir::moe {

#define GEN_PASS_DECL
#include "moe/passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "moe/passes/Passes.h.inc"

} // namespace mlir::moe

#endif // MOE_PASSES_PASSES_H
