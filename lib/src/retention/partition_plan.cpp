#include "gatherstats/retention/partition_plan.hpp"

#include <algorithm>
#include <cstdio>

namespace gatherstats::retention {

using std::chrono::duration_cast;
using std::chrono::microseconds;

range interval_of(timestamp t, milliseconds interval) {
  const auto step = duration_cast<microseconds>(interval).count();
  auto since_epoch = t.time_since_epoch().count();
  auto start = since_epoch / step * step;
  if (start > since_epoch) start -= step;  // before 1970: round down, not toward zero
  return {timestamp(microseconds(start)), timestamp(microseconds(start + step))};
}

std::string partition_name(std::string_view table, timestamp from, milliseconds interval) {
  const auto day = std::chrono::floor<std::chrono::days>(from);
  const std::chrono::year_month_day ymd(day);
  const std::chrono::hh_mm_ss hms(std::chrono::floor<std::chrono::seconds>(from - day));
  char buf[32];
  std::snprintf(buf, sizeof buf, "_p%04d%02u%02u", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
  std::string name = std::string(table) + buf;
  if (interval % std::chrono::days(1) == milliseconds(0)) return name;
  if (interval % std::chrono::minutes(1) == milliseconds(0)) {
    std::snprintf(buf, sizeof buf, "_%02ld%02ld", static_cast<long>(hms.hours().count()),
                  static_cast<long>(hms.minutes().count()));
  } else {
    std::snprintf(buf, sizeof buf, "_%02ld%02ld%02ld", static_cast<long>(hms.hours().count()),
                  static_cast<long>(hms.minutes().count()),
                  static_cast<long>(hms.seconds().count()));
  }
  return name + buf;
}

std::optional<milliseconds> interval_of_partitions(const std::vector<partition>& existing) {
  const partition* last = nullptr;
  for (const auto& p : existing)
    if (p.from && p.to && (!last || *p.from > *last->from)) last = &p;
  if (!last) return std::nullopt;
  return duration_cast<milliseconds>(*last->to - *last->from);
}

namespace {
bool overlaps(const partition& p, const range& r) {
  return (!p.from || *p.from < r.to) && (!p.to || r.from < *p.to);
}
}  // namespace

plan plan_upkeep(const std::vector<partition>& existing, milliseconds interval,
                 std::optional<milliseconds> retention, timestamp now) {
  plan out;
  auto r = interval_of(now, interval);
  for (int i = 0; i <= intervals_ahead; ++i, r = {r.to, r.to + (r.to - r.from)}) {
    if (std::none_of(existing.begin(), existing.end(),
                     [&](const partition& p) { return overlaps(p, r); }))
      out.create.push_back(r);
  }
  if (retention) {
    const timestamp cutoff = now - duration_cast<microseconds>(*retention);
    for (const auto& p : existing)
      if (p.to && *p.to <= cutoff) out.drop.push_back(p);
    std::sort(out.drop.begin(), out.drop.end(),
              [](const partition& a, const partition& b) { return *a.to < *b.to; });
  }
  return out;
}

milliseconds upkeep_every(milliseconds interval) {
  return std::clamp(interval / 2, milliseconds(1'000), milliseconds(3'600'000));
}

}  // namespace gatherstats::retention
