#include "gatherstats/json/flatten.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

using gatherstats::json::flat_rows;
using gatherstats::json::flatten;
using gatherstats::json::flatten_options;
using gatherstats::json::flattener;
using gatherstats::json::value_policy;

namespace {

using row_list = std::vector<std::pair<std::string, double>>;

row_list rows_of(const flat_rows& rows) {
  row_list out;
  for (std::size_t i = 0; i < rows.size(); ++i) out.emplace_back(rows.key(i), rows.value(i));
  return out;
}

flatten_options skipping() {
  flatten_options o;
  o.values = value_policy::skip;
  return o;
}

flat_rows accepted(std::string_view doc, const flatten_options& options = {}) {
  auto r = flatten(doc, options);
  if (!r) FAIL_CHECK("unexpected failure: " << r.error().message);
  REQUIRE(r.has_value());
  return std::move(*r);
}

std::string rejected(std::string_view doc, const flatten_options& options = {}) {
  auto r = flatten(doc, options);
  if (r) FAIL_CHECK("accepted " << r->size() << " rows");
  REQUIRE(r.has_error());
  CHECK_FALSE(r.error().is_transient());
  return r.error().message;
}

double only_value(std::string_view doc) {
  const flat_rows rows = accepted(doc);
  REQUIRE(rows.size() == 1);
  return rows.value(0);
}

// A message is one line of valid UTF-8 without control characters.
bool printable_one_line(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x20 || b == 0x7F) return false;
    std::size_t len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : 4;
    if (b >= 0x80 && (b < 0xC2 || b > 0xF4)) return false;
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

std::string nested_objects(std::size_t depth) {
  // depth objects in all, the top-level one included, with a leaf inside.
  std::string doc;
  for (std::size_t i = 1; i < depth; ++i) doc += "{\"k\":";
  doc += "{\"v\":1}";
  doc += std::string(depth - 1, '}');
  return doc;
}

}  // namespace

TEST_CASE("flatten: the example document gives its six rows in order", "[flatten]") {
  const auto rows = accepted(R"({"asset_counts": {"all": {"total": 1234, "complete": 7},
      "by_institution": {"INSTA": {"total": 7, "complete": 4},
                         "INSTB": {"total": 103, "complete": 7}}}})");
  CHECK(rows_of(rows) == row_list{{"asset_counts.all.total", 1234},
                                  {"asset_counts.all.complete", 7},
                                  {"asset_counts.by_institution.INSTA.total", 7},
                                  {"asset_counts.by_institution.INSTA.complete", 4},
                                  {"asset_counts.by_institution.INSTB.total", 103},
                                  {"asset_counts.by_institution.INSTB.complete", 7}});
  CHECK(rows.skipped() == 0);
  CHECK(rows[2].key == "asset_counts.by_institution.INSTA.total");
  CHECK(rows[2].value == 7);
}

TEST_CASE("flatten: a non-numeric string rejects under strict, is dropped under skip",
          "[flatten]") {
  const std::string doc = R"({"foo": 45, "bar": {"buzz": 70, "bang": "hello"}, "quux": {}})";
  CHECK(rejected(doc) == R"(value at "bar.bang" is a string that is not a number: "hello")");

  const auto rows = accepted(doc, skipping());
  CHECK(rows_of(rows) == row_list{{"foo", 45}, {"bar.buzz", 70}});
  CHECK(rows.skipped() == 1);
}

TEST_CASE("flatten: the document must be an object", "[flatten]") {
  CHECK(rejected(R"([{"a": 1}])") == "document is not a JSON object (it is an array)");
  CHECK(rejected("[]", skipping()) == "document is not a JSON object (it is an array)");
  CHECK(rejected("42") == "document is not a JSON object (it is a number)");
  CHECK(rejected("-1.5e3") == "document is not a JSON object (it is a number)");
  CHECK(rejected(R"("text")") == "document is not a JSON object (it is a string)");
  CHECK(rejected("true") == "document is not a JSON object (it is a boolean)");
  CHECK(rejected("null") == "document is not a JSON object (it is null)");
  CHECK(rejected("") == "document is empty");
  CHECK(rejected(" \n\t ") == "document is empty");
}

TEST_CASE("flatten: empty objects yield no rows", "[flatten]") {
  CHECK(accepted("{}").empty());
  CHECK(accepted(R"( {"a": {}, "b": {"c": {}}} )").empty());
}

TEST_CASE("flatten: null deep inside rejects under strict, naming its path", "[flatten]") {
  const std::string doc = R"({"a": {"b": {"ok": 1, "c": null}}, "d": 2})";
  CHECK(rejected(doc) == R"(value at "a.b.c" is null)");
  const auto rows = accepted(doc, skipping());
  CHECK(rows_of(rows) == row_list{{"a.b.ok", 1}, {"d", 2}});
  CHECK(rows.skipped() == 1);
}

TEST_CASE("flatten: arrays are leaves that are not numbers", "[flatten]") {
  const std::string doc = R"({"a": {"list": [1, {"x": null}, [[2]]]}, "b": 3, "c": []})";
  CHECK(rejected(doc) == R"(value at "a.list" is an array)");
  const auto rows = accepted(doc, skipping());
  CHECK(rows_of(rows) == row_list{{"b", 3}});
  CHECK(rows.skipped() == 2);  // one per array, whatever it holds

  // Their content must still be valid JSON.
  CHECK(rejected(R"({"a": [1, {"x" 2}]})", skipping()) ==
        R"(invalid JSON at byte 15 (in the array at "a"): syntax error)");
}

TEST_CASE("flatten: booleans are 1 and 0", "[flatten]") {
  CHECK(rows_of(accepted(R"({"yes": true, "no": false})")) == row_list{{"yes", 1}, {"no", 0}});
}

TEST_CASE("flatten: numbers of every form", "[flatten]") {
  CHECK(rows_of(accepted(R"({"i": -12, "z": 0, "f": 2.5, "e": 1E2, "n": -0.25e-1})")) ==
        row_list{{"i", -12}, {"z", 0}, {"f", 2.5}, {"e", 100}, {"n", -0.025}});
}

TEST_CASE("flatten: strings that are wholly a decimal number", "[flatten]") {
  const std::vector<std::pair<std::string, double>> cases = {
      {R"(" 12.5 ")", 12.5}, {R"("-3")", -3}, {R"("1e3")", 1000},  {R"(".5")", 0.5},
      {R"("5.")", 5},        {R"("+7")", 7},  {R"("\t42\n")", 42}, {R"("1E-2")", 0.01},
      {R"("-.5e+1")", -5},   {R"("007")", 7}, {R"("\r\n 0 ")", 0}, {R"("0.1")", 0.1}};
  for (const auto& [text, value] : cases) {
    INFO(text);
    CHECK(only_value(R"({"s": )" + text + "}") == value);
  }
}

TEST_CASE("flatten: strings that are not numbers", "[flatten]") {
  const std::vector<std::string> cases = {
      R"("1.2.3")",     R"("nan")", R"("NaN")", R"("")",      R"("0x10")",     R"("inf")",
      R"("-Infinity")", R"(" ")",   R"("1e")",  R"("--1")",   R"("1 2")",      R"("e5")",
      R"(".")",         R"("+")",   R"("1,5")", R"("12abc")", R"("\u00a012")", R"("1_000")"};
  for (const auto& text : cases) {
    INFO(text);
    const std::string doc = R"({"k": )" + text + "}";
    CHECK_THAT(rejected(doc),
               Catch::StartsWith(R"(value at "k" is a string that is not a number: )"));
    const auto rows = accepted(doc, skipping());
    CHECK(rows.empty());
    CHECK(rows.skipped() == 1);
  }
}

TEST_CASE("flatten: large integers and doubles round as strtod does", "[flatten]") {
  const std::vector<std::string> cases = {
      "9007199254740993",      // 2^53 + 1: not a double
      "-9223372036854775808",  // int64 minimum
      "9223372036854775808",   // just above int64
      "18446744073709551615",  // uint64 maximum
      "18446744073709551616",  // beyond uint64: parsed from text
      "123456789012345678901234567890",
      "0.1",
      "0.30000000000000004",
      "2.2250738585072011e-308",
      "1.7976931348623157e308",
      "4.9e-324",
      "1e-400",  // underflows to zero, as strtod does
      // Boost.JSON 1.81 rounds these wrongly on its own:
      "0.37877497003578644e-9",
      "0.048479699021827475e251",
      "0.7718893990222459937e143",
      "0.792305671798614556e40",
      "0.05440310410496450e167",
      "1.00000000000000011102230246251565404236316680908203125",
  };
  for (const auto& text : cases) {
    INFO(text);
    const double expected = std::strtod(text.c_str(), nullptr);
    CHECK(only_value(R"({"n": )" + text + "}") == expected);
    CHECK(only_value(R"({"n": ")" + text + "\"}") == expected);
  }
}

TEST_CASE("flatten: numbers too large for a double are not numbers", "[flatten]") {
  CHECK(rejected(R"({"x": 1e400})") == R"(value at "x" is a number too large for a double: 1e400)");
  CHECK(rejected(R"({"x": " -1e400"})") ==
        R"(value at "x" is a string with a number too large for a double: " -1e400")");
  CHECK(accepted(R"({"x": -1e400, "y": 1})", skipping()).skipped() == 1);
}

TEST_CASE("flatten: a duplicate key, the last one wins", "[flatten]") {
  SECTION("scalar over object") {
    CHECK(rows_of(accepted(R"({"a": {"x": 1, "y": 2}, "b": 3, "a": 5})")) ==
          row_list{{"b", 3}, {"a", 5}});
  }
  SECTION("object over scalar") {
    CHECK(rows_of(accepted(R"({"a": 5, "a": {"x": 1}})")) == row_list{{"a.x", 1}});
  }
  SECTION("object over object: no merging") {
    CHECK(rows_of(accepted(R"({"a": {"x": 1, "y": 2}, "a": {"z": 3}})")) == row_list{{"a.z", 3}});
  }
  SECTION("bad then good, under strict") {
    CHECK(rows_of(accepted(R"({"a": null, "a": 1})")) == row_list{{"a", 1}});
    CHECK(rows_of(accepted(R"({"a": {"b": "x", "c": [1]}, "a": 2})")) == row_list{{"a", 2}});
  }
  SECTION("the first bad leaf still live is the one named") {
    CHECK(rejected(R"({"a": null, "b": [], "a": 1, "c": null})") == R"(value at "b" is an array)");
  }
  SECTION("bad then good, under skip: nothing counted") {
    const auto rows = accepted(R"({"a": null, "a": 1, "b": {"c": [], "c": 2}})", skipping());
    CHECK(rows_of(rows) == row_list{{"a", 1}, {"b.c", 2}});
    CHECK(rows.skipped() == 0);
  }
  SECTION("good then bad") {
    CHECK(rejected(R"({"a": 1, "a": "x"})") ==
          R"(value at "a" is a string that is not a number: "x")");
    const auto rows = accepted(R"({"a": 1, "a": "x"})", skipping());
    CHECK(rows.empty());
    CHECK(rows.skipped() == 1);
  }
  SECTION("inside a nested object, three times") {
    CHECK(rows_of(accepted(R"({"o": {"k": 1, "j": 0, "k": 2, "k": 3}})")) ==
          row_list{{"o.j", 0}, {"o.k", 3}});
  }
  SECTION("in an object with many keys") {
    // Every tenth key repeated; k5 replaced by null then 5; k7 by an object.
    std::string doc = "{";
    row_list expected;
    for (int i = 0; i < 1000; ++i) {
      doc += "\"k" + std::to_string(i) + "\": " + std::to_string(i) + ", ";
      if (i % 10 != 0 && i != 5 && i != 7) expected.emplace_back("k" + std::to_string(i), i);
    }
    for (int i = 0; i < 1000; i += 10) {
      doc += "\"k" + std::to_string(i) + "\": " + std::to_string(-i) + ", ";
      expected.emplace_back("k" + std::to_string(i), -i);
    }
    const std::string tail = R"("k5": null, "k7": {"x": LEAF, "y": {"z": 1}}, "k5": 5})";
    expected.insert(expected.end(), {{"k7.x", 0.5}, {"k7.y.z", 1}, {"k5", 5}});
    std::string good = doc + tail;
    good.replace(good.find("LEAF"), 4, "0.5");
    CHECK(rows_of(accepted(good)) == expected);
    std::string bad = doc + tail;
    bad.replace(bad.find("LEAF"), 4, "null");
    CHECK(rejected(bad) == R"(value at "k7.x" is null)");
  }
}

TEST_CASE("flatten: two leaves with one path", "[flatten]") {
  CHECK(rejected(R"({"a.b": 1, "a": {"b": 2}})") == R"(two values have the same key path "a.b")");
  CHECK(rejected(R"({"x": {"a.": {"b": 1}}, "x.a": {".b": 2}})") ==
        R"(two values have the same key path "x.a..b")");
  // Dots alone are fine, and a replaced value no longer collides.
  CHECK(rows_of(accepted(R"({"a.b": 1, "a": {"c": 2}})")) == row_list{{"a.b", 1}, {"a.c", 2}});
  CHECK(rows_of(accepted(R"({"a.b": 1, "a": {"b": 2}, "a": 3})")) ==
        row_list{{"a.b", 1}, {"a", 3}});
}

TEST_CASE("flatten: key paths up to max_key_chars characters", "[flatten]") {
  const std::string at_limit(512, 'k');
  CHECK(accepted("{\"" + at_limit + "\": 1}").key(0) == at_limit);
  CHECK_THAT(rejected("{\"" + at_limit + "k\": 1}"),
             Catch::StartsWith("key path longer than 512 characters: \"kkkk"));

  // Joined: 255 + '.' + 256 characters.
  const std::string outer(255, 'o');
  const std::string inner(256, 'i');
  CHECK(accepted("{\"" + outer + "\": {\"" + inner + "\": 1}}").key(0).size() == 512);
  CHECK_THAT(rejected("{\"" + outer + "\": {\"" + inner + "i\": 1}}"),
             Catch::StartsWith("key path longer than 512 characters: \"oooo"));

  // A character is a code point, not a byte: "é" is two bytes, "😀" four.
  std::string accents;
  for (int i = 0; i < 511; ++i) accents += "\xC3\xA9";
  CHECK(accepted("{\"" + accents + "\xF0\x9F\x98\x80\": 1}").key(0).size() == 511 * 2 + 4);
  CHECK_THAT(rejected("{\"" + accents + "\xC3\xA9\xC3\xA9\": 1}"),
             Catch::StartsWith("key path longer than 512 characters"));
  // \u escapes count as the characters they stand for.
  std::string escaped;
  for (int i = 0; i < 512; ++i) escaped += "\\u00e9";
  CHECK(accepted("{\"" + escaped + "\": 1}").key(0) == accents + "\xC3\xA9");

  flatten_options small;
  small.max_key_chars = 3;
  CHECK(rows_of(accepted(R"({"a": {"b": 1}})", small)) == row_list{{"a.b", 1}});
  CHECK(rejected(R"({"a": {"bc": 1}})", small) == R"(key path longer than 3 characters: "a.bc")");
}

TEST_CASE("flatten: nesting depth", "[flatten]") {
  CHECK(accepted(nested_objects(64)).size() == 1);
  const std::string deep = nested_objects(65);
  CHECK_THAT(rejected(deep), Catch::StartsWith("nesting deeper than 64 levels at \"k.k.k."));

  // Arrays count too, inside objects and inside each other.
  CHECK(accepted(R"({"a": [[1]]})", skipping()).skipped() == 1);

  flatten_options three;
  three.max_depth = 3;
  CHECK(rows_of(accepted(R"({"a": {"b": {"c": 1}}})", three)) == row_list{{"a.b.c", 1}});
  CHECK(rejected(R"({"a": {"b": {"c": {"d": 1}}}})", three) ==
        R"(nesting deeper than 3 levels at "a.b.c")");
  flatten_options three_skip = three;
  three_skip.values = value_policy::skip;
  CHECK(accepted(R"({"a": {"b": [1]}})", three_skip).skipped() == 1);
  CHECK(rejected(R"({"a": {"b": [[1]]}})", three) ==
        R"(nesting deeper than 3 levels in the array at "a.b")");
}

TEST_CASE("flatten: a million-deep document fails fast", "[flatten]") {
  const std::size_t n = 1'000'000;
  const auto started = std::chrono::steady_clock::now();

  CHECK(rejected(std::string(n, '[')) == "document is not a JSON object (it is an array)");

  std::string arrays = "{\"a\": " + std::string(n, '[');
  CHECK_THAT(rejected(arrays),
             Catch::StartsWith("nesting deeper than 64 levels in the array at \"a\""));

  std::string objects;
  for (std::size_t i = 0; i < n; ++i) objects += "{\"a\":";
  CHECK_THAT(rejected(objects), Catch::StartsWith("nesting deeper than 64 levels at \"a.a.a"));

  // Fed in pieces, the parser still stops at the limit.
  flattener f;
  auto first = f.write(std::string_view(objects).substr(0, 100));
  CHECK(first.has_value());
  auto second = f.write(std::string_view(objects).substr(100));
  REQUIRE(second.has_error());
  CHECK_THAT(second.error().message, Catch::StartsWith("nesting deeper than 64 levels"));

  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
}

TEST_CASE("flatten: the body size limit", "[flatten]") {
  flatten_options o;
  o.max_body_bytes = 10;
  CHECK(accepted(R"({"ab": 12})", o).size() == 1);  // exactly 10 bytes
  CHECK(rejected(R"({"ab": 123})", o) == "document is larger than the limit of 10 bytes");

  flattener f(o);
  CHECK(f.write(R"({"ab":)").has_value());
  auto r = f.write(" 1234}");
  REQUIRE(r.has_error());
  CHECK(r.error().message == "document is larger than the limit of 10 bytes");
}

TEST_CASE("flatten: invalid UTF-8", "[flatten]") {
  SECTION("in a key") {
    const std::string m = rejected("{\"ok\": 1, \"b\xFF\": 2}");
    CHECK(m == "invalid JSON at byte 12 (in the top-level object): invalid UTF-8");
    CHECK(printable_one_line(m));
  }
  SECTION("in a value") {
    const std::string m = rejected("{\"a\": {\"b\": \"x\xC3\x28\"}}", skipping());
    CHECK(m == R"(invalid JSON at byte 14 (at "a.b"): invalid UTF-8)");
  }
  SECTION("overlong and surrogate encodings") {
    CHECK_THAT(rejected("{\"a\": \"\xC0\xAF\"}"), Catch::EndsWith("invalid UTF-8"));
    CHECK_THAT(rejected("{\"a\": \"\xED\xA0\x80\"}"), Catch::EndsWith("invalid UTF-8"));
  }
  SECTION("split between pieces") {
    flattener f;
    CHECK(f.write("{\"a\": \"\xE2\x82").has_value());
    auto r = f.write("(\"}");
    REQUIRE(r.has_error());
    CHECK(r.error().message == R"(invalid JSON at byte 9 (at "a"): invalid UTF-8)");
  }
  SECTION("a syntax error after a whole character split between pieces") {
    flattener f;
    CHECK(f.write("{\"\xC3").has_value());
    CHECK(f.write("\xA9\"").has_value());
    auto r = f.write(",");
    REQUIRE(r.has_error());
    CHECK(r.error().message == "invalid JSON at byte 5 (at \"\xC3\xA9\"): syntax error");
  }
  SECTION("valid UTF-8 outside a string is a syntax error") {
    CHECK(rejected("{\"a\": \xC3\xA9}") == R"(invalid JSON at byte 6 (at "a"): syntax error)");
  }
}

TEST_CASE("flatten: messages escape what they quote", "[flatten]") {
  const std::string m = rejected("{\"line\\nbreak\\u0007\": \"tab\\there \\\"q\\\" \\u2028\"}");
  CHECK(m == R"(value at "line\nbreak\u0007" is a string that is not a number: )"
             R"("tab\there \"q\" \u2028")");
  CHECK(printable_one_line(m));

  const std::string long_value(100, 'x');
  CHECK(rejected(R"({"k": ")" + long_value + "\"}") ==
        R"(value at "k" is a string that is not a number: ")" + std::string(40, 'x') + "\"...");
}

TEST_CASE("flatten: keys keep their characters", "[flatten]") {
  CHECK(rows_of(accepted(R"({"\u00e9t\u00e9": {"a\"b": 1, "": 2, "sp ace": 3}})")) ==
        row_list{{"\xC3\xA9t\xC3\xA9.a\"b", 1},
                 {"\xC3\xA9t\xC3\xA9.", 2},
                 {"\xC3\xA9t\xC3\xA9.sp ace", 3}});
}

TEST_CASE("flatten: a truncated document", "[flatten]") {
  CHECK(rejected(R"({"a": {"b": 1)") ==
        R"(invalid JSON at byte 13 (in the object at "a"): the document is truncated)");
  CHECK(rejected(R"({"a": "abc)") ==
        R"(invalid JSON at byte 10 (at "a"): the document is truncated)");
  CHECK(rejected(R"({"a": 1.5e)") ==
        R"(invalid JSON at byte 10 (at "a"): the document is truncated)");
  CHECK(rejected(R"({"a)") ==
        R"(invalid JSON at byte 3 (in the top-level object): the document is truncated)");
}

TEST_CASE("flatten: invalid JSON", "[flatten]") {
  CHECK(rejected(R"({"a": 1,})") ==
        "invalid JSON at byte 8 (in the top-level object): syntax error");
  CHECK(rejected(R"({"a": tru})") == R"(invalid JSON at byte 6 (at "a"): syntax error)");
  CHECK(rejected(R"({'a': 1})") ==
        "invalid JSON at byte 1 (in the top-level object): syntax error");
  CHECK(rejected(R"({"a": 01})") ==
        "invalid JSON at byte 7 (in the top-level object): syntax error");
  CHECK(rejected(R"({"a": 1} // comment)") == "unexpected data after the JSON object at byte 9");
}

TEST_CASE("flatten: data after the object", "[flatten]") {
  CHECK(rejected(R"({"a": 1} x)") == "unexpected data after the JSON object at byte 9");
  CHECK(rejected(R"({"a": 1}{})") == "unexpected data after the JSON object at byte 8");
  CHECK(rejected("{\"a\": 1}\n\n[") == "unexpected data after the JSON object at byte 10");
  CHECK(accepted("\r\n {\"a\": 1} \n\t").size() == 1);

  flattener f;
  CHECK(f.write(R"({"a": 1} )").has_value());
  auto r = f.write("  2");
  REQUIRE(r.has_error());
  CHECK(r.error().message == "unexpected data after the JSON object at byte 11");
}

TEST_CASE("flatten: a UTF-8 byte order mark is allowed at the start", "[flatten]") {
  CHECK(rows_of(accepted("\xEF\xBB\xBF{\"a\": 1}")) == row_list{{"a", 1}});
  CHECK(rejected("\xEF\xBB\xBF") == "document is empty");
  // Offsets still count it.
  CHECK(rejected("\xEF\xBB\xBF{\"a\": x}") == R"(invalid JSON at byte 9 (at "a"): syntax error)");
  // Only at the start, and only whole.
  CHECK(rejected("\xEF\xBB{}") == "invalid JSON at byte 0 (at the top level): invalid UTF-8");
  CHECK(rejected("\xEF") == "invalid JSON at byte 0 (at the top level): invalid UTF-8");
  CHECK(rejected("{\"a\": 1}\xEF\xBB\xBF") == "unexpected data after the JSON object at byte 8");

  flattener f;
  for (char c : std::string_view("\xEF\xBB\xBF{\"a\": 2}")) REQUIRE(f.write({&c, 1}).has_value());
  auto rows = f.finish();
  REQUIRE(rows.has_value());
  CHECK(rows_of(*rows) == row_list{{"a", 2}});
}

TEST_CASE("flatten: one byte at a time gives the same rows", "[flatten]") {
  const std::string doc =
      "{ \"asset_counts\": {\"all\": {\"total\": 1234, \"complete\": 7.125e-3},"
      " \"\xC3\xA9t\xC3\xA9 \\u00e9\\ud83d\\ude00\": {\"n\": -9223372036854775808,"
      " \"big\": 123456789012345678901234567890, \"f\": 0.37877497003578644e-9,"
      " \"s\": \" 12.5 \", \"t\": true, \"dup\": {\"x\": 1}, \"dup\": 2},"
      " \"arr\": [1, [2, {\"k\": \"v\"}], null], \"esc\\\"key\": \"-0.5\"}, \"e\": {} } ";
  const auto whole = accepted(doc, skipping());
  CHECK(whole.size() == 9);
  CHECK(whole.skipped() == 1);

  for (std::size_t piece : {1, 2, 3, 7}) {
    INFO("pieces of " << piece << " bytes");
    flattener f(skipping());
    for (std::size_t i = 0; i < doc.size(); i += piece) {
      auto r = f.write(std::string_view(doc).substr(i, piece));
      REQUIRE(r.has_value());
    }
    auto rows = f.finish();
    REQUIRE(rows.has_value());
    CHECK(rows_of(*rows) == rows_of(whole));
    CHECK(rows->skipped() == whole.skipped());
  }
}

TEST_CASE("flattener: a failure sticks", "[flatten]") {
  flattener f;
  CHECK(f.write(R"({"a": )").has_value());
  auto first = f.write("nul!");
  REQUIRE(first.has_error());
  auto again = f.write("l}");
  REQUIRE(again.has_error());
  CHECK(again.error().message == first.error().message);
  auto end = f.finish();
  REQUIRE(end.has_error());
  CHECK(end.error().message == first.error().message);
}

TEST_CASE("flattener: a strict failure found at the end sticks too", "[flatten]") {
  flattener f;
  CHECK(f.write(R"({"a": null})").has_value());
  auto r = f.finish();
  REQUIRE(r.has_error());
  CHECK(r.error().message == R"(value at "a" is null)");
  CHECK(f.finish().error().message == r.error().message);
  CHECK(f.write("{}").error().message == r.error().message);
}

TEST_CASE("flattener: can be moved", "[flatten]") {
  flattener a;
  CHECK(a.write(R"({"x": )").has_value());
  flattener b = std::move(a);
  CHECK(b.write("1}").has_value());
  auto rows = b.finish();
  REQUIRE(rows.has_value());
  CHECK(rows_of(*rows) == row_list{{"x", 1}});
}

TEST_CASE("flat_rows: built by hand", "[flatten]") {
  flat_rows rows;
  CHECK(rows.empty());
  rows.push_back("a.b", 1.5);
  rows.push_back("", -2);
  rows.push_back("c", 3);
  rows.set_skipped(4);
  CHECK(rows.size() == 3);
  CHECK(rows_of(rows) == row_list{{"a.b", 1.5}, {"", -2}, {"c", 3}});
  CHECK(rows[2].key == "c");
  CHECK(rows.skipped() == 4);
}

TEST_CASE("rows far larger than the body are refused, bounding memory", "[flatten][limits]") {
  gatherstats::json::flatten_options small;
  small.max_body_bytes = 64 * 1024;  // rows may then take at most 1 MiB
  // A 400-character key over thousands of tiny leaves: each leaf costs a few
  // bytes of body but stores the whole path.
  std::string doc = "{\"" + std::string(400, 'p') + "\":{";
  for (int i = 0; doc.size() < 60 * 1024; ++i)
    doc += (i ? ",\"" : "\"") + std::to_string(i) + "\":0";
  doc += "}}";
  auto r = gatherstats::json::flatten(doc, small);
  REQUIRE_FALSE(r.has_value());
  CHECK_THAT(r.error().message, Catch::Contains("would take more than 1048576 bytes"));
  // The same keys, fewer leaves: fine.
  std::string fine = "{\"" + std::string(400, 'p') + "\":{\"a\":1,\"b\":2}}";
  CHECK(gatherstats::json::flatten(fine, small).has_value());
}

TEST_CASE("flatten: a failure says whether the JSON or a rule was wrong", "[flatten]") {
  auto reason = [](std::string_view doc, flatten_options o = {}) {
    auto r = flatten(doc, o);
    REQUIRE(r.has_error());
    return r.error().reason;
  };
  // Not JSON at all, or cut short, or followed by more: parse.
  CHECK(reason("<html>") == gatherstats::fetch_reason::parse);
  CHECK(reason(R"({"a": )") == gatherstats::fetch_reason::parse);
  CHECK(reason("") == gatherstats::fetch_reason::parse);
  CHECK(reason(R"({"a": 1} {})") == gatherstats::fetch_reason::parse);
  CHECK(reason("{\"a\": \"\xff\"}") == gatherstats::fetch_reason::parse);
  // Valid JSON that breaks a flattening rule: flatten, whether it is found
  // while reading or at the end.
  CHECK(reason("[1, 2]") == gatherstats::fetch_reason::flatten);
  CHECK(reason(R"({"a": null})") == gatherstats::fetch_reason::flatten);
  CHECK(reason(R"({"a.b": 1, "a": {"b": 2}})") == gatherstats::fetch_reason::flatten);
  CHECK(reason(nested_objects(65)) == gatherstats::fetch_reason::flatten);
  // Over the size limit.
  flatten_options small;
  small.max_body_bytes = 8;
  CHECK(reason(R"({"a": 12345678})", small) == gatherstats::fetch_reason::body_too_large);
}
