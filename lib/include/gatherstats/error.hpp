// Expected failures as values.
//
// Everything that can go wrong at run time for reasons outside the program
// (an endpoint down, a bad document, a lost database) is returned as an
// `outcome<T>`: either the value or a `failure` that says, in one line, what
// went wrong and where, and whether trying again later may succeed.
// Exceptions are kept for programming errors and invalid start-up input.
#pragma once

#include <boost/system/result.hpp>

#include <cstdint>
#include <string>
#include <utility>

namespace gatherstats {

// Whether retrying the same operation later can succeed (a timeout, a lost
// connection, HTTP 503) or cannot (a document that breaks the rules, a
// certificate that does not match, a table without the required columns).
enum class failure_kind { transient, permanent };

// Why a fetch failed, in the fixed set the metrics and the fetch log count
// (docs/metrics.md): `timeout` is any deadline that passed, whatever the
// phase; `parse` is a body that is not valid JSON (or not decodable);
// `flatten` is valid JSON that breaks the flattening rules.
enum class fetch_reason : std::uint8_t {
  none,  // not a failure
  dns,
  connect,
  tls,
  timeout,
  http_status,
  body_too_large,
  parse,
  flatten,
  other,
};
inline constexpr std::size_t fetch_reason_count = 10;
const char* to_string(fetch_reason r);

struct failure {
  failure_kind kind = failure_kind::permanent;
  std::string message;       // one line, names what was wrong and where
  unsigned http_status = 0;  // the HTTP status behind the failure, if any
  fetch_reason reason = fetch_reason::other;

  static failure transient(std::string message, fetch_reason why = fetch_reason::other) {
    return {failure_kind::transient, std::move(message), 0, why};
  }
  static failure permanent(std::string message, fetch_reason why = fetch_reason::other) {
    return {failure_kind::permanent, std::move(message), 0, why};
  }
  bool is_transient() const { return kind == failure_kind::transient; }
};

template <class T>
using outcome = boost::system::result<T, failure>;

// Lets `outcome<T>::value()` throw when it holds a failure (a programming
// error: callers are expected to test `has_value()` first).
[[noreturn]] void throw_exception_from_error(const failure& f, const boost::source_location& loc);

}  // namespace gatherstats
