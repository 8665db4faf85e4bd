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

// The other way round, in the largest unit that divides it: "30d", "36h",
// "90m", "45s", "250ms" (what parse_duration reads back).
std::string format_duration(std::chrono::milliseconds d);

}  // namespace gatherstats::config
