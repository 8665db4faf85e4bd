// The daemon's listener as an operator meets it: series from the start,
// values that follow the fetches, reloads that add, remove and refuse, and a
// listener that cannot bind. Real gatherstatsd processes, a real PostgreSQL,
// the real test server.
#include "gatherstats/http/client.hpp"
#include "support/daemon.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <map>
#include <sstream>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// A port that was free a moment ago (bound to 0, read back, closed).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct reply {
  unsigned status = 0;  // 0: no answer
  std::string body;
};

// A GET with the project's own client (a non-2xx answer is a failure there,
// with its status).
reply get(const std::string& url) {
  boost::asio::io_context io;
  // The URL is a parameter, not a capture: the lambda is gone when the
  // coroutine runs.
  auto fetch = [](std::string u) -> boost::asio::awaitable<reply> {
    auto client = gatherstats::http::client::create({});
    auto r = co_await client->async_get(u, 64 << 20, steady::now() + 5s);
    if (r) co_return reply{r->status, r->body};
    co_return reply{r.error().http_status, r.error().message};
  };
  auto fut = boost::asio::co_spawn(io, fetch(url), boost::asio::use_future);
  io.run();
  return fut.get();
}

// "name{labels}" -> value of every sample of a scrape.
std::map<std::string, std::string> samples(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto sp = line.rfind(' ');
    out[line.substr(0, sp)] = line.substr(sp + 1);
  }
  return out;
}

double value(const std::map<std::string, std::string>& m, const std::string& key) {
  auto found = m.find(key);
  return found == m.end() ? -1 : std::stod(found->second);
}

std::string metrics_yaml(int port) {
  return "metrics: {listen: \"127.0.0.1:" + std::to_string(port) + "\"}\n";
}

}  // namespace

TEST_CASE("every endpoint's series exist from the start and follow its fetches",
          "[daemon][metrics]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  const int port = free_port();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  test::daemon_process d(test::database_yaml(db) + metrics_yaml(port) +
                         "defaults: {interval: 1s, timeout: 900ms, retries: 0}\n"
                         "endpoints:\n"
                         "  - {name: good, url: \"" +
                         server.url("/stats") +
                         "\"}\n"
                         "  - {name: missing, url: \"" +
                         server.url("/status/404") +
                         "\"}\n"
                         "  - {name: hourly, url: \"" +
                         server.url("/stats") + "\", interval: 1h, align: true}\n");
  // The listener answers once the daemon runs.
  REQUIRE(test::eventually([&] { return get(base + "/livez").status == 200; }, 10s));
  std::map<std::string, std::string> m;
  auto scraped = [&](auto condition) {
    return test::eventually(
        [&] {
          m = samples(get(base + "/metrics").body);
          return condition();
        },
        15s);
  };
  // Not fetched yet: its series are there, at zero.
  CHECK(samples(get(base + "/metrics").body)
            .at("gatherstatsd_endpoint_fetches_total{endpoint=\"hourly\"}") == "0");
  bool fetched = scraped([&] {
    return value(m, "gatherstatsd_endpoint_fetches_total{endpoint=\"good\"}") >= 2 &&
           value(m, "gatherstatsd_endpoint_fetches_total{endpoint=\"missing\"}") >= 2 &&
           value(m, "gatherstatsd_database_committed_fetches_total") >= 2;
  });
  INFO(d.log_text());
  REQUIRE(fetched);
  CHECK(m.at("gatherstatsd_endpoint_up{endpoint=\"good\"}") == "1");
  CHECK(m.at("gatherstatsd_endpoint_up{endpoint=\"missing\"}") == "0");
  CHECK(m.at("gatherstatsd_endpoint_up{endpoint=\"hourly\"}") == "0");
  CHECK(m.at("gatherstatsd_endpoint_last_http_status{endpoint=\"missing\"}") == "404");
  CHECK(m.at("gatherstatsd_endpoint_last_http_status{endpoint=\"good\"}") == "200");
  CHECK(value(m, "gatherstatsd_endpoint_last_rows{endpoint=\"good\"}") > 0);
  CHECK(m.at("gatherstatsd_endpoint_failures_total{endpoint=\"good\",reason=\"http_status\"}") ==
        "0");
  CHECK(m.at("gatherstatsd_endpoint_failures_total{endpoint=\"missing\",reason=\"http_status\"}") ==
        m.at("gatherstatsd_endpoint_fetches_total{endpoint=\"missing\"}"));
  CHECK(m.at("gatherstatsd_endpoint_last_success_timestamp_seconds{endpoint=\"missing\"}") == "0");
  CHECK(m.at("gatherstatsd_database_up") == "1");
  CHECK(m.at("gatherstatsd_spool_usable") == "1");
  CHECK(m.at("gatherstatsd_config_last_reload_successful") == "1");
  CHECK(m.count("process_resident_memory_bytes") == 1);
  // No URL in the metrics: endpoints are named.
  CHECK(get(base + "/metrics").body.find("127.0.0.1") == std::string::npos);

  auto ready = get(base + "/readyz?verbose");
  CHECK(ready.status == 200);
  CHECK_THAT(ready.body, Catch::Contains("[+]storage ok"));
  d.stop_cleanly();
}

TEST_CASE("a reload adds and removes endpoints' series, and a rejected one is shown",
          "[daemon][metrics][reload]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  const int port = free_port();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  auto with = [&](const std::string& endpoints) {
    return test::database_yaml(db) + metrics_yaml(port) +
           "defaults: {interval: 1s, timeout: 900ms}\nendpoints:\n" + endpoints;
  };
  const std::string a = "  - {name: a, url: \"" + server.url("/stats") + "\"}\n";
  const std::string b = "  - {name: b, url: \"" + server.url("/stats?b") + "\"}\n";
  test::daemon_process d(with(a));
  const std::string a_up = "gatherstatsd_endpoint_up{endpoint=\"a\"}";
  const std::string b_fetches = "gatherstatsd_endpoint_fetches_total{endpoint=\"b\"}";
  REQUIRE(test::eventually([&] { return samples(get(base + "/metrics").body).count(a_up); }, 10s));
  CHECK(samples(get(base + "/metrics").body).count(b_fetches) == 0);

  std::ofstream(d.config) << with(a + b);
  ::kill(d.process->pid(), SIGHUP);
  CHECK(
      test::eventually([&] { return samples(get(base + "/metrics").body).count(b_fetches); }, 10s));

  std::ofstream(d.config) << with(b);
  ::kill(d.process->pid(), SIGHUP);
  CHECK(test::eventually([&] { return !samples(get(base + "/metrics").body).count(a_up); }, 10s));

  const std::string ok = "gatherstatsd_config_last_reload_successful";
  std::ofstream(d.config) << "endpoints: [ this is not: valid\n";
  ::kill(d.process->pid(), SIGHUP);
  CHECK(test::eventually([&] { return samples(get(base + "/metrics").body)[ok] == "0"; }, 10s));
  auto page = get(base + "/");
  CHECK_THAT(page.body, Catch::Contains("failed: "));
  // b goes on under the configuration in force.
  CHECK(samples(get(base + "/metrics").body).count(b_fetches) == 1);

  std::ofstream(d.config) << with(b);
  ::kill(d.process->pid(), SIGHUP);
  CHECK(test::eventually([&] { return samples(get(base + "/metrics").body)[ok] == "1"; }, 10s));
  d.stop_cleanly();
}

TEST_CASE("a listener that cannot bind stops the start with the address and the reason",
          "[daemon][metrics]") {
  test::scratch_database db;
  test::test_server server;
  // The test server's port is taken.
  const std::string taken = server.url("/").substr(std::string("http://localhost:").size());
  const std::string port = taken.substr(0, taken.find('/'));
  test::daemon_process d(test::database_yaml(db) + "metrics: {listen: \"127.0.0.1:" + port +
                         "\"}\nendpoints:\n  - {name: a, url: \"" + server.url("/stats") + "\"}\n");
  auto code = d.process->signal_and_wait(0, 10s);
  // signal 0 only waits; the daemon must have exited by itself.
  REQUIRE(code.has_value());
  CHECK(*code == 1);
  CHECK_THAT(d.log_text(), Catch::Contains("metrics.listen: cannot listen on 127.0.0.1:" + port +
                                           ": Address already in use"));
}
