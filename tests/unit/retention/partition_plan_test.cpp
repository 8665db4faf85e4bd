#include "gatherstats/retention/partition_plan.hpp"

#include <catch2/catch.hpp>

using namespace gatherstats;
using namespace gatherstats::retention;
using namespace std::chrono;

namespace {

// 2026-12-02 06:30:15.5 UTC
timestamp at(int day, int hour, int minute = 0, int second = 0, int ms = 0) {
  return timestamp(sys_days(year(2026) / December / day) + hours(hour) + minutes(minute) +
                   seconds(second) + milliseconds(ms));
}

constexpr milliseconds day_ms = duration_cast<milliseconds>(days(1));

partition daily(int day) {
  return {partition_name("gatherstats_statistic", at(day, 0), day_ms), at(day, 0), at(day + 1, 0)};
}

}  // namespace

TEST_CASE("an interval's bounds are aligned to the Unix epoch in UTC", "[retention]") {
  CHECK(interval_of(at(2, 6, 30, 15, 500), day_ms) == range{at(2, 0), at(3, 0)});
  CHECK(interval_of(at(2, 6, 30, 15, 500), hours(6)) == range{at(2, 6), at(2, 12)});
  CHECK(interval_of(at(2, 6, 30, 15, 500), seconds(1)) ==
        range{at(2, 6, 30, 15), at(2, 6, 30, 16)});
  // A bound belongs to the interval it starts.
  CHECK(interval_of(at(3, 0), day_ms) == range{at(3, 0), at(4, 0)});
  // Before 1970 too (rounded down, not toward zero).
  const timestamp before = timestamp(-microseconds(1));
  CHECK(interval_of(before, seconds(1)) ==
        range{timestamp(-microseconds(1'000'000)), timestamp(microseconds(0))});
}

TEST_CASE("partition names carry the start in as much detail as the interval needs",
          "[retention]") {
  CHECK(partition_name("gatherstats_statistic", at(2, 0), day_ms) ==
        "gatherstats_statistic_p20261202");
  CHECK(partition_name("t", at(2, 6), hours(6)) == "t_p20261202_0600");
  CHECK(partition_name("t", at(2, 6, 30, 15), seconds(1)) == "t_p20261202_063015");
  CHECK(partition_name("t", at(2, 0), duration_cast<milliseconds>(days(7))) == "t_p20261202");
}

TEST_CASE("the interval is that of the latest partition with both bounds", "[retention]") {
  CHECK_FALSE(interval_of_partitions({}).has_value());
  // A converted table's first partition alone: no interval yet.
  CHECK_FALSE(interval_of_partitions({{"t_p00000000", std::nullopt, at(3, 0)}}).has_value());
  CHECK(interval_of_partitions({{"t_p00000000", std::nullopt, at(3, 0)},
                                {"t_p20261203_0000", at(3, 0), at(3, 6)}}) == hours(6));
  // The interval changed by hand: the newest partition says what it is now.
  CHECK(interval_of_partitions({daily(1), {"t_p20261202_0000", at(2, 0), at(2, 1)}}) == hours(1));
}

TEST_CASE("upkeep creates the current interval and two ahead that no partition covers",
          "[retention]") {
  const auto now = at(2, 6);
  auto fresh = plan_upkeep({}, day_ms, std::nullopt, now);
  CHECK(fresh.create ==
        std::vector<range>{{at(2, 0), at(3, 0)}, {at(3, 0), at(4, 0)}, {at(4, 0), at(5, 0)}});
  CHECK(fresh.drop.empty());

  auto some = plan_upkeep({daily(2), daily(3)}, day_ms, std::nullopt, now);
  CHECK(some.create == std::vector<range>{{at(4, 0), at(5, 0)}});

  // A converted table's first partition covers everything before its bound.
  auto converted =
      plan_upkeep({{"t_p00000000", std::nullopt, at(3, 0)}, daily(3)}, day_ms, std::nullopt, now);
  CHECK(converted.create == std::vector<range>{{at(4, 0), at(5, 0)}});
  // Nothing to do once everything due is there.
  CHECK(plan_upkeep({daily(2), daily(3), daily(4)}, day_ms, std::nullopt, now).create.empty());
}

TEST_CASE("upkeep drops the partitions whose every row is past the retention, oldest first",
          "[retention]") {
  const auto now = at(10, 6);
  std::vector<partition> parts{daily(8), daily(6), daily(7), daily(9), daily(10)};
  // Retention 3 days: the cutoff is the 7th at 06:00; the 6th ends at the
  // 7th 00:00 (gone), the 7th ends on the 8th (kept: some rows are younger).
  auto p = plan_upkeep(parts, day_ms, duration_cast<milliseconds>(days(3)), now);
  CHECK(p.drop == std::vector<partition>{daily(6)});
  // A partition ending exactly at the cutoff holds nothing younger.
  auto edge = plan_upkeep(parts, day_ms, duration_cast<milliseconds>(days(3) + hours(6)), now);
  CHECK(edge.drop == std::vector<partition>{daily(6)});
  auto more = plan_upkeep(parts, day_ms, duration_cast<milliseconds>(days(1)), now);
  CHECK(more.drop == std::vector<partition>{daily(6), daily(7), daily(8)});
  // Without a retention nothing goes; the converted first partition goes
  // like any other once its bound is past; one without an upper bound never.
  CHECK(plan_upkeep(parts, day_ms, std::nullopt, now).drop.empty());
  partition first{"t_p00000000", std::nullopt, at(6, 0)};
  partition open{"t_open", at(20, 0), std::nullopt};
  auto all = plan_upkeep({first, open}, day_ms, duration_cast<milliseconds>(days(1)), now);
  CHECK(all.drop == std::vector<partition>{first});
}

TEST_CASE("upkeep runs every half interval, between 1 s and 1 h", "[retention]") {
  CHECK(upkeep_every(day_ms) == hours(1));
  CHECK(upkeep_every(minutes(10)) == minutes(5));
  CHECK(upkeep_every(seconds(1)) == seconds(1));
}
