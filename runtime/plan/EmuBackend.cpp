//===- EmuBackend.cpp - The same kernels on the CPU -----------------------===//
//
// Part of moe-opt. Buffers are host memory; kernels run through the CPU
// emulation (runtime/emu), compiled from the same CUDA C++ source.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Backends.h"
#include "moe/runtime/EmuModule.h"
#include "moe/runtime/KernelHeaders.h"
#include "moe/runtime/TensorMap.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <set>

namespace moe {

using runtime::Status;

namespace {
class EmuBackend : public KernelBackend {
public:
  explicit EmuBackend(std::unique_ptr<runtime::EmuModule> module)
      : module(std::move(module)) {}
  ~EmuBackend() override {
    for (void *p : live)
      std::free(p);
  }

  std::string name() const override { return "emu"; }

  runtime::Expected<void *> allocate(size_t bytes) override {
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (!p)
      return Status::error("out of host memory allocating " +
                           std::to_string(bytes) + " bytes");
    live.insert(p);
    return p;
  }
  void release(void *ptr) override {
    live.erase(ptr);
    std::free(ptr);
  }
  Status upload(void *dst, const void *src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
    return Status::success();
  }
  Status download(void *dst, const void *src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
    return Status::success();
  }
  Status zero(void *dst, size_t bytes) override {
    std::memset(dst, 0, bytes);
    return Status::success();
  }
  Status launch(const std::string &kernel, const MoEKernelArgs &args,
                unsigned grid, unsigned block, unsigned shared) override {
    return module->launch(kernel, args, runtime::EmuDim3{grid, 1, 1},
                          runtime::EmuDim3{block, 1, 1}, shared);
  }
  Status synchronize() override { return Status::success(); }
  Status encodeTensorMap(const TensorMapDesc &desc, void *map) override {
    return encodeEmuTensorMap(desc, map);
  }
  // Kernels run on the host: weights that stay alive are read in place.
  bool readsHostMemory() const override { return true; }
  void mark() override { start = std::chrono::steady_clock::now(); }
  double elapsedMs() override {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now() - start)
        .count();
  }

private:
  std::unique_ptr<runtime::EmuModule> module;
  std::set<void *> live;
  std::chrono::steady_clock::time_point start;
};
} // namespace

runtime::Expected<std::unique_ptr<KernelBackend>>
openEmuBackend(const std::string &source, const std::string &cacheDir,
               BackendReport *report) {
  auto start = std::chrono::steady_clock::now();
  runtime::Expected<std::unique_ptr<runtime::EmuModule>> module =
      runtime::EmuModule::compile(source, kernelHeaders(), cacheDir);
  if (!module)
    return module.takeError();
  if (report) {
    report->description = "CPU emulation (" +
                          runtime::EmuModule::compilerCommand() + ")";
    report->fromCache = module.value()->cacheHit();
    report->warnings = module.value()->warnings();
    report->compileSeconds = std::chrono::duration<double>(
                                 std::chrono::steady_clock::now() - start)
                                 .count();
  }
  return std::unique_ptr<KernelBackend>(
      new EmuBackend(std::move(module.value())));
}

} // namespace moe
