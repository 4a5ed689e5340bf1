//===- RoutingStats.h - Per-expert load of a layer's routing ----*- C++ -*-===//
//
// Part of moe-opt. The one place that counts what a routing did: tokens per
// expert, gate mass per expert, empty slots, imbalance. moe-run --stats, the
// C++/C APIs and the Python module all report these numbers (the schema of
// moe-run --stats is in docs/stats.md).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_ROUTINGSTATS_H
#define MOE_RUNTIME_ROUTINGSTATS_H

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

/// Load statistics of one router of a layer, over one or more runs.
struct RoutingStats {
  /// Tokens routed (summed over runs) and slots per token (K).
  int64_t tokens = 0, slots = 0;
  /// Experts the router dispatches to; when the plan does not record it,
  /// one more than the largest id seen (`expertsKnown` false).
  int64_t experts = 0;
  bool expertsKnown = true;
  /// [experts]: slots that picked expert e, and the sum of their weights.
  std::vector<int64_t> tokensPerExpert;
  std::vector<double> gateMass;
  /// Slots with id -1: dropped by a capacity, a null expert (AdaMoE), a
  /// threshold not met. Ids >= experts or < -1 are counted apart.
  int64_t emptySlots = 0, invalidSlots = 0;

  /// Adds the routing of one run: ids and weights [tokens, slots] (weights
  /// may be null).
  void add(const int32_t *ids, const float *weights, int64_t tokens,
           int64_t slots);
  /// Adds another accumulation of the same router.
  void merge(const RoutingStats &other);

  int64_t minLoad() const;
  int64_t maxLoad() const;
  double meanLoad() const;
  /// max / mean tokens per expert (1 = perfectly balanced; 0 without any
  /// routed slot).
  double imbalance() const;
  /// Experts that no slot picked.
  int64_t unusedExperts() const;
  /// Filled slots (neither empty nor invalid).
  int64_t routedSlots() const;
};

/// A fresh accumulator for a router of `experts` experts (0: unknown, grown
/// from the ids seen).
RoutingStats makeRoutingStats(int64_t experts);

/// The JSON object of one router's statistics (docs/stats.md), and the
/// one-line summary moe-run prints.
std::string routingStatsJson(const RoutingStats &s, int indent = 0);
std::string routingStatsSummary(const RoutingStats &s);

} // namespace moe

#endif // MOE_RUNTIME_ROUTINGSTATS_H
