//===- ProfileRecorder.h - Accumulates calibration profiles -----*- C++ -*-===//
//
// Part of moe-opt. Turns what one run of an MoE layer observed (routing,
// router logits, expert output norms) into the sums of a calibration
// profile (Profile.h, docs/profile.md), layer by layer while the layers
// stream. Plain C++ on arrays: the tools decide where the observations come
// from (the interpreter or the kernels).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_ANALYSIS_PROFILERECORDER_H
#define MOE_LIB_ANALYSIS_PROFILERECORDER_H

#include "moe/lib/Analysis/Profile.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe {

/// What one layer saw on one batch of T tokens. Row-major arrays.
struct LayerObservation {
  int64_t layer = 0;
  /// Tokens T, routed experts E, slots K per token.
  int64_t tokens = 0, experts = 0, slots = 0;
  /// [T, K] expert ids (negative: empty slot) and routing weights of the
  /// router that dispatches the routed experts: expert_count, gate_mass,
  /// coactivation and transition.
  llvm::ArrayRef<int32_t> ids;
  llvm::ArrayRef<float> weights;
  /// [T, logitWidth] router logits (logitWidth >= E; columns past E, null
  /// experts, are not recorded): logit_gram, logit_sum.
  int64_t logitWidth = 0;
  llvm::ArrayRef<float> logits;
  /// The ids were remapped to merged experts (moe.remap_experts): the
  /// logits' columns are the router's slots, not the E dispatched experts,
  /// so logit_gram/logit_sum are not recorded and `logits` is not read.
  bool merged = false;
  /// output_norm_mass: the routing these norms belong to ([T, normSlots]
  /// ids and weights, usually `ids`/`weights` themselves) and the norm of
  /// each slot's expert output.
  int64_t normSlots = 0;
  llvm::ArrayRef<int32_t> normIds;
  llvm::ArrayRef<float> normWeights;
  llvm::ArrayRef<double> slotOutputNorm;
  /// Hidden width H; with expert outputs recorded, [E, H] sums over the T
  /// tokens of every expert's output; with the input Gram, the [T, H] input.
  int64_t hidden = 0;
  llvm::ArrayRef<double> expertOutputSum;
  llvm::ArrayRef<float> input;
};

/// Accumulates the profile of a model over calibration inputs. For each
/// input call add() for its layers in model order, then endInput().
class ProfileRecorder {
public:
  struct Options {
    bool expertOutputs = false; ///< expert_output_mean
    bool inputGram = false;     ///< input_gram
    bool transition = false;    ///< transition (--all-layers)
  };
  ProfileRecorder(std::string model, Options options);

  /// Adds one layer's observation on the current input. Checks the sizes
  /// (and that a layer keeps its sizes across inputs); errors name the layer.
  llvm::Error add(const LayerObservation &observation);
  /// Ends the current input of `tokens` tokens: every layer added since the
  /// last call must have seen them.
  llvm::Error endInput(int64_t tokens);

  /// The profile so far (sums, and expert_output_mean as a mean).
  Profile profile() const;

private:
  struct Layer {
    LayerProfile stats;
    /// Sum over tokens of the expert outputs (the mean is taken at the end).
    std::vector<double> outputSum;
  };
  std::string model;
  Options options;
  int64_t tokens = 0;
  std::map<int64_t, Layer> layers;
  /// The previous layer of the current input: its index and routing, for
  /// its transition to the next layer.
  std::optional<int64_t> previous;
  std::vector<std::vector<int32_t>> previousSets;
  /// Layers added since the last endInput and their token count.
  std::vector<int64_t> current;
  int64_t currentTokens = -1;
};

} // namespace moe

#endif // MOE_LIB_ANALYSIS_PROFILERECORDER_H
