//===- Chain.h - Chaining MoE layers on a residual stream -------*- C++ -*-===//
//
// Part of moe-opt.
//
// How the tools run a model's MoE layers one after the other (moe-run
// --all-layers, moe-report compare --all-layers): on a residual stream, as a
// transformer's blocks do.
//   prenorm:  x' = x + layer(rmsnorm(x))  (unit gain, eps 1e-6; default)
//   residual: x' = x + layer(x)
//   none:     x' = layer(x)
// Without the residual a deep chain shrinks to zeros; without the norm it
// grows without bound. ChainMode, parseChainMode and the arithmetic of a
// step are the runtime's (moe/runtime/Chain.h), which the APIs' run_all use.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_REFERENCE_CHAIN_H
#define MOE_LIB_REFERENCE_CHAIN_H

#include "moe/lib/Reference/Interpreter.h"
#include "moe/runtime/Chain.h"

#include "llvm/Support/Error.h"

namespace moe {

/// The input of the next layer: the stream, or its RMS norm (prenorm).
HostTensor chainInput(ChainMode mode, const HostTensor &stream);

/// The stream after a layer whose output is `y`; fails when the layer
/// changes the width and the mode adds the stream.
llvm::Expected<HostTensor> chainNext(ChainMode mode, const HostTensor &stream,
                                     HostTensor y);

} // namespace moe

#endif // MOE_LIB_REFERENCE_CHAIN_H
