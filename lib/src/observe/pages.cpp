#include "gatherstats/observe/pages.hpp"

namespace gatherstats::observe {
namespace {

constexpr const char* text = "text/plain; charset=utf-8";

// Whether the query holds the parameter `name` (with or without a value).
bool has_parameter(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    auto amp = query.find('&');
    auto part = query.substr(0, amp);
    if (part.substr(0, part.find('=')) == name) return true;
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return false;
}

page health(const std::vector<health_check>& checks, bool verbose, const std::string& what) {
  return {healthy(checks) ? 200u : 503u, text, render_health(checks, verbose, what)};
}

}  // namespace

page serve_page(std::string_view target, const status_source& status, timestamp now) {
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
  const bool verbose = has_parameter(query, "verbose");

  if (path == "/livez" || path == "/healthz") {
    // Answered on the event loop: that this runs is the check. A stuck loop
    // answers neither this nor the systemd watchdog.
    return health({{"event_loop", true, {}}}, verbose, "livez");
  }
  if (path == "/readyz") return health(readiness_checks(status()), verbose, "readyz");
  if (path == "/metrics")
    return {200, metrics_content_type, render_metrics(status(), read_process_status())};
  if (path == "/") return {200, "text/html; charset=utf-8", render_status_html(status(), now)};
  if (path == "/api/v1/status") return {200, "application/json", render_status_json(status(), now)};
  return {404, text, "not found: try / /metrics /livez /readyz /api/v1/status\n"};
}

}  // namespace gatherstats::observe
