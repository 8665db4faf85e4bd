// libFuzzer target: arbitrary bytes as a YAML configuration, through
// parse_config (config.hpp), with a fixed fake environment.
//
// What must hold for any text: nothing is thrown ("loading never throws for
// bad input"); a configuration comes back exactly when there is no error;
// every error names the file and, unless it is about the whole (empty) file,
// a line and column inside the text; and a configuration that is returned
// obeys every limit the reader enforces. A broken rule is printed and
// aborts, so that libFuzzer reports it and saves the input.
//
// Secret file paths are only stat()ed and access()ed by the parser, never
// opened, so arbitrary paths in inputs are harmless.
#include "gatherstats/config/config.hpp"
#include "gatherstats/observe/basic_auth.hpp"
#include "gatherstats/observe/listen_address.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

namespace {

using namespace gatherstats::config;
using namespace std::chrono_literals;

const std::string file_name = "fuzz.yaml";

[[noreturn]] void broken(const char* rule, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz_config: broken: %s [%.*s]\n", rule, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

void check(bool holds, const char* rule, std::string_view detail = {}) {
  if (!holds) broken(rule, detail);
}

std::optional<std::string> fake_environment(std::string_view name) {
  if (name == "HOST") return "localhost";
  if (name == "PORT") return "8080";
  if (name == "EMPTY") return "";
  if (name == "SECRET_FILE") return "/dev/null";
  return std::nullopt;
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

bool starts_with_ignoring_case(std::string_view s, std::string_view lower_prefix) {
  return s.size() >= lower_prefix.size() &&
         std::equal(lower_prefix.begin(), lower_prefix.end(), s.begin(),
                    [](char p, char c) { return p == lower(c); });
}

bool equals_ignoring_case(std::string_view s, std::string_view lower_word) {
  return s.size() == lower_word.size() && starts_with_ignoring_case(s, lower_word);
}

std::size_t utf8_chars(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

void check_errors(const load_result& r, std::string_view text) {
  // yaml-cpp counts lines at '\n'; UTF-16 and UTF-32 input (which it
  // detects) holds a 0x0A byte for each of those too.
  const auto lines = static_cast<int>(std::count(text.begin(), text.end(), '\n')) + 1;
  for (const auto& e : r.errors) {
    const std::string shown = e.to_string();
    check(!e.message.empty(), "an error has a message", shown);
    check(e.file == file_name, "an error names the file", shown);
    check(shown.starts_with(file_name + ":"), "an error is shown with its file", shown);
    if (e.line == 0) {
      check(e.column == 0 && r.errors.size() == 1 && e.message.starts_with("the configuration is"),
            "only an empty configuration's error has no line:column", shown);
    } else {
      check(e.line >= 1 && e.line <= lines && e.column >= 1,
            "an error's line:column is inside the text", shown);
    }
  }
}

void check_endpoint(const endpoint_config& ep) {
  check(!ep.name.empty(), "an endpoint has a name");
  check(std::all_of(ep.name.begin(), ep.name.end(),
                    [](char c) {
                      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                             (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
                    }),
        "an endpoint name is letters, digits, _ . -", ep.name);
  check(
      starts_with_ignoring_case(ep.url, "http://") || starts_with_ignoring_case(ep.url, "https://"),
      "an endpoint url is http:// or https://", ep.url);
  check(utf8_chars(ep.recorded_endpoint()) <= 1204, "the endpoint column fits", ep.name);
  check(ep.interval >= 100ms, "an interval is at least 100ms", ep.name);
  check(ep.timeout > 0ms && ep.timeout <= ep.interval, "0 < timeout <= interval", ep.name);
  check(ep.retries <= 10, "retries are at most 10", ep.name);
  check(ep.flatten.max_depth >= 1 && ep.flatten.max_depth <= 1000, "max_depth is 1..1000", ep.name);
  check(ep.flatten.max_body_bytes >= 1 && ep.flatten.max_body_bytes <= std::size_t{1} << 30,
        "max_body is 1..1GiB", ep.name);
  for (const auto& [name, value] : ep.headers) {
    check(!name.empty(), "a header has a name", ep.name);
    check(!equals_ignoring_case(name, "authorization") && !equals_ignoring_case(name, "host") &&
              !equals_ignoring_case(name, "content-length"),
          "no Authorization, Host or Content-Length header", name);
    check(value.find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos,
          "a header value is one line", name);
  }
  check(ep.auth.bearer_token_file.empty() || ep.auth.username.empty(),
        "auth is bearer or basic, not both", ep.name);
  check(ep.auth.username.empty() || !ep.auth.password_file.empty(),
        "a username comes with a password file", ep.name);
  check(ep.auth.username.find(':') == std::string::npos, "a username has no ':'", ep.name);
  check(ep.tls.cert_file.empty() == ep.tls.key_file.empty(), "cert_file comes with key_file",
        ep.name);
}

void check_config(const daemon_config& c) {
  check(!c.endpoints.empty(), "a configuration has endpoints");
  for (std::size_t i = 0; i < c.endpoints.size(); ++i) {
    check_endpoint(c.endpoints[i]);
    for (std::size_t j = 0; j < i; ++j) {
      check(c.endpoints[i].name != c.endpoints[j].name, "endpoint names are unique",
            c.endpoints[i].name);
    }
  }
  check(c.database.pool_size >= 1 && c.database.pool_size <= 64, "pool_size is 1..64");
  check(!c.database.table.empty(), "a table is named");
  check(c.database.connect_timeout > 0ms && c.database.statement_timeout > 0ms,
        "database timeouts are positive");
  check(!c.database.retention || *c.database.retention > 0ms, "database.retention is positive");
  check(!c.spool.directory.empty(), "a spool directory is named");
  check(c.spool.max_bytes >= 1 && c.spool.memory_max_bytes >= 1, "spool sizes are positive");
  check(c.max_concurrent_fetches >= 1 && c.max_concurrent_fetches <= 100'000,
        "max_concurrent_fetches is 1..100000");
  check(c.shutdown_grace > 0ms, "shutdown_grace is positive");
  const auto& m = c.metrics;
  check(m.listen.empty() || gatherstats::observe::parse_listen_address(m.listen).has_value(),
        "the listen address parses", m.listen);
  check(m.cert_file.empty() == m.key_file.empty(), "metrics cert_file comes with key_file");
  check(m.client_ca_file.empty() || !m.cert_file.empty(), "a client CA comes with TLS");
  check(m.max_connections >= 1 && m.max_connections <= 10'000, "max_connections is 1..10000");
  for (const auto& [user, hash] : m.basic_auth_users) {
    check(!user.empty() && user.find(':') == std::string::npos, "a user name has no ':'", user);
    check(gatherstats::observe::is_bcrypt_hash(hash), "a user's hash is bcrypt", user);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  load_result r;
  try {
    r = parse_config(text, file_name, fake_environment);
  } catch (const std::exception& e) {
    broken("parse_config throws nothing", e.what());
  } catch (...) {
    broken("parse_config throws nothing", "not a std::exception");
  }
  check(r.config.has_value() == r.errors.empty(), "a configuration exactly when no error");
  check_errors(r, text);
  if (r.config) check_config(*r.config);
  return 0;
}
