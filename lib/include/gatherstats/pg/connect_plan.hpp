// Which hosts a connection string names, and how each is tried: the pure part
// of connecting (no sockets, no DNS), so that it can be tested on its own.
//
// libpq could try the hosts of a multi-host conninfo itself, but it resolves
// every name with a blocking getaddrinfo(), gives up on the whole list when
// one name does not resolve (ours did too), and leaves timeouts to the
// caller in non-blocking mode. So pg::connection tries the hosts itself, one
// at a time and in order, each with a conninfo that names that host alone:
//
// - `host`, `hostaddr` and `port` are paired as libpq pairs them: one entry
//   per host, or a single port for all of them; when the conninfo does not
//   name them, PGHOST, PGHOSTADDR and PGPORT are read instead (libpq would
//   read them). A host name without a hostaddr is looked up by the caller
//   (`lookup`), which then tries each of its addresses;
// - `target_session_attrs` (or PGTARGETSESSIONATTRS) goes into every
//   attempt, where libpq checks it on its single-host connection. When
//   neither sets it, `read-write`: gatherstats only writes, and a read-only
//   host must not be chosen over a writable one later in the list.
//   `prefer-standby` becomes two passes over the list, `standby` first and
//   then `any`, as libpq does it;
// - where the conninfo does not set them: client_encoding UTF8 (unless
//   PGCLIENTENCODING says otherwise), and TCP keepalives with a user timeout
//   (default_tcp_settings), so that a database that stops answering without
//   an error is noticed by the kernel too. libpq ignores them on Unix
//   sockets.
//
// `connect_timeout` (or PGCONNECT_TIMEOUT) is, as libpq defines it, the time
// allowed to each host address; without it each attempt gets an even share
// of what is left of the caller's deadline (attempt_deadline).
//
// Errors: a conninfo libpq cannot parse, lists that do not pair, or a
// connect_timeout that is not a whole number: a permanent failure. No
// message ever contains a password: hosts are named by host and port only.
#pragma once

#include "gatherstats/error.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gatherstats::pg {

// One host of the conninfo, to be tried alone.
struct host_attempt {
  // Keyword/value pairs for PQconnectStartParams: this host (and its port),
  // the target_session_attrs of this pass, and every other keyword of the
  // conninfo with our defaults added.
  std::vector<std::pair<std::string, std::string>> params;
  // A host name to resolve first: each of its addresses is then tried with
  // `hostaddr` set to it (libpq keeps `host` for TLS and the password
  // file). Empty for an address, a socket directory, or a given hostaddr.
  std::string lookup;
  // How messages name the host: `host "db1" port 5433`. Never a password.
  std::string shown;
};

struct connect_plan {
  std::vector<host_attempt> attempts;  // in the order to try them
  // libpq's connect_timeout, when set and positive: per host address.
  std::optional<std::chrono::milliseconds> per_host_timeout;
};

// What plan_connect sets unless the conninfo does. libpq's defaults are
// the system's: keepalives after two hours idle, and data unacknowledged
// for up to about 15 minutes (TCP retransmissions) before a dead peer shows.
// These notice one within about 11 s idle (5 + 3 probes 2 s apart) and
// 10 s with data unacknowledged.
inline constexpr std::pair<std::string_view, std::string_view> default_tcp_settings[] = {
    {"keepalives", "1"},       {"keepalives_idle", "5"},      {"keepalives_interval", "2"},
    {"keepalives_count", "3"}, {"tcp_user_timeout", "10000"},
};

// The least time one attempt gets when the deadline is shared out (libpq's
// own minimum connect_timeout is 2 s).
inline constexpr std::chrono::milliseconds min_attempt_time{2000};

// An environment variable's value, or nullptr when unset (std::getenv in
// the daemon, a map in tests).
using environment = std::function<const char*(const char*)>;

outcome<connect_plan> plan_connect(std::string_view conninfo, const environment& env);

// When an attempt must have connected by: `per_host` from now when given;
// otherwise what is left until `until` shared evenly among `attempts_left`
// (this one included), but at least min_attempt_time. Never past `until`.
std::chrono::steady_clock::time_point attempt_deadline(
    std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point until,
    std::size_t attempts_left, std::optional<std::chrono::milliseconds> per_host);

}  // namespace gatherstats::pg
