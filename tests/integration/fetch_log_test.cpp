// The fetch log (gatherstats_fetch) and its view against the real
// PostgreSQL: migrate, every commit path, the daemon logging every fetch
// with its statistics in one transaction, fetch_log: false, a database
// migrated before the log existed, pruning, and a database outage.
#include "gatherstats/pg/fetch_log.hpp"
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/statistic_table.hpp"
#include "support/daemon.hpp"
#include "support/route.hpp"

#include <libpq-fe.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <memory>
#include <stdexcept>

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace gatherstats;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

const std::string data_dir = test::source_dir() + "/tests/data";
using test::lines_with;

pg::deadline soon() { return steady::now() + 20s; }

long long number(const test::scratch_database& db, const std::string& sql) {
  return std::stoll(db.query(sql).at(0).at(0));
}

// Whether `sql` runs without an error (blocking libpq, fine in a test).
bool succeeds(const test::scratch_database& db, const std::string& sql) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> c(PQconnectdb(db.conninfo().c_str()), &PQfinish);
  REQUIRE(PQstatus(c.get()) == CONNECTION_OK);
  std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(c.get(), sql.c_str()), &PQclear);
  return PQresultStatus(r.get()) == PGRES_COMMAND_OK;
}

long long log_rows(const test::scratch_database& db, const std::string& where = "true") {
  return number(db, "SELECT count(*) FROM gatherstats_fetch WHERE " + where);
}

long long requests(const test::test_server& server, const std::string& path) {
  return test::requests_served(server, path);
}
using test::spool_files;

// In one snapshot (one statement): ok log rows whose statistics are not all
// there, plus fetches in the statistics without their ok log row. Zero
// whenever looked at, if each fetch's log row and rows commit together.
long long torn_fetches(const test::scratch_database& db) {
  return number(db,
                "SELECT (SELECT count(*) FROM gatherstats_fetch f WHERE f.ok AND f.rows <>"
                "          (SELECT count(*) FROM gatherstats_statistic s"
                "            WHERE s.endpoint = f.endpoint AND s.fetched_at = f.fetched_at))"
                "     + (SELECT count(*) FROM (SELECT DISTINCT endpoint, fetched_at"
                "                                FROM gatherstats_statistic) s"
                "         WHERE NOT EXISTS (SELECT 1 FROM gatherstats_fetch f WHERE f.ok"
                "                              AND f.endpoint = s.endpoint AND f.fetched_at = "
                "s.fetched_at))");
}

fetch_record success(std::string name, std::int64_t second, std::size_t rows) {
  fetch_record r;
  r.name = name;
  r.endpoint = "http://stats.invalid/" + name;
  r.outcome.tick = timestamp(std::chrono::seconds(1'700'000'000 + second));
  r.fetched_at = r.outcome.tick + std::chrono::microseconds(123'456);
  r.outcome.duration = std::chrono::microseconds(123'456);
  r.outcome.http_status = 200;
  r.outcome.bytes = 1000 + rows;
  for (std::size_t i = 0; i < rows; ++i) r.rows.push_back("k." + std::to_string(i), double(i));
  return r;
}

fetch_record failed(std::string name, std::int64_t second) {
  fetch_record r;
  r.name = name;
  r.endpoint = "http://stats.invalid/" + name;
  r.outcome.tick = timestamp(std::chrono::seconds(1'700'000'000 + second));
  r.fetched_at = r.outcome.tick + std::chrono::milliseconds(900);
  r.outcome.duration = 900ms;
  r.outcome.reason = fetch_reason::http_status;
  // Invalid UTF-8 and a NUL, as a hostile server could make an error say.
  static const char error[] = "http://stats.invalid/x: HTTP 503 \xff\xfe\0 bad";
  r.outcome.error = std::string(error, sizeof error - 1);
  r.outcome.http_status = 503;
  return r;
}

// Commits `records` twice by `how` (a commit_path as 1..4, or a batch
// path as 10 + batch_path) with the fetch log; returns each round's outcomes.
asio::awaitable<std::vector<std::vector<outcome<std::size_t>>>> commit_twice(
    std::string conninfo, std::vector<fetch_record> records, int how) {
  std::vector<std::vector<outcome<std::size_t>>> rounds;
  auto conn = co_await pg::connection::async_connect(conninfo, soon());
  if (!conn) throw std::runtime_error(conn.error().message);
  const auto table = pg::table_name::parse("gatherstats_statistic").value();
  const pg::commit_tables tables{table, pg::fetch_log_table(table)};
  std::vector<const fetch_record*> pointers;
  for (const auto& r : records) pointers.push_back(&r);
  for (int round = 0; round < 2; ++round) {
    if (how >= 10) {
      std::span<const fetch_record* const> view(pointers);
      rounds.push_back(co_await pg::async_commit_batch(*conn, tables, view, soon(),
                                                       static_cast<pg::batch_path>(how - 10)));
      continue;
    }
    auto& out = rounds.emplace_back();
    for (const auto& r : records)
      out.push_back(
          co_await pg::async_commit(*conn, tables, r, soon(), static_cast<pg::commit_path>(how)));
  }
  co_return rounds;
}

asio::awaitable<outcome<pg::migrated>> migrate_in(std::string conninfo, std::string table) {
  auto conn = co_await pg::connection::async_connect(conninfo, soon());
  if (!conn) co_return conn.error();
  auto name = pg::table_name::parse(table).value();
  co_return co_await pg::async_migrate(*conn, name, soon());
}

}  // namespace

TEST_CASE("migrate creates the fetch log and its view beside the table, and is idempotent",
          "[fetch log][schema]") {
  SECTION("a new database") {
    test::scratch_database db;
    db.migrate();
    CHECK(db.query("SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                   " WHERE table_name = 'gatherstats_fetch' ORDER BY ordinal_position") ==
          std::vector<std::vector<std::string>>{{"id", "bigint", "NO"},
                                                {"endpoint_name", "text", "NO"},
                                                {"endpoint", "character varying", "NO"},
                                                {"tick", "timestamp with time zone", "NO"},
                                                {"fetched_at", "timestamp with time zone", "NO"},
                                                {"duration_ms", "double precision", "NO"},
                                                {"ok", "boolean", "NO"},
                                                {"reason", "text", "YES"},
                                                {"error", "text", "YES"},
                                                {"http_status", "smallint", "YES"},
                                                {"bytes", "bigint", "NO"},
                                                {"rows", "integer", "NO"}});
    CHECK(db.count("gatherstats_endpoint_health") == 0);
    const std::string objects =
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public'";
    auto before = number(db, objects);
    db.migrate();
    CHECK(number(db, objects) == before);
    // The reason is one of the fixed set, and says whether the fetch was ok.
    const std::string row =
        "INSERT INTO gatherstats_fetch (endpoint_name, endpoint, tick, fetched_at, duration_ms,"
        " ok, reason, bytes, rows) VALUES ('a', 'e', now(), now(), 1, ";
    auto refused = [&](const std::string& rest) { return !succeeds(db, row + rest); };
    CHECK(refused("false, 'bogus', 0, 0)"));
    CHECK(refused("true, 'dns', 0, 0)"));
    CHECK(refused("false, NULL, 0, 0)"));
    CHECK_FALSE(refused("false, 'timeout', 0, 0)"));
  }
  SECTION("a database the original tool created gets the log; its table is left as it is") {
    test::scratch_database db;
    db.create_original_table();
    db.exec(
        "INSERT INTO gatherstats_statistic (endpoint, key, numeric_value, fetched_at)"
        " VALUES ('e', 'k', 1, now())");
    db.migrate();
    CHECK(db.count("gatherstats_fetch") == 0);
    CHECK(db.count() == 1);
    CHECK(db.query("SELECT data_type FROM information_schema.columns"
                   " WHERE table_name = 'gatherstats_statistic' AND column_name = 'id'")[0][0] ==
          "integer");
    db.migrate();
  }
  SECTION("a schema-qualified table has its log and view in its schema") {
    test::scratch_database db;
    db.exec("CREATE SCHEMA stats");
    auto first = test::run_async(migrate_in(db.conninfo(), "stats.gatherstats_statistic"));
    REQUIRE(first.has_value());
    CHECK(first->table);
    CHECK(first->fetch_log);
    CHECK(db.count("stats.gatherstats_fetch") == 0);
    CHECK(db.count("stats.gatherstats_endpoint_health") == 0);
    CHECK(db.query("SELECT to_regclass('public.gatherstats_fetch') IS NULL")[0][0] == "t");
    auto again = test::run_async(migrate_in(db.conninfo(), "stats.gatherstats_statistic"));
    REQUIRE(again.has_value());
    CHECK_FALSE(again->table);
    CHECK_FALSE(again->fetch_log);
  }
}

ROUTED_TEST_CASE(
    logged_once_on_every_path,
    "every commit path logs each fetch once, with its statistics, however often it is committed",
    "[fetch log][commit]") {
  // 1..4: copy, unnest_binary, copy_via_temp, unnest_text (commit_path;
  // automatic is one of the first two); 10..12: the batch paths.
  for (int how : {1, 2, 3, 4, 10, 11, 12}) {
    DYNAMIC_SECTION("path " << how) {
      test::scratch_database db;
      db.migrate();
      std::vector<fetch_record> records{success("small", 0, 3), failed("down", 0),
                                        success("big", 0, 150), success("empty", 0, 0)};
      auto rounds = test::run_async(commit_twice(via(db), records, how));
      REQUIRE(rounds.size() == 2);
      for (std::size_t i = 0; i < records.size(); ++i) {
        INFO("record " << i);
        REQUIRE(rounds[0][i].has_value());
        CHECK(*rounds[0][i] == records[i].rows.size());
        REQUIRE(rounds[1][i].has_value());
        CHECK(*rounds[1][i] == 0);
      }
      CHECK(db.count() == 153);
      CHECK(db.count("gatherstats_fetch") == 4);
      CHECK(torn_fetches(db) == 0);
      CHECK(db.query("SELECT endpoint_name, ok, coalesce(reason, '-'), coalesce(http_status, 0),"
                     " rows, bytes, duration_ms, tick = '2023-11-14 22:13:20+00',"
                     " fetched_at - tick FROM gatherstats_fetch ORDER BY endpoint_name") ==
            std::vector<std::vector<std::string>>{
                {"big", "t", "-", "200", "150", "1150", "123.456", "t", "00:00:00.123456"},
                {"down", "f", "http_status", "503", "0", "0", "900", "t", "00:00:00.9"},
                {"empty", "t", "-", "200", "0", "1000", "123.456", "t", "00:00:00.123456"},
                {"small", "t", "-", "200", "3", "1003", "123.456", "t", "00:00:00.123456"}});
      // The error is kept, made valid UTF-8 without its NUL.
      CHECK(db.query("SELECT error FROM gatherstats_fetch WHERE NOT ok")[0][0] ==
            "http://stats.invalid/x: HTTP 503 \xEF\xBF\xBD\xEF\xBF\xBD  bad");
      CHECK(
          db.query("SELECT count(*) FROM gatherstats_fetch WHERE ok AND error IS NOT NULL")[0][0] ==
          "0");
    }
  }
}

ROUTED_TEST_CASE(refused_fetch_unlogged,
                 "a fetch the database refuses leaves no log row, and the others keep theirs",
                 "[fetch log][commit]") {
  for (int how : {1, 2, 10, 11, 12}) {
    DYNAMIC_SECTION("path " << how) {
      test::scratch_database db;
      db.migrate();
      auto refused = success("refused", 1, 3);
      refused.rows.push_back(std::string(600, 'k'), 1);  // longer than key varchar(512)
      std::vector<fetch_record> records{success("a", 1, 3), refused, failed("b", 1)};
      auto rounds = test::run_async(commit_twice(via(db), records, how));
      CHECK(rounds[0][0].has_value());
      CHECK_FALSE(rounds[0][1].has_value());
      CHECK(rounds[0][2].has_value());
      CHECK(log_rows(db, "endpoint_name = 'refused'") == 0);
      CHECK(log_rows(db) == 2);
      CHECK(db.count() == 3);
    }
  }
}

TEST_CASE("the view: consecutive failures, the last success and failure, the day's ratio",
          "[fetch log][view]") {
  test::scratch_database db;
  db.migrate();
  // a: ok, ok, then three failures (and old failures outside the day);
  // b: a failure, then ok; c: never ok.
  db.exec(
      "INSERT INTO gatherstats_fetch (endpoint_name, endpoint, tick, fetched_at, duration_ms, ok,"
      " reason, error, http_status, bytes, rows)"
      " SELECT n, 'e', now() - m * interval '1 minute', now() - m * interval '1 minute'"
      "   + interval '1 second', 5, ok, CASE WHEN ok THEN NULL ELSE 'timeout' END,"
      "   CASE WHEN ok THEN NULL ELSE 'timed out ' || m END, NULL, 10, 1"
      " FROM (VALUES ('a', 5, true), ('a', 4, true), ('a', 3, false), ('a', 2, false),"
      "              ('a', 1, false), ('a', 2880, false), ('a', 2881, false),"
      "              ('b', 2, false), ('b', 1, true),"
      "              ('c', 2882, false), ('c', 3, false), ('c', 2, false), ('c', 1, false))"
      "   AS v(n, m, ok)");
  auto health = db.query(
      "SELECT endpoint_name, consecutive_failures, fetches_last_day,"
      " round(success_ratio_last_day::numeric, 2),"
      " coalesce(extract(epoch FROM now() - last_success)::int, -1),"
      " extract(epoch FROM now() - last_failure)::int, last_failure_reason, last_failure_error"
      " FROM gatherstats_endpoint_health ORDER BY endpoint_name");
  CHECK(health == std::vector<std::vector<std::string>>{
                      {"a", "3", "5", "0.40", "239", "59", "timeout", "timed out 1"},
                      {"b", "0", "2", "0.50", "59", "119", "timeout", "timed out 2"},
                      {"c", "4", "3", "0.00", "-1", "59", "timeout", "timed out 1"}});
}

TEST_CASE(
    "the daemon logs every fetch, failures with their reason, each success in one transaction "
    "with its statistics",
    "[fetch log][daemon]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server("", data_dir);
  test::daemon_process d(test::database_yaml(db) +
                         "defaults: {interval: 1s, timeout: 900ms, retries: 0}\n"
                         "endpoints:\n"
                         "  - {name: good, url: \"" +
                         server.url("/stats") +
                         "\"}\n"
                         "  - {name: unavailable, url: \"" +
                         server.url("/status/503") +
                         "\"}\n"
                         "  - {name: garbage, url: \"" +
                         server.url("/garbage") + "\"}\n");
  // Looked at while the daemon commits: never a fetch without its log row
  // or a log row without its fetch.
  long long torn = 0;
  bool logged = test::eventually(
      [&] {
        torn += torn_fetches(db);
        return log_rows(db, "endpoint_name = 'good'") >= 4 &&
               log_rows(db, "endpoint_name = 'unavailable'") >= 4 &&
               log_rows(db, "endpoint_name = 'garbage'") >= 4;
      },
      30s);
  d.stop_cleanly();
  INFO(d.log_text());
  REQUIRE(logged);
  CHECK(torn == 0);
  CHECK(torn_fetches(db) == 0);
  // Every request the server answered is a log row (or, when the stop cut
  // its commit short, a spooled fetch).
  const long long left = spool_files(d.spool_dir());
  CHECK(log_rows(db) + left == requests(server, "/stats") + requests(server, "/status/503") +
                                   requests(server, "/garbage"));
  CHECK(left <= 3);
  const std::string good_url = server.url("/stats");
  CHECK(log_rows(db,
                 "endpoint_name = 'good' AND (NOT ok OR reason IS NOT NULL OR rows <> 15"
                 " OR http_status <> 200 OR bytes = 0 OR endpoint <> '" +
                     good_url + "')") == 0);
  CHECK(log_rows(db, "endpoint_name = 'good'") == test::fetches_of(db, good_url));
  CHECK(log_rows(db,
                 "endpoint_name = 'unavailable' AND (ok OR reason <> 'http_status'"
                 " OR http_status <> 503 OR rows <> 0 OR error NOT LIKE '%503%')") == 0);
  CHECK(log_rows(db,
                 "endpoint_name = 'garbage' AND (ok OR reason <> 'parse'"
                 " OR http_status <> 200 OR rows <> 0 OR error IS NULL)") == 0);
  // Each fetch is logged for its own tick: whole seconds apart, before the
  // fetch ended, and its duration from the tick.
  CHECK(log_rows(db, "tick > fetched_at OR duration_ms <= 0 OR duration_ms > 5000") == 0);
  CHECK(number(db,
               "SELECT count(*) FROM (SELECT tick - lag(tick) OVER (PARTITION BY endpoint_name"
               " ORDER BY tick) AS step FROM gatherstats_fetch) s"
               " WHERE step IS NOT NULL AND (step < interval '1 second'"
               "  OR extract(microseconds FROM step)::bigint % 1000000 <> 0)") == 0);
  CHECK(test::fetches_of(db, server.url("/status/503")) == 0);
}

TEST_CASE("fetch_log: false writes no log row, and failures are not kept for one",
          "[fetch log][daemon]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  const std::string good = server.url("/stats");
  test::daemon_process d(test::database_yaml(db) +
                         "  fetch_log: false\n"
                         "defaults: {interval: 1s, timeout: 900ms, retries: 0}\n"
                         "endpoints:\n"
                         "  - {name: good, url: \"" +
                         good +
                         "\"}\n"
                         "  - {name: unavailable, url: \"" +
                         server.url("/status/503") + "\"}\n");
  bool committed = test::eventually(
      [&] {
        return test::fetches_of(db, good) >= 3 &&
               lines_with(d.log_text(), "fetch failed endpoint=unavailable") >= 3;
      },
      20s);
  d.stop_cleanly();
  INFO(d.log_text());
  CHECK(committed);
  CHECK(db.count("gatherstats_fetch") == 0);
  CHECK(spool_files(d.spool_dir()) == 0);
}

TEST_CASE(
    "a database migrated before the fetch log: one warning naming it, and the statistics keep "
    "coming",
    "[fetch log][daemon]") {
  test::scratch_database db;
  db.create_original_table();  // no `migrate`: no fetch log
  test::test_server server;
  const std::string good = server.url("/stats");
  test::daemon_process d(test::database_yaml(db) +
                         "defaults: {interval: 1s, timeout: 900ms, retries: 0}\n"
                         "endpoints:\n"
                         "  - {name: good, url: \"" +
                         good +
                         "\"}\n"
                         "  - {name: unavailable, url: \"" +
                         server.url("/status/503") + "\"}\n");
  bool committed = test::eventually(
      [&] {
        return test::fetches_of(db, good) >= 4 &&
               lines_with(d.log_text(), "fetch failed endpoint=unavailable") >= 4;
      },
      20s);
  d.stop_cleanly();
  const std::string log = d.log_text();
  INFO(log);
  CHECK(committed);
  // Two connections (pool_size 2) found it missing: said once.
  CHECK(lines_with(log, "gatherstats_fetch does not exist") == 1);
  CHECK(lines_with(log, "run `gatherstatsd migrate`") == 1);
  CHECK(lines_with(log, "commit failed") == 0);
  CHECK(lines_with(log, "pruning the fetch log failed") == 0);
  CHECK(db.query("SELECT to_regclass('gatherstats_fetch') IS NULL")[0][0] == "t");
  CHECK(spool_files(d.spool_dir()) == 0);
}

TEST_CASE("the fetch log dropped under a running daemon: one warning, and no statistics lost",
          "[fetch log][daemon]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  const std::string good = server.url("/stats");
  test::daemon_process d(test::database_yaml(db) +
                         "defaults: {interval: 1s, timeout: 900ms, retries: 0}\n"
                         "endpoints:\n"
                         "  - {name: good, url: \"" +
                         good + "\"}\n");
  REQUIRE(test::eventually([&] { return log_rows(db) >= 2; }, 20s));
  db.exec("DROP VIEW gatherstats_endpoint_health; DROP TABLE gatherstats_fetch");
  auto at_drop = test::fetches_of(db, good);
  bool going_on = test::eventually([&] { return test::fetches_of(db, good) >= at_drop + 3; }, 20s);
  d.stop_cleanly();
  const std::string log = d.log_text();
  INFO(log);
  CHECK(going_on);
  CHECK(lines_with(log, "has gone (dropped?)") == 1);
  CHECK(lines_with(log, "commit failed") == 0);
  // Every request answered is stored (or was spooled at the stop).
  CHECK(test::fetches_of(db, good) + spool_files(d.spool_dir()) == requests(server, "/stats"));
}

TEST_CASE("rows older than fetch_log_retention are pruned in batches, and the rest stay",
          "[fetch log][daemon][prune]") {
  test::scratch_database db;
  db.migrate();
  // 2,500 rows two days old (three batches of 1,000), ten of an hour ago.
  db.exec(
      "INSERT INTO gatherstats_fetch (endpoint_name, endpoint, tick, fetched_at, duration_ms, ok,"
      " bytes, rows)"
      " SELECT 'old', 'e', t, t, 1, true, 1, 1"
      " FROM generate_series(1, 2500) AS i,"
      "      LATERAL (SELECT now() - interval '2 days' - i * interval '1 second' AS t) s;"
      "INSERT INTO gatherstats_fetch (endpoint_name, endpoint, tick, fetched_at, duration_ms, ok,"
      " bytes, rows)"
      " SELECT 'recent', 'e', t, t, 1, true, 1, 1"
      " FROM generate_series(1, 10) AS i,"
      "      LATERAL (SELECT now() - interval '1 hour' - i * interval '1 second' AS t) s");
  test::test_server server;
  test::daemon_process d(test::database_yaml(db) +
                         "  fetch_log_retention: 1d\n"
                         "endpoints:\n"
                         "  - {name: good, url: \"" +
                         server.url("/stats") + "\", interval: 1h}\n");
  bool pruned = test::eventually([&] { return log_rows(db, "endpoint_name = 'old'") == 0; }, 20s);
  CHECK(d.logged("fetch log pruned", 5s));
  d.stop_cleanly();
  INFO(d.log_text());
  CHECK(pruned);
  CHECK(log_rows(db, "endpoint_name = 'recent'") == 10);
  CHECK(lines_with(d.log_text(), "2500 row(s) older than 86400 s deleted") == 1);
}

TEST_CASE(
    "the database stopped: failed and successful fetches wait in the spool and are logged once "
    "when it returns",
    "[fetch log][daemon][fault]") {
  test::private_cluster pg;
  test::scratch_database db(pg.admin_conninfo());
  db.migrate();
  test::test_server server;
  const std::string good = server.url("/stats");
  // Memory for a fetch or two: the outage goes to the spool.
  test::daemon_process d(test::database_yaml(db) +
                         "defaults: {interval: 1s, timeout: 900ms, retries: 0}\n"
                         "endpoints:\n"
                         "  - {name: good, url: \"" +
                         good +
                         "\"}\n"
                         "  - {name: unavailable, url: \"" +
                         server.url("/status/503") +
                         "\"}\n"
                         "spool: {directory: @SPOOL@, memory_max_bytes: 1KiB}\n");
  REQUIRE(test::eventually([&] { return log_rows(db, "endpoint_name = 'good'") >= 2; }, 20s));
  pg.down();
  auto before = requests(server, "/status/503");
  REQUIRE(d.logged("database lost", 10s));
  REQUIRE(test::eventually([&] { return requests(server, "/status/503") >= before + 5; }, 20s));
  CHECK(spool_files(d.spool_dir()) > 0);
  pg.up();
  REQUIRE(d.logged("database back", 40s));
  bool caught_up = test::eventually(
      [&] {
        return log_rows(db, "endpoint_name = 'good'") >= requests(server, "/stats") &&
               log_rows(db, "endpoint_name = 'unavailable'") >= requests(server, "/status/503");
      },
      60s);
  d.stop_cleanly();
  INFO(d.log_text());
  CHECK(caught_up);
  const long long left = spool_files(d.spool_dir());
  CHECK(left <= 2);
  CHECK(log_rows(db) + left == requests(server, "/stats") + requests(server, "/status/503"));
  CHECK(log_rows(db, "endpoint_name = 'unavailable' AND (ok OR http_status <> 503)") == 0);
  CHECK(log_rows(db, "endpoint_name = 'unavailable'") >= 5);
  CHECK(log_rows(db, "endpoint_name = 'good' AND NOT ok") == 0);
  CHECK(log_rows(db, "endpoint_name = 'good'") == test::fetches_of(db, good));
  CHECK(torn_fetches(db) == 0);
  CHECK(lines_with(d.log_text(), "results dropped") == 0);
}
