//===- RoutingStats.cpp - Per-expert load of a layer's routing ------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/RoutingStats.h"

#include <algorithm>
#include <cstdio>

namespace moe {

RoutingStats makeRoutingStats(int64_t experts) {
  RoutingStats s;
  s.experts = experts;
  s.expertsKnown = experts > 0;
  s.tokensPerExpert.assign(static_cast<size_t>(std::max<int64_t>(experts, 0)),
                           0);
  s.gateMass.assign(s.tokensPerExpert.size(), 0.0);
  return s;
}

void RoutingStats::add(const int32_t *ids, const float *weights,
                       int64_t tokens, int64_t slots) {
  this->slots = std::max(this->slots, slots);
  this->tokens += tokens;
  for (int64_t i = 0; i < tokens * slots; ++i) {
    int32_t e = ids[i];
    if (e == -1) {
      ++emptySlots;
      continue;
    }
    if (e < -1 || (expertsKnown && e >= experts)) {
      ++invalidSlots;
      continue;
    }
    if (e >= experts) { // Unknown expert count: grow to the ids seen.
      experts = e + 1;
      tokensPerExpert.resize(static_cast<size_t>(experts), 0);
      gateMass.resize(static_cast<size_t>(experts), 0.0);
    }
    ++tokensPerExpert[e];
    if (weights)
      gateMass[e] += weights[i];
  }
}

void RoutingStats::merge(const RoutingStats &other) {
  tokens += other.tokens;
  slots = std::max(slots, other.slots);
  if (other.experts > experts) {
    experts = other.experts;
    tokensPerExpert.resize(static_cast<size_t>(experts), 0);
    gateMass.resize(static_cast<size_t>(experts), 0.0);
  }
  for (size_t e = 0; e < other.tokensPerExpert.size(); ++e) {
    tokensPerExpert[e] += other.tokensPerExpert[e];
    gateMass[e] += other.gateMass[e];
  }
  emptySlots += other.emptySlots;
  invalidSlots += other.invalidSlots;
}

int64_t RoutingStats::minLoad() const {
  return tokensPerExpert.empty()
             ? 0
             : *std::min_element(tokensPerExpert.begin(),
                                 tokensPerExpert.end());
}

int64_t RoutingStats::maxLoad() const {
  return tokensPerExpert.empty()
             ? 0
             : *std::max_element(tokensPerExpert.begin(),
                                 tokensPerExpert.end());
}

int64_t RoutingStats::routedSlots() const {
  int64_t n = 0;
  for (int64_t c : tokensPerExpert)
    n += c;
  return n;
}

double RoutingStats::meanLoad() const {
  return experts > 0 ? static_cast<double>(routedSlots()) /
                           static_cast<double>(experts)
                     : 0.0;
}

double RoutingStats::imbalance() const {
  double mean = meanLoad();
  return mean > 0 ? static_cast<double>(maxLoad()) / mean : 0.0;
}

int64_t RoutingStats::unusedExperts() const {
  return std::count(tokensPerExpert.begin(), tokensPerExpert.end(), 0);
}

/// A double as JSON: %.9g, enough for a float's weights summed.
static std::string number(double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.9g", v);
  return buffer;
}

std::string routingStatsJson(const RoutingStats &s, int indent) {
  std::string pad(static_cast<size_t>(indent), ' ');
  std::string in = pad + "  ";
  std::string j = "{\n";
  auto field = [&](const std::string &key, const std::string &value,
                   bool last = false) {
    j += in + "\"" + key + "\": " + value + (last ? "\n" : ",\n");
  };
  field("tokens", std::to_string(s.tokens));
  field("slots", std::to_string(s.slots));
  field("experts", std::to_string(s.experts));
  field("experts_known", s.expertsKnown ? "true" : "false");
  std::string counts = "[", mass = "[";
  for (size_t e = 0; e < s.tokensPerExpert.size(); ++e) {
    counts += (e ? ", " : "") + std::to_string(s.tokensPerExpert[e]);
    mass += (e ? ", " : "") + number(s.gateMass[e]);
  }
  field("tokens_per_expert", counts + "]");
  field("gate_mass", mass + "]");
  field("routed_slots", std::to_string(s.routedSlots()));
  field("empty_slots", std::to_string(s.emptySlots));
  field("invalid_slots", std::to_string(s.invalidSlots));
  field("min", std::to_string(s.minLoad()));
  field("mean", number(s.meanLoad()));
  field("max", std::to_string(s.maxLoad()));
  field("imbalance", number(s.imbalance()));
  field("unused_experts", std::to_string(s.unusedExperts()), true);
  return j + pad + "}";
}

std::string routingStatsSummary(const RoutingStats &s) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer),
                "%lld tokens x %lld slots over %lld experts%s: tokens per "
                "expert min %lld mean %.2f max %lld, imbalance (max/mean) "
                "%.3f, %lld unused, %lld empty slots",
                static_cast<long long>(s.tokens),
                static_cast<long long>(s.slots),
                static_cast<long long>(s.experts),
                s.expertsKnown ? "" : " (seen)",
                static_cast<long long>(s.minLoad()), s.meanLoad(),
                static_cast<long long>(s.maxLoad()), s.imbalance(),
                static_cast<long long>(s.unusedExperts()),
                static_cast<long long>(s.emptySlots));
  return buffer;
}

} // namespace moe
