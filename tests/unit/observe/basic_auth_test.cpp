#include "gatherstats/observe/basic_auth.hpp"
#include "gatherstats/observe/listen_address.hpp"

#include <catch2/catch.hpp>

using namespace gatherstats::observe;

namespace {
// crypt("secret", "$2b$05$abcdefghijklmnopqrstuu")
const std::string secret_hash = "$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a";
}  // namespace

TEST_CASE("listen addresses: host and port, brackets for IPv6, :PORT for every address",
          "[listen_address]") {
  auto a = parse_listen_address("127.0.0.1:9187");
  REQUIRE(a.has_value());
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 9187);
  CHECK(a->to_string() == "127.0.0.1:9187");
  auto b = parse_listen_address("[::1]:1");
  REQUIRE(b.has_value());
  CHECK(b->host == "::1");
  CHECK(b->ipv6_literal);
  CHECK(b->to_string() == "[::1]:1");
  auto c = parse_listen_address(":9187");
  REQUIRE(c.has_value());
  CHECK(c->host.empty());
  CHECK(parse_listen_address("localhost:65535").has_value());
  CHECK(parse_listen_address("metrics.example.:80").has_value());
  CHECK(!parse_listen_address("127.0.0.1:0").has_value());
  CHECK(parse_listen_address("127.0.0.1:0", true).has_value());
  for (const char* bad : {"", "9187", "::1:9187", "[::1]9187", "[::1:9187", "host:", "host:x",
                          "host:65536", "a..b:1", "300.1.1.1:1", "[1.2.3.4]:1", "h/x:1"}) {
    INFO(bad);
    CHECK(!parse_listen_address(bad).has_value());
  }
}

TEST_CASE("bcrypt hashes are recognised by form", "[basic_auth]") {
  CHECK(is_bcrypt_hash(secret_hash));
  CHECK(is_bcrypt_hash("$2a$31$" + std::string(53, '.')));
  CHECK(is_bcrypt_hash("$2y$04$" + std::string(53, '/')));
  CHECK(!is_bcrypt_hash("$2b$32$" + std::string(53, 'a')));
  CHECK(!is_bcrypt_hash("$2b$3$" + std::string(54, 'a')));
  CHECK(!is_bcrypt_hash("$2c$05$" + std::string(53, 'a')));
  CHECK(!is_bcrypt_hash("$2b$05$" + std::string(53, '+')));
  CHECK(!is_bcrypt_hash("secret"));
}

TEST_CASE("Authorization: Basic values are decoded strictly", "[basic_auth]") {
  auto c = parse_basic_authorization("Basic dXNlcjpwYTpzcw==");  // user:pa:ss
  REQUIRE(c.has_value());
  CHECK(c->user == "user");
  CHECK(c->password == "pa:ss");
  auto lower = parse_basic_authorization("basic  dTo=");  // "u:"
  REQUIRE(lower);
  CHECK(lower->user == "u");
  CHECK(lower->password.empty());
  CHECK(!parse_basic_authorization("Bearer dXNlcjpwYXNz"));
  CHECK(!parse_basic_authorization("Basic"));
  CHECK(!parse_basic_authorization("Basic dXNlcg=="));      // no ":"
  CHECK(!parse_basic_authorization("Basic dXNlcjpw*XNz"));  // not base64
  CHECK(!parse_basic_authorization("Basic dXNlcjpwYXN"));   // not a multiple of 4
  CHECK(!parse_basic_authorization("Basic dTphAGI="));      // "u:a\0b": crypt_r stops at NUL
}

TEST_CASE("bcrypt_matches checks a password against its hash", "[basic_auth]") {
  CHECK(bcrypt_matches("secret", secret_hash));
  CHECK(!bcrypt_matches("Secret", secret_hash));
  CHECK(!bcrypt_matches("", secret_hash));
  CHECK(!bcrypt_matches("secret", "not a hash"));
}

TEST_CASE("a user table caches the last good password per user", "[basic_auth]") {
  user_table users({{"a", secret_hash}, {"b", "$2b$05$" + std::string(53, 'B')}});
  bool known = false;
  CHECK(users.hash_to_check("a", known) == secret_hash);
  CHECK(known);
  // An unknown user is checked against some real hash: same cost.
  CHECK(is_bcrypt_hash(users.hash_to_check("nobody", known)));
  CHECK(!known);
  const auto good = sha256_of("secret");
  CHECK(!users.cached("a", good));
  users.remember("a", good);
  CHECK(users.cached("a", good));
  CHECK(!users.cached("a", sha256_of("other")));
  CHECK(!users.cached("b", good));
  CHECK(!users.cached("nobody", good));
  users.remember("nobody", good);  // ignored: not a user
  CHECK(!users.cached("nobody", good));
}
