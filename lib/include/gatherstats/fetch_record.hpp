// One fetch, ready to commit: where it came from, when its body arrived, and
// its rows. Committing the same record twice stores it once.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/json/flatten.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace gatherstats {

using timestamp = std::chrono::sys_time<std::chrono::microseconds>;

// How one fetch went, for the metrics, the status page and the fetch log
// (gatherstats_fetch, docs/schema.md). A failed fetch is a record too: no
// rows, its reason and its (redacted) error.
struct fetch_outcome {
  timestamp tick{};                          // the scheduled tick it was made for (wall clock)
  std::chrono::microseconds duration{0};     // from the tick's first attempt to the body or failure
  fetch_reason reason = fetch_reason::none;  // none: the fetch was accepted
  std::string error;                         // one line, URLs redacted; empty when ok
  unsigned http_status = 0;                  // of the last response, 0 when none came
  std::uint64_t bytes = 0;                   // body bytes received (after decompression)
  bool ok() const { return reason == fetch_reason::none; }
  bool operator==(const fetch_outcome&) const = default;
};

struct fetch_record {
  std::string name;      // the configured endpoint name, for logs; not stored
  std::string endpoint;  // the value stored in the endpoint column
  timestamp fetched_at;  // the instant the whole body was received, UTC (failures: when it failed)
  json::flat_rows rows;
  std::uint64_t spool_id = 0;  // its entry in the on-disk spool; 0: not spooled
  // Bookkeeping of the daemon's memory, never stored: a number that names
  // this record while it waits (0: none given), and when it began to wait.
  std::uint64_t memory_id = 0;
  std::chrono::steady_clock::time_point accepted{};
  fetch_outcome outcome;
};

// About how much memory `r` holds (what the in-memory queue bound counts).
inline std::size_t memory_bytes(const fetch_record& r) {
  return sizeof(fetch_record) + r.name.capacity() + r.endpoint.capacity() +
         r.outcome.error.capacity() + r.rows.memory_bytes();
}

// The current time, truncated to the microseconds PostgreSQL stores.
timestamp now_utc();

// ISO 8601 in UTC with microseconds: 2026-11-27T23:59:59.123456Z.
std::string to_iso8601(timestamp t);

}  // namespace gatherstats
