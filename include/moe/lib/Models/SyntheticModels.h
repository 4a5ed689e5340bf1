//===- SyntheticModels.h - Synthetic HF MoE model folders -------*- C++ -*-===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//
//
// Writes small Hugging Face model folders (config.json plus safetensors) whose
// MoE blocks use the real config keys and checkpoint tensor names of each
// supported architecture, filled with deterministic pseudo-random weights.
// Only the tensors of MoE blocks are written: no embeddings, attention, norms
// or dense MLPs. docs/hf-layouts.md describes every layout.
//
// The weights depend only on the seed and on the logical role of a tensor
// (layer, expert, projection): the per-expert and the fused layouts of one
// seed hold the same numbers, and sharding does not change them.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_MODELS_SYNTHETICMODELS_H
#define MOE_LIB_MODELS_SYNTHETICMODELS_H

#include "moe/lib/Weights/Safetensors.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moe {

/// splitmix64 with Box-Muller normals computed in double: the same stream on
/// every machine and compiler (no std::*_distribution).
class SplitMix64 {
public:
  explicit SplitMix64(uint64_t seed) : state(seed) {}

  /// The stream for `key` under `seed`, independent of other keys.
  static SplitMix64 forKey(uint64_t seed, llvm::StringRef key);

  uint64_t next();
  /// Uniform in [0, 1), 53 random bits.
  double uniform();
  /// Standard normal.
  double normal();

private:
  uint64_t state;
  bool hasSpare = false;
  double spare = 0.0;
};

/// What writeSyntheticModel produces. Start from defaultSyntheticOptions();
/// knobs that do not apply to an architecture are ignored.
struct SyntheticOptions {
  /// One of syntheticArchitectures().
  std::string arch = "mixtral";
  uint64_t seed = 0;
  int64_t numLayers = 2;
  int64_t hidden = 64;
  /// Width of one routed expert: intermediate_size (mixtral, olmoe, gpt_oss,
  /// llama4_text) or moe_intermediate_size (qwen2_moe, qwen3_moe, deepseek).
  int64_t intermediate = 128;
  /// Width of the dense MLP of non-MoE layers: intermediate_size (qwen,
  /// deepseek) or intermediate_size_mlp (llama4_text). Config only.
  int64_t denseIntermediate = 256;
  int64_t numExperts = 8;
  int64_t topK = 2;
  /// F32, BF16 or F16.
  DType dtype = DType::BF16;
  /// Per-expert architectures only: write the fused 3-D expert tensors of
  /// transformers v5 instead of one tensor per expert and projection.
  /// gpt_oss and llama4_text are always fused.
  bool fusedExperts = false;
  /// 1: model.safetensors; N > 1: model-0000i-of-0000N.safetensors plus
  /// model.safetensors.index.json.
  int64_t numShards = 1;
  /// Replace a non-empty output folder.
  bool overwrite = false;
  /// Write the tensors' names, dtypes and shapes but no values: every
  /// tensor reads as zeros, stored as a hole of the safetensors file. Such
  /// a folder imports and compiles like the real model (kernels are
  /// specialised by shapes) at any size, without the disk space; it is not
  /// a model to run.
  bool shapesOnly = false;
  /// Called before each long step (generating a layer, writing a file)
  /// with what it does; unset: silent.
  std::function<void(const std::string &)> progress;

  /// qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3: renormalise the
  /// top-k weights.
  bool normTopkProb = false;
  /// qwen2_moe: width of the shared expert.
  int64_t sharedExpertIntermediate = 256;
  /// qwen2_moe, qwen3_moe: MoE layers are those with (layer + 1) % step == 0
  /// that are not in mlpOnlyLayers.
  int64_t decoderSparseStep = 1;
  std::vector<int64_t> mlpOnlyLayers;
  /// deepseek_v2, deepseek_v3.
  int64_t nGroup = 1;
  int64_t topkGroup = 1;
  double routedScalingFactor = 1.0;
  int64_t nSharedExperts = 1;
  int64_t firstKDenseReplace = 0;
  int64_t moeLayerFreq = 1;
  /// deepseek_v2: "greedy" or "group_limited_greedy" (deepseek_v3 is always
  /// "noaux_tc").
  std::string topkMethod = "greedy";
  /// gpt_oss.
  double swigluLimit = 7.0;
  /// llama4_text: MoE layers are those with (layer + 1) % step == 0.
  int64_t interleaveMoeLayerStep = 1;
  /// Quantized experts as released (docs/hf-layouts.md): "" (none),
  /// "fp8" (deepseek_v3, per-expert: F8_E4M3 weights with F32
  /// `_scale_inv` per quantBlock x quantBlock block, routed and shared
  /// experts) or "mxfp4" (gpt_oss: `_blocks`/`_scales` U8 tensors, 32
  /// input values per E8M0 scale). Writes quantization_config.
  std::string quant;
  /// fp8: the square block of one scale (weight_block_size).
  int64_t quantBlock = 128;
};

/// One tensor of a synthetic model.
struct SyntheticTensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
};

/// The supported model_type values, in a fixed order.
const std::vector<std::string> &syntheticArchitectures();

/// Small defaults for `arch` (a few hundred KB to a few MB of weights).
llvm::Expected<SyntheticOptions> defaultSyntheticOptions(llvm::StringRef arch);

/// Checks that the options describe a model the architecture can express.
llvm::Error validateSyntheticOptions(const SyntheticOptions &opts);

/// Makes the first `count` layers of `opts` dense MLP layers (the rest MoE,
/// as the architecture's layer pattern allows): first_k_dense_replace for
/// deepseek_v2/v3, mlp_only_layers = [0, count) for qwen2_moe/qwen3_moe.
/// Fails, naming the architecture, for those whose config has no such
/// field, and when no MoE layer of opts.numLayers would be left.
llvm::Error setLeadingDenseLayers(SyntheticOptions &opts, int64_t count);

/// The layers that have an MoE block, ascending.
std::vector<int64_t> syntheticMoeLayers(const SyntheticOptions &opts);

/// Every tensor the model folder will contain, in file order.
llvm::Expected<std::vector<SyntheticTensor>>
syntheticTensorPlan(const SyntheticOptions &opts);

/// The config.json text.
llvm::Expected<std::string> syntheticConfigJson(const SyntheticOptions &opts);

/// "model-00002-of-00003.safetensors" for index 1 of 3 (index from 0).
std::string shardFileName(int64_t index, int64_t count);

/// Writes the model folder `outDir` (config.json and weights). The folder is
/// built in a temporary folder next to `outDir` and renamed into place, so
/// that `outDir` is either complete or untouched. An existing non-empty
/// `outDir` is replaced only when opts.overwrite is set.
llvm::Error writeSyntheticModel(const SyntheticOptions &opts,
                                llvm::StringRef outDir);

} // namespace moe

#endif // MOE_LIB_MODELS_SYNTHETICMODELS_H
