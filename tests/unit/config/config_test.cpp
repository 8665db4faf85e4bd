#include "gatherstats/config/config.hpp"
#include "gatherstats/config/secret_file.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

using namespace gatherstats::config;
using namespace std::chrono_literals;

namespace {

// A scratch directory, removed with everything in it.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "gatherstats-config-XXXXXX");
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& content) const {
    auto p = path / name;
    std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
    return p.string();
  }
};

env_lookup fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

const env_lookup no_env = fake_env({});

std::vector<std::string> errors_of(const std::string& yaml, const env_lookup& env = no_env) {
  auto r = parse_config(yaml, "test.yaml", env);
  std::vector<std::string> out;
  for (const auto& e : r.errors) out.push_back(e.to_string());
  CHECK(r.config.has_value() == out.empty());
  return out;
}

// The only error of a file, as "test.yaml:LINE:COLUMN: MESSAGE".
std::string error_of(const std::string& yaml, const env_lookup& env = no_env) {
  auto errors = errors_of(yaml, env);
  INFO(yaml);
  REQUIRE(errors.size() == 1);
  return errors[0];
}

// A valid file around one endpoint's extra lines (which start on line 3,
// indented by 4).
std::string endpoint_with(const std::string& lines) {
  return "endpoints:\n  - name: a\n    url: http://localhost/stats\n" + lines;
}

}  // namespace

TEST_CASE("a complete configuration is read field by field", "[config]") {
  temp_dir dir;
  dir.write("token", "t0ken\n");
  dir.write("password", "pw\n");
  dir.write("ca.pem", "ca");
  dir.write("cert.pem", "cert");
  dir.write("key.pem", "key");
  const std::string yaml = R"(database:
  conninfo: "host=/run/postgresql dbname=${DB}"
  pool_size: 4
  table: stats.gatherstats_statistic
  connect_timeout: 5s
  statement_timeout: 1m
  fetch_log: false
  fetch_log_retention: 7d
  retention: 90d
defaults:
  interval: 1m
  timeout: 20s
  retries: 3
  values: skip
  max_body: 512KiB
  max_depth: 10
  align: true
  headers:
    Accept: application/json
    X-Team: stats
  auth: { bearer_token_file: "${DIR}/token" }
  tls: { ca_file: "${DIR}/ca.pem" }
endpoints:
  - name: inherits
    url: https://iar-backend.example/stats
  - name: overrides.all-of_it
    url: http://[::1]:8080/stats?x=1
    interval: 1h
    timeout: 30s
    retries: 0
    align: false
    values: strict
    max_body: 16MiB
    max_depth: 1000
    record_as: http://iar-backend.invalid/stats
    headers: { accept: text/plain, X-Extra: "1" }
    auth: { username: stats, password_file: "${DIR}/password" }
    tls: { cert_file: "${DIR}/cert.pem", key_file: "${DIR}/key.pem", insecure_skip_verify: true }
  - name: no-auth
    url: http://localhost:9000/
    interval: 20s
    auth: {}
    tls: {}
spool:
  directory: /var/tmp/spool
  max_bytes: 2GiB
  memory_max_bytes: 1048576
  memory_max_wait: 500ms
  when_full: stop_fetching
metrics:
  listen: "[::1]:9187"
max_concurrent_fetches: 8
shutdown_grace: 30s
)";
  const std::string d = dir.path.string();
  auto r = parse_config(yaml, "full.yaml", fake_env({{"DB", "stats"}, {"DIR", d}}));
  for (const auto& e : r.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(r.errors.empty());
  REQUIRE(r.config);
  const daemon_config& c = *r.config;

  CHECK(c.database.conninfo == "host=/run/postgresql dbname=stats");
  CHECK(c.database.pool_size == 4);
  CHECK(c.database.table == "stats.gatherstats_statistic");
  CHECK(c.database.connect_timeout == 5s);
  CHECK(c.database.statement_timeout == 1min);
  CHECK_FALSE(c.database.fetch_log);
  CHECK(c.database.fetch_log_retention == 7 * 24h);
  CHECK(c.database.retention == 90 * 24h);

  REQUIRE(c.endpoints.size() == 3);
  const endpoint_config& a = c.endpoints[0];
  CHECK(a.name == "inherits");
  CHECK(a.url == "https://iar-backend.example/stats");
  CHECK(a.interval == 1min);
  CHECK(a.timeout == 20s);
  CHECK(a.retries == 3);
  CHECK(a.align);
  CHECK(a.record_as.empty());
  CHECK(a.recorded_endpoint() == a.url);
  CHECK(a.flatten.values == gatherstats::json::value_policy::skip);
  CHECK(a.flatten.max_body_bytes == 512 * 1024);
  CHECK(a.flatten.max_depth == 10);
  CHECK(a.headers == std::vector<std::pair<std::string, std::string>>{
                         {"Accept", "application/json"}, {"X-Team", "stats"}});
  CHECK(a.auth == auth_options{d + "/token", "", ""});
  CHECK(a.tls == tls_options{d + "/ca.pem", "", "", false});

  const endpoint_config& b = c.endpoints[1];
  CHECK(b.name == "overrides.all-of_it");
  CHECK(b.url == "http://[::1]:8080/stats?x=1");
  CHECK(b.interval == 1h);
  CHECK(b.timeout == 30s);
  CHECK(b.retries == 0);
  CHECK_FALSE(b.align);
  CHECK(b.flatten.values == gatherstats::json::value_policy::strict);
  CHECK(b.flatten.max_body_bytes == 16 * 1024 * 1024);
  CHECK(b.flatten.max_depth == 1000);
  CHECK(b.record_as == "http://iar-backend.invalid/stats");
  CHECK(b.recorded_endpoint() == "http://iar-backend.invalid/stats");
  // Merged: the endpoint's "accept" replaces the default "Accept" in place.
  CHECK(b.headers == std::vector<std::pair<std::string, std::string>>{
                         {"accept", "text/plain"}, {"X-Team", "stats"}, {"X-Extra", "1"}});
  // auth and tls are replaced whole, not merged.
  CHECK(b.auth == auth_options{"", "stats", d + "/password"});
  CHECK(b.tls == tls_options{"", d + "/cert.pem", d + "/key.pem", true});

  const endpoint_config& n = c.endpoints[2];
  CHECK(n.interval == 20s);
  CHECK(n.timeout == 20s);
  CHECK(n.auth == auth_options{});
  CHECK(n.tls == tls_options{});
  CHECK(n.headers.size() == 2);

  CHECK(c.spool.directory == "/var/tmp/spool");
  CHECK(c.spool.max_bytes == std::size_t{2} << 30);
  CHECK(c.spool.memory_max_bytes == 1048576);
  CHECK(c.spool.memory_max_wait == 500ms);
  CHECK(c.spool.when_full == spool_full_policy::stop_fetching);
  CHECK(c.metrics.listen == "[::1]:9187");
  CHECK(c.max_concurrent_fetches == 8);
  CHECK(c.shutdown_grace == 30s);
}

TEST_CASE("absent settings take their defaults", "[config]") {
  auto r = parse_config("endpoints:\n  - { name: a, url: http://localhost/ }\n", "t.yaml", no_env);
  REQUIRE(r.config);
  daemon_config expected;
  endpoint_config ep;
  ep.name = "a";
  ep.url = "http://localhost/";
  expected.endpoints.push_back(ep);
  CHECK(*r.config == expected);
  const auto& e = r.config->endpoints[0];
  CHECK(e.interval == 5min);
  CHECK(e.timeout == 10s);
  CHECK(e.retries == 2);
  CHECK(e.flatten.max_body_bytes == 16u << 20);
  CHECK(e.flatten.max_depth == 64);
  CHECK(r.config->database.table == "gatherstats_statistic");
  CHECK(r.config->metrics.listen.empty());
  CHECK_FALSE(r.config->database.retention);  // statistics are kept for ever
}

TEST_CASE("database.retention is a positive duration, named in full when it is not", "[config]") {
  auto r = parse_config("database: { retention: 36h }\n" + endpoint_with(""), "t.yaml", no_env);
  REQUIRE(r.config);
  CHECK(r.config->database.retention == 36h);
  for (const char* bad : {"0s", "-1d", "30", "30 days", "1.5d"}) {
    INFO(bad);
    CHECK(error_of("database: { retention: \"" + std::string(bad) + "\" }\n" + endpoint_with("")) ==
          "test.yaml:1:24: \"database.retention\" must be a positive duration such as 250ms, "
          "10s, 5m, 1h or 30d, not \"" +
              std::string(bad) + "\"");
  }
  CHECK(error_of("database: { retention: [30d] }\n" + endpoint_with("")) ==
        "test.yaml:1:24: \"database.retention\" must be a duration, not a list");
  CHECK(error_of("database: { retentoin: 30d }\n" + endpoint_with("")) ==
        "test.yaml:1:13: unknown key \"retentoin\" (did you mean \"retention\"?)");
}

TEST_CASE("an interval shorter than the built-in timeout shortens it", "[config]") {
  auto r = parse_config(endpoint_with("    interval: 1s\n"), "t.yaml", no_env);
  REQUIRE(r.config);
  CHECK(r.config->endpoints[0].timeout == 1s);
  r = parse_config("defaults: { interval: 2s }\n" + endpoint_with(""), "t.yaml", no_env);
  REQUIRE(r.config);
  CHECK(r.config->endpoints[0].timeout == 2s);
}

TEST_CASE("a config_error prints as file:line:column: message", "[config]") {
  CHECK(config_error{"a.yaml", 3, 7, "bad"}.to_string() == "a.yaml:3:7: bad");
  CHECK(config_error{"a.yaml", 0, 0, "gone"}.to_string() == "a.yaml: gone");
}

TEST_CASE("unknown keys are errors, with a suggestion when one is close", "[config]") {
  CHECK(error_of(endpoint_with("    intervl: 1m\n")) ==
        "test.yaml:4:5: unknown key \"intervl\" (did you mean \"interval\"?)");
  CHECK(error_of(endpoint_with("    colour: blue\n")) == "test.yaml:4:5: unknown key \"colour\"");
  CHECK(error_of("databse: {}\n" + endpoint_with("")) ==
        "test.yaml:1:1: unknown key \"databse\" (did you mean \"database\"?)");
  CHECK(error_of(endpoint_with("    tls: { ca_fil: x }\n")) ==
        "test.yaml:4:12: unknown key \"ca_fil\" (did you mean \"ca_file\"?)");
}

TEST_CASE("a value of the wrong type is an error at the value", "[config]") {
  CHECK(error_of(endpoint_with("    retries: ten\n")) ==
        "test.yaml:4:14: \"retries\" must be a whole number, not \"ten\"");
  CHECK(error_of(endpoint_with("    retries: -1\n")) ==
        "test.yaml:4:14: \"retries\" must be a whole number, not \"-1\"");
  CHECK(error_of(endpoint_with("    interval: { a: 1 }\n")) ==
        "test.yaml:4:15: \"interval\" must be a duration, not a map");
  CHECK(
      error_of(endpoint_with("    interval: 10\n")) ==
      "test.yaml:4:15: \"interval\" must be a positive duration such as 250ms, 10s, 5m, 1h or 30d, "
      "not \"10\"");
  CHECK(error_of(endpoint_with("    align: yes\n")) ==
        "test.yaml:4:12: \"align\" must be true or false, not \"yes\"");
  CHECK(error_of(endpoint_with("    values: lenient\n")) ==
        "test.yaml:4:13: \"values\" must be strict or skip, not \"lenient\"");
  CHECK(error_of(endpoint_with("    headers: [a, b]\n")) ==
        "test.yaml:4:14: \"headers\" must be a map of header names to values, not a list");
  CHECK(error_of(endpoint_with("    max_body: 16MB\n")) ==
        "test.yaml:4:15: \"max_body\" must be a size such as 512KiB, 16MiB, 1GiB or a number of "
        "bytes, not \"16MB\"");
  // An empty value is reported at its key: yaml-cpp marks it at the next token.
  CHECK(error_of(endpoint_with("    record_as:\n")) ==
        "test.yaml:4:5: \"record_as\" must be a string, not nothing");
  CHECK(error_of("endpoints: {}\n") ==
        "test.yaml:1:12: \"endpoints\" must be a list of endpoints, not a map");
  CHECK(error_of("endpoints:\n  - just-a-name\n") ==
        "test.yaml:2:5: an endpoint must be a map, not \"just-a-name\"");
  CHECK(error_of("- a\n- b\n") == "test.yaml:1:1: the configuration must be a map, not a list");
  CHECK(error_of(endpoint_with("    tls: { insecure_skip_verify: 1 }\n")) ==
        "test.yaml:4:34: \"insecure_skip_verify\" must be true or false, not \"1\"");
  CHECK(error_of("spool: { when_full: block }\n" + endpoint_with("")) ==
        "test.yaml:1:21: \"when_full\" must be drop_oldest or stop_fetching, not \"block\"");
}

TEST_CASE("impossible values are errors", "[config]") {
  CHECK(error_of(endpoint_with("    interval: 50ms\n")) ==
        "test.yaml:4:15: \"interval\" must be at least 100ms, not 50ms");
  CHECK(
      error_of(endpoint_with("    timeout: 0s\n")) ==
      "test.yaml:4:14: \"timeout\" must be a positive duration such as 250ms, 10s, 5m, 1h or 30d, "
      "not \"0s\"");
  CHECK(error_of(endpoint_with("    interval: 10s\n    timeout: 30s\n")) ==
        "test.yaml:5:14: \"timeout\" 30s is longer than \"interval\" 10s: two fetches of one "
        "endpoint never overlap, so an attempt must end before the next one is due");
  CHECK(error_of("defaults: { timeout: 30s }\n" + endpoint_with("    interval: 10s\n")) ==
        "test.yaml:5:15: \"interval\" 10s is shorter than \"timeout\" 30s (inherited): two "
        "fetches of one endpoint never overlap, so an attempt must end before the next one is due");
  // Reported once, in defaults, not again for every endpoint inheriting it.
  CHECK(error_of("defaults: { interval: 10s, timeout: 11s }\n" + endpoint_with("")) ==
        "test.yaml:1:37: \"timeout\" 11s is longer than \"interval\" 10s: two fetches of one "
        "endpoint never overlap, so an attempt must end before the next one is due");
  CHECK(errors_of(endpoint_with("    interval: 10s\n    timeout: 10s\n")).empty());
  CHECK(error_of(endpoint_with("    retries: 11\n")) ==
        "test.yaml:4:14: \"retries\" must be between 0 and 10, not 11");
  CHECK(error_of(endpoint_with("    retries: 99999999999999999999999\n")) ==
        "test.yaml:4:14: \"retries\" must be between 0 and 10, not 99999999999999999999999");
  CHECK(error_of("spool: { memory_max_wait: 10ms }\n" + endpoint_with("")) ==
        "test.yaml:1:27: \"memory_max_wait\" must be between 100ms and 1h, not 10ms");
  CHECK(error_of("database: { pool_size: 0 }\n" + endpoint_with("")) ==
        "test.yaml:1:24: \"pool_size\" must be between 1 and 64, not 0");
  CHECK(error_of("database: { pool_size: 65 }\n" + endpoint_with("")) ==
        "test.yaml:1:24: \"pool_size\" must be between 1 and 64, not 65");
  CHECK(error_of(endpoint_with("    max_body: 0\n")) ==
        "test.yaml:4:15: \"max_body\" must be between 1 and 1GiB, not 0");
  CHECK(error_of(endpoint_with("    max_body: 2GiB\n")) ==
        "test.yaml:4:15: \"max_body\" must be between 1 and 1GiB, not 2GiB");
  CHECK(errors_of(endpoint_with("    max_body: 1GiB\n")).empty());
  CHECK(error_of(endpoint_with("    max_depth: 0\n")) ==
        "test.yaml:4:16: \"max_depth\" must be between 1 and 1000, not 0");
  CHECK(error_of(endpoint_with("    max_depth: 1001\n")) ==
        "test.yaml:4:16: \"max_depth\" must be between 1 and 1000, not 1001");
  CHECK(error_of("max_concurrent_fetches: 0\n" + endpoint_with("")) ==
        "test.yaml:1:25: \"max_concurrent_fetches\" must be between 1 and 100000, not 0");
  CHECK(error_of("database: { table: \"a.b.c\" }\n" + endpoint_with(""))
            .starts_with("test.yaml:1:20: table name \"a.b.c\""));
  CHECK(error_of(endpoint_with("    record_as: " + std::string(1205, 'x') + "\n")) ==
        "test.yaml:4:16: \"record_as\" is 1205 characters long; the endpoint column holds at "
        "most 1204");
  CHECK(errors_of(endpoint_with("    record_as: " + std::string(1204, 'x') + "\n")).empty());
  CHECK(error_of("endpoints:\n  - name: a\n    url: http://h/" + std::string(1200, 'x') + "\n") ==
        "test.yaml:3:10: \"url\" is longer than the 1204 characters the endpoint column holds: "
        "set a shorter \"record_as\"");
}

TEST_CASE("metrics listen must be HOST:PORT", "[config]") {
  for (const char* good : {"127.0.0.1:9187", "[::1]:9187", "localhost:1", "0.0.0.0:65535"}) {
    INFO(good);
    CHECK(errors_of("metrics: { listen: \"" + std::string(good) + "\" }\n" + endpoint_with(""))
              .empty());
  }
  CHECK(error_of("metrics: { listen: \"9187\" }\n" + endpoint_with("")) ==
        "test.yaml:1:20: \"listen\" must be HOST:PORT such as 127.0.0.1:9187 or [::1]:9187, not "
        "\"9187\": no port");
  CHECK(error_of("metrics: { listen: \"::1:9187\" }\n" + endpoint_with("")) ==
        "test.yaml:1:20: \"listen\" must be HOST:PORT such as 127.0.0.1:9187 or [::1]:9187, not "
        "\"::1:9187\": write an IPv6 address in brackets");
  CHECK(error_of("metrics: { listen: \"localhost:99999\" }\n" + endpoint_with("")) ==
        "test.yaml:1:20: \"listen\" must be HOST:PORT such as 127.0.0.1:9187 or [::1]:9187, not "
        "\"localhost:99999\": the port must be a number from 1 to 65535");
  CHECK(error_of("metrics: { listen: \"[zz]:9187\" }\n" + endpoint_with("")) ==
        "test.yaml:1:20: \"listen\" must be HOST:PORT such as 127.0.0.1:9187 or [::1]:9187, not "
        "\"[zz]:9187\": \"zz\" is not an IPv6 address");
  CHECK(error_of("metrics: { listen: \"1.2.3.999:9187\" }\n" + endpoint_with("")) ==
        "test.yaml:1:20: \"listen\" must be HOST:PORT such as 127.0.0.1:9187 or [::1]:9187, not "
        "\"1.2.3.999:9187\": \"1.2.3.999\" is neither an IP address nor a host name");
  CHECK(error_of("metrics: { listen: \"local host:9187\" }\n" + endpoint_with("")) ==
        "test.yaml:1:20: \"listen\" must be HOST:PORT such as 127.0.0.1:9187 or [::1]:9187, not "
        "\"local host:9187\": \"local host\" is neither an IP address nor a host name");
  // The listener's test-only port 0 is not a configuration.
  CHECK(error_of("metrics: { listen: \"127.0.0.1:0\" }\n" + endpoint_with("")) ==
        "test.yaml:1:20: \"listen\" must be HOST:PORT such as 127.0.0.1:9187 or [::1]:9187, not "
        "\"127.0.0.1:0\": the port must be a number from 1 to 65535");
}

TEST_CASE("metrics listen \":PORT\" is every address", "[config]") {
  auto r =
      parse_config("metrics: { listen: \":9187\" }\n" + endpoint_with(""), "test.yaml", no_env);
  REQUIRE(r.errors.empty());
  CHECK(r.config->metrics.listen == ":9187");
}

// A real bcrypt hash (of "secret", cost 5); the checks here are on its form.
const std::string bcrypt_hash = "$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a";

TEST_CASE("metrics TLS, client CA, users and max_connections are read", "[config]") {
  temp_dir dir;
  const std::string cert = dir.write("cert.pem", "c");
  const std::string key = dir.write("key.pem", "k");
  const std::string ca = dir.write("ca.pem", "a");
  const std::string yaml = "metrics:\n  listen: 127.0.0.1:9187\n  cert_file: " + cert +
                           "\n  key_file: " + key + "\n  client_ca_file: " + ca +
                           "\n  max_connections: 8\n  basic_auth_users:\n    prometheus: \"" +
                           bcrypt_hash + "\"\n    other: \"$2y$10$" + std::string(53, 'A') +
                           "\"\n" + endpoint_with("");
  auto r = parse_config(yaml, "test.yaml", no_env);
  for (const auto& e : r.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(r.errors.empty());
  const auto& m = r.config->metrics;
  CHECK(m.listen == "127.0.0.1:9187");
  CHECK(m.cert_file == cert);
  CHECK(m.key_file == key);
  CHECK(m.client_ca_file == ca);
  CHECK(m.max_connections == 8);
  CHECK(m.basic_auth_users ==
        std::vector<std::pair<std::string, std::string>>{
            {"prometheus", bcrypt_hash}, {"other", "$2y$10$" + std::string(53, 'A')}});
}

TEST_CASE("metrics keys are checked", "[config]") {
  temp_dir dir;
  const env_lookup env = fake_env({{"DIR", dir.path.string()}});
  dir.write("f", "x");
  CHECK(error_of("metrics:\n  cert_file: \"${DIR}/f\"\n" + endpoint_with(""), env) ==
        "test.yaml:2:3: \"metrics\" with \"cert_file\" needs \"key_file\"");
  CHECK(error_of("metrics:\n  key_file: \"${DIR}/f\"\n" + endpoint_with(""), env) ==
        "test.yaml:2:3: \"metrics\" with \"key_file\" needs \"cert_file\"");
  CHECK(error_of("metrics:\n  client_ca_file: \"${DIR}/f\"\n" + endpoint_with(""), env) ==
        "test.yaml:2:3: \"client_ca_file\" needs TLS: set \"cert_file\" and \"key_file\" too");
  CHECK(error_of("metrics:\n  cert_file: \"${DIR}/f\"\n  key_file: \"${DIR}/nope\"\n" +
                     endpoint_with(""),
                 env) == "test.yaml:3:13: cannot read key_file \"" + dir.path.string() +
                             "/nope\": No such file or directory");
  CHECK(error_of("metrics: { max_connections: 0 }\n" + endpoint_with("")) ==
        "test.yaml:1:29: \"max_connections\" must be between 1 and 10000, not 0");
  CHECK(error_of("metrics: { listn: x }\n" + endpoint_with("")) ==
        "test.yaml:1:12: unknown key \"listn\" (did you mean \"listen\"?)");
}

TEST_CASE("metrics basic_auth_users takes bcrypt hashes only, never echoing a value", "[config]") {
  const auto users = [](const std::string& lines) {
    return "metrics:\n  basic_auth_users:\n" + lines + endpoint_with("");
  };
  CHECK(errors_of(users("    a: \"" + bcrypt_hash + "\"\n")).empty());
  for (const std::string& bad : std::vector<std::string>{
           "plaintext-password", "$1$abc$defghijklmnopqrstuvwxy", "$2x$05$" + std::string(53, 'A'),
           "$2b$03$" + std::string(53, 'A'), "$2b$05$" + std::string(52, 'A'),
           "$2b$05$" + std::string(52, 'A') + "!", "$6$salt$hash"}) {
    INFO(bad);
    const std::string error = error_of(users("    a: \"" + bad + "\"\n"));
    CHECK(error ==
          "test.yaml:3:8: the password of user \"a\" must be a bcrypt hash ($2a$, $2b$ or $2y$, "
          "60 characters; make one with \"htpasswd -nBC 10 USER\")");
    CHECK(error.find(bad) == std::string::npos);
  }
  CHECK(error_of(users("    \"a:b\": \"" + bcrypt_hash + "\"\n")) ==
        "test.yaml:3:5: user name \"a:b\" must not be empty or contain \":\"");
  CHECK(error_of(users("    a: \"" + bcrypt_hash + "\"\n    a: \"" + bcrypt_hash + "\"\n")) ==
        "test.yaml:4:5: duplicate user \"a\" (first at line 3, column 5)");
  CHECK(error_of("metrics: { basic_auth_users: [a] }\n" + endpoint_with("")) ==
        "test.yaml:1:30: \"basic_auth_users\" must be a map of user names to bcrypt hashes, not a "
        "list");
}

TEST_CASE("endpoint names are required, well-formed and unique", "[config]") {
  CHECK(error_of("endpoints:\n  - name: a\n    url: http://h/\n  - name: b\n    url: http://h/\n"
                 "  - name: a\n    url: http://h/\n") ==
        "test.yaml:6:11: duplicate endpoint name \"a\" (first at line 2, column 11)");
  CHECK(error_of("endpoints:\n  - name: \"a b\"\n    url: http://h/\n") ==
        "test.yaml:2:11: endpoint name \"a b\" may contain only letters, digits, \"_\", \".\" and "
        "\"-\"");
  // A missing required key is reported at the map that lacks it.
  CHECK(error_of("endpoints:\n  - url: http://h/\n") ==
        "test.yaml:2:5: endpoint without the required key \"name\"");
  CHECK(error_of("endpoints:\n  - name: a\n") ==
        "test.yaml:2:5: endpoint without the required key \"url\"");
  CHECK(error_of("database: {}\n") ==
        "test.yaml:1:1: missing required key \"endpoints\": configure at least one endpoint");
  CHECK(error_of("endpoints: []\n") ==
        "test.yaml:1:12: \"endpoints\" is empty: configure at least one endpoint");
}

TEST_CASE("a key repeated within one map is an error", "[config]") {
  // yaml-cpp keeps both pairs; the loader finds the repetition.
  CHECK(error_of(endpoint_with("    interval: 1m\n    interval: 2m\n")) ==
        "test.yaml:5:5: duplicate key \"interval\" (first at line 4, column 5)");
  CHECK(error_of(endpoint_with("    headers: { Accept: a, accept: b }\n")) ==
        "test.yaml:4:27: duplicate header \"accept\" (first at line 4, column 16)");
}

TEST_CASE("URLs must be http or https with a host", "[config]") {
  auto url = [](const std::string& u) {
    return error_of("endpoints:\n  - name: a\n    url: \"" + u + "\"\n");
  };
  CHECK(url("ftp://h/stats") ==
        "test.yaml:3:10: \"url\" \"ftp://h/stats\" must start with "
        "http:// or https://");
  CHECK(url("http:///stats") == "test.yaml:3:10: \"url\" \"http:///stats\" has no host");
  CHECK(url("stats.example/stats")
            .starts_with("test.yaml:3:10: \"url\" \"stats.example/stats\" is not a valid URL: "));
  CHECK(url("http://h:99999/") ==
        "test.yaml:3:10: \"url\" \"http://h:99999/\" has an invalid port");
  CHECK(url("http://h /").starts_with("test.yaml:3:10: \"url\" \"http://h /\" is not a valid URL"));
  // The user information is not echoed: it may be a password.
  CHECK(url("https://u:hunter2@h/") ==
        "test.yaml:3:10: \"url\" must not contain user "
        "information (user:password@): use \"auth\"");
  CHECK(errors_of("endpoints:\n  - name: a\n    url: HTTPS://h:8443/x\n").empty());
}

TEST_CASE("headers that gatherstats sets or that carry credentials are refused", "[config]") {
  CHECK(error_of(endpoint_with("    headers: { host: x }\n")) ==
        "test.yaml:4:16: header \"host\" is set by gatherstats and cannot be configured");
  CHECK(error_of(endpoint_with("    headers: { Content-Length: \"1\" }\n")) ==
        "test.yaml:4:16: header \"Content-Length\" is set by gatherstats and cannot be configured");
  CHECK(error_of(endpoint_with("    headers: { AUTHORIZATION: Bearer x }\n")) ==
        "test.yaml:4:16: header \"Authorization\" is not allowed here: put credentials in "
        "\"auth\", read from a file");
  CHECK(error_of(endpoint_with("    headers: { \"Bad Name\": x }\n")) ==
        "test.yaml:4:16: \"Bad Name\" is not a valid header name");
  CHECK(error_of(endpoint_with("    headers: { X-A: \"a\\r\\nX-B: b\" }\n")) ==
        "test.yaml:4:21: header \"X-A\" must be one line");
}

TEST_CASE("secret, CA, certificate and key files must exist and be readable", "[config]") {
  temp_dir dir;
  const std::string d = dir.path.string();
  auto env = fake_env({{"DIR", d}});
  dir.write("token", "x");
  CHECK(error_of(endpoint_with("    auth: { bearer_token_file: \"${DIR}/nope\" }\n"), env) ==
        "test.yaml:4:32: cannot read bearer_token_file \"" + d +
            "/nope\": No such file or directory");
  CHECK(error_of(endpoint_with("    auth: { bearer_token_file: \"${DIR}\" }\n"), env) ==
        "test.yaml:4:32: bearer_token_file \"" + d + "\" is a directory, not a file");
  CHECK(error_of(endpoint_with("    auth: { username: u, password_file: /nonexistent/pw }\n")) ==
        "test.yaml:4:41: cannot read password_file \"/nonexistent/pw\": No such file or "
        "directory");
  CHECK(error_of(endpoint_with("    tls: { ca_file: /nonexistent/ca.pem }\n")) ==
        "test.yaml:4:21: cannot read ca_file \"/nonexistent/ca.pem\": No such file or directory");
  CHECK(errors_of(endpoint_with("    tls: { cert_file: /nonexistent/c, key_file: /nonexistent/k }"
                                "\n")) ==
        std::vector<std::string>{
            "test.yaml:4:23: cannot read cert_file \"/nonexistent/c\": No such file or directory",
            "test.yaml:4:49: cannot read key_file \"/nonexistent/k\": No such file or directory"});
  if (::geteuid() != 0) {  // root reads anything
    auto secret = dir.write("locked", "s3cret");
    ::chmod(secret.c_str(), 0);
    CHECK(error_of(endpoint_with("    auth: { bearer_token_file: \"${DIR}/locked\" }\n"), env) ==
          "test.yaml:4:32: cannot read bearer_token_file \"" + d + "/locked\": Permission denied");
  }
}

TEST_CASE("auth takes one kind of credentials, tls a certificate with its key", "[config]") {
  temp_dir dir;
  auto env = fake_env({{"DIR", dir.path.string()}});
  dir.write("f", "x");
  CHECK(error_of(endpoint_with("    auth: { bearer_token_file: \"${DIR}/f\", username: u, "
                               "password_file: \"${DIR}/f\" }\n"),
                 env) ==
        "test.yaml:4:11: \"auth\" takes either \"bearer_token_file\" or "
        "\"username\" and \"password_file\", not both");
  CHECK(error_of(endpoint_with("    auth: { username: u }\n")) ==
        "test.yaml:4:11: \"auth\" with \"username\" needs \"password_file\"");
  CHECK(error_of(endpoint_with("    auth: { password_file: \"${DIR}/f\" }\n"), env) ==
        "test.yaml:4:11: \"auth\" with \"password_file\" needs \"username\"");
  CHECK(error_of(endpoint_with("    tls: { cert_file: \"${DIR}/f\" }\n"), env) ==
        "test.yaml:4:10: \"tls\" with \"cert_file\" needs \"key_file\"");
  CHECK(error_of(endpoint_with("    tls:\n      key_file: \"${DIR}/f\"\n"), env) ==
        "test.yaml:5:7: \"tls\" with \"key_file\" needs \"cert_file\"");
}

TEST_CASE("every error of a file is reported at once", "[config]") {
  const std::string yaml = R"(database:
  pool_size: 0
  tabel: x
defaults:
  retries: many
endpoints:
  - name: a
    url: ftp://h/
  - name: a
    url: http://h/
    interval: 1ms
    align: yes
metrics: { listen: nowhere }
)";
  CHECK(errors_of(yaml) ==
        std::vector<std::string>{
            "test.yaml:3:3: unknown key \"tabel\" (did you mean \"table\"?)",
            "test.yaml:2:14: \"pool_size\" must be between 1 and 64, not 0",
            "test.yaml:5:12: \"retries\" must be a whole number, not \"many\"",
            "test.yaml:8:10: \"url\" \"ftp://h/\" must start with http:// or https://",
            "test.yaml:9:11: duplicate endpoint name \"a\" (first at line 7, column 11)",
            "test.yaml:11:15: \"interval\" must be at least 100ms, not 1ms",
            "test.yaml:12:12: \"align\" must be true or false, not \"yes\"",
            "test.yaml:13:20: \"listen\" must be HOST:PORT such as 127.0.0.1:9187 or [::1]:9187, "
            "not \"nowhere\": no port",
        });
}

TEST_CASE("a YAML syntax error is one error at yaml-cpp's mark", "[config]") {
  CHECK(error_of("endpoints: [\n  { name: a\n") == "test.yaml:3:1: end of map flow not found");
  CHECK(error_of("endpoints:\n  - name: a\n   url: x\n").starts_with("test.yaml:3:"));
}

TEST_CASE("an empty file, or one of several documents, is an error", "[config]") {
  CHECK(error_of("") == "test.yaml: the configuration is empty: configure at least one endpoint");
  CHECK(error_of("# nothing but a comment\n") ==
        "test.yaml: the configuration is empty: configure at least one endpoint");
  CHECK(error_of(endpoint_with("") + "---\n" + endpoint_with("")) ==
        "test.yaml:5:1: more than one YAML document: the configuration is one document");
}

TEST_CASE("${NAME} takes an environment variable in every string value", "[config]") {
  auto env = fake_env({{"HOST", "stats.example"}, {"EVERY", "30s"}, {"DB", "postgresql:///s"}});
  auto r = parse_config(R"(database: { conninfo: "${DB}" }
endpoints:
  - name: a
    url: "https://${HOST}:8443/${HOST}"
    interval: ${EVERY}
    record_as: "$${HOST} costs $5 and ${HOST}"
)",
                        "t.yaml", env);
  REQUIRE(r.config);
  CHECK(r.config->database.conninfo == "postgresql:///s");
  CHECK(r.config->endpoints[0].url == "https://stats.example:8443/stats.example");
  CHECK(r.config->endpoints[0].interval == 30s);
  CHECK(r.config->endpoints[0].record_as == "${HOST} costs $5 and stats.example");

  CHECK(error_of(endpoint_with("    record_as: \"${NOPE}\"\n"), env) ==
        "test.yaml:4:16: \"record_as\": environment variable NOPE is not set");
  CHECK(error_of(endpoint_with("    record_as: \"x${HOST\"\n"), env) ==
        "test.yaml:4:16: \"record_as\": unterminated \"${\" (write \"$${\" for a literal \"${\")");
  CHECK(error_of(endpoint_with("    record_as: \"${1X}\"\n"), env) ==
        "test.yaml:4:16: \"record_as\": \"${1X}\" is not a valid environment variable name");
  // The value substituted is then checked like any other.
  CHECK(error_of(endpoint_with("    retries: ${EVERY}\n"), env) ==
        "test.yaml:4:14: \"retries\" must be a whole number, not \"30s\"");
}

TEST_CASE("process_environment reads the real environment", "[config]") {
  ::setenv("GATHERSTATS_CONFIG_TEST_VAR", "value", 1);
  auto env = process_environment();
  CHECK(env("GATHERSTATS_CONFIG_TEST_VAR") == std::optional<std::string>("value"));
  ::unsetenv("GATHERSTATS_CONFIG_TEST_VAR");
  CHECK_FALSE(env("GATHERSTATS_CONFIG_TEST_VAR").has_value());
}

TEST_CASE("load_config_file reads a file and names it in errors", "[config]") {
  temp_dir dir;
  auto good = dir.write("good.yaml", endpoint_with(""));
  auto r = load_config_file(good, no_env);
  REQUIRE(r.config);
  CHECK(r.config->endpoints.at(0).name == "a");

  auto bad = dir.write("bad.yaml", endpoint_with("    retries: 11\n"));
  r = load_config_file(bad, no_env);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].to_string() == bad + ":4:14: \"retries\" must be between 0 and 10, not 11");

  auto missing = dir.path.string() + "/missing.yaml";
  r = load_config_file(missing, no_env);
  CHECK_FALSE(r.config);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].line == 0);
  CHECK(r.errors[0].to_string() ==
        missing + ": cannot read the configuration: No such file or directory");

  r = load_config_file(dir.path.string(), no_env);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].line == 0);
  CHECK(r.errors[0].message == "cannot read the configuration: it is a directory");
}

TEST_CASE("the example configuration is valid", "[config]") {
  // The source directory from CMake, not __FILE__ (relative under ccache's CCACHE_BASEDIR).
  auto example = std::filesystem::path(GATHERSTATS_SOURCE_DIR) / "config/gatherstats.yaml";
  auto r = load_config_file(example.lexically_normal().string(), no_env);
  for (const auto& e : r.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(r.config);
  CHECK(r.config->endpoints.size() == 2);
  // Written out in full, the file's values are the built-in ones.
  const daemon_config builtin;
  CHECK(r.config->spool == builtin.spool);
  CHECK(r.config->metrics == builtin.metrics);
  CHECK(r.config->max_concurrent_fetches == builtin.max_concurrent_fetches);
  CHECK(r.config->shutdown_grace == builtin.shutdown_grace);
  CHECK(r.config->database.pool_size == builtin.database.pool_size);
  CHECK(r.config->endpoints[1].headers.size() == 2);
}

// --- secret_file ---------------------------------------------------------

TEST_CASE("a secret file is read trimmed, and re-read when it changes", "[config][secret]") {
  temp_dir dir;
  auto path = dir.write("token", "  first-token\n");
  secret_file secret(path);
  CHECK(secret.path() == path);
  auto v = secret.read();
  REQUIRE(v.has_value());
  CHECK(*v == "first-token");

  SECTION("a new content of another size is picked up") {
    dir.write("token", "second-token-longer\r\n");
    v = secret.read();
    REQUIRE(v.has_value());
    CHECK(*v == "second-token-longer");
  }
  SECTION("same size, newer mtime: re-read") {
    dir.write("token", "  other--token\n");  // as long as before
    timespec times[2] = {{0, UTIME_OMIT}, {2'000'000'000, 0}};
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
    v = secret.read();
    REQUIRE(v.has_value());
    CHECK(*v == "other--token");
  }
  SECTION("same inode, size and mtime: the cached value is kept") {
    struct stat before {};
    REQUIRE(::stat(path.c_str(), &before) == 0);
    dir.write("token", "  xxxxx-token\n");  // as long as before
    timespec times[2] = {{0, UTIME_OMIT}, before.st_mtim};
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
    v = secret.read();
    REQUIRE(v.has_value());
    CHECK(*v == "first-token");
  }
  SECTION("replaced by rename (a new inode), as rotations do") {
    auto next = dir.write("token.new", "rotated\n");
    REQUIRE(::rename(next.c_str(), path.c_str()) == 0);
    v = secret.read();
    REQUIRE(v.has_value());
    CHECK(*v == "rotated");
  }
}

TEST_CASE("secret file errors name the path, never the content", "[config][secret]") {
  temp_dir dir;
  const std::string content = "hunter2-very-secret";

  secret_file missing(dir.path.string() + "/absent");
  auto v = missing.read();
  REQUIRE_FALSE(v.has_value());
  CHECK(v.error().message ==
        "secret file \"" + dir.path.string() + "/absent\": No such file or directory");
  CHECK(v.error().is_transient());

  auto path = dir.write("two-lines", content + "\n" + content + "\n");
  secret_file two(path);
  v = two.read();
  REQUIRE_FALSE(v.has_value());
  CHECK(v.error().message == "secret file \"" + path + "\": holds more than one line");
  CHECK(v.error().message.find(content) == std::string::npos);

  secret_file empty(dir.write("empty", " \n\t\n"));
  v = empty.read();
  REQUIRE_FALSE(v.has_value());
  CHECK(v.error().message.ends_with(": empty"));

  secret_file huge(dir.write("huge", std::string(100'000, 'x')));
  v = huge.read();
  REQUIRE_FALSE(v.has_value());
  CHECK(v.error().message.ends_with(": larger than 64 KiB"));
  CHECK(v.error().message.find("xxx") == std::string::npos);

  secret_file directory(dir.path.string());
  v = directory.read();
  REQUIRE_FALSE(v.has_value());
  CHECK(v.error().message.ends_with(": not a regular file"));

  // A secret that was read, then disappears: an error, not the stale value.
  auto gone = dir.write("gone", content);
  secret_file rotating(gone);
  REQUIRE(rotating.read().has_value());
  std::filesystem::remove(gone);
  v = rotating.read();
  REQUIRE_FALSE(v.has_value());
  CHECK(v.error().message.find(content) == std::string::npos);
}

TEST_CASE("a \",\" after a flow collection or a quoted scalar is an error, not a hang",
          "[config][fuzz]") {
  // yaml-cpp 0.7's LoadAll never returns on these, growing without bound
  // (found by tests/fuzz/fuzz_config).
  CHECK(error_of(",t") == "test.yaml:1:1: unexpected text after the end of the YAML document");
  CHECK(error_of("{endpoints: [{name: a, url: \"http://h/\"}]},\n") ==
        "test.yaml:1:43: unexpected text after the end of the YAML document");
  CHECK(error_of("\"text\" ,") ==
        "test.yaml:1:8: unexpected text after the end of the YAML document");
  CHECK(error_of("---\n---\n" + endpoint_with("")) ==
        "test.yaml: the configuration is empty: configure at least one endpoint");
  CHECK(error_of(endpoint_with("") + "...\n{a: 1}\n") ==
        "test.yaml:5:1: more than one YAML document: the configuration is one document");
}

TEST_CASE("cluster: every key read, defaults for the rest", "[config][cluster]") {
  auto r = parse_config(
      "cluster: { name: web, member: m-1.a_b, lease: 3s, replicas: 2, notify: false }\n" +
          endpoint_with(""),
      "t.yaml", no_env);
  REQUIRE(r.config);
  REQUIRE(r.config->cluster);
  CHECK(r.config->cluster->name == "web");
  CHECK(r.config->cluster->member == "m-1.a_b");
  CHECK(r.config->cluster->lease == 3s);
  CHECK(r.config->cluster->replicas == 2);
  CHECK_FALSE(r.config->cluster->notify);

  auto d = parse_config("cluster: { name: web }\n" + endpoint_with(""), "t.yaml", no_env);
  REQUIRE(d.config);
  REQUIRE(d.config->cluster);
  char host[256] = {};
  REQUIRE(::gethostname(host, sizeof host - 1) == 0);
  CHECK(d.config->cluster->member == host);  // the host name
  CHECK(d.config->cluster->lease == 10s);
  CHECK(d.config->cluster->replicas == 1);
  CHECK(d.config->cluster->notify);

  auto alone = parse_config(endpoint_with(""), "t.yaml", no_env);
  REQUIRE(alone.config);
  CHECK_FALSE(alone.config->cluster);
}

TEST_CASE("cluster: bad values are refused with where and why", "[config][cluster]") {
  CHECK(error_of("cluster: { member: m1 }\n" + endpoint_with("")) ==
        "test.yaml:1:10: \"cluster\" needs \"name\": the members that share the endpoints");
  CHECK(error_of("cluster: { name: \"a b\" }\n" + endpoint_with("")) ==
        "test.yaml:1:18: \"name\" must be 1 to 63 letters, digits, '.', '-' or '_', not \"a b\"");
  CHECK(error_of("cluster: { name: c, member: \"\" }\n" + endpoint_with("")) ==
        "test.yaml:1:29: \"member\" must be 1 to 63 letters, digits, '.', '-' or '_', not \"\"");
  CHECK(error_of("cluster: { name: c, member: " + std::string(64, 'm') + " }\n" + endpoint_with(""))
            .find("\"member\" must be 1 to 63 letters") != std::string::npos);
  CHECK(error_of("cluster: { name: c, lease: 500ms }\n" + endpoint_with("")) ==
        "test.yaml:1:28: \"lease\" must be between 1s and 1h, not 500ms");
  CHECK(error_of("cluster: { name: c, replicas: 3 }\n" + endpoint_with("")).find("\"replicas\"") !=
        std::string::npos);
  CHECK(error_of("cluster: { name: c, notify: maybe }\n" + endpoint_with("")) ==
        "test.yaml:1:29: \"notify\" must be true or false, not \"maybe\"");
  CHECK(error_of("cluster: { name: c, leese: 3s }\n" + endpoint_with("")) ==
        "test.yaml:1:21: unknown key \"leese\" (did you mean \"lease\"?)");
}

TEST_CASE("cluster: refused without the fetch log, which is its fence", "[config][cluster]") {
  CHECK(error_of("database: { fetch_log: false }\ncluster: { name: c }\n" + endpoint_with("")) ==
        "test.yaml:2:1: \"cluster\" needs database.fetch_log: true: the fetch log's unique key "
        "on (endpoint_name, tick) is the fence that stores each tick once");
}
