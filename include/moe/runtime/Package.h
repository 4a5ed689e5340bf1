//===- Package.h - Ahead-of-time compiled model packages --------*- C++ -*-===//
//
// Part of moe-opt. A package is a directory that holds everything needed to
// run a compiled model without MLIR, NVRTC or the original checkpoint:
//
//   manifest.json           what is in the package (docs/package.md)
//   kernels.cu              the CUDA C++ of every kernel (ModulePlan::source)
//   kernels.<arch>.cubin    the compiled kernels, one file per architecture
//   weights.bin             every weight tensor in its dtype, 256-byte aligned
//   model.opt.mlir          the optimized IR, for inspection (optional)
//
// writePackage builds the directory next to its destination and renames it
// into place, so that a package directory is always whole; openPackage
// checks every file's size and SHA-256 and the consistency of the launch
// plans before handing anything out. Plain C++: no LLVM, no MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_PACKAGE_H
#define MOE_RUNTIME_PACKAGE_H

#include "moe/runtime/Compiler.h"
#include "moe/runtime/Executor.h"
#include "moe/runtime/Json.h"
#include "moe/runtime/Plan.h"
#include "moe/runtime/Status.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moe::runtime {

/// The manifest's "format" and the only "version" this build reads/writes.
constexpr const char *kPackageFormat = "moe-package";
constexpr int64_t kPackageVersion = 1;
/// Offsets of tensors in weights.bin are multiples of this.
constexpr int64_t kPackageWeightAlignment = 256;

/// File names inside a package.
constexpr const char *kPackageManifestFile = "manifest.json";
constexpr const char *kPackageSourceFile = "kernels.cu";
constexpr const char *kPackageWeightsFile = "weights.bin";
constexpr const char *kPackageIrFile = "model.opt.mlir";
/// "kernels.<arch>.cubin".
std::string packageCubinFile(const std::string &arch);

/// Everything a package holds, as writePackage takes it.
///
/// Weights: `tensors` holds the bytes of each distinct weight tensor, in its
/// dtype (f32/i32/u32: 4 bytes, bf16/f16: the uint16 bit pattern; all
/// little-endian), row-major, exactly product(shape) * elementSize bytes.
/// `layerTensors[l][w]` is the tensor of `plan.layers[l].weights[w]`; every
/// WeightRef that maps to one tensor must describe the same weight (same
/// names, stacked, shape, dtype and, for constants, inline values), and
/// every tensor must be used. A constant (a WeightRef with inlineValues) is
/// stored like any tensor; its bytes must be its inline values encoded in
/// its dtype. collectWeights() fills both fields from a WeightProvider.
struct PackageContents {
  /// Who wrote the package, e.g. "moe-compile 0.1" (free text).
  std::string producer;
  /// Free-form description of the model (a JSON object): model_type, the
  /// checkpoint it came from, ...
  Json model = Json::object();
  /// The launch plans; plan.source becomes kernels.cu.
  ModulePlan plan;
  /// arch ("sm_90a") -> cubin bytes. Archs are [A-Za-z0-9_]+.
  std::map<std::string, std::string> cubins;
  /// ptxas's report per kernel and arch (CompiledModule::resources of each
  /// arch's compilation). Optional; at most one entry per (name, arch).
  std::vector<KernelResources> resources;
  std::vector<std::vector<uint8_t>> tensors;
  std::vector<std::vector<int>> layerTensors;
  /// external[t]: tensor t has no data in the package (its bytes are
  /// empty); whoever runs the package binds it (Model::bindTensor). Only
  /// checkpoint weights, never constants. Empty: every tensor is stored.
  std::vector<bool> external;
  /// The optimized IR; empty: no model.opt.mlir.
  std::string irText;
  /// streamed[t]: tensor t's bytes are not held (tensors[t] is empty) but
  /// asked of `streamTensor(t)` while writePackage writes weights.bin, one
  /// tensor at a time, so that packing a model needs the memory of its
  /// largest tensor, not of the model (collectWeightStreams). Only
  /// checkpoint weights, never constants or external tensors. Empty:
  /// every tensor is held.
  std::vector<bool> streamed;
  std::function<Expected<std::vector<uint8_t>>(size_t tensor)> streamTensor;
};

/// Whether two WeightRefs name the same tensor: equal names, stacked, shape
/// and dtype, and equal inline values (constants). `files` is where a
/// weight was read from and is not part of its identity.
bool sameWeight(const moe::WeightRef &a, const moe::WeightRef &b);

/// Fills contents.tensors and contents.layerTensors from contents.plan: one
/// tensor per distinct weight (sameWeight), in order of first use (layer by
/// layer, weight by weight). The f32 values of a checkpoint weight come
/// from `provider` (the same provider the executor takes) and are encoded
/// in the WeightRef's dtype as the executor would upload them; constants
/// are encoded from their inline values. Replaces previous tensors.
Status collectWeights(PackageContents &contents,
                      const moe::WeightProvider &provider);

/// The same with a provider of bytes already in the WeightRef's dtype
/// (for example a bf16 checkpoint copied without conversion). Its result is
/// checked against product(shape) * elementSize.
using RawWeightProvider =
    std::function<Expected<std::vector<uint8_t>>(const moe::WeightRef &)>;
Status collectWeightBytes(PackageContents &contents,
                          const RawWeightProvider &provider);

/// The same as collectWeightBytes, except that the checkpoint weights are
/// not read now: they are streamed (PackageContents::streamed), each asked
/// of `provider` once, while writePackage writes weights.bin. The package
/// written is byte for byte the one collectWeightBytes gives.
Status collectWeightStreams(PackageContents &contents,
                            const RawWeightProvider &provider);

/// The same tensors without their data: a shape-only package (moe-compile
/// --weights none) whose checkpoint weights are all external; constants are
/// stored as always.
Status collectWeightShapes(PackageContents &contents);

struct WritePackageOptions {
  /// Replace an existing package at the destination. Without it, an
  /// existing destination is an error and is left untouched. Even with it,
  /// only an empty directory or one with a manifest.json is replaced.
  bool replace = false;
  /// Called with the temporary directory once every file is written and
  /// synced, before it is renamed into place; a failure aborts the write
  /// (the temporary directory is removed). For tests and progress reports.
  std::function<Status(const std::string &tempDir)> beforeCommit;
};

/// Writes a package at `dir`. Checks the contents first (the checks of
/// openPackage: an invalid plan is never written); then writes every file
/// into `<dir>.tmp-XXXXXX` (a sibling), fsyncs them, and renames that
/// directory to `dir` (atomically exchanging it with the old package when
/// replacing; the old one is then removed). An interrupted or failed write
/// leaves no directory at `dir` (or the old package, untouched) and, unless
/// the process died, no temporary directory either; temporary siblings
/// older than a day that crashed writers left are removed. The same
/// contents give byte-identical files.
Status writePackage(const PackageContents &contents, const std::string &dir,
                    const WritePackageOptions &options = {});

/// A tensor of weights.bin.
struct PackageTensor {
  /// Its description; a constant has inlineValues (decoded from its bytes).
  moe::WeightRef ref;
  bool constant = false;
  /// False for an external tensor ("offset": null): no data in weights.bin.
  bool stored = true;
  int64_t offset = 0; ///< In weights.bin, when stored.
  int64_t bytes = 0;
};

struct OpenPackageOptions {
  /// Check the SHA-256 of every file (reads all of weights.bin). Sizes are
  /// always checked.
  bool verifyHashes = true;
};

/// An opened, checked package. Copies share the same data (weights.bin is
/// opened once and read with pread, never mapped: docs/package.md);
/// everything stays valid while any copy or a provider made by
/// weightProvider() lives.
class LoadedPackage {
public:
  const std::string &directory() const;
  /// The parsed manifest.
  const Json &manifest() const;
  const std::string &producer() const;
  const Json &model() const;

  /// The launch plans. plan().source is the text of kernels.cu; each
  /// layer's weights are the tensors' WeightRefs (constants with their
  /// inline values).
  const ModulePlan &plan() const;
  const std::string &source() const;

  /// Architectures with a cubin, sorted.
  std::vector<std::string> cubinArchs() const;
  /// The cubin of `arch`, or null when the package has none for it.
  const std::string *cubin(const std::string &arch) const;
  /// ptxas's report of every kernel and arch the package records.
  const std::vector<KernelResources> &resources() const;
  const KernelResources *findResources(const std::string &kernel,
                                       const std::string &arch) const;

  /// The path of model.opt.mlir, or "" when the package has no IR.
  std::string irPath() const;

  const std::vector<PackageTensor> &tensors() const;
  /// The tensor of plan().layers[layer].weights[weight], or -1 when out of
  /// range.
  int tensorIndex(size_t layer, size_t weight) const;
  /// The bytes of a tensor in weights.bin, read (none for an external
  /// tensor; an error when out of range or when the file was truncated).
  Expected<std::vector<uint8_t>> tensorBytes(size_t tensor) const;
  /// The f32 values of a tensor (bf16/f16 widened, i32/u32 converted).
  Expected<std::vector<float>> tensorValues(size_t tensor) const;
  /// The tensor a WeightRef names (sameWeight), or an error naming it.
  Expected<size_t> findTensor(const moe::WeightRef &ref) const;

  /// A provider for LayerExecutor::loadWeights: a WeightRef inside plan()
  /// is matched by position (its layer and index); any other WeightRef by
  /// identity (findTensor), so a copy of the plan works too. It hands out
  /// the tensor's bytes in weights.bin as they are (its stored dtype),
  /// read with pread into memory the WeightBytes owns (16 bytes of zero
  /// slack after them): the emulation runs on that memory in place, a
  /// device backend uploads it and drops it. A weights.bin truncated
  /// since the package was opened gives an error naming it.
  moe::WeightBytesProvider weightProvider() const;

  /// Everything in the package, as writePackage takes it (reads the IR).
  /// Writing it gives byte-identical files.
  Expected<PackageContents> toContents() const;

  struct State;

private:
  LoadedPackage() = default;
  friend Expected<LoadedPackage> openPackage(const std::string &,
                                             const OpenPackageOptions &);
  std::shared_ptr<const State> state_;
};

/// Opens and checks the package at `dir`: the manifest's format, version
/// and fields; every file's presence, size and SHA-256; the plans' indices,
/// shapes, dtypes and kernel names (which must occur in kernels.cu); the
/// tensors' places in weights.bin. A failure names the file, the manifest
/// field (as `layers[2].launches[0].args[3].index`) and what was expected.
Expected<LoadedPackage> openPackage(const std::string &dir,
                                    const OpenPackageOptions &options = {});

/// f32 values of `bytes` holding elements of `type` (little-endian);
/// fails when the size is not a multiple of the element size.
Expected<std::vector<float>>
decodeTensorValues(const uint8_t *bytes, size_t size, moe::ElementType type);

/// The ElementType of a dtype name ("f32", "bf16", "f16", "i32", "u32").
std::optional<moe::ElementType> parseElementType(const std::string &name);

} // namespace moe::runtime

#endif // MOE_RUNTIME_PACKAGE_H
