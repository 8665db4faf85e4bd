// Time partitions of the statistics table, as plain data (no I/O): where an
// interval's partition begins and ends, what it is called, and, from the
// partitions that exist, which to create ahead and which are past the
// retention (docs/schema.md, "The partitioned layout").
//
// Intervals are fixed lengths aligned to the Unix epoch in UTC: with 1d,
// partitions run from midnight UTC to midnight UTC.
#pragma once

#include "gatherstats/fetch_record.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gatherstats::retention {

using std::chrono::milliseconds;

// One partition of the table: rows with from <= fetched_at < to. No `from`:
// MINVALUE (a table converted to the first partition); no `to`: MAXVALUE.
struct partition {
  std::string name;  // unqualified: partitions live in the table's schema
  std::optional<timestamp> from, to;
  bool operator==(const partition&) const = default;
};

// [from, to): the interval of `interval` length that holds `t`.
struct range {
  timestamp from, to;
  bool operator==(const range&) const = default;
};
range interval_of(timestamp t, milliseconds interval);

// "<table>_p20261202" for whole days, "<table>_p20261202_0600" for whole
// minutes, "<table>_p20261202_060030" otherwise (the partition's start, UTC).
std::string partition_name(std::string_view table, timestamp from, milliseconds interval);

// How many intervals past the current one are created ahead.
inline constexpr int intervals_ahead = 2;

// The interval the table is partitioned by: the length of the partition with
// both bounds that starts last. None when there is no such partition.
std::optional<milliseconds> interval_of_partitions(const std::vector<partition>& existing);

// What one pass of upkeep does at `now`:
// - create: every interval from the one holding `now` through
//   `intervals_ahead` past it that no existing partition overlaps;
// - drop: with a retention, every partition whose upper bound is at or
//   before now - retention (all its rows are older), oldest first. A
//   partition without an upper bound is never dropped.
struct plan {
  std::vector<range> create;
  std::vector<partition> drop;
};
plan plan_upkeep(const std::vector<partition>& existing, milliseconds interval,
                 std::optional<milliseconds> retention, timestamp now);

// How often the upkeep runs: half an interval, at least 1 s, at most 1 h.
milliseconds upkeep_every(milliseconds interval);

}  // namespace gatherstats::retention
