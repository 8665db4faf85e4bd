#include "gatherstats/config/duration.hpp"

#include <charconv>
#include <cstdint>
#include <limits>

namespace gatherstats::config {

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || end == text.data()) return std::nullopt;
  std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  std::uint64_t scale = 0;
  if (unit == "ms")
    scale = 1;
  else if (unit == "s")
    scale = 1000;
  else if (unit == "m")
    scale = 60'000;
  else if (unit == "h")
    scale = 3'600'000;
  else if (unit == "d")
    scale = 86'400'000;
  if (scale == 0 || n == 0 || n > std::numeric_limits<std::int64_t>::max() / scale / 1000)
    return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(n * scale));
}

std::string format_duration(std::chrono::milliseconds d) {
  auto n = d.count();
  if (n != 0 && n % 86'400'000 == 0) return std::to_string(n / 86'400'000) + "d";
  if (n != 0 && n % 3'600'000 == 0) return std::to_string(n / 3'600'000) + "h";
  if (n != 0 && n % 60'000 == 0) return std::to_string(n / 60'000) + "m";
  if (n != 0 && n % 1000 == 0) return std::to_string(n / 1000) + "s";
  return std::to_string(n) + "ms";
}

}  // namespace gatherstats::config
