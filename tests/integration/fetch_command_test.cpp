// `gatherstatsd fetch` and `gatherstatsd migrate` as an operator runs them:
// real processes against the private PostgreSQL and the project's test HTTP
// and HTTPS servers on loopback. Includes every behaviour the original
// tool's own test suite checked.
#include "support/route.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <set>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using test::run_result;

namespace {

const std::string data_dir = test::source_dir() + "/tests/data";

run_result gatherstatsd(std::vector<std::string> args) {
  args.insert(args.begin(), test::daemon_bin());
  return test::run(args);
}

run_result fetch(const test::scratch_database& db, std::vector<std::string> args) {
  args.insert(args.begin(), "fetch");
  args.insert(args.end(), {"--database", db.conninfo()});
  return gatherstatsd(args);
}

// A failure is exactly one line on stderr, and nothing on stdout.
void require_one_line_failure(const run_result& r, const std::string& expected) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK_THAT(r.err, Catch::StartsWith("gatherstatsd: error: ") && Catch::Contains(expected));
}

using table = std::vector<std::vector<std::string>>;

table stored_rows(const test::scratch_database& db) {
  return db.query(
      "SELECT endpoint, key, numeric_value::text FROM gatherstats_statistic ORDER BY id");
}

table asset_count_rows(const std::string& endpoint) {
  return {{endpoint, "asset_counts.all.total", "1234"},
          {endpoint, "asset_counts.all.complete", "7"},
          {endpoint, "asset_counts.by_institution.INSTA.total", "7"},
          {endpoint, "asset_counts.by_institution.INSTA.complete", "4"},
          {endpoint, "asset_counts.by_institution.INSTB.total", "103"},
          {endpoint, "asset_counts.by_institution.INSTB.complete", "7"}};
}

long long distinct_fetched_at(const test::scratch_database& db) {
  return std::stoll(db.query("SELECT count(DISTINCT fetched_at) FROM gatherstats_statistic")[0][0]);
}

}  // namespace

TEST_CASE("fetch from a file stores the original's six rows", "[fetch]") {
  test::scratch_database db;
  db.migrate();
  auto path = data_dir + "/asset_counts.json";
  auto r = fetch(db, {path});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "Created 6 object(s)\n");
  CHECK(stored_rows(db) == asset_count_rows("file://" + path));
  CHECK(distinct_fetched_at(db) == 1);
}

TEST_CASE("fetch records a file as file:// and its absolute, normalised path", "[fetch]") {
  test::scratch_database db;
  db.migrate();
  SECTION("a path with .. in it") {
    REQUIRE(fetch(db, {data_dir + "/../data/asset_counts.json"}).exit_code == 0);
  }
  SECTION("a file:// URL") {
    REQUIRE(fetch(db, {"file://" + data_dir + "/asset_counts.json"}).exit_code == 0);
  }
  CHECK(stored_rows(db) == asset_count_rows("file://" + data_dir + "/asset_counts.json"));
}

TEST_CASE("fetch --endpoint records the given endpoint instead", "[fetch]") {
  test::scratch_database db;
  db.migrate();
  auto r = fetch(
      db, {data_dir + "/asset_counts.json", "--endpoint", "http://iar-backend.invalid/stats"});
  REQUIRE(r.exit_code == 0);
  CHECK(stored_rows(db) == asset_count_rows("http://iar-backend.invalid/stats"));
}

TEST_CASE("fetch over HTTP records the URL", "[fetch][http]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server("", data_dir);
  auto url = server.url("/files/asset_counts.json");
  auto r = fetch(db, {url});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "Created 6 object(s)\n");
  CHECK(stored_rows(db) == asset_count_rows(url));
}

TEST_CASE("fetch over HTTPS verifies the peer against --ca-file", "[fetch][https]") {
  test::scratch_database db;
  db.migrate();
  const std::string ca = test::cert_dir() + "/ca.pem";

  SECTION("a valid certificate for localhost") {
    test::test_server server("server", data_dir);
    auto url = server.url("/files/asset_counts.json");
    auto r = fetch(db, {url, "--ca-file", ca});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(stored_rows(db) == asset_count_rows(url));
  }
  SECTION("a valid certificate, reached over IPv6") {
    test::test_server server("server", data_dir, "::1");
    auto url = server.url("/files/asset_counts.json", "[::1]");
    auto r = fetch(db, {url, "--ca-file", ca});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(db.count() == 6);
  }
  SECTION("the test CA is not in the system trust store") {
    test::test_server server("server", data_dir);
    require_one_line_failure(fetch(db, {server.url("/files/asset_counts.json")}),
                             "TLS handshake failed");
    CHECK(db.count() == 0);
  }
  SECTION("an expired certificate") {
    test::test_server server("expired", data_dir);
    require_one_line_failure(fetch(db, {server.url("/files/asset_counts.json"), "--ca-file", ca}),
                             "certificate has expired");
    CHECK(db.count() == 0);
  }
  SECTION("a certificate for another host") {
    test::test_server server("wronghost", data_dir);
    require_one_line_failure(fetch(db, {server.url("/files/asset_counts.json"), "--ca-file", ca}),
                             "does not match \"localhost\"");
    CHECK(db.count() == 0);
  }
  SECTION("a self-signed certificate") {
    test::test_server server("selfsigned", data_dir);
    require_one_line_failure(fetch(db, {server.url("/files/asset_counts.json"), "--ca-file", ca}),
                             "TLS handshake failed");
    CHECK(db.count() == 0);
  }
  SECTION("a CA file that does not exist") {
    require_one_line_failure(
        fetch(db, {"https://localhost:1/", "--ca-file", "/nonexistent/ca.pem"}),
        "/nonexistent/ca.pem");
  }
}

TEST_CASE("a document with a non-numeric value is rejected whole under strict", "[fetch]") {
  test::scratch_database db;
  db.migrate();
  require_one_line_failure(fetch(db, {data_dir + "/bad_value.json"}), "bar.bang");
  CHECK(db.count() == 0);
}

TEST_CASE("fetch --values skip drops the non-numeric leaf and keeps the rest", "[fetch]") {
  test::scratch_database db;
  db.migrate();
  auto path = data_dir + "/bad_value.json";
  auto r = fetch(db, {path, "--values", "skip"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "Created 2 object(s)\n");
  CHECK(stored_rows(db) ==
        table{{"file://" + path, "foo", "45"}, {"file://" + path, "bar.buzz", "70"}});
}

TEST_CASE("a list at the top level is rejected", "[fetch]") {
  test::scratch_database db;
  db.migrate();
  require_one_line_failure(fetch(db, {data_dir + "/top_level_list.json"}), "not a JSON object");
  CHECK(db.count() == 0);
}

TEST_CASE("a null deep inside an otherwise valid document writes nothing", "[fetch]") {
  test::scratch_database db;
  db.migrate();
  require_one_line_failure(fetch(db, {data_dir + "/deep_null.json"}),
                           "asset_counts.by_institution.INSTB.detail.x.y.complete");
  CHECK(db.count() == 0);
}

TEST_CASE("fetch failures from the network or the database write nothing and say why", "[fetch]") {
  test::scratch_database db;
  db.migrate();
  SECTION("HTTP 500") {
    test::test_server server;
    require_one_line_failure(fetch(db, {server.url("/status/500")}), "HTTP 500");
  }
  SECTION("HTTP 404") {
    test::test_server server("", data_dir);
    require_one_line_failure(fetch(db, {server.url("/files/missing.json")}), "HTTP 404");
  }
  SECTION("invalid JSON") {
    test::test_server server;
    require_one_line_failure(fetch(db, {server.url("/garbage")}), server.url("/garbage"));
  }
  SECTION("nothing listens") {
    require_one_line_failure(fetch(db, {"http://127.0.0.1:1/stats"}), "cannot connect");
  }
  SECTION("a missing file") {
    require_one_line_failure(fetch(db, {data_dir + "/missing.json"}), "No such file");
  }
  SECTION("an endpoint that never answers, under --timeout") {
    test::test_server server;
    require_one_line_failure(fetch(db, {server.url("/hang"), "--timeout", "500ms"}), "timed out");
  }
  SECTION("a database that is not there") {
    require_one_line_failure(gatherstatsd({"fetch", data_dir + "/asset_counts.json", "--database",
                                           "host=127.0.0.1 port=1 dbname=none"}),
                             "could not connect to the database");
  }
  CHECK(db.count() == 0);
}

TEST_CASE("a bad document is reported at once, without waiting for a database that never answers",
          "[fetch]") {
  // A listener that never accepts: the connection is opened while the
  // document is read, and libpq would wait for the server's answer until
  // connect_timeout (60 s). The document's failure must not wait for it.
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(listener >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), len) == 0);
  REQUIRE(::listen(listener, 8) == 0);
  REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  const std::string silent =
      "host=127.0.0.1 port=" + std::to_string(ntohs(addr.sin_port)) + " connect_timeout=60";
  auto start = std::chrono::steady_clock::now();
  auto r = gatherstatsd({"fetch", data_dir + "/top_level_list.json", "--database", silent});
  auto took = std::chrono::steady_clock::now() - start;
  ::close(listener);
  require_one_line_failure(r, "not a JSON object");
  CHECK(took < std::chrono::seconds(30));
}

TEST_CASE("fetch into a database without the table says to migrate", "[fetch]") {
  test::scratch_database db;
  require_one_line_failure(fetch(db, {data_dir + "/asset_counts.json"}), "gatherstatsd migrate");
}

TEST_CASE("fetch writes into a table the original created", "[fetch]") {
  test::scratch_database db;
  db.create_original_table();
  auto path = data_dir + "/asset_counts.json";
  REQUIRE(fetch(db, {path}).exit_code == 0);
  CHECK(stored_rows(db) == asset_count_rows("file://" + path));
}

TEST_CASE("migrate creates, then accepts, then refuses a broken table", "[migrate]") {
  test::scratch_database db;
  auto first = gatherstatsd({"migrate", "--database", db.conninfo()});
  CHECK(first.exit_code == 0);
  CHECK(first.out ==
        "Created table gatherstats_statistic\n"
        "Created fetch log gatherstats_fetch and view gatherstats_endpoint_health\n"
        "Created member table gatherstats_member (for cluster:)\n");
  auto second = gatherstatsd({"migrate", "--database", db.conninfo()});
  CHECK(second.exit_code == 0);
  CHECK(second.out ==
        "Table gatherstats_statistic already exists and is usable\n"
        "Fetch log gatherstats_fetch already exists; view gatherstats_endpoint_health is up to "
        "date\n");
  db.exec("ALTER TABLE gatherstats_statistic DROP COLUMN numeric_value");
  require_one_line_failure(gatherstatsd({"migrate", "--database", db.conninfo()}),
                           "no column \"numeric_value\"");
}

// --- the original's redundant indexes ------------------------------------------

namespace {

const std::string original_unique = "gatherstats_statistic_endpoint_key_fetched_at_3c4ad5a4_uniq";
const std::string original_endpoint_idx = "gatherstats_endpoin_3d040d_idx";
const std::string original_full_idx = "gatherstats_endpoin_ca0383_idx";

// What `migrate` prints about an index it finds redundant.
std::string advice(const std::string& index, const std::string& columns,
                   const std::string& table_option = "") {
  return "Index " + index + " (" + columns +
         ") repeats the unique constraint's index: every commit updates it for nothing; drop it "
         "with: gatherstatsd migrate --drop-redundant-indexes" +
         table_option + "\n";
}

// The first lines of `migrate` on an existing table, before those about indexes.
std::string existing_table(bool fetch_log_created,
                           const std::string& table = "gatherstats_statistic",
                           const std::string& schema = "") {
  return "Table " + table + " already exists and is usable\n" +
         (fetch_log_created ? "Created fetch log " + schema + "gatherstats_fetch and view " +
                                  schema + "gatherstats_endpoint_health\nCreated member table " +
                                  schema + "gatherstats_member (for cluster:)\n"
                            : "Fetch log " + schema + "gatherstats_fetch already exists; view " +
                                  schema + "gatherstats_endpoint_health is up to date\n");
}

// The names of the statistics table's indexes (pg_indexes), sorted.
std::set<std::string> index_names(const test::scratch_database& db,
                                  const std::string& schema = "public") {
  std::set<std::string> out;
  for (const auto& row : db.query("SELECT indexname FROM pg_indexes WHERE schemaname = '" + schema +
                                  "' AND tablename = 'gatherstats_statistic'"))
    out.insert(row.at(0));
  return out;
}

run_result migrate(const std::string& conninfo, std::vector<std::string> more = {}) {
  std::vector<std::string> args{"migrate", "--database", conninfo};
  args.insert(args.end(), more.begin(), more.end());
  return gatherstatsd(args);
}

}  // namespace

TEST_CASE("migrate on the original's table says it is usable and names its two redundant indexes",
          "[migrate][redundant]") {
  test::scratch_database db;
  db.create_original_table();
  const auto before = index_names(db);
  REQUIRE(before == std::set<std::string>{"gatherstats_statistic_pkey", original_unique,
                                          original_endpoint_idx, original_full_idx});
  auto r = migrate(db.conninfo());
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.empty());
  // Exactly these lines: no other index is named.
  CHECK(r.out == existing_table(true) + advice("public." + original_endpoint_idx, "endpoint") +
                     advice("public." + original_full_idx, "endpoint, key, fetched_at"));
  CHECK(index_names(db) == before);  // named, not dropped
}

ROUTED_TEST_CASE(drop_redundant,
                 "migrate --drop-redundant-indexes drops the original's two redundant indexes, "
                 "and the original's model still works",
                 "[migrate][redundant]") {
  test::scratch_database db;
  db.create_original_table();
  db.exec(
      "INSERT INTO gatherstats_statistic (endpoint, key, numeric_value, fetched_at)"
      " VALUES ('http://e/', 'k', 1, now())");

  auto dropped = migrate(via(db), {"--drop-redundant-indexes"});
  INFO("stdout: " << dropped.out << "\nstderr: " << dropped.err);
  REQUIRE(dropped.exit_code == 0);
  CHECK(dropped.out == existing_table(true) + "Dropped index public." + original_endpoint_idx +
                           " (endpoint)\n" + "Dropped index public." + original_full_idx +
                           " (endpoint, key, fetched_at)\n");
  // Only the primary key and the unique constraint's index remain.
  CHECK(index_names(db) == std::set<std::string>{"gatherstats_statistic_pkey", original_unique});

  auto again = migrate(via(db));
  CHECK(again.exit_code == 0);
  CHECK(again.out == existing_table(false));  // no index named
  auto drop_again = migrate(via(db), {"--drop-redundant-indexes"});
  CHECK(drop_again.exit_code == 0);
  CHECK(drop_again.out == existing_table(false) + "No redundant index on gatherstats_statistic\n");

  // The original's model: Django's INSERT ... RETURNING of
  // Statistic.objects.create(), then its filter(endpoint=...).
  auto id = db.query(
      "INSERT INTO \"gatherstats_statistic\" (\"endpoint\", \"key\", \"numeric_value\","
      " \"fetched_at\") VALUES ('http://e/', 'k2', 2.5, '2026-11-28T10:00:00+00:00'::timestamptz)"
      " RETURNING \"gatherstats_statistic\".\"id\"");
  REQUIRE(id.size() == 1);
  CHECK(std::stoll(id[0][0]) > 0);
  CHECK(db.count() == 2);
  // One session: the SET applies to the EXPLAIN.
  auto plan = db.query(
      "SET enable_seqscan = off;"
      "PREPARE by_endpoint(varchar) AS SELECT \"gatherstats_statistic\".\"id\","
      " \"gatherstats_statistic\".\"endpoint\", \"gatherstats_statistic\".\"key\","
      " \"gatherstats_statistic\".\"numeric_value\", \"gatherstats_statistic\".\"fetched_at\""
      " FROM \"gatherstats_statistic\" WHERE \"gatherstats_statistic\".\"endpoint\" = $1;"
      "EXPLAIN EXECUTE by_endpoint('http://e/')");
  std::string text;
  for (const auto& row : plan) text += row.at(0) + "\n";
  INFO("plan:\n" << text);
  CHECK((text.find("Index Scan using " + original_unique) != std::string::npos ||
         text.find("Index Only Scan using " + original_unique) != std::string::npos ||
         text.find("Bitmap Index Scan on " + original_unique) != std::string::npos));
}

TEST_CASE("migrate neither names nor drops indexes that are not redundant",
          "[migrate][redundant]") {
  test::scratch_database db;
  db.create_original_table();
  db.exec(
      "CREATE INDEX ON gatherstats_statistic (fetched_at);"
      "CREATE INDEX ON gatherstats_statistic (key, fetched_at);"
      "CREATE INDEX ON gatherstats_statistic (endpoint) WHERE numeric_value > 0;"
      "CREATE INDEX ON gatherstats_statistic (endpoint text_pattern_ops);"
      // and more: another collation, INCLUDE columns, an expression, another
      // order, another access method, and a unique index
      "CREATE INDEX other_collation ON gatherstats_statistic (endpoint COLLATE \"C\");"
      "CREATE INDEX covering ON gatherstats_statistic (endpoint) INCLUDE (numeric_value);"
      "CREATE INDEX expression ON gatherstats_statistic (lower(endpoint));"
      "CREATE INDEX descending ON gatherstats_statistic (endpoint, key DESC);"
      "CREATE INDEX hashed ON gatherstats_statistic USING hash (endpoint);"
      "CREATE UNIQUE INDEX unique_prefix ON gatherstats_statistic (endpoint, key, fetched_at)"
      " WHERE numeric_value > 0;");
  const auto before = index_names(db);
  REQUIRE(before.size() == 14);

  auto r = migrate(db.conninfo());
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == existing_table(true) + advice("public." + original_endpoint_idx, "endpoint") +
                     advice("public." + original_full_idx, "endpoint, key, fetched_at"));

  auto dropped = migrate(db.conninfo(), {"--drop-redundant-indexes"});
  CHECK(dropped.exit_code == 0);
  CHECK(dropped.out == existing_table(false) + "Dropped index public." + original_endpoint_idx +
                           " (endpoint)\n" + "Dropped index public." + original_full_idx +
                           " (endpoint, key, fetched_at)\n");
  auto expected = before;
  expected.erase(original_endpoint_idx);
  expected.erase(original_full_idx);
  CHECK(index_names(db) == expected);
  auto drop_again = migrate(db.conninfo(), {"--drop-redundant-indexes"});
  CHECK(drop_again.out == existing_table(false) + "No redundant index on gatherstats_statistic\n");
  CHECK(index_names(db) == expected);
}

TEST_CASE("migrate's own table has no redundant index", "[migrate][redundant]") {
  test::scratch_database db;
  db.migrate();
  const auto before = index_names(db);
  CHECK(before.size() == 2);  // the primary key and the unique constraint's index
  auto again = migrate(db.conninfo());
  CHECK(again.exit_code == 0);
  CHECK(again.out == existing_table(false));
  auto dropped = migrate(db.conninfo(), {"--drop-redundant-indexes"});
  CHECK(dropped.exit_code == 0);
  CHECK(dropped.out == existing_table(false) + "No redundant index on gatherstats_statistic\n");
  CHECK(index_names(db) == before);
}

TEST_CASE("a redundant index of a schema-qualified table is named and dropped there",
          "[migrate][redundant]") {
  test::scratch_database db;
  db.exec("CREATE SCHEMA stats");
  const std::string table = "stats.gatherstats_statistic";
  auto made = migrate(db.conninfo(), {"--table", table});
  REQUIRE(made.exit_code == 0);
  db.exec("CREATE INDEX \"Two \"\"words\"\"\" ON stats.gatherstats_statistic (endpoint, key)");
  auto r = migrate(db.conninfo(), {"--table", table});
  CHECK(r.exit_code == 0);
  CHECK(r.out == existing_table(false, table, "stats.") +
                     advice("stats.Two \"words\"", "endpoint, key", " --table " + table));
  auto dropped = migrate(db.conninfo(), {"--table", table, "--drop-redundant-indexes"});
  INFO("stderr: " << dropped.err);
  CHECK(dropped.exit_code == 0);
  CHECK(dropped.out == existing_table(false, table, "stats.") +
                           "Dropped index stats.Two \"words\" (endpoint, key)\n");
  CHECK(index_names(db, "stats").size() == 2);
}

TEST_CASE("the command line reports misuse with exit code 2", "[cli]") {
  auto r = gatherstatsd({"fetch"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("missing URL_OR_PATH"));
  auto help = gatherstatsd({"--help"});
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.out, Catch::Contains("gatherstatsd fetch URL_OR_PATH"));
  auto version = gatherstatsd({"--version"});
  CHECK(version.exit_code == 0);
  CHECK_THAT(version.out, Catch::StartsWith("gatherstatsd "));
}
