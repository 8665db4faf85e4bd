#include "descriptors.hpp"

#include "gatherstats/http/connection_budget.hpp"
#include "gatherstats/sched/descriptor_budget.hpp"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

using namespace gatherstats;

namespace gatherstatsd {
namespace {

std::uint64_t as_count(rlim_t value) {
  return value == RLIM_INFINITY ? UINT64_MAX : static_cast<std::uint64_t>(value);
}

}  // namespace

descriptor_limit raise_descriptor_limit() {
  descriptor_limit out;
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0) {
    out.refused = std::strerror(errno);
    return out;
  }
  // The event loop uses epoll: descriptor numbers past FD_SETSIZE are fine.
  if (files.rlim_cur < files.rlim_max) {
    rlimit raised = files;
    raised.rlim_cur = files.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0)
      files = raised;
    else
      out.refused = std::strerror(errno);
  }
  out.soft = as_count(files.rlim_cur);
  out.hard = as_count(files.rlim_max);
  return out;
}

void apply_descriptor_budget(config::daemon_config& cfg, boost::asio::execution_context& loop,
                             const log::event_sink& events) {
  rlimit files{};
  std::uint64_t limit = UINT64_MAX;
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0) limit = as_count(files.rlim_cur);
  const auto budget = sched::plan_descriptors(limit, sched::needs_of(cfg));
  cfg.max_concurrent_fetches = budget.concurrency;
  http::connection_budget::of(loop).set_limit(budget.fetch_sockets);
  if (!events) return;
  if (auto capped = sched::capped_message(budget); !capped.empty()) {
    log::event e{log::event_kind::warning, log::severity::warning};
    e.detail = std::move(capped);
    events(e);
  }
  if (auto closing = sched::closes_idle_message(budget); !closing.empty()) {
    log::event e{log::event_kind::warning, log::severity::notice};
    e.detail = std::move(closing);
    events(e);
  }
}

}  // namespace gatherstatsd
