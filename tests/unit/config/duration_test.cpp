#include "gatherstats/config/duration.hpp"

#include <catch2/catch.hpp>

using gatherstats::config::parse_duration;
using namespace std::chrono_literals;

TEST_CASE("durations are a positive whole number and a unit", "[config][duration]") {
  CHECK(parse_duration("250ms") == 250ms);
  CHECK(parse_duration("10s") == 10s);
  CHECK(parse_duration("5m") == 5min);
  CHECK(parse_duration("1h") == 1h);
  CHECK(parse_duration("24h") == 24h);
  CHECK(parse_duration("1d") == 24h);
  CHECK(parse_duration("30d") == 30 * 24h);
}

TEST_CASE("anything else is not a duration", "[config][duration]") {
  for (const char* bad : {"", "10", "s", "0s", "-1s", "1.5s", "10 s", "10sec", "1D", "1.5d", "10S",
                          " 10s", "99999999999999999999h", "9223372036854775807h", "106751992d"}) {
    INFO(bad);
    CHECK_FALSE(parse_duration(bad).has_value());
  }
}

TEST_CASE("a duration is written in the largest unit that divides it, and reads back",
          "[config][duration]") {
  using gatherstats::config::format_duration;
  CHECK(format_duration(30 * 24h) == "30d");
  CHECK(format_duration(36h) == "36h");
  CHECK(format_duration(90min) == "90m");
  CHECK(format_duration(45s) == "45s");
  CHECK(format_duration(250ms) == "250ms");
  CHECK(format_duration(1500ms) == "1500ms");
  for (std::chrono::milliseconds d : {1ms, 1000ms, 61000ms, 90'000'000ms, 400 * 86'400'000ms})
    CHECK(parse_duration(format_duration(d)) == d);
}
