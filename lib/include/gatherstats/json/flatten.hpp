// Flattening: a JSON statistics document into (dotted key path, double) rows.
//
// The rules are the original tool's, made strict (docs/flattening.md):
// - the document must be an object; nested objects are walked and their keys
//   joined with '.'; an empty object yields nothing;
// - numbers become doubles, true/false become 1/0, a string that is wholly a
//   decimal number (surrounding whitespace allowed) becomes that number;
// - anything else (null, other strings, arrays) rejects the whole document
//   under `value_policy::strict`, or is dropped and counted under `skip`;
// - a key repeated inside one object: the last one wins, as it did in the
//   original (Python's json module);
// - two leaves with the same path, a path longer than `max_key_chars`
//   characters, nesting deeper than `max_depth`, more than `max_body_bytes`,
//   invalid JSON or invalid UTF-8 reject the document; so do rows whose key
//   paths and values together would take more than 8 x max_body_bytes (at
//   least 1 MiB), which bounds memory for any body.
// Every failure is permanent and its message names the key path concerned.
//
// The parser is Boost.JSON's SAX parser: no DOM is built; key paths are packed
// into one buffer. A `flattener` accepts the body in pieces as it arrives.
// Not thread-safe; one flattener per document.
#pragma once

#include "gatherstats/error.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gatherstats::json {

enum class value_policy { strict, skip };

struct flatten_options {
  value_policy values = value_policy::strict;
  std::size_t max_depth = 64;                     // nested objects/arrays
  std::size_t max_body_bytes = 16 * 1024 * 1024;  // whole document
  std::size_t max_key_chars = 512;                // characters, not bytes
  bool operator==(const flatten_options&) const = default;
};

// The rows of one document, in document order.
class flat_rows {
 public:
  struct row {
    std::string_view key;
    double value;
  };

  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::string_view key(std::size_t i) const {
    return std::string_view(keys_).substr(entries_[i].key_offset, entries_[i].key_size);
  }
  double value(std::size_t i) const { return entries_[i].value; }
  row operator[](std::size_t i) const { return {key(i), value(i)}; }
  // Leaves dropped under value_policy::skip.
  std::size_t skipped() const { return skipped_; }
  // The heap memory the rows hold.
  std::size_t memory_bytes() const {
    return keys_.capacity() + entries_.capacity() * sizeof(entry);
  }

  // For building rows outside the parser (tests, spool replay).
  void push_back(std::string_view key, double value);
  void set_skipped(std::size_t n) { skipped_ = n; }

 private:
  friend class flattener;

 public:
  struct entry {
    std::uint32_t key_offset;
    std::uint32_t key_size;
    double value;
  };

 private:
  std::string keys_;
  std::vector<entry> entries_;
  std::size_t skipped_ = 0;
};

// Streaming form: write() the body as it arrives, then finish().
// After a failure every later call returns the same failure.
class flattener {
 public:
  explicit flattener(flatten_options options = {});
  ~flattener();
  flattener(flattener&&) noexcept;
  flattener& operator=(flattener&&) noexcept;

  outcome<void> write(std::string_view chunk);
  outcome<flat_rows> finish();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// The whole document at once.
outcome<flat_rows> flatten(std::string_view document, const flatten_options& options = {});

}  // namespace gatherstats::json
