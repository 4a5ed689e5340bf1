//===- AtomicFile.cpp - Whole-file atomic writes --------------------------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Weights/AtomicFile.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace llvm;

namespace moe {

namespace {
/// Writes into an existing device or FIFO where it is: a rename would
/// replace it by a regular file. A FIFO without a reader is refused rather
/// than waited on.
Error writeInPlace(StringRef path, const std::string &target, mode_t mode,
                   function_ref<Error(raw_ostream &)> write) {
  const char *kind = S_ISFIFO(mode) ? "FIFO" : "device";
  int fd = ::open(target.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENXIO)
      return createStringError("'" + path +
                               "' is a FIFO with no reader; start the reader "
                               "first or write to a regular file");
    return createStringError("cannot open the " + Twine(kind) + " '" + path +
                             "' for writing: " + std::strerror(errno));
  }
  // Blocking writes from here on: a FIFO's reader may be slower than us.
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0)
    ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  raw_fd_ostream os(fd, /*shouldClose=*/true);
  Error writeError = write(os);
  os.flush();
  if (!writeError && os.has_error())
    writeError = createStringError("error while writing the " + Twine(kind) +
                                   " '" + path + "': " + os.error().message());
  os.clear_error();
  return writeError;
}
} // namespace

Error writeFileAtomically(StringRef path,
                          function_ref<Error(raw_ostream &)> write,
                          uint64_t extendTo) {
  if (path.empty())
    return createStringError("cannot write a file with an empty path");
  // A symbolic link is followed: its target is written, the link stays.
  std::string target = path.str();
  struct stat st;
  if (::lstat(target.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    char *resolved = ::realpath(target.c_str(), nullptr);
    if (!resolved)
      return createStringError("cannot resolve the symbolic link '" + path +
                               "': " + std::strerror(errno) +
                               " (a link whose target does not exist is not "
                               "written through)");
    target = resolved;
    std::free(resolved);
  }
  if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISDIR(st.st_mode))
      return createStringError("'" + path + "' is a folder; expected a file");
    if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
      return createStringError("'" + path +
                               "' is neither a regular file, a device nor a "
                               "FIFO; refusing to replace it");
    if (extendTo)
      return createStringError("'" + path +
                               "' is not a regular file: a sparse file "
                               "cannot be written to it");
    return writeInPlace(path, target, st.st_mode, write);
  }
  // The temporary file must live in the destination folder so that the
  // final rename does not cross file systems.
  Expected<sys::fs::TempFile> temp =
      sys::fs::TempFile::create(target + ".tmp-%%%%%%%%");
  if (!temp)
    return createStringError("cannot create a temporary file next to '" + path +
                             "': " + toString(temp.takeError()));

  Error writeError = Error::success();
  {
    raw_fd_ostream os(temp->FD, /*shouldClose=*/false);
    writeError = write(os);
    os.flush();
    if (!writeError && os.has_error())
      writeError = createStringError("error while writing '" + path +
                                     "': " + os.error().message());
    if (!writeError && extendTo > os.tell())
      if (std::error_code ec = sys::fs::resize_file(temp->FD, extendTo))
        writeError = createStringError("cannot extend '" + path + "' to " +
                                       Twine(extendTo) +
                                       " bytes: " + ec.message());
    os.clear_error();
  }
  if (writeError) {
    consumeError(temp->discard());
    return writeError;
  }
  if (Error keepError = temp->keep(target))
    return createStringError("cannot rename the temporary file to '" + path +
                             "': " + toString(std::move(keepError)));
  return Error::success();
}

Error writeFileAtomically(StringRef path, StringRef contents) {
  return writeFileAtomically(path, [&](raw_ostream &os) {
    os << contents;
    return Error::success();
  });
}

} // namespace moe
