//===- AtomicDirectory.h - Files and the atomic commit of a dir -*- C++ -*-===//
//
// Part of moe-opt. How writePackage makes a package directory appear whole
// or not at all: files are written and fsynced into a temporary sibling
// directory, which is then renamed into place (renameat2 RENAME_NOREPLACE,
// or RENAME_EXCHANGE with the old package when replacing; plain renames
// where the kernel has no renameat2). Also the plain file reads of the
// loader. Used by runtime/package; not an API of its own.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_ATOMICDIRECTORY_H
#define MOE_RUNTIME_ATOMICDIRECTORY_H

#include "moe/runtime/Status.h"

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace moe::runtime::detail {

std::string errnoText(int error);

/// "dir/name".
std::string joinPath(const std::string &dir, const std::string &name);

/// Writes a new file from pieces and fsyncs it.
Status writeFile(const std::string &path,
                 const std::vector<std::pair<const void *, size_t>> &pieces);
Status writeFile(const std::string &path, const std::string &text);
/// Writes a new file from the pieces `produce` hands to its writer, as they
/// come, and fsyncs it; a failure of `produce` or of a write is returned.
using PieceWriter = std::function<Status(const void *data, size_t size)>;
Status writeFileStreamed(const std::string &path,
                         const std::function<Status(const PieceWriter &)> &produce);

/// fsyncs a directory (its entries).
Status syncDirectory(const std::string &dir);

/// Removes a file or directory tree; errors are ignored.
void removeTree(const std::string &path);

/// Whether `dir` (which exists) may be replaced: an empty directory, one
/// holding a manifest.json, or a set of rank packages (placement.json and
/// rank0/manifest.json); not a symbolic link.
Status checkReplaceable(const std::string &dir);

/// Removes `<base>.tmp-XXXXXX` and `<base>.old-XXXXXX` directories in
/// `parent` that are over a day old (left by writers that died).
void removeStaleSiblings(const std::string &parent, const std::string &base);

/// Moves the finished temporary directory to `dir`.
Status commit(const std::string &temp, const std::string &dir, bool replace);

/// The first `size` bytes of a file.
Expected<std::string> readWholeFile(const std::string &path, size_t size);

} // namespace moe::runtime::detail

#endif // MOE_RUNTIME_ATOMICDIRECTORY_H
