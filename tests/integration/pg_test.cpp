// The library's PostgreSQL side against the real private cluster: the
// asynchronous connection, the schema check and migration, and the atomic,
// idempotent commit.
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/statistic_table.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

asio::awaitable<outcome<bool>> migrate(std::string conninfo, std::string table) {
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

// A TCP port that accepts connections (the kernel completes the handshake)
// but never says anything: a database that hangs.
struct silent_listener {
  int fd = -1;
  std::uint16_t port = 0;
  silent_listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 8) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~silent_listener() { ::close(fd); }
};

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
    silent_listener hang;
    auto started = steady_clock::now();
    auto r = test::run_async([](std::uint16_t port) -> asio::awaitable<outcome<std::string>> {
      auto conn = co_await pg::connection::async_connect(
          "host=127.0.0.1 port=" + std::to_string(port), in(std::chrono::milliseconds(300)));
      if (!conn) co_return conn.error();
      co_return std::string("connected?");
    }(hang.port));
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

TEST_CASE("migrate creates the table once and then leaves it alone", "[pg][schema]") {
  test::scratch_database db;
  auto first = test::run_async(migrate(db.conninfo(), "gatherstats_statistic"));
  REQUIRE(first.has_value());
  CHECK(*first == true);
  auto second = test::run_async(migrate(db.conninfo(), "gatherstats_statistic"));
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
  // Nothing else: one table, its primary key and its unique constraint.
  CHECK(db.query("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                 " WHERE n.nspname = 'public'")[0][0] == "4");  // table, pkey, unique, id sequence
}

TEST_CASE("a schema-qualified table is created and used in its schema", "[pg][schema]") {
  test::scratch_database db;
  db.exec("CREATE SCHEMA stats");
  auto made = test::run_async(migrate(db.conninfo(), "stats.gatherstats_statistic"));
  REQUIRE(made.has_value());
  auto created =
      test::run_async(commit(db.conninfo(), "stats.gatherstats_statistic", sample_record(), 1));
  REQUIRE(created.has_value());
  CHECK(db.count("stats.gatherstats_statistic") == 3);
}

TEST_CASE("a table created by the original tool is used as it is", "[pg][schema]") {
  test::scratch_database db;
  db.create_original_table();
  auto checked = test::run_async(check(db.conninfo(), "gatherstats_statistic"));
  CHECK(checked.has_value());
  auto migrated = test::run_async(migrate(db.conninfo(), "gatherstats_statistic"));
  REQUIRE(migrated.has_value());
  CHECK(*migrated == false);
  auto created =
      test::run_async(commit(db.conninfo(), "gatherstats_statistic", sample_record(), 1));
  REQUIRE(created.has_value());
  CHECK(created->at(0) == 3);
  CHECK(db.query("SELECT data_type FROM information_schema.columns"
                 " WHERE table_name = 'gatherstats_statistic' AND column_name = 'id'")[0][0] ==
        "integer");
}

TEST_CASE("a table the commit cannot use is refused with what is missing", "[pg][schema]") {
  test::scratch_database db;
  SECTION("no table") {
    auto r = test::run_async(check(db.conninfo(), "gatherstats_statistic"));
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message,
               Catch::Contains("does not exist") && Catch::Contains("gatherstatsd migrate"));
  }
  SECTION("a required column is missing") {
    db.exec(
        "CREATE TABLE gatherstats_statistic (id serial PRIMARY KEY, endpoint text NOT NULL,"
        " key text NOT NULL, fetched_at timestamptz NOT NULL,"
        " UNIQUE (endpoint, key, fetched_at))");
    auto r = test::run_async(check(db.conninfo(), "gatherstats_statistic"));
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message, Catch::Contains("no column \"numeric_value\""));
  }
  SECTION("no unique constraint, a wrong type, a NOT NULL column without default") {
    db.exec(
        "CREATE TABLE gatherstats_statistic (id integer NOT NULL, endpoint text NOT NULL,"
        " key text NOT NULL, numeric_value double precision NOT NULL,"
        " fetched_at timestamp NOT NULL)");
    auto r = test::run_async(check(db.conninfo(), "gatherstats_statistic"));
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message,
               Catch::Contains("no unique constraint on (endpoint, key, fetched_at)") &&
                   Catch::Contains("column \"fetched_at\" is timestamp without time zone") &&
                   Catch::Contains("column \"id\" is NOT NULL without a default"));
  }
}

TEST_CASE("committing the same fetch twice stores it once", "[pg][commit]") {
  test::scratch_database db;
  REQUIRE(test::run_async(migrate(db.conninfo(), "gatherstats_statistic")).has_value());
  auto record = sample_record();
  auto created = test::run_async(commit(db.conninfo(), "gatherstats_statistic", record, 2));
  REQUIRE(created.has_value());
  CHECK(*created == std::vector<std::size_t>{3, 0});
  CHECK(db.count() == 3);
  CHECK(db.query("SELECT count(*) FROM gatherstats_statistic"
                 " GROUP BY endpoint, key, fetched_at HAVING count(*) > 1")
            .empty());
  // The same keys at another instant are another fetch.
  record.fetched_at += std::chrono::microseconds(1);
  auto again = test::run_async(commit(db.conninfo(), "gatherstats_statistic", record, 1));
  REQUIRE(again.has_value());
  CHECK(again->at(0) == 3);
  CHECK(db.count() == 6);
}

TEST_CASE("a commit stores exact keys, values and the microsecond timestamp", "[pg][commit]") {
  test::scratch_database db;
  REQUIRE(test::run_async(migrate(db.conninfo(), "gatherstats_statistic")).has_value());
  auto record = sample_record();
  record.fetched_at = timestamp(std::chrono::microseconds(1'795'000'000'123'456));
  record.rows.push_back("tiny", 5e-324);
  record.rows.push_back("precise", 0.1 + 0.2);
  REQUIRE(test::run_async(commit(db.conninfo(), "gatherstats_statistic", record, 1)).has_value());
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

TEST_CASE("a commit that fails leaves nothing behind", "[pg][commit]") {
  test::scratch_database db;
  REQUIRE(test::run_async(migrate(db.conninfo(), "gatherstats_statistic")).has_value());
  auto record = sample_record();
  record.rows.push_back(std::string(600, 'k'), 1);  // longer than varchar(512)
  auto r = test::run_async(commit(db.conninfo(), "gatherstats_statistic", record, 1));
  REQUIRE_FALSE(r.has_value());
  CHECK_THAT(r.error().message, Catch::Contains("too long"));
  CHECK(db.count() == 0);
}
