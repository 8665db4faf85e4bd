#include "gatherstats/observe/status.hpp"
#include "gatherstats/observe/pages.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <sstream>

using namespace gatherstats;
using namespace gatherstats::observe;
using namespace std::chrono_literals;

namespace {

timestamp at(std::int64_t seconds) { return timestamp(std::chrono::seconds(seconds)); }

fetch_record ok_fetch(std::string name, std::size_t rows, timestamp when) {
  fetch_record r;
  r.name = std::move(name);
  r.fetched_at = when;
  for (std::size_t i = 0; i < rows; ++i) r.rows.push_back("k" + std::to_string(i), double(i));
  r.outcome.duration = 120ms;
  r.outcome.http_status = 200;
  r.outcome.bytes = 1000;
  return r;
}

fetch_record failed_fetch(std::string name, fetch_reason why, std::string error, timestamp when) {
  fetch_record r;
  r.name = std::move(name);
  r.fetched_at = when;
  r.outcome.reason = why;
  r.outcome.error = std::move(error);
  r.outcome.duration = 3s;
  return r;
}

daemon_status sample() {
  daemon_status s;
  s.version = "0.1.0";
  s.revision = "abc";
  s.started = at(1'700'000'000);
  s.config_file = "/etc/gatherstats/gatherstats.yaml";
  s.configured = true;
  s.last_reload = at(1'700'000'000);
  endpoint_status a;
  a.name = "alpha";
  a.url = "http://a.example/stats";
  a.interval = 60s;
  a.record(ok_fetch("alpha", 3, at(1'700'000'100)));
  endpoint_status b;
  b.name = "beta \"quoted\"\\";
  b.url = "http://b.example/<script>?api_key=REDACTED";
  b.interval = 1s;
  b.record(
      failed_fetch("beta", fetch_reason::dns, "cannot resolve <b.example>", at(1'700'000'101)));
  endpoint_status c;
  c.name = "gamma";
  c.interval = 5min;
  s.endpoints = {a, b, c};
  s.database.up = true;
  s.database.connections_open = 2;
  s.database.retention_deleted_rows = 12'000;
  s.database.retention_dropped_partitions = 3;
  s.database.partitions_created = 5;
  s.spool.usable = true;
  s.spool.max_bytes = 1 << 30;
  return s;
}

// sample() as member m1 of cluster "web" (replicas 1, three live members):
// alpha and gamma are m1's, beta is fetched by m2.
daemon_status clustered() {
  auto s = sample();
  s.endpoints[0].owners = {"m1"};
  s.endpoints[1].owned = false;
  s.endpoints[1].owners = {"m2"};
  s.endpoints[2].owners = {"m1"};
  cluster_status c;
  c.name = "web";
  c.member = "m1";
  c.lease = 10s;
  c.replicas = 1;
  c.lease_valid = true;
  c.last_heartbeat = at(1'700'000'195);
  c.members = {{"m1", 2, at(1'700'000'000), at(1'700'000'205), true},
               {"m2", 1, at(1'700'000'050), at(1'700'000'203), false},
               {"m3 <\"x\">", 0, at(1'700'000'180), at(1'700'000'201), false}};
  c.endpoints_owned = 2;
  c.endpoints_total = 3;
  c.heartbeats = 40;
  c.heartbeat_failures = 2;
  c.membership_changes = 3;
  c.ticks_fenced = 5;
  s.cluster = c;
  return s;
}

// name -> {labels -> value} of every sample, and the TYPE of every family.
struct parsed_metrics {
  std::map<std::string, std::map<std::string, std::string>> samples;
  std::map<std::string, std::string> types;
};

parsed_metrics parse(const std::string& text) {
  parsed_metrics out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    REQUIRE(!line.empty());
    if (line.rfind("# TYPE ", 0) == 0) {
      auto rest = line.substr(7);
      auto sp = rest.find(' ');
      REQUIRE(out.types.emplace(rest.substr(0, sp), rest.substr(sp + 1)).second);
      continue;
    }
    if (line[0] == '#') continue;
    auto brace = line.find('{');
    auto space = line.rfind(' ');
    std::string name = line.substr(0, std::min(brace, space));
    std::string labels = brace < space ? line.substr(brace, space - brace) : "";
    out.samples[name][labels] = line.substr(space + 1);
  }
  return out;
}

}  // namespace

TEST_CASE("a histogram counts into cumulative buckets", "[observe]") {
  histogram h;
  h.observe(0.001);
  h.observe(0.3);
  h.observe(100);
  auto c = h.cumulative();
  CHECK(c[0] == 1);      // <= 5 ms
  CHECK(c[5] == 1);      // <= 250 ms
  CHECK(c[6] == 2);      // <= 500 ms
  CHECK(c.back() == 2);  // <= 60 s; the 100 s one only in +Inf
  CHECK(h.count() == 3);
  CHECK(h.sum() == Approx(100.301));
}

TEST_CASE("an endpoint's status follows its fetches", "[observe]") {
  endpoint_status e;
  e.record(ok_fetch("x", 4, at(10)));
  CHECK(e.up);
  CHECK(e.rows == 4);
  CHECK(e.last_success == at(10));
  e.record(failed_fetch("x", fetch_reason::timeout, "timed out", at(20)));
  e.record(failed_fetch("x", fetch_reason::timeout, "timed out again", at(30)));
  CHECK_FALSE(e.up);
  CHECK(e.fetches == 3);
  CHECK(e.failures_total() == 2);
  CHECK(e.failures[static_cast<std::size_t>(fetch_reason::timeout)] == 2);
  CHECK(e.consecutive_failures == 2);
  CHECK(e.last_error == "timed out again");
  CHECK(e.last_success == at(10));
  CHECK(e.last_fetch == at(30));
  CHECK(e.last_rows == 0);
  e.record(ok_fetch("x", 1, at(40)));
  CHECK(e.consecutive_failures == 0);
  CHECK(e.rows == 5);
}

TEST_CASE("metrics are in the text format with every endpoint and reason", "[observe]") {
  auto text = render_metrics(sample(), process_status{1.5, 4096, 8192, 7, 1024, 1.7e9, 2});
  auto m = parse(text);
  // Every family is prefixed, typed, and counters end in _total.
  for (const auto& [name, type] : m.types) {
    bool ours = name.rfind("gatherstatsd_", 0) == 0 || name.rfind("process_", 0) == 0;
    CHECK(ours);
    if (type == "counter") CHECK(name.size() > 6);
    if (type == "counter") CHECK(name.substr(name.size() - 6) == "_total");
  }
  CHECK(m.types.at("gatherstatsd_fetch_duration_seconds") == "histogram");
  CHECK(m.samples.at("gatherstatsd_endpoint_up").at("{endpoint=\"alpha\"}") == "1");
  // Quotes and backslashes in a label value are escaped.
  CHECK(m.samples.at("gatherstatsd_endpoint_up").at("{endpoint=\"beta \\\"quoted\\\"\\\\\"}") ==
        "0");
  // An endpoint never fetched has its series, at zero.
  CHECK(m.samples.at("gatherstatsd_endpoint_fetches_total").at("{endpoint=\"gamma\"}") == "0");
  CHECK(m.samples.at("gatherstatsd_endpoint_last_rows").at("{endpoint=\"alpha\"}") == "3");
  CHECK(m.samples.at("gatherstatsd_endpoint_interval_seconds").at("{endpoint=\"gamma\"}") == "300");
  auto& failures = m.samples.at("gatherstatsd_endpoint_failures_total");
  CHECK(failures.size() == 3 * 9);
  CHECK(failures.at("{endpoint=\"gamma\",reason=\"tls\"}") == "0");
  CHECK(failures.count("{endpoint=\"alpha\",reason=\"none\"}") == 0);
  CHECK(m.samples.at("gatherstatsd_endpoint_last_success_timestamp_seconds")
            .at("{endpoint=\"alpha\"}") == "1700000100");
  CHECK(m.samples.at("gatherstatsd_build_info").at("{version=\"0.1.0\",revision=\"abc\"}") == "1");
  CHECK(m.samples.at("gatherstatsd_fetch_duration_seconds_bucket").count("{le=\"+Inf\"}") == 1);
  CHECK(m.samples.at("gatherstatsd_spool_dropped_fetches_total").size() == drop_reason_count);
  CHECK(m.samples.at("process_cpu_seconds_total").at("") == "1.5");
  CHECK(m.samples.at("process_max_fds").at("") == "1024");
  // database.retention: what it removed, and the partitions kept.
  CHECK(m.types.at("gatherstatsd_retention_deleted_rows_total") == "counter");
  CHECK(m.samples.at("gatherstatsd_retention_deleted_rows_total").at("") == "12000");
  CHECK(m.samples.at("gatherstatsd_retention_dropped_partitions_total").at("") == "3");
  CHECK(m.samples.at("gatherstatsd_partitions_created_total").at("") == "5");
  // No URL anywhere: the endpoint label is the configured name.
  CHECK(text.find("example") == std::string::npos);
  // Without a listener there are no listener series; with one, there are.
  CHECK(m.samples.count("gatherstatsd_http_requests_total") == 0);
  auto s = sample();
  s.listener = listener_status{3, 10, 2, 9, 1, 1, 4, 0};
  auto l = parse(render_metrics(s, process_status{}));
  CHECK(l.samples.at("gatherstatsd_http_connections").at("") == "3");
  CHECK(l.samples.at("gatherstatsd_http_closed_connections_total").at("{reason=\"timeout\"}") ==
        "4");
  CHECK(l.samples.at("gatherstatsd_http_closed_connections_total")
            .at("{reason=\"max_connections\"}") == "2");
  CHECK(l.samples.at("gatherstatsd_http_refused_requests_total").at("{reason=\"unauthorized\"}") ==
        "1");
}

TEST_CASE("metrics in a cluster: this member, the live members, its share", "[observe]") {
  auto text = render_metrics(clustered(), process_status{});
  // Each family whole, in order, HELP and TYPE first.
  CHECK_THAT(text, Catch::Contains("# HELP gatherstatsd_endpoint_owned 1 when this cluster member "
                                   "fetches the endpoint, 0 when other members do.\n"
                                   "# TYPE gatherstatsd_endpoint_owned gauge\n"
                                   "gatherstatsd_endpoint_owned{endpoint=\"alpha\"} 1\n"
                                   "gatherstatsd_endpoint_owned{endpoint=\"beta "
                                   "\\\"quoted\\\"\\\\\"} 0\n"
                                   "gatherstatsd_endpoint_owned{endpoint=\"gamma\"} 1\n"));
  CHECK_THAT(
      text,
      Catch::Contains("# HELP gatherstatsd_cluster_info Always 1 in a cluster; the labels say "
                      "which cluster and which member this is.\n"
                      "# TYPE gatherstatsd_cluster_info gauge\n"
                      "gatherstatsd_cluster_info{cluster=\"web\",member=\"m1\"} 1\n"
                      "# HELP gatherstatsd_cluster_members Live members of the cluster this "
                      "member last saw, itself included.\n"
                      "# TYPE gatherstatsd_cluster_members gauge\n"
                      "gatherstatsd_cluster_members 3\n"
                      "# HELP gatherstatsd_cluster_endpoints_owned Endpoints this member fetches.\n"
                      "# TYPE gatherstatsd_cluster_endpoints_owned gauge\n"
                      "gatherstatsd_cluster_endpoints_owned 2\n"
                      "# HELP gatherstatsd_cluster_endpoints Endpoints configured, that the "
                      "members share.\n"
                      "# TYPE gatherstatsd_cluster_endpoints gauge\n"
                      "gatherstatsd_cluster_endpoints 3\n"
                      "# HELP gatherstatsd_cluster_lease_valid 1 while this member's lease is "
                      "valid (renewed less than a lease time ago).\n"
                      "# TYPE gatherstatsd_cluster_lease_valid gauge\n"
                      "gatherstatsd_cluster_lease_valid 1\n"
                      "# HELP gatherstatsd_cluster_heartbeats_total Heartbeats the database "
                      "answered.\n"
                      "# TYPE gatherstatsd_cluster_heartbeats_total counter\n"
                      "gatherstatsd_cluster_heartbeats_total 40\n"
                      "# HELP gatherstatsd_cluster_heartbeat_failures_total Heartbeats that "
                      "failed (no connection, an error, a timeout).\n"
                      "# TYPE gatherstatsd_cluster_heartbeat_failures_total counter\n"
                      "gatherstatsd_cluster_heartbeat_failures_total 2\n"
                      "# HELP gatherstatsd_cluster_membership_changes_total Members seen joining "
                      "or leaving the cluster since this one joined.\n"
                      "# TYPE gatherstatsd_cluster_membership_changes_total counter\n"
                      "gatherstatsd_cluster_membership_changes_total 3\n"
                      "# HELP gatherstatsd_cluster_ticks_fenced_total Fetches that stored "
                      "nothing because their tick was stored already.\n"
                      "# TYPE gatherstatsd_cluster_ticks_fenced_total counter\n"
                      "gatherstatsd_cluster_ticks_fenced_total 5\n"
                      "# HELP gatherstatsd_cluster_member_endpoints Endpoints each live member "
                      "fetches, as that member last reported it.\n"
                      "# TYPE gatherstatsd_cluster_member_endpoints gauge\n"
                      "gatherstatsd_cluster_member_endpoints{member=\"m1\"} 2\n"
                      "gatherstatsd_cluster_member_endpoints{member=\"m2\"} 1\n"
                      "gatherstatsd_cluster_member_endpoints{member=\"m3 <\\\"x\\\">\"} 0\n"));
  // Typed once each, counters in _total (the parser REQUIREs one TYPE a family).
  auto m = parse(text);
  for (const auto& [name, type] : m.types)
    if (name.rfind("gatherstatsd_cluster_", 0) == 0 && type == "counter")
      CHECK(name.substr(name.size() - 6) == "_total");
  auto lapsed = clustered();
  lapsed.cluster->lease_valid = false;
  CHECK(parse(render_metrics(lapsed, process_status{}))
            .samples.at("gatherstatsd_cluster_lease_valid")
            .at("") == "0");
  // Alone: no cluster series, and no endpoint_owned.
  auto alone = render_metrics(sample(), process_status{});
  CHECK(alone.find("gatherstatsd_cluster_") == std::string::npos);
  CHECK(alone.find("gatherstatsd_endpoint_owned") == std::string::npos);
}

TEST_CASE("process metrics come from /proc", "[observe]") {
  auto p = read_process_status();
  CHECK(p.resident_bytes > 0);
  CHECK(p.virtual_bytes >= p.resident_bytes);
  CHECK(p.open_fds >= 3);
  CHECK(p.max_fds >= p.open_fds);
  CHECK(p.threads >= 1);
  CHECK(p.start_time_seconds > 1.6e9);
}

TEST_CASE("readiness: nowhere durable to go, not loaded, stopping", "[observe]") {
  auto s = sample();
  CHECK(healthy(readiness_checks(s)));
  s.database.up = false;  // the spool takes over
  CHECK(healthy(readiness_checks(s)));
  s.spool.full = true;  // full under stop_fetching
  CHECK_FALSE(healthy(readiness_checks(s)));
  s.spool.full = false;
  s.spool.usable = false;
  s.spool.problem = "cannot create spool directory \"/nope\"";
  auto checks = readiness_checks(s);
  CHECK_FALSE(healthy(checks));
  auto text = render_health(checks, true, "readyz");
  CHECK_THAT(text, Catch::Contains("[+]config ok"));
  CHECK_THAT(text, Catch::Contains("[-]storage failed: the database is down and there is no usable "
                                   "spool (cannot create spool directory \"/nope\")"));
  CHECK_THAT(text, Catch::EndsWith("readyz check failed\n"));
  s = sample();
  s.configured = false;
  CHECK_FALSE(healthy(readiness_checks(s)));
  s = sample();
  s.stopping = true;
  CHECK_FALSE(healthy(readiness_checks(s)));
}

TEST_CASE("readiness in a cluster: this member's lease", "[observe]") {
  CHECK(readiness_checks(sample()).size() == 3);  // alone: no cluster check
  auto s = clustered();
  auto checks = readiness_checks(s);
  REQUIRE(checks.size() == 4);
  CHECK(checks.back().name == "cluster");
  CHECK(healthy(checks));
  CHECK_THAT(render_health(checks, true, "readyz"), Catch::Contains("[+]cluster ok\n"));
  s.cluster->lease_valid = false;
  s.cluster->problem = "connection refused";
  CHECK(render_health(readiness_checks(s), false, "readyz") ==
        "[-]cluster failed: this member's lease has lapsed (connection refused): the other "
        "members fetch its share\nreadyz check failed\n");
  s.cluster->problem.clear();
  CHECK(readiness_checks(s).back().why ==
        "this member's lease has lapsed: the other members fetch its share");
  // Never renewed at all: the others do not know it, it fetches everything.
  s.cluster->last_heartbeat.reset();
  s.cluster->problem = "timeout";
  CHECK(readiness_checks(s).back().why ==
        "this member has not joined its cluster yet (timeout): it fetches every endpoint "
        "itself until it can");
}

TEST_CASE("the status page escapes everything and lists failing endpoints first", "[observe]") {
  auto html = render_status_html(sample(), at(1'700'000'200));
  CHECK(html.find("<script>") == std::string::npos);
  CHECK_THAT(html, Catch::Contains("http://b.example/&lt;script&gt;?api_key=REDACTED"));
  CHECK_THAT(html, Catch::Contains("cannot resolve &lt;b.example&gt;"));
  auto beta = html.find("data-state=\"failing\"");
  auto gamma = html.find("data-state=\"pending\"");
  auto alpha = html.find("data-state=\"ok\"");
  REQUIRE(beta != std::string::npos);
  CHECK(beta < gamma);
  CHECK(gamma < alpha);
  CHECK_THAT(html, Catch::Contains("1m 40s ago"));
  CHECK_THAT(
      html, Catch::Contains("<dt>Retention</dt><dd>12000 rows deleted, 3 partitions dropped</dd>"));
  CHECK_THAT(html, Catch::Contains("<dt>Partitions</dt><dd>5 created</dd>"));
  // No external asset: nothing is loaded from elsewhere.
  CHECK(html.find("src=") == std::string::npos);
  CHECK(html.find("<link") == std::string::npos);
}

TEST_CASE("the status page in a cluster: the members and who fetches what", "[observe]") {
  const auto now = at(1'700'000'200);
  auto alone = render_status_html(sample(), now);
  CHECK(alone.find("id=\"cluster\"") == std::string::npos);
  CHECK(alone.find("<th>Owners</th>") == std::string::npos);
  CHECK_THAT(alone, Catch::Contains("<title>gatherstatsd: 3 endpoints, 1 failing</title>"));

  auto s = clustered();
  auto html = render_status_html(s, now);
  CHECK_THAT(html, Catch::Contains("<title>gatherstatsd m1 (cluster web): 2 of 3 endpoints, 0 "
                                   "failing</title>"));
  // Beta is m2's: not failing here, whatever this member last saw of it.
  CHECK_THAT(html, Catch::Contains("<span class=\"up\">0 of 2 endpoints failing</span>, 1 not "
                                   "fetched yet · cluster web: 3 members, fetching 2 of 3 "
                                   "endpoints · database"));
  CHECK_THAT(
      html, Catch::Contains(
                "<section class=\"card\" id=\"cluster\"><h2>Cluster</h2><dl class=\"facts\">"
                "<dt>Cluster</dt><dd>web</dd><dt>This member</dt><dd>m1</dd>"
                "<dt>Lease time</dt><dd>10s</dd><dt>Replicas</dt><dd>1</dd>"
                "<dt>Lease</dt><dd id=\"lease\" class=\"up\">valid</dd>"
                "<dt>Last heartbeat</dt><dd><time datetime=\"2023-11-14T22:16:35.000000Z\" "
                "title=\"2023-11-14T22:16:35.000000Z\">5s ago</time></dd>"
                "<dt>Endpoints</dt><dd>fetching 2 of 3</dd>"
                "<dt>Heartbeats</dt><dd>40 ok, 2 failed</dd>"
                "<dt>Membership</dt><dd>3 changes</dd><dt>Ticks fenced</dt><dd>5</dd></dl>\n"
                "<table id=\"members\"><thead><tr><th>Member</th><th>Endpoints</th><th>Joined</th>"
                "</tr></thead><tbody>\n"
                "<tr class=\"member self\" data-member=\"m1\"><td data-label=\"Member\">m1 (this "
                "member)</td><td data-label=\"Endpoints\">2</td><td data-label=\"Joined\"><time "
                "datetime=\"2023-11-14T22:13:20.000000Z\" title=\"2023-11-14T22:13:20.000000Z\">3m "
                "20s ago</time></td></tr>\n"
                "<tr class=\"member\" data-member=\"m2\"><td data-label=\"Member\">m2</td>"));
  // A member's name is escaped like everything else.
  CHECK_THAT(html, Catch::Contains("data-member=\"m3 &lt;&quot;x&quot;&gt;\"><td "
                                   "data-label=\"Member\">m3 &lt;&quot;x&quot;&gt;</td>"));
  CHECK(html.find("<\"x\">") == std::string::npos);
  // The endpoints: who fetches each, the others' last (history) and dimmed.
  CHECK_THAT(html, Catch::Contains("<h2>Endpoints (3, this member fetches 2, 0 failing)</h2>"));
  CHECK_THAT(html, Catch::Contains("<th>State</th><th>Owners</th><th>URL</th>"));
  CHECK_THAT(html, Catch::Contains("data-state=\"ok\"><td data-label=\"Name\">alpha</td><td "
                                   "data-label=\"State\" class=\"state\">ok</td><td "
                                   "data-label=\"Owners\">m1 (this member)</td>"));
  CHECK_THAT(html, Catch::Contains("<tr class=\"endpoint elsewhere\" data-endpoint=\"beta "
                                   "&quot;quoted&quot;\\\" data-state=\"elsewhere\"><td "
                                   "data-label=\"Name\">beta &quot;quoted&quot;\\</td><td "
                                   "data-label=\"State\" class=\"state\">fetched by m2</td><td "
                                   "data-label=\"Owners\">m2</td>"));
  // Other members' endpoints come last.
  CHECK(html.find("data-state=\"ok\"") < html.find("data-state=\"elsewhere\""));

  // The lease lapsed: said at a glance, with why.
  s.cluster->lease_valid = false;
  s.cluster->problem = "could not connect to server: <refused>";
  html = render_status_html(s, now);
  CHECK_THAT(html, Catch::Contains("fetching 2 of 3 endpoints, <span class=\"down\">lease "
                                   "lapsed</span> · database"));
  CHECK_THAT(html, Catch::Contains("<dd id=\"lease\" class=\"down\">lapsed: could not connect to "
                                   "server: &lt;refused&gt;</dd>"));
  s.cluster->last_heartbeat.reset();
  html = render_status_html(s, now);
  CHECK_THAT(html, Catch::Contains("<span class=\"down\">not joined yet</span>"));
  CHECK_THAT(html, Catch::Contains("<dd id=\"lease\" class=\"down\">not joined yet: could not "
                                   "connect to server: &lt;refused&gt;</dd>"));
  CHECK_THAT(html, Catch::Contains("<dt>Last heartbeat</dt><dd>never</dd>"));
  // Valid, but the last heartbeat failed: the lease has not run out yet.
  s.cluster->lease_valid = true;
  s.cluster->last_heartbeat = at(1'700'000'195);
  s.cluster->problem = "timeout";
  CHECK_THAT(render_status_html(s, now),
             Catch::Contains("<dd id=\"lease\" class=\"up\">valid, last heartbeat failed: "
                             "timeout</dd>"));
  // Two replicas: an endpoint of this member and another.
  s.endpoints[0].owners = {"m1", "m3"};
  CHECK_THAT(render_status_html(s, now),
             Catch::Contains("<td data-label=\"Owners\">m1 (this member), m3</td>"));
}

TEST_CASE("the JSON status is the page's twin", "[observe]") {
  auto text = render_status_json(sample(), at(1'700'000'200));
  auto v = boost::json::parse(text).as_object();
  CHECK(v.at("version") == "0.1.0");
  auto& eps = v.at("endpoints").as_array();
  REQUIRE(eps.size() == 3);
  CHECK(eps[0].at("state") == "failing");
  CHECK(eps[0].at("failures").at("dns") == 1);
  CHECK(eps[2].at("name") == "alpha");
  CHECK(eps[2].at("last_rows") == 3);
  CHECK(eps[1].at("last_fetch").is_null());
  CHECK(v.at("database").at("up") == true);
  CHECK(v.at("database").at("retention_deleted_rows") == 12'000);
  CHECK(v.at("database").at("retention_dropped_partitions") == 3);
  CHECK(v.at("database").at("partitions_created") == 5);
  // Alone: no cluster, every endpoint this daemon's.
  CHECK(v.at("cluster").is_null());
  CHECK(eps[0].at("owned") == true);
  CHECK(eps[0].at("owners").as_array().empty());
}

TEST_CASE("the JSON status in a cluster", "[observe]") {
  auto v = boost::json::parse(render_status_json(clustered(), at(1'700'000'200))).as_object();
  CHECK(boost::json::serialize(v.at("cluster")) ==
        R"({"name":"web","member":"m1","lease_seconds":1E1,"replicas":1,"lease_valid":true,)"
        R"("problem":"","last_heartbeat":"2023-11-14T22:16:35.000000Z","members":[)"
        R"({"name":"m1","endpoints":2,"joined":"2023-11-14T22:13:20.000000Z",)"
        R"("lease_until":"2023-11-14T22:16:45.000000Z","self":true},)"
        R"({"name":"m2","endpoints":1,"joined":"2023-11-14T22:14:10.000000Z",)"
        R"("lease_until":"2023-11-14T22:16:43.000000Z","self":false},)"
        R"({"name":"m3 <\"x\">","endpoints":0,"joined":"2023-11-14T22:16:20.000000Z",)"
        R"("lease_until":"2023-11-14T22:16:41.000000Z","self":false}],)"
        R"("endpoints_owned":2,"endpoints_total":3,"heartbeats":40,"heartbeat_failures":2,)"
        R"("membership_changes":3,"ticks_fenced":5})");
  auto& eps = v.at("endpoints").as_array();
  REQUIRE(eps.size() == 3);
  // gamma (pending), alpha (ok), then beta: m2's.
  CHECK(eps[0].at("name") == "gamma");
  CHECK(eps[1].at("name") == "alpha");
  CHECK(eps[1].at("owned") == true);
  CHECK(eps[1].at("owners") == boost::json::array{"m1"});
  CHECK(eps[2].at("state") == "elsewhere");
  CHECK(eps[2].at("owned") == false);
  CHECK(eps[2].at("owners") == boost::json::array{"m2"});
  // What this member last saw of it stays, as history.
  CHECK(eps[2].at("failures").at("dns") == 1);
}

TEST_CASE("durations ago read like a person would say them", "[observe]") {
  CHECK(ago(std::nullopt, at(0)) == "never");
  CHECK(ago(at(0), at(5)) == "5s ago");
  CHECK(ago(at(0), at(65)) == "1m 5s ago");
  CHECK(ago(at(0), at(3600)) == "1h ago");
  CHECK(ago(at(0), at(90061)) == "1d 1h ago");
  CHECK(ago(at(10), at(5)) == "0s ago");
  CHECK(escape_html("<a href='x'>&\"</a>") == "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
}

TEST_CASE("pages by path", "[observe]") {
  int snapshots = 0;
  status_source src = [&] {
    ++snapshots;
    return sample();
  };
  auto live = serve_page("/livez", src, at(0));
  CHECK(live.status == 200);
  CHECK(live.body == "ok\n");
  CHECK(snapshots == 0);  // liveness never looks at the database or the spool
  CHECK(serve_page("/healthz?verbose", src, at(0)).body ==
        "[+]event_loop ok\nlivez check passed\n");
  CHECK(serve_page("/readyz", src, at(0)).status == 200);
  CHECK_THAT(serve_page("/readyz?verbose=1", src, at(0)).body, Catch::Contains("[+]storage ok"));
  auto metrics = serve_page("/metrics", src, at(0));
  CHECK(metrics.content_type == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(serve_page("/", src, at(0)).content_type == "text/html; charset=utf-8");
  CHECK(serve_page("/api/v1/status", src, at(0)).content_type == "application/json");
  CHECK(serve_page("/nope", src, at(0)).status == 404);
  auto bad = sample();
  bad.stopping = true;
  status_source stopping = [&] { return bad; };
  CHECK(serve_page("/readyz", stopping, at(0)).status == 503);
}
