//===- KernelCache.h - Compiled kernels kept on disk ------------*- C++ -*-===//
//
// Part of moe-opt. A compiled module is stored under the SHA-256 of
// everything that decides its bytes (source, headers, options, architecture,
// NVRTC's version), so a hit calls no compiler. Entries are written to a
// temporary file in the cache folder and renamed into place: readers never
// see a partial entry, and processes that write the same key at once leave
// one whole entry. An entry that fails its checks (magic, version, key,
// sizes, SHA-256 of the payload) is reported in CompiledModule::warnings,
// compiled again and rewritten.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_KERNELCACHE_H
#define MOE_RUNTIME_KERNELCACHE_H

#include "moe/runtime/Compiler.h"
#include "moe/runtime/Status.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace moe::runtime {

/// SHA-256 (FIPS 180-4), incremental.
class Sha256 {
public:
  Sha256();
  Sha256 &update(const void *data, size_t size);
  Sha256 &update(std::string_view data) {
    return update(data.data(), data.size());
  }
  /// The digest; the object must not be updated afterwards.
  std::array<uint8_t, 32> finish();

  static std::array<uint8_t, 32> digest(std::string_view data);
  /// Lower-case hex of the digest (64 characters).
  static std::string hex(std::string_view data);
  static std::string toHex(const std::array<uint8_t, 32> &digest);

private:
  void block(const uint8_t *p);
  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;
};

/// The folder of the cache: $MOE_CACHE_DIR, else
/// $XDG_CACHE_HOME/moe-opt/kernels, else $HOME/.cache/moe-opt/kernels.
Expected<std::string> defaultCacheDirectory();

/// Compiles a request on a miss; compileKernels by default.
using CompileFunction =
    std::function<Expected<CompiledModule>(const CompileRequest &)>;

struct KernelCacheOptions {
  /// Empty: defaultCacheDirectory().
  std::string directory;
  /// Empty: compileKernels with the process's NVRTC.
  CompileFunction compile;
  /// What identifies the compiler in keys. Empty: NVRTC's version and the
  /// size of its library file (which tells updates of one version apart).
  std::string toolchainId;
};

/// Counts since the cache was opened.
struct KernelCacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t corruptEntries = 0;
  uint64_t writeFailures = 0;
};

class KernelCache {
public:
  /// Creates the folder (and its parents) if needed; a folder that other
  /// users could write is not used (chooseCacheFolder, CacheFolder.h): the
  /// process's private folder stands in, and every request's warnings say
  /// so. Removes temporary files that crashed writers left there over an
  /// hour ago.
  static Expected<std::unique_ptr<KernelCache>>
  open(KernelCacheOptions options = {});

  const std::string &directory() const { return directory_; }
  const std::string &toolchainId() const { return toolchainId_; }

  /// The cached module of `request`, or a fresh compilation that is then
  /// stored. A failure to store is a warning, not an error. Safe to call
  /// from several threads and processes.
  Expected<CompiledModule> getOrCompile(const CompileRequest &request);

  /// The key of a request (64 hex digits) and the file of its entry.
  std::string key(const CompileRequest &request) const;
  std::string entryPath(const std::string &key) const;

  KernelCacheStats stats() const;

  /// The entry format, exposed for tests and tools.
  static constexpr uint32_t kFormatVersion = 1;
  static std::string encodeEntry(const std::string &key,
                                 const CompiledModule &module);
  /// Decodes and checks an entry; a failure says what is wrong with it.
  static Expected<CompiledModule> decodeEntry(const std::string &bytes,
                                              const std::string &key);

private:
  KernelCache() = default;
  /// Reads and checks the entry of `key`. On failure `present` tells an
  /// absent entry from an unusable one.
  Expected<CompiledModule> read(const std::string &key, bool &present) const;
  Status write(const std::string &key, const CompiledModule &module) const;

  std::string directory_;
  /// Why the requested folder is not used (CacheFolder::warning), added to
  /// the warnings of every request.
  std::string folderWarning_;
  std::string toolchainId_;
  CompileFunction compile_;
  std::atomic<uint64_t> hits_{0}, misses_{0}, corrupt_{0}, writeFailures_{0};
};

/// Compiles `request` the way every tool does: through the disk cache in
/// `directory`, or when it is empty in defaultCacheDirectory()
/// (MOE_CACHE_DIR, else the user's cache folder),
/// opened once per folder and process. When no cache folder can be used, or
/// MOE_KERNEL_CACHE=off, the request is compiled directly (a folder that
/// cannot be used is the first of CompiledModule::warnings). Safe to call from several threads.
Expected<CompiledModule> compileCached(const CompileRequest &request,
                                       const std::string &directory = "");

/// Hits and misses of compileCached's caches in this process, added up.
KernelCacheStats compileCachedStats();

} // namespace moe::runtime

#endif // MOE_RUNTIME_KERNELCACHE_H
