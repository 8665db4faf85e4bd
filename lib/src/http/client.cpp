// The GET exchange as one coroutine with one deadline: every phase, on every
// hop of a redirect chain, either finishes before `until` or the exchange
// fails as transient.
#include "gatherstats/http/client.hpp"

#include "gatherstats/http/connection_budget.hpp"
#include "gatherstats/version.hpp"
#include "inflate.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include <sys/resource.h>

#include <array>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace urls = boost::urls;
using namespace boost::asio::experimental::awaitable_operators;

namespace gatherstats::http {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t max_header_bytes = 64 * 1024;
// The body of a redirect is read (so that the connection can be reused) but
// not kept; more than this and the connection is dropped instead.
constexpr std::size_t max_redirect_body_bytes = 64 * 1024;
constexpr std::size_t read_chunk_bytes = 64 * 1024;

bool is_timeout(const boost::system::error_code& ec) {
  return ec == beast::error::timeout || ec == asio::error::timed_out;
}

// "timed out WHAT" or "WHAT failed: reason". A plain function: GCC 12
// destroys temporaries of a ?: inside a coroutine twice.
std::string network_error(std::string_view shown, const boost::system::error_code& ec,
                          std::string_view timed_out, std::string_view failed) {
  std::string m(shown);
  m += ": ";
  if (is_timeout(ec)) {
    m += timed_out;
  } else {
    m += failed;
    m += ": ";
    m += ec.message();
  }
  return m;
}

// The process is out of descriptors (EMFILE) or the system is (ENFILE).
bool out_of_descriptors(const boost::system::error_code& ec) {
  return ec == boost::system::errc::too_many_files_open ||
         ec == boost::system::errc::too_many_files_open_in_system;
}

// What to change when no socket can be had: the message names the limit
// the process runs under, not Asio's "Operation canceled".
failure too_many_open_files(std::string_view shown, std::string_view detail = {}) {
  std::string m(shown);
  m += ": cannot connect: too many open files (limit ";
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0)
    m += "unknown";
  else if (files.rlim_cur == RLIM_INFINITY)
    m += "unlimited";
  else
    m += std::to_string(files.rlim_cur);
  m += detail;
  m += "): raise LimitNOFILE in the unit or lower max_concurrent_fetches";
  return failure::transient(std::move(m), fetch_reason::connect);
}

struct target {
  bool tls = false;
  bool ip_literal = false;
  std::string host;         // for DNS, SNI and certificate checks
  std::string port;         // service for the resolver
  std::string host_header;  // as sent in Host:
  std::string path;         // path and query
  std::string origin() const { return (tls ? "https://" : "http://") + host + ":" + port; }
};

outcome<target> parse_target(std::string_view text, const std::string& shown) {
  auto parsed = urls::parse_uri(text);
  if (!parsed)
    return failure::permanent(shown + ": not a valid URL (" + parsed.error().message() + ")");
  urls::url_view u = *parsed;
  target t;
  if (u.scheme_id() == urls::scheme::https)
    t.tls = true;
  else if (u.scheme_id() != urls::scheme::http)
    return failure::permanent(shown + ": unsupported scheme \"" + std::string(u.scheme()) +
                              "\" (use http or https)");
  t.host = u.host_address();
  if (t.host.empty()) return failure::permanent(shown + ": the URL has no host");
  t.ip_literal = u.host_type() == urls::host_type::ipv4 || u.host_type() == urls::host_type::ipv6;
  t.port = u.has_port() ? std::string(u.port()) : (t.tls ? "443" : "80");
  t.host_header = u.host_type() == urls::host_type::ipv6 ? "[" + t.host + "]" : t.host;
  if (u.has_port()) t.host_header += ":" + t.port;
  t.path = u.encoded_path().empty() ? "/" : std::string(u.encoded_path());
  if (u.has_query()) t.path += "?" + std::string(u.encoded_query());
  return t;
}

bool is_redirect(unsigned status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

failure status_failure(const std::string& shown, unsigned status, std::string_view reason) {
  std::string message = shown + ": HTTP " + std::to_string(status);
  if (!reason.empty()) message += " " + std::string(reason);
  failure f{failure_kind::permanent, std::move(message), status, fetch_reason::http_status};
  if (status == 429 || status >= 500) f.kind = failure_kind::transient;
  return f;
}

enum class coding { identity, compressed };

// The Content-Encoding values we can read; anything else is a permanent error
// (we only ever offer gzip and deflate).
outcome<coding> parse_coding(std::string_view value, const std::string& shown) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty() || beast::iequals(value, "identity")) return coding::identity;
  if (beast::iequals(value, "gzip") || beast::iequals(value, "x-gzip") ||
      beast::iequals(value, "deflate"))
    return coding::compressed;
  return failure::permanent(shown + ": unsupported Content-Encoding \"" + std::string(value) +
                            "\" (only gzip and deflate are accepted)");
}

// One connection, plain or TLS, with the read buffer that belongs to it.
// Heap-allocated: the TLS verify callback points into it.
struct connection {
  // First, so that it is released last: after the socket is closed.
  std::optional<connection_budget::slot> slot;
  std::string origin;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
  std::string verify_problem;

  beast::tcp_stream& lowest() {
    if (secure) return beast::get_lowest_layer(*secure);
    return *plain;
  }
};

// What one request/response on one connection gave.
struct exchange {
  std::optional<failure> error;
  // The write, or the read before any byte arrived, failed: on a reused
  // connection this means the server closed it while it was idle.
  bool nothing_received = false;
  bool keep_alive = false;  // the connection may serve another request
  unsigned status = 0;
  std::string location;  // of a redirect
  std::string body;
};

exchange failed(failure f) {
  exchange e;
  e.error = std::move(f);
  return e;
}

// Writes the request and reads the response; the body of a 2xx is inflated
// as needed and kept under the limit, the body of a redirect is skipped.
template <class Stream>
asio::awaitable<exchange> async_exchange(Stream& stream, beast::flat_buffer& buffer,
                                         const bhttp::request<bhttp::empty_body>& req,
                                         std::size_t max_body_bytes, const std::string& shown,
                                         deadline until) {
  auto [write_ec, written] = co_await bhttp::async_write(stream, req, use_nothrow);
  if (write_ec) {
    exchange e = failed(
        failure::transient(network_error(shown, write_ec, "timed out sending the request",
                                         "sending the request failed"),
                           is_timeout(write_ec) ? fetch_reason::timeout : fetch_reason::connect));
    e.nothing_received = !is_timeout(write_ec);
    co_return e;
  }

  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.header_limit(max_header_bytes);
  // The limit is on the decompressed body and counted below.
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  auto [header_ec, header_bytes] =
      co_await bhttp::async_read_header(stream, buffer, parser, use_nothrow);
  if (header_ec == bhttp::error::header_limit)
    co_return failed(failure::permanent(shown + ": the response headers are larger than " +
                                        std::to_string(max_header_bytes) + " bytes"));
  if (is_timeout(header_ec))
    co_return failed(
        failure::transient(shown + ": timed out waiting for the response", fetch_reason::timeout));
  if (header_ec) {
    exchange e = failed(failure::transient(
        shown + ": reading the response failed: " + header_ec.message(), fetch_reason::connect));
    e.nothing_received = header_bytes == 0 && buffer.size() == 0;
    co_return e;
  }

  exchange out;
  const auto& head = parser.get();
  out.status = head.result_int();
  out.keep_alive = head.keep_alive();
  std::size_t limit = max_body_bytes;
  bool keep = true;
  if (is_redirect(out.status) && head.count(bhttp::field::location) > 0) {
    out.location = std::string(head[bhttp::field::location]);
    limit = max_redirect_body_bytes;
    keep = false;
  } else if (out.status < 200 || out.status > 299) {
    // The body is not read: the connection is not reused.
    out.keep_alive = false;
    out.error = status_failure(shown, out.status, head.reason());
    co_return out;
  }

  std::optional<inflater> inflating;
  if (keep) {
    auto coded = parse_coding(head[bhttp::field::content_encoding], shown);
    if (!coded) {
      out.keep_alive = false;
      out.error = coded.error();
      co_return out;
    }
    if (*coded == coding::compressed) inflating.emplace(limit);
  }

  std::array<char, read_chunk_bytes> chunk;
  std::size_t raw_bytes = 0;
  while (!parser.is_done()) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    // The stream's expiry bounds each read while it waits; a body that keeps
    // arriving is bounded here, between reads.
    beast::get_lowest_layer(stream).expires_at(until);
    auto [read_ec, read] = co_await bhttp::async_read(stream, buffer, parser, use_nothrow);
    if (read_ec == bhttp::error::need_buffer) read_ec = {};
    const std::size_t got = chunk.size() - parser.get().body().size;
    raw_bytes += got;
    if (!read_ec && !parser.is_done() && std::chrono::steady_clock::now() >= until)
      read_ec = beast::error::timeout;
    if (read_ec) {
      out.keep_alive = false;
      if (is_timeout(read_ec)) {
        out.error = failure::transient(shown + ": timed out reading the response (" +
                                           std::to_string(raw_bytes) + " body bytes received)",
                                       fetch_reason::timeout);
      } else {
        out.error =
            failure::transient(shown + ": reading the response failed after " +
                               std::to_string(raw_bytes) + " body bytes: " + read_ec.message());
      }
      co_return out;
    }
    const std::string_view data(chunk.data(), got);
    if (inflating) {
      if (auto fed = inflating->feed(data, out.body); fed != inflater::status::ok) {
        out.keep_alive = false;
        out.error =
            failure::permanent(shown + ": " + inflating->error(),
                               fed == inflater::status::over_limit ? fetch_reason::body_too_large
                                                                   : fetch_reason::parse);
        co_return out;
      }
    } else if (raw_bytes > limit) {
      out.keep_alive = false;
      if (!keep) co_return out;  // a redirect with a big body: just drop the connection
      out.error = failure::permanent(
          shown + ": the body is larger than the limit of " + std::to_string(limit) + " bytes",
          fetch_reason::body_too_large);
      co_return out;
    } else if (keep) {
      out.body.append(data);
    }
  }
  if (inflating && inflating->finish() != inflater::status::ok) {
    out.error = failure::permanent(shown + ": " + inflating->error(), fetch_reason::parse);
    co_return out;
  }
  co_return out;
}

namespace {

// A TLS context as `settings` ask for it. Loading the system trust store
// costs about 28 ms and 0.8 MiB, so contexts are shared (below).
outcome<std::shared_ptr<asio::ssl::context>> make_tls_context(const tls_settings& settings) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  auto& tls = *ctx;
  boost::system::error_code ec;
  tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1,
                  ec);
  const auto require_file = [](const std::string& what, const std::string& path) {
    std::error_code fs_ec;
    if (std::filesystem::is_regular_file(path, fs_ec)) return std::optional<failure>();
    return std::optional<failure>(
        failure::permanent(what + " \"" + path + "\" does not exist or is not a file"));
  };
  if (settings.insecure_skip_verify) {
    tls.set_verify_mode(asio::ssl::verify_none);
  } else {
    if (settings.ca_file.empty()) {
      tls.set_default_verify_paths(ec);
      if (ec) return failure::permanent("cannot load the system trust store: " + ec.message());
    } else {
      if (auto missing = require_file("CA file", settings.ca_file)) return *missing;
      tls.load_verify_file(settings.ca_file, ec);
      if (ec)
        return failure::permanent("cannot load CA file \"" + settings.ca_file +
                                  "\": " + ec.message());
    }
    tls.set_verify_mode(asio::ssl::verify_peer);
  }
  if (settings.cert_file.empty() != settings.key_file.empty())
    return failure::permanent("a client certificate needs both a certificate and a key file");
  if (!settings.cert_file.empty()) {
    if (auto missing = require_file("client certificate file", settings.cert_file)) return *missing;
    if (auto missing = require_file("client key file", settings.key_file)) return *missing;
    tls.use_certificate_chain_file(settings.cert_file, ec);
    if (ec)
      return failure::permanent("cannot load client certificate file \"" + settings.cert_file +
                                "\": " + ec.message());
    tls.use_private_key_file(settings.key_file, asio::ssl::context::pem, ec);
    if (ec)
      return failure::permanent("cannot load client key file \"" + settings.key_file +
                                "\": " + ec.message());
    if (SSL_CTX_check_private_key(tls.native_handle()) != 1)
      return failure::permanent("the client key \"" + settings.key_file +
                                "\" does not belong to the certificate \"" + settings.cert_file +
                                "\"");
  }
  return ctx;
}

// What identifies a file's content well enough to share a context loaded
// from it: a rewritten CA or key file gets a context of its own.
std::string file_identity(const std::string& path) {
  if (path.empty()) return {};
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  auto time = std::filesystem::last_write_time(path, ec);
  return path + "|" + std::to_string(size) + "|" + std::to_string(time.time_since_epoch().count());
}

// Clients with the same TLS settings (and unchanged files) share one
// context; it lives as long as a client uses it.
outcome<std::shared_ptr<asio::ssl::context>> shared_tls_context(const tls_settings& settings) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<asio::ssl::context>> contexts;
  std::string key = file_identity(settings.ca_file) + "\n" + file_identity(settings.cert_file) +
                    "\n" + file_identity(settings.key_file) + "\n" +
                    (settings.insecure_skip_verify ? "insecure" : "verify");
  std::lock_guard lock(mutex);
  if (auto found = contexts.find(key); found != contexts.end())
    if (auto ctx = found->second.lock()) return ctx;
  auto made = make_tls_context(settings);
  if (!made) return made.error();
  std::erase_if(contexts, [](const auto& entry) { return entry.second.expired(); });
  contexts[key] = *made;
  return made;
}

}  // namespace

// What a client keeps between requests.
struct client_state {
  // Shared by clients with the same settings. With the system trust store
  // (no ca_file), made at the first https connection: an http-only daemon
  // never loads it.
  std::shared_ptr<asio::ssl::context> tls;
  tls_settings settings;
  bool verify = true;
  // The connection kept after the last request, if the server allowed it,
  // and its place among the connections that give way to new sockets
  // (declared after it: unparked before the connection closes).
  std::unique_ptr<connection> idle;
  std::optional<connection_budget::parking> parked;

  std::unique_ptr<connection> take_idle() {
    parked.reset();
    return std::move(idle);
  }
  void keep_idle(std::unique_ptr<connection> conn, connection_budget& budget,
                 connection_budget::time_point next_use) {
    parked.reset();
    idle = std::move(conn);
    parked.emplace(budget.park(next_use, [self = this] { self->idle.reset(); }));
  }
};

connection_budget budget_of(const asio::any_io_executor& ex) {
  return connection_budget::of(asio::query(ex, asio::execution::context));
}

// Resolve, connect and (for https) the TLS handshake.
asio::awaitable<outcome<std::unique_ptr<connection>>> async_open(client_state& self,
                                                                 connection_budget& budget,
                                                                 const target& t,
                                                                 const std::string& shown,
                                                                 deadline until) {
  auto ex = co_await asio::this_coro::executor;
  asio::ip::tcp::resolver resolver(ex);
  asio::steady_timer timer(ex, until);
  auto resolved = co_await (resolver.async_resolve(t.host, t.port, use_nothrow) ||
                            timer.async_wait(use_nothrow));
  if (resolved.index() == 1)
    co_return failure::transient(shown + ": timed out resolving \"" + t.host + "\"",
                                 fetch_reason::timeout);
  auto [resolve_ec, endpoints] = std::get<0>(resolved);
  if (out_of_descriptors(resolve_ec)) co_return too_many_open_files(shown);
  if (resolve_ec)
    co_return failure::transient(
        shown + ": cannot resolve \"" + t.host + "\": " + resolve_ec.message(), fetch_reason::dns);

  auto conn = std::make_unique<connection>();
  conn->origin = t.origin();
  conn->slot = budget.try_open();
  if (!conn->slot)
    co_return too_many_open_files(
        shown, ", all " + std::to_string(budget.limit()) + " fetch sockets in use");
  // The socket is opened here rather than by a range connect, which would
  // report a refused socket (EMFILE) as "Operation canceled".
  beast::tcp_stream tcp(ex);
  boost::system::error_code connect_ec = asio::error::host_not_found;
  for (const auto& entry : endpoints) {
    auto& socket = tcp.socket();
    boost::system::error_code ignored;
    if (socket.is_open()) socket.close(ignored);
    boost::system::error_code open_ec;
    socket.open(entry.endpoint().protocol(), open_ec);
    // Descriptors the budget does not know of (a burst of files, another
    // library): an idle connection gives way, once.
    if (out_of_descriptors(open_ec) && budget.close_one_parked())
      socket.open(entry.endpoint().protocol(), open_ec);
    if (out_of_descriptors(open_ec)) co_return too_many_open_files(shown);
    if (open_ec) {
      connect_ec = open_ec;
      continue;
    }
    tcp.expires_at(until);
    auto [ec] = co_await tcp.async_connect(entry.endpoint(), use_nothrow);
    connect_ec = ec;
    // Done, or no time left for the next address.
    if (!ec || is_timeout(ec)) break;
  }
  if (connect_ec)
    co_return failure::transient(
        network_error(shown, connect_ec, "timed out connecting", "cannot connect"),
        is_timeout(connect_ec) ? fetch_reason::timeout : fetch_reason::connect);
  if (!t.tls) {
    conn->plain.emplace(std::move(tcp));
    co_return conn;
  }

  if (!self.tls) {
    auto made = shared_tls_context(self.settings);
    if (!made) co_return made.error();
    self.tls = std::move(*made);
  }
  auto& stream = conn->secure.emplace(std::move(tcp), *self.tls);
  // SNI is for names only (RFC 6066); certificates for IP literals are
  // checked against their IP address entries.
  if (!t.ip_literal && !SSL_set_tlsext_host_name(stream.native_handle(), t.host.c_str()))
    co_return failure::permanent(shown + ": cannot set the TLS server name", fetch_reason::tls);
  if (self.verify) {
    stream.set_verify_callback([problem = &conn->verify_problem, host = t.host](
                                   bool preverified, asio::ssl::verify_context& ctx) {
      if (!preverified) {
        int err = X509_STORE_CTX_get_error(ctx.native_handle());
        *problem = X509_verify_cert_error_string(err);
        return false;
      }
      bool matches = asio::ssl::host_name_verification(host)(preverified, ctx);
      if (!matches) *problem = "the certificate does not match \"" + host + "\"";
      return matches;
    });
  }
  auto [handshake_ec] =
      co_await stream.async_handshake(asio::ssl::stream_base::client, use_nothrow);
  if (handshake_ec) {
    if (is_timeout(handshake_ec))
      co_return failure::transient(shown + ": timed out in the TLS handshake",
                                   fetch_reason::timeout);
    std::string reason = conn->verify_problem;
    if (reason.empty()) reason = handshake_ec.message();
    co_return failure::permanent(shown + ": TLS handshake failed: " + reason, fetch_reason::tls);
  }
  co_return conn;
}

// A polite close_notify for a TLS connection we will not reuse, but never
// past the deadline and never an error: the body is already complete.
asio::awaitable<void> async_close(std::unique_ptr<connection> conn, deadline until) {
  if (!conn || !conn->secure) co_return;
  conn->lowest().expires_at(
      std::min(until, std::chrono::steady_clock::now() + std::chrono::seconds(1)));
  co_await conn->secure->async_shutdown(use_nothrow);
}

// One request to one URL: on the idle connection if it is to the same
// origin, else (or if that one turns out dead) on a fresh one.
asio::awaitable<exchange> async_attempt(client_state& self, const target& t,
                                        const bhttp::request<bhttp::empty_body>& req,
                                        std::size_t max_body_bytes, const std::string& shown,
                                        deadline until, connection_budget::time_point next_use) {
  auto ex = co_await asio::this_coro::executor;
  auto budget = budget_of(ex);
  // The idle connection is taken out of the budget's reach while in use; one
  // to another origin is closed before a new socket is opened.
  std::unique_ptr<connection> conn = self.take_idle();
  bool reused = conn && conn->origin == t.origin();
  if (!reused) conn.reset();
  for (;;) {
    if (!conn) {
      auto opened = co_await async_open(self, budget, t, shown, until);
      if (!opened) co_return failed(opened.error());
      conn = std::move(*opened);
    }
    // Re-armed for every request: a reused connection still carries the
    // expiry of the previous one.
    conn->lowest().expires_at(until);
    exchange result;
    if (conn->secure) {
      result =
          co_await async_exchange(*conn->secure, conn->buffer, req, max_body_bytes, shown, until);
    } else {
      result =
          co_await async_exchange(*conn->plain, conn->buffer, req, max_body_bytes, shown, until);
    }
    if (result.error && result.nothing_received && reused) {
      // Closed by the server while it was idle: once more, on a fresh one.
      conn.reset();
      reused = false;
      continue;
    }
    if (result.keep_alive && !result.error) {
      self.keep_idle(std::move(conn), budget, next_use);
    } else if (!result.error) {
      co_await async_close(std::move(conn), until);
    }
    co_return result;
  }
}

}  // namespace

struct client::impl {
  client_state state;
};

outcome<client> client::create(const tls_settings& settings) {
  auto p = std::make_shared<impl>();
  p->state.settings = settings;
  p->state.verify = !settings.insecure_skip_verify;
  // Files named in the settings are loaded now, so that a bad one is an
  // error at start-up (or reload), not at the first fetch.
  bool names_files =
      !settings.ca_file.empty() || !settings.cert_file.empty() || !settings.key_file.empty();
  if (names_files) {
    auto tls = shared_tls_context(settings);
    if (!tls) return tls.error();
    p->state.tls = std::move(*tls);
  }
  return client(std::move(p));
}

asio::awaitable<outcome<response>> client::async_get(std::string url, std::size_t max_body_bytes,
                                                     deadline until) {
  request req;
  req.url = std::move(url);
  req.max_body_bytes = max_body_bytes;
  co_return co_await async_get(std::move(req), until);
}

asio::awaitable<outcome<response>> client::async_get(request req, deadline until) {
  // The state outlives this coroutine even if the client object is moved.
  const std::shared_ptr<impl> self = impl_;
  std::string first_shown = std::move(req.shown_url);
  if (first_shown.empty()) first_shown = redact_url(req.url);
  std::string url = std::move(req.url);
  std::string authorization = std::move(req.authorization);
  for (unsigned redirects = 0;; ++redirects) {
    // Not a ?: expression: GCC 12 mishandles its temporaries in a coroutine.
    std::string shown = first_shown;
    if (redirects > 0) shown = redact_url(url);
    auto parsed = parse_target(url, shown);
    if (!parsed) co_return parsed.error();
    const target& t = *parsed;

    bhttp::request<bhttp::empty_body> http_req{bhttp::verb::get, t.path, 11};
    http_req.set(bhttp::field::host, t.host_header);
    http_req.set(bhttp::field::user_agent, std::string("gatherstats/") + version);
    http_req.set(bhttp::field::accept, "application/json");
    http_req.set(bhttp::field::accept_encoding, "gzip, deflate");
    for (const auto& [name, value] : req.headers) http_req.set(name, value);
    if (!authorization.empty()) http_req.set(bhttp::field::authorization, authorization);

    exchange result = co_await async_attempt(self->state, t, http_req, req.max_body_bytes, shown,
                                             until, req.next_use);
    if (result.error) co_return *result.error;
    if (!result.location.empty()) {
      if (redirects >= req.max_redirects)
        co_return failure::permanent(first_shown + ": too many redirects (more than " +
                                     std::to_string(req.max_redirects) + "), the last from " +
                                     shown);
      auto base = urls::parse_uri(url);
      auto reference = urls::parse_uri_reference(result.location);
      if (!base || !reference)
        co_return failure::permanent(shown + ": HTTP " + std::to_string(result.status) +
                                     " redirects to an invalid URL");
      urls::url next;
      auto resolved = urls::resolve(*base, *reference, next);
      if (!resolved)
        co_return failure::permanent(shown + ": HTTP " + std::to_string(result.status) +
                                     " redirects to an unusable URL");
      next.normalize_scheme();
      const std::string next_url(next.buffer());
      const std::string next_shown = redact_url(next_url);
      if (t.tls && next.scheme_id() != urls::scheme::https)
        co_return failure::permanent(shown + ": refusing to follow a redirect from https to " +
                                     next_shown);
      auto next_target = parse_target(next_url, next_shown);
      if (!next_target) co_return next_target.error();
      // The credentials were given for this origin: a redirect elsewhere
      // (another host, port or scheme) must not carry them along.
      if (next_target->origin() != t.origin()) authorization.clear();
      url = next_url;
      continue;
    }
    response out;
    out.status = result.status;
    out.body = std::move(result.body);
    out.received_at = now_utc();
    out.final_url = std::move(url);
    co_return out;
  }
}

}  // namespace gatherstats::http
