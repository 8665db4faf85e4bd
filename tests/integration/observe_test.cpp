// The daemon's listener (metrics.listen) checked by the real parts it is
// for: promtool lints a live scrape, a real Prometheus server scrapes the
// daemon and its counter is compared with the database, headless Chromium
// renders the status page, and the listener's limits, /readyz, TLS and basic
// auth are exercised on a real gatherstatsd. Every wait is on a condition
// with a deadline.
//
// The listener's port: the configuration refuses port 0, so each daemon gets
// a port that was free a moment before (bound to 127.0.0.1:0, then closed).
// Another process may take it in between: the daemon then exits with
// "cannot listen", and the test starts it again on another port. A daemon
// counts as up only when the listener answers with this daemon's own
// configuration file (in /api/v1/status), never merely when a port answers:
// other tests, in this worktree or another, run daemons too.
#include "support/daemon.hpp"

#include "gatherstats/http/client.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <crypt.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
namespace http = gatherstats::http;

namespace {

// --- sockets and plain HTTP ----------------------------------------------------

// A TCP connection to 127.0.0.1:port, or -1. Connecting waits at most 2 s
// (SO_SNDTIMEO bounds connect(2) on Linux).
int connect_to(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval limit{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

struct reply {
  unsigned status = 0;  // 0: no complete answer
  std::string body;
};

// One HTTP/1.0 GET on a fresh connection, read to the end of the stream:
// the server closes it after the response, and an HTTP/1.0 answer is never
// chunked, so this reads the listener and Prometheus alike.
reply plain_get(std::uint16_t port, const std::string& target,
                std::chrono::milliseconds limit = 5s) {
  reply r;
  int fd = connect_to(port);
  if (fd < 0) return r;
  const std::string request = "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  std::string in;
  bool ended = false;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
      static_cast<ssize_t>(request.size())) {
    const auto until = steady::now() + limit;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      pollfd p{fd, POLLIN, 0};
      if (left <= 0ms || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      char buffer[16384];
      ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ended = n == 0;
        break;
      }
      in.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const auto head_end = in.find("\r\n\r\n");
  if (!ended || !in.starts_with("HTTP/1.") || in.size() < 12 || head_end == std::string::npos)
    return r;
  r.status = static_cast<unsigned>(std::stoi(in.substr(9, 3)));
  r.body = in.substr(head_end + 4);
  return r;
}

std::string percent_encoded(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      constexpr char hex[] = "0123456789ABCDEF";
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// The value of the sample `series` (name and labels exactly as the daemon
// writes them) in a Prometheus text scrape.
std::optional<double> sample_value(const std::string& scrape, const std::string& series) {
  std::istringstream in(scrape);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(series + " ")) return std::stod(line.substr(series.size() + 1));
  return std::nullopt;
}

// An executable on PATH (execve does not search it).
std::string program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  FAIL(name << " is not installed (scripts/install-deps installs it)");
  return {};
}

// --- a daemon with its listener ----------------------------------------------------

// What a test reads /api/v1/status with (plain HTTP unless it says otherwise).
using status_probe = std::function<std::string(std::uint16_t port)>;

std::string plain_status(std::uint16_t port) { return plain_get(port, "/api/v1/status").body; }

class observed_daemon {
 public:
  // `yaml`: the configuration without `metrics:`; `metrics_keys`: more keys
  // of the metrics map, indented by two spaces, one a line.
  explicit observed_daemon(const std::string& yaml, const std::string& metrics_keys = "",
                           const status_probe& probe = plain_status) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = test::free_port();
      daemon_ = std::make_unique<test::daemon_process>(
          yaml + "metrics:\n  listen: \"127.0.0.1:" + std::to_string(port_) + "\"\n" +
          metrics_keys);
      const std::string mine = "\"" + daemon_->config.string() + "\"";
      bool taken = false;
      const bool answered = test::eventually(
          [&] {
            taken = daemon_->log_text().find("cannot listen") != std::string::npos;
            return taken || probe(port_).find(mine) != std::string::npos;
          },
          15s);
      if (answered && !taken) return;
      INFO(daemon_->log_text());
      REQUIRE(taken);  // anything else is not a busy port
    }
    FAIL("no free port for the listener in 5 attempts");
  }

  std::uint16_t port() const { return port_; }
  test::daemon_process& daemon() { return *daemon_; }
  reply get(const std::string& target) const { return plain_get(port_, target); }

 private:
  std::uint16_t port_ = 0;
  std::unique_ptr<test::daemon_process> daemon_;
};

const std::string fast_defaults = "defaults: {interval: 1s, timeout: 900ms, retries: 0}\n";

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

// The value at a JSON pointer, or null when there is none.
const boost::json::value* at(const boost::json::value& v, std::string_view pointer) {
  boost::system::error_code ec;
  return v.find_pointer(pointer, ec);
}

bool is_string(const boost::json::value* v, std::string_view s) {
  return v && v->is_string() && v->get_string() == s;
}

// --- a real Prometheus server ----------------------------------------------------------

class prometheus_server {
 public:
  // Scrapes `target` ("127.0.0.1:PORT") every second as job gatherstatsd, and
  // loads the project's alert rules.
  explicit prometheus_server(const std::string& target) {
    const auto config =
        dir_.write("prometheus.yml",
                   "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\n"
                   "rule_files: [\"" +
                       test::source_dir() + "/config/gatherstats-alerts.yml\"]\n" +
                       "scrape_configs:\n"
                       "  - job_name: gatherstatsd\n"
                       "    static_configs: [{targets: [\"" +
                       target + "\"]}]\n");
    const std::string data = (dir_.path() / "data").string();
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = test::free_port();
      log_ = dir_.path() / ("prometheus-" + std::to_string(attempt) + ".log");
      process_ = std::make_unique<test::child>(
          std::vector<std::string>{program("prometheus"), "--config.file=" + config.string(),
                                   "--storage.tsdb.path=" + data,
                                   "--web.listen-address=127.0.0.1:" + std::to_string(port_)},
          log_.string());
      // Ready, and ours: its flags name our data directory.
      bool taken = false;
      const bool up = test::eventually(
          [&] {
            taken = test::read_text_file(log_).find("address already in use") != std::string::npos;
            return taken ||
                   (plain_get(port_, "/-/ready").status == 200 &&
                    plain_get(port_, "/api/v1/status/flags").body.find(data) != std::string::npos);
          },
          30s);
      if (up && !taken) return;
      INFO(test::read_text_file(log_));
      REQUIRE(taken);
      process_.reset();
    }
    FAIL("no free port for Prometheus in 5 attempts");
  }

  std::string log_text() const { return test::read_text_file(log_); }

  // The body of a GET of the HTTP API, parsed; null on any failure.
  boost::json::value api(const std::string& target) const {
    auto r = plain_get(port_, target);
    boost::system::error_code ec;
    auto v = boost::json::parse(r.body, ec);
    if (r.status != 200 || ec) return nullptr;
    return v;
  }

  // The value of a PromQL query that gives one sample.
  std::optional<double> value(const std::string& promql) const {
    auto v = api("/api/v1/query?query=" + percent_encoded(promql));
    const auto* result = at(v, "/data/result");
    if (!result || !result->is_array() || result->get_array().size() != 1) return std::nullopt;
    const auto* sample = at(result->get_array()[0], "/value/1");
    if (!sample || !sample->is_string()) return std::nullopt;
    return std::stod(std::string(sample->get_string()));
  }

 private:
  test::temp_dir dir_;  // declared first: outlives the process
  std::filesystem::path log_;
  std::unique_ptr<test::child> process_;  // SIGKILLed when the test ends
  std::uint16_t port_ = 0;
};

// --- the status page's endpoints as Chromium rendered them ---------------------------------

struct shown_endpoint {
  std::string name;
  std::string state;
};

std::vector<shown_endpoint> endpoint_rows(const std::string& dom) {
  // The page writes class, data-endpoint and data-state in this order, and
  // Chromium serializes attributes in the order it parsed them.
  static const std::regex row(
      R"re(<tr class="endpoint [^"]*" data-endpoint="([^"]*)" data-state="([^"]*)")re");
  std::vector<shown_endpoint> out;
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), row); it != std::sregex_iterator();
       ++it)
    out.push_back({(*it)[1].str(), (*it)[2].str()});
  return out;
}

// A daemon with two secrets: a bearer token from a file for one endpoint,
// and an API key from its environment in the query of both URLs. `working`
// sends the token to /auth-length, which stores the length of the
// Authorization header it got; `broken` fails with 500, so that its URL is
// in error messages.
struct secret_setup {
  static constexpr const char* api_key = "k3y-0f-the-observe-test-91f2";
  static constexpr const char* token = "t0ken-of-the-observe-test-5c1e";
  test::scratch_database db;
  test::test_server server;
  test::temp_dir files;
  std::unique_ptr<observed_daemon> daemon;

  secret_setup() {
    db.migrate();
    const auto token_file = files.write("token", std::string(token) + "\n");
    // The daemon inherits this process's environment (test::child), and
    // each test case runs in a process of its own.
    ::setenv("GS_TEST_API_KEY", api_key, 1);
    daemon = std::make_unique<observed_daemon>(test::database_yaml(db) + fast_defaults +
                                               "endpoints:\n"
                                               "  - name: working\n"
                                               "    url: \"" +
                                               server.url("/auth-length") +
                                               "?api_key=${GS_TEST_API_KEY}\"\n"
                                               "    auth: {bearer_token_file: \"" +
                                               token_file.string() +
                                               "\"}\n"
                                               "  - name: broken\n"
                                               "    url: \"" +
                                               server.url("/status/500") +
                                               "?api_key=${GS_TEST_API_KEY}\"\n");
  }

  // Both endpoints have fetched at least twice (so the page has settled).
  bool settled() const {
    auto scrape = daemon->get("/metrics").body;
    return sample_value(scrape, "gatherstatsd_endpoint_fetches_total{endpoint=\"working\"}") >= 2 &&
           sample_value(scrape, "gatherstatsd_endpoint_fetches_total{endpoint=\"broken\"}") >= 2;
  }
};

std::string bcrypt_hash_of(const std::string& password) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  REQUIRE(crypt_gensalt_rn("$2b$", 5, nullptr, 0, setting, sizeof setting) != nullptr);
  auto data = std::make_unique<crypt_data>();
  const char* hash = crypt_r(password.c_str(), setting, data.get());
  REQUIRE(hash != nullptr);
  REQUIRE(hash[0] == '$');
  return hash;
}

// A free function taking values, not a lambda: see read_file.cpp on GCC 12.
boost::asio::awaitable<gatherstats::outcome<http::response>> async_https_get(
    std::string url, std::string authorization) {
  http::tls_settings tls;
  tls.ca_file = test::cert_dir() + "/ca.pem";
  auto client = http::client::create(tls);
  if (!client) co_return client.error();
  http::request req;
  req.url = std::move(url);
  req.authorization = std::move(authorization);
  co_return co_await client->async_get(std::move(req), steady::now() + 10s);
}

gatherstats::outcome<http::response> https_get(const std::string& url,
                                               const std::string& authorization) {
  return test::run_async(async_https_get(url, authorization));
}

}  // namespace

// --- 1. promtool check metrics ------------------------------------------------------------

TEST_CASE("observe: promtool check metrics passes a live scrape, failing endpoints included",
          "[observe][promtool]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  observed_daemon d(test::database_yaml(db) + fast_defaults +
                    "endpoints:\n"
                    "  - {name: working, url: \"" +
                    server.url("/stats") +
                    "\"}\n"
                    "  - {name: not_found, url: \"" +
                    server.url("/status/404") +
                    "\"}\n"
                    "  - {name: garbage, url: \"" +
                    server.url("/garbage") +
                    "\"}\n"
                    "  - {name: unresolvable, url: \"http://gatherstats-test.invalid/stats\"}\n");
  std::string scrape;
  const bool all_fetched = test::eventually(
      [&] {
        scrape = d.get("/metrics").body;
        for (const char* name : {"working", "not_found", "garbage", "unresolvable"})
          if (!(sample_value(scrape,
                             std::string("gatherstatsd_endpoint_fetches_total{endpoint=\"") + name +
                                 "\"}") >= 1))
            return false;
        return true;
      },
      20s);
  INFO(d.daemon().log_text());
  INFO(scrape);
  REQUIRE(all_fetched);
  CHECK(sample_value(scrape, "gatherstatsd_endpoint_up{endpoint=\"working\"}") == 1);
  for (const char* failing : {"not_found", "garbage", "unresolvable"})
    CHECK(sample_value(scrape,
                       std::string("gatherstatsd_endpoint_up{endpoint=\"") + failing + "\"}") == 0);

  // promtool reads the scrape on stdin; it prints lint problems (and exits
  // non-zero), so any output at all fails the test.
  test::temp_dir dir;
  const auto file = dir.write("scrape.txt", scrape);
  auto r = test::run(
      {"/bin/sh", "-c", "exec \"$0\" check metrics < \"$1\"", program("promtool"), file.string()});
  INFO("promtool stdout: " << r.out);
  INFO("promtool stderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.empty());
  CHECK(r.err.empty());
}

// --- 3. a real Prometheus server --------------------------------------------------------

TEST_CASE(
    "observe: a real Prometheus scrapes the daemon, loads the alert rules, and its count of "
    "committed "
    "fetches equals the database's",
    "[observe][prometheus]") {
  // The comparison must not race the daemon: the only endpoint's server
  // answers its first 3 requests and 410 to every later one, so the daemon
  // commits exactly 3 fetches and then never another. Once the database
  // holds 3 and a later fetch has failed, the counter is final, and the
  // value Prometheus scraped must come to equal it (and stay there).
  constexpr int committed = 3;
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  const std::string url = server.url("/stats-times?n=" + std::to_string(committed));
  observed_daemon d(test::database_yaml(db) + fast_defaults +
                    "endpoints:\n"
                    "  - {name: limited, url: \"" +
                    url + "\"}\n");
  prometheus_server prometheus("127.0.0.1:" + std::to_string(d.port()));
  INFO(prometheus.log_text());

  CHECK(test::eventually([&] { return prometheus.value("up{job=\"gatherstatsd\"}") == 1.0; }, 30s));

  const bool final_count = test::eventually(
      [&] {
        return test::fetches_of(db, url) == committed &&
               d.daemon().log_text().find("fetch failed endpoint=limited") != std::string::npos;
      },
      20s);
  INFO(d.daemon().log_text());
  REQUIRE(final_count);

  std::optional<double> scraped;
  CHECK(test::eventually(
      [&] {
        scraped =
            prometheus.value("gatherstatsd_database_committed_fetches_total{job=\"gatherstatsd\"}");
        return scraped == double(committed);
      },
      15s));
  INFO("Prometheus has " << (scraped ? std::to_string(*scraped) : "nothing"));
  CHECK(test::fetches_of(db, url) == committed);
  // The failures after the third are in Prometheus too.
  CHECK(test::eventually(
      [&] {
        return prometheus.value(
                   "sum(gatherstatsd_endpoint_failures_total{job=\"gatherstatsd\","
                   "endpoint=\"limited\"})") >= 1.0;
      },
      15s));

  // The alert rules loaded and evaluate without errors.
  bool rules_ok = test::eventually(
      [&] {
        auto v = prometheus.api("/api/v1/rules");
        const auto* groups = at(v, "/data/groups");
        if (!groups || !groups->is_array() || groups->get_array().size() != 1) return false;
        const auto& group = groups->get_array()[0];
        const auto* rules = at(group, "/rules");
        if (!rules || !rules->is_array() || rules->get_array().empty()) return false;
        for (const auto& rule : rules->get_array())
          if (!is_string(at(rule, "/health"), "ok")) return false;
        return is_string(at(group, "/name"), "gatherstatsd");
      },
      15s);
  INFO(boost::json::serialize(prometheus.api("/api/v1/rules")));
  CHECK(rules_ok);
}

// --- 4. the status page in a browser, and no secrets anywhere ----------------------------

TEST_CASE("observe: headless Chromium shows each endpoint with its state, failing ones first",
          "[observe][chromium]") {
  secret_setup s;
  REQUIRE(test::eventually([&] { return s.settled(); }, 20s));
  test::temp_dir profile;
  const std::string url = "http://127.0.0.1:" + std::to_string(s.daemon->port()) + "/";
  auto r = test::run({program("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                      "--user-data-dir=" + profile.path().string(), "--dump-dom", url},
                     60s);
  INFO("chromium stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  INFO("DOM: " << r.out);
  auto rows = endpoint_rows(r.out);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].name == "broken");
  CHECK(rows[0].state == "failing");
  CHECK(rows[1].name == "working");
  CHECK(rows[1].state == "ok");
  CHECK_THAT(r.out, Catch::Contains("<title>gatherstatsd: 2 endpoints, 1 failing</title>"));
  CHECK_THAT(r.out,
             !Catch::Contains(secret_setup::api_key) && !Catch::Contains(secret_setup::token));
}

TEST_CASE(
    "observe: neither a bearer token nor an API key from the environment shows in the pages or the "
    "log",
    "[observe][secrets]") {
  secret_setup s;
  REQUIRE(test::eventually([&] { return s.settled(); }, 20s));
  // The secrets are real and in use: the key is in the stored endpoint URL
  // (the database is not a page), and the token arrived ("Bearer " + token).
  const std::string stored = s.db.query("SELECT min(endpoint) FROM gatherstats_statistic")[0][0];
  CHECK_THAT(stored, Catch::Contains(secret_setup::api_key));
  CHECK(s.db.query("SELECT DISTINCT numeric_value FROM gatherstats_statistic")[0][0] ==
        std::to_string(7 + std::string(secret_setup::token).size()));

  for (const char* page : {"/", "/api/v1/status", "/metrics"}) {
    auto r = s.daemon->get(page);
    INFO(page << ": " << r.body);
    CHECK(r.status == 200);
    CHECK(r.body.find(secret_setup::api_key) == std::string::npos);
    CHECK(r.body.find(secret_setup::token) == std::string::npos);
  }
  // The pages do show the endpoints' URLs, redacted.
  CHECK_THAT(s.daemon->get("/").body, Catch::Contains("api_key=REDACTED"));
  s.daemon->daemon().stop_cleanly();
  const std::string log = s.daemon->daemon().log_text();
  INFO(log);
  CHECK_THAT(log, Catch::Contains("fetch failed endpoint=broken"));
  CHECK(log.find(secret_setup::api_key) == std::string::npos);
  CHECK(log.find(secret_setup::token) == std::string::npos);
}

// --- 6. the listener's limits under a flood of idle connections ---------------------------

// The daemon's peak RSS with 3 endpoints at 1 s and its listener full (64
// connections open, 237 refused): measured 17 MiB (RelWithDebInfo; the same
// daemon without the flood is about as big). The bound leaves room for
// allocator and machine variation; it catches gross growth (connections
// kept past the limit, buffers growing without bound), not the few KiB
// each open connection costs.
#if defined(__SANITIZE_ADDRESS__)
constexpr long long flood_rss_kib = 512 * 1024;  // ASan's shadow memory and quarantine
#else
constexpr long long flood_rss_kib = 40 * 1024;
#endif

TEST_CASE(
    "observe: 300 idle connections and a slow client delay no fetch, and the listener serves again "
    "once they time out",
    "[observe][limits]") {
  // The test holds about 310 descriptors.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  std::vector<std::string> urls;
  std::string endpoints;
  for (const char* name : {"a", "b", "c"}) {
    urls.push_back(server.url(std::string("/stats?e=") + name));
    endpoints += std::string("  - {name: ") + name + ", url: \"" + urls.back() + "\"}\n";
  }
  observed_daemon d(test::database_yaml(db) + fast_defaults + "endpoints:\n" + endpoints);
  REQUIRE(test::eventually(
      [&] {
        for (const auto& u : urls)
          if (test::fetches_of(db, u) < 2) return false;
        return true;
      },
      15s));
  std::vector<long long> before;
  for (const auto& u : urls) before.push_back(test::fetches_of(db, u));

  // The slow client first, so that it holds one of the 64 places.
  const auto flood_start = steady::now();
  int slow = connect_to(d.port());
  REQUIRE(slow >= 0);
  constexpr int idle_count = 300;
  std::vector<pollfd> idle;
  for (int i = 0; i < idle_count; ++i) {
    int fd = connect_to(d.port());
    REQUIRE(fd >= 0);
    idle.push_back({fd, POLLIN, 0});
  }

  // Reads what each idle connection got; counts those the server closed and
  // those it answered with the canned 503 first.
  std::vector<bool> closed(idle.size(), false);
  std::vector<std::string> got(idle.size());
  const auto count_closed = [&] {
    std::size_t n = 0;
    ::poll(idle.data(), idle.size(), 0);
    for (std::size_t i = 0; i < idle.size(); ++i) {
      while (!closed[i] && (idle[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        char buffer[512];
        ssize_t r = ::recv(idle[i].fd, buffer, sizeof buffer, MSG_DONTWAIT);
        if (r > 0) {
          got[i].append(buffer, static_cast<std::size_t>(r));
        } else {
          if (r == 0 || (errno != EAGAIN && errno != EINTR)) closed[i] = true;
          break;
        }
      }
      n += closed[i] ? 1 : 0;
    }
    return n;
  };
  const auto count_503 = [&] {
    std::size_t n = 0;
    for (const auto& g : got) n += g.starts_with("HTTP/1.1 503") ? 1 : 0;
    return n;
  };

  // Past max_connections (64, the slow client one of them): closed at once.
  const std::size_t over = idle_count + 1 - 64;
  CHECK(test::eventually([&] { return count_closed() >= over; }, 3s));
  const std::size_t refused = count_closed();
  const std::size_t refused_503 = count_503();
  // While full, the listener turns a new client away at once too.
  {
    auto full = d.get("/livez");
    CHECK((full.status == 0 || full.status == 503));
  }

  // The slow client sends a byte a second: its request deadline (10 s
  // from accept) ends it all the same, about when the idle ones time out.
  const std::string request = "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n";
  bool slow_cut_off = false;
  std::optional<steady::duration> slow_lasted;
  for (std::size_t i = 0; i < request.size() && steady::now() - flood_start < 20s; ++i) {
    pollfd p{slow, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      char buffer[512];
      if (::recv(slow, buffer, sizeof buffer, MSG_DONTWAIT) <= 0) {
        slow_cut_off = true;
        break;
      }
    }
    if (::send(slow, &request[i], 1, MSG_NOSIGNAL) != 1) {
      slow_cut_off = true;
      break;
    }
    // ok-sleep: the slow client's pace is the point of the test
    std::this_thread::sleep_for(1s);
  }
  slow_lasted = steady::now() - flood_start;
  ::close(slow);

  // Every idle connection is closed by its request timeout; then the
  // listener serves a new client.
  CHECK(test::eventually([&] { return count_closed() == idle.size(); }, 15s));
  std::optional<steady::duration> served_after;
  CHECK(test::eventually(
      [&] {
        if (d.get("/livez").status != 200) return false;
        served_after = steady::now() - flood_start;
        return true;
      },
      5s));
  for (auto& p : idle) ::close(p.fd);

  const long long peak_rss = test::peak_rss_kib(d.daemon().process->pid());
  std::vector<long long> ticks;
  for (std::size_t i = 0; i < urls.size(); ++i)
    ticks.push_back(test::fetches_of(db, urls[i]) - before[i]);
  d.daemon().stop_cleanly();
  const auto seconds = [](std::optional<steady::duration> t) {
    return t ? std::chrono::duration<double>(*t).count() : -1.0;
  };
  WARN("flood: " << refused << " closed at once (" << refused_503 << " with a 503); slow client "
                 << (slow_cut_off ? "cut off" : "NOT cut off") << " after " << seconds(slow_lasted)
                 << " s; /livez served again after " << seconds(served_after)
                 << " s; ticks stored meanwhile " << ticks[0] << "/" << ticks[1] << "/" << ticks[2]
                 << "; peak RSS " << peak_rss << " KiB");
  CHECK(refused >= over);
  CHECK(slow_cut_off);
  // The slow client got less than its request's worth of seconds.
  CHECK(seconds(slow_lasted) < double(request.size()));
  CHECK(served_after.has_value());
  // The flood lasted at least 10 s (the request timeout): every endpoint
  // ticked about once a second meanwhile, and no tick was lost.
  for (std::size_t i = 0; i < urls.size(); ++i) {
    CHECK(ticks[i] >= 8);
    test::check_every_tick_stored(db, urls[i], 0.75);
  }
  CHECK(peak_rss > 0);
  CHECK(peak_rss < flood_rss_kib);
}

// --- 7. /readyz ---------------------------------------------------------------------------------

TEST_CASE(
    "observe: /readyz says 200 with a database, 503 with neither database nor spool, 200 with only "
    "a "
    "spool",
    "[observe][readyz]") {
  test::test_server server;
  const std::string endpoint = "endpoints:\n  - {name: a, url: \"" + server.url("/stats") + "\"}\n";
  // Nothing listens there: a database that is down.
  const std::string no_database =
      "database: {conninfo: \"host=127.0.0.1 port=" + std::to_string(test::free_port()) +
      " dbname=none connect_timeout=2\", pool_size: 1}\n";

  {
    test::scratch_database db;
    db.migrate();
    observed_daemon d(test::database_yaml(db) + fast_defaults + endpoint);
    reply r;
    CHECK(test::eventually(
        [&] {
          r = d.get("/readyz?verbose");
          return r.status == 200 &&
                 sample_value(d.get("/metrics").body, "gatherstatsd_database_up") == 1;
        },
        15s));
    INFO(r.body);
    CHECK_THAT(r.body, Catch::Contains("[+]storage ok") && Catch::Contains("readyz check passed"));
  }
  {
    test::temp_dir dir;
    const auto file = dir.write("a-file", "not a directory\n");
    observed_daemon d(no_database + fast_defaults + endpoint + "spool: {directory: \"" +
                      (file / "spool").string() + "\"}\n");
    reply r;
    CHECK(test::eventually(
        [&] {
          // Before its configuration is in force the daemon is not ready
          // either, for another reason: wait for this one.
          r = d.get("/readyz");
          return r.status == 503 && r.body.find("[-]storage") != std::string::npos;
        },
        15s));
    INFO(d.daemon().log_text());
    INFO(r.body);
    CHECK_THAT(r.body, Catch::StartsWith("[-]storage failed: the database is down and there is "
                                         "no usable spool") &&
                           Catch::Contains("readyz check failed"));
    // The listener itself is fine.
    CHECK(d.get("/livez").status == 200);
  }
  {
    observed_daemon d(no_database + fast_defaults + endpoint);  // the spool in its own directory
    std::string scrape;
    CHECK(test::eventually(
        [&] {
          scrape = d.get("/metrics").body;
          return sample_value(scrape, "gatherstatsd_endpoint_fetches_total{endpoint=\"a\"}") >= 2;
        },
        15s));
    INFO(scrape);
    CHECK(sample_value(scrape, "gatherstatsd_database_up") == 0);
    CHECK(sample_value(scrape, "gatherstatsd_spool_usable") == 1);
    auto r = d.get("/readyz?verbose");
    INFO(r.body);
    CHECK(r.status == 200);
    CHECK_THAT(r.body, Catch::Contains("[+]storage ok"));
  }
}

// --- 8. TLS and basic auth -------------------------------------------------------------------

TEST_CASE("observe: the listener over TLS with basic auth: 401 without credentials, 200 with them",
          "[observe][tls]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  const std::string password = "observe-test-password";
  const std::string authorization = "Basic " + test::base64("prometheus:" + password);
  const auto url = [](std::uint16_t port, const std::string& path) {
    return "https://127.0.0.1:" + std::to_string(port) + path;  // the certificate names it
  };
  const status_probe over_tls = [&](std::uint16_t port) {
    auto r = https_get(url(port, "/api/v1/status"), authorization);
    return r ? r->body : std::string();
  };
  observed_daemon d(test::database_yaml(db) + fast_defaults + "endpoints:\n  - {name: a, url: \"" +
                        server.url("/stats") + "\"}\n",
                    "  cert_file: \"" + test::cert_dir() + "/server.pem\"\n" + "  key_file: \"" +
                        test::cert_dir() + "/server.key\"\n" +
                        "  basic_auth_users: {prometheus: \"" + bcrypt_hash_of(password) + "\"}\n",
                    over_tls);

  auto without = https_get(url(d.port(), "/metrics"), "");
  REQUIRE(!without.has_value());
  CHECK(without.error().http_status == 401);
  auto wrong = https_get(url(d.port(), "/metrics"), "Basic cHJvbWV0aGV1czp3cm9uZw==");
  REQUIRE(!wrong.has_value());
  CHECK(wrong.error().http_status == 401);
  auto with = https_get(url(d.port(), "/metrics"), authorization);
  INFO((with ? std::string() : with.error().message));
  REQUIRE(with.has_value());
  CHECK(with->status == 200);
  CHECK_THAT(with->body, Catch::Contains("gatherstatsd_endpoint_up{endpoint=\"a\"}"));
  // Plain HTTP to the TLS port gets no HTTP answer.
  CHECK(d.get("/metrics").status == 0);
  d.daemon().stop_cleanly();
  CHECK(d.daemon().log_text().find(password) == std::string::npos);
}

TEST_CASE("observe: every endpoint's series exist from the start and follow its fetches",
          "[observe]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  observed_daemon od(test::database_yaml(db) +
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
  auto& d = od.daemon();
  auto get = [&](const std::string& target) { return od.get(target); };
  REQUIRE(get("/livez").status == 200);
  std::map<std::string, std::string> m;
  auto scraped = [&](auto condition) {
    return test::eventually(
        [&] {
          m = samples(get("/metrics").body);
          return condition();
        },
        15s);
  };
  // Not fetched yet: its series are there, at zero.
  CHECK(samples(get("/metrics").body)
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
  CHECK(get("/metrics").body.find("127.0.0.1") == std::string::npos);

  auto ready = get("/readyz?verbose");
  CHECK(ready.status == 200);
  CHECK_THAT(ready.body, Catch::Contains("[+]storage ok"));
  d.stop_cleanly();
}

TEST_CASE("observe: a reload adds and removes endpoints' series, and a rejected one is shown",
          "[observe][reload]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  auto yaml = [&](const std::string& endpoints) {
    return test::database_yaml(db) + "defaults: {interval: 1s, timeout: 900ms}\nendpoints:\n" +
           endpoints;
  };
  const std::string a = "  - {name: a, url: \"" + server.url("/stats") + "\"}\n";
  const std::string b = "  - {name: b, url: \"" + server.url("/stats?b") + "\"}\n";
  observed_daemon od(yaml(a));
  auto& d = od.daemon();
  auto get = [&](const std::string& target) { return od.get(target); };
  // What a reload writes keeps the listener where it is.
  auto with = [&](const std::string& endpoints) {
    return yaml(endpoints) + "metrics:\n  listen: \"127.0.0.1:" + std::to_string(od.port()) +
           "\"\n";
  };
  const std::string a_up = "gatherstatsd_endpoint_up{endpoint=\"a\"}";
  const std::string b_fetches = "gatherstatsd_endpoint_fetches_total{endpoint=\"b\"}";
  REQUIRE(test::eventually([&] { return samples(get("/metrics").body).count(a_up); }, 10s));
  CHECK(samples(get("/metrics").body).count(b_fetches) == 0);

  std::ofstream(d.config) << with(a + b);
  ::kill(d.process->pid(), SIGHUP);
  CHECK(test::eventually([&] { return samples(get("/metrics").body).count(b_fetches); }, 10s));

  std::ofstream(d.config) << with(b);
  ::kill(d.process->pid(), SIGHUP);
  CHECK(test::eventually([&] { return !samples(get("/metrics").body).count(a_up); }, 10s));

  const std::string ok = "gatherstatsd_config_last_reload_successful";
  std::ofstream(d.config) << "endpoints: [ this is not: valid\n";
  ::kill(d.process->pid(), SIGHUP);
  CHECK(test::eventually([&] { return samples(get("/metrics").body)[ok] == "0"; }, 10s));
  auto page = get("/");
  CHECK_THAT(page.body, Catch::Contains("failed: "));
  // b goes on under the configuration in force.
  CHECK(samples(get("/metrics").body).count(b_fetches) == 1);

  std::ofstream(d.config) << with(b);
  ::kill(d.process->pid(), SIGHUP);
  CHECK(test::eventually([&] { return samples(get("/metrics").body)[ok] == "1"; }, 10s));
  d.stop_cleanly();
}

TEST_CASE("observe: a listener that cannot bind stops the start with the address and the reason",
          "[observe]") {
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
