// Scheduling arithmetic, pure: when an endpoint's ticks fall, where its first
// tick goes, and how long to back off before a retry. No clocks are read
// here: callers pass the current time in, so tests can use any time they like.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string_view>

namespace gatherstats::sched {

using std::chrono::milliseconds;
using steady_time = std::chrono::steady_clock::time_point;

// FNV-1a of `s`: the same on every run, build and machine (std::hash is
// not), so that every daemon derives the same numbers from the same names.
std::uint64_t stable_hash(std::string_view s);

// Where in [0, interval) an endpoint's ticks fall when it is not aligned: a
// stable hash of its name, so endpoints spread out and a restart keeps each
// one's phase.
milliseconds spread_offset(std::string_view name, milliseconds interval);

// How long from `now` until the next wall-clock multiple of `interval`
// (counted from the Unix epoch, UTC): a 1h interval fires on the hour.
milliseconds delay_to_aligned(std::chrono::system_clock::time_point now, milliseconds interval);

// Fixed-rate ticks: tick n is due at first + n * interval, however late the
// previous ones ran, so the schedule never drifts.
class endpoint_schedule {
 public:
  endpoint_schedule(steady_time first, milliseconds interval)
      : first_(first), interval_(interval) {}

  steady_time due(std::uint64_t n) const { return first_ + n * interval_; }
  milliseconds interval() const { return interval_; }

  struct next_tick {
    std::uint64_t index;   // the tick to run next
    std::uint64_t missed;  // ticks after `done` that were already past at `now`
  };
  // The tick to run after tick `done`, at `now`: the next one, or, when
  // several came while tick `done` still ran, the latest of them (run late),
  // with how many older ones were skipped.
  next_tick after(std::uint64_t done, steady_time now) const;

 private:
  steady_time first_;
  milliseconds interval_;
};

// Exponential backoff with full jitter: the delay before retry `attempt`
// (1, 2, ...) is uniform in [0, min(cap, base * 2^(attempt-1))].
class backoff {
 public:
  backoff(milliseconds base, milliseconds cap) : base_(base), cap_(cap) {}

  milliseconds ceiling(unsigned attempt) const;
  template <class Random>
  milliseconds delay(unsigned attempt, Random& random) const {
    std::uniform_int_distribution<std::int64_t> pick(0, ceiling(attempt).count());
    return milliseconds(pick(random));
  }

 private:
  milliseconds base_;
  milliseconds cap_;
};

// The deadline of an attempt starting at `at`: its timeout, but never past
// the next tick, so that two fetches of one endpoint never overlap.
inline steady_time attempt_deadline(steady_time at, milliseconds timeout, steady_time next_tick) {
  return std::min(at + timeout, next_tick);
}

}  // namespace gatherstats::sched
