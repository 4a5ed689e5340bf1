//===- LoadedPackage.cpp - Opens and checks a package ---------------------===//
//
// Part of moe-opt. openPackage reads the manifest (Manifest.h), checks every
// file's size and SHA-256 and opens weights.bin once; a LoadedPackage and
// the providers it makes share that descriptor, and read it with pread.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/AtomicDirectory.h"
#include "moe/runtime/KernelCache.h"
#include "moe/runtime/KernelContract.h"
#include "moe/runtime/Manifest.h"
#include "moe/runtime/Package.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

namespace moe::runtime {

using moe::ElementType;
using moe::WeightRef;
using namespace detail;

namespace {

/// weights.bin, open for reading. It is never mapped: every byte that leaves
/// it (hashes, f32 values, the bytes the kernels run on) is copied out with
/// pread, so a file truncated or rewritten while a package is open gives an
/// error naming it, not SIGBUS, and its pages pass through the page cache
/// only, not the resident set.
class PackageFile {
public:
  ~PackageFile() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  static Expected<std::unique_ptr<PackageFile>> open(const std::string &path,
                                                     size_t size) {
    auto file = std::unique_ptr<PackageFile>(new PackageFile());
    file->size_ = size;
    file->path_ = path;
    if (size == 0)
      return file;
    file->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (file->fd_ < 0)
      return Status::error("cannot open '" + path + "': " + errnoText(errno));
    return file;
  }
  size_t size() const { return size_; }

  /// Copies bytes [offset, offset + n) of the file to `dst` (the caller
  /// keeps them within size()).
  Status read(size_t offset, size_t n, uint8_t *dst) const {
    size_t done = 0;
    while (done < n) {
      ssize_t got =
          ::pread(fd_, dst + done, n - done, static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR)
        continue;
      if (got < 0)
        return Status::error("cannot read '" + path_ +
                             "': " + errnoText(errno));
      if (got == 0) {
        struct stat st;
        long long now = ::fstat(fd_, &st) == 0 ? st.st_size : 0;
        return Status::error(
            path_ + ": ends at " + std::to_string(now) + " bytes, " +
            std::to_string(size_) +
            " when the package was opened: it was truncated or rewritten "
            "while in use");
      }
      done += static_cast<size_t>(got);
    }
    return Status::success();
  }

  /// The bytes of `t`, read into a vector, followed by `slack` zero bytes.
  Expected<std::vector<uint8_t>> readTensor(const PackageTensor &t,
                                            size_t slack = 0) const {
    std::vector<uint8_t> bytes(static_cast<size_t>(t.bytes) + slack, 0);
    if (Status s = read(static_cast<size_t>(t.offset),
                        static_cast<size_t>(t.bytes), bytes.data()))
      return s;
    return bytes;
  }

private:
  PackageFile() = default;
  int fd_ = -1;
  std::string path_;
  size_t size_ = 0;
};

/// Checks that the file of `e` exists with the size the manifest gives.
Status checkFilePresent(const std::string &dir, const FileEntry &e) {
  std::string path = joinPath(dir, e.file);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT)
      return Status::error(path + ": missing (manifest.json lists it as " +
                           field(e.path, "file") + ")");
    return Status::error(path + ": " + errnoText(errno));
  }
  if (!S_ISREG(st.st_mode))
    return Status::error(path + ": not a regular file");
  if (static_cast<int64_t>(st.st_size) != e.bytes)
    return Status::error(path + ": size " + std::to_string(st.st_size) +
                         " bytes, expected " + std::to_string(e.bytes) +
                         " (manifest.json " + field(e.path, "bytes") + ")");
  return Status::success();
}

Status checkHash(const std::string &dir, const FileEntry &e,
                 const std::string &actual) {
  if (actual == e.sha256)
    return Status::success();
  return Status::error(
      joinPath(dir, e.file) + ": SHA-256 mismatch: the file's is " + actual +
      ", manifest.json " + field(e.path, "sha256") + " expects " + e.sha256);
}

/// Reads a listed file and checks its size and hash.
Expected<std::string> readListedFile(const std::string &dir, const FileEntry &e,
                                     bool verify) {
  if (Status s = checkFilePresent(dir, e))
    return s;
  Expected<std::string> text =
      readWholeFile(joinPath(dir, e.file), static_cast<size_t>(e.bytes));
  if (!text)
    return text.status();
  if (verify)
    if (Status s = checkHash(dir, e, Sha256::hex(*text)))
      return s;
  return text;
}

} // namespace

Expected<std::vector<float>> decodeTensorValues(const uint8_t *bytes,
                                                size_t size, ElementType type) {
  size_t width = static_cast<size_t>(moe::elementSize(type));
  if (size % width != 0)
    return Status::error(std::to_string(size) +
                         " bytes are not a whole number of " +
                         moe::elementTypeName(type) + " elements");
  size_t count = size / width;
  if (type == ElementType::F4E2M1FN)
    count = 2 * size; // two codes per byte
  switch (type) {
  case ElementType::I32: {
    std::vector<float> out(count);
    for (size_t i = 0; i < count; ++i) {
      int32_t v;
      std::memcpy(&v, bytes + 4 * i, 4);
      out[i] = static_cast<float>(v);
    }
    return out;
  }
  case ElementType::U32: {
    std::vector<float> out(count);
    for (size_t i = 0; i < count; ++i) {
      uint32_t v;
      std::memcpy(&v, bytes + 4 * i, 4);
      out[i] = static_cast<float>(v);
    }
    return out;
  }
  default:
    return moe::decodeElements(bytes, static_cast<int64_t>(count), type);
  }
}

//===----------------------------------------------------------------------===//
// LoadedPackage
//===----------------------------------------------------------------------===//

struct LoadedPackage::State {
  std::string directory;
  Json manifest;
  std::string producer;
  Json model;
  moe::ModulePlan plan;
  std::map<std::string, std::string> cubins;
  std::vector<KernelResources> resources;
  std::string irFile; ///< "" when none.
  std::vector<PackageTensor> tensors;
  std::vector<std::vector<int>> layerTensors;
  std::unique_ptr<PackageFile> weights;
  std::map<std::string, size_t> byIdentity; ///< Non-constant tensors.
};

const std::string &LoadedPackage::directory() const {
  return state_->directory;
}
const Json &LoadedPackage::manifest() const { return state_->manifest; }
const std::string &LoadedPackage::producer() const { return state_->producer; }
const Json &LoadedPackage::model() const { return state_->model; }
const moe::ModulePlan &LoadedPackage::plan() const { return state_->plan; }
const std::string &LoadedPackage::source() const { return state_->plan.source; }

std::vector<std::string> LoadedPackage::cubinArchs() const {
  std::vector<std::string> out;
  for (const auto &c : state_->cubins)
    out.push_back(c.first);
  return out;
}

const std::string *LoadedPackage::cubin(const std::string &arch) const {
  auto it = state_->cubins.find(arch);
  return it == state_->cubins.end() ? nullptr : &it->second;
}

const std::vector<KernelResources> &LoadedPackage::resources() const {
  return state_->resources;
}

const KernelResources *
LoadedPackage::findResources(const std::string &kernel,
                             const std::string &arch) const {
  for (const KernelResources &r : state_->resources)
    if (r.name == kernel && r.arch == arch)
      return &r;
  return nullptr;
}

std::string LoadedPackage::irPath() const {
  return state_->irFile.empty() ? std::string()
                                : joinPath(state_->directory, state_->irFile);
}

const std::vector<PackageTensor> &LoadedPackage::tensors() const {
  return state_->tensors;
}

int LoadedPackage::tensorIndex(size_t layer, size_t weight) const {
  if (layer >= state_->layerTensors.size() ||
      weight >= state_->layerTensors[layer].size())
    return -1;
  return state_->layerTensors[layer][weight];
}

Expected<std::vector<uint8_t>> LoadedPackage::tensorBytes(size_t tensor) const {
  if (tensor >= state_->tensors.size())
    return Status::error("tensor " + std::to_string(tensor) +
                         " is out of range (the package has " +
                         std::to_string(state_->tensors.size()) + ")");
  const PackageTensor &t = state_->tensors[tensor];
  if (!t.stored)
    return std::vector<uint8_t>();
  return state_->weights->readTensor(t);
}

namespace {
/// Why an external tensor has no values.
Status externalTensorError(const LoadedPackage::State &s, size_t tensor) {
  return Status::error(
      "weight tensor " + std::to_string(tensor) + " (" +
      weightLabel(s.tensors[tensor].ref) + ") has no data in the package '" +
      s.directory +
      "' (a shape-only package, compiled with --weights none): bind it "
      "before running: Package.bind_tensor in Python, Model::bindTensor in "
      "C++, moe_model_bind_tensor in C, or moe-bench --random-weights");
}
} // namespace

Expected<std::vector<float>> LoadedPackage::tensorValues(size_t tensor) const {
  if (tensor >= state_->tensors.size())
    return Status::error("tensor " + std::to_string(tensor) +
                         " is out of range (the package has " +
                         std::to_string(state_->tensors.size()) + ")");
  if (!state_->tensors[tensor].stored)
    return externalTensorError(*state_, tensor);
  // The reference executor that asks for them layer by layer keeps no page
  // of weights.bin resident.
  const PackageTensor &t = state_->tensors[tensor];
  Expected<std::vector<uint8_t>> bytes = state_->weights->readTensor(t);
  if (!bytes)
    return bytes.status();
  return decodeTensorValues(bytes->data(), bytes->size(), t.ref.type);
}

namespace {
Expected<size_t> findTensorIn(const LoadedPackage::State &s,
                              const WeightRef &ref) {
  if (ref.inlineValues.empty()) {
    auto it = s.byIdentity.find(identityKey(ref));
    if (it != s.byIdentity.end())
      return it->second;
  } else {
    for (size_t t = 0; t < s.tensors.size(); ++t)
      if (s.tensors[t].constant && sameWeight(s.tensors[t].ref, ref))
        return t;
  }
  return Status::error("the package '" + s.directory + "' has no weight " +
                       weightLabel(ref));
}
} // namespace

Expected<size_t> LoadedPackage::findTensor(const WeightRef &ref) const {
  return findTensorIn(*state_, ref);
}

moe::WeightBytesProvider LoadedPackage::weightProvider() const {
  std::shared_ptr<const State> state = state_;
  return [state](const WeightRef &ref) -> Expected<moe::WeightBytes> {
    std::less<const WeightRef *> before;
    std::optional<size_t> tensor;
    for (size_t l = 0; l < state->plan.layers.size() && !tensor; ++l) {
      const std::vector<WeightRef> &w = state->plan.layers[l].weights;
      if (!w.empty() && !before(&ref, w.data()) &&
          before(&ref, w.data() + w.size()))
        tensor = static_cast<size_t>(
            state->layerTensors[l][static_cast<size_t>(&ref - w.data())]);
    }
    if (!tensor) {
      Expected<size_t> found = findTensorIn(*state, ref);
      if (!found)
        return found.status();
      tensor = *found;
    }
    const PackageTensor &t = state->tensors[*tensor];
    if (!t.stored)
      return externalTensorError(*state, *tensor);
    // The bytes in weights.bin, in their stored dtype, read into memory the
    // result owns: the emulation runs on them in place, a device backend
    // uploads them and drops them. Kernels never read the file through a
    // mapping that a truncation would turn into SIGBUS.
    // 16 bytes of slack for the kernels' 16-byte loads, read in place (no
    // second copy for them).
    Expected<std::vector<uint8_t>> bytes =
        state->weights->readTensor(t, /*slack=*/16);
    if (!bytes)
      return bytes.status();
    auto owned = std::make_shared<std::vector<uint8_t>>(std::move(*bytes));
    return moe::WeightBytes::view(t.ref.type, owned->data(),
                                  static_cast<size_t>(t.bytes), owned->size(),
                                  owned);
  };
}

Expected<PackageContents> LoadedPackage::toContents() const {
  const State &s = *state_;
  PackageContents c;
  c.producer = s.producer;
  c.model = s.model;
  c.plan = s.plan;
  c.cubins = s.cubins;
  c.resources = s.resources;
  c.layerTensors = s.layerTensors;
  for (size_t t = 0; t < s.tensors.size(); ++t) {
    Expected<std::vector<uint8_t>> b = tensorBytes(t);
    if (!b)
      return b.status();
    c.tensors.push_back(std::move(*b));
    if (!s.tensors[t].stored) {
      c.external.resize(s.tensors.size(), false);
      c.external[t] = true;
    }
  }
  if (!s.irFile.empty()) {
    std::string path = irPath();
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
      return Status::error("cannot read '" + path + "': " + errnoText(errno));
    Expected<std::string> ir =
        readWholeFile(path, static_cast<size_t>(st.st_size));
    if (!ir)
      return ir.status();
    c.irText = std::move(*ir);
  }
  return c;
}

Expected<LoadedPackage> openPackage(const std::string &dir,
                                    const OpenPackageOptions &options) {
  auto state = std::make_shared<LoadedPackage::State>();
  state->directory = dir;
  std::string manifestPath = joinPath(dir, kPackageManifestFile);
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    return Status::error("cannot open the package '" + dir +
                         "': " + errnoText(errno));
  if (!S_ISDIR(st.st_mode))
    return Status::error("cannot open the package '" + dir +
                         "': not a directory");
  if (::stat(manifestPath.c_str(), &st) != 0)
    return Status::error(manifestPath + ": " +
                         (errno == ENOENT ? std::string("missing (not a "
                                                        "package?)")
                                          : errnoText(errno)));
  if (!S_ISREG(st.st_mode))
    return Status::error(manifestPath + ": not a regular file");
  Expected<std::string> text =
      readWholeFile(manifestPath, static_cast<size_t>(st.st_size));
  if (!text)
    return text.status();
  Expected<Json> parsed = parseJson(*text);
  if (!parsed)
    return parsed.takeError(manifestPath);
  state->manifest = std::move(*parsed);

  Decoded d;
  if (Status s = decodeManifest(state->manifest, d))
    return s.withContext(manifestPath);

  bool verify = options.verifyHashes;
  Expected<std::string> source = readListedFile(dir, d.source, verify);
  if (!source)
    return source.status();
  d.plan.source = std::move(*source);
  for (const auto &[arch, entry] : d.cubins) {
    Expected<std::string> bytes = readListedFile(dir, entry, verify);
    if (!bytes)
      return bytes.status();
    state->cubins[arch] = std::move(*bytes);
  }
  if (d.ir) {
    if (verify) {
      Expected<std::string> ir = readListedFile(dir, *d.ir, true);
      if (!ir)
        return ir.status();
    } else if (Status s = checkFilePresent(dir, *d.ir)) {
      return s;
    }
    state->irFile = d.ir->file;
  }
  if (Status s = checkFilePresent(dir, d.weights))
    return s;
  Expected<std::unique_ptr<PackageFile>> weights = PackageFile::open(
      joinPath(dir, d.weights.file), static_cast<size_t>(d.weights.bytes));
  if (!weights)
    return weights.status();
  state->weights = std::move(*weights);
  if (verify) {
    // Read in pieces: checking a package of any size leaves none of it
    // resident.
    Sha256 h;
    std::vector<uint8_t> piece(
        std::min<size_t>(state->weights->size(), size_t{4} << 20));
    for (size_t at = 0; at < state->weights->size(); at += piece.size()) {
      size_t n = std::min(piece.size(), state->weights->size() - at);
      if (Status s = state->weights->read(at, n, piece.data()))
        return s;
      h.update(piece.data(), n);
    }
    if (Status s = checkHash(dir, d.weights, Sha256::toHex(h.finish())))
      return s;
  }

  if (Status s = checkKernelsInSource(d.plan, d.plan.source, d.source.file))
    return s.withContext(manifestPath);

  // Constants carry their values in the plan, as the code generator made
  // them.
  for (PackageTensor &t : d.tensors) {
    if (!t.constant)
      continue;
    Expected<std::vector<uint8_t>> bytes = state->weights->readTensor(t);
    if (!bytes)
      return bytes.status();
    Expected<std::vector<float>> values =
        decodeTensorValues(bytes->data(), bytes->size(), t.ref.type);
    if (!values)
      return values.takeError(manifestPath);
    t.ref.inlineValues = std::move(*values);
  }
  attachWeights(d);
  // The plan against what the kernels were generated for: a manifest that
  // passes the checks above can still bind the wrong buffers.
  if (Status s = moe::checkPlanContracts(d.plan, d.source.file))
    return s.withContext(manifestPath);
  for (size_t t = 0; t < d.tensors.size(); ++t)
    if (!d.tensors[t].constant)
      state->byIdentity.emplace(identityKey(d.tensors[t].ref), t);

  state->producer = std::move(d.producer);
  state->model = std::move(d.model);
  state->plan = std::move(d.plan);
  state->resources = std::move(d.resources);
  state->tensors = std::move(d.tensors);
  state->layerTensors = std::move(d.layerTensors);
  LoadedPackage package;
  package.state_ = std::move(state);
  return package;
}

} // namespace moe::runtime
