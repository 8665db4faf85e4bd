// Tests that run twice: straight to the cluster, and through the PgBouncer
// fixture in transaction pooling (tests/support/pgbouncer-pool), where
// consecutive transactions may run on different server connections, so
// nothing may rely on state kept on the server between them.
#pragma once

#include "support/test_env.hpp"

#include <string>

namespace test {

// Where a test's code under test connects. The test's own checks
// (db.query, db.exec) always go straight to the cluster.
struct route {
  bool pgbouncer = false;
  std::string operator()(const scratch_database& db) const {
    return pgbouncer ? through_pgbouncer(db) : db.conninfo();
  }
};

}  // namespace test

// A test case twice: as it is, and through PgBouncer (tagged [pgbouncer],
// for which ctest starts the PgBouncer fixture). The body gets `via`, the
// route: `via(db)` is the conninfo of `db` along it.
#define ROUTED_TEST_CASE(fn, name, tags)                                               \
  static void fn(const test::route& via);                                              \
  TEST_CASE(name, tags) { fn(test::route{false}); }                                    \
  TEST_CASE(name ", through PgBouncer", tags "[pgbouncer]") { fn(test::route{true}); } \
  static void fn(const test::route& via)
