#include "gatherstats/cluster/assignment.hpp"

#include "gatherstats/sched/schedule.hpp"

#include <algorithm>
#include <cstdio>

namespace gatherstats::cluster {
namespace {

// SplitMix64's finaliser: FNV-1a's high bits change little with the last
// characters of a name, and weights are compared whole.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

}  // namespace

std::uint64_t weight(std::string_view member, std::string_view endpoint) {
  // The NUL between the names keeps ("ab", "c") apart from ("a", "bc").
  std::string both;
  both.reserve(member.size() + 1 + endpoint.size());
  both.append(member);
  both.push_back('\0');
  both.append(endpoint);
  return mix(sched::stable_hash(both));
}

std::vector<std::string> owners(std::string_view endpoint, std::span<const std::string> members,
                                unsigned replicas) {
  std::vector<std::pair<std::uint64_t, const std::string*>> ranked;
  ranked.reserve(members.size());
  for (const auto& m : members) ranked.emplace_back(weight(m, endpoint), &m);
  const std::size_t n = std::min<std::size_t>(replicas, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(n), ranked.end(),
                    [](const auto& a, const auto& b) {
                      if (a.first != b.first) return a.first > b.first;
                      return *a.second < *b.second;
                    });
  std::vector<std::string> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(*ranked[i].second);
  return out;
}

bool owns(std::string_view member, std::string_view endpoint, std::span<const std::string> members,
          unsigned replicas) {
  const auto chosen = owners(endpoint, members, replicas);
  return std::find(chosen.begin(), chosen.end(), member) != chosen.end();
}

std::string fingerprint(std::span<const std::string> members) {
  std::vector<std::string> sorted(members.begin(), members.end());
  std::sort(sorted.begin(), sorted.end());
  std::string all;
  for (const auto& m : sorted) {
    all += m;
    all.push_back('\0');
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx",
                static_cast<unsigned long long>(mix(sched::stable_hash(all))));
  return buf;
}

change compare(std::span<const std::string> before, std::span<const std::string> after) {
  change c;
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                      std::back_inserter(c.joined));
  std::set_difference(before.begin(), before.end(), after.begin(), after.end(),
                      std::back_inserter(c.left));
  return c;
}

std::chrono::milliseconds heartbeat_every(std::chrono::milliseconds lease) {
  return std::max(lease / 3, std::chrono::milliseconds(100));
}

}  // namespace gatherstats::cluster
