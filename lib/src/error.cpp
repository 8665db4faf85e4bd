#include "gatherstats/error.hpp"

#include <stdexcept>

namespace gatherstats {

void throw_exception_from_error(const failure& f, const boost::source_location&) {
  throw std::runtime_error(f.message);
}

const char* to_string(fetch_reason r) {
  switch (r) {
    case fetch_reason::none:
      return "none";
    case fetch_reason::dns:
      return "dns";
    case fetch_reason::connect:
      return "connect";
    case fetch_reason::tls:
      return "tls";
    case fetch_reason::timeout:
      return "timeout";
    case fetch_reason::http_status:
      return "http_status";
    case fetch_reason::body_too_large:
      return "body_too_large";
    case fetch_reason::parse:
      return "parse";
    case fetch_reason::flatten:
      return "flatten";
    case fetch_reason::other:
      return "other";
  }
  return "other";
}

}  // namespace gatherstats
