//===- Npy.cpp - NumPy .npy reader and writer -----------------------------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Weights/Npy.h"
#include "moe/lib/Weights/InputFile.h"

#include "moe/lib/Weights/AtomicFile.h"
#include "moe/runtime/Float16.h"
#include "moe/lib/Weights/Safetensors.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cctype>
#include <map>
#include <optional>

using namespace llvm;

namespace moe {

static constexpr char kMagic[] = "\x93NUMPY";
static constexpr size_t kMagicSize = 6;

StringRef npyDescr(NpyDType dtype) {
  switch (dtype) {
  case NpyDType::F16:
    return "<f2";
  case NpyDType::F32:
    return "<f4";
  case NpyDType::F64:
    return "<f8";
  case NpyDType::I32:
    return "<i4";
  case NpyDType::I64:
    return "<i8";
  }
  llvm_unreachable("unknown NpyDType");
}

uint64_t npyDTypeSize(NpyDType dtype) {
  switch (dtype) {
  case NpyDType::F16:
    return 2;
  case NpyDType::F32:
  case NpyDType::I32:
    return 4;
  case NpyDType::F64:
  case NpyDType::I64:
    return 8;
  }
  llvm_unreachable("unknown NpyDType");
}

int64_t NpyArray::numElements() const {
  int64_t count = 1;
  for (int64_t dim : shape)
    count *= dim;
  return count;
}

std::vector<float> NpyArray::toF32() const {
  int64_t count = numElements();
  std::vector<float> values(count);
  const uint8_t *in = raw.data();
  for (int64_t i = 0; i < count; ++i) {
    switch (dtype) {
    case NpyDType::F16:
      values[i] = f16ToFloat(support::endian::read16le(in + 2 * i));
      break;
    case NpyDType::F32:
      values[i] = bitsToFloat(support::endian::read32le(in + 4 * i));
      break;
    case NpyDType::F64:
      values[i] = static_cast<float>(
          llvm::bit_cast<double>(support::endian::read64le(in + 8 * i)));
      break;
    case NpyDType::I32:
      values[i] = static_cast<float>(
          static_cast<int32_t>(support::endian::read32le(in + 4 * i)));
      break;
    case NpyDType::I64:
      values[i] = static_cast<float>(
          static_cast<int64_t>(support::endian::read64le(in + 8 * i)));
      break;
    }
  }
  return values;
}

Expected<std::vector<int64_t>> NpyArray::toI64() const {
  if (dtype != NpyDType::I32 && dtype != NpyDType::I64)
    return createStringError("npy: array of dtype " + npyDescr(dtype) +
                             " cannot be read as integers (expected <i4 or "
                             "<i8)");
  int64_t count = numElements();
  std::vector<int64_t> values(count);
  for (int64_t i = 0; i < count; ++i)
    values[i] =
        dtype == NpyDType::I32
            ? static_cast<int32_t>(support::endian::read32le(&raw[4 * i]))
            : static_cast<int64_t>(support::endian::read64le(&raw[8 * i]));
  return values;
}

//===----------------------------------------------------------------------===//
// Header parsing
//===----------------------------------------------------------------------===//

namespace {
/// A value of the Python dict literal in a .npy header.
struct HeaderValue {
  enum Kind { String, Bool, Tuple, Other } kind = Other;
  std::string text;
  bool flag = false;
  std::vector<int64_t> items;
};

/// Parses the small subset of Python literal syntax that numpy writes:
/// {'key': value, ...} with string, True/False and int-tuple values.
class HeaderParser {
public:
  explicit HeaderParser(StringRef text) : text(text) {}

  Expected<std::map<std::string, HeaderValue>> parseDict() {
    std::map<std::string, HeaderValue> dict;
    skipSpace();
    if (!consume('{'))
      return error("expected '{' at the start of the header dictionary");
    while (true) {
      skipSpace();
      if (consume('}'))
        break;
      std::optional<std::string> key = parseString();
      if (!key)
        return error("expected a quoted key");
      skipSpace();
      if (!consume(':'))
        return error("expected ':' after key '" + *key + "'");
      skipSpace();
      Expected<HeaderValue> value = parseValue();
      if (!value)
        return value.takeError();
      dict[*key] = std::move(*value);
      skipSpace();
      if (consume(','))
        continue;
      skipSpace();
      if (consume('}'))
        break;
      return error("expected ',' or '}' after the value of '" + *key + "'");
    }
    return dict;
  }

private:
  Error error(const Twine &message) {
    return createStringError(message + " at offset " + Twine(pos));
  }

  void skipSpace() {
    while (pos < text.size() &&
           std::isspace(static_cast<unsigned char>(text[pos])))
      ++pos;
  }

  bool consume(char c) {
    if (pos < text.size() && text[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  }

  bool consumeWord(StringRef word) {
    if (text.substr(pos).starts_with(word)) {
      pos += word.size();
      return true;
    }
    return false;
  }

  std::optional<std::string> parseString() {
    if (pos >= text.size() || (text[pos] != '\'' && text[pos] != '"'))
      return std::nullopt;
    char quote = text[pos++];
    std::string result;
    while (pos < text.size() && text[pos] != quote) {
      if (text[pos] == '\\' && pos + 1 < text.size())
        ++pos;
      result.push_back(text[pos++]);
    }
    if (pos >= text.size())
      return std::nullopt;
    ++pos;
    return result;
  }

  std::optional<int64_t> parseInt() {
    size_t start = pos;
    while (pos < text.size() &&
           std::isdigit(static_cast<unsigned char>(text[pos])))
      ++pos;
    int64_t value;
    if (pos == start || text.slice(start, pos).getAsInteger(10, value))
      return std::nullopt;
    consume('L'); // Python 2 long literals.
    return value;
  }

  Expected<HeaderValue> parseValue() {
    HeaderValue value;
    if (std::optional<std::string> s = parseString()) {
      value.kind = HeaderValue::String;
      value.text = std::move(*s);
      return value;
    }
    if (consumeWord("True") || consumeWord("False")) {
      value.kind = HeaderValue::Bool;
      value.flag = text.substr(0, pos).ends_with("True");
      return value;
    }
    if (consume('(')) {
      value.kind = HeaderValue::Tuple;
      while (true) {
        skipSpace();
        if (consume(')'))
          return value;
        std::optional<int64_t> item = parseInt();
        if (!item)
          return error("expected a non-negative integer in the shape tuple");
        value.items.push_back(*item);
        skipSpace();
        if (consume(','))
          continue;
        skipSpace();
        if (consume(')'))
          return value;
        return error("expected ',' or ')' in the shape tuple");
      }
    }
    // Anything else (a structured dtype list, a nested dict): skip it so
    // that the caller can report which key had the unsupported value.
    int depth = 0;
    while (pos < text.size()) {
      char c = text[pos];
      if (c == '[' || c == '(' || c == '{')
        ++depth;
      else if (c == ']' || c == ')' || c == '}') {
        if (depth == 0)
          break;
        --depth;
      } else if (c == ',' && depth == 0)
        break;
      ++pos;
    }
    value.kind = HeaderValue::Other;
    return value;
  }

  StringRef text;
  size_t pos = 0;
};
} // namespace

Expected<NpyArray> parseNpy(StringRef bytes, StringRef name) {
  auto fail = [&](const Twine &message) {
    return createStringError(name + ": " + message);
  };
  if (bytes.size() < kMagicSize ||
      bytes.substr(0, kMagicSize) != StringRef(kMagic, kMagicSize)) {
    if (bytes.size() < kMagicSize &&
        StringRef(kMagic, kMagicSize).starts_with(bytes))
      return fail("truncated: the file is " + Twine(bytes.size()) +
                  " bytes, shorter than the .npy magic string");
    return fail("bad magic: not a .npy file (expected the bytes "
                "\\x93NUMPY at the start)");
  }
  if (bytes.size() < kMagicSize + 2)
    return fail("truncated: the file ends inside the format version");
  unsigned major = static_cast<unsigned char>(bytes[6]);
  unsigned minor = static_cast<unsigned char>(bytes[7]);
  if (major < 1 || major > 3 || minor != 0)
    return fail("unsupported .npy format version " + Twine(major) + "." +
                Twine(minor) + " (supported: 1.0, 2.0, 3.0)");
  size_t lengthSize = major == 1 ? 2 : 4;
  size_t prefix = kMagicSize + 2 + lengthSize;
  if (bytes.size() < prefix)
    return fail("truncated: the file ends inside the header length");
  uint64_t headerLength = major == 1
                              ? support::endian::read16le(bytes.data() + 8)
                              : support::endian::read32le(bytes.data() + 8);
  if (headerLength > bytes.size() - prefix)
    return fail("truncated: the header is " + Twine(headerLength) +
                " bytes but only " + Twine(bytes.size() - prefix) +
                " bytes follow the header length");
  StringRef header = bytes.substr(prefix, headerLength);

  Expected<std::map<std::string, HeaderValue>> dict =
      HeaderParser(header).parseDict();
  if (!dict)
    return fail("malformed header '" + header.rtrim() +
                "': " + toString(dict.takeError()));
  for (StringRef key : {"descr", "fortran_order", "shape"})
    if (!dict->count(key.str()))
      return fail("malformed header: key '" + key + "' is missing");

  const HeaderValue &descr = dict->at("descr");
  const char *supported = "(supported: <f2, <f4, <f8, <i4, <i8)";
  if (descr.kind != HeaderValue::String)
    return fail("unsupported dtype: structured or non-string 'descr' values "
                "are not supported " +
                Twine(supported));
  NpyArray array;
  if (descr.text == "<f2")
    array.dtype = NpyDType::F16;
  else if (descr.text == "<f4")
    array.dtype = NpyDType::F32;
  else if (descr.text == "<f8")
    array.dtype = NpyDType::F64;
  else if (descr.text == "<i4")
    array.dtype = NpyDType::I32;
  else if (descr.text == "<i8")
    array.dtype = NpyDType::I64;
  else if (StringRef(descr.text).starts_with(">"))
    return fail("unsupported dtype '" + descr.text +
                "': big-endian data is not supported " + supported);
  else
    return fail("unsupported dtype '" + descr.text + "' " + supported);

  const HeaderValue &fortran = dict->at("fortran_order");
  if (fortran.kind != HeaderValue::Bool)
    return fail("malformed header: 'fortran_order' is not True or False");
  if (fortran.flag)
    return fail("fortran_order arrays are not supported: only C order; "
                "save with numpy.ascontiguousarray(a)");

  const HeaderValue &shape = dict->at("shape");
  if (shape.kind != HeaderValue::Tuple)
    return fail("malformed header: 'shape' is not a tuple of integers");
  array.shape = shape.items;

  int64_t elements = 1;
  int64_t needed = 0;
  bool overflow = false;
  for (int64_t dim : array.shape)
    overflow |= MulOverflow(elements, dim, elements);
  overflow |= MulOverflow(
      elements, static_cast<int64_t>(npyDTypeSize(array.dtype)), needed);
  if (overflow)
    return fail("shape " + formatShape(array.shape) +
                " overflows 64-bit byte counts");
  uint64_t available = bytes.size() - prefix - headerLength;
  if (static_cast<uint64_t>(needed) > available)
    return fail("data shorter than the shape says: shape " +
                formatShape(array.shape) + " of " + descr.text + " needs " +
                Twine(needed) + " bytes, the file has " + Twine(available) +
                " after the header");
  const uint8_t *data =
      reinterpret_cast<const uint8_t *>(bytes.data() + prefix + headerLength);
  array.raw.assign(data, data + needed);
  return array;
}

Expected<NpyArray> readNpy(StringRef path) {
  if (Error e = checkRegularFile(path, ".npy file"))
    return std::move(e);
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getFile(path, /*IsText=*/false,
                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return createStringError(
        path + ": cannot open .npy file: " + buffer.getError().message());
  return parseNpy((*buffer)->getBuffer(), path);
}

//===----------------------------------------------------------------------===//
// Writing
//===----------------------------------------------------------------------===//

static std::string npyHeader(StringRef descr, ArrayRef<int64_t> shape) {
  std::string dict =
      "{'descr': '" + descr.str() + "', 'fortran_order': False, 'shape': (";
  for (int64_t dim : shape)
    dict += std::to_string(dim) + ", ";
  if (shape.size() > 1)
    dict.resize(dict.size() - 2); // "(2, 3)" but "(5,)".
  else if (shape.size() == 1)
    dict.pop_back();
  dict += "), }";
  // Pad with spaces and a final newline so that the data starts at a
  // multiple of 64 bytes, as numpy does.
  size_t unpadded = kMagicSize + 2 + 2 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';

  std::string out(kMagic, kMagicSize);
  out += '\x01';
  out += '\x00';
  char length[2];
  support::endian::write16le(length, static_cast<uint16_t>(dict.size()));
  out.append(length, 2);
  return out + dict;
}

std::string serializeNpyF32(ArrayRef<int64_t> shape, ArrayRef<float> data) {
  std::string out = npyHeader("<f4", shape);
  for (float value : data) {
    char bytes[4];
    support::endian::write32le(bytes, floatToBits(value));
    out.append(bytes, 4);
  }
  return out;
}

std::string serializeNpyI32(ArrayRef<int64_t> shape, ArrayRef<int32_t> data) {
  std::string out = npyHeader("<i4", shape);
  for (int32_t value : data) {
    char bytes[4];
    support::endian::write32le(bytes, static_cast<uint32_t>(value));
    out.append(bytes, 4);
  }
  return out;
}

static Error checkShape(StringRef path, ArrayRef<int64_t> shape, size_t count) {
  int64_t elements = 1;
  for (int64_t dim : shape) {
    if (dim < 0)
      return createStringError(path + ": negative dimension in shape " +
                               formatShape(shape));
    if (MulOverflow(elements, dim, elements))
      return createStringError(path + ": shape " + formatShape(shape) +
                               " overflows");
  }
  if (static_cast<uint64_t>(elements) != count)
    return createStringError(path + ": shape " + formatShape(shape) + " has " +
                             Twine(elements) + " elements but the data has " +
                             Twine(count));
  return Error::success();
}

Error writeNpyF32(StringRef path, ArrayRef<int64_t> shape,
                  ArrayRef<float> data) {
  if (Error error = checkShape(path, shape, data.size()))
    return error;
  return writeFileAtomically(path, serializeNpyF32(shape, data));
}

Error writeNpyI32(StringRef path, ArrayRef<int64_t> shape,
                  ArrayRef<int32_t> data) {
  if (Error error = checkShape(path, shape, data.size()))
    return error;
  return writeFileAtomically(path, serializeNpyI32(shape, data));
}

} // namespace moe
