//===- AtomicDirectory.cpp - Files and the atomic commit of a dir ---------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/AtomicDirectory.h"
#include "moe/runtime/Package.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

namespace moe::runtime::detail {

std::string errnoText(int error) { return std::strerror(error); }

//===----------------------------------------------------------------------===//
// Files
//===----------------------------------------------------------------------===//

std::string joinPath(const std::string &dir, const std::string &name) {
  if (dir.empty())
    return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

Status writeAll(int fd, const uint8_t *data, size_t size,
                const std::string &path) {
  while (size > 0) {
    size_t chunk = std::min<size_t>(size, size_t(1) << 30);
    ssize_t n = ::write(fd, data, chunk);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return Status::error("cannot write '" + path + "': " + errnoText(errno));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::success();
}

/// Writes a new file from pieces and fsyncs it.
Status writeFile(const std::string &path,
                 const std::vector<std::pair<const void *, size_t>> &pieces) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return Status::error("cannot create '" + path + "': " + errnoText(errno));
  Status s;
  for (const auto &[data, size] : pieces) {
    s = writeAll(fd, static_cast<const uint8_t *>(data), size, path);
    if (!s.ok())
      break;
  }
  if (s.ok() && ::fsync(fd) != 0)
    s = Status::error("cannot sync '" + path + "': " + errnoText(errno));
  if (::close(fd) != 0 && s.ok())
    s = Status::error("cannot close '" + path + "': " + errnoText(errno));
  return s;
}

Status writeFileStreamed(
    const std::string &path,
    const std::function<Status(const PieceWriter &)> &produce) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return Status::error("cannot create '" + path + "': " + errnoText(errno));
  Status s = produce([&](const void *data, size_t size) {
    return writeAll(fd, static_cast<const uint8_t *>(data), size, path);
  });
  if (s.ok() && ::fsync(fd) != 0)
    s = Status::error("cannot sync '" + path + "': " + errnoText(errno));
  if (::close(fd) != 0 && s.ok())
    s = Status::error("cannot close '" + path + "': " + errnoText(errno));
  return s;
}

Status writeFile(const std::string &path, const std::string &text) {
  return writeFile(path, {{text.data(), text.size()}});
}

Status syncDirectory(const std::string &dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return Status::error("cannot open '" + dir + "': " + errnoText(errno));
  Status s;
  if (::fsync(fd) != 0 && errno != EINVAL)
    s = Status::error("cannot sync '" + dir + "': " + errnoText(errno));
  ::close(fd);
  return s;
}

void removeTree(const std::string &path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/// renameat2; returns 0 or an errno (ENOSYS where it does not exist).
int renameWithFlags(const std::string &from, const std::string &to,
                    unsigned flags) {
#ifdef SYS_renameat2
  if (::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(),
                flags) == 0)
    return 0;
  return errno;
#else
  (void)from;
  (void)to;
  (void)flags;
  return ENOSYS;
#endif
}

bool unsupported(int error) {
  return error == ENOSYS || error == EINVAL || error == ENOTSUP ||
         error == EOPNOTSUPP;
}

/// Whether `dir` (which exists) may be replaced: an empty directory or one
/// holding a manifest.json, not a symbolic link.
Status checkReplaceable(const std::string &dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0)
    return Status::success(); // Gone: nothing to replace.
  if (S_ISLNK(st.st_mode))
    return Status::error("'" + dir +
                         "' is a symbolic link; refusing to replace it");
  if (!S_ISDIR(st.st_mode))
    return Status::error("'" + dir +
                         "' exists and is not a directory; refusing to "
                         "replace it");
  struct stat mst;
  if (::stat(joinPath(dir, kPackageManifestFile).c_str(), &mst) == 0)
    return Status::success();
  DIR *d = ::opendir(dir.c_str());
  if (!d)
    return Status::error("cannot read '" + dir + "': " + errnoText(errno));
  // Empty, or a set of rank packages (moe-compile --placement):
  // placement.json and rank<r>/ packages, nothing else.
  bool empty = true, placement = false, rankSet = true;
  while (struct dirent *e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..")
      continue;
    empty = false;
    if (name == "placement.json") {
      placement = true;
      continue;
    }
    bool rankDir = name.size() > 4 && name.compare(0, 4, "rank") == 0 &&
                   name.find_first_not_of("0123456789", 4) ==
                       std::string::npos &&
                   ::stat(joinPath(joinPath(dir, name), kPackageManifestFile)
                              .c_str(),
                          &mst) == 0;
    rankSet = rankSet && rankDir;
  }
  ::closedir(d);
  if (!empty && !(placement && rankSet))
    return Status::error("'" + dir +
                         "' is not empty and holds no manifest.json: not a "
                         "package (nor a set of rank packages); refusing to "
                         "replace it");
  return Status::success();
}

/// Removes `<base>.tmp-XXXXXX` and `<base>.old-XXXXXX` directories in
/// `parent` that are over a day old (left by writers that died).
void removeStaleSiblings(const std::string &parent, const std::string &base) {
  DIR *d = ::opendir(parent.c_str());
  if (!d)
    return;
  std::vector<std::string> stale;
  time_t now = std::time(nullptr);
  while (struct dirent *e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() != base.size() + 11 || name.compare(0, base.size(), base))
      continue;
    std::string tag = name.substr(base.size(), 5);
    if (tag != ".tmp-" && tag != ".old-")
      continue;
    struct stat st;
    std::string path = joinPath(parent, name);
    if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
        now - st.st_mtime > 24 * 3600)
      stale.push_back(path);
  }
  ::closedir(d);
  for (const std::string &path : stale)
    removeTree(path);
}

/// Moves the finished temporary directory to `dir`.
Status commit(const std::string &temp, const std::string &dir, bool replace) {
  struct stat st;
  bool exists = ::lstat(dir.c_str(), &st) == 0;
  if (!exists) {
    int r = renameWithFlags(temp, dir, RENAME_NOREPLACE);
    if (r == 0)
      return Status::success();
    if (r == EEXIST || r == ENOTEMPTY) {
      if (!replace)
        return Status::error("'" + dir +
                             "' appeared while the package was written; "
                             "it was left untouched");
      exists = true;
    } else if (unsupported(r)) {
      // No renameat2: rename() cannot replace a non-empty directory, and the
      // destination was absent a moment ago.
      if (::rename(temp.c_str(), dir.c_str()) != 0)
        return Status::error("cannot rename '" + temp + "' to '" + dir +
                             "': " + errnoText(errno));
      return Status::success();
    } else {
      return Status::error("cannot rename '" + temp + "' to '" + dir +
                           "': " + errnoText(r));
    }
  }
  if (!replace)
    return Status::error("'" + dir +
                         "' already exists and replacing it was not asked "
                         "for; it was left untouched");
  if (Status s = checkReplaceable(dir))
    return s;
  int r = renameWithFlags(temp, dir, RENAME_EXCHANGE);
  if (r == 0) {
    removeTree(temp); // Now the old package.
    return Status::success();
  }
  if (r == ENOENT) // The old one went away meanwhile.
    return commit(temp, dir, false);
  if (!unsupported(r))
    return Status::error("cannot exchange '" + temp + "' and '" + dir +
                         "': " + errnoText(r));
  // No exchange: move the old package aside first.
  std::string aside = dir + ".old-XXXXXX";
  if (!::mkdtemp(aside.data()))
    return Status::error("cannot create a directory next to '" + dir +
                         "': " + errnoText(errno));
  if (::rename(dir.c_str(), aside.c_str()) != 0) {
    int e = errno;
    ::rmdir(aside.c_str());
    return Status::error("cannot move '" + dir + "' aside: " + errnoText(e));
  }
  if (::rename(temp.c_str(), dir.c_str()) != 0) {
    int e = errno;
    ::rename(aside.c_str(), dir.c_str());
    return Status::error("cannot rename '" + temp + "' to '" + dir +
                         "': " + errnoText(e));
  }
  removeTree(aside);
  return Status::success();
}

Expected<std::string> readWholeFile(const std::string &path, size_t size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return Status::error("cannot open '" + path + "': " + errnoText(errno));
  std::string out(size, '\0');
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd, out.data() + done, size - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int e = n < 0 ? errno : 0;
      ::close(fd);
      return Status::error("cannot read '" + path +
                           "': " + (e ? errnoText(e) : "it became shorter"));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

} // namespace moe::runtime::detail
