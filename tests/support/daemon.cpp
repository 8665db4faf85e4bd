#include "support/daemon.hpp"

#include "gatherstats/http/client.hpp"

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <sstream>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace test {

std::string read_text_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &size) == 0;
  ::close(fd);
  REQUIRE(ok);
  return ntohs(a.sin_port);
}

std::string database_yaml(const scratch_database& db) {
  return "database:\n  conninfo: \"" + db.conninfo() + "\"\n  pool_size: 2\n";
}

long long fetches_of(const scratch_database& db, const std::string& endpoint) {
  return std::stoll(
      db.query("SELECT count(DISTINCT fetched_at) FROM gatherstats_statistic"
               " WHERE endpoint = '" +
               endpoint + "'")[0][0]);
}

void check_every_tick_stored(const scratch_database& db, const std::string& endpoint,
                             double min_gap) {
  auto times = db.query(
      "SELECT extract(epoch FROM fetched_at)::float8 FROM gatherstats_statistic"
      " WHERE endpoint = '" +
      endpoint + "' GROUP BY fetched_at ORDER BY fetched_at");
  for (std::size_t i = 1; i < times.size(); ++i) {
    double gap = std::stod(times[i][0]) - std::stod(times[i - 1][0]);
    INFO("gap " << i << ": " << gap);
    CHECK(gap > min_gap);
    CHECK(gap < 1.25);
  }
}

std::string http_get(const std::string& url) {
  return run_async([](std::string u) -> boost::asio::awaitable<std::string> {
    auto client = gatherstats::http::client::create({});
    auto r = co_await client->async_get(u, 1024, steady::now() + 5s);
    co_return r ? r->body : r.error().message;
  }(url));
}

long long requests_served(const test_server& server, const std::string& path) {
  auto body = http_get(server.url("/_count?path=" + path));  // {"requests":N}
  return std::stoll(body.substr(body.find(':') + 1));
}

long long spool_files(const std::filesystem::path& dir) {
  long long n = 0;
  if (!std::filesystem::exists(dir)) return 0;
  for (const auto& f : std::filesystem::directory_iterator(dir))
    if (f.path().extension() == ".rec") ++n;
  return n;
}

std::string base64(std::string_view in) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 3) {
    unsigned n = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) n |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) n |= static_cast<unsigned char>(in[i + 2]);
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += i + 1 < in.size() ? alphabet[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? alphabet[n & 63] : '=';
  }
  return out;
}

long long peak_rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

daemon_process::daemon_process(const std::string& yaml, const std::vector<std::string>& wrapper) {
  const std::string spool = "\"" + spool_dir().string() + "\"";
  std::string text = yaml.find("\nspool:") != std::string::npos
                         ? yaml
                         : yaml + "spool: {directory: " + spool + "}\n";
  for (auto at = text.find("@SPOOL@"); at != std::string::npos; at = text.find("@SPOOL@"))
    text.replace(at, 7, spool);
  config = dir.write("gatherstats.yaml", text);
  log = dir.path() / "stderr.log";
  std::vector<std::string> argv = wrapper;
  for (auto& arg : argv)
    if (arg == "@SPOOL@") arg = spool_dir().string();
  for (std::string arg : {daemon_bin(), std::string("--config"), config.string()})
    argv.push_back(arg);
  process = std::make_unique<child>(argv, log.string());
}

void daemon_process::stop_cleanly() const {
  auto code = process->signal_and_wait(SIGTERM, 15s);
  INFO(log_text());
  REQUIRE(code.has_value());
  CHECK(*code == 0);
}

bool daemon_process::logged(const std::string& what, std::chrono::milliseconds within) const {
  return eventually([&] { return log_text().find(what) != std::string::npos; }, within);
}

long long lines_with(const std::string& text, const std::string& what) {
  long long n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

long long partial_fetches(const scratch_database& db, const std::string& url, long long rows) {
  return std::stoll(db.query(
      "SELECT count(*) FROM (SELECT fetched_at FROM gatherstats_statistic"
      " WHERE endpoint = '" +
      url + "' GROUP BY fetched_at HAVING count(*) <> " + std::to_string(rows) + ") AS p")[0][0]);
}

silent_listener::silent_listener() {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd_ >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0);
  REQUIRE(::listen(fd_, 8) == 0);
  REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  port_ = ntohs(addr.sin_port);
}

silent_listener::~silent_listener() { ::close(fd_); }

bool silent_listener::contacted() const {
  pollfd p{fd_, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

void check_all_stored_once(const scratch_database& db, const three_endpoints& eps,
                           daemon_process& d) {
  bool caught_up = eventually([&] { return eps.all_stored(db); }, 60s);
  INFO(d.log_text());
  CHECK(caught_up);
  d.stop_cleanly();
  for (const auto& e : eps.all) {
    INFO(e.path);
    auto fetched = eps.requests(e);
    CHECK(fetched >= 3);
    CHECK(fetches_of(db, e.url) == fetched);
    CHECK(std::stoll(db.query("SELECT count(*) FROM gatherstats_statistic WHERE endpoint = '" +
                              e.url + "'")[0][0]) == fetched * e.rows);
    CHECK(partial_fetches(db, e.url, e.rows) == 0);
  }
  CHECK(lines_with(d.log_text(), "results dropped") == 0);
  CHECK(lines_with(d.log_text(), "commit failed") == 0);
}

}  // namespace test
