//===- Profile.h - Calibration profiles of MoE layers -----------*- C++ -*-===//
//
// Part of moe-opt. A calibration profile holds routing and expert statistics
// of MoE layers over calibration tokens: what `moe-run --record-profile`
// writes and what the prune, merge and compress passes read. It is one
// safetensors file (docs/profile.md): `__metadata__` with format
// "moe-profile", version "1", the model's identity and the token count, and
// per MoE layer L f64 tensors named `layer.L.<statistic>`. Plain C++ on
// LLVMSupport (no MLIR), like the weight readers.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_ANALYSIS_PROFILE_H
#define MOE_LIB_ANALYSIS_PROFILE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moe {

/// The statistics of one MoE layer. Every vector is row-major; empty means
/// "not recorded". Sums over calibration tokens unless said otherwise.
struct LayerProfile {
  /// Routed experts E (the router's candidates) and hidden width H.
  int64_t experts = 0;
  int64_t hidden = 0;
  /// `expert_count [E]`: routed slots per expert.
  std::vector<double> expertCount;
  /// `gate_mass [E]`: sum of the routing weights of each expert's slots.
  std::vector<double> gateMass;
  /// `coactivation [E, E]`: tokens that select both i and j (the diagonal
  /// is the number of tokens that select i).
  std::vector<double> coactivation;
  /// `logit_gram [E, E]` = sum_t l_t l_t^T and `logit_sum [E]` = sum_t l_t
  /// of the router logits l_t (the router_linear output): the cosine of
  /// two logit columns over the calibration tokens is
  /// gram[i][j] / sqrt(gram[i][i] gram[j][j]). Both empty for a layer
  /// whose experts were merged (the router's columns are not its experts).
  std::vector<double> logitGram;
  std::vector<double> logitSum;
  /// `output_norm_mass [E]`: sum over routed slots of gate * ||expert
  /// output|| (REAP's criterion, divided by expert_count).
  std::vector<double> outputNormMass;
  /// `transition [E, nextExperts]`: tokens routed to i in this layer and
  /// to j in the next MoE layer (`--all-layers` only).
  int64_t nextExperts = 0;
  std::vector<double> transition;
  /// `expert_output_mean [E, H]`: mean over every calibration token of
  /// each expert's output (every expert run densely; optional).
  std::vector<double> expertOutputMean;
  /// `input_gram [H, H]` = sum_t x_t x_t^T of the layer input (for
  /// whitened compression; optional).
  std::vector<double> inputGram;
};

/// A whole profile.
struct Profile {
  static constexpr llvm::StringLiteral kFormat = "moe-profile";
  static constexpr llvm::StringLiteral kVersion = "1";
  /// The model's identity: a hash of its IR or package (recordings of
  /// different models are not merged).
  std::string model;
  /// Calibration tokens seen by every layer.
  int64_t tokens = 0;
  /// By model layer index.
  std::map<int64_t, LayerProfile> layers;

  /// The layer's statistics, or an error naming the profile and the layer.
  llvm::Expected<const LayerProfile *> layer(int64_t index,
                                             llvm::StringRef path) const;
};

/// Reads and checks a profile: format and version, every tensor F64 of the
/// shape its name calls for, finite, counts non-negative; unknown tensors
/// are ignored (later versions may add some). Errors name the file and
/// the tensor.
llvm::Expected<Profile> readProfile(llvm::StringRef path);

/// Writes `profile` atomically.
llvm::Error writeProfile(const Profile &profile, llvm::StringRef path);

/// Adds the statistics of `more` to `into` (appending a calibration
/// input): same model, same layers, same shapes and the same optional
/// statistics, else an error naming `moreName`. The means are re-weighted by
/// token counts.
llvm::Error mergeProfiles(Profile &into, const Profile &more,
                          llvm::StringRef moreName);

/// A hex SHA-256 of `bytes`: the model identity of IR text or a package's
/// manifest.
std::string profileModelHash(llvm::StringRef bytes);

} // namespace moe

#endif // MOE_LIB_ANALYSIS_PROFILE_H
