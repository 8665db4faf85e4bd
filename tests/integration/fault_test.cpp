// Faults between gatherstatsd and PostgreSQL, each with exact counts: the
// database stopped, restarted mid-commit, the daemon killed while results
// are spooled, and a spool that is full or read-only. Each test runs its own
// PostgreSQL cluster (test::private_cluster), since stopping the fixture's
// would break the tests running beside it.
//
// "Every fetch" is counted by the test server, which counts the requests it
// answers per path; each endpoint has a path of its own.
#include "support/daemon.hpp"

#include <libpq-fe.h>
#include <catch2/catch.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const std::string data_dir = test::source_dir() + "/tests/data";

using test::check_all_stored_once;
using test::lines_with;
using test::partial_fetches;
using test::spool_files;
using test::three_endpoints;

}  // namespace

TEST_CASE(
    "the database stopped for 20 s while three endpoints are polled every second: every fetch "
    "is stored exactly once and whole, through memory and the spool",
    "[daemon][fault]") {
  test::private_cluster pg;
  test::scratch_database db(pg.admin_conninfo());
  db.migrate();
  three_endpoints eps;
  // Room in memory for a few fetches only, so the outage spills to disk.
  test::daemon_process d(test::database_yaml(db) + eps.yaml() +
                         "spool: {directory: @SPOOL@, memory_max_bytes: 24KiB}\n");
  bool started = test::eventually([&] { return test::fetches_of(db, eps.all[0].url) >= 2; }, 15s);
  INFO(d.log_text());
  REQUIRE(started);

  pg.down();
  auto before = eps.requests(eps.all[2]);
  REQUIRE(d.logged("database lost", 10s));
  REQUIRE(test::eventually([&] { return eps.requests(eps.all[2]) >= before + 20; }, 30s));
  // No connection is up: new fetches go to the spool, not to memory.
  CHECK(d.logged("no database connection is up: new fetches go to the spool", 1s));
  CHECK(spool_files(d.spool_dir()) > 0);
  pg.up();

  REQUIRE(d.logged("database back", 40s));
  check_all_stored_once(db, eps, d);
  CHECK(spool_files(d.spool_dir()) == 0);
  CHECK(d.log_text().find("results dropped") == std::string::npos);
}

TEST_CASE(
    "the database restarted in the middle of commits: nothing lost, nothing duplicated, nothing "
    "partial",
    "[daemon][fault]") {
  test::private_cluster pg;
  test::scratch_database db(pg.admin_conninfo());
  db.migrate();
  three_endpoints eps;
  // A fetch of 10,000 rows every second keeps a commit in flight much of
  // the time, so a restart lands in the middle of one.
  eps.all[2].url = eps.server.url("/generated?leaves=10000");
  eps.all[2].rows = 10'000;
  test::daemon_process d(test::database_yaml(db) + eps.yaml());
  REQUIRE(test::eventually([&] { return test::fetches_of(db, eps.all[2].url) >= 2; }, 20s));
  for (int restart = 0; restart < 3; ++restart) {
    auto committed = test::fetches_of(db, eps.all[2].url);
    pg.down();
    pg.up();
    // Wait for commits to flow again before the next restart.
    REQUIRE(test::eventually([&] { return test::fetches_of(db, eps.all[2].url) >= committed + 2; },
                             30s));
  }
  CHECK(d.logged("database lost", 1s));
  check_all_stored_once(db, eps, d);
}

TEST_CASE("the daemon killed with SIGKILL while results are spooled: the next start commits them",
          "[daemon][fault]") {
  test::private_cluster pg;
  test::scratch_database db(pg.admin_conninfo());
  db.migrate();
  three_endpoints eps;
  test::temp_dir state;
  const std::string spool =
      "spool: {directory: \"" + (state.path() / "spool").string() + "\", memory_max_bytes: 1KiB}\n";
  pg.down();
  long long spooled = 0;
  {
    // Every fetch is bigger than 1 KiB: each goes straight to the spool.
    test::daemon_process d(test::database_yaml(db) + eps.yaml() + spool);
    REQUIRE(test::eventually([&] { return spool_files(state.path() / "spool") >= 9; }, 30s));
    REQUIRE(d.process->signal_and_wait(SIGKILL, 10s).has_value());
    spooled = spool_files(state.path() / "spool");
  }
  pg.up();
  // The next start polls another endpoint: what the first run fetched can
  // only come from the spool.
  test::daemon_process again(test::database_yaml(db) + "endpoints:\n  - {name: other, url: \"" +
                             eps.server.url("/stats?other") + "\", interval: 1h}\n" + spool);
  REQUIRE(again.logged(std::to_string(spooled) + " spooled fetch(es) from the last run", 10s));
  auto stored = [&] {
    long long n = 0;
    for (const auto& e : eps.all) n += test::fetches_of(db, e.url);
    return n;
  };
  CHECK(test::eventually([&] { return stored() == spooled; }, 30s));
  CHECK(test::eventually([&] { return spool_files(state.path() / "spool") == 0; }, 10s));
  again.stop_cleanly();
  CHECK(stored() == spooled);
  for (const auto& e : eps.all) CHECK(partial_fetches(db, e.url, e.rows) == 0);
}

namespace {

// A private cluster with a migrated database, and one endpoint that serves
// its document `n` times, then 410 Gone for good: the number of fetches that
// can be stored is known before the test starts. The fetch log is off, so
// the spool holds only fetches with statistics.
struct counted_run {
  static constexpr long long n = 12;
  static constexpr long long rows = 15;
  test::private_cluster pg;
  test::scratch_database db{pg.admin_conninfo()};
  test::test_server server{"", data_dir};
  std::string url = server.url("/stats-times?n=" + std::to_string(n));
  test::temp_dir state;
  fs::path spool = state.path() / "spool";

  counted_run() { db.migrate(); }

  std::string spool_yaml() const { return "spool: {directory: \"" + spool.string() + "\"}\n"; }

  // The first run, once two of its fetches are stored.
  std::unique_ptr<test::daemon_process> start() const {
    auto d = std::make_unique<test::daemon_process>(
        test::database_yaml(db) + "  fetch_log: false\nendpoints:\n  - {name: counted, url: \"" +
        url + "\", interval: 1s}\n" + spool_yaml());
    bool started = test::eventually([&] { return test::fetches_of(db, url) >= 2; }, 15s);
    INFO(d->log_text());
    REQUIRE(started);
    return d;
  }

  // Three requests past the last document: it was served two intervals ago.
  bool done_serving() const { return test::requests_served(server, "/stats-times") >= n + 3; }

  // After the first run was killed: a second run, polling another endpoint,
  // must commit every one of the first run's fetches from the spool, once
  // and whole, and leave the spool empty.
  void check_spool_replayed() const {
    test::daemon_process again(test::database_yaml(db) + "endpoints:\n  - {name: other, url: \"" +
                               server.url("/stats?other") + "\", interval: 1h}\n" + spool_yaml());
    bool all = test::eventually([&] { return test::fetches_of(db, url) >= n; }, 30s);
    INFO(again.log_text());
    CHECK(all);
    CHECK(test::eventually([&] { return spool_files(spool) == 0; }, 10s));
    again.stop_cleanly();
    CHECK(test::fetches_of(db, url) == n);
    CHECK(partial_fetches(db, url, rows) == 0);
    CHECK(std::stoll(db.query("SELECT count(*) FROM gatherstats_statistic WHERE endpoint = '" +
                              url + "'")[0][0]) == n * rows);
  }
};

}  // namespace

TEST_CASE(
    "the daemon killed with SIGKILL ten seconds into a database outage: after a restart every "
    "fetch it made is stored exactly once, whole",
    "[daemon][fault][durable]") {
  counted_run run;
  {
    // The default memory bound (64 MiB) would hold every fetch of this
    // outage in memory: only the spool can keep them.
    auto d = run.start();
    run.pg.down();
    const auto outage = std::chrono::steady_clock::now();
    REQUIRE(test::eventually([&] { return run.done_serving(); }, 40s));
    CHECK(std::chrono::steady_clock::now() - outage >= 10s);
    CHECK(spool_files(run.spool) > 0);
    REQUIRE(d->process->signal_and_wait(SIGKILL, 10s).has_value());
  }
  run.pg.up();
  run.check_spool_replayed();
}

TEST_CASE(
    "the daemon killed with SIGKILL while its commits wait on a locked table: the fetches that "
    "waited are in the spool and stored once after a restart",
    "[daemon][fault][durable]") {
  counted_run run;
  {
    auto d = run.start();
    // The database answers, but no insert can finish: the daemon's
    // connections stay up and its commits wait, with fetches behind them.
    std::unique_ptr<PGconn, decltype(&PQfinish)> locker(PQconnectdb(run.db.conninfo().c_str()),
                                                        &PQfinish);
    REQUIRE(PQstatus(locker.get()) == CONNECTION_OK);
    auto exec = [&](const char* sql) {
      std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(locker.get(), sql), &PQclear);
      return PQresultStatus(r.get()) == PGRES_COMMAND_OK;
    };
    REQUIRE(exec("BEGIN; LOCK TABLE gatherstats_statistic IN EXCLUSIVE MODE"));
    REQUIRE(test::eventually([&] { return run.done_serving(); }, 40s));
    const auto stored = test::fetches_of(run.db, run.url);
    CHECK(stored < run.n);
    // Each fetch not stored is in the spool: copied there once it had
    // waited spool.memory_max_wait (2 s), the last of them over 2 s ago.
    CHECK(spool_files(run.spool) == run.n - stored);
    CHECK(d->logged("waited longer than spool.memory_max_wait", 1s));
    REQUIRE(d->process->signal_and_wait(SIGKILL, 10s).has_value());
    CHECK(exec("ROLLBACK"));
  }
  run.check_spool_replayed();
}

namespace {

// The database never reachable; every fetch (over 1 KiB) goes to a spool
// that `mount_options` make unusable: a tmpfs mounted over the spool
// directory in a mount namespace of the daemon's own.
void check_unusable_spool(const std::string& mount_options, const std::string& why) {
  three_endpoints eps;
  const std::string yaml =
      "database: {conninfo: \"host=127.0.0.1 port=1 dbname=none connect_timeout=1\"}\n" +
      eps.yaml() + "spool: {directory: @SPOOL@, memory_max_bytes: 1KiB}\n";
  const std::string script =
      "mkdir -p \"$0\" && mount -t tmpfs -o " + mount_options + " tmpfs \"$0\" && exec \"$@\"";
  auto d = std::make_unique<test::daemon_process>(
      yaml, std::vector<std::string>{"/usr/bin/unshare", "-m", "/bin/sh", "-c", script, "@SPOOL@"});
  bool dropped = d->logged("results dropped", 15s);
  INFO(d->log_text());
  REQUIRE(dropped);
  CHECK(d->logged(why, 1s));
  // Each loss names the endpoint and the fetch's time.
  CHECK(d->logged("fetch of e0 at 20", 5s));
  // And the daemon keeps fetching.
  auto before = eps.requests(eps.all[0]);
  CHECK(test::eventually([&] { return eps.requests(eps.all[0]) >= before + 3; }, 10s));
  d->stop_cleanly();
}

}  // namespace

TEST_CASE("the spool out of space: each lost fetch is an error naming it, and fetching goes on",
          "[daemon][fault][spool]") {
  check_unusable_spool("size=16k", "No space left on device");
}

TEST_CASE("the spool read-only: each lost fetch is an error naming it, and fetching goes on",
          "[daemon][fault][spool]") {
  check_unusable_spool("ro", "Read-only file system");
}

namespace {

// One endpoint of 200 rows at 1 s, the database down from the start, and a
// spool with room for two fetches under `when_full`.
struct full_spool {
  test::private_cluster pg;
  test::scratch_database db{pg.admin_conninfo()};
  three_endpoints eps;
  const three_endpoints::endpoint& e = eps.all[2];
  std::unique_ptr<test::daemon_process> d;

  explicit full_spool(const std::string& when_full) {
    db.migrate();
    pg.down();
    d = std::make_unique<test::daemon_process>(
        test::database_yaml(db) + "endpoints:\n  - {name: g, url: \"" + e.url +
        "\", interval: 1s}\n" +
        "spool: {directory: @SPOOL@, memory_max_bytes: 1KiB, max_bytes: 12KiB, when_full: " +
        when_full + "}\n");
  }
  long long lost(const std::string& line) const { return lines_with(d->log_text(), line); }

  // With the database back: every fetch is stored or was reported lost in
  // a log line containing `line`, exactly; then the daemon stops cleanly.
  void check_accounted(const std::string& line) {
    bool caught_up = test::eventually(
        [&] { return test::fetches_of(db, e.url) + lost(line) == eps.requests(e); }, 30s);
    d->stop_cleanly();
    INFO(d->log_text());
    CHECK(caught_up);
    CHECK(lost(line) >= 1);
    CHECK(test::fetches_of(db, e.url) + lost(line) == eps.requests(e));
    CHECK(test::fetches_of(db, e.url) >= 2);
    CHECK(partial_fetches(db, e.url, e.rows) == 0);
  }
};

}  // namespace

TEST_CASE(
    "a full spool under when_full: drop_oldest drops the oldest, one error each, and the rest is "
    "committed: stored + dropped = fetched",
    "[daemon][fault][spool]") {
  full_spool f("drop_oldest");
  REQUIRE(test::eventually([&] { return f.lost("dropped to make room") >= 3; }, 30s));
  f.pg.up();
  f.check_accounted("dropped to make room");
}

TEST_CASE(
    "a full spool under when_full: stop_fetching stops fetching until the database takes the "
    "spool: stored + refused = fetched",
    "[daemon][fault][spool]") {
  full_spool f("stop_fetching");
  REQUIRE(f.d->logged("fetching stops", 30s));
  auto stopped_at = f.eps.requests(f.e);
  // ok-sleep: the observation window in which no fetch may happen.
  std::this_thread::sleep_for(3s);
  CHECK(f.eps.requests(f.e) == stopped_at);
  f.pg.up();
  REQUIRE(f.d->logged("fetching resumes", 30s));
  REQUIRE(test::eventually([&] { return f.eps.requests(f.e) >= stopped_at + 2; }, 10s));
  f.check_accounted(" is full (");
}

TEST_CASE(
    "fetches that reach the spool faster than it writes them pause fetching until it catches "
    "up, and every fetch is stored",
    "[daemon][fault][spool]") {
  test::private_cluster pg;
  test::scratch_database db(pg.admin_conninfo());
  db.migrate();
  three_endpoints eps;
  // Each fetch holds over 1 MiB in memory (100,000 rows), more than the
  // spool's write backlog may hold: with the database down, every fetch on
  // its way to the spool pauses fetching until it is written. No retries,
  // so that each request the server answers is one fetch: stored, or (under
  // a sanitizer, slow) a timeout the log reports.
  const three_endpoints::endpoint big{"/generated", eps.server.url("/generated?leaves=100000"),
                                      100'000};
  pg.down();
  // Without the fetch log, every spool file is a fetch's statistics: a
  // failed fetch (a timeout) is only in the log, counted once below.
  const std::string head = test::database_yaml(db) + "  fetch_log: false\n" +
                           "spool: {directory: @SPOOL@, memory_max_bytes: 1KiB}\n";
  test::daemon_process d(head + "endpoints:\n  - {name: big, url: \"" + big.url +
                         "\", interval: 2s, timeout: 1900ms, retries: 0}\n");
  bool paused = d.logged("the spool writes slower than fetches arrive", 60s);
  bool resumed = paused && d.logged("the spool caught up: fetching resumes", 30s);
  bool spooled = resumed && test::eventually([&] { return spool_files(d.spool_dir()) >= 2; }, 60s);
  pg.up();
  // New fetches keep arriving every 2 s, each on its way through the spool
  // (memory_max_bytes is tiny), and a 100,000-row commit can take longer
  // than that (5 s under a sanitizer): for the spool to empty, "big" is
  // replaced by a small endpoint fetched daily. Its in-flight fetch still
  // arrives and is counted.
  std::string spool_path = d.spool_dir().string();
  std::string next = head;
  next.replace(next.find("@SPOOL@"), 7, "\"" + spool_path + "\"");
  std::ofstream(d.config) << next << "endpoints:\n  - {name: small, url: \""
                          << eps.server.url("/stats") << "\", interval: 24h}\n";
  ::kill(d.process->pid(), SIGHUP);
  bool caught_up =
      spooled &&
      test::eventually([&] { return lines_with(d.log_text(), "configuration loaded") == 2; },
                       30s) &&
      test::eventually(
          [&] { return spool_files(d.spool_dir()) == 0 && test::fetches_of(db, big.url) >= 2; },
          120s);
  d.stop_cleanly();
  INFO(d.log_text());
  CHECK(paused);
  CHECK(resumed);
  CHECK(spooled);
  CHECK(caught_up);
  // A fetch that ended while the daemon stopped waits in the spool for the
  // next start.
  const long long failed = lines_with(d.log_text(), "fetch failed");
  const long long left = spool_files(d.spool_dir());
  CHECK(left <= 1);
  CHECK(test::fetches_of(db, big.url) + failed + left == eps.requests(big));
  CHECK(test::fetches_of(db, big.url) >= 2);
  CHECK(partial_fetches(db, big.url, big.rows) == 0);
  CHECK(d.log_text().find("results dropped") == std::string::npos);
}
