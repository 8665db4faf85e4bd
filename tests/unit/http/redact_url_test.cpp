#include "gatherstats/http/client.hpp"

#include <catch2/catch.hpp>

using gatherstats::http::redact_url;

TEST_CASE("URLs lose their user:password part before anyone sees them", "[http][secrets]") {
  CHECK(redact_url("https://stats.example/x?y=1") == "https://stats.example/x?y=1");
  CHECK(redact_url("https://user:s3cret@stats.example/x") == "https://stats.example/x");
  CHECK(redact_url("http://user@[::1]:8080/") == "http://[::1]:8080/");
  // Not a valid URL, but still no secret shown.
  CHECK(redact_url("https://us er:s3cret@stats example/x") == "https://stats example/x");
}
