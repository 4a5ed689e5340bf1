//===- Chain.cpp - Chaining MoE layers on a residual stream ---------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Reference/Chain.h"

#include "llvm/ADT/StringSwitch.h"
#include "llvm/ADT/Twine.h"

#include <cmath>

using namespace llvm;

namespace moe {

std::optional<ChainMode> parseChainMode(StringRef name) {
  return StringSwitch<std::optional<ChainMode>>(name)
      .Case("prenorm", ChainMode::PreNorm)
      .Case("residual", ChainMode::Residual)
      .Case("none", ChainMode::None)
      .Default(std::nullopt);
}

HostTensor chainInput(ChainMode mode, const HostTensor &stream) {
  HostTensor x = stream;
  if (mode != ChainMode::PreNorm || x.shape.size() != 2)
    return x;
  int64_t h = x.shape[1];
  for (int64_t t = 0; t < x.shape[0]; ++t) {
    float *row = x.f.data() + t * h;
    double sum = 0;
    for (int64_t j = 0; j < h; ++j)
      sum += static_cast<double>(row[j]) * row[j];
    float scale = static_cast<float>(1.0 / std::sqrt(sum / h + 1e-6));
    for (int64_t j = 0; j < h; ++j)
      row[j] *= scale;
  }
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
  for (size_t i = 0; i < y.f.size(); ++i)
    y.f[i] += stream.f[i];
  return y;
}

} // namespace moe
