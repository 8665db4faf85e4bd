// gatherstatsd under a service manager's eyes: the test binds the unix
// datagram socket named in NOTIFY_SOCKET, runs the real daemon against the
// real PostgreSQL and the test server, and reads what sd_notify sends.
// Every wait is on a condition with a deadline.
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <ctime>
#include <functional>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

std::uint64_t monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

// One datagram as sent by sd_notify: newline-separated KEY=VALUE
// assignments, and when it arrived.
struct notification {
  steady::time_point at;
  std::vector<std::string> lines;

  bool has(const std::string& line) const {
    return std::find(lines.begin(), lines.end(), line) != lines.end();
  }
  std::optional<std::string> value(const std::string& key) const {
    for (const auto& l : lines)
      if (l.starts_with(key + "=")) return l.substr(key.size() + 1);
    return std::nullopt;
  }
  std::string text() const {
    std::string all;
    for (const auto& l : lines) all += l + "\n";
    return all;
  }
};

// The service manager's end: a bound unix datagram socket that keeps every
// notification it received, in order.
class notify_socket {
 public:
  explicit notify_socket(const std::filesystem::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.string().size() < sizeof(addr.sun_path));
    std::strcpy(addr.sun_path, path.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  }
  ~notify_socket() { ::close(fd_); }
  const std::filesystem::path& path() const { return path_; }
  const std::vector<notification>& received() const { return received_; }

  // Reads until `done(received())` holds or the deadline passes.
  bool wait_for(const std::function<bool(const std::vector<notification>&)>& done,
                std::chrono::milliseconds within) {
    auto until = steady::now() + within;
    while (!done(received_)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      auto n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) continue;
      notification note{steady::now(), {}};
      std::istringstream in(std::string(buf, static_cast<std::size_t>(n)));
      for (std::string line; std::getline(in, line);)
        if (!line.empty()) note.lines.push_back(line);
      received_.push_back(std::move(note));
    }
    return true;
  }

  // Waits for a notification after index `from` that satisfies `match`;
  // returns its index.
  std::optional<std::size_t> wait_for_one(std::size_t from,
                                          const std::function<bool(const notification&)>& match,
                                          std::chrono::milliseconds within) {
    std::optional<std::size_t> found;
    wait_for(
        [&](const std::vector<notification>& all) {
          for (std::size_t i = from; i < all.size(); ++i)
            if (match(all[i])) {
              found = i;
              return true;
            }
          return false;
        },
        within);
    if (!found) WARN("notifications so far:\n" << all_text());
    return found;
  }

  std::string all_text() const {
    std::string all;
    for (const auto& n : received_) all += n.text() + "\n";
    return all;
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::vector<notification> received_;
};

std::string config_yaml(const test::scratch_database& db, const test::test_server& server,
                        const std::string& extra_endpoint = "") {
  return "database:\n  conninfo: \"" + db.conninfo() +
         "\"\n  pool_size: 2\n"
         "defaults:\n  interval: 1s\n  timeout: 900ms\n  retries: 0\n"
         "endpoints:\n"
         "  - {name: healthy, url: \"" +
         server.url("/stats") +
         "\"}\n"
         "  - {name: broken, url: \"" +
         server.url("/status/500") + "\"}\n" + extra_endpoint;
}

}  // namespace

TEST_CASE(
    "sd_notify: READY, STATUS, watchdog pings at half WATCHDOG_USEC, RELOADING then READY on "
    "SIGHUP, STOPPING on SIGTERM",
    "[daemon][notify]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  test::temp_dir dir;
  auto config = dir.write("gatherstats.yaml", config_yaml(db, server));
  auto log = dir.path() / "stderr.log";
  notify_socket sock(dir.path() / "notify.sock");
  test::child daemon(
      {"/usr/bin/env", "NOTIFY_SOCKET=" + sock.path().string(), "WATCHDOG_USEC=400000",
       test::daemon_bin(), "--config", config.string(), "--log-target=stderr"},
      log.string());

  // READY=1 once the configuration is applied, without waiting for a commit.
  auto ready = sock.wait_for_one(
      0, [](const notification& n) { return n.has("READY=1"); }, 15s);
  REQUIRE(ready.has_value());

  // The watchdog: count the pings over a measured span. Half of 400 ms is
  // 200 ms; the bounds leave room for a loaded machine.
  auto first_ping = sock.wait_for_one(
      *ready, [](const notification& n) { return n.has("WATCHDOG=1"); }, 5s);
  REQUIRE(first_ping.has_value());
  const auto span_start = sock.received()[*first_ping].at;
  auto pings_after = [&](const std::vector<notification>& all) {
    std::size_t pings = 0;
    for (std::size_t i = *first_ping + 1; i < all.size(); ++i)
      if (all[i].has("WATCHDOG=1")) ++pings;
    return pings;
  };
  REQUIRE(sock.wait_for([&](const auto& all) { return pings_after(all) >= 10; }, 10s));
  steady::time_point span_end{};
  for (const auto& n : sock.received())
    if (n.has("WATCHDOG=1")) span_end = n.at;
  const auto pings = pings_after(sock.received());
  const double mean_ms = std::chrono::duration<double, std::milli>(span_end - span_start).count() /
                         static_cast<double>(pings);
  INFO("mean watchdog interval " << mean_ms << " ms over " << pings << " pings");
  CHECK(mean_ms > 150);
  CHECK(mean_ms < 300);

  // STATUS= says how the endpoints are doing.
  auto status = sock.wait_for_one(
      0,
      [](const notification& n) {
        auto s = n.value("STATUS");
        return s && s->find("2 endpoints") != std::string::npos &&
               s->find("1 failing") != std::string::npos &&
               s->find("last commit") != std::string::npos;
      },
      15s);
  REQUIRE(status.has_value());
  CHECK_THAT(*sock.received()[*status].value("STATUS"), Catch::Contains("db connection"));

  // SIGHUP with a third endpoint: RELOADING=1 (stamped with CLOCK_MONOTONIC)
  // and then READY=1.
  dir.write("gatherstats.yaml",
            config_yaml(db, server, "  - {name: third, url: \"" + server.url("/stats") + "\"}\n"));
  const auto before = monotonic_usec();
  const auto mark = sock.received().size();
  REQUIRE(::kill(daemon.pid(), SIGHUP) == 0);
  auto reloading = sock.wait_for_one(
      mark, [](const notification& n) { return n.has("RELOADING=1"); }, 10s);
  REQUIRE(reloading.has_value());
  const auto after = monotonic_usec();
  auto stamp = sock.received()[*reloading].value("MONOTONIC_USEC");
  REQUIRE(stamp.has_value());
  CHECK(std::stoull(*stamp) >= before);
  CHECK(std::stoull(*stamp) <= after);
  auto ready_again = sock.wait_for_one(
      *reloading, [](const notification& n) { return n.has("READY=1"); }, 10s);
  REQUIRE(ready_again.has_value());
  CHECK(*ready_again > *reloading);
  CHECK(sock.wait_for_one(
      *ready_again,
      [](const notification& n) {
        auto s = n.value("STATUS");
        return s && s->starts_with("3 endpoints");
      },
      10s));

  // A rejected reload ends with READY=1 too: the old configuration runs on.
  dir.write("gatherstats.yaml", "endpoints: [this is not valid\n");
  const auto mark2 = sock.received().size();
  REQUIRE(::kill(daemon.pid(), SIGHUP) == 0);
  auto reloading2 = sock.wait_for_one(
      mark2, [](const notification& n) { return n.has("RELOADING=1"); }, 10s);
  REQUIRE(reloading2.has_value());
  auto ready2 = sock.wait_for_one(
      *reloading2, [](const notification& n) { return n.has("READY=1"); }, 10s);
  REQUIRE(ready2.has_value());

  // SIGTERM: STOPPING=1, then a clean exit.
  const auto mark3 = sock.received().size();
  auto code = daemon.signal_and_wait(SIGTERM, 15s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK(sock.wait_for_one(
      mark3, [](const notification& n) { return n.has("STOPPING=1"); }, 5s));
}

TEST_CASE("without NOTIFY_SOCKET the daemon runs and stops as before", "[daemon][notify]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  test::temp_dir dir;
  auto config = dir.write("gatherstats.yaml", config_yaml(db, server));
  auto log = dir.path() / "stderr.log";
  test::child daemon({"/usr/bin/env", "-u", "NOTIFY_SOCKET", "WATCHDOG_USEC=400000",
                      test::daemon_bin(), "--config", config.string()},
                     log.string());
  auto until = steady::now() + 15s;
  while (db.count() == 0 && steady::now() < until) {
    // Waiting for a commit: the condition is a database query.
    std::this_thread::sleep_for(50ms);  // ok-sleep: polling interval of a deadline wait
  }
  CHECK(db.count() > 0);
  auto code = daemon.signal_and_wait(SIGTERM, 15s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);
}
