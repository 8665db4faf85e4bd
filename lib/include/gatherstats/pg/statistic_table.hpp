// The statistics table: its name, its schema (create or check), and the
// atomic, idempotent commit of one fetch.
//
// The table is the original tool's `gatherstats_statistic` (docs/schema.md):
// a table the original created is used as it is. What we require of any
// table: the columns endpoint, key (text types), numeric_value (double
// precision), fetched_at (timestamptz), a unique constraint or index on
// exactly (endpoint, key, fetched_at), and no other NOT NULL column without a
// default.
//
// A commit is one INSERT ... ON CONFLICT (endpoint, key, fetched_at) DO
// NOTHING statement: a single transaction, so readers never see part of a
// fetch, and a repeated commit of the same fetch stores nothing new.
//
// Errors and threading: as for pg::connection.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/pg/connection.hpp"

#include <boost/asio/awaitable.hpp>

#include <string>
#include <string_view>

namespace gatherstats::pg {

inline constexpr std::string_view default_table = "gatherstats_statistic";

// A table name, optionally schema-qualified ("stats.gatherstats_statistic").
class table_name {
 public:
  static outcome<table_name> parse(std::string_view text);
  const std::string& schema() const { return schema_; }  // empty: search_path
  const std::string& name() const { return name_; }
  std::string quoted() const;   // "schema"."name", for SQL text
  std::string display() const;  // schema.name, for messages

 private:
  std::string schema_, name_;
};

// Creates the table (and nothing else) if it does not exist, under an
// advisory lock so that concurrent migrations do not race; then checks it.
// Returns true when it created the table.
boost::asio::awaitable<outcome<bool>> async_migrate(connection& conn, const table_name& table,
                                                    deadline until);

// Fails, naming what is missing, unless the table can take our commits.
boost::asio::awaitable<outcome<void>> async_check_schema(connection& conn, const table_name& table,
                                                         deadline until);

// Commits every row of `record` in one transaction; returns how many rows
// were new (0 when the same fetch was committed before).
boost::asio::awaitable<outcome<std::size_t>> async_commit(connection& conn, const table_name& table,
                                                          const fetch_record& record,
                                                          deadline until);

// ISO 8601 in UTC with microseconds: "2026-11-27 21:24:10.123456+00".
std::string format_timestamp(timestamp t);

}  // namespace gatherstats::pg
