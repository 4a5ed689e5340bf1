//===- EmuModule.h - Internals of the CPU emulation library -----*- C++ -*-===//
//
// Part of moe-opt. The public API is include/moe/runtime/EmuModule.h; this
// header declares what the build generates for it: the emulation headers
// (runtime/emu/moe_emu*.h and moe/runtime/KernelABI.h) as string literals,
// read by CMake (EmbedHeaders.cmake), so that a tool finds them wherever it
// runs from.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_EMU_EMUMODULE_INTERNAL_H
#define MOE_RUNTIME_EMU_EMUMODULE_INTERNAL_H

#include "moe/runtime/EmuModule.h"

#include <cstddef>

namespace moe::runtime::emu_detail {

struct EmbeddedHeader {
  const char *name;     ///< Include name, e.g. "moe_emu.h".
  const char *contents; ///< The file's bytes.
  size_t size;
};

/// The embedded headers; `count` receives their number.
const EmbeddedHeader *embeddedHeaderTable(size_t &count);

} // namespace moe::runtime::emu_detail

#endif // MOE_RUNTIME_EMU_EMUMODULE_INTERNAL_H
