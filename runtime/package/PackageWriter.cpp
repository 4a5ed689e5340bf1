//===- PackageWriter.cpp - Writes a package directory ---------------------===//
//
// Part of moe-opt. The tensors of a package (collectWeights and its
// siblings) and writePackage, which writes every file into a temporary
// sibling directory and commits it atomically (AtomicDirectory.h).
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/AtomicDirectory.h"
#include "moe/runtime/KernelCache.h"
#include "moe/runtime/Manifest.h"
#include "moe/runtime/Package.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <map>

namespace moe::runtime {

using moe::ElementType;
using moe::WeightRef;
using namespace detail;

namespace {
/// How collect() treats checkpoint weights (not constants).
enum class Checkpoint {
  Read,     ///< Their bytes are read now (encode).
  External, ///< No bytes; marked external.
  Streamed, ///< No bytes now; marked streamed, read when written.
};

/// `encode(provider, ref)` gives a checkpoint weight's bytes.
template <typename Provider, typename Encode>
Status collect(PackageContents &c, const Provider &provider,
               const Encode &encode, Checkpoint mode = Checkpoint::Read) {
  bool external = mode == Checkpoint::External;
  std::vector<std::vector<uint8_t>> tensors;
  std::vector<bool> externalTensors, streamedTensors;
  std::vector<std::vector<int>> layerTensors;
  std::map<std::string, std::vector<int>> byKey; // identity -> tensors
  std::vector<const WeightRef *> refs;
  for (size_t l = 0; l < c.plan.layers.size(); ++l) {
    const moe::LayerPlan &layer = c.plan.layers[l];
    std::vector<int> &mine = layerTensors.emplace_back();
    for (size_t w = 0; w < layer.weights.size(); ++w) {
      const WeightRef &ref = layer.weights[w];
      std::string key = identityKey(ref);
      int found = -1;
      for (int t : byKey[key])
        if (sameWeight(*refs[t], ref)) {
          found = t;
          break;
        }
      if (found < 0) {
        std::string at = "plan.layers[" + std::to_string(l) + "].weights[" +
                         std::to_string(w) + "] (" + weightLabel(ref) + ")";
        int64_t bytes = tensorByteSize(ref.shape, ref.type);
        if (bytes < 0)
          return Status::error(at + ": the shape has a dimension below 1 or "
                                    "is too large");
        bool isExternal = external && ref.inlineValues.empty();
        bool isStreamed =
            mode == Checkpoint::Streamed && ref.inlineValues.empty();
        Expected<std::vector<uint8_t>> data =
            isExternal || isStreamed
                ? Expected<std::vector<uint8_t>>(std::vector<uint8_t>())
            : ref.inlineValues.empty()
                ? encode(provider, ref)
                : Expected<std::vector<uint8_t>>(
                      moe::encodeElements(ref.inlineValues, ref.type));
        if (!data)
          return data.takeError(at);
        if (!isExternal && !isStreamed &&
            static_cast<int64_t>(data->size()) != bytes)
          return Status::error(at + ": got " + std::to_string(data->size()) +
                               " bytes, the shape and dtype need " +
                               std::to_string(bytes));
        found = static_cast<int>(tensors.size());
        tensors.push_back(std::move(*data));
        externalTensors.push_back(isExternal);
        streamedTensors.push_back(isStreamed);
        refs.push_back(&ref);
        byKey[key].push_back(found);
      }
      mine.push_back(found);
    }
  }
  c.tensors = std::move(tensors);
  c.layerTensors = std::move(layerTensors);
  c.external.clear();
  if (external)
    c.external = std::move(externalTensors);
  c.streamed.clear();
  c.streamTensor = nullptr;
  if (mode == Checkpoint::Streamed)
    c.streamed = std::move(streamedTensors);
  return Status::success();
}
} // namespace

Status collectWeights(PackageContents &contents,
                      const moe::WeightProvider &provider) {
  return collect(contents, provider,
                 [](const moe::WeightProvider &p,
                    const WeightRef &ref) -> Expected<std::vector<uint8_t>> {
                   if (!p)
                     return Status::error("no weight provider");
                   Expected<std::vector<float>> values = p(ref);
                   if (!values)
                     return values.status();
                   return moe::encodeElements(*values, ref.type);
                 });
}

Status collectWeightBytes(PackageContents &contents,
                          const RawWeightProvider &provider) {
  return collect(contents, provider,
                 [](const RawWeightProvider &p,
                    const WeightRef &ref) -> Expected<std::vector<uint8_t>> {
                   if (!p)
                     return Status::error("no weight provider");
                   return p(ref);
                 });
}

Status collectWeightShapes(PackageContents &contents) {
  RawWeightProvider none;
  return collect(
      contents, none,
      [](const RawWeightProvider &,
         const WeightRef &) -> Expected<std::vector<uint8_t>> {
        return Status::error("internal error: a checkpoint weight's data was "
                             "requested for a shape-only package");
      },
      Checkpoint::External);
}

Status collectWeightStreams(PackageContents &contents,
                            const RawWeightProvider &provider) {
  Status s = collect(
      contents, provider,
      [](const RawWeightProvider &,
         const WeightRef &) -> Expected<std::vector<uint8_t>> {
        return Status::error("internal error: a streamed weight was read "
                             "before the package was written");
      },
      Checkpoint::Streamed);
  if (s)
    return s;
  // The provider gets a copy of each tensor's description: the plan may
  // move or change before the package is written.
  std::vector<WeightRef> refs(contents.tensors.size());
  std::vector<bool> seen(contents.tensors.size(), false);
  for (size_t l = 0; l < contents.layerTensors.size(); ++l)
    for (size_t w = 0; w < contents.layerTensors[l].size(); ++w) {
      size_t t = static_cast<size_t>(contents.layerTensors[l][w]);
      if (!seen[t])
        refs[t] = contents.plan.layers[l].weights[w];
      seen[t] = true;
    }
  contents.streamTensor = [provider, refs = std::move(refs)](
                              size_t t) -> Expected<std::vector<uint8_t>> {
    if (!provider)
      return Status::error("no weight provider");
    return provider(refs[t]);
  };
  return Status::success();
}

Status writePackage(const PackageContents &contents, const std::string &dirIn,
                    const WritePackageOptions &options) {
  std::string dir = dirIn;
  while (dir.size() > 1 && dir.back() == '/')
    dir.pop_back();
  std::string context = "cannot write the package '" + dir + "'";
  size_t slash = dir.rfind('/');
  std::string base = slash == std::string::npos ? dir : dir.substr(slash + 1);
  std::string parent = slash == std::string::npos ? "."
                       : slash == 0               ? "/"
                                                  : dir.substr(0, slash);
  if (base.empty() || base == "." || base == "..")
    return Status::error(context + ": expected a directory name, found '" +
                         dirIn + "'");

  struct stat st;
  if (::lstat(dir.c_str(), &st) == 0) {
    if (!options.replace)
      return Status::error(context + ": it already exists and replacing "
                                     "it was not asked for; it was left "
                                     "untouched");
    if (Status s = checkReplaceable(dir))
      return s.withContext(context);
  }

  Expected<Layout> layout = buildManifest(contents);
  if (!layout)
    return layout.takeError(context + ": invalid package contents");

  removeStaleSiblings(parent, base);
  std::string temp = dir + ".tmp-XXXXXX";
  if (!::mkdtemp(temp.data()))
    return Status::error(context +
                         ": cannot create a temporary directory "
                         "next to it: " +
                         errnoText(errno));
  ::chmod(temp.c_str(), 0755);

  // Each step runs only when every step before it succeeded.
  Status s =
      writeFile(joinPath(temp, kPackageSourceFile), contents.plan.source);
  for (auto it = contents.cubins.begin(); s.ok() && it != contents.cubins.end();
       ++it)
    s = writeFile(joinPath(temp, packageCubinFile(it->first)), it->second);
  if (s.ok() && !contents.irText.empty())
    s = writeFile(joinPath(temp, kPackageIrFile), contents.irText);
  if (s.ok()) {
    // Tensor by tensor: a streamed tensor is read, hashed, written and
    // dropped before the next one is read.
    Sha256 hash;
    s = writeFileStreamed(
        joinPath(temp, kPackageWeightsFile),
        [&](const PieceWriter &write) -> Status {
          static const uint8_t zeros[kPackageWeightAlignment] = {};
          auto emit = [&](const void *data, size_t size) {
            if (size)
              hash.update(data, size);
            return write(data, size);
          };
          int64_t end = 0;
          for (size_t t = 0; t < contents.tensors.size(); ++t) {
            int64_t offset = layout->offsets[t];
            if (offset < 0) // External: not in weights.bin.
              continue;
            if (offset > end)
              if (Status w = emit(zeros, static_cast<size_t>(offset - end)))
                return w;
            bool streamed =
                !contents.streamed.empty() && contents.streamed[t];
            if (!streamed) {
              if (Status w = emit(contents.tensors[t].data(),
                                  contents.tensors[t].size()))
                return w;
              end = offset + static_cast<int64_t>(contents.tensors[t].size());
              continue;
            }
            Expected<std::vector<uint8_t>> data = contents.streamTensor(t);
            if (!data)
              return data.takeError("weights.bin: tensors[" +
                                    std::to_string(t) + "]");
            // The size buildManifest laid out (and the manifest says).
            int64_t want = layout->sizes[t];
            if (static_cast<int64_t>(data->size()) != want)
              return Status::error(
                  "weights.bin: tensors[" + std::to_string(t) + "]: got " +
                  std::to_string(data->size()) +
                  " bytes, the shape and dtype need " + std::to_string(want));
            if (Status w = emit(data->data(), data->size()))
              return w;
            end = offset + want;
          }
          return Status::success();
        });
    if (s.ok() && layout->weightsHashPending)
      layout->manifest.find("weights")->set("sha256",
                                            Sha256::toHex(hash.finish()));
  }
  // The manifest last: a temporary directory without one is plainly
  // unfinished.
  if (s.ok())
    s = writeFile(joinPath(temp, kPackageManifestFile),
                  layout->manifest.dump(2));
  if (s.ok())
    s = syncDirectory(temp);
  if (s.ok() && options.beforeCommit)
    s = options.beforeCommit(temp);
  if (s.ok())
    s = commit(temp, dir, options.replace);
  if (!s.ok()) {
    removeTree(temp);
    return s.withContext(context);
  }
  // The rename itself is durable once the parent is synced.
  if (Status sync = syncDirectory(parent))
    return Status::error(context +
                         ": it is in place, but syncing its parent "
                         "directory failed: " +
                         sync.message());
  return Status::success();
}

} // namespace moe::runtime
