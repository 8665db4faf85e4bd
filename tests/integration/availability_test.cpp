// A database that is not simply up or down (issue 12): hosts of a
// multi-host conninfo that do not resolve, refuse or never answer; a server
// that turns read-only; a server that stops answering without an error
// (frozen); a primary that fails over to its streaming standby; and
// PgBouncer in transaction pooling in front of it all. Real servers only:
// private clusters (tests/support/pg-cluster), the primary/standby pair
// (tests/support/pg-pair, tagged [failover]), PgBouncer
// (tests/support/pgbouncer-pool, tagged [pgbouncer]), the real gatherstatsd
// and the test server, whose per-path request counts say exactly how many
// fetches there were.
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/statistic_table.hpp"
#include "support/daemon.hpp"
#include "support/route.hpp"

#include <libpq-fe.h>
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <iostream>
#include <memory>

namespace asio = boost::asio;
using namespace gatherstats;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

using test::check_all_stored_once;
using test::lines_with;
using test::partial_fetches;
using test::silent_listener;
using test::three_endpoints;

namespace {

// The value of `key=` in a keyword conninfo.
std::string keyword(const std::string& conninfo, const std::string& key) {
  auto at = conninfo.find(key + "=");
  if (at == std::string::npos) return "";
  at += key.size() + 1;
  return conninfo.substr(at, conninfo.find(' ', at) - at);
}

// Connects and asks `sql`; the first value, or why not.
asio::awaitable<outcome<std::string>> ask(std::string conninfo, std::string sql,
                                          std::chrono::milliseconds within) {
  auto conn = co_await pg::connection::async_connect(conninfo, steady::now() + within);
  if (!conn) co_return conn.error();
  auto r = co_await conn->async_exec(sql, steady::now() + 20s);
  if (!r) co_return r.error();
  co_return std::string(r->get(0, 0));
}

}  // namespace

// --- connecting through a host list ------------------------------------------

TEST_CASE(
    "a multi-host conninfo passes over a host that does not resolve and one that refuses, and "
    "connects to the next",
    "[pg][connect]") {
  test::scratch_database db;
  const std::string port = keyword(test::tcp_admin_conninfo(), "port");
  const auto started = steady::now();
  auto r = test::run_async(ask("host=no-such-host.invalid,127.0.0.1,localhost port=5432,1," + port +
                                   " user=" + keyword(test::tcp_admin_conninfo(), "user") +
                                   " dbname=" + db.name(),
                               "SELECT current_database()", 20s));
  INFO((r ? *r : r.error().message));
  REQUIRE(r.has_value());
  CHECK(*r == db.name());
  CHECK(steady::now() - started < 10s);
}

TEST_CASE("when no host can be had, the error names each host and why, and no password",
          "[pg][connect]") {
  auto r = test::run_async(
      ask("host=no-such-host.invalid,127.0.0.1 port=5432,1 password=hunter2 user=gs dbname=x",
          "SELECT 1", 20s));
  REQUIRE_FALSE(r.has_value());
  INFO(r.error().message);
  CHECK(r.error().is_transient());
  CHECK_THAT(r.error().message,
             Catch::StartsWith("could not connect to the database: ") &&
                 Catch::Contains("could not resolve host \"no-such-host.invalid\" port 5432") &&
                 Catch::Contains("\"127.0.0.1\", port 1 failed") &&
                 Catch::Contains("Connection refused"));
  CHECK(r.error().message.find("hunter2") == std::string::npos);
}

TEST_CASE("a host that accepts but never answers costs only its share of the deadline",
          "[pg][connect]") {
  test::scratch_database db;
  silent_listener hang;
  const std::string next =
      "127.0.0.1," + keyword(test::tcp_admin_conninfo(), "host") +
      " port=" + std::to_string(hang.port()) + "," + keyword(test::tcp_admin_conninfo(), "port") +
      " user=" + keyword(test::tcp_admin_conninfo(), "user") + " dbname=" + db.name();
  SECTION("without connect_timeout: half of the 12 s each") {
    const auto started = steady::now();
    auto r = test::run_async(ask("host=" + next, "SELECT 1", 12s));
    auto took = steady::now() - started;
    INFO((r ? *r : r.error().message));
    REQUIRE(r.has_value());
    CHECK(took >= 5500ms);
    CHECK(took < 11s);
  }
  SECTION("connect_timeout=2: two seconds for it, as libpq counts it (per host)") {
    const auto started = steady::now();
    auto r = test::run_async(ask("connect_timeout=2 host=" + next, "SELECT 1", 30s));
    auto took = steady::now() - started;
    INFO((r ? *r : r.error().message));
    REQUIRE(r.has_value());
    CHECK(took >= 1900ms);
    CHECK(took < 6s);
  }
}

TEST_CASE("a host name whose DNS server never answers costs only its share of the deadline",
          "[pg][connect]") {
  // A DNS server that never answers: a UDP socket of ours that reads
  // nothing, named in a resolv.conf that only `gatherstatsd migrate`, in a
  // mount namespace of its own, sees (root: as the spool fault tests).
  int dns = ::socket(AF_INET, SOCK_DGRAM, 0);
  REQUIRE(dns >= 0);
  std::unique_ptr<int, void (*)(int*)> close_dns(&dns, [](int* fd) { ::close(*fd); });
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(53);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(dns, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  test::temp_dir dir;
  // getaddrinfo() would wait 10 s for it.
  const auto resolv =
      dir.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:10 attempts:1\n");
  test::scratch_database db;
  const std::string conninfo = "host=dns-never-answers.example,127.0.0.1 port=5432," +
                               keyword(test::tcp_admin_conninfo(), "port") +
                               " user=" + keyword(test::tcp_admin_conninfo(), "user") +
                               " dbname=" + db.name() + " connect_timeout=2";
  const auto started = steady::now();
  auto r = test::run({"/usr/bin/unshare", "-m", "/bin/sh", "-c",
                      "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"", resolv.string(),
                      test::daemon_bin(), "migrate", "--database", conninfo},
                     60s);
  const auto took = steady::now() - started;
  INFO(r.err);
  CHECK(r.exit_code == 0);
  // The lookup was asked (a query waits in our socket), and given up after
  // the host's 2 s instead of getaddrinfo's 10.
  char query[512];
  CHECK(::recv(dns, query, sizeof query, MSG_DONTWAIT) > 0);
  CHECK(took >= 1900ms);
  CHECK(took < 8s);
  CHECK(db.count() == 0);  // migrated: the table is there
}

namespace {

// Commits one fetch along `path` (or a batch of two along `batch`) on a
// connection that takes any server (target_session_attrs=any); returns the
// outcomes and whether the connection was idle after.
struct refusal {
  std::vector<outcome<std::size_t>> results;
  bool idle_after = true;
};

asio::awaitable<outcome<refusal>> commit_to_read_only(std::string conninfo, int how) {
  const std::string any = conninfo + " target_session_attrs=any";
  auto conn = co_await pg::connection::async_connect(any, steady::now() + 20s);
  if (!conn) co_return conn.error();
  const auto table = pg::table_name::parse("gatherstats_statistic").value();
  std::vector<fetch_record> records(2);
  for (std::size_t i = 0; i < records.size(); ++i) {
    records[i].endpoint = "http://stats.invalid/ro";
    records[i].fetched_at = now_utc() + std::chrono::microseconds(i);
    for (int k = 0; k < 150; ++k) records[i].rows.push_back("k" + std::to_string(k), k);
  }
  refusal out;
  if (how < 10) {
    out.results.push_back(co_await pg::async_commit(*conn, table, records[0], steady::now() + 20s,
                                                    static_cast<pg::commit_path>(how)));
  } else {
    std::vector<const fetch_record*> pointers{&records[0], &records[1]};
    std::span<const fetch_record* const> view(pointers);
    out.results = co_await pg::async_commit_batch(*conn, table, view, steady::now() + 20s,
                                                  static_cast<pg::batch_path>(how - 10));
  }
  out.idle_after = conn->is_idle();
  co_return out;
}

}  // namespace

ROUTED_TEST_CASE(read_only_refusal,
                 "a read-only server's refusal (SQLSTATE 25006) is transient and retires the "
                 "connection, on every commit path",
                 "[pg][connect][commit]") {
  test::scratch_database db;
  db.migrate();
  db.exec("ALTER DATABASE " + db.name() + " SET default_transaction_read_only = on");
  // By default a read-only server is not chosen at all.
  auto refused = test::run_async(ask(via(db), "SELECT 1", 20s));
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().is_transient());
  CHECK_THAT(refused.error().message, Catch::Contains("read-only"));
  // Reached anyway, it refuses every write: transiently, and the connection
  // is not handed on (the next one goes through the host list).
  for (int how : {1, 2, 3, 4, 10, 11, 12}) {
    INFO("path " << how);
    auto r = test::run_async(commit_to_read_only(via(db), how));
    INFO((r ? "" : r.error().message));
    REQUIRE(r.has_value());
    for (const auto& one : r->results) {
      REQUIRE_FALSE(one.has_value());
      CHECK(one.error().is_transient());
    }
    CHECK_THAT(r->results[0].error().message, Catch::Contains("25006"));
    CHECK_FALSE(r->idle_after);
  }
  CHECK(db.count() == 0);
}

// --- a database that stops answering -------------------------------------------

namespace {

// The daemon commits three 1 s endpoints to `conninfo`; `freeze` stops the
// server (SIGSTOP) for at least 8 s of ticks. The daemon must say
// "database lost" once, within the commit deadline (2 s) plus a connect
// (2 s) plus a tick and a margin for a loaded or sanitized run, and after
// the thaw commit every fetch exactly once and whole.
void check_frozen(const test::scratch_database& db, const std::string& conninfo, pid_t postmaster) {
  three_endpoints eps;
  test::daemon_process d("database:\n  conninfo: \"" + conninfo +
                         "\"\n  pool_size: 2\n  statement_timeout: 2s\n  connect_timeout: 2s\n" +
                         eps.yaml() + "spool: {directory: @SPOOL@, memory_max_bytes: 24KiB}\n");
  bool started = test::eventually(
      [&] { return eps.all_stored(db) && test::fetches_of(db, eps.all[2].url) >= 2; }, 20s);
  INFO(d.log_text());
  REQUIRE(started);
  {
    test::frozen_server frozen(postmaster);
    REQUIRE(frozen.processes() > 3);
    const auto froze = steady::now();
    const bool lost = d.logged("database lost", 2s + 2s + 1s + 15s);
    const auto noticed = steady::now() - froze;
    INFO(d.log_text());
    REQUIRE(lost);
    std::cout << "frozen server: \"database lost\" after "
              << std::chrono::duration_cast<std::chrono::milliseconds>(noticed).count() << " ms\n";
    auto during = eps.requests(eps.all[2]);
    REQUIRE(test::eventually([&] { return eps.requests(eps.all[2]) >= during + 6; }, 30s));
  }  // thawed here, also when a REQUIRE above fails
  REQUIRE(d.logged("database back", 60s));
  check_all_stored_once(db, eps, d);
  CHECK(lines_with(d.log_text(), "database lost") == 1);
  CHECK(lines_with(d.log_text(), "database back") == 1);
}

}  // namespace

TEST_CASE(
    "frozen: a database that stops answering is noticed within the commit deadline, said once, "
    "and every fetch is committed once it answers again",
    "[daemon][fault][frozen]") {
  test::private_cluster pg;
  test::scratch_database db(pg.admin_conninfo());
  db.migrate();
  // Over TCP, with the default keepalives and user timeout on.
  check_frozen(db, pg.tcp_admin_conninfo() + " dbname=" + db.name(), pg.postmaster_pid());
}

TEST_CASE(
    "frozen behind PgBouncer: the same, with PgBouncer still accepting connections in front of "
    "the frozen server",
    "[daemon][fault][frozen][pgbouncer]") {
  test::private_cluster pg;
  test::scratch_database db(pg.admin_conninfo());
  db.migrate();
  test::private_pgbouncer bouncer(pg);
  check_frozen(db, bouncer.conninfo_for(db), pg.postmaster_pid());
}

// --- PgBouncer in transaction pooling ------------------------------------------

TEST_CASE(
    "the daemon through PgBouncer in transaction pooling stores every tick with its fetch log, "
    "migrated through it",
    "[daemon][pgbouncer]") {
  test::scratch_database db;
  // `migrate` through PgBouncer too.
  auto migrated =
      test::run({test::daemon_bin(), "migrate", "--database", test::through_pgbouncer(db)});
  INFO(migrated.err);
  REQUIRE(migrated.exit_code == 0);
  three_endpoints eps;
  // A failing endpoint adds fetches that are only a log row.
  test::daemon_process d("database:\n  conninfo: \"" + test::through_pgbouncer(db) +
                         "\"\n  pool_size: 2\n" + eps.yaml() +
                         "  - {name: down, url: \"http://127.0.0.1:1/\", interval: 1s, "
                         "retries: 0}\n");
  REQUIRE(test::eventually([&] { return test::fetches_of(db, eps.all[2].url) >= 6; }, 30s));
  check_all_stored_once(db, eps, d);
  for (const auto& e : eps.all) test::check_every_tick_stored(db, e.url);
  // Every fetch logged once, the failures with their reason.
  long long fetched = 0;
  for (const auto& e : eps.all) fetched += eps.requests(e);
  CHECK(db.count("gatherstats_fetch WHERE ok") == fetched);
  CHECK(db.count("gatherstats_fetch WHERE endpoint_name = 'down' AND reason = 'connect'") >= 3);
  CHECK(db.query("SELECT count(*) FROM gatherstats_fetch GROUP BY endpoint_name, tick"
                 " HAVING count(*) > 1")
            .empty());
}

TEST_CASE(
    "the database restarted behind PgBouncer in the middle of commits: nothing lost, nothing "
    "twice, nothing partial",
    "[daemon][fault][pgbouncer]") {
  test::private_cluster pg;
  test::scratch_database db(pg.admin_conninfo());
  db.migrate();
  test::private_pgbouncer bouncer(pg);
  three_endpoints eps;
  // 10,000 rows a second keep a commit in flight much of the time.
  eps.all[2].url = eps.server.url("/generated?leaves=10000");
  eps.all[2].rows = 10'000;
  test::daemon_process d("database:\n  conninfo: \"" + bouncer.conninfo_for(db) +
                         "\"\n  pool_size: 2\n  statement_timeout: 5s\n" + eps.yaml());
  REQUIRE(test::eventually([&] { return test::fetches_of(db, eps.all[2].url) >= 2; }, 20s));
  for (int restart = 0; restart < 2; ++restart) {
    auto committed = test::fetches_of(db, eps.all[2].url);
    pg.down();
    pg.up();
    bool flowing = test::eventually(
        [&] { return test::fetches_of(db, eps.all[2].url) >= committed + 2; }, 60s);
    INFO(d.log_text());
    REQUIRE(flowing);
  }
  check_all_stored_once(db, eps, d);
}

// --- failover: a primary and its synchronous standby -----------------------------

TEST_CASE("target_session_attrs picks the host it names from the pair, in any order",
          "[failover][connect]") {
  test::pg_pair pair;
  const std::string both = "host=localhost,localhost port=" + pair.standby_port() + "," +
                           pair.primary_port() +
                           " user=" + keyword(pair.primary_conninfo(), "user") + " dbname=postgres";
  auto in_recovery = [&](const std::string& attrs) {
    auto r = test::run_async(
        ask(both + " target_session_attrs=" + attrs, "SELECT pg_is_in_recovery()", 20s));
    INFO(attrs << ": " << (r ? *r : r.error().message));
    REQUIRE(r.has_value());
    return *r;
  };
  CHECK(in_recovery("read-write") == "f");
  CHECK(in_recovery("primary") == "f");
  CHECK(in_recovery("standby") == "t");
  CHECK(in_recovery("prefer-standby") == "t");
  CHECK(in_recovery("any") == "t");  // the first in the list
  // Unset: read-write, for gatherstats only writes.
  auto r = test::run_async(ask(both, "SELECT pg_is_in_recovery()", 20s));
  REQUIRE(r.has_value());
  CHECK(*r == "f");
}

TEST_CASE(
    "failover: the primary killed and the standby promoted, every fetch the daemon made is on "
    "the new primary, none twice, each whole",
    "[failover][daemon]") {
  test::pg_pair pair;
  // Its admin conninfo reaches whichever node is the primary.
  test::scratch_database db(pair.admin_conninfo());
  db.migrate();
  three_endpoints eps;
  // A host that does not resolve, then the primary, then the standby.
  const std::string conninfo = "host=no-such-host.invalid,localhost,localhost port=5432," +
                               pair.primary_port() + "," + pair.standby_port() +
                               " user=" + keyword(pair.primary_conninfo(), "user") +
                               " dbname=" + db.name() + " target_session_attrs=read-write";
  test::daemon_process d("database:\n  conninfo: \"" + conninfo +
                         "\"\n  pool_size: 2\n  connect_timeout: 5s\n" + eps.yaml());
  bool started = test::eventually([&] { return test::fetches_of(db, eps.all[2].url) >= 2; }, 30s);
  INFO(d.log_text());
  REQUIRE(started);

  const auto fetched_before = eps.requests(eps.all[2]);
  const auto killed = steady::now();
  pair.kill_primary();
  REQUIRE(d.logged("database lost", 20s));
  // The promotion, timed from the moment it is complete, by the new
  // primary's clock (which also stamps its commits: track_commit_timestamp).
  std::unique_ptr<PGconn, decltype(&PQfinish)> standby(PQconnectdb(pair.standby_conninfo().c_str()),
                                                       &PQfinish);
  REQUIRE(PQstatus(standby.get()) == CONNECTION_OK);
  std::unique_ptr<PGresult, decltype(&PQclear)> promoted(
      PQexec(standby.get(), "SELECT pg_promote(true, 60), clock_timestamp()"), &PQclear);
  REQUIRE(PQresultStatus(promoted.get()) == PGRES_TUPLES_OK);
  REQUIRE(std::string(PQgetvalue(promoted.get(), 0, 0)) == "t");
  const std::string promoted_at = PQgetvalue(promoted.get(), 0, 1);
  const auto promoted_steady = steady::now();

  REQUIRE(d.logged("database back", 60s));
  // Fetches made during the failover and after it.
  REQUIRE(test::eventually([&] { return eps.requests(eps.all[2]) >= fetched_before + 4; }, 30s));
  check_all_stored_once(db, eps, d);
  CHECK(lines_with(d.log_text(), "database lost") == 1);
  CHECK(lines_with(d.log_text(), "database back") == 1);

  // The first transaction the new primary committed after its promotion.
  auto first = db.query("SELECT round(extract(epoch FROM min(pg_xact_commit_timestamp(xmin)) - '" +
                        promoted_at +
                        "'::timestamptz) * 1000) FROM gatherstats_statistic WHERE "
                        "pg_xact_commit_timestamp(xmin) > '" +
                        promoted_at + "'::timestamptz");
  REQUIRE_FALSE(first.at(0).at(0).empty());
  const long long after_promotion = std::stoll(first[0][0]);
  std::cout
      << "failover: the first commit on the new primary " << after_promotion
      << " ms after the promotion completed ("
      << std::chrono::duration_cast<std::chrono::milliseconds>(promoted_steady - killed).count()
      << " ms from the kill to the end of the promotion)\n";
  CHECK(after_promotion >= 0);
  CHECK(after_promotion < 35'000);  // the reconnect backoff's ceiling (30 s) and a commit
}

TEST_CASE(
    "a primary turned read-only (SQLSTATE 25006): the daemon goes through the host list, "
    "commits once a writable host exists, and drops nothing",
    "[failover][daemon]") {
  test::pg_pair pair;
  // Straight to the primary: the test reads while it is read-only.
  test::scratch_database db(pair.primary_conninfo());
  db.migrate();
  three_endpoints eps;
  // The standby first: never writable. One connection, so that its 25006
  // is what the daemon reports.
  const std::string conninfo =
      "host=localhost,localhost port=" + pair.standby_port() + "," + pair.primary_port() +
      " user=" + keyword(pair.primary_conninfo(), "user") + " dbname=" + db.name();
  test::daemon_process d("database:\n  conninfo: \"" + conninfo +
                         "\"\n  pool_size: 1\n  connect_timeout: 5s\n" + eps.yaml());
  bool started = test::eventually([&] { return test::fetches_of(db, eps.all[2].url) >= 2; }, 30s);
  INFO(d.log_text());
  REQUIRE(started);

  auto admin = [&](const std::string& sql) {
    std::unique_ptr<PGconn, decltype(&PQfinish)> c(PQconnectdb(pair.primary_conninfo().c_str()),
                                                   &PQfinish);
    REQUIRE(PQstatus(c.get()) == CONNECTION_OK);
    for (const std::string& s : {sql, std::string("SELECT pg_reload_conf()")}) {
      std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(c.get(), s.c_str()), &PQclear);
      REQUIRE((PQresultStatus(r.get()) == PGRES_COMMAND_OK ||
               PQresultStatus(r.get()) == PGRES_TUPLES_OK));
    }
  };
  // Made writable again however the test ends (pg-pair ensure does too).
  struct writable_again {
    std::function<void()> f;
    ~writable_again() { f(); }
  } guard{[&] { admin("ALTER SYSTEM RESET default_transaction_read_only"); }};
  admin("ALTER SYSTEM SET default_transaction_read_only = on");
  REQUIRE(d.logged("database lost", 20s));
  CHECK_THAT(d.log_text(), Catch::Contains("25006"));
  // Some ticks with no writable host, then the primary writable again.
  auto during = eps.requests(eps.all[2]);
  REQUIRE(test::eventually([&] { return eps.requests(eps.all[2]) >= during + 3; }, 30s));
  CHECK(eps.all_stored(db) == false);
  admin("ALTER SYSTEM RESET default_transaction_read_only");
  REQUIRE(d.logged("database back", 60s));
  check_all_stored_once(db, eps, d);
  CHECK(lines_with(d.log_text(), "database lost") == 1);
}
