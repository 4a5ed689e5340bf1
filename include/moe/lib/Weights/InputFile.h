//===- InputFile.h - Reading untrusted input files --------------*- C++ -*-===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//
//
// Every file the importer and the weight readers take from a user goes
// through here: only regular files are read (a FIFO would block forever, a
// device such as /dev/zero would never end), and JSON is parsed only when
// its nesting stays within a bound (llvm::json::parse recurses once per
// level, so 100,000 nested brackets would overflow the stack).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_WEIGHTS_INPUTFILE_H
#define MOE_LIB_WEIGHTS_INPUTFILE_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>

namespace moe {

/// The deepest nesting of arrays and objects accepted in a JSON input.
/// Real configs, safetensors headers and PEFT files nest fewer than 10
/// levels.
constexpr unsigned kMaxJsonDepth = 256;

/// Fails when `path` exists and is not a regular file (after following
/// symbolic links), with a message naming the path, its kind and `what`
/// (the file's role, e.g. "config file"). A missing file passes: the
/// caller's open reports it as before. Call it before reading any input.
llvm::Error checkRegularFile(llvm::StringRef path, llvm::StringRef what);

/// Parses JSON `text` after checking that arrays and objects nest at most
/// kMaxJsonDepth deep (brackets inside strings do not count). The error
/// says what is wrong, without the file name: the caller adds it.
llvm::Expected<llvm::json::Value> parseBoundedJson(llvm::StringRef text);

/// The deepest bracket nesting accepted in an IR file. MLIR's parser
/// recurses once per level (about 1.3 KB of stack each): 1,000 levels stay
/// far inside a default 8 MB stack, and real moe IR nests fewer than 20.
constexpr unsigned kMaxIRDepth = 1000;

/// Fails when the brackets of MLIR text `text` ((), [], {}, <>, outside
/// strings and comments) nest deeper than kMaxIRDepth, with a message
/// naming `name`, the line and the column. Call it before parsing IR.
llvm::Error checkIRNesting(llvm::StringRef text, llvm::StringRef name);

/// Reads IR file `path` ("-" for standard input) and checks it with
/// checkRegularFile and checkIRNesting.
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
readIRFile(llvm::StringRef path);

} // namespace moe

#endif // MOE_LIB_WEIGHTS_INPUTFILE_H
