// What --dry-run prints on stdout: the rows a fetch would have stored, as
// tab-separated lines or as one JSON document (docs/command-line.md).
// Pure: the callers write the text.
//
// The endpoint column is printed as it would be stored (the URL, or
// record_as / --endpoint): it is data, not a message, and is not redacted;
// error texts are (redact_secrets).
#pragma once

#include "command_line.hpp"

#include "gatherstats/fetch_record.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gatherstatsd {

// One endpoint's (or the fetch command's document's) outcome.
struct dry_run_result {
  std::string name;                                 // the endpoint's name
  std::optional<gatherstats::fetch_record> record;  // what would be stored
  std::string error;                                // when there is no record
};

// `value` as PostgreSQL prints a double precision (extra_float_digits 1, the
// default since PostgreSQL 12): the shortest digits that read back to the
// same double, in exponent form below 1e-4 and from 1e15 ("1e+15").
std::string format_float8(double value);

// `text` escaped as COPY's text format does: backslash, and the control
// characters \b \f \n \r \t \v as backslash sequences.
std::string copy_escape(std::string_view text);

// "endpoint\tkey\tnumeric_value\tfetched_at\n", then one line per row of
// every result that has a record, in the given order.
std::string format_tsv(const std::vector<dry_run_result>& results);

// {"fetches":[{"name":..,"endpoint":..,"fetched_at":..,"rows":[{"key":..,
// "value":..}]} or {"name":..,"error":..}], "failed": N} and a newline.
std::string format_json(const std::vector<dry_run_result>& results);

// The text for `format`.
std::string format_dry_run(output_format format, const std::vector<dry_run_result>& results);

}  // namespace gatherstatsd
