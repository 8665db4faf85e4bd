#include "gatherstats/pg/statistic_table.hpp"

#include <catch2/catch.hpp>

using namespace gatherstats;

TEST_CASE("table names are NAME or SCHEMA.NAME and are always quoted", "[pg][table]") {
  auto plain = pg::table_name::parse("gatherstats_statistic");
  REQUIRE(plain.has_value());
  CHECK(plain->schema().empty());
  CHECK(plain->quoted() == "\"gatherstats_statistic\"");
  CHECK(plain->display() == "gatherstats_statistic");

  auto qualified = pg::table_name::parse("stats.Statistic");
  REQUIRE(qualified.has_value());
  CHECK(qualified->quoted() == "\"stats\".\"Statistic\"");
  CHECK(qualified->display() == "stats.Statistic");

  auto odd = pg::table_name::parse("a\"b");
  REQUIRE(odd.has_value());
  CHECK(odd->quoted() == "\"a\"\"b\"");
}

TEST_CASE("malformed table names are refused with the name in the message", "[pg][table]") {
  for (const std::string& bad :
       std::vector<std::string>{"", ".x", "x.", "a.b.c", std::string(64, 't')}) {
    INFO(bad);
    auto r = pg::table_name::parse(bad);
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message, Catch::Contains("table name"));
  }
  CHECK(pg::table_name::parse(std::string(63, 't')).has_value());
}

TEST_CASE("timestamps are written in UTC with microseconds", "[pg][time]") {
  using std::chrono::microseconds;
  CHECK(pg::format_timestamp(timestamp(microseconds(0))) == "1970-01-01 00:00:00.000000+00");
  CHECK(pg::format_timestamp(timestamp(microseconds(1'795'000'000'123'456))) ==
        "2026-11-18 11:06:40.123456+00");
  CHECK(pg::format_timestamp(timestamp(microseconds(951'782'400'000'001))) ==
        "2000-02-29 00:00:00.000001+00");
}
