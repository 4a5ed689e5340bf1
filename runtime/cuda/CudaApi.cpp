//===- CudaApi.cpp - NVRTC and the CUDA driver, loaded with dlopen --------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/CudaApi.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace moe::runtime {
namespace {

std::string getEnv(const char *name) {
  const char *value = std::getenv(name);
  return value ? std::string(value) : std::string();
}

/// The file a loaded library came from, found through one of its symbols.
std::string fileOfSymbol(void *symbol) {
  Dl_info info;
  if (symbol && dladdr(symbol, &info) && info.dli_fname)
    return info.dli_fname;
  return {};
}

/// One library to try: what to pass to dlopen and where that came from.
struct Candidate {
  std::string path;
  std::string origin;
};

struct Opened {
  void *handle;
  std::string path; // As given to dlopen.
};

/// dlopens the first candidate that opens; else fails with every candidate,
/// its origin and dlerror's reason, and how to point at the library.
Expected<Opened> openFirst(const char *what,
                           const std::vector<Candidate> &candidates,
                           const char *envVar) {
  std::string tried;
  for (const Candidate &c : candidates) {
    dlerror();
    if (void *handle = dlopen(c.path.c_str(), RTLD_NOW | RTLD_LOCAL))
      return Opened{handle, c.path};
    const char *reason = dlerror();
    tried += "\n  " + c.path + " (" + c.origin +
             "): " + (reason ? reason : "cannot be opened");
  }
  return Status::error(std::string("cannot load ") + what +
                       "; tried:" + tried + "\nset " + envVar +
                       " to the full path of the library");
}

/// Resolves `symbols` in order (the first that exists wins) into `slot`.
template <typename Fn>
Status resolve(void *handle, const std::string &library, Fn &slot,
               std::initializer_list<const char *> symbols,
               bool optional = false) {
  for (const char *name : symbols) {
    dlerror();
    if (void *sym = dlsym(handle, name)) {
      slot = reinterpret_cast<Fn>(sym);
      return Status::success();
    }
  }
  if (optional)
    return Status::success();
  return Status::error("symbol '" + std::string(*symbols.begin()) +
                       "' is missing from " + library +
                       " (is it a library of another version or kind?)");
}

} // namespace

//===----------------------------------------------------------------------===//
// NVRTC
//===----------------------------------------------------------------------===//

Expected<std::shared_ptr<const NvrtcApi>> NvrtcApi::load() {
  std::vector<Candidate> candidates;
  std::string fromEnv = getEnv("MOE_NVRTC_LIBRARY");
  if (!fromEnv.empty()) {
    // An explicit choice is the only one tried: a silent fallback would
    // hide a typo.
    candidates.push_back({fromEnv, "from MOE_NVRTC_LIBRARY"});
  } else {
    std::string cudaHome = getEnv("CUDA_HOME");
    if (!cudaHome.empty())
      candidates.push_back(
          {cudaHome + "/lib64/libnvrtc.so", "from CUDA_HOME"});
    candidates.push_back({"/usr/local/cuda/lib64/libnvrtc.so", "default"});
    candidates.push_back({"libnvrtc.so.13", "system search path"});
    candidates.push_back({"libnvrtc.so", "system search path"});
  }
  Expected<Opened> opened =
      openFirst("NVRTC (libnvrtc)", candidates, "MOE_NVRTC_LIBRARY");
  if (!opened)
    return opened.status();

  auto api = std::make_shared<NvrtcApi>();
  void *h = opened->handle;
  api->library = opened->path;
  Status s = resolve(h, api->library, api->nvrtcVersion, {"nvrtcVersion"});
  api->libraryFile = fileOfSymbol(reinterpret_cast<void *>(api->nvrtcVersion));
  std::string lib = api->libraryFile.empty() ? api->library : api->libraryFile;
  auto needIn = [&](auto &slot, const char *name) {
    if (s.ok())
      s = resolve(h, lib, slot, {name});
  };
  needIn(api->nvrtcGetErrorString, "nvrtcGetErrorString");
  needIn(api->nvrtcCreateProgram, "nvrtcCreateProgram");
  needIn(api->nvrtcDestroyProgram, "nvrtcDestroyProgram");
  needIn(api->nvrtcCompileProgram, "nvrtcCompileProgram");
  needIn(api->nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize");
  needIn(api->nvrtcGetProgramLog, "nvrtcGetProgramLog");
  needIn(api->nvrtcGetPTXSize, "nvrtcGetPTXSize");
  needIn(api->nvrtcGetPTX, "nvrtcGetPTX");
  needIn(api->nvrtcGetCUBINSize, "nvrtcGetCUBINSize");
  needIn(api->nvrtcGetCUBIN, "nvrtcGetCUBIN");
  needIn(api->nvrtcAddNameExpression, "nvrtcAddNameExpression");
  needIn(api->nvrtcGetLoweredName, "nvrtcGetLoweredName");
  if (s.ok()) {
    (void)resolve(h, lib, api->nvrtcGetNumSupportedArchs,
                  {"nvrtcGetNumSupportedArchs"}, /*optional=*/true);
    (void)resolve(h, lib, api->nvrtcGetSupportedArchs,
                  {"nvrtcGetSupportedArchs"}, /*optional=*/true);
  }
  if (!s.ok()) {
    // The handle is not closed: unloading a half-used CUDA library is not
    // worth the risk, and this is a one-off failure.
    return s.withContext("cannot use NVRTC");
  }
  return std::shared_ptr<const NvrtcApi>(std::move(api));
}

std::string NvrtcApi::errorString(NvrtcResult result) const {
  const char *text = nvrtcGetErrorString ? nvrtcGetErrorString(result) : nullptr;
  return std::string(text ? text : "NVRTC error") + " (" +
         std::to_string(result) + ")";
}

std::pair<int, int> NvrtcApi::version() const {
  int major = 0, minor = 0;
  if (!nvrtcVersion || nvrtcVersion(&major, &minor) != kNvrtcSuccess)
    return {0, 0};
  return {major, minor};
}

std::vector<int> NvrtcApi::supportedArchs() const {
  int count = 0;
  if (!nvrtcGetNumSupportedArchs || !nvrtcGetSupportedArchs ||
      nvrtcGetNumSupportedArchs(&count) != kNvrtcSuccess || count <= 0)
    return {};
  std::vector<int> archs(static_cast<size_t>(count));
  if (nvrtcGetSupportedArchs(archs.data()) != kNvrtcSuccess)
    return {};
  return archs;
}

namespace {
/// A process-wide library table, reopened when the environment that chose
/// it changed.
template <typename Api> struct CachedApi {
  std::mutex mutex;
  std::string config;
  std::shared_ptr<const Api> api;

  Expected<std::shared_ptr<const Api>> get(const std::string &currentConfig) {
    std::lock_guard<std::mutex> lock(mutex);
    if (api && config == currentConfig)
      return api;
    Expected<std::shared_ptr<const Api>> loaded = Api::load();
    if (!loaded)
      return loaded.status();
    api = *loaded;
    config = currentConfig;
    return api;
  }
};
} // namespace

Expected<std::shared_ptr<const NvrtcApi>> nvrtcApi() {
  static CachedApi<NvrtcApi> cache;
  return cache.get(getEnv("MOE_NVRTC_LIBRARY") + '\n' + getEnv("CUDA_HOME"));
}

//===----------------------------------------------------------------------===//
// CUDA driver
//===----------------------------------------------------------------------===//

Expected<std::shared_ptr<const DriverApi>> DriverApi::load() {
  std::vector<Candidate> candidates;
  std::string fromEnv = getEnv("MOE_CUDA_DRIVER_LIBRARY");
  if (!fromEnv.empty())
    candidates.push_back({fromEnv, "from MOE_CUDA_DRIVER_LIBRARY"});
  else
    candidates.push_back(
        {"libcuda.so.1", "system search path; installed with the NVIDIA "
                         "driver, absent on a machine without one"});
  Expected<Opened> opened = openFirst("the CUDA driver (libcuda)", candidates,
                                      "MOE_CUDA_DRIVER_LIBRARY");
  if (!opened)
    return opened.status();

  auto api = std::make_shared<DriverApi>();
  void *h = opened->handle;
  api->library = opened->path;
  Status s = resolve(h, api->library, api->cuInit, {"cuInit"});
  api->libraryFile = fileOfSymbol(reinterpret_cast<void *>(api->cuInit));
  std::string lib = api->libraryFile.empty() ? api->library : api->libraryFile;
  auto need = [&](auto &slot, std::initializer_list<const char *> names) {
    if (s.ok())
      s = resolve(h, lib, slot, names);
  };
  need(api->cuGetErrorString, {"cuGetErrorString"});
  need(api->cuDriverGetVersion, {"cuDriverGetVersion"});
  need(api->cuDeviceGetCount, {"cuDeviceGetCount"});
  need(api->cuDeviceGet, {"cuDeviceGet"});
  need(api->cuDeviceGetName, {"cuDeviceGetName"});
  need(api->cuDeviceGetAttribute, {"cuDeviceGetAttribute"});
  need(api->cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"});
  need(api->cuDevicePrimaryCtxRelease,
       {"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"});
  need(api->cuCtxSetCurrent, {"cuCtxSetCurrent"});
  need(api->cuCtxSynchronize, {"cuCtxSynchronize"});
  need(api->cuModuleLoadData, {"cuModuleLoadData"});
  need(api->cuModuleUnload, {"cuModuleUnload"});
  need(api->cuModuleGetFunction, {"cuModuleGetFunction"});
  need(api->cuLaunchKernel, {"cuLaunchKernel"});
  need(api->cuFuncSetAttribute, {"cuFuncSetAttribute"});
  need(api->cuMemAlloc, {"cuMemAlloc_v2"});
  need(api->cuMemFree, {"cuMemFree_v2"});
  need(api->cuMemcpyHtoD, {"cuMemcpyHtoD_v2"});
  need(api->cuMemcpyDtoH, {"cuMemcpyDtoH_v2"});
  need(api->cuMemsetD8, {"cuMemsetD8_v2"});
  need(api->cuStreamCreate, {"cuStreamCreate"});
  need(api->cuStreamDestroy, {"cuStreamDestroy_v2"});
  need(api->cuStreamSynchronize, {"cuStreamSynchronize"});
  need(api->cuEventCreate, {"cuEventCreate"});
  need(api->cuEventRecord, {"cuEventRecord"});
  need(api->cuEventSynchronize, {"cuEventSynchronize"});
  need(api->cuEventElapsedTime,
       {"cuEventElapsedTime_v2", "cuEventElapsedTime"});
  need(api->cuEventDestroy, {"cuEventDestroy_v2"});
  if (s.ok()) {
    (void)resolve(h, lib, api->cuGetErrorName, {"cuGetErrorName"},
                  /*optional=*/true);
    (void)resolve(h, lib, api->cuTensorMapEncodeTiled,
                  {"cuTensorMapEncodeTiled"}, /*optional=*/true);
  }
  if (!s.ok())
    return s.withContext("cannot use the CUDA driver");
  return std::shared_ptr<const DriverApi>(std::move(api));
}

namespace {
/// Names and words for the results the runtime meets most; used when the
/// driver cannot describe a result itself (the stub library cannot).
const char *knownResultName(CuResult r) {
  switch (r) {
  case 0: return "CUDA_SUCCESS";
  case 1: return "CUDA_ERROR_INVALID_VALUE";
  case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
  case 3: return "CUDA_ERROR_NOT_INITIALIZED";
  case 4: return "CUDA_ERROR_DEINITIALIZED";
  case 34: return "CUDA_ERROR_STUB_LIBRARY";
  case 35: return "CUDA_ERROR_INSUFFICIENT_DRIVER";
  case 100: return "CUDA_ERROR_NO_DEVICE";
  case 101: return "CUDA_ERROR_INVALID_DEVICE";
  case 200: return "CUDA_ERROR_INVALID_IMAGE";
  case 201: return "CUDA_ERROR_INVALID_CONTEXT";
  case 209: return "CUDA_ERROR_NO_BINARY_FOR_GPU";
  case 218: return "CUDA_ERROR_INVALID_PTX";
  case 222: return "CUDA_ERROR_UNSUPPORTED_PTX_VERSION";
  case 400: return "CUDA_ERROR_INVALID_HANDLE";
  case 500: return "CUDA_ERROR_NOT_FOUND";
  case 700: return "CUDA_ERROR_ILLEGAL_ADDRESS";
  case 701: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
  case 702: return "CUDA_ERROR_LAUNCH_TIMEOUT";
  case 719: return "CUDA_ERROR_LAUNCH_FAILED";
  case 999: return "CUDA_ERROR_UNKNOWN";
  default: return nullptr;
  }
}
} // namespace

std::string DriverApi::errorString(CuResult result) const {
  const char *name = nullptr;
  const char *text = nullptr;
  if (cuGetErrorName && cuGetErrorName(result, &name) != kCudaSuccess)
    name = nullptr;
  if (cuGetErrorString && cuGetErrorString(result, &text) != kCudaSuccess)
    text = nullptr;
  if (!name)
    name = knownResultName(result);
  std::string out = name ? name : "CUDA error";
  out += " (" + std::to_string(result) + ")";
  if (text)
    out += std::string(": ") + text;
  return out;
}

Status DriverApi::check(CuResult result, const char *function) const {
  if (result == kCudaSuccess)
    return Status::success();
  return Status::error(std::string(function) +
                       " failed: " + errorString(result));
}

Status DriverApi::init() const {
  CuResult r = cuInit(0);
  if (r == kCudaSuccess)
    return Status::success();
  std::string why;
  switch (r) {
  case kCudaErrorStubLibrary:
    why = "the CUDA driver stub was loaded (" +
          (libraryFile.empty() ? library : libraryFile) +
          "): no driver installed; run on a machine with the NVIDIA driver, "
          "or point MOE_CUDA_DRIVER_LIBRARY at the real libcuda.so.1";
    break;
  case kCudaErrorNoDevice:
    why = "the driver found no CUDA device (check CUDA_VISIBLE_DEVICES and "
          "nvidia-smi)";
    break;
  case kCudaErrorInsufficientDriver:
    why = "the installed driver is older than this CUDA library expects";
    break;
  default:
    why = "the driver could not be initialised";
    break;
  }
  return Status::error("cuInit failed: " + errorString(r) + ": " + why);
}

Expected<std::shared_ptr<const DriverApi>> driverApi() {
  static CachedApi<DriverApi> cache;
  return cache.get(getEnv("MOE_CUDA_DRIVER_LIBRARY"));
}

} // namespace moe::runtime
