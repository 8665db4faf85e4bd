// An asynchronous HTTP(S) GET client for statistics endpoints (Beast).
//
// One request reads top to bottom: resolve (Asio's asynchronous resolver),
// connect, TLS handshake (SNI, peer and host name verified against the
// system trust store or a given CA file), write, read the whole body under a
// size limit, shut down. One deadline, computed by the caller, bounds the
// whole exchange.
//
// Errors: a status other than 2xx, a body over the limit, a refused or timed
// out connection or a TLS failure is a `failure` whose message names the URL
// (without any user:password part); timeouts, refused connections, 429 and
// 5xx are transient, the rest permanent.
//
// Threading: a client may be shared by coroutines on one executor.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace gatherstats::http {

using deadline = std::chrono::steady_clock::time_point;

struct tls_settings {
  std::string ca_file;  // empty: the system trust store
};

struct response {
  unsigned status = 0;
  std::string body;
  timestamp received_at;  // when the last byte of the body arrived
};

class client {
 public:
  // Fails when the CA file cannot be loaded.
  static outcome<client> create(const tls_settings& tls);

  boost::asio::awaitable<outcome<response>> async_get(std::string url, std::size_t max_body_bytes,
                                                      deadline until);

 private:
  struct impl;
  explicit client(std::shared_ptr<impl> p) : impl_(std::move(p)) {}
  std::shared_ptr<impl> impl_;
};

// The URL as it may appear in logs and messages: any user:password removed.
std::string redact_url(std::string_view url);

}  // namespace gatherstats::http
