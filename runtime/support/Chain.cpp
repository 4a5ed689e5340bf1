//===- Chain.cpp - One step of a chain of MoE layers ----------------------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Chain.h"

#include <cmath>

namespace moe {

std::optional<ChainMode> parseChainMode(std::string_view name) {
  if (name == "prenorm")
    return ChainMode::PreNorm;
  if (name == "residual")
    return ChainMode::Residual;
  if (name == "none")
    return ChainMode::None;
  return std::nullopt;
}

void chainInputRows(ChainMode mode, float *rows, int64_t tokens,
                    int64_t hidden) {
  if (mode != ChainMode::PreNorm || hidden <= 0)
    return;
  for (int64_t t = 0; t < tokens; ++t) {
    float *row = rows + t * hidden;
    // The sum in double: a wide row of large values stays finite.
    double sum = 0;
    for (int64_t j = 0; j < hidden; ++j)
      sum += static_cast<double>(row[j]) * row[j];
    float scale = static_cast<float>(1.0 / std::sqrt(sum / hidden + 1e-6));
    for (int64_t j = 0; j < hidden; ++j)
      row[j] *= scale;
  }
}

void chainAddStream(ChainMode mode, const float *stream, float *y,
                    size_t count) {
  if (mode == ChainMode::None)
    return;
  for (size_t i = 0; i < count; ++i)
    y[i] += stream[i];
}

} // namespace moe
