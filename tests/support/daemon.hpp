// What the daemon-level integration tests share: gatherstatsd as a real
// process with its own config and log file, deadline waits on conditions
// outside it (a query, a log line), and small queries about what it stored.
#pragma once

#include "support/test_env.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace test {

// Polls `condition` (a database query, a log file) until it holds or the
// deadline passes. There is no event to wait on from outside the daemon.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds within) {
  auto until = std::chrono::steady_clock::now() + within;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > until) return false;
    // ok-sleep: polling interval of a deadline wait
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

std::string read_text_file(const std::filesystem::path& p);

// A TCP port of 127.0.0.1 that was free a moment ago (bound, then closed).
std::uint16_t free_port();

// The `database:` section for `db`, pool_size 2.
std::string database_yaml(const scratch_database& db);

// Distinct fetched_at values stored for `endpoint` (the URL).
long long fetches_of(const scratch_database& db, const std::string& endpoint);

// Every tick of a 1 s endpoint is stored: consecutive fetches of `endpoint`
// are between `min_gap` and 1.25 s apart (250 ms of tolerance for a loaded
// machine; the measured jitter is in docs/performance.md).
void check_every_tick_stored(const scratch_database& db, const std::string& endpoint,
                             double min_gap = 0);

// A GET from the test, for the test server's own counters (/_count...).
std::string http_get(const std::string& url);

// Requests the test server answered for `path` (its /_count route).
long long requests_served(const test_server& server, const std::string& path);

// Fetches waiting in a spool directory (its .rec files).
long long spool_files(const std::filesystem::path& dir);

// Lines of `text` containing `what`.
long long lines_with(const std::string& text, const std::string& what);

// Fetches of `url` stored without their full set of `rows`.
long long partial_fetches(const scratch_database& db, const std::string& url, long long rows);

// A port of 127.0.0.1 that accepts connections (the kernel completes the
// handshake) and never says anything: a server that hangs. Whether anything
// connected shows afterwards as a pending connection.
class silent_listener {
 public:
  silent_listener();
  ~silent_listener();
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;
  std::uint16_t port() const { return port_; }
  std::string conninfo() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=none connect_timeout=2";
  }
  bool contacted() const;

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// Three endpoints of a test server of their own at 1 s, each with a path of
// its own (what the server counts) and a known row count: 15 rows (unnest),
// 6 rows, 200 rows (COPY).
struct three_endpoints {
  test_server server{"", source_dir() + "/tests/data"};
  struct endpoint {
    std::string path;
    std::string url;
    long long rows;  // per fetch
  };
  std::vector<endpoint> all{
      {"/stats", server.url("/stats"), 15},
      {"/files/asset_counts.json", server.url("/files/asset_counts.json"), 6},
      {"/generated", server.url("/generated?leaves=200"), 200},
  };

  std::string yaml() const {
    std::string out = "endpoints:\n";
    for (std::size_t i = 0; i < all.size(); ++i)
      out += "  - {name: e" + std::to_string(i) + ", url: \"" + all[i].url + "\", interval: 1s}\n";
    return out;
  }
  long long requests(const endpoint& e) const { return requests_served(server, e.path); }
  // Fetches of every endpoint committed (as `db` sees them).
  bool all_stored(const scratch_database& db) const {
    for (const auto& e : all)
      if (fetches_of(db, e.url) < requests(e)) return false;
    return true;
  }
};

struct daemon_process;

// Waits until the database holds every fetch the server answered, stops
// the daemon (exit 0), then checks: each fetch stored exactly once, whole
// (rows per fetch = the document's), and the daemon lost nothing.
void check_all_stored_once(const scratch_database& db, const three_endpoints& eps,
                           daemon_process& d);

// "user:password" in base64, as an HTTP basic Authorization value wants it.
std::string base64(std::string_view in);

// The peak resident set size of a running process (VmHWM), in KiB.
long long peak_rss_kib(pid_t pid);

struct daemon_process {
  temp_dir dir;
  std::filesystem::path config;
  std::filesystem::path log;
  std::unique_ptr<child> process;

  // Unless the test chose one, the spool lives in this daemon's own
  // directory (spool_dir()), so no test ever replays another's leftovers;
  // "@SPOOL@" in `yaml` is replaced by that directory, quoted. `wrapper` goes
  // before the daemon's command line (e.g. unshare ... to run it in a
  // namespace); an argument "@SPOOL@" in it is replaced by the directory.
  explicit daemon_process(const std::string& yaml, const std::vector<std::string>& wrapper = {});
  std::filesystem::path spool_dir() const { return dir.path() / "spool"; }
  std::string log_text() const { return read_text_file(log); }
  // SIGTERM, then the exit code must be 0.
  void stop_cleanly() const;
  bool logged(const std::string& what, std::chrono::milliseconds within) const;
};

}  // namespace test
