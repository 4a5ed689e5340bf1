//===- AtomicFile.cpp - Whole-file atomic writes --------------------------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Weights/AtomicFile.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

using namespace llvm;

namespace moe {

Error writeFileAtomically(StringRef path,
                          function_ref<Error(raw_ostream &)> write,
                          uint64_t extendTo) {
  if (path.empty())
    return createStringError("cannot write a file with an empty path");
  // The temporary file must live in the destination folder so that the
  // final rename does not cross file systems.
  Expected<sys::fs::TempFile> temp =
      sys::fs::TempFile::create(path + ".tmp-%%%%%%%%");
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
  if (Error keepError = temp->keep(path))
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
