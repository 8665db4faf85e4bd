// The daemon's configuration: a YAML file (docs/configuration.md) read into
// plain aggregates, validated completely.
//
// Loading never throws for bad input: every problem of the file is collected
// (unknown keys, wrong types, duplicate endpoint names, bad URLs, missing
// secret files, impossible values) as a `config_error` naming file, line and
// column, and a config is returned only when there is none.
//
// `${NAME}` in a string value is replaced by environment variable NAME (an
// unset variable is an error; `$${` writes a literal `${`). Secrets are never
// in the configuration itself: only the paths of files holding them.
//
// Loading reads the file and checks that secret files exist: it blocks, so
// the daemon calls it off the event loop. Not thread-safe (plain data).
#pragma once

#include "gatherstats/json/flatten.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gatherstats::config {

using std::chrono::milliseconds;

struct tls_options {
  std::string ca_file;    // empty: the system trust store
  std::string cert_file;  // client certificate (PEM), with key_file
  std::string key_file;
  bool insecure_skip_verify = false;  // logged as a warning when set
  bool operator==(const tls_options&) const = default;
};

struct auth_options {
  std::string bearer_token_file;  // "Authorization: Bearer <file contents, trimmed>"
  std::string username;           // basic auth, with password_file
  std::string password_file;
  bool operator==(const auth_options&) const = default;
};

struct endpoint_config {
  std::string name;  // unique; used in logs and metrics
  std::string url;   // http:// or https://
  milliseconds interval{5 * 60 * 1000};
  milliseconds timeout{10'000};  // per attempt: resolve + connect + TLS + request + body
  unsigned retries = 2;          // transient failures retried at most this often per tick
  bool align = false;            // fire on wall-clock multiples of interval
  std::string record_as;         // stored in the endpoint column; empty: the url
  std::vector<std::pair<std::string, std::string>> headers;
  auth_options auth;
  tls_options tls;
  json::flatten_options flatten;  // values (strict|skip), max_depth, max_body_bytes

  // The value stored in the endpoint column.
  const std::string& recorded_endpoint() const { return record_as.empty() ? url : record_as; }
  bool operator==(const endpoint_config&) const = default;
};

struct database_config {
  std::string conninfo;  // libpq string or URI; empty: libpq's environment
  std::size_t pool_size = 2;
  std::string table = "gatherstats_statistic";
  milliseconds connect_timeout{10'000};
  milliseconds statement_timeout{10'000};  // the client's deadline of one commit
  // The fetch log (gatherstats_fetch beside the table, docs/schema.md):
  // one row per fetch, failures included; rows older than the retention go.
  bool fetch_log = true;
  milliseconds fetch_log_retention{30LL * 86'400'000};
  // Statistics rows whose fetched_at is older are removed (docs/schema.md,
  // "Retention"): whole partitions of a partitioned table, small batches of
  // a plain one. None: kept for ever.
  std::optional<milliseconds> retention;
  bool operator==(const database_config&) const = default;
};

enum class spool_full_policy { drop_oldest, stop_fetching };

struct spool_config {
  std::string directory = "/var/lib/gatherstats/spool";
  std::size_t max_bytes = std::size_t{1} << 30;
  std::size_t memory_max_bytes = std::size_t{64} << 20;  // results waiting in memory
  // The longest a fetch waits in memory alone: past it, it is written to the
  // spool too (docs/reliability.md).
  milliseconds memory_max_wait{2'000};
  spool_full_policy when_full = spool_full_policy::drop_oldest;
  bool operator==(const spool_config&) const = default;
};

struct metrics_config {
  std::string listen;               // "127.0.0.1:9187", ":9187" (every address); empty: none
  std::string cert_file, key_file;  // TLS when set (both)
  std::string client_ca_file;       // with TLS: client certificates from this CA required
  std::vector<std::pair<std::string, std::string>> basic_auth_users;  // user -> bcrypt hash
  std::size_t max_connections = 64;
  bool operator==(const metrics_config&) const = default;
};

// Several daemons sharing one set of endpoints (docs/cluster.md): members
// hold leases in the database, every member computes the same owners of
// each endpoint from the live members, and each tick is stored once.
struct cluster_config {
  std::string name;            // the cluster: members with the same name share the endpoints
  std::string member;          // this member's name, unique in the cluster (default: the host name)
  milliseconds lease{10'000};  // a member silent this long is taken for dead
  unsigned replicas = 1;       // members that fetch each endpoint: 1 or 2
  // LISTEN for other members leaving and joining, on a connection of its
  // own; false through PgBouncer in transaction pooling (no LISTEN there):
  // changes are then seen at the next heartbeat.
  bool notify = true;
  bool operator==(const cluster_config&) const = default;
};

struct daemon_config {
  database_config database;
  std::vector<endpoint_config> endpoints;
  spool_config spool;
  metrics_config metrics;
  std::optional<cluster_config> cluster;    // none: the daemon runs alone
  std::size_t max_concurrent_fetches = 64;  // across all endpoints
  milliseconds shutdown_grace{10'000};      // in-flight work allowed to finish on SIGTERM
  bool operator==(const daemon_config&) const = default;
};

struct config_error {
  std::string file;
  int line = 0;    // 1-based; 0 when the error is about the whole file
  int column = 0;  // 1-based
  std::string message;
  // "FILE:LINE:COLUMN: MESSAGE"
  std::string to_string() const;
};

struct load_result {
  std::optional<daemon_config> config;  // set only when errors is empty
  std::vector<config_error> errors;
};

// Looks up an environment variable; nullopt when unset. Injected for tests.
using env_lookup = std::function<std::optional<std::string>(std::string_view)>;
env_lookup process_environment();

// Parses YAML text; `file` is used in messages and to resolve nothing else
// (relative secret paths are taken relative to the current directory).
load_result parse_config(std::string_view yaml, const std::string& file,
                         const env_lookup& env = process_environment());

// Reads and parses a file.
load_result load_config_file(const std::string& path,
                             const env_lookup& env = process_environment());

}  // namespace gatherstats::config
