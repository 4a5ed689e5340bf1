//===- WeightsTest.cpp - Tests of the MoEWeights library ------------------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Weights/AtomicFile.h"
#include "moe/runtime/Float16.h"
#include "moe/lib/Weights/Npy.h"
#include "moe/lib/Weights/Safetensors.h"
#include "moe/lib/Weights/WeightStore.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <sys/stat.h>
#include <cstring>
#include <limits>
#include <unistd.h>

using namespace llvm;
using namespace moe;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

/// A fresh folder under the system temporary directory, removed at the end.
class TempDir {
public:
  TempDir() {
    std::error_code ec =
        sys::fs::createUniqueDirectory("moe-weights-test", path);
    EXPECT_FALSE(ec) << ec.message();
  }
  ~TempDir() { sys::fs::remove_directories(path); }

  std::string file(StringRef name) const {
    SmallString<256> result(path);
    sys::path::append(result, name);
    return std::string(result);
  }
  std::string dir() const { return std::string(path); }

  /// Names of the entries of the folder, sorted.
  std::vector<std::string> list() const {
    std::vector<std::string> names;
    std::error_code ec;
    for (sys::fs::directory_iterator it(path, ec), end; it != end && !ec;
         it.increment(ec))
      names.push_back(sys::path::filename(it->path()).str());
    llvm::sort(names);
    return names;
  }

private:
  SmallString<128> path;
};

void writeBytes(StringRef path, StringRef bytes) {
  std::error_code ec;
  raw_fd_ostream os(path, ec);
  ASSERT_FALSE(ec) << ec.message();
  os << bytes;
}

std::string readBytes(StringRef path) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer = MemoryBuffer::getFile(path);
  if (!buffer)
    return "";
  return (*buffer)->getBuffer().str();
}

/// A safetensors file from a header text and a data section, with the
/// header length taken from the text unless given.
std::string rawSafetensors(StringRef header, StringRef data,
                           std::optional<uint64_t> length = std::nullopt) {
  char prefix[8];
  support::endian::write64le(prefix, length.value_or(header.size()));
  return std::string(prefix, 8) + header.str() + data.str();
}

template <typename T> std::string errorOf(Expected<T> value) {
  if (value)
    return "<no error>";
  return toString(value.takeError());
}

std::string errorOf(Error error) {
  if (!error)
    return "<no error>";
  return toString(std::move(error));
}

/// Opens a file holding `contents` and returns the error message.
std::string openError(const TempDir &tmp, StringRef contents) {
  std::string path = tmp.file("bad.safetensors");
  writeBytes(path, contents);
  return errorOf(SafetensorsFile::open(path));
}

#define EXPECT_CONTAINS(text, part)                                            \
  EXPECT_NE(std::string(text).find(part), std::string::npos)                   \
      << "'" << (text) << "' does not contain '" << (part) << "'"

//===----------------------------------------------------------------------===//
// Float16
//===----------------------------------------------------------------------===//

/// Independent decoding of a finite half: sign * significand * 2^exponent.
double referenceF16(uint16_t bits) {
  int exponent = (bits >> 10) & 0x1f;
  int mantissa = bits & 0x3ff;
  double sign = (bits & 0x8000) ? -1.0 : 1.0;
  if (exponent == 0)
    return sign * std::ldexp(mantissa, -24);
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

TEST(Float16Test, F16WideningIsExact) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    uint16_t h = static_cast<uint16_t>(bits);
    float value = f16ToFloat(h);
    int exponent = (h >> 10) & 0x1f;
    if (exponent == 0x1f) {
      if (h & 0x3ff)
        EXPECT_TRUE(std::isnan(value)) << bits;
      else
        EXPECT_EQ(value, (h & 0x8000) ? -INFINITY : INFINITY) << bits;
      continue;
    }
    EXPECT_EQ(static_cast<double>(value), referenceF16(h)) << bits;
    EXPECT_EQ(std::signbit(value), (h & 0x8000) != 0) << bits;
  }
  EXPECT_EQ(f16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(f16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(f16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16ToFloat(0x0400), std::ldexp(1.0f, -14));
}

TEST(Float16Test, F16RoundTripsEveryValue) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    uint16_t h = static_cast<uint16_t>(bits);
    uint16_t back = floatToF16(f16ToFloat(h));
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
      // NaN stays NaN, quiet, same sign.
      EXPECT_EQ(back & 0x7e00, 0x7e00) << bits;
      EXPECT_EQ(back & 0x8000, h & 0x8000) << bits;
      continue;
    }
    EXPECT_EQ(back, h) << bits;
  }
}

TEST(Float16Test, F16RoundsToNearestEven) {
  // Ties in the normal range: 1 + 2^-11 lies halfway between 1 and the next
  // half (1 + 2^-10); even wins. 1 + 3 * 2^-11 rounds up to the even one.
  EXPECT_EQ(floatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(floatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(floatToF16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)),
            0x3c01);
  // Overflow: 65504 is the largest half; 65520 is the tie with 2^16.
  EXPECT_EQ(floatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(floatToF16(65519.0f), 0x7bff);
  EXPECT_EQ(floatToF16(65520.0f), 0x7c00);
  EXPECT_EQ(floatToF16(-1e10f), 0xfc00);
  EXPECT_EQ(floatToF16(INFINITY), 0x7c00);
  EXPECT_EQ(floatToF16(-INFINITY), 0xfc00);
  // Subnormals, in units of 2^-24.
  float unit = std::ldexp(1.0f, -24);
  EXPECT_EQ(floatToF16(unit), 0x0001);
  EXPECT_EQ(floatToF16(0.5f * unit), 0x0000); // tie to even (zero)
  EXPECT_EQ(floatToF16(std::nextafter(0.5f * unit, 1.0f)), 0x0001);
  EXPECT_EQ(floatToF16(1.5f * unit), 0x0002); // tie to even
  EXPECT_EQ(floatToF16(2.5f * unit), 0x0002); // tie to even
  EXPECT_EQ(floatToF16(1e-9f), 0x0000);
  EXPECT_EQ(floatToF16(-1e-9f), 0x8000);
  EXPECT_EQ(floatToF16(1023.5f * unit), 0x0400); // carries into the normals
  EXPECT_EQ(floatToF16(-0.0f), 0x8000);
  // NaN: signalling float NaN with a low payload still becomes a NaN.
  uint16_t nan = floatToF16(bitsToFloat(0x7f800001u));
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  EXPECT_EQ(floatToF16(bitsToFloat(0xffc00000u)) & 0xfe00, 0xfe00);
}

TEST(Float16Test, F16MatchesNearestNeighbourSearch) {
  // Positive half bit patterns are ordered like their values, so the
  // nearest half can be found by binary search over f16ToFloat.
  uint64_t state = 12345;
  for (int i = 0; i < 200000; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t bits = static_cast<uint32_t>(state >> 32);
    // Spread over the half range: exponents roughly 2^-28 .. 2^17.
    bits = (bits & 0x807fffffu) | ((99 + (bits >> 23) % 46) << 23);
    float x = bitsToFloat(bits);
    double magnitude = std::fabs(static_cast<double>(x));
    uint16_t lo = 0, hi = 0x7c00;
    while (hi - lo > 1) {
      uint16_t mid = (lo + hi) / 2;
      if (f16ToFloat(mid) <= magnitude)
        lo = mid;
      else
        hi = mid;
    }
    double below = f16ToFloat(lo);
    double above = hi == 0x7c00 ? 65536.0 : f16ToFloat(hi);
    uint16_t expected;
    if (magnitude - below < above - magnitude)
      expected = lo;
    else if (magnitude - below > above - magnitude)
      expected = hi;
    else
      expected = (lo & 1) ? hi : lo;
    if (std::signbit(x))
      expected |= 0x8000;
    ASSERT_EQ(floatToF16(x), expected) << "bits " << bits;
  }
}

TEST(Float16Test, BF16WideningIsExactAndRoundTrips) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    uint16_t b = static_cast<uint16_t>(bits);
    float value = bf16ToFloat(b);
    EXPECT_EQ(floatToBits(value), bits << 16);
    if ((b & 0x7f80) == 0x7f80 && (b & 0x7f)) {
      uint16_t back = floatToBF16(value);
      EXPECT_EQ(back & 0x7fc0, 0x7fc0) << bits; // quiet NaN
      EXPECT_EQ(back & 0x8000, b & 0x8000) << bits;
      continue;
    }
    EXPECT_EQ(floatToBF16(value), b) << bits;
  }
}

TEST(Float16Test, BF16RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between bf16 1.0 (0x3f80) and 1 + 2^-7 (0x3f81).
  EXPECT_EQ(floatToBF16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(floatToBF16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(floatToBF16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)),
            0x3f81);
  EXPECT_EQ(floatToBF16(-(1.0f + std::ldexp(1.0f, -8))), 0xbf80);
  // The largest float rounds past the largest bf16.
  EXPECT_EQ(floatToBF16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(floatToBF16(bitsToFloat(0x7f7f7fffu)), 0x7f7f);
  EXPECT_EQ(floatToBF16(INFINITY), 0x7f80);
  EXPECT_EQ(floatToBF16(-INFINITY), 0xff80);
  EXPECT_EQ(floatToBF16(-0.0f), 0x8000);
  // Float subnormals: ties to even, including the tie that rounds up.
  EXPECT_EQ(floatToBF16(bitsToFloat(0x00008000u)), 0x0000);
  EXPECT_EQ(floatToBF16(bitsToFloat(0x00018000u)), 0x0002);
  EXPECT_EQ(floatToBF16(bitsToFloat(0x00008001u)), 0x0001);
  // A signalling NaN whose payload sits in the dropped bits must not
  // become Inf.
  EXPECT_EQ(floatToBF16(bitsToFloat(0x7f800001u)), 0x7fc0);
  EXPECT_EQ(floatToBF16(bitsToFloat(0xff800001u)), 0xffc0);
}

TEST(Float16Test, BF16MatchesNearestNeighbourSearch) {
  uint64_t state = 99;
  for (int i = 0; i < 200000; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t bits = static_cast<uint32_t>(state >> 32);
    float x = bitsToFloat(bits);
    if (std::isnan(x) || std::isinf(x))
      continue;
    uint32_t truncated = bits & 0xffff0000u;
    double below = bitsToFloat(truncated);
    double above = bf16ToFloat(static_cast<uint16_t>((truncated >> 16) + 1));
    if ((truncated & 0x7fffffffu) == 0x7f7f0000u)
      above = std::copysign(std::ldexp(1.0, 128), below); // past the max
    double distBelow = std::fabs(x - below), distAbove = std::fabs(above - x);
    uint16_t expected = static_cast<uint16_t>(truncated >> 16);
    if (distAbove < distBelow || (distAbove == distBelow && (expected & 1)))
      ++expected;
    ASSERT_EQ(floatToBF16(x), expected) << "bits " << bits;
  }
}

//===----------------------------------------------------------------------===//
// Safetensors round trips
//===----------------------------------------------------------------------===//

TEST(DTypeTest, NamesAndSizes) {
  EXPECT_EQ(dtypeName(DType::BF16), "BF16");
  EXPECT_EQ(dtypeName(DType::F8E4M3), "F8_E4M3");
  EXPECT_EQ(parseDType("I64"), DType::I64);
  EXPECT_EQ(parseDType("f32"), std::nullopt);
  EXPECT_EQ(dtypeSize(DType::F16), 2u);
  EXPECT_EQ(dtypeSize(DType::I64), 8u);
  EXPECT_EQ(dtypeSize(DType::Bool), 1u);
  std::string all = supportedDTypeNames();
  for (StringRef name :
       {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F8_E4M3",
        "F8_E5M2", "F16", "BF16", "F32", "F64"}) {
    EXPECT_CONTAINS(all, name.str());
    ASSERT_TRUE(parseDType(name).has_value());
    EXPECT_EQ(dtypeName(*parseDType(name)), name);
  }
}

TEST(SafetensorsTest, RoundTripsEveryDType) {
  TempDir tmp;
  std::string path = tmp.file("all.safetensors");
  SafetensorsWriter writer;
  // Raw bytes for every dtype: element i holds bytes i*size .. i*size+size-1.
  std::map<std::string, std::vector<uint8_t>> raw;
  for (StringRef name : {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64",
                         "U64", "F8_E4M3", "F8_E5M2", "F64"}) {
    DType dtype = *parseDType(name);
    std::vector<uint8_t> bytes(3 * dtypeSize(dtype));
    for (size_t i = 0; i < bytes.size(); ++i)
      bytes[i] = static_cast<uint8_t>(i * 7 + name.size());
    if (dtype == DType::Bool)
      bytes = {0, 1, 1};
    std::string tensor = "raw." + name.lower();
    ASSERT_FALSE(errorOf(writer.addTensor(tensor, dtype, {3}, bytes)) !=
                 "<no error>");
    raw[tensor] = bytes;
  }
  std::vector<float> values = {1.0f, -2.5f, 0.375f, 65504.0f, -0.0f, 0.5f};
  for (DType dtype : {DType::F32, DType::F16, DType::BF16})
    ASSERT_FALSE(writer.addFloatTensor(("float." + dtypeName(dtype)).str(),
                                       dtype, {2, 3}, values));
  ASSERT_FALSE(writer.addFloatTensor("scalar", DType::F32, {}, {3.25f}));
  ASSERT_FALSE(writer.addTensor("empty", DType::F32, {0, 4}, {}));
  writer.setMetadata("format", "pt");
  writer.setMetadata("note", "a \"quoted\" value");
  ASSERT_FALSE(writer.write(path));

  Expected<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << errorOf(std::move(file));
  const SafetensorsFile &st = **file;
  EXPECT_EQ(st.path(), path);
  EXPECT_EQ((8 + st.headerSize()) % 8, 0u);
  EXPECT_EQ(st.metadata().at("format"), "pt");
  EXPECT_EQ(st.metadata().at("note"), "a \"quoted\" value");
  EXPECT_EQ(st.tensors().size(), raw.size() + 5);
  for (size_t i = 1; i < st.tensors().size(); ++i)
    EXPECT_LT(st.tensors()[i - 1].name, st.tensors()[i].name);

  for (const auto &[name, bytes] : raw) {
    const TensorInfo *info = st.lookup(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(info->shape, std::vector<int64_t>{3});
    EXPECT_EQ(st.rawData(*info).vec(), bytes) << name;
  }
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    std::string name = ("float." + dtypeName(dtype)).str();
    const TensorInfo *info = st.lookup(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, dtype);
    EXPECT_EQ(info->shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(info->numBytes(), 6 * dtypeSize(dtype));
    Expected<std::vector<float>> back = st.readF32(name);
    ASSERT_TRUE(bool(back)) << errorOf(std::move(back));
    if (dtype == DType::BF16) // 65504 is not a bf16: it rounds to 65536.
      EXPECT_EQ((*back)[3], 65536.0f);
    else
      EXPECT_EQ((*back)[3], 65504.0f);
    EXPECT_EQ((*back)[0], 1.0f);
    EXPECT_EQ((*back)[1], -2.5f);
    EXPECT_EQ((*back)[2], 0.375f);
    EXPECT_TRUE(std::signbit((*back)[4]));
  }
  EXPECT_EQ(st.lookup("scalar")->shape.size(), 0u);
  EXPECT_EQ(st.lookup("scalar")->numElements(), 1);
  EXPECT_EQ(*st.readF32("scalar"), std::vector<float>{3.25f});
  EXPECT_EQ(st.lookup("empty")->numBytes(), 0u);
  EXPECT_EQ(st.lookup("missing"), nullptr);
  EXPECT_CONTAINS(errorOf(st.readF32("missing")), "missing");
  EXPECT_CONTAINS(errorOf(st.readF32("missing")), path);
}

TEST(SafetensorsTest, WriterRoundsFloatsToNearestEven) {
  SafetensorsWriter writer;
  float tie = 1.0f + std::ldexp(1.0f, -8);
  ASSERT_FALSE(writer.addFloatTensor("b", DType::BF16, {2}, {tie, -tie}));
  std::string bytes = cantFail(writer.serialize());
  auto file = SafetensorsFile::fromBuffer(
      MemoryBuffer::getMemBufferCopy(bytes, "mem.safetensors"));
  ASSERT_TRUE(bool(file)) << errorOf(std::move(file));
  EXPECT_EQ(*(*file)->readF32("b"), (std::vector<float>{1.0f, -1.0f}));
  ArrayRef<uint8_t> raw = (*file)->rawData(*(*file)->lookup("b"));
  EXPECT_EQ(support::endian::read16le(raw.data()), 0x3f80);
}

TEST(SafetensorsTest, WriterOutputIsIndependentOfInsertionOrder) {
  SafetensorsWriter a, b;
  ASSERT_FALSE(a.addFloatTensor("x", DType::F32, {1}, {1.0f}));
  ASSERT_FALSE(a.addFloatTensor("y", DType::F16, {2}, {2.0f, 3.0f}));
  a.setMetadata("format", "pt");
  b.setMetadata("format", "pt");
  ASSERT_FALSE(b.addFloatTensor("y", DType::F16, {2}, {2.0f, 3.0f}));
  ASSERT_FALSE(b.addFloatTensor("x", DType::F32, {1}, {1.0f}));
  EXPECT_EQ(cantFail(a.serialize()), cantFail(b.serialize()));
  // The header is padded with spaces to align the data section.
  std::string text = cantFail(a.serialize());
  uint64_t length = support::endian::read64le(text.data());
  EXPECT_EQ((8 + length) % 8, 0u);
  EXPECT_EQ(text.size(), 8 + length + 4 + 4);
  EXPECT_EQ(text[8], '{');
}

TEST(SafetensorsTest, WriterRejectsBadTensors) {
  SafetensorsWriter writer;
  ASSERT_FALSE(writer.addFloatTensor("a", DType::F32, {2}, {1.0f, 2.0f}));
  EXPECT_CONTAINS(errorOf(writer.addFloatTensor("a", DType::F32, {1}, {1.0f})),
                  "added twice");
  EXPECT_CONTAINS(
      errorOf(writer.addTensor("b", DType::F32, {3}, std::vector<uint8_t>(8))),
      "needs 12 bytes, got 8");
  EXPECT_CONTAINS(errorOf(writer.addTensor("c", DType::F32, {-1}, {})),
                  "negative dimension");
  EXPECT_CONTAINS(errorOf(writer.addTensor("__metadata__", DType::U8, {0}, {})),
                  "reserved");
  EXPECT_CONTAINS(errorOf(writer.addTensor("", DType::U8, {0}, {})), "empty");
  std::string bad = errorOf(writer.addFloatTensor("d", DType::I32, {1}, {1}));
  EXPECT_CONTAINS(bad, "'d'");
  EXPECT_CONTAINS(bad, "I32");
  EXPECT_EQ(writer.size(), 1u);
}

TEST(SafetensorsTest, ReadF32RejectsIntegerTensors) {
  SafetensorsWriter writer;
  ASSERT_FALSE(writer.addTensor("ids", DType::I32, {1}, {1, 0, 0, 0}));
  auto file = SafetensorsFile::fromBuffer(
      MemoryBuffer::getMemBufferCopy(cantFail(writer.serialize()), "ids.safetensors"));
  ASSERT_TRUE(bool(file));
  std::string message = errorOf((*file)->readF32("ids"));
  EXPECT_CONTAINS(message, "ids.safetensors");
  EXPECT_CONTAINS(message, "'ids'");
  EXPECT_CONTAINS(message, "I32");
}

TEST(SafetensorsTest, ZeroTensorsAreHolesAfterTheStoredData) {
  TempDir tmp;
  std::string path = tmp.file("shapes.safetensors");
  SafetensorsWriter writer;
  // 64 MiB of zeros, and a small stored tensor named after it.
  ASSERT_FALSE(writer.addZeroTensor("a.big", DType::BF16, {4096, 8192}));
  ASSERT_FALSE(writer.addFloatTensor("b.small", DType::F32, {2}, {1.5f, -2.0f}));
  ASSERT_FALSE(writer.addZeroTensor("c.odd", DType::F16, {3}));
  EXPECT_EQ(writer.dataSize(), 4096u * 8192u * 2u + 8u + 6u);
  // Adding a zero tensor twice or with a bad shape fails as for others.
  EXPECT_CONTAINS(errorOf(writer.addZeroTensor("a.big", DType::F32, {1})),
                  "'a.big' was added twice");
  EXPECT_CONTAINS(errorOf(writer.addZeroTensor("d", DType::F32, {-1})),
                  "negative dimension");
  ASSERT_FALSE(writer.write(path));

  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << errorOf(std::move(file));
  EXPECT_EQ(*(*file)->readF32("b.small"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(*(*file)->readF32("c.odd"), std::vector<float>(3, 0.0f));
  std::vector<float> big = *(*file)->readF32("a.big");
  ASSERT_EQ(big.size(), 4096u * 8192u);
  EXPECT_EQ(std::count(big.begin(), big.end(), 0.0f),
            static_cast<std::ptrdiff_t>(big.size()));
  // The stored tensor comes first in the data, the zero ones after it.
  const auto &tensors = (*file)->tensors();
  auto offsetOf = [&](StringRef name) {
    for (const auto &t : tensors)
      if (t.name == name)
        return t.begin;
    return ~uint64_t(0);
  };
  EXPECT_EQ(offsetOf("b.small"), 0u);
  EXPECT_EQ(offsetOf("a.big"), 8u);
  // serialize() spells the zeros out: the same bytes as the file.
  auto buffer = MemoryBuffer::getFile(path);
  ASSERT_TRUE(bool(buffer));
  EXPECT_TRUE((*buffer)->getBuffer() == cantFail(writer.serialize()));
  // The zeros take (almost) no disk space.
  sys::fs::file_status st;
  ASSERT_FALSE(sys::fs::status(path, st));
  struct stat raw;
  ASSERT_EQ(::stat(path.c_str(), &raw), 0);
  EXPECT_LT(static_cast<uint64_t>(raw.st_blocks) * 512, st.getSize() / 16);
}

TEST(SafetensorsTest, StreamedTensorsWriteTheSameBytesAsHeldOnes) {
  TempDir tmp;
  std::vector<float> values(3000);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = static_cast<float>(i) * 0.25f - 7.0f;
  std::vector<uint8_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  SafetensorsWriter held, streamed;
  for (SafetensorsWriter *w : {&held, &streamed})
    w->setMetadata("format", "pt");
  ASSERT_FALSE(held.addFloatTensor("m.w", DType::BF16, {30, 100}, values));
  ASSERT_FALSE(held.addTensor("m.ids", DType::I32, {2}, ids));
  ASSERT_FALSE(held.addZeroTensor("m.z", DType::F16, {5}));
  // The same tensors, produced at write time in pieces of 7 elements.
  int calls = 0;
  ASSERT_FALSE(streamed.addStreamedTensor(
      "m.w", DType::BF16, {30, 100},
      [&](SafetensorsWriter::Sink sink) -> Error {
        ++calls;
        for (size_t i = 0; i < values.size(); i += 7) {
          size_t n = std::min<size_t>(7, values.size() - i);
          Expected<std::vector<uint8_t>> bytes = encodeFloats(
              ArrayRef<float>(values).slice(i, n), DType::BF16);
          if (!bytes)
            return bytes.takeError();
          if (Error e = sink(*bytes))
            return e;
        }
        return Error::success();
      }));
  ASSERT_FALSE(streamed.addStreamedTensor(
      "m.ids", DType::I32, {2},
      [&](SafetensorsWriter::Sink sink) { return sink(ids); }));
  ASSERT_FALSE(streamed.addZeroTensor("m.z", DType::F16, {5}));
  EXPECT_EQ(calls, 0); // Nothing is produced before the file is written.
  EXPECT_EQ(held.dataSize(), streamed.dataSize());
  ASSERT_FALSE(held.write(tmp.file("held.safetensors")));
  ASSERT_FALSE(streamed.write(tmp.file("streamed.safetensors")));
  EXPECT_EQ(calls, 1);
  auto a = MemoryBuffer::getFile(tmp.file("held.safetensors"));
  auto b = MemoryBuffer::getFile(tmp.file("streamed.safetensors"));
  ASSERT_TRUE(a && b);
  EXPECT_TRUE((*a)->getBuffer() == (*b)->getBuffer());
  EXPECT_EQ(cantFail(streamed.serialize()), cantFail(held.serialize()));
}

TEST(SafetensorsTest, StreamedTensorsOfTheWrongSizeLeaveNoFile) {
  TempDir tmp;
  std::string path = tmp.file("out.safetensors");
  ASSERT_FALSE(writeFileAtomically(path, "old contents"));
  auto writerWith = [](std::vector<size_t> pieces) {
    auto w = std::make_unique<SafetensorsWriter>();
    cantFail(w->addStreamedTensor(
        "layer.w", DType::F32, {2, 3},
        [pieces](SafetensorsWriter::Sink sink) -> Error {
          for (size_t n : pieces)
            if (Error e = sink(std::vector<uint8_t>(n, 0x11)))
              return e;
          return Error::success();
        }));
    return w;
  };
  // Short, long (caught at the piece that overruns), and a failing
  // producer: each names the tensor and leaves the old file as it was.
  std::string shortError = errorOf(writerWith({8, 8})->write(path));
  EXPECT_CONTAINS(shortError, "'layer.w'");
  EXPECT_CONTAINS(shortError, "gave 16 bytes");
  EXPECT_CONTAINS(shortError, "need 24");
  std::string longError = errorOf(writerWith({16, 16})->write(path));
  EXPECT_CONTAINS(longError, "'layer.w'");
  EXPECT_CONTAINS(longError, "more than the 24 bytes");
  SafetensorsWriter failing;
  ASSERT_FALSE(failing.addStreamedTensor(
      "x", DType::U8, {1}, [](SafetensorsWriter::Sink) -> Error {
        return createStringError(inconvertibleErrorCode(), "disk on fire");
      }));
  std::string failed = errorOf(failing.write(path));
  EXPECT_CONTAINS(failed, "'x'");
  EXPECT_CONTAINS(failed, "disk on fire");
  EXPECT_CONTAINS(errorOf(failing.serialize()), "disk on fire");
  auto buffer = MemoryBuffer::getFile(path);
  ASSERT_TRUE(bool(buffer));
  EXPECT_EQ((*buffer)->getBuffer(), "old contents");
  // No temporary file left behind.
  EXPECT_EQ(tmp.list(), std::vector<std::string>{"out.safetensors"});
  // A tensor without a producer is refused when added.
  EXPECT_CONTAINS(
      errorOf(failing.addStreamedTensor("y", DType::U8, {1}, nullptr)),
      "without a producer");
}

TEST(SafetensorsTest, ReadsTensorBytesFromTheFileNotTheMapping) {
  TempDir tmp;
  std::string path = tmp.file("big.safetensors");
  // Large enough to be mapped, not read: 3 tensors over several pages.
  SafetensorsWriter writer;
  std::vector<std::vector<uint8_t>> data;
  for (int t = 0; t < 3; ++t) {
    std::vector<uint8_t> bytes(50000 + 999 * t);
    for (size_t i = 0; i < bytes.size(); ++i)
      bytes[i] = static_cast<uint8_t>(i * 31 + t);
    ASSERT_FALSE(writer.addTensor("t" + std::to_string(t), DType::U8,
                                  {static_cast<int64_t>(bytes.size())},
                                  bytes));
    data.push_back(std::move(bytes));
  }
  ASSERT_FALSE(writer.write(path));
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << errorOf(std::move(file));
  for (int t = 0; t < 3; ++t) {
    const TensorInfo &info = *(*file)->lookup("t" + std::to_string(t));
    auto whole = (*file)->readBytes(info);
    ASSERT_TRUE(bool(whole)) << errorOf(whole.takeError());
    EXPECT_EQ(*whole, data[t]) << "t" << t;
    EXPECT_TRUE((*file)->rawData(info).equals(data[t])) << "t" << t;
    // A piece from the middle.
    std::vector<uint8_t> piece(777);
    ASSERT_FALSE((*file)->read(info, 4097, piece.size(), piece.data()));
    EXPECT_TRUE(ArrayRef<uint8_t>(piece).equals(
        ArrayRef<uint8_t>(data[t]).slice(4097, 777)));
  }
  const TensorInfo &t2 = *(*file)->lookup("t2");
  std::vector<uint8_t> piece(16);
  EXPECT_CONTAINS(errorOf((*file)->read(t2, t2.numBytes() - 8, 16,
                                        piece.data())),
                  "outside its");
  // A file read into memory (here: a buffer) is copied from memory.
  auto copy = SafetensorsFile::fromBuffer(MemoryBuffer::getMemBufferCopy(
      cantFail(writer.serialize()), "copy.safetensors"));
  ASSERT_TRUE(bool(copy));
  const TensorInfo &info = *(*copy)->lookup("t1");
  auto fromMemory = (*copy)->readBytes(info);
  ASSERT_TRUE(bool(fromMemory));
  EXPECT_EQ(*fromMemory, data[1]);
  // Truncated while open: reading what is gone is an error naming the file
  // and the tensor (through the mapping it would be SIGBUS).
  ASSERT_EQ(::truncate(path.c_str(), 1000), 0);
  EXPECT_CONTAINS(errorOf((*file)->readBytes(t2).takeError()),
                  "big.safetensors: tensor 't2' ends at byte");
  EXPECT_CONTAINS(errorOf((*file)->readF32("t2").takeError()),
                  "truncated or rewritten while in use");
}

TEST(SafetensorsTest, ReadsFileWrittenByTheReferenceLayout) {
  // Bytes laid out by hand as the Python library writes them: header with
  // trailing spaces, tensors not in name order in the data section.
  std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("a":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]}})";
  while ((8 + header.size()) % 8)
    header += ' ';
  std::string data;
  data += std::string("\x00\x00\xc0\x3f", 4); // 1.5f
  data += std::string("\x80\x3f\x00\xc0", 4); // bf16 1.0, -2.0
  TempDir tmp;
  std::string path = tmp.file("ref.safetensors");
  writeBytes(path, rawSafetensors(header, data));
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << errorOf(std::move(file));
  EXPECT_EQ((*file)->tensors()[0].name, "a");
  EXPECT_EQ(*(*file)->readF32("a"), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(*(*file)->readF32("b"), std::vector<float>{1.5f});
  EXPECT_EQ((*file)->dataSize(), 8u);
}

//===----------------------------------------------------------------------===//
// Safetensors validation: one test per error, each checking that the
// message names the file, the tensor or field, and what was expected.
//===----------------------------------------------------------------------===//

TEST(SafetensorsErrorTest, Truncated) {
  TempDir tmp;
  std::string message = openError(tmp, "abcde");
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "truncated");
  EXPECT_CONTAINS(message, "5 bytes");
}

TEST(SafetensorsErrorTest, HeaderLengthPastEndOfFile) {
  TempDir tmp;
  std::string message = openError(tmp, rawSafetensors("{}", "", 1000));
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "header length 1000");
  EXPECT_CONTAINS(message, "past the end");
  EXPECT_CONTAINS(message, "10 bytes");
}

TEST(SafetensorsErrorTest, InvalidJson) {
  TempDir tmp;
  std::string message = openError(tmp, rawSafetensors("{\"a\": [1, }", ""));
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "invalid JSON");
  // llvm::json's own description follows.
  EXPECT_GT(message.size(), message.find("invalid JSON header: ") + 21);
}

TEST(SafetensorsErrorTest, HeaderNotAnObject) {
  TempDir tmp;
  std::string message = openError(tmp, rawSafetensors("[1, 2]", ""));
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "not an object");
}

TEST(SafetensorsErrorTest, EntryNotAnObject) {
  TempDir tmp;
  std::string message =
      openError(tmp, rawSafetensors(R"({"w.weight": [1, 2]})", ""));
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "tensor 'w.weight'");
  EXPECT_CONTAINS(message, "not an object");
}

TEST(SafetensorsErrorTest, UnknownDType) {
  TempDir tmp;
  std::string message = openError(
      tmp,
      rawSafetensors(
          R"({"w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", "abcd"));
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "tensor 'w'");
  EXPECT_CONTAINS(message, "field 'dtype'");
  EXPECT_CONTAINS(message, "'F99'");
  EXPECT_CONTAINS(message, "supported: BOOL, U8");
  EXPECT_CONTAINS(message, "BF16");
}

TEST(SafetensorsErrorTest, MissingDType) {
  TempDir tmp;
  std::string message = openError(
      tmp,
      rawSafetensors(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd"));
  EXPECT_CONTAINS(message, "tensor 'w'");
  EXPECT_CONTAINS(message, "field 'dtype' is missing");
}

TEST(SafetensorsErrorTest, ShapeNotAListOfNonNegativeInts) {
  TempDir tmp;
  for (StringRef shape : {"[2, -1]", "[1.5]", "\"2x2\"", "[[2]]"}) {
    std::string header = (R"({"w":{"dtype":"U8","shape":)" + shape +
                          R"(,"data_offsets":[0,2]}})")
                             .str();
    std::string message = openError(tmp, rawSafetensors(header, "ab"));
    EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
    EXPECT_CONTAINS(message, "tensor 'w'");
    EXPECT_CONTAINS(message, "field 'shape'");
    EXPECT_CONTAINS(message, "non-negative integers");
  }
}

TEST(SafetensorsErrorTest, DataOffsetsNotBeginEnd) {
  TempDir tmp;
  for (StringRef offsets : {"[8, 4]", "[0]", "[0, 4, 8]", "[-1, 4]", "{}"}) {
    std::string header =
        (R"({"w":{"dtype":"U8","shape":[4],"data_offsets":)" + offsets + "}}")
            .str();
    std::string message = openError(tmp, rawSafetensors(header, "abcdefgh"));
    EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
    EXPECT_CONTAINS(message, "tensor 'w'");
    EXPECT_CONTAINS(message, "field 'data_offsets'");
    EXPECT_CONTAINS(message, "begin <= end");
  }
}

TEST(SafetensorsErrorTest, OffsetsOutOfRange) {
  TempDir tmp;
  std::string message = openError(
      tmp, rawSafetensors(
               R"({"w":{"dtype":"F32","shape":[16],"data_offsets":[0,64]}})",
               std::string(16, 'x')));
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "tensor 'w'");
  EXPECT_CONTAINS(message, "[0, 64] out of range");
  EXPECT_CONTAINS(message, "data section is 16 bytes");
}

TEST(SafetensorsErrorTest, SizeDoesNotMatchShape) {
  TempDir tmp;
  std::string message = openError(
      tmp, rawSafetensors(
               R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
               std::string(8, 'x')));
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "tensor 'w'");
  EXPECT_CONTAINS(message, "size mismatch");
  EXPECT_CONTAINS(message, "covers 8 bytes");
  EXPECT_CONTAINS(message, "shape [3] of dtype F32 needs 12 bytes");
}

TEST(SafetensorsErrorTest, OverlappingTensors) {
  TempDir tmp;
  std::string message = openError(
      tmp, rawSafetensors(
               R"({"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               std::string(12, 'x')));
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "'first' [0, 8)");
  EXPECT_CONTAINS(message, "'second' [4, 12)");
  EXPECT_CONTAINS(message, "overlap");
}

TEST(SafetensorsErrorTest, EmptyTensorsDoNotOverlap) {
  TempDir tmp;
  std::string path = tmp.file("empty.safetensors");
  writeBytes(
      path,
      rawSafetensors(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                     std::string(8, 'x')));
  EXPECT_EQ(errorOf(SafetensorsFile::open(path)), "<no error>");
}

TEST(SafetensorsErrorTest, MetadataValuesMustBeStrings) {
  TempDir tmp;
  std::string message =
      openError(tmp, rawSafetensors(R"({"__metadata__":{"format":3}})", ""));
  EXPECT_CONTAINS(message, tmp.file("bad.safetensors"));
  EXPECT_CONTAINS(message, "__metadata__");
  EXPECT_CONTAINS(message, "'format'");
  EXPECT_CONTAINS(message, "not a string");
}

TEST(SafetensorsErrorTest, MissingFile) {
  TempDir tmp;
  std::string path = tmp.file("nothere.safetensors");
  std::string message = errorOf(SafetensorsFile::open(path));
  EXPECT_CONTAINS(message, path);
  EXPECT_CONTAINS(message, "cannot open");
}

//===----------------------------------------------------------------------===//
// Atomic writes
//===----------------------------------------------------------------------===//

TEST(AtomicFileTest, ReplacesWholeFileAndLeavesNoTemporary) {
  TempDir tmp;
  std::string path = tmp.file("out.bin");
  ASSERT_FALSE(writeFileAtomically(path, "first version, long"));
  ASSERT_FALSE(writeFileAtomically(path, "second"));
  EXPECT_EQ(readBytes(path), "second");
  EXPECT_EQ(tmp.list(), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFileTest, FailedWriteKeepsOldContents) {
  TempDir tmp;
  std::string path = tmp.file("out.bin");
  ASSERT_FALSE(writeFileAtomically(path, "old"));
  Error error = writeFileAtomically(path, [](raw_ostream &os) {
    os << "partial";
    return createStringError("writer gave up");
  });
  EXPECT_CONTAINS(errorOf(std::move(error)), "writer gave up");
  EXPECT_EQ(readBytes(path), "old");
  EXPECT_EQ(tmp.list(), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFileTest, MissingFolderIsAnError) {
  TempDir tmp;
  std::string path = tmp.file("no/such/dir/out.bin");
  std::string message = errorOf(writeFileAtomically(path, "x"));
  EXPECT_CONTAINS(message, path);
}

//===----------------------------------------------------------------------===//
// WeightStore
//===----------------------------------------------------------------------===//

void writeShard(StringRef path,
                std::vector<std::pair<std::string, std::vector<float>>> data) {
  SafetensorsWriter writer;
  for (auto &[name, values] : data)
    ASSERT_FALSE(writer.addFloatTensor(
        name, DType::F32, {static_cast<int64_t>(values.size())}, values));
  ASSERT_FALSE(writer.write(path));
}

TEST(WeightStoreTest, SingleFile) {
  TempDir tmp;
  writeShard(tmp.file("model.safetensors"), {{"a", {1, 2}}, {"b", {3}}});
  // A stray file is ignored when model.safetensors exists.
  writeBytes(tmp.file("other.safetensors"), "garbage");
  auto store = WeightStore::open(tmp.dir());
  ASSERT_TRUE(bool(store)) << errorOf(std::move(store));
  EXPECT_EQ((*store)->indexPath(), "");
  ASSERT_EQ((*store)->shardPaths().size(), 1u);
  Expected<TensorLocation> a = (*store)->find("a");
  ASSERT_TRUE(bool(a)) << errorOf(std::move(a));
  EXPECT_EQ(a->path, tmp.file("model.safetensors"));
  EXPECT_EQ(a->info.shape, std::vector<int64_t>{2});
  EXPECT_EQ(a->info.dtype, DType::F32);
  EXPECT_EQ(*(*store)->readF32("b"), std::vector<float>{3});
  EXPECT_EQ(*(*store)->tensorNames(), (std::vector<std::string>{"a", "b"}));

  std::string message = errorOf((*store)->find("c"));
  EXPECT_CONTAINS(message, "tensor 'c' not found in " + tmp.dir());
  EXPECT_CONTAINS(message, "looked in model.safetensors");
}

TEST(WeightStoreTest, ShardedWithIndex) {
  TempDir tmp;
  writeShard(tmp.file("model-00001-of-00002.safetensors"),
             {{"x.weight", {1, 2, 3}}});
  writeShard(tmp.file("model-00002-of-00002.safetensors"),
             {{"y.weight", {4}}, {"z.weight", {5, 6}}});
  writeBytes(tmp.file("model.safetensors.index.json"), R"({
    "metadata": {"total_size": 24},
    "weight_map": {
      "x.weight": "model-00001-of-00002.safetensors",
      "y.weight": "model-00002-of-00002.safetensors",
      "z.weight": "model-00002-of-00002.safetensors"
    }
  })");
  auto store = WeightStore::open(tmp.dir());
  ASSERT_TRUE(bool(store)) << errorOf(std::move(store));
  EXPECT_EQ((*store)->indexPath(), tmp.file("model.safetensors.index.json"));
  EXPECT_EQ((*store)->shardPaths().size(), 2u);
  Expected<TensorLocation> z = (*store)->find("z.weight");
  ASSERT_TRUE(bool(z)) << errorOf(std::move(z));
  EXPECT_EQ(z->path, tmp.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(z->info.shape, std::vector<int64_t>{2});
  EXPECT_EQ(*(*store)->readF32("x.weight"), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(*(*store)->tensorNames(),
            (std::vector<std::string>{"x.weight", "y.weight", "z.weight"}));
  std::string message = errorOf((*store)->find("w.weight"));
  EXPECT_CONTAINS(message, "tensor 'w.weight' not found in " + tmp.dir());
  EXPECT_CONTAINS(message, "model.safetensors.index.json");
}

TEST(WeightStoreTest, ShardsAreOpenedLazily) {
  TempDir tmp;
  writeShard(tmp.file("good.safetensors"), {{"a", {1}}});
  writeBytes(tmp.file("broken.safetensors"), "not a safetensors file");
  writeBytes(tmp.file("model.safetensors.index.json"),
             R"({"weight_map": {"a": "good.safetensors",
                                "b": "broken.safetensors"}})");
  auto store = WeightStore::open(tmp.dir());
  ASSERT_TRUE(bool(store)) << errorOf(std::move(store));
  EXPECT_EQ(*(*store)->readF32("a"), std::vector<float>{1});
  // The broken shard is only parsed, and reported, when it is needed.
  std::string message = errorOf((*store)->find("b"));
  EXPECT_CONTAINS(message, tmp.file("broken.safetensors"));
}

TEST(WeightStoreTest, IndexPointsAtMissingShard) {
  TempDir tmp;
  writeShard(tmp.file("model-00001-of-00002.safetensors"), {{"a", {1}}});
  writeBytes(tmp.file("model.safetensors.index.json"),
             R"({"weight_map": {
                   "a": "model-00001-of-00002.safetensors",
                   "b.weight": "model-00002-of-00002.safetensors"}})");
  std::string message = errorOf(WeightStore::open(tmp.dir()));
  EXPECT_CONTAINS(message, tmp.file("model.safetensors.index.json"));
  EXPECT_CONTAINS(message, "tensor 'b.weight'");
  EXPECT_CONTAINS(message, "shard 'model-00002-of-00002.safetensors'");
  EXPECT_CONTAINS(message, "does not exist");
}

TEST(WeightStoreTest, IndexMapsToShardWithoutTheTensor) {
  TempDir tmp;
  writeShard(tmp.file("s.safetensors"), {{"a", {1}}});
  writeBytes(tmp.file("model.safetensors.index.json"),
             R"({"weight_map": {"a": "s.safetensors", "b": "s.safetensors"}})");
  auto store = WeightStore::open(tmp.dir());
  ASSERT_TRUE(bool(store));
  std::string message = errorOf((*store)->find("b"));
  EXPECT_CONTAINS(message, "model.safetensors.index.json");
  EXPECT_CONTAINS(message, "'b'");
  EXPECT_CONTAINS(message, "'s.safetensors'");
  EXPECT_CONTAINS(message, "no such tensor");
}

TEST(WeightStoreTest, InvalidIndexJson) {
  TempDir tmp;
  writeBytes(tmp.file("model.safetensors.index.json"), "{\"weight_map\": ");
  std::string message = errorOf(WeightStore::open(tmp.dir()));
  EXPECT_CONTAINS(message, tmp.file("model.safetensors.index.json"));
  EXPECT_CONTAINS(message, "invalid JSON");
}

TEST(WeightStoreTest, IndexWithoutWeightMap) {
  TempDir tmp;
  writeBytes(tmp.file("model.safetensors.index.json"), R"({"metadata": {}})");
  std::string message = errorOf(WeightStore::open(tmp.dir()));
  EXPECT_CONTAINS(message, tmp.file("model.safetensors.index.json"));
  EXPECT_CONTAINS(message, "'weight_map' is missing");

  writeBytes(tmp.file("model.safetensors.index.json"),
             R"({"weight_map": {"a": 7}})");
  message = errorOf(WeightStore::open(tmp.dir()));
  EXPECT_CONTAINS(message, "tensor 'a'");
  EXPECT_CONTAINS(message, "not a string");
}

TEST(WeightStoreTest, NoWeightsAtAll) {
  TempDir tmp;
  writeBytes(tmp.file("config.json"), "{}");
  std::string message = errorOf(WeightStore::open(tmp.dir()));
  EXPECT_CONTAINS(message, tmp.dir());
  EXPECT_CONTAINS(message, "no weights");
}

TEST(WeightStoreTest, NotAFolder) {
  TempDir tmp;
  std::string message = errorOf(WeightStore::open(tmp.file("missing")));
  EXPECT_CONTAINS(message, tmp.file("missing"));
}

TEST(WeightStoreTest, FallsBackToEverySafetensorsFile) {
  TempDir tmp;
  writeShard(tmp.file("b.safetensors"), {{"from_b", {2}}});
  writeShard(tmp.file("a.safetensors"), {{"from_a", {1}}});
  auto store = WeightStore::open(tmp.dir());
  ASSERT_TRUE(bool(store)) << errorOf(std::move(store));
  EXPECT_EQ((*store)->find("from_b")->path, tmp.file("b.safetensors"));
  EXPECT_EQ((*store)->find("from_a")->path, tmp.file("a.safetensors"));
  std::string message = errorOf((*store)->find("nope"));
  EXPECT_CONTAINS(message, "tensor 'nope' not found in " + tmp.dir());
  EXPECT_CONTAINS(message, "looked in a.safetensors, b.safetensors");
}

//===----------------------------------------------------------------------===//
// .npy
//===----------------------------------------------------------------------===//

/// A .npy file with the given version, header dict and data bytes.
std::string rawNpy(int major, StringRef dict, StringRef data) {
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  char length[4];
  if (major == 1) {
    support::endian::write16le(length, dict.size());
    out.append(length, 2);
  } else {
    support::endian::write32le(length, dict.size());
    out.append(length, 4);
  }
  return out + dict.str() + data.str();
}

TEST(NpyTest, F32RoundTrip) {
  TempDir tmp;
  std::string path = tmp.file("x.npy");
  std::vector<float> values = {1.0f, -2.0f, 0.5f, 3.25f, -0.0f, 1e-30f};
  ASSERT_FALSE(writeNpyF32(path, {2, 3}, values));
  std::string bytes = readBytes(path);
  // numpy aligns the data to 64 bytes and ends the header with a newline.
  uint16_t headerLength = support::endian::read16le(bytes.data() + 8);
  EXPECT_EQ((10 + headerLength) % 64, 0);
  EXPECT_EQ(bytes[10 + headerLength - 1], '\n');
  EXPECT_CONTAINS(bytes.substr(10, headerLength),
                  "{'descr': '<f4', 'fortran_order': False, "
                  "'shape': (2, 3), }");
  Expected<NpyArray> array = readNpy(path);
  ASSERT_TRUE(bool(array)) << errorOf(std::move(array));
  EXPECT_EQ(array->dtype, NpyDType::F32);
  EXPECT_EQ(array->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(array->toF32(), values);
}

TEST(NpyTest, I32RoundTripAndShapes) {
  TempDir tmp;
  std::string path = tmp.file("ids.npy");
  ASSERT_FALSE(writeNpyI32(path, {5}, {0, -1, 7, 2147483647, -2147483647}));
  EXPECT_CONTAINS(readBytes(path), "'shape': (5,), }");
  Expected<NpyArray> array = readNpy(path);
  ASSERT_TRUE(bool(array)) << errorOf(std::move(array));
  EXPECT_EQ(array->dtype, NpyDType::I32);
  EXPECT_EQ(*array->toI64(),
            (std::vector<int64_t>{0, -1, 7, 2147483647, -2147483647}));

  std::string scalar = tmp.file("scalar.npy");
  ASSERT_FALSE(writeNpyF32(scalar, {}, {4.5f}));
  EXPECT_CONTAINS(readBytes(scalar), "'shape': (), }");
  Expected<NpyArray> s = readNpy(scalar);
  ASSERT_TRUE(bool(s));
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->toF32(), std::vector<float>{4.5f});

  std::string empty = tmp.file("empty.npy");
  ASSERT_FALSE(writeNpyF32(empty, {0, 3}, {}));
  Expected<NpyArray> e = readNpy(empty);
  ASSERT_TRUE(bool(e));
  EXPECT_EQ(e->shape, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(e->numElements(), 0);
}

TEST(NpyTest, WriterChecksShape) {
  TempDir tmp;
  std::string path = tmp.file("x.npy");
  std::string message = errorOf(writeNpyF32(path, {2, 2}, {1, 2, 3}));
  EXPECT_CONTAINS(message, path);
  EXPECT_CONTAINS(message, "[2, 2] has 4 elements but the data has 3");
  EXPECT_FALSE(sys::fs::exists(path));
}

TEST(NpyTest, ReadsVersionsAndDTypes) {
  // Version 2.0, <f8, two rank; bytes as numpy writes them.
  std::string f8;
  for (double value : {1.5, -2.25}) {
    char bytes[8];
    support::endian::write64le(bytes, llvm::bit_cast<uint64_t>(value));
    f8.append(bytes, 8);
  }
  Expected<NpyArray> a = parseNpy(
      rawNpy(2, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }\n",
             f8),
      "v2.npy");
  ASSERT_TRUE(bool(a)) << errorOf(std::move(a));
  EXPECT_EQ(a->dtype, NpyDType::F64);
  EXPECT_EQ(a->toF32(), (std::vector<float>{1.5f, -2.25f}));

  // Version 3.0, <f2, three dimensions, double-quoted keys.
  std::string f2 = std::string("\x00\x3c\x00\xc0", 4); // 1.0, -2.0
  Expected<NpyArray> b =
      parseNpy(rawNpy(3,
                      "{\"descr\": \"<f2\", \"fortran_order\": False, "
                      "\"shape\": (1, 1, 2)}\n",
                      f2),
               "v3.npy");
  ASSERT_TRUE(bool(b)) << errorOf(std::move(b));
  EXPECT_EQ(b->shape, (std::vector<int64_t>{1, 1, 2}));
  EXPECT_EQ(b->toF32(), (std::vector<float>{1.0f, -2.0f}));

  // Version 1.0, <i8 (Python 2 long suffixes in the shape).
  std::string i8(16, '\0');
  support::endian::write64le(&i8[0], uint64_t(-5));
  support::endian::write64le(&i8[8], uint64_t(1) << 40);
  Expected<NpyArray> c = parseNpy(
      rawNpy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2L,), }",
             i8),
      "v1.npy");
  ASSERT_TRUE(bool(c)) << errorOf(std::move(c));
  EXPECT_EQ(*c->toI64(), (std::vector<int64_t>{-5, int64_t(1) << 40}));
  EXPECT_CONTAINS(errorOf(a->toI64()), "<f8");
}

TEST(NpyErrorTest, BadMagic) {
  TempDir tmp;
  std::string path = tmp.file("bad.npy");
  writeBytes(path, "PK\x03\x04 this is a zip file");
  std::string message = errorOf(readNpy(path));
  EXPECT_CONTAINS(message, path);
  EXPECT_CONTAINS(message, "bad magic");
}

TEST(NpyErrorTest, Truncated) {
  TempDir tmp;
  std::string path = tmp.file("short.npy");
  writeBytes(path, "\x93NUM");
  std::string message = errorOf(readNpy(path));
  EXPECT_CONTAINS(message, path);
  EXPECT_CONTAINS(message, "truncated");

  std::string full = rawNpy(
      1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "");
  writeBytes(path, full.substr(0, 30));
  message = errorOf(readNpy(path));
  EXPECT_CONTAINS(message, path);
  EXPECT_CONTAINS(message, "truncated");
  EXPECT_CONTAINS(message, "header");
}

TEST(NpyErrorTest, UnsupportedVersion) {
  std::string message = errorOf(parseNpy(
      rawNpy(4, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
             "abcd"),
      "v4.npy"));
  EXPECT_CONTAINS(message, "v4.npy");
  EXPECT_CONTAINS(message, "version 4.0");
}

TEST(NpyErrorTest, UnsupportedDType) {
  std::string message = errorOf(parseNpy(
      rawNpy(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (1,), }",
             "ab"),
      "u2.npy"));
  EXPECT_CONTAINS(message, "u2.npy");
  EXPECT_CONTAINS(message, "unsupported dtype '<u2'");
  EXPECT_CONTAINS(message, "<f4");

  message = errorOf(parseNpy(
      rawNpy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
             "abcd"),
      "be.npy"));
  EXPECT_CONTAINS(message, "be.npy");
  EXPECT_CONTAINS(message, "big-endian");

  message = errorOf(parseNpy(
      rawNpy(1,
             "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': "
             "False, 'shape': (1,), }",
             "abcdefgh"),
      "struct.npy"));
  EXPECT_CONTAINS(message, "struct.npy");
  EXPECT_CONTAINS(message, "structured");
}

TEST(NpyErrorTest, FortranOrderRejected) {
  std::string message = errorOf(parseNpy(
      rawNpy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }",
             "abcd"),
      "f.npy"));
  EXPECT_CONTAINS(message, "f.npy");
  EXPECT_CONTAINS(message, "fortran_order");
  EXPECT_CONTAINS(message, "C order");
}

TEST(NpyErrorTest, DataShorterThanShape) {
  TempDir tmp;
  std::string path = tmp.file("short-data.npy");
  writeBytes(path, rawNpy(1,
                          "{'descr': '<f4', 'fortran_order': False, "
                          "'shape': (2, 3), }",
                          std::string(20, 'x')));
  std::string message = errorOf(readNpy(path));
  EXPECT_CONTAINS(message, path);
  EXPECT_CONTAINS(message, "data shorter than the shape says");
  EXPECT_CONTAINS(message, "needs 24 bytes");
  EXPECT_CONTAINS(message, "has 20");
}

TEST(NpyErrorTest, MalformedHeader) {
  std::string message = errorOf(parseNpy(
      rawNpy(1, "{'descr': '<f4', 'shape': (1,), }", "abcd"), "m.npy"));
  EXPECT_CONTAINS(message, "m.npy");
  EXPECT_CONTAINS(message, "'fortran_order' is missing");
  message = errorOf(parseNpy(rawNpy(1, "{'descr' '<f4'}", ""), "m.npy"));
  EXPECT_CONTAINS(message, "malformed header");
}

} // namespace
