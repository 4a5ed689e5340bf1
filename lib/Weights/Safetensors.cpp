//===- Safetensors.cpp - safetensors reader and writer --------------------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Weights/Safetensors.h"
#include "moe/lib/Weights/InputFile.h"

#include "moe/lib/Weights/AtomicFile.h"
#include "moe/runtime/Float16.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace llvm;

namespace moe {

namespace {
struct DTypeEntry {
  DType dtype;
  const char *name;
  uint64_t size;
};
} // namespace

// Order of the list printed in "supported dtypes" messages.
static const DTypeEntry kDTypes[] = {
    {DType::Bool, "BOOL", 1},      {DType::U8, "U8", 1},
    {DType::I8, "I8", 1},          {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},        {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},        {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},        {DType::F8E4M3, "F8_E4M3", 1},
    {DType::F8E5M2, "F8_E5M2", 1}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},      {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},
};

// The reference implementation refuses headers above 100 MB; so do we, so
// that a corrupt length cannot make us parse gigabytes as JSON.
static constexpr uint64_t kMaxHeaderSize = 100'000'000;

static const DTypeEntry &entryFor(DType dtype) {
  for (const DTypeEntry &entry : kDTypes)
    if (entry.dtype == dtype)
      return entry;
  llvm_unreachable("every DType is in kDTypes");
}

StringRef dtypeName(DType dtype) { return entryFor(dtype).name; }

uint64_t dtypeSize(DType dtype) { return entryFor(dtype).size; }

std::optional<DType> parseDType(StringRef name) {
  for (const DTypeEntry &entry : kDTypes)
    if (name == entry.name)
      return entry.dtype;
  return std::nullopt;
}

std::string supportedDTypeNames() {
  std::string names;
  for (const DTypeEntry &entry : kDTypes) {
    if (!names.empty())
      names += ", ";
    names += entry.name;
  }
  return names;
}

bool isConvertibleFloat(DType dtype) {
  return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}

Expected<std::vector<uint8_t>> encodeFloats(ArrayRef<float> values,
                                            DType dtype) {
  if (!isConvertibleFloat(dtype))
    return createStringError("cannot convert floats to dtype " +
                             dtypeName(dtype) + " (supported: F32, F16, BF16)");
  std::vector<uint8_t> bytes(values.size() * dtypeSize(dtype));
  uint8_t *out = bytes.data();
  for (float value : values) {
    switch (dtype) {
    case DType::F32:
      support::endian::write32le(out, floatToBits(value));
      out += 4;
      break;
    case DType::F16:
      support::endian::write16le(out, floatToF16(value));
      out += 2;
      break;
    default:
      support::endian::write16le(out, floatToBF16(value));
      out += 2;
      break;
    }
  }
  return bytes;
}

Expected<std::vector<float>> decodeFloats(ArrayRef<uint8_t> bytes,
                                          DType dtype) {
  if (!isConvertibleFloat(dtype))
    return createStringError("dtype " + dtypeName(dtype) +
                             " cannot be read as float (supported: F32, F16, "
                             "BF16)");
  uint64_t size = dtypeSize(dtype);
  if (bytes.size() % size != 0)
    return createStringError("byte count " + Twine(bytes.size()) +
                             " is not a multiple of the " + dtypeName(dtype) +
                             " element size " + Twine(size));
  std::vector<float> values(bytes.size() / size);
  const uint8_t *in = bytes.data();
  for (float &value : values) {
    switch (dtype) {
    case DType::F32:
      value = bitsToFloat(support::endian::read32le(in));
      break;
    case DType::F16:
      value = f16ToFloat(support::endian::read16le(in));
      break;
    default:
      value = bf16ToFloat(support::endian::read16le(in));
      break;
    }
    in += size;
  }
  return values;
}

int64_t TensorInfo::numElements() const {
  int64_t count = 1;
  for (int64_t dim : shape)
    count *= dim;
  return count;
}

std::string formatShape(ArrayRef<int64_t> shape) {
  std::string text = "[";
  for (auto [index, dim] : llvm::enumerate(shape)) {
    if (index)
      text += ", ";
    text += std::to_string(dim);
  }
  return text + "]";
}

static std::string jsonText(const json::Value &value) {
  std::string text;
  raw_string_ostream os(text);
  os << value;
  return text;
}

//===----------------------------------------------------------------------===//
// SafetensorsFile
//===----------------------------------------------------------------------===//

Expected<std::unique_ptr<SafetensorsFile>>
SafetensorsFile::open(StringRef path) {
  if (Error e = checkRegularFile(path, "safetensors file"))
    return std::move(e);
  // One descriptor for the mapping (the header) and the reads (the data):
  // both see the same file even if the path is replaced meanwhile.
  std::string pathText = path.str();
  int fd = ::open(pathText.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || ::fstat(fd, &st) != 0) {
    std::error_code ec(errno, std::generic_category());
    if (fd >= 0)
      ::close(fd);
    return createStringError(path +
                             ": cannot open safetensors file: " + ec.message());
  }
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer = MemoryBuffer::getOpenFile(
      fd, path, static_cast<uint64_t>(st.st_size),
      /*RequiresNullTerminator=*/false, /*IsVolatile=*/false);
  if (!buffer) {
    ::close(fd);
    return createStringError(path + ": cannot open safetensors file: " +
                             buffer.getError().message());
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->filePath = path.str();
  file->buffer = std::move(*buffer);
  file->fd = fd;
  if (Error error = file->parse())
    return std::move(error);
  return std::move(file);
}

SafetensorsFile::~SafetensorsFile() {
  if (fd >= 0)
    ::close(fd);
}

Expected<std::unique_ptr<SafetensorsFile>>
SafetensorsFile::fromBuffer(std::unique_ptr<MemoryBuffer> buffer) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->filePath = buffer->getBufferIdentifier().str();
  file->buffer = std::move(buffer);
  if (Error error = file->parse())
    return std::move(error);
  return std::move(file);
}

uint64_t SafetensorsFile::dataSize() const {
  return buffer->getBufferSize() - 8 - headerBytes;
}

Error SafetensorsFile::parse() {
  StringRef contents = buffer->getBuffer();
  uint64_t fileSize = contents.size();
  auto fail = [&](const Twine &message) {
    return createStringError(filePath + ": " + message);
  };
  if (fileSize < 8)
    return fail("truncated: the file is " + Twine(fileSize) +
                " bytes, expected at least 8 for the header length");
  uint64_t headerLength = support::endian::read64le(contents.data());
  if (headerLength > fileSize - 8)
    return fail("header length " + Twine(headerLength) +
                " runs past the end of the file (file size " + Twine(fileSize) +
                " bytes, at most " + Twine(fileSize - 8) +
                " bytes after the length)");
  if (headerLength > kMaxHeaderSize)
    return fail("header length " + Twine(headerLength) +
                " exceeds the limit of " + Twine(kMaxHeaderSize) + " bytes");
  headerBytes = headerLength;
  uint64_t dataBytes = fileSize - 8 - headerLength;

  Expected<json::Value> header =
      parseBoundedJson(contents.substr(8, headerLength));
  if (!header)
    return fail("invalid JSON header: " + toString(header.takeError()));
  const json::Object *root = header->getAsObject();
  if (!root)
    return fail("the JSON header is not an object (expected a map from "
                "tensor name to {dtype, shape, data_offsets})");

  for (const auto &[key, value] : *root) {
    StringRef name = key;
    if (name == "__metadata__") {
      const json::Object *meta = value.getAsObject();
      if (!meta)
        return fail("field '__metadata__' is not an object (expected a map "
                    "from string to string), got " +
                    jsonText(value));
      for (const auto &[metaKey, metaValue] : *meta) {
        std::optional<StringRef> text = metaValue.getAsString();
        if (!text)
          return fail("field '__metadata__': value of '" + StringRef(metaKey) +
                      "' is not a string, got " + jsonText(metaValue));
        metadataEntries[StringRef(metaKey).str()] = text->str();
      }
      continue;
    }

    auto failTensor = [&](const Twine &message) {
      return fail("tensor '" + name + "': " + message);
    };
    const json::Object *entry = value.getAsObject();
    if (!entry)
      return failTensor("entry is not an object (expected {\"dtype\", "
                        "\"shape\", \"data_offsets\"}), got " +
                        jsonText(value));
    TensorInfo info;
    info.name = name.str();

    const json::Value *dtypeValue = entry->get("dtype");
    if (!dtypeValue)
      return failTensor("field 'dtype' is missing");
    std::optional<StringRef> dtypeText = dtypeValue->getAsString();
    if (!dtypeText)
      return failTensor("field 'dtype' is not a string, got " +
                        jsonText(*dtypeValue));
    std::optional<DType> dtype = parseDType(*dtypeText);
    if (!dtype)
      return failTensor("field 'dtype': unknown dtype '" + *dtypeText +
                        "' (supported: " + supportedDTypeNames() + ")");
    info.dtype = *dtype;

    const json::Value *shapeValue = entry->get("shape");
    if (!shapeValue)
      return failTensor("field 'shape' is missing");
    const json::Array *shape = shapeValue->getAsArray();
    auto badShape = [&]() {
      return failTensor("field 'shape' must be a list of non-negative "
                        "integers, got " +
                        jsonText(*shapeValue));
    };
    if (!shape)
      return badShape();
    int64_t elements = 1;
    bool overflow = false;
    for (const json::Value &dimValue : *shape) {
      std::optional<int64_t> dim = dimValue.getAsInteger();
      if (!dim || *dim < 0)
        return badShape();
      info.shape.push_back(*dim);
      overflow |= MulOverflow(elements, *dim, elements);
    }

    const json::Value *offsetsValue = entry->get("data_offsets");
    if (!offsetsValue)
      return failTensor("field 'data_offsets' is missing");
    const json::Array *offsets = offsetsValue->getAsArray();
    std::optional<uint64_t> begin, end;
    if (offsets && offsets->size() == 2) {
      begin = (*offsets)[0].getAsUINT64();
      end = (*offsets)[1].getAsUINT64();
    }
    if (!begin || !end || *begin > *end)
      return failTensor("field 'data_offsets' must be [begin, end] with "
                        "integers 0 <= begin <= end, got " +
                        jsonText(*offsetsValue));
    info.begin = *begin;
    info.end = *end;
    if (info.end > dataBytes)
      return failTensor(
          "field 'data_offsets' [" + Twine(info.begin) + ", " +
          Twine(info.end) + "] out of range: the data section is " +
          Twine(dataBytes) + " bytes (file size " + Twine(fileSize) +
          ", header " + Twine(headerLength) + " + 8)");

    int64_t expectedBytes = 0;
    overflow |= MulOverflow(elements, static_cast<int64_t>(dtypeSize(*dtype)),
                            expectedBytes);
    if (overflow)
      return failTensor("shape " + formatShape(info.shape) +
                        " overflows 64-bit byte counts");
    if (info.numBytes() != static_cast<uint64_t>(expectedBytes))
      return failTensor(
          "size mismatch: field 'data_offsets' [" + Twine(info.begin) + ", " +
          Twine(info.end) + "] covers " + Twine(info.numBytes()) +
          " bytes but shape " + formatShape(info.shape) + " of dtype " +
          dtypeName(*dtype) + " needs " + Twine(expectedBytes) + " bytes");
    entries.push_back(std::move(info));
  }

  llvm::sort(entries, [](const TensorInfo &a, const TensorInfo &b) {
    return a.name < b.name;
  });

  // Overlap check on the non-empty ranges, in data order.
  std::vector<const TensorInfo *> byOffset;
  for (const TensorInfo &info : entries)
    if (info.numBytes() != 0)
      byOffset.push_back(&info);
  llvm::sort(byOffset, [](const TensorInfo *a, const TensorInfo *b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t i = 1; i < byOffset.size(); ++i) {
    const TensorInfo *previous = byOffset[i - 1];
    const TensorInfo *current = byOffset[i];
    if (current->begin < previous->end)
      return fail("tensors '" + previous->name + "' [" +
                  Twine(previous->begin) + ", " + Twine(previous->end) +
                  ") and '" + current->name + "' [" + Twine(current->begin) +
                  ", " + Twine(current->end) + ") overlap in the data section");
  }
  // As the format's reference reader demands, the tensors tile the data
  // section exactly, from its first byte to its last: a header length that
  // is off by a few bytes (ending inside the header's padding) would
  // otherwise shift every tensor silently.
  uint64_t covered = 0;
  for (const TensorInfo *info : byOffset) {
    if (info->begin != covered)
      return fail("the data section has " + Twine(info->begin - covered) +
                  " bytes that belong to no tensor, at offset " +
                  Twine(covered) + " (before '" + info->name +
                  "'): tensors must cover it without gaps");
    covered = info->end;
  }
  if (covered != dataBytes)
    return fail("the tensors cover " + Twine(covered) +
                " bytes but the data section after the header is " +
                Twine(dataBytes) + " bytes (header length " +
                Twine(headerLength) + "): the header length or the "
                "data_offsets are wrong, or the file has trailing bytes");
  return Error::success();
}

const TensorInfo *SafetensorsFile::lookup(StringRef name) const {
  auto it = llvm::lower_bound(entries, name,
                              [](const TensorInfo &info, StringRef key) {
                                return StringRef(info.name) < key;
                              });
  if (it == entries.end() || it->name != name)
    return nullptr;
  return &*it;
}

ArrayRef<uint8_t> SafetensorsFile::rawData(const TensorInfo &info) const {
  const uint8_t *data = reinterpret_cast<const uint8_t *>(
      buffer->getBufferStart() + 8 + headerBytes);
  return ArrayRef<uint8_t>(data + info.begin, info.numBytes());
}

Error SafetensorsFile::read(const TensorInfo &info, uint64_t offset,
                            uint64_t size, uint8_t *dst) const {
  if (offset > info.numBytes() || size > info.numBytes() - offset)
    return createStringError(filePath + ": tensor '" + info.name +
                             "': bytes [" + Twine(offset) + ", " +
                             Twine(offset + size) + ") are outside its " +
                             Twine(info.numBytes()));
  if (fd < 0) {
    std::memcpy(dst, rawData(info).data() + offset, size);
    return Error::success();
  }
  uint64_t at = 8 + headerBytes + info.begin + offset, done = 0;
  while (done < size) {
    ssize_t n =
        ::pread(fd, dst + done, size - done, static_cast<off_t>(at + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return createStringError(
          filePath + ": tensor '" + info.name + "': cannot read: " +
          std::error_code(errno, std::generic_category()).message());
    if (n == 0) {
      struct stat st;
      uint64_t now = ::fstat(fd, &st) == 0 ? st.st_size : 0;
      return createStringError(
          filePath + ": tensor '" + info.name + "' ends at byte " +
          Twine(8 + headerBytes + info.end) + " but the file has only " +
          Twine(now) + " bytes now (" + Twine(buffer->getBufferSize()) +
          " when it was opened): it was truncated or rewritten while in use");
    }
    done += static_cast<uint64_t>(n);
  }
  return Error::success();
}

Expected<std::vector<uint8_t>>
SafetensorsFile::readBytes(const TensorInfo &info) const {
  std::vector<uint8_t> bytes(info.numBytes());
  if (Error e = read(info, 0, bytes.size(), bytes.data()))
    return std::move(e);
  return bytes;
}

Expected<ArrayRef<uint8_t>> SafetensorsFile::rawData(StringRef name) const {
  const TensorInfo *info = lookup(name);
  if (!info)
    return createStringError(filePath + ": no tensor named '" + name + "'");
  return rawData(*info);
}

Expected<std::vector<float>> SafetensorsFile::readF32(StringRef name) const {
  const TensorInfo *info = lookup(name);
  if (!info)
    return createStringError(filePath + ": no tensor named '" + name + "'");
  Expected<std::vector<uint8_t>> bytes = readBytes(*info);
  if (!bytes)
    return bytes.takeError();
  Expected<std::vector<float>> values = decodeFloats(*bytes, info->dtype);
  if (!values)
    return createStringError(filePath + ": tensor '" + name +
                             "': " + toString(values.takeError()));
  return values;
}

//===----------------------------------------------------------------------===//
// SafetensorsWriter
//===----------------------------------------------------------------------===//

Expected<uint64_t> SafetensorsWriter::checkNewTensor(
    StringRef name, DType dtype, ArrayRef<int64_t> shape) const {
  if (name.empty())
    return createStringError("safetensors: tensor names must not be empty");
  if (name == "__metadata__")
    return createStringError("safetensors: '__metadata__' is reserved and "
                             "cannot name a tensor");
  if (!json::isUTF8(name))
    return createStringError("safetensors: tensor name '" + name +
                             "' is not valid UTF-8");
  if (entries.count(name.str()))
    return createStringError("safetensors: tensor '" + name +
                             "' was added twice");
  int64_t elements = 1;
  bool overflow = false;
  for (int64_t dim : shape) {
    if (dim < 0)
      return createStringError("safetensors: tensor '" + name +
                               "' has a negative dimension in shape " +
                               formatShape(shape));
    overflow |= MulOverflow(elements, dim, elements);
  }
  int64_t expected = 0;
  overflow |=
      MulOverflow(elements, static_cast<int64_t>(dtypeSize(dtype)), expected);
  if (overflow)
    return createStringError("safetensors: tensor '" + name + "' of shape " +
                             formatShape(shape) + " and dtype " +
                             dtypeName(dtype) + " needs more than 2^63 bytes");
  return static_cast<uint64_t>(expected);
}

Error SafetensorsWriter::addTensor(StringRef name, DType dtype,
                                   ArrayRef<int64_t> shape,
                                   ArrayRef<uint8_t> bytes) {
  Expected<uint64_t> expected = checkNewTensor(name, dtype, shape);
  if (!expected)
    return expected.takeError();
  if (*expected != bytes.size())
    return createStringError(
        "safetensors: tensor '" + name + "' of shape " + formatShape(shape) +
        " and dtype " + dtypeName(dtype) + " needs " +
        std::to_string(*expected) + " bytes, got " + Twine(bytes.size()));
  entries[name.str()] = Entry{dtype, shape.vec(), bytes.vec(), false, *expected};
  return Error::success();
}

Error SafetensorsWriter::addZeroTensor(StringRef name, DType dtype,
                                       ArrayRef<int64_t> shape) {
  Expected<uint64_t> size = checkNewTensor(name, dtype, shape);
  if (!size)
    return size.takeError();
  entries[name.str()] = Entry{dtype, shape.vec(), {}, true, *size};
  return Error::success();
}

Error SafetensorsWriter::addStreamedTensor(StringRef name, DType dtype,
                                           ArrayRef<int64_t> shape,
                                           Producer produce) {
  Expected<uint64_t> size = checkNewTensor(name, dtype, shape);
  if (!size)
    return size.takeError();
  if (!produce)
    return createStringError("safetensors: tensor '" + name +
                             "' was added without a producer of its bytes");
  Entry entry{dtype, shape.vec(), {}, false, *size};
  entry.producer = std::move(produce);
  entries[name.str()] = std::move(entry);
  return Error::success();
}

Error SafetensorsWriter::addFloatTensor(StringRef name, DType dtype,
                                        ArrayRef<int64_t> shape,
                                        ArrayRef<float> values) {
  Expected<std::vector<uint8_t>> bytes = encodeFloats(values, dtype);
  if (!bytes)
    return createStringError("safetensors: tensor '" + name +
                             "': " + toString(bytes.takeError()));
  return addTensor(name, dtype, shape, *bytes);
}

void SafetensorsWriter::setMetadata(StringRef key, StringRef value) {
  metadataEntries[key.str()] = value.str();
}

uint64_t SafetensorsWriter::dataSize() const {
  uint64_t total = 0;
  for (const auto &entry : entries)
    total += entry.second.size;
  return total;
}

std::vector<const std::pair<const std::string, SafetensorsWriter::Entry> *>
SafetensorsWriter::dataOrder() const {
  std::vector<const std::pair<const std::string, Entry> *> order;
  for (bool zero : {false, true})
    for (const auto &entry : entries)
      if (entry.second.zero == zero)
        order.push_back(&entry);
  return order;
}

std::string SafetensorsWriter::headerPrefix(uint64_t &dataBytes) const {
  json::Object header;
  if (!metadataEntries.empty()) {
    json::Object meta;
    for (const auto &[key, value] : metadataEntries)
      meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto *entry : dataOrder()) {
    json::Array shape;
    for (int64_t dim : entry->second.shape)
      shape.push_back(dim);
    uint64_t end = offset + entry->second.size;
    header[entry->first] =
        json::Object{{"dtype", dtypeName(entry->second.dtype)},
                     {"shape", std::move(shape)},
                     {"data_offsets", json::Array{offset, end}}};
    offset = end;
  }
  dataBytes = offset;
  std::string headerText = jsonText(json::Value(std::move(header)));
  // Pad so that the data section starts 8-byte aligned.
  while ((8 + headerText.size()) % 8 != 0)
    headerText.push_back(' ');
  char length[8];
  support::endian::write64le(length, headerText.size());
  return std::string(length, 8) + headerText;
}

Error SafetensorsWriter::emitData(
    const std::pair<const std::string, Entry> &entry,
    function_ref<void(ArrayRef<uint8_t>)> write) {
  const Entry &e = entry.second;
  if (!e.producer) {
    write(e.bytes);
    return Error::success();
  }
  uint64_t produced = 0;
  auto fail = [&](const Twine &message) {
    return createStringError("safetensors: tensor '" + entry.first +
                             "': " + message);
  };
  Error error = e.producer([&](ArrayRef<uint8_t> piece) -> Error {
    // Checked before writing, so that a runaway producer cannot shift the
    // tensors after it.
    if (piece.size() > e.size - produced)
      return fail("the producer gave more than the " + Twine(e.size) +
                  " bytes its shape " + formatShape(e.shape) + " and dtype " +
                  dtypeName(e.dtype) + " need");
    produced += piece.size();
    write(piece);
    return Error::success();
  });
  if (error)
    return fail(toString(std::move(error)));
  if (produced != e.size)
    return fail("the producer gave " + Twine(produced) + " bytes, its shape " +
                formatShape(e.shape) + " and dtype " + dtypeName(e.dtype) +
                " need " + Twine(e.size));
  return Error::success();
}

Expected<std::string> SafetensorsWriter::serialize() const {
  uint64_t dataBytes = 0;
  std::string contents = headerPrefix(dataBytes);
  contents.reserve(contents.size() + dataBytes);
  for (const auto *entry : dataOrder()) {
    if (entry->second.zero) {
      contents.append(entry->second.size, '\0');
      continue;
    }
    if (Error error = emitData(*entry, [&](ArrayRef<uint8_t> piece) {
          contents.append(reinterpret_cast<const char *>(piece.data()),
                          piece.size());
        }))
      return std::move(error);
  }
  return contents;
}

Error SafetensorsWriter::write(StringRef path) const {
  uint64_t dataBytes = 0;
  std::string prefix = headerPrefix(dataBytes);
  // Zero tensors come last: the file is extended over them, not written.
  return writeFileAtomically(
      path,
      [&](raw_ostream &os) -> Error {
        os << prefix;
        for (const auto *entry : dataOrder())
          if (!entry->second.zero)
            if (Error error =
                    emitData(*entry, [&](ArrayRef<uint8_t> piece) {
                      os.write(reinterpret_cast<const char *>(piece.data()),
                               piece.size());
                    }))
              return error;
        return Error::success();
      },
      prefix.size() + dataBytes);
}

} // namespace moe
