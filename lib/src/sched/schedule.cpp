#include "gatherstats/sched/schedule.hpp"

#include <algorithm>

namespace gatherstats::sched {

std::uint64_t stable_hash(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

milliseconds spread_offset(std::string_view name, milliseconds interval) {
  const std::uint64_t h = stable_hash(name);
  auto span = static_cast<std::uint64_t>(std::max<std::int64_t>(interval.count(), 1));
  return milliseconds(static_cast<std::int64_t>(h % span));
}

milliseconds delay_to_aligned(std::chrono::system_clock::time_point now, milliseconds interval) {
  auto since_epoch = std::chrono::duration_cast<milliseconds>(now.time_since_epoch());
  auto into = since_epoch % interval;
  return into == milliseconds::zero() ? milliseconds::zero() : interval - into;
}

endpoint_schedule::next_tick endpoint_schedule::after(std::uint64_t done, steady_time now) const {
  // The latest tick whose time has come runs now (late); older ones that
  // also came while tick `done` ran are skipped.
  std::uint64_t latest_due = 0;
  if (now > first_)
    latest_due = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - first_) / interval_);
  std::uint64_t next = std::max(done + 1, latest_due);
  return {next, next - done - 1};
}

milliseconds backoff::ceiling(unsigned attempt) const {
  milliseconds c = base_;
  for (unsigned i = 1; i < attempt && c < cap_; ++i) c *= 2;
  return std::min(c, cap_);
}

}  // namespace gatherstats::sched
