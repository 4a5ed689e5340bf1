//===- Placement.h - Expert placement over GPUs -----------------*- C++ -*-===//
//
// Part of moe-opt. Where the experts of each MoE layer live in an
// expert-parallel deployment: a topology of GPUs (JSON, docs/layout.md), a
// placement (per layer, physical slot -> logical expert and slot -> GPU), the
// policies that compute one from a calibration profile (contiguous,
// EPLB-style balanced with replicas, affinity between consecutive layers),
// and the measures the passes report. Plain C++ on LLVMSupport (no MLIR).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_ANALYSIS_PLACEMENT_H
#define MOE_LIB_ANALYSIS_PLACEMENT_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

/// The machines an expert-parallel deployment runs on (docs/layout.md).
struct Topology {
  int64_t nodes = 1;
  int64_t gpusPerNode = 1;
  /// HBM of one GPU that experts may use, bytes.
  double hbmBytes = 0;
  /// Peak dense math rate of one GPU, FLOP/s (the simulator's expert work).
  double gpuFlops = 0;
  /// Links between two GPUs of one node and of two nodes: bytes/s, seconds.
  double intraBandwidth = 0, intraLatency = 0;
  double interBandwidth = 0, interLatency = 0;
  /// Optional measured GxG bandwidth (bytes/s, row = sender); empty = derive
  /// from the two link kinds. The diagonal is not used.
  std::vector<double> gpuBandwidth;

  int64_t gpus() const { return nodes * gpusPerNode; }
  int64_t nodeOf(int64_t gpu) const { return gpu / gpusPerNode; }
  double bandwidth(int64_t from, int64_t to) const;
  double latency(int64_t from, int64_t to) const;
};

/// Parses and checks a topology; errors name `path` and the field.
llvm::Expected<Topology> parseTopology(llvm::StringRef json,
                                       llvm::StringRef path);
llvm::Expected<Topology> readTopology(llvm::StringRef path);

/// The placement of one MoE layer: `slotExpert[s]` is the logical expert
/// that physical slot s holds, `slotGpu[s]` the GPU it lives on.
struct LayerPlacement {
  int64_t layer = 0;
  int64_t experts = 0;
  std::vector<int64_t> slotExpert;
  std::vector<int64_t> slotGpu;

  int64_t slots() const { return static_cast<int64_t>(slotExpert.size()); }
  /// Replicas per logical expert.
  std::vector<int64_t> replicaCounts() const;
};

/// Checks a layer placement against `gpus` GPUs: every expert of
/// [0, experts) held at least once, slots in range, no expert twice on one
/// GPU, the same number of slots on every GPU. Errors start with `what`.
llvm::Error validatePlacement(const LayerPlacement &p, int64_t gpus,
                              llvm::StringRef what);

/// Per GPU load of a layer: each expert's load split evenly over its
/// replicas.
std::vector<double> gpuLoads(const LayerPlacement &p, int64_t gpus,
                             llvm::ArrayRef<double> expertLoad);
/// max / mean of the GPU loads (1 when every load is 0).
double balance(const LayerPlacement &p, int64_t gpus,
               llvm::ArrayRef<double> expertLoad);
/// Of the layer-to-layer pairs `transition [E, E']` (tokens at i in `a`
/// then at j in `b`), the weight whose two experts are on different GPUs
/// (replicas share the tokens evenly) and the total weight.
struct Crossing {
  double crossing = 0, total = 0;
  double fraction() const { return total > 0 ? crossing / total : 0; }
};
Crossing crossGpu(const LayerPlacement &a, const LayerPlacement &b,
                  int64_t gpus, llvm::ArrayRef<double> transition);

enum class PlacementPolicy { Contiguous, Balanced, Affinity };
enum class AffinitySolver { Glpk, Cbc, Greedy };

/// One MoE layer's statistics the planner reads.
struct LayerLoad {
  int64_t layer = 0;
  /// Routed slots per expert (the profile's expert_count).
  std::vector<double> load;
  /// transition [E, E'] to the next layer of the list; empty for the last.
  std::vector<double> transition;
};

struct PlanOptions {
  PlacementPolicy policy = PlacementPolicy::Contiguous;
  /// Redundant slots per layer (balanced only): E + redundant slots.
  int64_t redundant = 0;
  /// Expert groups for EPLB's hierarchical policy (groups to nodes first);
  /// 0, or groups not a multiple of the nodes: the global policy.
  int64_t groups = 0;
  /// balanced: improve EPLB's packings by swaps (off: EPLB's result).
  bool refine = true;
  AffinitySolver solver = AffinitySolver::Glpk;
  /// affinity: the most load one GPU of a layer may carry, as a multiple of
  /// the mean GPU load (raised to the heaviest GPU of a count-balanced
  /// packing where one hot expert makes that more); <= 0: no bound. Without one, layers that route
  /// independently pile their heavy experts onto one GPU.
  double maxBalance = 1.25;
  /// affinity with glpk or cbc: skip the solver where the answer is proven
  /// without it (one expert per GPU: independent layer-pair assignments; a
  /// start that meets the layer-pair bound) and improve greedy's start by
  /// exact one-layer re-placements first. Off: the ILP of every case from
  /// greedy's start (tests compare the two).
  bool exactShortcuts = true;
  /// Seconds the ILP may take in all (affinity with glpk or cbc).
  double timeLimit = 60;
  /// Bytes of one expert's weights (0: not checked) against hbmBytes.
  double expertBytes = 0;
  /// An earlier placement (same layers): moves against it are avoided as
  /// long as the policy's measure (balance or crossing fraction) gets at
  /// most `moveTolerance` (relative) worse.
  const std::vector<LayerPlacement> *previous = nullptr;
  double moveTolerance = 0.02;
};

/// What the planner reports besides the placement.
struct PlanStats {
  /// affinity: how the layers were placed ("glpk optimal", "cbc time
  /// limit, best found (gap 1.20 %, bound from the solver)", "greedy"),
  /// seconds spent in the ILP,
  /// the greedy objective and the final objective (crossing transition
  /// weight).
  std::string method;
  double solverSeconds = 0;
  /// The ILP's objective (the staying transition weight of the pairs it
  /// holds) of its best solution and the solver's bound on the optimum;
  /// NaN where it found nothing.
  double ilpObjective = NAN, ilpBound = NAN;
  /// The sum over layer pairs of the heaviest transition b-matching: an
  /// upper bound on the staying weight of every placement with E/G experts
  /// per GPU (the ILP's LP relaxation, solved exactly per layer pair).
  double pairBound = NAN;
  /// The eigenvalue bound of the whole chain of layers (docs/layout.md,
  /// "Upper bounds on the staying weight"), its seconds, and whether it used the load bounds (it
  /// then holds only for placements within them); NaN where not computed.
  double spectralBound = NAN, spectralSeconds = 0;
  bool spectralUsesLoadBounds = false;
  /// The ILP's result is a proven optimum (of the whole objective).
  bool ilpProven = false;
  /// The staying transition weight returned and the best proven upper
  /// bound on it (the smallest of pairBound, spectralBound and, for a
  /// result within the load bounds, the solver's); the method string ends
  /// with their gap where it is not proven optimal.
  double finalObjective = NAN, finalBound = NAN;
  double greedyCrossing = 0, finalCrossing = 0;
  /// affinity: the most load one GPU of each layer may carry (INFINITY:
  /// no bound), from maxBalance.
  std::vector<double> loadBounds;
  /// Slots whose expert is not on the slot's GPU in `previous` (summed
  /// over layers), before and after reducing moves.
  int64_t movesBefore = 0, movesAfter = 0;
};

/// Plans every layer. Errors name what does not fit (R not allowed by the
/// policy, GPUs that cannot hold their slots, a previous placement of
/// other layers) and are returned before anything is computed.
llvm::Expected<std::vector<LayerPlacement>>
planPlacement(llvm::ArrayRef<LayerLoad> layers, const Topology &topo,
              const PlanOptions &options, PlanStats *stats = nullptr);

/// EPLB's `rebalance_experts` for one layer (hierarchical when groups is a
/// multiple of nodes, else global), except that no GPU gets two replicas of
/// one expert. With `refine`, each packing is then improved by swaps that
/// lower the heaviest pack (without, the result is EPLB's). Slots are
/// numbered GPU by GPU. `gpus` must divide E+R.
llvm::Expected<LayerPlacement> balancedPlacement(llvm::ArrayRef<double> load,
                                                 int64_t redundant,
                                                 int64_t groups, int64_t nodes,
                                                 int64_t gpus,
                                                 bool refine = true);

/// Placements as JSON (docs/layout.md, format "moe-placement").
std::string placementToJson(llvm::ArrayRef<LayerPlacement> layers,
                            int64_t gpus);
llvm::Expected<std::vector<LayerPlacement>>
readPlacementFile(llvm::StringRef path, int64_t *gpus);

} // namespace moe

#endif // MOE_LIB_ANALYSIS_PLACEMENT_H
