// The commit side of the daemon: a queue of fetches waiting to be committed
// and `size` asynchronous libpq connections working through it.
//
// Each worker owns one connection: it connects at start (with a timeout),
// sets the statement timeout, checks the table, and commits one fetch per
// transaction. A connection that fails is dropped and replaced with
// exponential backoff and jitter; the fetch it was committing goes back to
// the front of the queue and is committed again on the next connection
// (harmless: commits are idempotent). A fetch that fails permanently (the
// database refuses its rows) is reported and dropped.
//
// Events (database lost/back, commit failed) and the outcome of every fetch
// go to the callbacks, on the pool's executor. Single-threaded: everything
// runs on one io_context; no locks.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/log/event.hpp"
#include "gatherstats/pg/statistic_table.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>

namespace gatherstats::pg {

struct pool_settings {
  std::string conninfo;
  std::size_t size = 2;
  table_name table;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds statement_timeout{30'000};
  std::chrono::milliseconds reconnect_min{250};
  std::chrono::milliseconds reconnect_max{30'000};
  // Called whenever a connection comes up (first connect and reconnects).
  std::function<void()> connected;
  // Called after each commit transaction (a batch of one or more fetches,
  // committed or not) with the time it took: the commit-duration histogram.
  std::function<void(std::chrono::steady_clock::duration)> committed_batch;
};

class pool {
 public:
  // Called once per submitted fetch when it is committed (rows new) or
  // dropped (a permanent failure).
  using on_done = std::function<void(const fetch_record&, const outcome<std::size_t>&)>;

  pool(boost::asio::any_io_executor ex, pool_settings settings, on_done done,
       log::event_sink events);
  ~pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  void start();
  // Queues a fetch; never blocks. Committed oldest first.
  void submit(fetch_record record);
  // Fetches queued or being committed.
  std::size_t pending() const;
  // Fetches queued (not being committed), and the memory they hold.
  std::size_t queued() const;
  std::size_t queued_bytes() const;
  // Connections that are up, and those of them in a commit.
  std::size_t connected() const;
  std::size_t busy() const;

  // Waits until nothing is pending or `until` passes, then stops the workers
  // and closes the connections. Returns the fetches left uncommitted (the
  // caller keeps them: a reload hands them to the next pool).
  boost::asio::awaitable<std::deque<fetch_record>> async_drain(deadline until);

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace gatherstats::pg
