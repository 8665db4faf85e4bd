// One endpoint's life in the daemon: a coroutine that waits for each tick
// of its schedule, fetches (retrying transient failures with backoff and
// jitter, never past the next tick), flattens, and hands the fetch to the
// commit pool. A failure here is the endpoint's alone: it is reported as an
// event and the loop goes on with the next tick.
//
// Secrets (bearer token, password) are re-read from their files before each
// fetch, off the event loop, so rotating them needs no reload.
//
// Threading: everything on one io_context. stop() ends the schedule; a fetch
// in flight completes (within its own deadline) and is still submitted.
#pragma once

#include "gatherstats/config/config.hpp"
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/log/event.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

namespace gatherstats::sched {

// At most `limit` fetches run at once across all endpoints.
class fetch_limiter {
 public:
  fetch_limiter(boost::asio::any_io_executor ex, std::size_t limit);
  ~fetch_limiter();
  boost::asio::awaitable<void> async_acquire();
  void release();
  void set_limit(std::size_t limit);
  std::size_t active() const;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

struct poller_services {
  boost::asio::any_io_executor blocking;     // for secret files
  std::function<void(fetch_record)> submit;  // to the commit pool
  fetch_limiter* limiter = nullptr;
  log::event_sink events;
  // When set and false at a tick, the tick is skipped without fetching
  // (the spool is full under `when_full: stop_fetching`; the collector says
  // so in the log).
  std::function<bool()> accepting;
};

struct poller_stats {
  std::uint64_t ticks = 0;
  std::uint64_t skipped_ticks = 0;
  std::uint64_t failures = 0;  // fetches that failed (after retries)
  std::uint64_t consecutive_failures = 0;
  std::chrono::steady_clock::time_point last_success{};
};

class endpoint_poller {
 public:
  endpoint_poller(boost::asio::any_io_executor ex, config::endpoint_config cfg,
                  poller_services services);
  ~endpoint_poller();
  endpoint_poller(const endpoint_poller&) = delete;
  endpoint_poller& operator=(const endpoint_poller&) = delete;

  // Fails when the TLS settings cannot be loaded (a bad CA or key file).
  outcome<void> prepare();
  // Runs the schedule until stop().
  void start();
  // One fetch now (with retries within `until`); true when it was submitted.
  boost::asio::awaitable<bool> async_fetch_once(std::chrono::steady_clock::time_point until);
  void stop();
  // Waits until the loop has ended (its in-flight fetch included) or `until`.
  boost::asio::awaitable<void> async_wait_stopped(std::chrono::steady_clock::time_point until);

  const config::endpoint_config& config() const;
  const poller_stats& stats() const;

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace gatherstats::sched
