// This daemon as a member of a cluster (docs/cluster.md): the I/O around
// assignment.hpp. A heartbeat renews the member's lease in the database
// and reads the live members, at join, every heartbeat_every(lease), as
// soon as another member's lease is due to run out, and at once when a
// NOTIFY says a member joined or left (with cluster.notify, on a connection
// of its own). Each change of the live members is an event and a call of
// `on_members`, which the collector turns into the endpoints it fetches.
//
// A member that cannot reach the database keeps the members it last saw
// (and so its share): the fence in the commit settles what it fetched
// meanwhile. Leaving (SIGTERM) gives the lease up at once, tells the others,
// and waits, at most a lease time, until every other live member acts on
// the members without this one, so that nothing is missed in between.
//
// Threading: one io_context, like the collector.
#pragma once

#include "gatherstats/config/config.hpp"
#include "gatherstats/error.hpp"
#include "gatherstats/log/event.hpp"
#include "gatherstats/observe/status.hpp"
#include "gatherstats/pg/connection.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace gatherstats::cluster {

struct member_settings {
  std::string conninfo;
  std::string table;  // the statistics table; the member table is beside it
  config::cluster_config cluster;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds statement_timeout{10'000};
};

class member {
 public:
  // `on_members`: the live members (this one always among them), by name,
  // at join and after every change.
  using members_callback = std::function<void(const std::vector<std::string>&)>;

  member(boost::asio::any_io_executor ex, member_settings settings, members_callback on_members,
         log::event_sink events);
  ~member();
  member(const member&) = delete;
  member& operator=(const member&) = delete;

  // The first heartbeat, within `until`, then the loops. When it fails the
  // member acts alone (every endpoint is its own) until a heartbeat works:
  // nothing goes unfetched because the database was away at start.
  boost::asio::awaitable<void> async_start(pg::deadline until);

  // How many endpoints this member fetches now: told to the others with the
  // next heartbeat.
  void set_share(std::size_t endpoints, std::size_t total);

  // A fingerprint of the endpoints this member is configured with (their
  // names, intervals and alignment), told to the others with each
  // heartbeat: members that disagree (a configuration rolled out to some
  // of them) are warned about, since an endpoint that its owner does not
  // have goes unfetched.
  void set_endpoints(std::string fingerprint);

  // Gives the lease up and waits (until `until` at most) for the others to
  // take this member's share over.
  boost::asio::awaitable<void> async_leave(pg::deadline until);

  observe::cluster_status status() const;
  const std::vector<std::string>& members() const;
  bool lease_valid() const;
  bool joined() const;  // the lease was renewed at least once

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace gatherstats::cluster
