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

int64_t decodeMaxSlots(int64_t experts, int64_t topK) {
  if (experts <= 0 || topK <= 0)
    return kPerTokenMaxSlots;
  double keep = 1.0 - static_cast<double>(std::min(topK, experts)) /
                          static_cast<double>(experts);
  // Rows per distinct expert grow with T; stop at the first T past the
  // bound (at most 65536 tokens).
  int64_t best = 0;
  double untouched = 1.0; // (1 - K / E)^T
  for (int64_t t = 1; t <= 65536; ++t) {
    untouched *= keep;
    double distinct = static_cast<double>(experts) * (1.0 - untouched);
    if (static_cast<double>(t * topK) > kDecodeMaxRowsPerExpert * distinct)
      break;
    best = t * topK;
  }
  return std::max(best, kPerTokenMaxSlots);
}

bool launchRuns(const Launch &launch, int64_t tokens) {
  int64_t slots = tokens * launch.slotsPerToken;
  return slots >= launch.minSlots &&
         (launch.maxSlots < 0 || slots <= launch.maxSlots);
}

} // namespace moe
