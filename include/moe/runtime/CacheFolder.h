//===- CacheFolder.h - Where compiled kernels may be cached -----*- C++ -*-===//
//
// Part of moe-opt. The kernel caches (NVRTC cubins, the CPU emulation's
// shared libraries) hold code that this process loads and runs, so their
// folder must be one that no other user can write: a library planted there
// by someone else would run with our rights. One policy for both caches.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_CACHEFOLDER_H
#define MOE_RUNTIME_CACHEFOLDER_H

#include "moe/runtime/Status.h"

#include <string>

namespace moe::runtime {

/// A folder chosen for a kernel cache.
struct CacheFolder {
  std::string path;
  /// Non-empty when the requested folder is not used: why, and that a
  /// private folder of this process stands in for it.
  std::string warning;
  /// Whether `path` is the private folder of this process.
  bool isPrivate = false;
};

/// Success when code may be loaded from `dir`: an existing folder (symbolic
/// links followed) owned by this process's effective user, or by root, and
/// writable by neither its group nor others.
Status checkCacheFolder(const std::string &dir);

/// The cache folder to use: `requested`, or defaultCacheDirectory() when
/// empty, created when missing (new folders are 0700) and then checked with
/// checkCacheFolder. When it fails the check or cannot be created, or when
/// no folder can be named (no MOE_CACHE_DIR, XDG_CACHE_HOME or HOME), the
/// private folder of the process is used and `warning` says why.
CacheFolder chooseCacheFolder(const std::string &requested);

/// A folder that only this process uses (mkdtemp under $TMPDIR, or /tmp
/// when that fails,
/// mode 0700), created on first use and removed with its contents when the
/// process exits.
Expected<std::string> processPrivateFolder();

} // namespace moe::runtime

#endif // MOE_RUNTIME_CACHEFOLDER_H
