//===- Placement.cpp - Expert placement over GPUs -------------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Analysis/Placement.h"

#include "AffinityBound.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <coin/Cbc_C_Interface.h>
#include <glpk.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <tuple>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace llvm;

namespace moe {

namespace {

Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

/// A double in messages (%g).
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

//===----------------------------------------------------------------------===//
// Topology
//===----------------------------------------------------------------------===//

/// Reads a number field in [lo, hi]; `required` or keeps `out`.
Error readNumber(const json::Object &o, StringRef key, StringRef where,
                 StringRef path, double lo, double hi, bool required,
                 double &out) {
  const json::Value *v = o.get(key);
  if (!v) {
    if (!required)
      return Error::success();
    return makeError(path + ": topology field '" + where + key +
                     "' is missing");
  }
  std::optional<double> d = v->getAsNumber();
  if (!d || !std::isfinite(*d))
    return makeError(path + ": topology field '" + where + key +
                     "' must be a number");
  if (*d < lo || *d > hi)
    return makeError(path + ": topology field '" + where + key + "' is " +
                     num(*d) + ", expected a value in [" + num(lo) + ", " +
                     num(hi) + "]");
  out = *d;
  return Error::success();
}

Error readCount(const json::Object &o, StringRef key, StringRef path,
                int64_t lo, int64_t hi, int64_t &out) {
  const json::Value *v = o.get(key);
  if (!v)
    return makeError(path + ": topology field '" + key + "' is missing");
  std::optional<int64_t> i = v->getAsInteger();
  if (!i)
    return makeError(path + ": topology field '" + key +
                     "' must be an integer");
  if (*i < lo || *i > hi)
    return makeError(path + ": topology field '" + key + "' is " + Twine(*i) +
                     ", expected " + Twine(lo) + " to " + Twine(hi));
  out = *i;
  return Error::success();
}

// Bounds that refuse absurd numbers (a typo of a few orders of magnitude):
// links between 1 MB/s and 100 TB/s, latencies below one second, HBM up to
// 100 TB, math up to 1e18 FLOP/s.
constexpr double kMinBandwidth = 1e6, kMaxBandwidth = 1e14;
constexpr double kMaxLatency = 1.0;
constexpr double kMaxHbm = 1e14, kMaxFlops = 1e18;

} // namespace

double Topology::bandwidth(int64_t from, int64_t to) const {
  if (!gpuBandwidth.empty())
    return gpuBandwidth[from * gpus() + to];
  return nodeOf(from) == nodeOf(to) ? intraBandwidth : interBandwidth;
}

double Topology::latency(int64_t from, int64_t to) const {
  return nodeOf(from) == nodeOf(to) ? intraLatency : interLatency;
}

Expected<Topology> parseTopology(StringRef text, StringRef path) {
  Expected<json::Value> parsed = json::parse(text);
  if (!parsed)
    return makeError(path + ": not JSON: " + toString(parsed.takeError()));
  const json::Object *o = parsed->getAsObject();
  if (!o)
    return makeError(path + ": a topology is a JSON object");
  static const char *const kKnown[] = {
      "nodes",      "gpus_per_node", "hbm_bytes",    "gpu_flops",
      "intra_node", "inter_node",    "gpu_bandwidth"};
  for (const auto &kv : *o)
    if (!is_contained(kKnown, StringRef(kv.first)))
      return makeError(path + ": unknown topology field '" + kv.first.str() +
                       "'");
  Topology t;
  if (Error e = readCount(*o, "nodes", path, 1, 4096, t.nodes))
    return std::move(e);
  if (Error e = readCount(*o, "gpus_per_node", path, 1, 64, t.gpusPerNode))
    return std::move(e);
  if (Error e =
          readNumber(*o, "hbm_bytes", "", path, 1, kMaxHbm, true, t.hbmBytes))
    return std::move(e);
  if (Error e = readNumber(*o, "gpu_flops", "", path, 1e6, kMaxFlops, true,
                           t.gpuFlops))
    return std::move(e);
  for (auto [key, bw, lat] :
       {std::tuple{"intra_node", &t.intraBandwidth, &t.intraLatency},
        std::tuple{"inter_node", &t.interBandwidth, &t.interLatency}}) {
    const json::Value *v = o->get(key);
    // One node needs no inter-node link.
    if (!v && StringRef(key) == "inter_node" && t.nodes == 1) {
      *bw = t.intraBandwidth;
      *lat = t.intraLatency;
      continue;
    }
    if (!v)
      return makeError(path + ": topology field '" + key + "' is missing");
    const json::Object *link = v->getAsObject();
    if (!link)
      return makeError(path + ": topology field '" + key +
                       "' must be an object {bandwidth, latency}");
    std::string where = (Twine(key) + ".").str();
    if (Error e = readNumber(*link, "bandwidth", where, path, kMinBandwidth,
                             kMaxBandwidth, true, *bw))
      return std::move(e);
    if (Error e = readNumber(*link, "latency", where, path, 0, kMaxLatency,
                             true, *lat))
      return std::move(e);
  }
  if (const json::Value *v = o->get("gpu_bandwidth")) {
    int64_t g = t.gpus();
    const json::Array *rows = v->getAsArray();
    if (!rows || static_cast<int64_t>(rows->size()) != g)
      return makeError(path + ": topology field 'gpu_bandwidth' must be " +
                       Twine(g) + " rows (nodes x gpus_per_node)");
    for (int64_t i = 0; i < g; ++i) {
      const json::Array *row = (*rows)[i].getAsArray();
      if (!row || static_cast<int64_t>(row->size()) != g)
        return makeError(path + ": topology field 'gpu_bandwidth[" + Twine(i) +
                         "]' must be " + Twine(g) + " numbers");
      for (int64_t j = 0; j < g; ++j) {
        std::optional<double> d = (*row)[j].getAsNumber();
        bool diagonal = i == j;
        if (!d || !std::isfinite(*d) ||
            (!diagonal && (*d < kMinBandwidth || *d > kMaxBandwidth)))
          return makeError(path + ": topology field 'gpu_bandwidth[" +
                           Twine(i) + "][" + Twine(j) +
                           "]' must be a bandwidth in [1e6, 1e14] bytes/s");
        t.gpuBandwidth.push_back(*d);
      }
    }
  }
  return t;
}

Expected<Topology> readTopology(StringRef path) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return makeError(path +
                     ": cannot read topology: " + buffer.getError().message());
  return parseTopology((*buffer)->getBuffer(), path);
}

//===----------------------------------------------------------------------===//
// Placements and their measures
//===----------------------------------------------------------------------===//

std::vector<int64_t> LayerPlacement::replicaCounts() const {
  std::vector<int64_t> counts(experts, 0);
  for (int64_t e : slotExpert)
    if (e >= 0 && e < experts)
      ++counts[e];
  return counts;
}

Error validatePlacement(const LayerPlacement &p, int64_t gpus, StringRef what) {
  std::string head = (what + ": layer " + Twine(p.layer)).str();
  if (p.experts <= 0)
    return makeError(head + ": no experts");
  if (p.slotExpert.size() != p.slotGpu.size())
    return makeError(head + ": " + Twine(p.slotExpert.size()) +
                     " slot experts but " + Twine(p.slotGpu.size()) +
                     " slot GPUs");
  std::vector<int64_t> perGpu(gpus, 0);
  std::set<std::pair<int64_t, int64_t>> held;
  for (int64_t s = 0, n = p.slots(); s < n; ++s) {
    int64_t e = p.slotExpert[s], g = p.slotGpu[s];
    if (e < 0 || e >= p.experts)
      return makeError(head + ": slot " + Twine(s) + " holds expert " +
                       Twine(e) + ", expected 0 to " + Twine(p.experts - 1));
    if (g < 0 || g >= gpus)
      return makeError(head + ": slot " + Twine(s) + " is on GPU " + Twine(g) +
                       ", expected 0 to " + Twine(gpus - 1));
    if (!held.insert({g, e}).second)
      return makeError(head + ": expert " + Twine(e) +
                       " is placed twice on GPU " + Twine(g));
    ++perGpu[g];
  }
  std::vector<int64_t> counts = p.replicaCounts();
  for (int64_t e = 0; e < p.experts; ++e)
    if (counts[e] == 0)
      return makeError(head + ": expert " + Twine(e) + " has no slot");
  for (int64_t g = 1; g < gpus; ++g)
    if (perGpu[g] != perGpu[0])
      return makeError(head + ": GPU " + Twine(g) + " has " + Twine(perGpu[g]) +
                       " slots but GPU 0 has " + Twine(perGpu[0]) +
                       "; every GPU needs the same number");
  return Error::success();
}

std::vector<double> gpuLoads(const LayerPlacement &p, int64_t gpus,
                             ArrayRef<double> expertLoad) {
  std::vector<int64_t> counts = p.replicaCounts();
  std::vector<double> loads(gpus, 0.0);
  for (int64_t s = 0; s < p.slots(); ++s) {
    int64_t e = p.slotExpert[s];
    loads[p.slotGpu[s]] += expertLoad[e] / static_cast<double>(counts[e]);
  }
  return loads;
}

double balance(const LayerPlacement &p, int64_t gpus,
               ArrayRef<double> expertLoad) {
  std::vector<double> loads = gpuLoads(p, gpus, expertLoad);
  double sum = std::accumulate(loads.begin(), loads.end(), 0.0);
  if (sum <= 0)
    return 1.0;
  return *std::max_element(loads.begin(), loads.end()) /
         (sum / static_cast<double>(gpus));
}

namespace {
/// share[e * gpus + g]: fraction of expert e's tokens served on GPU g.
std::vector<double> shares(const LayerPlacement &p, int64_t gpus) {
  std::vector<int64_t> counts = p.replicaCounts();
  std::vector<double> s(p.experts * gpus, 0.0);
  for (int64_t k = 0; k < p.slots(); ++k) {
    int64_t e = p.slotExpert[k];
    s[e * gpus + p.slotGpu[k]] += 1.0 / static_cast<double>(counts[e]);
  }
  return s;
}
} // namespace

Crossing crossGpu(const LayerPlacement &a, const LayerPlacement &b,
                  int64_t gpus, ArrayRef<double> transition) {
  std::vector<double> sa = shares(a, gpus), sb = shares(b, gpus);
  Crossing c;
  for (int64_t i = 0; i < a.experts; ++i)
    for (int64_t j = 0; j < b.experts; ++j) {
      double t = transition[i * b.experts + j];
      if (t == 0)
        continue;
      // Tokens at i on GPU g stay when j is served on g too.
      double same = 0;
      for (int64_t g = 0; g < gpus; ++g)
        same += sa[i * gpus + g] * sb[j * gpus + g];
      c.total += t;
      c.crossing += t * (1.0 - same);
    }
  return c;
}

//===----------------------------------------------------------------------===//
// Balanced (EPLB-style)
//===----------------------------------------------------------------------===//

namespace {

/// Lowers the heaviest pack by swapping one of its items with a lighter
/// item of another pack while that lowers the larger of the two loads
/// (greedy packing with equal item counts leaves pairs of mid-sized items
/// together that a swap separates). Never puts a label twice in a pack.
void refinePacks(ArrayRef<double> weight, ArrayRef<int64_t> label,
                 std::vector<std::vector<int64_t>> &members,
                 std::vector<double> &packWeight) {
  int64_t packs = members.size();
  auto holdsOther = [&](int64_t p, int64_t l, int64_t except) {
    return llvm::any_of(
        members[p], [&](int64_t m) { return m != except && label[m] == l; });
  };
  // Swaps item `a` of pack `p` with item `b` of pack `q`.
  auto swapItems = [&](int64_t p, size_t a, int64_t q, size_t b) {
    int64_t x = members[p][a], y = members[q][b];
    double d = weight[x] - weight[y];
    packWeight[p] -= d;
    packWeight[q] += d;
    members[p][a] = y;
    members[q][b] = x;
  };
  // First even out every pair of packs (each swap lowers the sum of
  // squared loads), then work on the heaviest pack.
  for (int sweep = 0; sweep < 100; ++sweep) {
    bool changed = false;
    for (int64_t p = 0; p < packs; ++p)
      for (int64_t q = 0; q < packs; ++q) {
        double gap = packWeight[p] - packWeight[q];
        if (gap <= 0)
          continue;
        size_t bestA = 0, bestB = 0;
        double bestGain = 1e-12 * packWeight[p];
        bool found = false;
        for (size_t a = 0; a < members[p].size(); ++a)
          for (size_t b = 0; b < members[q].size(); ++b) {
            int64_t x = members[p][a], y = members[q][b];
            double d = weight[x] - weight[y];
            // Sum of squares drops by 2 d (gap - d).
            double gain = d * (gap - d);
            if (d > 0 && gain > bestGain && !holdsOther(q, label[x], y) &&
                !holdsOther(p, label[y], x)) {
              bestGain = gain;
              bestA = a;
              bestB = b;
              found = true;
            }
          }
        if (!found)
          continue;
        swapItems(p, bestA, q, bestB);
        changed = true;
      }
    if (!changed)
      break;
  }
  for (int iter = 0; iter < 100000; ++iter) {
    int64_t top = std::max_element(packWeight.begin(), packWeight.end()) -
                  packWeight.begin();
    double best = packWeight[top];
    int64_t bestQ = -1;
    size_t bestA = 0, bestB = 0;
    for (size_t a = 0; a < members[top].size(); ++a) {
      int64_t x = members[top][a];
      for (int64_t q = 0; q < packs; ++q) {
        if (q == top)
          continue;
        for (size_t b = 0; b < members[q].size(); ++b) {
          int64_t y = members[q][b];
          double d = weight[x] - weight[y];
          if (d <= 0)
            continue;
          double worse = std::max(packWeight[top] - d, packWeight[q] + d);
          if (worse < best - 1e-12 * packWeight[top] &&
              !holdsOther(q, label[x], y) && !holdsOther(top, label[y], x)) {
            best = worse;
            bestQ = q;
            bestA = a;
            bestB = b;
          }
        }
      }
    }
    if (bestQ < 0)
      return;
    swapItems(top, bestA, bestQ, bestB);
  }
}

/// Packs items into `packs` packs of equal item counts, heaviest item first
/// into the lightest pack that has room (EPLB's balanced packing), except
/// that a pack already holding an item of the same `label` is skipped when
/// another has room. Returns pack and rank in pack per item; duplicates
/// left by a forced choice are repaired by swaps, or an error.
Error packItems(ArrayRef<double> weight, ArrayRef<int64_t> label, int64_t packs,
                bool refine, std::vector<int64_t> &pack,
                std::vector<int64_t> &rank) {
  int64_t n = weight.size(), perPack = n / packs;
  pack.assign(n, -1);
  rank.assign(n, -1);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return weight[a] > weight[b]; });
  std::vector<double> packWeight(packs, 0.0);
  std::vector<std::vector<int64_t>> members(packs);
  auto holds = [&](int64_t p, int64_t l) {
    return llvm::any_of(members[p], [&](int64_t m) { return label[m] == l; });
  };
  for (int64_t item : order) {
    int64_t best = -1, forced = -1;
    for (int64_t p = 0; p < packs; ++p) {
      if (static_cast<int64_t>(members[p].size()) >= perPack)
        continue;
      if (forced < 0 || packWeight[p] < packWeight[forced])
        forced = p;
      if (holds(p, label[item]))
        continue;
      if (best < 0 || packWeight[p] < packWeight[best])
        best = p;
    }
    int64_t p = best >= 0 ? best : forced;
    pack[item] = p;
    members[p].push_back(item);
    packWeight[p] += weight[item];
  }
  // Repair: swap a duplicate with an item of another pack that holds
  // neither label twice afterwards, the swap changing loads least.
  for (int64_t p = 0; p < packs; ++p) {
    for (size_t a = 0; a < members[p].size(); ++a) {
      int64_t x = members[p][a];
      bool dup = false;
      for (size_t b = 0; b < a; ++b)
        dup |= label[members[p][b]] == label[x];
      if (!dup)
        continue;
      int64_t bestQ = -1;
      size_t bestB = 0;
      double bestDelta = INFINITY;
      for (int64_t q = 0; q < packs; ++q) {
        if (q == p || holds(q, label[x]))
          continue;
        for (size_t b = 0; b < members[q].size(); ++b) {
          int64_t y = members[q][b];
          if (holds(p, label[y]))
            continue;
          double delta = std::fabs(weight[x] - weight[y]);
          if (delta < bestDelta) {
            bestDelta = delta;
            bestQ = q;
            bestB = b;
          }
        }
      }
      if (bestQ < 0)
        return makeError("no packing without two replicas of expert " +
                         Twine(label[x]) + " on one GPU");
      int64_t y = members[bestQ][bestB];
      packWeight[p] += weight[y] - weight[x];
      packWeight[bestQ] += weight[x] - weight[y];
      members[p][a] = y;
      members[bestQ][bestB] = x;
      pack[y] = p;
      pack[x] = bestQ;
    }
  }
  if (refine)
    refinePacks(weight, label, members, packWeight);
  for (int64_t p = 0; p < packs; ++p)
    for (size_t r = 0; r < members[p].size(); ++r) {
      pack[members[p][r]] = p;
      rank[members[p][r]] = r;
    }
  return Error::success();
}

} // namespace

Expected<LayerPlacement> balancedPlacement(ArrayRef<double> load,
                                           int64_t redundant, int64_t groups,
                                           int64_t nodes, int64_t gpus,
                                           bool refine) {
  int64_t experts = load.size();
  int64_t physical = experts + redundant;
  if (experts <= 0 || redundant < 0 || gpus <= 0 || physical % gpus != 0)
    return makeError("balanced: " + Twine(experts) + " experts + " +
                     Twine(redundant) +
                     " redundant slots must be a multiple "
                     "of the " +
                     Twine(gpus) + " GPUs");
  // EPLB's rule: hierarchical when the groups split evenly over the nodes.
  bool hierarchical = groups > 0 && groups % nodes == 0 &&
                      experts % groups == 0 && gpus % nodes == 0 &&
                      (physical / gpus) * (gpus / nodes) >= experts / nodes;
  if (!hierarchical) {
    groups = 1;
    nodes = 1;
  }
  int64_t groupSize = experts / groups, groupsPerNode = groups / nodes;
  int64_t gpusPerNode = gpus / nodes, perGpu = physical / gpus;
  int64_t logPerNode = experts / nodes, phyPerNode = physical / nodes;

  // Step 1: expert groups to nodes. mlog (node-major order) -> logical.
  std::vector<double> groupLoad(groups, 0.0);
  for (int64_t e = 0; e < experts; ++e)
    groupLoad[e / groupSize] += load[e];
  std::vector<int64_t> groupPack, groupRank;
  std::vector<int64_t> groupLabel(groups);
  std::iota(groupLabel.begin(), groupLabel.end(), 0);
  if (groups == nodes) {
    groupPack = groupLabel;
    groupRank.assign(groups, 0);
  } else if (Error e = packItems(groupLoad, groupLabel, nodes, refine,
                                 groupPack, groupRank)) {
    return std::move(e);
  }
  std::vector<int64_t> mlog2log(experts);
  for (int64_t e = 0; e < experts; ++e) {
    int64_t g = e / groupSize;
    int64_t mlog = (groupPack[g] * groupsPerNode + groupRank[g]) * groupSize +
                   e % groupSize;
    mlog2log[mlog] = e;
  }

  LayerPlacement out;
  out.experts = experts;
  out.slotExpert.assign(physical, -1);
  out.slotGpu.assign(physical, -1);
  for (int64_t node = 0; node < nodes; ++node) {
    // Step 2: replicas to the expert of highest load per replica, at most
    // one per GPU of the node.
    std::vector<double> w(logPerNode);
    for (int64_t m = 0; m < logPerNode; ++m)
      w[m] = load[mlog2log[node * logPerNode + m]];
    std::vector<int64_t> phy2mlog(phyPerNode), count(logPerNode, 1);
    std::iota(phy2mlog.begin(), phy2mlog.begin() + logPerNode, 0);
    for (int64_t p = logPerNode; p < phyPerNode; ++p) {
      int64_t best = -1;
      for (int64_t m = 0; m < logPerNode; ++m) {
        if (count[m] >= gpusPerNode)
          continue;
        if (best < 0 || w[m] / count[m] > w[best] / count[best])
          best = m;
      }
      if (best < 0)
        return makeError("balanced: " + Twine(redundant) +
                         " redundant slots are more than one replica of "
                         "every expert per GPU allows");
      phy2mlog[p] = best;
      ++count[best];
    }
    // Step 3: replicas to the node's GPUs.
    auto packCounts = [&](ArrayRef<int64_t> phy2m, ArrayRef<int64_t> cnt,
                          std::vector<int64_t> &pack,
                          std::vector<int64_t> &rank) -> Error {
      std::vector<double> phyLoad(phyPerNode);
      for (int64_t p = 0; p < phyPerNode; ++p)
        phyLoad[p] = w[phy2m[p]] / cnt[phy2m[p]];
      if (gpusPerNode == 1) {
        pack.assign(phyPerNode, 0);
        rank.resize(phyPerNode);
        std::iota(rank.begin(), rank.end(), 0);
        return Error::success();
      }
      return packItems(phyLoad, phy2m, gpusPerNode, refine, pack, rank);
    };
    auto maxPack = [&](ArrayRef<int64_t> phy2m, ArrayRef<int64_t> cnt,
                       ArrayRef<int64_t> pack, int64_t &heaviest) {
      std::vector<double> loads(gpusPerNode, 0.0);
      std::vector<int64_t> big(gpusPerNode, -1);
      for (int64_t p = 0; p < phyPerNode; ++p) {
        double x = w[phy2m[p]] / cnt[phy2m[p]];
        loads[pack[p]] += x;
        int64_t &b = big[pack[p]];
        if (b < 0 || x > w[b] / cnt[b])
          b = phy2m[p];
      }
      int64_t top =
          std::max_element(loads.begin(), loads.end()) - loads.begin();
      heaviest = big[top];
      return loads[top];
    };
    std::vector<int64_t> pack, rank;
    if (Error e = packCounts(phy2mlog, count, pack, rank))
      return std::move(e);
    // EPLB's replica counts minimise the largest replica load, which can
    // leave more mid-sized replicas (above half a GPU's share) than GPUs:
    // two then share a GPU. Counts from a target load tau instead (each
    // expert split until its replicas are at most tau; the slots left over
    // go to the lightest experts, where they cannot hurt) keep the big
    // replicas one per GPU. Several targets are packed and the lightest
    // heaviest GPU wins; EPLB's own counts are the first candidate.
    if (refine && redundant > 0) {
      int64_t heaviest;
      double bestMax = maxPack(phy2mlog, count, pack, heaviest);
      double total = std::accumulate(w.begin(), w.end(), 0.0);
      double share = total / static_cast<double>(gpusPerNode);
      std::vector<int64_t> byLoad(logPerNode);
      std::iota(byLoad.begin(), byLoad.end(), 0);
      std::stable_sort(byLoad.begin(), byLoad.end(),
                       [&](int64_t x, int64_t y) { return w[x] < w[y]; });
      for (int k = 0; k <= 20 && share > 0; ++k) {
        double tau = share * (1.0 + 0.01 * k);
        std::vector<int64_t> cnt(logPerNode);
        int64_t used = 0;
        for (int64_t m = 0; m < logPerNode; ++m) {
          cnt[m] = std::clamp<int64_t>(
              static_cast<int64_t>(std::ceil(w[m] / tau - 1e-9)), 1,
              gpusPerNode);
          used += cnt[m];
        }
        if (used > phyPerNode)
          continue;
        for (int64_t i = 0; used < phyPerNode; i = (i + 1) % logPerNode) {
          int64_t m = byLoad[i];
          if (cnt[m] < gpusPerNode) {
            ++cnt[m];
            ++used;
          }
        }
        std::vector<int64_t> phy2m(phyPerNode);
        int64_t at = 0;
        for (int64_t m = 0; m < logPerNode; ++m)
          for (int64_t r = 0; r < cnt[m]; ++r)
            phy2m[at++] = m;
        std::vector<int64_t> pk, rk;
        if (Error e = packCounts(phy2m, cnt, pk, rk)) {
          consumeError(std::move(e));
          continue;
        }
        double m2 = maxPack(phy2m, cnt, pk, heaviest);
        if (m2 < bestMax * (1 - 1e-12)) {
          bestMax = m2;
          count = std::move(cnt);
          phy2mlog = std::move(phy2m);
          pack = std::move(pk);
          rank = std::move(rk);
        }
      }
    }
    for (int64_t p = 0; p < phyPerNode; ++p) {
      int64_t slot = node * phyPerNode + pack[p] * perGpu + rank[p];
      out.slotExpert[slot] = mlog2log[node * logPerNode + phy2mlog[p]];
      out.slotGpu[slot] = node * gpusPerNode + pack[p];
    }
  }
  return out;
}

//===----------------------------------------------------------------------===//
// Affinity
//===----------------------------------------------------------------------===//

namespace {

/// GPU of each expert per layer (affinity placements have no replicas).
using Assignment = std::vector<std::vector<int64_t>>;

/// The most load an affinity placement may put on one GPU of each layer:
/// maxBalance x the mean GPU load, or the heaviest expert's load when it
/// alone is more (infinite with maxBalance <= 0: no bound).
std::vector<double> loadBounds(ArrayRef<LayerLoad> layers, int64_t gpus,
                               double maxBalance) {
  std::vector<double> bound;
  for (const LayerLoad &l : layers) {
    double total = 0;
    for (double v : l.load)
      total += v;
    if (maxBalance <= 0 || total <= 0) {
      bound.push_back(INFINITY);
      continue;
    }
    // The heaviest GPU of a count-balanced packing (EPLB's, packItems; E is
    // a multiple of the GPUs, checked above): a load every layer can meet,
    // where one hot expert alone outweighs maxBalance times the mean.
    std::vector<int64_t> distinct(l.load.size()), pack, rank;
    std::iota(distinct.begin(), distinct.end(), 0);
    cantFail(packItems(l.load, distinct, gpus, /*refine=*/false, pack, rank),
             "distinct labels never share a pack");
    std::vector<double> carried(gpus, 0.0);
    for (size_t i = 0; i < pack.size(); ++i)
      carried[pack[i]] += l.load[i];
    double packed = *std::max_element(carried.begin(), carried.end());
    bound.push_back(std::max(maxBalance * total / double(gpus), packed) *
                    (1 + 1e-12));
  }
  return bound;
}

/// Load per GPU of layer l under `a`.
std::vector<double> layerGpuLoads(const LayerLoad &layer,
                                  ArrayRef<int64_t> gpuOf, int64_t gpus) {
  std::vector<double> load(gpus, 0.0);
  for (size_t i = 0; i < gpuOf.size(); ++i)
    load[gpuOf[i]] += layer.load[i];
  return load;
}

/// Assigns the experts of a layer to GPUs, (expert, GPU) pairs in the
/// order given (k = e * gpus + g, most wanted first), each GPU taking at
/// most E/G experts and `bound` load; an expert no GPU can take within the
/// bound goes to the least loaded GPU with a free slot.
void assignPairs(ArrayRef<int64_t> order, ArrayRef<double> load, int64_t gpus,
                 double bound, std::vector<int64_t> &gpuOf) {
  int64_t e = load.size(), cap = e / gpus;
  std::vector<int64_t> used(gpus, 0);
  std::vector<double> carried(gpus, 0.0);
  gpuOf.assign(e, -1);
  for (int64_t k : order) {
    int64_t i = k / gpus, g = k % gpus;
    if (gpuOf[i] >= 0 || used[g] >= cap || carried[g] + load[i] > bound)
      continue;
    gpuOf[i] = g;
    ++used[g];
    carried[g] += load[i];
  }
  // Left over: heaviest first, each to the lightest GPU with a free slot.
  std::vector<int64_t> left;
  for (int64_t i = 0; i < e; ++i)
    if (gpuOf[i] < 0)
      left.push_back(i);
  std::stable_sort(left.begin(), left.end(),
                   [&](int64_t x, int64_t y) { return load[x] > load[y]; });
  for (int64_t i : left) {
    int64_t best = -1;
    for (int64_t g = 0; g < gpus; ++g)
      if (used[g] < cap && (best < 0 || carried[g] < carried[best]))
        best = g;
    gpuOf[i] = best;
    ++used[best];
    carried[best] += load[i];
  }
}

/// The transition weight of every layer pair.
double totalWeight(ArrayRef<LayerLoad> layers) {
  double total = 0;
  for (size_t l = 0; l + 1 < layers.size(); ++l)
    for (double t : layers[l].transition)
      total += t;
  return total;
}

double crossingOf(ArrayRef<LayerLoad> layers, const Assignment &a) {
  double cross = 0;
  for (size_t l = 0; l + 1 < layers.size(); ++l) {
    int64_t e = a[l].size(), n = a[l + 1].size();
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (a[l][i] != a[l + 1][j])
          cross += layers[l].transition[i * n + j];
  }
  return cross;
}

/// affinity[e * gpus + g]: transition weight expert e of layer l shares with
/// the experts of the layers before and after that sit on GPU g.
std::vector<double> affinityOf(ArrayRef<LayerLoad> layers, const Assignment &a,
                               size_t l, int64_t gpus) {
  int64_t e = a[l].size();
  std::vector<double> aff(e * gpus, 0.0);
  if (l + 1 < layers.size()) {
    int64_t n = a[l + 1].size();
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < n; ++j)
        aff[i * gpus + a[l + 1][j]] += layers[l].transition[i * n + j];
  }
  if (l > 0) {
    int64_t p = a[l - 1].size();
    for (int64_t i = 0; i < p; ++i)
      for (int64_t j = 0; j < e; ++j)
        aff[j * gpus + a[l - 1][i]] += layers[l - 1].transition[i * e + j];
  }
  return aff;
}

/// Pairwise swaps within each layer while one gains (Kernighan-Lin style
/// passes, forwards and backwards over the layers).
/// A swap is taken only when both GPUs' loads stay within the layer's
/// bound (or the heavier of the two gets lighter).
void refineSwaps(ArrayRef<LayerLoad> layers, Assignment &a, int64_t gpus,
                 ArrayRef<double> bounds) {
  for (int round = 0; round < 50; ++round) {
    bool improved = false;
    for (int dir = 0; dir < 2; ++dir)
      for (size_t k = 0; k < layers.size(); ++k) {
        size_t l = dir == 0 ? k : layers.size() - 1 - k;
        std::vector<double> aff = affinityOf(layers, a, l, gpus);
        std::vector<double> gl = layerGpuLoads(layers[l], a[l], gpus);
        ArrayRef<double> load = layers[l].load;
        int64_t e = a[l].size();
        bool changed = true;
        while (changed) {
          changed = false;
          for (int64_t x = 0; x < e; ++x)
            for (int64_t y = x + 1; y < e; ++y) {
              int64_t gx = a[l][x], gy = a[l][y];
              if (gx == gy)
                continue;
              double gain = aff[x * gpus + gy] + aff[y * gpus + gx] -
                            aff[x * gpus + gx] - aff[y * gpus + gy];
              // Relative: with large counts a swap and its reverse can both
              // round to a tiny positive gain, and the loop would not end.
              double scale = std::abs(aff[x * gpus + gy]) +
                             std::abs(aff[y * gpus + gx]) +
                             std::abs(aff[x * gpus + gx]) +
                             std::abs(aff[y * gpus + gy]);
              if (gain <= 1e-9 * (1 + scale))
                continue;
              double nx = gl[gx] - load[x] + load[y];
              double ny = gl[gy] - load[y] + load[x];
              if (std::max(nx, ny) > bounds[l] &&
                  std::max(nx, ny) >= std::max(gl[gx], gl[gy]))
                continue;
              std::swap(a[l][x], a[l][y]);
              gl[gx] = nx;
              gl[gy] = ny;
              changed = improved = true;
            }
        }
      }
    if (!improved)
      break;
  }
}

/// Load above the bounds, summed over layers (0: every GPU within).
double excessLoad(ArrayRef<LayerLoad> layers, const Assignment &a,
                  int64_t gpus, ArrayRef<double> bounds) {
  double excess = 0;
  for (size_t l = 0; l < layers.size(); ++l)
    for (double v : layerGpuLoads(layers[l], a[l], gpus))
      excess += std::max(0.0, v - bounds[l]);
  return excess;
}

/// Brings each layer's GPUs within the bound where the pair-wise greedy
/// could not: swaps between the hottest GPU and another one that lower the
/// larger of the two loads most, least affinity lost on ties, until the
/// hottest GPU is within the bound or no swap lowers it.
void repairLoads(ArrayRef<LayerLoad> layers, Assignment &a, int64_t gpus,
                 ArrayRef<double> bounds) {
  for (size_t l = 0; l < layers.size(); ++l) {
    if (!std::isfinite(bounds[l]))
      continue;
    ArrayRef<double> load = layers[l].load;
    int64_t e = a[l].size();
    std::vector<double> aff = affinityOf(layers, a, l, gpus);
    std::vector<double> gl = layerGpuLoads(layers[l], a[l], gpus);
    for (int64_t step = 0; step < e * e; ++step) {
      int64_t h = std::max_element(gl.begin(), gl.end()) - gl.begin();
      if (gl[h] <= bounds[l])
        break;
      int64_t bx = -1, by = -1;
      double bestMax = gl[h], bestGain = -INFINITY;
      for (int64_t x = 0; x < e; ++x) {
        if (a[l][x] != h)
          continue;
        for (int64_t y = 0; y < e; ++y) {
          int64_t g = a[l][y];
          if (g == h || load[y] >= load[x])
            continue;
          double d = load[x] - load[y];
          double m = std::max(gl[h] - d, gl[g] + d);
          double gain = aff[x * gpus + g] + aff[y * gpus + h] -
                        aff[x * gpus + h] - aff[y * gpus + g];
          if (m < bestMax * (1 - 1e-12) ||
              (bx >= 0 && m <= bestMax * (1 + 1e-12) && gain > bestGain)) {
            bx = x;
            by = y;
            bestMax = m;
            bestGain = gain;
          }
        }
      }
      if (bx < 0)
        break;
      int64_t g = a[l][by];
      double d = load[bx] - load[by];
      std::swap(a[l][bx], a[l][by]);
      gl[h] -= d;
      gl[g] += d;
    }
  }
}

/// Places layer `l` greedily next to an already placed neighbour layer:
/// (expert, GPU) pairs by the transition weight between the expert and the
/// neighbour's experts on that GPU, heaviest first, E/G per GPU.
void placeNextTo(ArrayRef<LayerLoad> layers, Assignment &a, size_t l,
                 size_t neighbour, int64_t gpus, double bound) {
  int64_t e = layers[l].load.size();
  int64_t n = a[neighbour].size();
  std::vector<double> w(e * gpus, 0.0);
  for (int64_t i = 0; i < e; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double t = neighbour < l ? layers[neighbour].transition[j * e + i]
                               : layers[l].transition[i * n + j];
      w[i * gpus + a[neighbour][j]] += t;
    }
  std::vector<int64_t> order(e * gpus);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return w[x] > w[y]; });
  assignPairs(order, layers[l].load, gpus, bound, a[l]);
}

/// Greedy with swap refinement, from several starts: each layer in turn
/// placed contiguously and the others propagated from it (forwards and
/// backwards), and a few shuffled first layers. The least crossing wins.
Assignment greedyAffinity(ArrayRef<LayerLoad> layers, int64_t gpus,
                          ArrayRef<double> bounds) {
  size_t L = layers.size();
  Assignment best;
  double bestCross = INFINITY, bestExcess = INFINITY;
  std::mt19937 rng(1);
  for (size_t start = 0; start < L + 8; ++start) {
    size_t s = start < L ? start : 0;
    Assignment a(L);
    int64_t e = layers[s].load.size(), cap = e / gpus;
    // The start layer: contiguous (expert i prefers GPU i / cap), or a
    // shuffled preference, within the load bound.
    std::vector<int64_t> pref(e);
    std::iota(pref.begin(), pref.end(), 0);
    if (start >= L)
      std::shuffle(pref.begin(), pref.end(), rng);
    std::vector<int64_t> order;
    for (int64_t round = 0; round < gpus; ++round)
      for (int64_t i = 0; i < e; ++i)
        order.push_back(i * gpus + (pref[i] / cap + round) % gpus);
    assignPairs(order, layers[s].load, gpus, bounds[s], a[s]);
    for (size_t l = s + 1; l < L; ++l)
      placeNextTo(layers, a, l, l - 1, gpus, bounds[l]);
    for (size_t l = s; l-- > 0;)
      placeNextTo(layers, a, l, l + 1, gpus, bounds[l]);
    repairLoads(layers, a, gpus, bounds);
    refineSwaps(layers, a, gpus, bounds);
    // Within the bounds first, then the least crossing.
    double x = excessLoad(layers, a, gpus, bounds);
    double c = crossingOf(layers, a);
    if (x < bestExcess || (x == bestExcess && c < bestCross)) {
      bestExcess = x;
      bestCross = c;
      best = std::move(a);
    }
  }
  return best;
}

/// The heaviest bipartite b-matching: each row paired with exactly rowDeg
/// columns, each column with exactly colDeg rows, a pair at most once (w is
/// rows x cols, row-major, rows * rowDeg == cols * colDeg). Min-cost flow
/// by successive shortest paths (Dijkstra with potentials) on the costs
/// max(w) - w >= 0: every solution holds the same number of pairs, so the
/// shift keeps the optimum, and unit capacities keep the flow integral (a
/// transportation problem: its LP optimum is this). `match` gets the pairs.
double maxBMatching(ArrayRef<double> w, int64_t rows, int64_t cols,
                    int64_t rowDeg, int64_t colDeg,
                    std::vector<char> *match = nullptr) {
  double top = 0;
  for (double v : w)
    top = std::max(top, v);
  // Nodes: 0 source, 1..rows, then the columns, last the sink.
  int64_t n = rows + cols + 2, s = 0, t = n - 1;
  std::vector<char> f(rows * cols, 0);
  std::vector<int64_t> usedRow(rows, 0), usedCol(cols, 0), prev(n);
  std::vector<double> pi(n, 0.0), dist(n);
  std::vector<char> done(n);
  auto cost = [&](int64_t i, int64_t j) { return top - w[i * cols + j]; };
  bool whole = llvm::all_of(
      w, [](double v) { return v == std::floor(v) && std::abs(v) < 0x1p40; });
  // Flips the edges of the path that `prev` leads back from the sink.
  auto augment = [&](ArrayRef<int64_t> prev) {
    for (int64_t v = t; v != s; v = prev[v]) {
      int64_t u = prev[v];
      if (u == s)
        ++usedRow[v - 1];
      else if (v == t)
        ++usedCol[u - 1 - rows];
      else if (u <= rows)
        f[(u - 1) * cols + (v - 1 - rows)] = 1;
      else
        f[(v - 1) * cols + (u - 1 - rows)] = 0;
    }
  };
  for (int64_t flow = 0; flow < rows * rowDeg;) {
    std::fill(dist.begin(), dist.end(), INFINITY);
    std::fill(done.begin(), done.end(), 0);
    dist[s] = 0;
    auto relax = [&](int64_t u, int64_t v, double c) {
      if (done[v])
        return;
      double d = dist[u] + c + pi[u] - pi[v];
      if (d < dist[v]) {
        dist[v] = d;
        prev[v] = u;
      }
    };
    for (;;) {
      int64_t u = -1;
      for (int64_t v = 0; v < n; ++v)
        if (!done[v] && std::isfinite(dist[v]) && (u < 0 || dist[v] < dist[u]))
          u = v;
      if (u < 0)
        break;
      done[u] = 1;
      if (u == s) {
        for (int64_t i = 0; i < rows; ++i)
          if (usedRow[i] < rowDeg)
            relax(u, 1 + i, 0);
      } else if (u <= rows) {
        int64_t i = u - 1;
        for (int64_t j = 0; j < cols; ++j)
          if (!f[i * cols + j])
            relax(u, 1 + rows + j, cost(i, j));
        if (usedRow[i] > 0)
          relax(u, s, 0);
      } else if (u < t) {
        int64_t j = u - 1 - rows;
        for (int64_t i = 0; i < rows; ++i)
          if (f[i * cols + j])
            relax(u, 1 + i, -cost(i, j));
        if (usedCol[j] < colDeg)
          relax(u, t, 0);
      } else {
        for (int64_t j = 0; j < cols; ++j)
          if (usedCol[j] > 0)
            relax(u, 1 + rows + j, 0);
      }
    }
    assert(std::isfinite(dist[t]) && "the degrees admit a b-matching");
    for (int64_t v = 0; v < n; ++v)
      pi[v] += std::min(dist[v], dist[t]);
    augment(prev);
    ++flow;
    // With whole-number weights the reduced costs are exact: every path of
    // edges at reduced cost 0 is a shortest path too, so take them all
    // before the next Dijkstra (far fewer of those).
    if (!whole)
      continue;
    std::vector<char> seen(n);
    for (; flow < rows * rowDeg; ++flow) {
      std::fill(seen.begin(), seen.end(), 0);
      auto dfs = [&](auto &self, int64_t u) -> bool {
        if (u == t)
          return true;
        seen[u] = 1;
        auto go = [&](int64_t v, double c) {
          if (seen[v] || c + pi[u] - pi[v] != 0)
            return false;
          prev[v] = u;
          return self(self, v);
        };
        if (u == s) {
          for (int64_t i = 0; i < rows; ++i)
            if (usedRow[i] < rowDeg && go(1 + i, 0))
              return true;
        } else if (u <= rows) {
          int64_t i = u - 1;
          for (int64_t j = 0; j < cols; ++j)
            if (!f[i * cols + j] && go(1 + rows + j, cost(i, j)))
              return true;
        } else {
          int64_t j = u - 1 - rows;
          if (usedCol[j] < colDeg && go(t, 0))
            return true;
          for (int64_t i = 0; i < rows; ++i)
            if (f[i * cols + j] && go(1 + i, -cost(i, j)))
              return true;
        }
        return false;
      };
      if (!dfs(dfs, s))
        break;
      augment(prev);
    }
  }
  double total = 0;
  for (int64_t k = 0; k < rows * cols; ++k)
    if (f[k])
      total += w[k];
  if (match)
    *match = std::move(f);
  return total;
}

/// An upper bound on the staying weight of every placement that puts E/G
/// experts of each layer on each GPU: in any such placement the pairs of
/// layers l and l + 1 that share a GPU pair each expert of l with exactly
/// E'/G experts of l + 1 and each expert of l + 1 with E/G of l, a feasible
/// b-matching, so no more than the heaviest one stays. Summed over the layer
/// pairs (`transitions[l]`, E_l x E_l+1). This is also the LP relaxation's
/// value of the ILP below without its load rows (averaging an LP solution
/// over the GPU permutations gives x = 1/G, where the layer pairs separate
/// into these transportation problems), so branch and bound must close the
/// rest. Exact with one expert per GPU (see exactByPairs).
double layerPairBound(ArrayRef<LayerLoad> layers, int64_t gpus,
                      ArrayRef<std::vector<double>> transitions) {
  double bound = 0;
  for (size_t l = 0; l + 1 < layers.size(); ++l) {
    int64_t e = layers[l].load.size(), n = layers[l + 1].load.size();
    bound += maxBMatching(transitions[l], e, n, n / gpus, e / gpus);
  }
  return bound;
}

/// With one expert per GPU in every layer the placement is one permutation
/// per layer, and the experts that stay together between layers l and l+1
/// are any matching of them (GPU of j in l + 1 := GPU of its partner in l):
/// the layer pairs are independent assignment problems, and their optima
/// together are the optimum (the load bound cannot bind: it is at least the
/// heaviest expert). Returns the placement of those matchings.
Assignment exactByPairs(ArrayRef<LayerLoad> layers) {
  size_t L = layers.size();
  int64_t e = layers[0].load.size();
  Assignment a(L, std::vector<int64_t>(e));
  std::iota(a[0].begin(), a[0].end(), 0);
  for (size_t l = 0; l + 1 < L; ++l) {
    std::vector<char> m;
    maxBMatching(layers[l].transition, e, e, 1, 1, &m);
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < e; ++j)
        if (m[i * e + j])
          a[l + 1][j] = a[l][i];
  }
  return a;
}

/// Re-places one layer at a time, the others fixed, at its best: experts to
/// GPUs by their transition weight with the neighbours' experts on each GPU,
/// E/G per GPU, a transportation problem solved exactly (a neighbourhood
/// that holds every pairwise swap). A layer's new placement is kept when it
/// stays more and its GPUs stay within the load bound (or carry no more
/// excess than before). Sweeps until no layer gains.
void reoptimizeLayers(ArrayRef<LayerLoad> layers, Assignment &a, int64_t gpus,
                      ArrayRef<double> bounds) {
  for (int sweep = 0; sweep < 100; ++sweep) {
    bool improved = false;
    for (size_t l = 0; l < layers.size(); ++l) {
      int64_t e = a[l].size();
      std::vector<double> aff = affinityOf(layers, a, l, gpus);
      std::vector<char> m;
      double best = maxBMatching(aff, e, gpus, 1, e / gpus, &m);
      double now = 0, scale = 0;
      for (int64_t i = 0; i < e; ++i)
        now += aff[i * gpus + a[l][i]];
      for (double v : aff)
        scale += std::abs(v);
      if (best <= now + 1e-9 * (1 + scale))
        continue;
      std::vector<int64_t> next(e);
      for (int64_t i = 0; i < e; ++i)
        for (int64_t g = 0; g < gpus; ++g)
          if (m[i * gpus + g])
            next[i] = g;
      auto excess = [&](ArrayRef<int64_t> gpuOf) {
        double x = 0;
        for (double v : layerGpuLoads(layers[l], gpuOf, gpus))
          x += std::max(0.0, v - bounds[l]);
        return x;
      };
      if (excess(next) > excess(a[l]))
        continue;
      a[l] = std::move(next);
      improved = true;
    }
    if (!improved)
      break;
  }
}

/// A mixed integer program, maximising obj . x: the one formulation of the
/// affinity ILP, handed to GLPK or CBC. Columns and rows are 0-based; an
/// infinite bound is +-HUGE_VAL.
struct Mip {
  std::vector<double> colLo, colHi, obj;
  std::vector<char> integer;
  /// Rows in compressed sparse row form.
  std::vector<int> rowStart{0}, rowCol;
  std::vector<double> rowVal, rowLo, rowHi;
  /// A feasible point (the greedy placement) to start the search from.
  std::vector<double> start;
  /// Every integer solution's objective is a multiple of this (0: not
  /// known); lets the search stop once the bound is within one step.
  double objectiveStep = 0;

  int cols() const { return static_cast<int>(obj.size()); }
  int rows() const { return static_cast<int>(rowLo.size()); }
  /// Adds `n` columns; returns the first.
  int addCols(int n, double lo, double hi, bool isInteger) {
    int first = cols();
    colLo.resize(first + n, lo);
    colHi.resize(first + n, hi);
    obj.resize(first + n, 0.0);
    integer.resize(first + n, isInteger);
    start.resize(first + n, 0.0);
    return first;
  }
  void addRow(ArrayRef<std::pair<int, double>> terms, double lo, double hi) {
    for (auto [col, v] : terms) {
      rowCol.push_back(col);
      rowVal.push_back(v);
    }
    rowStart.push_back(static_cast<int>(rowCol.size()));
    rowLo.push_back(lo);
    rowHi.push_back(hi);
  }
};

/// What a backend found within its time limit.
struct MipResult {
  /// The best integer solution (the start at worst); empty: none.
  std::vector<double> x;
  bool optimal = false;
  /// The LP relaxation was solved (the search started).
  bool relaxationSolved = false;
  /// The solution's objective and the best bound on the optimum.
  double objective = NAN, bound = NAN;
  /// Why the solver gave nothing back, where it did not return normally.
  const char *failure = nullptr;
};

//===----------------------------------------------------------------------===//
// GLPK backend
//===----------------------------------------------------------------------===//

struct GlpkSearch {
  std::vector<double> start; // 1-based, as glp_ios_heur_sol reads it
  bool given = false;
  double bound = NAN;
};

void glpkCallback(glp_tree *tree, void *info) {
  auto *data = static_cast<GlpkSearch *>(info);
  if (glp_ios_reason(tree) == GLP_IHEUR && !data->given) {
    data->given = true;
    glp_ios_heur_sol(tree, data->start.data());
  }
  // The best bound of the open nodes, for the gap at the time limit.
  if (int node = glp_ios_best_node(tree))
    data->bound = glp_ios_node_bound(tree, node);
}

int glpkQuiet(void *, const char *) { return 1; }

int glpkBoundType(double lo, double hi) {
  if (lo == hi)
    return GLP_FX;
  if (std::isinf(lo))
    return std::isinf(hi) ? GLP_FR : GLP_UP;
  return std::isinf(hi) ? GLP_LO : GLP_DB;
}

/// The LP relaxation by the dual simplex first (branch and bound starts
/// from its basis; no presolve, so that the start can be handed to the
/// search as a heuristic solution), then branch and bound in the time left.
MipResult solveGlpk(const Mip &mip, double timeLimit) {
  glp_prob *lp = glp_create_prob();
  glp_set_obj_dir(lp, GLP_MAX);
  glp_add_cols(lp, mip.cols());
  for (int c = 0; c < mip.cols(); ++c) {
    if (mip.integer[c] && mip.colLo[c] == 0 && mip.colHi[c] == 1)
      glp_set_col_kind(lp, c + 1, GLP_BV);
    else {
      if (mip.integer[c])
        glp_set_col_kind(lp, c + 1, GLP_IV);
      glp_set_col_bnds(lp, c + 1, glpkBoundType(mip.colLo[c], mip.colHi[c]),
                       mip.colLo[c], mip.colHi[c]);
    }
    glp_set_obj_coef(lp, c + 1, mip.obj[c]);
  }
  if (mip.rows() > 0)
    glp_add_rows(lp, mip.rows());
  std::vector<int> ia{0}, ja{0};
  std::vector<double> ar{0};
  for (int r = 0; r < mip.rows(); ++r) {
    glp_set_row_bnds(lp, r + 1, glpkBoundType(mip.rowLo[r], mip.rowHi[r]),
                     mip.rowLo[r], mip.rowHi[r]);
    for (int k = mip.rowStart[r]; k < mip.rowStart[r + 1]; ++k) {
      ia.push_back(r + 1);
      ja.push_back(mip.rowCol[k] + 1);
      ar.push_back(mip.rowVal[k]);
    }
  }
  glp_load_matrix(lp, static_cast<int>(ia.size() - 1), ia.data(), ja.data(),
                  ar.data());
  glp_term_hook(glpkQuiet, nullptr);
  auto t0 = std::chrono::steady_clock::now();
  glp_smcp lpParams;
  glp_init_smcp(&lpParams);
  lpParams.msg_lev = GLP_MSG_OFF;
  lpParams.meth = GLP_DUALP;
  lpParams.tm_lim = static_cast<int>(std::min(timeLimit * 1000.0, 2.0e9));
  int lpRc = glp_simplex(lp, &lpParams);
  double spent =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  MipResult res;
  res.relaxationSolved = lpRc == 0 && glp_get_status(lp) == GLP_OPT;
  if (res.relaxationSolved && spent < timeLimit) {
    glp_iocp params;
    glp_init_iocp(&params);
    params.presolve = GLP_OFF;
    params.msg_lev = GLP_MSG_OFF;
    params.tm_lim =
        static_cast<int>(std::min((timeLimit - spent) * 1000.0, 2.0e9));
    GlpkSearch search;
    search.start.push_back(0);
    search.start.insert(search.start.end(), mip.start.begin(), mip.start.end());
    search.bound = glp_get_obj_val(lp);
    params.cb_func = glpkCallback;
    params.cb_info = &search;
    int rc = glp_intopt(lp, &params);
    int status = glp_mip_status(lp);
    if (status == GLP_OPT || status == GLP_FEAS) {
      res.x.resize(mip.cols());
      for (int c = 0; c < mip.cols(); ++c)
        res.x[c] = glp_mip_col_val(lp, c + 1);
      res.objective = glp_mip_obj_val(lp);
      res.optimal = status == GLP_OPT && rc == 0;
      res.bound = res.optimal ? res.objective : search.bound;
    }
  }
  glp_delete_prob(lp);
  glp_term_hook(nullptr, nullptr);
  return res;
}

//===----------------------------------------------------------------------===//
// CBC backend
//===----------------------------------------------------------------------===//

/// CBC's C interface (CbcMain1 underneath: its own presolve, cuts and
/// heuristics), with the start as a MIP start; its time limit in wall-clock
/// seconds.
MipResult runCbc(const Mip &mip, double timeLimit) {
  // Cbc_loadProblem reads columns: transpose the rows.
  int n = mip.cols();
  std::vector<CoinBigIndex> colStart(n + 1, 0);
  for (int col : mip.rowCol)
    ++colStart[col + 1];
  for (int c = 0; c < n; ++c)
    colStart[c + 1] += colStart[c];
  std::vector<int> index(mip.rowCol.size());
  std::vector<double> value(mip.rowCol.size());
  std::vector<CoinBigIndex> fill(colStart.begin(), colStart.end() - 1);
  for (int r = 0; r < mip.rows(); ++r)
    for (int k = mip.rowStart[r]; k < mip.rowStart[r + 1]; ++k) {
      CoinBigIndex at = fill[mip.rowCol[k]]++;
      index[at] = r;
      value[at] = mip.rowVal[k];
    }
  // COIN's infinity is DBL_MAX.
  auto coin = [](std::vector<double> v) {
    for (double &x : v)
      if (std::isinf(x))
        x = x > 0 ? DBL_MAX : -DBL_MAX;
    return v;
  };
  std::vector<double> colLo = coin(mip.colLo), colHi = coin(mip.colHi),
                      rowLo = coin(mip.rowLo), rowHi = coin(mip.rowHi);
  Cbc_Model *model = Cbc_newModel();
  Cbc_loadProblem(model, n, mip.rows(), colStart.data(), index.data(),
                  value.data(), colLo.data(), colHi.data(), mip.obj.data(),
                  rowLo.data(), rowHi.data());
  Cbc_setObjSense(model, -1);
  std::vector<int> startCols;
  std::vector<double> startVals;
  for (int c = 0; c < n; ++c)
    if (mip.integer[c]) {
      Cbc_setInteger(model, c);
      startCols.push_back(c);
      startVals.push_back(mip.start[c]);
    }
  Cbc_setMIPStartI(model, static_cast<int>(startCols.size()), startCols.data(),
                   startVals.data());
  // Wall-clock seconds, as GLPK counts them (CBC's default is CPU time).
  Cbc_setParameter(model, "timeMode", "elapsed");
  Cbc_setMaximumSeconds(model, timeLimit);
  if (mip.objectiveStep > 0)
    Cbc_setParameter(model, "increment",
                     std::to_string(mip.objectiveStep * (1 - 1e-6)).c_str());
  Cbc_setLogLevel(model, 0);
  Cbc_solve(model);
  MipResult res;
  res.relaxationSolved = Cbc_isInitialSolveProvenOptimal(model);
  if (const double *best = Cbc_bestSolution(model)) {
    res.x.assign(best, best + n);
    res.objective = Cbc_getObjValue(model);
    res.optimal = Cbc_isProvenOptimal(model) != 0;
    res.bound =
        res.optimal ? res.objective : Cbc_getBestPossibleObjValue(model);
  }
  Cbc_deleteModel(model);
  return res;
}

/// Writes or reads all of `bytes` on a pipe; false on error or EOF.
bool pipeAll(int fd, char *bytes, size_t size, bool write) {
  while (size > 0) {
    ssize_t k = write ? ::write(fd, bytes, size) : ::read(fd, bytes, size);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return false;
    bytes += k;
    size -= static_cast<size_t>(k);
  }
  return true;
}

/// CBC checks its time limit between the steps of its search but not in
/// the root LP relaxation (Clp's dual simplex; measured: still there after
/// 8 minutes on the L = 32, E = 64 chains) nor within a cut pass or a
/// heuristic (measured: more than 1 s past a 60 s limit, loaded machine).
/// So it runs in a child process with 90 % of the time as its own limit,
/// and is killed at the limit (then nothing is found and the caller keeps
/// its start). The child sends its result through a pipe.
MipResult solveCbc(const Mip &mip, double timeLimit) {
  int fds[2];
  if (::pipe(fds) != 0)
    return runCbc(mip, timeLimit);
  // The child must not write the parent's buffered output a second time.
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return runCbc(mip, timeLimit);
  }
  struct Header {
    char optimal, relaxationSolved;
    double objective, bound;
    uint64_t n;
  };
  if (pid == 0) {
    ::close(fds[0]);
    MipResult r = runCbc(mip, 0.9 * timeLimit);
    Header h{r.optimal, r.relaxationSolved, r.objective, r.bound, r.x.size()};
    bool ok = pipeAll(fds[1], reinterpret_cast<char *>(&h), sizeof h, true) &&
              pipeAll(fds[1], reinterpret_cast<char *>(r.x.data()),
                      r.x.size() * sizeof(double), true);
    ::_exit(ok ? 0 : 1);
  }
  ::close(fds[1]);
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::duration<double>(timeLimit);
  // Waits for the child's first bytes (it writes everything at once).
  bool ready = false;
  for (;;) {
    double left = std::chrono::duration<double>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
    if (left <= 0)
      break;
    pollfd p{fds[0], POLLIN, 0};
    int k = ::poll(&p, 1, static_cast<int>(std::ceil(left * 1000)));
    if (k > 0) {
      ready = true;
      break;
    }
    if (k < 0 && errno != EINTR)
      break;
  }
  MipResult res;
  Header h{};
  if (ready && pipeAll(fds[0], reinterpret_cast<char *>(&h), sizeof h, false) &&
      h.n == static_cast<uint64_t>(h.n > 0 ? mip.cols() : 0)) {
    std::vector<double> x(h.n);
    if (pipeAll(fds[0], reinterpret_cast<char *>(x.data()),
                x.size() * sizeof(double), false)) {
      res.x = std::move(x);
      res.optimal = h.optimal;
      res.relaxationSolved = h.relaxationSolved;
      res.objective = h.objective;
      res.bound = h.bound;
    }
  }
  ::close(fds[0]);
  if (!ready) {
    ::kill(pid, SIGKILL);
    res.failure = "did not return within the time limit";
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (ready && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    res.failure = "failed (its process ended abnormally)";
  return res;
}

//===----------------------------------------------------------------------===//
// The affinity ILP
//===----------------------------------------------------------------------===//

/// The share of the time limit that the eigenvalue bound may take (less
/// what the start took where little is left; it stops earlier once its
/// multipliers stall); the solver gets the rest.
constexpr double spectralShare = 0.4;

/// The ILP: x[l][e][g] binary (expert e of layer l on GPU g), every expert
/// on one GPU, E/G experts per GPU; y[l][i][j][g] <= x[l][i][g],
/// x[l+1][j][g]; maximise sum T[l][i][j] y (the transitions that stay on a
/// GPU). Starts from `start` (the greedy assignment) so that the result is
/// never worse. Built once, solved by GLPK or CBC; `st` gets the method
/// (solver and status), the objective and the bound.
Assignment ilpAffinity(ArrayRef<LayerLoad> layers, int64_t gpus,
                       const Assignment &greedy, double timeLimit,
                       ArrayRef<double> bounds, AffinitySolver solver,
                       bool exactShortcuts, PlanStats &st) {
  size_t L = layers.size();
  auto t0 = std::chrono::steady_clock::now();
  StringRef name = solver == AffinitySolver::Cbc ? "cbc" : "glpk";
  std::vector<std::vector<double>> transitions;
  for (size_t l = 0; l + 1 < L; ++l)
    transitions.push_back(layers[l].transition);
  st.pairBound = layerPairBound(layers, gpus, transitions);
  st.ilpProven = false;
  if (exactShortcuts && llvm::all_of(layers, [&](const LayerLoad &l) {
        return static_cast<int64_t>(l.load.size()) == gpus;
      })) {
    st.method = (name + " not run, optimal by layer pair assignments (one "
                        "expert per gpu)")
                    .str();
    st.ilpProven = true;
    Assignment a = exactByPairs(layers);
    st.ilpObjective = st.ilpBound = totalWeight(layers) - crossingOf(layers, a);
    return a;
  }
  // The solver's start: greedy, each layer then re-placed at its best
  // given its neighbours while that gains.
  Assignment start = greedy;
  if (exactShortcuts)
    reoptimizeLayers(layers, start, gpus, bounds);
  // The eigenvalue bound of the whole chain, from the start's staying
  // weight: with the load bounds where the start is within them (then it
  // holds for every placement the ILP may return).
  double startStay = totalWeight(layers) - crossingOf(layers, start);
  bool startWithin = excessLoad(layers, start, gpus, bounds) == 0;
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  SpectralBound spectral = spectralStayBound(
      layers, gpus, startWithin ? bounds : ArrayRef<double>(), startStay,
      std::min(spectralShare * timeLimit, 0.9 * (timeLimit - elapsed)));
  st.spectralBound = spectral.bound;
  st.spectralSeconds = spectral.seconds;
  st.spectralUsesLoadBounds = startWithin;
  // A start within the load bounds that reaches a bound is optimal: no
  // need to solve.
  if (exactShortcuts && startWithin &&
      startStay >= std::min(st.pairBound, st.spectralBound) * (1 - 1e-12)) {
    st.method = (name + " not run, optimal (the " +
                 (startStay >= st.pairBound * (1 - 1e-12) ? "layer pair"
                                                          : "eigenvalue") +
                 " bound is met)")
                    .str();
    st.ilpProven = true;
    st.ilpObjective = st.ilpBound = startStay;
    return start;
  }
  Mip mip;
  std::vector<int> xBase(L);
  for (size_t l = 0; l < L; ++l)
    xBase[l] = mip.addCols(static_cast<int>(layers[l].load.size() * gpus), 0,
                           1, true);
  auto x = [&](size_t l, int64_t e, int64_t g) {
    return static_cast<int>(xBase[l] + e * gpus + g);
  };
  for (size_t l = 0; l < L; ++l) {
    int64_t e = layers[l].load.size(), cap = e / gpus;
    for (int64_t i = 0; i < e; ++i) {
      std::vector<std::pair<int, double>> t;
      for (int64_t g = 0; g < gpus; ++g)
        t.push_back({x(l, i, g), 1.0});
      mip.addRow(t, 1, 1);
    }
    for (int64_t g = 0; g < gpus; ++g) {
      std::vector<std::pair<int, double>> t;
      for (int64_t i = 0; i < e; ++i)
        t.push_back({x(l, i, g), 1.0});
      mip.addRow(t, cap, cap);
    }
    // The GPU's load within the layer's bound.
    if (std::isfinite(bounds[l]))
      for (int64_t g = 0; g < gpus; ++g) {
        std::vector<std::pair<int, double>> t;
        for (int64_t i = 0; i < e; ++i)
          if (layers[l].load[i] > 0)
            t.push_back({x(l, i, g), layers[l].load[i]});
        if (!t.empty())
          mip.addRow(t, -HUGE_VAL, bounds[l]);
      }
  }
  // Per layer pair the heaviest 2 max(E, E') pairs (the rest is mostly
  // noise and would make the LP too large to solve in the time limit; the
  // swap polishing afterwards sees every pair).
  struct Pair {
    size_t l;
    int64_t i, j;
    double w;
  };
  std::vector<Pair> pairs;
  bool truncated = false;
  for (size_t l = 0; l + 1 < L; ++l) {
    int64_t e = layers[l].load.size(), n = layers[l + 1].load.size();
    std::vector<Pair> here;
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (double w = layers[l].transition[i * n + j]; w > 0)
          here.push_back({l, i, j, w});
    size_t keep = 2 * static_cast<size_t>(std::max(e, n));
    if (here.size() > keep && e * n * gpus * static_cast<int64_t>(L) > 8000) {
      std::stable_sort(here.begin(), here.end(),
                       [](const Pair &a, const Pair &b) { return a.w > b.w; });
      here.resize(keep);
      truncated = true;
    }
    pairs.insert(pairs.end(), here.begin(), here.end());
  }
  int yBase = mip.addCols(static_cast<int>(pairs.size() * gpus), 0, 1, false);
  // Token counts: the staying weight of a placement is a whole number.
  mip.objectiveStep = 1;
  for (const Pair &pr : pairs)
    if (pr.w != std::floor(pr.w))
      mip.objectiveStep = 0;
  // The start, its GPUs renamed so that expert 0 of the first layer is on
  // GPU 0 (GPUs are interchangeable; the ILP fixes that symmetry).
  Assignment first = start;
  if (int64_t g0 = start[0][0]; g0 != 0)
    for (std::vector<int64_t> &layer : first)
      for (int64_t &g : layer)
        g = g == g0 ? 0 : g == 0 ? g0 : g;
  mip.colLo[x(0, 0, 0)] = 1;
  for (size_t l = 0; l < L; ++l)
    for (size_t i = 0; i < first[l].size(); ++i)
      mip.start[x(l, i, first[l][i])] = 1.0;
  for (size_t p = 0; p < pairs.size(); ++p)
    for (int64_t g = 0; g < gpus; ++g) {
      int y = yBase + static_cast<int>(p * gpus + g);
      const Pair &pr = pairs[p];
      mip.obj[y] = pr.w;
      mip.addRow({{y, 1.0}, {x(pr.l, pr.i, g), -1.0}}, -HUGE_VAL, 0);
      mip.addRow({{y, 1.0}, {x(pr.l + 1, pr.j, g), -1.0}}, -HUGE_VAL, 0);
      if (first[pr.l][pr.i] == g && first[pr.l + 1][pr.j] == g)
        mip.start[y] = 1.0;
    }
  // Capacity cuts (the reformulation-linearisation of y = x x'): on GPU g,
  // expert i of layer l stays with at most E'/G experts of layer l + 1, so
  // sum_j y[l][i][j][g] <= (E'/G) x[l][i][g], and the same from the other
  // side. Valid for the integer points; they tighten the LP relaxation
  // (with one expert per GPU it becomes a matching between layers), where
  // y <= x alone lets x = 1/G keep every pair.
  {
    std::map<std::tuple<size_t, int64_t, int64_t>, std::vector<int>> out, in;
    for (size_t p = 0; p < pairs.size(); ++p)
      for (int64_t g = 0; g < gpus; ++g) {
        int y = yBase + static_cast<int>(p * gpus + g);
        out[{pairs[p].l, pairs[p].i, g}].push_back(y);
        in[{pairs[p].l, pairs[p].j, g}].push_back(y);
      }
    auto cut = [&](const std::vector<int> &ys, int xCol, double cap) {
      std::vector<std::pair<int, double>> t;
      for (int y : ys)
        t.push_back({y, 1.0});
      t.push_back({xCol, -cap});
      mip.addRow(t, -HUGE_VAL, 0);
    };
    for (const auto &[key, ys] : out) {
      auto [l, i, g] = key;
      double cap = double(layers[l + 1].load.size()) / double(gpus);
      if (ys.size() > 1 || cap < 1)
        cut(ys, x(l, i, g), cap);
    }
    for (const auto &[key, ys] : in) {
      auto [l, j, g] = key;
      double cap = double(layers[l].load.size()) / double(gpus);
      if (ys.size() > 1 || cap < 1)
        cut(ys, x(l + 1, j, g), cap);
    }
  }

  // The time limit counts building the model (and the bound and start
  // above); the solver gets what is left, less a margin for reading its
  // result back.
  double left =
      std::max(0.98 * (timeLimit - std::chrono::duration<double>(
                                       std::chrono::steady_clock::now() - t0)
                                       .count()) -
                   0.1,
               0.01);
  MipResult res = solver == AffinitySolver::Cbc ? solveCbc(mip, left)
                                                : solveGlpk(mip, left);
  Assignment result = start;
  if (!res.x.empty())
    for (size_t l = 0; l < L; ++l)
      for (size_t i = 0; i < start[l].size(); ++i)
        for (int64_t g = 0; g < gpus; ++g)
          if (res.x[x(l, i, g)] > 0.5)
            result[l][i] = g;
  st.ilpObjective = res.objective;
  // The solver's bound holds for the pairs it kept; the dropped pairs can
  // add at most their own layer-pair bound (worth computing only where the
  // solver's bound alone is below the whole layer-pair bound).
  st.ilpBound = res.bound;
  if (truncated && res.bound < st.pairBound) {
    std::vector<std::vector<double>> dropped = transitions;
    for (const Pair &pr : pairs)
      dropped[pr.l][pr.i * layers[pr.l + 1].load.size() + pr.j] = 0;
    st.ilpBound += layerPairBound(layers, gpus, dropped);
  }
  st.ilpProven = res.optimal && !truncated;
  if (res.optimal)
    st.method = (name + " optimal").str();
  else if (!res.x.empty())
    st.method = (name + " time limit").str();
  else if (res.failure)
    st.method = (name + " " + res.failure).str();
  else if (!res.relaxationSolved)
    st.method = (name + " root lp not solved in the time limit").str();
  else
    st.method = (name + " found nothing in the time limit").str();
  if (truncated)
    st.method += " (heaviest 2e pairs per layer pair)";
  return result;
}

LayerPlacement fromAssignment(int64_t layer, ArrayRef<int64_t> gpuOf,
                              int64_t gpus) {
  LayerPlacement p;
  p.layer = layer;
  p.experts = gpuOf.size();
  for (int64_t g = 0; g < gpus; ++g)
    for (int64_t e = 0; e < p.experts; ++e)
      if (gpuOf[e] == g) {
        p.slotExpert.push_back(e);
        p.slotGpu.push_back(g);
      }
  return p;
}

//===----------------------------------------------------------------------===//
// Fewer moves against a previous placement
//===----------------------------------------------------------------------===//

int64_t movesOf(const LayerPlacement &p, const LayerPlacement &prev,
                int64_t gpus) {
  std::set<std::pair<int64_t, int64_t>> had;
  for (int64_t s = 0; s < prev.slots(); ++s)
    had.insert({prev.slotGpu[s], prev.slotExpert[s]});
  int64_t moves = 0;
  for (int64_t s = 0; s < p.slots(); ++s)
    moves += !had.count({p.slotGpu[s], p.slotExpert[s]});
  return moves;
}

/// Renames GPUs (one permutation for all layers: the measures do not
/// change) so that most slots stay where `prev` had them.
void relabelGpus(std::vector<LayerPlacement> &plan,
                 ArrayRef<LayerPlacement> prev, int64_t gpus) {
  std::vector<double> overlap(gpus * gpus, 0.0);
  for (size_t l = 0; l < plan.size(); ++l) {
    std::set<std::pair<int64_t, int64_t>> had;
    for (int64_t s = 0; s < prev[l].slots(); ++s)
      had.insert({prev[l].slotExpert[s], prev[l].slotGpu[s]});
    for (int64_t s = 0; s < plan[l].slots(); ++s)
      for (int64_t h = 0; h < gpus; ++h)
        if (had.count({plan[l].slotExpert[s], h}))
          overlap[plan[l].slotGpu[s] * gpus + h] += 1;
  }
  std::vector<int64_t> order(gpus * gpus), to(gpus, -1);
  std::vector<bool> taken(gpus, false);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return overlap[a] > overlap[b];
  });
  for (int64_t k : order)
    if (to[k / gpus] < 0 && !taken[k % gpus]) {
      to[k / gpus] = k % gpus;
      taken[k % gpus] = true;
    }
  for (LayerPlacement &p : plan) {
    LayerPlacement q = p;
    int64_t perGpu = p.slots() / gpus;
    for (int64_t s = 0; s < p.slots(); ++s) {
      int64_t g = to[p.slotGpu[s]];
      int64_t slot = g * perGpu + s % perGpu;
      q.slotExpert[slot] = p.slotExpert[s];
      q.slotGpu[slot] = g;
    }
    p = std::move(q);
  }
}

/// Swaps slot contents back toward `prev` while `measure` (lower is better)
/// stays within `budget`.
void reduceMoves(
    std::vector<LayerPlacement> &plan, ArrayRef<LayerPlacement> prev,
    int64_t gpus,
    function_ref<double(const std::vector<LayerPlacement> &, size_t layer)>
        measure,
    double budget) {
  for (size_t l = 0; l < plan.size(); ++l) {
    LayerPlacement &p = plan[l];
    std::set<std::pair<int64_t, int64_t>> had;
    for (int64_t s = 0; s < prev[l].slots(); ++s)
      had.insert({prev[l].slotExpert[s], prev[l].slotGpu[s]});
    auto onGpu = [&](int64_t e, int64_t g) {
      for (int64_t s = 0; s < p.slots(); ++s)
        if (p.slotGpu[s] == g && p.slotExpert[s] == e)
          return true;
      return false;
    };
    for (int64_t s = 0; s < p.slots(); ++s) {
      int64_t e = p.slotExpert[s];
      if (had.count({e, p.slotGpu[s]}))
        continue;
      // Try each slot t of a GPU where prev had e.
      for (int64_t t = 0; t < p.slots(); ++t) {
        int64_t h = p.slotGpu[t], f = p.slotExpert[t];
        if (h == p.slotGpu[s] || !had.count({e, h}) || f == e || onGpu(e, h) ||
            onGpu(f, p.slotGpu[s]))
          continue;
        int before = !had.count({f, h});
        int after = !had.count({f, p.slotGpu[s]});
        // The swap puts e back (-1) and moves f (after - before).
        if (after - before - 1 >= 0)
          continue;
        std::swap(p.slotExpert[s], p.slotExpert[t]);
        if (measure(plan, l) <= budget)
          break;
        std::swap(p.slotExpert[s], p.slotExpert[t]);
      }
    }
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Planner
//===----------------------------------------------------------------------===//

Expected<std::vector<LayerPlacement>> planPlacement(ArrayRef<LayerLoad> layers,
                                                    const Topology &topo,
                                                    const PlanOptions &options,
                                                    PlanStats *stats) {
  PlanStats local;
  PlanStats &st = stats ? *stats : local;
  int64_t gpus = topo.gpus();
  StringRef policyName =
      options.policy == PlacementPolicy::Contiguous ? "contiguous"
      : options.policy == PlacementPolicy::Balanced ? "balanced"
                                                    : "affinity";
  if (layers.empty())
    return makeError("no MoE layer to place");
  if (options.redundant < 0)
    return makeError("redundant=" + Twine(options.redundant) +
                     ": expected 0 or more redundant slots");
  if (options.policy != PlacementPolicy::Balanced && options.redundant != 0)
    return makeError("redundant=" + Twine(options.redundant) +
                     " is not allowed with policy " + policyName +
                     " (one slot per expert); replicas need "
                     "policy=balanced");
  for (const LayerLoad &l : layers) {
    int64_t e = l.load.size(), slots = e + options.redundant;
    if (slots % gpus != 0)
      return makeError(
          "layer " + Twine(l.layer) + ": " + Twine(e) + " experts + " +
          Twine(options.redundant) + " redundant slots = " + Twine(slots) +
          " slots do not split evenly over " + Twine(gpus) +
          " GPUs (redundant must make E + R a multiple of the GPU count)");
    if (options.redundant > e * (gpus - 1))
      return makeError("layer " + Twine(l.layer) +
                       ": redundant=" + Twine(options.redundant) +
                       " needs more than one "
                       "replica of an expert per GPU (at most " +
                       Twine(e * (gpus - 1)) + ")");
    double need = options.expertBytes * static_cast<double>(slots / gpus);
    if (options.expertBytes > 0 && need > topo.hbmBytes)
      return makeError("layer " + Twine(l.layer) + ": " + Twine(slots / gpus) +
                       " expert slots per GPU need " + num(need) +
                       " bytes but the topology's hbm_bytes is " +
                       num(topo.hbmBytes));
  }
  if (options.previous) {
    const std::vector<LayerPlacement> &prev = *options.previous;
    if (prev.size() != layers.size())
      return makeError("previous placement has " + Twine(prev.size()) +
                       " layers, the profile " + Twine(layers.size()));
    for (size_t l = 0; l < layers.size(); ++l) {
      if (prev[l].layer != layers[l].layer ||
          prev[l].experts != static_cast<int64_t>(layers[l].load.size()))
        return makeError(
            "previous placement: layer " + Twine(prev[l].layer) + " with " +
            Twine(prev[l].experts) + " experts does not match layer " +
            Twine(layers[l].layer) + " with " + Twine(layers[l].load.size()));
      if (Error e = validatePlacement(prev[l], gpus, "previous placement"))
        return std::move(e);
    }
  }

  std::vector<LayerPlacement> plan;
  switch (options.policy) {
  case PlacementPolicy::Contiguous:
    for (const LayerLoad &l : layers) {
      int64_t e = l.load.size();
      std::vector<int64_t> gpuOf(e);
      for (int64_t i = 0; i < e; ++i)
        gpuOf[i] = i / (e / gpus);
      plan.push_back(fromAssignment(l.layer, gpuOf, gpus));
    }
    break;
  case PlacementPolicy::Balanced:
    for (const LayerLoad &l : layers) {
      Expected<LayerPlacement> p =
          balancedPlacement(l.load, options.redundant, options.groups,
                            topo.nodes, gpus, options.refine);
      if (!p)
        return makeError("layer " + Twine(l.layer) + ": " +
                         toString(p.takeError()));
      p->layer = l.layer;
      plan.push_back(std::move(*p));
    }
    break;
  case PlacementPolicy::Affinity: {
    for (size_t l = 0; l + 1 < layers.size(); ++l)
      if (layers[l].transition.size() !=
          layers[l].load.size() * layers[l + 1].load.size())
        return makeError("layer " + Twine(layers[l].layer) +
                         ": policy affinity needs the transition counts to "
                         "the next layer (record the profile with "
                         "--all-layers)");
    std::vector<double> bounds = loadBounds(layers, gpus, options.maxBalance);
    st.loadBounds = bounds;
    auto withinBounds = [&](const Assignment &x) {
      for (size_t l = 0; l < layers.size(); ++l)
        for (double v : layerGpuLoads(layers[l], x[l], gpus))
          if (v > bounds[l])
            return false;
      return true;
    };
    Assignment a = greedyAffinity(layers, gpus, bounds);
    st.greedyCrossing = crossingOf(layers, a);
    st.method = "greedy";
    if (options.solver != AffinitySolver::Greedy && layers.size() > 1) {
      auto t0 = std::chrono::steady_clock::now();
      Assignment b = ilpAffinity(layers, gpus, a, options.timeLimit, bounds,
                                 options.solver, options.exactShortcuts, st);
      st.solverSeconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
              .count();
      // The ILP may have seen the heaviest pairs only: polish on all.
      refineSwaps(layers, b, gpus, bounds);
      // Better, and within the load bounds where greedy was.
      bool kept = crossingOf(layers, b) <= st.greedyCrossing &&
                  (withinBounds(b) || !withinBounds(a));
      if (kept)
        a = std::move(b);
      // The gap of what is returned against the best proven bound on the
      // staying weight: the layer pairs' (any placement), and the
      // solver's where the result is one of its feasible points (within
      // the load bounds).
      double stay = totalWeight(layers) - crossingOf(layers, a);
      double bound = st.pairBound;
      StringRef from = "layer pairs";
      if (std::isfinite(st.spectralBound) &&
          (withinBounds(a) || !st.spectralUsesLoadBounds) &&
          st.spectralBound < bound) {
        bound = st.spectralBound;
        from = "eigenvalues";
      }
      if (std::isfinite(st.ilpBound) && withinBounds(a) &&
          st.ilpBound < bound) {
        bound = st.ilpBound;
        from = "solver";
      }
      st.finalObjective = stay;
      st.finalBound = std::max(bound, stay);
      if (!st.ilpProven || !kept) {
        st.method += formatv(", best found (gap {0:F2} %, bound from the {1})",
                             100.0 * (st.finalBound - stay) /
                                 std::max(std::abs(stay), 1e-9),
                             from)
                         .str();
      }
    }
    st.finalCrossing = crossingOf(layers, a);
    for (size_t l = 0; l < layers.size(); ++l)
      plan.push_back(fromAssignment(layers[l].layer, a[l], gpus));
    break;
  }
  }

  if (options.previous) {
    ArrayRef<LayerPlacement> prev = *options.previous;
    for (size_t l = 0; l < plan.size(); ++l)
      st.movesBefore += movesOf(plan[l], prev[l], gpus);
    relabelGpus(plan, prev, gpus);
    double tol = 1.0 + options.moveTolerance;
    if (options.policy == PlacementPolicy::Affinity) {
      auto total = [&](const std::vector<LayerPlacement> &p) {
        double c = 0;
        for (size_t l = 0; l + 1 < p.size(); ++l)
          c += crossGpu(p[l], p[l + 1], gpus, layers[l].transition).crossing;
        return c;
      };
      double budget = total(plan) * tol + 1e-9;
      std::vector<double> bounds =
          loadBounds(layers, gpus, options.maxBalance);
      reduceMoves(
          plan, prev, gpus,
          [&](const std::vector<LayerPlacement> &p, size_t l) {
            // A move back that breaks the layer's load bound is not taken.
            for (double v : gpuLoads(p[l], gpus, layers[l].load))
              if (v > bounds[l])
                return double(INFINITY);
            return total(p);
          },
          budget);
    } else {
      for (size_t l = 0; l < plan.size(); ++l) {
        double budget = balance(plan[l], gpus, layers[l].load) * tol + 1e-12;
        std::vector<LayerPlacement> one{plan[l]};
        reduceMoves(
            one, ArrayRef<LayerPlacement>(prev[l]), gpus,
            [&](const std::vector<LayerPlacement> &p, size_t) {
              return balance(p[0], gpus, layers[l].load);
            },
            budget);
        plan[l] = std::move(one[0]);
      }
    }
    for (size_t l = 0; l < plan.size(); ++l)
      st.movesAfter += movesOf(plan[l], prev[l], gpus);
  }
  for (const LayerPlacement &p : plan)
    if (Error e = validatePlacement(p, gpus, "planned placement"))
      return std::move(e);
  return plan;
}

//===----------------------------------------------------------------------===//
// JSON
//===----------------------------------------------------------------------===//

std::string placementToJson(ArrayRef<LayerPlacement> layers, int64_t gpus) {
  json::Array out;
  for (const LayerPlacement &p : layers) {
    json::Array se, sg;
    for (int64_t v : p.slotExpert)
      se.push_back(v);
    for (int64_t v : p.slotGpu)
      sg.push_back(v);
    out.push_back(json::Object{{"layer", p.layer},
                               {"experts", p.experts},
                               {"slot_expert", std::move(se)},
                               {"slot_gpu", std::move(sg)}});
  }
  json::Value v = json::Object{{"format", "moe-placement"},
                               {"version", 1},
                               {"gpus", gpus},
                               {"layers", std::move(out)}};
  std::string s;
  raw_string_ostream os(s);
  os << formatv("{0:2}", v) << "\n";
  return s;
}

Expected<std::vector<LayerPlacement>> readPlacementFile(StringRef path,
                                                        int64_t *gpus) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return makeError(path +
                     ": cannot read placement: " + buffer.getError().message());
  Expected<json::Value> parsed = json::parse((*buffer)->getBuffer());
  if (!parsed)
    return makeError(path + ": not JSON: " + toString(parsed.takeError()));
  const json::Object *o = parsed->getAsObject();
  if (!o || o->getString("format") != "moe-placement" ||
      o->getInteger("version") != 1)
    return makeError(path + ": not a placement (expected \"format\": "
                            "\"moe-placement\", \"version\": 1)");
  std::optional<int64_t> g = o->getInteger("gpus");
  if (!g || *g < 1 || *g > 4096 * 64)
    return makeError(path + ": field 'gpus' must be a GPU count");
  *gpus = *g;
  const json::Array *ls = o->getArray("layers");
  if (!ls)
    return makeError(path + ": field 'layers' must be an array");
  std::vector<LayerPlacement> out;
  for (size_t k = 0; k < ls->size(); ++k) {
    const json::Object *l = (*ls)[k].getAsObject();
    std::string where = (path + ": layers[" + Twine(k) + "]").str();
    if (!l)
      return makeError(where + " must be an object");
    LayerPlacement p;
    std::optional<int64_t> layer = l->getInteger("layer");
    std::optional<int64_t> experts = l->getInteger("experts");
    if (!layer || !experts || *experts < 1)
      return makeError(where + ": fields 'layer' and 'experts' must be "
                               "integers (experts at least 1)");
    p.layer = *layer;
    p.experts = *experts;
    for (auto [key, vec] : {std::pair{"slot_expert", &p.slotExpert},
                            std::pair{"slot_gpu", &p.slotGpu}}) {
      const json::Array *a = l->getArray(key);
      if (!a)
        return makeError(where + ": field '" + key +
                         "' must be an array of integers");
      for (const json::Value &v : *a) {
        std::optional<int64_t> i = v.getAsInteger();
        if (!i)
          return makeError(where + ": field '" + key +
                           "' must be an array of integers");
        vec->push_back(*i);
      }
    }
    if (Error e = validatePlacement(p, *gpus, path))
      return std::move(e);
    out.push_back(std::move(p));
  }
  return out;
}

} // namespace moe
