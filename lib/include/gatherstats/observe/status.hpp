// What the daemon shows of itself (docs/metrics.md, docs/operations.md): a
// plain snapshot of its state, taken on the event loop when a page is asked
// for, and the pure functions that turn it into the Prometheus text format,
// the status page (HTML and JSON) and the health checks. No I/O here except
// read_process_status(), which reads /proc/self (procfs, never a disk).
//
// Nothing in a snapshot is a secret: URLs are redacted when they are put in
// (http::redact_url) and errors are the redacted one-line messages the log
// shows. Every renderer escapes what it prints for its format.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gatherstats::observe {

// A Prometheus histogram with fixed buckets (upper bounds in seconds).
class histogram {
 public:
  // The buckets of both duration histograms: 5 ms to 60 s.
  static constexpr std::array<double, 13> duration_bounds = {
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

  void observe(double seconds);
  // Cumulative count of observations <= duration_bounds[i]; the last entry
  // (+Inf) is count().
  std::array<std::uint64_t, duration_bounds.size()> cumulative() const;
  std::uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::array<std::uint64_t, duration_bounds.size()> buckets_{};  // not cumulative
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

// One configured endpoint, as the metrics and the status page show it.
struct endpoint_status {
  std::string name;
  std::string url;  // redacted
  std::chrono::milliseconds interval{0};
  std::optional<timestamp> last_fetch;    // the end of the last fetch, ok or not
  std::optional<timestamp> last_success;  // the body of the last accepted fetch
  bool up = false;                        // the last fetch was accepted
  std::chrono::microseconds last_duration{0};
  unsigned last_http_status = 0;
  std::uint64_t last_rows = 0;
  std::uint64_t last_bytes = 0;
  std::uint64_t fetches = 0;  // every fetch that ended, accepted or failed
  std::uint64_t rows = 0;     // rows of accepted fetches
  std::uint64_t skipped_ticks = 0;
  std::uint64_t consecutive_failures = 0;
  std::array<std::uint64_t, fetch_reason_count> failures{};  // by fetch_reason
  std::string last_error;                                    // of the last failed fetch
  // In a cluster: whether this member fetches the endpoint now, and the
  // members that do (its owners, as this member computes them). Alone:
  // owned, and no owners.
  bool owned = true;
  std::vector<std::string> owners;

  std::uint64_t failures_total() const;
  // Takes a fetch's outcome into account.
  void record(const fetch_record& r);
};

struct database_status {
  bool up = false;  // at least one connection is up
  std::uint64_t committed = 0;
  std::uint64_t commit_failures = 0;
  std::uint64_t rows_committed = 0;
  histogram commit_duration;
  std::size_t connections_open = 0;
  std::size_t connections_busy = 0;
  std::size_t waiting = 0;  // fetches waiting in memory (queued or being committed)
  // database.retention and the partitioned layout (docs/schema.md).
  std::uint64_t retention_deleted_rows = 0;  // rows deleted from a plain table
  std::uint64_t retention_dropped_partitions = 0;
  std::uint64_t partitions_created = 0;
};

// Why fetches were lost, the label of gatherstatsd_spool_dropped_total.
enum class drop_reason : std::uint8_t {
  spool_full,        // drop_oldest made room, or stop_fetching refused one
  spool_unwritable,  // the spool could not store it
  no_spool,          // memory was full and there is no spool
};
inline constexpr std::size_t drop_reason_count = 3;
const char* to_string(drop_reason r);

struct spool_status {
  std::string directory;
  bool usable = false;         // open and writable as far as the daemon knows
  std::string problem;         // why not, when not usable
  bool stop_fetching = false;  // when_full: stop_fetching
  bool full = false;           // full under stop_fetching: fetching paused
  std::uint64_t fetches = 0;   // on disk
  std::uint64_t bytes = 0;     // on disk
  std::uint64_t max_bytes = 0;
  std::optional<timestamp> oldest;  // fetched_at of the oldest fetch on disk
  std::uint64_t written = 0;
  std::uint64_t replayed = 0;  // read back from disk into memory
  std::array<std::uint64_t, drop_reason_count> dropped{};
};

// The listener's own counters (observe/http_server.hpp's server_stats).
struct listener_status {
  std::size_t connections = 0;  // open now
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;  // max_connections reached
  std::uint64_t requests = 0;
  std::uint64_t rejected = 0;      // 400, 405, 413, 431
  std::uint64_t unauthorized = 0;  // 401
  std::uint64_t timed_out = 0;
  std::uint64_t handshake_failures = 0;
};

// cluster: (docs/cluster.md): this member, the live members it sees, and
// what its heartbeat has done.
struct cluster_member_status {
  std::string name;
  std::size_t endpoints = 0;  // its share, as that member last reported it
  std::optional<timestamp> joined;
  std::optional<timestamp> lease_until;  // the database's clock
  bool self = false;
};

struct cluster_status {
  std::string name;
  std::string member;
  std::chrono::milliseconds lease{0};
  unsigned replicas = 1;
  // The last heartbeat renewed the lease less than a lease time ago.
  bool lease_valid = false;
  std::optional<timestamp> last_heartbeat;     // the last renewal that succeeded
  std::vector<cluster_member_status> members;  // the live members, by name
  std::size_t endpoints_owned = 0;             // fetched by this member
  std::size_t endpoints_total = 0;             // configured
  std::uint64_t heartbeats = 0;                // renewals that succeeded
  std::uint64_t heartbeat_failures = 0;
  std::uint64_t membership_changes = 0;  // member_joined and member_left events
  std::uint64_t ticks_fenced = 0;        // fetches that stored nothing: tick stored already
  std::string problem;                   // why the last heartbeat failed
};

struct daemon_status {
  std::string version;
  std::string revision;
  timestamp started{};  // the process's start
  std::string config_file;
  bool configured = false;  // a configuration is in force
  bool stopping = false;
  bool last_reload_ok = true;
  std::optional<timestamp> last_reload;  // the last load or reload attempt
  std::string last_reload_error;
  std::vector<endpoint_status> endpoints;  // in configuration order
  histogram fetch_duration;
  database_status database;
  spool_status spool;
  std::optional<cluster_status> cluster;    // in a cluster
  std::optional<listener_status> listener;  // when listening
};

// The standard process_* metrics, from /proc/self.
struct process_status {
  double cpu_seconds = 0;
  std::uint64_t resident_bytes = 0;
  std::uint64_t virtual_bytes = 0;
  std::uint64_t open_fds = 0;
  std::uint64_t max_fds = 0;
  double start_time_seconds = 0;  // since the Unix epoch
  std::uint64_t threads = 0;
};
process_status read_process_status();

// Prometheus text format 0.0.4 (docs/metrics.md lists every family).
inline constexpr const char* metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";
std::string render_metrics(const daemon_status& s, const process_status& p);

// The status page and its JSON twin (/api/v1/status). `now` places "ago".
std::string render_status_html(const daemon_status& s, timestamp now);
std::string render_status_json(const daemon_status& s, timestamp now);

// Health: each check with its verdict. /livez has one check (the event
// loop answered), /readyz the ones below.
struct health_check {
  std::string name;
  bool ok = true;
  std::string why;  // when failed
};
std::vector<health_check> readiness_checks(const daemon_status& s);
// "ok\n", or with `verbose` "[+]name ok" / "[-]name failed: why" lines and
// a last line saying whether the whole passed.
std::string render_health(const std::vector<health_check>& checks, bool verbose,
                          const std::string& what);
bool healthy(const std::vector<health_check>& checks);

// Text helpers, exposed for tests.
std::string escape_html(std::string_view s);
std::string escape_label_value(std::string_view s);
// "3s ago", "2m 5s ago", "1h 2m ago", "3d 4h ago"; "never" when unset.
std::string ago(std::optional<timestamp> t, timestamp now);

}  // namespace gatherstats::observe
