//===- ModelSpec.h - What an MoE block of a checkpoint computes -*- C++ -*-===//
//
// Part of moe-opt. A plain description of each MoE block of a Hugging Face
// model, read from config.json and the tensor names of the checkpoint. The
// importer turns it into moe IR; nothing here depends on MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_IMPORT_MODELSPEC_H
#define MOE_LIB_IMPORT_MODELSPEC_H

#include "moe/lib/Weights/WeightStore.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moe {

/// Router scoring applied to the router logits.
enum class RouterScoring { Softmax, Sigmoid, Logits };
/// How groups of experts are scored before group-limited selection.
enum class GroupScoring { None, Max, Top2Sum };
/// A transform of the selected values (gpt-oss: softmax; Llama 4: sigmoid).
enum class SelectedTransform { None, Softmax, Sigmoid };
enum class FFNActivation { Silu, Gelu, GeluTanh, SwigluClamped };

/// Quantized codes as the IR types them (docs/hf-layouts.md).
enum class QuantCodes {
  None,
  F8E4M3FN, ///< F8_E4M3 (DeepSeek-V3).
  F4E2M1FN, ///< U8, two values per byte (gpt-oss `*_blocks`).
  E8M0      ///< U8 block exponents (gpt-oss `*_scales`).
};

/// A tensor of the checkpoint: the stack of `names` (one name: the tensor
/// itself), each stored in the file at the same index of `files`.
struct TensorRef {
  std::vector<std::string> names;
  std::vector<std::string> files; ///< Relative to the model folder.
  std::vector<int64_t> shape;     ///< Of the whole stack (logical).
  DType dtype = DType::F32;
  /// Quantized: what the stored bytes hold (`shape` stays logical).
  QuantCodes codes = QuantCodes::None;
  /// The block scales of a quantized weight, and the [rows, cols] block of
  /// the weight's last two dimensions that one scale covers.
  std::shared_ptr<TensorRef> scale;
  std::vector<int64_t> block;
  bool empty() const { return names.empty(); }
};

/// A gated FFN's projections: separate gate/up or a fused gate_up.
struct GatedFFNWeights {
  TensorRef gate, up, gateUp, down;
  TensorRef gateUpBias, downBias;
  bool interleaved = false; ///< gate at even columns of gate_up.
  bool inOut = false;       ///< Matrices stored [in, out].
  FFNActivation activation = FFNActivation::Silu;
  float alpha = 1.702f;
  float limit = 7.0f;
};

struct MoEBlockSpec {
  int64_t layer = 0;
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t numExperts = 0;
  int64_t topK = 0;

  TensorRef routerWeight, routerBias, correctionBias;
  RouterScoring scoring = RouterScoring::Softmax;
  GroupScoring groupScoring = GroupScoring::None;
  int64_t numGroups = 1, keepGroups = 1;
  SelectedTransform selected = SelectedTransform::None;
  bool normalize = false;
  float normalizeEpsilon = 0.0f;
  float scale = 1.0f;
  bool weightOnInput = false;

  GatedFFNWeights experts;

  bool hasShared = false;
  int64_t sharedIntermediate = 0;
  GatedFFNWeights shared;
  TensorRef sharedGate; ///< [1, H]: sigmoid gate of the shared expert.
};

/// One PEFT adapter wrapping one projection.
struct LoraAdapterRef {
  std::string dir;
  TensorRef a, b; ///< [r, in] and [out, r]; files are absolute paths.
  int64_t rank = 0;
  float scale = 1.0f;
};

/// A projection wrapped by LoRA adapters: `target` is the module path after
/// `layers.{L}.` (for example `self_attn.q_proj`).
struct LoraMixtureSpec {
  int64_t layer = 0;
  std::string target;
  std::string modulePath; ///< Full module path in the model.
  int64_t in = 0, out = 0, maxRank = 0;
  TensorRef base, baseBias;
  std::vector<LoraAdapterRef> adapters;
  /// Router over the adapters (absent: every adapter with weight 1).
  TensorRef routerWeight, routerBias; ///< Files are absolute paths.
  int64_t topK = 0;
  bool normalize = true;
};

struct ModelSpec {
  std::string modelDir; ///< Absolute.
  std::string modelType;
  int64_t numLayers = 0;
  std::vector<MoEBlockSpec> blocks;
  std::vector<LoraMixtureSpec> loras;
};

/// The architectures moe-import reads (config.json `model_type`).
const std::vector<std::string> &supportedModelTypes();

/// Reads `modelDir/config.json` and checks every tensor the MoE blocks need
/// against the checkpoint (names, shapes, dtypes).
llvm::Expected<ModelSpec> readModelSpec(llvm::StringRef modelDir,
                                        WeightStore &store);

/// Adds the LoRA mixtures described by PEFT adapter folders (and an optional
/// router file) to `spec`.
llvm::Error addLoraAdapters(ModelSpec &spec, WeightStore &store,
                            const std::vector<std::string> &adapterDirs,
                            llvm::StringRef routerFile);

} // namespace moe

#endif // MOE_LIB_IMPORT_MODELSPEC_H
