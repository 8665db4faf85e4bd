// gatherstatsd as a daemon: real processes, the real private PostgreSQL and
// the project's test server on loopback. Every wait is on a condition with
// a deadline.
#include "support/daemon.hpp"
#include "gatherstats/http/client.hpp"

#include <libpq-fe.h>
#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

const std::string data_dir = test::source_dir() + "/tests/data";

}  // namespace

TEST_CASE("gatherstatsd --check accepts a valid file and reports every error with line and column",
          "[daemon][config]") {
  test::temp_dir dir;
  auto good = dir.write("good.yaml",
                        "endpoints:\n  - name: a\n    url: http://127.0.0.1:1/stats\n"
                        "    interval: 1m\n");
  auto ok = test::run({test::daemon_bin(), "--config", good.string(), "--check"});
  CHECK(ok.exit_code == 0);
  CHECK_THAT(ok.out, Catch::Contains("OK, 1 endpoint(s)"));

  auto bad = dir.write("bad.yaml",
                       "endpoints:\n"
                       "  - name: a\n"
                       "    url: http://127.0.0.1:1/stats\n"
                       "    intervl: 1m\n"
                       "  - name: b\n"
                       "    url: ftp://example/x\n"
                       "    timeout: soon\n");
  auto r = test::run({test::daemon_bin(), "--config", bad.string(), "--check"});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains(bad.string() + ":4:5:") && Catch::Contains("intervl"));
  CHECK_THAT(r.err, Catch::Contains(bad.string() + ":6:10:"));
  CHECK_THAT(r.err, Catch::Contains(bad.string() + ":7:14:"));
  CHECK_THAT(r.err, Catch::Contains("3 error(s)"));
}

TEST_CASE("gatherstatsd --once fetches every endpoint once and says whether all were committed",
          "[daemon][once]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server("", data_dir);
  const std::string a = server.url("/files/asset_counts.json"), b = server.url("/stats");
  test::temp_dir dir;
  auto good = dir.write("once.yaml", test::database_yaml(db) +
                                         "endpoints:\n"
                                         "  - {name: a, url: \"" +
                                         a +
                                         "\", interval: 1h}\n"
                                         "  - {name: b, url: \"" +
                                         b + "\", interval: 1h}\n");
  auto r = test::run({test::daemon_bin(), "--config", good.string(), "--once"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(test::fetches_of(db, a) == 1);
  CHECK(test::fetches_of(db, b) == 1);
  CHECK(db.count() == 6 + 15);

  auto failing = dir.write("failing.yaml", test::database_yaml(db) +
                                               "endpoints:\n"
                                               "  - {name: a, url: \"" +
                                               a +
                                               "\", interval: 1h}\n"
                                               "  - {name: broken, url: \"" +
                                               server.url("/status/404") + "\", interval: 1h}\n");
  auto f = test::run({test::daemon_bin(), "--config", failing.string(), "--once"});
  CHECK(f.exit_code == 1);
  CHECK_THAT(f.err, Catch::Contains("fetch failed endpoint=broken") && Catch::Contains("HTTP 404"));
  CHECK(test::fetches_of(db, a) == 2);
}

TEST_CASE(
    "a hanging, a dripping and a garbage endpoint do not delay a healthy one, and SIGTERM "
    "exits 0 with every fetch whole",
    "[daemon][isolation]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  const std::string healthy = server.url("/stats");
  test::daemon_process d(test::database_yaml(db) +
                         "defaults:\n  interval: 1s\n  timeout: 900ms\n  retries: 0\n"
                         "endpoints:\n"
                         "  - {name: healthy, url: \"" +
                         healthy +
                         "\"}\n"
                         "  - {name: hang, url: \"" +
                         server.url("/hang") +
                         "\"}\n"
                         "  - {name: drip, url: \"" +
                         server.url("/drip") +
                         "\"}\n"
                         "  - {name: garbage, url: \"" +
                         server.url("/garbage") + "\"}\n");
  REQUIRE(test::eventually([&] { return test::fetches_of(db, healthy) >= 6; }, 20s));
  INFO(d.log_text());

  // Every tick of the healthy endpoint was stored, one second apart, give or
  // take the stated tolerance (250 ms), however the others behaved.
  test::check_every_tick_stored(db, healthy, 0.75);
  // Nothing from the others (one query: the daemon is still committing).
  CHECK(db.query("SELECT count(*) FROM gatherstats_statistic WHERE endpoint <> '" + healthy +
                 "'")[0][0] == "0");
  CHECK(d.logged("fetch failed endpoint=hang", 5s));
  CHECK(d.logged("fetch failed endpoint=drip", 5s));
  CHECK(d.logged("fetch failed endpoint=garbage", 5s));
  CHECK_THAT(d.log_text(), Catch::Contains("timed out"));

  d.stop_cleanly();
  // Whole fetches only: every fetched_at has all 15 rows.
  CHECK(db.query("SELECT fetched_at FROM gatherstats_statistic GROUP BY fetched_at"
                 " HAVING count(*) <> 15")
            .empty());
}

TEST_CASE("SIGHUP applies a valid configuration and keeps the old one for a broken file",
          "[daemon][reload]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server("", data_dir);
  const std::string a = server.url("/stats"), b = server.url("/files/asset_counts.json");
  auto with = [&](const std::string& endpoints) {
    return test::database_yaml(db) + "defaults:\n  interval: 1s\n  timeout: 900ms\nendpoints:\n" +
           endpoints;
  };
  const std::string a_line = "  - {name: a, url: \"" + a + "\"}\n";
  const std::string b_line = "  - {name: b, url: \"" + b + "\"}\n";
  test::daemon_process d(with(a_line));
  REQUIRE(test::eventually([&] { return test::fetches_of(db, a) >= 1; }, 10s));

  // Add b.
  std::ofstream(d.config) << with(a_line + b_line);
  ::kill(d.process->pid(), SIGHUP);
  bool b_started = test::eventually([&] { return test::fetches_of(db, b) >= 2; }, 10s);
  INFO(d.log_text());
  REQUIRE(b_started);

  // A broken file: rejected, a and b go on.
  std::ofstream(d.config) << "endpoints: [ this is not: valid\n";
  ::kill(d.process->pid(), SIGHUP);
  REQUIRE(d.logged("configuration rejected", 10s));
  auto a_before = test::fetches_of(db, a), b_before = test::fetches_of(db, b);
  CHECK(test::eventually(
      [&] { return test::fetches_of(db, a) > a_before && test::fetches_of(db, b) > b_before; },
      10s));

  // Remove a: it stops (after at most its in-flight fetch); b goes on.
  std::ofstream(d.config) << with(b_line);
  ::kill(d.process->pid(), SIGHUP);
  REQUIRE(d.logged("configuration loaded (1 endpoint(s))", 10s));
  auto a_at_removal = test::fetches_of(db, a);
  auto b_at_removal = test::fetches_of(db, b);
  REQUIRE(test::eventually([&] { return test::fetches_of(db, b) >= b_at_removal + 3; }, 10s));
  CHECK(test::fetches_of(db, a) <= a_at_removal + 1);

  d.stop_cleanly();
}

TEST_CASE("transient failures are retried at most `retries` times within the tick",
          "[daemon][retry]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  test::daemon_process d(test::database_yaml(db) +
                         "endpoints:\n"
                         "  - {name: flaky, url: \"" +
                         server.url("/status/503") +
                         "\", interval: 5s, timeout: 1s, retries: 2}\n");
  REQUIRE(d.logged("fetch failed endpoint=flaky", 20s));
  CHECK_THAT(d.log_text(), Catch::Contains("HTTP 503"));
  // One tick: the first attempt and two retries; the next tick is seconds away.
  auto count = test::http_get(server.url("/_count"));
  CHECK(count == "{\"requests\":3}");
  CHECK(db.count() == 0);
}

TEST_CASE("commits go on when the database drops the connections, and across a database reload",
          "[daemon][pool]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  const std::string url = server.url("/stats");
  auto yaml = [&](int pool_size) {
    return "database:\n  conninfo: \"" + db.conninfo() +
           "\"\n  pool_size: " + std::to_string(pool_size) +
           "\ndefaults:\n  interval: 1s\n  timeout: 900ms\n"
           "endpoints:\n  - {name: a, url: \"" +
           url + "\"}\n";
  };
  test::daemon_process d(yaml(2));
  REQUIRE(test::eventually([&] { return test::fetches_of(db, url) >= 2; }, 10s));

  // The server ends every session of the daemon: the pool must notice,
  // reconnect, and commit again whatever was in flight.
  db.exec(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
      " WHERE datname = current_database() AND pid <> pg_backend_pid()");
  auto after_kill = test::fetches_of(db, url);
  REQUIRE(test::eventually([&] { return test::fetches_of(db, url) >= after_kill + 3; }, 15s));

  // A reload that changes the database settings hands queued fetches to a
  // new pool.
  std::ofstream(d.config) << yaml(3);
  ::kill(d.process->pid(), SIGHUP);
  REQUIRE(d.logged("configuration loaded (1 endpoint(s))\n", 10s));
  auto after_reload = test::fetches_of(db, url);
  REQUIRE(test::eventually([&] { return test::fetches_of(db, url) >= after_reload + 3; }, 15s));

  d.stop_cleanly();
  INFO(d.log_text());
  // No tick lost to the dropped connections or the reload, and every fetch whole.
  test::check_every_tick_stored(db, url);
  CHECK(db.query("SELECT fetched_at FROM gatherstats_statistic GROUP BY fetched_at"
                 " HAVING count(*) <> 15")
            .empty());
  CHECK_THAT(d.log_text(), Catch::Contains("database lost"));
  CHECK_THAT(d.log_text(), Catch::Contains("database back"));
}

TEST_CASE("a rotated bearer token is used without a reload and never logged", "[daemon][secrets]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  test::temp_dir secrets;
  auto token = secrets.write("token", "first-secret-token\n");
  const std::string url = server.url("/auth-length");
  test::daemon_process d(test::database_yaml(db) +
                         "endpoints:\n"
                         "  - name: private\n"
                         "    url: \"" +
                         url +
                         "\"\n"
                         "    interval: 1s\n"
                         "    timeout: 900ms\n"
                         "    auth: {bearer_token_file: \"" +
                         token.string() + "\"}\n");
  auto latest = [&] {
    auto rows = db.query(
        "SELECT numeric_value FROM gatherstats_statistic"
        " ORDER BY fetched_at DESC LIMIT 1");
    return rows.empty() ? std::string() : rows[0][0];
  };
  // "Bearer " + 18 characters.
  REQUIRE(test::eventually([&] { return latest() == "25"; }, 10s));
  secrets.write("token", "the-second-token-after-rotation\n");
  // "Bearer " + 31 characters, with no SIGHUP.
  CHECK(test::eventually([&] { return latest() == "38"; }, 10s));

  d.stop_cleanly();
  CHECK(d.log_text().find("first-secret-token") == std::string::npos);
  CHECK(d.log_text().find("the-second-token") == std::string::npos);
}

TEST_CASE("max_concurrent_fetches bounds the fetches in flight across endpoints",
          "[daemon][limit]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  // Three aligned endpoints (their ticks fall together) that hang for their
  // whole timeout, one fetch allowed at a time: the server must never see two
  // of them open together. (Without the limit it sees three.)
  test::daemon_process d(test::database_yaml(db) +
                         "max_concurrent_fetches: 1\n"
                         "defaults: {interval: 3s, timeout: 400ms, retries: 0, align: true}\n"
                         "endpoints:\n"
                         "  - {name: hang1, url: \"" +
                         server.url("/hang") +
                         "\"}\n"
                         "  - {name: hang2, url: \"" +
                         server.url("/hang") +
                         "\"}\n"
                         "  - {name: hang3, url: \"" +
                         server.url("/hang") + "\"}\n");
  for (const char* name : {"hang1", "hang2", "hang3"})
    REQUIRE(d.logged(std::string("fetch failed endpoint=") + name, 15s));
  auto most = test::http_get(server.url("/_most-hanging"));
  CHECK(most == "{\"most_hanging\":1}");
  d.stop_cleanly();
}

TEST_CASE("a statement timeout frees a connection held by a stuck database, and nothing is lost",
          "[daemon][pool]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  const std::string url = server.url("/stats");
  test::daemon_process d("database:\n  conninfo: \"" + db.conninfo() +
                         "\"\n  pool_size: 1\n  statement_timeout: 1s\n"
                         "defaults:\n  interval: 1s\n  timeout: 900ms\n"
                         "endpoints:\n  - {name: a, url: \"" +
                         url + "\"}\n");
  REQUIRE(test::eventually([&] { return test::fetches_of(db, url) >= 1; }, 10s));

  // Another session locks the table: every commit waits on the lock until
  // the statement timeout (the daemon's deadline of a commit) closes its
  // connection; the commit is retried on a new one.
  std::unique_ptr<PGconn, decltype(&PQfinish)> locker(PQconnectdb(db.conninfo().c_str()),
                                                      &PQfinish);
  REQUIRE(PQstatus(locker.get()) == CONNECTION_OK);
  PQclear(PQexec(locker.get(), "BEGIN; LOCK TABLE gatherstats_statistic IN ACCESS EXCLUSIVE MODE"));
  REQUIRE(d.logged("no answer within database.statement_timeout (1000 ms)", 10s));
  PQclear(PQexec(locker.get(), "COMMIT"));
  auto after_unlock = test::fetches_of(db, url);
  REQUIRE(test::eventually([&] { return test::fetches_of(db, url) >= after_unlock + 2; }, 10s));
  d.stop_cleanly();
  // The fetches made while the table was locked waited and were committed.
  test::check_every_tick_stored(db, url);
}

TEST_CASE(
    "SIGTERM while the database is down spools the waiting fetches, and the next start "
    "commits them",
    "[daemon][spool]") {
  test::scratch_database db;
  db.migrate();
  test::test_server server;
  test::temp_dir state;
  const std::string url = server.url("/stats");
  const std::string spool_dir = (state.path() / "spool").string();
  auto yaml = [&](const std::string& conninfo) {
    return "database:\n  conninfo: \"" + conninfo +
           "\"\n  connect_timeout: 500ms\n"
           "spool: {directory: \"" +
           spool_dir +
           "\"}\n"
           "shutdown_grace: 1s\n"
           "defaults:\n  interval: 1s\n  timeout: 900ms\n"
           "endpoints:\n  - {name: a, url: \"" +
           url + "\"}\n";
  };
  auto spooled_files = [&] {
    std::size_t n = 0;
    std::error_code ec;
    for (const auto& f : std::filesystem::directory_iterator(spool_dir, ec))
      n += f.path().extension() == ".rec";
    return n;
  };

  {
    // Nothing listens on port 1: every commit waits.
    test::daemon_process down(yaml("host=127.0.0.1 port=1 dbname=" + db.name()));
    // Four fetches made (the server counts them), none committed.
    auto fetched = [&] {
      auto body = test::http_get(server.url("/_count?path=/stats"));  // {"requests":N}
      return std::atoi(body.c_str() + body.find(':') + 1);
    };
    REQUIRE(test::eventually([&] { return fetched() >= 4; }, 15s));
    down.stop_cleanly();
    INFO(down.log_text());
    CHECK_THAT(down.log_text(), Catch::Contains("results spooled"));
    CHECK(spooled_files() >= 3);
  }
  const std::size_t spooled = spooled_files();
  CHECK(spooled >= 3);
  CHECK(db.count() == 0);

  // The database is back: the spooled fetches are committed first, whole,
  // and their files removed.
  test::daemon_process up(yaml(db.conninfo()));
  REQUIRE(test::eventually([&] { return spooled_files() == 0; }, 15s));
  REQUIRE(test::eventually(
      [&] { return test::fetches_of(db, url) >= static_cast<long long>(spooled); }, 15s));
  up.stop_cleanly();
  CHECK_THAT(up.log_text(), Catch::Contains("spooled fetch(es) from the last run"));
  CHECK(db.query("SELECT fetched_at FROM gatherstats_statistic GROUP BY fetched_at"
                 " HAVING count(*) <> 15")
            .empty());
}
