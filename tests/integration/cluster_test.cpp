// Cluster mode (docs/cluster.md) with real members: several gatherstatsd
// processes with one configuration (but for cluster.member) and one
// PostgreSQL, fetching 30 aligned 1 s endpoints of one test server. The
// checks look at what was stored, never at the members' insides: each
// scenario takes a window of ticks and requires every tick of it stored
// exactly once (one ok fetch-log row per endpoint and tick, and exactly
// that fetch's rows in the statistics), whatever happened in it: members
// joining, leaving (SIGTERM), killed (SIGKILL), cut off from the database.
// Each member's share is checked against cluster::owners, which the test
// computes itself for the member names it chose.
#include "gatherstats/cluster/assignment.hpp"
#include "support/daemon.hpp"
#include "support/route.hpp"

#include <libpq-fe.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string_view>

using namespace std::chrono_literals;
using std::chrono::duration;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;
using names = std::vector<std::string>;

namespace {

const std::string data_dir = test::source_dir() + "/tests/data";

// The cluster's settings in every scenario: a lease of 3 s (heartbeats
// every second), 1 s endpoints with a 900 ms timeout.
constexpr auto lease = 3s;
constexpr auto interval = 1s;
constexpr auto timeout = 900ms;
constexpr std::size_t endpoint_count = 30;
constexpr long long rows_per_fetch = 6;  // tests/data/asset_counts.json

// Wall-clock seconds since the epoch: ticks are whole seconds of it, the
// same on every member.
double wall_now() {
  return duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
long long next_tick() { return static_cast<long long>(std::floor(wall_now())) + 1; }

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

// ARRAY['a', 'b'] (the names are the test's own: no quoting needed).
std::string sql_array(const names& all) {
  std::string out = "ARRAY[";
  for (std::size_t i = 0; i < all.size(); ++i) out += (i ? ", '" : "'") + all[i] + "'";
  return out + "]::text[]";
}

// A statement on the cluster's postgres database, for what outlives a
// scratch database (roles).
void admin_exec(const std::string& sql) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> c(PQconnectdb(test::admin_conninfo().c_str()),
                                                 &PQfinish);
  REQUIRE(PQstatus(c.get()) == CONNECTION_OK);
  std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(c.get(), sql.c_str()), &PQclear);
  INFO(sql << ": " << PQresultErrorMessage(r.get()));
  CHECK(PQresultStatus(r.get()) == PGRES_COMMAND_OK);
}

// The endpoints every member is configured with: a document of its own per
// endpoint (so the server counts each one's requests), aligned, so that a
// tick is the same whole second on every member.
struct shared_endpoints {
  test::temp_dir files;
  names all = write_documents(files);
  test::test_server server{"", files.path().string()};

  static names write_documents(const test::temp_dir& dir) {
    const std::string document = test::read_text_file(data_dir + "/asset_counts.json");
    names out;
    for (std::size_t i = 0; i < endpoint_count; ++i) {
      char name[8];
      std::snprintf(name, sizeof name, "e%02zu", i);
      out.push_back(name);
      dir.write(out.back() + ".json", document);
    }
    return out;
  }
  std::string path(const std::string& name) const { return "/files/" + name + ".json"; }
  std::string url(const std::string& name) const { return server.url(path(name), "127.0.0.1"); }
  std::string yaml() const {
    std::string out =
        "defaults: {interval: 1s, timeout: 900ms, retries: 0, align: true}\nendpoints:\n";
    for (const auto& n : all) out += "  - {name: " + n + ", url: \"" + url(n) + "\"}\n";
    return out;
  }
};

// How many members fetched each endpoint over a stretch of time, from the
// server's request counts at its start and end: each tick whose requests
// surely came between the two counts is counted `fetchers` times, and no
// tick outside the stretch is. A tick's requests come within `latency`
// of it (they are all sent at the tick, to a server on loopback).
class fetchers_count {
 public:
  static constexpr double latency = 0.25;
  explicit fetchers_count(const shared_endpoints& eps, names which)
      : eps_(eps), which_(std::move(which)) {
    start_[0] = wall_now();
    before_ = counts();
    start_[1] = wall_now();
  }
  // One line per endpoint whose count does not fit `fetchers` members.
  names problems(unsigned fetchers) {
    const double end0 = wall_now();
    const auto after = counts();
    const double end1 = wall_now();
    // Ticks T with start_[1] < T and T + latency < end0: surely counted;
    // ticks with start_[0] < T + latency and T <= end1: perhaps.
    const long long surely = static_cast<long long>(std::ceil(end0 - latency)) - 1 -
                             static_cast<long long>(std::floor(start_[1]));
    const long long at_most = static_cast<long long>(std::floor(end1)) -
                              static_cast<long long>(std::floor(start_[0] - latency));
    names out;
    for (const auto& e : which_) {
      const long long n = after.at(e) - before_.at(e);
      if (n < fetchers * surely || n > fetchers * at_most)
        out.push_back(e + ": " + std::to_string(n) + " requests for " + std::to_string(surely) +
                      " to " + std::to_string(at_most) + " ticks, " + std::to_string(fetchers) +
                      " fetcher(s) each");
    }
    // One fetcher more or less must not fit as well.
    if ((fetchers + 1) * surely <= fetchers * at_most ||
        (fetchers - 1) * at_most >= fetchers * surely)
      out.push_back("too short to tell " + std::to_string(fetchers) +
                    " fetcher(s) from one more or less");
    return out;
  }

 private:
  std::map<std::string, long long> counts() const {
    std::map<std::string, long long> out;
    for (const auto& e : which_) out[e] = test::requests_served(eps_.server, eps_.path(e));
    return out;
  }
  const shared_endpoints& eps_;
  names which_;
  std::map<std::string, long long> before_;
  double start_[2] = {0, 0};
};

// Members of one cluster ("test") in a database of the test's own, each a
// gatherstatsd with its own spool and log.
struct cluster_under_test {
  cluster_under_test(test::scratch_database& database, const shared_endpoints& endpoints)
      : db(database), eps(endpoints) {}
  test::scratch_database& db;
  const shared_endpoints& eps;
  unsigned replicas = 1;
  bool notify = true;
  // The member's database (default: the scratch database, direct).
  std::function<std::string(const std::string& member)> conninfo;
  // The member's `spool:` line (default: none, so the spool is in the
  // member's directory with the default sizes).
  std::function<std::string(const std::string& member)> spool;
  std::map<std::string, std::unique_ptr<test::daemon_process>> members;

  std::string yaml(const std::string& member) const {
    const std::string where = conninfo ? conninfo(member) : db.conninfo();
    char lease_text[16];
    std::snprintf(lease_text, sizeof lease_text, "%llds",
                  static_cast<long long>(std::chrono::seconds(lease).count()));
    return "database:\n  conninfo: \"" + where + "\"\n  pool_size: 2\n" +
           "cluster: {name: test, member: " + member + ", lease: " + lease_text +
           ", replicas: " + std::to_string(replicas) + ", notify: " + (notify ? "true" : "false") +
           "}\n" + (spool ? spool(member) : "") + eps.yaml();
  }
  test::daemon_process& start(const std::string& member) {
    auto& d = members[member];
    d = std::make_unique<test::daemon_process>(yaml(member));
    return *d;
  }
  test::daemon_process& operator[](const std::string& member) { return *members.at(member); }

  // How many endpoints `member` owns among `live`, as cluster::owners says.
  long long share(const std::string& member, const names& live) const {
    return std::count_if(eps.all.begin(), eps.all.end(), [&](const std::string& e) {
      return gatherstats::cluster::owns(member, e, live, replicas);
    });
  }
  names owned_by(const std::string& member, const names& live) const {
    names out;
    for (const auto& e : eps.all)
      if (gatherstats::cluster::owns(member, e, live, replicas)) out.push_back(e);
    return out;
  }
  // The member table's live rows: name, the view it acts on, its share.
  std::vector<names> live_rows() const {
    return db.query(
        "SELECT member, view, endpoints::text FROM gatherstats_member"
        " WHERE cluster = 'test' AND lease_until > now() ORDER BY member");
  }
  // Those rows once every member of `live` acts on `live` and reported it.
  std::vector<names> settled_rows(names live) const {
    std::sort(live.begin(), live.end());
    std::vector<names> out;
    for (const auto& m : live)
      out.push_back({m, gatherstats::cluster::fingerprint(live), std::to_string(share(m, live))});
    return out;
  }
  bool settled(const names& live) const { return live_rows() == settled_rows(live); }
  // Waits until they are; returns how long that took.
  std::optional<duration<double>> settle(const names& live, milliseconds within = 20s) const {
    const auto started = steady::now();
    if (!test::eventually([&] { return settled(live); }, within)) return std::nullopt;
    return steady::now() - started;
  }

  // Every member's log but the lines of each fetch committed.
  std::string logs() const {
    std::string out;
    for (const auto& [name, d] : members) {
      out += "--- " + name + "\n";
      std::istringstream in(d->log_text());
      for (std::string line; std::getline(in, line);)
        if (line.find("fetch committed") == std::string::npos) out += line + "\n";
    }
    return out;
  }
  // The last "share changed" line of a member's log.
  std::string last_share_line(const std::string& member) const {
    const std::string text = members.at(member)->log_text();
    const auto at = text.rfind("share changed");
    if (at == std::string::npos) return "";
    return text.substr(at, text.find('\n', at) - at);
  }
  // SIGTERM to every member at once; each must exit 0 with nothing left
  // in its spool. (Only one SIGTERM each: a second one that comes as the
  // daemon exits, its handler gone, would kill it.)
  void stop_all() {
    for (auto& [name, d] : members)
      if (d->process->pid() > 0) ::kill(d->process->pid(), SIGTERM);
    for (auto& [name, d] : members) {
      if (d->process->pid() <= 0) continue;
      // Signal 0: no signal, only the wait for its exit.
      const auto code = d->process->signal_and_wait(0, 15s);
      INFO(name << "\n" << d->log_text());
      REQUIRE(code.has_value());
      CHECK(*code == 0);
      CHECK(test::spool_files(d->spool_dir()) == 0);
    }
  }
};

// Whether every endpoint of `which` has a fetch-log row (ok or not) for
// every tick of [from, to]: the window's outcome is known.
bool window_logged(const test::scratch_database& db, const names& which, long long from,
                   long long to) {
  const long long expected = static_cast<long long>(which.size()) * (to - from + 1);
  return std::stoll(db.query("SELECT count(*) FROM gatherstats_fetch WHERE endpoint_name = ANY(" +
                             sql_array(which) + ") AND tick BETWEEN to_timestamp(" +
                             std::to_string(from) + ") AND to_timestamp(" + std::to_string(to) +
                             ")")[0][0]) >= expected;
}

names stored_once_problems(const test::scratch_database& db, const names& which, long long from,
                           long long to, bool every_tick = true);
std::string listed(const names& problems);

void wait_window_logged(const test::scratch_database& db, const names& which, long long from,
                        long long to, const cluster_under_test& c) {
  const double started = wall_now();
  const auto within = milliseconds(static_cast<long long>((to - started) * 1000)) + 30s;
  const bool logged = test::eventually([&] { return window_logged(db, which, from, to); }, within);
  if (logged) return;
  INFO("ticks " << from << " to " << to << " of " << which.size() << " endpoint(s), waited from "
                << std::fixed << started << " to " << wall_now());
  INFO(listed(stored_once_problems(db, which, from, to)));
  INFO(c.logs());
  REQUIRE(logged);
}

// What breaks "each tick of [from, to] of each endpoint of `which` stored
// exactly once", one line per problem (none: it holds):
// - a tick without an ok fetch-log row (with `every_tick`: for the
//   scenarios where a gap is allowed, the gap is measured apart);
// - a tick logged twice, or a tick that is not a whole second;
// - an ok log row without exactly its fetch's rows in the statistics (same
//   endpoint and fetched_at, as many as the row says);
// - more than one fetch of an endpoint stored for one tick;
// - anywhere in the table, a fetch stored without its ok log row: the rows
//   of a member whose claim of the tick lost.
names stored_once_problems(const test::scratch_database& db, const names& which, long long from,
                           long long to, bool every_tick) {
  const std::string list = sql_array(which);
  const std::string window = "tick BETWEEN to_timestamp(" + std::to_string(from) +
                             ") AND to_timestamp(" + std::to_string(to) + ")";
  const std::string series = "generate_series(to_timestamp(" + std::to_string(from) +
                             "), to_timestamp(" + std::to_string(to) + "), interval '1 second')";
  const std::string hms = "to_char(%s AT TIME ZONE 'UTC', 'HH24:MI:SS.US')";
  auto at = [&](const std::string& column) {
    char buf[128];
    std::snprintf(buf, sizeof buf, hms.c_str(), column.c_str());
    return std::string(buf);
  };
  std::string sql =
      // Ticks without an ok log row.
      "SELECT x.name || ' ' || " + at("g.t") +
      " || ': not stored (' || coalesce('failed: ' || f.error, 'no log row') || ')'"
      " FROM unnest(" +
      list + ") AS x(name) CROSS JOIN " + series +
      " AS g(t)"
      " LEFT JOIN gatherstats_fetch f ON f.endpoint_name = x.name AND f.tick = g.t"
      " WHERE " +
      (every_tick ? "true" : "false") +
      " AND f.ok IS NOT TRUE"
      // A tick logged twice (the unique key should make it impossible).
      " UNION ALL SELECT endpoint_name || ' ' || " +
      at("tick") +
      " || ': logged ' || count(*) || ' times' FROM gatherstats_fetch"
      " WHERE endpoint_name = ANY(" +
      list + ") AND " + window +
      " GROUP BY endpoint_name, tick HAVING count(*) > 1"
      // A tick off the second (aligned 1 s endpoints tick on whole seconds).
      " UNION ALL SELECT endpoint_name || ' ' || " +
      at("tick") +
      " || ': a tick off the second' FROM gatherstats_fetch"
      " WHERE endpoint_name = ANY(" +
      list + ") AND " + window +
      " AND date_trunc('second', tick) <> tick"
      // An ok log row without exactly its fetch's rows.
      " UNION ALL SELECT f.endpoint_name || ' ' || " +
      at("f.tick") +
      " || ': logged with ' || f.rows || ' rows, ' || s.n || ' stored with its fetched_at'"
      " FROM gatherstats_fetch f CROSS JOIN LATERAL (SELECT count(*) AS n"
      "   FROM gatherstats_statistic s WHERE s.endpoint = f.endpoint"
      "   AND s.fetched_at = f.fetched_at) s"
      " WHERE f.ok AND f.endpoint_name = ANY(" +
      list + ") AND f." + window + " AND (s.n <> f.rows OR f.rows <> " +
      std::to_string(rows_per_fetch) +
      ")"
      // More than one fetch stored for an endpoint's tick.
      " UNION ALL SELECT endpoint || ' ' || " +
      at("date_trunc('second', fetched_at)") +
      " || ': ' || count(DISTINCT fetched_at) || ' fetches stored for one tick'"
      " FROM gatherstats_statistic WHERE fetched_at >= to_timestamp(" +
      std::to_string(from) + ") AND fetched_at < to_timestamp(" + std::to_string(to + 1) +
      ")"
      " GROUP BY endpoint, date_trunc('second', fetched_at) HAVING count(DISTINCT fetched_at) > 1"
      // A fetch stored without its ok log row (anywhere in the table).
      " UNION ALL SELECT s.endpoint || ' fetched at ' || " +
      at("s.fetched_at") +
      " || ': stored without an ok log row (' || s.n || ' rows)'"
      " FROM (SELECT endpoint, fetched_at, count(*) AS n FROM gatherstats_statistic"
      "       GROUP BY endpoint, fetched_at) s"
      " WHERE NOT EXISTS (SELECT 1 FROM gatherstats_fetch f WHERE f.ok"
      "   AND f.endpoint = s.endpoint AND f.fetched_at = s.fetched_at)"
      " ORDER BY 1";
  names out;
  for (auto& row : db.query(sql)) out.push_back(row[0]);
  return out;
}

// The problems, at most 40 of them, for a failure message.
std::string listed(const names& problems) {
  std::string out = std::to_string(problems.size()) + " problem(s):\n";
  for (std::size_t i = 0; i < problems.size() && i < 40; ++i) out += "  " + problems[i] + "\n";
  return out;
}

// Where the first line of `text` from `from` on that contains each of
// `parts` begins (npos: none does).
std::size_t line_with(const std::string& text, const names& parts, std::size_t from = 0) {
  for (std::size_t at = std::min(from, text.size()); at < text.size();) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    const std::string_view line(text.data() + at, end - at);
    if (std::all_of(parts.begin(), parts.end(),
                    [&](const std::string& p) { return line.find(p) != std::string_view::npos; }))
      return at;
    at = end + 1;
  }
  return std::string::npos;
}
bool has_line(const std::string& text, const names& parts) {
  return line_with(text, parts) != std::string::npos;
}

// The largest gap between consecutive stored ticks (less one interval) of
// each endpoint of `which` in [from, to], in seconds, and whether both ends
// of the window are stored (a gap at an end would go unmeasured).
std::map<std::string, double> gaps(const test::scratch_database& db, const names& which,
                                   long long from, long long to) {
  std::map<std::string, double> out;
  for (auto& row : db.query(
           "SELECT endpoint_name, coalesce(max(step), 0) - 1,"
           " bool_or(tick = to_timestamp(" +
           std::to_string(from) + ")) AND bool_or(tick = to_timestamp(" + std::to_string(to) +
           "))"
           " FROM (SELECT endpoint_name, tick, extract(epoch FROM tick - lag(tick) OVER"
           "  (PARTITION BY endpoint_name ORDER BY tick))::float8 AS step FROM gatherstats_fetch"
           "  WHERE ok AND endpoint_name = ANY(" +
           sql_array(which) + ") AND tick BETWEEN to_timestamp(" + std::to_string(from) +
           ") AND to_timestamp(" + std::to_string(to) +
           ")) s"
           " GROUP BY endpoint_name")) {
    out[row[0]] = row[2] == "t" ? std::stod(row[1]) : 1e9;
  }
  for (const auto& e : which) out.try_emplace(e, 1e9);  // nothing stored at all
  return out;
}

// The three-member scenario, direct (notify) or through PgBouncer in
// transaction pooling (notify: false: no LISTEN there).
void three_members_share_and_store_once(const test::route& via) {
  test::scratch_database db;
  db.migrate();
  shared_endpoints eps;
  cluster_under_test c(db, eps);
  c.notify = !via.pgbouncer;
  c.conninfo = [&](const std::string&) { return via(db); };
  const names all{"m1", "m2", "m3"};
  for (const auto& m : all) c.start(m);
  const auto took = c.settle(all);
  INFO(c.logs());
  REQUIRE(took);

  // Each member's share is what cluster::owners says, roughly a third
  // each, and every endpoint has exactly one owner.
  long long total = 0;
  for (const auto& m : all) {
    const long long share = c.share(m, all);
    INFO(m << " owns " << share);
    CHECK(share >= 5);
    CHECK(share <= 15);
    total += share;
    const std::string line = c.last_share_line(m);
    CHECK_THAT(line, Catch::Contains("rows=" + std::to_string(share) + " ") &&
                         Catch::Contains("m1, m2, m3"));
    CHECK(c[m].logged("member joined", 1s));
  }
  CHECK(total == static_cast<long long>(endpoint_count));

  // A window of ten ticks after all three joined and settled.
  const long long from = next_tick(), to = from + 10;
  // The server's counts over it: each tick fetched by its one owner, once
  // the member that gave an endpoint up stopped fetching it (a second
  // after the handover, cluster::clock_allowance).
  wait_window_logged(db, eps.all, from, from + 1, c);
  fetchers_count fetched(eps, eps.all);
  wait_window_logged(db, eps.all, from, to, c);
  const auto fetchers = fetched.problems(1);
  c.stop_all();

  const auto problems = stored_once_problems(db, eps.all, from, to);
  INFO(listed(problems));
  CHECK(problems.empty());
  INFO(listed(fetchers));
  CHECK(fetchers.empty());
  std::cout << "cluster" << (via.pgbouncer ? " through PgBouncer" : "")
            << ": three members settled after " << seconds_text(took->count()) << "; "
            << eps.all.size() << " endpoints x " << (to - from + 1) << " ticks stored once\n";
}

}  // namespace

ROUTED_TEST_CASE(
    three_members,
    "cluster: three members share 30 endpoints as cluster::owners says, and each tick is "
    "stored exactly once",
    "[cluster]") {
  three_members_share_and_store_once(via);
}

namespace {

// Three members, m2 killed with SIGKILL after a few ticks: the others take
// its endpoints over once its lease ran out.
void kill_one_of_three(unsigned replicas) {
  test::scratch_database db;
  db.migrate();
  shared_endpoints eps;
  cluster_under_test c(db, eps);
  c.replicas = replicas;
  const names all{"m1", "m2", "m3"}, survivors{"m1", "m3"};
  for (const auto& m : all) c.start(m);
  {
    INFO(c.logs());
    REQUIRE(c.settle(all));
  }
  const long long from = next_tick();
  // A few ticks stored by all three before the kill, each fetched by as
  // many members as there are replicas (once the members that gave
  // endpoints up at the joins stopped fetching them: a second after).
  wait_window_logged(db, eps.all, from, from + 1, c);
  fetchers_count fetched(eps, eps.all);
  wait_window_logged(db, eps.all, from, from + 10, c);
  const auto fetchers = fetched.problems(replicas);
  const auto victims = c.owned_by("m2", all);
  const auto killed = steady::now();
  REQUIRE(c["m2"].process->signal_and_wait(SIGKILL, 5s));
  const auto took = c.settle(survivors);
  {
    INFO(c.logs());
    REQUIRE(took);
  }
  const double takeover = duration<double>(steady::now() - killed).count();
  const long long to = next_tick() + 3;
  names others;
  for (const auto& e : eps.all)
    if (std::find(victims.begin(), victims.end(), e) == victims.end()) others.push_back(e);
  // With one replica, its endpoints' ticks in the gap are never logged: the
  // window is known when the others' are, and the last ticks of its.
  wait_window_logged(db, replicas == 1 ? others : eps.all, from, to, c);
  wait_window_logged(db, victims, to - 2, to, c);
  c.stop_all();
  INFO(c.logs());
  // Its lease ran out at most a lease after its last renewal, and the
  // others look at it as it runs out.
  CHECK(takeover <= duration<double>(lease + interval).count());
  for (const auto& m : survivors) {
    INFO(m);
    CHECK(has_line(c[m].log_text(), {"member left", "member m2 "}));
  }
  {
    INFO(listed(fetchers));
    CHECK(fetchers.empty());
  }

  if (replicas == 1) {
    // Its endpoints: a gap of at most lease + interval + timeout each,
    // and nothing stored twice; every other endpoint: every tick, once.
    const auto problems = stored_once_problems(db, others, from, to);
    INFO(listed(problems));
    CHECK(problems.empty());
    const auto twice = stored_once_problems(db, victims, from, to, false);
    INFO(listed(twice));
    CHECK(twice.empty());
    const double bound = duration<double>(lease + interval + timeout).count();
    double largest = 0;
    for (const auto& [e, gap] : gaps(db, victims, from, to)) {
      INFO(e << ": gap " << gap << " s");
      CHECK(gap <= bound);
      largest = std::max(largest, gap);
    }
    std::cout << "cluster, SIGKILL, replicas 1: taken over after " << seconds_text(takeover)
              << "; the largest gap of its " << victims.size() << " endpoints "
              << seconds_text(largest) << " (bound " << seconds_text(bound) << ")\n";
  } else {
    // Each endpoint had a second owner: no gap at all.
    const auto problems = stored_once_problems(db, eps.all, from, to);
    INFO(listed(problems));
    CHECK(problems.empty());
    std::cout << "cluster, SIGKILL, replicas 2: taken over after " << seconds_text(takeover) << "; "
              << eps.all.size() << " endpoints x " << (to - from + 1) << " ticks stored once\n";
  }
}

}  // namespace

TEST_CASE(
    "cluster: a member killed with SIGKILL (replicas 1): its endpoints are taken over after "
    "its lease, with a gap of at most lease + interval + timeout and no tick stored twice",
    "[cluster]") {
  kill_one_of_three(1);
}

TEST_CASE(
    "cluster: a member killed with SIGKILL (replicas 2): every tick of every endpoint is "
    "stored exactly once",
    "[cluster]") {
  kill_one_of_three(2);
}

TEST_CASE(
    "cluster: a fourth member joins and one leaves with SIGTERM: the shares move and no tick "
    "is missed or stored twice",
    "[cluster]") {
  test::scratch_database db;
  db.migrate();
  shared_endpoints eps;
  cluster_under_test c(db, eps);
  const names three{"m1", "m2", "m3"}, four{"m1", "m2", "m3", "m4"}, after{"m1", "m3", "m4"};
  for (const auto& m : three) c.start(m);
  {
    INFO(c.logs());
    REQUIRE(c.settle(three));
  }
  const long long from = next_tick();
  wait_window_logged(db, eps.all, from, from + 1, c);

  c.start("m4");
  {
    INFO(c.logs());
    REQUIRE(c.settle(four));
  }
  for (const auto& m : four) {
    INFO(m);
    CHECK_THAT(c.last_share_line(m),
               Catch::Contains("rows=" + std::to_string(c.share(m, four)) + " "));
  }
  // A few ticks with four members.
  const long long with_four = next_tick();
  wait_window_logged(db, eps.all, with_four, with_four + 2, c);

  // m2 leaves: it gives its lease up and goes on fetching until the
  // others act on the members without it, at most a lease.
  const auto asked = steady::now();
  c["m2"].stop_cleanly();
  const double leaving = duration<double>(steady::now() - asked).count();
  // When it exits, the handover is done: the others' rows say so already.
  const auto rows_at_exit = c.live_rows();
  const auto m2_rows = db.query("SELECT count(*) FROM gatherstats_member WHERE member = 'm2'");
  std::map<std::string, std::string> share_lines;  // before the others stop
  for (const auto& m : after) share_lines[m] = c.last_share_line(m);
  const long long to = next_tick() + 3;
  wait_window_logged(db, eps.all, from, to, c);
  c.stop_all();
  INFO(c.logs());
  CHECK(leaving <= duration<double>(lease + 2s).count());
  CHECK(rows_at_exit == c.settled_rows(after));
  CHECK(m2_rows[0][0] == "0");  // its lease given up: its row is gone
  for (const auto& m : after) {
    INFO(m);
    CHECK(has_line(c[m].log_text(), {"member left", "member m2 "}));
    // Its last share line: the new share, told when it changed.
    CHECK_THAT(share_lines[m], Catch::Contains("rows=" + std::to_string(c.share(m, after)) + " "));
    if (c.share(m, after) != c.share(m, four))
      CHECK_THAT(share_lines[m], Catch::Contains("members: m1, m3, m4"));
  }
  const auto problems = stored_once_problems(db, eps.all, from, to);
  INFO(listed(problems));
  CHECK(problems.empty());
  std::cout << "cluster: m4 joined, m2 left in " << seconds_text(leaving) << "; " << eps.all.size()
            << " endpoints x " << (to - from + 1) << " ticks stored once\n";
}

namespace {

// A login role of its own per member, so that one member can be cut off
// from the database while the others go on. Roles belong to the whole
// PostgreSQL cluster: named after the scratch database, and dropped when
// the test ends. Declared before the database, so dropped after it (a role
// with privileges in a database cannot be dropped).
class member_roles {
 public:
  member_roles() = default;
  ~member_roles() {
    for (const auto& r : made_) admin_exec("DROP ROLE IF EXISTS " + r);
  }
  member_roles(const member_roles&) = delete;
  member_roles& operator=(const member_roles&) = delete;

  std::string make(const test::scratch_database& db, const std::string& member) {
    const std::string role = db.name() + "_" + member;
    db.exec("CREATE ROLE " + role + " LOGIN");
    made_.push_back(role);
    db.exec("GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role +
            "; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + role);
    return role;
  }

 private:
  names made_;
};

long long sessions_of(const test::scratch_database& db, const std::string& role) {
  return std::stoll(
      db.query("SELECT count(*) FROM pg_stat_activity WHERE usename = '" + role + "'")[0][0]);
}

}  // namespace

TEST_CASE(
    "cluster: a member cut off from the database spools its share, the others take over after its "
    "lease, and when it is back every tick is stored exactly once",
    "[cluster]") {
  member_roles roles;
  test::scratch_database db;
  db.migrate();
  std::map<std::string, std::string> role;
  const names all{"m1", "m2", "m3"}, others{"m1", "m3"};
  for (const auto& m : all) role[m] = roles.make(db, m);
  shared_endpoints eps;
  cluster_under_test c(db, eps);
  c.conninfo = [&](const std::string& m) { return db.conninfo() + " user=" + role.at(m); };
  // The member cut off has memory for a fetch or two: its fetches during
  // the outage go to its spool on disk, where the test sees them. (The
  // others keep theirs in memory as usual.)
  c.spool = [](const std::string& m) {
    return m == "m2" ? "spool: {directory: @SPOOL@, memory_max_bytes: 1KiB}\n" : "";
  };
  for (const auto& m : all) c.start(m);
  {
    INFO(c.logs());
    REQUIRE(c.settle(all));
  }
  const long long from = next_tick();
  wait_window_logged(db, eps.all, from, from + 1, c);

  // Cut m2 off: no new session, and every session of it ended.
  const std::string cut = role.at("m2");
  db.exec("ALTER ROLE " + cut + " NOLOGIN");
  const auto cut_at = steady::now();
  const bool ended = test::eventually(
      [&] {
        db.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '" + cut +
                "'");
        return sessions_of(db, cut) == 0;
      },
      10s);
  {
    INFO(c.logs());
    REQUIRE(ended);
  }
  // The others take its share over once its lease ran out; it goes on
  // fetching into its spool meanwhile.
  const auto took = c.settle(others);
  {
    INFO(c.logs());
    REQUIRE(took);
  }
  const double takeover = duration<double>(steady::now() - cut_at).count();
  const bool lease_lost = c["m2"].logged("lease lost", 5s);
  const bool spooling =
      test::eventually([&] { return test::spool_files(c["m2"].spool_dir()) > 0; }, 5s);
  // Cut past the takeover: the others store more ticks of its endpoints,
  // and it goes on fetching them too (two fetchers of each).
  const auto its = c.owned_by("m2", all);
  const long long taken = next_tick();
  // Long enough that two fetchers each cannot pass for one or three when
  // the counts themselves are slow (a loaded machine, a sanitizer build).
  fetchers_count fetched(eps, its);
  wait_window_logged(db, its, taken, taken + 9, c);
  const auto fetchers = fetched.problems(2);
  const long long sessions_while_cut = sessions_of(db, cut);

  db.exec("ALTER ROLE " + cut + " LOGIN");
  const auto back_at = steady::now();
  const bool renewed = c["m2"].logged("lease renewed", 15s);
  // Its spooled fetches are committed (the fence drops the ticks the
  // others stored), and it is a member again.
  const bool drained =
      test::eventually([&] { return test::spool_files(c["m2"].spool_dir()) == 0; }, 30s);
  const double drained_after = duration<double>(steady::now() - back_at).count();
  const bool rejoined = c.settle(all).has_value();
  const long long to = next_tick() + 2;
  wait_window_logged(db, eps.all, from, to, c);
  c.stop_all();
  INFO(c.logs());
  CHECK(takeover <= duration<double>(lease + interval + 1s).count());
  CHECK(lease_lost);
  CHECK(spooling);
  CHECK(sessions_while_cut == 0);
  {
    INFO(listed(fetchers));
    CHECK(fetchers.empty());
  }
  CHECK(renewed);
  CHECK(drained);
  CHECK(rejoined);
  for (const auto& m : others) {
    INFO(m);
    // It went (its lease expired), then came back.
    const std::string log = c[m].log_text();
    const auto left = line_with(log, {"member left", "member m2 "});
    REQUIRE(left != std::string::npos);
    CHECK(line_with(log, {"member joined", "member m2 "}, left) != std::string::npos);
  }
  const auto problems = stored_once_problems(db, eps.all, from, to);
  INFO(listed(problems));
  CHECK(problems.empty());
  std::cout << "cluster: m2 cut off, taken over after " << seconds_text(takeover)
            << ", its spool drained " << seconds_text(drained_after) << " after it was back; "
            << eps.all.size() << " endpoints x " << (to - from + 1) << " ticks stored once\n";
}

TEST_CASE(
    "cluster: gatherstatsd --check refuses cluster: without the fetch log, and bad cluster values",
    "[cluster][config]") {
  test::temp_dir dir;
  const std::string endpoints =
      "endpoints:\n  - {name: a, url: \"http://127.0.0.1:1/stats\", interval: 1s}\n";
  auto check = [&](const std::string& yaml) {
    auto file = dir.write("cluster.yaml", yaml);
    return test::run({test::daemon_bin(), "--config", file.string(), "--check"});
  };
  const std::string file = (dir.path() / "cluster.yaml").string();

  auto ok =
      check("database: {conninfo: \"dbname=x\"}\ncluster: {name: c, member: m1}\n" + endpoints);
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
  CHECK_THAT(ok.out, Catch::Contains("OK, 1 endpoint(s)"));

  auto no_log = check("database:\n  conninfo: \"dbname=x\"\n  fetch_log: false\n" + endpoints +
                      "cluster: {name: c, member: m1}\n");
  INFO(no_log.err);
  CHECK(no_log.exit_code == 2);
  CHECK_THAT(no_log.err, Catch::Contains(file + ":6:1:") &&
                             Catch::Contains("\"cluster\" needs database.fetch_log: true"));

  auto bad = check("database: {conninfo: \"dbname=x\"}\n" + endpoints +
                   "cluster: {name: c, member: \"m 1\", lease: 500ms, replicas: 3}\n");
  INFO(bad.err);
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Catch::Contains("\"lease\" must be between 1s and 1h") &&
                          Catch::Contains("\"member\" must be") && Catch::Contains(file + ":4:") &&
                          Catch::Contains("3 error(s)"));
}
