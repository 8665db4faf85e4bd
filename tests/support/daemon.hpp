// What the daemon-level integration tests share: gatherstatsd as a real
// process with its own config and log file, deadline waits on conditions
// outside it (a query, a log line), and small queries about what it stored.
#pragma once

#include "support/test_env.hpp"

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

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
