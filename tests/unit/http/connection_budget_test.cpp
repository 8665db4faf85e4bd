#include "gatherstats/http/connection_budget.hpp"

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <vector>

using gatherstats::http::connection_budget;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {
// A kept-alive connection as a client holds it: its socket's slot, and its
// place among the parked ones; closing it (for room) drops both.
struct idle_connection {
  std::optional<connection_budget::slot> socket;
  std::optional<connection_budget::parking> parked;
};

void park(connection_budget& budget, idle_connection& c, steady::time_point next_use,
          std::vector<std::string>& closed, std::string name) {
  c.parked.emplace(budget.park(next_use, [&c, &closed, name] {
    closed.push_back(name);
    c.socket.reset();
  }));
}
}  // namespace

TEST_CASE("the budget of an event loop is one, and unlimited until set", "[http][descriptors]") {
  boost::asio::io_context io, other;
  auto a = connection_budget::of(io);
  a.set_limit(3);
  CHECK(connection_budget::of(io).limit() == 3);
  CHECK(connection_budget::of(other).limit() > 1'000'000);
}

TEST_CASE("sockets count until they close, and the limit refuses one more with nothing parked",
          "[http][descriptors]") {
  boost::asio::io_context io;
  auto budget = connection_budget::of(io);
  budget.set_limit(2);
  auto a = budget.try_open();
  auto b = budget.try_open();
  REQUIRE(a);
  REQUIRE(b);
  CHECK(budget.open() == 2);
  CHECK_FALSE(budget.try_open());
  a.reset();
  CHECK(budget.open() == 1);
  auto c = budget.try_open();
  CHECK(c);
  CHECK(budget.open() == 2);
  // A slot moved is counted once.
  auto moved = std::move(*c);
  c.reset();
  CHECK(budget.open() == 2);
}

TEST_CASE("a parked connection gives way: the one needed last first, then the one idle longest",
          "[http][descriptors]") {
  boost::asio::io_context io;
  auto budget = connection_budget::of(io);
  budget.set_limit(3);
  const auto t0 = steady::now();
  std::vector<std::string> closed;
  idle_connection soon, late, later_old;
  soon.socket = budget.try_open();
  late.socket = budget.try_open();
  later_old.socket = budget.try_open();
  park(budget, soon, t0 + 1s, closed, "soon");
  park(budget, later_old, t0 + 60s, closed, "later_old");
  park(budget, late, t0 + 10s, closed, "late");
  CHECK(budget.parked() == 3);

  // Full: a new socket closes the one needed last.
  auto fresh = budget.try_open();
  REQUIRE(fresh);
  CHECK(closed == std::vector<std::string>{"later_old"});
  CHECK(budget.open() == 3);
  CHECK(budget.parked() == 2);
  CHECK(budget.closed_for_room() == 1);

  // Unparked (taken back for a request): no longer closed for room.
  soon.parked.reset();
  late.parked.reset();
  CHECK(budget.parked() == 0);
  CHECK_FALSE(budget.try_open());
  CHECK(closed.size() == 1);
}

TEST_CASE("among connections needed at the same time, the one parked first gives way",
          "[http][descriptors]") {
  boost::asio::io_context io;
  auto budget = connection_budget::of(io);
  budget.set_limit(2);
  const auto next_tick = steady::now() + 5s;
  std::vector<std::string> closed;
  idle_connection first, second;
  first.socket = budget.try_open();
  second.socket = budget.try_open();
  park(budget, first, next_tick, closed, "first");
  park(budget, second, next_tick, closed, "second");
  auto fresh = budget.try_open();
  REQUIRE(fresh);
  CHECK(closed == std::vector<std::string>{"first"});
}

TEST_CASE("the system refusing a socket closes one parked connection", "[http][descriptors]") {
  boost::asio::io_context io;
  auto budget = connection_budget::of(io);
  std::vector<std::string> closed;
  idle_connection a;
  a.socket = budget.try_open();
  CHECK_FALSE(budget.close_one_parked());  // nothing parked yet
  park(budget, a, steady::time_point::max(), closed, "a");
  CHECK(budget.close_one_parked());
  CHECK(closed == std::vector<std::string>{"a"});
  CHECK(budget.open() == 0);
  CHECK_FALSE(budget.close_one_parked());
}

TEST_CASE("slots and parkings may outlive their event loop", "[http][descriptors]") {
  std::optional<connection_budget::slot> slot;
  std::optional<connection_budget::parking> parking;
  {
    boost::asio::io_context io;
    auto budget = connection_budget::of(io);
    slot = budget.try_open();
    parking.emplace(budget.park(steady::time_point::max(), [] {}));
  }
  slot.reset();
  parking.reset();
  SUCCEED("nothing freed was touched (ASan would say)");
}
