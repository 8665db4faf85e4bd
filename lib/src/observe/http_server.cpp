// One coroutine per connection on the daemon's event loop: (TLS handshake,)
// then read a header, answer, and wait for the next request while the
// client keeps the connection alive. Every wait has a deadline on the
// connection's tcp_stream, so a slow or silent client costs one socket and
// a small buffer until its time is up.
#include "gatherstats/observe/http_server.hpp"

#include "gatherstats/io/blocking.hpp"
#include "gatherstats/observe/basic_auth.hpp"
#include "gatherstats/observe/listen_address.hpp"

#include <openssl/crypto.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <filesystem>
#include <optional>
#include <unordered_set>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace gatherstats::observe {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using clock = std::chrono::steady_clock;

// bcrypt checks at once on the blocking executor: the daemon's pool is small
// and also reads files; a flood of wrong passwords waits here instead.
constexpr std::size_t bcrypt_concurrency = 1;
// A polite TLS close_notify is not worth waiting long for.
constexpr std::chrono::milliseconds max_shutdown_wait{1000};
// Read and thrown away at most, while closing a connection.
constexpr std::size_t max_drain_bytes = 64 * 1024;
// Between failed accepts (EMFILE and the like), rather than spinning.
constexpr std::chrono::milliseconds accept_retry_pause{100};
// What an idle connection reads into first: enough for a typical request.
constexpr std::size_t first_read_bytes = 1024;

constexpr std::string_view refused_response =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 20\r\nConnection: close\r\nRetry-After: 1\r\n\r\ntoo many connections";

bool is_timeout(const boost::system::error_code& ec) {
  return ec == beast::error::timeout || ec == asio::error::timed_out;
}

std::string format_endpoint(const tcp::endpoint& ep) {
  if (ep.address().is_v6())
    return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

outcome<std::shared_ptr<tcp::acceptor>> bind_listener(const asio::any_io_executor& ex,
                                                      const std::string& listen) {
  auto fail = [&](const std::string& why) {
    return failure::permanent("cannot listen on " + listen + ": " + why);
  };
  auto parsed = parse_listen_address(listen, /*allow_any_port=*/true);
  if (!parsed) return fail(parsed.error().message);
  std::vector<tcp::endpoint> candidates;
  if (parsed->host.empty()) {
    // Every address: IPv6 with IPv4 mapped into it, or IPv4 alone on a host
    // without IPv6.
    candidates = {tcp::endpoint(asio::ip::address_v6::any(), parsed->port),
                  tcp::endpoint(asio::ip::address_v4::any(), parsed->port)};
  } else {
    // A blocking resolve: the name is local ("localhost") and this runs at
    // start-up or on SIGHUP.
    tcp::resolver resolver(ex);
    boost::system::error_code ec;
    auto results = resolver.resolve(parsed->host, std::to_string(parsed->port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec) return fail("cannot resolve \"" + parsed->host + "\": " + ec.message());
    for (const auto& r : results) candidates.push_back(r.endpoint());
  }
  boost::system::error_code last =
      boost::system::errc::make_error_code(boost::system::errc::address_not_available);
  for (const auto& ep : candidates) {
    auto acceptor = std::make_shared<tcp::acceptor>(ex);
    boost::system::error_code ec;
    acceptor->open(ep.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec && ep.address().is_v6() && parsed->host.empty())
      acceptor->set_option(asio::ip::v6_only(false), ec);
    if (!ec) acceptor->bind(ep, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) return acceptor;
    last = ec;
    // Only a missing address family moves on to the next address: "in use"
    // on one address of a name must not silently bind another.
    if (ec != asio::error::address_family_not_supported &&
        ec != boost::system::errc::address_not_available)
      break;
  }
  return fail(last.message());
}

outcome<void> require_file(const std::string& what, const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return {};
  return failure::permanent(what + " \"" + path + "\" does not exist or is not a file");
}

// TLS 1.2 or later with the server's certificate; with a client CA, a client
// certificate from it is required.
outcome<std::shared_ptr<asio::ssl::context>> make_tls_context(const server_settings& s) {
  if (s.cert_file.empty() && s.key_file.empty()) {
    if (!s.client_ca_file.empty())
      return failure::permanent("a client CA file needs TLS (a certificate and a key file)");
    return std::shared_ptr<asio::ssl::context>();
  }
  if (s.cert_file.empty() || s.key_file.empty())
    return failure::permanent("TLS needs both a certificate and a key file");
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  boost::system::error_code ec;
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use,
                   ec);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  if (auto r = require_file("certificate file", s.cert_file); !r) return r.error();
  if (auto r = require_file("key file", s.key_file); !r) return r.error();
  ctx->use_certificate_chain_file(s.cert_file, ec);
  if (ec)
    return failure::permanent("cannot load certificate file \"" + s.cert_file +
                              "\": " + ec.message());
  ctx->use_private_key_file(s.key_file, asio::ssl::context::pem, ec);
  if (ec) return failure::permanent("cannot load key file \"" + s.key_file + "\": " + ec.message());
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
    return failure::permanent("the key \"" + s.key_file +
                              "\" does not belong to the certificate \"" + s.cert_file + "\"");
  if (!s.client_ca_file.empty()) {
    if (auto r = require_file("client CA file", s.client_ca_file); !r) return r.error();
    ctx->load_verify_file(s.client_ca_file, ec);
    if (ec)
      return failure::permanent("cannot load client CA file \"" + s.client_ca_file +
                                "\": " + ec.message());
    // Tells clients which CA to pick a certificate from.
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(s.client_ca_file.c_str()))
      SSL_CTX_set_client_CA_list(ctx->native_handle(), names);
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  return ctx;
}

outcome<std::shared_ptr<user_table>> make_users(const server_settings& s) {
  for (const auto& [user, hash] : s.basic_auth_users) {
    if (user.empty() || user.find(':') != std::string::npos)
      return failure::permanent("basic auth user \"" + user +
                                "\": a user name must be non-empty, without \":\"");
    if (!is_bcrypt_hash(hash))
      return failure::permanent("basic auth user \"" + user +
                                "\": the password hash is not a bcrypt hash ($2a$, $2b$ or $2y$)");
  }
  if (s.basic_auth_users.empty()) return std::shared_ptr<user_table>();
  return std::make_shared<user_table>(s.basic_auth_users);
}

// One accepted connection, plain or TLS.
struct connection {
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  // The context this connection started with, kept across a reload.
  std::shared_ptr<asio::ssl::context> tls;

  beast::tcp_stream& lowest() {
    if (secure) return beast::get_lowest_layer(*secure);
    return *plain;
  }
};

using response = bhttp::response<bhttp::string_body>;

response make_response(unsigned status, unsigned version, std::string body) {
  response res{static_cast<bhttp::status>(status), version};
  res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
  res.body() = std::move(body);
  return res;
}

// How a request was answered, for the connection loop.
struct verdict {
  response res;
  bool close = false;  // the connection ends after this response
};

}  // namespace

struct http_server::impl : std::enable_shared_from_this<impl> {
  asio::any_io_executor ex;
  asio::any_io_executor blocking;
  server_settings settings;
  request_handler handler;
  std::shared_ptr<asio::ssl::context> tls;  // null: plain HTTP
  std::shared_ptr<user_table> users;        // null: no authentication
  std::shared_ptr<tcp::acceptor> acceptor;
  bool started = false;
  bool stopped = false;
  std::unordered_set<connection*> live;
  server_stats stats;
  std::size_t checks_running = 0;
  std::deque<std::shared_ptr<asio::steady_timer>> check_waiters;

  void spawn_accept_loop();
};

namespace {

using impl_ptr = std::shared_ptr<http_server::impl>;

// A slot for one bcrypt check; false when the server stopped meanwhile.
asio::awaitable<bool> async_acquire_check(http_server::impl& self) {
  if (self.checks_running < bcrypt_concurrency) {
    ++self.checks_running;
    co_return true;
  }
  auto wake = std::make_shared<asio::steady_timer>(self.ex, asio::steady_timer::time_point::max());
  self.check_waiters.push_back(wake);
  // Cancelled by release_check, which hands its slot over, or by stop().
  co_await wake->async_wait(use_nothrow);
  co_return !self.stopped;
}

void release_check(http_server::impl& self) {
  if (!self.check_waiters.empty()) {
    auto next = std::move(self.check_waiters.front());
    self.check_waiters.pop_front();
    next->cancel();
    return;
  }
  --self.checks_running;
}

struct check_slot {
  http_server::impl& self;
  ~check_slot() { release_check(self); }
};

// Whether the Authorization value names a user whose bcrypt hash the
// password matches. An unknown user costs a bcrypt check too.
asio::awaitable<bool> async_authorized(http_server::impl& self, std::shared_ptr<user_table> users,
                                       std::string authorization) {
  auto credentials = parse_basic_authorization(authorization);
  OPENSSL_cleanse(authorization.data(), authorization.size());
  if (!credentials) co_return false;
  const password_digest digest = sha256_of(credentials->password);
  bool known = false;
  const std::string hash = users->hash_to_check(credentials->user, known);
  if (known && users->cached(credentials->user, digest)) co_return true;
  const bool acquired = co_await async_acquire_check(self);
  if (!acquired) co_return false;
  bool matches = false;
  {
    check_slot slot{self};
    auto check = [password = credentials->password, hash] {
      return bcrypt_matches(password, hash);
    };
    matches = co_await io::async_run_blocking<bool>(self.blocking, check);
  }
  if (!known || !matches) co_return false;
  users->remember(credentials->user, digest);
  co_return true;
}

// What the server answers to one request header.
template <class Parser>
asio::awaitable<verdict> async_decide(http_server::impl& self, const Parser& parser) {
  const auto& req = parser.get();
  const unsigned version = req.version();
  const bool has_body =
      parser.chunked() || (parser.content_length() && *parser.content_length() > 0);
  if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head) {
    ++self.stats.rejected;
    verdict v{make_response(405, version, "only GET and HEAD\n"), has_body};
    v.res.set(bhttp::field::allow, "GET, HEAD");
    co_return v;
  }
  if (has_body) {
    ++self.stats.rejected;
    co_return verdict{make_response(413, version, "a request body is not accepted\n"), true};
  }
  if (self.users) {
    // Named first: GCC 12 mis-destroys temporaries built inside co_await.
    std::string authorization(req[bhttp::field::authorization]);
    std::shared_ptr<user_table> users = self.users;
    const bool allowed =
        co_await async_authorized(self, std::move(users), std::move(authorization));
    if (!allowed) {
      ++self.stats.unauthorized;
      verdict v{make_response(401, version, "unauthorized\n"), false};
      v.res.set(bhttp::field::www_authenticate, "Basic realm=\"gatherstatsd\"");
      co_return v;
    }
  }
  if (self.stopped) co_return verdict{make_response(503, version, "stopping\n"), true};
  server_request request{std::string(req.method_string()), std::string(req.target())};
  server_response answer;
  try {
    ++self.stats.requests;
    answer = self.handler(request);
  } catch (...) {
    answer = server_response{500, "", "internal error\n", {}};
  }
  if (answer.status < 100 || answer.status > 999)
    answer = server_response{500, "", "internal error\n", {}};
  verdict v{make_response(answer.status, version, std::move(answer.body)), false};
  if (!answer.content_type.empty()) v.res.set(bhttp::field::content_type, answer.content_type);
  for (const auto& [name, value] : answer.headers) v.res.insert(name, value);
  co_return v;
}

// Writes a response (only its header for HEAD); false if that failed.
template <class Stream>
asio::awaitable<bool> async_respond(http_server::impl& self, connection& conn, Stream& stream,
                                    response& res, bool head) {
  res.prepare_payload();
  conn.lowest().expires_after(self.settings.write_timeout);
  bhttp::response_serializer<bhttp::string_body> serializer(res);
  boost::system::error_code ec;
  if (head) {
    auto [write_ec, n] = co_await bhttp::async_write_header(stream, serializer, use_nothrow);
    ec = write_ec;
  } else {
    auto [write_ec, n] = co_await bhttp::async_write(stream, serializer, use_nothrow);
    ec = write_ec;
  }
  if (is_timeout(ec)) ++self.stats.timed_out;
  co_return !ec;
}

// An error answer that ends the connection, for a request that could not be
// read whole.
template <class Stream>
asio::awaitable<void> async_refuse(http_server::impl& self, connection& conn, Stream& stream,
                                   unsigned status, std::string_view body) {
  ++self.stats.rejected;
  response res = make_response(status, 11, std::string(body));
  res.keep_alive(false);
  co_await async_respond(self, conn, stream, res, false);
}

// Requests on one connection until it closes, fails, times out or is idle
// too long.
template <class Stream>
asio::awaitable<void> async_serve(http_server::impl& self, connection& conn, Stream& stream,
                                  clock::time_point request_started) {
  beast::flat_buffer buffer(self.settings.max_request_bytes);
  bool first = true;
  for (;;) {
    if (self.stopped) co_return;
    if (!first) {
      if (buffer.size() == 0) {
        // Idle between requests: nothing kept but the socket and a small read.
        buffer.shrink_to_fit();
        conn.lowest().expires_after(self.settings.idle_timeout);
        const std::size_t room = std::min(first_read_bytes, buffer.max_size());
        auto [ec, n] = co_await stream.async_read_some(buffer.prepare(room), use_nothrow);
        if (ec) co_return;  // closed by the client, or idle too long
        buffer.commit(n);
      }
      // From its first byte (or now, for a pipelined request already read).
      request_started = clock::now();
    }
    first = false;
    // One deadline for the whole request, however slowly its bytes come.
    conn.lowest().expires_at(request_started + self.settings.request_timeout);
    bhttp::request_parser<bhttp::empty_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(self.settings.max_request_bytes, UINT32_MAX)));
    auto [read_ec, read] = co_await bhttp::async_read_header(stream, buffer, parser, use_nothrow);
    if (read_ec == bhttp::error::header_limit || read_ec == bhttp::error::buffer_overflow) {
      co_await async_refuse(self, conn, stream, 431, "the request header is too large\n");
      co_return;
    }
    if (is_timeout(read_ec)) {
      ++self.stats.timed_out;
      co_return;
    }
    if (read_ec == bhttp::error::end_of_stream || read_ec == asio::error::eof ||
        read_ec == asio::error::connection_reset || read_ec == asio::error::operation_aborted ||
        read_ec == asio::error::bad_descriptor)
      co_return;
    if (read_ec) {
      co_await async_refuse(self, conn, stream, 400, "bad request\n");
      co_return;
    }
    const bool head = parser.get().method() == bhttp::verb::head;
    const bool keep_alive = parser.get().keep_alive();
    verdict v = co_await async_decide(self, parser);
    if (self.stopped) co_return;
    const bool close = v.close || !keep_alive;
    v.res.keep_alive(!close);
    const bool written = co_await async_respond(self, conn, stream, v.res, head);
    if (!written || close) co_return;
  }
}

// Ends a connection: close_notify for TLS, FIN for plain, both briefly.
// A plain connection is half-closed and drained before it is closed: closing
// with unread bytes (the rest of a refused request) would send a reset that
// can destroy the error response before the client reads it.
asio::awaitable<void> async_finish(connection& conn, bool stopped) {
  if (!stopped && conn.lowest().socket().is_open()) {
    conn.lowest().expires_after(max_shutdown_wait);
    if (conn.secure) {
      co_await conn.secure->async_shutdown(use_nothrow);
    } else {
      boost::system::error_code ec;
      conn.lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
      std::array<char, 4096> sink;
      std::size_t drained = 0;
      while (!ec && drained < max_drain_bytes) {
        auto [read_ec, n] = co_await conn.plain->async_read_some(asio::buffer(sink), use_nothrow);
        ec = read_ec;
        drained += n;
      }
    }
  }
  conn.lowest().close();
}

struct unregister {
  http_server::impl& self;
  connection* conn;
  ~unregister() { self.live.erase(conn); }
};

asio::awaitable<void> async_session(impl_ptr self, std::shared_ptr<connection> conn) {
  unregister registration{*self, conn.get()};
  const auto accepted_at = clock::now();
  if (conn->secure) {
    // The handshake counts against the first request's time.
    conn->lowest().expires_at(accepted_at + self->settings.request_timeout);
    auto [ec] = co_await conn->secure->async_handshake(asio::ssl::stream_base::server, use_nothrow);
    if (ec) {
      ++self->stats.handshake_failures;
      if (is_timeout(ec)) ++self->stats.timed_out;
      conn->lowest().close();
      co_return;
    }
    co_await async_serve(*self, *conn, *conn->secure, accepted_at);
  } else {
    co_await async_serve(*self, *conn, *conn->plain, accepted_at);
  }
  co_await async_finish(*conn, self->stopped);
}

// Past max_connections: closed at once, with a 503 if it fits in the socket
// buffer now (plain HTTP only; a TLS client sees the connection close).
void refuse(tcp::socket& socket, bool tls) {
  boost::system::error_code ec;
  if (!tls) {
    socket.non_blocking(true, ec);
    if (!ec) socket.send(asio::buffer(refused_response.data(), refused_response.size()), 0, ec);
  }
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

asio::awaitable<void> async_accept_loop(impl_ptr self, std::shared_ptr<tcp::acceptor> acceptor) {
  for (;;) {
    auto [ec, socket] = co_await acceptor->async_accept(use_nothrow);
    // Closed by stop() or replaced by reconfigure().
    if (self->stopped || !acceptor->is_open() || self->acceptor != acceptor) co_return;
    if (ec) {
      asio::steady_timer pause(self->ex, accept_retry_pause);
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    if (self->live.size() >= self->settings.max_connections) {
      ++self->stats.refused;
      refuse(socket, self->tls != nullptr);
      continue;
    }
    ++self->stats.accepted;
    boost::system::error_code nodelay_ec;
    socket.set_option(tcp::no_delay(true), nodelay_ec);
    auto conn = std::make_shared<connection>();
    if (self->tls) {
      conn->tls = self->tls;
      conn->secure.emplace(std::move(socket), *conn->tls);
    } else {
      conn->plain.emplace(std::move(socket));
    }
    self->live.insert(conn.get());
    asio::co_spawn(self->ex, async_session(self, std::move(conn)), asio::detached);
  }
}

}  // namespace

void http_server::impl::spawn_accept_loop() {
  asio::co_spawn(ex, async_accept_loop(shared_from_this(), acceptor), asio::detached);
}

http_server::http_server(std::shared_ptr<impl> p) : impl_(std::move(p)) {}
http_server::http_server(http_server&&) noexcept = default;
http_server& http_server::operator=(http_server&& other) noexcept {
  if (this != &other) {
    stop();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
http_server::~http_server() { stop(); }

outcome<http_server> http_server::create(asio::any_io_executor ex, asio::any_io_executor blocking,
                                         server_settings s, request_handler h) {
  auto tls = make_tls_context(s);
  if (!tls) return tls.error();
  auto users = make_users(s);
  if (!users) return users.error();
  auto acceptor = bind_listener(ex, s.listen);
  if (!acceptor) return acceptor.error();
  auto p = std::make_shared<impl>();
  p->ex = std::move(ex);
  p->blocking = std::move(blocking);
  p->settings = std::move(s);
  p->handler = std::move(h);
  p->tls = std::move(*tls);
  p->users = std::move(*users);
  p->acceptor = std::move(*acceptor);
  return http_server(std::move(p));
}

void http_server::start() {
  if (!impl_ || impl_->started || impl_->stopped) return;
  impl_->started = true;
  impl_->spawn_accept_loop();
}

void http_server::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  boost::system::error_code ec;
  if (impl_->acceptor) impl_->acceptor->close(ec);
  // Sessions see their streams fail and unregister themselves.
  for (connection* c : impl_->live) c->lowest().close();
  for (auto& waiter : impl_->check_waiters) waiter->cancel();
  impl_->check_waiters.clear();
}

outcome<void> http_server::reconfigure(server_settings s) {
  auto tls = make_tls_context(s);
  if (!tls) return tls.error();
  auto users = make_users(s);
  if (!users) return users.error();
  std::shared_ptr<tcp::acceptor> rebound;
  if (s.listen != impl_->settings.listen) {
    auto bound = bind_listener(impl_->ex, s.listen);
    if (!bound) return bound.error();
    rebound = std::move(*bound);
  }
  impl_->tls = std::move(*tls);
  impl_->users = std::move(*users);
  impl_->settings = std::move(s);
  if (rebound) {
    boost::system::error_code ec;
    impl_->acceptor->close(ec);
    impl_->acceptor = std::move(rebound);
    if (impl_->started && !impl_->stopped) impl_->spawn_accept_loop();
  }
  return {};
}

std::string http_server::local_address() const {
  boost::system::error_code ec;
  auto ep = impl_->acceptor->local_endpoint(ec);
  if (ec) return {};
  return format_endpoint(ep);
}

std::size_t http_server::connections() const { return impl_->live.size(); }

server_stats http_server::stats() const { return impl_->stats; }

const server_settings& http_server::settings() const { return impl_->settings; }

}  // namespace gatherstats::observe
