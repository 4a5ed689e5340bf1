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
  case ElementType::F8E4M3FN:
    return "f8E4M3FN";
  case ElementType::F4E2M1FN:
    return "f4E2M1FN";
  case ElementType::F8E8M0FNU:
    return "f8E8M0FNU";
  }
  return "?";
}

bool isQuantizedType(ElementType type) {
  return type == ElementType::F8E4M3FN || type == ElementType::F4E2M1FN ||
         type == ElementType::F8E8M0FNU;
}

int64_t elementSize(ElementType type) {
  if (isQuantizedType(type))
    return 1;
  return type == ElementType::BF16 || type == ElementType::F16 ? 2 : 4;
}

int64_t storageBytes(ElementType type, int64_t count) {
  if (type == ElementType::F4E2M1FN)
    return (count + 1) / 2;
  return count * elementSize(type);
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
