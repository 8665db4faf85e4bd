#include "gatherstats/sched/descriptor_budget.hpp"

#include <catch2/catch.hpp>

#include <cstdint>

using namespace gatherstats;
using namespace gatherstats::sched;

namespace {
descriptor_needs needs(std::size_t pool, std::size_t listener, std::size_t fetches,
                       std::size_t endpoints) {
  descriptor_needs n;
  n.pool_size = pool;
  n.listener_connections = listener;
  n.max_concurrent_fetches = fetches;
  n.endpoints = endpoints;
  return n;
}
}  // namespace

TEST_CASE("the reserve: the daemon's own, the pool twice, the listener's connections",
          "[sched][descriptors]") {
  auto b = plan_descriptors(1024, needs(2, 0, 64, 10));
  CHECK(b.reserved == own_descriptors + 4);
  CHECK(b.fetch_sockets == 1024 - own_descriptors - 4);
  // The listener: max_connections, its own socket and one being refused.
  auto l = plan_descriptors(1024, needs(4, 64, 64, 10));
  CHECK(l.reserved == own_descriptors + 8 + 66);
  CHECK(l.fetch_sockets == 1024 - l.reserved);
}

TEST_CASE("fetches at once are capped to the fetch sockets, and only then said",
          "[sched][descriptors]") {
  // The defaults under systemd's 1,024: nothing to cap.
  auto fits = plan_descriptors(1024, needs(2, 64, 64, 1100));
  CHECK(fits.concurrency == 64);
  CHECK_FALSE(fits.capped());
  CHECK(capped_message(fits).empty());

  auto capped = plan_descriptors(1024, needs(2, 0, 2000, 1100));
  CHECK(capped.concurrency == capped.fetch_sockets);
  CHECK(capped.concurrency == 1024 - own_descriptors - 4);
  CHECK(capped.capped());
  const auto m = capped_message(capped);
  CHECK_THAT(m, Catch::Contains("too many open files for max_concurrent_fetches 2000"));
  CHECK_THAT(m, Catch::Contains("the descriptor limit is 1024"));
  CHECK_THAT(m, Catch::Contains("at most " + std::to_string(capped.concurrency) +
                                " fetch(es) run at once"));
  CHECK_THAT(m, Catch::Contains("raise LimitNOFILE in the unit (to " +
                                std::to_string(capped.reserved + 1100) + " or more)"));
  CHECK_THAT(
      m, Catch::Contains("lower max_concurrent_fetches to " + std::to_string(capped.concurrency)));

  // max_concurrent_fetches above the endpoint count is never reached: the
  // cap changes nothing then, and nothing is said.
  auto few = plan_descriptors(100, needs(2, 0, 64, 10));
  CHECK(few.concurrency == 100 - own_descriptors - 4);
  CHECK_FALSE(few.capped());
  CHECK(capped_message(few).empty());
}

TEST_CASE("more endpoints than fetch sockets: idle connections give way, and that is said",
          "[sched][descriptors]") {
  auto b = plan_descriptors(1024, needs(2, 0, 64, 1100));
  CHECK(b.closes_idle());
  CHECK(b.limit_that_fits() == b.reserved + 1100);
  const auto m = closes_idle_message(b);
  CHECK_THAT(m, Catch::Contains("1100 endpoints and room for " + std::to_string(b.fetch_sockets) +
                                " fetch connections under the descriptor limit of 1024"));
  CHECK_THAT(m, Catch::Contains("LimitNOFILE=" + std::to_string(b.limit_that_fits())));

  auto roomy = plan_descriptors(65536, needs(2, 64, 64, 1100));
  CHECK_FALSE(roomy.closes_idle());
  CHECK(closes_idle_message(roomy).empty());
}

TEST_CASE("a limit the reserve takes whole still leaves one fetch at a time",
          "[sched][descriptors]") {
  auto b = plan_descriptors(100, needs(8, 10'000, 64, 5));
  CHECK(b.fetch_sockets == 1);
  CHECK(b.concurrency == 1);
  CHECK(b.capped());
  CHECK_THAT(capped_message(b), Catch::Contains("at most 1 fetch(es) run at once"));
}

TEST_CASE("an unlimited descriptor limit caps nothing", "[sched][descriptors]") {
  auto b = plan_descriptors(UINT64_MAX, needs(64, 10'000, 100'000, 100'000));
  CHECK(b.concurrency == 100'000);
  CHECK_FALSE(b.capped());
  CHECK_FALSE(b.closes_idle());
}

TEST_CASE("the needs come from the configuration", "[sched][descriptors]") {
  config::daemon_config cfg;
  cfg.database.pool_size = 3;
  cfg.max_concurrent_fetches = 7;
  cfg.endpoints.resize(5);
  cfg.metrics.max_connections = 20;
  auto n = needs_of(cfg);
  CHECK(n.pool_size == 3);
  CHECK(n.listener_connections == 0);  // no listener configured
  CHECK(n.max_concurrent_fetches == 7);
  CHECK(n.endpoints == 5);
  cfg.metrics.listen = "127.0.0.1:9187";
  CHECK(needs_of(cfg).listener_connections == 20);
}
