// The daemon's one HTTP listener (for /metrics, /livez, /readyz, the status
// API): HTTP/1.1 with Beast on the daemon's own event loop, one coroutine per
// connection, no threads. What each request gets is decided by a plain
// callback; this layer only carries bytes, enforces limits and checks
// credentials.
//
// Bounded so that it cannot hurt fetching: at most `max_connections` at once
// (one more is accepted and closed at once, with a best-effort 503 on plain
// HTTP, and counted); a request line plus headers over `max_request_bytes`
// gets 431; the whole request (and the TLS handshake of a new connection)
// must arrive within `request_timeout`; an idle keep-alive connection is
// closed after `idle_timeout`; a response must be written within
// `write_timeout`. Only GET and HEAD, without a body (405, 413 otherwise).
//
// TLS (TLS 1.2 or later) when `cert_file` and `key_file` are set; with
// `client_ca_file` a client certificate from that CA is required. Basic
// authentication, as the Prometheus exporter-toolkit does it, when
// `basic_auth_users` is not empty: bcrypt hashes checked with libcrypt on the
// `blocking` executor (one check at a time), successful checks cached by user
// and SHA-256 of the password. Passwords are never logged or echoed.
//
// Errors: `create` and `reconfigure` return a failure naming the address or
// the file (they bind and load files synchronously: call them at start-up or
// on SIGHUP, not per request). Everything that goes wrong with one
// connection only ends that connection, and is counted in `stats()`.
//
// Threading: every member function must be called on the executor `ex`
// given to `create`; the request handler is called there too. After stop(),
// or once the server is destroyed, the handler is never called again.
#pragma once

#include "gatherstats/error.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace gatherstats::observe {

struct server_request {
  std::string method;  // "GET" or "HEAD"
  std::string target;  // path and query, as sent
};

struct server_response {
  unsigned status = 200;
  std::string content_type;  // empty: text/plain; charset=utf-8
  std::string body;          // for HEAD, only its length is sent
  std::vector<std::pair<std::string, std::string>> headers;
};

// Called on the event loop for each authenticated GET or HEAD request; it
// must not block. An exception becomes a 500.
using request_handler = std::function<server_response(const server_request&)>;

struct server_settings {
  std::string listen;               // "127.0.0.1:9187", "[::1]:9187", ":9187" (every address)
  std::string cert_file, key_file;  // TLS when set (both required)
  std::string client_ca_file;       // with TLS: require and verify client certificates
  std::vector<std::pair<std::string, std::string>> basic_auth_users;  // user -> bcrypt hash
  std::size_t max_connections = 64;
  std::size_t max_request_bytes = 8 * 1024;  // request line + headers
  // To read one whole request: from accept (TLS handshake included) or,
  // on a kept-alive connection, from its first byte.
  std::chrono::milliseconds request_timeout{10'000};
  std::chrono::milliseconds idle_timeout{30'000};  // keep-alive, between requests
  std::chrono::milliseconds write_timeout{10'000};
  bool operator==(const server_settings&) const = default;
};

// Since create(), across reconfigurations.
struct server_stats {
  std::uint64_t accepted = 0;            // connections served
  std::uint64_t refused = 0;             // closed at once: max_connections reached
  std::uint64_t requests = 0;            // handed to the handler
  std::uint64_t rejected = 0;            // answered 400, 405, 413 or 431 by the server
  std::uint64_t unauthorized = 0;        // answered 401
  std::uint64_t timed_out = 0;           // closed: request, idle or write timeout
  std::uint64_t handshake_failures = 0;  // TLS handshakes that failed (or timed out)
};

class http_server {
 public:
  // Binds (listen(2) included) and loads the TLS files; nothing is accepted
  // before start(). "cannot listen on 127.0.0.1:9187: Address already in
  // use" and the like. `blocking` runs the bcrypt checks.
  static outcome<http_server> create(boost::asio::any_io_executor ex,
                                     boost::asio::any_io_executor blocking, server_settings s,
                                     request_handler h);

  http_server(http_server&&) noexcept;
  http_server& operator=(http_server&&) noexcept;
  ~http_server();  // stop()

  void start();
  // Closes the acceptor and every connection; idempotent.
  void stop();

  // New settings (SIGHUP). Rebinds only when `listen` changed; on any error
  // (cannot bind, cannot load a TLS file, a bad hash) returns it and keeps
  // every old setting. Connections already open keep the TLS context they
  // started with; everything else applies at once.
  outcome<void> reconfigure(server_settings s);

  std::string local_address() const;  // "127.0.0.1:40123", "[::1]:9187"
  std::size_t connections() const;    // open now
  server_stats stats() const;
  const server_settings& settings() const;

  struct impl;  // opaque; public so that the connection coroutines can name it

 private:
  explicit http_server(std::shared_ptr<impl> p);
  std::shared_ptr<impl> impl_;
};

}  // namespace gatherstats::observe
