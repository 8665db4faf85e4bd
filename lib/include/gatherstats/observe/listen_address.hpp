// The address the daemon's HTTP listener binds: "127.0.0.1:9187",
// "[::1]:9187", "localhost:9187", or ":9187" for every address (IPv6 and
// IPv4). Parsing is pure (no Asio, no resolving), so that configuration
// validation (`--check`) reports a malformed address exactly as the listener
// would refuse it.
//
// Errors: a permanent failure whose message is the reason only ("no port",
// "write an IPv6 address in brackets"); the caller adds what was parsed and
// where.
#pragma once

#include "gatherstats/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace gatherstats::observe {

struct listen_address {
  std::string host;  // without brackets; empty: every address
  std::uint16_t port = 0;
  bool ipv6_literal = false;  // host was written in brackets
  bool operator==(const listen_address&) const = default;

  // As it would be written: "127.0.0.1:9187", "[::1]:9187", ":9187".
  std::string to_string() const;
};

// Port 0 is accepted only when `allow_any_port` (tests bind a free port);
// the configuration requires 1..65535.
outcome<listen_address> parse_listen_address(std::string_view text, bool allow_any_port = false);

}  // namespace gatherstats::observe
