//===- Json.cpp - A small JSON value, parser and writer -------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Json.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace moe::runtime {

namespace {
constexpr double kMaxExactInteger = 9007199254740992.0; // 2^53

const std::string &emptyString() {
  static const std::string s;
  return s;
}
const Json::Array &emptyArray() {
  static const Json::Array a;
  return a;
}
const Json::Object &emptyObject() {
  static const Json::Object o;
  return o;
}

/// Decodes one UTF-8 sequence at text[i]; returns its length (1..4) and the
/// code point, or 0 when the bytes there are not well-formed UTF-8.
size_t decodeUtf8(std::string_view text, size_t i, uint32_t &cp) {
  auto byte = [&](size_t k) -> uint8_t {
    return static_cast<uint8_t>(text[k]);
  };
  uint8_t b0 = byte(i);
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  size_t len;
  uint32_t min;
  if ((b0 & 0xe0) == 0xc0) {
    len = 2;
    cp = b0 & 0x1f;
    min = 0x80;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3;
    cp = b0 & 0x0f;
    min = 0x800;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4;
    cp = b0 & 0x07;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > text.size())
    return 0;
  for (size_t k = 1; k < len; ++k) {
    uint8_t b = byte(i + k);
    if ((b & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

void appendUtf8(std::string &out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

void appendQuoted(std::string &out, std::string_view text) {
  out += '"';
  size_t i = 0;
  while (i < text.size()) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      uint32_t cp;
      size_t len = decodeUtf8(text, i, cp);
      if (len == 0) {
        out += "\xef\xbf\xbd"; // U+FFFD
        ++i;
      } else {
        out.append(text.substr(i, len));
        i += len;
      }
      continue;
    }
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (c < 0x20 || c == 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += static_cast<char>(c);
      }
    }
    ++i;
  }
  out += '"';
}

void appendNumber(std::string &out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  if (v == 0.0) {
    out += std::signbit(v) ? "-0" : "0";
    return;
  }
  if (std::trunc(v) == v && std::fabs(v) <= kMaxExactInteger) {
    out += std::to_string(static_cast<int64_t>(v));
    return;
  }
  char buf[64];
  std::to_chars_result r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

bool isScalar(const Json &j) { return !j.isArray() && !j.isObject(); }

/// The longest object of scalars that pretty output keeps on one line.
constexpr size_t kInlineObjectWidth = 64;

void dumpValue(std::string &out, const Json &j, int indent, int depth) {
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(indent) * d, ' ');
  };
  switch (j.kind()) {
  case Json::Kind::Null:
    out += "null";
    return;
  case Json::Kind::Bool:
    out += j.asBool() ? "true" : "false";
    return;
  case Json::Kind::Number:
    appendNumber(out, j.asNumber());
    return;
  case Json::Kind::String:
    appendQuoted(out, j.asString());
    return;
  case Json::Kind::Array: {
    const Json::Array &items = j.items();
    if (items.empty()) {
      out += "[]";
      return;
    }
    bool inlineItems = indent <= 0;
    if (!inlineItems) {
      inlineItems = true;
      for (const Json &item : items)
        inlineItems = inlineItems && isScalar(item);
    }
    out += '[';
    for (size_t i = 0; i < items.size(); ++i) {
      if (i)
        out += indent > 0 && inlineItems ? ", " : ",";
      if (!inlineItems)
        newline(depth + 1);
      dumpValue(out, items[i], indent, depth + 1);
    }
    if (!inlineItems)
      newline(depth);
    out += ']';
    return;
  }
  case Json::Kind::Object: {
    const Json::Object &members = j.members();
    if (members.empty()) {
      out += "{}";
      return;
    }
    if (indent > 0) {
      // A small object of scalars stays on one line.
      bool scalars = true;
      for (const Json::Member &m : members)
        scalars = scalars && isScalar(m.second);
      if (scalars) {
        std::string line = "{";
        for (size_t i = 0; i < members.size(); ++i) {
          if (i)
            line += ", ";
          appendQuoted(line, members[i].first);
          line += ": ";
          dumpValue(line, members[i].second, indent, depth + 1);
        }
        line += '}';
        if (line.size() <= kInlineObjectWidth) {
          out += line;
          return;
        }
      }
    }
    out += '{';
    for (size_t i = 0; i < members.size(); ++i) {
      if (i)
        out += ',';
      if (indent > 0)
        newline(depth + 1);
      appendQuoted(out, members[i].first);
      out += indent > 0 ? ": " : ":";
      dumpValue(out, members[i].second, indent, depth + 1);
    }
    if (indent > 0)
      newline(depth);
    out += '}';
    return;
  }
  }
}

//===----------------------------------------------------------------------===//
// Parser
//===----------------------------------------------------------------------===//

class Parser {
public:
  explicit Parser(std::string_view text) : text_(text) {}

  Expected<Json> parseDocument() {
    // A UTF-8 byte order mark is not JSON (RFC 8259 section 8.1).
    skipSpace();
    Json value;
    if (!parseValue(value, 0))
      return Status::error(error_);
    skipSpace();
    if (pos_ < text_.size()) {
      fail("expected the end of the document");
      return Status::error(error_);
    }
    return value;
  }

private:
  /// "found ..." for the text at pos_.
  std::string found() const {
    if (pos_ >= text_.size())
      return "the end of the text";
    unsigned char c = static_cast<unsigned char>(text_[pos_]);
    if (c < 0x20 || c == 0x7f) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "control character U+%04X", c);
      return buf;
    }
    if (c >= 0x80) {
      uint32_t cp;
      size_t len = decodeUtf8(text_, pos_, cp);
      if (len == 0) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "invalid UTF-8 byte 0x%02X", c);
        return buf;
      }
      return "'" + std::string(text_.substr(pos_, len)) + "'";
    }
    return std::string("'") + static_cast<char>(c) + "'";
  }

  /// Records the first error, at pos_ (or at `at`), with what was found
  /// there unless `what` already says it.
  bool fail(const std::string &what, bool withFound = true) {
    return failAt(pos_, what, withFound);
  }
  bool failAt(size_t at, const std::string &what, bool withFound = true) {
    if (!error_.empty())
      return false;
    size_t line = 1, column = 1;
    for (size_t i = 0; i < at && i < text_.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(text_[i]);
      if (c == '\n') {
        ++line;
        column = 1;
      } else if ((c & 0xc0) != 0x80) {
        ++column;
      }
    }
    size_t saved = pos_;
    pos_ = at;
    std::string f = withFound ? ", found " + found() : "";
    pos_ = saved;
    error_ =
        std::to_string(line) + ":" + std::to_string(column) + ": " + what + f;
    return false;
  }

  void skipSpace() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
        ++pos_;
      else
        break;
    }
  }

  bool literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) == word) {
      size_t end = pos_ + word.size();
      // "truex" is not "true" followed by garbage we would report later
      // anyway, but say it here, at the word.
      if (end < text_.size() &&
          (std::isalnum(static_cast<unsigned char>(text_[end])) ||
           text_[end] == '_'))
        return fail("expected a value");
      pos_ = end;
      return true;
    }
    return fail("expected a value");
  }

  bool parseValue(Json &out, int depth) {
    if (pos_ >= text_.size())
      return fail("expected a value");
    char c = text_[pos_];
    switch (c) {
    case '{':
      return parseObject(out, depth + 1);
    case '[':
      return parseArray(out, depth + 1);
    case '"': {
      std::string s;
      if (!parseString(s))
        return false;
      out = Json(std::move(s));
      return true;
    }
    case 't':
      if (!literal("true"))
        return false;
      out = Json(true);
      return true;
    case 'f':
      if (!literal("false"))
        return false;
      out = Json(false);
      return true;
    case 'n':
      if (!literal("null"))
        return false;
      out = Json();
      return true;
    default:
      if (c == '-' || (c >= '0' && c <= '9'))
        return parseNumber(out);
      return fail("expected a value");
    }
  }

  bool parseObject(Json &out, int depth) {
    if (depth > kJsonMaxDepth)
      return fail("expected at most " + std::to_string(kJsonMaxDepth) +
                      " nested arrays and objects",
                  false);
    ++pos_; // '{'
    out = Json::object();
    skipSpace();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      return true;
    }
    while (true) {
      skipSpace();
      if (pos_ >= text_.size() || text_[pos_] != '"')
        return fail(out.size() ? "expected a member name (a string) after ','"
                               : "expected a member name (a string) or '}'");
      size_t keyPos = pos_;
      std::string key;
      if (!parseString(key))
        return false;
      if (out.find(key))
        return failAt(keyPos,
                      "expected unique member names, found '" + key +
                          "' a second time",
                      false);
      skipSpace();
      if (pos_ >= text_.size() || text_[pos_] != ':')
        return fail("expected ':' after member name " + jsonQuote(key));
      ++pos_;
      skipSpace();
      Json value;
      if (!parseValue(value, depth))
        return false;
      out.set(std::move(key), std::move(value));
      skipSpace();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == '}') {
        ++pos_;
        return true;
      }
      return fail("expected ',' or '}' after an object member");
    }
  }

  bool parseArray(Json &out, int depth) {
    if (depth > kJsonMaxDepth)
      return fail("expected at most " + std::to_string(kJsonMaxDepth) +
                      " nested arrays and objects",
                  false);
    ++pos_; // '['
    out = Json::array();
    skipSpace();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      return true;
    }
    while (true) {
      skipSpace();
      if (pos_ < text_.size() && text_[pos_] == ']')
        return fail("expected a value after ',' (no trailing commas)", false);
      Json value;
      if (!parseValue(value, depth))
        return false;
      out.push(std::move(value));
      skipSpace();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == ']') {
        ++pos_;
        return true;
      }
      return fail("expected ',' or ']' after an array element");
    }
  }

  bool hex4(uint32_t &value) {
    value = 0;
    for (int k = 0; k < 4; ++k) {
      if (pos_ >= text_.size())
        return fail("expected 4 hex digits after \\u");
      char c = text_[pos_];
      int d;
      if (c >= '0' && c <= '9')
        d = c - '0';
      else if (c >= 'a' && c <= 'f')
        d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        d = c - 'A' + 10;
      else
        return fail("expected 4 hex digits after \\u");
      value = value * 16 + static_cast<uint32_t>(d);
      ++pos_;
    }
    return true;
  }

  bool parseString(std::string &out) {
    ++pos_; // '"'
    while (true) {
      if (pos_ >= text_.size())
        return fail("expected '\"' to end the string");
      unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20)
        return fail("expected a character of a string (control characters "
                    "must be escaped)");
      if (c >= 0x80) {
        uint32_t cp;
        size_t len = decodeUtf8(text_, pos_, cp);
        if (len == 0)
          return fail("expected well-formed UTF-8");
        out.append(text_.substr(pos_, len));
        pos_ += len;
        continue;
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      size_t escapePos = pos_;
      ++pos_;
      if (pos_ >= text_.size())
        return fail("expected an escape character after '\\'");
      char e = text_[pos_++];
      switch (e) {
      case '"':
        out += '"';
        break;
      case '\\':
        out += '\\';
        break;
      case '/':
        out += '/';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        uint32_t cp;
        if (!hex4(cp))
          return false;
        if (cp >= 0xdc00 && cp <= 0xdfff)
          return failAt(escapePos,
                        "expected a high surrogate before a low surrogate "
                        "(\\uDC00-\\uDFFF)",
                        false);
        if (cp >= 0xd800 && cp <= 0xdbff) {
          if (text_.substr(pos_, 2) != "\\u")
            return failAt(escapePos,
                          "expected a low surrogate escape (\\uDC00-\\uDFFF) "
                          "after a high surrogate",
                          false);
          size_t lowPos = pos_;
          pos_ += 2;
          uint32_t low;
          if (!hex4(low))
            return false;
          if (low < 0xdc00 || low > 0xdfff)
            return failAt(lowPos,
                          "expected a low surrogate (\\uDC00-\\uDFFF) after a "
                          "high surrogate",
                          false);
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        }
        appendUtf8(out, cp);
        break;
      }
      default:
        pos_ = escapePos + 1;
        return fail("expected one of \" \\ / b f n r t u after '\\'");
      }
    }
  }

  bool parseNumber(Json &out) {
    size_t start = pos_;
    auto digit = [&](size_t k) {
      return k < text_.size() && text_[k] >= '0' && text_[k] <= '9';
    };
    if (text_[pos_] == '-')
      ++pos_;
    if (!digit(pos_))
      return fail("expected a digit");
    if (text_[pos_] == '0') {
      ++pos_;
      if (digit(pos_))
        return fail("expected no leading zeros in a number", false);
    } else {
      while (digit(pos_))
        ++pos_;
    }
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      if (!digit(pos_))
        return fail("expected a digit after '.'");
      while (digit(pos_))
        ++pos_;
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-'))
        ++pos_;
      if (!digit(pos_))
        return fail("expected a digit in the exponent");
      while (digit(pos_))
        ++pos_;
    }
    double value = 0;
    const char *first = text_.data() + start;
    const char *last = text_.data() + pos_;
    std::from_chars_result r = std::from_chars(first, last, value);
    if (r.ec == std::errc::result_out_of_range) {
      // Underflow reads as zero; overflow is not a finite double.
      bool tiny = false;
      for (const char *p = first; p < last; ++p)
        if (*p == 'e' || *p == 'E') {
          tiny = p + 1 < last && p[1] == '-';
          break;
        }
      if (!tiny)
        return failAt(start, "expected a number within the range of a double",
                      false);
      value = *first == '-' ? -0.0 : 0.0;
    } else if (r.ec != std::errc() || r.ptr != last) {
      return failAt(start, "expected a number");
    }
    out = Json(value);
    return true;
  }

  std::string_view text_;
  size_t pos_ = 0;
  std::string error_;
};

} // namespace

bool Json::isInteger() const {
  return kind_ == Kind::Number && std::isfinite(number_) &&
         std::trunc(number_) == number_ &&
         std::fabs(number_) <= kMaxExactInteger;
}

std::optional<int64_t> Json::asInt64() const {
  if (!isInteger())
    return std::nullopt;
  return static_cast<int64_t>(number_);
}

const std::string &Json::asString() const {
  return kind_ == Kind::String ? string_ : emptyString();
}
const Json::Array &Json::items() const {
  return kind_ == Kind::Array ? array_ : emptyArray();
}
const Json::Object &Json::members() const {
  return kind_ == Kind::Object ? object_ : emptyObject();
}

size_t Json::size() const {
  if (kind_ == Kind::Array)
    return array_.size();
  if (kind_ == Kind::Object)
    return object_.size();
  return 0;
}

const Json *Json::find(std::string_view key) const {
  if (kind_ != Kind::Object)
    return nullptr;
  for (const Member &m : object_)
    if (m.first == key)
      return &m.second;
  return nullptr;
}

Json *Json::find(std::string_view key) {
  return const_cast<Json *>(static_cast<const Json *>(this)->find(key));
}

Json &Json::set(std::string key, Json value) {
  if (kind_ != Kind::Object)
    *this = object();
  for (Member &m : object_)
    if (m.first == key) {
      m.second = std::move(value);
      return m.second;
    }
  object_.emplace_back(std::move(key), std::move(value));
  return object_.back().second;
}

Json &Json::push(Json value) {
  if (kind_ != Kind::Array)
    *this = array();
  array_.push_back(std::move(value));
  return array_.back();
}

bool Json::operator==(const Json &other) const {
  if (kind_ != other.kind_)
    return false;
  switch (kind_) {
  case Kind::Null:
    return true;
  case Kind::Bool:
    return bool_ == other.bool_;
  case Kind::Number:
    return number_ == other.number_;
  case Kind::String:
    return string_ == other.string_;
  case Kind::Array:
    return array_ == other.array_;
  case Kind::Object:
    return object_ == other.object_;
  }
  return false;
}

std::string Json::dump(int indent) const {
  std::string out;
  dumpValue(out, *this, indent, 0);
  if (indent > 0)
    out += '\n';
  return out;
}

const char *jsonKindName(Json::Kind kind) {
  switch (kind) {
  case Json::Kind::Null:
    return "null";
  case Json::Kind::Bool:
    return "a boolean";
  case Json::Kind::Number:
    return "a number";
  case Json::Kind::String:
    return "a string";
  case Json::Kind::Array:
    return "an array";
  case Json::Kind::Object:
    return "an object";
  }
  return "?";
}

Expected<Json> parseJson(std::string_view text) {
  return Parser(text).parseDocument();
}

bool isValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    uint32_t cp;
    size_t len = decodeUtf8(text, i, cp);
    if (len == 0)
      return false;
    i += len;
  }
  return true;
}

std::string jsonQuote(std::string_view text) {
  std::string out;
  appendQuoted(out, text);
  return out;
}

} // namespace moe::runtime
