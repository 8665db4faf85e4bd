// Expected failures as values.
//
// Everything that can go wrong at run time for reasons outside the program
// (an endpoint down, a bad document, a lost database) is returned as an
// `outcome<T>`: either the value or a `failure` that says, in one line, what
// went wrong and where, and whether trying again later may succeed.
// Exceptions are kept for programming errors and invalid start-up input.
#pragma once

#include <boost/system/result.hpp>

#include <string>
#include <utility>

namespace gatherstats {

// Whether retrying the same operation later can succeed (a timeout, a lost
// connection, HTTP 503) or cannot (a document that breaks the rules, a
// certificate that does not match, a table without the required columns).
enum class failure_kind { transient, permanent };

struct failure {
  failure_kind kind = failure_kind::permanent;
  std::string message;       // one line, names what was wrong and where
  unsigned http_status = 0;  // the HTTP status behind the failure, if any

  static failure transient(std::string message) {
    return {failure_kind::transient, std::move(message), 0};
  }
  static failure permanent(std::string message) {
    return {failure_kind::permanent, std::move(message), 0};
  }
  bool is_transient() const { return kind == failure_kind::transient; }
};

template <class T>
using outcome = boost::system::result<T, failure>;

// Lets `outcome<T>::value()` throw when it holds a failure (a programming
// error: callers are expected to test `has_value()` first).
[[noreturn]] void throw_exception_from_error(const failure& f, const boost::source_location& loc);

}  // namespace gatherstats
