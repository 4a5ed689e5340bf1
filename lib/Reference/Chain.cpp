//===- Chain.cpp - Chaining MoE layers on a residual stream ---------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Reference/Chain.h"

#include "llvm/ADT/Twine.h"

using namespace llvm;

namespace moe {

HostTensor chainInput(ChainMode mode, const HostTensor &stream) {
  HostTensor x = stream;
  if (x.shape.size() == 2)
    chainInputRows(mode, x.f.data(), x.shape[0], x.shape[1]);
  return x;
}

Expected<HostTensor> chainNext(ChainMode mode, const HostTensor &stream,
                               HostTensor y) {
  if (mode == ChainMode::None)
    return y;
  if (y.shape != stream.shape)
    return createStringError(
        "the layer maps width " +
        Twine(stream.shape.size() == 2 ? stream.shape[1] : -1) + " to " +
        Twine(y.shape.size() == 2 ? y.shape[1] : -1) +
        ": the residual x + layer(x) needs equal widths (--chain none "
        "chains the outputs alone)");
  chainAddStream(mode, stream.f.data(), y.f.data(), y.f.size());
  return y;
}

} // namespace moe
