//===- Manifest.h - The package manifest's schema ---------------*- C++ -*-===//
//
// Part of moe-opt. manifest.json, field by field as docs/package.md
// describes it, in one place: decodeManifest checks a manifest and reads
// it; buildManifest writes the manifest of a PackageContents and runs
// decodeManifest on it, so that the writer never writes a package that
// openPackage would refuse. Used by the package writer and the loader
// (runtime/package); not an API of its own.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_MANIFEST_H
#define MOE_RUNTIME_MANIFEST_H

#include "moe/runtime/Package.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moe::runtime::detail {

/// The largest integer a manifest holds (JSON numbers are doubles).
constexpr int64_t kMaxJsonInteger = int64_t(1) << 53;

/// `s` as a JSON string, for messages.
std::string qt(const std::string &s);
/// Manifest field paths in messages: "path[i]" and "path.key".
std::string index(const std::string &path, size_t i);
std::string field(const std::string &path, const std::string &key);

/// product(shape) * elementSize, or -1 when a dimension is not positive or
/// the size passes 2^53.
int64_t tensorByteSize(const std::vector<int64_t> &shape,
                       moe::ElementType type);
/// "[2, 3]".
std::string shapeText(const std::vector<int64_t> &shape);
/// A weight for messages: its first name (and how many more), shape, dtype.
std::string weightLabel(const moe::WeightRef &ref);
/// A key equal for WeightRefs that are sameWeight (without inline values).
std::string identityKey(const moe::WeightRef &ref);

/// A file the manifest lists.
struct FileEntry {
  std::string path; ///< Field path in the manifest ("cubins[0]").
  std::string file;
  int64_t bytes = 0;
  std::string sha256;
};

/// What decodeManifest reads.
struct Decoded {
  std::string producer;
  Json model;
  FileEntry source;
  std::vector<std::pair<std::string, FileEntry>> cubins; // arch, file
  std::optional<FileEntry> ir;
  std::vector<std::string> kernelNames;
  std::vector<KernelResources> resources;
  FileEntry weights;
  std::vector<PackageTensor> tensors;
  std::vector<std::vector<int>> layerTensors;
  /// Layers without their weights (attachWeights adds them).
  moe::ModulePlan plan;
};

/// Checks a manifest and reads it into `out`. Errors are "PATH: ...".
Status decodeManifest(const Json &root, Decoded &out);

/// Every launch's kernel occurs in the source.
Status checkKernelsInSource(const moe::ModulePlan &plan,
                            const std::string &source,
                            const std::string &sourceFile);

/// Fills each layer's WeightRefs from the tensors.
void attachWeights(Decoded &d);

/// What buildManifest makes.
struct Layout {
  Json manifest;
  std::vector<int64_t> offsets; ///< Of each tensor in weights.bin.
  std::vector<int64_t> sizes;   ///< Bytes of each tensor in weights.bin.
  int64_t weightsBytes = 0;
  /// Some tensors are streamed: the manifest's weights.sha256 is a
  /// placeholder until weights.bin has been written.
  bool weightsHashPending = false;
};

/// The manifest of `c`, checked as openPackage would check it.
Expected<Layout> buildManifest(const PackageContents &c);

} // namespace moe::runtime::detail

#endif // MOE_RUNTIME_MANIFEST_H
