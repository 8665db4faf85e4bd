#include "log_sink.hpp"

#include "gatherstats/http/redact.hpp"

#define SD_JOURNAL_SUPPRESS_LOCATION  // the call site here tells an operator nothing
#include <systemd/sd-journal.h>

#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <vector>

namespace gatherstatsd {

using gatherstats::log::event;
using gatherstats::log::event_kind;
using gatherstats::log::severity;

namespace {

const char* level_name(severity s) {
  switch (s) {
    case severity::debug:
      return "debug";
    case severity::info:
      return "info";
    case severity::notice:
      return "notice";
    case severity::warning:
      return "warning";
    case severity::error:
      return "error";
  }
  return "info";
}

// syslog(3) priorities, as journald expects them.
int priority(severity s) {
  switch (s) {
    case severity::debug:
      return 7;
    case severity::info:
      return 6;
    case severity::notice:
      return 5;
    case severity::warning:
      return 4;
    case severity::error:
      return 3;
  }
  return 6;
}

const char* kind_field(event_kind kind) {
  switch (kind) {
    case event_kind::fetch_committed:
      return "fetch_committed";
    case event_kind::fetch_failed:
      return "fetch_failed";
    case event_kind::fetch_retrying:
      return "fetch_retrying";
    case event_kind::tick_skipped:
      return "tick_skipped";
    case event_kind::commit_failed:
      return "commit_failed";
    case event_kind::database_lost:
      return "database_lost";
    case event_kind::database_back:
      return "database_back";
    case event_kind::config_loaded:
      return "config_loaded";
    case event_kind::config_rejected:
      return "config_rejected";
    case event_kind::results_spooled:
      return "results_spooled";
    case event_kind::results_dropped:
      return "results_dropped";
    case event_kind::warning:
      return "warning";
    case event_kind::stopping:
      return "stopping";
    case event_kind::fetch_log_pruned:
      return "fetch_log_pruned";
    case event_kind::no_spool:
      return "no_spool";
    case event_kind::rows_removed:
      return "rows_removed";
    case event_kind::partition_created:
      return "partition_created";
    case event_kind::partition_dropped:
      return "partition_dropped";
    case event_kind::member_joined:
      return "member_joined";
    case event_kind::member_left:
      return "member_left";
    case event_kind::share_changed:
      return "share_changed";
    case event_kind::lease_lost:
      return "lease_lost";
    case event_kind::lease_renewed:
      return "lease_renewed";
    case event_kind::tick_fenced:
      return "tick_fenced";
  }
  return "event";
}

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

bool equal_nocase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// password=VALUE, password = 'quoted \' value', passwd=... (also inside
// sslpassword= and ?password= query parameters). Unquoted values run to the
// next white space: redacting too much is better than too little.
std::string redact_keywords(std::string_view in) {
  std::string out;
  std::size_t i = 0;
  while (i < in.size()) {
    std::size_t keyword_end = std::string_view::npos;
    for (std::string_view k : {"password", "passwd"}) {
      if (i + k.size() <= in.size() && equal_nocase(in.substr(i, k.size()), k)) {
        keyword_end = i + k.size();
        break;
      }
    }
    if (keyword_end == std::string_view::npos) {
      out += in[i++];
      continue;
    }
    std::size_t j = keyword_end;
    while (j < in.size() && is_space(in[j])) ++j;
    if (j >= in.size() || in[j] != '=') {
      out.append(in.substr(i, keyword_end - i));
      i = keyword_end;
      continue;
    }
    ++j;
    while (j < in.size() && is_space(in[j])) ++j;
    std::size_t value_end = j;
    if (value_end < in.size() && in[value_end] == '\'') {
      ++value_end;
      while (value_end < in.size() && in[value_end] != '\'') {
        if (in[value_end] == '\\' && value_end + 1 < in.size()) ++value_end;
        ++value_end;
      }
      if (value_end < in.size()) ++value_end;  // the closing quote
    } else {
      while (value_end < in.size() && !is_space(in[value_end])) ++value_end;
    }
    out.append(in.substr(i, j - i));
    out += "***";
    i = value_end;
  }
  return out;
}

// scheme://user:password@host -> scheme://user:***@host
std::string redact_userinfo(std::string text) {
  std::size_t from = 0;
  for (;;) {
    auto scheme_end = text.find("://", from);
    if (scheme_end == std::string::npos) return text;
    std::size_t start = scheme_end + 3;
    std::size_t end = start;
    while (end < text.size() && !is_space(text[end]) && text[end] != '/' && text[end] != '?' &&
           text[end] != '#' && text[end] != '"')
      ++end;
    auto at = text.rfind('@', end == start ? start : end - 1);
    if (at != std::string::npos && at >= start && at < end) {
      auto colon = text.find(':', start);
      if (colon != std::string::npos && colon < at) {
        text.replace(colon + 1, at - colon - 1, "***");
        end = colon + 1 + 3 + 1;
      }
    }
    from = end;
  }
}

void write_stderr(const std::string& line) {
  [[maybe_unused]] auto n = ::write(2, line.data(), line.size());
}

// The event with every text passed through redact_secrets().
event redacted(const event& e) {
  event r = e;
  r.endpoint = redact_secrets(e.endpoint);
  r.url = redact_secrets(e.url);
  r.error = redact_secrets(e.error);
  r.detail = redact_secrets(e.detail);
  return r;
}

std::string format_redacted(const event& e) {
  std::string line = level_name(e.level);
  line += ": ";
  line += gatherstats::log::to_string(e.kind);
  if (!e.endpoint.empty()) line += " endpoint=" + e.endpoint;
  if (e.rows) line += " rows=" + std::to_string(e.rows);
  if (e.duration.count()) line += " duration_ms=" + std::to_string(e.duration.count());
  if (e.http_status) line += " http_status=" + std::to_string(e.http_status);
  if (!e.error.empty()) line += ": " + e.error;
  if (!e.detail.empty()) line += " (" + e.detail + ")";
  return line;
}

// Journal field values are sent length-delimited (binary-safe), but a field
// shown in `journalctl` reads best on one line.
std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

}  // namespace

std::string redact_secrets(std::string_view text) {
  // Query values first: the keyword pass then turns "?password=REDACTED&..."
  // into "?password=***", as it always has.
  return redact_userinfo(redact_keywords(gatherstats::http::redact_query_secrets(text)));
}

const char* message_id(event_kind kind) {
  switch (kind) {
    case event_kind::fetch_committed:
      return "599cb43527f348bb9f596019c868becc";
    case event_kind::fetch_failed:
      return "3a44015876654f82abe4cf0be7775503";
    case event_kind::fetch_retrying:
      return "06f3d014320e42abadfedfab68af4248";
    case event_kind::tick_skipped:
      return "f90b15f47efd4be8a8b9be71e8cd72f0";
    case event_kind::commit_failed:
      return "18f8e089fad14f2aa156b47b658165d1";
    case event_kind::database_lost:
      return "09fd041619c84798a5d8b2d0870eb376";
    case event_kind::database_back:
      return "2ffacb91002f4823a5f9dfc9862f1661";
    case event_kind::config_loaded:
      return "98f7358764224a199038b868ac532c12";
    case event_kind::config_rejected:
      return "8665fe3e5ff943ddac3d1de8719b1565";
    case event_kind::results_spooled:
      return "16c1cc46228042d788700b66df2c1e69";
    case event_kind::results_dropped:
      return "83d7cc8156bb4ef691b68dc1bd2f22ca";
    case event_kind::warning:
      return "ccd200219c684a7482ece36e48fcf31d";
    case event_kind::stopping:
      return "057c92539d9447eba28cbf5a4e96eb77";
    case event_kind::fetch_log_pruned:
      return "5d0a3c6e8b1f4e27a9c4f1b2d7e60a93";
    case event_kind::no_spool:
      return "50725bea1680414f93aebde9c1786ec4";
    case event_kind::rows_removed:
      return "ffae79f91acf4d14883dda16f3ceb5f2";
    case event_kind::partition_created:
      return "ff16e90388004a6aba1d375ed8d69751";
    case event_kind::partition_dropped:
      return "c07dad77ac3a47cfb3d3144076f0f55c";
    case event_kind::member_joined:
      return "322f8831fabc418fa9244fb414a6ce91";
    case event_kind::member_left:
      return "221cfc14100e4467a65d32a937064065";
    case event_kind::share_changed:
      return "71083d871d3243acada7673b95b98eb2";
    case event_kind::lease_lost:
      return "746bd27f59fb4ad89f6f346f66ecc970";
    case event_kind::lease_renewed:
      return "e309cc296264404a9feda331b2a92322";
    case event_kind::tick_fenced:
      return "ae6c9c1d6f514b10ae63c49810c8ed7a";
  }
  return "ccd200219c684a7482ece36e48fcf31d";
}

std::string format_event(const event& e) { return format_redacted(redacted(e)); }

gatherstats::log::event_sink stderr_sink(severity min_level) {
  return [min_level](const event& e) {
    if (e.level < min_level) return;
    // One write per line, so lines from a crash or a pipe never interleave.
    write_stderr("gatherstatsd: " + format_event(e) + "\n");
  };
}

gatherstats::log::event_sink journal_sink(severity min_level) {
  return [min_level](const event& original) {
    if (original.level < min_level) return;
    const event e = redacted(original);
    const std::string message = format_redacted(e);
    std::vector<std::string> fields;
    fields.push_back("MESSAGE=" + message);
    fields.push_back("PRIORITY=" + std::to_string(priority(e.level)));
    fields.push_back(std::string("MESSAGE_ID=") + message_id(e.kind));
    fields.push_back("SYSLOG_IDENTIFIER=gatherstatsd");
    fields.push_back(std::string("GATHERSTATS_EVENT=") + kind_field(e.kind));
    if (!e.endpoint.empty()) fields.push_back("GATHERSTATS_ENDPOINT=" + one_line(e.endpoint));
    if (!e.url.empty()) fields.push_back("GATHERSTATS_URL=" + one_line(e.url));
    if (e.kind == event_kind::fetch_committed || e.rows)
      fields.push_back("GATHERSTATS_ROWS=" + std::to_string(e.rows));
    if (e.duration.count())
      fields.push_back("GATHERSTATS_DURATION_MS=" + std::to_string(e.duration.count()));
    if (e.http_status) fields.push_back("GATHERSTATS_HTTP_STATUS=" + std::to_string(e.http_status));
    if (!e.error.empty()) fields.push_back("GATHERSTATS_ERROR=" + one_line(e.error));

    std::vector<iovec> iov;
    iov.reserve(fields.size());
    for (auto& f : fields) iov.push_back({f.data(), f.size()});
    // sd_journal_sendv takes the fields as they are (no printf formatting of
    // values that may hold a '%').
    if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) < 0)
      write_stderr("gatherstatsd: " + message + "\n");
  };
}

bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (!stream) return false;
  std::string_view s = stream;
  auto colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  char* end = nullptr;
  std::string dev(s.substr(0, colon)), ino(s.substr(colon + 1));
  unsigned long long want_dev = std::strtoull(dev.c_str(), &end, 10);
  if (dev.empty() || *end) return false;
  unsigned long long want_ino = std::strtoull(ino.c_str(), &end, 10);
  if (ino.empty() || *end) return false;
  struct stat st {};
  if (::fstat(2, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == want_dev &&
         static_cast<unsigned long long>(st.st_ino) == want_ino;
}

gatherstats::log::event_sink make_sink(log_target target, severity min_level) {
  bool journal =
      target == log_target::journal || (target == log_target::automatic && stderr_is_journal());
  return journal ? journal_sink(min_level) : stderr_sink(min_level);
}

}  // namespace gatherstatsd
