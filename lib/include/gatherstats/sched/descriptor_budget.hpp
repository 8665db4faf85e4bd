// How the daemon shares out its file descriptors: arithmetic with no I/O.
//
// A process may hold at most its soft RLIMIT_NOFILE descriptors (systemd
// starts a service at 1,024 unless the unit sets LimitNOFILE=, and the
// unit's system-call filter forbids raising it from inside). Some are kept
// back for what the daemon cannot do without: its own (standard streams,
// the event loop, signals, the journal and notify sockets, the spool, the
// resolver, the blocking pool's file reads, TLS trust store lookups), the
// database pool (counted twice: a reload that changes the database opens
// the new pool while the old one closes) and the listener's connections
// (metrics.max_connections, plus its own socket and one being refused).
// The rest is for fetch sockets: a fetch in flight holds one, and an
// endpoint keeps its connection open between fetches while there is room
// (http/connection_budget.hpp closes idle ones when there is not). Fetches
// at once are capped at the fetch sockets, so that a fetch always finds a
// socket, if need be by closing another endpoint's idle connection.
//
// The numbers are measured, with margin, in docs/operations.md
// ("File descriptors").
#pragma once

#include "gatherstats/config/config.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

namespace gatherstats::sched {

// The daemon's own descriptors besides the pool, the listener and fetches
// (about 13 in use; the rest is margin for short-lived ones).
inline constexpr std::size_t own_descriptors = 64;

// What the configuration asks for.
struct descriptor_needs {
  std::size_t pool_size = 0;             // database.pool_size
  std::size_t listener_connections = 0;  // metrics.max_connections; 0: no listener
  std::size_t max_concurrent_fetches = 1;
  std::size_t endpoints = 0;
};

descriptor_needs needs_of(const config::daemon_config& cfg);

struct descriptor_budget {
  std::uint64_t limit = 0;   // the soft RLIMIT_NOFILE the daemon runs under
  std::size_t reserved = 0;  // kept back from fetches
  // limit - reserved, and at least 1: under a limit that the reserve takes
  // whole, fetches still run, one at a time, on the reserve's margin.
  std::size_t fetch_sockets = 1;
  std::size_t concurrency = 1;  // fetches at once: as configured, capped to fetch_sockets
  std::size_t configured = 1;   // max_concurrent_fetches as configured
  std::size_t endpoints = 0;

  // Fewer fetches can run at once than the configuration allows and the
  // endpoints could use (max_concurrent_fetches above the endpoint count
  // is never reached anyway).
  bool capped() const;
  // Not every endpoint can keep its connection open between fetches.
  bool closes_idle() const { return endpoints > fetch_sockets; }
  // The smallest limit under which nothing is capped and every endpoint
  // keeps its connection: the reserve plus one socket per endpoint.
  std::uint64_t limit_that_fits() const { return reserved + endpoints; }
};

// `limit` as getrlimit gives it (RLIM_INFINITY is a very large number).
descriptor_budget plan_descriptors(std::uint64_t limit, const descriptor_needs& needs);

// What the daemon says, once at start and at each reload: a warning when
// fetches at once are capped (empty when they are not), a notice when idle
// connections will be closed to make room (empty when they will not). Both
// name the numbers and the remedy.
std::string capped_message(const descriptor_budget& b);
std::string closes_idle_message(const descriptor_budget& b);

}  // namespace gatherstats::sched
