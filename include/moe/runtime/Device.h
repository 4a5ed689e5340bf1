//===- Device.h - A GPU through the CUDA driver, with RAII ------*- C++ -*-===//
//
// Part of moe-opt. A thin layer over the driver for the CUDA backend: open a
// device (its primary context), load a cubin, find kernels, move memory,
// launch a kernel with MoEKernelArgs by value, time with events. Every
// driver call is checked and a failure names the driver function.
//
// Every object keeps the context alive (shared ownership), so the order of
// destruction does not matter. Each call makes the context current on the
// calling thread first.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_DEVICE_H
#define MOE_RUNTIME_DEVICE_H

#include "moe/runtime/CudaApi.h"
#include "moe/runtime/KernelABI.h"
#include "moe/runtime/Status.h"

#include <cstddef>
#include <memory>
#include <string>

namespace moe::runtime {

struct DeviceContext; // The driver table, device and retained context.

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int computeMajor = 0;
  int computeMinor = 0;
  int multiprocessors = 0;
  /// The most shared memory one block can opt into (cuFuncSetAttribute).
  int maxSharedBytesPerBlockOptin = 0;
  int driverVersion = 0; // 13000 for CUDA 13.0.
  /// The NVRTC target for this device: "sm_90a" from compute capability
  /// 9.0 on (the arch-specific features such as wgmma need the 'a'),
  /// "sm_86" before.
  std::string arch() const;
};

class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer &&other) noexcept;
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
  ~DeviceBuffer();

  CuDevicePtr address() const { return ptr_; }
  /// The address as MoEKernelArgs::buffers holds it.
  void *pointer() const { return reinterpret_cast<void *>(ptr_); }
  size_t size() const { return size_; }

  Status copyFromHost(const void *src, size_t bytes, size_t offset = 0);
  Status copyToHost(void *dst, size_t bytes, size_t offset = 0) const;
  Status fill(unsigned char byte);
  /// Frees now, with the result checked (the destructor ignores it).
  Status release();

private:
  friend class Device;
  std::shared_ptr<DeviceContext> ctx_;
  CuDevicePtr ptr_ = 0;
  size_t size_ = 0;
};

class Stream {
public:
  Stream() = default;
  Stream(Stream &&other) noexcept;
  Stream &operator=(Stream &&other) noexcept;
  ~Stream();
  CuStream get() const { return stream_; }
  Status synchronize() const;

private:
  friend class Device;
  void reset();
  std::shared_ptr<DeviceContext> ctx_;
  CuStream stream_ = nullptr;
};

class Event {
public:
  Event() = default;
  Event(Event &&other) noexcept;
  Event &operator=(Event &&other) noexcept;
  ~Event();
  CuEvent get() const { return event_; }
  /// Records on `stream`, or on the default stream when null.
  Status record(const Stream *stream = nullptr);
  Status synchronize() const;
  /// Milliseconds between two recorded events.
  static Expected<float> elapsedMs(const Event &start, const Event &end);

private:
  friend class Device;
  void reset();
  std::shared_ptr<DeviceContext> ctx_;
  CuEvent event_ = nullptr;
};

/// A kernel of a loaded module; valid while the module is alive.
class Kernel {
public:
  CuFunction get() const { return fn_; }
  const std::string &name() const { return name_; }
  /// Allows up to `bytes` of dynamic shared memory per block (needed above
  /// 48 KiB).
  Status setMaxDynamicSharedMemory(int bytes) const;

private:
  friend class Module;
  std::shared_ptr<DeviceContext> ctx_;
  CuFunction fn_ = nullptr;
  std::string name_;
};

class Module {
public:
  Module() = default;
  Module(Module &&other) noexcept;
  Module &operator=(Module &&other) noexcept;
  ~Module();
  CuModule get() const { return module_; }
  /// The kernel of symbol `name` (extern "C" name or lowered name).
  Expected<Kernel> kernel(const std::string &name) const;

private:
  friend class Device;
  void reset();
  std::shared_ptr<DeviceContext> ctx_;
  CuModule module_ = nullptr;
};

class Device {
public:
  /// Loads the driver (driverApi()), calls cuInit, opens device `ordinal`
  /// and retains its primary context. Fails with a plain message on a
  /// machine without driver or device.
  static Expected<Device> open(int ordinal = 0);
  static Expected<Device> open(std::shared_ptr<const DriverApi> api,
                               int ordinal = 0);

  const DeviceInfo &info() const { return info_; }
  const DriverApi &api() const;
  /// Makes the context current on the calling thread.
  Status makeCurrent() const;

  /// Loads a cubin (or NUL-terminated PTX) image.
  Expected<Module> loadModule(const std::string &image) const;
  Expected<DeviceBuffer> allocate(size_t bytes) const;
  Expected<Stream> createStream() const;
  Expected<Event> createEvent() const;

  /// Launches `kernel(args)`: the kernel's only parameter is a MoEKernelArgs
  /// passed by value. A null stream is the default stream.
  Status launch(const Kernel &kernel, Dim3 grid, Dim3 block,
                unsigned dynamicSharedBytes, const MoEKernelArgs &args,
                const Stream *stream = nullptr) const;
  /// Launches with cuLaunchKernel's own parameter array.
  Status launchWithParams(const Kernel &kernel, Dim3 grid, Dim3 block,
                          unsigned dynamicSharedBytes, void **params,
                          const Stream *stream = nullptr) const;
  /// Waits for all work of the context (cuCtxSynchronize).
  Status synchronize() const;

private:
  std::shared_ptr<DeviceContext> ctx_;
  DeviceInfo info_;
};

} // namespace moe::runtime

#endif // MOE_RUNTIME_DEVICE_H
