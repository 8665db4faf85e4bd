// The commit side of the daemon: a queue of fetches waiting to be committed
// and `size` asynchronous libpq connections working through it.
//
// Each worker owns one connection: it connects at start (with a timeout),
// checks the table, and commits one fetch per transaction, each within
// `statement_timeout` (the client's deadline: past it the connection is
// closed). No session state is kept on the server between transactions, so
// the pool works through PgBouncer in transaction pooling. A connection
// that fails (or that the server refused as read-only or shutting down) is
// dropped and replaced with
// exponential backoff and jitter; the fetch it was committing goes back to
// the front of the queue and is committed again on the next connection
// (harmless: commits are idempotent). A fetch that fails permanently (the
// database refuses its rows) is reported and dropped.
//
// Beside the workers, two coroutines each with a connection of its own: the
// fetch log's pruning and the table's upkeep (retention, partitions).
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
#include <optional>
#include <string>

namespace gatherstats::pg {

struct pool_settings {
  std::string conninfo;
  std::size_t size = 2;
  table_name table;
  std::chrono::milliseconds connect_timeout{10'000};
  // The deadline of one commit transaction; past it the connection is
  // closed and the fetches are committed again on a new one.
  std::chrono::milliseconds statement_timeout{10'000};
  std::chrono::milliseconds reconnect_min{250};
  // The longest wait between two tries to connect: also the most a
  // failover adds to the time before the first commit on the new primary
  // (a try costs little: a refused or failed connect).
  std::chrono::milliseconds reconnect_max{5'000};
  // The fetch log beside the table (fetch_log.hpp): every fetch, failures
  // included, gets its row there. Each connection checks at connect that the
  // log is there; where it is not (a database migrated by an older version)
  // the pool warns once and commits the statistics without it. Rows older
  // than the retention are pruned at start and every `prune_every`, in
  // batches of `prune_batch` with `prune_pause` between them, over a
  // connection of the pruning's own.
  bool fetch_log = false;
  // In a cluster the fetch log is the fence (fetch_log.hpp): without it
  // members would store the same ticks, so a connection that finds no
  // usable fetch log is refused (the database counts as lost, and fetches
  // wait, spooled) instead of committing without one.
  bool require_fetch_log = false;
  std::chrono::milliseconds fetch_log_retention{30LL * 86'400'000};
  std::chrono::milliseconds prune_every{3'600'000};
  std::size_t prune_batch = 1000;
  std::chrono::milliseconds prune_pause{100};
  // The table's upkeep (docs/schema.md, "Retention"), over a connection of
  // its own opened for each pass. A partitioned table has partitions created
  // ahead and, with a retention, those past it dropped, as often as
  // partitions.hpp says. A plain table, only with a retention: rows with
  // fetched_at older than it are deleted in batches of `retention_batch`
  // (prune_pause between them), at start and every prune_every. Events:
  // rows_removed, partition_created, partition_dropped; failures are
  // warnings, tried again at the next pass.
  std::optional<std::chrono::milliseconds> retention;
  std::size_t retention_batch = 10'000;
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
  // Whether fetches are logged: configured, and the last connection made
  // found the fetch log there (true until a connection has looked). A
  // failed fetch is worth submitting only then.
  bool fetch_log() const;
  // Connections that are up, and those of them in a commit.
  std::size_t connected() const;
  std::size_t busy() const;
  // No connection is up, and the last attempt to have one failed (the
  // database is lost, as the `database lost` event said); false while the
  // first connections are still being made.
  bool unreachable() const;
  // Calls `visit` with every fetch queued or being committed, oldest first
  // within each; the records must not be kept past the call.
  void for_each_pending(const std::function<void(const fetch_record&)>& visit) const;

  // Waits until nothing is pending or `until` passes, then stops the workers
  // and closes the connections. Returns the fetches left uncommitted (the
  // caller keeps them: a reload hands them to the next pool).
  boost::asio::awaitable<std::deque<fetch_record>> async_drain(deadline until);

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace gatherstats::pg
