// The time-partitioned statistics table (docs/schema.md, "The partitioned
// layout"): created or converted by `gatherstatsd migrate --partitioned`,
// kept by the daemon (partitions created ahead, those past the retention
// dropped). What to do is decided by retention/partition_plan.hpp; this is
// the SQL.
//
// No default partition is made: with one, PostgreSQL cannot detach a
// partition concurrently, and every new partition must be checked against
// its rows under a lock. A row that finds no partition (a fetch from further
// back or ahead than the partitions reach) is not refused for good: the
// commit path creates its partition (async_create_partition_for) and
// commits it again.
//
// Errors and threading: as for pg::connection.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/statistic_table.hpp"
#include "gatherstats/retention/partition_plan.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace gatherstats::pg {

// The table's partitions (the default partition, if an operator made one,
// left out), oldest first; none (nullopt) when the table is not
// partitioned (or does not exist).
boost::asio::awaitable<outcome<std::optional<std::vector<retention::partition>>>>
async_list_partitions(connection& conn, const table_name& table, deadline until);

// What one upkeep pass of a partitioned table did: the partitions it
// created and dropped (each logged and counted by the caller), when the next
// pass is due, and the first problem, if any (the rest of the pass went on
// where it could; the next pass tries again).
struct partition_upkeep {
  std::vector<retention::partition> created;
  std::vector<retention::partition> dropped;
  // A converted table's old unique key (in the plain column order), dropped
  // from its first partition once that partition's range has passed:
  // "partition.constraint".
  std::vector<std::string> retired_keys;
  std::chrono::milliseconds next_pass{3'600'000};
  std::optional<failure> problem;
};

// One upkeep pass (the partitions are read again from the catalog; the
// list passed in is the caller's view, unused): creates the partitions of
// the current interval and `retention::intervals_ahead` more (CREATE TABLE,
// then ATTACH PARTITION, which lets inserts go on), and drops those past
// `retention` (DETACH PARTITION CONCURRENTLY, then DROP TABLE: inserts go
// on; with a default partition, which forbids CONCURRENTLY, a plain DROP
// under a lock_timeout). The interval is that of the partitions
// (retention::interval_of_partitions). `conn` must be idle.
boost::asio::awaitable<partition_upkeep> async_keep_partitions(
    connection& conn, const table_name& table, const std::vector<retention::partition>& partitions,
    std::optional<std::chrono::milliseconds> retention, timestamp now, deadline until);

// Creates the partition that holds `t` unless one does: what the commit path
// does when PostgreSQL found no partition for a row. Returns the partition
// created, or none when one was there already (made meanwhile).
boost::asio::awaitable<outcome<std::optional<retention::partition>>> async_create_partition_for(
    connection& conn, const table_name& table, timestamp t, deadline until);

// Whether a failed commit failed for want of a partition (SQLSTATE 23514,
// "no partition of relation ... found for row").
bool no_partition_for_row(const failure& f);

// What `gatherstatsd migrate --partitioned` did.
struct partitioned_migration {
  bool created = false;                         // a new partitioned table
  bool converted = false;                       // a plain table became its first partition
  bool already = false;                         // it was partitioned already
  std::string first_partition;                  // converted: what the old table is now called
  std::optional<timestamp> first_partition_to;  // converted: its upper bound
  std::chrono::microseconds validate_time{0};   // converted: the CHECK's VALIDATE (no lock)
  std::chrono::microseconds index_time{
      0};                                  // converted: the unique index in the new order (no lock)
  std::chrono::microseconds lock_held{0};  // converted: the swap, under its lock
  std::vector<retention::partition> partitions_created;
};

// Makes `table` partitioned by range of fetched_at in `interval` steps:
// - missing: creates it (the columns of the plain layout and its unique key,
//   with the columns in the order (endpoint, fetched_at, key): a fetch's
//   rows side by side in the index; id from a sequence, as PostgreSQL 15 has
//   no identity on a partitioned table, and no primary key, which would have
//   to include fetched_at) with the partitions of the current interval and
//   those ahead;
// - plain: converts it, copying no row: a CHECK (fetched_at < bound) added
//   NOT VALID, validated (inserts go on), the unique index built in the new
//   column order (CREATE INDEX CONCURRENTLY: inserts go on) unless it is in
//   that order already (the old unique key then stays on the first
//   partition until its range has passed, when the upkeep drops it), then
//   one short transaction
//   renames the table to its first partition (FROM MINVALUE TO the bound,
//   at least one interval and an hour ahead), creates the partitioned table
//   under the old name with the same columns, privileges and id sequence
//   position, and attaches it (the CHECK spares ATTACH its scan, its unique
//   index serves the new table's). Refused, with the reason, when a view or
//   foreign key depends on the table (it would stay with the old table);
// - partitioned: creates the partitions due, changes nothing else.
// Then the fetch log is created if missing and the table checked, as by
// async_migrate, which the caller runs next.
boost::asio::awaitable<outcome<partitioned_migration>> async_migrate_partitioned(
    connection& conn, const table_name& table, std::chrono::milliseconds interval, deadline until);

}  // namespace gatherstats::pg
