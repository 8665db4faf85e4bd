#include "gatherstats/sched/descriptor_budget.hpp"

#include <algorithm>
#include <limits>

namespace gatherstats::sched {

descriptor_needs needs_of(const config::daemon_config& cfg) {
  descriptor_needs n;
  n.pool_size = cfg.database.pool_size;
  n.listener_connections = cfg.metrics.listen.empty() ? 0 : cfg.metrics.max_connections;
  n.max_concurrent_fetches = cfg.max_concurrent_fetches;
  n.endpoints = cfg.endpoints.size();
  return n;
}

bool descriptor_budget::capped() const { return concurrency < std::min(configured, endpoints); }

descriptor_budget plan_descriptors(std::uint64_t limit, const descriptor_needs& needs) {
  descriptor_budget b;
  b.limit = limit;
  b.configured = std::max<std::size_t>(needs.max_concurrent_fetches, 1);
  b.endpoints = needs.endpoints;
  // A listener holds its own socket and, past max_connections, one more
  // for as long as it takes to refuse it.
  const std::size_t listener = needs.listener_connections == 0 ? 0 : needs.listener_connections + 2;
  b.reserved = own_descriptors + 2 * needs.pool_size + listener;
  // RLIM_INFINITY and other limits past what a size_t counts.
  const std::uint64_t most = std::numeric_limits<std::size_t>::max();
  const std::size_t usable = static_cast<std::size_t>(std::min(limit, most));
  b.fetch_sockets = usable > b.reserved ? usable - b.reserved : 1;
  b.concurrency = std::min(b.configured, b.fetch_sockets);
  return b;
}

std::string capped_message(const descriptor_budget& b) {
  if (!b.capped()) return {};
  const std::string n = std::to_string(b.concurrency);
  return "too many open files for max_concurrent_fetches " + std::to_string(b.configured) +
         ": the descriptor limit is " + std::to_string(b.limit) + ", of which " +
         std::to_string(b.reserved) +
         " are kept for the daemon, the database pool and the listener, so at most " + n +
         " fetch(es) run at once; raise LimitNOFILE in the unit (to " +
         std::to_string(b.limit_that_fits()) + " or more) or lower max_concurrent_fetches to " + n;
}

std::string closes_idle_message(const descriptor_budget& b) {
  if (!b.closes_idle()) return {};
  return std::to_string(b.endpoints) + " endpoints and room for " +
         std::to_string(b.fetch_sockets) + " fetch connections under the descriptor limit of " +
         std::to_string(b.limit) +
         ": idle keep-alive connections are closed to make room, so some fetches connect "
         "anew; LimitNOFILE=" +
         std::to_string(b.limit_that_fits()) + " or more keeps every connection open";
}

}  // namespace gatherstats::sched
