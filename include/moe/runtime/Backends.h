//===- Backends.h - The CUDA and CPU-emulation kernel backends --*- C++ -*-===//
//
// Part of moe-opt. KernelBackend implementations: the GPU through the CUDA
// driver (kernels compiled by NVRTC, through the disk cache), and the CPU
// emulation of the same kernels (compiled by the host compiler).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_BACKENDS_H
#define MOE_RUNTIME_BACKENDS_H

#include "moe/runtime/Executor.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moe {

struct BackendReport {
  std::string description;          ///< Device or compiler used.
  bool fromCache = false;
  bool precompiled = false;          ///< A package's cubin was loaded.
  double compileSeconds = 0;
  std::vector<std::string> warnings; ///< For example a corrupted cache entry.
  std::string log;                   ///< Compiler log (ptxas report).
};

/// Opens device `ordinal` and loads the cubin of its architecture from
/// `cubins` (arch -> image) when there is one (no NVRTC); otherwise compiles
/// `source` for it (through the kernel cache in `cacheDir`, or the default
/// cache directory when empty) and says so in the report.
runtime::Expected<std::unique_ptr<KernelBackend>>
openCudaBackend(const std::string &source, int ordinal, BackendReport *report,
                const std::map<std::string, std::string> *cubins = nullptr,
                const std::string &cacheDir = "");

/// Compiles `source` for the CPU emulation (cached under `cacheDir`, or the
/// default cache directory when empty).
runtime::Expected<std::unique_ptr<KernelBackend>>
openEmuBackend(const std::string &source, const std::string &cacheDir,
               BackendReport *report);

} // namespace moe

#endif // MOE_RUNTIME_BACKENDS_H
