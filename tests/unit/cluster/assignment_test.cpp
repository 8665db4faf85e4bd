#include "gatherstats/cluster/assignment.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace gatherstats::cluster;

namespace {

std::vector<std::string> endpoints(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back("endpoint-" + std::to_string(i));
  return out;
}

std::map<std::string, std::string> first_owner(const std::vector<std::string>& eps,
                                               const std::vector<std::string>& members) {
  std::map<std::string, std::string> out;
  for (const auto& e : eps) out[e] = owners(e, members, 1).front();
  return out;
}

}  // namespace

TEST_CASE("weights depend on the two names alone, and differ between members", "[cluster]") {
  CHECK(weight("m1", "api") == weight("m1", "api"));
  CHECK(weight("m1", "api") != weight("m2", "api"));
  CHECK(weight("m1", "api") != weight("m1", "apj"));
  // The separator keeps the pair apart from its concatenation.
  CHECK(weight("ab", "c") != weight("a", "bc"));
  // Fixed values: the same on every machine and build, so members agree.
  CHECK(weight("m1", "api") == weight(std::string("m1"), std::string("api")));
}

TEST_CASE("every member computes the same owners whatever the order of the members", "[cluster]") {
  std::vector<std::string> a{"m1", "m2", "m3"}, b{"m3", "m1", "m2"};
  for (const auto& e : endpoints(100)) {
    CHECK(owners(e, a, 1) == owners(e, b, 1));
    CHECK(owners(e, a, 2) == owners(e, b, 2));
  }
}

TEST_CASE("replicas: two distinct owners, the first being the single owner", "[cluster]") {
  std::vector<std::string> m{"m1", "m2", "m3"};
  for (const auto& e : endpoints(100)) {
    auto two = owners(e, m, 2);
    REQUIRE(two.size() == 2);
    CHECK(two[0] != two[1]);
    CHECK(two[0] == owners(e, m, 1).front());
    CHECK(owns(two[1], e, m, 2));
    CHECK_FALSE(owns(two[1], e, m, 1));
  }
  // Fewer members than replicas: every member owns every endpoint.
  std::vector<std::string> one{"solo"};
  CHECK(owners("x", one, 2) == std::vector<std::string>{"solo"});
  CHECK(owners("x", {}, 1).empty());
}

TEST_CASE("the endpoints are shared about evenly", "[cluster]") {
  const auto eps = endpoints(3000);
  std::vector<std::string> m{"alpha", "beta", "gamma"};
  std::map<std::string, int> share;
  for (const auto& [e, o] : first_owner(eps, m)) ++share[o];
  for (const auto& name : m) {
    INFO(name << " holds " << share[name]);
    CHECK(share[name] > 900);
    CHECK(share[name] < 1100);
  }
}

TEST_CASE("a member joining takes about 1/N, from the others only; leaving moves only its own",
          "[cluster]") {
  const auto eps = endpoints(3000);
  std::vector<std::string> three{"m1", "m2", "m3"}, four{"m1", "m2", "m3", "m4"};
  const auto before = first_owner(eps, three);
  const auto after = first_owner(eps, four);
  int moved = 0;
  for (const auto& e : eps) {
    if (before.at(e) == after.at(e)) continue;
    ++moved;
    CHECK(after.at(e) == "m4");  // nothing moves between the old members
  }
  CHECK(moved > 600);  // about a quarter of 3000
  CHECK(moved < 900);
  // m2 leaves: only its endpoints move.
  std::vector<std::string> without{"m1", "m3", "m4"};
  const auto left = first_owner(eps, without);
  for (const auto& e : eps)
    if (after.at(e) != "m2") CHECK(left.at(e) == after.at(e));
}

TEST_CASE("replicas 2: a member leaving leaves every endpoint at least one owner it had",
          "[cluster]") {
  std::vector<std::string> four{"m1", "m2", "m3", "m4"}, without{"m1", "m2", "m4"};
  for (const auto& e : endpoints(500)) {
    auto before = owners(e, four, 2);
    auto after = owners(e, without, 2);
    std::set<std::string> kept;
    for (const auto& o : before)
      if (o != "m3") kept.insert(o);
    for (const auto& o : kept) CHECK(std::find(after.begin(), after.end(), o) != after.end());
  }
}

TEST_CASE("the fingerprint of a membership ignores order and tells sets apart", "[cluster]") {
  std::vector<std::string> a{"m1", "m2"}, b{"m2", "m1"}, c{"m1", "m2", "m3"}, d{"m1m2"};
  CHECK(fingerprint(a) == fingerprint(b));
  CHECK(fingerprint(a) != fingerprint(c));
  CHECK(fingerprint(a) != fingerprint(d));
  CHECK(fingerprint(a).size() == 16);
}

TEST_CASE("compare says who joined and who left", "[cluster]") {
  std::vector<std::string> before{"a", "b", "c"}, after{"b", "c", "d"};
  auto c = compare(before, after);
  CHECK(c.joined == std::vector<std::string>{"d"});
  CHECK(c.left == std::vector<std::string>{"a"});
  CHECK(compare(before, before).empty());
}

TEST_CASE("a heartbeat every third of the lease, never more often than 10 a second", "[cluster]") {
  CHECK(heartbeat_every(std::chrono::seconds(10)) == std::chrono::milliseconds(3333));
  CHECK(heartbeat_every(std::chrono::seconds(3)) == std::chrono::milliseconds(1000));
  CHECK(heartbeat_every(std::chrono::milliseconds(150)) == std::chrono::milliseconds(100));
}
