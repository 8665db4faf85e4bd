// The model's bookkeeping, /proc reading, health checks and the Prometheus
// text format. The pages are in status_page.cpp.
#include "gatherstats/observe/status.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>

namespace gatherstats::observe {

// --- the model ----------------------------------------------------------------

void histogram::observe(double seconds) {
  ++count_;
  sum_ += seconds;
  auto at = std::lower_bound(duration_bounds.begin(), duration_bounds.end(), seconds);
  if (at != duration_bounds.end())
    ++buckets_[static_cast<std::size_t>(at - duration_bounds.begin())];
}

std::array<std::uint64_t, histogram::duration_bounds.size()> histogram::cumulative() const {
  std::array<std::uint64_t, duration_bounds.size()> out{};
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < buckets_.size(); ++i) out[i] = sum += buckets_[i];
  return out;
}

std::uint64_t endpoint_status::failures_total() const {
  std::uint64_t n = 0;
  for (auto f : failures) n += f;
  return n;
}

void endpoint_status::record(const fetch_record& r) {
  ++fetches;
  last_fetch = r.fetched_at;
  last_duration = r.outcome.duration;
  last_http_status = r.outcome.http_status;
  last_bytes = r.outcome.bytes;
  up = r.outcome.ok();
  if (up) {
    last_success = r.fetched_at;
    last_rows = r.rows.size();
    rows += r.rows.size();
    consecutive_failures = 0;
  } else {
    last_rows = 0;
    ++failures[static_cast<std::size_t>(r.outcome.reason)];
    ++consecutive_failures;
    last_error = r.outcome.error;
  }
}

const char* to_string(drop_reason r) {
  switch (r) {
    case drop_reason::spool_full:
      return "spool_full";
    case drop_reason::spool_unwritable:
      return "spool_unwritable";
    case drop_reason::no_spool:
      return "no_spool";
  }
  return "other";
}

// --- /proc --------------------------------------------------------------------

process_status read_process_status() {
  process_status p;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  if (std::ifstream stat("/proc/self/stat"); stat) {
    std::string line;
    std::getline(stat, line);
    // The command name (field 2) is in parentheses and may hold spaces.
    auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream rest(line.substr(close + 2));
      std::vector<std::string> f{std::istream_iterator<std::string>(rest), {}};
      // Fields from 3 on: f[0] is field 3 (state). utime 14, stime 15,
      // num_threads 20, starttime 22, vsize 23, rss 24.
      auto field = [&f](std::size_t n) -> double {
        return n - 3 < f.size() ? std::strtod(f[n - 3].c_str(), nullptr) : 0;
      };
      p.cpu_seconds = (field(14) + field(15)) / ticks;
      p.threads = static_cast<std::uint64_t>(field(20));
      p.virtual_bytes = static_cast<std::uint64_t>(field(23));
      p.resident_bytes = static_cast<std::uint64_t>(field(24) * page);
      double boot = 0;
      if (std::ifstream s("/proc/stat"); s) {
        std::string key;
        while (s >> key) {
          if (key == "btime") {
            s >> boot;
            break;
          }
          s.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
        }
      }
      p.start_time_seconds = boot + field(22) / ticks;
    }
  }
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end;
       it.increment(ec))
    ++p.open_fds;
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0) p.max_fds = files.rlim_cur;
  return p;
}

// --- health -------------------------------------------------------------------

std::vector<health_check> readiness_checks(const daemon_status& s) {
  std::vector<health_check> checks;
  checks.push_back({"config", s.configured, "no configuration is loaded yet"});
  checks.push_back({"shutdown", !s.stopping, "the daemon is stopping"});
  health_check storage{"storage", true, {}};
  if (!s.database.up) {
    if (!s.spool.usable) {
      storage = {"storage", false,
                 "the database is down and there is no usable spool (" +
                     (s.spool.problem.empty() ? std::string("none configured") : s.spool.problem) +
                     "): fetched results have nowhere durable to go"};
    } else if (s.spool.full) {
      storage = {"storage", false,
                 "the database is down and the spool is full (when_full: stop_fetching)"};
    }
  }
  checks.push_back(storage);
  if (s.cluster) {
    // A member without a valid lease is not counted on by the others: its
    // share is theirs (or, before it ever joined, it fetches everything).
    const auto& c = *s.cluster;
    const std::string problem = c.problem.empty() ? std::string() : " (" + c.problem + ")";
    health_check cluster{"cluster", c.lease_valid, {}};
    if (!c.lease_valid)
      cluster.why = c.last_heartbeat ? "this member's lease has lapsed" + problem +
                                           ": the other members fetch its share"
                                     : "this member has not joined its cluster yet" + problem +
                                           ": it fetches every endpoint itself until it can";
    checks.push_back(cluster);
  }
  return checks;
}

bool healthy(const std::vector<health_check>& checks) {
  return std::all_of(checks.begin(), checks.end(), [](const auto& c) { return c.ok; });
}

std::string render_health(const std::vector<health_check>& checks, bool verbose,
                          const std::string& what) {
  const bool ok = healthy(checks);
  if (!verbose) {
    if (ok) return "ok\n";
    std::string out;
    for (const auto& c : checks)
      if (!c.ok) out += "[-]" + c.name + " failed: " + c.why + "\n";
    return out + what + " check failed\n";
  }
  std::string out;
  for (const auto& c : checks)
    out += c.ok ? "[+]" + c.name + " ok\n" : "[-]" + c.name + " failed: " + c.why + "\n";
  return out + what + (ok ? " check passed\n" : " check failed\n");
}

// --- Prometheus text format 0.0.4 -----------------------------------------------

std::string escape_label_value(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

namespace {

// Shortest round-trip text of a value; integers without a decimal point.
void append_number(std::string& out, double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc{} ? end : buf);
}
void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc{} ? end : buf);
}

double seconds(timestamp t) { return static_cast<double>(t.time_since_epoch().count()) / 1e6; }
double seconds(std::optional<timestamp> t) { return t ? seconds(*t) : 0; }
template <class Rep, class Period>
double seconds(std::chrono::duration<Rep, Period> d) {
  return std::chrono::duration<double>(d).count();
}

class text_writer {
 public:
  explicit text_writer(std::string& out) : out_(out) {}

  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  // `labels` is already formatted: {endpoint="a",reason="dns"} or empty.
  template <class V>
  void sample(std::string_view name, std::string_view labels, V value) {
    out_ += name;
    out_ += labels;
    out_ += ' ';
    append_number(out_, value);
    out_ += '\n';
  }

  void histogram_samples(std::string_view name, const histogram& h) {
    auto cumulative = h.cumulative();
    for (std::size_t i = 0; i < cumulative.size(); ++i) {
      std::string le = "{le=\"";
      append_number(le, histogram::duration_bounds[i]);
      le += "\"}";
      sample(std::string(name) + "_bucket", le, cumulative[i]);
    }
    sample(std::string(name) + "_bucket", "{le=\"+Inf\"}", h.count());
    sample(std::string(name) + "_sum", "", h.sum());
    sample(std::string(name) + "_count", "", h.count());
  }

 private:
  std::string& out_;
};

// One family with a sample per endpoint.
template <class F>
void per_endpoint(text_writer& w, const std::vector<std::string>& labels,
                  const std::vector<endpoint_status>& eps, std::string_view name,
                  std::string_view type, std::string_view help, F value) {
  w.family(name, type, help);
  for (std::size_t i = 0; i < eps.size(); ++i) w.sample(name, labels[i], value(eps[i]));
}

}  // namespace

std::string render_metrics(const daemon_status& s, const process_status& p) {
  std::string out;
  out.reserve(4096 + s.endpoints.size() * 2600);
  text_writer w(out);

  std::vector<std::string> labels;
  labels.reserve(s.endpoints.size());
  for (const auto& e : s.endpoints)
    labels.push_back("{endpoint=\"" + escape_label_value(e.name) + "\"}");
  const auto& eps = s.endpoints;
  using u64 = std::uint64_t;

  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_up", "gauge",
               "1 when the endpoint's last fetch was accepted, 0 when it failed or none ended yet.",
               [](const endpoint_status& e) { return u64(e.up ? 1 : 0); });
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_interval_seconds", "gauge",
               "The endpoint's configured interval.",
               [](const endpoint_status& e) { return seconds(e.interval); });
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_last_fetch_timestamp_seconds", "gauge",
               "When the endpoint's last fetch ended, accepted or not (0: none yet).",
               [](const endpoint_status& e) { return seconds(e.last_fetch); });
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_last_success_timestamp_seconds", "gauge",
               "When the body of the endpoint's last accepted fetch arrived (0: none yet).",
               [](const endpoint_status& e) { return seconds(e.last_success); });
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_last_fetch_duration_seconds", "gauge",
               "How long the endpoint's last fetch took, retries included.",
               [](const endpoint_status& e) { return seconds(e.last_duration); });
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_last_http_status", "gauge",
               "The HTTP status of the endpoint's last response (0: no response).",
               [](const endpoint_status& e) { return u64(e.last_http_status); });
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_last_rows", "gauge",
               "Rows of the endpoint's last fetch (0 when it failed).",
               [](const endpoint_status& e) { return e.last_rows; });
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_last_response_bytes", "gauge",
               "Body bytes of the endpoint's last response, after decompression.",
               [](const endpoint_status& e) { return e.last_bytes; });
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_fetches_total", "counter",
               "Fetches of the endpoint that ended, accepted or failed (retries are one fetch).",
               [](const endpoint_status& e) { return e.fetches; });

  const char* failures = "gatherstatsd_endpoint_failures_total";
  w.family(failures, "counter", "Failed fetches of the endpoint, by reason.");
  for (std::size_t i = 0; i < eps.size(); ++i) {
    for (std::size_t r = 1; r < fetch_reason_count; ++r) {
      std::string l = labels[i];
      l.pop_back();
      l += ",reason=\"";
      l += to_string(static_cast<fetch_reason>(r));
      l += "\"}";
      w.sample(failures, l, eps[i].failures[r]);
    }
  }
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_rows_total", "counter",
               "Rows of the endpoint's accepted fetches.",
               [](const endpoint_status& e) { return e.rows; });
  per_endpoint(w, labels, eps, "gatherstatsd_endpoint_skipped_ticks_total", "counter",
               "Ticks of the endpoint that were not fetched (the previous fetch still ran, or "
               "fetching was paused).",
               [](const endpoint_status& e) { return e.skipped_ticks; });
  if (s.cluster)
    per_endpoint(w, labels, eps, "gatherstatsd_endpoint_owned", "gauge",
                 "1 when this cluster member fetches the endpoint, 0 when other members do.",
                 [](const endpoint_status& e) { return u64(e.owned ? 1 : 0); });

  w.family("gatherstatsd_fetch_duration_seconds", "histogram",
           "How long fetches took, every endpoint together, retries included.");
  w.histogram_samples("gatherstatsd_fetch_duration_seconds", s.fetch_duration);

  const auto& db = s.database;
  w.family("gatherstatsd_database_up", "gauge", "1 when at least one database connection is up.");
  w.sample("gatherstatsd_database_up", "", u64(db.up ? 1 : 0));
  w.family("gatherstatsd_database_committed_fetches_total", "counter",
           "Fetches committed to the database.");
  w.sample("gatherstatsd_database_committed_fetches_total", "", db.committed);
  w.family("gatherstatsd_database_commit_failures_total", "counter",
           "Fetches the database refused for good (dropped).");
  w.sample("gatherstatsd_database_commit_failures_total", "", db.commit_failures);
  w.family("gatherstatsd_database_committed_rows_total", "counter",
           "Rows of the fetches committed to the database.");
  w.sample("gatherstatsd_database_committed_rows_total", "", db.rows_committed);
  w.family("gatherstatsd_database_commit_duration_seconds", "histogram",
           "How long commit transactions took (one transaction may hold several fetches).");
  w.histogram_samples("gatherstatsd_database_commit_duration_seconds", db.commit_duration);
  w.family("gatherstatsd_database_connections_open", "gauge", "Database connections up.");
  w.sample("gatherstatsd_database_connections_open", "", u64(db.connections_open));
  w.family("gatherstatsd_database_connections_busy", "gauge", "Database connections in a commit.");
  w.sample("gatherstatsd_database_connections_busy", "", u64(db.connections_busy));
  w.family("gatherstatsd_database_waiting_fetches", "gauge",
           "Fetches waiting in memory to be committed, or being committed.");
  w.sample("gatherstatsd_database_waiting_fetches", "", u64(db.waiting));
  w.family("gatherstatsd_retention_deleted_rows_total", "counter",
           "Rows older than database.retention deleted from a plain (unpartitioned) table.");
  w.sample("gatherstatsd_retention_deleted_rows_total", "", db.retention_deleted_rows);
  w.family("gatherstatsd_retention_dropped_partitions_total", "counter",
           "Partitions older than database.retention dropped from a partitioned table.");
  w.sample("gatherstatsd_retention_dropped_partitions_total", "", db.retention_dropped_partitions);
  w.family("gatherstatsd_partitions_created_total", "counter",
           "Partitions of a partitioned table created ahead.");
  w.sample("gatherstatsd_partitions_created_total", "", db.partitions_created);

  const auto& sp = s.spool;
  w.family("gatherstatsd_spool_usable", "gauge",
           "1 when the spool is open and writable, as far as the daemon knows.");
  w.sample("gatherstatsd_spool_usable", "", u64(sp.usable ? 1 : 0));
  w.family("gatherstatsd_spool_fetches", "gauge", "Fetches waiting in the spool on disk.");
  w.sample("gatherstatsd_spool_fetches", "", sp.fetches);
  w.family("gatherstatsd_spool_bytes", "gauge", "Bytes of the fetches in the spool on disk.");
  w.sample("gatherstatsd_spool_bytes", "", sp.bytes);
  w.family("gatherstatsd_spool_max_bytes", "gauge", "The spool's limit (spool.max_bytes).");
  w.sample("gatherstatsd_spool_max_bytes", "", sp.max_bytes);
  w.family("gatherstatsd_spool_oldest_fetch_timestamp_seconds", "gauge",
           "When the oldest fetch in the spool was made (0: the spool is empty).");
  w.sample("gatherstatsd_spool_oldest_fetch_timestamp_seconds", "", seconds(sp.oldest));
  w.family("gatherstatsd_spool_written_fetches_total", "counter", "Fetches written to the spool.");
  w.sample("gatherstatsd_spool_written_fetches_total", "", sp.written);
  w.family("gatherstatsd_spool_replayed_fetches_total", "counter",
           "Fetches read back from the spool to be committed.");
  w.sample("gatherstatsd_spool_replayed_fetches_total", "", sp.replayed);
  w.family("gatherstatsd_spool_dropped_fetches_total", "counter",
           "Fetches lost for good, by reason.");
  for (std::size_t r = 0; r < drop_reason_count; ++r)
    w.sample("gatherstatsd_spool_dropped_fetches_total",
             std::string("{reason=\"") + to_string(static_cast<drop_reason>(r)) + "\"}",
             sp.dropped[r]);

  w.family("gatherstatsd_config_last_reload_successful", "gauge",
           "1 when the last load or reload of the configuration succeeded.");
  w.sample("gatherstatsd_config_last_reload_successful", "", u64(s.last_reload_ok ? 1 : 0));
  w.family("gatherstatsd_config_last_reload_timestamp_seconds", "gauge",
           "When the configuration was last loaded or a reload was tried.");
  w.sample("gatherstatsd_config_last_reload_timestamp_seconds", "", seconds(s.last_reload));
  w.family("gatherstatsd_build_info", "gauge", "Always 1; the labels say what is running.");
  w.sample("gatherstatsd_build_info",
           "{version=\"" + escape_label_value(s.version) + "\",revision=\"" +
               escape_label_value(s.revision) + "\"}",
           u64(1));

  if (s.cluster) {
    const auto& c = *s.cluster;
    w.family("gatherstatsd_cluster_info", "gauge",
             "Always 1 in a cluster; the labels say which cluster and which member this is.");
    w.sample("gatherstatsd_cluster_info",
             "{cluster=\"" + escape_label_value(c.name) + "\",member=\"" +
                 escape_label_value(c.member) + "\"}",
             u64(1));
    w.family("gatherstatsd_cluster_members", "gauge",
             "Live members of the cluster this member last saw, itself included.");
    w.sample("gatherstatsd_cluster_members", "", u64(c.members.size()));
    w.family("gatherstatsd_cluster_endpoints_owned", "gauge", "Endpoints this member fetches.");
    w.sample("gatherstatsd_cluster_endpoints_owned", "", u64(c.endpoints_owned));
    w.family("gatherstatsd_cluster_endpoints", "gauge",
             "Endpoints configured, that the members share.");
    w.sample("gatherstatsd_cluster_endpoints", "", u64(c.endpoints_total));
    w.family("gatherstatsd_cluster_lease_valid", "gauge",
             "1 while this member's lease is valid (renewed less than a lease time ago).");
    w.sample("gatherstatsd_cluster_lease_valid", "", u64(c.lease_valid ? 1 : 0));
    w.family("gatherstatsd_cluster_heartbeats_total", "counter",
             "Heartbeats the database answered.");
    w.sample("gatherstatsd_cluster_heartbeats_total", "", c.heartbeats);
    w.family("gatherstatsd_cluster_heartbeat_failures_total", "counter",
             "Heartbeats that failed (no connection, an error, a timeout).");
    w.sample("gatherstatsd_cluster_heartbeat_failures_total", "", c.heartbeat_failures);
    w.family("gatherstatsd_cluster_membership_changes_total", "counter",
             "Members seen joining or leaving the cluster since this one joined.");
    w.sample("gatherstatsd_cluster_membership_changes_total", "", c.membership_changes);
    w.family("gatherstatsd_cluster_ticks_fenced_total", "counter",
             "Fetches that stored nothing because their tick was stored already.");
    w.sample("gatherstatsd_cluster_ticks_fenced_total", "", c.ticks_fenced);
    w.family("gatherstatsd_cluster_member_endpoints", "gauge",
             "Endpoints each live member fetches, as that member last reported it.");
    for (const auto& m : c.members)
      w.sample("gatherstatsd_cluster_member_endpoints",
               "{member=\"" + escape_label_value(m.name) + "\"}", u64(m.endpoints));
  }

  if (s.listener) {
    const auto& l = *s.listener;
    w.family("gatherstatsd_http_connections", "gauge", "Connections open to the listener.");
    w.sample("gatherstatsd_http_connections", "", u64(l.connections));
    w.family("gatherstatsd_http_requests_total", "counter", "Requests the listener served.");
    w.sample("gatherstatsd_http_requests_total", "", l.requests);
    w.family("gatherstatsd_http_closed_connections_total", "counter",
             "Connections the listener closed early, by reason.");
    const std::pair<const char*, std::uint64_t> closed[] = {
        {"max_connections", l.refused},
        {"timeout", l.timed_out},
        {"tls_handshake", l.handshake_failures}};
    for (const auto& [why, n] : closed)
      w.sample("gatherstatsd_http_closed_connections_total",
               std::string("{reason=\"") + why + "\"}", n);
    w.family("gatherstatsd_http_refused_requests_total", "counter",
             "Requests the listener refused, by reason.");
    w.sample("gatherstatsd_http_refused_requests_total", "{reason=\"bad_request\"}", l.rejected);
    w.sample("gatherstatsd_http_refused_requests_total", "{reason=\"unauthorized\"}",
             l.unauthorized);
  }

  w.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent.");
  w.sample("process_cpu_seconds_total", "", p.cpu_seconds);
  w.family("process_resident_memory_bytes", "gauge", "Resident memory size.");
  w.sample("process_resident_memory_bytes", "", p.resident_bytes);
  w.family("process_virtual_memory_bytes", "gauge", "Virtual memory size.");
  w.sample("process_virtual_memory_bytes", "", p.virtual_bytes);
  w.family("process_open_fds", "gauge", "Open file descriptors.");
  w.sample("process_open_fds", "", p.open_fds);
  w.family("process_max_fds", "gauge", "The limit on open file descriptors (soft).");
  w.sample("process_max_fds", "", p.max_fds);
  w.family("process_start_time_seconds", "gauge",
           "Start time of the process since the Unix epoch.");
  w.sample("process_start_time_seconds", "", p.start_time_seconds);
  w.family("process_threads", "gauge", "Threads of the process.");
  w.sample("process_threads", "", p.threads);
  return out;
}

}  // namespace gatherstats::observe
