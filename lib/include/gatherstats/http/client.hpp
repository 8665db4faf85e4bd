// An asynchronous HTTP(S) GET client for statistics endpoints (Beast).
//
// One request reads top to bottom: resolve (Asio's asynchronous resolver),
// connect, TLS handshake (SNI, peer and host name verified against the
// system trust store or a given CA file, optionally with a client
// certificate), write, read the whole body under a size limit. Responses
// compressed with gzip or deflate are inflated as they arrive, and the limit
// applies to the decompressed body. Up to `max_redirects` redirects are
// followed. One deadline, computed by the caller, bounds the whole exchange,
// redirects included.
//
// Keep-alive: a client keeps at most one idle connection, to the origin
// (scheme, host, port) of its last request, and reuses it for the next
// request to that origin when the server allowed it. A reused connection
// that turns out to have been closed while idle is replaced once by a fresh
// one, within the same deadline.
//
// Descriptors: a client holds at most one socket at a time, counted in the
// connection budget of its event loop (connection_budget.hpp); its idle
// connection may be closed by another client that needs the room. A socket
// that neither the budget nor the system will give fails the request with
// "too many open files (limit N): raise LimitNOFILE in the unit or lower
// max_concurrent_fetches" (transient), never a bare "Operation canceled".
//
// Errors: a status other than 2xx, a body over the limit, a refused or timed
// out connection or a TLS failure is a `failure` whose message names the URL
// as redact_url() shows it (no user:password, no secret-looking query value;
// see redact.hpp) and never the Authorization value;
// timeouts, connection errors, 429 and 5xx are transient, the rest
// permanent. `failure.http_status` holds the status of a non-2xx response.
//
// Threading: a client belongs to one endpoint on one executor and serves
// one request at a time (the idle connection is not guarded by a lock): do
// not start a second async_get before the first has finished. Cancellation
// is by the deadline only.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/http/redact.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace gatherstats::http {

using deadline = std::chrono::steady_clock::time_point;

struct tls_settings {
  std::string ca_file;    // empty: the system trust store
  std::string cert_file;  // client certificate chain (PEM); empty: none
  std::string key_file;   // its private key (PEM); required with cert_file
  // No verification of the server at all (neither chain nor name). The
  // caller is expected to log a warning when it sets this.
  bool insecure_skip_verify = false;
};

inline constexpr std::size_t default_max_body_bytes = 16 * 1024 * 1024;

struct request {
  std::string url;
  // The URL as messages show it, when the caller has it already (it is the
  // same for every fetch of an endpoint); empty: redact_url(url).
  std::string shown_url;
  std::vector<std::pair<std::string, std::string>> headers;  // sent as given
  // The full Authorization header value ("Bearer ...", "Basic ..."); empty:
  // none. A secret: it never appears in any message.
  std::string authorization;
  std::size_t max_body_bytes = default_max_body_bytes;  // after decompression
  unsigned max_redirects = 5;
  // When the caller expects its next request (the endpoint's next tick):
  // the connection kept alive for it is closed late, if another socket
  // needs its room (connection_budget.hpp). max(): not known, or never.
  std::chrono::steady_clock::time_point next_use = std::chrono::steady_clock::time_point::max();
};

struct response {
  unsigned status = 0;
  std::string body;       // decompressed
  timestamp received_at;  // when the last byte of the body arrived
  std::string final_url;  // after redirects, as fetched (pass it through
                          // redact_url before showing it)
};

class client {
 public:
  // Fails when the CA file or the client certificate or key cannot be loaded
  // (reads files: call it at start-up, not on a busy event loop).
  static outcome<client> create(const tls_settings& tls);

  boost::asio::awaitable<outcome<response>> async_get(request req, deadline until);
  // A plain GET of `url` with the default headers.
  boost::asio::awaitable<outcome<response>> async_get(std::string url, std::size_t max_body_bytes,
                                                      deadline until);

 private:
  struct impl;
  explicit client(std::shared_ptr<impl> p) : impl_(std::move(p)) {}
  std::shared_ptr<impl> impl_;
};

}  // namespace gatherstats::http
