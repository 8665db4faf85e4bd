// libFuzzer target: arbitrary bytes through the JSON flattener.
//
// Every input is flattened several ways: whole under `strict` and under
// `skip` with small limits (so that short inputs reach the depth, key length
// and body limits), one byte at a time and in three pieces (which must refuse
// what the whole document refuses, and otherwise give its rows), and whole
// with the default limits (which must accept whatever the small ones
// accepted, with the same rows). The rules checked are
// those flatten.hpp and docs/flattening.md promise for any input. A broken
// one is printed and aborts, so that libFuzzer reports it and saves the input.
#include "gatherstats/json/flatten.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_set>

namespace {

using gatherstats::failure_kind;
using gatherstats::outcome;
using gatherstats::json::flat_rows;
using gatherstats::json::flatten;
using gatherstats::json::flatten_options;
using gatherstats::json::flattener;
using gatherstats::json::value_policy;

// Small enough that a fuzzer's short inputs cross them; tests/fuzz/run sets
// -max_len above max_body so that the body limit is reached too.
constexpr std::size_t max_depth = 8;
constexpr std::size_t max_body = 2048;
constexpr std::size_t max_key_chars = 24;

flatten_options small(value_policy values) { return {values, max_depth, max_body, max_key_chars}; }

[[noreturn]] void broken(const char* rule, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz_flatten: broken: %s [%.*s]\n", rule, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

void check(bool holds, const char* rule, std::string_view detail = {}) {
  if (!holds) broken(rule, detail);
}

// Well-formed UTF-8: no stray continuation bytes, no overlong forms, no
// surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    char32_t cp = 0, min = 0;
    if (b0 < 0x80) {
      ++i;
      continue;
    } else if ((b0 & 0xE0) == 0xC0) {
      len = 2, cp = b0 & 0x1F, min = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
      len = 3, cp = b0 & 0x0F, min = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
      len = 4, cp = b0 & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

void check_rows(const flat_rows& rows, const flatten_options& options) {
  std::unordered_set<std::string_view> keys;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto [key, value] = rows[i];
    check(valid_utf8(key), "a row's key is valid UTF-8", key);
    check(code_points(key) <= options.max_key_chars, "a row's key is within max_key_chars", key);
    check(std::isfinite(value), "a row's value is finite", key);
    check(keys.insert(key).second, "no two rows have the same key", key);
    bytes += key.size() + sizeof(flat_rows::entry);
  }
  check(bytes <= std::max<std::size_t>(8 * options.max_body_bytes, std::size_t{1} << 20),
        "the rows take at most 8 x max_body_bytes (at least 1 MiB)");
  if (options.values == value_policy::strict) {
    check(rows.skipped() == 0, "strict skips nothing");
  }
}

void check_failure(const gatherstats::failure& f) {
  check(f.kind == failure_kind::permanent, "a flattening failure is permanent", f.message);
  check(!f.message.empty(), "a failure has a message");
  check(valid_utf8(f.message), "a failure message is valid UTF-8", f.message);
  for (char c : f.message) {
    check(static_cast<unsigned char>(c) >= 0x20 && c != 0x7F, "a failure message is one line",
          f.message);
  }
}

void check_result(const outcome<flat_rows>& r, const flatten_options& options) {
  if (r) {
    check_rows(*r, options);
  } else {
    check_failure(r.error());
  }
}

// "invalid JSON at byte N (...)": N is within the document.
void check_invalid_json_offset(const std::string& message, std::size_t size) {
  constexpr std::string_view prefix = "invalid JSON at byte ";
  if (!message.starts_with(prefix)) return;
  const std::size_t byte = std::strtoull(message.c_str() + prefix.size(), nullptr, 10);
  check(byte <= size, "invalid JSON is reported at a byte of the document", message);
}

// Both refuse, or both give the same rows (values compared bit for bit: -0
// is not 0). The messages may differ between pieces and the whole document:
// a document is refused at the first thing found wrong, and what is found
// first depends on what has arrived (" 4e\t" whole is invalid JSON; in
// pieces, "4e" is already a number at the top level), and Boost.JSON reports
// an invalid literal at its first byte when it has it whole but at the
// offending byte when it came in pieces ("nul," at the "n" or at the ",").
void check_same(const outcome<flat_rows>& a, const outcome<flat_rows>& b, const char* rule,
                std::size_t size) {
  if (a.has_value() != b.has_value()) broken(rule, a ? b.error().message : a.error().message);
  if (!a) {
    check_invalid_json_offset(a.error().message, size);
    check_invalid_json_offset(b.error().message, size);
    return;
  }
  check(a->size() == b->size(), rule, "row count");
  check(a->skipped() == b->skipped(), rule, "skipped count");
  for (std::size_t i = 0; i < a->size(); ++i) {
    check(a->key(i) == b->key(i), rule, a->key(i));
    check(std::bit_cast<std::uint64_t>(a->value(i)) == std::bit_cast<std::uint64_t>(b->value(i)),
          rule, a->key(i));
  }
}

// The document written in the given pieces, then finished; a failure
// returned by write() must also be what finish() returns.
outcome<flat_rows> flatten_in_pieces(std::string_view doc, const flatten_options& options,
                                     std::size_t first_cut, std::size_t second_cut) {
  flattener f(options);
  auto write = [&](std::string_view piece) -> bool {
    auto w = f.write(piece);
    if (w) return true;
    check_failure(w.error());
    auto again = f.finish();
    check(!again && again.error().message == w.error().message, "a write() failure sticks",
          w.error().message);
    return false;
  };
  if (first_cut == 0) {
    for (std::size_t i = 0; i < doc.size(); ++i) {
      if (!write(doc.substr(i, 1))) return f.finish();
    }
  } else {
    if (!write(doc.substr(0, first_cut)) || !write(doc.substr(first_cut, second_cut - first_cut)) ||
        !write(doc.substr(second_cut))) {
      return f.finish();
    }
  }
  auto r = f.finish();
  auto again = f.finish();
  check(!again, "a second finish() fails");
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view doc(reinterpret_cast<const char*>(data), size);

  const flatten_options strict_options = small(value_policy::strict);
  const flatten_options skip_options = small(value_policy::skip);
  const auto strict = flatten(doc, strict_options);
  const auto skip = flatten(doc, skip_options);
  check_result(strict, strict_options);
  check_result(skip, skip_options);

  if (size > max_body) check(!strict && !skip, "a body over max_body_bytes is refused");
  // skip accepts a superset of strict, and they agree where strict accepts.
  if (strict) check_same(strict, skip, "strict and skip agree where strict accepts", size);
  if (skip && skip->skipped() == 0) {
    check_same(strict, skip, "strict accepts what skip accepts without skipping", size);
  }
  if (!skip) check(!strict, "strict refuses what skip refuses");

  // Pieces change nothing: not the rows, not the message.
  check_same(strict, flatten_in_pieces(doc, strict_options, 0, 0),
             "one byte at a time gives the whole document's result", size);
  const std::size_t first = size / 3 + 1;  // never 0: that means byte by byte
  const std::size_t second = first + (size > first ? (size - first) / 2 + data[0] % 3 : 0);
  if (second <= size) {
    check_same(skip, flatten_in_pieces(doc, skip_options, first, second),
               "three pieces give the whole document's result", size);
  }

  // Larger limits accept whatever the small ones accepted, with the same rows.
  const auto wide = flatten(doc, flatten_options{});
  check_result(wide, flatten_options{});
  if (strict) check_same(strict, wide, "the default limits accept what small ones accepted", size);
  return 0;
}
