// Durations as operators write them: "250ms", "10s", "5m", "1h", "30d". Pure.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace gatherstats::config {

// A positive whole number followed by ms, s, m, h or d (24 h); nullopt for anything
// else (no unit, zero, negative, fractional, overflow).
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace gatherstats::config
