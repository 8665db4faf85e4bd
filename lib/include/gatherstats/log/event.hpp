// What the collector tells the outside world: one `event` per thing an
// operator may want to know. The daemon turns events into log lines (and,
// under systemd, journald fields); the library never writes logs itself.
// Events carry no secrets: URLs are redacted and tokens never appear.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

namespace gatherstats::log {

enum class event_kind {
  fetch_committed,  // a fetch's rows are in the database
  fetch_failed,     // a fetch (all its attempts) failed; nothing stored
  fetch_retrying,   // an attempt failed transiently; another follows
  tick_skipped,     // a tick came while the endpoint's previous fetch still ran
  commit_failed,    // a commit failed permanently; the fetch is dropped
  database_lost,    // a pool connection failed; commits wait
  database_back,    // a connection works again
  config_loaded,    // the configuration in force (at start or after a reload)
  config_rejected,  // a reload found errors; the old configuration runs on
  results_spooled,  // fetches not yet committed were written to the spool
  results_dropped,  // a fetch was dropped (spool full or unwritable): lost
  warning,          // something an operator should fix (e.g. TLS checks off)
  stopping,         // shutdown began
  // Old rows of the fetch log were deleted (rows: how many).
  fetch_log_pruned,
  // The spool cannot be used (at start): fetches waiting for the database
  // are in memory only.
  no_spool,
  // database.retention: rows of a plain statistics table deleted (rows: how
  // many; detail: the table, the cutoff and the retention).
  rows_removed,
  // A partition of a partitioned statistics table created ahead, or dropped
  // past the retention (detail: its name and range [from, to)).
  partition_created,
  partition_dropped,
  // cluster: (docs/cluster.md), one event per change. A member appeared in
  // the live members (this one when it joins; detail: who and the members),
  // a member went (detail: left cleanly, or its lease expired).
  member_joined,
  member_left,
  // This member's share of the endpoints changed (rows: how many it
  // fetches now; detail: of how many, among which members).
  share_changed,
  // This member could not renew its lease within the lease time (the others
  // take its share over; it goes on fetching its own into the spool), and
  // renewed it again.
  lease_lost,
  lease_renewed,
  // Debug: a fetch stored nothing because its tick was stored already (by
  // another member, or by an earlier try of the same commit).
  tick_fenced,
};

enum class severity { debug, info, notice, warning, error };

struct event {
  event(event_kind k, severity l = severity::info) : kind(k), level(l) {}

  event_kind kind;
  severity level;
  std::string endpoint;  // endpoint name, when about one
  std::string url;       // redacted
  std::size_t rows = 0;
  std::chrono::milliseconds duration{0};
  unsigned http_status = 0;
  std::string error;   // one line
  std::string detail;  // free text for the message
};

using event_sink = std::function<void(const event&)>;

const char* to_string(event_kind kind);

}  // namespace gatherstats::log
