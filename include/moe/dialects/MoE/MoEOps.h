//===- MoEOps.h - Operations of the moe dialect -----------------*- C++ -*-===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_MOEOPS_H
#define MOE_DIALECTS_MOE_MOEOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "moe/dialects/MoE/MoEDialect.h"

#include "moe/dialects/MoE/MoEEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/dialects/MoE/MoEAttrs.h.inc"

#include "moe/dialects/MoE/MoERouterInterfaces.h.inc"

#define GET_OP_CLASSES
#include "moe/dialects/MoE/MoEOps.h.inc"

#endif // MOE_DIALECTS_MOE_MOEOPS_H
