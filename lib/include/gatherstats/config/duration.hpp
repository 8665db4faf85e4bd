// Durations as operators write them: "250ms", "10s", "5m", "1h", "30d". Pure.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace gatherstats::config {

// A positive whole number followed by ms, s, m, h or d (24 h); nullopt for anything
// else (no unit, zero, negative, fractional, overflow).
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace gatherstats::config

namespace gatherstats::config {

// The duration in its largest whole unit, as parse_duration reads it back:
// "1d", "6h", "90s", "250ms".
std::string format_duration(std::chrono::milliseconds d);

}  // namespace gatherstats::config
