// The daemon's HTTP listener (observe::http_server) over real sockets on
// loopback: the server runs on an event-loop thread of its own, as in the
// daemon, and the test talks to it with blocking sockets that wait on
// conditions with deadlines, or with the project's HTTP client for TLS.
// Covered: GET, HEAD, 405, 413, 431, 400, max_connections, a client too slow
// to send its request, idle keep-alive, TLS, client certificates, basic auth,
// reconfiguration to another address, bind failures and stop().
#include "gatherstats/observe/http_server.hpp"
#include "gatherstats/http/client.hpp"
#include "support/daemon.hpp"
#include "support/test_env.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <crypt.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <future>
#include <optional>
#include <thread>

namespace asio = boost::asio;
using namespace gatherstats;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// An event loop on a thread of its own, and a one-thread pool for blocking
// work, as the daemon has them.
class event_loop {
 public:
  event_loop() : work_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~event_loop() {
    work_.reset();
    io_.stop();
    thread_.join();
    pool_.join();
  }
  asio::any_io_executor executor() { return io_.get_executor(); }
  asio::any_io_executor blocking() { return pool_.get_executor(); }

  // Runs `f` on the loop and returns its result: the server is not
  // thread-safe, so the test calls it only there.
  template <class F>
  auto run(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    asio::post(io_, [&task] { task(); });
    return result.get();
  }

 private:
  asio::thread_pool pool_{1};
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

observe::server_response hello(const observe::server_request& r) {
  observe::server_response out;
  out.content_type = "text/plain; version=0.0.4";
  out.body = "hello " + r.target + "\n";
  out.headers = {{"X-Test", "yes"}};
  return out;
}

observe::server_settings local(std::string listen = "127.0.0.1:0") {
  observe::server_settings s;
  s.listen = std::move(listen);
  return s;
}

std::uint16_t port_of(const std::string& address) {
  return static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

// A started server on its own loop, destroyed (stopped) on that loop.
class running_server {
 public:
  explicit running_server(observe::server_settings s, observe::request_handler h = hello) {
    auto made = loop.run(
        [&] { return observe::http_server::create(loop.executor(), loop.blocking(), s, h); });
    if (!made) FAIL("cannot start the server: " << made.error().message);
    server_.emplace(std::move(*made));
    loop.run([this] { server_->start(); });
    address_ = loop.run([this] { return server_->local_address(); });
  }
  ~running_server() {
    loop.run([this] { server_.reset(); });
  }

  std::uint16_t port() const { return port_of(address_); }
  const std::string& address() const { return address_; }
  std::size_t connections() {
    return loop.run([this] { return server_->connections(); });
  }
  observe::server_stats stats() {
    return loop.run([this] { return server_->stats(); });
  }
  outcome<void> reconfigure(observe::server_settings s) {
    auto r = loop.run([&] { return server_->reconfigure(s); });
    address_ = loop.run([this] { return server_->local_address(); });
    return r;
  }
  void stop() {
    loop.run([this] { server_->stop(); });
  }
  // Polls the server until `n` connections are open, for at most `limit`.
  bool wait_for_connections(std::size_t n, std::chrono::milliseconds limit = 5s) {
    const auto until = steady::now() + limit;
    while (connections() != n) {
      if (steady::now() >= until) return false;
      // ok-sleep: polling interval of a deadline wait (the count is the server's)
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  event_loop loop;

 private:
  std::optional<observe::http_server> server_;
  std::string address_;
};

struct raw_response {
  unsigned status = 0;
  std::string head;  // status line and headers
  std::string body;
  bool has(std::string_view header_line) const {
    return head.find(std::string(header_line) + "\r\n") != std::string::npos;
  }
};

// A blocking TCP client that waits with deadlines, never forever.
class raw_client {
 public:
  explicit raw_client(std::uint16_t port, const char* host = "127.0.0.1") {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    REQUIRE(::inet_pton(AF_INET, host, &addr.sin_addr) == 1);
    connect_errno_ =
        ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
  }
  ~raw_client() { close(); }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  int connect_error() const { return connect_errno_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // False once the server has closed or reset the connection.
  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // One response (its body by Content-Length, none for HEAD); nullopt if the
  // connection closed or nothing complete came within `limit`.
  std::optional<raw_response> read_response(bool head = false,
                                            std::chrono::milliseconds limit = 5s) {
    const auto until = steady::now() + limit;
    std::size_t end;
    while ((end = pending_.find("\r\n\r\n")) == std::string::npos)
      if (!read_more(until)) return std::nullopt;
    raw_response r;
    r.head = pending_.substr(0, end + 2);
    pending_.erase(0, end + 4);
    r.status = static_cast<unsigned>(std::stoi(r.head.substr(9, 3)));
    std::size_t length = 0;
    if (auto at = r.head.find("Content-Length: "); at != std::string::npos)
      length = std::stoul(r.head.substr(at + 16));
    if (!head) {
      while (pending_.size() < length)
        if (!read_more(until)) return std::nullopt;
      r.body = pending_.substr(0, length);
      pending_.erase(0, length);
    }
    return r;
  }

  // Whether the server closes the connection (end of stream or reset)
  // within `limit`; what it sends meanwhile stays in pending().
  bool closed_within(std::chrono::milliseconds limit) {
    const auto until = steady::now() + limit;
    while (read_more(until)) {
    }
    return closed_;
  }

  // Bytes received but not yet read as a response.
  const std::string& pending() const { return pending_; }

 private:
  // Reads what is available, waiting until `until`; false at the end of the
  // stream (closed_ set) or at the deadline.
  bool read_more(steady::time_point until) {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      if (left <= 0ms) return false;
      pollfd p{fd_, POLLIN, 0};
      int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
      char buffer[4096];
      ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        closed_ = true;
        return false;
      }
      pending_.append(buffer, static_cast<std::size_t>(n));
      return true;
    }
  }

  int fd_ = -1;
  int connect_errno_ = 0;
  bool closed_ = false;
  std::string pending_;
};

std::string get(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: test\r\n" + extra + "\r\n";
}

std::string basic(const std::string& user, const std::string& password) {
  return "Authorization: Basic " + test::base64(user + ":" + password) + "\r\n";
}

// A bcrypt hash as `htpasswd -B` makes one, at a low cost to be quick.
std::string bcrypt_hash_of(const std::string& password, unsigned long cost = 5) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  REQUIRE(crypt_gensalt_rn("$2b$", cost, nullptr, 0, setting, sizeof setting) != nullptr);
  auto data = std::make_unique<crypt_data>();
  const char* hash = crypt_r(password.c_str(), setting, data.get());
  REQUIRE(hash != nullptr);
  REQUIRE(hash[0] == '$');
  return hash;
}

observe::server_settings with_tls(observe::server_settings s) {
  s.cert_file = test::cert_dir() + "/server.pem";
  s.key_file = test::cert_dir() + "/server.key";
  return s;
}

// A free function taking values, not a lambda: see read_file.cpp on GCC 12.
asio::awaitable<outcome<http::response>> async_fetch(std::string url, http::tls_settings tls) {
  auto client = http::client::create(tls);
  if (!client) co_return client.error();
  const auto until = steady::now() + 10s;
  co_return co_await client->async_get(std::move(url), 1 << 20, until);
}

outcome<http::response> https_get(const std::string& url, http::tls_settings tls) {
  return test::run_async(async_fetch(url, std::move(tls)));
}

}  // namespace

TEST_CASE("the listener answers GET through the handler and HEAD with the length only",
          "[http_server]") {
  running_server server(local());
  raw_client c(server.port());
  REQUIRE(c.send(get("/metrics?x=1")));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "hello /metrics?x=1\n");
  CHECK(r->has("Content-Type: text/plain; version=0.0.4"));
  CHECK(r->has("X-Test: yes"));
  CHECK(r->has("Content-Length: 19"));

  // HEAD on the same connection: the length of the body, not the body; the
  // next response on the connection proves nothing else was sent.
  REQUIRE(c.send("HEAD /metrics?x=1 HTTP/1.1\r\nHost: test\r\n\r\n"));
  auto h = c.read_response(/*head=*/true);
  REQUIRE(h);
  CHECK(h->status == 200);
  CHECK(h->has("Content-Length: 19"));
  REQUIRE(c.send(get("/again")));
  auto again = c.read_response();
  REQUIRE(again);
  CHECK(again->body == "hello /again\n");
  // Two requests in one write (pipelined): answered in order.
  REQUIRE(c.send(get("/one") + get("/two")));
  auto one = c.read_response();
  auto two = c.read_response();
  REQUIRE(one);
  REQUIRE(two);
  CHECK(one->body == "hello /one\n");
  CHECK(two->body == "hello /two\n");
  CHECK(server.connections() == 1);
  CHECK(server.stats().requests == 5);

  // HTTP/1.0 without keep-alive: answered, then closed.
  REQUIRE(c.send("GET /old HTTP/1.0\r\n\r\n"));
  auto old = c.read_response();
  REQUIRE(old);
  CHECK(old->body == "hello /old\n");
  CHECK(c.closed_within(5s));
}

TEST_CASE("the listener answers only GET and HEAD, without a body", "[http_server]") {
  running_server server(local());
  raw_client c(server.port());
  REQUIRE(c.send("POST /x HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n"));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 405);
  CHECK(r->has("Allow: GET, HEAD"));
  // Without a body the connection stays usable.
  REQUIRE(c.send(get("/y")));
  auto ok = c.read_response();
  REQUIRE(ok);
  CHECK(ok->status == 200);

  REQUIRE(c.send("GET /z HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello"));
  auto body = c.read_response();
  REQUIRE(body);
  CHECK(body->status == 413);
  CHECK(c.closed_within(5s));

  raw_client chunked(server.port());
  REQUIRE(
      chunked.send("DELETE /z HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: "
                   "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
  auto del = chunked.read_response();
  REQUIRE(del);
  CHECK(del->status == 405);
  CHECK(chunked.closed_within(5s));

  raw_client garbage(server.port());
  REQUIRE(garbage.send("HELLO\r\n\r\n"));
  auto bad = garbage.read_response();
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK(garbage.closed_within(5s));
  CHECK(server.stats().rejected == 4);
  CHECK(server.stats().requests == 1);
}

TEST_CASE("a request header over max_request_bytes gets 431 and is closed", "[http_server]") {
  auto s = local();
  s.max_request_bytes = 2048;
  running_server server(s);
  raw_client small(server.port());
  REQUIRE(small.send(get("/", "X-Pad: " + std::string(1500, 'p') + "\r\n")));
  auto fits = small.read_response();
  REQUIRE(fits);
  CHECK(fits->status == 200);

  raw_client big(server.port());
  // Sent whole or not: the server may close before it has read all of it.
  big.send(get("/", "X-Pad: " + std::string(64 * 1024, 'p') + "\r\n"));
  auto r = big.read_response();
  REQUIRE(r);
  CHECK(r->status == 431);
  CHECK(big.closed_within(5s));
}

TEST_CASE("connections past max_connections are refused while the others live", "[http_server]") {
  auto s = local();
  s.max_connections = 2;
  running_server server(s);
  raw_client a(server.port());
  raw_client b(server.port());
  REQUIRE(server.wait_for_connections(2));

  raw_client refused(server.port());
  // A best-effort 503, then the end; never served.
  CHECK(refused.closed_within(5s));
  CHECK(refused.pending().starts_with("HTTP/1.1 503 "));
  CHECK(server.stats().refused == 1);

  // The two still work.
  REQUIRE(a.send(get("/a")));
  auto ra = a.read_response();
  REQUIRE(ra);
  CHECK(ra->status == 200);

  a.close();
  b.close();
  REQUIRE(server.wait_for_connections(0));
  raw_client later(server.port());
  REQUIRE(later.send(get("/later")));
  auto r = later.read_response();
  REQUIRE(r);
  CHECK(r->body == "hello /later\n");
}

TEST_CASE("a client sending its request a byte at a time is cut off at request_timeout",
          "[http_server]") {
  auto s = local();
  s.request_timeout = 500ms;
  running_server server(s);
  raw_client slow(server.port());
  const auto started = steady::now();
  const std::string request = get("/", "X-Slow: " + std::string(100, 's') + "\r\n");
  bool closed = false;
  // A byte every 50 ms would take 6 s; the server must give up after 0.5 s.
  for (char byte : request) {
    if (!slow.send(std::string_view(&byte, 1)) || slow.closed_within(50ms)) {
      closed = true;
      break;
    }
    if (steady::now() - started > 5s) break;
  }
  const auto took = steady::now() - started;
  CHECK(closed);
  CHECK(took >= 450ms);
  CHECK(took < 2500ms);
  CHECK(server.stats().timed_out == 1);

  // Silence after accept is cut off the same way.
  raw_client silent(server.port());
  const auto silent_started = steady::now();
  CHECK(silent.closed_within(5s));
  CHECK(steady::now() - silent_started >= 450ms);
}

TEST_CASE("an idle keep-alive connection is closed after idle_timeout", "[http_server]") {
  auto s = local();
  s.idle_timeout = 300ms;
  running_server server(s);
  raw_client c(server.port());
  REQUIRE(c.send(get("/")));
  REQUIRE(c.read_response());
  const auto idle_from = steady::now();
  CHECK(c.closed_within(5s));
  CHECK(steady::now() - idle_from >= 250ms);
  REQUIRE(server.wait_for_connections(0));
}

TEST_CASE("the listener serves TLS and can require client certificates", "[http_server][tls]") {
  http::tls_settings trusting;
  trusting.ca_file = test::cert_dir() + "/ca.pem";
  {
    running_server server(with_tls(local()));
    auto r = https_get("https://127.0.0.1:" + std::to_string(server.port()) + "/metrics", trusting);
    REQUIRE(r.has_value());
    CHECK(r->body == "hello /metrics\n");

    // Plain HTTP to the TLS port is not served.
    raw_client plain(server.port());
    plain.send(get("/"));
    CHECK(!plain.read_response());
    CHECK(server.stats().handshake_failures == 1);
  }
  {
    auto s = with_tls(local());
    s.client_ca_file = test::cert_dir() + "/ca.pem";
    running_server server(s);
    const std::string url = "https://127.0.0.1:" + std::to_string(server.port()) + "/";
    auto without = https_get(url, trusting);
    CHECK(!without.has_value());
    http::tls_settings with_cert = trusting;
    with_cert.cert_file = test::cert_dir() + "/client.pem";
    with_cert.key_file = test::cert_dir() + "/client.key";
    auto with = https_get(url, with_cert);
    REQUIRE(with.has_value());
    CHECK(with->status == 200);
    // A client certificate from another CA is refused too.
    http::tls_settings stranger = trusting;
    stranger.cert_file = test::cert_dir() + "/selfsigned.pem";
    stranger.key_file = test::cert_dir() + "/selfsigned.key";
    CHECK(!https_get(url, stranger).has_value());
  }
  {
    auto s = local();
    s.cert_file = test::cert_dir() + "/server.pem";
    event_loop loop;
    auto missing_key = loop.run(
        [&] { return observe::http_server::create(loop.executor(), loop.blocking(), s, hello); });
    REQUIRE(!missing_key);
    CHECK(missing_key.error().message == "TLS needs both a certificate and a key file");
    s.key_file = test::cert_dir() + "/nonexistent.key";
    auto absent = loop.run(
        [&] { return observe::http_server::create(loop.executor(), loop.blocking(), s, hello); });
    REQUIRE(!absent);
    CHECK(absent.error().message ==
          "key file \"" + test::cert_dir() + "/nonexistent.key\" does not exist or is not a file");
  }
}

TEST_CASE("basic auth accepts a listed user with the right password, and nothing else",
          "[http_server][basic_auth]") {
  auto s = local();
  s.basic_auth_users = {{"prometheus", bcrypt_hash_of("s3cret")},
                        {"other", bcrypt_hash_of("another")}};
  running_server server(s);
  raw_client c(server.port());

  const auto expect_401 = [&](const std::string& extra) {
    REQUIRE(c.send(get("/metrics", extra)));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 401);
    CHECK(r->has("WWW-Authenticate: Basic realm=\"gatherstatsd\""));
    CHECK(r->head.find("s3cret") == std::string::npos);
    CHECK(r->body.find("s3cret") == std::string::npos);
  };
  expect_401("");
  expect_401(basic("prometheus", "wrong"));
  expect_401(basic("nobody", "s3cret"));
  expect_401(basic("other", "s3cret"));
  expect_401("Authorization: Bearer s3cret\r\n");
  expect_401("Authorization: Basic !!!!\r\n");

  for (int i = 0; i < 3; ++i) {  // the first checked with bcrypt, then from the cache
    REQUIRE(c.send(get("/metrics", basic("prometheus", "s3cret"))));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "hello /metrics\n");
  }
  // A cached good password does not let another one in.
  expect_401(basic("prometheus", "s3cret2"));
  CHECK(server.stats().unauthorized == 7);
  CHECK(server.stats().requests == 3);

  // Reloaded users: the old password no longer works.
  s.basic_auth_users = {{"prometheus", bcrypt_hash_of("new")}};
  REQUIRE(server.reconfigure(s).has_value());
  expect_401(basic("prometheus", "s3cret"));
  REQUIRE(c.send(get("/metrics", basic("prometheus", "new"))));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 200);

  // A hash that is not bcrypt is refused, and the old users stay.
  auto bad = s;
  bad.basic_auth_users = {{"prometheus", "plaintext"}};
  auto refused = server.reconfigure(bad);
  REQUIRE(!refused);
  CHECK(refused.error().message.find("plaintext") == std::string::npos);
  REQUIRE(c.send(get("/metrics", basic("prometheus", "new"))));
  auto still = c.read_response();
  REQUIRE(still);
  CHECK(still->status == 200);
}

TEST_CASE("a bcrypt check does not hold up the event loop", "[http_server][basic_auth]") {
  auto s = local();
  // Cost 12: hundreds of milliseconds per check, on the blocking pool.
  s.basic_auth_users = {{"prometheus", bcrypt_hash_of("s3cret", 12)}};
  running_server server(s);
  raw_client checking(server.port());
  raw_client other(server.port());
  REQUIRE(checking.send(get("/", basic("prometheus", "s3cret"))));
  REQUIRE(server.wait_for_connections(2));
  // Without credentials: answered at once, while the check still runs.
  REQUIRE(other.send(get("/")));
  auto quick = other.read_response();
  REQUIRE(quick);
  CHECK(quick->status == 401);
  CHECK(!checking.read_response(false, 1ms));  // the check is not done yet
  auto slow = checking.read_response(false, 30s);
  REQUIRE(slow);
  CHECK(slow->status == 200);
}

TEST_CASE("reconfigure rebinds to a new address and keeps the old one when it cannot",
          "[http_server]") {
  running_server server(local());
  const std::uint16_t old_port = server.port();
  raw_client kept(old_port);
  REQUIRE(server.wait_for_connections(1));

  // 127.0.0.2 is loopback too on Linux: a different address string.
  REQUIRE(server.reconfigure(local("127.0.0.2:0")).has_value());
  CHECK(server.address().starts_with("127.0.0.2:"));
  raw_client fresh(server.port(), "127.0.0.2");
  REQUIRE(fresh.send(get("/new")));
  auto r = fresh.read_response();
  REQUIRE(r);
  CHECK(r->body == "hello /new\n");
  raw_client gone(old_port);
  CHECK(gone.connect_error() == ECONNREFUSED);
  // A connection accepted before the rebind is still served.
  REQUIRE(kept.send(get("/kept")));
  auto k = kept.read_response();
  REQUIRE(k);
  CHECK(k->body == "hello /kept\n");

  // An address in use: an error naming it, and the server stays where it was.
  running_server other(local());
  auto failed = server.reconfigure(local(other.address()));
  REQUIRE(!failed);
  CHECK(failed.error().message ==
        "cannot listen on " + other.address() + ": Address already in use");
  CHECK(server.address().starts_with("127.0.0.2:"));
  raw_client still(server.port(), "127.0.0.2");
  REQUIRE(still.send(get("/still")));
  REQUIRE(still.read_response());
}

TEST_CASE("create names the address it cannot listen on", "[http_server]") {
  running_server taken(local());
  event_loop loop;
  auto made = loop.run([&] {
    return observe::http_server::create(loop.executor(), loop.blocking(), local(taken.address()),
                                        hello);
  });
  REQUIRE(!made);
  CHECK(made.error().message == "cannot listen on " + taken.address() + ": Address already in use");
  auto malformed = loop.run([&] {
    return observe::http_server::create(loop.executor(), loop.blocking(), local("nowhere"), hello);
  });
  REQUIRE(!malformed);
  CHECK(malformed.error().message == "cannot listen on nowhere: no port");
}

TEST_CASE("stop closes the acceptor and every connection", "[http_server]") {
  running_server server(local());
  raw_client a(server.port());
  raw_client b(server.port());
  REQUIRE(b.send(get("/")));
  REQUIRE(b.read_response());
  REQUIRE(server.wait_for_connections(2));
  server.stop();
  CHECK(a.closed_within(5s));
  CHECK(b.closed_within(5s));
  CHECK(server.wait_for_connections(0));
  raw_client after(server.port());
  CHECK(after.connect_error() == ECONNREFUSED);
}
