// What the listener serves (docs/operations.md): the path of a request
// decides the page; pages are built from a status snapshot taken only when
// a page needs it. Pure: the listener (observe/http_server.hpp) does the I/O.
//
//   /metrics              Prometheus text format 0.0.4
//   /livez, /healthz      200 while the event loop answers (it runs this code)
//   /readyz               200 when fetched results have somewhere durable to go
//   /                     the status page (HTML)
//   /api/v1/status        the status page's JSON twin
//
// /livez and /readyz take `?verbose` (any value) for one line per check.
#pragma once

#include "gatherstats/observe/status.hpp"

#include <functional>
#include <string>
#include <string_view>

namespace gatherstats::observe {

struct page {
  unsigned status = 200;
  std::string content_type;
  std::string body;
};

using status_source = std::function<daemon_status()>;

// `target` is the request target as sent (path and query).
page serve_page(std::string_view target, const status_source& status, timestamp now);

}  // namespace gatherstats::observe
