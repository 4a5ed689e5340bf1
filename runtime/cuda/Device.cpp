//===- Device.cpp - A GPU through the CUDA driver, with RAII --------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Device.h"

#include <utility>

namespace moe::runtime {

/// Shared by every object of one opened device: the primary context is
/// released when the last of them goes.
struct DeviceContext {
  std::shared_ptr<const DriverApi> api;
  CuDevice device = 0;
  CuContext context = nullptr;

  ~DeviceContext() {
    if (context)
      api->cuDevicePrimaryCtxRelease(device);
  }
  Status makeCurrent() const {
    return api->check(api->cuCtxSetCurrent(context), "cuCtxSetCurrent");
  }
};

namespace {
/// Moves a handle out of `from`, leaving the moved-from object empty.
template <typename T> T take(T &from) { return std::exchange(from, T()); }
} // namespace

std::string DeviceInfo::arch() const {
  std::string arch =
      "sm_" + std::to_string(computeMajor) + std::to_string(computeMinor);
  if (computeMajor >= 9)
    arch += "a";
  return arch;
}

//===----------------------------------------------------------------------===//
// DeviceBuffer
//===----------------------------------------------------------------------===//

DeviceBuffer::DeviceBuffer(DeviceBuffer &&other) noexcept
    : ctx_(std::move(other.ctx_)), ptr_(take(other.ptr_)),
      size_(take(other.size_)) {}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
  if (this != &other) {
    (void)release();
    ctx_ = std::move(other.ctx_);
    ptr_ = take(other.ptr_);
    size_ = take(other.size_);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { (void)release(); }

Status DeviceBuffer::release() {
  if (!ptr_)
    return Status::success();
  Status s = ctx_->makeCurrent();
  if (s.ok())
    s = ctx_->api->check(ctx_->api->cuMemFree(ptr_), "cuMemFree_v2");
  ptr_ = 0;
  size_ = 0;
  ctx_.reset();
  return s;
}

static Status checkRange(const char *what, size_t offset, size_t bytes,
                         size_t size) {
  if (offset > size || bytes > size - offset)
    return Status::error(std::string(what) + ": " + std::to_string(bytes) +
                         " bytes at offset " + std::to_string(offset) +
                         " do not fit a buffer of " + std::to_string(size) +
                         " bytes");
  return Status::success();
}

Status DeviceBuffer::copyFromHost(const void *src, size_t bytes,
                                  size_t offset) {
  if (Status s = checkRange("copy to the device", offset, bytes, size_))
    return s;
  if (bytes == 0)
    return Status::success();
  if (Status s = ctx_->makeCurrent())
    return s;
  return ctx_->api->check(ctx_->api->cuMemcpyHtoD(ptr_ + offset, src, bytes),
                          "cuMemcpyHtoD_v2");
}

Status DeviceBuffer::copyToHost(void *dst, size_t bytes, size_t offset) const {
  if (Status s = checkRange("copy from the device", offset, bytes, size_))
    return s;
  if (bytes == 0)
    return Status::success();
  if (Status s = ctx_->makeCurrent())
    return s;
  return ctx_->api->check(ctx_->api->cuMemcpyDtoH(dst, ptr_ + offset, bytes),
                          "cuMemcpyDtoH_v2");
}

Status DeviceBuffer::fill(unsigned char byte) {
  if (size_ == 0)
    return Status::success();
  if (Status s = ctx_->makeCurrent())
    return s;
  return ctx_->api->check(ctx_->api->cuMemsetD8(ptr_, byte, size_),
                          "cuMemsetD8_v2");
}

//===----------------------------------------------------------------------===//
// Stream and Event
//===----------------------------------------------------------------------===//

Stream::Stream(Stream &&other) noexcept
    : ctx_(std::move(other.ctx_)), stream_(take(other.stream_)) {}

Stream &Stream::operator=(Stream &&other) noexcept {
  if (this != &other) {
    reset();
    ctx_ = std::move(other.ctx_);
    stream_ = take(other.stream_);
  }
  return *this;
}

Stream::~Stream() { reset(); }

void Stream::reset() {
  if (stream_ && ctx_->makeCurrent().ok())
    ctx_->api->cuStreamDestroy(stream_);
  stream_ = nullptr;
  ctx_.reset();
}

Status Stream::synchronize() const {
  if (Status s = ctx_->makeCurrent())
    return s;
  return ctx_->api->check(ctx_->api->cuStreamSynchronize(stream_),
                          "cuStreamSynchronize");
}

Event::Event(Event &&other) noexcept
    : ctx_(std::move(other.ctx_)), event_(take(other.event_)) {}

Event &Event::operator=(Event &&other) noexcept {
  if (this != &other) {
    reset();
    ctx_ = std::move(other.ctx_);
    event_ = take(other.event_);
  }
  return *this;
}

Event::~Event() { reset(); }

void Event::reset() {
  if (event_ && ctx_->makeCurrent().ok())
    ctx_->api->cuEventDestroy(event_);
  event_ = nullptr;
  ctx_.reset();
}

Status Event::record(const Stream *stream) {
  if (Status s = ctx_->makeCurrent())
    return s;
  return ctx_->api->check(
      ctx_->api->cuEventRecord(event_, stream ? stream->get() : nullptr),
      "cuEventRecord");
}

Status Event::synchronize() const {
  if (Status s = ctx_->makeCurrent())
    return s;
  return ctx_->api->check(ctx_->api->cuEventSynchronize(event_),
                          "cuEventSynchronize");
}

Expected<float> Event::elapsedMs(const Event &start, const Event &end) {
  if (!start.event_ || !end.event_)
    return Status::error("cuEventElapsedTime: an event was not created");
  if (Status s = start.ctx_->makeCurrent())
    return s;
  float ms = 0;
  if (Status s = start.ctx_->api->check(
          start.ctx_->api->cuEventElapsedTime(&ms, start.event_, end.event_),
          "cuEventElapsedTime"))
    return s;
  return ms;
}

//===----------------------------------------------------------------------===//
// Module and Kernel
//===----------------------------------------------------------------------===//

Module::Module(Module &&other) noexcept
    : ctx_(std::move(other.ctx_)), module_(take(other.module_)) {}

Module &Module::operator=(Module &&other) noexcept {
  if (this != &other) {
    reset();
    ctx_ = std::move(other.ctx_);
    module_ = take(other.module_);
  }
  return *this;
}

Module::~Module() { reset(); }

void Module::reset() {
  if (module_ && ctx_->makeCurrent().ok())
    ctx_->api->cuModuleUnload(module_);
  module_ = nullptr;
  ctx_.reset();
}

Expected<Kernel> Module::kernel(const std::string &name) const {
  if (!module_)
    return Status::error("cuModuleGetFunction(" + name +
                         "): the module is not loaded");
  if (Status s = ctx_->makeCurrent())
    return s;
  Kernel k;
  if (Status s = ctx_->api->check(
          ctx_->api->cuModuleGetFunction(&k.fn_, module_, name.c_str()),
          ("cuModuleGetFunction(" + name + ")").c_str()))
    return s;
  k.ctx_ = ctx_;
  k.name_ = name;
  return k;
}

Status Kernel::setMaxDynamicSharedMemory(int bytes) const {
  if (Status s = ctx_->makeCurrent())
    return s;
  return ctx_->api->check(
      ctx_->api->cuFuncSetAttribute(fn_, kCuFuncAttrMaxDynamicSharedSizeBytes,
                                    bytes),
      ("cuFuncSetAttribute(" + name_ + ", max dynamic shared memory " +
       std::to_string(bytes) + " bytes)")
          .c_str());
}

//===----------------------------------------------------------------------===//
// Device
//===----------------------------------------------------------------------===//

Expected<Device> Device::open(int ordinal) {
  Expected<std::shared_ptr<const DriverApi>> api = driverApi();
  if (!api)
    return api.takeError("cannot open CUDA device " + std::to_string(ordinal));
  return open(*api, ordinal);
}

Expected<Device> Device::open(std::shared_ptr<const DriverApi> api,
                              int ordinal) {
  std::string context = "cannot open CUDA device " + std::to_string(ordinal);
  if (!api)
    return Status::error(context + ": no driver table");
  if (Status s = api->init())
    return s.withContext(context);
  int count = 0;
  if (Status s = api->check(api->cuDeviceGetCount(&count), "cuDeviceGetCount"))
    return s.withContext(context);
  if (count == 0)
    return Status::error(context + ": the driver found no CUDA device");
  if (ordinal < 0 || ordinal >= count)
    return Status::error(context + ": the machine has " +
                         std::to_string(count) + " device(s), numbered 0 to " +
                         std::to_string(count - 1));

  auto ctx = std::make_shared<DeviceContext>();
  ctx->api = api;
  if (Status s = api->check(api->cuDeviceGet(&ctx->device, ordinal),
                            "cuDeviceGet"))
    return s.withContext(context);

  Device device;
  DeviceInfo &info = device.info_;
  info.ordinal = ordinal;
  char name[256] = {0};
  if (Status s = api->check(
          api->cuDeviceGetName(name, sizeof(name) - 1, ctx->device),
          "cuDeviceGetName"))
    return s.withContext(context);
  info.name = name;
  struct {
    int attribute;
    int *out;
    const char *what;
  } attributes[] = {
      {kCuDeviceAttrComputeCapabilityMajor, &info.computeMajor,
       "compute capability major"},
      {kCuDeviceAttrComputeCapabilityMinor, &info.computeMinor,
       "compute capability minor"},
      {kCuDeviceAttrMultiprocessorCount, &info.multiprocessors,
       "multiprocessor count"},
      {kCuDeviceAttrMaxSharedMemoryPerBlockOptin,
       &info.maxSharedBytesPerBlockOptin, "opt-in shared memory per block"},
  };
  for (const auto &a : attributes)
    if (Status s = api->check(
            api->cuDeviceGetAttribute(a.out, a.attribute, ctx->device),
            (std::string("cuDeviceGetAttribute(") + a.what + ")").c_str()))
      return s.withContext(context);
  if (Status s = api->check(api->cuDriverGetVersion(&info.driverVersion),
                            "cuDriverGetVersion"))
    return s.withContext(context);

  if (Status s = api->check(
          api->cuDevicePrimaryCtxRetain(&ctx->context, ctx->device),
          "cuDevicePrimaryCtxRetain")) {
    ctx->context = nullptr;
    return s.withContext(context);
  }
  if (Status s = ctx->makeCurrent())
    return s.withContext(context);
  device.ctx_ = std::move(ctx);
  return device;
}

const DriverApi &Device::api() const { return *ctx_->api; }

Status Device::makeCurrent() const { return ctx_->makeCurrent(); }

Expected<Module> Device::loadModule(const std::string &image) const {
  if (image.empty())
    return Status::error("cuModuleLoadData: the image is empty (was the "
                         "module compiled for a compute_XX target?)");
  if (Status s = ctx_->makeCurrent())
    return s;
  Module m;
  if (Status s = ctx_->api->check(
          ctx_->api->cuModuleLoadData(&m.module_, image.c_str()),
          "cuModuleLoadData"))
    return s.withContext("cannot load a module of " +
                         std::to_string(image.size()) + " bytes on " +
                         info_.name + " (" + info_.arch() + ")");
  m.ctx_ = ctx_;
  return m;
}

Expected<DeviceBuffer> Device::allocate(size_t bytes) const {
  DeviceBuffer b;
  if (bytes == 0)
    return b;
  if (Status s = ctx_->makeCurrent())
    return s;
  if (Status s = ctx_->api->check(
          ctx_->api->cuMemAlloc(&b.ptr_, bytes),
          ("cuMemAlloc_v2(" + std::to_string(bytes) + " bytes)").c_str()))
    return s;
  b.ctx_ = ctx_;
  b.size_ = bytes;
  return b;
}

Expected<Stream> Device::createStream() const {
  if (Status s = ctx_->makeCurrent())
    return s;
  Stream stream;
  // Non-blocking: no implicit synchronisation with the default stream.
  constexpr unsigned kNonBlocking = 1;
  if (Status s = ctx_->api->check(
          ctx_->api->cuStreamCreate(&stream.stream_, kNonBlocking),
          "cuStreamCreate"))
    return s;
  stream.ctx_ = ctx_;
  return stream;
}

Expected<Event> Device::createEvent() const {
  if (Status s = ctx_->makeCurrent())
    return s;
  Event event;
  if (Status s = ctx_->api->check(ctx_->api->cuEventCreate(&event.event_, 0),
                                  "cuEventCreate"))
    return s;
  event.ctx_ = ctx_;
  return event;
}

Status Device::launchWithParams(const Kernel &kernel, Dim3 grid, Dim3 block,
                                unsigned dynamicSharedBytes, void **params,
                                const Stream *stream) const {
  std::string what = "cuLaunchKernel(" + kernel.name() + ", grid " +
                     std::to_string(grid.x) + "x" + std::to_string(grid.y) +
                     "x" + std::to_string(grid.z) + ", block " +
                     std::to_string(block.x) + "x" + std::to_string(block.y) +
                     "x" + std::to_string(block.z) + ", " +
                     std::to_string(dynamicSharedBytes) + " bytes shared)";
  if (!kernel.get())
    return Status::error(what + ": the kernel was not loaded");
  if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z)
    return Status::error(what + ": a grid or block dimension is 0");
  if (Status s = ctx_->makeCurrent())
    return s;
  return ctx_->api->check(
      ctx_->api->cuLaunchKernel(kernel.get(), grid.x, grid.y, grid.z, block.x,
                                block.y, block.z, dynamicSharedBytes,
                                stream ? stream->get() : nullptr, params,
                                nullptr),
      what.c_str());
}

Status Device::launch(const Kernel &kernel, Dim3 grid, Dim3 block,
                      unsigned dynamicSharedBytes, const MoEKernelArgs &args,
                      const Stream *stream) const {
  // cuLaunchKernel copies each parameter from the address given; the one
  // parameter is the struct itself.
  MoEKernelArgs copy = args;
  void *params[] = {&copy};
  return launchWithParams(kernel, grid, block, dynamicSharedBytes, params,
                          stream);
}

Status Device::synchronize() const {
  if (Status s = ctx_->makeCurrent())
    return s;
  return ctx_->api->check(ctx_->api->cuCtxSynchronize(), "cuCtxSynchronize");
}

} // namespace moe::runtime
