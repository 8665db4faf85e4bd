#include "command_line.hpp"

#include <catch2/catch.hpp>

using namespace gatherstatsd;
using namespace std::chrono_literals;

namespace {
template <class T>
T parsed_as(std::vector<std::string> args) {
  auto r = parse_command_line(args);
  INFO(r.error);
  REQUIRE(r.parsed.has_value());
  REQUIRE(std::holds_alternative<T>(*r.parsed));
  return std::get<T>(*r.parsed);
}
std::string error_of(std::vector<std::string> args) {
  auto r = parse_command_line(args);
  REQUIRE_FALSE(r.parsed.has_value());
  return r.error;
}
}  // namespace

TEST_CASE("fetch takes a source and options in either --opt value or --opt=value form", "[cli]") {
  auto f = parsed_as<fetch_options>({"fetch", "https://x/stats", "--endpoint", "http://e/",
                                     "--database=dbname=stats", "--ca-file", "/ca.pem", "--table",
                                     "s.t", "--values", "skip", "--timeout", "5s"});
  CHECK(f.source == "https://x/stats");
  CHECK(f.endpoint == "http://e/");
  CHECK(f.database == "dbname=stats");
  CHECK(f.ca_file == "/ca.pem");
  CHECK(f.table == "s.t");
  CHECK(f.skip_bad_values);
  CHECK(f.timeout == 5s);

  auto defaults = parsed_as<fetch_options>({"fetch", "stats.json"});
  CHECK_FALSE(defaults.database.has_value());
  CHECK(defaults.table == "gatherstats_statistic");
  CHECK_FALSE(defaults.skip_bad_values);
  CHECK(defaults.timeout == 30s);
}

TEST_CASE("migrate, daemon options, help and version", "[cli]") {
  CHECK(parsed_as<migrate_options>({"migrate"}).table == "gatherstats_statistic");
  CHECK(parsed_as<migrate_options>({"migrate", "--database", "x"}).database == "x");
  auto run = parsed_as<run_options>({});
  CHECK(run.config == "/etc/gatherstats/gatherstats.yaml");
  auto check = parsed_as<run_options>({"--config", "/tmp/g.yaml", "--check"});
  CHECK(check.config == "/tmp/g.yaml");
  CHECK(check.check);
  parsed_as<show_help>({"--help"});
  parsed_as<show_version>({"--version"});
}

TEST_CASE("misuse is reported with what was wrong", "[cli]") {
  CHECK_THAT(error_of({"fetch"}), Catch::Contains("missing URL_OR_PATH"));
  CHECK_THAT(error_of({"fetch", "a", "b"}), Catch::Contains("only one URL_OR_PATH"));
  CHECK_THAT(error_of({"fetch", "a", "--bogus"}), Catch::Contains("unknown option --bogus"));
  CHECK_THAT(error_of({"fetch", "a", "--database"}), Catch::Contains("--database needs a value"));
  CHECK_THAT(error_of({"fetch", "a", "--values", "lenient"}), Catch::Contains("strict or skip"));
  CHECK_THAT(error_of({"fetch", "a", "--timeout", "soon"}), Catch::Contains("--timeout"));
  CHECK_THAT(error_of({"migrate", "extra"}), Catch::Contains("unexpected argument extra"));
  CHECK_THAT(error_of({"--check", "--once"}), Catch::Contains("cannot be combined"));
}
