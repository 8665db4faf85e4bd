// Written by hand rather than with Boost.URL: it runs for every log event and
// every failure, must keep the rest of the URL byte for byte, and must also
// cope with text that is not a valid URL.
#include "gatherstats/http/redact.hpp"

namespace gatherstats::http {
namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Appends the pieces of `params` (a query or a fragment, pieces separated by
// '&' or ';') to `out`, with each secret-looking piece's value replaced.
void append_redacted_params(std::string_view params, std::string& out) {
  while (true) {
    auto end = params.find_first_of("&;");
    std::string_view piece = params.substr(0, end);
    auto eq = piece.find('=');
    if (eq != std::string_view::npos && eq + 1 < piece.size() &&
        is_secret_parameter(piece.substr(0, eq))) {
      out.append(piece.substr(0, eq + 1));
      out.append(redacted_value);
    } else {
      out.append(piece);
    }
    if (end == std::string_view::npos) return;
    out += params[end];
    params.remove_prefix(end + 1);
  }
}

// Appends `rest` (what follows the authority: path, query, fragment) with
// its query and fragment redacted.
void append_redacted_tail(std::string_view rest, std::string& out) {
  auto query = rest.find_first_of("?#");
  out.append(rest.substr(0, query));
  if (query == std::string_view::npos) return;
  if (rest[query] == '?') {
    out += '?';
    rest.remove_prefix(query + 1);
    auto fragment = rest.find('#');
    append_redacted_params(rest.substr(0, fragment), out);
    if (fragment == std::string_view::npos) return;
    rest.remove_prefix(fragment);
  } else {
    rest.remove_prefix(query);
  }
  out += '#';
  append_redacted_params(rest.substr(1), out);
}

}  // namespace

bool is_secret_parameter(std::string_view name) {
  // Percent-decoded ("api%5Fkey") and '+' as a space, lower case.
  std::string decoded;
  decoded.reserve(name.size());
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '%' && i + 2 < name.size()) {
      int hi = hex_digit(name[i + 1]), lo = hex_digit(name[i + 2]);
      if (hi >= 0 && lo >= 0) {
        c = static_cast<char>(hi * 16 + lo);
        i += 2;
      }
    } else if (c == '+') {
      c = ' ';
    }
    decoded += lower(c);
  }
  for (std::string_view word : secret_parameter_words)
    if (decoded.find(word) != std::string::npos) return true;
  return false;
}

std::string redact_url(std::string_view text) {
  // Most URLs have nothing to hide: no user information, no query.
  if (text.find_first_of("@?#") == std::string_view::npos) return std::string(text);
  auto scheme_end = text.find("://");
  std::size_t authority = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  std::size_t authority_end = text.find_first_of("/?#", authority);
  if (authority_end == std::string_view::npos) authority_end = text.size();
  std::string out;
  out.reserve(text.size() + redacted_value.size());
  // A valid URL has at most one '@' in its authority; of anything else the
  // last one is taken, so that no part of a password stays.
  auto authority_text = text.substr(authority, authority_end - authority);
  auto at = authority_text.rfind('@');
  out.append(text.substr(0, authority));
  out.append(at == std::string_view::npos ? authority_text : authority_text.substr(at + 1));
  append_redacted_tail(text.substr(authority_end), out);
  return out;
}

std::string redact_query_secrets(std::string_view text) {
  if (text.find_first_of("?#") == std::string_view::npos) return std::string(text);
  std::string out;
  out.reserve(text.size());
  std::size_t from = 0;
  for (;;) {
    auto scheme_end = text.find("://", from);
    if (scheme_end == std::string_view::npos) break;
    std::size_t end = scheme_end + 3;
    while (end < text.size()) {
      char c = text[end];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '"' || c == '\'' || c == '<' ||
          c == '>')
        break;
      if (c == ':' && (end + 1 == text.size() || text[end + 1] == ' ' || text[end + 1] == '\n'))
        break;
      ++end;
    }
    std::size_t authority_end = text.find_first_of("/?#", scheme_end + 3);
    if (authority_end == std::string_view::npos || authority_end > end) authority_end = end;
    out.append(text.substr(from, authority_end - from));
    append_redacted_tail(text.substr(authority_end, end - authority_end), out);
    from = end;
  }
  out.append(text.substr(from));
  return out;
}

}  // namespace gatherstats::http
