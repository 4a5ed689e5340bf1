//===- Safetensors.h - safetensors reader and writer ------------*- C++ -*-===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//
//
// The safetensors format: an 8-byte little-endian header length N, N bytes of
// JSON (padded with spaces), then the data section. The JSON maps each tensor
// name to {"dtype", "shape", "data_offsets": [begin, end]} with offsets
// relative to the start of the data section; the optional "__metadata__" key
// maps strings to strings.
//
// SafetensorsFile maps a file and checks every header field before any
// tensor is handed out, so that later code can trust shapes and offsets.
// Errors name the file, the tensor and field, and what was expected.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_WEIGHTS_SAFETENSORS_H
#define MOE_LIB_WEIGHTS_SAFETENSORS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moe {

/// Element types of the safetensors format.
enum class DType {
  Bool,
  U8,
  I8,
  I16,
  U16,
  I32,
  U32,
  I64,
  U64,
  F8E4M3,
  F8E5M2,
  F16,
  BF16,
  F32,
  F64,
};

/// The name used in safetensors headers ("F32", "BF16", "F8_E4M3", ...).
llvm::StringRef dtypeName(DType dtype);

/// Parses a safetensors dtype name; case-sensitive, as in the format.
std::optional<DType> parseDType(llvm::StringRef name);

/// Size of one element in bytes.
uint64_t dtypeSize(DType dtype);

/// Comma-separated list of every dtype name, for error messages.
std::string supportedDTypeNames();

/// True for F32, F16 and BF16: the dtypes readF32 and the float writers
/// convert exactly.
bool isConvertibleFloat(DType dtype);

/// Converts float values to the bytes of `dtype` (F32, F16 or BF16; F16 and
/// BF16 round to nearest even). Little-endian.
llvm::Expected<std::vector<uint8_t>> encodeFloats(llvm::ArrayRef<float> values,
                                                  DType dtype);

/// Converts little-endian F32/F16/BF16 bytes to floats, exactly.
llvm::Expected<std::vector<float>> decodeFloats(llvm::ArrayRef<uint8_t> bytes,
                                                DType dtype);

/// One entry of a safetensors header.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  /// Byte range in the data section: [begin, end).
  uint64_t begin = 0;
  uint64_t end = 0;

  /// Product of the shape (1 for a scalar).
  int64_t numElements() const;
  uint64_t numBytes() const { return end - begin; }
};

/// Formats a shape as "[2, 3]".
std::string formatShape(llvm::ArrayRef<int64_t> shape);

/// A memory-mapped, validated safetensors file.
class SafetensorsFile {
public:
  /// Maps and validates the file at `path`.
  static llvm::Expected<std::unique_ptr<SafetensorsFile>>
  open(llvm::StringRef path);

  /// Validates a file already in memory; its buffer identifier is used as
  /// the file name in messages.
  static llvm::Expected<std::unique_ptr<SafetensorsFile>>
  fromBuffer(std::unique_ptr<llvm::MemoryBuffer> buffer);

  /// The path (or buffer identifier) the file was opened with.
  llvm::StringRef path() const { return filePath; }

  /// The entry for `name`, or null.
  const TensorInfo *lookup(llvm::StringRef name) const;

  /// Every tensor, ordered by name.
  llvm::ArrayRef<TensorInfo> tensors() const { return entries; }

  /// The "__metadata__" map (empty when absent).
  const std::map<std::string, std::string> &metadata() const {
    return metadataEntries;
  }

  /// Raw little-endian bytes of a tensor of this file.
  llvm::ArrayRef<uint8_t> rawData(const TensorInfo &info) const;

  /// Copies `size` bytes of the tensor `info`, from its byte `offset`, to
  /// `dst`. A file opened from disk is read (pread on the descriptor opened
  /// with it), never through its mapping: the bytes pass through the page
  /// cache only, so that streaming a model tensor by tensor keeps no file
  /// page in the resident set, and a file truncated after it was opened is
  /// an error naming it and the tensor, not SIGBUS.
  llvm::Error read(const TensorInfo &info, uint64_t offset, uint64_t size,
                   uint8_t *dst) const;
  /// The whole tensor `info`, read as read() does.
  llvm::Expected<std::vector<uint8_t>> readBytes(const TensorInfo &info) const;

  /// Raw bytes of the tensor `name`; an error if there is no such tensor.
  llvm::Expected<llvm::ArrayRef<uint8_t>> rawData(llvm::StringRef name) const;

  /// The tensor `name` converted to float exactly (F32, F16 or BF16), read
  /// as read() does.
  llvm::Expected<std::vector<float>> readF32(llvm::StringRef name) const;

  /// Length of the JSON header in bytes (without the 8-byte length prefix).
  uint64_t headerSize() const { return headerBytes; }

  /// Length of the data section in bytes.
  uint64_t dataSize() const;

  ~SafetensorsFile();

private:
  SafetensorsFile() = default;
  llvm::Error parse();

  std::string filePath;
  std::unique_ptr<llvm::MemoryBuffer> buffer;
  /// The file open() opened (its buffer maps it), or -1 (fromBuffer).
  int fd = -1;
  uint64_t headerBytes = 0;
  std::vector<TensorInfo> entries;
  std::map<std::string, std::string> metadataEntries;
};

/// Collects tensors and writes a safetensors file.
///
/// Tensors are laid out in name order, those added with
/// addZeroTensor after all others; the header is padded with spaces so
/// that the data section starts at a multiple of 8 bytes, as the reference
/// implementation does. The output is a pure function of the tensors and
/// metadata added, whatever the order they were added in.
class SafetensorsWriter {
public:
  /// Receives the bytes of a streamed tensor, piece by piece.
  using Sink = llvm::function_ref<llvm::Error(llvm::ArrayRef<uint8_t>)>;
  /// Produces a streamed tensor's bytes: calls the sink with consecutive
  /// pieces that together hold exactly the tensor's bytes.
  using Producer = std::function<llvm::Error(Sink)>;

  /// Adds a tensor from its raw little-endian bytes, which must hold exactly
  /// product(shape) * dtypeSize(dtype) bytes.
  llvm::Error addTensor(llvm::StringRef name, DType dtype,
                        llvm::ArrayRef<int64_t> shape,
                        llvm::ArrayRef<uint8_t> bytes);

  /// Adds a tensor from float values converted to `dtype` (F32, F16, BF16).
  llvm::Error addFloatTensor(llvm::StringRef name, DType dtype,
                             llvm::ArrayRef<int64_t> shape,
                             llvm::ArrayRef<float> values);

  /// Adds an all-zero tensor without holding its bytes: write() leaves its
  /// data as a hole of the file (no disk space on file systems with sparse
  /// files). For shape-only model folders, which describe a model's tensors
  /// for compilation but carry no weights.
  llvm::Error addZeroTensor(llvm::StringRef name, DType dtype,
                            llvm::ArrayRef<int64_t> shape);

  /// Adds a tensor whose bytes are produced only when write() reaches it,
  /// and not held by the writer: a file of any size is written with the
  /// memory of the pieces `produce` hands over. write() fails, naming the
  /// tensor, when they do not add up to product(shape) * dtypeSize(dtype).
  llvm::Error addStreamedTensor(llvm::StringRef name, DType dtype,
                                llvm::ArrayRef<int64_t> shape,
                                Producer produce);

  /// Sets one "__metadata__" entry.
  void setMetadata(llvm::StringRef key, llvm::StringRef value);

  /// Number of tensors added so far.
  size_t size() const { return entries.size(); }

  /// Total size of the tensor data in bytes.
  uint64_t dataSize() const;

  /// The complete file contents (streamed tensors are produced into it).
  llvm::Expected<std::string> serialize() const;

  /// Writes the file atomically (temporary file in the same folder, then
  /// rename). Streamed tensors are produced in data order, each once, while
  /// the file is written; a producer's error leaves `path` untouched.
  llvm::Error write(llvm::StringRef path) const;

private:
  /// The checks of a tensor about to be added; its byte size.
  llvm::Expected<uint64_t> checkNewTensor(llvm::StringRef name, DType dtype,
                                          llvm::ArrayRef<int64_t> shape) const;
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
    /// addZeroTensor: `size` zero bytes, not held in `bytes`.
    bool zero = false;
    uint64_t size = 0;
    /// addStreamedTensor: the bytes come from here, not from `bytes`.
    Producer producer;
  };
  /// Writes the data of `entry` (held or streamed) to `write`.
  static llvm::Error
  emitData(const std::pair<const std::string, Entry> &entry,
           llvm::function_ref<void(llvm::ArrayRef<uint8_t>)> write);
  /// The length prefix and the header, padded; `dataBytes` gets the size of
  /// the data section.
  std::string headerPrefix(uint64_t &dataBytes) const;
  /// The entries in data order: stored ones first, zero ones last.
  std::vector<const std::pair<const std::string, Entry> *> dataOrder() const;
  std::map<std::string, Entry> entries;
  std::map<std::string, std::string> metadataEntries;
};

} // namespace moe

#endif // MOE_LIB_WEIGHTS_SAFETENSORS_H
