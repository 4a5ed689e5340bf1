//===- Status.h - Errors of the CUDA runtime without exceptions -*- C++ -*-===//
//
// Part of moe-opt. The runtime links no LLVM, so it cannot use llvm::Error;
// these two types play the same role: a failure carries a message that says
// which library, function or file failed and why.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_STATUS_H
#define MOE_RUNTIME_STATUS_H

#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

namespace moe::runtime {

/// Success, or a failure with a message.
class [[nodiscard]] Status {
public:
  /// A success.
  Status() = default;
  static Status success() { return Status(); }
  /// A failure; an empty message is replaced so that a failure always says
  /// something.
  static Status error(std::string message) {
    Status s;
    s.failed_ = true;
    s.message_ = message.empty() ? "unknown error" : std::move(message);
    return s;
  }

  bool ok() const { return !failed_; }
  /// True on failure, as llvm::Error: `if (Status s = f()) return s;`.
  explicit operator bool() const { return failed_; }
  /// The failure's message; empty on success.
  const std::string &message() const { return message_; }

  /// Prefixes the message of a failure with `context: `; success stays.
  Status withContext(const std::string &context) const {
    if (!failed_)
      return *this;
    return error(context + ": " + message_);
  }

private:
  bool failed_ = false;
  std::string message_;
};

/// A value, or a failure with a message.
template <typename T> class [[nodiscard]] Expected {
public:
  Expected(T value) : value_(std::move(value)) {}
  /// From a failed Status; a successful one is a programming error.
  Expected(Status status) : status_(std::move(status)) {
    if (status_.ok())
      std::abort();
  }

  bool ok() const { return value_.has_value(); }
  /// True when a value is held (unlike Status, which is true on failure).
  explicit operator bool() const { return ok(); }

  /// The failure (a success when a value is held).
  const Status &status() const { return status_; }
  const std::string &message() const { return status_.message(); }
  /// The failure, with `context: ` in front of its message.
  Status takeError(const std::string &context = "") const {
    return context.empty() ? status_ : status_.withContext(context);
  }

  T &value() & {
    check();
    return *value_;
  }
  const T &value() const & {
    check();
    return *value_;
  }
  T &&value() && {
    check();
    return std::move(*value_);
  }
  T &operator*() & { return value(); }
  const T &operator*() const & { return value(); }
  T &&operator*() && { return std::move(*this).value(); }
  T *operator->() { return &value(); }
  const T *operator->() const { return &value(); }

private:
  void check() const {
    if (!value_)
      std::abort(); // Reading the value of a failure is a programming error.
  }

  std::optional<T> value_;
  Status status_;
};

} // namespace moe::runtime

#endif // MOE_RUNTIME_STATUS_H
