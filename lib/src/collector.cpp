// Wiring of pollers -> pool. The pool is reached through the collector's
// state, never held by a poller, so a new pool (after a reload) receives
// what an old poller's last fetch submits.
#include "gatherstats/collector.hpp"

#include "gatherstats/cluster/assignment.hpp"
#include "gatherstats/cluster/member.hpp"
#include "gatherstats/http/redact.hpp"
#include "gatherstats/io/blocking.hpp"
#include "gatherstats/pg/pool.hpp"
#include "gatherstats/sched/endpoint_poller.hpp"
#include "gatherstats/spool/spool.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <optional>
#include <set>

namespace asio = boost::asio;

namespace gatherstats {
namespace {
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using steady = std::chrono::steady_clock;

// The longest a member waits at start for its first heartbeat before the
// daemon is ready (the database may be away: readiness does not wait for it).
constexpr std::chrono::milliseconds max_join_wait{1'000};

// A store the spool refused because it is full under full_policy::stop (its
// wording), as opposed to one it could not write.
bool refused_as_full(const std::string& message) {
  return message.find(" is full (") != std::string::npos;
}
}  // namespace

const char* log::to_string(event_kind kind) {
  switch (kind) {
    case event_kind::fetch_committed:
      return "fetch committed";
    case event_kind::fetch_failed:
      return "fetch failed";
    case event_kind::fetch_retrying:
      return "fetch retrying";
    case event_kind::tick_skipped:
      return "tick skipped";
    case event_kind::commit_failed:
      return "commit failed";
    case event_kind::database_lost:
      return "database lost";
    case event_kind::database_back:
      return "database back";
    case event_kind::config_loaded:
      return "configuration loaded";
    case event_kind::config_rejected:
      return "configuration rejected";
    case event_kind::results_spooled:
      return "results spooled";
    case event_kind::results_dropped:
      return "results dropped";
    case event_kind::warning:
      return "warning";
    case event_kind::stopping:
      return "stopping";
    case event_kind::fetch_log_pruned:
      return "fetch log pruned";
    case event_kind::no_spool:
      return "no spool";
    case event_kind::rows_removed:
      return "rows removed";
    case event_kind::partition_created:
      return "partition created";
    case event_kind::partition_dropped:
      return "partition dropped";
    case event_kind::member_joined:
      return "member joined";
    case event_kind::member_left:
      return "member left";
    case event_kind::share_changed:
      return "share changed";
    case event_kind::lease_lost:
      return "lease lost";
    case event_kind::lease_renewed:
      return "lease renewed";
    case event_kind::tick_fenced:
      return "tick fenced";
  }
  return "event";
}

// What the spool holds, read on the blocking thread after each of its
// operations and kept on the event loop for the metrics and the status page.
struct spool_gauges {
  std::uint64_t fetches = 0;
  std::uint64_t bytes = 0;
  std::optional<timestamp> oldest;

  static spool_gauges of(const spool::directory_spool* sp) {
    spool_gauges g;
    if (!sp) return g;
    g.fetches = sp->size();
    g.bytes = sp->bytes();
    if (auto first = sp->next_after(0)) g.oldest = first->fetched_at;
    return g;
  }
};

struct dropped_fetch {
  observe::drop_reason reason;
  std::string why;  // one line naming the fetch and why it was lost
};

// What one pass of spool work on the blocking thread reports back.
struct spool_report {
  std::size_t written = 0;
  // Copies of fetches still in memory (by memory_id): the entry written, or
  // 0 where the write failed.
  std::vector<std::pair<std::uint64_t, spool::entry_id>> copied;
  std::string copy_problem;  // why the last copy failed
  std::vector<dropped_fetch> dropped;
  bool full = false;          // refused: full under when_full: stop_fetching
  std::uint64_t waiting = 0;  // spooled entries not yet back in memory
  spool_gauges gauges;
};

// Per configured endpoint: its status, and the ticks its earlier pollers
// skipped (a poller replaced by a reload takes its count with it).
struct endpoint_record {
  observe::endpoint_status status;
  std::uint64_t skipped_before = 0;
};

struct collector::state {
  asio::any_io_executor ex;
  asio::any_io_executor blocking;
  log::event_sink events;
  std::optional<config::daemon_config> current;
  std::unique_ptr<pg::pool> pool;
  std::unique_ptr<sched::fetch_limiter> limiter;
  std::map<std::string, std::unique_ptr<sched::endpoint_poller>> pollers;
  // cluster: this daemon as a member (docs/cluster.md), the live members it
  // acts on, and how many endpoints it fetches of them.
  std::unique_ptr<cluster::member> member;
  std::vector<std::string> members;
  // Pollers of endpoints this member gave up, still fetching for
  // cluster::clock_allowance (the new owner's clock may be ahead).
  std::map<std::string, std::unique_ptr<sched::endpoint_poller>> retiring;
  std::optional<std::size_t> share;  // none until the first share was computed
  std::uint64_t ticks_fenced = 0;
  std::uint64_t committed = 0;
  std::uint64_t commit_failures = 0;
  std::uint64_t dropped = 0;
  steady::time_point last_commit{};

  // What the metrics and the status page show (observe/status.hpp).
  std::map<std::string, endpoint_record> endpoint_stats;
  observe::histogram fetch_duration;
  observe::histogram commit_duration;
  std::uint64_t rows_committed = 0;
  // What the table's upkeep removed and created (counted from its events,
  // across reloads).
  std::uint64_t retention_deleted_rows = 0;
  std::uint64_t retention_dropped_partitions = 0;
  std::uint64_t partitions_created = 0;
  spool_gauges spool_now;
  std::string spool_problem;      // why there is no spool, or why the last write failed
  bool spool_unwritable = false;  // the last write to the spool failed
  std::uint64_t spool_written = 0;
  std::uint64_t spool_replayed = 0;
  std::array<std::uint64_t, observe::drop_reason_count> dropped_by{};

  // Waiting results past memory (docs/reliability.md). On the event loop:
  bool spool_open = false;
  std::deque<fetch_record> to_spool;  // waiting to be written, oldest first
  bool writer_running = false;
  // Memory held by fetches on their way to the spool (to_spool and the batch
  // being written), and whether fetching is paused because that passed
  // spool_backlog_max(): the spool writes slower than fetches arrive (a slow
  // or busy disk), and memory stays bounded.
  std::size_t spool_backlog_bytes = 0;
  bool spool_behind = false;
  std::uint64_t spool_waiting = 0;  // spooled, not yet fed back into memory
  bool spool_full = false;          // when_full: stop_fetching and it refused
  bool feeding = false;             // a spooled fetch is being read back
  bool stopping = false;
  // Fetches moved to the spool in the batch the writer is writing.
  std::size_t moves_writing = 0;

  // Durable before it waits (docs/reliability.md): a fetch that has waited
  // in memory longer than spool.memory_max_wait gets a copy in the spool; the
  // copy goes once the fetch is committed. By memory_id:
  struct copy_state {
    spool::entry_id id = 0;  // its entry, once written (0: not yet, or the write failed)
    bool writing = true;     // the write is under way
    bool settled = false;    // committed (or refused) while the write was under way
  };
  std::map<std::uint64_t, copy_state> copies;
  std::vector<fetch_record> to_copy;  // copies waiting to be written
  std::uint64_t next_memory_id = 1;
  bool guard_idle = false;
  bool copying_reported = false;  // said that copies are being made (once per episode)
  // --once --dry-run: every fetch goes here instead of to a pool.
  std::function<void(fetch_record)> dry_run;
  asio::steady_timer feeder_wake;  // never expires; cancel() wakes the feeder
  asio::steady_timer writer_idle;  // cancelled when the writer finishes
  asio::steady_timer guard_wake;   // never expires; cancel() wakes the guard
  // Only ever touched on the blocking pool's single thread: the spool, the
  // newest entry fed back into memory, and its own count of the rest.
  std::unique_ptr<spool::directory_spool> spool;
  spool::entry_id spool_fed_upto = 0;
  std::uint64_t spool_unfed = 0;
  std::set<spool::entry_id> copy_ids;  // entries that are copies of fetches in memory

  state(asio::any_io_executor e, asio::any_io_executor b, log::event_sink ev)
      : ex(e),
        blocking(b),
        events(std::move(ev)),
        feeder_wake(e, steady::time_point::max()),
        writer_idle(e, steady::time_point::max()),
        guard_wake(e, steady::time_point::max()) {}

  void emit(log::event e) {
    if (events) events(e);
  }

  void emit_error(log::event_kind kind, std::string endpoint, std::string error) {
    log::event e{kind, log::severity::error};
    e.endpoint = std::move(endpoint);
    e.error = std::move(error);
    emit(e);
  }

  std::size_t memory_max() const {
    return current ? current->spool.memory_max_bytes : config::spool_config{}.memory_max_bytes;
  }
  // Past this much memory on its way to the spool, fetching pauses. At least
  // a few big fetches' worth, so that a small memory_max_bytes does not
  // pause (and log) at every spooled fetch.
  static constexpr std::size_t min_spool_backlog = 1 << 20;
  std::size_t spool_backlog_max() const { return std::max(memory_max() / 2, min_spool_backlog); }
  std::chrono::milliseconds memory_max_wait() const {
    return current ? current->spool.memory_max_wait : config::spool_config{}.memory_max_wait;
  }

  // Every fetch a poller makes comes here. It goes to the pool's queue in
  // memory, unless that is past spool.memory_max_bytes or older fetches are
  // on disk already (so that commits stay oldest first): then to the spool.
  void observe_fetch(const fetch_record& r) {
    fetch_duration.observe(std::chrono::duration<double>(r.outcome.duration).count());
    if (auto found = endpoint_stats.find(r.name); found != endpoint_stats.end())
      found->second.status.record(r);
  }

  void count_drop(observe::drop_reason why) {
    ++dropped;
    ++dropped_by[static_cast<std::size_t>(why)];
  }

  // A fetch waits in memory only while the database is not known to be
  // away; otherwise, or past spool.memory_max_bytes, it goes to the spool.
  void accept(fetch_record r, std::shared_ptr<state> self) {
    observe_fetch(r);
    if (!pool) return;
    // A failed fetch has nothing to store but its row in the fetch log.
    if (!r.outcome.ok() && !pool->fetch_log()) return;
    r.memory_id = next_memory_id++;
    r.accepted = steady::now();
    const bool over = pool->queued_bytes() + memory_bytes(r) > memory_max();
    const bool away = pool->unreachable();
    // While the database is away, fetches keep the order they were made in
    // on their way to the spool; once it is back, new fetches go to memory
    // and the spooled ones are read back beside them with the room left
    // (commits are independent and idempotent: their order is not a
    // guarantee, and a spool that must drain before anything new is
    // committed can never catch up at a high rate).
    const bool behind = !to_spool.empty() || moves_writing > 0;
    if (spool_open && (over || away || (behind && pool->connected() == 0))) {
      if (!behind && spool_waiting == 0) {
        log::event e{log::event_kind::results_spooled, log::severity::notice};
        e.detail = over ? "the fetches waiting in memory reached spool.memory_max_bytes (" +
                              std::to_string(memory_max()) +
                              "); new fetches go to the spool until the database takes them"
                        : "no database connection is up: new fetches go to the spool until "
                          "one is";
        emit(e);
      }
      spool_backlog_bytes += memory_bytes(r);
      to_spool.push_back(std::move(r));
      if (!spool_behind && spool_backlog_bytes > spool_backlog_max()) {
        spool_behind = true;
        log::event e{log::event_kind::warning, log::severity::warning};
        e.detail = "the spool writes slower than fetches arrive (" +
                   std::to_string(spool_backlog_bytes) +
                   " bytes of fetches waiting to be written, over half of "
                   "spool.memory_max_bytes or 1 MiB): every endpoint skips its ticks until it "
                   "catches up";
        emit(e);
      }
      start_writer(self);
      return;
    }
    if (over) {
      count_drop(observe::drop_reason::no_spool);
      emit_error(log::event_kind::results_dropped, r.name,
                 "fetch at " + to_iso8601(r.fetched_at) +
                     " dropped: spool.memory_max_bytes is reached and there is no spool");
      return;
    }
    pool->submit(std::move(r));
    if (guard_idle) guard_wake.cancel();
  }

  // Fetches that have waited in memory longer than spool.memory_max_wait
  // (queued, or in a commit that has not answered) get a copy in the spool.
  void copy_overdue(std::shared_ptr<state> self) {
    if (!pool || !spool_open) return;
    const auto due = steady::now() - memory_max_wait();
    std::size_t found = 0;
    pool->for_each_pending([&](const fetch_record& r) {
      if (r.spool_id != 0 || r.memory_id == 0 || r.accepted > due) return;
      if (!copies.try_emplace(r.memory_id).second) return;
      spool_backlog_bytes += memory_bytes(r);
      to_copy.push_back(r);
      ++found;
    });
    if (found == 0) return;
    if (!copying_reported) {
      copying_reported = true;
      log::event e{log::event_kind::results_spooled, log::severity::info};
      e.rows = found;
      e.detail = std::to_string(found) + " fetch(es) waited longer than spool.memory_max_wait (" +
                 std::to_string(memory_max_wait().count()) +
                 " ms) for a commit: each is copied to the spool until it is committed";
      emit(e);
    }
    start_writer(self);
  }

  void start_writer(std::shared_ptr<state> self) {
    if (writer_running) return;
    writer_running = true;
    asio::co_spawn(ex, async_write_spool(self), asio::detached);
  }

  // Watches the fetches waiting in memory while there are any.
  static asio::awaitable<void> async_guard(std::shared_ptr<state> s) {
    asio::steady_timer pause(s->ex);
    while (!s->stopping) {
      if (!s->pool || s->pool->pending() == 0) {
        s->copying_reported = false;
        s->guard_idle = true;
        co_await s->guard_wake.async_wait(use_nothrow);
        s->guard_idle = false;
        continue;
      }
      pause.expires_after(
          std::max<steady::duration>(s->memory_max_wait() / 4, std::chrono::milliseconds(50)));
      co_await pause.async_wait(use_nothrow);
      if (!s->stopping) s->copy_overdue(s);
    }
  }

  // Writes `records` to the spool on the blocking thread, then `copies`
  // (fetches that stay in memory: a failure loses nothing).
  static asio::awaitable<spool_report> async_store(std::shared_ptr<state> s,
                                                   std::vector<fetch_record> records,
                                                   std::vector<fetch_record> copies = {}) {
    auto store_all = [s, &records, &copies]() -> spool_report {
      spool_report out;
      for (const auto& r : copies) {
        outcome<spool::store_result> stored = failure::permanent("there is no spool");
        if (s->spool) stored = s->spool->store(r, s->spool_fed_upto, &s->copy_ids);
        if (!stored) {
          out.copied.emplace_back(r.memory_id, 0);
          out.copy_problem = stored.error().message;
          continue;
        }
        s->copy_ids.insert(stored->id);
        out.copied.emplace_back(r.memory_id, stored->id);
        for (const auto& d : stored->dropped) {
          --s->spool_unfed;
          out.dropped.push_back({observe::drop_reason::spool_full,
                                 "spooled fetch at " + to_iso8601(d.fetched_at) + " (" + d.path +
                                     ") dropped to make room: the spool is at max_bytes"});
        }
      }
      for (const auto& r : records) {
        std::string what = "fetch of " + r.name + " at " + to_iso8601(r.fetched_at);
        if (!s->spool) {
          out.dropped.push_back(
              {observe::drop_reason::no_spool, what + " dropped: there is no spool"});
          continue;
        }
        auto stored = s->spool->store(r, s->spool_fed_upto, &s->copy_ids);
        if (!stored) {
          bool full = refused_as_full(stored.error().message);
          if (full) out.full = true;
          out.dropped.push_back(
              {full ? observe::drop_reason::spool_full : observe::drop_reason::spool_unwritable,
               what + " dropped: " + stored.error().message});
          continue;
        }
        ++out.written;
        ++s->spool_unfed;
        for (const auto& d : stored->dropped) {
          --s->spool_unfed;
          out.dropped.push_back({observe::drop_reason::spool_full,
                                 "spooled fetch at " + to_iso8601(d.fetched_at) + " (" + d.path +
                                     ") dropped to make room: the spool is at max_bytes"});
        }
      }
      out.waiting = s->spool_unfed;
      out.gauges = spool_gauges::of(s->spool.get());
      return out;
    };
    co_return co_await io::async_run_blocking<spool_report>(s->blocking, store_all);
  }

  void report(const spool_report& r, std::shared_ptr<state> self) {
    spool_waiting = r.waiting;
    spool_now = r.gauges;
    spool_written += r.written;
    for (auto [memory_id, id] : r.copied) {
      auto found = copies.find(memory_id);
      if (found == copies.end()) continue;
      auto& c = found->second;
      c.writing = false;
      c.id = id;
      if (id != 0) ++spool_written;
      // Committed meanwhile: the copy is not needed. A failed copy stays
      // listed (as not on disk) until its fetch is committed: not retried.
      if (c.settled) {
        if (id != 0) asio::co_spawn(ex, async_unspool(self, id, {}), asio::detached);
        copies.erase(found);
      }
    }
    if (!r.copy_problem.empty()) {
      if (!refused_as_full(r.copy_problem)) {
        spool_unwritable = true;
        spool_problem = r.copy_problem;
      }
      log::event e{log::event_kind::warning, log::severity::warning};
      e.error = r.copy_problem;
      e.detail =
          "a fetch waiting for the database could not be copied to the spool; it waits "
          "in memory only";
      emit(e);
    }
    for (const auto& d : r.dropped) {
      count_drop(d.reason);
      emit_error(log::event_kind::results_dropped, {}, d.why);
      if (d.reason == observe::drop_reason::spool_unwritable) {
        spool_unwritable = true;
        spool_problem = d.why;
      }
    }
    const bool copied_one =
        std::any_of(r.copied.begin(), r.copied.end(), [](const auto& c) { return c.second != 0; });
    if ((r.written > 0 || copied_one) && r.copy_problem.empty() && spool_unwritable) {
      spool_unwritable = false;
      spool_problem.clear();
    }
    if (r.full && !spool_full && current &&
        current->spool.when_full == config::spool_full_policy::stop_fetching) {
      spool_full = true;
      emit_error(log::event_kind::results_dropped, {},
                 "the spool is full: fetching stops (when_full: stop_fetching) until the "
                 "database takes spooled fetches");
    }
  }

  // Writes what accept() queued for the spool, in order, in batches.
  static asio::awaitable<void> async_write_spool(std::shared_ptr<state> s) {
    while (!s->to_spool.empty() || !s->to_copy.empty()) {
      // Nothing else is on its way to the spool while the writer takes all
      // that waits: the backlog is this batch.
      const std::size_t bytes = s->spool_backlog_bytes;
      std::vector<fetch_record> batch(std::make_move_iterator(s->to_spool.begin()),
                                      std::make_move_iterator(s->to_spool.end()));
      s->to_spool.clear();
      std::vector<fetch_record> copies = std::move(s->to_copy);
      s->to_copy.clear();
      s->moves_writing = batch.size();
      auto result = co_await async_store(s, std::move(batch), std::move(copies));
      s->moves_writing = 0;
      s->spool_backlog_bytes -= bytes;
      s->report(result, s);
      s->feeder_wake.cancel();
      if (s->spool_behind && s->spool_backlog_bytes <= s->spool_backlog_max() / 2) {
        s->spool_behind = false;
        log::event e{log::event_kind::warning, log::severity::notice};
        e.detail = "the spool caught up: fetching resumes";
        s->emit(e);
      }
    }
    s->writer_running = false;
    s->writer_idle.cancel();
  }

  // Reads spooled fetches back into the pool's queue, oldest first, while
  // the database is connected and memory has room; waits otherwise.
  static asio::awaitable<void> async_feed(std::shared_ptr<state> s) {
    while (!s->stopping) {
      bool room = s->pool && s->pool->connected() > 0 &&
                  s->pool->queued_bytes() < s->memory_max() / 2 && s->pool->queued() < feed_window;
      if (s->spool_waiting == 0 || !room) {
        co_await s->feeder_wake.async_wait(use_nothrow);
        continue;
      }
      struct loaded {
        outcome<fetch_record> record;
        std::uint64_t unfed = 0;
        spool_gauges gauges;
      };
      auto next = [s]() -> loaded {
        auto entry = s->spool ? s->spool->next_after(s->spool_fed_upto) : std::nullopt;
        // Copies of fetches in memory are committed from there.
        while (entry && s->copy_ids.contains(entry->id)) {
          s->spool_fed_upto = entry->id;
          entry = s->spool->next_after(entry->id);
        }
        if (!entry) {
          s->spool_unfed = 0;
          return {failure::permanent(""), 0, spool_gauges::of(s->spool.get())};
        }
        s->spool_fed_upto = entry->id;
        --s->spool_unfed;
        auto record = s->spool->load(entry->id);
        if (record) record->spool_id = entry->id;
        return {std::move(record), s->spool_unfed, spool_gauges::of(s->spool.get())};
      };
      auto got = co_await io::async_run_blocking<loaded>(s->blocking, next);
      s->spool_waiting = got.unfed;
      s->spool_now = got.gauges;
      if (got.record) {
        ++s->spool_replayed;
        if (s->pool) s->pool->submit(std::move(*got.record));
      } else if (!got.record.error().message.empty()) {
        // Moved to corrupt/ (or unreadable and left for the next start).
        s->emit_error(log::event_kind::warning, {}, "spool: " + got.record.error().message);
      }
    }
  }
  static constexpr std::size_t feed_window = 16;

  // A spooled fetch is committed (or refused for good): its file goes.
  static asio::awaitable<void> async_unspool(std::shared_ptr<state> s, std::uint64_t id,
                                             std::string name) {
    using removal = std::pair<outcome<void>, spool_gauges>;
    auto remove = [s, id]() -> removal {
      if (!s->spool) return {outcome<void>{}, spool_gauges{}};
      s->copy_ids.erase(id);
      auto removed = s->spool->remove(id);
      return {std::move(removed), spool_gauges::of(s->spool.get())};
    };
    auto removed = co_await io::async_run_blocking<removal>(s->blocking, remove);
    s->spool_now = removed.second;
    if (!removed.first)
      s->emit_error(log::event_kind::warning, name, removed.first.error().message);
    if (s->spool_full) {
      s->spool_full = false;
      log::event e{log::event_kind::warning, log::severity::notice};
      e.detail = "the spool has room again: fetching resumes";
      s->emit(e);
    }
  }

  void committed_one(const fetch_record& record, const outcome<std::size_t>& result,
                     std::shared_ptr<state> self) {
    if (record.spool_id != 0)
      asio::co_spawn(ex, async_unspool(self, record.spool_id, record.name), asio::detached);
    if (auto copy = copies.find(record.memory_id); record.memory_id != 0 && copy != copies.end()) {
      if (copy->second.writing) {
        copy->second.settled = true;
      } else {
        if (copy->second.id != 0)
          asio::co_spawn(ex, async_unspool(self, copy->second.id, record.name), asio::detached);
        copies.erase(copy);
      }
    }
    feeder_wake.cancel();
    if (!result) {
      ++commit_failures;
      return;  // the pool reported it
    }
    if (!record.outcome.ok()) return;  // only its fetch log row: not a fetch committed
    if (*result == 0 && !record.rows.empty() && pool && pool->fetch_log()) {
      // Its tick was stored already (the fence): by another member, or by
      // an earlier try of this commit whose answer was lost.
      ++ticks_fenced;
      last_commit = steady::now();  // the commit worked: it had nothing to store
      log::event e{log::event_kind::tick_fenced, log::severity::debug};
      e.endpoint = record.name;
      e.url = http::redact_url(record.endpoint);
      e.detail = "tick " + to_iso8601(record.outcome.tick) +
                 " was stored already (by another member, or an earlier try of this commit): "
                 "this fetch stored nothing";
      emit(e);
      return;
    }
    ++committed;
    rows_committed += record.rows.size();
    last_commit = steady::now();
    log::event e{log::event_kind::fetch_committed, log::severity::info};
    e.endpoint = record.name;
    e.url = http::redact_url(record.endpoint);
    e.rows = record.rows.size();
    e.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now() - record.fetched_at);
    e.detail = std::to_string(*result) + " new";
    emit(e);
  }

  // The metrics of the table's upkeep, from the pool's events.
  void count_upkeep(const log::event& e) {
    switch (e.kind) {
      case log::event_kind::rows_removed:
        retention_deleted_rows += e.rows;
        break;
      case log::event_kind::partition_dropped:
        ++retention_dropped_partitions;
        break;
      case log::event_kind::partition_created:
        ++partitions_created;
        break;
      default:
        break;
    }
  }

  std::unique_ptr<pg::pool> make_pool(const config::database_config& db, bool clustered,
                                      std::shared_ptr<state> self) {
    pg::pool_settings settings;
    settings.conninfo = db.conninfo;
    settings.size = db.pool_size;
    settings.table = pg::table_name::parse(db.table).value();  // validated with the config
    settings.connect_timeout = db.connect_timeout;
    settings.statement_timeout = db.statement_timeout;
    settings.fetch_log = db.fetch_log;
    settings.require_fetch_log = clustered;
    settings.fetch_log_retention = db.fetch_log_retention;
    settings.retention = db.retention;
    std::weak_ptr<state> weak = self;
    settings.connected = [weak] {
      if (auto s = weak.lock()) s->feeder_wake.cancel();
    };
    settings.committed_batch = [weak](steady::duration took) {
      if (auto s = weak.lock())
        s->commit_duration.observe(std::chrono::duration<double>(took).count());
    };
    auto p = std::make_unique<pg::pool>(
        ex, std::move(settings),
        [weak](const fetch_record& r, const outcome<std::size_t>& result) {
          if (auto s = weak.lock()) s->committed_one(r, result, s);
        },
        [weak, events = events](const log::event& e) {
          if (auto s = weak.lock()) s->count_upkeep(e);
          if (events) events(e);
        });
    p->start();
    return p;
  }

  // A poller ready to start, or nullptr (reported) when its TLS settings
  // cannot be loaded.
  std::unique_ptr<sched::endpoint_poller> make_poller(const config::endpoint_config& ep,
                                                      std::shared_ptr<state> self) {
    auto poller = std::make_unique<sched::endpoint_poller>(ex, ep, services(self));
    if (auto ok = poller->prepare(); !ok) {
      log::event e{log::event_kind::fetch_failed, log::severity::error};
      e.endpoint = ep.name;
      e.error = ok.error().message;
      emit(e);
      return nullptr;
    }
    return poller;
  }

  // Whether this daemon fetches `ep`: always alone; in a cluster, when it
  // is among the endpoint's owners for the members it acts on.
  bool owns(const config::endpoint_config& ep) const {
    if (!member || !current || !current->cluster) return true;
    return cluster::owns(current->cluster->member, ep.name, members, current->cluster->replicas);
  }

  // Starts the pollers of the endpoints this daemon owns and stops the
  // others (a stopped poller's fetch in flight still reaches the pool), then
  // tells the members and the journal when the share changed.
  void rebalance(std::shared_ptr<state> self) {
    if (!current) return;
    std::size_t owned = 0;
    for (const auto& ep : current->endpoints) {
      auto found = pollers.find(ep.name);
      if (!owns(ep)) {
        if (found == pollers.end()) continue;
        retire(std::move(found->second), self);
        pollers.erase(found);
        continue;
      }
      ++owned;
      if (found != pollers.end()) continue;
      if (auto r = retiring.find(ep.name); r != retiring.end()) {
        auto back = std::move(r->second);
        retiring.erase(r);
        if (back->config() == ep) {
          pollers.emplace(ep.name, std::move(back));
          continue;
        }
        stop_poller(*back);
      }
      auto poller = make_poller(ep, self);
      if (!poller) continue;
      poller->start();
      pollers.emplace(ep.name, std::move(poller));
    }
    if (!member) return;
    member->set_share(owned, current->endpoints.size());
    member->set_endpoints(endpoints_fingerprint(*current));
    if (share == owned) return;
    share = owned;
    log::event e{log::event_kind::share_changed, log::severity::notice};
    e.rows = owned;
    std::string names;
    for (const auto& m : members) names += (names.empty() ? "" : ", ") + m;
    e.detail = "member " + current->cluster->member + " fetches " + std::to_string(owned) + " of " +
               std::to_string(current->endpoints.size()) + " endpoint(s); members: " + names;
    emit(e);
  }

  // What members compare to see that they share the same endpoints: the
  // names (the assignment), intervals and alignment (the ticks).
  static std::string endpoints_fingerprint(const config::daemon_config& cfg) {
    std::vector<std::string> configured;
    for (const auto& ep : cfg.endpoints)
      configured.push_back(ep.name + '\t' + std::to_string(ep.interval.count()) +
                           (ep.align ? "\taligned" : ""));
    return cluster::fingerprint(configured);
  }

  void stop_poller(sched::endpoint_poller& p) {
    if (auto st = endpoint_stats.find(p.config().name); st != endpoint_stats.end())
      st->second.skipped_before += p.stats().skipped_ticks;
    p.stop();
  }

  // An endpoint another member fetches now: its poller goes on for
  // cluster::clock_allowance, then stops (its fetch in flight still
  // reaches the pool), unless the endpoint came back meanwhile.
  void retire(std::unique_ptr<sched::endpoint_poller> p, std::shared_ptr<state> self) {
    const std::string name = p->config().name;
    const auto* which = p.get();
    if (auto old = retiring.find(name); old != retiring.end()) stop_poller(*old->second);
    retiring[name] = std::move(p);
    std::weak_ptr<state> weak = self;
    auto timer = std::make_shared<asio::steady_timer>(ex, cluster::clock_allowance);
    timer->async_wait([weak, name, which, timer](boost::system::error_code) {
      auto s = weak.lock();
      if (!s) return;
      auto r = s->retiring.find(name);
      if (r == s->retiring.end() || r->second.get() != which) return;
      s->stop_poller(*r->second);
      s->retiring.erase(r);
    });
  }

  std::unique_ptr<cluster::member> make_member(const config::daemon_config& cfg,
                                               std::shared_ptr<state> self) {
    cluster::member_settings settings;
    settings.conninfo = cfg.database.conninfo;
    settings.table = cfg.database.table;
    settings.cluster = *cfg.cluster;
    settings.connect_timeout = cfg.database.connect_timeout;
    settings.statement_timeout = cfg.database.statement_timeout;
    std::weak_ptr<state> weak = self;
    auto m = std::make_unique<cluster::member>(
        ex, std::move(settings),
        [weak](const std::vector<std::string>& live) {
          auto s = weak.lock();
          if (!s) return;
          s->members = live;
          s->rebalance(s);
        },
        events);
    m->set_endpoints(endpoints_fingerprint(cfg));
    return m;
  }

  sched::poller_services services(std::shared_ptr<state> self) {
    std::weak_ptr<state> weak = self;
    return {blocking,
            [weak](fetch_record r) {
              auto s = weak.lock();
              if (!s) return;
              if (!s->dry_run) return s->accept(std::move(r), s);
              // A dry run prints what would be stored; a failure was reported.
              if (r.outcome.ok()) s->dry_run(std::move(r));
            },
            limiter.get(), events,
            [weak] {
              auto s = weak.lock();
              return !s || (!s->spool_full && !s->spool_behind);
            }};
  }
};

namespace {

using state_ptr = std::shared_ptr<collector::state>;

// Opens the configured spool (on the blocking pool); a spool that cannot be
// opened is reported, and the daemon runs on without one.
asio::awaitable<void> async_open_spool(state_ptr s, config::spool_config cfg) {
  using result = std::pair<outcome<std::uint64_t>, spool_gauges>;
  auto open = [s, cfg]() -> result {
    auto policy = cfg.when_full == config::spool_full_policy::drop_oldest
                      ? spool::full_policy::drop_oldest
                      : spool::full_policy::stop;
    auto opened = spool::directory_spool::open(cfg.directory, cfg.max_bytes, policy);
    if (!opened) return {opened.error(), spool_gauges{}};
    s->spool = std::make_unique<spool::directory_spool>(std::move(*opened));
    s->spool_unfed = s->spool->size();
    return {s->spool_unfed, spool_gauges::of(s->spool.get())};
  };
  auto got = co_await io::async_run_blocking<result>(s->blocking, open);
  s->spool_now = got.second;
  auto& opened = got.first;
  if (!opened) {
    s->spool_problem = opened.error().message;
    log::event e{log::event_kind::no_spool, log::severity::error};
    e.error = opened.error().message;
    e.detail =
        "fetches wait for the database in memory only: a kill, a crash or an outage longer "
        "than spool.memory_max_bytes holds loses them";
    s->emit(e);
    co_return;
  }
  s->spool_open = true;
  s->spool_waiting = *opened;
  if (*opened > 0) {
    // What a previous run left is committed first, ahead of any new fetch.
    log::event e{log::event_kind::results_spooled, log::severity::notice};
    e.rows = *opened;
    e.detail = std::to_string(*opened) + " spooled fetch(es) from the last run queued for commit";
    s->emit(e);
  }
  asio::co_spawn(s->ex, collector::state::async_feed(s), asio::detached);
  asio::co_spawn(s->ex, collector::state::async_guard(s), asio::detached);
}

// At shutdown: what the database did not take goes to the spool (fetches
// that came from the spool are still there). Returns how many were lost.
asio::awaitable<std::size_t> async_spool_leftovers(state_ptr s, std::deque<fetch_record> left) {
  std::vector<fetch_record> to_store;
  for (auto& r : left) {
    auto copy = s->copies.find(r.memory_id);
    const bool copied = r.memory_id != 0 && copy != s->copies.end() && copy->second.id != 0;
    if (r.spool_id == 0 && !copied) to_store.push_back(std::move(r));
  }
  for (auto& r : s->to_spool) to_store.push_back(std::move(r));
  s->to_spool.clear();
  s->spool_backlog_bytes = 0;
  if (to_store.empty()) co_return 0;
  auto result = co_await collector::state::async_store(s, std::move(to_store));
  if (result.written > 0) {
    log::event e{log::event_kind::results_spooled, log::severity::notice};
    e.rows = result.written;
    e.detail = std::to_string(result.written) +
               " fetch(es) written to the spool, to be committed at the next start";
    s->emit(e);
  }
  s->report(result, s);
  co_return result.dropped.size();
}

}  // namespace

collector::collector(asio::any_io_executor ex, asio::any_io_executor blocking,
                     log::event_sink events)
    : state_(std::make_shared<state>(ex, blocking, std::move(events))) {}

collector::~collector() {
  for (auto& [name, p] : state_->pollers) p->stop();
  state_->stopping = true;
  state_->feeder_wake.cancel();
  state_->guard_wake.cancel();
}

asio::awaitable<void> collector::async_apply(config::daemon_config cfg) {
  auto s = state_;
  if (!s->limiter)
    s->limiter = std::make_unique<sched::fetch_limiter>(s->ex, cfg.max_concurrent_fetches);
  else
    s->limiter->set_limit(cfg.max_concurrent_fetches);

  bool first = !s->pool;
  // A member whose cluster settings (or database) change leaves, handing
  // its share over, and joins again below as the new configuration says.
  if (s->member) {
    const auto& was = *s->current;
    const bool same = cfg.cluster && *cfg.cluster == *was.cluster &&
                      cfg.database.conninfo == was.database.conninfo &&
                      cfg.database.table == was.database.table;
    if (!same) {
      co_await s->member->async_leave(steady::now() + was.cluster->lease);
      s->member.reset();
      s->members.clear();
      s->share.reset();
    }
  }
  if (!s->pool || s->current->database != cfg.database ||
      s->current->cluster.has_value() != cfg.cluster.has_value()) {
    auto fresh = s->make_pool(cfg.database, cfg.cluster.has_value(), s);
    if (s->pool) {
      // The old pool stops at once; what it had not committed moves over.
      auto old = std::move(s->pool);
      auto left = co_await old->async_drain(steady::now());
      for (auto& r : left) fresh->submit(std::move(r));
    }
    s->pool = std::move(fresh);
  }

  // Each endpoint's status lives on through a reload that changes it; a
  // removed endpoint's goes with it.
  std::map<std::string, endpoint_record> stats;
  for (const auto& ep : cfg.endpoints) {
    auto& rec = stats[ep.name];
    if (auto old = s->endpoint_stats.find(ep.name); old != s->endpoint_stats.end())
      rec = std::move(old->second);
    rec.status.name = ep.name;
    rec.status.url = http::redact_url(ep.url);
    rec.status.interval = ep.interval;
  }
  s->endpoint_stats = std::move(stats);

  std::map<std::string, std::unique_ptr<sched::endpoint_poller>> kept;
  for (const auto& ep : cfg.endpoints) {
    auto found = s->pollers.find(ep.name);
    if (found != s->pollers.end() && found->second->config() == ep) {
      kept.emplace(ep.name, std::move(found->second));
      s->pollers.erase(found);
      continue;
    }
    if (found != s->pollers.end())
      s->endpoint_stats[ep.name].skipped_before += found->second->stats().skipped_ticks;
  }
  // Endpoints removed or changed: their loops end after any in-flight fetch
  // (which still reaches the pool).
  for (auto& [name, old] : s->pollers) old->stop();
  s->pollers = std::move(kept);
  s->current = std::move(cfg);
  // The pollers of the endpoints this daemon fetches: every one alone; in a
  // cluster its share, once it joined (or tried to).
  if (s->current->cluster && !s->member) {
    s->member = s->make_member(*s->current, s);
    // At most a second before the daemon is ready: past it the member acts
    // alone until a heartbeat works (the fence stores each tick once).
    co_await s->member->async_start(steady::now() +
                                    std::min(s->current->database.connect_timeout, max_join_wait));
  } else {
    s->rebalance(s);
  }
  if (first) co_await async_open_spool(s, s->current->spool);

  log::event e{log::event_kind::config_loaded, log::severity::notice};
  e.detail = std::to_string(s->pollers.size()) + " endpoint(s)";
  s->emit(e);
}

namespace {

asio::awaitable<void> fetch_once_and_count(sched::endpoint_poller* poller, steady::time_point until,
                                           std::shared_ptr<std::size_t> running,
                                           std::shared_ptr<std::size_t> failed,
                                           std::shared_ptr<asio::steady_timer> all_done) {
  bool submitted = co_await poller->async_fetch_once(until);
  if (!submitted) ++*failed;
  if (--*running == 0) all_done->cancel();
  co_return;
}

}  // namespace

asio::awaitable<bool> collector::async_run_once(config::daemon_config cfg,
                                                std::function<void(fetch_record)> dry_run) {
  auto s = state_;
  s->limiter = std::make_unique<sched::fetch_limiter>(s->ex, cfg.max_concurrent_fetches);
  s->dry_run = std::move(dry_run);
  // A dry run never connects to the database.
  if (!s->dry_run) s->pool = s->make_pool(cfg.database, cfg.cluster.has_value(), s);
  auto failed = std::make_shared<std::size_t>(0);
  auto running = std::make_shared<std::size_t>(0);
  auto all_done = std::make_shared<asio::steady_timer>(s->ex, steady::time_point::max());
  std::vector<std::unique_ptr<sched::endpoint_poller>> pollers;
  auto longest = std::chrono::milliseconds(0);
  for (const auto& ep : cfg.endpoints) {
    auto poller = s->make_poller(ep, s);
    if (!poller) {
      ++*failed;
      continue;
    }
    longest = std::max(longest, ep.timeout * (ep.retries + 1) + std::chrono::seconds(ep.retries));
    pollers.push_back(std::move(poller));
  }
  auto fetch_until = steady::now() + longest;
  *running = pollers.size();
  for (auto& p : pollers)
    asio::co_spawn(s->ex, fetch_once_and_count(p.get(), fetch_until, running, failed, all_done),
                   asio::detached);
  while (*running > 0) co_await all_done->async_wait(use_nothrow);
  if (s->dry_run) co_return *failed == 0;

  auto commit_until = steady::now() + cfg.database.connect_timeout + cfg.database.statement_timeout;
  auto left = co_await s->pool->async_drain(commit_until);
  if (!left.empty()) {
    log::event e{log::event_kind::commit_failed, log::severity::error};
    e.error = std::to_string(left.size()) + " fetch(es) could not be committed in time";
    s->emit(e);
  }
  co_return *failed == 0 && left.empty() && s->commit_failures == 0;
}

asio::awaitable<std::size_t> collector::async_stop(steady::time_point until) {
  auto s = state_;
  log::event e{log::event_kind::stopping, log::severity::notice};
  e.detail = std::to_string(s->pool ? s->pool->pending() : 0) + " fetch(es) waiting to commit";
  s->emit(e);
  if (s->member && s->current) {
    // Leaving a cluster: the share is fetched until the others took it over
    // (at most a lease); the time that takes is added to the grace.
    const auto started = steady::now();
    co_await s->member->async_leave(started + s->current->cluster->lease);
    until += steady::now() - started;
  }
  for (auto& [name, p] : s->retiring) p->stop();
  for (auto& [name, p] : s->pollers) p->stop();
  for (auto& [name, p] : s->pollers) co_await p->async_wait_stopped(until);
  std::deque<fetch_record> left;
  if (s->pool) left = co_await s->pool->async_drain(until);
  s->stopping = true;
  s->feeder_wake.cancel();
  s->guard_wake.cancel();
  s->writer_idle.expires_at(steady::time_point::max());
  while (s->writer_running) co_await s->writer_idle.async_wait(use_nothrow);
  co_return co_await async_spool_leftovers(s, std::move(left));
}

observe::daemon_status collector::observe() const {
  const auto& s = *state_;
  observe::daemon_status out;
  out.configured = s.current.has_value();
  if (s.current) {
    out.endpoints.reserve(s.current->endpoints.size());
    for (const auto& ep : s.current->endpoints) {
      auto found = s.endpoint_stats.find(ep.name);
      if (found == s.endpoint_stats.end()) continue;
      auto& e = out.endpoints.emplace_back(found->second.status);
      e.skipped_ticks = found->second.skipped_before;
      if (auto p = s.pollers.find(ep.name); p != s.pollers.end())
        e.skipped_ticks += p->second->stats().skipped_ticks;
      if (s.member && s.current->cluster) {
        e.owners = cluster::owners(ep.name, s.members, s.current->cluster->replicas);
        e.owned = std::find(e.owners.begin(), e.owners.end(), s.current->cluster->member) !=
                  e.owners.end();
      }
    }
  }
  if (s.member) {
    out.cluster = s.member->status();
    out.cluster->ticks_fenced = s.ticks_fenced;
  }
  out.fetch_duration = s.fetch_duration;
  auto& db = out.database;
  if (s.pool) {
    db.connections_open = s.pool->connected();
    db.connections_busy = s.pool->busy();
    db.waiting = s.pool->pending();
  }
  db.up = db.connections_open > 0;
  db.committed = s.committed;
  db.commit_failures = s.commit_failures;
  db.rows_committed = s.rows_committed;
  db.commit_duration = s.commit_duration;
  db.retention_deleted_rows = s.retention_deleted_rows;
  db.retention_dropped_partitions = s.retention_dropped_partitions;
  db.partitions_created = s.partitions_created;
  auto& sp = out.spool;
  const auto spool_cfg = s.current ? s.current->spool : config::spool_config{};
  sp.directory = spool_cfg.directory;
  sp.max_bytes = spool_cfg.max_bytes;
  sp.stop_fetching = spool_cfg.when_full == config::spool_full_policy::stop_fetching;
  sp.usable = s.spool_open && !s.spool_unwritable;
  sp.problem = s.spool_open              ? s.spool_problem
               : s.spool_problem.empty() ? std::string("not open yet")
                                         : s.spool_problem;
  sp.full = s.spool_full;
  sp.fetches = s.spool_now.fetches;
  sp.bytes = s.spool_now.bytes;
  sp.oldest = s.spool_now.oldest;
  sp.written = s.spool_written;
  sp.replayed = s.spool_replayed;
  sp.dropped = s.dropped_by;
  return out;
}

collector_status collector::status() const {
  collector_status st;
  st.endpoints = state_->pollers.size();
  for (const auto& [name, p] : state_->pollers)
    if (p->stats().consecutive_failures > 0) ++st.failing;
  if (state_->pool) {
    st.pending = state_->pool->pending();
    st.connections = state_->pool->connected();
  }
  st.spooled = state_->spool_waiting + state_->to_spool.size();
  st.spool_usable = state_->spool_open && !state_->spool_unwritable;
  for (const auto& [name, rec] : state_->endpoint_stats) st.skipped += rec.skipped_before;
  for (const auto& [name, p] : state_->pollers) st.skipped += p->stats().skipped_ticks;
  st.dropped = state_->dropped;
  st.committed = state_->committed;
  if (state_->member && state_->current && state_->current->cluster) {
    st.cluster = state_->current->cluster->name;
    st.members = state_->members.size();
    st.endpoints_total = state_->current->endpoints.size();
    st.lease_valid = state_->member->lease_valid();
    st.joined = state_->member->joined();
  }
  st.last_commit = state_->last_commit;
  return st;
}

}  // namespace gatherstats
