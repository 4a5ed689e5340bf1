//===- KernelCache.cpp - Compiled kernels kept on disk --------------------===//
//
// Part of moe-opt.
//
// Entry file `<key>.moekc`, integers little-endian:
//   0   "MOEKCACH"
//   8   u32 format version
//   12  u32 header size (144)
//   16  64 bytes: the key in hex
//   80  u64 sizes of the four payload parts: meta, cubin, ptx, log
//   112 32 bytes: SHA-256 of the payload
//   144 payload: meta | cubin | ptx | log
// meta: length-prefixed strings: arch, then name expression / lowered name
// pairs. The resources are parsed again from the log.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/KernelCache.h"

#include "moe/runtime/CacheFolder.h"
#include "moe/runtime/CudaApi.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>

namespace moe::runtime {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'K', 'C', 'A', 'C', 'H'};
constexpr size_t kHeaderSize = 144;
constexpr const char *kEntrySuffix = ".moekc";
constexpr const char *kTempMarker = ".tmp.";

std::string errnoText(int error) { return std::strerror(error); }

void putU32(std::string &out, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    out.push_back(char(v >> (8 * i)));
}
void putU64(std::string &out, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(char(v >> (8 * i)));
}
uint64_t getLE(const std::string &in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= uint64_t(uint8_t(in[at + i])) << (8 * i);
  return v;
}
void putString(std::string &out, const std::string &s) {
  putU64(out, s.size());
  out += s;
}
bool getString(const std::string &in, size_t &at, std::string &s) {
  if (in.size() - at < 8)
    return false;
  uint64_t n = getLE(in, at, 8);
  at += 8;
  if (in.size() - at < n)
    return false;
  s = in.substr(at, n);
  at += n;
  return true;
}

/// Reads a whole file; `missing` tells "no such file" from other failures.
Expected<std::string> readFile(const std::string &path, bool &missing) {
  missing = false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    missing = errno == ENOENT;
    return Status::error("cannot open '" + path + "': " + errnoText(errno));
  }
  std::string data;
  char buffer[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int error = errno;
      ::close(fd);
      return Status::error("cannot read '" + path + "': " + errnoText(error));
    }
    if (n == 0)
      break;
    data.append(buffer, size_t(n));
  }
  ::close(fd);
  return data;
}

Status writeAll(int fd, const std::string &data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return Status::error(errnoText(errno));
    done += size_t(n);
  }
  return Status::success();
}

/// Removes temporary files of writers that died over an hour ago.
void removeStaleTemporaries(const std::string &dir) {
  DIR *d = ::opendir(dir.c_str());
  if (!d)
    return;
  time_t now = std::time(nullptr);
  while (struct dirent *e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] != '.' ||
        name.find(kTempMarker) == std::string::npos)
      continue;
    std::string path = dir + "/" + name;
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        now - st.st_mtime > 3600)
      ::unlink(path.c_str());
  }
  ::closedir(d);
}

std::string defaultToolchainId(const NvrtcApi &nvrtc) {
  auto [major, minor] = nvrtc.version();
  std::string id = "nvrtc " + std::to_string(major) + "." +
                   std::to_string(minor);
  struct stat st;
  if (!nvrtc.libraryFile.empty() &&
      ::stat(nvrtc.libraryFile.c_str(), &st) == 0)
    id += " library-bytes " + std::to_string(uint64_t(st.st_size));
  return id;
}

} // namespace

Expected<std::string> defaultCacheDirectory() {
  const char *dir = std::getenv("MOE_CACHE_DIR");
  if (dir && *dir)
    return std::string(dir);
  // The XDG base directory rules ignore a relative XDG_CACHE_HOME.
  const char *xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && xdg[0] == '/')
    return std::string(xdg) + "/moe-opt/kernels";
  const char *home = std::getenv("HOME");
  if (home && *home)
    return std::string(home) + "/.cache/moe-opt/kernels";
  return Status::error("cannot choose a kernel cache folder: MOE_CACHE_DIR, "
                       "XDG_CACHE_HOME and HOME are unset; set MOE_CACHE_DIR");
}

Expected<std::unique_ptr<KernelCache>>
KernelCache::open(KernelCacheOptions options) {
  std::unique_ptr<KernelCache> cache(new KernelCache());
  // Only a folder that no other user can write (CacheFolder.h); else this
  // process's private folder, with a warning.
  CacheFolder folder = chooseCacheFolder(options.directory);
  // chooseCacheFolder made the folder; it has none only when not even a
  // private one could be made.
  struct stat st;
  if (folder.path.empty() || ::stat(folder.path.c_str(), &st) != 0 ||
      !S_ISDIR(st.st_mode))
    return Status::error("cannot use the kernel cache folder: " +
                         folder.warning);
  cache->directory_ = folder.path;
  cache->folderWarning_ = folder.warning;

  cache->toolchainId_ = options.toolchainId;
  if (cache->toolchainId_.empty()) {
    Expected<std::shared_ptr<const NvrtcApi>> nvrtc = nvrtcApi();
    if (!nvrtc)
      return nvrtc.takeError("the kernel cache needs NVRTC's version");
    cache->toolchainId_ = defaultToolchainId(**nvrtc);
  }
  cache->compile_ = options.compile;
  if (!cache->compile_)
    cache->compile_ = [](const CompileRequest &request) {
      return compileKernels(request);
    };
  removeStaleTemporaries(cache->directory_);
  return cache;
}

std::string KernelCache::key(const CompileRequest &request) const {
  // Every field is length-prefixed so that no two requests serialise alike.
  Sha256 h;
  auto field = [&h](const std::string &s) {
    std::string length;
    putU64(length, s.size());
    h.update(length).update(s);
  };
  field("moe-opt kernel cache");
  field(std::to_string(kFormatVersion));
  field(toolchainId_);
  field(request.arch);
  field(request.sourceName);
  field(request.source);
  field(kernelAbiHeaderText());
  field(std::to_string(request.headers.size()));
  for (const auto &[name, text] : request.headers) {
    field(name);
    field(text);
  }
  std::vector<std::string> options = nvrtcOptions(request);
  field(std::to_string(options.size()));
  for (const std::string &o : options)
    field(o);
  field(std::to_string(request.nameExpressions.size()));
  for (const std::string &e : request.nameExpressions)
    field(e);
  return Sha256::toHex(h.finish());
}

std::string KernelCache::entryPath(const std::string &key) const {
  return directory_ + "/" + key + kEntrySuffix;
}

KernelCacheStats KernelCache::stats() const {
  KernelCacheStats s;
  s.hits = hits_.load();
  s.misses = misses_.load();
  s.corruptEntries = corrupt_.load();
  s.writeFailures = writeFailures_.load();
  return s;
}

std::string KernelCache::encodeEntry(const std::string &key,
                                     const CompiledModule &module) {
  std::string meta;
  putString(meta, module.arch);
  putU64(meta, module.loweredNames.size());
  for (const auto &[expr, symbol] : module.loweredNames) {
    putString(meta, expr);
    putString(meta, symbol);
  }
  Sha256 payloadHash;
  payloadHash.update(meta).update(module.cubin).update(module.ptx).update(
      module.log);
  std::array<uint8_t, 32> checksum = payloadHash.finish();

  std::string out(kMagic, sizeof(kMagic));
  putU32(out, kFormatVersion);
  putU32(out, kHeaderSize);
  std::string paddedKey = key.substr(0, 64);
  paddedKey.resize(64, '\0');
  out += paddedKey;
  putU64(out, meta.size());
  putU64(out, module.cubin.size());
  putU64(out, module.ptx.size());
  putU64(out, module.log.size());
  out.append(reinterpret_cast<const char *>(checksum.data()), checksum.size());
  out += meta;
  out += module.cubin;
  out += module.ptx;
  out += module.log;
  return out;
}

Expected<CompiledModule> KernelCache::decodeEntry(const std::string &bytes,
                                                  const std::string &key) {
  if (bytes.size() < kHeaderSize)
    return Status::error("truncated: " + std::to_string(bytes.size()) +
                         " bytes, shorter than the header");
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    return Status::error("not a kernel cache entry (bad magic)");
  uint64_t version = getLE(bytes, 8, 4);
  if (version != kFormatVersion)
    return Status::error("format version " + std::to_string(version) +
                         ", expected " + std::to_string(kFormatVersion));
  if (getLE(bytes, 12, 4) != kHeaderSize)
    return Status::error("bad header size");
  std::string paddedKey = key.substr(0, 64);
  paddedKey.resize(64, '\0');
  if (bytes.compare(16, 64, paddedKey) != 0)
    return Status::error("the entry holds another key");
  uint64_t sizes[4];
  uint64_t total = kHeaderSize;
  for (int i = 0; i < 4; ++i) {
    sizes[i] = getLE(bytes, 80 + 8 * i, 8);
    if (sizes[i] > bytes.size())
      return Status::error("truncated or bad sizes: a part of " +
                           std::to_string(sizes[i]) + " bytes in a file of " +
                           std::to_string(bytes.size()));
    total += sizes[i];
  }
  if (total != bytes.size())
    return Status::error("truncated or bad sizes: header says " +
                         std::to_string(total) + " bytes, file has " +
                         std::to_string(bytes.size()));
  std::array<uint8_t, 32> checksum =
      Sha256().update(bytes.data() + kHeaderSize, total - kHeaderSize).finish();
  if (std::memcmp(checksum.data(), bytes.data() + 112, 32) != 0)
    return Status::error("payload checksum mismatch");

  CompiledModule module;
  size_t at = kHeaderSize;
  std::string meta = bytes.substr(at, sizes[0]);
  at += sizes[0];
  module.cubin = bytes.substr(at, sizes[1]);
  at += sizes[1];
  module.ptx = bytes.substr(at, sizes[2]);
  at += sizes[2];
  module.log = bytes.substr(at, sizes[3]);

  size_t m = 0;
  if (!getString(meta, m, module.arch) || meta.size() - m < 8)
    return Status::error("bad metadata");
  uint64_t count = getLE(meta, m, 8);
  m += 8;
  for (uint64_t i = 0; i < count; ++i) {
    std::string expr, symbol;
    if (!getString(meta, m, expr) || !getString(meta, m, symbol))
      return Status::error("bad metadata");
    module.loweredNames[expr] = symbol;
  }
  module.resources = parsePtxasReport(module.log);
  module.fromCache = true;
  return module;
}

Expected<CompiledModule> KernelCache::read(const std::string &key,
                                           bool &present) const {
  bool missing = false;
  std::string path = entryPath(key);
  Expected<std::string> bytes = readFile(path, missing);
  present = !missing;
  if (!bytes)
    return bytes.status();
  Expected<CompiledModule> module = decodeEntry(*bytes, key);
  if (!module)
    return module.takeError("'" + path + "'");
  return module;
}

Status KernelCache::write(const std::string &key,
                          const CompiledModule &module) const {
  std::string path = entryPath(key);
  // The temporary file is in the same folder, so the rename is atomic:
  // readers see the old entry, or none, or the whole new one.
  std::string temp = directory_ + "/." + key + kTempMarker + "XXXXXX";
  int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0)
    return Status::error("cannot create a temporary file in '" + directory_ +
                         "': " + errnoText(errno));
  // mkostemp makes the file private; an entry is no secret.
  ::fchmod(fd, 0644);
  Status s = writeAll(fd, encodeEntry(key, module));
  if (::close(fd) != 0 && s.ok())
    s = Status::error(errnoText(errno));
  if (s.ok() && ::rename(temp.c_str(), path.c_str()) != 0)
    s = Status::error("cannot rename it to '" + path +
                      "': " + errnoText(errno));
  if (!s.ok()) {
    ::unlink(temp.c_str());
    return s.withContext("cannot write kernel cache entry '" + temp + "'");
  }
  return Status::success();
}

Expected<CompiledModule>
KernelCache::getOrCompile(const CompileRequest &request) {
  auto start = std::chrono::steady_clock::now();
  std::string k = key(request);
  bool present = false;
  Expected<CompiledModule> cached = read(k, present);
  if (cached) {
    ++hits_;
    CompiledModule module = std::move(cached).value();
    module.compileSeconds = std::chrono::duration<double>(
                                std::chrono::steady_clock::now() - start)
                                .count();
    if (!folderWarning_.empty())
      module.warnings.insert(module.warnings.begin(), folderWarning_);
    return module;
  }
  std::vector<std::string> warnings;
  if (!folderWarning_.empty())
    warnings.push_back(folderWarning_);
  if (present) {
    ++corrupt_;
    warnings.push_back("kernel cache: unusable entry " + cached.message() +
                       "; compiling again and rewriting it");
  }
  ++misses_;
  Expected<CompiledModule> compiled = compile_(request);
  if (!compiled)
    return compiled.status();
  CompiledModule module = std::move(compiled).value();
  module.fromCache = false;
  if (Status s = write(k, module)) {
    ++writeFailures_;
    warnings.push_back("kernel cache: " + s.message());
  }
  module.warnings.insert(module.warnings.begin(), warnings.begin(),
                         warnings.end());
  return module;
}

namespace {
/// The caches compileCached has opened in this process, by folder.
struct SharedCaches {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<KernelCache>> byDirectory;
};
SharedCaches &sharedCaches() {
  static SharedCaches caches;
  return caches;
}
} // namespace

Expected<CompiledModule> compileCached(const CompileRequest &request,
                                       const std::string &directory) {
  const char *mode = std::getenv("MOE_KERNEL_CACHE");
  if (mode && std::string(mode) == "off")
    return compileKernels(request);
  std::shared_ptr<KernelCache> cache;
  std::string unavailable;
  {
    SharedCaches &caches = sharedCaches();
    std::lock_guard<std::mutex> lock(caches.mutex);
    // Keyed by the folder asked for ("" is the default one).
    auto it = caches.byDirectory.find(directory);
    if (it != caches.byDirectory.end()) {
      cache = it->second;
    } else {
      KernelCacheOptions options;
      options.directory = directory;
      Expected<std::unique_ptr<KernelCache>> opened =
          KernelCache::open(std::move(options));
      if (opened) {
        cache = std::shared_ptr<KernelCache>(std::move(opened).value());
        caches.byDirectory[directory] = cache;
      } else {
        unavailable = "kernel cache: not used: " + opened.message();
      }
    }
  }
  if (cache)
    return cache->getOrCompile(request);
  Expected<CompiledModule> compiled = compileKernels(request);
  if (!compiled)
    return compiled;
  CompiledModule module = std::move(compiled).value();
  module.warnings.insert(module.warnings.begin(), unavailable);
  return module;
}

KernelCacheStats compileCachedStats() {
  SharedCaches &caches = sharedCaches();
  std::lock_guard<std::mutex> lock(caches.mutex);
  KernelCacheStats total;
  for (const auto &[dir, cache] : caches.byDirectory) {
    KernelCacheStats s = cache->stats();
    total.hits += s.hits;
    total.misses += s.misses;
    total.corruptEntries += s.corruptEntries;
    total.writeFailures += s.writeFailures;
  }
  return total;
}

} // namespace moe::runtime
