// The HTTP client against the project's test server as a real process on
// loopback: plain and TLS, compressed bodies and bombs, body limits,
// redirects, headers and credentials, keep-alive, client certificates,
// certificate failures and deadlines.
#include "gatherstats/http/client.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <fstream>

namespace asio = boost::asio;
using namespace gatherstats;
using std::chrono::steady_clock;

namespace {

constexpr auto generous = std::chrono::seconds(20);
const std::string data_dir = test::source_dir() + "/tests/data";

http::tls_settings trusting_test_ca() {
  http::tls_settings tls;
  tls.ca_file = test::cert_dir() + "/ca.pem";
  return tls;
}

http::request get_request(std::string url) {
  http::request r;
  r.url = std::move(url);
  return r;
}

// Coroutines are free functions taking values, not lambdas: see read_file.cpp
// on GCC 12.
asio::awaitable<std::vector<outcome<http::response>>> fetch_all(http::tls_settings tls,
                                                                std::vector<http::request> requests,
                                                                std::chrono::milliseconds limit) {
  std::vector<outcome<http::response>> out;
  auto client = http::client::create(tls);
  if (!client) {
    out.push_back(client.error());
    co_return out;
  }
  for (const auto& r : requests) {
    out.push_back(co_await client->async_get(r, steady_clock::now() + limit));
  }
  co_return out;
}

outcome<http::response> fetch(http::request r, http::tls_settings tls = trusting_test_ca(),
                              std::chrono::milliseconds limit = generous) {
  return test::run_async(fetch_all(std::move(tls), {std::move(r)}, limit)).at(0);
}

outcome<http::response> fetch(std::string url, http::tls_settings tls = trusting_test_ca(),
                              std::chrono::milliseconds limit = generous) {
  return fetch(get_request(std::move(url)), std::move(tls), limit);
}

std::string read_data_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The test server with --client-ca: TLS that requires a client certificate
// from the test CA.
class client_ca_server {
 public:
  client_ca_server() {
    const std::string certs = test::cert_dir();
    process_ = std::make_unique<test::child>(std::vector<std::string>{
        GATHERSTATS_TEST_SERVER_BIN, "--listen", "127.0.0.1", "--tls", certs + "/server.pem",
        certs + "/server.key", "--client-ca", certs + "/ca.pem"});
    auto line = process_->read_line(std::chrono::seconds(10));
    if (!line || !line->starts_with("listening on "))
      FAIL("the test server did not start: " << line.value_or("(no output)"));
    port_ = std::stoi(line->substr(13));
  }
  std::string url(const std::string& path) const {
    return "https://localhost:" + std::to_string(port_) + path;
  }

 private:
  std::unique_ptr<test::child> process_;
  int port_ = 0;
};

long peak_resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmHWM:")) return std::stol(line.substr(6));
  }
  FAIL("no VmHWM in /proc/self/status");
  return 0;
}

}  // namespace

TEST_CASE("a plain GET returns the body, the status and the URL", "[http]") {
  test::test_server server;
  auto r = fetch(server.url("/stats"));
  REQUIRE(r.has_value());
  CHECK(r->status == 200);
  CHECK_THAT(r->body, Catch::StartsWith(R"({"asset_counts":)"));
  CHECK(r->final_url == server.url("/stats"));
}

TEST_CASE("an HTTPS GET verifies the server against the given CA", "[http]") {
  test::test_server server("server");
  auto r = fetch(server.url("/stats"));
  REQUIRE(r.has_value());
  CHECK(r->status == 200);
  CHECK_THAT(r->body, Catch::StartsWith(R"({"asset_counts":)"));
  // By IP address too: checked against the certificate's IP entries.
  auto by_ip = fetch(server.url("/stats", "127.0.0.1"));
  REQUIRE(by_ip.has_value());
}

TEST_CASE("the default request headers name gatherstats and offer compression", "[http]") {
  test::test_server server;
  auto r = fetch(server.url("/headers"));
  REQUIRE(r.has_value());
  CHECK_THAT(r->body, Catch::Contains(R"("Accept-Encoding":"gzip, deflate")"));
  CHECK_THAT(r->body, Catch::Contains(R"("User-Agent":"gatherstats/)"));
  CHECK_THAT(r->body, !Catch::Contains("Authorization"));
}

TEST_CASE("gzip and deflate bodies are inflated to the original document", "[http]") {
  test::temp_dir dir;
  const std::string small = read_data_file(data_dir + "/asset_counts.json");
  std::string big = "[";  // several read chunks and stored blocks
  for (int i = 0; i < 40000; ++i) big += std::to_string(i * 7919 % 100003) + ",";
  big += "0]";
  dir.write("small.json", small);
  dir.write("big.json", big);
  test::test_server server("", dir.path().string());
  for (std::string coding : {"gzip", "deflate", "raw-deflate"}) {
    for (std::string name : {"small.json", "big.json"}) {
      INFO(coding << " " << name);
      auto r = fetch(server.url("/" + coding + "/" + name));
      REQUIRE(r.has_value());
      CHECK(r->body == (name == "small.json" ? small : big));
    }
  }
}

TEST_CASE("an unknown Content-Encoding is a permanent error", "[http]") {
  test::test_server server;
  auto r = fetch(server.url("/unknown-encoding"));
  REQUIRE(r.has_error());
  CHECK(!r.error().is_transient());
  CHECK_THAT(r.error().message, Catch::Contains(server.url("/unknown-encoding")) &&
                                    Catch::Contains(R"(unsupported Content-Encoding "br")"));
  CHECK(r.error().reason == fetch_reason::other);
}

TEST_CASE("a gzip bomb fails fast at the limit with bounded memory", "[http]") {
  test::test_server server;
  const long peak_before = peak_resident_kib();
  const auto started = steady_clock::now();
  auto r = fetch(server.url("/gzip-bomb"));
  const auto took = steady_clock::now() - started;
  const long peak_after = peak_resident_kib();
  REQUIRE(r.has_error());
  CHECK(!r.error().is_transient());
  CHECK_THAT(r.error().message,
             Catch::Contains("the decompressed body is larger than the limit of 16777216 bytes"));
  CHECK(r.error().reason == fetch_reason::body_too_large);
  CHECK(took < std::chrono::seconds(5));
  INFO("VmHWM before " << peak_before << " kB, after " << peak_after << " kB");
  CHECK(peak_after - peak_before < 64 * 1024);
}

TEST_CASE("an uncompressed body over the limit fails while it is read", "[http]") {
  test::test_server server;
  auto req = get_request(server.url("/big?bytes=100000"));
  req.max_body_bytes = 50000;
  auto r = fetch(req);
  REQUIRE(r.has_error());
  CHECK(!r.error().is_transient());
  CHECK_THAT(r.error().message,
             Catch::Contains("the body is larger than the limit of 50000 bytes"));
  CHECK(r.error().reason == fetch_reason::body_too_large);
  // An endless body ends the same way.
  auto endless = fetch(server.url("/endless"));
  REQUIRE(endless.has_error());
  CHECK_THAT(endless.error().message, Catch::Contains("larger than the limit"));
  // At the limit exactly it is fine.
  req.max_body_bytes = 100000;
  REQUIRE(fetch(req).has_value());
}

TEST_CASE("redirects are followed up to the limit", "[http]") {
  test::test_server server;
  SECTION("three hops, and the final URL is reported") {
    auto r = fetch(server.url("/redirect/2"));
    REQUIRE(r.has_value());
    CHECK(r->final_url == server.url("/stats"));
    CHECK_THAT(r->body, Catch::StartsWith(R"({"asset_counts":)"));
  }
  SECTION("every redirect status") {
    for (std::string code : {"301", "302", "303", "307", "308"}) {
      INFO(code);
      auto r = fetch(server.url("/redirect-with/" + code));
      REQUIRE(r.has_value());
      CHECK(r->final_url == server.url("/stats"));
    }
  }
  SECTION("five are allowed, six are not") {
    REQUIRE(fetch(server.url("/redirect/4")).has_value());
    auto r = fetch(server.url("/redirect/5"));
    REQUIRE(r.has_error());
    CHECK(!r.error().is_transient());
    CHECK_THAT(r.error().message, Catch::Contains(server.url("/redirect/5")) &&
                                      Catch::Contains("too many redirects (more than 5)"));
  }
  SECTION("a lower limit") {
    auto req = get_request(server.url("/redirect/2"));
    req.max_redirects = 2;
    auto r = fetch(req);
    REQUIRE(r.has_error());
    CHECK_THAT(r.error().message, Catch::Contains("more than 2"));
  }
  SECTION("a loop") {
    auto r = fetch(server.url("/redirect-loop"));
    REQUIRE(r.has_error());
    CHECK_THAT(r.error().message, Catch::Contains("too many redirects"));
  }
}

TEST_CASE("a redirect from https to http is refused", "[http]") {
  test::test_server plain;
  test::test_server secure("server");
  auto r = fetch(secure.url("/redirect-to?location=" + plain.url("/stats")));
  REQUIRE(r.has_error());
  CHECK(!r.error().is_transient());
  CHECK_THAT(r.error().message,
             Catch::Contains("refusing to follow a redirect from https to " + plain.url("/stats")));
}

TEST_CASE("custom headers and credentials arrive, and stay with their host", "[http]") {
  test::test_server server;
  auto req = get_request(server.url("/headers"));
  req.headers = {{"X-Custom", "hello"}, {"Accept", "application/vnd.stats+json"}};
  SECTION("bearer") {
    req.authorization = "Bearer s3cret-token";
    auto r = fetch(req);
    REQUIRE(r.has_value());
    CHECK_THAT(r->body, Catch::Contains(R"("X-Custom":"hello")"));
    CHECK_THAT(r->body, Catch::Contains(R"("Accept":"application/vnd.stats+json")"));
    CHECK_THAT(r->body, Catch::Contains(R"("Authorization":"Bearer s3cret-token")"));
  }
  SECTION("basic") {
    req.authorization = "Basic dXNlcjpwYXNz";
    auto r = fetch(req);
    REQUIRE(r.has_value());
    CHECK_THAT(r->body, Catch::Contains(R"("Authorization":"Basic dXNlcjpwYXNz")"));
  }
  SECTION("kept on a redirect to the same host") {
    req.url = server.url("/redirect-to?location=/headers");
    req.authorization = "Bearer s3cret-token";
    auto r = fetch(req);
    REQUIRE(r.has_value());
    CHECK_THAT(r->body, Catch::Contains(R"("Authorization":"Bearer s3cret-token")"));
    CHECK_THAT(r->body, Catch::Contains(R"("X-Custom":"hello")"));
  }
  SECTION("dropped on a redirect to another host") {
    req.url = server.url("/redirect-to?location=" + server.url("/headers", "127.0.0.1"));
    req.authorization = "Bearer s3cret-token";
    auto r = fetch(req);
    REQUIRE(r.has_value());
    CHECK(r->final_url == server.url("/headers", "127.0.0.1"));
    CHECK_THAT(r->body, !Catch::Contains("Authorization"));
    CHECK_THAT(r->body, Catch::Contains(R"("X-Custom":"hello")"));
  }
  SECTION("never in a message") {
    req.url = server.url("/status/403");
    req.authorization = "Bearer s3cret-token";
    auto r = fetch(req);
    REQUIRE(r.has_error());
    CHECK(r.error().http_status == 403);
    CHECK_THAT(r.error().message, !Catch::Contains("s3cret"));
  }
}

TEST_CASE("HTTP error statuses are classified and reported", "[http]") {
  test::test_server server;
  for (unsigned code : {404u, 429u, 500u, 503u}) {
    INFO(code);
    auto r = fetch(server.url("/status/" + std::to_string(code)));
    REQUIRE(r.has_error());
    CHECK(r.error().http_status == code);
    CHECK(r.error().reason == fetch_reason::http_status);
    CHECK(r.error().is_transient() == (code != 404));
    CHECK_THAT(r.error().message, Catch::Contains(server.url("/status/" + std::to_string(code)) +
                                                  ": HTTP " + std::to_string(code)));
  }
}

TEST_CASE("one client reuses its connection to the same origin", "[http]") {
  SECTION("plain") {
    test::test_server server;
    const auto url = server.url("/requests-on-this-connection");
    auto r = test::run_async(fetch_all(trusting_test_ca(), {get_request(url), get_request(url)},
                                       std::chrono::milliseconds(generous)));
    REQUIRE(r.at(0).has_value());
    REQUIRE(r.at(1).has_value());
    CHECK(r[0]->body == R"({"requests":1})");
    CHECK(r[1]->body == R"({"requests":2})");
  }
  SECTION("TLS, with a redirect on the way") {
    test::test_server server("server");
    const auto url = server.url("/requests-on-this-connection");
    auto r = test::run_async(
        fetch_all(trusting_test_ca(),
                  {get_request(url), get_request(server.url("/redirect-to?location=" + url))},
                  std::chrono::milliseconds(generous)));
    REQUIRE(r.at(0).has_value());
    REQUIRE(r.at(1).has_value());
    CHECK(r[1]->body == R"({"requests":3})");
  }
}

TEST_CASE("a kept connection the server closed is replaced by a fresh one", "[http]") {
  for (std::string cert : {"", "server"}) {
    INFO("cert: " << cert);
    test::test_server server(cert);
    auto r = test::run_async(fetch_all(trusting_test_ca(),
                                       {get_request(server.url("/then-close")),
                                        get_request(server.url("/requests-on-this-connection")),
                                        get_request(server.url("/requests-on-this-connection"))},
                                       std::chrono::milliseconds(generous)));
    REQUIRE(r.at(0).has_value());
    REQUIRE(r.at(1).has_value());
    REQUIRE(r.at(2).has_value());
    CHECK(r[1]->body == R"({"requests":1})");
    CHECK(r[2]->body == R"({"requests":2})");
  }
}

TEST_CASE("a server that requires a client certificate", "[http]") {
  client_ca_server server;
  SECTION("without one: refused") {
    auto r = fetch(server.url("/stats"));
    REQUIRE(r.has_error());
    CHECK_THAT(r.error().message,
               Catch::Contains(server.url("/stats")) && Catch::Contains("certificate required"));
  }
  SECTION("with one: served") {
    auto tls = trusting_test_ca();
    tls.cert_file = test::cert_dir() + "/client.pem";
    tls.key_file = test::cert_dir() + "/client.key";
    auto r = fetch(server.url("/stats"), tls);
    REQUIRE(r.has_value());
    CHECK(r->status == 200);
  }
  SECTION("a certificate without its key is a configuration error") {
    auto tls = trusting_test_ca();
    tls.cert_file = test::cert_dir() + "/client.pem";
    auto r = fetch(server.url("/stats"), tls);
    REQUIRE(r.has_error());
    CHECK_THAT(r.error().message, Catch::Contains("both a certificate and a key"));
  }
}

TEST_CASE("server certificates that cannot be trusted", "[http]") {
  test::test_server server("selfsigned");
  SECTION("not from a trusted CA: a clear, permanent failure") {
    auto r = fetch(server.url("/stats"));
    REQUIRE(r.has_error());
    CHECK(!r.error().is_transient());
    CHECK_THAT(r.error().message, Catch::Contains(server.url("/stats")) &&
                                      Catch::Contains("TLS handshake failed: self-signed"));
    CHECK(r.error().reason == fetch_reason::tls);
  }
  SECTION("insecure_skip_verify accepts it") {
    http::tls_settings tls;
    tls.insecure_skip_verify = true;
    auto r = fetch(server.url("/stats"), tls);
    REQUIRE(r.has_value());
    CHECK(r->status == 200);
  }
}

TEST_CASE("a wrong host name fails the handshake", "[http]") {
  test::test_server server("wronghost");
  auto r = fetch(server.url("/stats"));
  REQUIRE(r.has_error());
  CHECK_THAT(r.error().message, Catch::Contains(R"(does not match "localhost")"));
  CHECK(r.error().reason == fetch_reason::tls);
}

TEST_CASE("a name that does not resolve and a refused connection say why they failed", "[http]") {
  auto unresolved = fetch("http://gatherstats-test.invalid/stats");
  REQUIRE(unresolved.has_error());
  CHECK(unresolved.error().reason == fetch_reason::dns);
  CHECK_THAT(unresolved.error().message, Catch::Contains("cannot resolve"));
  // Port 1 (tcpmux): nothing listens there.
  auto refused = fetch("http://127.0.0.1:1/stats");
  REQUIRE(refused.has_error());
  CHECK(refused.error().reason == fetch_reason::connect);
  CHECK_THAT(refused.error().message, Catch::Contains("cannot connect"));
}

TEST_CASE("the deadline bounds a server that hangs or drips", "[http]") {
  test::test_server server;
  for (std::string path : {"/hang", "/drip"}) {
    INFO(path);
    const auto started = steady_clock::now();
    auto r = fetch(server.url(path), trusting_test_ca(), std::chrono::milliseconds(1500));
    const auto took = steady_clock::now() - started;
    REQUIRE(r.has_error());
    CHECK(r.error().is_transient());
    CHECK_THAT(r.error().message,
               Catch::Contains(server.url(path)) && Catch::Contains("timed out"));
    CHECK(r.error().reason == fetch_reason::timeout);
    CHECK(took >= std::chrono::milliseconds(1400));
    CHECK(took < std::chrono::seconds(5));
  }
}

TEST_CASE("the deadline bounds a body that keeps arriving, not only a wait", "[http]") {
  test::test_server server;
  auto endless = get_request(server.url("/endless"));
  endless.max_body_bytes = std::size_t{64} << 30;  // only the deadline can end it
  const auto started = steady_clock::now();
  auto r = fetch(endless, trusting_test_ca(), std::chrono::milliseconds(1000));
  const auto took = steady_clock::now() - started;
  REQUIRE(r.has_error());
  CHECK(r.error().is_transient());
  CHECK_THAT(r.error().message, Catch::Contains("timed out reading the response"));
  CHECK(r.error().reason == fetch_reason::timeout);
  CHECK(took >= std::chrono::milliseconds(900));
  CHECK(took < std::chrono::seconds(3));
}
