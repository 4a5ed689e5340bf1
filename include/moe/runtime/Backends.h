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

#include <memory>
#include <string>
#include <vector>

namespace moe {

struct BackendReport {
  std::string description;          ///< Device or compiler used.
  bool fromCache = false;
  double compileSeconds = 0;
  std::vector<std::string> warnings; ///< For example a corrupted cache entry.
  std::string log;                   ///< Compiler log (ptxas report).
};

/// Opens device `ordinal` and compiles `source` for its architecture.
runtime::Expected<std::unique_ptr<KernelBackend>>
openCudaBackend(const std::string &source, int ordinal, BackendReport *report);

/// Compiles `source` for the CPU emulation (cached under `cacheDir`, or the
/// default cache directory when empty).
runtime::Expected<std::unique_ptr<KernelBackend>>
openEmuBackend(const std::string &source, const std::string &cacheDir,
               BackendReport *report);

} // namespace moe

#endif // MOE_RUNTIME_BACKENDS_H
