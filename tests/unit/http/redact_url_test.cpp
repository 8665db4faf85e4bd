#include "gatherstats/http/client.hpp"
#include "gatherstats/http/redact.hpp"

#include <catch2/catch.hpp>

#include <string>

using gatherstats::http::is_secret_parameter;
using gatherstats::http::redact_query_secrets;
using gatherstats::http::redact_url;

TEST_CASE("URLs lose their user:password part before anyone sees them", "[http][secrets]") {
  CHECK(redact_url("https://stats.example/x?y=1") == "https://stats.example/x?y=1");
  CHECK(redact_url("https://user:s3cret@stats.example/x") == "https://stats.example/x");
  CHECK(redact_url("http://user@[::1]:8080/") == "http://[::1]:8080/");
  // Not a valid URL, but still no secret shown.
  CHECK(redact_url("https://us er:s3cret@stats example/x") == "https://stats example/x");
  CHECK(redact_url("https://a@b:c@stats.example/x") == "https://stats.example/x");
}

TEST_CASE("every word of the list makes a parameter secret, in any case", "[http][secrets]") {
  for (std::string name : {"key",
                           "token",
                           "secret",
                           "password",
                           "passwd",
                           "pwd",
                           "auth",
                           "signature",
                           "sig",
                           "credential",
                           "session",
                           "jwt",
                           "pass",
                           "cred",
                           "api_key",
                           "apikey",
                           "ApiKey",
                           "access_token",
                           "refresh_token",
                           "X-Amz-Signature",
                           "X-Amz-Credential",
                           "X-Amz-Security-Token",
                           "client_secret",
                           "oauth_token",
                           "Authorization",
                           "SESSIONID",
                           "x-goog-api-key",
                           "passphrase",
                           "KEY",
                           "Token"}) {
    INFO(name);
    CHECK(is_secret_parameter(name));
    CHECK(redact_url("https://h/p?" + name + "=v4lue") == "https://h/p?" + name + "=REDACTED");
  }
  // Percent-encoded names are decoded first.
  CHECK(is_secret_parameter("api%5Fkey"));
  CHECK(is_secret_parameter("to%6Ben"));
  CHECK(is_secret_parameter("%4B%45%59"));
  // Substrings on purpose: redacting too much beats redacting too little.
  CHECK(is_secret_parameter("monkey"));
  CHECK(is_secret_parameter("design"));
  CHECK(is_secret_parameter("author"));
  for (std::string name : {"a", "page", "limit", "format", "q", "since", "id", "user", "name"}) {
    INFO(name);
    CHECK_FALSE(is_secret_parameter(name));
  }
}

TEST_CASE("secret query values are replaced, and nothing else of the URL changes",
          "[http][secrets]") {
  CHECK(redact_url("https://h/x?api_key=abc123") == "https://h/x?api_key=REDACTED");
  CHECK(redact_url("https://h/x?a=1&API_KEY=abc&b=%20x%2F&token=t#frag") ==
        "https://h/x?a=1&API_KEY=REDACTED&b=%20x%2F&token=REDACTED#frag");
  // ';' separates parameters too; the fragment is split the same way.
  CHECK(redact_url("http://h/x?a=1;sig=zz") == "http://h/x?a=1;sig=REDACTED");
  CHECK(redact_url("https://h/cb#access_token=t0k&state=1") ==
        "https://h/cb#access_token=REDACTED&state=1");
  // A pre-signed S3 URL keeps what says which object it is.
  CHECK(redact_url("https://b.s3.amazonaws.com/o.json?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                   "&X-Amz-Credential=AKIA%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
                   "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host"
                   "&X-Amz-Signature=deadbeef") ==
        "https://b.s3.amazonaws.com/o.json?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=REDACTED&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60"
        "&X-Amz-SignedHeaders=REDACTED&X-Amz-Signature=REDACTED");
  // A value with '=' in it is hidden whole.
  CHECK(redact_url("https://h/?sig=a=b==&x=1") == "https://h/?sig=REDACTED&x=1");
  // Names without a value, empty values, odd pieces: left as they are.
  CHECK(redact_url("https://h/?key&token=&&=x&a==") == "https://h/?key&token=&&=x&a==");
  // The path and the host are not a query, even with "key" in them.
  CHECK(redact_url("https://key.example/key=1/x") == "https://key.example/key=1/x");
  // User information and a query at once.
  CHECK(redact_url("https://u:p@h:8443/x?auth=zz&n=1") == "https://h:8443/x?auth=REDACTED&n=1");
  // Nothing to hide: the same bytes, including odd encodings.
  for (std::string same : {"https://h/x", "https://h/x?", "https://h/x?a=%7e&b=+",
                           "http://[::1]:1/", "https://h/p%20q?x=1#y", "/srv/stats.json", ""}) {
    INFO(same);
    CHECK(redact_url(same) == same);
  }
}

TEST_CASE("secret query values of URLs inside free text are replaced", "[http][secrets]") {
  CHECK(redact_query_secrets("error: https://h/x?api_key=abc: HTTP 500") ==
        "error: https://h/x?api_key=REDACTED: HTTP 500");
  CHECK(redact_query_secrets("GET \"http://h/?token=t&a=b\" failed; http://h/y?sig=s") ==
        "GET \"http://h/?token=REDACTED&a=b\" failed; http://h/y?sig=REDACTED");
  CHECK(redact_query_secrets("https://h/x?key=a:b:c more") == "https://h/x?key=REDACTED more");
  CHECK(redact_query_secrets("no url ?key=1 here") == "no url ?key=1 here");
  CHECK(redact_query_secrets("https://u:p@h/x?a=1") == "https://u:p@h/x?a=1");
  CHECK(redact_query_secrets("") == "");
}
