#include "log_sink.hpp"

#include <unistd.h>

namespace gatherstatsd {

using gatherstats::log::event;
using gatherstats::log::severity;

namespace {
const char* level_name(severity s) {
  switch (s) {
    case severity::debug:
      return "debug";
    case severity::info:
      return "info";
    case severity::notice:
      return "notice";
    case severity::warning:
      return "warning";
    case severity::error:
      return "error";
  }
  return "info";
}
}  // namespace

std::string format_event(const event& e) {
  std::string line = level_name(e.level);
  line += ": ";
  line += gatherstats::log::to_string(e.kind);
  if (!e.endpoint.empty()) line += " endpoint=" + e.endpoint;
  if (e.rows) line += " rows=" + std::to_string(e.rows);
  if (e.duration.count()) line += " duration_ms=" + std::to_string(e.duration.count());
  if (e.http_status) line += " http_status=" + std::to_string(e.http_status);
  if (!e.error.empty()) line += ": " + e.error;
  if (!e.detail.empty()) line += " (" + e.detail + ")";
  return line;
}

gatherstats::log::event_sink stderr_sink(severity min_level) {
  return [min_level](const event& e) {
    if (e.level < min_level) return;
    std::string line = "gatherstatsd: " + format_event(e) + "\n";
    // One write per line, so lines from a crash or a pipe never interleave.
    [[maybe_unused]] auto n = ::write(2, line.data(), line.size());
  };
}

}  // namespace gatherstatsd
