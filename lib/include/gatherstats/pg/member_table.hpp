// The members of clusters: `gatherstats_member` beside the statistics table
// (docs/cluster.md, docs/schema.md), one row per live or recently live
// member, with its lease. Every statement here is one autocommit statement
// and leaves nothing on the session, so a member works through PgBouncer in
// transaction pooling; leases are rows with an expiry on the database's
// clock, never advisory locks held by a connection (which would need a
// session, and TCP to notice a dead peer).
//
// Errors and threading: as for pg::connection.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/statistic_table.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace gatherstats::pg {

inline constexpr std::string_view member_table_name = "gatherstats_member";
// The channel a member NOTIFYs when it joins or leaves; the payload is the
// cluster's name.
inline constexpr std::string_view cluster_channel = "gatherstats_cluster";

// The member table beside `statistics` (the same schema, or the search_path).
table_name member_table(const table_name& statistics);

// Creates the member table if it is missing (migrate). Returns true when it
// created it.
boost::asio::awaitable<outcome<bool>> async_create_member_table(connection& conn,
                                                                const table_name& statistics,
                                                                deadline until);

// One live member as the database has it. Times are the database's clock,
// as seconds since the Unix epoch; `lease_left` is lease_until - now().
struct member_row {
  std::string name;
  std::string view;  // the fingerprint of the members it acts on
  std::size_t endpoints = 0;
  std::string config;  // the fingerprint of its endpoints (names, intervals, alignment)
  double joined_at = 0;
  double lease_until = 0;
  std::chrono::milliseconds lease_left{0};
  bool self = false;
};

struct heartbeat {
  std::string cluster;
  std::string member;
  std::string instance;  // this process: a second process with the same member name is refused
  std::string view;
  std::size_t endpoints = 0;
  std::chrono::milliseconds lease{0};
  std::string config;
};

struct heartbeat_result {
  // The lease was taken or renewed. False: another process holds this
  // member's name with a live lease (`holder` is its instance).
  bool renewed = false;
  bool joined = false;  // the lease was new (a join, or after it had lapsed): the others were told
  std::string holder;
  double now = 0;                // the database's clock
  std::vector<member_row> live;  // every live member, this one included when renewed, by name
};

// Takes or renews this member's lease (lease_until = now() + lease) and
// reads the live members, in one statement. A new lease NOTIFYs the others.
boost::asio::awaitable<outcome<heartbeat_result>> async_heartbeat(connection& conn,
                                                                  const table_name& members,
                                                                  const heartbeat& beat,
                                                                  deadline until);

// Gives the lease up (the row goes) and NOTIFYs the others; returns whether
// this instance held it.
boost::asio::awaitable<outcome<bool>> async_leave(connection& conn, const table_name& members,
                                                  std::string_view cluster, std::string_view member,
                                                  std::string_view instance, deadline until);

// The live members of `cluster`, by name.
boost::asio::awaitable<outcome<std::vector<member_row>>> async_live_members(
    connection& conn, const table_name& members, std::string_view cluster, deadline until);

}  // namespace gatherstats::pg
