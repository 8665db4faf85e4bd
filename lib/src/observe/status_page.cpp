// The status page at / (HTML, no external assets: it must work with no
// internet) and its JSON twin at /api/v1/status.
#include "gatherstats/observe/status.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstdio>

namespace bj = boost::json;

namespace gatherstats::observe {

std::string escape_html(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string ago(std::optional<timestamp> t, timestamp now) {
  if (!t) return "never";
  auto s = std::chrono::duration_cast<std::chrono::seconds>(now - *t).count();
  if (s < 0) s = 0;
  auto two = [](long long a, const char* ua, long long b, const char* ub) {
    std::string out = std::to_string(a) + ua;
    if (b > 0) out += " " + std::to_string(b) + ub;
    return out + " ago";
  };
  if (s < 60) return std::to_string(s) + "s ago";
  if (s < 3600) return two(s / 60, "m", s % 60, "s");
  if (s < 86400) return two(s / 3600, "h", s % 3600 / 60, "m");
  return two(s / 86400, "d", s % 86400 / 3600, "h");
}

namespace {

// The state an endpoint is shown in: failing, ok, or waiting for its first
// fetch; in a cluster, "elsewhere" when other members fetch it (what this
// member last saw of it is history then, not a worry).
const char* state_of(const endpoint_status& e) {
  if (!e.owned) return "elsewhere";
  if (!e.last_fetch) return "pending";
  return e.up ? "ok" : "failing";
}

// The members that fetch an endpoint, "m1 (this member), m3"; `self` is
// this member's name. Escaped for HTML.
std::string owners_html(const endpoint_status& e, const std::string& self) {
  std::string out;
  for (const auto& o : e.owners) {
    if (!out.empty()) out += ", ";
    out += escape_html(o);
    if (o == self) out += " (this member)";
  }
  return out;
}

std::string iso(std::optional<timestamp> t) { return t ? to_iso8601(*t) : std::string(); }

std::string human_duration(std::chrono::microseconds d) {
  char buf[32];
  double ms = static_cast<double>(d.count()) / 1000.0;
  if (ms < 1000)
    std::snprintf(buf, sizeof buf, "%.0f ms", ms);
  else
    std::snprintf(buf, sizeof buf, "%.2f s", ms / 1000);
  return buf;
}

std::string human_interval(std::chrono::milliseconds d) {
  auto ms = d.count();
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string human_bytes(std::uint64_t b) {
  char buf[32];
  if (b < 1024) return std::to_string(b) + " B";
  if (b < (1u << 20))
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(b) / 1024);
  else if (b < (1u << 30))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1 << 20));
  else
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(b) / (1 << 30));
  return buf;
}

// Failing endpoints first, then waiting ones, then the rest, then (in a
// cluster) those other members fetch; by name within.
std::vector<const endpoint_status*> ordered(const std::vector<endpoint_status>& eps) {
  std::vector<const endpoint_status*> out;
  for (const auto& e : eps) out.push_back(&e);
  auto rank = [](const endpoint_status* e) {
    std::string_view st = state_of(*e);
    return st == "failing" ? 0 : st == "pending" ? 1 : st == "ok" ? 2 : 3;
  };
  std::stable_sort(out.begin(), out.end(), [&](auto* a, auto* b) {
    if (rank(a) != rank(b)) return rank(a) < rank(b);
    return a->name < b->name;
  });
  return out;
}

// "1m 5s ago" with the exact time on hover, or "never".
std::string time_text(std::optional<timestamp> t, timestamp now) {
  if (!t) return "never";
  return "<time datetime=\"" + iso(t) + "\" title=\"" + iso(t) + "\">" + ago(t, now) + "</time>";
}

std::string time_cell(std::optional<timestamp> t, timestamp now) {
  return "<td>" + time_text(t, now) + "</td>";
}

// The lease as the page says it: valid, lapsed, or never held yet.
std::string lease_text(const cluster_status& c) {
  if (c.lease_valid)
    return c.problem.empty() ? "valid" : "valid, last heartbeat failed: " + c.problem;
  std::string out = c.last_heartbeat ? "lapsed" : "not joined yet";
  if (!c.problem.empty()) out += ": " + c.problem;
  return out;
}

std::string cluster_card(const cluster_status& c, timestamp now) {
  std::string h = "<section class=\"card\" id=\"cluster\"><h2>Cluster</h2><dl class=\"facts\">";
  h += "<dt>Cluster</dt><dd>" + escape_html(c.name) + "</dd>";
  h += "<dt>This member</dt><dd>" + escape_html(c.member) + "</dd>";
  h += "<dt>Lease time</dt><dd>" + human_interval(c.lease) + "</dd>";
  h += "<dt>Replicas</dt><dd>" + std::to_string(c.replicas) + "</dd>";
  h += std::string("<dt>Lease</dt><dd id=\"lease\" class=\"") + (c.lease_valid ? "up" : "down") +
       "\">" + escape_html(lease_text(c)) + "</dd>";
  h += "<dt>Last heartbeat</dt><dd>" + time_text(c.last_heartbeat, now) + "</dd>";
  h += "<dt>Endpoints</dt><dd>fetching " + std::to_string(c.endpoints_owned) + " of " +
       std::to_string(c.endpoints_total) + "</dd>";
  h += "<dt>Heartbeats</dt><dd>" + std::to_string(c.heartbeats) + " ok, " +
       std::to_string(c.heartbeat_failures) + " failed</dd>";
  h += "<dt>Membership</dt><dd>" + std::to_string(c.membership_changes) +
       (c.membership_changes == 1 ? " change" : " changes") + "</dd>";
  h += "<dt>Ticks fenced</dt><dd>" + std::to_string(c.ticks_fenced) + "</dd>";
  h += "</dl>\n<table id=\"members\"><thead><tr><th>Member</th><th>Endpoints</th><th>Joined</"
       "th></tr></thead><tbody>\n";
  for (const auto& m : c.members) {
    h += std::string("<tr class=\"member") + (m.self ? " self" : "") + "\" data-member=\"" +
         escape_html(m.name) + "\">";
    h += "<td data-label=\"Member\">" + escape_html(m.name) + (m.self ? " (this member)" : "") +
         "</td>";
    h += "<td data-label=\"Endpoints\">" + std::to_string(m.endpoints) + "</td>";
    std::string joined = time_cell(m.joined, now);
    joined.insert(3, " data-label=\"Joined\"");
    h += joined;
    h += "</tr>\n";
  }
  h += "</tbody></table></section>\n";
  return h;
}

constexpr const char* style = R"(
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#cf222e;--wait:#9a6700;--line:#8884}
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:1rem;max-width:90rem}
h1{font-size:1.3rem;margin:.2rem 0 .3rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.summary{margin:0 0 1rem}.layout{display:flex;flex-direction:column}.card h2{margin-top:0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:1rem}
.card{border:1px solid var(--line);border-radius:.4rem;padding:.7rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
td.url,td.error{overflow-wrap:anywhere;max-width:28rem}
.state{font-weight:600}.ok .state,.up{color:var(--ok)}.failing .state,.down{color:var(--bad)}
.pending .state{color:var(--wait)}tr.elsewhere{opacity:.7}
@media (max-width:48rem){
 #endpoint-list{order:-1;margin-bottom:1rem}
 table,tbody,tr,td{display:block;width:auto}thead{display:none}
 tr{border:1px solid var(--line);border-radius:.4rem;margin:0 0 .8rem;padding:.3rem}
 td{border:0;padding:.15rem .3rem}td::before{content:attr(data-label) ": ";font-weight:600}
 td.url,td.error{max-width:none}}
)";

}  // namespace

std::string render_status_html(const daemon_status& s, timestamp now) {
  std::size_t failing = 0;
  std::size_t owned = 0;  // every endpoint, alone
  for (const auto& e : s.endpoints) {
    if (std::string_view(state_of(e)) == "failing") ++failing;
    if (e.owned) ++owned;
  }

  std::string h;
  h.reserve(4096 + s.endpoints.size() * 900);
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
       "<meta http-equiv=\"refresh\" content=\"30\">"
       "<title>gatherstatsd";
  if (s.cluster)
    h += " " + escape_html(s.cluster->member) + " (cluster " + escape_html(s.cluster->name) +
         "): " + std::to_string(owned) + " of";
  else
    h += ":";
  h += " " + std::to_string(s.endpoints.size()) + " endpoints, " + std::to_string(failing) +
       " failing</title><style>";
  h += style;
  h += "</style></head><body>\n<h1>gatherstatsd " + escape_html(s.version) + "</h1>\n";
  // What a glance needs, first on every screen. In a cluster: of the
  // endpoints this member fetches, then the cluster in a few words.
  std::size_t pending = 0;
  for (const auto& e : s.endpoints)
    if (std::string_view(state_of(e)) == "pending") ++pending;
  h += "<p class=\"summary\" id=\"summary\"><span class=\"" +
       std::string(failing > 0 ? "down" : "up") + "\">" + std::to_string(failing) + " of " +
       std::to_string(owned) + " endpoints failing</span>";
  if (pending > 0) h += ", " + std::to_string(pending) + " not fetched yet";
  if (s.cluster) {
    const auto& c = *s.cluster;
    h += " · cluster " + escape_html(c.name) + ": " + std::to_string(c.members.size()) +
         (c.members.size() == 1 ? " member" : " members") + ", fetching " + std::to_string(owned) +
         " of " + std::to_string(s.endpoints.size()) + " endpoints";
    if (!c.lease_valid)
      h += std::string(", <span class=\"down\">") +
           (c.last_heartbeat ? "lease lapsed" : "not joined yet") + "</span>";
  }
  h += std::string(" · database <span class=\"") + (s.database.up ? "up\">up" : "down\">down") +
       "</span> · spool <span class=\"" +
       (s.spool.usable ? (s.spool.full ? "down\">full" : "up\">usable") : "down\">not usable") +
       "</span>";
  if (s.spool.fetches > 0) h += " (" + std::to_string(s.spool.fetches) + " waiting)";
  h += "</p>\n<div class=\"layout\">\n";

  h += "<div class=\"cards\">\n<section class=\"card\" id=\"daemon\"><h2>Daemon</h2><dl "
       "class=\"facts\">";
  h += "<dt>Version</dt><dd>" + escape_html(s.version) + " (" + escape_html(s.revision) + ")</dd>";
  h += "<dt>Up since</dt><dd><time datetime=\"" + to_iso8601(s.started) + "\">" +
       to_iso8601(s.started) + "</time> (" + ago(s.started, now) + ")</dd>";
  h += "<dt>Configuration</dt><dd>" + escape_html(s.config_file) + "</dd>";
  h += "<dt>Last reload</dt><dd id=\"reload\" class=\"";
  h += s.last_reload_ok ? "up\">ok" : "down\">failed: " + escape_html(s.last_reload_error);
  if (s.last_reload) h += ", " + ago(s.last_reload, now);
  h += "</dd>";
  h += "<dt>State</dt><dd>";
  h += s.stopping ? "stopping" : s.configured ? "running" : "starting";
  h += "</dd></dl></section>\n";

  const auto& db = s.database;
  h += "<section class=\"card\" id=\"database\"><h2>Database</h2><dl class=\"facts\">";
  h += std::string("<dt>State</dt><dd class=\"") + (db.up ? "up\">up" : "down\">down") + "</dd>";
  h += "<dt>Connections</dt><dd>" + std::to_string(db.connections_open) + " open, " +
       std::to_string(db.connections_busy) + " busy</dd>";
  h += "<dt>Waiting</dt><dd>" + std::to_string(db.waiting) + " fetches in memory</dd>";
  h += "<dt>Committed</dt><dd>" + std::to_string(db.committed) + " fetches, " +
       std::to_string(db.rows_committed) + " rows</dd>";
  h += "<dt>Refused</dt><dd>" + std::to_string(db.commit_failures) + " fetches</dd>";
  h += "<dt>Retention</dt><dd>" + std::to_string(db.retention_deleted_rows) + " rows deleted, " +
       std::to_string(db.retention_dropped_partitions) + " partitions dropped</dd>";
  h += "<dt>Partitions</dt><dd>" + std::to_string(db.partitions_created) + " created</dd>";
  h += "</dl></section>\n";

  const auto& sp = s.spool;
  std::uint64_t dropped = 0;
  for (auto d : sp.dropped) dropped += d;
  h += "<section class=\"card\" id=\"spool\"><h2>Spool</h2><dl class=\"facts\">";
  h += "<dt>Directory</dt><dd>" + escape_html(sp.directory) + "</dd>";
  h += std::string("<dt>State</dt><dd class=\"") +
       (sp.usable ? (sp.full ? "down\">full" : "up\">usable")
                  : "down\">not usable: " + escape_html(sp.problem)) +
       "</dd>";
  h += "<dt>Waiting</dt><dd>" + std::to_string(sp.fetches) + " fetches, " + human_bytes(sp.bytes) +
       " of " + human_bytes(sp.max_bytes) + "</dd>";
  h += "<dt>Oldest</dt><dd>" +
       (sp.oldest ? to_iso8601(*sp.oldest) + " (" + ago(sp.oldest, now) + ")"
                  : std::string("none")) +
       "</dd>";
  h += "<dt>Dropped</dt><dd" + std::string(dropped > 0 ? " class=\"down\"" : "") + ">" +
       std::to_string(dropped) + " fetches</dd>";
  h += "</dl></section>\n";
  if (s.cluster) h += cluster_card(*s.cluster, now);
  h += "</div>\n";

  h += "<section id=\"endpoint-list\"><h2>Endpoints (" + std::to_string(s.endpoints.size()) + ", ";
  if (s.cluster) h += "this member fetches " + std::to_string(owned) + ", ";
  h += std::to_string(failing) + " failing)</h2>\n";
  h += "<table id=\"endpoints\"><thead><tr><th>Name</th><th>State</th>";
  if (s.cluster) h += "<th>Owners</th>";
  h += "<th>URL</th><th>Interval</th><th>Last fetch</th><th>Duration</th><th>Rows</th><th>Last "
       "error</th><th>Last success</th></tr></thead><tbody>\n";
  for (const auto* e : ordered(s.endpoints)) {
    const char* st = state_of(*e);
    h += "<tr class=\"endpoint ";
    h += st;
    h += "\" data-endpoint=\"" + escape_html(e->name) + "\" data-state=\"" + st + "\">";
    h += "<td data-label=\"Name\">" + escape_html(e->name) + "</td>";
    h += "<td data-label=\"State\" class=\"state\">";
    if (!e->owned) {
      std::string others;
      for (const auto& o : e->owners) others += (others.empty() ? "" : ", ") + escape_html(o);
      h += others.empty() ? std::string("fetched by another member") : "fetched by " + others;
    } else {
      h += st;
      if (e->consecutive_failures > 1)
        h += " (" + std::to_string(e->consecutive_failures) + " in a row)";
    }
    h += "</td>";
    if (s.cluster) h += "<td data-label=\"Owners\">" + owners_html(*e, s.cluster->member) + "</td>";
    h += "<td data-label=\"URL\" class=\"url\">" + escape_html(e->url) + "</td>";
    h += "<td data-label=\"Interval\">" + human_interval(e->interval) + "</td>";
    std::string fetched = time_cell(e->last_fetch, now);
    fetched.insert(3, " data-label=\"Last fetch\"");
    h += fetched;
    h += "<td data-label=\"Duration\">" +
         (e->last_fetch ? human_duration(e->last_duration) : std::string()) + "</td>";
    h += "<td data-label=\"Rows\">" + (e->last_fetch ? std::to_string(e->last_rows) : "") + "</td>";
    h += "<td data-label=\"Last error\" class=\"error\">" + escape_html(e->last_error) + "</td>";
    std::string success = time_cell(e->last_success, now);
    success.insert(3, " data-label=\"Last success\"");
    h += success;
    h += "</tr>\n";
  }
  h += "</tbody></table></section>\n</div>\n<p><a href=\"metrics\">metrics</a> · <a "
       "href=\"api/v1/status\">status as JSON</a> · <a href=\"readyz?verbose\">readiness</a> · "
       "generated " +
       to_iso8601(now) + "</p>\n</body></html>\n";
  return h;
}

std::string render_status_json(const daemon_status& s, timestamp now) {
  auto time_or_null = [](std::optional<timestamp> t) -> bj::value {
    if (!t) return nullptr;
    return bj::value(to_iso8601(*t));
  };
  bj::object root;
  root["version"] = s.version;
  root["revision"] = s.revision;
  root["started"] = to_iso8601(s.started);
  root["uptime_seconds"] = std::chrono::duration<double>(now - s.started).count();
  root["config_file"] = s.config_file;
  root["state"] = s.stopping ? "stopping" : s.configured ? "running" : "starting";
  root["last_reload"] = {{"ok", s.last_reload_ok},
                         {"at", time_or_null(s.last_reload)},
                         {"error", s.last_reload_error}};
  const auto& db = s.database;
  root["database"] = {{"up", db.up},
                      {"connections_open", db.connections_open},
                      {"connections_busy", db.connections_busy},
                      {"waiting", db.waiting},
                      {"committed_fetches", db.committed},
                      {"committed_rows", db.rows_committed},
                      {"commit_failures", db.commit_failures},
                      {"retention_deleted_rows", db.retention_deleted_rows},
                      {"retention_dropped_partitions", db.retention_dropped_partitions},
                      {"partitions_created", db.partitions_created}};
  const auto& sp = s.spool;
  bj::object dropped;
  for (std::size_t r = 0; r < drop_reason_count; ++r)
    dropped[to_string(static_cast<drop_reason>(r))] = sp.dropped[r];
  root["spool"] = {{"directory", sp.directory}, {"usable", sp.usable},
                   {"problem", sp.problem},     {"full", sp.full},
                   {"fetches", sp.fetches},     {"bytes", sp.bytes},
                   {"max_bytes", sp.max_bytes}, {"oldest", time_or_null(sp.oldest)},
                   {"written", sp.written},     {"replayed", sp.replayed},
                   {"dropped", dropped}};
  if (s.cluster) {
    const auto& c = *s.cluster;
    bj::array members;
    for (const auto& m : c.members)
      members.push_back(bj::object{{"name", m.name},
                                   {"endpoints", m.endpoints},
                                   {"joined", time_or_null(m.joined)},
                                   {"lease_until", time_or_null(m.lease_until)},
                                   {"self", m.self}});
    root["cluster"] = {{"name", c.name},
                       {"member", c.member},
                       {"lease_seconds", std::chrono::duration<double>(c.lease).count()},
                       {"replicas", c.replicas},
                       {"lease_valid", c.lease_valid},
                       {"problem", c.problem},
                       {"last_heartbeat", time_or_null(c.last_heartbeat)},
                       {"members", std::move(members)},
                       {"endpoints_owned", c.endpoints_owned},
                       {"endpoints_total", c.endpoints_total},
                       {"heartbeats", c.heartbeats},
                       {"heartbeat_failures", c.heartbeat_failures},
                       {"membership_changes", c.membership_changes},
                       {"ticks_fenced", c.ticks_fenced}};
  } else {
    root["cluster"] = nullptr;  // alone
  }
  bj::array eps;
  for (const auto* e : ordered(s.endpoints)) {
    bj::object failures;
    for (std::size_t r = 1; r < fetch_reason_count; ++r)
      failures[to_string(static_cast<fetch_reason>(r))] = e->failures[r];
    bj::object o;
    o["name"] = e->name;
    o["url"] = e->url;
    o["interval_seconds"] = std::chrono::duration<double>(e->interval).count();
    o["state"] = state_of(*e);
    o["last_fetch"] = time_or_null(e->last_fetch);
    o["last_success"] = time_or_null(e->last_success);
    o["last_duration_seconds"] = std::chrono::duration<double>(e->last_duration).count();
    o["last_http_status"] = e->last_http_status;
    o["last_rows"] = e->last_rows;
    o["last_bytes"] = e->last_bytes;
    o["last_error"] = e->last_error;
    o["consecutive_failures"] = e->consecutive_failures;
    o["fetches"] = e->fetches;
    o["rows"] = e->rows;
    o["skipped_ticks"] = e->skipped_ticks;
    o["failures"] = std::move(failures);
    o["owned"] = e->owned;
    bj::array owners;
    for (const auto& name : e->owners) owners.push_back(bj::string(name));
    o["owners"] = std::move(owners);
    eps.push_back(std::move(o));
  }
  root["endpoints"] = std::move(eps);
  return bj::serialize(root) + "\n";
}

}  // namespace gatherstats::observe
