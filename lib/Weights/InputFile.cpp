//===- InputFile.cpp - Reading untrusted input files ----------------------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Weights/InputFile.h"

#include <cerrno>
#include <cstring>
#include <sys/stat.h>

using namespace llvm;

namespace moe {

namespace {
const char *fileKind(mode_t mode) {
  if (S_ISDIR(mode))
    return "a folder";
  if (S_ISFIFO(mode))
    return "a FIFO";
  if (S_ISCHR(mode))
    return "a character device";
  if (S_ISBLK(mode))
    return "a block device";
  if (S_ISSOCK(mode))
    return "a socket";
  return "not a regular file";
}
} // namespace

Error checkRegularFile(StringRef path, StringRef what) {
  struct stat st;
  if (::stat(path.str().c_str(), &st) != 0 || S_ISREG(st.st_mode))
    return Error::success();
  return createStringError(path + ": the " + what + " is " +
                           fileKind(st.st_mode) +
                           "; expected a regular file");
}

Expected<json::Value> parseBoundedJson(StringRef text) {
  unsigned depth = 0;
  bool inString = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (inString) {
      if (c == '\\')
        ++i; // The escaped character cannot end the string.
      else if (c == '"')
        inString = false;
      continue;
    }
    if (c == '"') {
      inString = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        return createStringError("arrays and objects nest more than " +
                                 Twine(kMaxJsonDepth) + " deep (at byte " +
                                 Twine(i) + "); refusing to parse");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return json::parse(text);
}

Error checkIRNesting(StringRef text, StringRef name) {
  unsigned depth = 0, line = 1;
  size_t lineStart = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\n') {
      ++line;
      lineStart = i + 1;
    } else if (c == '"') {
      // A string: brackets inside do not count.
      for (++i; i < text.size() && text[i] != '"' && text[i] != '\n'; ++i)
        if (text[i] == '\\')
          ++i;
    } else if (c == '/' && i + 1 < text.size() && text[i + 1] == '/') {
      while (i + 1 < text.size() && text[i + 1] != '\n')
        ++i;
    } else if (c == '(' || c == '[' || c == '{' || c == '<') {
      if (++depth > kMaxIRDepth)
        return createStringError(name + ":" + Twine(line) + ":" +
                                 Twine(i - lineStart + 1) +
                                 ": brackets nest more than " +
                                 Twine(kMaxIRDepth) +
                                 " deep; refusing to parse (the IR parser "
                                 "recurses once per level)");
    } else if ((c == ')' || c == ']' || c == '}' ||
                (c == '>' && (i == 0 || text[i - 1] != '-'))) &&
               depth > 0) {
      --depth;
    }
  }
  return Error::success();
}

Expected<std::unique_ptr<MemoryBuffer>> readIRFile(StringRef path) {
  if (path != "-")
    if (Error e = checkRegularFile(path, "IR file"))
      return std::move(e);
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getFileOrSTDIN(path, /*IsText=*/true);
  if (!buffer)
    return createStringError(path + ": cannot read the IR file: " +
                             buffer.getError().message());
  if (Error e = checkIRNesting((*buffer)->getBuffer(), path))
    return std::move(e);
  return std::move(*buffer);
}

} // namespace moe
