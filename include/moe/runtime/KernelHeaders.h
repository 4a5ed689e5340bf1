//===- KernelHeaders.h - The kernel templates, embedded ---------*- C++ -*-===//
//
// Part of moe-opt. The files of runtime/kernels (and KernelABI.h) by include
// name, as compiled into the runtime: generated kernels include them, and
// NVRTC and the CPU emulation receive them from here.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_KERNELHEADERS_H
#define MOE_RUNTIME_KERNELHEADERS_H

#include <map>
#include <string>

namespace moe {
const std::map<std::string, std::string> &kernelHeaders();
} // namespace moe

#endif // MOE_RUNTIME_KERNELHEADERS_H
