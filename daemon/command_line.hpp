// The gatherstatsd command line (docs/command-line.md): parsed into one of
// the commands below, or an error message for the user. Pure: no I/O.
#pragma once

#include "gatherstats/log/event.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace gatherstatsd {

// What --dry-run prints on stdout (--format).
enum class output_format { tsv, json };

struct fetch_options {
  std::string source;                   // URL, file:// URL or path
  std::optional<std::string> endpoint;  // recorded instead of the source
  std::optional<std::string> database;  // libpq conninfo; absent: libpq's environment
  std::optional<std::string> ca_file;   // instead of the system trust store
  std::string table = "gatherstats_statistic";
  bool skip_bad_values = false;  // --values skip
  std::chrono::milliseconds timeout{30'000};
  bool dry_run = false;  // print the rows instead of committing them; no database
  output_format format = output_format::tsv;
};

struct migrate_options {
  std::optional<std::string> database;
  std::string table = "gatherstats_statistic";
  bool drop_redundant_indexes = false;  // after the check, drop what repeats the unique index
  // Create the table partitioned by range of fetched_at (or convert a plain
  // one), one partition per interval.
  bool partitioned = false;
  std::chrono::milliseconds partition_interval{86'400'000};
};

// Where the daemon's events go: `automatic` picks the journal when stderr is
// connected to it (JOURNAL_STREAM), stderr lines otherwise.
enum class log_target { automatic, stderr_lines, journal };

struct run_options {
  std::string config = "/etc/gatherstats/gatherstats.yaml";
  bool check = false;
  bool once = false;
  bool dry_run = false;  // with once: print the rows instead of committing them
  output_format format = output_format::tsv;
  log_target target = log_target::automatic;                                // --log-target
  gatherstats::log::severity log_level = gatherstats::log::severity::info;  // --log-level
};

struct show_help {};
struct show_version {};

using command = std::variant<show_help, show_version, fetch_options, migrate_options, run_options>;

struct parse_result {
  std::optional<command> parsed;
  std::string error;  // set when parsed is empty
};

parse_result parse_command_line(const std::vector<std::string>& args);

extern const char* const usage;

}  // namespace gatherstatsd
