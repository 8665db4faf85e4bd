#include "notify.hpp"

#include <boost/asio/post.hpp>

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <ctime>

namespace asio = boost::asio;

namespace gatherstatsd {
namespace {

// Often enough that "last commit" stays roughly right in `systemctl status`,
// rarely enough to cost nothing.
constexpr auto status_period = std::chrono::seconds(2);

std::string count(std::size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace

std::string status_line(const gatherstats::collector_status& s,
                        std::chrono::steady_clock::time_point now) {
  std::string line;
  if (s.cluster.empty()) {
    line = count(s.endpoints, "endpoint", "endpoints");
  } else {
    // `endpoints` is this member's share then.
    line = "cluster " + s.cluster + ": " + count(s.members, "member", "members") + ", fetching " +
           std::to_string(s.endpoints) + " of " + count(s.endpoints_total, "endpoint", "endpoints");
  }
  line += ", " + std::to_string(s.failing) + " failing, ";
  if (s.committed == 0 || s.last_commit == std::chrono::steady_clock::time_point{}) {
    line += "no commit yet";
  } else {
    auto age = std::chrono::duration_cast<std::chrono::seconds>(now - s.last_commit).count();
    line += "last commit " + std::to_string(age < 0 ? 0 : age) + "s ago";
  }
  line += ", " + std::to_string(s.pending) + " waiting, ";
  line += std::to_string(s.spooled) + " spooled, ";
  line += count(s.connections, "db connection", "db connections");
  if (s.dropped > 0) line += ", " + std::to_string(s.dropped) + " dropped";
  if (s.skipped > 0) line += ", " + std::to_string(s.skipped) + " ticks skipped";
  if (!s.spool_usable) line += ", NO SPOOL";
  // The other members fetch this one's share meanwhile; it goes on
  // fetching its own into the spool.
  if (!s.cluster.empty() && !s.lease_valid) line += s.joined ? ", lease lapsed" : ", not joined";
  return line;
}

service_notifier::service_notifier(asio::any_io_executor ex)
    : enabled_(std::getenv("NOTIFY_SOCKET") != nullptr),
      ex_(ex),
      watchdog_(ex),
      status_timer_(ex) {}

void service_notifier::start(std::function<std::string()> status) {
  status_ = std::move(status);
  if (!enabled_) return;
  running_ = true;
  std::uint64_t usec = 0;
  // > 0 only when WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is us).
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdog_interval_ = std::chrono::microseconds(usec / 2);
    send("WATCHDOG=1");
    arm_watchdog();
  }
  arm_status();
}

void service_notifier::stop() {
  running_ = false;
  watchdog_.cancel();
  status_timer_.cancel();
}

void service_notifier::ready() {
  if (!enabled_) return;
  std::string message = "READY=1";
  if (status_) {
    last_status_ = status_();
    message += "\nSTATUS=" + last_status_;
  }
  send(message);
}

void service_notifier::reloading() {
  if (!enabled_) return;
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  auto usec = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000u +
              static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) +
       "\nSTATUS=reloading the configuration");
  last_status_.clear();
}

void service_notifier::stopping() {
  if (!enabled_) return;
  send("STOPPING=1\nSTATUS=stopping");
  last_status_.clear();
}

void service_notifier::changed() {
  if (!running_ || refresh_posted_) return;
  refresh_posted_ = true;
  asio::post(ex_, [this] {
    refresh_posted_ = false;
    if (running_) refresh_status();
  });
}

void service_notifier::send(const std::string& message) {
  // Errors are ignored on purpose (see the header).
  [[maybe_unused]] int r = sd_notify(0, message.c_str());
}

void service_notifier::refresh_status() {
  if (!status_) return;
  auto line = status_();
  if (line == last_status_) return;
  last_status_ = line;
  send("STATUS=" + line);
}

void service_notifier::arm_watchdog() {
  watchdog_.expires_after(watchdog_interval_);
  watchdog_.async_wait([this](boost::system::error_code ec) {
    if (ec || !running_) return;
    send("WATCHDOG=1");
    arm_watchdog();
  });
}

void service_notifier::arm_status() {
  status_timer_.expires_after(status_period);
  status_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || !running_) return;
    refresh_status();
    arm_status();
  });
}

}  // namespace gatherstatsd
