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

}  // namespace gatherstats::config

namespace gatherstats::config {

std::string format_duration(std::chrono::milliseconds d) {
  const auto ms = d.count();
  constexpr std::pair<long long, const char*> units[] = {
      {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1'000, "s"}};
  for (const auto& [size, name] : units)
    if (ms != 0 && ms % size == 0) return std::to_string(ms / size) + name;
  return std::to_string(ms) + "ms";
}

}  // namespace gatherstats::config
