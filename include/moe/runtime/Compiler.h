//===- Compiler.h - CUDA C++ to cubin with NVRTC ----------------*- C++ -*-===//
//
// Part of moe-opt. Compiles generated kernel source with NVRTC (no GPU
// needed) and reads the registers, spills and shared memory of every kernel
// from ptxas's report in the program log.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_COMPILER_H
#define MOE_RUNTIME_COMPILER_H

#include "moe/runtime/Status.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moe::runtime {

struct NvrtcApi;

/// What ptxas reported for one function (`--ptxas-options=-v`).
struct KernelResources {
  /// The symbol: mangled unless the kernel is extern "C".
  std::string name;
  /// Whether it is a kernel ("Compiling entry function") rather than a
  /// device function that was not inlined.
  bool isEntry = false;
  std::string arch;
  int registers = 0;
  int barriers = 0;
  int64_t stackFrameBytes = 0;
  int64_t spillStoresBytes = 0;
  int64_t spillLoadsBytes = 0;
  /// Static shared memory (dynamic shared memory is chosen at launch).
  int64_t sharedBytes = 0;
  int64_t constantBytes = 0; // cmem[0]: parameters and constants.
  int64_t localBytes = 0;
};

/// The result of a compilation (or of a cache hit).
struct CompiledModule {
  /// The ELF image for cuModuleLoadData; empty for a `compute_XX` target.
  std::string cubin;
  std::string ptx;
  /// NVRTC's program log: warnings and ptxas's report.
  std::string log;
  std::vector<KernelResources> resources;
  /// Name expression (CompileRequest::nameExpressions) -> lowered symbol.
  std::map<std::string, std::string> loweredNames;
  std::string arch;
  bool fromCache = false;
  /// The time NVRTC took, or the time to read the cache entry.
  double compileSeconds = 0;
  /// Problems the caller should print but that did not fail the request,
  /// for example a corrupted cache entry that was compiled again.
  std::vector<std::string> warnings;

  /// The resources of `name` (a symbol, or a name expression), or null.
  const KernelResources *findResources(const std::string &name) const;
};

/// All inputs of a compilation. Everything here is part of a cache key.
struct CompileRequest {
  std::string source;
  /// The name NVRTC gives the source in messages ("moe_kernels.cu(12): ...").
  std::string sourceName = "moe_kernels.cu";
  /// Headers the source can #include, by include name (besides
  /// kKernelAbiIncludeName, which is always there).
  std::map<std::string, std::string> headers;
  /// sm_XX, sm_XXa, sm_XXf or compute_XX (PTX only).
  std::string arch = "sm_90a";
  /// Options after the runtime's own (for example "-DTILE=128", "-G").
  std::vector<std::string> extraOptions;
  /// Template instantiations whose symbol names are wanted, for example
  /// "moe::gemm<128, 64>"; the names are in CompiledModule::loweredNames.
  std::vector<std::string> nameExpressions;
};

/// Compiles with the process's NVRTC (nvrtcApi()). A compile error fails
/// with NVRTC's log (file, line and message) in the message.
Expected<CompiledModule> compileKernels(const CompileRequest &request);
Expected<CompiledModule>
compileKernels(const std::string &source,
               const std::map<std::string, std::string> &headers,
               const std::string &arch,
               const std::vector<std::string> &extraOptions = {});
/// The same with a given NVRTC table.
Expected<CompiledModule> compileKernels(const NvrtcApi &nvrtc,
                                        const CompileRequest &request);

/// The full NVRTC option list of a request: --gpu-architecture=<arch>,
/// -std=c++17, --include-path=<CUDA include dir> (when one is found),
/// --ptxas-options=-v (for a sm_ target), -lineinfo, then extraOptions.
std::vector<std::string> nvrtcOptions(const CompileRequest &request);

/// The CUDA include directory (it holds cuda_bf16.h): $CUDA_HOME/include,
/// $CUDA_PATH/include, <NVRTC library dir>/../include, then
/// /usr/local/cuda/include. Fails with the places tried.
Expected<std::string> findCudaIncludeDir();

/// Checks the form of an architecture ("sm_90a", "compute_80", ...) and,
/// when `nvrtc` can list them, that NVRTC supports it.
Status validateArch(const std::string &arch, const NvrtcApi *nvrtc = nullptr);

/// Parses ptxas's `-v` report from an NVRTC program log.
std::vector<KernelResources> parsePtxasReport(const std::string &log);

/// The include name under which every compilation can include the kernel
/// ABI (MoEKernelArgs), and that header's text, built into the library.
/// A request's own header of that name takes precedence.
constexpr const char *kKernelAbiIncludeName = "moe/runtime/KernelABI.h";
const char *kernelAbiHeaderText();

/// How many times this process called nvrtcCompileProgram. A cache hit must
/// not change it.
uint64_t nvrtcCompileCount();

} // namespace moe::runtime

#endif // MOE_RUNTIME_COMPILER_H
