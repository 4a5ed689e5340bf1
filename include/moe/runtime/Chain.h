//===- Chain.h - One step of a chain of MoE layers --------------*- C++ -*-===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//
//
// How a model's MoE layers run one after the other on a residual stream, as
// a transformer's blocks do. The one implementation of the step, shared by
// the tools (lib/Reference/Chain.cpp: moe-run and moe-report --all-layers)
// and the APIs' run_all (runtime/api), which link no MLIR:
//   prenorm:  x' = x + layer(rmsnorm(x))  (unit gain, eps 1e-6; default)
//   residual: x' = x + layer(x)
//   none:     x' = layer(x)
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_CHAIN_H
#define MOE_RUNTIME_CHAIN_H

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moe {

enum class ChainMode { PreNorm, Residual, None };

/// "prenorm", "residual" or "none".
std::optional<ChainMode> parseChainMode(std::string_view name);

/// The next layer's input, in place: under prenorm each row of the stream
/// [tokens, hidden] scaled by 1 / sqrt(mean(row^2) + 1e-6); otherwise
/// nothing changes.
void chainInputRows(ChainMode mode, float *rows, int64_t tokens,
                    int64_t hidden);

/// The stream after a layer, in place: y += stream (count values) unless
/// the mode is none.
void chainAddStream(ChainMode mode, const float *stream, float *y,
                    size_t count);

} // namespace moe

#endif // MOE_RUNTIME_CHAIN_H
