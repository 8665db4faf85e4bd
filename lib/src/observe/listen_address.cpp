#include "gatherstats/observe/listen_address.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

namespace gatherstats::observe {
namespace {

bool is_ipv4(const std::string& s) {
  in_addr a{};
  return ::inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool is_ipv6(const std::string& s) {
  in6_addr a{};
  return ::inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

// A DNS name as a resolver would take it: labels of letters, digits and "-".
bool is_host_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  std::size_t label = 0;
  for (char c : s) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok || ++label > 63) return false;
  }
  return label > 0 || s.size() > 1;
}

}  // namespace

std::string listen_address::to_string() const {
  std::string port_text = std::to_string(port);
  if (ipv6_literal) return "[" + host + "]:" + port_text;
  return host + ":" + port_text;
}

outcome<listen_address> parse_listen_address(std::string_view text, bool allow_any_port) {
  listen_address out;
  std::string_view port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return failure::permanent("no closing \"]\"");
    if (close + 1 >= text.size() || text[close + 1] != ':') return failure::permanent("no port");
    out.host = std::string(text.substr(1, close - 1));
    out.ipv6_literal = true;
    port = text.substr(close + 2);
    if (!is_ipv6(out.host))
      return failure::permanent("\"" + out.host + "\" is not an IPv6 address");
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return failure::permanent("no port");
    out.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
    if (out.host.find(':') != std::string::npos)
      return failure::permanent("write an IPv6 address in brackets");
    const bool numeric = std::all_of(out.host.begin(), out.host.end(),
                                     [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
    if (!out.host.empty() && !is_ipv4(out.host) && (numeric || !is_host_name(out.host)))
      return failure::permanent("\"" + out.host + "\" is neither an IP address nor a host name");
  }
  unsigned n = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  const unsigned min_port = allow_any_port ? 0 : 1;
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || n < min_port ||
      n > 65535)
    return failure::permanent("the port must be a number from 1 to 65535");
  out.port = static_cast<std::uint16_t>(n);
  return out;
}

}  // namespace gatherstats::observe
