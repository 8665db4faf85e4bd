#include "dry_run.hpp"

#include "log_sink.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <charconv>
#include <cmath>

namespace gatherstatsd {

std::string format_float8(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  // The shortest round-trip digits, as d.ddde±XX; PostgreSQL's own Ryu code
  // (src/common/d2s.c) finds the same digits and switches to the exponent
  // form outside [1e-4, 1e15), as printf's %g does.
  char buf[64];
  auto written = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<std::size_t>(written.ptr - buf));
  auto e = sci.find('e');
  int exponent = 0;
  std::string_view exponent_text = sci.substr(e + 1);
  bool exponent_negative = exponent_text[0] == '-';
  std::from_chars(exponent_text.data() + 1, exponent_text.data() + exponent_text.size(), exponent);
  if (exponent_negative) exponent = -exponent;
  if (exponent < -4 || exponent >= 15) return std::string(sci);

  std::string out;
  std::string_view mantissa = sci.substr(0, e);
  if (mantissa[0] == '-') {
    out += '-';
    mantissa.remove_prefix(1);
  }
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  if (exponent < 0) {
    out += "0.";
    out.append(static_cast<std::size_t>(-exponent - 1), '0');
    out += digits;
    return out;
  }
  auto integer_digits = static_cast<std::size_t>(exponent) + 1;
  if (digits.size() <= integer_digits) {
    out += digits;
    out.append(integer_digits - digits.size(), '0');
  } else {
    out.append(digits, 0, integer_digits);
    out += '.';
    out.append(digits, integer_digits);
  }
  return out;
}

std::string copy_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\v':
        out += "\\v";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string format_tsv(const std::vector<dry_run_result>& results) {
  std::string out = "endpoint\tkey\tnumeric_value\tfetched_at\n";
  for (const auto& r : results) {
    if (!r.record) continue;
    const std::string endpoint = copy_escape(r.record->endpoint);
    const std::string fetched_at = gatherstats::to_iso8601(r.record->fetched_at);
    const auto& rows = r.record->rows;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      out += endpoint;
      out += '\t';
      out += copy_escape(rows.key(i));
      out += '\t';
      out += format_float8(rows.value(i));
      out += '\t';
      out += fetched_at;
      out += '\n';
    }
  }
  return out;
}

std::string format_json(const std::vector<dry_run_result>& results) {
  boost::json::array fetches;
  std::size_t failed = 0;
  for (const auto& r : results) {
    boost::json::object fetch;
    fetch["name"] = r.name;
    if (!r.record) {
      ++failed;
      fetch["error"] = redact_secrets(r.error);
      fetches.push_back(std::move(fetch));
      continue;
    }
    fetch["endpoint"] = r.record->endpoint;
    fetch["fetched_at"] = gatherstats::to_iso8601(r.record->fetched_at);
    boost::json::array rows;
    rows.reserve(r.record->rows.size());
    for (std::size_t i = 0; i < r.record->rows.size(); ++i)
      rows.push_back(
          boost::json::object{{"key", r.record->rows.key(i)}, {"value", r.record->rows.value(i)}});
    fetch["rows"] = std::move(rows);
    fetches.push_back(std::move(fetch));
  }
  boost::json::object document;
  document["fetches"] = std::move(fetches);
  document["failed"] = failed;
  return boost::json::serialize(document) + "\n";
}

std::string format_dry_run(output_format format, const std::vector<dry_run_result>& results) {
  return format == output_format::json ? format_json(results) : format_tsv(results);
}

}  // namespace gatherstatsd
