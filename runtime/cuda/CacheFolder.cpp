//===- CacheFolder.cpp - Where compiled kernels may be cached -------------===//
//
// Part of moe-opt. See include/moe/runtime/CacheFolder.h.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/CacheFolder.h"
#include "moe/runtime/KernelCache.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace moe::runtime {
namespace {

std::string errnoText(int error) { return std::strerror(error); }

/// Creates `dir` and its missing parents (new folders 0700).
Status makeFolders(const std::string &dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0)
    return S_ISDIR(st.st_mode)
               ? Status::success()
               : Status::error("'" + dir + "' exists and is not a folder");
  size_t slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0)
    if (Status s = makeFolders(dir.substr(0, slash)))
      return s;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return Status::error("cannot create folder '" + dir +
                         "': " + errnoText(errno));
  return Status::success();
}

void removeTree(const std::string &path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0)
    return;
  if (!S_ISDIR(st.st_mode)) {
    ::unlink(path.c_str());
    return;
  }
  std::vector<std::string> names;
  if (DIR *d = ::opendir(path.c_str())) {
    while (dirent *e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..")
        names.push_back(n);
    }
    ::closedir(d);
  }
  for (const std::string &n : names)
    removeTree(path + "/" + n);
  ::rmdir(path.c_str());
}

/// The private folder, removed when the process exits.
struct PrivateFolder {
  std::mutex mutex;
  std::string path;
  pid_t owner = 0;
  ~PrivateFolder() {
    // A forked child must not remove its parent's folder.
    if (!path.empty() && owner == ::getpid())
      removeTree(path);
  }
};
PrivateFolder &privateFolder() {
  static PrivateFolder folder;
  return folder;
}

} // namespace

Status checkCacheFolder(const std::string &dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    return Status::error("cannot use '" + dir + "': " + errnoText(errno));
  if (!S_ISDIR(st.st_mode))
    return Status::error("'" + dir + "' is not a folder");
  uid_t me = ::geteuid();
  if (st.st_uid != me && st.st_uid != 0)
    return Status::error("'" + dir + "' belongs to user " +
                         std::to_string(st.st_uid) + ", not to user " +
                         std::to_string(me) +
                         ": kernels cached there could have been planted by "
                         "that user");
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return Status::error("'" + dir +
                         "' is writable by other users (mode " +
                         [&] {
                           char m[8];
                           std::snprintf(m, sizeof m, "%03o",
                                         unsigned(st.st_mode & 0777));
                           return std::string(m);
                         }() +
                         "): kernels cached there could be replaced");
  return Status::success();
}

Expected<std::string> processPrivateFolder() {
  PrivateFolder &folder = privateFolder();
  std::lock_guard<std::mutex> lock(folder.mutex);
  if (!folder.path.empty() && folder.owner == ::getpid())
    return folder.path;
  // $TMPDIR first, then /tmp (a TMPDIR of another user is not writable).
  std::vector<std::string> bases;
  const char *tmp = std::getenv("TMPDIR");
  if (tmp && tmp[0] == '/')
    bases.push_back(tmp);
  bases.push_back("/tmp");
  std::string failures;
  for (const std::string &base : bases) {
    std::string pattern = base + "/moe-opt-private-XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (::mkdtemp(buffer.data())) {
      folder.path = buffer.data();
      folder.owner = ::getpid();
      return folder.path;
    }
    failures += (failures.empty() ? "" : ", ") + base + ": " + errnoText(errno);
  }
  return Status::error("cannot create a private folder (" + failures + ")");
}

CacheFolder chooseCacheFolder(const std::string &requested) {
  CacheFolder result;
  std::string dir = requested;
  std::string why;
  if (dir.empty()) {
    Expected<std::string> named = defaultCacheDirectory();
    if (named)
      dir = *named;
    else
      why = named.message();
  }
  while (dir.size() > 1 && dir.back() == '/')
    dir.pop_back();
  if (!dir.empty()) {
    Status made = makeFolders(dir);
    Status checked = made ? made : checkCacheFolder(dir);
    if (checked.ok()) {
      result.path = dir;
      return result;
    }
    why = checked.message();
  }
  Expected<std::string> fallback = processPrivateFolder();
  if (!fallback) {
    // No folder at all: callers then fail on their first write with a
    // message of their own; say why here.
    result.path = dir;
    result.warning = "kernel cache: " + why + "; and " + fallback.message();
    return result;
  }
  result.path = *fallback + "/kernels";
  (void)makeFolders(result.path);
  result.isPrivate = true;
  result.warning = "kernel cache: not using " +
                   (dir.empty() ? std::string("a shared folder") : "'" + dir + "'") +
                   ": " + why + "; using a private folder of this process (" +
                   result.path + ") instead";
  return result;
}

} // namespace moe::runtime
