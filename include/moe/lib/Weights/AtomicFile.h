//===- AtomicFile.h - Whole-file atomic writes ------------------*- C++ -*-===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//
//
// Writes a file so that readers see either the old contents or the complete
// new contents, never a partial file: the data goes to a temporary file in
// the destination's folder, which is renamed over the destination once it
// has been written and flushed without error.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_WEIGHTS_ATOMICFILE_H
#define MOE_LIB_WEIGHTS_ATOMICFILE_H

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>

namespace moe {

/// Calls `write` with a stream into a temporary file next to `path`, then
/// renames it to `path`. If `write` fails or the stream reports an error,
/// the temporary file is removed, `path` is left untouched and the error
/// (naming `path`) is returned. With `extendTo` above the bytes written, the
/// file is then extended to that size with zeros, as a hole where the file
/// system supports sparse files (the data of shape-only safetensors files).
///
/// Every tool's output file goes through here, whatever sits at `path`:
/// a symbolic link is followed (its target is replaced, the link stays); an
/// existing device or FIFO is written in place, never replaced by a regular
/// file (a FIFO with no reader is refused, not waited on); a folder, socket
/// or dangling link is refused with a message.
llvm::Error
writeFileAtomically(llvm::StringRef path,
                    llvm::function_ref<llvm::Error(llvm::raw_ostream &)> write,
                    uint64_t extendTo = 0);

/// Writes `contents` to `path` atomically.
llvm::Error writeFileAtomically(llvm::StringRef path, llvm::StringRef contents);

} // namespace moe

#endif // MOE_LIB_WEIGHTS_ATOMICFILE_H
