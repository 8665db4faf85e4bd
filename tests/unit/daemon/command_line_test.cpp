#include "command_line.hpp"
#include "log_sink.hpp"
#include "notify.hpp"

#include <catch2/catch.hpp>

#include <set>

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

TEST_CASE("the option --drop-redundant-indexes belongs to migrate, and only to it", "[cli]") {
  CHECK_FALSE(parsed_as<migrate_options>({"migrate"}).drop_redundant_indexes);
  auto drop = parsed_as<migrate_options>({"migrate", "--drop-redundant-indexes"});
  CHECK(drop.drop_redundant_indexes);
  CHECK(drop.table == "gatherstats_statistic");
  auto with_others = parsed_as<migrate_options>(
      {"migrate", "--database=dbname=x", "--drop-redundant-indexes", "--table", "s.t"});
  CHECK(with_others.drop_redundant_indexes);
  CHECK(with_others.database == "dbname=x");
  CHECK(with_others.table == "s.t");

  const std::string only = "--drop-redundant-indexes applies only to migrate";
  CHECK(error_of({"--drop-redundant-indexes"}) ==
        only + " (gatherstatsd migrate --drop-redundant-indexes)");
  CHECK_THAT(error_of({"--config", "g.yaml", "--once", "--drop-redundant-indexes"}),
             Catch::StartsWith(only));
  CHECK_THAT(error_of({"fetch", "x.json", "--drop-redundant-indexes"}),
             Catch::StartsWith("fetch: " + only));
  CHECK_THAT(error_of({"fetch", "--drop-redundant-indexes", "x.json"}),
             Catch::StartsWith("fetch: " + only));
  // A flag: it takes no value.
  CHECK_THAT(error_of({"migrate", "--drop-redundant-indexes=yes"}),
             Catch::Contains("unexpected argument --drop-redundant-indexes=yes"));
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

TEST_CASE("the daemon's log target and level: defaults, both option forms, and misuse", "[cli]") {
  using gatherstats::log::severity;
  auto defaults = parsed_as<run_options>({});
  CHECK(defaults.target == log_target::automatic);
  CHECK(defaults.log_level == severity::info);

  CHECK(parsed_as<run_options>({"--log-target", "journal"}).target == log_target::journal);
  CHECK(parsed_as<run_options>({"--log-target=stderr"}).target == log_target::stderr_lines);
  CHECK(parsed_as<run_options>({"--log-target", "auto"}).target == log_target::automatic);

  CHECK(parsed_as<run_options>({"--log-level", "debug"}).log_level == severity::debug);
  CHECK(parsed_as<run_options>({"--log-level=info"}).log_level == severity::info);
  CHECK(parsed_as<run_options>({"--log-level", "notice"}).log_level == severity::notice);
  CHECK(parsed_as<run_options>({"--log-level", "warning"}).log_level == severity::warning);
  CHECK(parsed_as<run_options>({"--log-level", "error"}).log_level == severity::error);

  auto all = parsed_as<run_options>(
      {"--config", "/tmp/g.yaml", "--log-target=journal", "--log-level", "notice", "--once"});
  CHECK(all.config == "/tmp/g.yaml");
  CHECK(all.target == log_target::journal);
  CHECK(all.log_level == severity::notice);
  CHECK(all.once);

  CHECK_THAT(
      error_of({"--log-target", "syslog"}),
      Catch::Contains("--log-target must be auto, stderr or journal") && Catch::Contains("syslog"));
  CHECK_THAT(error_of({"--log-level", "verbose"}),
             Catch::Contains("--log-level must be debug, info, notice, warning or error") &&
                 Catch::Contains("verbose"));
  CHECK_THAT(error_of({"--log-level"}), Catch::Contains("--log-level needs a value"));
  CHECK_THAT(error_of({"--log-target"}), Catch::Contains("--log-target needs a value"));
}

TEST_CASE("the options --dry-run and --format: fetch and --once take them, and misuse is refused",
          "[cli]") {
  auto plain = parsed_as<fetch_options>({"fetch", "x.json"});
  CHECK_FALSE(plain.dry_run);
  auto f = parsed_as<fetch_options>({"fetch", "x.json", "--dry-run"});
  CHECK(f.dry_run);
  CHECK(f.format == output_format::tsv);
  CHECK(parsed_as<fetch_options>({"fetch", "--dry-run", "x.json", "--format", "json"}).format ==
        output_format::json);
  CHECK(parsed_as<fetch_options>({"fetch", "x.json", "--format=tsv", "--dry-run"}).format ==
        output_format::tsv);
  // --database is accepted (the same command line, dry or not) and not used.
  CHECK(parsed_as<fetch_options>({"fetch", "x.json", "--dry-run", "--database", "port=1"}).dry_run);

  auto once = parsed_as<run_options>({"--config", "g.yaml", "--once", "--dry-run"});
  CHECK(once.once);
  CHECK(once.dry_run);
  CHECK(once.format == output_format::tsv);
  CHECK(parsed_as<run_options>({"--dry-run", "--format=json", "--once"}).format ==
        output_format::json);
  CHECK_FALSE(parsed_as<run_options>({"--once"}).dry_run);

  CHECK_THAT(error_of({"fetch", "x.json", "--format", "json"}),
             Catch::Contains("--format needs --dry-run"));
  CHECK_THAT(error_of({"--once", "--format", "json"}), Catch::Contains("--format needs --dry-run"));
  CHECK_THAT(error_of({"fetch", "x.json", "--dry-run", "--format", "csv"}),
             Catch::Contains("--format must be tsv or json") && Catch::Contains("csv"));
  CHECK_THAT(error_of({"--once", "--dry-run", "--format=xml"}),
             Catch::Contains("--format must be tsv or json"));
  CHECK_THAT(error_of({"fetch", "x.json", "--dry-run", "--format"}),
             Catch::Contains("--format needs a value"));
  CHECK_THAT(error_of({"--dry-run"}), Catch::Contains("--dry-run needs --once"));
  CHECK_THAT(error_of({"--config", "g.yaml", "--check", "--dry-run"}),
             Catch::Contains("--dry-run needs --once"));
  CHECK_THAT(error_of({"migrate", "--dry-run"}), Catch::Contains("does not apply to migrate"));
  CHECK_THAT(error_of({"migrate", "--format=json"}), Catch::Contains("does not apply to migrate"));
}

// The daemon's other pure pieces: what its log records and STATUS= line say.

TEST_CASE("redact_secrets hides conninfo passwords and URL credentials, and nothing else",
          "[cli][log]") {
  CHECK(redact_secrets("host=db password=hunter2 dbname=stats") ==
        "host=db password=*** dbname=stats");
  CHECK(redact_secrets("password = 'hunter 2\\' x' user=u") == "password = *** user=u");
  CHECK(redact_secrets("sslpassword=abc PASSWORD=def") == "sslpassword=*** PASSWORD=***");
  CHECK(redact_secrets("postgresql://u:hunter2@db/stats?sslmode=require") ==
        "postgresql://u:***@db/stats?sslmode=require");
  CHECK(redact_secrets("GET https://user:s3cret@host:8443/x failed; http://plain/y") ==
        "GET https://user:***@host:8443/x failed; http://plain/y");
  CHECK(redact_secrets("https://host/x?password=s3cret&a=b") == "https://host/x?password=***");
  // Usernames, ports and words that merely mention passwords stay.
  CHECK(redact_secrets("postgresql://stats@db:5432/x") == "postgresql://stats@db:5432/x");
  CHECK(redact_secrets("password authentication failed for user \"u\"") ==
        "password authentication failed for user \"u\"");
  CHECK(redact_secrets("http://localhost:8080/stats") == "http://localhost:8080/stats");
  // Secret-looking query values, wherever a URL is.
  CHECK(redact_secrets("fetch failed: https://h/x?api_key=abc&n=1: HTTP 500") ==
        "fetch failed: https://h/x?api_key=REDACTED&n=1: HTTP 500");
  CHECK(redact_secrets("https://u:pw@h/x?X-Amz-Signature=ff") ==
        "https://u:***@h/x?X-Amz-Signature=REDACTED");
}

TEST_CASE("format_event never shows a secret, and every kind has its own MESSAGE_ID",
          "[cli][log]") {
  using namespace gatherstats::log;
  event e{event_kind::database_lost, severity::error};
  e.error = "cannot connect with \"host=x password=hunter2\"";
  CHECK(format_event(e) == "error: database lost: cannot connect with \"host=x password=***");

  std::set<std::string> ids;
  for (auto k :
       {event_kind::fetch_committed, event_kind::fetch_failed,      event_kind::fetch_retrying,
        event_kind::tick_skipped,    event_kind::commit_failed,     event_kind::database_lost,
        event_kind::database_back,   event_kind::config_loaded,     event_kind::config_rejected,
        event_kind::warning,         event_kind::stopping,          event_kind::results_spooled,
        event_kind::results_dropped, event_kind::fetch_log_pruned,  event_kind::no_spool,
        event_kind::rows_removed,    event_kind::partition_created, event_kind::partition_dropped,
        event_kind::member_joined,   event_kind::member_left,       event_kind::share_changed,
        event_kind::lease_lost,      event_kind::lease_renewed,     event_kind::tick_fenced}) {
    std::string id = message_id(k);
    CHECK(id.size() == 32);
    CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    ids.insert(id);
  }
  CHECK(ids.size() == 24);
}

TEST_CASE("the STATUS= line", "[cli][notify]") {
  gatherstats::collector_status s;
  auto now = std::chrono::steady_clock::now();
  s.endpoints = 3;
  s.failing = 1;
  s.connections = 2;
  CHECK(status_line(s, now) ==
        "3 endpoints, 1 failing, no commit yet, 0 waiting, 0 spooled, 2 db connections");
  s.endpoints = 1;
  s.pending = 4;
  s.connections = 1;
  s.committed = 7;
  s.last_commit = now - 2500ms;
  s.spooled = 3;
  s.dropped = 7;
  CHECK(status_line(s, now) ==
        "1 endpoint, 1 failing, last commit 2s ago, 4 waiting, 3 spooled, 1 db connection, 7 "
        "dropped");
  s.skipped = 5;
  s.spool_usable = false;
  CHECK(status_line(s, now) ==
        "1 endpoint, 1 failing, last commit 2s ago, 4 waiting, 3 spooled, 1 db connection, 7 "
        "dropped, 5 ticks skipped, NO SPOOL");
}

TEST_CASE("the STATUS= line in a cluster", "[cli][notify]") {
  gatherstats::collector_status s;
  auto now = std::chrono::steady_clock::now();
  s.cluster = "web";
  s.members = 3;
  s.endpoints = 10;  // this member's share
  s.endpoints_total = 30;
  s.lease_valid = true;
  s.joined = true;
  s.failing = 1;
  s.connections = 2;
  CHECK(status_line(s, now) ==
        "cluster web: 3 members, fetching 10 of 30 endpoints, 1 failing, no commit yet, 0 "
        "waiting, 0 spooled, 2 db connections");
  s.members = 1;
  s.endpoints = 1;
  s.endpoints_total = 1;
  s.lease_valid = false;
  s.spool_usable = false;
  CHECK(status_line(s, now) ==
        "cluster web: 1 member, fetching 1 of 1 endpoint, 1 failing, no commit yet, 0 waiting, 0 "
        "spooled, 2 db connections, NO SPOOL, lease lapsed");
  // Never joined (the database was away at start): not a lapse.
  s.joined = false;
  CHECK(status_line(s, now) ==
        "cluster web: 1 member, fetching 1 of 1 endpoint, 1 failing, no commit yet, 0 waiting, 0 "
        "spooled, 2 db connections, NO SPOOL, not joined");
  // Alone, the lease says nothing.
  s.cluster.clear();
  CHECK(status_line(s, now) ==
        "1 endpoint, 1 failing, no commit yet, 0 waiting, 0 spooled, 2 db connections, NO SPOOL");
}

TEST_CASE("migrate --partitioned takes an interval of whole seconds, 1d by default", "[cli]") {
  auto plain = parsed_as<migrate_options>({"migrate"});
  CHECK_FALSE(plain.partitioned);
  auto daily = parsed_as<migrate_options>({"migrate", "--partitioned"});
  CHECK(daily.partitioned);
  CHECK(daily.partition_interval == std::chrono::hours(24));
  auto hourly =
      parsed_as<migrate_options>({"migrate", "--partitioned", "--partition-interval", "1h"});
  CHECK(hourly.partition_interval == std::chrono::hours(1));
  auto weekly = parsed_as<migrate_options>({"migrate", "--partition-interval=7d", "--partitioned"});
  CHECK(weekly.partition_interval == std::chrono::hours(24 * 7));

  CHECK(error_of({"migrate", "--partition-interval", "1d"}) ==
        "migrate: --partition-interval needs --partitioned");
  const std::string bad = "is not a duration of whole seconds from 1s to 366d, like 1h, 1d, 7d";
  for (std::string v : {"soon", "500ms", "1500ms", "0s", "400d"})
    CHECK(error_of({"migrate", "--partitioned", "--partition-interval", v}) ==
          "migrate: --partition-interval \"" + v + "\" " + bad);
  CHECK(error_of({"migrate", "--partitioned", "--partition-interval"}) ==
        "--partition-interval needs a value");
}
