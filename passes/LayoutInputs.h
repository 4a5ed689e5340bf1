//===- LayoutInputs.h - What the layout passes read -------------*- C++ -*-===//
//
// Part of moe-opt. The MoE layers of a module as the placement passes see
// them (experts, hidden width, bytes and FLOPs of one expert), matched with
// a calibration profile and a topology. Shared by --moe-plan-placement and
// --moe-simulate-layout.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_LAYOUTINPUTS_H
#define MOE_PASSES_LAYOUTINPUTS_H

#include "moe/lib/Analysis/Placement.h"
#include "moe/lib/Analysis/Profile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <vector>

namespace mlir::moe {

/// Attribute names of a placement on a layer's func.func.
inline constexpr llvm::StringLiteral kSlotExpertAttr =
    "moe.placement.slot_expert";
inline constexpr llvm::StringLiteral kSlotGpuAttr = "moe.placement.slot_gpu";
inline constexpr llvm::StringLiteral kGpusAttr = "moe.placement.gpus";
inline constexpr llvm::StringLiteral kPolicyAttr = "moe.placement.policy";
/// On the module: the profile's model identity the placement was planned
/// for (the placed IR's own text hashes differently).
inline constexpr llvm::StringLiteral kPlannedModelAttr = "moe.placement.model";

/// One MoE layer with routed experts.
struct LayoutLayer {
  func::FuncOp fn;
  int64_t layer = 0;
  int64_t experts = 0;
  int64_t hidden = 0;
  /// Bytes of one activation element (the layer input's type).
  int64_t activationBytes = 0;
  /// Bytes of one expert's weights and FLOPs of one routed slot
  /// (2 x parameters).
  double expertBytes = 0;
  double slotFlops = 0;
};

/// Everything a layout pass reads: the module's layers, in model order,
/// matched with the profile (same layers, same E, and the same model when
/// the input file is known) and the topology.
struct LayoutInputs {
  std::vector<LayoutLayer> layers;
  ::moe::Profile profile;
  ::moe::Topology topology;
  /// Profile statistics per layer, for the planner (transition to the next
  /// layer of the list).
  std::vector<::moe::LayerLoad> loads;
};

/// Reads and checks; emits an error on the module (naming the file, the
/// layer, what differs) and fails.
FailureOr<LayoutInputs> readLayoutInputs(ModuleOp module,
                                         llvm::StringRef profilePath,
                                         llvm::StringRef topologyPath);

/// The placement attached to a layer's function, if any (validated against
/// `gpus`; an error on the function otherwise).
FailureOr<std::optional<::moe::LayerPlacement>>
readPlacementAttrs(const LayoutLayer &layer, int64_t gpus);

/// Attaches `p` to the layer's function.
void writePlacementAttrs(const LayoutLayer &layer,
                         const ::moe::LayerPlacement &p, int64_t gpus,
                         llvm::StringRef policy);

} // namespace mlir::moe

#endif // MOE_PASSES_LAYOUTINPUTS_H
