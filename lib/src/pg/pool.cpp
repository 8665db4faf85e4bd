// Workers and a queue rather than a connection checkout: a fetch waits in the
// queue (not in a caller's coroutine) while the database is away, which is
// where the spool will take over from memory later.
#include "gatherstats/pg/pool.hpp"

#include "gatherstats/config/duration.hpp"
#include "gatherstats/http/redact.hpp"
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/fetch_log.hpp"
#include "gatherstats/pg/partitions.hpp"
#include "gatherstats/sched/schedule.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <optional>
#include <random>
#include <span>
#include <vector>

namespace asio = boost::asio;

namespace gatherstats::pg {
namespace {
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using steady = std::chrono::steady_clock;
}  // namespace

struct pool::state {
  asio::any_io_executor ex;
  pool_settings settings;
  on_done done;
  log::event_sink events;
  std::deque<fetch_record> queue;
  std::size_t queue_bytes = 0;  // memory_bytes() of what `queue` holds
  std::size_t in_flight = 0;
  std::vector<const std::vector<fetch_record>*> batches;  // being committed, one per worker
  std::size_t busy = 0;                                   // connections in a commit
  std::size_t connected = 0;
  bool stopping = false;
  bool outage_reported = false;
  // Counts the connections that failed. A connection opened before the
  // last failure is not used again: after a failover, a server restart or
  // a freeze the others are as dead as the one that failed, and finding that
  // out one commit (and one deadline) at a time would report the outage
  // again after the first reconnect had ended it.
  unsigned long generation = 0;
  bool fetch_log_missing = false;  // the last connection made found no usable fetch log
  bool fetch_log_warned = false;   // said so (once per pool)
  asio::steady_timer wake;         // never expires: cancel_one() wakes an idle worker
  asio::steady_timer idle;         // cancelled whenever a fetch leaves the pool
  asio::steady_timer prune_wake;   // the pruning's next run; cancelled at stop
  asio::steady_timer keep_wake;    // the table upkeep's next pass; cancelled at stop
  std::mt19937_64 random{std::random_device{}()};

  state(asio::any_io_executor e, pool_settings s, on_done d, log::event_sink ev)
      : ex(e),
        settings(std::move(s)),
        done(std::move(d)),
        events(std::move(ev)),
        wake(e, steady::time_point::max()),
        idle(e, steady::time_point::max()),
        prune_wake(e),
        keep_wake(e) {}

  void emit(log::event_kind kind, log::severity level, std::string error) {
    if (!events) return;
    log::event e{kind, level};
    e.error = std::move(error);
    events(e);
  }

  void push_back(fetch_record r) {
    queue_bytes += memory_bytes(r);
    queue.push_back(std::move(r));
  }
  void push_front(fetch_record r) {
    queue_bytes += memory_bytes(r);
    queue.push_front(std::move(r));
  }
  fetch_record pop_front() {
    fetch_record r = std::move(queue.front());
    queue.pop_front();
    queue_bytes -= memory_bytes(r);
    return r;
  }

  // Once per pool: the statistics go on as before, only the log is missing.
  void warn_fetch_log(std::string why) {
    if (fetch_log_warned) return;
    fetch_log_warned = true;
    log::event e{log::event_kind::warning, log::severity::warning};
    e.error = std::move(why);
    e.detail = "fetches are not logged; statistics are committed as before";
    if (events) events(e);
  }

  void lost(const std::string& why) {
    if (outage_reported) return;
    outage_reported = true;
    emit(log::event_kind::database_lost, log::severity::error, why);
  }

  void back() {
    if (!outage_reported) return;
    outage_reported = false;
    emit(log::event_kind::database_back, log::severity::notice, {});
  }
};

namespace {

// No session state is set (no SET, no prepared statement, no temporary
// table): behind PgBouncer in transaction pooling each transaction may run
// on another server connection, and a SET would stay behind on one that
// other clients then get. statement_timeout is the client's deadline of each
// commit instead (a server-side bound is set on the role, if wanted).
asio::awaitable<outcome<connection>> connect(std::shared_ptr<pool::state> s, deadline until) {
  co_return co_await connection::async_connect(s->settings.conninfo, until);
}

// Why a commit's connection was given up, for the "database lost" event:
// a commit cut by its deadline says which setting that is.
std::string commit_failure(const failure& f, bool deadline_passed, std::chrono::milliseconds t) {
  if (!deadline_passed) return f.message;
  return "no answer within database.statement_timeout (" + std::to_string(t.count()) +
         " ms): " + f.message;
}

// A connection ready for commits, and whether it writes the fetch log.
struct opened {
  connection conn;
  bool fetch_log = false;
};

asio::awaitable<outcome<opened>> open_connection(std::shared_ptr<pool::state> s) {
  auto until = steady::now() + s->settings.connect_timeout;
  auto conn = co_await connect(s, until);
  if (!conn) co_return conn.error();
  auto checked = co_await async_check_schema(*conn, s->settings.table, until);
  if (!checked) co_return checked.error();
  if (!s->settings.fetch_log) co_return opened{std::move(*conn), false};
  auto log = co_await async_check_fetch_log(*conn, s->settings.table, until);
  if (!log) co_return log.error();
  if (!log->empty() && s->settings.require_fetch_log)
    co_return failure::permanent(*log +
                                 "; a cluster needs it as its fence, so nothing is committed "
                                 "until it is there (`gatherstatsd migrate` creates it)");
  if (s->settings.require_fetch_log) {
    auto may = co_await async_may_update(*conn, fetch_log_table(s->settings.table), until);
    if (!may) co_return may.error();
  }
  s->fetch_log_missing = !log->empty();
  if (s->fetch_log_missing) s->warn_fetch_log(*log);
  co_return opened{std::move(*conn), !s->fetch_log_missing};
}

asio::awaitable<void> pause(asio::any_io_executor ex, std::chrono::milliseconds d) {
  asio::steady_timer t(ex, d);
  co_await t.async_wait(use_nothrow);
}

// Bounds on one batch: a big fetch goes alone, small ones go together.
constexpr std::size_t max_batch_fetches = 64;
constexpr std::size_t max_batch_rows = 20'000;

// One fetch alone by the single-fetch path (COPY for big ones), several
// pipelined in one round trip.
asio::awaitable<std::vector<outcome<std::size_t>>> async_commit_all(
    connection& conn, const commit_tables& tables, const std::vector<fetch_record>& batch,
    deadline until) {
  if (batch.size() == 1) {
    auto one = co_await async_commit(conn, tables, batch.front(), until, commit_path::automatic);
    std::vector<outcome<std::size_t>> out;
    out.push_back(std::move(one));
    co_return out;
  }
  std::vector<const fetch_record*> records;
  records.reserve(batch.size());
  for (const auto& r : batch) records.push_back(&r);
  std::span<const fetch_record* const> view(records);
  co_return co_await async_commit_batch(conn, tables, view, until, batch_path::together_first);
}

// A commit refused because the fetch log does not exist (undefined_table,
// naming it): it was dropped while the daemon ran.
bool fetch_log_dropped(const std::vector<outcome<std::size_t>>& results) {
  return std::any_of(results.begin(), results.end(), [](const outcome<std::size_t>& r) {
    return !r && !r.error().is_transient() &&
           r.error().message.find("(SQLSTATE 42P01)") != std::string::npos &&
           r.error().message.find(fetch_log_name) != std::string::npos;
  });
}

std::string describe(const std::optional<timestamp>& bound, const char* none) {
  return bound ? format_timestamp(*bound) : std::string(none);
}

// One partition created or dropped: its name and range [from, to).
void emit_partition(pool::state& s, log::event_kind kind, const retention::partition& p) {
  if (!s.events) return;
  log::event e{kind, log::severity::info};
  e.detail = "partition " + p.name + " of " + s.settings.table.display() + " [" +
             describe(p.from, "MINVALUE") + ", " + describe(p.to, "MAXVALUE") + ")";
  s.events(e);
}

// A partitioned table with no partition for some fetches' fetched_at (a
// fetch spooled long ago, a clock far ahead): each one's partition is
// created, and the fetch is committed again rather than dropped. If the
// partition cannot be made, the fetch is retried later all the same (with
// the reason in the warning): no fetch is lost for want of a partition.
// Returns how many now have their partition (to be committed again at once).
asio::awaitable<std::size_t> make_missing_partitions(pool::state& s, connection& conn,
                                                     const std::vector<fetch_record>& batch,
                                                     std::vector<outcome<std::size_t>>& results) {
  std::size_t ready = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (results[i] || results[i].error().is_transient() ||
        !no_partition_for_row(results[i].error()))
      continue;
    std::string why = results[i].error().message;
    if (conn.is_idle()) {
      auto made = co_await async_create_partition_for(conn, s.settings.table, batch[i].fetched_at,
                                                      steady::now() + s.settings.statement_timeout);
      if (made && *made) emit_partition(s, log::event_kind::partition_created, **made);
      if (made) ++ready;
      if (!made) why += "; creating its partition failed: " + made.error().message;
    }
    results[i] = failure::transient(why);
  }
  co_return ready;
}

asio::awaitable<void> worker(std::shared_ptr<pool::state> s) {
  std::optional<connection> conn;
  unsigned long opened_in = 0;  // s->generation when `conn` was opened
  const commit_tables without_log{s->settings.table, std::nullopt};
  const commit_tables with_log{s->settings.table, fetch_log_table(s->settings.table),
                               s->settings.require_fetch_log};
  bool logging = false;  // this connection writes the fetch log
  unsigned failures = 0;
  sched::backoff retry_delay(s->settings.reconnect_min, s->settings.reconnect_max);
  auto drop = [&] {
    if (!conn) return;
    conn.reset();
    --s->connected;
  };
  while (!s->stopping) {
    // Connected before there is work: the daemon knows at start whether the
    // database is there, and spooled fetches wait for a connection before
    // they are read back into memory.
    if (!conn) {
      auto opened = co_await open_connection(s);
      if (!opened) {
        s->lost(opened.error().message);
        co_await pause(s->ex, retry_delay.delay(++failures, s->random));
        continue;
      }
      conn.emplace(std::move(opened->conn));
      opened_in = s->generation;
      logging = opened->fetch_log;
      ++s->connected;
      failures = 0;
      s->back();
      if (s->settings.connected) s->settings.connected();
      continue;
    }
    if (s->queue.empty()) {
      co_await s->wake.async_wait(use_nothrow);
      continue;
    }
    if (opened_in != s->generation) {
      drop();  // opened before another connection failed: open a new one
      continue;
    }
    // What is waiting goes together, up to a bound: small fetches share a
    // round trip and a WAL flush instead of paying for one each.
    std::vector<fetch_record> batch;
    std::size_t rows = 0;
    while (!s->queue.empty() && batch.size() < max_batch_fetches &&
           (batch.empty() || rows + s->queue.front().rows.size() <= max_batch_rows)) {
      rows += s->queue.front().rows.size();
      batch.push_back(s->pop_front());
    }
    s->in_flight += batch.size();
    s->batches.push_back(&batch);
    ++s->busy;
    const auto started = steady::now();
    const auto commit_until = started + s->settings.statement_timeout;
    auto results =
        co_await async_commit_all(*conn, logging ? with_log : without_log, batch, commit_until);
    --s->busy;
    s->in_flight -= batch.size();
    std::erase(s->batches, &batch);
    if (s->settings.committed_batch) s->settings.committed_batch(steady::now() - started);

    // The fetch log gone under a running daemon (dropped): the statistics go
    // on without it, as for a database that never had one; what it failed
    // is committed again, without its log row.
    if (logging && fetch_log_dropped(results) && s->settings.require_fetch_log) {
      // A cluster commits nothing without its fence: the connection goes,
      // and the next one is refused until the log is back.
      for (auto& r : results)
        if (!r) r = failure::transient(r.error().message);
      conn->close();
    } else if (logging && fetch_log_dropped(results)) {
      logging = false;
      s->fetch_log_missing = true;
      s->warn_fetch_log("the fetch log " + with_log.fetch_log->display() +
                        " has gone (dropped?): run `gatherstatsd migrate` to create it again");
      for (auto& r : results)
        if (!r) r = failure::transient(r.error().message);
    }
    const std::size_t partitioned = co_await make_missing_partitions(*s, *conn, batch, results);
    // Transient failures are committed again, first in line, in their order,
    // on this or the next connection: an idempotent commit makes a repeat
    // harmless even if one landed.
    std::optional<failure> transient;
    std::size_t retried = 0;
    for (std::size_t i = batch.size(); i-- > 0;) {
      if (results[i] || !results[i].error().is_transient()) continue;
      transient = results[i].error();
      ++retried;
      s->push_front(std::move(batch[i]));
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!results[i] && results[i].error().is_transient()) continue;
      if (!results[i])
        s->emit(log::event_kind::commit_failed, log::severity::error,
                http::redact_url(batch[i].endpoint) + ": " + results[i].error().message);
      if (s->done) s->done(batch[i], results[i]);
    }
    s->idle.cancel();
    // Nothing went wrong but missing partitions, now made: again, at once.
    if (!transient || (retried == partitioned && conn->is_idle())) {
      failures = 0;
      if (!conn->is_idle()) drop();
      continue;
    }
    if (!conn->is_idle()) {
      drop();
      ++s->generation;  // the other connections are suspect too
      s->lost(
          commit_failure(*transient, steady::now() >= commit_until, s->settings.statement_timeout));
    } else {
      // The connection is fine but the statement was not (a statement
      // timeout, a serialization failure): say so, then try again.
      log::event e{log::event_kind::warning, log::severity::warning};
      e.endpoint = s->queue.front().name;
      e.error = transient->message;
      e.detail = "the commit will be retried";
      if (s->events) s->events(e);
    }
    co_await pause(s->ex, retry_delay.delay(++failures, s->random));
  }
  drop();
  s->idle.cancel();
}

// Deletes the fetch log's rows older than the retention, in small batches
// with a pause between them (no lock held for long), at start and then every
// prune_every, over a connection of its own opened for each run.
asio::awaitable<void> pruner(std::shared_ptr<pool::state> s) {
  const table_name log = fetch_log_table(s->settings.table);
  while (!s->stopping) {
    auto conn = co_await connect(s, steady::now() + s->settings.connect_timeout);
    std::size_t pruned = 0;
    std::optional<failure> problem;
    while (conn && !problem && !s->stopping) {
      auto deleted = co_await async_prune_fetch_log(*conn, log, s->settings.fetch_log_retention,
                                                    s->settings.prune_batch,
                                                    steady::now() + s->settings.statement_timeout);
      if (!deleted) {
        // No fetch log (warned at connect): nothing to prune.
        if (conn->last_sqlstate() != "42P01") problem = deleted.error();
        break;
      }
      pruned += *deleted;
      if (*deleted < s->settings.prune_batch) break;
      co_await pause(s->ex, s->settings.prune_pause);
    }
    if (pruned > 0 && s->events) {
      log::event e{log::event_kind::fetch_log_pruned, log::severity::info};
      e.rows = pruned;
      e.detail = std::to_string(pruned) + " row(s) older than " +
                 std::to_string(s->settings.fetch_log_retention.count() / 1000) +
                 " s deleted from the fetch log " + log.display();
      s->events(e);
    }
    if (problem && s->events) {
      log::event e{log::event_kind::warning, log::severity::warning};
      e.error = problem->message;
      e.detail = "pruning the fetch log failed; it is tried again later";
      s->events(e);
    }
    // The database away: the workers say so; try again sooner than usual.
    const auto next = conn ? s->settings.prune_every
                           : std::min(s->settings.prune_every, s->settings.reconnect_max);
    conn = failure::transient("");  // closed before the long wait
    s->prune_wake.expires_after(next);
    co_await s->prune_wake.async_wait(use_nothrow);
  }
}

// The most one pass of partition upkeep may take: DETACH PARTITION
// CONCURRENTLY waits for the transactions that use the table, and past
// this deadline the connection is closed (the next pass finishes the job).
constexpr std::chrono::milliseconds partition_upkeep_timeout{60'000};
constexpr std::chrono::milliseconds min_upkeep_every{1'000};

void warn_upkeep(pool::state& s, const failure& problem, std::string what) {
  if (!s.events) return;
  log::event e{log::event_kind::warning, log::severity::warning};
  e.error = problem.message;
  e.detail = std::move(what) + "; it is tried again at the next pass";
  s.events(e);
}

// database.retention on a plain table: every row with fetched_at before one
// cutoff (fixed for the pass, so that the range logged is exact), a batch
// at a time, each batch its own short transaction, a pause between them.
asio::awaitable<void> delete_expired(std::shared_ptr<pool::state> s, connection& conn,
                                     std::chrono::milliseconds retention) {
  const auto cutoff = now_utc() - std::chrono::duration_cast<std::chrono::microseconds>(retention);
  const auto batch = std::max<std::size_t>(s->settings.retention_batch, 1);
  std::size_t removed = 0;
  std::optional<failure> problem;
  while (!s->stopping) {
    auto deleted = co_await async_delete_expired(conn, s->settings.table, cutoff, batch,
                                                 steady::now() + s->settings.statement_timeout);
    if (!deleted) {
      // No table: the workers say so.
      if (conn.last_sqlstate() != "42P01") problem = deleted.error();
      break;
    }
    removed += *deleted;
    if (*deleted < batch) break;
    co_await pause(s->ex, s->settings.prune_pause);
  }
  if (removed > 0 && s->events) {
    log::event e{log::event_kind::rows_removed, log::severity::info};
    e.rows = removed;
    e.detail = std::to_string(removed) + " row(s) with fetched_at before " +
               format_timestamp(cutoff) + " deleted from " + s->settings.table.display() +
               " (retention " + config::format_duration(retention) + ")";
    s->events(e);
  }
  if (problem)
    warn_upkeep(
        *s, *problem,
        "deleting rows past database.retention from " + s->settings.table.display() + " failed");
}

// The statistics table's upkeep, at start and then pass after pass, over a
// connection of its own opened for each pass: partitions created ahead and
// dropped past the retention on a partitioned table (partitions.hpp says
// what and when), old rows deleted in batches from a plain one.
asio::awaitable<void> table_keeper(std::shared_ptr<pool::state> s) {
  const table_name& table = s->settings.table;
  while (!s->stopping) {
    auto conn = co_await connect(s, steady::now() + s->settings.connect_timeout);
    // The database away: the workers say so; try again sooner than usual.
    auto next = conn ? s->settings.prune_every
                     : std::min(s->settings.prune_every, s->settings.reconnect_max);
    if (conn) {
      auto listed = co_await async_list_partitions(*conn, table,
                                                   steady::now() + s->settings.statement_timeout);
      if (!listed) {
        warn_upkeep(*s, listed.error(),
                    "looking for the partitions of " + table.display() + " failed");
      } else if (*listed) {
        const auto until =
            steady::now() + std::max(partition_upkeep_timeout, s->settings.statement_timeout);
        auto kept = co_await async_keep_partitions(*conn, table, **listed, s->settings.retention,
                                                   now_utc(), until);
        for (const auto& p : kept.created)
          emit_partition(*s, log::event_kind::partition_created, p);
        for (const auto& p : kept.dropped)
          emit_partition(*s, log::event_kind::partition_dropped, p);
        if (kept.problem)
          warn_upkeep(*s, *kept.problem,
                      "the upkeep of the partitions of " + table.display() + " failed");
        next = std::max(kept.next_pass, min_upkeep_every);  // never a busy loop
      } else if (s->settings.retention) {
        co_await delete_expired(s, *conn, *s->settings.retention);
      }
    }
    conn = failure::transient("");  // closed before the long wait
    if (s->stopping) break;
    s->keep_wake.expires_after(next);
    co_await s->keep_wake.async_wait(use_nothrow);
  }
}

}  // namespace

pool::pool(asio::any_io_executor ex, pool_settings settings, on_done done, log::event_sink events)
    : state_(std::make_shared<state>(ex, std::move(settings), std::move(done), std::move(events))) {
}

pool::~pool() {
  // Workers hold the state; tell them to finish.
  state_->stopping = true;
  state_->wake.cancel();
  state_->prune_wake.cancel();
  state_->keep_wake.cancel();
}

void pool::start() {
  for (std::size_t i = 0; i < std::max<std::size_t>(state_->settings.size, 1); ++i)
    asio::co_spawn(state_->ex, worker(state_), asio::detached);
  if (state_->settings.fetch_log) asio::co_spawn(state_->ex, pruner(state_), asio::detached);
  // Always: a partitioned table needs partitions ahead even without a
  // retention (a plain one without a retention costs one query a pass).
  asio::co_spawn(state_->ex, table_keeper(state_), asio::detached);
}

bool pool::fetch_log() const { return state_->settings.fetch_log && !state_->fetch_log_missing; }

void pool::submit(fetch_record record) {
  state_->push_back(std::move(record));
  state_->wake.cancel_one();
}

std::size_t pool::busy() const { return state_->busy; }

bool pool::unreachable() const { return state_->connected == 0 && state_->outage_reported; }

void pool::for_each_pending(const std::function<void(const fetch_record&)>& visit) const {
  for (const auto* batch : state_->batches)
    for (const auto& r : *batch) visit(r);
  for (const auto& r : state_->queue) visit(r);
}

std::size_t pool::pending() const { return state_->queue.size() + state_->in_flight; }
std::size_t pool::connected() const { return state_->connected; }
std::size_t pool::queued() const { return state_->queue.size(); }
std::size_t pool::queued_bytes() const { return state_->queue_bytes; }

asio::awaitable<std::deque<fetch_record>> pool::async_drain(deadline until) {
  auto s = state_;
  s->idle.expires_at(until);
  while (s->queue.size() + s->in_flight > 0 && steady::now() < until) {
    co_await s->idle.async_wait(use_nothrow);
  }
  s->stopping = true;
  s->wake.cancel();
  s->prune_wake.cancel();
  s->keep_wake.cancel();
  s->queue_bytes = 0;
  co_return std::exchange(s->queue, {});
}

}  // namespace gatherstats::pg
