// gatherstatsd's journald output, captured for real: the daemon runs in a
// mount namespace of its own in which a tmpfs covers /run/systemd/journal
// and the test's unix datagram socket is bound as
// /run/systemd/journal/socket, where libsystemd sends the native journal
// protocol. The test reads and parses those datagrams. (Needs root for
// unshare(CLONE_NEWNS) and mount, as the test environment has.)
//
// Every wait is on a condition with a deadline.
#include "support/daemon.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// The MESSAGE_IDs the daemon documents (daemon/log_sink.hpp).
const std::string committed_id = "599cb43527f348bb9f596019c868becc";
const std::string failed_id = "3a44015876654f82abe4cf0be7775503";
const std::string config_loaded_id = "98f7358764224a199038b868ac532c12";
const std::string config_rejected_id = "8665fe3e5ff943ddac3d1de8719b1565";
const std::string stopping_id = "057c92539d9447eba28cbf5a4e96eb77";
const std::string rows_removed_id = "ffae79f91acf4d14883dda16f3ceb5f2";

using journal_entry = std::map<std::string, std::string>;

// The native journal protocol: fields separated by '\n', each either
// KEY=VALUE or, binary-safe, KEY '\n' <64-bit little-endian length> DATA.
journal_entry parse_entry(std::string_view d) {
  journal_entry entry;
  std::size_t i = 0;
  while (i < d.size()) {
    auto nl = d.find('\n', i);
    if (nl == std::string_view::npos) nl = d.size();
    auto eq = d.find('=', i);
    if (eq != std::string_view::npos && eq < nl) {
      entry[std::string(d.substr(i, eq - i))] = std::string(d.substr(eq + 1, nl - eq - 1));
      i = nl + 1;
      continue;
    }
    std::string key(d.substr(i, nl - i));
    i = nl + 1;
    if (i + 8 > d.size()) break;
    std::uint64_t len = 0;
    for (int b = 7; b >= 0; --b) len = (len << 8) | static_cast<unsigned char>(d[i + b]);
    i += 8;
    if (i + len > d.size()) break;
    entry[key] = std::string(d.substr(i, len));
    i += len + 1;  // the data and its closing '\n'
  }
  return entry;
}

std::string describe(const journal_entry& e) {
  std::string s;
  for (const auto& [k, v] : e) s += "  " + k + "=" + v + "\n";
  return s;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The daemon in a mount namespace where the journal socket is ours.
class journaled_daemon {
 public:
  journaled_daemon(const std::vector<std::string>& argv, const std::filesystem::path& stderr_file) {
    socket_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(socket_ >= 0);
    int big = 4 << 20;
    ::setsockopt(socket_, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    int err = ::open(stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(err >= 0);

    // Everything the child needs is prepared before fork().
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, "/run/systemd/journal/socket");

    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // Only system calls from here on. Exit codes 100+ say which step failed.
      if (::unshare(CLONE_NEWNS) != 0) ::_exit(101);
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(102);
      ::mkdir("/run", 0755);
      ::mkdir("/run/systemd", 0755);
      ::mkdir("/run/systemd/journal", 0755);
      if (::mount("tmpfs", "/run/systemd/journal", "tmpfs", 0, "mode=0755") != 0) ::_exit(103);
      if (::bind(socket_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) ::_exit(104);
      ::dup2(err, 2);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(err);
    pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    REQUIRE(pidfd_ >= 0);
  }

  ~journaled_daemon() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(pidfd_);
    ::close(socket_);
  }

  pid_t pid() const { return pid_; }
  const std::vector<journal_entry>& entries() const { return entries_; }

  // Reads entries until one satisfies `match` or the deadline passes.
  std::optional<journal_entry> wait_for(const std::function<bool(const journal_entry&)>& match,
                                        std::chrono::milliseconds within) {
    std::size_t seen = 0;
    auto until = steady::now() + within;
    for (;;) {
      for (; seen < entries_.size(); ++seen)
        if (match(entries_[seen])) return entries_[seen];
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      if (left.count() <= 0) break;
      read_some(left);
    }
    std::string all;
    for (const auto& e : entries_) all += describe(e) + "\n";
    WARN("journal entries so far:\n" << all);
    return std::nullopt;
  }

  // SIGTERM, then waits for the exit (reading the journal meanwhile);
  // returns the exit code, nullopt if it did not exit in time.
  std::optional<int> stop(std::chrono::milliseconds within) {
    ::kill(pid_, SIGTERM);
    auto until = steady::now() + within;
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        read_some(0ms);  // whatever is still queued
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        return -1;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      if (left.count() <= 0) return std::nullopt;
      read_some(left);
    }
  }

 private:
  // Waits for a datagram or the daemon's exit, at most `within`.
  void read_some(std::chrono::milliseconds within) {
    pollfd p[2] = {{socket_, POLLIN, 0}, {pidfd_, POLLIN, 0}};
    if (::poll(p, 2, static_cast<int>(within.count())) <= 0) return;
    while (p[0].revents & POLLIN) {
      std::vector<char> buf(1 << 20);
      auto n = ::recv(socket_, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n <= 0) break;
      entries_.push_back(parse_entry(std::string_view(buf.data(), static_cast<std::size_t>(n))));
    }
  }

  int socket_ = -1;
  int pidfd_ = -1;
  pid_t pid_ = -1;
  std::vector<journal_entry> entries_;
};

std::string config_yaml(const std::string& conninfo, const std::string& healthy_url,
                        const std::string& broken_url) {
  return "database:\n  conninfo: \"" + conninfo +
         "\"\n  pool_size: 2\n"
         "defaults:\n  interval: 1s\n  timeout: 900ms\n  retries: 0\n"
         "endpoints:\n"
         "  - {name: healthy, url: \"" +
         healthy_url +
         "\"}\n"
         "  - {name: broken, url: \"" +
         broken_url + "\"}\n";
}

// http://localhost:PORT/x -> http://user:s3cret@localhost:PORT/x
std::string with_credentials(const std::string& url) {
  auto at = url.find("://") + 3;
  return url.substr(0, at) + "user:s3cret@" + url.substr(at);
}

bool has(const journal_entry& e, const std::string& key, const std::string& value) {
  auto found = e.find(key);
  return found != e.end() && found->second == value;
}

}  // namespace

TEST_CASE(
    "journald: a committed and a failed fetch carry their MESSAGE_ID, priority and structured "
    "fields",
    "[daemon][journal]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  test::temp_dir dir;
  auto config = dir.write("gatherstats.yaml", config_yaml(db.conninfo(), server.url("/stats"),
                                                          server.url("/status/500")));
  auto err = dir.path() / "stderr.log";
  journaled_daemon d({test::daemon_bin(), "--config", config.string(), "--log-target=journal"},
                     err);

  auto loaded = d.wait_for(
      [](const journal_entry& e) { return has(e, "MESSAGE_ID", config_loaded_id); }, 15s);
  REQUIRE(loaded.has_value());
  CHECK(has(*loaded, "PRIORITY", "5"));

  auto committed = d.wait_for(
      [](const journal_entry& e) {
        return has(e, "MESSAGE_ID", committed_id) && has(e, "GATHERSTATS_ENDPOINT", "healthy");
      },
      15s);
  REQUIRE(committed.has_value());
  INFO(describe(*committed));
  CHECK(has(*committed, "PRIORITY", "6"));
  CHECK(has(*committed, "GATHERSTATS_ROWS", "15"));
  CHECK(has(*committed, "GATHERSTATS_URL", server.url("/stats")));
  CHECK(has(*committed, "GATHERSTATS_EVENT", "fetch_committed"));
  CHECK(committed->count("GATHERSTATS_DURATION_MS") == 1);
  CHECK(committed->count("GATHERSTATS_HTTP_STATUS") == 0);
  CHECK(committed->count("GATHERSTATS_ERROR") == 0);
  CHECK_THAT((*committed)["MESSAGE"], Catch::Contains("fetch committed endpoint=healthy rows=15"));

  auto failed = d.wait_for(
      [](const journal_entry& e) {
        return has(e, "MESSAGE_ID", failed_id) && has(e, "GATHERSTATS_ENDPOINT", "broken");
      },
      15s);
  REQUIRE(failed.has_value());
  INFO(describe(*failed));
  CHECK(has(*failed, "PRIORITY", "3"));
  CHECK(has(*failed, "GATHERSTATS_HTTP_STATUS", "500"));
  CHECK(has(*failed, "GATHERSTATS_URL", server.url("/status/500")));
  CHECK_THAT((*failed)["GATHERSTATS_ERROR"], Catch::Contains("500"));
  CHECK(failed->count("GATHERSTATS_ROWS") == 0);
  CHECK_THAT((*failed)["MESSAGE"], Catch::Contains("fetch failed endpoint=broken"));

  auto code = d.stop(15s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK(d.wait_for([](const journal_entry& e) { return has(e, "MESSAGE_ID", stopping_id); }, 1s));
  // Everything went to the journal, nothing to stderr.
  CHECK(read_file(err).find("fetch committed") == std::string::npos);
}

TEST_CASE("journald: database.retention's deletion is one rows_removed entry with its rows",
          "[daemon][journal][retention]") {
  test::scratch_database db;
  db.migrate();
  db.exec(
      "INSERT INTO gatherstats_statistic (endpoint, key, numeric_value, fetched_at)"
      " SELECT 'http://old.invalid/', 'k', i, now() - interval '2 days' - i * interval '1 second'"
      " FROM generate_series(1, 1234) AS i");
  test::test_server server;
  test::temp_dir dir;
  auto config = dir.write("gatherstats.yaml", "database:\n  conninfo: \"" + db.conninfo() +
                                                  "\"\n  retention: 1h\nendpoints:\n"
                                                  "  - {name: healthy, url: \"" +
                                                  server.url("/stats") + "\", interval: 1h}\n");
  journaled_daemon d({test::daemon_bin(), "--config", config.string(), "--log-target=journal"},
                     dir.path() / "stderr.log");
  auto removed =
      d.wait_for([](const journal_entry& e) { return has(e, "MESSAGE_ID", rows_removed_id); }, 20s);
  REQUIRE(removed.has_value());
  INFO(describe(*removed));
  CHECK(has(*removed, "PRIORITY", "6"));
  CHECK(has(*removed, "GATHERSTATS_EVENT", "rows_removed"));
  CHECK(has(*removed, "GATHERSTATS_ROWS", "1234"));
  CHECK_THAT((*removed)["MESSAGE"],
             Catch::Contains("rows removed rows=1234 (1234 row(s) with fetched_at before ") &&
                 Catch::Contains(" deleted from gatherstats_statistic (retention 1h))"));
  auto code = d.stop(15s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK(db.count("gatherstats_statistic WHERE endpoint = 'http://old.invalid/'") == 0);
}

TEST_CASE(
    "no password or token from a conninfo, a credentials file or a URL reaches the journal or "
    "stderr, in a fetch, a failure, a lost database or a rejected configuration",
    "[daemon][journal][secrets]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  test::temp_dir dir;
  // Trust authentication ignores the password; it must still never show.
  const std::string conninfo = db.conninfo() + " password=hunter2";
  auto password_file = dir.write("password", "s3cret\n");
  auto token_file = dir.write("token", "s3cret-token\n");
  const std::string yaml = "database:\n  conninfo: \"" + conninfo +
                           "\"\n  pool_size: 2\n"
                           "defaults:\n  interval: 1s\n  timeout: 900ms\n  retries: 0\n"
                           "endpoints:\n"
                           "  - name: healthy\n    url: \"" +
                           server.url("/stats") +
                           "\"\n    auth: {username: user, password_file: \"" +
                           password_file.string() +
                           "\"}\n"
                           "  - name: broken\n    url: \"" +
                           server.url("/status/500") + "\"\n    auth: {bearer_token_file: \"" +
                           token_file.string() + "\"}\n";
  // Rejected (credentials in a URL are refused, pool_size is no number)
  // while the file holds both secrets.
  const std::string broken_yaml = "database:\n  conninfo: \"" + conninfo +
                                  "\"\n  pool_size: many\n"
                                  "endpoints:\n  - {name: x, url: \"" +
                                  with_credentials(server.url("/stats")) + "\"}\n";
  auto clean = [](const std::string& text) {
    return text.find("hunter2") == std::string::npos && text.find("s3cret") == std::string::npos;
  };

  SECTION("the journal") {
    auto config = dir.write("gatherstats.yaml", yaml);
    auto err = dir.path() / "stderr.log";
    journaled_daemon d({test::daemon_bin(), "--config", config.string(), "--log-target=journal",
                        "--log-level=debug"},
                       err);
    REQUIRE(
        d.wait_for([](const journal_entry& e) { return has(e, "MESSAGE_ID", committed_id); }, 15s));
    REQUIRE(d.wait_for(
        [](const journal_entry& e) {
          return has(e, "MESSAGE_ID", failed_id) && has(e, "GATHERSTATS_HTTP_STATUS", "500");
        },
        15s));
    dir.write("gatherstats.yaml", broken_yaml);
    REQUIRE(::kill(d.pid(), SIGHUP) == 0);
    auto rejected = d.wait_for(
        [](const journal_entry& e) { return has(e, "MESSAGE_ID", config_rejected_id); }, 15s);
    REQUIRE(rejected.has_value());
    CHECK(has(*rejected, "PRIORITY", "3"));
    CHECK_THAT((*rejected)["GATHERSTATS_ERROR"], Catch::Contains("user information"));
    auto code = d.stop(15s);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    for (const auto& e : d.entries()) {
      INFO(describe(e));
      CHECK(clean(describe(e)));
    }
    CHECK(clean(read_file(err)));
  }

  SECTION("stderr") {
    auto config = dir.write("gatherstats.yaml", yaml);
    auto err = dir.path() / "stderr.log";
    test::child d({test::daemon_bin(), "--config", config.string(), "--log-target=stderr",
                   "--log-level=debug"},
                  err.string());
    auto logged = [&](const std::string& what) {
      auto until = steady::now() + 15s;
      while (read_file(err).find(what) == std::string::npos) {
        if (steady::now() > until) return false;
        std::this_thread::sleep_for(50ms);  // ok-sleep: polling interval of a deadline wait
      }
      return true;
    };
    REQUIRE(logged("fetch committed endpoint=healthy"));
    REQUIRE(logged("fetch failed endpoint=broken"));
    dir.write("gatherstats.yaml", broken_yaml);
    REQUIRE(::kill(d.pid(), SIGHUP) == 0);
    REQUIRE(logged("configuration rejected"));
    auto code = d.signal_and_wait(SIGTERM, 15s);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    auto text = read_file(err);
    INFO(text);
    CHECK(clean(text));
  }

  SECTION("stderr, when the configuration is refused at start") {
    auto config = dir.write("gatherstats.yaml", broken_yaml);
    auto r = test::run({test::daemon_bin(), "--config", config.string()}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("user information"));
    CHECK(clean(r.err));
    CHECK(clean(r.out));
  }

  SECTION("stderr, when the database cannot be reached") {
    const std::string unreachable = "host=127.0.0.1 port=1 dbname=x user=u password=hunter2";
    auto config =
        dir.write("gatherstats.yaml", "database:\n  conninfo: \"" + unreachable +
                                          "\"\n  connect_timeout: 1s\n  statement_timeout: 1s\n"
                                          "endpoints:\n  - name: healthy\n    url: \"" +
                                          server.url("/stats") +
                                          "\"\n    interval: 1h\n"
                                          "    auth: {username: user, password_file: \"" +
                                          password_file.string() + "\"}\n");
    auto r = test::run({test::daemon_bin(), "--config", config.string(), "--once"}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("database lost") || Catch::Contains("commit failed"));
    CHECK(clean(r.err));
    CHECK(clean(r.out));
  }
}

TEST_CASE(
    "a secret-looking query value taken from the environment never reaches stderr, the "
    "journal or a one-shot command's messages",
    "[daemon][journal][secrets]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  test::temp_dir dir;
  const std::string key = "k3y-from-the-environment-4711";
  // Inherited by every process the test starts; the configuration reads it
  // as ${GS_TEST_KEY}.
  REQUIRE(::setenv("GS_TEST_KEY", key.c_str(), 1) == 0);
  const std::string healthy = server.url("/stats?api_key=") + key;
  const std::string yaml =
      "database:\n  conninfo: \"" + db.conninfo() +
      "\"\n  pool_size: 2\n"
      "defaults:\n  interval: 1s\n  timeout: 900ms\n  retries: 1\n"
      "endpoints:\n"
      "  - {name: healthy, url: \"" +
      server.url("/stats?api_key=${GS_TEST_KEY}") +
      "\"}\n"
      "  - {name: recorded, url: \"" +
      server.url("/stats?apikey=${GS_TEST_KEY}") +
      "\", record_as: \"http://recorded.invalid/stats\"}\n"
      "  - {name: broken, url: \"" +
      server.url("/status/500?a=1&api_key=${GS_TEST_KEY}&token=${GS_TEST_KEY}") +
      "\"}\n"
      "  - {name: garbage, url: \"" +
      server.url("/garbage?X-Amz-Signature=${GS_TEST_KEY}") + "\"}\n";
  auto clean = [&](const std::string& text) { return text.find(key) == std::string::npos; };

  SECTION("stderr") {
    auto config = dir.write("gatherstats.yaml", yaml);
    auto err = dir.path() / "stderr.log";
    test::child d({test::daemon_bin(), "--config", config.string(), "--log-target=stderr",
                   "--log-level=debug"},
                  err.string());
    auto logged = [&](const std::string& what) {
      auto until = steady::now() + 15s;
      while (read_file(err).find(what) == std::string::npos) {
        if (steady::now() > until) return false;
        std::this_thread::sleep_for(50ms);  // ok-sleep: polling interval of a deadline wait
      }
      return true;
    };
    REQUIRE(logged("fetch committed endpoint=healthy"));
    REQUIRE(logged("fetch committed endpoint=recorded"));
    REQUIRE(logged("fetch retrying endpoint=broken"));
    REQUIRE(logged("fetch failed endpoint=broken"));
    REQUIRE(logged("fetch failed endpoint=garbage"));
    auto code = d.signal_and_wait(SIGTERM, 15s);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    auto text = read_file(err);
    INFO(text);
    CHECK(clean(text));
    CHECK_THAT(text, Catch::Contains("/status/500?a=1&api_key=REDACTED&token=REDACTED: HTTP 500"));
    CHECK_THAT(text, Catch::Contains("/garbage?X-Amz-Signature=REDACTED: "));
    // The endpoint column is data: it holds the configured URL, key and all,
    // unless record_as says otherwise.
    CHECK(test::fetches_of(db, healthy) >= 1);
    CHECK(test::fetches_of(db, "http://recorded.invalid/stats") >= 1);
    CHECK(db.query("SELECT count(*) FROM gatherstats_statistic WHERE endpoint <> '" + healthy +
                   "' AND endpoint LIKE '%" + key + "%'")[0][0] == "0");
  }

  SECTION("the journal") {
    auto config = dir.write("gatherstats.yaml", yaml);
    auto err = dir.path() / "stderr.log";
    journaled_daemon d({test::daemon_bin(), "--config", config.string(), "--log-target=journal",
                        "--log-level=debug"},
                       err);
    auto committed = d.wait_for(
        [](const journal_entry& e) {
          return has(e, "MESSAGE_ID", committed_id) && has(e, "GATHERSTATS_ENDPOINT", "healthy");
        },
        15s);
    REQUIRE(committed.has_value());
    CHECK(has(*committed, "GATHERSTATS_URL", server.url("/stats?api_key=REDACTED")));
    REQUIRE(d.wait_for(
        [](const journal_entry& e) {
          return has(e, "MESSAGE_ID", failed_id) && has(e, "GATHERSTATS_ENDPOINT", "broken");
        },
        15s));
    REQUIRE(d.wait_for(
        [](const journal_entry& e) {
          return has(e, "MESSAGE_ID", failed_id) && has(e, "GATHERSTATS_ENDPOINT", "garbage");
        },
        15s));
    auto code = d.stop(15s);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    for (const auto& e : d.entries()) {
      INFO(describe(e));
      CHECK(clean(describe(e)));
    }
    CHECK(clean(read_file(err)));
  }

  SECTION("one-shot commands and configuration errors") {
    std::vector<test::run_result> runs;
    // The HTTP client's failure, a flatten failure prefixed with the URL.
    runs.push_back(test::run({test::daemon_bin(), "fetch", "http://127.0.0.1:1/x?token=" + key,
                              "--database", db.conninfo()}));
    runs.push_back(test::run({test::daemon_bin(), "fetch", server.url("/garbage?api_key=") + key,
                              "--database", db.conninfo()}));
    runs.push_back(test::run({test::daemon_bin(), "fetch", "ftp://h/x?api_key=" + key}));
    // A configuration error that shows the url value.
    auto bad = dir.write("bad.yaml",
                         "endpoints:\n  - {name: x, url: \"ftp://h/x?api_key=${GS_TEST_KEY}\"}\n");
    runs.push_back(test::run({test::daemon_bin(), "--config", bad.string(), "--check"}));
    // --once --dry-run: the failures in its JSON document.
    auto failing =
        dir.write("failing.yaml", "endpoints:\n  - {name: broken, url: \"" +
                                      server.url("/status/404?api_key=${GS_TEST_KEY}") + "\"}\n");
    runs.push_back(test::run({test::daemon_bin(), "--config", failing.string(), "--once",
                              "--dry-run", "--format=json"}));
    for (const auto& r : runs) {
      INFO("stdout: " << r.out << "\nstderr: " << r.err);
      CHECK(r.exit_code != 0);
      CHECK_THAT(r.err + r.out, Catch::Contains("REDACTED"));
      CHECK(clean(r.err));
      CHECK(clean(r.out));
    }
  }
  ::unsetenv("GS_TEST_KEY");
}
