// database.retention on a plain statistics table against the real
// PostgreSQL: async_delete_expired's batches (and its plan, a TID scan),
// straight and through PgBouncer, and a real gatherstatsd deleting old rows
// at start, logging it and counting it on its metrics endpoint, on our table
// and on the original's.
#include "gatherstats/http/client.hpp"
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/statistic_table.hpp"
#include "support/daemon.hpp"
#include "support/route.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace gatherstats;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

long long number(const test::scratch_database& db, const std::string& sql) {
  return std::stoll(db.query(sql).at(0).at(0));
}

// Our table (`gatherstatsd migrate`: an identity column) or the original's
// (its Django migration: an id serial), empty.
void make_table(const test::scratch_database& db, bool original) {
  if (original)
    db.create_original_table();
  else
    db.migrate();
}

// `n` rows of endpoint `endpoint`, one a second back from `newest` (an SQL
// timestamptz expression).
void insert_rows(const test::scratch_database& db, const std::string& endpoint, int n,
                 const std::string& newest) {
  db.exec(
      "INSERT INTO gatherstats_statistic (endpoint, key, numeric_value, fetched_at)"
      " SELECT '" +
      endpoint + "', 'k', i, (" + newest + ") - i * interval '1 second'" +
      " FROM generate_series(0, " + std::to_string(n - 1) + ") AS i");
}

// async_delete_expired called until a batch comes back short: what each
// call returned.
asio::awaitable<std::vector<std::size_t>> delete_all(std::string conninfo, timestamp cutoff,
                                                     std::size_t batch) {
  auto conn = co_await pg::connection::async_connect(conninfo, steady::now() + 20s);
  if (!conn) throw std::runtime_error(conn.error().message);
  const auto table = pg::table_name::parse("gatherstats_statistic").value();
  std::vector<std::size_t> out;
  for (;;) {
    auto deleted =
        co_await pg::async_delete_expired(*conn, table, cutoff, batch, steady::now() + 20s);
    if (!deleted) throw std::runtime_error(deleted.error().message);
    out.push_back(*deleted);
    if (*deleted < batch) break;
  }
  co_return out;
}

// A GET of the daemon's listener: the body, or the error.
std::string get(const std::string& url) {
  return test::run_async([](std::string u) -> asio::awaitable<std::string> {
    auto client = http::client::create({});
    auto r = co_await client->async_get(u, 1 << 20, steady::now() + 5s);
    co_return r ? r->body : r.error().message;
  }(url));
}

// The value of a sample without labels in a Prometheus text scrape.
std::optional<std::string> sample(const std::string& scrape, const std::string& name) {
  std::istringstream in(scrape);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(name + " ")) return line.substr(name.size() + 1);
  return std::nullopt;
}

// A daemon with database.retention: 1h and a metrics listener, on a table
// holding 25,000 rows two days old (three batches) and ten of a minute ago.
void check_daemon_removes_old_rows(bool original) {
  test::scratch_database db;
  make_table(db, original);
  insert_rows(db, "http://old.invalid/stats", 25'000, "now() - interval '2 days'");
  insert_rows(db, "http://recent.invalid/stats", 10, "now() - interval '1 minute'");
  test::test_server server;
  const std::string url = server.url("/stats");

  // The configuration refuses port 0: a port free a moment ago, and another
  // if something took it in between.
  std::unique_ptr<test::daemon_process> d;
  std::uint16_t port = 0;
  for (int attempt = 0; attempt < 5 && !d; ++attempt) {
    port = test::free_port();
    d = std::make_unique<test::daemon_process>(
        test::database_yaml(db) + "  retention: 1h\nendpoints:\n  - {name: good, url: \"" + url +
        "\", interval: 1s}\nmetrics:\n  listen: \"127.0.0.1:" + std::to_string(port) + "\"\n");
    // Up when the listener answers with this daemon's own configuration
    // file: other tests run daemons too.
    const std::string status = "http://127.0.0.1:" + std::to_string(port) + "/api/v1/status";
    const std::string mine = "\"" + d->config.string() + "\"";
    bool taken = false;
    const bool up = test::eventually(
        [&] {
          taken = d->log_text().find("cannot listen") != std::string::npos;
          return taken || get(status).find(mine) != std::string::npos;
        },
        15s);
    INFO(d->log_text());
    REQUIRE((up || taken));
    if (taken) d.reset();
  }
  REQUIRE(d);
  const bool removed = test::eventually(
      [&] {
        return number(db,
                      "SELECT count(*) FROM gatherstats_statistic"
                      " WHERE endpoint = 'http://old.invalid/stats'") == 0;
      },
      30s);
  const bool logged = d->logged("rows removed", 10s);
  const bool polled = test::eventually([&] { return test::fetches_of(db, url) >= 1; }, 20s);
  // The counter is updated before the event is logged.
  const std::string scrape = get("http://127.0.0.1:" + std::to_string(port) + "/metrics");
  d->stop_cleanly();
  const std::string log = d->log_text();
  INFO(log);
  CHECK(removed);
  CHECK(logged);
  CHECK(polled);
  CHECK(number(db,
               "SELECT count(*) FROM gatherstats_statistic"
               " WHERE endpoint = 'http://recent.invalid/stats'") == 10);
  CHECK(test::fetches_of(db, url) >= 1);  // what it fetched stays
  CHECK(test::lines_with(
            log, "info: rows removed rows=25000 (25000 row(s) with fetched_at before ") == 1);
  CHECK(test::lines_with(log, " deleted from gatherstats_statistic (retention 1h))") == 1);
  INFO(scrape);
  CHECK(sample(scrape, "gatherstatsd_retention_deleted_rows_total") == "25000");
  CHECK(sample(scrape, "gatherstatsd_retention_dropped_partitions_total") == "0");
  CHECK(sample(scrape, "gatherstatsd_partitions_created_total") == "0");
}

}  // namespace

ROUTED_TEST_CASE(deletes_in_batches,
                 "async_delete_expired deletes rows before the cutoff in batches, and no others",
                 "[retention][pg]") {
  const bool original = GENERATE(false, true);
  INFO((original ? "the original's table" : "our table"));
  test::scratch_database db;
  make_table(db, original);
  const timestamp cutoff = now_utc() - std::chrono::hours(24);
  const std::string at_cutoff = "'" + pg::format_timestamp(cutoff) + "'::timestamptz";
  // 25 rows before the cutoff, the newest a second before it; 5 from the
  // cutoff on (the first exactly at it: kept, the cutoff is exclusive).
  insert_rows(db, "old", 25, at_cutoff + " - interval '1 second'");
  insert_rows(db, "kept", 5, at_cutoff + " + interval '4 seconds'");

  CHECK(test::run_async(delete_all(via(db), cutoff, 10)) == std::vector<std::size_t>{10, 10, 5});
  CHECK(number(db, "SELECT count(*) FROM gatherstats_statistic WHERE endpoint = 'old'") == 0);
  CHECK(number(db, "SELECT count(*) FROM gatherstats_statistic WHERE endpoint = 'kept'") == 5);
  CHECK(number(db, "SELECT count(*) FROM gatherstats_statistic WHERE fetched_at = " + at_cutoff) ==
        1);
  // A full last batch is followed by an empty one.
  insert_rows(db, "old", 20, at_cutoff + " - interval '1 second'");
  CHECK(test::run_async(delete_all(via(db), cutoff, 10)) == std::vector<std::size_t>{10, 10, 0});
  CHECK(number(db, "SELECT count(*) FROM gatherstats_statistic") == 5);

  // Each batch finds its rows by ctid: a TID scan of exactly the rows the
  // batch selected, not a second pass over the table. (On a table of a few
  // pages a sequential scan is cheaper, and the planner takes it.)
  insert_rows(db, "many", 50'000, at_cutoff + " - interval '1 second'");
  db.exec("ANALYZE gatherstats_statistic");
  std::string plan;
  for (const auto& row :
       db.query("EXPLAIN DELETE FROM gatherstats_statistic WHERE ctid = ANY (ARRAY("
                "SELECT ctid FROM gatherstats_statistic WHERE fetched_at < now() LIMIT 10000))"))
    plan += row.at(0) + "\n";
  INFO(plan);
  CHECK(plan.find("Tid Scan on gatherstats_statistic") != std::string::npos);
  CHECK(test::run_async(delete_all(via(db), cutoff, 10'000)) ==
        std::vector<std::size_t>{10'000, 10'000, 10'000, 10'000, 10'000, 0});
  CHECK(number(db, "SELECT count(*) FROM gatherstats_statistic") == 5);
}

TEST_CASE("gatherstatsd with database.retention deletes old rows at start, logs and counts them",
          "[retention][daemon]") {
  check_daemon_removes_old_rows(false);
}

TEST_CASE("database.retention on the original's table (an id serial) works the same",
          "[retention][daemon]") {
  check_daemon_removes_old_rows(true);
}
