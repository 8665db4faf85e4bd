// Which member fetches which endpoint, as plain data (no I/O, no clock):
// every member computes the same answer from the same live members, so no
// member coordinates the others (docs/cluster.md).
//
// Rendezvous (highest random weight) hashing: each (member, endpoint) pair
// has a weight that depends on the two names alone, and an endpoint's owners
// are the members with the highest weights. A member joining takes from each
// other member only the endpoints where it now weighs most (about 1/N of
// all); a member leaving hands its endpoints each to the next in line. No
// other endpoint moves.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gatherstats::cluster {

// The weight of `member` for `endpoint`: the same on every machine.
std::uint64_t weight(std::string_view member, std::string_view endpoint);

// The owners of `endpoint` among `members` (distinct names, any order): the
// `replicas` members of highest weight, highest first (all of them when
// there are fewer). Ties, which need equal 64-bit weights, go by name.
std::vector<std::string> owners(std::string_view endpoint, std::span<const std::string> members,
                                unsigned replicas);

// Whether `member` is among the owners of `endpoint`.
bool owns(std::string_view member, std::string_view endpoint, std::span<const std::string> members,
          unsigned replicas);

// A fingerprint of a set of members, whatever their order: what a member
// reports as the membership it acts on, so that a member leaving can see
// when every other one has taken its share over.
std::string fingerprint(std::span<const std::string> members);

// Who came and who went between two sets of members (each sorted by name).
struct change {
  std::vector<std::string> joined;
  std::vector<std::string> left;
  bool empty() const { return joined.empty() && left.empty(); }
};
change compare(std::span<const std::string> before, std::span<const std::string> after);

// How far apart the members' clocks may be without a tick missed when an
// endpoint changes hands: a tick's identity is its time by the clock of
// the member that fetches it, so the member giving an endpoint up goes on
// fetching it this long after the new owner has it (the ticks both fetch
// are stored once). NTP keeps clocks within milliseconds.
inline constexpr std::chrono::milliseconds clock_allowance{1'000};

// How often a member renews its lease: three times per lease, so that one
// heartbeat lost (a slow query, a reconnect) does not cost the lease.
std::chrono::milliseconds heartbeat_every(std::chrono::milliseconds lease);

}  // namespace gatherstats::cluster
