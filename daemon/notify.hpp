// The systemd service manager's side channel (sd_notify): READY=1 once the
// scheduler runs, RELOADING=1/READY=1 around a reload, STOPPING=1 at
// shutdown, a STATUS= line kept current, and WATCHDOG=1 pings.
//
// The watchdog pings come from a timer on the daemon's own event loop, at
// half of WATCHDOG_USEC: if the loop is stuck, the pings stop and systemd
// restarts the service. The STATUS= line is refreshed every few seconds and
// soon after any event, and sent only when its text changed.
//
// Without NOTIFY_SOCKET in the environment every call is a no-op and no
// timer runs. Errors sending a notification are ignored: the daemon's work
// does not depend on systemd listening.
//
// Threading: everything runs on the io_context's single thread.
#pragma once

#include "gatherstats/collector.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace gatherstatsd {

// "3 endpoints, 1 failing, last commit 2s ago, 0 waiting, 2 db connections"
// ("no commit yet" before the first one). In a cluster the endpoints part
// is "cluster web: 3 members, fetching 10 of 30 endpoints", and the line
// ends in ", lease lapsed" while this member's lease is not valid.
std::string status_line(const gatherstats::collector_status& s,
                        std::chrono::steady_clock::time_point now);

class service_notifier {
 public:
  explicit service_notifier(boost::asio::any_io_executor ex);
  service_notifier(const service_notifier&) = delete;
  service_notifier& operator=(const service_notifier&) = delete;

  // Whether a service manager listens (NOTIFY_SOCKET is set).
  bool enabled() const { return enabled_; }

  // Starts the watchdog pings (if WATCHDOG_USEC asks for them) and the
  // periodic STATUS= refresh; `status` gives the current summary line.
  void start(std::function<std::string()> status);
  // Cancels the timers; nothing is sent afterwards except by the calls below.
  void stop();

  void ready();      // READY=1 with the current STATUS=
  void reloading();  // RELOADING=1, MONOTONIC_USEC=<now>
  void stopping();   // STOPPING=1

  // Something changed: the STATUS= line is refreshed soon, on the loop (never
  // from inside the caller, which may be in the middle of the collector).
  void changed();

 private:
  void send(const std::string& message);
  void refresh_status();
  void arm_watchdog();
  void arm_status();

  bool enabled_;
  bool running_ = false;
  bool refresh_posted_ = false;
  boost::asio::any_io_executor ex_;
  boost::asio::steady_timer watchdog_;
  boost::asio::steady_timer status_timer_;
  std::chrono::microseconds watchdog_interval_{0};
  std::function<std::string()> status_;
  std::string last_status_;
};

}  // namespace gatherstatsd
