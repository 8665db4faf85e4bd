// --dry-run, as an operator runs it: the real gatherstatsd against the test
// server, checked against what a real commit of the same document stores,
// and against a database that must not even be contacted.
#include "support/daemon.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <regex>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

const std::string data_dir = test::source_dir() + "/tests/data";

// Numbers at the edges of PostgreSQL's fixed and exponent forms, booleans,
// a numeric string, and keys that need COPY's escapes.
const std::string edge_document = R"({
  "small": 0.0001, "smaller": 0.00001, "tiny": 1.5e-7, "big": 1e15, "below_big": 123456789012345,
  "bigger": 1234567890123456789, "third": 0.30000000000000004, "neg": -2.5e-300,
  "max": 1.7976931348623157e308, "int": 1234, "half": 0.5, "t": true, "f": false, "s": " 42 ",
  "negzero": -0.0,
  "nested": {"a\tb": 1, "line\nbreak": 2, "back\\slash": 3, "cr\rx": 4}
})";

using row = std::vector<std::string>;  // endpoint, key, value (as text)

test::run_result gatherstatsd(std::vector<std::string> args,
                              const std::vector<std::string>& env = {}) {
  args.insert(args.begin(), test::daemon_bin());
  return test::run(args, std::chrono::seconds(60), env);
}

std::string copy_unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    out += c == 't'   ? '\t'
           : c == 'n' ? '\n'
           : c == 'r' ? '\r'
           : c == 'b' ? '\b'
           : c == 'f' ? '\f'
           : c == 'v' ? '\v'
                      : c;
  }
  return out;
}

struct tsv {
  std::vector<row> rows;             // sorted
  std::vector<std::string> fetched;  // each row's fetched_at
};

// Parses --dry-run's TSV; fails the test if a line is not header-shaped.
tsv parse_tsv(const std::string& text) {
  tsv out;
  std::size_t start = 0;
  bool header = true;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    REQUIRE(end != std::string::npos);
    std::string line = text.substr(start, end - start);
    start = end + 1;
    std::vector<std::string> fields;
    std::size_t from = 0;
    for (;;) {
      auto tab = line.find('\t', from);
      fields.push_back(line.substr(from, tab - from));
      if (tab == std::string::npos) break;
      from = tab + 1;
    }
    INFO(line);
    REQUIRE(fields.size() == 4);
    if (header) {
      CHECK(fields == row{"endpoint", "key", "numeric_value", "fetched_at"});
      header = false;
      continue;
    }
    out.rows.push_back({copy_unescape(fields[0]), copy_unescape(fields[1]), fields[2]});
    out.fetched.push_back(fields[3]);
  }
  CHECK_FALSE(header);
  std::sort(out.rows.begin(), out.rows.end());
  return out;
}

std::vector<row> committed_rows(const test::scratch_database& db) {
  auto rows = db.query("SELECT endpoint, key, numeric_value::text FROM gatherstats_statistic");
  std::sort(rows.begin(), rows.end());
  return rows;
}

bool iso8601_utc_micros(const std::string& s) {
  static const std::regex form(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)");
  return std::regex_match(s, form);
}

using test::silent_listener;

}  // namespace

TEST_CASE("fetch --dry-run prints exactly the rows a real fetch commits, and commits nothing",
          "[dry-run][fetch]") {
  test::scratch_database db;
  db.migrate();
  test::temp_dir files;
  files.write("edge.json", edge_document);
  test::test_server server("", files.path().string());
  const std::string url = server.url("/files/edge.json");

  auto dry = gatherstatsd({"fetch", url, "--dry-run", "--database", db.conninfo()});
  INFO(dry.err);
  REQUIRE(dry.exit_code == 0);
  CHECK(dry.err.empty());
  CHECK(db.count() == 0);

  auto real = gatherstatsd({"fetch", url, "--database", db.conninfo()});
  INFO(real.err);
  REQUIRE(real.exit_code == 0);
  auto committed = committed_rows(db);
  REQUIRE(committed.size() == 19);

  auto printed = parse_tsv(dry.out);
  CHECK(printed.rows == committed);
  // One fetched_at for the whole fetch, in the documented form.
  REQUIRE(!printed.fetched.empty());
  CHECK(iso8601_utc_micros(printed.fetched[0]));
  CHECK(std::all_of(printed.fetched.begin(), printed.fetched.end(),
                    [&](const std::string& t) { return t == printed.fetched[0]; }));
  // Escaped, so each row is one line: the header and 19 rows.
  CHECK(std::count(dry.out.begin(), dry.out.end(), '\n') == 20);
  CHECK_THAT(dry.out, Catch::Contains("nested.a\\tb\t1\t"));
  CHECK_THAT(dry.out, Catch::Contains("nested.line\\nbreak\t2\t"));
  CHECK_THAT(dry.out, Catch::Contains("nested.back\\\\slash\t3\t"));
}

TEST_CASE("fetch --dry-run never contacts the database and honours --endpoint and --values",
          "[dry-run][fetch]") {
  silent_listener database;
  const std::string path = data_dir + "/bad_value.json";
  auto r = gatherstatsd({"fetch", path, "--dry-run", "--values", "skip", "--endpoint",
                         "http://e.invalid/x", "--database", database.conninfo()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto printed = parse_tsv(r.out);
  CHECK(printed.rows == std::vector<row>{{"http://e.invalid/x", "bar.buzz", "70"},
                                         {"http://e.invalid/x", "foo", "45"}});
  CHECK_FALSE(database.contacted());

  // A closed port: a real fetch fails there, a dry run does not care.
  auto closed = gatherstatsd({"fetch", data_dir + "/asset_counts.json", "--dry-run", "--database",
                              "host=127.0.0.1 port=1 dbname=none"});
  CHECK(closed.exit_code == 0);
  CHECK(parse_tsv(closed.out).rows.size() == 6);

  SECTION("json") {
    auto j = gatherstatsd({"fetch", data_dir + "/asset_counts.json", "--dry-run", "--format",
                           "json", "--database", database.conninfo()});
    INFO(j.err);
    REQUIRE(j.exit_code == 0);
    auto doc = boost::json::parse(j.out).as_object();
    CHECK(doc.at("failed").to_number<int>() == 0);
    auto& fetches = doc.at("fetches").as_array();
    REQUIRE(fetches.size() == 1);
    CHECK(fetches[0].at("endpoint").as_string() == "file://" + data_dir + "/asset_counts.json");
    CHECK(iso8601_utc_micros(std::string(fetches[0].at("fetched_at").as_string())));
    auto& rows = fetches[0].at("rows").as_array();
    REQUIRE(rows.size() == 6);
    CHECK(rows[0].at("key").as_string() == "asset_counts.all.total");
    CHECK(rows[0].at("value").to_number<double>() == 1234);
    CHECK_FALSE(database.contacted());
  }
  SECTION("a failure: one line on stderr, exit 1, nothing on stdout") {
    auto f = gatherstatsd(
        {"fetch", data_dir + "/bad_value.json", "--dry-run", "--database", database.conninfo()});
    CHECK(f.exit_code == 1);
    CHECK(f.out.empty());
    CHECK_THAT(f.err, Catch::StartsWith("gatherstatsd: error: ") && Catch::Contains("bar.bang"));
    CHECK_FALSE(database.contacted());
  }
}

TEST_CASE("dry run: --once --dry-run prints every endpoint's rows as --once would commit them",
          "[dry-run][once]") {
  test::scratch_database db;
  db.migrate();
  test::temp_dir files;
  files.write("edge.json", edge_document);
  files.write("asset_counts.json", test::read_text_file(data_dir + "/asset_counts.json"));
  test::test_server server("", files.path().string());
  const std::string endpoints =
      "endpoints:\n"
      "  - {name: edge, url: \"" +
      server.url("/files/edge.json") +
      "\", interval: 1h}\n"
      "  - {name: assets, url: \"" +
      server.url("/files/asset_counts.json") +
      "\", record_as: \"http://assets.invalid/stats\", interval: 1h}\n";
  test::temp_dir dir;
  auto real_config = dir.write("real.yaml", test::database_yaml(db) + endpoints);
  auto real = gatherstatsd({"--config", real_config.string(), "--once"});
  INFO(real.err);
  REQUIRE(real.exit_code == 0);
  auto committed = committed_rows(db);
  REQUIRE(committed.size() == 19 + 6);

  // The same endpoints against a database that must not be contacted.
  silent_listener database;
  auto dry_config =
      dir.write("dry.yaml", "database: {conninfo: \"" + database.conninfo() + "\"}\n" + endpoints);
  auto dry = gatherstatsd({"--config", dry_config.string(), "--once", "--dry-run"});
  INFO(dry.err);
  REQUIRE(dry.exit_code == 0);
  CHECK(parse_tsv(dry.out).rows == committed);
  CHECK_FALSE(database.contacted());
  CHECK(db.count() == 19 + 6);

  auto json =
      gatherstatsd({"--config", dry_config.string(), "--once", "--dry-run", "--format=json"});
  INFO(json.err);
  REQUIRE(json.exit_code == 0);
  auto doc = boost::json::parse(json.out).as_object();
  CHECK(doc.at("failed").to_number<int>() == 0);
  auto& fetches = doc.at("fetches").as_array();
  REQUIRE(fetches.size() == 2);
  // In the configuration's order.
  CHECK(fetches[0].at("name").as_string() == "edge");
  CHECK(fetches[0].at("rows").as_array().size() == 19);
  CHECK(fetches[1].at("name").as_string() == "assets");
  CHECK(fetches[1].at("endpoint").as_string() == "http://assets.invalid/stats");
  std::vector<row> from_json;
  for (const auto& f : fetches)
    for (const auto& r : f.at("rows").as_array()) {
      CHECK(iso8601_utc_micros(std::string(f.at("fetched_at").as_string())));
      from_json.push_back(
          {std::string(f.at("endpoint").as_string()), std::string(r.at("key").as_string()), ""});
    }
  CHECK(from_json.size() == committed.size());
  CHECK_FALSE(database.contacted());
}

TEST_CASE(
    "dry run: --once --dry-run exits 1 when an endpoint fails, and reports it on stderr and in "
    "JSON",
    "[dry-run][once]") {
  test::test_server server("", data_dir);
  silent_listener database;
  test::temp_dir dir;
  auto config = dir.write("failing.yaml", "database: {conninfo: \"" + database.conninfo() +
                                              "\"}\n"
                                              "endpoints:\n"
                                              "  - {name: broken, url: \"" +
                                              server.url("/status/404") +
                                              "\", interval: 1h}\n"
                                              "  - {name: good, url: \"" +
                                              server.url("/files/asset_counts.json") +
                                              "\", interval: 1h}\n"
                                              "  - {name: garbage, url: \"" +
                                              server.url("/garbage") + "\", interval: 1h}\n");
  auto t = gatherstatsd({"--config", config.string(), "--once", "--dry-run"});
  INFO(t.err);
  CHECK(t.exit_code == 1);
  CHECK_THAT(t.err, Catch::Contains("fetch failed endpoint=broken") && Catch::Contains("HTTP 404"));
  CHECK_THAT(t.err, Catch::Contains("fetch failed endpoint=garbage"));
  CHECK(parse_tsv(t.out).rows.size() == 6);

  auto j = gatherstatsd({"--config", config.string(), "--once", "--dry-run", "--format", "json"});
  CHECK(j.exit_code == 1);
  auto doc = boost::json::parse(j.out).as_object();
  CHECK(doc.at("failed").to_number<int>() == 2);
  auto& fetches = doc.at("fetches").as_array();
  REQUIRE(fetches.size() == 3);
  CHECK(fetches[0].at("name").as_string() == "broken");
  CHECK_THAT(std::string(fetches[0].at("error").as_string()), Catch::Contains("HTTP 404"));
  CHECK_FALSE(fetches[0].as_object().contains("rows"));
  CHECK(fetches[1].at("name").as_string() == "good");
  CHECK(fetches[1].at("rows").as_array().size() == 6);
  CHECK(fetches[2].at("name").as_string() == "garbage");
  CHECK_THAT(std::string(fetches[2].at("error").as_string()),
             Catch::Contains(server.url("/garbage")));
  CHECK_FALSE(database.contacted());
}

TEST_CASE("dry run: misuse of --dry-run is a command-line error", "[dry-run][cli]") {
  CHECK(gatherstatsd({"migrate", "--dry-run"}).exit_code == 2);
  auto r = gatherstatsd({"--config", "/nonexistent.yaml", "--dry-run"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("--dry-run needs --once"));
  auto f = gatherstatsd({"fetch", "x.json", "--format", "json"});
  CHECK(f.exit_code == 2);
  CHECK_THAT(f.err, Catch::Contains("--format needs --dry-run"));
}
