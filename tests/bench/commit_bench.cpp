// Commit throughput against its baseline measured in the same run: psql's
// \copy of the same rows into the same table (same indexes), on a private
// durable cluster (fsync, synchronous_commit and full_page_writes on).
// Prints rows/s and the ratio to \copy, one line per figure (target: the
// 30,003-row fetch at >= 0.8 x \copy), and the time of a whole
// `gatherstatsd fetch` of that document (target: <= 9.2 s / 30).
//
//   build/tests/bench/commit_bench [SOURCE_DIR [RUNS [FETCHES]]]
//
// SOURCE_DIR (default: the tree this file was compiled from) provides
// tests/support/pg-cluster; gatherstatsd is found next to this program
// (../../daemon/gatherstatsd). Every figure is the median of RUNS runs
// (default 5), the table truncated before each run, the methods interleaved
// run by run; a ratio is the median over the runs of the method's speed
// over \copy's in the same run. FETCHES (default 200) is the number of
// 153-row fetches. Our commits run on connections made before the clock
// starts and already used (as the daemon's pool keeps them), except the
// line "on a new connection", which is like psql's: a server process whose
// caches are cold.
// COMMIT_BENCH_FSYNC=0 in the environment starts the cluster without fsync,
// to see what a path costs apart from WAL flushes. Needs psql and the
// PostgreSQL 15 server binaries; runs as root or not.
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/json/flatten.hpp"
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/statistic_table.hpp"

#include "documents.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace pg = gatherstats::pg;
using gatherstats::fetch_record;
using gatherstats::outcome;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::size_t big_rows = 30'003;
constexpr std::size_t small_rows = 153;
constexpr std::size_t small_connections = 4;
constexpr double original_fetch_seconds = 9.2;
const std::string table = "gatherstats_statistic";

[[noreturn]] void die(const std::string& why) { throw std::runtime_error(why); }

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

// Runs a shell command; returns its standard output; dies if it fails.
std::string run_command(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  if (!pipe) die("cannot run: " + command);
  std::string out;
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, pipe.get())) out.append(buf, n);
  int status = ::pclose(pipe.release());
  if (status != 0) die("failed (status " + std::to_string(status) + "): " + command);
  return out;
}

// --- the private durable cluster ------------------------------------------------

class cluster {
 public:
  explicit cluster(const fs::path& source) : script_(source / "tests/support/pg-cluster") {
    if (!fs::exists(script_)) die(script_.string() + " not found: pass the source directory");
    std::string pattern = (fs::temp_directory_path() / "gatherstats-commit-bench.XXXXXX").string();
    if (!::mkdtemp(pattern.data())) die("mkdtemp failed");
    state_ = pattern;
    // COMMIT_BENCH_FSYNC=0 measures without durability: what the commit
    // costs apart from WAL flushes.
    const char* fsync = std::getenv("COMMIT_BENCH_FSYNC");
    std::string durable = fsync && std::string_view(fsync) == "0" ? "0" : "1";
    const std::string start = "PG_CLUSTER_DURABLE=" + durable + " " +
                              shell_quote(script_.string()) + " start " +
                              shell_quote(state_.string());
    // pg-cluster picks a free port, which another process can take before
    // the server binds it: try again then.
    for (int attempt = 1;; ++attempt) {
      try {
        run_command(start);
        break;
      } catch (const std::exception&) {
        if (attempt < 3) continue;
        stop();
        throw;
      }
    }
    std::ifstream in(state_ / "conninfo");
    std::getline(in, conninfo_);
    if (conninfo_.empty()) {
      stop();
      die("the cluster wrote no conninfo");
    }
  }
  ~cluster() { stop(); }
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;
  const std::string& conninfo() const { return conninfo_; }

 private:
  void stop() {
    std::string stop = shell_quote(script_.string()) + " stop " + shell_quote(state_.string());
    if (std::system(stop.c_str()) != 0)
      std::fprintf(stderr, "warning: could not stop the cluster\n");
    std::error_code ignored;
    fs::remove_all(state_, ignored);
  }

  fs::path script_, state_;
  std::string conninfo_;
};

// Blocking libpq for setup and checks, outside every timed section.
class admin {
 public:
  explicit admin(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str()), PQfinish) {
    if (PQstatus(conn_.get()) != CONNECTION_OK)
      die(std::string("cannot connect: ") + PQerrorMessage(conn_.get()));
  }
  std::string exec(const std::string& sql) {
    std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(conn_.get(), sql.c_str()), PQclear);
    auto status = PQresultStatus(r.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
      die(sql + ": " + PQresultErrorMessage(r.get()));
    return PQntuples(r.get()) ? PQgetvalue(r.get(), 0, 0) : "";
  }
  void truncate() { exec("TRUNCATE " + table); }
  long long count() { return std::stoll(exec("SELECT count(*) FROM " + table)); }
  void expect(long long rows, const std::string& what) {
    auto n = count();
    if (n != rows)
      die(what + " stored " + std::to_string(n) + " rows, not " + std::to_string(rows));
  }

 private:
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn_;
};

// --- the rows ----------------------------------------------------------------------

using bench_documents::asset_counts;

// The test server's /generated?leaves=N shape: groups of 50 numbers.
std::string generated(std::size_t leaves, std::size_t request) {
  std::string out = "{";
  for (std::size_t i = 0; i < leaves; ++i) {
    if (i % 50 == 0)
      out += (i == 0 ? "\"g" : "},\"g") + std::to_string(i / 50) + "\":{";
    else
      out += ',';
    out += "\"m" + std::to_string(i % 50) + "\":" + std::to_string((i * 7 + request) % 1000);
  }
  return out + (leaves > 0 ? "}}" : "}");
}

fetch_record make_record(const std::string& document, std::string endpoint,
                         gatherstats::timestamp at) {
  auto rows = gatherstats::json::flatten(document);
  if (!rows) die("flatten failed: " + rows.error().message);
  fetch_record r;
  r.endpoint = std::move(endpoint);
  r.fetched_at = at;
  r.rows = std::move(*rows);
  return r;
}

// COPY text format: backslash, tab, newline and carriage return escaped.
void append_copy_text(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out += c;
    }
  }
}

std::string copy_text(const std::vector<const fetch_record*>& records) {
  std::string out;
  char number[32];
  for (const auto* r : records) {
    std::string ts = pg::format_timestamp(r->fetched_at);
    for (std::size_t i = 0; i < r->rows.size(); ++i) {
      append_copy_text(out, r->endpoint);
      out += '\t';
      append_copy_text(out, r->rows.key(i));
      out += '\t';
      auto [end, ec] = std::to_chars(number, number + sizeof number, r->rows.value(i));
      out.append(number, end);
      out += '\t';
      out += ts;
      out += '\n';
    }
  }
  return out;
}

std::size_t total_rows(const std::vector<const fetch_record*>& records) {
  std::size_t n = 0;
  for (const auto* r : records) n += r->rows.size();
  return n;
}

// --- psql \copy ------------------------------------------------------------------

struct copy_timing {
  double in_session;  // from a statement before \copy to one after it
  double process;     // the whole psql process, connection included
};

// The psql binary itself: Debian's /usr/bin/psql is a Perl wrapper that
// would add its own start-up to the process figure.
std::string psql_binary() {
  for (const char* dir : {"/usr/lib/postgresql/15/bin", "/usr/local/pgsql/bin"}) {
    fs::path p = fs::path(dir) / "psql";
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "psql";
}

copy_timing psql_copy(const std::string& conninfo, const fs::path& file) {
  const std::string now = "SELECT extract(epoch FROM clock_timestamp())";
  std::string command =
      shell_quote(psql_binary()) + " -X -q -A -t -v ON_ERROR_STOP=1 -d " + shell_quote(conninfo) +
      " -c " + shell_quote(now) + " -c " +
      shell_quote("\\copy " + table + " (endpoint, key, numeric_value, fetched_at) FROM '" +
                  file.string() + "'") +
      " -c " + shell_quote(now);
  auto start = clock_type::now();
  std::istringstream out(run_command(command));
  double process = seconds_since(start);
  double before = 0, after = 0;
  if (!(out >> before >> after)) die("psql printed no timestamps");
  return {after - before, process};
}

// --- our commits -------------------------------------------------------------------

template <class T>
T run_on(asio::io_context& io, asio::awaitable<T> work) {
  std::optional<T> result;
  std::exception_ptr error;
  asio::co_spawn(io, std::move(work), [&](std::exception_ptr e, T value) {
    error = e;
    if (!e) result.emplace(std::move(value));
  });
  io.restart();
  io.run();
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

pg::deadline soon() { return clock_type::now() + std::chrono::minutes(5); }

// Connects, migrates if asked, and appends the connection to `conns`;
// returns why it could not (empty: it could).
enum class then { migrate, nothing };
asio::awaitable<std::string> open(std::string conninfo, std::vector<pg::connection>& conns,
                                  then next) {
  auto conn = co_await pg::connection::async_connect(conninfo, soon());
  if (!conn) co_return conn.error().message;
  if (next == then::migrate) {
    auto name = pg::table_name::parse(table);
    auto migrated = co_await pg::async_migrate(*conn, *name, soon());
    if (!migrated) co_return migrated.error().message;
  }
  conns.push_back(std::move(*conn));
  co_return std::string();
}

enum class way { one_by_one, batch_each_alone, batch_together_pipelined, batch_together_first };

// Commits `records` on `conn`, one by one along `path`, or as one batch;
// returns the new rows, or the first failure.
asio::awaitable<outcome<std::size_t>> commit_all(pg::connection& conn,
                                                 std::vector<const fetch_record*> records, way how,
                                                 pg::commit_path path) {
  auto name = pg::table_name::parse(table);
  std::size_t created = 0;
  if (how != way::one_by_one) {
    pg::batch_path batch = pg::batch_path::each_alone;
    if (how == way::batch_together_first) batch = pg::batch_path::together_first;
    if (how == way::batch_together_pipelined) batch = pg::batch_path::together_pipelined;
    auto results = co_await pg::async_commit_batch(conn, *name, records, soon(), batch);
    for (auto& r : results) {
      if (!r) co_return r.error();
      created += *r;
    }
    co_return created;
  }
  for (const auto* r : records) {
    auto n = co_await pg::async_commit(conn, *name, *r, soon(), path);
    if (!n) co_return n.error();
    created += *n;
  }
  co_return created;
}

// Splits `records` into one share per connection, commits the shares at the
// same time, and returns the seconds it took.
double timed_commit(asio::io_context& io, std::span<pg::connection> conns,
                    const std::vector<const fetch_record*>& records, way how,
                    pg::commit_path path) {
  std::vector<std::vector<const fetch_record*>> shares(conns.size());
  for (std::size_t i = 0; i < records.size(); ++i) shares[i % conns.size()].push_back(records[i]);
  std::vector<std::optional<outcome<std::size_t>>> results(conns.size());
  std::exception_ptr error;
  for (std::size_t c = 0; c < conns.size(); ++c) {
    asio::co_spawn(io, commit_all(conns[c], std::move(shares[c]), how, path),
                   [&results, &error, c](std::exception_ptr e, outcome<std::size_t> r) {
                     if (e) error = e;
                     results[c].emplace(std::move(r));
                   });
  }
  auto start = clock_type::now();
  io.restart();
  io.run();
  double took = seconds_since(start);
  if (error) std::rethrow_exception(error);
  for (auto& r : results)
    if (!r || !*r) die("commit failed: " + (r ? r->error().message : std::string("no result")));
  return took;
}

// --- measuring and printing ----------------------------------------------------------

struct method {
  std::string label;
  std::function<double()> run_once;  // seconds; the table is truncated before
  std::vector<double> times;
};

// Runs every method once per run, starting each run at the next method so
// that none always goes first; methods[0] is the baseline.
void measure(std::vector<method>& methods, int runs, admin& db) {
  for (int run = 0; run < runs; ++run) {
    for (std::size_t i = 0; i < methods.size(); ++i) {
      auto& m = methods[(i + static_cast<std::size_t>(run)) % methods.size()];
      db.truncate();
      m.times.push_back(m.run_once());
    }
  }
}

// Median time and rate, and the median over runs of the rate relative to
// the baseline's in the same run (robust against a machine whose load
// drifts between runs).
void print(const std::string& title, const std::vector<method>& methods, std::size_t rows) {
  std::printf("\n%s\n", title.c_str());
  const auto& baseline = methods.front().times;
  for (const auto& m : methods) {
    std::vector<double> ratios;
    for (std::size_t run = 0; run < m.times.size(); ++run)
      ratios.push_back(baseline[run] / m.times[run]);
    double t = median(m.times);
    std::printf("  %-54s %8.1f ms %9.0f rows/s %6.2f x \\copy\n", m.label.c_str(), t * 1e3,
                rows / t, median(ratios));
  }
}

fs::path default_source_dir() {
  // From CMake, not __FILE__ (relative under ccache's CCACHE_BASEDIR).
  return fs::path(GATHERSTATS_SOURCE_DIR);
}

fs::path gatherstatsd_path() {
  return fs::canonical("/proc/self/exe").parent_path().parent_path().parent_path() / "daemon" /
         "gatherstatsd";
}

int bench(int argc, char** argv) {
  fs::path source = argc > 1 ? fs::path(argv[1]) : default_source_dir();
  int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  std::size_t fetches = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 200;
  if (runs < 1 || fetches < 1) die("usage: commit_bench [SOURCE_DIR [RUNS [FETCHES]]]");

  cluster pgc(source);
  asio::io_context io;
  std::vector<pg::connection> conns;
  for (std::size_t i = 0; i < small_connections; ++i) {
    auto why = run_on(io, open(pgc.conninfo(), conns, then::migrate));
    if (!why.empty()) die("cannot connect: " + why);
  }
  const std::span<pg::connection> all(conns);
  const std::span<pg::connection> solo = all.first(1);
  admin db(pgc.conninfo());
  std::printf("cluster: %s (fsync %s, synchronous_commit %s), %d runs per figure\n",
              pgc.conninfo().c_str(), db.exec("SHOW fsync").c_str(),
              db.exec("SHOW synchronous_commit").c_str(), runs);

  char dir_pattern[] = "/tmp/gatherstats-commit-bench-files.XXXXXX";
  if (!::mkdtemp(dir_pattern)) die("mkdtemp failed");
  fs::path files = dir_pattern;
  struct remove_dir {
    fs::path p;
    ~remove_dir() {
      std::error_code ignored;
      fs::remove_all(p, ignored);
    }
  } cleanup{files};

  // One 30,003-row fetch.
  const std::string big_doc = asset_counts(big_rows);
  const fetch_record big =
      make_record(big_doc, "http://iar-backend.invalid/api/stats", gatherstats::now_utc());
  const std::vector<const fetch_record*> big_set{&big};
  // The same rows in byte order of key, as the COPY path sends them: shows
  // how much of a path's speed is the order of its rows.
  fetch_record big_sorted = big;
  {
    std::vector<std::size_t> order(big.rows.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return big.rows.key(a) < big.rows.key(b); });
    big_sorted.rows = {};
    for (auto i : order) big_sorted.rows.push_back(big.rows.key(i), big.rows.value(i));
  }
  const std::vector<const fetch_record*> big_sorted_set{&big_sorted};
  const fs::path big_sorted_file = files / "big-sorted.copy";
  std::ofstream(big_sorted_file, std::ios::binary) << copy_text(big_sorted_set);
  const fs::path big_file = files / "big.copy";
  std::ofstream(big_file, std::ios::binary) << copy_text(big_set);

  // FETCHES fetches of 153 rows from 10 endpoints.
  std::vector<fetch_record> smalls;
  auto t0 = gatherstats::now_utc();
  for (std::size_t i = 0; i < fetches; ++i)
    smalls.push_back(make_record(generated(small_rows, i),
                                 "http://stats-" + std::to_string(i % 10) + ".invalid/generated",
                                 t0 + std::chrono::seconds(i / 10)));
  std::vector<const fetch_record*> small_set;
  for (const auto& r : smalls) small_set.push_back(&r);
  const std::size_t small_total = total_rows(small_set);
  const fs::path small_file = files / "small.copy";
  std::ofstream(small_file, std::ios::binary) << copy_text(small_set);

  auto expect_rows = [&](long long rows, const std::string& what) { db.expect(rows, what); };

  // --- (a)-(c): the one big fetch ---
  const std::string psql_label = "psql \\copy, text, one transaction (in session)";
  std::vector<method> big_methods;
  std::vector<double> psql_process;
  big_methods.push_back({psql_label,
                         [&] {
                           auto t = psql_copy(pgc.conninfo(), big_file);
                           psql_process.push_back(t.process);
                           expect_rows(big_rows, "psql \\copy");
                           return t.in_session;
                         },
                         {}});
  big_methods.push_back({"psql \\copy, text, rows in key order (in session)",
                         [&] {
                           auto t = psql_copy(pgc.conninfo(), big_sorted_file);
                           expect_rows(big_rows, "psql \\copy");
                           return t.in_session;
                         },
                         {}});
  struct path_label {
    pg::commit_path path;
    const char* label;
    const std::vector<const fetch_record*>* rows;
  };
  const path_label big_paths[] = {
      {pg::commit_path::unnest_text, "async_commit unnest, text arrays (before)", &big_set},
      {pg::commit_path::unnest_binary, "async_commit unnest, binary arrays", &big_set},
      {pg::commit_path::unnest_binary, "async_commit unnest, binary, rows in key order",
       &big_sorted_set},
      {pg::commit_path::copy_via_temp, "async_commit binary COPY to temp + INSERT SELECT",
       &big_set},
      {pg::commit_path::copy_via_temp, "async_commit COPY to temp + INSERT, key order",
       &big_sorted_set},
      {pg::commit_path::copy, "async_commit binary COPY into the table, key order", &big_set},
      {pg::commit_path::automatic, "async_commit default (automatic)", &big_set},
  };
  for (const auto& p : big_paths) {
    big_methods.push_back({p.label,
                           [&, p] {
                             double t = timed_commit(io, solo, *p.rows, way::one_by_one, p.path);
                             expect_rows(big_rows, p.label);
                             return t;
                           },
                           {}});
  }
  // On a new server process, as psql's \copy is (the connection is made
  // before the clock starts): cold caches, as for `gatherstatsd fetch`.
  big_methods.push_back({"async_commit default, on a new connection",
                         [&] {
                           std::vector<pg::connection> fresh;
                           auto why = run_on(io, open(pgc.conninfo(), fresh, then::nothing));
                           if (!why.empty()) die("cannot connect: " + why);
                           double t = timed_commit(io, fresh, big_set, way::one_by_one,
                                                   pg::commit_path::automatic);
                           expect_rows(big_rows, "the commit on a new connection");
                           return t;
                         },
                         {}});
  // A repeat of a stored fetch: what a retry after a lost answer costs.
  big_methods.push_back(
      {"async_commit default, repeated (all rows stored)",
       [&] {
         timed_commit(io, solo, big_set, way::one_by_one, pg::commit_path::automatic);
         double t = timed_commit(io, solo, big_set, way::one_by_one, pg::commit_path::automatic);
         expect_rows(big_rows, "the repeat");
         return t;
       },
       {}});
  measure(big_methods, runs, db);
  print("one fetch of " + std::to_string(big_rows) + " rows (median ms, rows/s, ratio):",
        big_methods, big_rows);
  std::printf("  %-54s %8.1f ms %9.0f rows/s\n", "(psql \\copy, whole process)",
              median(psql_process) * 1e3, big_rows / median(psql_process));

  // --- (d): many small fetches ---
  std::vector<method> small_methods;
  small_methods.push_back({psql_label,
                           [&] {
                             auto t = psql_copy(pgc.conninfo(), small_file);
                             expect_rows(small_total, "psql \\copy");
                             return t.in_session;
                           },
                           {}});
  const std::string n = std::to_string(fetches);
  struct small_way {
    std::string label;
    bool all_connections;
    way how;
    pg::commit_path path;
  };
  const std::vector<small_way> small_ways = {
      {"async_commit one by one, 1 connection (unnest binary)", false, way::one_by_one,
       pg::commit_path::unnest_binary},
      {"async_commit one by one, 1 connection (COPY)", false, way::one_by_one,
       pg::commit_path::copy},
      {"async_commit one by one, 1 connection (text, before)", false, way::one_by_one,
       pg::commit_path::unnest_text},
      {"async_commit one by one (default), " + std::to_string(small_connections) + " connections",
       true, way::one_by_one, pg::commit_path::automatic},
      {"batch, each fetch its own transaction, 1 connection", false, way::batch_each_alone,
       pg::commit_path::automatic},
      {"batch, each fetch its own transaction, " + std::to_string(small_connections) +
           " connections",
       true, way::batch_each_alone, pg::commit_path::automatic},
      {"batch, together, pipelined INSERTs, 1 connection", false, way::batch_together_pipelined,
       pg::commit_path::automatic},
      {"batch, together, pipelined INSERTs, " + std::to_string(small_connections) + " connections",
       true, way::batch_together_pipelined, pg::commit_path::automatic},
      {"batch, together, one COPY (default), 1 connection", false, way::batch_together_first,
       pg::commit_path::automatic},
      {"batch, together, one COPY (default), " + std::to_string(small_connections) + " connections",
       true, way::batch_together_first, pg::commit_path::automatic},
  };
  for (const auto& w : small_ways) {
    small_methods.push_back({w.label,
                             [&, w] {
                               double t = timed_commit(io, w.all_connections ? all : solo,
                                                       small_set, w.how, w.path);
                               expect_rows(small_total, w.label);
                               return t;
                             },
                             {}});
  }
  measure(small_methods, runs, db);
  print(n + " fetches of " + std::to_string(small_rows) + " rows, " + std::to_string(small_total) +
            " rows in all (\\copy: all in one transaction):",
        small_methods, small_total);

  // --- the whole `gatherstatsd fetch` of the big document, from a file ---
  const fs::path daemon = gatherstatsd_path();
  if (fs::exists(daemon)) {
    const fs::path doc_file = files / "asset_counts.json";
    std::ofstream(doc_file, std::ios::binary) << big_doc;
    std::string command = shell_quote(daemon.string()) + " fetch " +
                          shell_quote(doc_file.string()) +
                          " --endpoint http://iar-backend.invalid/api/stats --database " +
                          shell_quote(pgc.conninfo());
    std::vector<double> times;
    for (int run = 0; run < runs; ++run) {
      db.truncate();
      auto start = clock_type::now();
      run_command(command + " >/dev/null");
      times.push_back(seconds_since(start));
      expect_rows(big_rows, "gatherstatsd fetch");
    }
    double t = median(times);
    std::printf("\ngatherstatsd fetch of the %zu-row document (%zu bytes, from a file):\n",
                big_rows, big_doc.size());
    std::printf("  %-52s %9.1f ms  %5.1f x faster than the original's %.1f s (target >= 30)\n",
                "whole process, median", t * 1e3, original_fetch_seconds / t,
                original_fetch_seconds);
  } else {
    std::printf("\n(%s not found: no gatherstatsd fetch figure)\n", daemon.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return bench(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "commit_bench: %s\n", e.what());
    return 1;
  }
}
