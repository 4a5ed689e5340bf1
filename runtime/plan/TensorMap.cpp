//===- TensorMap.cpp - 2-D tiled tensor maps for TMA copies ---------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/TensorMap.h"
#include "moe/runtime/CudaApi.h"
#include "moe/runtime/KernelABI.h"

#include <cstring>

namespace moe {

using runtime::Status;

int swizzleBytes(TensorMapSwizzle swizzle) {
  switch (swizzle) {
  case TensorMapSwizzle::None:
    return 0;
  case TensorMapSwizzle::B32:
    return 32;
  case TensorMapSwizzle::B64:
    return 64;
  case TensorMapSwizzle::B128:
    return 128;
  }
  return -1;
}

namespace {
/// CUtensorMapDataType of an element type; -1 when a map cannot copy it.
int cudaDataType(ElementType type) {
  switch (type) {
  case ElementType::F8E4M3FN:
  case ElementType::F8E8M0FNU:
    return 0; // CU_TENSOR_MAP_DATA_TYPE_UINT8: codes copied as bytes
  case ElementType::F16:
    return 6; // FLOAT16
  case ElementType::F32:
    return 7; // FLOAT32
  case ElementType::BF16:
    return 9; // BFLOAT16
  default:
    return -1;
  }
}

std::string what(const TensorMapDesc &d) {
  return "tensor map of '" + (d.name.empty() ? std::string("<unnamed>")
                                             : d.name) +
         "'";
}
} // namespace

Status checkTensorMap(const TensorMapDesc &d) {
  auto bad = [&](const std::string &field, const std::string &text) {
    return Status::error(what(d) + ": " + field + " " + text);
  };
  if (cudaDataType(d.type) < 0)
    return bad("element type", std::string(elementTypeName(d.type)) +
                                   " is not one a tensor map copies (bf16, "
                                   "f16, f32, f8 or u8 codes)");
  const uint64_t eb = static_cast<uint64_t>(elementSize(d.type));
  if (d.address == nullptr)
    return bad("address", "is null");
  if (reinterpret_cast<uintptr_t>(d.address) % 16 != 0)
    return bad("address", "is not 16-byte aligned");
  const uint64_t maxDim = uint64_t(1) << 32;
  if (d.cols == 0 || d.cols > maxDim)
    return bad("columns", std::to_string(d.cols) + " are not in [1, 2^32]");
  if (d.rows == 0 || d.rows > maxDim)
    return bad("rows", std::to_string(d.rows) + " are not in [1, 2^32]");
  if (d.rowStrideBytes % 16 != 0)
    return bad("row stride", std::to_string(d.rowStrideBytes) +
                                 " bytes is not a multiple of 16");
  if (d.rowStrideBytes >= (uint64_t(1) << 40))
    return bad("row stride", "is not below 2^40 bytes");
  if (d.rowStrideBytes < d.cols * eb)
    return bad("row stride", std::to_string(d.rowStrideBytes) +
                                 " bytes is less than a row of " +
                                 std::to_string(d.cols * eb) + " bytes");
  if (d.boxCols == 0 || d.boxCols > 256)
    return bad("box columns", std::to_string(d.boxCols) +
                                  " are not in [1, 256]");
  if (d.boxRows == 0 || d.boxRows > 256)
    return bad("box rows", std::to_string(d.boxRows) + " are not in [1, 256]");
  const uint64_t inner = d.boxCols * eb;
  if (inner % 16 != 0)
    return bad("box columns", std::to_string(d.boxCols) + " x " +
                                  std::to_string(eb) + " bytes (" +
                                  std::to_string(inner) +
                                  ") are not a multiple of 16 bytes");
  const int span = swizzleBytes(d.swizzle);
  if (span < 0)
    return bad("swizzle", "is not none, 32B, 64B or 128B");
  if (span > 0 && inner > static_cast<uint64_t>(span))
    return bad("box columns", std::to_string(inner) +
                                  " bytes exceed the " +
                                  std::to_string(span) +
                                  "-byte span of the swizzle");
  return Status::success();
}

Status encodeEmuTensorMap(const TensorMapDesc &d, void *map) {
  if (Status s = checkTensorMap(d))
    return s;
  MoEEmuTensorMap m;
  std::memset(&m, 0, sizeof m);
  m.magic = MOE_EMU_TENSOR_MAP_MAGIC;
  m.address = reinterpret_cast<uintptr_t>(d.address);
  m.dims[0] = d.cols;
  m.dims[1] = d.rows;
  m.row_stride = d.rowStrideBytes;
  m.box[0] = d.boxCols;
  m.box[1] = d.boxRows;
  m.element_bytes = static_cast<unsigned>(elementSize(d.type));
  m.swizzle_bytes = static_cast<unsigned>(swizzleBytes(d.swizzle));
  std::memcpy(map, &m, sizeof m);
  return Status::success();
}

Status encodeCudaTensorMap(const runtime::DriverApi &api,
                           const TensorMapDesc &d, void *map) {
  if (Status s = checkTensorMap(d))
    return s;
  if (reinterpret_cast<uintptr_t>(map) % 64 != 0)
    return Status::error(what(d) + ": the map's memory is not 64-byte "
                                   "aligned");
  if (!api.cuTensorMapEncodeTiled)
    return Status::error(what(d) + ": the CUDA driver " + api.libraryFile +
                         " has no cuTensorMapEncodeTiled (tensor maps need "
                         "a CUDA 12.0 or later driver)");
  const unsigned long long dims[2] = {d.cols, d.rows};
  const unsigned long long strides[1] = {d.rowStrideBytes};
  const unsigned box[2] = {d.boxCols, d.boxRows};
  const unsigned elementStrides[2] = {1, 1};
  return api
      .check(api.cuTensorMapEncodeTiled(
                 map, cudaDataType(d.type), 2, const_cast<void *>(d.address),
                 dims, strides, box, elementStrides, /*interleave none*/ 0,
                 static_cast<int>(d.swizzle), /*L2 promotion 128B*/ 2,
                 /*OOB fill zeros*/ 0),
             "cuTensorMapEncodeTiled")
      .withContext(what(d));
}

} // namespace moe
