//===- CudaApi.h - NVRTC and the CUDA driver, loaded with dlopen -*- C++ -*-===//
//
// Part of moe-opt. The runtime never links libcuda or libnvrtc: a binary
// linked against the driver stub dies before main on a machine without a
// driver. Both libraries are opened with dlopen when first needed and their
// functions are kept in tables of pointers; no CUDA header is needed to
// build. The handle types are the CUDA headers' own opaque structs, so
// values from code that includes cuda.h or nvrtc.h convert freely.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_CUDAAPI_H
#define MOE_RUNTIME_CUDAAPI_H

#include "moe/runtime/Status.h"

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

// The tags of the CUDA headers' handle types (cuda.h, nvrtc.h).
struct CUctx_st;
struct CUmod_st;
struct CUfunc_st;
struct CUstream_st;
struct CUevent_st;
struct _nvrtcProgram;

namespace moe::runtime {

//===----------------------------------------------------------------------===//
// NVRTC
//===----------------------------------------------------------------------===//

using NvrtcResult = int; // nvrtcResult; 0 is NVRTC_SUCCESS.
using NvrtcProgram = _nvrtcProgram *;
constexpr NvrtcResult kNvrtcSuccess = 0;
constexpr NvrtcResult kNvrtcErrorInvalidOption = 5;
constexpr NvrtcResult kNvrtcErrorCompilation = 6;

/// The NVRTC functions the runtime uses. Each member is named after the C
/// function it points to and has its signature.
struct NvrtcApi {
  /// The library as opened: the path or name given to dlopen, and the file
  /// it resolved to.
  std::string library;
  std::string libraryFile;

  NvrtcResult (*nvrtcVersion)(int *major, int *minor) = nullptr;
  const char *(*nvrtcGetErrorString)(NvrtcResult result) = nullptr;
  NvrtcResult (*nvrtcCreateProgram)(NvrtcProgram *prog, const char *src,
                                    const char *name, int numHeaders,
                                    const char *const *headers,
                                    const char *const *includeNames) = nullptr;
  NvrtcResult (*nvrtcDestroyProgram)(NvrtcProgram *prog) = nullptr;
  NvrtcResult (*nvrtcCompileProgram)(NvrtcProgram prog, int numOptions,
                                     const char *const *options) = nullptr;
  NvrtcResult (*nvrtcGetProgramLogSize)(NvrtcProgram prog,
                                        size_t *logSizeRet) = nullptr;
  NvrtcResult (*nvrtcGetProgramLog)(NvrtcProgram prog, char *log) = nullptr;
  NvrtcResult (*nvrtcGetPTXSize)(NvrtcProgram prog,
                                 size_t *ptxSizeRet) = nullptr;
  NvrtcResult (*nvrtcGetPTX)(NvrtcProgram prog, char *ptx) = nullptr;
  NvrtcResult (*nvrtcGetCUBINSize)(NvrtcProgram prog,
                                   size_t *cubinSizeRet) = nullptr;
  NvrtcResult (*nvrtcGetCUBIN)(NvrtcProgram prog, char *cubin) = nullptr;
  NvrtcResult (*nvrtcAddNameExpression)(NvrtcProgram prog,
                                        const char *nameExpression) = nullptr;
  NvrtcResult (*nvrtcGetLoweredName)(NvrtcProgram prog,
                                     const char *nameExpression,
                                     const char **loweredName) = nullptr;
  // Optional (NVRTC 11.2+): null when the library lacks them.
  NvrtcResult (*nvrtcGetNumSupportedArchs)(int *numArchs) = nullptr;
  NvrtcResult (*nvrtcGetSupportedArchs)(int *archs) = nullptr;

  /// Opens NVRTC afresh: the library named by MOE_NVRTC_LIBRARY when set,
  /// else the first of $CUDA_HOME/lib64/libnvrtc.so,
  /// /usr/local/cuda/lib64/libnvrtc.so, libnvrtc.so.13 and libnvrtc.so that
  /// opens. Fails with the paths tried, or the missing symbol.
  static Expected<std::shared_ptr<const NvrtcApi>> load();

  /// "NVRTC_ERROR_COMPILATION (6)".
  std::string errorString(NvrtcResult result) const;
  /// NVRTC's version as {major, minor}; {0, 0} if it cannot say.
  std::pair<int, int> version() const;
  /// The architectures NVRTC can compile for (75, 80, 90, ...); empty when
  /// the library cannot list them.
  std::vector<int> supportedArchs() const;
};

/// The process's NVRTC, opened on first use and kept; opened again when
/// MOE_NVRTC_LIBRARY or CUDA_HOME changed since. A failure is not kept.
Expected<std::shared_ptr<const NvrtcApi>> nvrtcApi();

//===----------------------------------------------------------------------===//
// CUDA driver
//===----------------------------------------------------------------------===//

using CuResult = int; // CUresult; 0 is CUDA_SUCCESS.
using CuDevice = int;
using CuDevicePtr = unsigned long long;
using CuContext = CUctx_st *;
using CuModule = CUmod_st *;
using CuFunction = CUfunc_st *;
using CuStream = CUstream_st *;
using CuEvent = CUevent_st *;

constexpr CuResult kCudaSuccess = 0;
constexpr CuResult kCudaErrorNotInitialized = 3;
constexpr CuResult kCudaErrorStubLibrary = 34;
constexpr CuResult kCudaErrorInsufficientDriver = 35;
constexpr CuResult kCudaErrorNoDevice = 100;

// CUdevice_attribute values used by the runtime.
constexpr int kCuDeviceAttrMultiprocessorCount = 16;
constexpr int kCuDeviceAttrComputeCapabilityMajor = 75;
constexpr int kCuDeviceAttrComputeCapabilityMinor = 76;
constexpr int kCuDeviceAttrMaxSharedMemoryPerBlockOptin = 97;
// CUfunction_attribute.
constexpr int kCuFuncAttrMaxDynamicSharedSizeBytes = 8;

/// The driver functions the runtime uses. Members are named after the
/// functions of cuda.h (the versioned symbol is loaded where cuda.h maps the
/// name to one, for example cuDevicePrimaryCtxRelease_v2).
struct DriverApi {
  std::string library;
  std::string libraryFile;

  CuResult (*cuInit)(unsigned flags) = nullptr;
  CuResult (*cuGetErrorString)(CuResult error, const char **str) = nullptr;
  CuResult (*cuGetErrorName)(CuResult error, const char **str) = nullptr;
  CuResult (*cuDriverGetVersion)(int *version) = nullptr;
  CuResult (*cuDeviceGetCount)(int *count) = nullptr;
  CuResult (*cuDeviceGet)(CuDevice *device, int ordinal) = nullptr;
  CuResult (*cuDeviceGetName)(char *name, int len, CuDevice dev) = nullptr;
  CuResult (*cuDeviceGetAttribute)(int *value, int attribute,
                                   CuDevice dev) = nullptr;
  CuResult (*cuDevicePrimaryCtxRetain)(CuContext *ctx, CuDevice dev) = nullptr;
  CuResult (*cuDevicePrimaryCtxRelease)(CuDevice dev) = nullptr;
  CuResult (*cuCtxSetCurrent)(CuContext ctx) = nullptr;
  CuResult (*cuCtxSynchronize)() = nullptr;
  CuResult (*cuModuleLoadData)(CuModule *module, const void *image) = nullptr;
  CuResult (*cuModuleUnload)(CuModule module) = nullptr;
  CuResult (*cuModuleGetFunction)(CuFunction *fn, CuModule module,
                                  const char *name) = nullptr;
  CuResult (*cuLaunchKernel)(CuFunction f, unsigned gridX, unsigned gridY,
                             unsigned gridZ, unsigned blockX, unsigned blockY,
                             unsigned blockZ, unsigned sharedMemBytes,
                             CuStream stream, void **kernelParams,
                             void **extra) = nullptr;
  CuResult (*cuFuncSetAttribute)(CuFunction fn, int attribute,
                                 int value) = nullptr;
  CuResult (*cuMemAlloc)(CuDevicePtr *ptr, size_t bytes) = nullptr;
  CuResult (*cuMemFree)(CuDevicePtr ptr) = nullptr;
  CuResult (*cuMemcpyHtoD)(CuDevicePtr dst, const void *src,
                           size_t bytes) = nullptr;
  CuResult (*cuMemcpyDtoH)(void *dst, CuDevicePtr src, size_t bytes) = nullptr;
  CuResult (*cuMemsetD8)(CuDevicePtr dst, unsigned char value,
                         size_t count) = nullptr;
  CuResult (*cuStreamCreate)(CuStream *stream, unsigned flags) = nullptr;
  CuResult (*cuStreamDestroy)(CuStream stream) = nullptr;
  CuResult (*cuStreamSynchronize)(CuStream stream) = nullptr;
  CuResult (*cuEventCreate)(CuEvent *event, unsigned flags) = nullptr;
  CuResult (*cuEventRecord)(CuEvent event, CuStream stream) = nullptr;
  CuResult (*cuEventSynchronize)(CuEvent event) = nullptr;
  CuResult (*cuEventElapsedTime)(float *ms, CuEvent start,
                                 CuEvent end) = nullptr;
  CuResult (*cuEventDestroy)(CuEvent event) = nullptr;
  // Optional (CUDA 12.0+ drivers): null when the library lacks it; the
  // tensor-map encoder (TensorMap.h) then says so.
  CuResult (*cuTensorMapEncodeTiled)(
      void *tensorMap, int dataType, unsigned rank, void *globalAddress,
      const unsigned long long *globalDim,
      const unsigned long long *globalStrides, const unsigned *boxDim,
      const unsigned *elementStrides, int interleave, int swizzle,
      int l2Promotion, int oobFill) = nullptr;

  /// Opens the driver afresh: MOE_CUDA_DRIVER_LIBRARY when set, else
  /// libcuda.so.1. Loading calls no driver function; see init().
  static Expected<std::shared_ptr<const DriverApi>> load();

  /// Calls cuInit(0) and turns the usual failures into plain words (stub
  /// library: no driver installed; no device; driver too old).
  Status init() const;

  /// "CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is detected".
  std::string errorString(CuResult result) const;
  /// Success, or a failure "<function> failed: <errorString>".
  Status check(CuResult result, const char *function) const;
};

/// The process's driver, opened on first use and kept; opened again when
/// MOE_CUDA_DRIVER_LIBRARY changed since. A failure is not kept.
Expected<std::shared_ptr<const DriverApi>> driverApi();

} // namespace moe::runtime

#endif // MOE_RUNTIME_CUDAAPI_H
