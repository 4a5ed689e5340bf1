//===- AffinityBound.h - Eigenvalue bound of the affinity ILP --*- C++ -*-===//
//
// Part of moe-opt. An upper bound on the staying transition weight of every
// affinity placement (E_l/G experts of layer l on each GPU), from the
// eigenvalues of the whole chain of layers (docs/layout.md, "Upper bounds
// on the staying weight").
// Private to lib/Analysis (Placement.cpp is its user).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_ANALYSIS_AFFINITYBOUND_H
#define MOE_LIB_ANALYSIS_AFFINITYBOUND_H

#include "moe/lib/Analysis/Placement.h"

#include "llvm/ADT/ArrayRef.h"

#include <cmath>
#include <cstdint>

namespace moe {

struct SpectralBound {
  /// The proven upper bound (INFINITY where none was computed).
  double bound = INFINITY;
  /// Multiplier updates and seconds spent (the final check included).
  int iterations = 0;
  double seconds = 0;
};

/// The eigenvalue bound with multipliers improved for at most `seconds`
/// (a subgradient descent toward `target`, a staying weight some placement
/// reaches; it stops early once within 1e-7 of it or when it stalls), then
/// checked by eigenvalue counts. `loadBounds` (one per layer, or empty):
/// the most load a GPU of the layer may carry; where finite, the bound
/// holds only for placements within them (and is then tighter where the
/// loads are uneven). Deterministic (seeded).
SpectralBound spectralStayBound(llvm::ArrayRef<LayerLoad> layers, int64_t gpus,
                                llvm::ArrayRef<double> loadBounds,
                                double target, double seconds);

} // namespace moe

#endif // MOE_LIB_ANALYSIS_AFFINITYBOUND_H
