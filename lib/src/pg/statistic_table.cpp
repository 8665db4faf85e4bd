// Schema management and the commit statements for the statistics table.
// Rows travel in PostgreSQL's binary format: a COPY stream for a large fetch
// (one statement, one transaction, no ON CONFLICT to pay for on the first
// commit), two array parameters expanded by unnest() for a small one or a
// repeat (one round trip), and the latter pipelined for a batch.
#include "gatherstats/pg/statistic_table.hpp"

#include "gatherstats/pg/fetch_log.hpp"
#include "gatherstats/pg/member_table.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <tuple>
#include <vector>

namespace asio = boost::asio;

namespace gatherstats::pg {
namespace {

// --- PostgreSQL's binary formats (network byte order) ----------------------

// Type OIDs (pg_type.dat), fixed since forever.
constexpr std::uint32_t text_oid = 25;
constexpr std::uint32_t float8_oid = 701;
constexpr std::uint32_t timestamptz_oid = 1184;
constexpr std::uint32_t text_array_oid = 1009;
constexpr std::uint32_t float8_array_oid = 1022;

// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
constexpr std::int64_t postgres_epoch_us = 946'684'800'000'000;

void put_be(std::string& out, std::uint64_t v, int bytes) {
  char buf[8];
  for (int i = bytes - 1; i >= 0; --i, v >>= 8) buf[i] = static_cast<char>(v & 0xff);
  out.append(buf, static_cast<std::size_t>(bytes));
}
void put_i16(std::string& out, std::int16_t v) { put_be(out, static_cast<std::uint16_t>(v), 2); }
void put_i32(std::string& out, std::int32_t v) { put_be(out, static_cast<std::uint32_t>(v), 4); }
void put_f8(std::string& out, double v) { put_be(out, std::bit_cast<std::uint64_t>(v), 8); }
void put_timestamptz(std::string& out, timestamp t) {
  put_be(out, static_cast<std::uint64_t>(t.time_since_epoch().count() - postgres_epoch_us), 8);
}
void put_text(std::string& out, std::string_view s) {
  put_i32(out, static_cast<std::int32_t>(s.size()));
  out.append(s);
}

std::string binary_timestamptz(timestamp t) {
  std::string out;
  put_timestamptz(out, t);
  return out;
}

// A one-dimensional array without nulls, as array_recv reads it.
void put_array_header(std::string& out, std::uint32_t element_oid, std::size_t size) {
  put_i32(out, 1);  // dimensions
  put_i32(out, 0);  // has nulls
  put_i32(out, static_cast<std::int32_t>(element_oid));
  put_i32(out, static_cast<std::int32_t>(size));
  put_i32(out, 1);  // lower bound
}

// The positions of the rows of `record` in byte order of key. All rows of a
// fetch share endpoint and fetched_at, so that is the order of the unique
// index, which then fills page after page instead of splitting pages all
// over (measured on a 30,003-row fetch: a third smaller index, a fifth less
// WAL, about 40% less time). Rows sent in this order get their ids in it.
std::vector<std::uint32_t> key_order(const fetch_record& record) {
  const auto& rows = record.rows;
  std::vector<std::uint32_t> order(rows.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::uint32_t>(i);
  std::sort(order.begin(), order.end(),
            [&](std::uint32_t a, std::uint32_t b) { return rows.key(a) < rows.key(b); });
  return order;
}

// The keys and the values of `record` as text[] and float8[], in document
// order or in key order.
struct binary_arrays {
  std::string keys, values;
};
enum class row_order { document, key };
binary_arrays to_binary_arrays(const fetch_record& record, row_order how) {
  binary_arrays a;
  const auto& rows = record.rows;
  std::size_t key_bytes = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) key_bytes += rows.key(i).size();
  a.keys.reserve(20 + key_bytes + 4 * rows.size());
  a.values.reserve(20 + 12 * rows.size());
  put_array_header(a.keys, text_oid, rows.size());
  put_array_header(a.values, float8_oid, rows.size());
  auto put_row = [&](std::size_t i) {
    put_text(a.keys, rows.key(i));
    put_i32(a.values, 8);
    put_f8(a.values, rows.value(i));
  };
  if (how == row_order::key) {
    for (auto i : key_order(record)) put_row(i);
  } else {
    for (std::size_t i = 0; i < rows.size(); ++i) put_row(i);
  }
  return a;
}

// A binary COPY stream of (endpoint, key, numeric_value, fetched_at) rows:
// the rows of each record in key order, the records in the order given.
std::string to_copy_stream(std::span<const fetch_record* const> records) {
  std::size_t bytes = 13;
  for (const fetch_record* r : records) {
    const auto& rows = r->rows;
    for (std::size_t i = 0; i < rows.size(); ++i) bytes += rows.key(i).size();
    bytes += rows.size() * (2 + 4 + r->endpoint.size() + 4 + 12 + 12);
  }
  std::string out;
  out.reserve(bytes + 8);
  out.append("PGCOPY\n\xff\r\n\0", 11);
  put_i32(out, 0);  // flags: no OIDs
  put_i32(out, 0);  // no header extension
  std::string ts;
  for (const fetch_record* r : records) {
    ts.clear();
    put_timestamptz(ts, r->fetched_at);
    for (std::uint32_t i : key_order(*r)) {
      put_i16(out, 4);
      put_text(out, r->endpoint);
      put_text(out, r->rows.key(i));
      put_i32(out, 8);
      put_f8(out, r->rows.value(i));
      put_i32(out, 8);
      out.append(ts);
    }
  }
  put_i16(out, -1);
  return out;
}

std::string copy_sql(const table_name& table) {
  return "COPY " + table.quoted() +
         " (endpoint, key, numeric_value, fetched_at) FROM STDIN (FORMAT binary)";
}

// PostgreSQL cannot store a NUL in text; say which key has one.
std::optional<failure> refuse_nul(const fetch_record& record) {
  for (std::size_t i = 0; i < record.rows.size(); ++i) {
    auto key = record.rows.key(i);
    if (key.find('\0') != std::string_view::npos)
      return failure::permanent("key path \"" + std::string(key.substr(0, 80)) +
                                "\" contains a NUL character, which PostgreSQL cannot store");
  }
  return std::nullopt;
}

// Without ON CONFLICT the insert is about a third cheaper, and fails on
// the first row already stored.
// `fenced`: only when the claim of the WITH query `claim` won.
enum class on_conflict { do_nothing, fail };
std::string unnest_insert_sql(const table_name& table, on_conflict conflict, bool fenced = false) {
  std::string sql = "INSERT INTO " + table.quoted() +
                    " (endpoint, key, numeric_value, fetched_at)"
                    " SELECT $1, u.k, u.v, $2 FROM unnest($3::text[], $4::float8[]) AS u(k, v)";
  if (fenced) sql += " WHERE EXISTS (SELECT 1 FROM claim)";
  if (conflict == on_conflict::do_nothing)
    sql += " ON CONFLICT (endpoint, key, fetched_at) DO NOTHING";
  return sql;
}

// The four parameters of unnest_insert_sql for one record; views into
// `arrays`, `ts` and the record.
std::array<parameter, 4> unnest_params(const fetch_record& record, const std::string& ts,
                                       const binary_arrays& arrays) {
  return {{{record.endpoint, text_oid, true},
           {ts, timestamptz_oid, true},
           {arrays.keys, text_array_oid, true},
           {arrays.values, float8_array_oid, true}}};
}

// A statement failed inside an explicit transaction: roll it back so the
// connection can be reused, or close it if that fails too.
asio::awaitable<void> abandon_transaction(connection& conn, deadline until) {
  auto rolled_back = co_await conn.async_exec("ROLLBACK", until);
  if (!rolled_back || !conn.is_idle()) conn.close();
}

// unnest_insert_sql and, with a fetch log, the record's log row inserted by
// the same statement (parameters $5 to $15), whose claim of the tick the
// rows wait on (the fence): one statement, so one transaction, and no extra
// round trip. No row stored: the tick was stored before.
std::string commit_sql(const commit_tables& t, on_conflict conflict) {
  if (!t.fetch_log) return unnest_insert_sql(t.statistics, conflict);
  return "WITH claim AS (" + fetch_log_insert_sql(*t.fetch_log, 5, t.replace_failures) + ") " +
         unnest_insert_sql(t.statistics, conflict, true);
}

// The text parameters of a log row; views into `row`.
void append_log_params(std::vector<parameter>& params, const fetch_log_row& row) {
  for (const auto& v : row) params.push_back(parameter{v, 0, false});
}

// The log row of a record without statistics (a failed fetch, or a
// document that gave no rows), or the claim before a COPY in a transaction.
// Returns 1 when it claimed the tick, 0 when the tick was taken, or why it
// failed.
asio::awaitable<outcome<std::size_t>> commit_log_only(connection& conn, const commit_tables& t,
                                                      const fetch_record& record, deadline until) {
  const table_name& log = *t.fetch_log;
  const fetch_log_row row = make_fetch_log_row(record);
  std::vector<parameter> params;
  append_log_params(params, row);
  const std::string sql = fetch_log_insert_sql(log, 1, t.replace_failures);
  auto inserted = co_await conn.async_query(statement{sql, params}, until);
  if (!inserted) co_return inserted.error();
  co_return inserted->affected_rows();
}

// BEGIN and the log rows of `records`, pipelined: one round trip, after
// which the transaction is open for a COPY (which cannot take a WITH).
// Returns, per record, whether its log row claimed its tick (the fence:
// only those records' rows may go in). On failure the transaction is
// rolled back (or the connection closed).
asio::awaitable<outcome<std::vector<bool>>> begin_with_log(
    connection& conn, const commit_tables& t, std::span<const fetch_record* const> records,
    deadline until) {
  const table_name& log = *t.fetch_log;
  std::vector<fetch_log_row> rows;
  rows.reserve(records.size());
  for (const fetch_record* r : records) rows.push_back(make_fetch_log_row(*r));
  std::vector<std::vector<parameter>> params(rows.size());
  const std::string sql = fetch_log_insert_sql(log, 1, t.replace_failures);
  std::vector<statement> statements;
  statements.reserve(rows.size() + 1);
  statements.push_back(statement{"BEGIN", {}});
  for (std::size_t i = 0; i < rows.size(); ++i) {
    append_log_params(params[i], rows[i]);
    statements.push_back(statement{sql, params[i]});
  }
  auto results =
      co_await conn.async_pipeline(statements, connection::pipeline_sync::together, until);
  // The statement that failed says why; the others only "rolled back".
  std::optional<failure> failed;
  for (auto& r : results) {
    if (r) continue;
    if (!failed || (failed->is_transient() && !r.error().is_transient())) failed = r.error();
  }
  if (!failed) {
    std::vector<bool> claimed;
    claimed.reserve(rows.size());
    for (std::size_t i = 1; i < results.size(); ++i)
      claimed.push_back(results[i]->affected_rows() > 0);
    co_return claimed;
  }
  co_await abandon_transaction(conn, until);
  co_return *failed;
}

asio::awaitable<outcome<std::size_t>> commit_unnest_binary(connection& conn, const commit_tables& t,
                                                           const fetch_record& record,
                                                           deadline until) {
  const std::string ts = binary_timestamptz(record.fetched_at);
  const binary_arrays arrays = to_binary_arrays(record, row_order::document);
  const auto base = unnest_params(record, ts, arrays);
  std::vector<parameter> params(base.begin(), base.end());
  fetch_log_row row;
  if (t.fetch_log) {
    row = make_fetch_log_row(record);
    append_log_params(params, row);
  }
  const std::string sql = commit_sql(t, on_conflict::do_nothing);
  auto inserted = co_await conn.async_query(statement{sql, params}, until);
  if (!inserted) co_return inserted.error();
  co_return inserted->affected_rows();
}

asio::awaitable<outcome<std::size_t>> commit_copy(connection& conn, const commit_tables& t,
                                                  const fetch_record& record, deadline until) {
  const fetch_record* one[] = {&record};
  const std::string data = to_copy_stream(one);
  if (!t.fetch_log) {
    const std::string sql = copy_sql(t.statistics);
    auto copied = co_await conn.async_copy_in(sql, data, until);
    if (copied) co_return copied->affected_rows();
    // unique_violation: some of these rows are stored already (a repeat).
    // The COPY stored nothing; store what is missing.
    if (conn.last_sqlstate() != "23505") co_return copied.error();
    co_return co_await commit_unnest_binary(conn, t, record, until);
  }
  // The log row first, then the COPY and the COMMIT in one query: one
  // round trip more than without the log.
  std::span<const fetch_record* const> records(one);
  auto begun = co_await begin_with_log(conn, t, records, until);
  if (!begun) co_return begun.error();
  if (!begun->front()) {
    // The tick is stored already: nothing to store, nothing to keep.
    auto ended = co_await conn.async_exec("ROLLBACK", until);
    if (!ended) co_return ended.error();
    co_return std::size_t{0};
  }
  const std::string sql = copy_sql(t.statistics) + "; COMMIT";
  auto copied = co_await conn.async_copy_in(sql, data, until);
  if (copied) co_return record.rows.size();  // all or nothing: every row was new
  const std::string state = conn.last_sqlstate();
  co_await abandon_transaction(conn, until);
  if (state != "23505" || !conn.is_idle()) co_return copied.error();
  co_return co_await commit_unnest_binary(conn, t, record, until);
}

asio::awaitable<outcome<std::size_t>> commit_copy_via_temp(connection& conn, const commit_tables& t,
                                                           const fetch_record& record,
                                                           deadline until) {
  const table_name& table = t.statistics;
  // Dropped at the end of the transaction (committed or not): nothing is
  // left on the server session, which PgBouncer's transaction pooling would
  // hand to other clients.
  auto begun = co_await conn.async_exec(
      "BEGIN; CREATE TEMP TABLE gatherstats_incoming"
      " (key text, numeric_value float8) ON COMMIT DROP",
      until);
  if (!begun) {
    co_await abandon_transaction(conn, until);
    co_return begun.error();
  }
  std::string data;
  data.append("PGCOPY\n\xff\r\n\0", 11);
  put_i32(data, 0);
  put_i32(data, 0);
  for (std::size_t i = 0; i < record.rows.size(); ++i) {
    put_i16(data, 2);
    put_text(data, record.rows.key(i));
    put_i32(data, 8);
    put_f8(data, record.rows.value(i));
  }
  put_i16(data, -1);
  auto copied = co_await conn.async_copy_in(
      "COPY pg_temp.gatherstats_incoming FROM STDIN (FORMAT binary)", data, until);
  if (!copied) {
    co_await abandon_transaction(conn, until);
    co_return copied.error();
  }
  if (t.fetch_log) {
    auto claimed = co_await commit_log_only(conn, t, record, until);
    if (!claimed || *claimed == 0) {
      co_await abandon_transaction(conn, until);
      if (!claimed) co_return claimed.error();
      co_return std::size_t{0};  // the tick is stored already
    }
  }
  const std::string ts = binary_timestamptz(record.fetched_at);
  const std::array<parameter, 2> params{
      {{record.endpoint, text_oid, true}, {ts, timestamptz_oid, true}}};
  const std::string sql = "INSERT INTO " + table.quoted() +
                          " (endpoint, key, numeric_value, fetched_at)"
                          " SELECT $1, key, numeric_value, $2 FROM pg_temp.gatherstats_incoming"
                          " ON CONFLICT (endpoint, key, fetched_at) DO NOTHING";
  auto inserted = co_await conn.async_query(statement{sql, params}, until);
  if (!inserted) {
    co_await abandon_transaction(conn, until);
    co_return inserted.error();
  }
  auto committed = co_await conn.async_exec("COMMIT", until);
  if (!committed) {
    co_await abandon_transaction(conn, until);
    co_return committed.error();
  }
  co_return inserted->affected_rows();
}

// Appends `s` as one element of a text-format array literal.
bool append_array_text(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    if (c == '\0') return false;
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return true;
}

asio::awaitable<outcome<std::size_t>> commit_unnest_text(connection& conn, const commit_tables& t,
                                                         const fetch_record& record,
                                                         deadline until) {
  std::vector<std::string> params{record.endpoint, format_timestamp(record.fetched_at), "{", "{"};
  std::string& keys = params[2];
  std::string& values = params[3];
  char number[32];
  for (std::size_t i = 0; i < record.rows.size(); ++i) {
    if (i) {
      keys += ',';
      values += ',';
    }
    append_array_text(keys, record.rows.key(i));
    auto [end, ec] = std::to_chars(number, number + sizeof number, record.rows.value(i));
    values.append(number, end);
  }
  keys += '}';
  values += '}';
  std::string sql = "INSERT INTO " + t.statistics.quoted() +
                    " (endpoint, key, numeric_value, fetched_at)"
                    " SELECT $1, u.k, u.v, $2::timestamptz"
                    " FROM unnest($3::text[], $4::float8[]) AS u(k, v)";
  if (t.fetch_log) {
    sql = "WITH claim AS (" + fetch_log_insert_sql(*t.fetch_log, 5, t.replace_failures) + ") " +
          sql + " WHERE EXISTS (SELECT 1 FROM claim)";
    for (auto& v : make_fetch_log_row(record)) params.push_back(std::move(v));
  }
  sql += " ON CONFLICT (endpoint, key, fetched_at) DO NOTHING";
  auto inserted = co_await conn.async_query(sql, params, until);
  if (!inserted) co_return inserted.error();
  co_return inserted->affected_rows();
}

struct column_rule {
  std::string_view name;
  std::array<std::string_view, 3> type_prefixes;  // as format_type() spells them
  std::string_view wanted;
};

constexpr std::array<column_rule, 4> required_columns{{
    {"endpoint", {"character varying", "text", "character("}, "varchar or text"},
    {"key", {"character varying", "text", "character("}, "varchar or text"},
    {"numeric_value",
     {"double precision", "double precision", "double precision"},
     "double precision"},
    {"fetched_at",
     {"timestamp with time zone", "timestamp with time zone", "timestamp with time zone"},
     "timestamp with time zone"},
}};

std::string create_table_sql(const table_name& table) {
  return "CREATE TABLE " + table.quoted() +
         " (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
         " endpoint varchar(1204) NOT NULL,"
         " key varchar(512) NOT NULL,"
         " numeric_value double precision NOT NULL,"
         " fetched_at timestamp with time zone NOT NULL,"
         " UNIQUE (endpoint, key, fetched_at))";
}

}  // namespace

std::string quote_identifier(std::string_view id) {
  std::string out = "\"";
  for (char c : id) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string is_statistics_key(std::string_view index) {
  const std::string i(index);
  return i + ".indnkeyatts = 3 AND " + i + ".indpred IS NULL AND " + i +
         ".indexprs IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname)"
         " FROM pg_attribute a WHERE a.attrelid = " +
         i + ".indrelid AND a.attnum = ANY(" + i +
         ".indkey::int2[])) = ARRAY['endpoint', 'fetched_at', 'key']";
}

outcome<table_name> table_name::parse(std::string_view text) {
  table_name t;
  auto dot = text.find('.');
  std::string_view schema =
      dot == std::string_view::npos ? std::string_view{} : text.substr(0, dot);
  std::string_view name = dot == std::string_view::npos ? text : text.substr(dot + 1);
  auto check = [&](std::string_view part, std::string_view what) -> outcome<void> {
    if (part.empty())
      return failure::permanent("table name \"" + std::string(text) + "\" has an empty " +
                                std::string(what));
    if (part.size() > max_identifier_bytes)
      return failure::permanent("table name \"" + std::string(text) + "\": the " +
                                std::string(what) + " is longer than 63 bytes");
    if (part.find('\0') != std::string_view::npos || part.find('.') != std::string_view::npos)
      return failure::permanent("table name \"" + std::string(text) +
                                "\" must be NAME or SCHEMA.NAME");
    return {};
  };
  if (dot != std::string_view::npos) {
    if (auto ok = check(schema, "schema name"); !ok) return ok.error();
  }
  if (auto ok = check(name, "table name"); !ok) return ok.error();
  t.schema_ = schema;
  t.name_ = name;
  return t;
}

std::string table_name::quoted() const {
  return schema_.empty() ? quote_identifier(name_)
                         : quote_identifier(schema_) + "." + quote_identifier(name_);
}

std::string table_name::display() const { return schema_.empty() ? name_ : schema_ + "." + name_; }

table_name table_name::beside(std::string_view name) const {
  table_name t;
  t.schema_ = schema_;
  t.name_ = std::string(name);
  return t;
}

asio::awaitable<outcome<std::size_t>> async_delete_expired(connection& conn,
                                                           const table_name& table,
                                                           timestamp cutoff, std::size_t batch,
                                                           deadline until) {
  const std::string t = table.quoted();
  std::array<std::string, 2> params{format_timestamp(cutoff), std::to_string(batch)};
  // ctid = ANY (ARRAY(...)) plans as a TID scan of exactly the rows the
  // subquery found; ctid IN (SELECT ...) would be a join. The ctids cannot
  // move between the two: one statement, one snapshot, and a row updated
  // meanwhile (nothing updates the table) would simply be skipped.
  const std::string sql = "DELETE FROM " + t + " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " + t +
                          " WHERE fetched_at < $1::timestamptz LIMIT $2::int))";
  auto deleted = co_await conn.async_query(sql, params, until);
  if (!deleted) co_return deleted.error();
  co_return deleted->affected_rows();
}

std::string format_timestamp(timestamp t) {
  using namespace std::chrono;
  auto day = floor<days>(t);
  year_month_day ymd{day};
  hh_mm_ss<microseconds> time{t - day};
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02lld:%02lld:%02lld.%06lld+00",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<long long>(time.hours().count()),
                static_cast<long long>(time.minutes().count()),
                static_cast<long long>(time.seconds().count()),
                static_cast<long long>(time.subseconds().count()));
  return buf;
}

asio::awaitable<outcome<migrated>> async_migrate(connection& conn, const table_name& table,
                                                 deadline until) {
  auto fail = [&](const failure& f) {
    conn.close();  // inside a transaction: never reuse
    return f;
  };
  auto begun = co_await conn.async_exec(
      "BEGIN; SELECT pg_advisory_xact_lock(" + std::string(migrate_lock_key) + ")", until);
  if (!begun) co_return fail(begun.error());
  auto exists = co_await async_table_exists(conn, table, until);
  if (!exists) co_return fail(exists.error());
  migrated done;
  done.table = !*exists;
  if (done.table) {
    auto made = co_await conn.async_exec(create_table_sql(table), until);
    if (!made) co_return fail(made.error());
  }
  // Ours, beside the table (also beside the original's): what an older
  // version migrated gets it here.
  auto logged = co_await async_create_fetch_log(conn, table, until);
  if (!logged) co_return fail(logged.error());
  done.fetch_log = *logged;
  auto members = co_await async_create_member_table(conn, table, until);
  if (!members) co_return fail(members.error());
  done.member_table = *members;
  auto committed = co_await conn.async_exec("COMMIT", until);
  if (!committed) co_return fail(committed.error());
  auto checked = co_await async_check_schema(conn, table, until);
  if (!checked) co_return checked.error();
  auto redundant = co_await async_find_redundant_indexes(conn, table, until);
  if (!redundant) co_return redundant.error();
  done.redundant_indexes = std::move(*redundant);
  co_return done;
}

asio::awaitable<outcome<std::vector<redundant_index>>> async_find_redundant_indexes(
    connection& conn, const table_name& table, deadline until) {
  // r: a candidate; u: a unique index the schema check accepts. Position
  // by position (0-based: int2vector and oidvector), r's key columns,
  // operator classes, collations and sort orders (indoption: DESC, NULLS
  // FIRST) must be u's. The key columns of a match are among u's three, so
  // ',' cannot occur in them.
  std::array<std::string, 1> name{table.quoted()};
  auto found = co_await conn.async_query(
      "SELECT n.nspname::text || '.' || c.relname::text, format('%I.%I', n.nspname, c.relname),"
      "       (SELECT string_agg(a.attname::text, ',' ORDER BY k.i)"
      "          FROM unnest(r.indkey::int2[]) WITH ORDINALITY AS k(attnum, i)"
      "          JOIN pg_attribute a ON a.attrelid = r.indrelid AND a.attnum = k.attnum)"
      "  FROM pg_index r"
      "  JOIN pg_class c ON c.oid = r.indexrelid"
      "  JOIN pg_namespace n ON n.oid = c.relnamespace"
      " WHERE r.indrelid = to_regclass($1)"
      "   AND c.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')"
      "   AND NOT r.indisunique AND NOT r.indisprimary AND NOT r.indisexclusion"
      "   AND NOT r.indisclustered AND r.indpred IS NULL AND r.indexprs IS NULL"
      "   AND r.indnatts = r.indnkeyatts AND r.indnkeyatts BETWEEN 1 AND 3"
      "   AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = r.indexrelid)"
      "   AND EXISTS (SELECT 1 FROM pg_index u JOIN pg_class uc ON uc.oid = u.indexrelid"
      "        WHERE u.indrelid = r.indrelid AND u.indisunique AND u.indisvalid"
      "          AND uc.relam = c.relam AND " +
          is_statistics_key("u") +
          "          AND NOT EXISTS (SELECT 1 FROM generate_series(0, r.indnkeyatts - 1) AS p(k)"
          "               WHERE r.indkey[p.k] <> u.indkey[p.k] OR r.indclass[p.k] <> "
          "u.indclass[p.k]"
          "                  OR r.indcollation[p.k] <> u.indcollation[p.k]"
          "                  OR r.indoption[p.k] <> u.indoption[p.k]))"
          " ORDER BY 1",
      name, until);
  if (!found) co_return found.error();
  std::vector<redundant_index> out;
  for (int row = 0; row < found->rows(); ++row) {
    redundant_index& index = out.emplace_back();
    index.name = found->get(row, 0);
    index.quoted = found->get(row, 1);
    std::string_view columns = found->get(row, 2);
    for (std::size_t start = 0;;) {
      auto comma = columns.find(',', start);
      index.columns.emplace_back(columns.substr(start, comma - start));
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
  }
  co_return out;
}

asio::awaitable<outcome<void>> async_drop_index(connection& conn, const redundant_index& index,
                                                deadline until) {
  auto dropped = co_await conn.async_exec("DROP INDEX CONCURRENTLY " + index.quoted, until);
  if (!dropped) co_return dropped.error();
  co_return outcome<void>{};
}

asio::awaitable<outcome<void>> async_check_schema(connection& conn, const table_name& table,
                                                  deadline until) {
  std::array<std::string, 1> name{table.quoted()};
  auto columns = co_await conn.async_query(
      "SELECT c.oid IS NOT NULL, a.attname, format_type(a.atttypid, a.atttypmod),"
      "       a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''"
      " FROM (SELECT to_regclass($1) AS oid) c"
      " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
      " ORDER BY a.attnum",
      name, until);
  if (!columns) co_return columns.error();
  const std::string where = "table " + table.display();
  if (columns->rows() == 0 || columns->get(0, 0) != "t")
    co_return failure::permanent(where + " does not exist: run `gatherstatsd migrate`");

  std::vector<std::string> problems;
  for (const auto& rule : required_columns) {
    int found = -1;
    for (int r = 0; r < columns->rows(); ++r)
      if (columns->get(r, 1) == rule.name) found = r;
    if (found < 0) {
      problems.push_back("has no column \"" + std::string(rule.name) + "\"");
      continue;
    }
    auto type = columns->get(found, 2);
    bool ok = false;
    for (auto prefix : rule.type_prefixes) ok = ok || type.starts_with(prefix);
    if (!ok)
      problems.push_back("column \"" + std::string(rule.name) + "\" is " + std::string(type) +
                         ", not " + std::string(rule.wanted));
  }
  for (int r = 0; r < columns->rows(); ++r) {
    auto column = columns->get(r, 1);
    bool ours = false;
    for (const auto& rule : required_columns) ours = ours || column == rule.name;
    if (!ours && columns->get(r, 3) == "t")
      problems.push_back("column \"" + std::string(column) +
                         "\" is NOT NULL without a default, so rows cannot be inserted");
  }

  auto unique = co_await conn.async_query(
      "SELECT count(*) FROM pg_index i"
      " WHERE i.indrelid = to_regclass($1) AND i.indisunique AND " +
          is_statistics_key("i"),
      name, until);
  if (!unique) co_return unique.error();
  if (unique->get(0, 0) == "0")
    problems.push_back("has no unique constraint on (endpoint, key, fetched_at)");

  if (!problems.empty()) {
    std::string message = where;
    for (std::size_t i = 0; i < problems.size(); ++i) message += (i ? "; " : " ") + problems[i];
    co_return failure::permanent(message);
  }
  co_return outcome<void>{};
}

asio::awaitable<outcome<bool>> async_table_exists(connection& conn, const table_name& table,
                                                  deadline until) {
  std::array<std::string, 1> name{table.quoted()};
  auto exists = co_await conn.async_query("SELECT to_regclass($1) IS NOT NULL", name, until);
  if (!exists) co_return exists.error();
  co_return exists->get(0, 0) == "t";
}

asio::awaitable<outcome<std::size_t>> async_commit(connection& conn, const table_name& table,
                                                   const fetch_record& record, deadline until) {
  co_return co_await async_commit(conn, table, record, until, commit_path::automatic);
}

asio::awaitable<outcome<std::size_t>> async_commit(connection& conn, const table_name& table,
                                                   const fetch_record& record, deadline until,
                                                   commit_path path) {
  const commit_tables tables{table, std::nullopt};
  co_return co_await async_commit(conn, tables, record, until, path);
}

asio::awaitable<outcome<std::size_t>> async_commit(connection& conn, const commit_tables& t,
                                                   const fetch_record& record, deadline until,
                                                   commit_path path) {
  if (auto refused = refuse_nul(record)) co_return *refused;
  if (record.rows.empty()) {
    if (!t.fetch_log) co_return std::size_t{0};
    auto logged = co_await commit_log_only(conn, t, record, until);
    if (!logged) co_return logged.error();
    co_return std::size_t{0};
  }
  if (path == commit_path::automatic)
    path = record.rows.size() >= copy_min_rows ? commit_path::copy : commit_path::unnest_binary;
  switch (path) {
    case commit_path::copy:
      co_return co_await commit_copy(conn, t, record, until);
    case commit_path::copy_via_temp:
      co_return co_await commit_copy_via_temp(conn, t, record, until);
    case commit_path::unnest_text:
      co_return co_await commit_unnest_text(conn, t, record, until);
    case commit_path::automatic:
    case commit_path::unnest_binary:
      break;
  }
  co_return co_await commit_unnest_binary(conn, t, record, until);
}

asio::awaitable<std::vector<outcome<std::size_t>>> async_commit_batch(
    connection& conn, const table_name& table, std::span<const fetch_record* const> records,
    deadline until) {
  co_return co_await async_commit_batch(conn, table, records, until, batch_path::together_first);
}

asio::awaitable<std::vector<outcome<std::size_t>>> async_commit_batch(
    connection& conn, const table_name& table, std::span<const fetch_record* const> records,
    deadline until, batch_path path) {
  const commit_tables tables{table, std::nullopt};
  co_return co_await async_commit_batch(conn, tables, records, until, path);
}

asio::awaitable<std::vector<outcome<std::size_t>>> async_commit_batch(
    connection& conn, const commit_tables& t, std::span<const fetch_record* const> records,
    deadline until, batch_path path) {
  // Records that need no round trip have their outcome decided here; the
  // others are sent. Without rows a record has only its log row to send.
  std::vector<std::optional<outcome<std::size_t>>> decided(records.size());
  std::vector<std::size_t> sent_index;
  for (std::size_t i = 0; i < records.size(); ++i) {
    const fetch_record& r = *records[i];
    if (r.rows.empty() && !t.fetch_log)
      decided[i] = std::size_t{0};
    else if (auto refused = refuse_nul(r))
      decided[i] = *refused;
    else
      sent_index.push_back(i);
  }

  if (path == batch_path::together_first && !sent_index.empty()) {
    // One COPY of every row, fetches in the unique index's order (endpoint,
    // then fetched_at; keys in order within each). With a fetch log, its
    // rows go first, after a BEGIN, and the COPY ends with the COMMIT.
    std::vector<const fetch_record*> in_order;
    in_order.reserve(sent_index.size());
    for (auto i : sent_index) in_order.push_back(records[i]);
    std::stable_sort(
        in_order.begin(), in_order.end(), [](const fetch_record* a, const fetch_record* b) {
          return std::tie(a->endpoint, a->fetched_at) < std::tie(b->endpoint, b->fetched_at);
        });
    // With a fetch log, only the fetches whose log row claimed their tick
    // (the fence) have rows to store.
    std::vector<const fetch_record*> to_copy;
    std::vector<const fetch_record*> fenced;
    outcome<void> stored;
    bool in_transaction = false;
    if (t.fetch_log) {
      std::span<const fetch_record* const> all(in_order);
      auto begun = co_await begin_with_log(conn, t, all, until);
      if (begun) {
        in_transaction = true;
        for (std::size_t j = 0; j < in_order.size(); ++j)
          ((*begun)[j] ? to_copy : fenced).push_back(in_order[j]);
      } else {
        stored = begun.error();
      }
    } else {
      to_copy = in_order;
    }
    const std::string data = to_copy_stream(to_copy);
    const bool any_rows = std::any_of(to_copy.begin(), to_copy.end(),
                                      [](const fetch_record* r) { return !r->rows.empty(); });
    if (stored && (any_rows || in_transaction)) {
      std::string sql = copy_sql(t.statistics);
      if (in_transaction) sql += "; COMMIT";
      // Not a ?: expression: GCC 12 mishandles its temporaries in a coroutine.
      outcome<result> copied = failure::transient("");
      if (any_rows)
        copied = co_await conn.async_copy_in(sql, data, until);
      else
        copied = co_await conn.async_exec("COMMIT", until);
      if (!copied) {
        stored = copied.error();
        if (in_transaction) co_await abandon_transaction(conn, until);
      }
    }
    if (stored) {
      for (auto i : sent_index) {
        const bool lost = std::find(fenced.begin(), fenced.end(), records[i]) != fenced.end();
        decided[i] = lost ? std::size_t{0} : records[i]->rows.size();
      }
      sent_index.clear();
    } else if (!conn.is_idle()) {
      // Lost the connection, or the deadline passed: whether the COPY
      // committed is unknown, and a retry is harmless.
      const std::string why = stored.error().message;
      for (auto i : sent_index) decided[i] = failure::transient(why);
      sent_index.clear();
    }
    // Otherwise a fetch was refused (or was stored before) and took the
    // others' rows with it: the COPY stored nothing, and each fetch goes
    // again on its own, idempotently.
  }

  if (!sent_index.empty()) {
    struct prepared {
      std::string ts;
      binary_arrays arrays;
      fetch_log_row log;
      std::vector<parameter> params;
      bool rows = false;
    };
    std::vector<prepared> sent(sent_index.size());
    for (std::size_t j = 0; j < sent_index.size(); ++j) {
      const fetch_record& r = *records[sent_index[j]];
      auto& p = sent[j];
      p.rows = !r.rows.empty();
      if (p.rows) {
        p.ts = binary_timestamptz(r.fetched_at);
        p.arrays = to_binary_arrays(r, row_order::key);
        const auto base = unnest_params(r, p.ts, p.arrays);
        p.params.assign(base.begin(), base.end());
      }
      if (t.fetch_log) {
        p.log = make_fetch_log_row(r);
        append_log_params(p.params, p.log);
      }
    }
    const std::string plain_sql = commit_sql(t, on_conflict::fail);
    const std::string idempotent_sql = commit_sql(t, on_conflict::do_nothing);
    const std::string log_sql =
        t.fetch_log ? fetch_log_insert_sql(*t.fetch_log, 1, t.replace_failures) : "";
    std::vector<statement> plain, idempotent;
    for (const auto& p : sent) {
      plain.push_back(statement{p.rows ? plain_sql : log_sql, p.params});
      idempotent.push_back(statement{p.rows ? idempotent_sql : log_sql, p.params});
    }
    std::vector<outcome<result>> results;
    if (path == batch_path::together_pipelined) {
      results = co_await conn.async_pipeline(plain, connection::pipeline_sync::together, until);
      bool all_stored = std::all_of(results.begin(), results.end(),
                                    [](const outcome<result>& r) { return r.has_value(); });
      if (!all_stored && conn.is_idle()) results.clear();
    }
    if (results.empty())
      results =
          co_await conn.async_pipeline(idempotent, connection::pipeline_sync::each_alone, until);
    for (std::size_t j = 0; j < results.size(); ++j) {
      auto& d = decided[sent_index[j]];
      if (!results[j])
        d = results[j].error();
      else if (sent[j].rows)
        d = results[j]->affected_rows();
      else
        d = std::size_t{0};  // its log row only
    }
  }
  std::vector<outcome<std::size_t>> out;
  out.reserve(records.size());
  for (auto& d : decided) out.push_back(std::move(*d));
  co_return out;
}

}  // namespace gatherstats::pg
