// The time-partitioned statistics table (docs/schema.md, "The partitioned
// layout"): created or converted by `gatherstatsd migrate --partitioned`,
// kept by the daemon (partitions created ahead, those past the retention
// dropped). What to do is decided by retention/partition_plan.hpp; this is
// the SQL.
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
#include <vector>

namespace gatherstats::pg {

// The table's partitions, oldest first; none (nullopt) when the table is
// not partitioned (or does not exist).
boost::asio::awaitable<outcome<std::optional<std::vector<retention::partition>>>>
async_list_partitions(connection& conn, const table_name& table, deadline until);

// What one upkeep pass of a partitioned table did: the partitions it
// created and dropped (each logged and counted by the caller), when the next
// pass is due, and the first problem, if any (the rest of the pass went on
// where it could; the next pass tries again).
struct partition_upkeep {
  std::vector<retention::partition> created;
  std::vector<retention::partition> dropped;
  std::chrono::milliseconds next_pass{3'600'000};
  std::optional<failure> problem;
};

// One upkeep pass over `partitions` (as async_list_partitions gave them):
// creates partitions ahead (CREATE TABLE, then ATTACH PARTITION: inserts
// go on) and drops those past `retention` (DETACH PARTITION CONCURRENTLY,
// then DROP TABLE: inserts go on). `conn` must be idle.
boost::asio::awaitable<partition_upkeep> async_keep_partitions(
    connection& conn, const table_name& table, const std::vector<retention::partition>& partitions,
    std::optional<std::chrono::milliseconds> retention, timestamp now, deadline until);

}  // namespace gatherstats::pg
