// The host list of a conninfo split into attempts, without sockets or DNS.
#include "gatherstats/pg/connect_plan.hpp"

#include <catch2/catch.hpp>

#include <map>

using namespace gatherstats;
using namespace std::chrono_literals;

namespace {

// An environment with only `vars` set.
pg::environment env_of(std::map<std::string, std::string> vars = {}) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

// The value of `key` in an attempt, or "(unset)".
std::string value(const pg::host_attempt& a, const std::string& key) {
  std::string found = "(unset)";
  int seen = 0;
  for (const auto& [k, v] : a.params) {
    if (k != key) continue;
    found = v;
    ++seen;
  }
  REQUIRE(seen <= 1);  // each keyword at most once
  return found;
}

pg::connect_plan plan(const std::string& conninfo, const pg::environment& env = env_of()) {
  auto p = pg::plan_connect(conninfo, env);
  INFO(conninfo);
  REQUIRE(p.has_value());
  return std::move(*p);
}

}  // namespace

TEST_CASE("each host of a list is an attempt of its own, with its own port", "[pg][connect]") {
  auto p = plan(
      "host=no-such-host.invalid,127.0.0.1,db2.example port=5432,5433,5434 dbname=stats"
      " user=gs target_session_attrs=read-write");
  REQUIRE(p.attempts.size() == 3);
  CHECK(value(p.attempts[0], "host") == "no-such-host.invalid");
  CHECK(value(p.attempts[0], "port") == "5432");
  CHECK(p.attempts[0].lookup == "no-such-host.invalid");
  CHECK(value(p.attempts[1], "host") == "127.0.0.1");
  CHECK(value(p.attempts[1], "port") == "5433");
  CHECK(p.attempts[1].lookup.empty());  // an address: nothing to resolve
  CHECK(value(p.attempts[2], "host") == "db2.example");
  CHECK(value(p.attempts[2], "port") == "5434");
  CHECK(p.attempts[2].lookup == "db2.example");
  for (const auto& a : p.attempts) {
    CHECK(value(a, "dbname") == "stats");
    CHECK(value(a, "user") == "gs");
    CHECK(value(a, "target_session_attrs") == "read-write");
    CHECK(value(a, "hostaddr") == "(unset)");
  }
  CHECK(p.attempts[0].shown == "host \"no-such-host.invalid\" port 5432");
  CHECK(p.attempts[1].shown == "host \"127.0.0.1\" port 5433");
}

TEST_CASE("one port serves every host, and no port leaves libpq's default", "[pg][connect]") {
  auto one = plan("host=a.example,b.example port=6432");
  REQUIRE(one.attempts.size() == 2);
  CHECK(value(one.attempts[0], "port") == "6432");
  CHECK(value(one.attempts[1], "port") == "6432");
  auto none = plan("host=a.example,b.example");
  CHECK(value(none.attempts[1], "port") == "(unset)");
  CHECK(none.attempts[1].shown == "host \"b.example\"");
}

TEST_CASE("a URI with several hosts is split like a keyword string", "[pg][connect]") {
  auto p =
      plan("postgresql://gs:secret@db1.example:5432,[::1]:5433/stats?target_session_attrs=any");
  REQUIRE(p.attempts.size() == 2);
  CHECK(value(p.attempts[0], "host") == "db1.example");
  CHECK(value(p.attempts[0], "port") == "5432");
  CHECK(value(p.attempts[1], "host") == "::1");
  CHECK(value(p.attempts[1], "port") == "5433");
  CHECK(p.attempts[1].lookup.empty());
  CHECK(value(p.attempts[1], "dbname") == "stats");
  CHECK(value(p.attempts[1], "password") == "secret");  // given to libpq...
  for (const auto& a : p.attempts) {
    CHECK(value(a, "target_session_attrs") == "any");
    CHECK(a.shown.find("secret") == std::string::npos);  // ...never shown
  }
}

TEST_CASE("socket directories and hostaddr need no lookup", "[pg][connect]") {
  auto sockets = plan("host=/run/postgresql,@abstract port=5432");
  REQUIRE(sockets.attempts.size() == 2);
  CHECK(sockets.attempts[0].lookup.empty());
  CHECK(sockets.attempts[1].lookup.empty());
  CHECK(value(sockets.attempts[0], "host") == "/run/postgresql");

  auto paired = plan("host=db1.example,db2.example hostaddr=10.0.0.1,10.0.0.2");
  REQUIRE(paired.attempts.size() == 2);
  CHECK(paired.attempts[1].lookup.empty());  // libpq uses the address, the name for TLS
  CHECK(value(paired.attempts[1], "host") == "db2.example");
  CHECK(value(paired.attempts[1], "hostaddr") == "10.0.0.2");
  CHECK(paired.attempts[1].shown == "host \"db2.example\" (hostaddr 10.0.0.2)");

  auto bare = plan("hostaddr=10.0.0.1,10.0.0.2 port=1,2");
  REQUIRE(bare.attempts.size() == 2);
  CHECK(value(bare.attempts[0], "host") == "(unset)");
  CHECK(bare.attempts[0].shown == "hostaddr \"10.0.0.1\" port 1");
}

TEST_CASE("an empty conninfo is one attempt with libpq's defaults, unless PGHOST lists hosts",
          "[pg][connect]") {
  auto plain = plan("");
  REQUIRE(plain.attempts.size() == 1);
  CHECK(value(plain.attempts[0], "host") == "(unset)");
  CHECK(plain.attempts[0].shown == "the default host");

  auto from_env = plan("dbname=stats", env_of({{"PGHOST", "a.example,b.example"},
                                               {"PGPORT", "1,2"},
                                               {"PGTARGETSESSIONATTRS", "primary"},
                                               {"PGCONNECT_TIMEOUT", "7"}}));
  REQUIRE(from_env.attempts.size() == 2);
  CHECK(value(from_env.attempts[1], "host") == "b.example");
  CHECK(value(from_env.attempts[1], "port") == "2");
  CHECK(value(from_env.attempts[1], "target_session_attrs") == "primary");
  CHECK(from_env.per_host_timeout == 7s);
  // The conninfo wins over the environment.
  auto mine = plan("host=c.example", env_of({{"PGHOST", "a.example,b.example"}}));
  REQUIRE(mine.attempts.size() == 1);
  CHECK(value(mine.attempts[0], "host") == "c.example");
}

TEST_CASE("target_session_attrs: read-write unless set, and prefer-standby is two passes",
          "[pg][connect]") {
  CHECK(value(plan("host=a").attempts[0], "target_session_attrs") == "read-write");
  CHECK(value(plan("host=a target_session_attrs=any").attempts[0], "target_session_attrs") ==
        "any");
  auto p = plan("host=a,b target_session_attrs=prefer-standby");
  REQUIRE(p.attempts.size() == 4);
  CHECK(value(p.attempts[0], "target_session_attrs") == "standby");
  CHECK(value(p.attempts[1], "target_session_attrs") == "standby");
  CHECK(value(p.attempts[2], "target_session_attrs") == "any");
  CHECK(value(p.attempts[3], "target_session_attrs") == "any");
  CHECK(value(p.attempts[3], "host") == "b");
  CHECK(p.attempts[0].shown == "host \"a\" (as standby)");
}

TEST_CASE("keepalives and a TCP user timeout by default, the conninfo's own where it sets them",
          "[pg][connect]") {
  auto defaults = plan("host=a");
  CHECK(value(defaults.attempts[0], "keepalives") == "1");
  CHECK(value(defaults.attempts[0], "keepalives_idle") == "5");
  CHECK(value(defaults.attempts[0], "keepalives_interval") == "2");
  CHECK(value(defaults.attempts[0], "keepalives_count") == "3");
  CHECK(value(defaults.attempts[0], "tcp_user_timeout") == "10000");
  CHECK(value(defaults.attempts[0], "client_encoding") == "UTF8");
  auto own = plan("host=a keepalives_idle=60 tcp_user_timeout=0 client_encoding=LATIN1");
  CHECK(value(own.attempts[0], "keepalives_idle") == "60");
  CHECK(value(own.attempts[0], "tcp_user_timeout") == "0");
  CHECK(value(own.attempts[0], "keepalives_count") == "3");
  CHECK(value(own.attempts[0], "client_encoding") == "LATIN1");
  auto env_encoding = plan("host=a", env_of({{"PGCLIENTENCODING", "LATIN1"}}));
  CHECK(value(env_encoding.attempts[0], "client_encoding") == "(unset)");  // libpq reads it
}

TEST_CASE("connect_timeout is per host, as libpq reads it", "[pg][connect]") {
  CHECK(plan("host=a connect_timeout=5").per_host_timeout == 5s);
  CHECK(plan("host=a connect_timeout=1").per_host_timeout == 2s);  // libpq's minimum
  CHECK_FALSE(plan("host=a connect_timeout=0").per_host_timeout.has_value());
  CHECK_FALSE(plan("host=a connect_timeout=-3").per_host_timeout.has_value());
  CHECK_FALSE(plan("host=a").per_host_timeout.has_value());
  auto bad = pg::plan_connect("host=a connect_timeout=soon", env_of());
  REQUIRE_FALSE(bad.has_value());
  CHECK_FALSE(bad.error().is_transient());
  CHECK_THAT(bad.error().message, Catch::Contains("connect_timeout \"soon\""));
}

TEST_CASE("lists that do not pair and malformed strings are permanent failures", "[pg][connect]") {
  for (std::string bad : {"host=a,b,c port=1,2", "host=a,b hostaddr=10.0.0.1",
                          "this is not a conninfo", "postgresql://[::1"}) {
    INFO(bad);
    auto p = pg::plan_connect(bad, env_of());
    REQUIRE_FALSE(p.has_value());
    CHECK_FALSE(p.error().is_transient());
    CHECK_THAT(p.error().message, Catch::Contains("invalid database connection string"));
  }
  auto ports = pg::plan_connect("host=a,b,c port=1,2", env_of());
  CHECK_THAT(ports.error().message, Catch::Contains("could not match 2 port numbers to 3 hosts"));
  auto pw = pg::plan_connect("host=a,b port=1,2,3 password=hunter2", env_of());
  REQUIRE_FALSE(pw.has_value());
  CHECK(pw.error().message.find("hunter2") == std::string::npos);
}

TEST_CASE("each attempt gets connect_timeout, or a share of what is left of the deadline",
          "[pg][connect]") {
  const auto now = std::chrono::steady_clock::time_point{} + 1000h;
  // Per host: from now, but never past the overall deadline.
  CHECK(pg::attempt_deadline(now, now + 30s, 3, 5s) == now + 5s);
  CHECK(pg::attempt_deadline(now, now + 3s, 3, 5s) == now + 3s);
  // Shared: 12 s over three attempts is 4 s each...
  CHECK(pg::attempt_deadline(now, now + 12s, 3, std::nullopt) == now + 4s);
  CHECK(pg::attempt_deadline(now, now + 12s, 1, std::nullopt) == now + 12s);
  // ...but at least 2 s, within the deadline.
  CHECK(pg::attempt_deadline(now, now + 3s, 3, std::nullopt) == now + 2s);
  CHECK(pg::attempt_deadline(now, now + 1s, 3, std::nullopt) == now + 1s);
  // Past the deadline: nothing left.
  CHECK(pg::attempt_deadline(now, now - 1s, 3, std::nullopt) == now - 1s);
  CHECK(pg::attempt_deadline(now, now + 12s, 0, std::nullopt) == now + 12s);
}
