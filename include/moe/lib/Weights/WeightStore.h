//===- WeightStore.h - Tensors of a Hugging Face model folder ---*- C++ -*-===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//
//
// A Hugging Face model folder keeps its weights in one of three ways, which
// WeightStore tries in this order:
//   1. model.safetensors.index.json, whose "weight_map" maps every tensor
//      name to the shard file that holds it;
//   2. a single model.safetensors;
//   3. any other *.safetensors files in the folder (searched in name order).
// Shards are opened (mapped and validated) on first use and kept open.
// A WeightStore is not thread-safe.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_WEIGHTS_WEIGHTSTORE_H
#define MOE_LIB_WEIGHTS_WEIGHTSTORE_H

#include "moe/lib/Weights/Safetensors.h"

#include "llvm/ADT/StringMap.h"

#include <memory>
#include <string>
#include <vector>

namespace moe {

/// Name of the shard index of sharded checkpoints.
inline constexpr const char *kSafetensorsIndexName =
    "model.safetensors.index.json";
/// Name of the weights file of unsharded checkpoints.
inline constexpr const char *kSafetensorsSingleName = "model.safetensors";

/// Where a tensor lives: the shard's path and the tensor's header entry.
struct TensorLocation {
  std::string path;
  TensorInfo info;
};

class WeightStore {
public:
  /// Opens the model folder `dir`. With an index, checks that the index is
  /// valid JSON with a string-to-string "weight_map" and that every shard it
  /// names exists; shards themselves are opened lazily.
  static llvm::Expected<std::unique_ptr<WeightStore>> open(llvm::StringRef dir);

  /// The model folder.
  llvm::StringRef directory() const { return dir; }

  /// Path of the index file, or empty when the folder has none.
  llvm::StringRef indexPath() const { return index; }

  /// Full paths of the shard files, sorted by name.
  llvm::ArrayRef<std::string> shardPaths() const { return shards; }

  /// Finds a tensor; an error names the folder and the files looked in.
  llvm::Expected<TensorLocation> find(llvm::StringRef name);

  /// The opened shard at `path` (one of shardPaths()).
  llvm::Expected<const SafetensorsFile *> shard(llvm::StringRef path);

  /// Raw little-endian bytes of a tensor.
  llvm::Expected<llvm::ArrayRef<uint8_t>> rawData(llvm::StringRef name);

  /// A tensor converted to float exactly (F32, F16 or BF16).
  llvm::Expected<std::vector<float>> readF32(llvm::StringRef name);

  /// Every tensor name, sorted. Without an index this opens every shard.
  llvm::Expected<std::vector<std::string>> tensorNames();

private:
  WeightStore() = default;
  llvm::Error loadIndex();
  llvm::Expected<TensorLocation> findInShard(llvm::StringRef shardPath,
                                             llvm::StringRef name);

  std::string dir;
  std::string index;
  std::vector<std::string> shards;
  /// Tensor name to shard path, from the index.
  llvm::StringMap<std::string> weightMap;
  llvm::StringMap<std::unique_ptr<SafetensorsFile>> opened;
};

} // namespace moe

#endif // MOE_LIB_WEIGHTS_WEIGHTSTORE_H
