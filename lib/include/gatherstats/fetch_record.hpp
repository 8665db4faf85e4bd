// One fetch, ready to commit: where it came from, when its body arrived, and
// its rows. Committing the same record twice stores it once.
#pragma once

#include "gatherstats/json/flatten.hpp"

#include <chrono>
#include <cstdint>
#include <string>

namespace gatherstats {

using timestamp = std::chrono::sys_time<std::chrono::microseconds>;

struct fetch_record {
  std::string name;      // the configured endpoint name, for logs; not stored
  std::string endpoint;  // the value stored in the endpoint column
  timestamp fetched_at;  // the instant the whole body was received, UTC
  json::flat_rows rows;
  std::uint64_t spool_id = 0;  // its entry in the on-disk spool; 0: not spooled
};

// The current time, truncated to the microseconds PostgreSQL stores.
timestamp now_utc();

}  // namespace gatherstats
