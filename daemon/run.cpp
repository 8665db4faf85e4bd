// Signals are received on the event loop (asio::signal_set), never handled
// in signal context; configuration files are read on the blocking pool.
// systemd hears about every step (notify.hpp): READY=1 as soon as the
// scheduler runs (the database may still be connecting), RELOADING=1 and
// READY=1 around a SIGHUP, STOPPING=1 when a stop begins.
#include "run.hpp"

#include "descriptors.hpp"
#include "dry_run.hpp"
#include "log_sink.hpp"
#include "notify.hpp"
#include "status_listener.hpp"

#include "gatherstats/collector.hpp"
#include "gatherstats/config/config.hpp"
#include "gatherstats/io/blocking.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <csignal>
#include <filesystem>
#include <iostream>

namespace asio = boost::asio;
using namespace gatherstats;

namespace gatherstatsd {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

dry_run_result* result_named(std::vector<dry_run_result>& results, const std::string& name) {
  for (auto& r : results)
    if (r.name == name) return &r;
  return nullptr;
}

std::string joined(const std::vector<config::config_error>& errors) {
  std::string all;
  for (const auto& e : errors) {
    if (!all.empty()) all += "; ";
    all += e.to_string();
  }
  return all;
}

asio::awaitable<void> serve(collector& c, asio::signal_set& signals, config::daemon_config cfg,
                            std::string path, asio::any_io_executor blocking,
                            log::event_sink events, service_notifier& notifier,
                            status_listener& listener, daemon_facts& facts,
                            asio::execution_context& loop) {
  auto grace = cfg.shutdown_grace;
  apply_descriptor_budget(cfg, loop, events);
  co_await c.async_apply(std::move(cfg));
  notifier.ready();
  for (;;) {
    auto [ec, signal] = co_await signals.async_wait(use_nothrow);
    if (ec) break;
    if (signal != SIGHUP) break;
    notifier.reloading();
    auto load = [&path] { return config::load_config_file(path); };
    auto loaded = co_await io::async_run_blocking<config::load_result>(blocking, load);
    facts.last_reload = now_utc();
    if (!loaded.config) {
      log::event e{log::event_kind::config_rejected, log::severity::error};
      e.error = joined(loaded.errors);
      e.detail = "the running configuration stays in force";
      facts.last_reload_ok = false;
      facts.last_reload_error = redact_secrets(e.error);
      events(e);
      // The old configuration still runs: systemd must see the reload end.
      notifier.ready();
      continue;
    }
    grace = loaded.config->shutdown_grace;
    auto metrics = loaded.config->metrics;
    apply_descriptor_budget(*loaded.config, loop, events);
    co_await c.async_apply(std::move(*loaded.config));
    facts.last_reload_ok = true;
    facts.last_reload_error.clear();
    if (auto ok = listener.apply(metrics); !ok) {
      // The rest of the new configuration runs; the listener keeps its old
      // settings, and the reload counts as failed until the next one.
      log::event e{log::event_kind::config_rejected, log::severity::error};
      e.error = "metrics: " + ok.error().message;
      e.detail = "the listener keeps its previous settings";
      facts.last_reload_ok = false;
      facts.last_reload_error = e.error;
      events(e);
    }
    notifier.ready();
  }
  notifier.stopping();
  facts.stopping = true;
  co_await c.async_stop(std::chrono::steady_clock::now() + grace);
  listener.stop();
}

}  // namespace

int run_daemon(const run_options& options) {
  auto loaded = config::load_config_file(options.config);
  if (!loaded.config) {
    for (const auto& e : loaded.errors) std::cerr << redact_secrets(e.to_string()) << "\n";
    std::cerr << "gatherstatsd: " << loaded.errors.size() << " error(s) in " << options.config
              << "\n";
    return 2;
  }
  if (options.check) {
    const auto& cfg = *loaded.config;
    std::cout << options.config << ": OK, " << cfg.endpoints.size() << " endpoint(s)";
    if (cfg.cluster)
      std::cout << ", member " << cfg.cluster->member << " of cluster " << cfg.cluster->name
                << " (replicas " << cfg.cluster->replicas << ")";
    std::cout << "\n";
    return 0;
  }

  // Each endpoint keeps its connection open between fetches: the soft
  // descriptor limit is raised to the hard one where that is allowed (not
  // under the unit, whose LimitNOFILE= sets both); what the limit allows
  // is shared out by apply_descriptor_budget() (descriptors.hpp).
  const auto files = raise_descriptor_limit();

  asio::io_context io;
  asio::thread_pool blocking(1);
  // Before anything runs, so a signal during start-up is not lost.
  asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  // Declared before the collector so that it outlives it; its timers and
  // posted refreshes only run inside io.run(), while the collector lives.
  service_notifier notifier(io.get_executor());
  auto log_events = make_sink(options.target, options.log_level);
  // --once --dry-run: each endpoint's rows or error, in the configuration's
  // order whatever order they come in. A failure is known by its event.
  auto dry = std::make_shared<std::vector<dry_run_result>>();
  if (options.dry_run)
    for (const auto& ep : loaded.config->endpoints)
      dry->push_back({ep.name, std::nullopt, "no result"});
  log::event_sink events = [log_events, &notifier, dry](const log::event& e) {
    log_events(e);
    notifier.changed();
    if (e.kind == log::event_kind::fetch_failed)
      if (auto* r = result_named(*dry, e.endpoint)) r->error = e.error;
  };
  if (!files.refused.empty() && files.soft < files.hard) {
    log::event e{log::event_kind::warning, log::severity::notice};
    e.detail = "the descriptor limit stays at " + std::to_string(files.soft) +
               " (raising it to the hard limit " + std::to_string(files.hard) +
               " was refused: " + files.refused + "); LimitNOFILE= in the unit sets it";
    events(e);
  }
  collector c(io.get_executor(), blocking.get_executor(), events);
  // After the collector, so that it goes first: its pages read the collector.
  daemon_facts facts;
  facts.started = now_utc();
  std::error_code no_path;
  facts.config_file = std::filesystem::absolute(options.config, no_path).string();
  facts.last_reload = facts.started;
  status_listener listener(io.get_executor(), blocking.get_executor(), c, facts);
  int exit_code = 0;
  auto finish = [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "gatherstatsd: error: internal: " << redact_secrets(ex.what()) << "\n";
      }
      exit_code = 70;
    }
    notifier.stop();
    // Connections still connecting or idle must not keep the loop alive.
    io.stop();
  };
  if (options.once) apply_descriptor_budget(*loaded.config, io, events);
  if (options.once && options.dry_run) {
    auto keep = [dry](fetch_record record) {
      if (auto* r = result_named(*dry, record.name)) r->record = std::move(record);
    };
    asio::co_spawn(io, c.async_run_once(std::move(*loaded.config), keep),
                   [&, dry](std::exception_ptr e, bool ok) {
                     exit_code = ok ? 0 : 1;
                     if (!e) std::cout << format_dry_run(options.format, *dry) << std::flush;
                     finish(e);
                   });
  } else if (options.once) {
    asio::co_spawn(io, c.async_run_once(std::move(*loaded.config)),
                   [&](std::exception_ptr e, bool ok) {
                     exit_code = ok ? 0 : 1;
                     finish(e);
                   });
  } else {
    // Before anything is scheduled: a listener that cannot bind stops the
    // start, with the address and the reason.
    if (auto ok = listener.apply(loaded.config->metrics); !ok) {
      std::cerr << "gatherstatsd: error: metrics.listen: " << ok.error().message << "\n";
      blocking.join();
      return 1;
    }
    notifier.start([&c] { return status_line(c.status(), std::chrono::steady_clock::now()); });
    asio::co_spawn(io,
                   serve(c, signals, std::move(*loaded.config), options.config,
                         blocking.get_executor(), events, notifier, listener, facts, io),
                   finish);
  }
  io.run();
  blocking.join();
  return exit_code;
}

}  // namespace gatherstatsd
