//===- CudaBackend.cpp - Kernels on the GPU through the CUDA driver -------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Backends.h"
#include "moe/runtime/Compiler.h"
#include "moe/runtime/Device.h"
#include "moe/runtime/KernelCache.h"
#include "moe/runtime/KernelHeaders.h"
#include "moe/runtime/TensorMap.h"

#include <map>

namespace moe {

using runtime::Status;

namespace {
class CudaBackend : public KernelBackend {
public:
  CudaBackend(runtime::Device device, runtime::Module module)
      : device(std::move(device)), module(std::move(module)) {}

  std::string name() const override { return "cuda"; }

  runtime::Expected<void *> allocate(size_t bytes) override {
    runtime::Expected<runtime::DeviceBuffer> buffer = device.allocate(bytes);
    if (!buffer)
      return buffer.takeError();
    void *ptr = buffer.value().pointer();
    buffers.emplace(ptr, std::move(buffer.value()));
    return ptr;
  }
  void release(void *ptr) override { buffers.erase(ptr); }
  Status upload(void *dst, const void *src, size_t bytes) override {
    return buffers.at(dst).copyFromHost(src, bytes);
  }
  Status download(void *dst, const void *src, size_t bytes) override {
    return buffers.at(const_cast<void *>(src)).copyToHost(dst, bytes);
  }
  Status zero(void *dst, size_t) override { return buffers.at(dst).fill(0); }
  Status launch(const std::string &name, const MoEKernelArgs &args,
                unsigned grid, unsigned block, unsigned shared) override {
    auto it = kernels.find(name);
    if (it == kernels.end()) {
      runtime::Expected<runtime::Kernel> k = module.kernel(name);
      if (!k)
        return k.takeError();
      if (shared > 48 * 1024)
        if (Status s = k.value().setMaxDynamicSharedMemory(
                static_cast<int>(shared)))
          return s;
      it = kernels.emplace(name, k.value()).first;
    }
    if (stream) {
      // The caller's stream: launch through the driver table directly.
      MoEKernelArgs copy = args;
      void *params[] = {&copy};
      if (Status s = device.makeCurrent())
        return s;
      return device.api().check(
          device.api().cuLaunchKernel(
              it->second.get(), grid, 1, 1, block, 1, 1, shared,
              static_cast<runtime::CuStream>(stream), params, nullptr),
          "cuLaunchKernel");
    }
    return device.launch(it->second, runtime::Dim3{grid, 1, 1},
                         runtime::Dim3{block, 1, 1}, shared, args);
  }
  void setStream(void *s) override { stream = s; }
  Status synchronize() override { return device.synchronize(); }
  Status encodeTensorMap(const TensorMapDesc &desc, void *map) override {
    return encodeCudaTensorMap(device.api(), desc, map);
  }

private:
  runtime::Device device;
  runtime::Module module;
  std::map<void *, runtime::DeviceBuffer> buffers;
  std::map<std::string, runtime::Kernel> kernels;
  void *stream = nullptr;
};
} // namespace

runtime::Expected<std::unique_ptr<KernelBackend>>
openCudaBackend(const std::string &source, int ordinal,
                BackendReport *report,
                const std::map<std::string, std::string> *cubins,
                const std::string &cacheDir) {
  runtime::Expected<runtime::Device> device = runtime::Device::open(ordinal);
  if (!device)
    return device.takeError();
  std::string arch = device.value().info().arch();
  std::string image;
  if (report)
    report->description = device.value().info().name + " (" + arch + ")";
  if (cubins && cubins->count(arch)) {
    image = cubins->at(arch);
    if (report)
      report->precompiled = true;
  } else {
    runtime::CompileRequest request;
    request.source = source;
    request.headers = kernelHeaders();
    request.arch = arch;
    runtime::Expected<runtime::CompiledModule> compiled =
        runtime::compileCached(request, cacheDir);
    if (!compiled)
      return compiled.takeError();
    if (report) {
      report->fromCache = compiled.value().fromCache;
      report->compileSeconds = compiled.value().compileSeconds;
      report->warnings = compiled.value().warnings;
      report->log = compiled.value().log;
    }
    image = compiled.value().cubin;
  }
  runtime::Expected<runtime::Module> module =
      device.value().loadModule(image);
  if (!module)
    return module.takeError();
  return std::unique_ptr<KernelBackend>(
      new CudaBackend(std::move(device.value()), std::move(module.value())));
}

} // namespace moe
