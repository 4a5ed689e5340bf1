//===- RoutingStatsTest.cpp - The one counter of expert load --------------===//
//
// Part of moe-opt. moe::RoutingStats (include/moe/runtime/RoutingStats.h) on
// hand-counted routings: empty and invalid slots, gate mass, imbalance,
// unused experts, an unknown expert count, sums over runs, the JSON keys.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/RoutingStats.h"

#include <gtest/gtest.h>

namespace {

TEST(RoutingStats, CountsSlotsPerExpert) {
  // 4 tokens x 2 slots over 4 experts: expert 0 twice, 1 three times, 2
  // never, 3 once; one empty slot (-1) and one id past the experts.
  const int32_t ids[] = {0, 1, 1, -1, 0, 3, 1, 7};
  const float w[] = {0.5f, 0.5f, 1.0f, 0.0f, 0.25f, 0.75f, 0.5f, 0.5f};
  moe::RoutingStats s = moe::makeRoutingStats(4);
  s.add(ids, w, 4, 2);
  EXPECT_EQ(s.tokens, 4);
  EXPECT_EQ(s.slots, 2);
  EXPECT_EQ(s.tokensPerExpert, (std::vector<int64_t>{2, 3, 0, 1}));
  EXPECT_DOUBLE_EQ(s.gateMass[0], 0.75);
  EXPECT_DOUBLE_EQ(s.gateMass[1], 2.0);
  EXPECT_DOUBLE_EQ(s.gateMass[3], 0.75);
  EXPECT_EQ(s.emptySlots, 1);
  EXPECT_EQ(s.invalidSlots, 1);
  EXPECT_EQ(s.routedSlots(), 6);
  EXPECT_EQ(s.minLoad(), 0);
  EXPECT_EQ(s.maxLoad(), 3);
  EXPECT_DOUBLE_EQ(s.meanLoad(), 1.5);
  EXPECT_DOUBLE_EQ(s.imbalance(), 2.0);
  EXPECT_EQ(s.unusedExperts(), 1);

  // A second run adds up; merge() of a copy doubles everything.
  s.add(ids, w, 4, 2);
  EXPECT_EQ(s.tokens, 8);
  EXPECT_EQ(s.tokensPerExpert[1], 6);
  moe::RoutingStats twice = s;
  twice.merge(s);
  EXPECT_EQ(twice.tokensPerExpert[1], 12);
  EXPECT_EQ(twice.emptySlots, 4);
  EXPECT_DOUBLE_EQ(twice.imbalance(), 2.0);
}

TEST(RoutingStats, UnknownExpertCountGrowsWithTheIds) {
  const int32_t ids[] = {2, 5};
  moe::RoutingStats s = moe::makeRoutingStats(0);
  s.add(ids, nullptr, 2, 1);
  EXPECT_FALSE(s.expertsKnown);
  EXPECT_EQ(s.experts, 6);
  EXPECT_EQ(s.invalidSlots, 0);
  EXPECT_EQ(s.unusedExperts(), 4);
  EXPECT_DOUBLE_EQ(s.gateMass[5], 0.0);
}

TEST(RoutingStats, NothingRoutedIsZeroNotNaN) {
  const int32_t ids[] = {-1, -1};
  moe::RoutingStats s = moe::makeRoutingStats(2);
  s.add(ids, nullptr, 1, 2);
  EXPECT_EQ(s.emptySlots, 2);
  EXPECT_DOUBLE_EQ(s.meanLoad(), 0.0);
  EXPECT_DOUBLE_EQ(s.imbalance(), 0.0);
}

TEST(RoutingStats, JsonAndSummaryCarryTheNumbers) {
  const int32_t ids[] = {0, 1, 1, -1};
  const float w[] = {1, 1, 1, 0};
  moe::RoutingStats s = moe::makeRoutingStats(3);
  s.add(ids, w, 2, 2);
  std::string j = moe::routingStatsJson(s);
  for (const char *needle :
       {"\"tokens\": 2", "\"experts\": 3", "\"tokens_per_expert\": [1, 2, 0]",
        "\"gate_mass\": [1, 2, 0]", "\"empty_slots\": 1", "\"imbalance\": 2",
        "\"unused_experts\": 1", "\"experts_known\": true"})
    EXPECT_NE(j.find(needle), std::string::npos) << needle << " in " << j;
  EXPECT_EQ(moe::routingStatsSummary(s),
            "2 tokens x 2 slots over 3 experts: tokens per expert min 0 "
            "mean 1.00 max 2, imbalance (max/mean) 2.000, 1 unused, 1 empty "
            "slots");
}

} // namespace
