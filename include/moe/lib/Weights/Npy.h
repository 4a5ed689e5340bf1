//===- Npy.h - NumPy .npy reader and writer ---------------------*- C++ -*-===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//
//
// Reads .npy files of format versions 1.0, 2.0 and 3.0 holding a
// little-endian array of f2, f4, f8, i4 or i8 in C order, and writes f32 and
// i32 arrays (version 1.0). Errors name the file and say what was expected.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_WEIGHTS_NPY_H
#define MOE_LIB_WEIGHTS_NPY_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

/// Element types of the .npy files this project reads.
enum class NpyDType { F16, F32, F64, I32, I64 };

/// The NumPy descriptor ("<f4", ...).
llvm::StringRef npyDescr(NpyDType dtype);

/// Size of one element in bytes.
uint64_t npyDTypeSize(NpyDType dtype);

/// An array read from a .npy file.
struct NpyArray {
  std::vector<int64_t> shape;
  NpyDType dtype = NpyDType::F32;
  /// The little-endian element bytes, C order.
  std::vector<uint8_t> raw;

  /// Product of the shape (1 for a 0-d array).
  int64_t numElements() const;

  /// The elements converted to float (exact for F16 and F32; F64, I32 and
  /// I64 are rounded to nearest).
  std::vector<float> toF32() const;

  /// The elements as integers; an error for floating-point arrays.
  llvm::Expected<std::vector<int64_t>> toI64() const;
};

/// Reads the .npy file at `path`.
llvm::Expected<NpyArray> readNpy(llvm::StringRef path);

/// Parses .npy bytes; `name` is used in messages.
llvm::Expected<NpyArray> parseNpy(llvm::StringRef bytes, llvm::StringRef name);

/// Serialises an array as .npy version 1.0 bytes ("<f4" or "<i4").
std::string serializeNpyF32(llvm::ArrayRef<int64_t> shape,
                            llvm::ArrayRef<float> data);
std::string serializeNpyI32(llvm::ArrayRef<int64_t> shape,
                            llvm::ArrayRef<int32_t> data);

/// Writes a .npy file atomically. The element count must match the shape.
llvm::Error writeNpyF32(llvm::StringRef path, llvm::ArrayRef<int64_t> shape,
                        llvm::ArrayRef<float> data);
llvm::Error writeNpyI32(llvm::StringRef path, llvm::ArrayRef<int64_t> shape,
                        llvm::ArrayRef<int32_t> data);

} // namespace moe

#endif // MOE_LIB_WEIGHTS_NPY_H
