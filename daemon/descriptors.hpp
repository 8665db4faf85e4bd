// The daemon's file descriptors: the limit raised where it may be, and the
// budget (sched/descriptor_budget.hpp) applied to each configuration before
// the collector gets it: fetches at once capped to the fetch sockets, and
// the event loop's connection budget (http/connection_budget.hpp) set to
// them. Said in the log when it matters: the limit could not be raised, a
// cap, idle connections that will be closed to make room.
#pragma once

#include "gatherstats/config/config.hpp"
#include "gatherstats/log/event.hpp"

#include <cstdint>
#include <string>

namespace boost::asio {
class execution_context;
}

namespace gatherstatsd {

struct descriptor_limit {
  std::uint64_t soft = 0;  // after the attempt to raise it
  std::uint64_t hard = 0;
  std::string refused;  // why raising it failed (EPERM under the unit's filter); empty if not
};

// Raises the soft RLIMIT_NOFILE to the hard one. Under the unit both are
// its LimitNOFILE=, so there is nothing to raise; under a unit without it
// (soft 1,024, hard higher) `SystemCallFilter=~@resources` refuses it.
descriptor_limit raise_descriptor_limit();

// The budget under the current soft limit (read again: `prlimit --pid`
// may have raised it since the start) for `cfg`; caps
// cfg.max_concurrent_fetches and sets the connection budget of `loop`.
// Says in `events` what it capped and why (a warning), and when idle
// connections will be closed to make room (a notice).
void apply_descriptor_budget(gatherstats::config::daemon_config& cfg,
                             boost::asio::execution_context& loop,
                             const gatherstats::log::event_sink& events);

}  // namespace gatherstatsd
