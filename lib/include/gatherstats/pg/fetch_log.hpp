// The fetch log: `gatherstats_fetch`, one row per fetch outcome (failures
// included), and the view `gatherstats_endpoint_health` over it, both in the
// schema of the statistics table (docs/schema.md).
//
// A successful fetch's log row is committed in the same transaction as its
// statistics (statistic_table.hpp); a failed fetch has only its log row.
// The fence: the log is unique on (endpoint_name, tick), and a fetch's log
// row claims its tick. The insert stores the row when the tick has none,
// in a cluster replaces a failure with a success, and otherwise does
// nothing; the
// statistics of the fetch are stored only when the claim won (same
// transaction). So a tick is stored at most once, whichever daemons fetched
// it (docs/cluster.md), and a fetch committed twice is stored once.
// Old rows are deleted in small batches (async_prune_fetch_log).
//
// The fetch log is ours, created beside the statistics table by `migrate`;
// a database migrated before it existed goes on without one (the pool warns
// once, see pool.hpp).
//
// Errors and threading: as for pg::connection.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/statistic_table.hpp"

#include <boost/asio/awaitable.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace gatherstats::pg {

inline constexpr std::string_view fetch_log_name = "gatherstats_fetch";
inline constexpr std::string_view endpoint_health_name = "gatherstats_endpoint_health";

// The fetch log and the view beside `statistics`: the same schema, or the
// search_path when the statistics table is not schema-qualified.
table_name fetch_log_table(const table_name& statistics);
table_name endpoint_health_view(const table_name& statistics);

// Creates the fetch log, its indexes and the view if they are missing
// (the view is replaced, so a newer definition takes its place). Meant to
// run inside migrate's transaction. Returns true when it created the table.
boost::asio::awaitable<outcome<bool>> async_create_fetch_log(connection& conn,
                                                             const table_name& statistics,
                                                             deadline until);

// Whether the fetch log beside `statistics` can take our rows: an empty
// string when it can, otherwise what is wrong (it does not exist, a column
// or the unique key is missing). A failure: the check itself failed.
boost::asio::awaitable<outcome<std::string>> async_check_fetch_log(connection& conn,
                                                                   const table_name& statistics,
                                                                   deadline until);

// Succeeds when the connection's role may UPDATE the fetch log, which a
// cluster member needs (commit_tables::replace_failures); the failure
// says which GRANT is missing.
boost::asio::awaitable<outcome<void>> async_may_update(connection& conn,
                                                       const table_name& fetch_log, deadline until);

// Deletes up to `batch` rows fetched longer than `retention` ago, in one
// short transaction; returns how many went. Call again while it returns
// `batch`.
boost::asio::awaitable<outcome<std::size_t>> async_prune_fetch_log(
    connection& conn, const table_name& fetch_log, std::chrono::milliseconds retention,
    std::size_t batch, deadline until);

// --- the row of one fetch (used by the commit paths) -------------------------

// The values of a record's log row, as text parameters, in the order of
// fetch_log_columns. What PostgreSQL could refuse is made safe first, so
// that a log row never costs a fetch its statistics: the error becomes
// valid UTF-8 without NUL and at most max_error_chars characters; numbers
// are clamped to their columns. A record without a tick (spooled by an
// older version) takes its fetched_at as its tick.
inline constexpr std::size_t fetch_log_columns = 11;
inline constexpr std::size_t max_error_chars = 2000;
using fetch_log_row = std::array<std::string, fetch_log_columns>;
fetch_log_row make_fetch_log_row(const fetch_record& record);

// INSERT INTO log (...) VALUES ($first, ..., $first+10) ON CONFLICT
// (endpoint_name, tick) DO NOTHING RETURNING 1: the row of
// make_fetch_log_row, claiming its tick. One row affected (and returned)
// when the claim won, none when the tick was taken. `replace_failure`: DO
// UPDATE of a failure's row by a success instead (which needs the UPDATE
// privilege even when nothing is updated).
std::string fetch_log_insert_sql(const table_name& fetch_log, int first_parameter,
                                 bool replace_failure);

}  // namespace gatherstats::pg
