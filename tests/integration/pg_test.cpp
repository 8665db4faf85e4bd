// The library's PostgreSQL side against the real private cluster: the
// asynchronous connection, the schema check and migration, and the atomic,
// idempotent commit.
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/statistic_table.hpp"
#include "support/daemon.hpp"
#include "support/route.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <limits>

namespace asio = boost::asio;
using namespace gatherstats;
using std::chrono::steady_clock;

namespace {

pg::deadline in(std::chrono::milliseconds d) { return steady_clock::now() + d; }
constexpr auto generous = std::chrono::seconds(20);

// Coroutines are free functions, not lambdas: see read_file.cpp on GCC 12.
asio::awaitable<outcome<std::string>> select_value(std::string conninfo, std::string sql) {
  auto conn = co_await pg::connection::async_connect(conninfo, in(generous));
  if (!conn) co_return conn.error();
  auto r = co_await conn->async_exec(sql, in(generous));
  if (!r) co_return r.error();
  co_return std::string(r->get(0, 0));
}

// A table name and a connection, the start of every test coroutine below.
struct session {
  pg::table_name table;
  pg::connection conn;
};

asio::awaitable<outcome<session>> open_session(std::string conninfo, std::string table) {
  auto name = pg::table_name::parse(table);
  if (!name) co_return name.error();
  auto conn = co_await pg::connection::async_connect(conninfo, in(generous));
  if (!conn) co_return conn.error();
  co_return session{std::move(*name), std::move(*conn)};
}

// Whether it created the statistics table.
asio::awaitable<outcome<bool>> migrate(std::string conninfo, std::string table) {
  auto s = co_await open_session(conninfo, table);
  if (!s) co_return s.error();
  auto done = co_await pg::async_migrate(s->conn, s->table, in(generous));
  if (!done) co_return done.error();
  co_return done->table;
}

// What async_migrate reports.
asio::awaitable<outcome<pg::migrated>> migrate_report(std::string conninfo, std::string table) {
  auto s = co_await open_session(conninfo, table);
  if (!s) co_return s.error();
  co_return co_await pg::async_migrate(s->conn, s->table, in(generous));
}

asio::awaitable<outcome<void>> check(std::string conninfo, std::string table) {
  auto s = co_await open_session(conninfo, table);
  if (!s) co_return s.error();
  co_return co_await pg::async_check_schema(s->conn, s->table, in(generous));
}

// Commits `record` `times` times on one connection; returns the new-row counts.
asio::awaitable<outcome<std::vector<std::size_t>>> commit(std::string conninfo, std::string table,
                                                          fetch_record record, int times) {
  auto s = co_await open_session(conninfo, table);
  if (!s) co_return s.error();
  std::vector<std::size_t> created;
  for (int i = 0; i < times; ++i) {
    auto n = co_await pg::async_commit(s->conn, s->table, record, in(generous));
    if (!n) co_return n.error();
    created.push_back(*n);
    REQUIRE(s->conn.is_idle());
  }
  co_return created;
}

fetch_record sample_record(std::string endpoint = "http://iar-backend.invalid/stats") {
  fetch_record r;
  r.endpoint = std::move(endpoint);
  r.fetched_at = now_utc();
  r.rows.push_back("asset_counts.all.total", 1234);
  r.rows.push_back("asset_counts.all.complete", 7);
  r.rows.push_back("with \"quotes\", \\backslash\\ and {braces}", 0.1);
  return r;
}

}  // namespace

TEST_CASE("an asynchronous connection runs queries over the Unix socket and over TCP", "[pg]") {
  test::scratch_database db;
  auto over_socket = test::run_async(select_value(db.conninfo(), "SELECT 40 + 2"));
  REQUIRE(over_socket.has_value());
  CHECK(*over_socket == "42");
  // "localhost" is a host name: resolved by Asio, not by libpq's blocking lookup.
  auto over_tcp = test::run_async(select_value(test::tcp_admin_conninfo() + " dbname=" + db.name(),
                                               "SELECT current_database()"));
  REQUIRE(over_tcp.has_value());
  CHECK(*over_tcp == db.name());
}

TEST_CASE("connection failures are values that say what went wrong", "[pg]") {
  SECTION("nothing listens on the port: transient") {
    auto r = test::run_async(select_value("host=127.0.0.1 port=1 connect_timeout=5", "SELECT 1"));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().is_transient());
    CHECK_THAT(r.error().message, Catch::Contains("could not connect to the database"));
  }
  SECTION("a malformed connection string: permanent") {
    auto bad = test::run_async(select_value("this is not a conninfo", "SELECT 1"));
    REQUIRE_FALSE(bad.has_value());
    CHECK_FALSE(bad.error().is_transient());
    CHECK_THAT(bad.error().message, Catch::Contains("invalid database connection string"));
  }
  SECTION("a server that never answers: the deadline ends the wait") {
    test::silent_listener hang;
    auto started = steady_clock::now();
    auto r = test::run_async([](std::uint16_t port) -> asio::awaitable<outcome<std::string>> {
      auto conn = co_await pg::connection::async_connect(
          "host=127.0.0.1 port=" + std::to_string(port), in(std::chrono::milliseconds(300)));
      if (!conn) co_return conn.error();
      co_return std::string("connected?");
    }(hang.port()));
    auto took = steady_clock::now() - started;
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().is_transient());
    CHECK_THAT(r.error().message, Catch::Contains("timed out"));
    CHECK(took < std::chrono::seconds(5));
  }
  SECTION("an SQL error names its SQLSTATE and is permanent") {
    test::scratch_database db;
    auto r = test::run_async(select_value(db.conninfo(), "SELECT * FROM no_such_table"));
    REQUIRE_FALSE(r.has_value());
    CHECK_FALSE(r.error().is_transient());
    CHECK_THAT(r.error().message, Catch::Contains("no_such_table") && Catch::Contains("42P01"));
  }
}

// --- from here on, each test also runs through PgBouncer (support/route.hpp) ----

ROUTED_TEST_CASE(migrate_once, "migrate creates the table once and then leaves it alone",
                 "[pg][schema]") {
  test::scratch_database db;
  auto first = test::run_async(migrate(via(db), "gatherstats_statistic"));
  REQUIRE(first.has_value());
  CHECK(*first == true);
  auto second = test::run_async(migrate(via(db), "gatherstats_statistic"));
  REQUIRE(second.has_value());
  CHECK(*second == false);
  auto columns = db.query(
      "SELECT column_name, data_type, coalesce(character_maximum_length, 0), is_nullable"
      " FROM information_schema.columns WHERE table_name = 'gatherstats_statistic'"
      " ORDER BY ordinal_position");
  REQUIRE(columns == std::vector<std::vector<std::string>>{
                         {"id", "bigint", "0", "NO"},
                         {"endpoint", "character varying", "1204", "NO"},
                         {"key", "character varying", "512", "NO"},
                         {"numeric_value", "double precision", "0", "NO"},
                         {"fetched_at", "timestamp with time zone", "0", "NO"}});
  // Nothing else: one table, its primary key and its unique constraint,
  // beside the fetch log (table, pkey, unique key, BRIN index, id sequence)
  // and its view, and the member table and its primary key.
  CHECK(db.query("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                 " WHERE n.nspname = 'public'")[0][0] == "12");
}

ROUTED_TEST_CASE(schema_qualified, "a schema-qualified table is created and used in its schema",
                 "[pg][schema]") {
  test::scratch_database db;
  db.exec("CREATE SCHEMA stats");
  auto made = test::run_async(migrate(via(db), "stats.gatherstats_statistic"));
  REQUIRE(made.has_value());
  auto created =
      test::run_async(commit(via(db), "stats.gatherstats_statistic", sample_record(), 1));
  REQUIRE(created.has_value());
  CHECK(db.count("stats.gatherstats_statistic") == 3);
}

ROUTED_TEST_CASE(original_table, "a table created by the original tool is used as it is",
                 "[pg][schema]") {
  test::scratch_database db;
  db.create_original_table();
  auto checked = test::run_async(check(via(db), "gatherstats_statistic"));
  CHECK(checked.has_value());
  auto migrated = test::run_async(migrate_report(via(db), "gatherstats_statistic"));
  REQUIRE(migrated.has_value());
  CHECK_FALSE(migrated->table);
  // Its two indexes that repeat the unique constraint's (docs/migrating.md).
  REQUIRE(migrated->redundant_indexes.size() == 2);
  const auto& one = migrated->redundant_indexes[0];
  CHECK(one.name == "public.gatherstats_endpoin_3d040d_idx");
  CHECK(one.quoted == "public.gatherstats_endpoin_3d040d_idx");  // format('%I'): no quotes needed
  CHECK(one.columns == std::vector<std::string>{"endpoint"});
  const auto& all = migrated->redundant_indexes[1];
  CHECK(all.name == "public.gatherstats_endpoin_ca0383_idx");
  CHECK(all.columns == std::vector<std::string>{"endpoint", "key", "fetched_at"});
  auto created = test::run_async(commit(via(db), "gatherstats_statistic", sample_record(), 1));
  REQUIRE(created.has_value());
  CHECK(created->at(0) == 3);
  CHECK(db.query("SELECT data_type FROM information_schema.columns"
                 " WHERE table_name = 'gatherstats_statistic' AND column_name = 'id'")[0][0] ==
        "integer");
}

ROUTED_TEST_CASE(unusable_table, "a table the commit cannot use is refused with what is missing",
                 "[pg][schema]") {
  test::scratch_database db;
  SECTION("no table") {
    auto r = test::run_async(check(via(db), "gatherstats_statistic"));
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message,
               Catch::Contains("does not exist") && Catch::Contains("gatherstatsd migrate"));
  }
  SECTION("a required column is missing") {
    db.exec(
        "CREATE TABLE gatherstats_statistic (id serial PRIMARY KEY, endpoint text NOT NULL,"
        " key text NOT NULL, fetched_at timestamptz NOT NULL,"
        " UNIQUE (endpoint, key, fetched_at))");
    auto r = test::run_async(check(via(db), "gatherstats_statistic"));
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message, Catch::Contains("no column \"numeric_value\""));
  }
  SECTION("no unique constraint, a wrong type, a NOT NULL column without default") {
    db.exec(
        "CREATE TABLE gatherstats_statistic (id integer NOT NULL, endpoint text NOT NULL,"
        " key text NOT NULL, numeric_value double precision NOT NULL,"
        " fetched_at timestamp NOT NULL)");
    auto r = test::run_async(check(via(db), "gatherstats_statistic"));
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message,
               Catch::Contains("no unique constraint on (endpoint, key, fetched_at)") &&
                   Catch::Contains("column \"fetched_at\" is timestamp without time zone") &&
                   Catch::Contains("column \"id\" is NOT NULL without a default"));
  }
}

ROUTED_TEST_CASE(same_fetch_twice, "committing the same fetch twice stores it once",
                 "[pg][commit]") {
  test::scratch_database db;
  REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
  auto record = sample_record();
  auto created = test::run_async(commit(via(db), "gatherstats_statistic", record, 2));
  REQUIRE(created.has_value());
  CHECK(*created == std::vector<std::size_t>{3, 0});
  CHECK(db.count() == 3);
  CHECK(db.query("SELECT count(*) FROM gatherstats_statistic"
                 " GROUP BY endpoint, key, fetched_at HAVING count(*) > 1")
            .empty());
  // The same keys at another instant are another fetch.
  record.fetched_at += std::chrono::microseconds(1);
  auto again = test::run_async(commit(via(db), "gatherstats_statistic", record, 1));
  REQUIRE(again.has_value());
  CHECK(again->at(0) == 3);
  CHECK(db.count() == 6);
}

ROUTED_TEST_CASE(exact_values, "a commit stores exact keys, values and the microsecond timestamp",
                 "[pg][commit]") {
  test::scratch_database db;
  REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
  auto record = sample_record();
  record.fetched_at = timestamp(std::chrono::microseconds(1'795'000'000'123'456));
  record.rows.push_back("tiny", 5e-324);
  record.rows.push_back("precise", 0.1 + 0.2);
  REQUIRE(test::run_async(commit(via(db), "gatherstats_statistic", record, 1)).has_value());
  auto rows = db.query(
      "SELECT key, numeric_value = CASE key WHEN 'tiny' THEN 5e-324::float8"
      " WHEN 'precise' THEN 0.1::float8 + 0.2::float8 ELSE numeric_value END,"
      " to_char(fetched_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), endpoint"
      " FROM gatherstats_statistic ORDER BY id");
  REQUIRE(rows.size() == 5);
  CHECK(rows[2][0] == "with \"quotes\", \\backslash\\ and {braces}");
  for (const auto& row : rows) {
    CHECK(row[1] == "t");
    CHECK(row[2] == "2026-11-18 11:06:40.123456");
    CHECK(row[3] == "http://iar-backend.invalid/stats");
  }
}

ROUTED_TEST_CASE(failed_commit, "a commit that fails leaves nothing behind", "[pg][commit]") {
  test::scratch_database db;
  REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
  auto record = sample_record();
  record.rows.push_back(std::string(600, 'k'), 1);  // longer than varchar(512)
  auto r = test::run_async(commit(via(db), "gatherstats_statistic", record, 1));
  REQUIRE_FALSE(r.has_value());
  CHECK_THAT(r.error().message, Catch::Contains("too long"));
  CHECK(db.count() == 0);
}

// --- binary commit paths and the pipelined batch (issue 6) ----------------------

namespace {

// Commits `record` once along `path` on a new connection; returns the new rows.
asio::awaitable<outcome<std::size_t>> commit_along(std::string conninfo, fetch_record record,
                                                   pg::commit_path path) {
  auto s = co_await open_session(conninfo, "gatherstats_statistic");
  if (!s) co_return s.error();
  auto n = co_await pg::async_commit(s->conn, s->table, record, in(generous), path);
  if (!s->conn.is_idle()) {
    std::string what = "the connection is not idle after the commit";
    if (!n) what += ": " + n.error().message;
    co_return failure::permanent(what);
  }
  co_return n;
}

// Commits `records` as one batch `times` times on one connection; returns
// every batch's outcomes, and whether the connection was idle after each.
struct batch_run {
  std::vector<std::vector<outcome<std::size_t>>> batches;
  std::vector<bool> idle_after;
};

asio::awaitable<outcome<batch_run>> commit_batch(std::string conninfo,
                                                 std::vector<fetch_record> records, int times,
                                                 pg::batch_path path) {
  auto s = co_await open_session(conninfo, "gatherstats_statistic");
  if (!s) co_return s.error();
  std::vector<const fetch_record*> pointers;
  for (const auto& r : records) pointers.push_back(&r);
  batch_run run;
  for (int i = 0; i < times; ++i) {
    auto results = co_await pg::async_commit_batch(s->conn, s->table, pointers, in(generous), path);
    run.batches.push_back(std::move(results));
    run.idle_after.push_back(s->conn.is_idle());
  }
  co_return run;
}

// `n` fetches of `rows` rows each, one endpoint, consecutive microseconds.
std::vector<fetch_record> small_fetches(std::size_t n, std::size_t rows) {
  std::vector<fetch_record> out;
  auto at = now_utc();
  for (std::size_t i = 0; i < n; ++i) {
    fetch_record r;
    r.endpoint = "http://stats.invalid/generated";
    r.fetched_at = at + std::chrono::microseconds(i);
    for (std::size_t k = 0; k < rows; ++k)
      r.rows.push_back("g" + std::to_string(k / 50) + ".m" + std::to_string(k % 50),
                       static_cast<double>(i * 1000 + k));
    out.push_back(std::move(r));
  }
  return out;
}

// Keys that a text format would have to escape, and non-ASCII ones.
fetch_record awkward_record() {
  fetch_record r;
  r.endpoint = "http://ünïcödé.invalid/stats?a=1&b=\"2\"\t\\";
  r.fetched_at = timestamp(std::chrono::microseconds(1'795'000'000'123'456));
  r.rows.push_back("tab\there", 1);
  r.rows.push_back("back\\slash\\\\double", 2);
  r.rows.push_back("quotes \"double\" and 'single'", 3);
  r.rows.push_back("new\nline and\r\ncarriage", 4);
  r.rows.push_back("{braces},commas,(parens)", 5);
  r.rows.push_back("NULL", 6);
  r.rows.push_back("\\N", 7);
  r.rows.push_back("日本語.キー.統計", 8);
  r.rows.push_back("emoji 🎉.ключ.ÅÄÖ", 9);
  r.rows.push_back(" leading and trailing spaces ", 10);
  r.rows.push_back("", 11);
  r.rows.push_back("nan", std::numeric_limits<double>::quiet_NaN());
  r.rows.push_back("inf", std::numeric_limits<double>::infinity());
  r.rows.push_back("-inf", -std::numeric_limits<double>::infinity());
  r.rows.push_back("-0", -0.0);
  r.rows.push_back("max", std::numeric_limits<double>::max());
  r.rows.push_back("denormal", 5e-324);
  r.rows.push_back("third", 1.0 / 3);
  return r;
}

const pg::commit_path every_path[] = {pg::commit_path::automatic, pg::commit_path::copy,
                                      pg::commit_path::unnest_binary,
                                      pg::commit_path::copy_via_temp, pg::commit_path::unnest_text};

const pg::batch_path every_batch_path[] = {
    pg::batch_path::together_first, pg::batch_path::together_pipelined, pg::batch_path::each_alone};

const char* path_name(pg::batch_path p) {
  switch (p) {
    case pg::batch_path::together_first:
      return "together_first";
    case pg::batch_path::together_pipelined:
      return "together_pipelined";
    case pg::batch_path::each_alone:
      return "each_alone";
  }
  return "?";
}

const char* path_name(pg::commit_path p) {
  switch (p) {
    case pg::commit_path::automatic:
      return "automatic";
    case pg::commit_path::copy:
      return "copy";
    case pg::commit_path::unnest_binary:
      return "unnest_binary";
    case pg::commit_path::copy_via_temp:
      return "copy_via_temp";
    case pg::commit_path::unnest_text:
      return "unnest_text";
  }
  return "?";
}

// The stored rows as (key, value as float8send hex, endpoint, fetched_at).
std::vector<std::vector<std::string>> stored(const test::scratch_database& db) {
  return db.query(
      "SELECT key, encode(float8send(numeric_value), 'hex'), endpoint,"
      " to_char(fetched_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
      " FROM gatherstats_statistic ORDER BY key COLLATE \"C\"");
}

std::string float8_hex(double v) {
  auto bits = std::bit_cast<std::uint64_t>(v);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(bits));
  return buf;
}

}  // namespace

ROUTED_TEST_CASE(every_path_exact,
                 "every commit path stores awkward keys, endpoints and doubles exactly",
                 "[pg][commit]") {
  for (auto path : every_path) {
    INFO(path_name(path));
    test::scratch_database db;
    REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
    auto record = awkward_record();
    auto n = test::run_async(commit_along(via(db), record, path));
    REQUIRE(n.has_value());
    CHECK(*n == record.rows.size());
    auto rows = stored(db);
    REQUIRE(rows.size() == record.rows.size());
    std::vector<std::pair<std::string, double>> expected;
    for (std::size_t i = 0; i < record.rows.size(); ++i)
      expected.emplace_back(record.rows.key(i), record.rows.value(i));
    std::sort(expected.begin(), expected.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t i = 0; i < rows.size(); ++i) {
      CHECK(rows[i][0] == expected[i].first);
      // NaN is compared by its bits too: PostgreSQL keeps the payload.
      CHECK(rows[i][1] == float8_hex(expected[i].second));
      CHECK(rows[i][2] == record.endpoint);
      CHECK(rows[i][3] == "2026-11-18 11:06:40.123456");
    }
    // Again: nothing new, whatever the path.
    auto again = test::run_async(commit_along(via(db), record, path));
    REQUIRE(again.has_value());
    CHECK(*again == 0);
    CHECK(db.count() == static_cast<long long>(record.rows.size()));
  }
}

ROUTED_TEST_CASE(big_fetch_once, "a 30,003-row fetch is stored exactly once by the default path",
                 "[pg][commit]") {
  test::scratch_database db;
  REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
  fetch_record big;
  big.endpoint = "http://iar-backend.invalid/api/stats";
  big.fetched_at = timestamp(std::chrono::microseconds(1'795'000'000'123'456));
  for (int i = 0; i < 10'001; ++i) {
    std::string inst = "asset_counts.by_institution.INST" + std::to_string(i);
    big.rows.push_back(inst + ".total", 1000 + i);
    big.rows.push_back(inst + ".completed", 900 + i);
    big.rows.push_back(inst + ".with_personal_data", i % 97);
  }
  REQUIRE(big.rows.size() == 30'003);
  REQUIRE(big.rows.size() >= pg::copy_min_rows);  // the COPY path, then its fallback
  auto first = test::run_async(commit_along(via(db), big, pg::commit_path::automatic));
  REQUIRE(first.has_value());
  CHECK(*first == 30'003);
  CHECK(db.count() == 30'003);
  // A repeat (the COPY meets stored rows and falls back): nothing new.
  auto again = test::run_async(commit_along(via(db), big, pg::commit_path::automatic));
  REQUIRE(again.has_value());
  CHECK(*again == 0);
  CHECK(db.query("SELECT count(*), count(DISTINCT key), min(fetched_at) = max(fetched_at),"
                 " sum(numeric_value)::bigint FROM gatherstats_statistic") ==
        std::vector<std::vector<std::string>>{{"30003", "30003", "t", "119491513"}});
}

ROUTED_TEST_CASE(partly_stored,
                 "a fetch partly stored already gets only its missing rows, on every path",
                 "[pg][commit]") {
  for (auto path : every_path) {
    INFO(path_name(path));
    test::scratch_database db;
    REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
    auto record = small_fetches(1, 2000).front();
    auto part = record;
    part.rows = {};
    for (std::size_t i = 0; i < record.rows.size(); i += 3)
      part.rows.push_back(record.rows.key(i), record.rows.value(i));
    REQUIRE(
        test::run_async(commit_along(via(db), part, pg::commit_path::unnest_binary)).has_value());
    auto n = test::run_async(commit_along(via(db), record, path));
    REQUIRE(n.has_value());
    CHECK(*n == record.rows.size() - part.rows.size());
    CHECK(db.count() == static_cast<long long>(record.rows.size()));
  }
}

ROUTED_TEST_CASE(refused_fetch,
                 "a refused fetch stores nothing and leaves the connection usable, on every path",
                 "[pg][commit]") {
  for (auto path : every_path) {
    INFO(path_name(path));
    test::scratch_database db;
    REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
    auto record = small_fetches(1, 1500).front();
    record.rows.push_back(std::string(513, 'k'), 1);  // longer than varchar(512)
    auto r = test::run_async(commit_along(via(db), record, path));
    REQUIRE_FALSE(r.has_value());
    CHECK_FALSE(r.error().is_transient());
    CHECK_THAT(r.error().message, Catch::Contains("too long") && Catch::Contains("22001"));
    CHECK(db.count() == 0);
  }
}

ROUTED_TEST_CASE(batch_atomic,
                 "a batch commits every fetch atomically, in one or in one transaction each",
                 "[pg][commit][batch]") {
  for (auto path : every_batch_path) {
    INFO(path_name(path));
    test::scratch_database db;
    REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
    auto records = small_fetches(50, 153);
    records.push_back(awkward_record());
    records.push_back(fetch_record{});  // empty: 0 rows, not sent
    records.back().endpoint = "http://empty.invalid/";
    auto run = test::run_async(commit_batch(via(db), records, 1, path));
    REQUIRE(run.has_value());
    REQUIRE(run->batches.at(0).size() == records.size());
    for (std::size_t i = 0; i < records.size(); ++i) {
      INFO(i);
      REQUIRE(run->batches[0][i].has_value());
      CHECK(*run->batches[0][i] == records[i].rows.size());
    }
    CHECK(run->idle_after.at(0));
    CHECK(db.count() == 50 * 153 + static_cast<long long>(awkward_record().rows.size()));
    // The rows of each fetch share one transaction (xmin); each_alone gives
    // every fetch its own, the together paths one for the whole batch.
    CHECK(db.query("SELECT count(DISTINCT xmin::text) FROM gatherstats_statistic")[0][0] ==
          (path == pg::batch_path::each_alone ? "51" : "1"));
    CHECK(db.query("SELECT count(*) FROM (SELECT 1 FROM gatherstats_statistic GROUP BY"
                   " endpoint, fetched_at HAVING count(DISTINCT xmin::text) > 1) t")[0][0] == "0");
    // The awkward keys survive the batch path too.
    CHECK(db.query("SELECT count(*) FROM gatherstats_statistic WHERE key IN"
                   " (E'tab\\there', E'new\\nline and\\r\\ncarriage', '日本語.キー.統計',"
                   " E'back\\\\slash\\\\\\\\double')")[0][0] == "4");
  }
}

ROUTED_TEST_CASE(refused_in_batch, "a fetch the database refuses fails alone in its batch",
                 "[pg][commit][batch]") {
  for (auto path : every_batch_path) {
    INFO(path_name(path));
    test::scratch_database db;
    REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
    auto records = small_fetches(7, 153);
    records[2].rows.push_back(std::string(513, 'k'), 1);              // key too long
    records[4].endpoint = std::string(1205, 'e');                     // endpoint too long
    records[5].rows.push_back(std::string("nul\0inside", 10), 1);     // never sent
    records[6].fetched_at = timestamp(std::chrono::microseconds(0));  // fine: 1970
    auto run = test::run_async(commit_batch(via(db), records, 1, path));
    REQUIRE(run.has_value());
    const auto& results = run->batches.at(0);
    REQUIRE(results.size() == 7);
    for (std::size_t i : {0, 1, 3, 6}) {
      INFO(i);
      REQUIRE(results[i].has_value());
      CHECK(*results[i] == 153);
    }
    for (std::size_t i : {2, 4, 5}) {
      INFO(i);
      REQUIRE_FALSE(results[i].has_value());
      CHECK_FALSE(results[i].error().is_transient());
    }
    CHECK_THAT(results[2].error().message, Catch::Contains("character varying(512)"));
    CHECK_THAT(results[4].error().message, Catch::Contains("character varying(1204)"));
    CHECK_THAT(results[5].error().message, Catch::Contains("NUL"));
    CHECK(run->idle_after.at(0));
    CHECK(db.count() == 4 * 153);
    CHECK(db.query("SELECT count(*) FROM gatherstats_statistic WHERE fetched_at = '" +
                   pg::format_timestamp(records[3].fetched_at) + "'")[0][0] == "153");
    // Before PostgreSQL's epoch (2000): a negative binary timestamp.
    CHECK(db.query("SELECT count(*) FROM gatherstats_statistic"
                   " WHERE fetched_at = '1970-01-01 00:00:00+00'")[0][0] == "153");
  }
}

ROUTED_TEST_CASE(batch_repeated, "repeating a batch stores nothing twice", "[pg][commit][batch]") {
  for (auto path : every_batch_path) {
    INFO(path_name(path));
    test::scratch_database db;
    REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
    auto records = small_fetches(20, 153);
    // The first batch commits half of the fetches (as if a lost connection
    // had cut it short); the repeats carry all of them.
    std::vector<fetch_record> half(records.begin(), records.begin() + 10);
    auto first = test::run_async(commit_batch(via(db), half, 1, path));
    REQUIRE(first.has_value());
    auto run = test::run_async(commit_batch(via(db), records, 2, path));
    REQUIRE(run.has_value());
    for (std::size_t i = 0; i < records.size(); ++i) {
      INFO(i);
      REQUIRE(run->batches[0][i].has_value());
      CHECK(*run->batches[0][i] == (i < 10 ? 0u : 153u));
      REQUIRE(run->batches[1][i].has_value());
      CHECK(*run->batches[1][i] == 0);
    }
    CHECK(db.count() == 20 * 153);
    CHECK(db.query("SELECT count(*) FROM gatherstats_statistic"
                   " GROUP BY endpoint, key, fetched_at HAVING count(*) > 1")
              .empty());
  }
}

ROUTED_TEST_CASE(lost_mid_batch,
                 "a connection lost mid-batch: confirmed fetches are known, the rest transient",
                 "[pg][commit][batch]") {
  for (auto path : every_batch_path) {
    INFO(path_name(path));
    const bool alone = path == pg::batch_path::each_alone;
    test::scratch_database db;
    REQUIRE(test::run_async(migrate(via(db), "gatherstats_statistic")).has_value());
    auto records = small_fetches(6, 153);
    // The fourth fetch's statement kills its own backend. each_alone: the
    // fetches before it are confirmed, it and the ones after it are not;
    // the together paths: none is (they were all in one transaction).
    db.exec(
        "CREATE FUNCTION die_on_sentinel() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.key = 'sentinel' THEN PERFORM pg_terminate_backend(pg_backend_pid());"
        " END IF; RETURN NEW; END $$;"
        "CREATE TRIGGER die BEFORE INSERT ON gatherstats_statistic"
        " FOR EACH ROW EXECUTE FUNCTION die_on_sentinel()");
    records[3].rows.push_back("sentinel", 1);
    auto run = test::run_async(commit_batch(via(db), records, 1, path));
    REQUIRE(run.has_value());
    const auto& results = run->batches.at(0);
    REQUIRE(results.size() == 6);
    const std::size_t confirmed = alone ? 3 : 0;
    for (std::size_t i = 0; i < confirmed; ++i) {
      INFO(i);
      REQUIRE(results[i].has_value());
      CHECK(*results[i] == 153);
    }
    for (std::size_t i = confirmed; i < 6; ++i) {
      INFO(i);
      REQUIRE_FALSE(results[i].has_value());
      CHECK(results[i].error().is_transient());
    }
    CHECK_FALSE(run->idle_after.at(0));
    CHECK(db.count() == static_cast<long long>(confirmed * 153));
    // The retry of the unknown ones is safe, and the known ones are not sent
    // again: the trigger gone, the rest lands once.
    db.exec("DROP TRIGGER die ON gatherstats_statistic");
    std::vector<fetch_record> retry(records.begin() + confirmed, records.end());
    auto again = test::run_async(commit_batch(via(db), retry, 1, path));
    REQUIRE(again.has_value());
    for (const auto& r : again->batches.at(0)) CHECK(r.has_value());
    CHECK(db.count() == 6 * 153 + 1);
  }
}
