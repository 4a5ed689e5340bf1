//===- Plan.cpp - Launch plans of generated kernels -----------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Plan.h"

#include <algorithm>

namespace moe {

const char *elementTypeName(ElementType type) {
  switch (type) {
  case ElementType::F32:
    return "f32";
  case ElementType::BF16:
    return "bf16";
  case ElementType::F16:
    return "f16";
  case ElementType::I32:
    return "i32";
  case ElementType::U32:
    return "u32";
  }
  return "?";
}

int64_t elementSize(ElementType type) {
  return type == ElementType::BF16 || type == ElementType::F16 ? 2 : 4;
}

int64_t gridBlocks(const Launch &launch, int64_t tokens) {
  int64_t per = std::max<int64_t>(launch.tokensPerBlock, 1);
  int64_t rows = tokens * std::max<int64_t>(launch.rowsPerToken, 1);
  int64_t blocks = ((rows + per - 1) / per + std::max<int64_t>(
                                                 launch.extraBlocks, 0)) *
                   std::max<int64_t>(launch.gridColumns, 1);
  return std::clamp<int64_t>(blocks, 1, std::max<int64_t>(launch.maxBlocks, 1));
}

bool launchRuns(const Launch &launch, int64_t tokens) {
  int64_t slots = tokens * launch.slotsPerToken;
  return slots >= launch.minSlots &&
         (launch.maxSlots < 0 || slots <= launch.maxSlots);
}

} // namespace moe
