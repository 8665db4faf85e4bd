// A conninfo split into one attempt per host, as libpq would pair its lists
// (fe-connect.c, connectOptions2), without any I/O: PQconninfoParse only
// parses.
#include "gatherstats/pg/connect_plan.hpp"

#include <boost/asio/ip/address.hpp>

#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <memory>

namespace gatherstats::pg {
namespace {

struct options_deleter {
  void operator()(PQconninfoOption* o) const noexcept { PQconninfoFree(o); }
};

std::vector<std::string> split_list(std::string_view list) {
  std::vector<std::string> items;
  std::size_t start = 0;
  for (;;) {
    auto comma = list.find(',', start);
    items.emplace_back(list.substr(start, comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

// A host entry that needs a DNS lookup, as opposed to a socket directory
// (an absolute path, or an abstract socket "@name") or an address literal.
bool is_host_name(const std::string& host) {
  if (host.empty() || host.front() == '/' || host.front() == '@') return false;
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  return bool(ec);
}

// The keywords whose values are split per host or set per pass.
bool split_here(std::string_view key) {
  return key == "host" || key == "hostaddr" || key == "port" || key == "target_session_attrs";
}

// libpq's connect_timeout: a whole number of seconds; zero or less waits
// forever, and 1 means 2 (its minimum).
outcome<std::optional<std::chrono::milliseconds>> parse_connect_timeout(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  long long seconds = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    return failure::permanent("invalid database connection string: connect_timeout \"" +
                              std::string(text) + "\" is not a whole number of seconds");
  if (seconds <= 0) return std::optional<std::chrono::milliseconds>{};
  return std::optional<std::chrono::milliseconds>{std::chrono::seconds(std::max(seconds, 2LL))};
}

std::string show(const std::string& host, const std::string& hostaddr, const std::string& port) {
  std::string s;
  if (!host.empty())
    s = "host \"" + host + "\"";
  else if (!hostaddr.empty())
    s = "hostaddr \"" + hostaddr + "\"";
  else
    s = "the default host";
  if (!host.empty() && !hostaddr.empty()) s += " (hostaddr " + hostaddr + ")";
  if (!port.empty()) s += " port " + port;
  return s;
}

}  // namespace

outcome<connect_plan> plan_connect(std::string_view conninfo, const environment& env) {
  const std::string text(conninfo);
  char* parse_error = nullptr;
  std::unique_ptr<PQconninfoOption, options_deleter> parsed(
      PQconninfoParse(text.c_str(), &parse_error));
  if (!parsed) {
    std::string why = parse_error ? parse_error : "out of memory";
    PQfreemem(parse_error);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    return failure::permanent("invalid database connection string: " + why);
  }

  std::vector<std::pair<std::string, std::string>> common;
  std::optional<std::string> host, hostaddr, port, target, timeout;
  for (auto* o = parsed.get(); o->keyword; ++o) {
    if (!o->val) continue;
    const std::string_view key = o->keyword;
    if (key == "host") host = o->val;
    if (key == "hostaddr") hostaddr = o->val;
    if (key == "port") port = o->val;
    if (key == "target_session_attrs") target = o->val;
    if (key == "connect_timeout") timeout = o->val;
    if (!split_here(key)) common.emplace_back(key, o->val);
  }
  // What libpq would take from the environment; it must be split here too.
  auto from_env = [&](std::optional<std::string>& value, const char* name) {
    if (value) return;
    if (const char* v = env(name)) value = v;
  };
  from_env(host, "PGHOST");
  from_env(hostaddr, "PGHOSTADDR");
  from_env(port, "PGPORT");
  from_env(target, "PGTARGETSESSIONATTRS");
  from_env(timeout, "PGCONNECT_TIMEOUT");

  auto has = [&](std::string_view key) {
    return std::any_of(common.begin(), common.end(),
                       [&](const auto& kv) { return kv.first == key; });
  };
  // Keys and endpoints are UTF-8 whatever the locale of the process says.
  if (!has("client_encoding") && !env("PGCLIENTENCODING"))
    common.emplace_back("client_encoding", "UTF8");
  for (const auto& [key, value] : default_tcp_settings)
    if (!has(key)) common.emplace_back(key, value);

  connect_plan plan;
  if (timeout) {
    auto t = parse_connect_timeout(*timeout);
    if (!t) return t.error();
    plan.per_host_timeout = *t;
  }

  // Empty means not given, as for libpq.
  const auto hosts = host && !host->empty() ? split_list(*host) : std::vector<std::string>{};
  const auto addrs =
      hostaddr && !hostaddr->empty() ? split_list(*hostaddr) : std::vector<std::string>{};
  const auto ports = port && !port->empty() ? split_list(*port) : std::vector<std::string>{};
  if (!hosts.empty() && !addrs.empty() && hosts.size() != addrs.size())
    return failure::permanent("invalid database connection string: could not match " +
                              std::to_string(hosts.size()) + " host names to " +
                              std::to_string(addrs.size()) + " hostaddr values");
  const std::size_t count = std::max<std::size_t>({hosts.size(), addrs.size(), 1});
  if (ports.size() > 1 && ports.size() != count)
    return failure::permanent("invalid database connection string: could not match " +
                              std::to_string(ports.size()) + " port numbers to " +
                              std::to_string(count) + " hosts");

  // prefer-standby: every host as a standby first, then every host as any.
  std::vector<std::string> passes{target.value_or("read-write")};
  if (passes.front() == "prefer-standby") passes = {"standby", "any"};

  for (const auto& pass : passes) {
    for (std::size_t i = 0; i < count; ++i) {
      host_attempt a;
      const std::string h = i < hosts.size() ? hosts[i] : "";
      const std::string addr = i < addrs.size() ? addrs[i] : "";
      const std::string p = ports.empty() ? "" : ports.size() == 1 ? ports[0] : ports[i];
      // An empty entry is libpq's default (its socket directory, or
      // localhost): the keyword is left out.
      if (!h.empty()) a.params.emplace_back("host", h);
      if (!addr.empty()) a.params.emplace_back("hostaddr", addr);
      if (!p.empty()) a.params.emplace_back("port", p);
      a.params.emplace_back("target_session_attrs", pass);
      a.params.insert(a.params.end(), common.begin(), common.end());
      if (addr.empty() && is_host_name(h)) a.lookup = h;
      a.shown = show(h, addr, p);
      if (passes.size() > 1) a.shown += " (as " + pass + ")";
      plan.attempts.push_back(std::move(a));
    }
  }
  return plan;
}

std::chrono::steady_clock::time_point attempt_deadline(
    std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point until,
    std::size_t attempts_left, std::optional<std::chrono::milliseconds> per_host) {
  if (now >= until) return until;
  if (per_host) return std::min(until, now + *per_host);
  const auto share = (until - now) / static_cast<long>(std::max<std::size_t>(attempts_left, 1));
  return std::min(until,
                  now + std::max<std::chrono::steady_clock::duration>(share, min_attempt_time));
}

}  // namespace gatherstats::pg
