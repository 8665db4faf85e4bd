#include "gatherstats/config/config.hpp"

#include "gatherstats/config/duration.hpp"
#include "gatherstats/http/redact.hpp"
#include "gatherstats/observe/basic_auth.hpp"
#include "gatherstats/observe/listen_address.hpp"
#include "gatherstats/pg/statistic_table.hpp"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>
#include <boost/url/parse.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

namespace gatherstats::config {

std::string config_error::to_string() const {
  if (line <= 0) return file + ": " + message;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

env_lookup process_environment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

namespace {

using namespace std::string_view_literals;

constexpr milliseconds min_interval{100};
constexpr unsigned max_retries = 10;
constexpr std::size_t max_pool_size = 64;
constexpr std::uint64_t max_body_limit = std::uint64_t{1} << 30;
constexpr std::uint64_t max_depth_limit = 1000;
constexpr std::size_t endpoint_column_chars = 1204;

// A position in the file, 1-based.
struct where {
  int line = 0;
  int column = 0;
};

where at(const YAML::Mark& m) { return {m.line + 1, m.column + 1}; }

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

// Edits (insert, delete, replace, swap two neighbours) from a to b, ignoring
// case: the optimal string alignment distance.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  const std::size_t w = b.size() + 1;
  std::vector<std::size_t> d((a.size() + 1) * w);
  auto same = [&](std::size_t i, std::size_t j) { return iequals(a.substr(i, 1), b.substr(j, 1)); };
  for (std::size_t i = 0; i <= a.size(); ++i) d[i * w] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t best = std::min({d[(i - 1) * w + j] + 1, d[i * w + j - 1] + 1,
                                   d[(i - 1) * w + j - 1] + (same(i - 1, j - 1) ? 0 : 1)});
      if (i > 1 && j > 1 && same(i - 1, j - 2) && same(i - 2, j - 1))
        best = std::min(best, d[(i - 2) * w + j - 2] + 1);
      d[i * w + j] = best;
    }
  }
  return d[a.size() * w + b.size()];
}

// The known key an unknown one was most likely meant to be, if any is close.
std::optional<std::string_view> nearest(std::string_view key,
                                        const std::vector<std::string_view>& known) {
  std::optional<std::string_view> best;
  std::size_t best_distance = 0;
  for (auto k : known) {
    std::size_t d = edit_distance(key, k);
    if (!best || d < best_distance) {
      best = k;
      best_distance = d;
    }
  }
  // Close means a typo, not a different word: at most 2 edits, and fewer
  // than a third of the word for short keys.
  if (best && best_distance <= 2 && best_distance * 3 <= std::max(key.size(), best->size()))
    return best;
  return std::nullopt;
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return quote(n.Scalar());
    default:
      return "nothing";
  }
}

std::string format_bytes(std::uint64_t n) {
  if (n != 0 && n % (std::uint64_t{1} << 30) == 0) return std::to_string(n >> 30) + "GiB";
  if (n != 0 && n % (std::uint64_t{1} << 20) == 0) return std::to_string(n >> 20) + "MiB";
  if (n != 0 && n % (std::uint64_t{1} << 10) == 0) return std::to_string(n >> 10) + "KiB";
  return std::to_string(n);
}

std::size_t utf8_chars(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// One key of a map with its value; `value_at` is the key's position when
// the value is empty, since yaml-cpp marks an empty value where the next
// token starts.
struct entry {
  std::string key;
  YAML::Node value;
  where key_at;
  where value_at;
};

// The known keys of one YAML map, first occurrence of each.
struct map_view {
  where at;
  std::vector<entry> entries;

  const entry* get(std::string_view key) const {
    for (const auto& e : entries)
      if (e.key == key) return &e;
    return nullptr;
  }
};

// Fields an endpoint may inherit from `defaults`: which were set, and where.
struct field_marks {
  std::optional<where> interval, timeout;
  bool timeout_set_anywhere = false;
};

const std::vector<std::string_view> top_keys = {
    "database",       "defaults", "endpoints", "spool", "metrics", "max_concurrent_fetches",
    "shutdown_grace", "cluster"};
const std::vector<std::string_view> database_keys = {
    "conninfo",  "pool_size",           "table",    "connect_timeout", "statement_timeout",
    "fetch_log", "fetch_log_retention", "retention"};
const std::vector<std::string_view> default_keys = {"interval", "timeout",   "retries", "values",
                                                    "max_body", "max_depth", "headers", "auth",
                                                    "tls",      "align"};
const std::vector<std::string_view> endpoint_keys = {
    "name",     "url",       "record_as", "interval", "timeout", "retries", "values",
    "max_body", "max_depth", "headers",   "auth",     "tls",     "align"};
const std::vector<std::string_view> auth_keys = {"bearer_token_file", "username", "password_file"};
const std::vector<std::string_view> tls_keys = {"ca_file", "cert_file", "key_file",
                                                "insecure_skip_verify"};
const std::vector<std::string_view> spool_keys = {"directory", "max_bytes", "memory_max_bytes",
                                                  "memory_max_wait", "when_full"};
const std::vector<std::string_view> cluster_keys = {"name", "member", "lease", "replicas",
                                                    "notify"};
const std::vector<std::string_view> metrics_keys = {
    "listen", "cert_file", "key_file", "client_ca_file", "basic_auth_users", "max_connections"};
constexpr std::uint64_t max_listener_connections = 10'000;
constexpr std::size_t max_cluster_name = 63;

bool is_cluster_name(std::string_view s) {
  return !s.empty() && s.size() <= max_cluster_name && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

class config_reader {
 public:
  config_reader(const std::string& file, const env_lookup& env) : file_(file), env_(env) {}

  std::vector<config_error> errors;

  void fail(where w, std::string message) {
    errors.push_back({file_, w.line, w.column, std::move(message)});
  }

  std::optional<daemon_config> read(const YAML::Node& root) {
    daemon_config config;
    auto top = open_map(root, at(root.Mark()), top_keys, "the configuration");
    if (!top) return std::nullopt;

    if (auto* e = top->get("database")) read_database(*e, config.database);

    endpoint_config defaults;
    field_marks default_marks;
    if (auto* e = top->get("defaults")) {
      if (auto m = open_map(*e, default_keys)) {
        read_inheritable(*m, defaults, default_marks);
        check_timeout_fits(defaults, default_marks);
      }
    }

    if (auto* e = top->get("endpoints"))
      read_endpoints(*e, defaults, default_marks, config.endpoints);
    else
      fail(top->at, "missing required key \"endpoints\": configure at least one endpoint");

    if (auto* e = top->get("spool")) read_spool(*e, config.spool);
    if (auto* e = top->get("metrics")) read_metrics(*e, config.metrics);
    if (auto* e = top->get("cluster")) read_cluster(*e, config);
    if (auto* e = top->get("max_concurrent_fetches")) {
      if (auto n = whole_number(*e, 1, 100'000)) config.max_concurrent_fetches = *n;
    }
    if (auto* e = top->get("shutdown_grace")) {
      if (auto d = duration(*e)) config.shutdown_grace = *d;
    }
    if (!errors.empty()) return std::nullopt;
    return config;
  }

 private:
  const std::string& file_;
  const env_lookup& env_;

  // --- maps and keys -------------------------------------------------------

  std::optional<map_view> open_map(const YAML::Node& node, where node_at,
                                   const std::vector<std::string_view>& known,
                                   std::string_view what) {
    if (!node.IsMap()) {
      fail(node_at, std::string(what) + " must be a map, not " + describe(node));
      return std::nullopt;
    }
    map_view view{node_at, {}};
    // yaml-cpp keeps every pair of a map, repeated keys included, in document
    // order, so repeated keys are found here rather than by the parser.
    std::map<std::string, where> seen;
    // Each pair is taken by value: `pair.first` would refer into a temporary.
    for (const auto& pair : node) {
      const YAML::Node key = pair.first;
      where key_at = at(key.Mark());
      if (!key.IsScalar()) {
        fail(key_at, "keys must be plain names, not " + describe(key));
        continue;
      }
      const std::string name = key.Scalar();
      if (auto [first, inserted] = seen.emplace(name, key_at); !inserted) {
        fail(key_at, "duplicate key " + quote(name) + " (first at line " +
                         std::to_string(first->second.line) + ", column " +
                         std::to_string(first->second.column) + ")");
        continue;
      }
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        std::string message = "unknown key " + quote(name);
        if (auto guess = nearest(name, known)) message += " (did you mean " + quote(*guess) + "?)";
        fail(key_at, std::move(message));
        continue;
      }
      const YAML::Node value = pair.second;
      where value_at = value.IsNull() ? key_at : at(value.Mark());
      view.entries.push_back({name, value, key_at, value_at});
    }
    return view;
  }

  std::optional<map_view> open_map(const entry& e, const std::vector<std::string_view>& known) {
    return open_map(e.value, e.value_at, known, quote(e.key));
  }

  // --- scalars -------------------------------------------------------------

  // Replaces ${NAME} by the environment variable NAME; `$${` is a literal `${`.
  std::optional<std::string> expand(const entry& e, const std::string& in) {
    std::string out;
    bool ok = true;
    for (std::size_t i = 0; i < in.size();) {
      if (in.compare(i, 3, "$${") == 0) {
        out += "${";
        i += 3;
      } else if (in.compare(i, 2, "${") == 0) {
        auto close = in.find('}', i + 2);
        if (close == std::string::npos) {
          fail(e.value_at,
               quote(e.key) + ": unterminated \"${\" (write \"$${\" for a literal \"${\")");
          return std::nullopt;
        }
        std::string name = in.substr(i + 2, close - i - 2);
        bool valid = !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
                     std::all_of(name.begin(), name.end(), [](char c) {
                       return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                              (c >= '0' && c <= '9') || c == '_';
                     });
        if (!valid) {
          fail(e.value_at, quote(e.key) + ": " + quote("${" + name + "}") +
                               " is not a valid environment variable name");
          ok = false;
        } else if (auto value = env_(name)) {
          out += *value;
        } else {
          fail(e.value_at, quote(e.key) + ": environment variable " + name + " is not set");
          ok = false;
        }
        i = close + 1;
      } else {
        out += in[i++];
      }
    }
    if (!ok) return std::nullopt;
    return out;
  }

  std::optional<std::string> text(const entry& e, std::string_view expected = "a string") {
    if (!e.value.IsScalar()) {
      fail(e.value_at,
           quote(e.key) + " must be " + std::string(expected) + ", not " + describe(e.value));
      return std::nullopt;
    }
    return expand(e, e.value.Scalar());
  }

  std::optional<std::uint64_t> whole_number(const entry& e, std::uint64_t min, std::uint64_t max) {
    auto s = text(e, "a whole number");
    if (!s) return std::nullopt;
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), n);
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc{} && end == s->data() + s->size() && (n < min || n > max))) {
      fail(e.value_at, quote(e.key) + " must be between " + std::to_string(min) + " and " +
                           std::to_string(max) + ", not " + *s);
      return std::nullopt;
    }
    if (ec != std::errc{} || end != s->data() + s->size()) {
      fail(e.value_at, quote(e.key) + " must be a whole number, not " + quote(*s));
      return std::nullopt;
    }
    return n;
  }

  // A byte count: a whole number, optionally with KiB, MiB or GiB.
  std::optional<std::uint64_t> byte_size(const entry& e, std::uint64_t min, std::uint64_t max) {
    auto s = text(e, "a size");
    if (!s) return std::nullopt;
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), n);
    std::string_view unit(end, static_cast<std::size_t>(s->data() + s->size() - end));
    int shift = -1;
    if (unit.empty())
      shift = 0;
    else if (unit == "KiB")
      shift = 10;
    else if (unit == "MiB")
      shift = 20;
    else if (unit == "GiB")
      shift = 30;
    if ((ec != std::errc{} && ec != std::errc::result_out_of_range) || end == s->data() ||
        shift < 0) {
      fail(e.value_at, quote(e.key) +
                           " must be a size such as 512KiB, 16MiB, 1GiB or a number of "
                           "bytes, not " +
                           quote(*s));
      return std::nullopt;
    }
    if (ec == std::errc::result_out_of_range || n > (max >> shift) || (n << shift) < min) {
      fail(e.value_at, quote(e.key) + " must be between " + format_bytes(min) + " and " +
                           format_bytes(max) + ", not " + *s);
      return std::nullopt;
    }
    return n << shift;
  }

  std::optional<milliseconds> duration(const entry& e) {
    auto s = text(e, "a duration");
    if (!s) return std::nullopt;
    auto d = parse_duration(*s);
    if (!d) {
      fail(e.value_at, quote(e.key) +
                           " must be a positive duration such as 250ms, 10s, 5m, 1h or 30d, "
                           "not " +
                           quote(*s));
    }
    return d;
  }

  std::optional<bool> boolean(const entry& e) {
    auto s = text(e, "true or false");
    if (!s) return std::nullopt;
    if (*s == "true") return true;
    if (*s == "false") return false;
    fail(e.value_at, quote(e.key) + " must be true or false, not " + quote(*s));
    return std::nullopt;
  }

  template <class Enum>
  std::optional<Enum> choice(const entry& e,
                             const std::vector<std::pair<std::string_view, Enum>>& choices) {
    std::string names;
    for (const auto& [name, value] : choices)
      names += (names.empty() ? "" : " or ") + std::string(name);
    auto s = text(e, names);
    if (!s) return std::nullopt;
    for (const auto& [name, value] : choices)
      if (*s == name) return value;
    fail(e.value_at, quote(e.key) + " must be " + names + ", not " + quote(*s));
    return std::nullopt;
  }

  // A file the daemon will read: it must exist and be readable now.
  std::optional<std::string> readable_file(const entry& e) {
    auto path = text(e, "a file path");
    if (!path) return std::nullopt;
    if (path->empty()) {
      fail(e.value_at, quote(e.key) + " must not be empty");
      return std::nullopt;
    }
    struct stat st {};
    if (::stat(path->c_str(), &st) != 0 || ::access(path->c_str(), R_OK) != 0) {
      fail(e.value_at, "cannot read " + e.key + " " + quote(*path) + ": " + std::strerror(errno));
      return std::nullopt;
    }
    if (S_ISDIR(st.st_mode)) {
      fail(e.value_at, e.key + " " + quote(*path) + " is a directory, not a file");
      return std::nullopt;
    }
    return path;
  }

  // --- sections ------------------------------------------------------------

  void read_database(const entry& section, database_config& db) {
    auto m = open_map(section, database_keys);
    if (!m) return;
    if (auto* e = m->get("conninfo")) {
      if (auto s = text(*e)) db.conninfo = *s;
    }
    if (auto* e = m->get("pool_size")) {
      if (auto n = whole_number(*e, 1, max_pool_size)) db.pool_size = *n;
    }
    if (auto* e = m->get("table")) {
      if (auto s = text(*e)) {
        auto parsed = pg::table_name::parse(*s);
        if (parsed.has_value())
          db.table = *s;
        else
          fail(e->value_at, parsed.error().message);
      }
    }
    if (auto* e = m->get("connect_timeout")) {
      if (auto d = duration(*e)) db.connect_timeout = *d;
    }
    if (auto* e = m->get("statement_timeout")) {
      if (auto d = duration(*e)) db.statement_timeout = *d;
    }
    if (auto* e = m->get("fetch_log")) {
      if (auto b = boolean(*e)) db.fetch_log = *b;
    }
    if (auto* e = m->get("fetch_log_retention")) {
      if (auto d = duration(*e)) db.fetch_log_retention = *d;
    }
    if (auto* e = m->get("retention")) {
      // Named in full: "retention" alone is easily read as the fetch log's.
      entry named = *e;
      named.key = "database.retention";
      if (auto d = duration(named)) db.retention = *d;
    }
  }

  void read_spool(const entry& section, spool_config& spool) {
    auto m = open_map(section, spool_keys);
    if (!m) return;
    if (auto* e = m->get("directory")) {
      if (auto s = text(*e)) {
        if (s->empty())
          fail(e->value_at, "\"directory\" must not be empty");
        else
          spool.directory = *s;
      }
    }
    constexpr std::uint64_t max_spool = std::uint64_t{1} << 50;
    if (auto* e = m->get("max_bytes")) {
      if (auto n = byte_size(*e, 1, max_spool)) spool.max_bytes = *n;
    }
    if (auto* e = m->get("memory_max_bytes")) {
      if (auto n = byte_size(*e, 1, max_spool)) spool.memory_max_bytes = *n;
    }
    if (auto* e = m->get("memory_max_wait")) {
      if (auto d = duration(*e)) {
        if (*d < milliseconds(100) || *d > milliseconds(3'600'000))
          fail(e->value_at,
               "\"memory_max_wait\" must be between 100ms and 1h, not " + text(*e).value_or(""));
        else
          spool.memory_max_wait = *d;
      }
    }
    if (auto* e = m->get("when_full")) {
      if (auto p =
              choice<spool_full_policy>(*e, {{"drop_oldest", spool_full_policy::drop_oldest},
                                             {"stop_fetching", spool_full_policy::stop_fetching}}))
        spool.when_full = *p;
    }
  }

  // A cluster or member name: what PostgreSQL stores and the journal shows,
  // so plain characters only.
  bool check_cluster_name(const entry& e, const std::string& s) {
    const bool ok = is_cluster_name(s);
    if (!ok)
      fail(e.value_at, quote(e.key) + " must be 1 to " + std::to_string(max_cluster_name) +
                           " letters, digits, '.', '-' or '_', not " + quote(s));
    return ok;
  }

  void read_cluster(const entry& section, daemon_config& config) {
    auto m = open_map(section, cluster_keys);
    if (!m) return;
    cluster_config c;
    c.member = host_name();
    if (auto* e = m->get("name")) {
      if (auto s = text(*e); s && check_cluster_name(*e, *s)) c.name = *s;
    } else {
      fail(m->at, "\"cluster\" needs \"name\": the members that share the endpoints");
    }
    if (auto* e = m->get("member")) {
      if (auto s = text(*e); s && check_cluster_name(*e, *s)) c.member = *s;
    } else if (c.member.empty()) {
      fail(m->at, "\"cluster\" needs \"member\": the host name cannot be read or is not " +
                      std::string("1 to 63 letters, digits, '.', '-' or '_'"));
    }
    if (auto* e = m->get("lease")) {
      if (auto d = duration(*e)) {
        if (*d < milliseconds(1'000) || *d > milliseconds(3'600'000))
          fail(e->value_at, "\"lease\" must be between 1s and 1h, not " + text(*e).value_or(""));
        else
          c.lease = *d;
      }
    }
    if (auto* e = m->get("replicas")) {
      if (auto n = whole_number(*e, 1, 2)) c.replicas = static_cast<unsigned>(*n);
    }
    if (auto* e = m->get("notify")) {
      if (auto b = boolean(*e)) c.notify = *b;
    }
    if (!config.database.fetch_log)
      fail(section.key_at,
           "\"cluster\" needs database.fetch_log: true: the fetch log's unique key on "
           "(endpoint_name, tick) is the fence that stores each tick once");
    config.cluster = std::move(c);
  }

  // The host name when it is a valid member name, else empty.
  static std::string host_name() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0) return {};
    std::string s(buf);
    return is_cluster_name(s) ? s : std::string();
  }

  void read_metrics(const entry& section, metrics_config& metrics) {
    auto m = open_map(section, metrics_keys);
    if (!m) return;
    if (auto* e = m->get("listen")) {
      if (auto s = text(*e)) {
        if (check_listen(*e, *s)) metrics.listen = *s;
      }
    }
    const entry* cert = m->get("cert_file");
    const entry* key = m->get("key_file");
    const entry* client_ca = m->get("client_ca_file");
    if (cert && !key) fail(m->at, "\"metrics\" with \"cert_file\" needs \"key_file\"");
    if (key && !cert) fail(m->at, "\"metrics\" with \"key_file\" needs \"cert_file\"");
    if (client_ca && !(cert && key))
      fail(client_ca->key_at,
           "\"client_ca_file\" needs TLS: set \"cert_file\" and \"key_file\" too");
    if (cert) {
      if (auto p = readable_file(*cert)) metrics.cert_file = *p;
    }
    if (key) {
      if (auto p = readable_file(*key)) metrics.key_file = *p;
    }
    if (client_ca) {
      if (auto p = readable_file(*client_ca)) metrics.client_ca_file = *p;
    }
    if (auto* e = m->get("basic_auth_users")) read_basic_auth_users(*e, metrics.basic_auth_users);
    if (auto* e = m->get("max_connections")) {
      if (auto n = whole_number(*e, 1, max_listener_connections)) metrics.max_connections = *n;
    }
  }

  bool check_listen(const entry& e, const std::string& s) {
    if (s.empty()) return true;  // no listener
    // The listener's own parser, so that --check refuses what it would.
    auto parsed = observe::parse_listen_address(s);
    if (parsed) return true;
    fail(e.value_at, "\"listen\" must be HOST:PORT such as 127.0.0.1:9187 or [::1]:9187, not " +
                         quote(s) + ": " + parsed.error().message);
    return false;
  }

  // user: bcrypt hash. A hash that is not bcrypt is never echoed: it may be
  // a password pasted in by mistake.
  void read_basic_auth_users(const entry& section,
                             std::vector<std::pair<std::string, std::string>>& out) {
    if (!section.value.IsMap()) {
      fail(section.value_at,
           "\"basic_auth_users\" must be a map of user names to bcrypt hashes, "
           "not " +
               describe(section.value));
      return;
    }
    std::map<std::string, where> seen;
    for (const auto& pair : section.value) {
      where key_at = at(pair.first.Mark());
      if (!pair.first.IsScalar()) {
        fail(key_at, "user names must be strings, not " + describe(pair.first));
        continue;
      }
      const std::string name = pair.first.Scalar();
      if (name.empty() || name.find(':') != std::string::npos) {
        fail(key_at, "user name " + quote(name) + " must not be empty or contain \":\"");
        continue;
      }
      if (auto [first, inserted] = seen.emplace(name, key_at); !inserted) {
        fail(key_at, "duplicate user " + quote(name) + " (first at line " +
                         std::to_string(first->second.line) + ", column " +
                         std::to_string(first->second.column) + ")");
        continue;
      }
      const YAML::Node v = pair.second;
      entry e{name, v, key_at, v.IsNull() ? key_at : at(v.Mark())};
      auto hash = text(e, "a bcrypt hash");
      if (!hash) continue;
      if (!observe::is_bcrypt_hash(*hash)) {
        fail(e.value_at, "the password of user " + quote(name) +
                             " must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters; make "
                             "one with \"htpasswd -nBC 10 USER\")");
        continue;
      }
      out.emplace_back(name, *hash);
    }
  }

  void read_endpoints(const entry& e, const endpoint_config& defaults,
                      const field_marks& default_marks, std::vector<endpoint_config>& out) {
    if (!e.value.IsSequence()) {
      fail(e.value_at, "\"endpoints\" must be a list of endpoints, not " + describe(e.value));
      return;
    }
    if (e.value.size() == 0) {
      fail(e.value_at, "\"endpoints\" is empty: configure at least one endpoint");
      return;
    }
    std::map<std::string, where> names;
    for (const auto& item : e.value) {
      where item_at = at(item.Mark());
      auto m = open_map(item, item_at, endpoint_keys, "an endpoint");
      if (!m) continue;
      endpoint_config ep = defaults;
      field_marks marks;
      marks.timeout_set_anywhere = default_marks.timeout_set_anywhere;

      if (auto* n = m->get("name")) {
        if (auto s = text(*n)) {
          bool valid = !s->empty() && std::all_of(s->begin(), s->end(), [](char c) {
            return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '.' || c == '-';
          });
          if (!valid) {
            fail(n->value_at, "endpoint name " + quote(*s) +
                                  " may contain only letters, digits, \"_\", \".\" and \"-\"");
          } else if (auto [first, inserted] = names.emplace(*s, n->value_at); !inserted) {
            fail(n->value_at, "duplicate endpoint name " + quote(*s) + " (first at line " +
                                  std::to_string(first->second.line) + ", column " +
                                  std::to_string(first->second.column) + ")");
          }
          ep.name = *s;
        }
      } else {
        fail(m->at, "endpoint without the required key \"name\"");
      }

      bool url_ok = false;
      if (auto* u = m->get("url")) {
        if (auto s = text(*u)) {
          url_ok = check_url(*u, *s);
          ep.url = *s;
        }
      } else {
        fail(m->at, "endpoint without the required key \"url\"");
      }

      const entry* record_as = m->get("record_as");
      if (record_as) {
        if (auto s = text(*record_as)) {
          if (utf8_chars(*s) > endpoint_column_chars)
            fail(record_as->value_at, "\"record_as\" is " + std::to_string(utf8_chars(*s)) +
                                          " characters long; the endpoint column holds at most " +
                                          std::to_string(endpoint_column_chars));
          else
            ep.record_as = *s;
        }
      }
      if (url_ok && (!record_as || ep.record_as.empty()) &&
          utf8_chars(ep.url) > endpoint_column_chars) {
        fail(m->get("url")->value_at,
             "\"url\" is longer than the " + std::to_string(endpoint_column_chars) +
                 " characters the endpoint column holds: set a shorter \"record_as\"");
      }

      read_inheritable(*m, ep, marks);
      check_timeout_fits(ep, marks);
      out.push_back(std::move(ep));
    }
  }

  bool check_url(const entry& e, const std::string& s) {
    auto parsed = boost::urls::parse_uri(s);
    if (!parsed) {
      fail(e.value_at, "\"url\" " + quote(http::redact_url(s)) +
                           " is not a valid URL: " + parsed.error().message());
      return false;
    }
    std::string scheme(parsed->scheme());
    std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                   [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; });
    if (scheme != "http" && scheme != "https") {
      fail(e.value_at,
           "\"url\" " + quote(http::redact_url(s)) + " must start with http:// or https://");
      return false;
    }
    if (!parsed->has_authority() || parsed->encoded_host().empty()) {
      fail(e.value_at, "\"url\" " + quote(http::redact_url(s)) + " has no host");
      return false;
    }
    if (parsed->has_userinfo()) {
      // Not echoed: the user information may hold a password.
      fail(e.value_at, "\"url\" must not contain user information (user:password@): use \"auth\"");
      return false;
    }
    if (parsed->has_port()) {
      auto port = parsed->port();
      unsigned n = 0;
      auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
      if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || n == 0 ||
          n > 65535) {
        fail(e.value_at, "\"url\" " + quote(http::redact_url(s)) + " has an invalid port");
        return false;
      }
    }
    return true;
  }

  // The fields `defaults` and an endpoint share, read over `ep` (for an
  // endpoint, a copy of the defaults); marks say which were set.
  void read_inheritable(const map_view& m, endpoint_config& ep, field_marks& marks) {
    if (auto* e = m.get("interval")) {
      if (auto d = duration(*e)) {
        if (*d < min_interval)
          fail(e->value_at, "\"interval\" must be at least " + format_duration(min_interval) +
                                ", not " + format_duration(*d));
        else {
          ep.interval = *d;
          marks.interval = e->value_at;
        }
      }
    }
    if (auto* e = m.get("timeout")) {
      marks.timeout_set_anywhere = true;
      if (auto d = duration(*e)) {
        ep.timeout = *d;
        marks.timeout = e->value_at;
      }
    }
    if (auto* e = m.get("retries")) {
      if (auto n = whole_number(*e, 0, max_retries)) ep.retries = static_cast<unsigned>(*n);
    }
    if (auto* e = m.get("align")) {
      if (auto b = boolean(*e)) ep.align = *b;
    }
    if (auto* e = m.get("values")) {
      if (auto v = choice<json::value_policy>(
              *e, {{"strict", json::value_policy::strict}, {"skip", json::value_policy::skip}}))
        ep.flatten.values = *v;
    }
    if (auto* e = m.get("max_body")) {
      if (auto n = byte_size(*e, 1, max_body_limit)) ep.flatten.max_body_bytes = *n;
    }
    if (auto* e = m.get("max_depth")) {
      if (auto n = whole_number(*e, 1, max_depth_limit)) ep.flatten.max_depth = *n;
    }
    if (auto* e = m.get("headers")) {
      // Merged with the inherited headers: the endpoint's win, by name.
      std::vector<std::pair<std::string, std::string>> own;
      read_headers(*e, own);
      for (auto& [name, value] : own) {
        // An init-capture, since clang before 16 cannot capture a structured binding.
        auto same = std::find_if(ep.headers.begin(), ep.headers.end(),
                                 [&key = name](const auto& h) { return iequals(h.first, key); });
        if (same != ep.headers.end())
          *same = {std::move(name), std::move(value)};
        else
          ep.headers.emplace_back(std::move(name), std::move(value));
      }
    }
    if (auto* e = m.get("auth")) {
      read_auth(*e, ep.auth);
    }
    if (auto* e = m.get("tls")) {
      read_tls(*e, ep.tls);
    }
  }

  // A timeout longer than the interval could never be used whole, since the
  // next tick is skipped while a fetch still runs. Reported where it was set;
  // `marks` are those of the section being read.
  void check_timeout_fits(endpoint_config& ep, const field_marks& marks) {
    if (ep.timeout <= ep.interval) return;
    if (!marks.timeout_set_anywhere) {
      // Nobody asked for the built-in 10s: a shorter interval shortens it.
      ep.timeout = ep.interval;
      return;
    }
    std::string why =
        ": two fetches of one endpoint never overlap, so an attempt must end before the next "
        "one is due";
    if (marks.timeout)
      fail(*marks.timeout, "\"timeout\" " + format_duration(ep.timeout) +
                               " is longer than \"interval\" " + format_duration(ep.interval) +
                               why);
    else if (marks.interval)
      fail(*marks.interval, "\"interval\" " + format_duration(ep.interval) +
                                " is shorter than \"timeout\" " + format_duration(ep.timeout) +
                                " (inherited)" + why);
    // Otherwise both come from `defaults`, where it was reported.
  }

  void read_headers(const entry& section, std::vector<std::pair<std::string, std::string>>& out) {
    if (!section.value.IsMap()) {
      fail(section.value_at,
           "\"headers\" must be a map of header names to values, not " + describe(section.value));
      return;
    }
    std::vector<std::pair<std::string, where>> seen;
    for (const auto& pair : section.value) {
      where key_at = at(pair.first.Mark());
      if (!pair.first.IsScalar()) {
        fail(key_at, "header names must be strings, not " + describe(pair.first));
        continue;
      }
      const std::string name = pair.first.Scalar();
      bool token = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
      });
      if (!token) {
        fail(key_at, quote(name) + " is not a valid header name");
        continue;
      }
      if (iequals(name, "Authorization")) {
        fail(key_at,
             "header \"Authorization\" is not allowed here: put credentials in \"auth\", "
             "read from a file");
        continue;
      }
      if (iequals(name, "Host") || iequals(name, "Content-Length")) {
        fail(key_at, "header " + quote(name) + " is set by gatherstats and cannot be configured");
        continue;
      }
      auto first = std::find_if(seen.begin(), seen.end(),
                                [&](const auto& s) { return iequals(s.first, name); });
      if (first != seen.end()) {
        fail(key_at, "duplicate header " + quote(name) + " (first at line " +
                         std::to_string(first->second.line) + ", column " +
                         std::to_string(first->second.column) + ")");
        continue;
      }
      seen.emplace_back(name, key_at);
      const YAML::Node v = pair.second;
      entry e{name, v, key_at, v.IsNull() ? key_at : at(v.Mark())};
      auto value = text(e);
      if (!value) continue;
      if (value->find_first_of("\r\n", 0) != std::string::npos ||
          value->find('\0') != std::string::npos) {
        fail(e.value_at, "header " + quote(name) + " must be one line");
        continue;
      }
      out.emplace_back(name, *value);
    }
  }

  void read_auth(const entry& section, auth_options& auth) {
    auth = {};
    auto m = open_map(section, auth_keys);
    if (!m) return;
    const entry* bearer = m->get("bearer_token_file");
    const entry* user = m->get("username");
    const entry* password = m->get("password_file");
    if (bearer && (user || password)) {
      fail(m->at,
           "\"auth\" takes either \"bearer_token_file\" or \"username\" and "
           "\"password_file\", not both");
      return;
    }
    if (bearer) {
      if (auto p = readable_file(*bearer)) auth.bearer_token_file = *p;
    }
    if (user && !password) fail(m->at, "\"auth\" with \"username\" needs \"password_file\"");
    if (password && !user) fail(m->at, "\"auth\" with \"password_file\" needs \"username\"");
    if (user) {
      if (auto s = text(*user)) {
        if (s->find(':') != std::string::npos)
          fail(user->value_at, "\"username\" must not contain \":\" (basic authentication)");
        else
          auth.username = *s;
      }
    }
    if (password) {
      if (auto p = readable_file(*password)) auth.password_file = *p;
    }
  }

  void read_tls(const entry& section, tls_options& tls) {
    tls = {};
    auto m = open_map(section, tls_keys);
    if (!m) return;
    if (auto* e = m->get("ca_file")) {
      if (auto p = readable_file(*e)) tls.ca_file = *p;
    }
    const entry* cert = m->get("cert_file");
    const entry* key = m->get("key_file");
    if (cert && !key) fail(m->at, "\"tls\" with \"cert_file\" needs \"key_file\"");
    if (key && !cert) fail(m->at, "\"tls\" with \"key_file\" needs \"cert_file\"");
    if (cert) {
      if (auto p = readable_file(*cert)) tls.cert_file = *p;
    }
    if (key) {
      if (auto p = readable_file(*key)) tls.key_file = *p;
    }
    if (auto* e = m->get("insecure_skip_verify")) {
      if (auto b = boolean(*e)) tls.insecure_skip_verify = *b;
    }
  }
};

// The root of each document of a YAML stream, as parse events: where it is,
// whether it is null, and whether it is a null that did not get past the
// token its document started at.
//
// Why documents are not loaded with YAML::LoadAll: yaml-cpp 0.7 (Debian 12)
// never returns from it when a flow collection or a quoted scalar is followed
// by "," ("{a: 1},"): it yields an empty document at the "," without taking
// the ",", again and again, keeping each one until memory runs out (yaml-cpp
// issue 1040; LoadAll was fixed upstream in 2024 by PR 1319, after 0.8.0).
// Found by tests/fuzz/fuzz_config.
class document_roots : public YAML::EventHandler {
 public:
  struct root {
    YAML::Mark mark;
    bool null;
    bool stuck;
  };
  std::vector<root> roots;

  void OnDocumentStart(const YAML::Mark& m) override {
    start_ = m;
    pending_ = true;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override {
    add(m, true, m.pos == start_.pos && m.line == start_.line && m.column == start_.column);
  }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { add(m, false, false); }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                const std::string&) override {
    add(m, false, false);
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    add(m, false, false);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    add(m, false, false);
  }
  void OnMapEnd() override {}

 private:
  void add(const YAML::Mark& m, bool null, bool stuck) {
    if (pending_) roots.push_back({m, null, stuck});
    pending_ = false;
  }
  YAML::Mark start_;
  bool pending_ = false;
};

}  // namespace

load_result parse_config(std::string_view yaml, const std::string& file, const env_lookup& env) {
  load_result result;
  document_roots documents;
  YAML::Node root;
  try {
    // Two documents at most: a second one is an error, whatever it holds.
    std::istringstream in{std::string(yaml)};
    YAML::Parser parser(in);
    for (int n = 0; n < 2 && parser.HandleNextDocument(documents); ++n) {
    }
    if (documents.roots.size() == 1) root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    result.errors.push_back({file, e.mark.line + 1, e.mark.column + 1, e.msg});
    return result;
  }
  const auto& roots = documents.roots;
  if (roots.size() > 1 && roots[1].stuck) {
    auto m = roots[1].mark;
    result.errors.push_back(
        {file, m.line + 1, m.column + 1, "unexpected text after the end of the YAML document"});
    return result;
  }
  if (roots.empty() || roots[0].null) {
    result.errors.push_back({file, 0, 0,
                             "the configuration is empty: configure at least one "
                             "endpoint"});
    return result;
  }
  if (roots.size() > 1) {
    auto m = roots[1].mark;
    result.errors.push_back({file, m.line + 1, m.column + 1,
                             "more than one YAML document: the configuration is one document"});
    return result;
  }
  config_reader reader(file, env);
  auto config = reader.read(root);
  result.errors = std::move(reader.errors);
  if (result.errors.empty()) result.config = std::move(config);
  return result;
}

load_result load_config_file(const std::string& path, const env_lookup& env) {
  auto cannot_read = [&](std::string why) {
    return load_result{std::nullopt, {{path, 0, 0, "cannot read the configuration: " + why}}};
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return cannot_read(std::strerror(errno));
  std::string text;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return cannot_read("it is a directory");
  }
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return cannot_read(std::strerror(err));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return parse_config(text, path, env);
}

}  // namespace gatherstats::config
