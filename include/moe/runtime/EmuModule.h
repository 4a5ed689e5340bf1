//===- EmuModule.h - Kernels compiled for the CPU emulation -----*- C++ -*-===//
//
// Part of moe-opt. Compiles generated CUDA C++ kernel source with the host
// compiler against the CPU emulation of CUDA (runtime/emu/moe_emu.h, built
// into this library) and runs its kernels: every block of a grid as
// cooperative fibers with real barrier and warp semantics. No GPU, no CUDA.
//
// The compiler is $MOE_EMU_CXX (words split at spaces; default `c++`) run as
//   <cxx> -std=c++17 -O2 -g0 -shared -fPIC -DMOE_EMU -I<emu headers>
//         -I<request headers> -ffile-prefix-map=<temporary folders>/=
//         $MOE_EMU_CXXFLAGS -o <lib>.so kernel.cpp -lboost_context
// (messages name "kernel.cpp:42" and "include/<header>:7"; extra flags
// such as -O0 -g or -fsanitize=undefined go in $MOE_EMU_CXXFLAGS).
// Libraries are cached in <cacheDir>/emu/<key>.so, the key being the
// SHA-256 of the source, the headers, the emulation headers, the flags and
// the compiler's `--version` (asked once per process and compiler): a hit
// runs no compiler. Beside each library, <key>.record holds its key, size
// and SHA-256: a library is loaded only when they match (a copy of the
// checked bytes is loaded, so the file cannot change in between), and the
// cache folder must pass checkCacheFolder (CacheFolder.h).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_EMUMODULE_H
#define MOE_RUNTIME_EMUMODULE_H

#include "moe/runtime/KernelABI.h"
#include "moe/runtime/Status.h"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace moe::runtime {

struct EmuDim3 {
  unsigned x = 1, y = 1, z = 1;
};

/// Process-wide counts of EmuModule::compile.
struct EmuStats {
  uint64_t compilations = 0; ///< Host compiler runs (successful or not).
  uint64_t cacheHits = 0;    ///< Libraries loaded from the cache.
};

class EmuModule {
public:
  /// Compiles `source` (or loads its cached library). `headers` maps include
  /// names (relative paths such as "moe_route.cuh" or "a/b.h") to their
  /// contents; they are written to a temporary include folder. The
  /// emulation headers (moe_emu.h, ...) and "moe/runtime/KernelABI.h" are
  /// always available. `cacheDir` empty: $MOE_CACHE_DIR, else
  /// $XDG_CACHE_HOME/moe-opt/kernels, else $HOME/.cache/moe-opt/kernels.
  /// A compilation failure's message holds the compiler's output.
  static Expected<std::unique_ptr<EmuModule>>
  compile(const std::string &source,
          const std::map<std::string, std::string> &headers = {},
          const std::string &cacheDir = "");

  ~EmuModule();
  EmuModule(const EmuModule &) = delete;
  EmuModule &operator=(const EmuModule &) = delete;

  /// Runs kernel `kernel` (its entry point moe_emu_launch_<kernel>) over
  /// `grid` blocks of `block` threads with `dynamicSharedBytes` of dynamic
  /// shared memory. Blocks run one after the other in the calling thread.
  /// Errors: unknown kernel, bad launch configuration, deadlocks, ... with
  /// the emulation's message.
  Status launch(const std::string &kernel, const MoEKernelArgs &args,
                EmuDim3 grid, EmuDim3 block,
                unsigned dynamicSharedBytes = 0) const;

  /// The entry point of `kernel`.
  Expected<MoEEmuLaunchFn> entry(const std::string &kernel) const;

  /// The loaded library and its cache key (64 hex digits).
  const std::string &libraryPath() const { return path_; }
  const std::string &key() const { return key_; }
  /// Whether compile() found the library in the cache.
  bool cacheHit() const { return cacheHit_; }
  /// What compile() wants the caller to print: a cache folder that was not
  /// used, an unusable cache entry that was compiled again, a read-only
  /// cache.
  const std::vector<std::string> &warnings() const { return warnings_; }

  static EmuStats stats();
  /// The compiler command line prefix in use ($MOE_EMU_CXX or `c++`).
  static std::string compilerCommand();
  /// The headers built into the library: include name -> contents.
  static const std::map<std::string, std::string> &embeddedHeaders();

private:
  EmuModule() = default;

  void *handle_ = nullptr;
  std::string path_, key_;
  bool cacheHit_ = false;
  std::vector<std::string> warnings_;
  mutable std::mutex mu_;
  mutable std::map<std::string, MoEEmuLaunchFn> entries_;
};

} // namespace moe::runtime

#endif // MOE_RUNTIME_EMUMODULE_H
