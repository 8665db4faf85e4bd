// What the daemon runs: the endpoints' pollers, the commit pool between them
// and PostgreSQL, and the global fetch limit, configured as a whole.
//
// async_apply() takes a complete, validated configuration and moves to it
// without losing anything: endpoints added start, removed ones stop after
// their in-flight fetch, changed ones are rescheduled; when the database
// settings change a new pool takes over and inherits every fetch the old
// one had not committed.
//
// Threading: one io_context; `blocking` is a thread pool for file reads.
#pragma once

#include "gatherstats/config/config.hpp"
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/log/event.hpp"
#include "gatherstats/observe/status.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace gatherstats {

struct collector_status {
  std::size_t endpoints = 0;
  std::size_t failing = 0;      // endpoints whose last fetch failed
  std::size_t pending = 0;      // fetches waiting in memory to be committed
  std::size_t spooled = 0;      // fetches waiting in the spool (not yet back in memory)
  std::uint64_t dropped = 0;    // fetches lost since start (spool full or unwritable)
  std::size_t connections = 0;  // database connections up
  std::uint64_t committed = 0;  // fetches committed since start
  std::uint64_t skipped = 0;    // ticks skipped since start (the previous fetch still ran)
  bool spool_usable = true;     // false: no spool, or its last write failed
  // In a cluster: its name, the live members, this member's endpoints
  // (`endpoints` is then its share) and whether its lease is valid.
  std::string cluster;
  std::size_t members = 0;
  std::size_t endpoints_total = 0;
  bool lease_valid = false;
  bool joined = false;  // the lease was renewed at least once
  std::chrono::steady_clock::time_point last_commit{};
};

class collector {
 public:
  collector(boost::asio::any_io_executor ex, boost::asio::any_io_executor blocking,
            log::event_sink events);
  ~collector();
  collector(const collector&) = delete;
  collector& operator=(const collector&) = delete;

  boost::asio::awaitable<void> async_apply(config::daemon_config cfg);

  // --once: every endpoint fetched once (with its retries), then every
  // commit waited for. True when every fetch was committed.
  // With `dry_run` set (--once --dry-run): no pool is made and nothing
  // connects to the database; each fetch that would have been committed is
  // handed to `dry_run` instead (on the event loop). True when every fetch
  // succeeded.
  boost::asio::awaitable<bool> async_run_once(config::daemon_config cfg,
                                              std::function<void(fetch_record)> dry_run = {});

  // Stops scheduling; in-flight fetches and commits may finish until
  // `until`. Returns how many fetches were left uncommitted.
  boost::asio::awaitable<std::size_t> async_stop(std::chrono::steady_clock::time_point until);

  collector_status status() const;
  // The endpoints', database's and spool's part of the daemon's status
  // (the daemon adds its own: version, configuration file, reloads).
  observe::daemon_status observe() const;

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace gatherstats
