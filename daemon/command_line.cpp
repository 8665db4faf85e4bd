#include "command_line.hpp"

#include "gatherstats/config/duration.hpp"

namespace gatherstatsd {

const char* const usage =
    "usage:\n"
    "  gatherstatsd fetch URL_OR_PATH [--endpoint URL] [--database CONNINFO]\n"
    "                     [--ca-file FILE] [--table NAME] [--values strict|skip]\n"
    "                     [--timeout DURATION] [--dry-run [--format tsv|json]]\n"
    "      fetch one JSON document, flatten it and commit its rows in one transaction\n"
    "  gatherstatsd migrate [--database CONNINFO] [--table NAME] [--drop-redundant-indexes]\n"
    "                       [--partitioned [--partition-interval DURATION]]\n"
    "      create the statistics table and the fetch log beside it if missing, then check;\n"
    "      --drop-redundant-indexes drops the table's indexes that repeat its unique index\n"
    "      (DROP INDEX CONCURRENTLY: writes go on); --partitioned creates the table\n"
    "      partitioned by range of fetched_at, one partition per --partition-interval\n"
    "      (default 1d), or converts a plain one, which becomes its first partition\n"
    "  gatherstatsd [--config FILE] [--check | --once [--dry-run [--format tsv|json]]]\n"
    "               [--log-target auto|stderr|journal]\n"
    "               [--log-level debug|info|notice|warning|error]\n"
    "      run as a daemon; --check validates the file (exit 0 or 2);\n"
    "      --once fetches every endpoint once, commits, exits 1 if any failed;\n"
    "      events go to journald when stderr is connected to it (auto, the\n"
    "      default) or with journal, as lines on stderr otherwise; --log-level\n"
    "      drops events below it (default info; notice leaves out routine commits)\n"
    "  gatherstatsd --version | --help\n"
    "\n"
    "--dry-run fetches and flattens as usual but prints the rows that would be\n"
    "stored on stdout instead of storing them, and never connects to the\n"
    "database; exits 0 when every fetch succeeded, 1 otherwise. --format tsv\n"
    "(the default: a header line, then endpoint, key, numeric_value, fetched_at\n"
    "separated by tabs, with \\t \\n \\r \\\\ escaped as in COPY) or json\n"
    "(one document: {\"fetches\": [...], \"failed\": N}).\n"
    "\n"
    "CONNINFO is a libpq connection string or URI; without --database, libpq's\n"
    "environment (PGHOST, PGDATABASE, PGPASSFILE, ...) applies.\n";

namespace {

// Walks the arguments; accepts both "--name VALUE" and "--name=VALUE".
class arg_reader {
 public:
  explicit arg_reader(const std::vector<std::string>& args) : args_(args) {}
  bool done() const { return i_ >= args_.size(); }
  const std::string& peek() const { return args_[i_]; }
  void skip() { ++i_; }

  // If the current argument is option `name`, consumes it and its value.
  // Returns false if it is not; sets `error` if the value is missing.
  bool option(std::string_view name, std::optional<std::string>& value, std::string& error) {
    const std::string& a = args_[i_];
    if (a == name) {
      if (i_ + 1 >= args_.size()) {
        error = std::string(name) + " needs a value";
        ++i_;
        return true;
      }
      value = args_[i_ + 1];
      i_ += 2;
      return true;
    }
    if (a.size() > name.size() && a.starts_with(name) && a[name.size()] == '=') {
      value = a.substr(name.size() + 1);
      ++i_;
      return true;
    }
    return false;
  }

 private:
  const std::vector<std::string>& args_;
  std::size_t i_ = 0;
};

parse_result fail(std::string message) { return {std::nullopt, std::move(message)}; }

const std::string drop_redundant_indexes = "--drop-redundant-indexes";
const std::string only_for_migrate = drop_redundant_indexes +
                                     " applies only to migrate (gatherstatsd migrate " +
                                     drop_redundant_indexes + ")";

// --format's value; an error message, or empty.
std::string apply_format(const std::optional<std::string>& format, bool dry_run,
                         output_format& out) {
  if (!format) return {};
  if (!dry_run) return "--format needs --dry-run";
  if (*format == "tsv")
    out = output_format::tsv;
  else if (*format == "json")
    out = output_format::json;
  else
    return "--format must be tsv or json, not \"" + *format + "\"";
  return {};
}

std::optional<log_target> parse_log_target(const std::string& s) {
  if (s == "auto") return log_target::automatic;
  if (s == "stderr") return log_target::stderr_lines;
  if (s == "journal") return log_target::journal;
  return std::nullopt;
}

std::optional<gatherstats::log::severity> parse_log_level(const std::string& s) {
  using gatherstats::log::severity;
  if (s == "debug") return severity::debug;
  if (s == "info") return severity::info;
  if (s == "notice") return severity::notice;
  if (s == "warning") return severity::warning;
  if (s == "error") return severity::error;
  return std::nullopt;
}

parse_result parse_fetch(arg_reader& in) {
  fetch_options o;
  std::optional<std::string> source, table, values, timeout, format;
  std::string error;
  while (!in.done()) {
    if (in.option("--endpoint", o.endpoint, error) || in.option("--database", o.database, error) ||
        in.option("--ca-file", o.ca_file, error) || in.option("--table", table, error) ||
        in.option("--values", values, error) || in.option("--timeout", timeout, error) ||
        in.option("--format", format, error)) {
      if (!error.empty()) return fail(error);
      continue;
    }
    const std::string& a = in.peek();
    if (a == "--dry-run") {
      o.dry_run = true;
      in.skip();
      continue;
    }
    if (a == drop_redundant_indexes) return fail("fetch: " + only_for_migrate);
    if (a.starts_with("--") || (a.starts_with("-") && a.size() > 1))
      return fail("fetch: unknown option " + a);
    if (source) return fail("fetch: only one URL_OR_PATH, got also \"" + a + "\"");
    source = a;
    in.skip();
  }
  if (!source) return fail("fetch: missing URL_OR_PATH");
  o.source = *source;
  if (auto bad = apply_format(format, o.dry_run, o.format); !bad.empty())
    return fail("fetch: " + bad);
  if (table) o.table = *table;
  if (values) {
    if (*values == "skip")
      o.skip_bad_values = true;
    else if (*values != "strict")
      return fail("fetch: --values must be strict or skip, not \"" + *values + "\"");
  }
  if (timeout) {
    auto d = gatherstats::config::parse_duration(*timeout);
    if (!d)
      return fail("fetch: --timeout \"" + *timeout + "\" is not a duration like 500ms, 10s, 5m");
    o.timeout = *d;
  }
  return {command{std::move(o)}, {}};
}

parse_result parse_migrate(arg_reader& in) {
  migrate_options o;
  std::optional<std::string> table, interval;
  std::string error;
  while (!in.done()) {
    if (in.option("--database", o.database, error) || in.option("--table", table, error) ||
        in.option("--partition-interval", interval, error)) {
      if (!error.empty()) return fail(error);
      continue;
    }
    if (in.peek() == drop_redundant_indexes) {
      o.drop_redundant_indexes = true;
      in.skip();
      continue;
    }
    if (in.peek() == "--partitioned") {
      o.partitioned = true;
      in.skip();
      continue;
    }
    if (in.peek() == "--dry-run" || in.peek().starts_with("--format"))
      return fail("migrate: " + in.peek() + " does not apply to migrate");
    return fail("migrate: unexpected argument " + in.peek());
  }
  if (table) o.table = *table;
  if (interval) {
    if (!o.partitioned) return fail("migrate: --partition-interval needs --partitioned");
    auto d = gatherstats::config::parse_duration(*interval);
    if (!d || *d < std::chrono::seconds(1) || *d > std::chrono::days(366) ||
        *d % std::chrono::seconds(1) != std::chrono::milliseconds(0))
      return fail("migrate: --partition-interval \"" + *interval +
                  "\" is not a duration of whole seconds from 1s to 366d, like 1h, 1d, 7d");
    o.partition_interval = *d;
  }
  return {command{std::move(o)}, {}};
}

}  // namespace

parse_result parse_command_line(const std::vector<std::string>& args) {
  arg_reader in(args);
  if (in.done()) return {command{run_options{}}, {}};
  const std::string& first = in.peek();
  if (first == "--help" || first == "-h") return {command{show_help{}}, {}};
  if (first == "--version") return {command{show_version{}}, {}};
  if (first == "fetch") {
    in.skip();
    return parse_fetch(in);
  }
  if (first == "migrate") {
    in.skip();
    return parse_migrate(in);
  }
  run_options o;
  std::optional<std::string> config, target, level, format;
  std::string error;
  while (!in.done()) {
    if (in.option("--config", config, error) || in.option("--log-target", target, error) ||
        in.option("--log-level", level, error) || in.option("--format", format, error)) {
      if (!error.empty()) return fail(error);
      continue;
    }
    const std::string& a = in.peek();
    if (a == "--check")
      o.check = true;
    else if (a == "--once")
      o.once = true;
    else if (a == "--dry-run")
      o.dry_run = true;
    else if (a == "--help" || a == "-h")
      return {command{show_help{}}, {}};
    else if (a == "--version")
      return {command{show_version{}}, {}};
    else if (a == drop_redundant_indexes)
      return fail(only_for_migrate);
    else
      return fail("unknown argument " + a);
    in.skip();
  }
  if (o.check && o.once) return fail("--check and --once cannot be combined");
  if (o.dry_run && !o.once) return fail("--dry-run needs --once (or the fetch command)");
  if (auto bad = apply_format(format, o.dry_run, o.format); !bad.empty()) return fail(bad);
  if (config) o.config = *config;
  if (target) {
    auto t = parse_log_target(*target);
    if (!t) return fail("--log-target must be auto, stderr or journal, not \"" + *target + "\"");
    o.target = *t;
  }
  if (level) {
    auto l = parse_log_level(*level);
    if (!l)
      return fail("--log-level must be debug, info, notice, warning or error, not \"" + *level +
                  "\"");
    o.log_level = *l;
  }
  return {command{std::move(o)}, {}};
}

}  // namespace gatherstatsd
