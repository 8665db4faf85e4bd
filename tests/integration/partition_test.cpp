// The partitioned layout against a real PostgreSQL: `gatherstatsd migrate
// --partitioned` (a new table, a plain one converted), what Django and our
// commits do with it, and the upkeep (partitions ahead, those past the
// retention dropped), straight and through PgBouncer.
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/partitions.hpp"
#include "gatherstats/pg/statistic_table.hpp"
#include "gatherstats/retention/partition_plan.hpp"
#include "support/daemon.hpp"
#include "support/process.hpp"
#include "support/route.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

namespace asio = boost::asio;
using namespace gatherstats;
using namespace std::chrono;
using namespace std::chrono_literals;

namespace {

pg::deadline in(milliseconds d) { return steady_clock::now() + d; }
constexpr auto generous = seconds(20);

test::run_result migrate(const std::string& conninfo, std::vector<std::string> more = {}) {
  std::vector<std::string> argv{test::daemon_bin(), "migrate", "--database", conninfo};
  argv.insert(argv.end(), more.begin(), more.end());
  return test::run(argv);
}

// "relname FROM..TO" for each partition, as the catalog has them.
std::vector<std::string> partitions_of(const test::scratch_database& db,
                                       const std::string& table = "gatherstats_statistic") {
  std::vector<std::string> out;
  for (auto& row : db.query("SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)"
                            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                            " WHERE i.inhparent = '" +
                            table + "'::regclass ORDER BY c.relname"))
    out.push_back(row[0]);
  return out;
}

std::string relkind(const test::scratch_database& db, const std::string& table) {
  return db.query("SELECT relkind FROM pg_class WHERE oid = '" + table + "'::regclass")[0][0];
}

// The definitions of the table's unique constraints.
std::vector<std::string> unique_key_of(const test::scratch_database& db, const std::string& table) {
  std::vector<std::string> out;
  for (auto& row :
       db.query("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '" + table +
                "'::regclass AND contype = 'u' ORDER BY 1"))
    out.push_back(row[0]);
  return out;
}

std::string day_name(timestamp t) {
  return retention::partition_name("gatherstats_statistic", t,
                                   duration_cast<milliseconds>(days(1)));
}

fetch_record record_at(timestamp t, int rows, const std::string& endpoint = "http://e.invalid/") {
  fetch_record r;
  r.endpoint = endpoint;
  r.fetched_at = t;
  for (int i = 0; i < rows; ++i) r.rows.push_back("k" + std::to_string(i), i);
  return r;
}

// Commits `r` by the default path on a connection of its own.
asio::awaitable<outcome<std::size_t>> commit(std::string conninfo, fetch_record r) {
  auto conn = co_await pg::connection::async_connect(conninfo, in(generous));
  if (!conn) co_return conn.error();
  auto table = pg::table_name::parse("gatherstats_statistic").value();
  co_return co_await pg::async_commit(*conn, table, r, in(generous));
}

asio::awaitable<outcome<std::optional<retention::partition>>> create_for(std::string conninfo,
                                                                         timestamp t) {
  auto conn = co_await pg::connection::async_connect(conninfo, in(generous));
  if (!conn) co_return conn.error();
  auto table = pg::table_name::parse("gatherstats_statistic").value();
  co_return co_await pg::async_create_partition_for(*conn, table, t, in(generous));
}

asio::awaitable<outcome<pg::partition_upkeep>> keep(std::string conninfo,
                                                    std::optional<milliseconds> retention,
                                                    timestamp now) {
  auto conn = co_await pg::connection::async_connect(conninfo, in(generous));
  if (!conn) co_return conn.error();
  auto table = pg::table_name::parse("gatherstats_statistic").value();
  auto listed = co_await pg::async_list_partitions(*conn, table, in(generous));
  if (!listed) co_return listed.error();
  if (!*listed) co_return failure::permanent("not partitioned");
  co_return co_await pg::async_keep_partitions(*conn, table, **listed, retention, now,
                                               in(generous));
}

}  // namespace

ROUTED_TEST_CASE(partitioned_new,
                 "migrate --partitioned creates a table Django and our commits use unchanged",
                 "[pg][partition]") {
  test::scratch_database db;
  auto made = migrate(via(db), {"--partitioned"});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  const auto today = floor<days>(now_utc());
  CHECK_THAT(made.out, Catch::StartsWith("Created table gatherstats_statistic partitioned by "
                                         "fetched_at, one partition per 1d: " +
                                         day_name(today)));
  CHECK(relkind(db, "gatherstats_statistic") == "p");
  // The plain layout's columns, types and nullability.
  CHECK(
      db.query("SELECT column_name, data_type, coalesce(character_maximum_length, 0),"
               " is_nullable FROM information_schema.columns"
               " WHERE table_name = 'gatherstats_statistic' ORDER BY ordinal_position") ==
      std::vector<std::vector<std::string>>{{"id", "bigint", "0", "NO"},
                                            {"endpoint", "character varying", "1204", "NO"},
                                            {"key", "character varying", "512", "NO"},
                                            {"numeric_value", "double precision", "0", "NO"},
                                            {"fetched_at", "timestamp with time zone", "0", "NO"}});
  // The unique key, its columns in the order that keeps a fetch's rows
  // side by side in the index.
  CHECK(unique_key_of(db, "gatherstats_statistic") ==
        std::vector<std::string>{"UNIQUE (endpoint, fetched_at, key)"});
  // Today and the two days after it.
  REQUIRE(partitions_of(db).size() == 3);
  CHECK_THAT(partitions_of(db)[0], Catch::StartsWith(day_name(today) + " FOR VALUES FROM ('"));
  CHECK_THAT(partitions_of(db)[2], Catch::StartsWith(day_name(today + days(2)) + " "));

  // Django inserts one row at a time and reads the id back.
  auto id = db.query(
      "INSERT INTO gatherstats_statistic (endpoint, key, numeric_value, fetched_at)"
      " VALUES ('http://django.invalid/', 'a.b', 1.5, now()) RETURNING id, tableoid::regclass");
  CHECK(id[0][0] == "1");
  CHECK(id[0][1] == day_name(today));
  // Ours, by COPY (200 rows) and by INSERT ... ON CONFLICT (3 rows), twice
  // each: the unique key works across the partitioned table.
  const auto tomorrow = timestamp(today + days(1) + hours(3));
  const auto just_now = now_utc() - seconds(1);
  for (int repeat = 0; repeat < 2; ++repeat) {
    auto big = test::run_async(commit(via(db), record_at(just_now, 200)));
    REQUIRE(big.has_value());
    CHECK(*big == (repeat == 0 ? 200u : 0u));
    auto small = test::run_async(commit(via(db), record_at(tomorrow, 3)));
    REQUIRE(small.has_value());
    CHECK(*small == (repeat == 0 ? 3u : 0u));
  }
  CHECK(db.query("SELECT tableoid::regclass::text, count(*) FROM gatherstats_statistic"
                 " GROUP BY 1 ORDER BY 1") ==
        std::vector<std::vector<std::string>>{{day_name(today), "201"},
                                              {day_name(today + days(1)), "3"}});
  // The existing queries read it (docs/schema.md, SQL cookbook).
  CHECK(db.query("SELECT count(DISTINCT key) FROM (SELECT DISTINCT ON (key) key, numeric_value"
                 " FROM gatherstats_statistic WHERE endpoint = 'http://e.invalid/'"
                 " ORDER BY key, fetched_at DESC) latest")[0][0] == "200");

  // Again: nothing to do.
  auto again = migrate(via(db), {"--partitioned"});
  REQUIRE(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::StartsWith("Table gatherstats_statistic is partitioned already; "
                                          "its partitions are up to date"));
  // And a plain migrate checks it and finds it usable.
  auto plain = migrate(via(db));
  REQUIRE(plain.exit_code == 0);
  CHECK_THAT(plain.out, Catch::Contains("already exists and is usable"));
}

TEST_CASE("a row with no partition is refused until its partition is created", "[pg][partition]") {
  test::scratch_database db;
  REQUIRE(migrate(db.conninfo(), {"--partitioned", "--partition-interval", "1h"}).exit_code == 0);
  const auto long_ago = timestamp(sys_days(year(2026) / March / 1) + hours(5) + minutes(7));
  auto refused = test::run_async(commit(db.conninfo(), record_at(long_ago, 3)));
  REQUIRE_FALSE(refused.has_value());
  CHECK_FALSE(refused.error().is_transient());
  CHECK(pg::no_partition_for_row(refused.error()));
  // Another refusal is not taken for one.
  CHECK_FALSE(pg::no_partition_for_row(failure::permanent("value too long (SQLSTATE 22001)")));

  auto made = test::run_async(create_for(db.conninfo(), long_ago));
  REQUIRE(made.has_value());
  REQUIRE(made->has_value());
  CHECK((*made)->name == "gatherstats_statistic_p20260301_0500");
  auto stored = test::run_async(commit(db.conninfo(), record_at(long_ago, 3)));
  REQUIRE(stored.has_value());
  CHECK(*stored == 3);
  // There already: nothing created.
  auto again = test::run_async(create_for(db.conninfo(), long_ago + minutes(30)));
  REQUIRE(again.has_value());
  CHECK_FALSE(again->has_value());
}

ROUTED_TEST_CASE(partition_upkeep,
                 "upkeep creates partitions ahead and drops those past the retention",
                 "[pg][partition]") {
  test::scratch_database db;
  REQUIRE(migrate(db.conninfo(), {"--partitioned", "--partition-interval", "1h"}).exit_code == 0);
  const auto now = now_utc();
  const auto hour = retention::interval_of(now, hours(1)).from;
  // Five hours back, each with a row.
  for (int h = 1; h <= 5; ++h) {
    auto made = test::run_async(create_for(via(db), hour - hours(h) + minutes(1)));
    REQUIRE(made.has_value());
    REQUIRE(
        test::run_async(commit(via(db), record_at(hour - hours(h) + minutes(1), 2))).has_value());
  }
  REQUIRE(partitions_of(db).size() == 8);
  // Three hours of retention at `now + 1h`: the partitions ending at or
  // before now - 2h go (hours -5, -4, -3), and the hour after the last
  // one ahead is created.
  auto kept = test::run_async(keep(via(db), hours(3), now + hours(1)));
  REQUIRE(kept.has_value());
  INFO((kept->problem ? kept->problem->message : std::string()));
  CHECK_FALSE(kept->problem.has_value());
  REQUIRE(kept->dropped.size() == 3);
  CHECK(kept->dropped[0].to == hour - hours(4));
  CHECK(kept->dropped[2].to == hour - hours(2));
  REQUIRE(kept->created.size() == 1);
  CHECK(kept->created[0].from == hour + hours(3));
  CHECK(kept->next_pass == minutes(30));
  CHECK(partitions_of(db).size() == 6);
  CHECK(db.count() == 4);
  CHECK(db.query("SELECT count(*) FROM pg_class WHERE relname LIKE 'gatherstats_statistic_p%'"
                 " AND relkind = 'r'")[0][0] == "6");  // dropped, not only detached
  // A second pass has nothing to do.
  auto second = test::run_async(keep(via(db), hours(3), now + hours(1)));
  REQUIRE(second.has_value());
  CHECK(second->created.empty());
  CHECK(second->dropped.empty());
}

// A plain table converted: rows, ids, privileges kept; the swap reported.
static void check_converted(const test::scratch_database& db, const test::run_result& r,
                            long long rows, const std::string& id_type) {
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::StartsWith("Converted table gatherstats_statistic to the partitioned "
                                      "layout without copying a row: its rows are partition "
                                      "gatherstats_statistic_p00000000 (fetched_at before "));
  CHECK_THAT(r.out, Catch::Contains("the switch held the table's lock for "));
  CHECK(relkind(db, "gatherstats_statistic") == "p");
  CHECK(db.count() == rows);
  CHECK(db.count("gatherstats_statistic_p00000000") == rows);
  auto parts = partitions_of(db);
  REQUIRE(parts.size() == 2);
  CHECK_THAT(parts[0],
             Catch::StartsWith("gatherstats_statistic_p00000000 FOR VALUES FROM (MINVALUE) TO ("));
  // The unique key in the partitioned table's column order, on both; the
  // first partition keeps its old one until its range has passed.
  const std::vector<std::string> efk{"UNIQUE (endpoint, fetched_at, key)"};
  CHECK(unique_key_of(db, "gatherstats_statistic") == efk);
  CHECK(unique_key_of(db, "gatherstats_statistic_p00000000") ==
        std::vector<std::string>{"UNIQUE (endpoint, fetched_at, key)",
                                 "UNIQUE (endpoint, key, fetched_at)"});
  CHECK_THAT(r.out, Catch::Contains("building the unique index in the order (endpoint, "
                                    "fetched_at, key) "));
  // The id goes on from where it was, in the type it had.
  CHECK(db.query("SELECT data_type FROM information_schema.columns WHERE table_name ="
                 " 'gatherstats_statistic' AND column_name = 'id'")[0][0] == id_type);
  auto id = db.query(
      "INSERT INTO gatherstats_statistic (endpoint, key, numeric_value, fetched_at)"
      " VALUES ('http://django.invalid/', 'a.b', 1.5, now()) RETURNING id");
  CHECK(std::stoll(id[0][0]) > rows);
  CHECK(db.query("SELECT count(*) = count(DISTINCT id) FROM gatherstats_statistic")[0][0] == "t");
  // The reader granted SELECT on the old table can read the new one.
  CHECK(db.query("SELECT has_table_privilege('" + db.name() +
                 "_reader', 'gatherstats_statistic', 'SELECT')")[0][0] == "t");
  // Ours commit into it.
  auto stored = test::run_async(commit(db.conninfo(), record_at(now_utc(), 150)));
  REQUIRE(stored.has_value());
  CHECK(*stored == 150);
  // Upkeep before the first partition's bound leaves the old key; after
  // it, drops it.
  const auto bound = db.query(
      "SELECT (extract(epoch FROM substring(pg_get_expr(relpartbound, oid)"
      " FROM 'TO \\(''([^'']*)''\\)')::timestamptz) * 1000000)::bigint FROM pg_class"
      " WHERE relname = 'gatherstats_statistic_p00000000'")[0][0];
  const timestamp first_ends{microseconds(std::stoll(bound))};
  auto early = test::run_async(keep(db.conninfo(), std::nullopt, first_ends - seconds(1)));
  REQUIRE(early.has_value());
  CHECK(early->retired_keys.empty());
  auto late = test::run_async(keep(db.conninfo(), std::nullopt, first_ends));
  REQUIRE(late.has_value());
  INFO((late->problem ? late->problem->message : std::string()));
  CHECK_FALSE(late->problem.has_value());
  CHECK(late->retired_keys ==
        std::vector<std::string>{"gatherstats_statistic_p00000000."
                                 "gatherstats_statistic_p00000000_endpoint_key_fetched_at_key"});
  CHECK(unique_key_of(db, "gatherstats_statistic_p00000000") == efk);
  // Converted once: a second run leaves it.
  auto again = migrate(db.conninfo(), {"--partitioned", "--partition-interval", "1h"});
  REQUIRE(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::StartsWith("Table gatherstats_statistic is partitioned already"));
  CHECK(db.count("gatherstats_statistic_p00000000") == rows + 1 + 150);
}

static void fill(const test::scratch_database& db, int rows) {
  // Roles are the cluster's: one per test database.
  db.exec("CREATE ROLE " + db.name() + "_reader");
  db.exec("GRANT SELECT ON gatherstats_statistic TO " + db.name() + "_reader");
  db.exec(
      "INSERT INTO gatherstats_statistic (endpoint, key, numeric_value, fetched_at)"
      " SELECT 'http://old.invalid/' || (i % 7), 'k' || i, i,"
      "        now() - i * interval '1 second' FROM generate_series(1, " +
      std::to_string(rows) + ") AS i");
}

TEST_CASE("migrate --partitioned converts our plain table without copying a row",
          "[pg][partition]") {
  test::scratch_database db;
  db.migrate();
  fill(db, 20'000);
  check_converted(db, migrate(db.conninfo(), {"--partitioned", "--partition-interval", "1h"}),
                  20'000, "bigint");
}

TEST_CASE("migrate --partitioned converts the original's table, serial id and all",
          "[pg][partition]") {
  test::scratch_database db;
  db.create_original_table();
  fill(db, 5'000);
  check_converted(db, migrate(db.conninfo(), {"--partitioned", "--partition-interval", "1h"}),
                  5'000, "integer");
}

TEST_CASE("a table a view depends on is not converted, and is left as it was", "[pg][partition]") {
  test::scratch_database db;
  db.migrate();
  fill(db, 100);
  db.exec("CREATE VIEW latest AS SELECT max(fetched_at) FROM gatherstats_statistic");
  auto r = migrate(db.conninfo(), {"--partitioned"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("cannot convert gatherstats_statistic to the partitioned "
                                    "layout: the view(s) latest read it"));
  CHECK(relkind(db, "gatherstats_statistic") == "r");
  CHECK(db.count() == 100);
}

// --- the daemon's upkeep and commits on a partitioned table ------------------

namespace {

long long number(const test::scratch_database& db, const std::string& sql) {
  return std::stoll(db.query(sql)[0][0]);
}

// Partitions whose bound (`FROM` or `TO`) compares with `op` to now plus
// `seconds` (negative: in the past).
long long partitions_where(const test::scratch_database& db, const std::string& bound,
                           const std::string& op, double seconds) {
  return number(db,
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,"
                " substring(pg_get_expr(c.relpartbound, c.oid) FROM '" +
                    bound +
                    " \\(''([^'']*)''\\)') b"
                    " WHERE i.inhparent = 'gatherstats_statistic'::regclass AND b::timestamptz " +
                    op + " now() + interval '" + std::to_string(seconds) + " seconds'");
}
long long partitions_ending_by(const test::scratch_database& db, double seconds) {
  return partitions_where(db, "TO", "<=", seconds);
}
long long partitions_starting_from(const test::scratch_database& db, double seconds) {
  return partitions_where(db, "FROM", ">=", seconds);
}

}  // namespace

TEST_CASE("the daemon makes partitions ahead and drops those past the retention while it commits",
          "[daemon][partition]") {
  test::scratch_database db;
  REQUIRE(migrate(db.conninfo(), {"--partitioned", "--partition-interval", "1s"}).exit_code == 0);
  test::three_endpoints eps;
  // One-second partitions and three seconds of retention: a partition
  // is created and one dropped every second, beside the commits.
  test::daemon_process d(test::database_yaml(db) + "  retention: 3s\n" + eps.yaml());
  REQUIRE(test::eventually([&] { return test::lines_with(d.log_text(), "partition dropped") >= 5; },
                           30s));
  // Ahead: the partitions of the next two seconds are there.
  CHECK(partitions_starting_from(db, 1) >= 1);
  // Behind: nothing older than the retention (3 s), the interval (1 s) and a
  // pass (1 s apart, and a slow machine's DETACH: 2 s more).
  CHECK(partitions_ending_by(db, -7) == 0);
  d.stop_cleanly();
  const std::string log = d.log_text();
  CHECK(test::lines_with(log, "commit failed") == 0);
  CHECK(test::lines_with(log, "warning") == 0);
  // Every fetch the server answered was committed (the fetch log, which
  // the statistics' retention does not touch, has one ok row for each).
  for (const auto& e : eps.all) {
    INFO(e.url);
    CHECK(number(db, "SELECT count(*) FROM gatherstats_fetch WHERE ok AND endpoint = '" + e.url +
                         "'") == eps.requests(e));
  }
  // What the statistics still hold is whole and within the retention.
  CHECK(number(db,
               "SELECT count(*) FROM gatherstats_statistic"
               " WHERE fetched_at < now() - interval '6 seconds'") == 0);
  for (const auto& e : eps.all) CHECK(test::partial_fetches(db, e.url, e.rows) == 0);
}

TEST_CASE("a plain table converted while the daemon commits loses and doubles nothing",
          "[daemon][partition]") {
  test::scratch_database db;
  db.migrate();
  test::three_endpoints eps;
  test::daemon_process d(test::database_yaml(db) + eps.yaml());
  REQUIRE(test::eventually([&] { return db.count() > 0; }, 20s));
  auto converted = migrate(db.conninfo(), {"--partitioned", "--partition-interval", "1h"});
  INFO(converted.err);
  REQUIRE(converted.exit_code == 0);
  CHECK_THAT(converted.out, Catch::StartsWith("Converted table gatherstats_statistic"));
  CHECK(relkind(db, "gatherstats_statistic") == "p");
  // Commits go on into the new table: a few more fetches of each endpoint.
  REQUIRE(test::eventually(
      [&] {
        for (const auto& e : eps.all)
          if (test::fetches_of(db, e.url) < 5) return false;
        return true;
      },
      20s));
  CHECK(number(db, "SELECT count(*) FROM ONLY gatherstats_statistic_p00000000") > 0);
  test::check_all_stored_once(db, eps, d);
  CHECK(test::lines_with(d.log_text(), "commit failed") == 0);
}

TEST_CASE("fetches spooled from before every partition are committed into partitions made for them",
          "[daemon][partition]") {
  test::scratch_database db;
  test::three_endpoints eps;
  test::temp_dir state;
  const std::string spool =
      "spool: {directory: \"" + (state.path() / "spool").string() + "\", memory_max_bytes: 1KiB}\n";
  long long spooled = 0;
  {
    // No database: every fetch (more than 1 KiB each) goes to the spool.
    test::daemon_process d(
        "database: {conninfo: \"host=127.0.0.1 port=9 dbname=none "
        "connect_timeout=1\"}\n" +
        eps.yaml() + spool);
    REQUIRE(test::eventually([&] { return test::spool_files(state.path() / "spool") >= 9; }, 30s));
    d.stop_cleanly();
    spooled = test::spool_files(state.path() / "spool");
  }
  // Partitions from this second on only: the spooled fetches are older.
  REQUIRE(migrate(db.conninfo(), {"--partitioned", "--partition-interval", "1s"}).exit_code == 0);
  const long long made_at_migrate = partitions_of(db).size();
  test::daemon_process again(test::database_yaml(db) + "endpoints:\n  - {name: other, url: \"" +
                             eps.server.url("/stats?other") + "\", interval: 1h}\n" + spool);
  auto stored = [&] {
    long long n = 0;
    for (const auto& e : eps.all) n += test::fetches_of(db, e.url);
    return n;
  };
  CHECK(test::eventually([&] { return stored() == spooled; }, 30s));
  again.stop_cleanly();
  CHECK(stored() == spooled);
  for (const auto& e : eps.all) CHECK(test::partial_fetches(db, e.url, e.rows) == 0);
  const std::string log = again.log_text();
  CHECK(test::lines_with(log, "commit failed") == 0);
  // Partitions in the past, which only the commit path makes.
  CHECK(test::lines_with(log, "partition created") >= 1);
  CHECK(partitions_ending_by(db, -2) >= 1);
  CHECK(static_cast<long long>(partitions_of(db).size()) > made_at_migrate);
}

TEST_CASE("a conversion that fails leaves the plain table as it was, without its CHECK",
          "[pg][partition]") {
  test::scratch_database db;
  db.migrate();
  fill(db, 1'000);
  // A table already named like the partition the switch creates after the
  // first one: the switch fails, after the CHECK was added and validated
  // and the index built. (Both hours, in case one begins meanwhile.)
  const auto bound = retention::interval_of(now_utc() + hours(1), hours(1)).to;
  for (auto t : {bound, bound + hours(1)})
    db.exec("CREATE TABLE " +
            retention::partition_name("gatherstats_statistic", t,
                                      duration_cast<milliseconds>(hours(1))) +
            " (x int)");
  auto r = migrate(db.conninfo(), {"--partitioned", "--partition-interval", "1h"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("already exists"));
  CHECK(relkind(db, "gatherstats_statistic") == "r");
  CHECK(db.count() == 1'000);
  // Nothing it added remains: no CHECK that would refuse rows from its
  // bound on, no second unique index.
  CHECK(db.query("SELECT count(*) FROM pg_constraint"
                 " WHERE conrelid = 'gatherstats_statistic'::regclass AND contype = 'c'")[0][0] ==
        "0");
  CHECK(db.query("SELECT count(*) FROM pg_index"
                 " WHERE indrelid = 'gatherstats_statistic'::regclass")[0][0] == "2");
  db.exec(
      "INSERT INTO gatherstats_statistic (endpoint, key, numeric_value, fetched_at)"
      " VALUES ('http://later.invalid/', 'a', 1, now() + interval '30 days')");
}
