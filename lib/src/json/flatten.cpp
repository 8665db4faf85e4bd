// Flattening with Boost.JSON's SAX parser.
//
// Why SAX: a statistics body can be large and arrives in pieces; a DOM would
// allocate every key and value only to throw them away. The handler keeps one
// reusable key path and writes rows straight into flat_rows' packed buffer.
//
// Why rows are marked dead instead of failing early: a repeated key must
// behave as in the original (Python's json module: the last one wins), so a
// later key can cancel a bad leaf or a whole subtree. Each open object
// remembers its children's keys and where their rows start (a subtree's rows
// are contiguous); when it closes, earlier duplicates' rows are marked dead.
// Bad leaves are flagged rows, so only a live one fails the document.
//
// Why numbers are re-parsed: Boost 1.81's double conversion is not always
// correctly rounded; std::from_chars is.
#include "gatherstats/json/flatten.hpp"

#include <boost/json/basic_parser_impl.hpp>

#include <array>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <unordered_set>
#include <utility>

namespace gatherstats::json {
namespace {

namespace bj = boost::json;

// While parsing, the top bits of entry::key_size say what a row is.
constexpr std::uint32_t dead_flag = 1u << 31;  // overridden by a later duplicate key
constexpr std::uint32_t bad_flag = 1u << 30;   // a leaf that is not a number
constexpr std::size_t max_row_key_bytes = bad_flag - 1;
constexpr std::size_t quote_chars = 40;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Length of the well-formed UTF-8 sequence at the start of s and its code
// point, or 0 if it is not one (truncated, overlong, surrogate, > U+10FFFF).
std::size_t utf8_sequence(std::string_view s, char32_t& cp) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char b0 = byte(0);
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  std::size_t len;
  char32_t min;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, min = 0x80, cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, min = 0x800, cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, min = 0x10000, cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (s.size() < len) return 0;
  for (std::size_t i = 1; i < len; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

// s between double quotes, escaped so that a message stays one line of valid
// UTF-8; longer than max_chars code points: cut, with "..." after the quote.
std::string quoted(std::string_view s, std::size_t max_chars = quote_chars) {
  std::string out = "\"";
  std::size_t chars = 0;
  char buf[16];
  while (!s.empty()) {
    if (chars == max_chars) {
      out += "\"...";
      return out;
    }
    char32_t cp = 0;
    std::size_t len = utf8_sequence(s, cp);
    if (len == 0) {
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(s[0]));
      out += buf;
      len = 1;
    } else if (cp == '"' || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029) {
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(cp));
      out += buf;
    } else {
      out.append(s.data(), len);
    }
    s.remove_prefix(len);
    ++chars;
  }
  out += '"';
  return out;
}

enum class number_status { ok, not_a_number, too_large };

// Out of range for a double: too large, or so small it is zero? The text is
// a valid decimal number; compare the decimal exponent of its first
// significant digit with zero.
bool exceeds_double(std::string_view t) {
  std::size_t i = 0;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
  long long magnitude = 0;
  bool significant = false;
  for (; i < t.size() && is_digit(t[i]); ++i) {
    if (significant) {
      ++magnitude;
    } else if (t[i] != '0') {
      significant = true;
    }
  }
  if (i < t.size() && t[i] == '.') ++i;
  for (long long zeros = 1; i < t.size() && is_digit(t[i]); ++i) {
    if (!significant) {
      if (t[i] != '0') {
        significant = true;
        magnitude = -zeros;
      }
      ++zeros;
    }
  }
  long long exponent = 0;
  bool negative_exponent = false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) negative_exponent = t[i++] == '-';
    for (; i < t.size() && is_digit(t[i]); ++i) {
      if (exponent < 1'000'000'000) exponent = exponent * 10 + (t[i] - '0');
    }
  }
  return magnitude + (negative_exponent ? -exponent : exponent) > 0;
}

// t is known to be a decimal number (JSON's grammar or the string one).
number_status to_double(std::string_view t, double& out) {
  const char* first = t.data();
  const char* last = first + t.size();
  if (first != last && *first == '+') ++first;  // from_chars takes '-' only
  auto [ptr, ec] = std::from_chars(first, last, out, std::chars_format::general);
  if (ptr != last) return number_status::not_a_number;
  if (ec == std::errc()) return number_status::ok;
  if (ec != std::errc::result_out_of_range) return number_status::not_a_number;
  if (exceeds_double(t)) return number_status::too_large;
  out = *first == '-' ? -0.0 : 0.0;  // underflow, as strtod does
  return number_status::ok;
}

// A string leaf: wholly a decimal number, ASCII whitespace around it allowed.
number_status string_to_double(std::string_view s, double& out) {
  while (!s.empty() && is_ascii_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ascii_space(s.back())) s.remove_suffix(1);
  std::size_t i = 0;
  const std::size_t n = s.size();
  if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
  std::size_t digits = 0;
  for (; i < n && is_digit(s[i]); ++i) ++digits;
  if (i < n && s[i] == '.') {
    for (++i; i < n && is_digit(s[i]); ++i) ++digits;
  }
  if (digits == 0) return number_status::not_a_number;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    std::size_t exponent_digits = 0;
    for (; i < n && is_digit(s[i]); ++i) ++exponent_digits;
    if (exponent_digits == 0) return number_status::not_a_number;
  }
  if (i != n) return number_status::not_a_number;
  return to_double(s, out);
}

std::size_t next_power_of_two(std::size_t n) {
  std::size_t p = 16;
  while (p < n) p *= 2;
  return p;
}

}  // namespace

struct flattener::impl {
  // The SAX handler: builds the rows; nested here to reach flat_rows' buffer.
  class handler {
   public:
    static constexpr std::size_t max_object_size = std::size_t(-1);
    static constexpr std::size_t max_array_size = std::size_t(-1);
    static constexpr std::size_t max_key_size = std::size_t(-1);
    static constexpr std::size_t max_string_size = std::size_t(-1);

    explicit handler(const flatten_options& options) : opt_(options) {
      path_.reserve(256);
      frames_.reserve(16);
      children_.reserve(64);
      child_keys_.reserve(1024);
      rows_.keys_.reserve(4096);
      rows_.entries_.reserve(128);
    }

    bool on_document_begin(bj::error_code&) { return true; }
    bool on_document_end(bj::error_code&) { return true; }

    bool on_object_begin(bj::error_code& ec) {
      if (!enter(ec)) return false;
      if (array_depth_ != 0) return true;
      const bool top = frames_.empty();
      frames_.push_back({top ? 0 : path_.size(), children_.size(), child_keys_.size(), top});
      after_key_ = false;
      return true;
    }

    bool on_object_end(std::size_t, bj::error_code&) {
      --depth_;
      if (array_depth_ != 0) return true;
      close_object();
      frames_.pop_back();
      after_key_ = false;
      return true;
    }

    bool on_array_begin(bj::error_code& ec) {
      if (depth_ == 0) return not_an_object("an array", ec);
      if (!enter(ec)) return false;
      if (array_depth_ == 0) bad_leaf(bad_kind::array);
      ++array_depth_;
      return true;
    }

    bool on_array_end(std::size_t, bj::error_code&) {
      --depth_;
      if (--array_depth_ == 0) after_key_ = false;
      return true;
    }

    bool on_key_part(std::string_view s, std::size_t, bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      begin_key();
      path_.append(s);
      return path_.size() <= opt_.max_key_chars || check_path_length(ec);
    }

    bool on_key(std::string_view s, std::size_t, bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      begin_key();
      path_.append(s);
      key_open_ = false;
      after_key_ = true;
      const frame& f = frames_.back();
      const std::size_t key_begin = f.top ? 0 : f.base + 1;
      const std::string_view key(path_.data() + key_begin, path_.size() - key_begin);
      if (!dotted_ && std::memchr(key.data(), '.', key.size()) != nullptr) dotted_ = true;
      children_.push_back({child_keys_.size(), key.size(), rows_.entries_.size()});
      child_keys_.append(key);
      return path_.size() <= opt_.max_key_chars || check_path_length(ec);
    }

    bool on_string_part(std::string_view s, std::size_t, bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      if (depth_ == 0) return not_an_object("a string", ec);
      text_.append(s);
      return true;
    }

    bool on_string(std::string_view s, std::size_t, bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      if (depth_ == 0) return not_an_object("a string", ec);
      std::string_view text = s;
      if (!text_.empty()) text = text_.append(s);
      double v = 0;
      switch (string_to_double(text, v)) {
        case number_status::ok:
          leaf(v, ec);
          break;
        case number_status::not_a_number:
          bad_leaf(bad_kind::string, text);
          break;
        case number_status::too_large:
          bad_leaf(bad_kind::string_too_large, text);
          break;
      }
      text_.clear();
      return !failed_;
    }

    bool on_number_part(std::string_view s, bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      if (depth_ == 0) return not_an_object("a number", ec);
      text_.append(s);
      return true;
    }

    bool on_int64(std::int64_t i, std::string_view, bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      if (depth_ == 0) return not_an_object("a number", ec);
      text_.clear();
      return leaf(static_cast<double>(i), ec);
    }

    bool on_uint64(std::uint64_t u, std::string_view, bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      if (depth_ == 0) return not_an_object("a number", ec);
      text_.clear();
      return leaf(static_cast<double>(u), ec);
    }

    bool on_double(double, std::string_view s, bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      if (depth_ == 0) return not_an_object("a number", ec);
      std::string_view text = s;
      if (!text_.empty()) text = text_.append(s);
      double v = 0;
      if (to_double(text, v) == number_status::ok) {
        leaf(v, ec);
      } else {
        bad_leaf(bad_kind::number_too_large, text);
      }
      text_.clear();
      return !failed_;
    }

    bool on_bool(bool b, bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      if (depth_ == 0) return not_an_object("a boolean", ec);
      return leaf(b ? 1.0 : 0.0, ec);
    }

    bool on_null(bj::error_code& ec) {
      if (array_depth_ != 0) return true;
      if (depth_ == 0) return not_an_object("null", ec);
      bad_leaf(bad_kind::null);
      return true;
    }

    bool on_comment_part(std::string_view, bj::error_code&) { return true; }
    bool on_comment(std::string_view, bj::error_code&) { return true; }

    // Set when a handler call failed the document.
    const std::optional<std::string>& failed() const { return failed_; }

    // Where the parser is, for messages about invalid JSON.
    std::string location() const {
      if (depth_ == 0) return "at the top level";
      if (array_depth_ != 0) return "in the array at " + quoted(path_, path_.size());
      if (after_key_) return "at " + quoted(path_, path_.size());
      const frame& f = frames_.back();
      if (f.top) return "in the top-level object";
      return "in the object at " + quoted(std::string_view(path_).substr(0, f.base), f.base);
    }

    // After the whole document: drop dead rows, settle bad leaves, and look
    // for two leaves with one path.
    outcome<flat_rows> take_rows() {
      auto& entries = rows_.entries_;
      if (flagged_) {
        std::size_t skipped = 0;
        std::size_t kept = 0;
        for (const auto& e : entries) {
          if (e.key_size & dead_flag) continue;
          if (e.key_size & bad_flag) {
            if (opt_.values == value_policy::strict) {
              return failure::permanent(bad_message(bad_[e.key_offset]));
            }
            ++skipped;
            continue;
          }
          entries[kept++] = e;
        }
        entries.resize(kept);
        rows_.skipped_ = skipped;
      }
      if (dotted_) {
        // Only a key with a '.' in it can make two paths equal.
        std::unordered_set<std::string_view> seen;
        seen.reserve(rows_.size());
        for (std::size_t i = 0; i < rows_.size(); ++i) {
          if (!seen.insert(rows_.key(i)).second) {
            return failure::permanent("two values have the same key path " +
                                      quoted(rows_.key(i), rows_.key(i).size()));
          }
        }
      }
      return std::move(rows_);
    }

   private:
    struct frame {
      std::size_t base;         // path_ length before this object's keys
      std::size_t first_child;  // into children_
      std::size_t keys_begin;   // into child_keys_
      bool top;
    };
    enum class bad_kind { null, array, string, string_too_large, number_too_large };
    struct bad_leaf_info {
      bad_kind kind;
      std::size_t offset;  // into bad_text_: the key path, then the text
      std::size_t path_size;
      std::size_t text_size;
    };
    struct child {
      std::size_t key_offset;  // into child_keys_
      std::size_t key_size;
      std::size_t first_entry;  // its rows start here in rows_.entries_
    };

    bool fail(std::string message, bj::error_code& ec) {
      if (!failed_) failed_ = std::move(message);
      ec = bj::error::input_error;  // any code: the message above is what counts
      return false;
    }

    bool not_an_object(const char* what, bj::error_code& ec) {
      return fail(std::string("document is not a JSON object (it is ") + what + ")", ec);
    }

    bool enter(bj::error_code& ec) {
      if (depth_ >= opt_.max_depth) {
        return fail(
            "nesting deeper than " + std::to_string(opt_.max_depth) + " levels " + location(), ec);
      }
      ++depth_;
      return true;
    }

    void begin_key() {
      if (key_open_) return;
      key_open_ = true;
      const frame& f = frames_.back();
      path_.resize(f.base);
      if (!f.top) path_.push_back('.');
    }

    // 8 times the body limit, and at least 1 MiB.
    std::size_t max_rows_bytes() const {
      return std::max<std::size_t>(8 * opt_.max_body_bytes, std::size_t{1} << 20);
    }

    bool check_path_length(bj::error_code& ec) {
      if (code_points(path_) <= opt_.max_key_chars) return true;
      return fail("key path longer than " + std::to_string(opt_.max_key_chars) +
                      " characters: " + quoted(path_),
                  ec);
    }

    bool leaf(double v, bj::error_code& ec) {
      after_key_ = false;
      auto& keys = rows_.keys_;
      if (path_.size() > max_row_key_bytes ||
          keys.size() + path_.size() > std::numeric_limits<std::uint32_t>::max()) {
        return fail("the key paths of the rows exceed 4 GiB", ec);
      }
      // Every row stores its whole path, so long paths over many tiny leaves
      // can make the rows far larger than the body: bound them too.
      const std::size_t row_bytes =
          keys.size() + path_.size() + (rows_.entries_.size() + 1) * sizeof(flat_rows::entry);
      if (row_bytes > max_rows_bytes()) {
        return fail("the rows would take more than " + std::to_string(max_rows_bytes()) +
                        " bytes (long key paths over many leaves), at " + quoted(path_),
                    ec);
      }
      rows_.entries_.push_back(
          {static_cast<std::uint32_t>(keys.size()), static_cast<std::uint32_t>(path_.size()), v});
      keys.append(path_);
      return true;
    }

    // Recorded, not failed: a later duplicate key may still replace it.
    // Under strict, keep just enough to write the message at the end.
    void bad_leaf(bad_kind kind, std::string_view text = {}) {
      after_key_ = false;
      flagged_ = true;
      std::uint32_t index = 0;
      if (opt_.values == value_policy::strict) {
        index = static_cast<std::uint32_t>(bad_.size());
        // One code point more than a message shows, so that it shows "...".
        std::size_t cut = 0;
        for (std::size_t chars = 0; cut < text.size(); ++cut) {
          if ((static_cast<unsigned char>(text[cut]) & 0xC0) != 0x80 && chars++ > quote_chars) {
            break;
          }
        }
        bad_.push_back({kind, bad_text_.size(), path_.size(), cut});
        bad_text_.append(path_);
        bad_text_.append(text.substr(0, cut));
      }
      rows_.entries_.push_back({index, bad_flag, 0.0});
    }

    std::string bad_message(const bad_leaf_info& b) const {
      const std::string_view path = std::string_view(bad_text_).substr(b.offset, b.path_size);
      const std::string_view text =
          std::string_view(bad_text_).substr(b.offset + b.path_size, b.text_size);
      std::string m = "value at " + quoted(path, path.size());
      switch (b.kind) {
        case bad_kind::null:
          return m + " is null";
        case bad_kind::array:
          return m + " is an array";
        case bad_kind::string:
          return m + " is a string that is not a number: " + quoted(text);
        case bad_kind::string_too_large:
          return m + " is a string with a number too large for a double: " + quoted(text);
        case bad_kind::number_too_large:
          m += " is a number too large for a double: ";
          m += text.substr(0, quote_chars);
          if (text.size() > quote_chars) m += "...";
          return m;
      }
      return m;
    }

    std::string_view child_key(std::size_t i) const {
      return std::string_view(child_keys_).substr(children_[i].key_offset, children_[i].key_size);
    }

    void kill_child(std::size_t i) {
      const std::size_t end =
          i + 1 < children_.size() ? children_[i + 1].first_entry : rows_.entries_.size();
      for (std::size_t e = children_[i].first_entry; e < end; ++e) {
        rows_.entries_[e].key_size |= dead_flag;
      }
      if (children_[i].first_entry < end) flagged_ = true;
    }

    // Last one wins among the closing object's children.
    void close_object() {
      const frame& f = frames_.back();
      const std::size_t first = f.first_child;
      const std::size_t last = children_.size();
      const std::size_t n = last - first;
      if (n >= 2 && n <= 8) {
        for (std::size_t i = first; i + 1 < last; ++i) {
          for (std::size_t j = i + 1; j < last; ++j) {
            if (child_key(i) == child_key(j)) {
              kill_child(i);
              break;
            }
          }
        }
      } else if (n > 8) {
        // Open addressing over indexes relative to `first`; reused storage.
        constexpr std::uint32_t empty = std::numeric_limits<std::uint32_t>::max();
        const std::size_t mask = next_power_of_two(2 * n) - 1;
        table_.assign(mask + 1, empty);
        const std::hash<std::string_view> hash;
        for (std::size_t i = first; i < last; ++i) {
          const std::string_view key = child_key(i);
          std::size_t slot = hash(key) & mask;
          while (table_[slot] != empty && child_key(first + table_[slot]) != key) {
            slot = (slot + 1) & mask;
          }
          if (table_[slot] != empty) kill_child(first + table_[slot]);
          table_[slot] = static_cast<std::uint32_t>(i - first);
        }
      }
      children_.resize(first);
      child_keys_.resize(f.keys_begin);
    }

    flatten_options opt_;
    flat_rows rows_;
    std::string path_;             // key path of the current key
    std::vector<frame> frames_;    // open objects outside arrays
    std::vector<child> children_;  // keys of the open objects, innermost last
    std::string child_keys_;
    std::vector<std::uint32_t> table_;
    std::string text_;                // a string or number split across pieces
    std::vector<bad_leaf_info> bad_;  // under strict
    std::string bad_text_;
    std::optional<std::string> failed_;
    std::size_t depth_ = 0;        // open objects and arrays
    std::size_t array_depth_ = 0;  // open arrays: their content is ignored
    bool after_key_ = false;       // a key was read, its value not yet finished
    bool key_open_ = false;        // path_ holds part of a key
    bool dotted_ = false;          // some key contained '.'
    bool flagged_ = false;         // some row is dead or bad
  };

  static bj::parse_options parser_options(const flatten_options& o) {
    bj::parse_options p;
    // One above ours, so that our message (with the key path) comes first.
    p.max_depth = o.max_depth < std::size_t(-1) ? o.max_depth + 1 : o.max_depth;
    return p;
  }

  explicit impl(const flatten_options& o)
      : max_body_bytes(o.max_body_bytes), parser(parser_options(o), o) {}

  outcome<void> write(std::string_view chunk) {
    if (failed) return *failed;
    if (finished) return fail("write() after finish()");
    if (chunk.empty()) return {};
    if (chunk.size() > max_body_bytes - received - bom_held) {
      return fail(
          "document is larger than the limit of " + std::to_string(max_body_bytes) + " bytes",
          fetch_reason::body_too_large);
    }
    if (!bom_done) {
      // RFC 8259 lets parsers ignore a leading byte order mark, and some
      // servers send one; it may arrive split across pieces.
      std::size_t k = 0;
      while (k < chunk.size() && bom_held + k < bom.size() && chunk[k] == bom[bom_held + k]) ++k;
      if (bom_held + k == bom.size()) {
        bom_done = true;
        bom_held = 0;
        received += bom.size();
        chunk.remove_prefix(k);
      } else if (k == chunk.size()) {
        bom_held += k;
        return {};
      } else {
        bom_done = true;
        if (auto r = release_bom(); !r) return r;
      }
    }
    return feed(chunk);
  }

  outcome<flat_rows> finish() {
    if (failed) return *failed;
    if (finished) return fail("finish() called twice");
    finished = true;
    if (auto r = release_bom(); !r) return r.error();
    bj::error_code ec;
    static constexpr char nothing[1] = {};
    parser.write_some(false, nothing, 0, ec);
    if (ec) return fail(parse_failure(ec, {}, 0), failure_reason());
    auto rows = parser.handler().take_rows();
    if (!rows) {
      failure f = rows.error();
      f.reason = fetch_reason::flatten;
      failed = f;
      return f;
    }
    return rows;
  }

 private:
  static constexpr std::string_view bom = "\xEF\xBB\xBF";

  outcome<void> feed(std::string_view chunk) {
    if (chunk.empty()) return {};
    bj::error_code ec;
    const std::size_t n = parser.write_some(true, chunk.data(), chunk.size(), ec);
    if (ec) return fail(parse_failure(ec, chunk, n), failure_reason());
    if (n < chunk.size()) {
      return fail("unexpected data after the JSON object at byte " + std::to_string(received + n));
    }
    note_bytes(chunk);
    return {};
  }

  // The start of a byte order mark, then something else: parse it as it is.
  outcome<void> release_bom() {
    const std::string_view held = bom.substr(0, bom_held);
    bom_held = 0;
    return feed(held);
  }

  failure fail(std::string message, fetch_reason why = fetch_reason::parse) {
    failed = failure::permanent(std::move(message), why);
    return *failed;
  }

  // A rule of flattening broken by valid JSON, or JSON that is not valid.
  fetch_reason failure_reason() const {
    return parser.handler().failed() ? fetch_reason::flatten : fetch_reason::parse;
  }

  std::string parse_failure(const bj::error_code& ec, std::string_view chunk, std::size_t n) {
    const auto& h = parser.handler();
    if (h.failed()) return *h.failed();
    if (ec == bj::error::incomplete && !seen_non_space) return "document is empty";
    std::string what = ec.message();
    if (ec == bj::error::incomplete) {
      what = "the document is truncated";
    } else if (ec == bj::error::syntax && looks_like_bad_utf8(chunk, n)) {
      what = "invalid UTF-8";
    }
    return "invalid JSON at byte " + std::to_string(received + n) + " (" + h.location() +
           "): " + what;
  }

  // Boost reports invalid UTF-8 as a plain syntax error; tell the operator.
  bool looks_like_bad_utf8(std::string_view chunk, std::size_t n) const {
    if (n < chunk.size() && static_cast<unsigned char>(chunk[n]) >= 0x80) {
      char32_t cp;
      return utf8_sequence(chunk.substr(n, 4), cp) == 0;
    }
    // A sequence begun in an earlier piece and broken at the start of this one.
    if (n != 0) return false;
    for (std::size_t back = 1; back <= tail.size(); ++back) {
      const unsigned char b = tail[tail.size() - back];
      if (b < 0x80) return false;
      if ((b & 0xC0) == 0xC0) {
        const std::size_t length = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : 4;
        return length > back;
      }
    }
    return false;
  }

  void note_bytes(std::string_view chunk) {
    received += chunk.size();
    if (!seen_non_space) {
      for (char c : chunk) {
        if (!is_ascii_space(c)) {
          seen_non_space = true;
          break;
        }
      }
    }
    for (char c : chunk.substr(chunk.size() > tail.size() ? chunk.size() - tail.size() : 0)) {
      tail = {tail[1], tail[2], static_cast<unsigned char>(c)};
    }
  }

  std::size_t max_body_bytes;
  bj::basic_parser<handler> parser;
  std::size_t received = 0;             // bytes accepted so far
  std::array<unsigned char, 3> tail{};  // the last bytes accepted
  std::size_t bom_held = 0;             // bytes of a byte order mark not yet passed on
  bool bom_done = false;
  bool seen_non_space = false;
  bool finished = false;
  std::optional<failure> failed;
};

void flat_rows::push_back(std::string_view key, double value) {
  if (key.size() > std::numeric_limits<std::uint32_t>::max() ||
      keys_.size() + key.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw std::length_error("flat_rows: key paths exceed 4 GiB");
  }
  entries_.push_back(
      {static_cast<std::uint32_t>(keys_.size()), static_cast<std::uint32_t>(key.size()), value});
  keys_.append(key);
}

flattener::flattener(flatten_options options) : impl_(std::make_unique<impl>(options)) {}
flattener::~flattener() = default;
flattener::flattener(flattener&&) noexcept = default;
flattener& flattener::operator=(flattener&&) noexcept = default;

outcome<void> flattener::write(std::string_view chunk) {
  if (!impl_) return failure::permanent("flattener used after being moved from");
  return impl_->write(chunk);
}

outcome<flat_rows> flattener::finish() {
  if (!impl_) return failure::permanent("flattener used after being moved from");
  return impl_->finish();
}

outcome<flat_rows> flatten(std::string_view document, const flatten_options& options) {
  flattener f(options);
  if (auto r = f.write(document); !r) return r.error();
  return f.finish();
}

}  // namespace gatherstats::json
