//===- MoEDialect.h - The moe dialect ---------------------------*- C++ -*-===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_MOEDIALECT_H
#define MOE_DIALECTS_MOE_MOEDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "moe/dialects/MoE/MoEDialect.h.inc"

namespace mlir::moe {
/// Name of the function attribute that marks the MoE block of a layer.
inline constexpr llvm::StringLiteral kLayerAttrName = "moe.layer";
/// Name of the module attribute that relative weight paths resolve against.
inline constexpr llvm::StringLiteral kWeightRootAttrName = "moe.weight_root";
} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_MOEDIALECT_H
