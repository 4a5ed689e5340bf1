//===- Json.h - A small JSON value, parser and writer -----------*- C++ -*-===//
//
// Part of moe-opt. The runtime links no LLVM (so no llvm::json) and no
// third-party library; package manifests (Package.h) use this instead.
//
// - Values: null, bool, number (a double; integers up to 2^53 in magnitude
//   are exact and read back with asInt64), string (UTF-8), array, object.
//   Objects keep their members in insertion order, and the writer prints
//   them in that order, so output is deterministic.
// - The parser is strict RFC 8259: one value, no comments, no trailing
//   commas, no NaN/Infinity, no leading zeros or '+', no control characters
//   or invalid UTF-8 in strings, no lone surrogates in \u escapes, no
//   duplicate keys in an object, at most kJsonMaxDepth nested containers.
//   A failure says "LINE:COLUMN: expected ..., found ..." (1-based; columns
//   count code points).
// - The writer prints 2-space indented JSON (or compact JSON), numbers in
//   their shortest form that reads back to the same double, and a trailing
//   newline.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_JSON_H
#define MOE_RUNTIME_JSON_H

#include "moe/runtime/Status.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace moe::runtime {

/// Deepest nesting of arrays and objects the parser accepts.
constexpr int kJsonMaxDepth = 256;

class Json {
public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  using Array = std::vector<Json>;
  using Member = std::pair<std::string, Json>;
  /// Members in insertion order (keys are unique when built with set() or
  /// parsed).
  using Object = std::vector<Member>;

  Json() = default; ///< null
  Json(std::nullptr_t) {}
  Json(bool value) : kind_(Kind::Bool), bool_(value) {}
  Json(double value) : kind_(Kind::Number), number_(value) {}
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>,
                             int> = 0>
  Json(T value) : kind_(Kind::Number), number_(static_cast<double>(value)) {}
  Json(const char *value) : kind_(Kind::String), string_(value) {}
  Json(std::string value) : kind_(Kind::String), string_(std::move(value)) {}
  Json(std::string_view value) : kind_(Kind::String), string_(value) {}
  Json(Array items) : kind_(Kind::Array), array_(std::move(items)) {}

  static Json array() { return Json(Array{}); }
  static Json object() {
    Json j;
    j.kind_ = Kind::Object;
    return j;
  }

  Kind kind() const { return kind_; }
  bool isNull() const { return kind_ == Kind::Null; }
  bool isBool() const { return kind_ == Kind::Bool; }
  bool isNumber() const { return kind_ == Kind::Number; }
  bool isString() const { return kind_ == Kind::String; }
  bool isArray() const { return kind_ == Kind::Array; }
  bool isObject() const { return kind_ == Kind::Object; }
  /// A number with an integral value of magnitude at most 2^53 (so that it
  /// is exact).
  bool isInteger() const;

  /// The value; a value of another kind gives false, 0, "" or an empty
  /// array/object (never a crash).
  bool asBool() const { return kind_ == Kind::Bool && bool_; }
  double asNumber() const { return kind_ == Kind::Number ? number_ : 0.0; }
  /// The integer, when isInteger().
  std::optional<int64_t> asInt64() const;
  const std::string &asString() const;
  const Array &items() const;
  const Object &members() const;

  /// Elements of an array or members of an object; 0 otherwise.
  size_t size() const;

  /// The member `key` of an object, or null when absent or not an object.
  const Json *find(std::string_view key) const;
  Json *find(std::string_view key);

  /// Sets member `key` (replacing its value in place when present,
  /// appending otherwise). A null value becomes an object first; a value of
  /// another kind is replaced by an object. Returns the member's value.
  Json &set(std::string key, Json value);
  /// Appends to an array (a null or other value becomes an array first).
  /// Returns the new element.
  ///
  /// The references set() and push() return are invalidated by the next
  /// set() or push() on the same object or array (as std::vector's are):
  /// fill a child before adding its next sibling, or find() it again.
  Json &push(Json value);

  /// Deep equality (numbers by ==, objects in member order).
  bool operator==(const Json &other) const;
  bool operator!=(const Json &other) const { return !(*this == other); }

  /// Pretty JSON (indent > 0: members and elements one per line, except
  /// arrays of scalars and objects of scalars up to 64 characters long,
  /// which stay on one line) or compact JSON
  /// (indent <= 0), with a trailing newline when pretty. NaN and infinities
  /// print as null; invalid UTF-8 in a string prints as U+FFFD.
  std::string dump(int indent = 2) const;

private:
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  Array array_;
  Object object_;
};

/// The name of a kind ("null", "a boolean", "a number", "a string",
/// "an array", "an object"), for messages.
const char *jsonKindName(Json::Kind kind);

/// Parses one JSON document (whitespace around it is allowed). A failure's
/// message is "LINE:COLUMN: expected X, found Y".
Expected<Json> parseJson(std::string_view text);

/// Whether `text` is well-formed UTF-8 (no overlongs, surrogates or code
/// points above U+10FFFF).
bool isValidUtf8(std::string_view text);

/// `text` as a JSON string literal, quotes included.
std::string jsonQuote(std::string_view text);

} // namespace moe::runtime

#endif // MOE_RUNTIME_JSON_H
