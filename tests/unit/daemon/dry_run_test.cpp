#include "dry_run.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

using namespace gatherstatsd;

namespace {

dry_run_result result(std::string name, std::string endpoint,
                      std::vector<std::pair<std::string, double>> rows) {
  dry_run_result r;
  r.name = std::move(name);
  gatherstats::fetch_record record;
  record.name = r.name;
  record.endpoint = std::move(endpoint);
  record.fetched_at = gatherstats::timestamp(std::chrono::microseconds(1'795'910'399'123'456));
  for (const auto& [k, v] : rows) record.rows.push_back(k, v);
  r.record = std::move(record);
  return r;
}

dry_run_result failed(std::string name, std::string error) {
  dry_run_result r;
  r.name = std::move(name);
  r.error = std::move(error);
  return r;
}

}  // namespace

TEST_CASE("numbers are printed as PostgreSQL prints a double precision", "[cli][dry-run]") {
  CHECK(format_float8(0) == "0");
  CHECK(format_float8(-0.0) == "-0");
  CHECK(format_float8(1234) == "1234");
  CHECK(format_float8(-7) == "-7");
  CHECK(format_float8(0.1) == "0.1");
  CHECK(format_float8(1.5) == "1.5");
  CHECK(format_float8(123.456) == "123.456");
  CHECK(format_float8(0.0001) == "0.0001");
  CHECK(format_float8(0.00012) == "0.00012");
  CHECK(format_float8(0.00001) == "1e-05");
  CHECK(format_float8(1.5e-7) == "1.5e-07");
  CHECK(format_float8(1e14) == "100000000000000");
  CHECK(format_float8(123456789012345.0) == "123456789012345");
  CHECK(format_float8(1e15) == "1e+15");
  CHECK(format_float8(1234567890123456789.0) == "1.2345678901234568e+18");
  CHECK(format_float8(1e100) == "1e+100");
  CHECK(format_float8(-2.5e-300) == "-2.5e-300");
  CHECK(format_float8(0.30000000000000004) == "0.30000000000000004");
  CHECK(format_float8(std::numeric_limits<double>::max()) == "1.7976931348623157e+308");
  CHECK(format_float8(std::numeric_limits<double>::denorm_min()) == "5e-324");
  CHECK(format_float8(std::nan("")) == "NaN");
  CHECK(format_float8(-std::numeric_limits<double>::infinity()) == "-Infinity");
}

TEST_CASE("TSV: a header, one line per row, COPY's escapes", "[cli][dry-run]") {
  CHECK(copy_escape("plain.key") == "plain.key");
  CHECK(copy_escape("a\tb\nc\\d\re\bf\fg\vh") == "a\\tb\\nc\\\\d\\re\\bf\\fg\\vh");

  std::vector<dry_run_result> results;
  results.push_back(result("a", "https://h/x?api_key=k", {{"x.y", 1.5}, {"tab\there", 2}}));
  results.push_back(failed("b", "https://h/y: HTTP 500"));
  results.push_back(result("c", "file:///s.json", {}));
  CHECK(format_tsv(results) ==
        "endpoint\tkey\tnumeric_value\tfetched_at\n"
        "https://h/x?api_key=k\tx.y\t1.5\t2026-11-28T23:59:59.123456Z\n"
        "https://h/x?api_key=k\ttab\\there\t2\t2026-11-28T23:59:59.123456Z\n");
  CHECK(format_dry_run(output_format::tsv, {}) == "endpoint\tkey\tnumeric_value\tfetched_at\n");
}

TEST_CASE("JSON: one document with every fetch, failures included, and their count",
          "[cli][dry-run]") {
  std::vector<dry_run_result> results;
  results.push_back(result("a", "http://h/x", {{"x.y", 1.5}, {"quote\"d", 1e20}}));
  results.push_back(failed("b", "https://h/y?token=t0k: HTTP 500"));
  results.push_back(result("c", "file:///s.json", {}));
  auto text = format_dry_run(output_format::json, results);
  CHECK(text.back() == '\n');
  CHECK(text.find("t0k") == std::string::npos);
  auto doc = boost::json::parse(text).as_object();
  CHECK(doc.at("failed").to_number<int>() == 1);
  auto& fetches = doc.at("fetches").as_array();
  REQUIRE(fetches.size() == 3);
  auto& a = fetches[0].as_object();
  CHECK(a.at("name").as_string() == "a");
  CHECK(a.at("endpoint").as_string() == "http://h/x");
  CHECK(a.at("fetched_at").as_string() == "2026-11-28T23:59:59.123456Z");
  auto& rows = a.at("rows").as_array();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].at("key").as_string() == "x.y");
  CHECK(rows[0].at("value").to_number<double>() == 1.5);
  CHECK(rows[1].at("key").as_string() == "quote\"d");
  CHECK(rows[1].at("value").to_number<double>() == 1e20);
  auto& b = fetches[1].as_object();
  CHECK(b.at("name").as_string() == "b");
  CHECK(b.at("error").as_string() == "https://h/y?token=REDACTED: HTTP 500");
  CHECK_FALSE(b.contains("rows"));
  CHECK(fetches[2].at("rows").as_array().empty());
}
