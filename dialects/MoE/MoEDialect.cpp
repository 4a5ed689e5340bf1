//===- MoEDialect.cpp - The moe dialect -----------------------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEDialect.h"
#include "moe/dialects/MoE/FusedExperts.h"
#include "moe/dialects/MoE/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::moe;

#include "moe/dialects/MoE/MoEDialect.cpp.inc"
#include "moe/dialects/MoE/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/dialects/MoE/MoEAttrs.cpp.inc"

void MoEDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "moe/dialects/MoE/MoEAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "moe/dialects/MoE/MoEOps.cpp.inc"
      >();
}

LogicalResult MoEDialect::verifyOperationAttribute(Operation *op,
                                                   NamedAttribute attr) {
  if (attr.getName() == kLayerAttrName) {
    auto layer = dyn_cast<IntegerAttr>(attr.getValue());
    if (!layer || layer.getValue().isNegative())
      return op->emitError() << "'" << kLayerAttrName
                             << "' must be a non-negative integer layer "
                                "index, got "
                             << attr.getValue();
    if (!isa<FunctionOpInterface>(op))
      return op->emitError() << "'" << kLayerAttrName
                             << "' belongs on a function, not on '"
                             << op->getName() << "'";
    return success();
  }
  if (attr.getName() == kWeightRootAttrName) {
    if (!isa<StringAttr>(attr.getValue()))
      return op->emitError() << "'" << kWeightRootAttrName
                             << "' must be a string (a directory), got "
                             << attr.getValue();
    if (!isa<ModuleOp>(op))
      return op->emitError() << "'" << kWeightRootAttrName
                             << "' belongs on the module";
    return success();
  }
  if (attr.getName() == kFp8ActivationsAttrName) {
    if (!isa<UnitAttr>(attr.getValue()) || !isa<FusedExpertsOp>(op))
      return op->emitError() << "'" << kFp8ActivationsAttrName
                             << "' is a unit attribute of moe.fused_experts";
    return success();
  }
  // Free-form model metadata written by the importer (moe.model_type, ...).
  return success();
}
