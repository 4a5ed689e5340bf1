//===- TensorMap.h - 2-D tiled tensor maps for TMA copies -------*- C++ -*-===//
//
// Part of moe-opt. The one place where the runtime encodes the tensor map
// (CUtensorMap, 128 bytes) of a cp.async.bulk.tensor copy: on a GPU through
// the driver's cuTensorMapEncodeTiled (loaded with dlopen, CudaApi.h), under
// the CPU emulation as KernelABI.h's MoEEmuTensorMap. Both check the
// descriptor first against the driver's documented rules, so that a map the
// emulation accepts is one the driver accepts too.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_TENSORMAP_H
#define MOE_RUNTIME_TENSORMAP_H

#include "moe/runtime/Plan.h"
#include "moe/runtime/Status.h"

#include <cstdint>
#include <string>

namespace moe::runtime {
struct DriverApi;
}

namespace moe {

/// The shared-memory swizzle of a tensor map (CUtensorMapSwizzle's values).
enum class TensorMapSwizzle { None = 0, B32 = 1, B64 = 2, B128 = 3 };

/// Bytes of the swizzle span (0 for None).
int swizzleBytes(TensorMapSwizzle swizzle);

/// A row-major matrix of `rows` x `cols` elements at `address` (rows
/// `rowStrideBytes` apart), copied by boxes of boxRows x boxCols elements.
/// Element types: BF16, F16 (2 bytes), F8E4M3FN and F8E8M0FNU (1 byte,
/// copied as u8), F32 (4 bytes). Out-of-bounds elements are zero-filled.
struct TensorMapDesc {
  const void *address = nullptr;
  ElementType type = ElementType::BF16;
  uint64_t rows = 0, cols = 0;
  uint64_t rowStrideBytes = 0;
  uint32_t boxRows = 0, boxCols = 0;
  TensorMapSwizzle swizzle = TensorMapSwizzle::None;
  /// Names the tensor in error messages.
  std::string name;
};

/// Success, or an error naming the tensor, the field and the rule it
/// breaks: address and row stride multiples of 16 bytes, dimensions in
/// [1, 2^32], row stride below 2^40 and at least a row, box dimensions in
/// [1, 256], the box's row a multiple of 16 bytes and (with a swizzle) at
/// most the swizzle span, an element type a tensor map can copy.
runtime::Status checkTensorMap(const TensorMapDesc &desc);

/// Writes the emulation's map (MoEEmuTensorMap) of a checked descriptor to
/// the 128 bytes at `map`.
runtime::Status encodeEmuTensorMap(const TensorMapDesc &desc, void *map);

/// Encodes the descriptor with the driver's cuTensorMapEncodeTiled into the
/// 128 bytes at `map` (64-byte aligned). Fails clearly when the driver has
/// no such function (older than CUDA 12.0) or refuses the map.
runtime::Status encodeCudaTensorMap(const runtime::DriverApi &api,
                                    const TensorMapDesc &desc, void *map);

} // namespace moe

#endif // MOE_RUNTIME_TENSORMAP_H
