// Workers and a queue rather than a connection checkout: a fetch waits in the
// queue (not in a caller's coroutine) while the database is away, which is
// where the spool will take over from memory later.
#include "gatherstats/pg/pool.hpp"

#include "gatherstats/http/redact.hpp"
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/sched/schedule.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <optional>
#include <random>
#include <span>
#include <vector>

namespace asio = boost::asio;

namespace gatherstats::pg {
namespace {
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using steady = std::chrono::steady_clock;
// Slack on top of the server-side statement timeout before the client gives
// up on a commit and drops the connection.
constexpr auto client_slack = std::chrono::seconds(5);
}  // namespace

struct pool::state {
  asio::any_io_executor ex;
  pool_settings settings;
  on_done done;
  log::event_sink events;
  std::deque<fetch_record> queue;
  std::size_t queue_bytes = 0;  // memory_bytes() of what `queue` holds
  std::size_t in_flight = 0;
  std::size_t busy = 0;  // connections in a commit
  std::size_t connected = 0;
  bool stopping = false;
  bool outage_reported = false;
  asio::steady_timer wake;  // never expires: cancel_one() wakes an idle worker
  asio::steady_timer idle;  // cancelled whenever a fetch leaves the pool
  std::mt19937_64 random{std::random_device{}()};

  state(asio::any_io_executor e, pool_settings s, on_done d, log::event_sink ev)
      : ex(e),
        settings(std::move(s)),
        done(std::move(d)),
        events(std::move(ev)),
        wake(e, steady::time_point::max()),
        idle(e, steady::time_point::max()) {}

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

asio::awaitable<outcome<connection>> open_connection(std::shared_ptr<pool::state> s) {
  auto until = steady::now() + s->settings.connect_timeout;
  auto conn = co_await connection::async_connect(s->settings.conninfo, until);
  if (!conn) co_return conn.error();
  auto set = co_await conn->async_exec(
      "SET statement_timeout = " + std::to_string(s->settings.statement_timeout.count()), until);
  if (!set) co_return set.error();
  auto checked = co_await async_check_schema(*conn, s->settings.table, until);
  if (!checked) co_return checked.error();
  co_return std::move(*conn);
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
    connection& conn, const table_name& table, const std::vector<fetch_record>& batch,
    deadline until) {
  if (batch.size() == 1) {
    auto one = co_await async_commit(conn, table, batch.front(), until);
    std::vector<outcome<std::size_t>> out;
    out.push_back(std::move(one));
    co_return out;
  }
  std::vector<const fetch_record*> records;
  records.reserve(batch.size());
  for (const auto& r : batch) records.push_back(&r);
  std::span<const fetch_record* const> view(records);
  co_return co_await async_commit_batch(conn, table, view, until);
}

asio::awaitable<void> worker(std::shared_ptr<pool::state> s) {
  std::optional<connection> conn;
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
      conn.emplace(std::move(*opened));
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
    ++s->busy;
    const auto started = steady::now();
    auto results =
        co_await async_commit_all(*conn, s->settings.table, batch,
                                  steady::now() + s->settings.statement_timeout + client_slack);
    --s->busy;
    s->in_flight -= batch.size();
    if (s->settings.committed_batch) s->settings.committed_batch(steady::now() - started);

    // Transient failures are committed again, first in line, in their order,
    // on this or the next connection: an idempotent commit makes a repeat
    // harmless even if one landed.
    std::optional<failure> transient;
    for (std::size_t i = batch.size(); i-- > 0;) {
      if (results[i] || !results[i].error().is_transient()) continue;
      transient = results[i].error();
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
    if (!transient) {
      failures = 0;
      if (!conn->is_idle()) drop();
      continue;
    }
    if (!conn->is_idle()) {
      drop();
      s->lost(transient->message);
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

}  // namespace

pool::pool(asio::any_io_executor ex, pool_settings settings, on_done done, log::event_sink events)
    : state_(std::make_shared<state>(ex, std::move(settings), std::move(done), std::move(events))) {
}

pool::~pool() {
  // Workers hold the state; tell them to finish.
  state_->stopping = true;
  state_->wake.cancel();
}

void pool::start() {
  for (std::size_t i = 0; i < std::max<std::size_t>(state_->settings.size, 1); ++i)
    asio::co_spawn(state_->ex, worker(state_), asio::detached);
}

void pool::submit(fetch_record record) {
  state_->push_back(std::move(record));
  state_->wake.cancel_one();
}

std::size_t pool::busy() const { return state_->busy; }

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
  s->queue_bytes = 0;
  co_return std::exchange(s->queue, {});
}

}  // namespace gatherstats::pg
