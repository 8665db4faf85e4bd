// The member's two loops: the heartbeat (leases, the live members) and, with
// cluster.notify, the listener that wakes it when a NOTIFY says a member
// joined or left. Both reconnect on their own; neither keeps anything on a
// server session but the listener's LISTEN.
#include "gatherstats/cluster/member.hpp"

#include "gatherstats/cluster/assignment.hpp"
#include "gatherstats/config/duration.hpp"
#include "gatherstats/pg/member_table.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <random>

namespace asio = boost::asio;

namespace gatherstats::cluster {
namespace {
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How often a member leaving looks whether the others took its share over.
constexpr milliseconds handover_poll{100};
// A lease about to run out is looked at this long after its end, so that
// the database's clock has passed it too.
constexpr milliseconds past_lease_end{20};

std::string random_instance() {
  std::random_device rd;
  char buf[33];
  std::snprintf(buf, sizeof buf, "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  return buf;
}

timestamp from_epoch_seconds(double s) {
  return timestamp(std::chrono::microseconds(static_cast<std::int64_t>(s * 1e6)));
}

std::string joined_list(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

}  // namespace

struct member::state {
  asio::any_io_executor ex;
  member_settings settings;
  pg::table_name table;
  members_callback on_members;
  log::event_sink events;
  const std::string instance = random_instance();

  std::vector<std::string> members;  // acted on: the live ones, this one always in
  std::vector<pg::member_row> rows;  // the live members as last read
  std::size_t share = 0, total = 0;
  std::string endpoints;     // the fingerprint of this member's endpoints
  std::string disagreement;  // the members' endpoint lists as last warned about
  bool stopping = false;
  bool joined = false;  // a heartbeat has renewed the lease at least once
  bool lease_reported_lost = false;
  bool name_conflict_reported = false;
  steady::time_point lease_valid_until{};  // by this process's clock, from the renewal's start
  std::optional<timestamp> last_heartbeat;
  std::uint64_t heartbeats = 0, heartbeat_failures = 0, membership_changes = 0;
  std::string problem;
  bool beat_now = false;           // a heartbeat is wanted at once (a notification, a change)
  asio::steady_timer wake;         // the heartbeat's wait; cancelled to beat at once
  asio::steady_timer listen_wake;  // the listener's pause between connects
  bool beating = false;            // the heartbeat loop runs
  asio::steady_timer beat_done;    // cancelled when the heartbeat loop ends

  state(asio::any_io_executor e, member_settings s, members_callback cb, log::event_sink ev)
      : ex(e),
        settings(std::move(s)),
        table(pg::member_table(pg::table_name::parse(settings.table).value())),
        on_members(std::move(cb)),
        events(std::move(ev)),
        wake(e),
        listen_wake(e),
        beat_done(e, steady::time_point::max()) {}

  const config::cluster_config& cfg() const { return settings.cluster; }

  void emit(log::event e) {
    if (events) events(e);
  }

  std::string describe_members() const {
    return std::to_string(members.size()) + " member(s): " + joined_list(members);
  }

  // The live members read by a heartbeat: events for each change, then
  // the collector acts on them.
  void take(std::vector<pg::member_row> live, double db_now) {
    std::vector<std::string> names;
    for (const auto& r : live) names.push_back(r.name);
    if (std::find(names.begin(), names.end(), cfg().member) == names.end())
      names.push_back(cfg().member);
    std::sort(names.begin(), names.end());
    const auto diff = compare(members, names);
    const bool first = members.empty();
    if (first) {
      // This member's join: one event, with the members it found.
      members = names;
      log::event e{log::event_kind::member_joined, log::severity::notice};
      e.detail =
          "member " + cfg().member + " joined cluster " + cfg().name + "; " + describe_members();
      emit(e);
    }
    // A member gone with its lease still running gave it up (it left);
    // otherwise its lease ran out.
    auto left_how = [&](const std::string& name) -> std::string {
      for (const auto& r : rows)
        if (r.name == name) return r.lease_until > db_now ? "left" : "is gone: its lease expired";
      return "left";
    };
    for (const auto& name : diff.left) {
      ++membership_changes;
      members = names;
      log::event e{log::event_kind::member_left, log::severity::notice};
      e.detail = "member " + name + " of cluster " + cfg().name + " " + left_how(name) + "; " +
                 describe_members();
      emit(e);
    }
    for (const auto& name : diff.joined) {
      if (first) break;  // this one's join, said above
      ++membership_changes;
      members = names;
      log::event e{log::event_kind::member_joined, log::severity::notice};
      e.detail = "member " + name + " joined cluster " + cfg().name + "; " + describe_members();
      emit(e);
    }
    rows = std::move(live);
    check_agreement();
    if (!diff.empty()) {
      members = std::move(names);
      if (on_members) on_members(members);
      beat_now = true;  // tell the others at once which members this one acts on
    }
  }

  // Warns once per state when the live members are not configured with the
  // same endpoints, and says when they agree again.
  void check_agreement() {
    std::map<std::string, std::vector<std::string>> by_config;
    for (const auto& r : rows)
      if (!r.self && !r.config.empty()) by_config[r.config].push_back(r.name);
    by_config[endpoints].push_back(cfg().member);
    std::string state;
    if (by_config.size() > 1) {
      for (auto& [config, names] : by_config) {
        std::sort(names.begin(), names.end());
        state += (state.empty() ? "" : "; ") + joined_list(names);
      }
    }
    if (state == disagreement) return;
    const bool agree = state.empty();
    log::event e{log::event_kind::warning, agree ? log::severity::notice : log::severity::warning};
    e.detail = agree ? "the members of cluster " + cfg().name + " agree on the endpoints again"
                     : "the members of cluster " + cfg().name +
                           " are configured with different endpoints (" + state +
                           "): an endpoint whose owner lacks it goes unfetched; give every "
                           "member the same endpoints";
    disagreement = std::move(state);
    emit(e);
  }

  void lease_check() {
    const bool valid = joined && steady::now() < lease_valid_until;
    if (!valid && joined && !lease_reported_lost) {
      lease_reported_lost = true;
      log::event e{log::event_kind::lease_lost, log::severity::warning};
      e.error = problem;
      e.detail = "member " + cfg().member + " of cluster " + cfg().name +
                 " could not renew its lease within " + config::format_duration(cfg().lease) +
                 ": the other members take its share over; it goes on fetching its own";
      emit(e);
    }
  }

  pg::heartbeat beat() const {
    pg::heartbeat b;
    b.cluster = cfg().name;
    b.member = cfg().member;
    b.instance = instance;
    b.view = fingerprint(members);
    b.endpoints = share;
    b.config = endpoints;
    b.lease = cfg().lease;
    return b;
  }

  // One heartbeat over `conn` (connected first if need be, within
  // `connect_for` at most). Returns how long until the next one.
  asio::awaitable<milliseconds> heartbeat_once(std::optional<pg::connection>& conn,
                                               milliseconds connect_for) {
    const auto every = heartbeat_every(cfg().lease);
    const auto started = steady::now();
    const auto until = started + std::min(settings.statement_timeout, every);
    if (!conn || !conn->is_idle()) {
      conn.reset();
      // Within a heartbeat's time: a lease runs out while a connect hangs.
      auto made = co_await pg::connection::async_connect(
          settings.conninfo,
          started + std::min(std::min(settings.connect_timeout, every), connect_for));
      if (!made) {
        failed(made.error().message);
        co_return std::min(every, milliseconds(1'000));
      }
      conn.emplace(std::move(*made));
    }
    auto r = co_await pg::async_heartbeat(*conn, table, beat(), until);
    if (!r) {
      failed(explain(*conn, r.error()));
      if (!conn->is_idle()) conn.reset();
      co_return std::min(every, milliseconds(1'000));
    }
    ++heartbeats;
    problem.clear();
    if (!r->renewed) {
      if (!name_conflict_reported) {
        name_conflict_reported = true;
        log::event e{log::event_kind::warning, log::severity::warning};
        e.detail = "the lease of member " + cfg().member + " in cluster " + cfg().name +
                   " is held by another process (instance " + r->holder +
                   "): this member's previous run, ended without leaving (it is taken over "
                   "when that lease runs out, within " +
                   config::format_duration(cfg().lease) +
                   "), or another daemon with the same cluster.member, which must be unique; "
                   "meanwhile this one fetches that name's share too";
        emit(e);
      }
    } else {
      name_conflict_reported = false;
      joined = true;
      lease_valid_until = started + cfg().lease;
      last_heartbeat = now_utc();
      if (lease_reported_lost) {
        lease_reported_lost = false;
        log::event e{log::event_kind::lease_renewed, log::severity::notice};
        e.detail = "member " + cfg().member + " of cluster " + cfg().name +
                   " renewed its lease again; " + describe_members();
        emit(e);
      }
    }
    take(std::move(r->live), r->now);
    // The next heartbeat: the regular one, or sooner when another member's
    // lease runs out before (so that its share is taken over at once).
    auto next = every;
    for (const auto& row : rows)
      if (!row.self) next = std::min(next, row.lease_left + past_lease_end);
    co_return std::max(next, milliseconds(0));
  }

  // A heartbeat's failure, with what to do about a missing member table.
  std::string explain(const pg::connection& conn, const failure& f) const {
    if (conn.last_sqlstate() != "42P01") return f.message;
    return "the member table " + table.display() +
           " does not exist: run `gatherstatsd migrate` to create it (" + f.message + ")";
  }

  void failed(std::string why) {
    ++heartbeat_failures;
    problem = std::move(why);
    lease_check();
  }
};

namespace {

using state_ptr = std::shared_ptr<member::state>;

asio::awaitable<void> heartbeat_loop(state_ptr s, std::optional<pg::connection> conn) {
  s->beating = true;
  while (!s->stopping) {
    auto next = co_await s->heartbeat_once(conn, s->settings.connect_timeout);
    if (s->stopping) break;
    if (s->beat_now) {
      s->beat_now = false;
      continue;
    }
    s->wake.expires_after(next);
    co_await s->wake.async_wait(use_nothrow);
    s->lease_check();
  }
  s->beating = false;
  s->beat_done.cancel();
}

// LISTEN on a connection of its own; each NOTIFY for this cluster wakes the
// heartbeat, which reads the members afresh.
asio::awaitable<void> listen_loop(state_ptr s) {
  const auto pause = heartbeat_every(s->cfg().lease);
  while (!s->stopping) {
    auto conn = co_await pg::connection::async_connect(s->settings.conninfo,
                                                       steady::now() + s->settings.connect_timeout);
    if (conn) {
      auto listening = co_await conn->async_exec("LISTEN " + std::string(pg::cluster_channel),
                                                 steady::now() + s->settings.statement_timeout);
      // A change while the listener was away is seen by the next heartbeat.
      while (listening && !s->stopping) {
        auto got = co_await conn->async_wait_notifications(steady::now() + pause);
        if (!got) break;
        for (const auto& n : *got) {
          if (n.payload != s->cfg().name) continue;
          s->beat_now = true;
          s->wake.cancel();
        }
      }
    }
    if (s->stopping) break;
    s->listen_wake.expires_after(pause);
    co_await s->listen_wake.async_wait(use_nothrow);
  }
}

}  // namespace

member::member(asio::any_io_executor ex, member_settings settings, members_callback on_members,
               log::event_sink events)
    : state_(std::make_shared<state>(ex, std::move(settings), std::move(on_members),
                                     std::move(events))) {}

member::~member() {
  state_->stopping = true;
  state_->wake.cancel();
  state_->listen_wake.cancel();
}

asio::awaitable<void> member::async_start(pg::deadline until) {
  auto s = state_;
  // The first heartbeat joins: its members are the first the collector
  // acts on (take() calls on_members).
  std::optional<pg::connection> conn;
  co_await s->heartbeat_once(
      conn,
      std::max(milliseconds(1), std::chrono::duration_cast<milliseconds>(until - steady::now())));
  if (s->members.empty()) {
    s->members = {s->cfg().member};
    log::event e{log::event_kind::warning, log::severity::warning};
    e.error = s->problem;
    e.detail = "member " + s->cfg().member + " could not join cluster " + s->cfg().name +
               " at start: it fetches every endpoint (into the spool) until it can";
    s->emit(e);
    if (s->on_members) s->on_members(s->members);
  }
  asio::co_spawn(s->ex, heartbeat_loop(s, std::move(conn)), asio::detached);
  if (s->cfg().notify) asio::co_spawn(s->ex, listen_loop(s), asio::detached);
}

void member::set_endpoints(std::string fingerprint) { state_->endpoints = std::move(fingerprint); }

void member::set_share(std::size_t endpoints, std::size_t total) {
  state_->share = endpoints;
  state_->total = total;
}

asio::awaitable<void> member::async_leave(pg::deadline until) {
  auto s = state_;
  s->stopping = true;
  s->wake.cancel();
  s->listen_wake.cancel();
  while (s->beating && steady::now() < until) {
    s->beat_done.expires_at(until);
    co_await s->beat_done.async_wait(use_nothrow);
  }
  if (!s->joined) co_return;
  // At most a lease: past it the others have taken the share over anyway.
  until = std::min(until, steady::now() + s->cfg().lease);
  auto conn = co_await pg::connection::async_connect(s->settings.conninfo, until);
  if (!conn) co_return;
  auto left =
      co_await pg::async_leave(*conn, s->table, s->cfg().name, s->cfg().member, s->instance, until);
  if (!left || !*left) co_return;
  std::vector<std::string> others;
  for (const auto& m : s->members)
    if (m != s->cfg().member) others.push_back(m);
  {
    log::event e{log::event_kind::member_left, log::severity::notice};
    e.detail = "member " + s->cfg().member + " left cluster " + s->cfg().name +
               "; waiting for the others to take its share over";
    s->emit(e);
  }
  // Every other live member acts on the members without this one once its
  // heartbeat reports that view: from then on this one's ticks are theirs.
  asio::steady_timer poll(s->ex);
  while (steady::now() < until) {
    auto live = co_await pg::async_live_members(*conn, s->table, s->cfg().name, until);
    if (!live) break;
    std::vector<std::string> names;
    for (const auto& r : *live) names.push_back(r.name);
    const std::string wanted = fingerprint(names);
    const bool all = std::all_of(live->begin(), live->end(),
                                 [&](const pg::member_row& r) { return r.view == wanted; });
    if (all) break;
    poll.expires_after(handover_poll);
    co_await poll.async_wait(use_nothrow);
  }
  // The new owners fetch from their next tick by their own clocks: the
  // share goes on a little longer, in case theirs are ahead.
  poll.expires_at(std::min(until, steady::now() + clock_allowance));
  co_await poll.async_wait(use_nothrow);
}

observe::cluster_status member::status() const {
  const auto& s = *state_;
  observe::cluster_status out;
  out.name = s.cfg().name;
  out.member = s.cfg().member;
  out.lease = s.cfg().lease;
  out.replicas = s.cfg().replicas;
  out.lease_valid = lease_valid();
  out.last_heartbeat = s.last_heartbeat;
  for (const auto& r : s.rows) {
    observe::cluster_member_status m;
    m.name = r.name;
    m.endpoints = r.self ? s.share : r.endpoints;
    m.joined = from_epoch_seconds(r.joined_at);
    m.lease_until = from_epoch_seconds(r.lease_until);
    m.self = r.self;
    out.members.push_back(std::move(m));
  }
  out.endpoints_owned = s.share;
  out.endpoints_total = s.total;
  out.heartbeats = s.heartbeats;
  out.heartbeat_failures = s.heartbeat_failures;
  out.membership_changes = s.membership_changes;
  out.problem = s.problem;
  return out;
}

const std::vector<std::string>& member::members() const { return state_->members; }

bool member::joined() const { return state_->joined; }

bool member::lease_valid() const {
  return state_->joined && std::chrono::steady_clock::now() < state_->lease_valid_until;
}

}  // namespace gatherstats::cluster
