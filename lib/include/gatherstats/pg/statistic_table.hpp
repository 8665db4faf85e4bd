// The statistics table: its name, its schema (create or check), and the
// atomic, idempotent commit of fetches.
//
// The table is the original tool's `gatherstats_statistic` (docs/schema.md):
// a table the original created is used as it is. What we require of any
// table: the columns endpoint, key (text types), numeric_value (double
// precision), fetched_at (timestamptz), a unique constraint or index on
// exactly (endpoint, key, fetched_at), and no other NOT NULL column without a
// default.
//
// Every fetch is committed in a transaction of its own, so readers never see
// part of a fetch, and a repeated commit of the same fetch (same endpoint,
// fetched_at and keys) stores nothing new and is not an error: that is what
// makes retrying after a lost connection safe. Rows travel in PostgreSQL's
// binary format (no quoting or escaping of keys; doubles exact).
//
// Errors and threading: as for pg::connection.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/pg/connection.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gatherstats::pg {

inline constexpr std::string_view default_table = "gatherstats_statistic";

// PostgreSQL truncates identifiers longer than this many bytes.
inline constexpr std::size_t max_identifier_bytes = 63;
// Serialises concurrent `migrate` runs, as a transaction-level advisory
// lock (any constant shared by all of them).
inline constexpr std::string_view migrate_lock_key = "7366537716386762068";

// "name" with any '"' doubled: an identifier for SQL text.
std::string quote_identifier(std::string_view id);

// SQL condition: the pg_index row `index` (an alias) is a key on exactly
// the columns endpoint, key and fetched_at, in any order, with no predicate
// and no expression: the unique key every commit relies on.
std::string is_statistics_key(std::string_view index);

// A table name, optionally schema-qualified ("stats.gatherstats_statistic").
class table_name {
 public:
  static outcome<table_name> parse(std::string_view text);
  const std::string& schema() const { return schema_; }  // empty: search_path
  const std::string& name() const { return name_; }
  std::string quoted() const;   // "schema"."name", for SQL text
  std::string display() const;  // schema.name, for messages
  // The table `name` in the same schema (or the search_path, like this one).
  table_name beside(std::string_view name) const;

 private:
  std::string schema_, name_;
};

// Where a commit writes: the statistics table and, when in use, the fetch
// log beside it (fetch_log.hpp). With a fetch log, every record also gets
// its log row, in the same transaction as its statistics; a record without
// rows (a failed fetch) gets only its log row.
struct commit_tables {
  table_name statistics;
  std::optional<table_name> fetch_log;
  // A success claims a tick whose log row is a failure (another member's:
  // a cluster, docs/cluster.md). Needs UPDATE on the fetch log, which a
  // daemon alone is not asked for: alone, a failure's row keeps its tick.
  bool replace_failures = false;
};

// An index of the statistics table that repeats the unique index on
// (endpoint, key, fetched_at): every query it could serve, that index's
// leading columns serve as well, so it only costs every insert an update.
// The original's Django migration made two (docs/migrating.md).
struct redundant_index {
  std::string name;                  // schema.name, for messages
  std::string quoted;                // "schema"."name", for SQL text
  std::vector<std::string> columns;  // its key columns, in order
};

// What async_migrate created (false: it was there already), and what it
// found.
struct migrated {
  bool table = false;
  bool fetch_log = false;
  bool member_table = false;                       // the cluster's (member_table.hpp)
  std::vector<redundant_index> redundant_indexes;  // by name
};

// Creates the table if it does not exist, and the fetch log and its view
// (fetch_log.hpp) and the member table (member_table.hpp) beside it if they
// do not, under an advisory lock so that
// concurrent migrations do not race; then checks the table and looks for
// its redundant indexes. An existing table (the original's, or one made by
// an older version) is left as it is.
boost::asio::awaitable<outcome<migrated>> async_migrate(connection& conn, const table_name& table,
                                                        deadline until);

// The table's redundant indexes: the btree indexes that are not unique,
// back no constraint, are not the table's CLUSTER index, and have no
// predicate, no expression and no INCLUDE column, whose key columns are, in
// order, the first 1 to 3 key columns of a valid unique index of the table
// on exactly (endpoint, key, fetched_at), with the same operator classes,
// collations and sort orders. An index left invalid (a DROP or CREATE
// INDEX CONCURRENTLY that failed) that fits is one too. By name.
boost::asio::awaitable<outcome<std::vector<redundant_index>>> async_find_redundant_indexes(
    connection& conn, const table_name& table, deadline until);

// DROP INDEX CONCURRENTLY of one index: a statement of its own, outside any
// transaction (so `conn` must be idle), that lets inserts and queries go on
// while it waits for the transactions using the index; it also works
// through PgBouncer in transaction pooling. If it fails, the index may be
// left invalid: dropping it again finishes the job.
boost::asio::awaitable<outcome<void>> async_drop_index(connection& conn,
                                                       const redundant_index& index,
                                                       deadline until);

// Whether `table` exists (as the search_path finds it when unqualified).
boost::asio::awaitable<outcome<bool>> async_table_exists(connection& conn, const table_name& table,
                                                         deadline until);

// Fails, naming what is missing, unless the table can take our commits.
boost::asio::awaitable<outcome<void>> async_check_schema(connection& conn, const table_name& table,
                                                         deadline until);

// How async_commit sends one fetch. `automatic` is what the commit benchmark
// measured fastest (docs/performance.md); the others are kept so that the
// benchmark can measure them again, and tests can reach each path.
enum class commit_path {
  // `copy` from copy_min_rows rows on, `unnest_binary` below (COPY costs one
  // more round trip, which a small fetch notices).
  automatic,
  // Binary COPY straight into the table: one statement, so one transaction.
  // The rows go in byte order of key (the unique index's order: it fills
  // page by page), so their ids follow key order, not document order.
  // If any row of the fetch is already stored, the unique constraint refuses
  // the COPY, which then stores nothing, and the fetch is committed again by
  // `unnest_binary`, which stores only the rows that are missing.
  copy,
  // INSERT ... SELECT FROM unnest($3::text[], $4::float8[]) ON CONFLICT
  // (endpoint, key, fetched_at) DO NOTHING, with binary parameters.
  unnest_binary,
  // Binary COPY into a temporary table (ON COMMIT DROP: nothing stays on
  // the session), then INSERT ... SELECT ... ON CONFLICT DO NOTHING from it,
  // in one explicit transaction. The benchmark's only.
  copy_via_temp,
  // As unnest_binary with text-format array parameters (the path before
  // binary parameters; the benchmark's "before").
  unnest_text,
};

// Where `automatic` switches from unnest_binary to copy. Measured on a
// local server, COPY is already cheaper at 153 rows (no ON CONFLICT, rows
// inserted in bulk); below about a hundred rows the extra round trip to a
// remote server would cost more than that saves.
inline constexpr std::size_t copy_min_rows = 100;

// Commits every row of `record` in one transaction; returns how many rows
// were new (0 when the same fetch was committed before). A key containing a
// NUL character fails permanently without a round trip. The overloads
// without commit_tables write no fetch log. With one, the log row goes in
// the same transaction: in the statement itself (a data-modifying WITH) for
// unnest, or inserted after a BEGIN, in the round trip before the COPY, which
// then ends with the COMMIT.
boost::asio::awaitable<outcome<std::size_t>> async_commit(connection& conn, const table_name& table,
                                                          const fetch_record& record,
                                                          deadline until);
boost::asio::awaitable<outcome<std::size_t>> async_commit(connection& conn, const table_name& table,
                                                          const fetch_record& record,
                                                          deadline until, commit_path path);
boost::asio::awaitable<outcome<std::size_t>> async_commit(connection& conn,
                                                          const commit_tables& tables,
                                                          const fetch_record& record,
                                                          deadline until, commit_path path);

// Commits many fetches over one connection. Returns one outcome per record,
// in order: the number of new rows, or why that record was not stored.
// `records` must stay alive until the call completes. Every fetch is atomic
// (all its rows or none) and idempotent, whatever the path:
// - `together_first` (the default): one binary COPY of every record's rows
//   (records in the unique index's order: endpoint, then fetched_at; rows in
//   key order), so one statement, one transaction, one WAL flush, and
//   PostgreSQL's bulk insert (one WAL record per heap page, not per row) for
//   the whole batch. If any fetch fails, or has rows stored already (a
//   retry), the COPY stores nothing, and every fetch is committed again as
//   under `each_alone` (a second round trip), so the outcomes are
//   each_alone's;
// - `together_pipelined`: as together_first, but the first round is one
//   INSERT ... SELECT FROM unnest(...) per fetch (rows in key order),
//   pipelined (libpq pipeline mode) in one transaction. Kept so that the
//   commit benchmark can measure it against COPY;
// - `each_alone`: INSERT ... ON CONFLICT DO NOTHING per fetch, pipelined,
//   with a sync point after each, so each fetch is its own transaction (one
//   round trip, one WAL flush per fetch; PostgreSQL's group commit shares
//   flushes only between transactions committing at the same time on other
//   connections).
//
// One record's failure touches no other record's rows:
// - the database refuses a record (a key longer than the column, an
//   endpoint too long, ...): that record fails permanently and stores
//   nothing; every other record is committed as if it were not in the batch;
// - a transient SQL error of one record (statement timeout, serialization
//   failure): that record fails transiently and stores nothing; the others
//   are committed, and the connection stays usable;
// - a record with a NUL in a key fails permanently and is not sent; an
//   empty record is 0 new rows and is not sent.
// When the connection is lost or `until` passes mid-batch, the connection is
// closed (is_idle() is false) and:
// - a record whose transaction's commit the server confirmed keeps its
//   outcome, known for certain: under each_alone (and in the second round of
//   the others) the records before the one in flight; in the first round of
//   together_first or together_pipelined, none;
// - every other record fails transiently ("lost the connection ..." or
//   "did not answer before the deadline"). Whether it committed is unknown
//   (the server may have committed and lost only the answer). Retrying it
//   is safe: the commit is idempotent, so a retry stores only what is
//   missing (0 new rows if it had landed).
enum class batch_path { together_first, together_pipelined, each_alone };

boost::asio::awaitable<std::vector<outcome<std::size_t>>> async_commit_batch(
    connection& conn, const table_name& table, std::span<const fetch_record* const> records,
    deadline until);
boost::asio::awaitable<std::vector<outcome<std::size_t>>> async_commit_batch(
    connection& conn, const table_name& table, std::span<const fetch_record* const> records,
    deadline until, batch_path path);
boost::asio::awaitable<std::vector<outcome<std::size_t>>> async_commit_batch(
    connection& conn, const commit_tables& tables, std::span<const fetch_record* const> records,
    deadline until, batch_path path);

// database.retention on a plain (unpartitioned) table: deletes up to
// `batch` rows with fetched_at before `cutoff`, in one statement and so one
// short transaction; returns how many went. Call again while it returns
// `batch`. The rows are found by their ctid (a TID scan), so the table needs
// no id column: the original's and ours alike. A partitioned table drops
// whole partitions instead (partitions.hpp).
boost::asio::awaitable<outcome<std::size_t>> async_delete_expired(
    connection& conn, const table_name& table, timestamp cutoff, std::size_t batch, deadline until);

// ISO 8601 in UTC with microseconds: "2026-11-27 21:24:10.123456+00".
std::string format_timestamp(timestamp t);

}  // namespace gatherstats::pg
