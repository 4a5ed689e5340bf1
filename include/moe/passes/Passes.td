//===- Passes.td - Passes of moe-opt -----------------------*- tablegen -*-===//
//
// Part of moe-opt. Each pass is defined in passes/<Name>.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_TD
#define MOE_PASSES_TD

include "mlir/Pass/PassBase.td"

#endif // MOE_PASSES_TD
