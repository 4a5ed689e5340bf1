//===- CudaBackend.cpp - Kernels on the GPU through the CUDA driver -------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Backends.h"
#include "moe/runtime/Compiler.h"
#include "moe/runtime/Device.h"
#include "moe/runtime/KernelHeaders.h"

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
    return device.launch(it->second, runtime::Dim3{grid, 1, 1},
                         runtime::Dim3{block, 1, 1}, shared, args);
  }
  Status synchronize() override { return device.synchronize(); }

private:
  runtime::Device device;
  runtime::Module module;
  std::map<void *, runtime::DeviceBuffer> buffers;
  std::map<std::string, runtime::Kernel> kernels;
};
} // namespace

runtime::Expected<std::unique_ptr<KernelBackend>>
openCudaBackend(const std::string &source, int ordinal,
                BackendReport *report) {
  runtime::Expected<runtime::Device> device = runtime::Device::open(ordinal);
  if (!device)
    return device.takeError();
  std::string arch = device.value().info().arch();
  runtime::Expected<runtime::CompiledModule> compiled =
      runtime::compileKernels(source, kernelHeaders(), arch);
  if (!compiled)
    return compiled.takeError();
  if (report) {
    report->description = device.value().info().name + " (" + arch + ")";
    report->fromCache = compiled.value().fromCache;
    report->compileSeconds = compiled.value().compileSeconds;
    report->warnings = compiled.value().warnings;
    report->log = compiled.value().log;
  }
  runtime::Expected<runtime::Module> module =
      device.value().loadModule(compiled.value().cubin);
  if (!module)
    return module.takeError();
  return std::unique_ptr<KernelBackend>(
      new CudaBackend(std::move(device.value()), std::move(module.value())));
}

} // namespace moe
