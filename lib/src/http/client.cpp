// The GET exchange as one coroutine with one deadline: every phase either
// finishes before `until` or the exchange fails as transient.
#include "gatherstats/http/client.hpp"

#include "gatherstats/version.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include <filesystem>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace urls = boost::urls;
using namespace boost::asio::experimental::awaitable_operators;

namespace gatherstats::http {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t max_header_bytes = 64 * 1024;

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

struct target {
  bool tls = false;
  bool ip_literal = false;
  std::string host;         // for DNS, SNI and certificate checks
  std::string port;         // service for the resolver
  std::string host_header;  // as sent in Host:
  std::string path;         // path and query
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

// Writes the request and reads the whole response under the body limit.
template <class Stream>
asio::awaitable<outcome<response>> async_exchange(Stream& stream, const target& t,
                                                  std::size_t max_body_bytes,
                                                  const std::string& shown) {
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, t.path, 11};
  req.set(bhttp::field::host, t.host_header);
  req.set(bhttp::field::user_agent, std::string("gatherstats/") + version);
  req.set(bhttp::field::accept, "application/json");
  req.set(bhttp::field::connection, "close");
  auto [write_ec, written] = co_await bhttp::async_write(stream, req, use_nothrow);
  if (write_ec)
    co_return failure::transient(network_error(shown, write_ec, "timed out sending the request",
                                               "sending the request failed"));

  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.header_limit(max_header_bytes);
  parser.body_limit(max_body_bytes);
  auto [read_ec, read] = co_await bhttp::async_read(stream, buffer, parser, use_nothrow);
  if (read_ec == bhttp::error::body_limit)
    co_return failure::permanent(shown + ": the body is larger than the limit of " +
                                 std::to_string(max_body_bytes) + " bytes");
  if (read_ec == bhttp::error::header_limit)
    co_return failure::permanent(shown + ": the response headers are larger than " +
                                 std::to_string(max_header_bytes) + " bytes");
  if (is_timeout(read_ec))
    co_return failure::transient(shown + ": timed out reading the response (" +
                                 std::to_string(read) + " bytes received)");
  if (read_ec)
    co_return failure::transient(shown + ": reading the response failed after " +
                                 std::to_string(read) + " bytes: " + read_ec.message());
  response out;
  out.received_at = now_utc();
  out.status = parser.get().result_int();
  if (out.status < 200 || out.status > 299) {
    std::string message = shown + ": HTTP " + std::to_string(out.status);
    if (auto reason = parser.get().reason(); !reason.empty()) message += " " + std::string(reason);
    bool transient = out.status == 429 || out.status >= 500;
    failure f{failure_kind::permanent, std::move(message), out.status};
    if (transient) f.kind = failure_kind::transient;
    co_return f;
  }
  out.body = std::move(parser.get().body());
  co_return out;
}

}  // namespace

struct client::impl {
  asio::ssl::context tls{asio::ssl::context::tls_client};
};

outcome<client> client::create(const tls_settings& settings) {
  auto p = std::make_shared<impl>();
  boost::system::error_code ec;
  p->tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                         asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                         asio::ssl::context::no_tlsv1_1,
                     ec);
  if (settings.ca_file.empty()) {
    p->tls.set_default_verify_paths(ec);
    if (ec) return failure::permanent("cannot load the system trust store: " + ec.message());
  } else {
    std::error_code fs_ec;
    if (!std::filesystem::is_regular_file(settings.ca_file, fs_ec))
      return failure::permanent("CA file \"" + settings.ca_file +
                                "\" does not exist or is not a file");
    p->tls.load_verify_file(settings.ca_file, ec);
    if (ec)
      return failure::permanent("cannot load CA file \"" + settings.ca_file +
                                "\": " + ec.message());
  }
  p->tls.set_verify_mode(asio::ssl::verify_peer);
  return client(std::move(p));
}

asio::awaitable<outcome<response>> client::async_get(std::string url, std::size_t max_body_bytes,
                                                     deadline until) {
  const std::string shown = redact_url(url);
  auto parsed = parse_target(url, shown);
  if (!parsed) co_return parsed.error();
  const target& t = *parsed;
  auto ex = co_await asio::this_coro::executor;

  asio::ip::tcp::resolver resolver(ex);
  asio::steady_timer timer(ex, until);
  auto resolved = co_await (resolver.async_resolve(t.host, t.port, use_nothrow) ||
                            timer.async_wait(use_nothrow));
  if (resolved.index() == 1)
    co_return failure::transient(shown + ": timed out resolving \"" + t.host + "\"");
  auto [resolve_ec, endpoints] = std::get<0>(resolved);
  if (resolve_ec)
    co_return failure::transient(shown + ": cannot resolve \"" + t.host +
                                 "\": " + resolve_ec.message());

  beast::tcp_stream tcp(ex);
  tcp.expires_at(until);
  auto [connect_ec, peer] = co_await tcp.async_connect(endpoints, use_nothrow);
  if (connect_ec)
    co_return failure::transient(
        network_error(shown, connect_ec, "timed out connecting", "cannot connect"));

  if (!t.tls) {
    auto out = co_await async_exchange(tcp, t, max_body_bytes, shown);
    boost::system::error_code ignored;
    tcp.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    co_return out;
  }

  std::string verify_problem;
  beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), impl_->tls);
  // SNI is for names only (RFC 6066); certificates for IP literals are
  // checked against their IP address entries.
  if (!t.ip_literal && !SSL_set_tlsext_host_name(stream.native_handle(), t.host.c_str()))
    co_return failure::permanent(shown + ": cannot set the TLS server name");
  stream.set_verify_callback(
      [&verify_problem, host = t.host](bool preverified, asio::ssl::verify_context& ctx) {
        if (!preverified) {
          int err = X509_STORE_CTX_get_error(ctx.native_handle());
          verify_problem = X509_verify_cert_error_string(err);
          return false;
        }
        bool matches = asio::ssl::host_name_verification(host)(preverified, ctx);
        if (!matches) verify_problem = "the certificate does not match \"" + host + "\"";
        return matches;
      });
  auto [handshake_ec] =
      co_await stream.async_handshake(asio::ssl::stream_base::client, use_nothrow);
  if (handshake_ec) {
    if (is_timeout(handshake_ec))
      co_return failure::transient(shown + ": timed out in the TLS handshake");
    co_return failure::permanent(
        shown + ": TLS handshake failed: " +
        (verify_problem.empty() ? handshake_ec.message() : verify_problem));
  }
  auto out = co_await async_exchange(stream, t, max_body_bytes, shown);
  // A polite close_notify, but never past the deadline and never an error:
  // the body is already complete.
  beast::get_lowest_layer(stream).expires_at(
      std::min(until, std::chrono::steady_clock::now() + std::chrono::seconds(1)));
  co_await stream.async_shutdown(use_nothrow);
  co_return out;
}

std::string redact_url(std::string_view text) {
  if (auto parsed = urls::parse_uri(text); parsed) {
    if (!parsed->has_userinfo()) return std::string(text);
    urls::url u = *parsed;
    u.remove_userinfo();
    return std::string(u.buffer());
  }
  // Not a URL: still never show what could be a user:password@ part.
  auto scheme_end = text.find("://");
  std::size_t authority = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  auto at = text.find('@', authority);
  auto slash = text.find('/', authority);
  if (at != std::string_view::npos && (slash == std::string_view::npos || at < slash))
    return std::string(text.substr(0, authority)) + std::string(text.substr(at + 1));
  return std::string(text);
}

}  // namespace gatherstats::http
