// What a URL may show in logs, messages and error texts: no
// `user:password@`, and no value of a query parameter whose name suggests a
// secret (`?api_key=...`, `X-Amz-Signature=...`).
//
// A parameter name suggests a secret when, compared case-insensitively and
// after percent-decoding, it contains any of the words in
// `secret_parameter_words` (the one list; docs/configuration.md shows it).
// It is a substring test on purpose: `monkey` contains `key` and is hidden
// too. Redacting too much is a nuisance; redacting too little leaks a key.
//
// Everything else stays byte for byte as it was (nothing is re-encoded), so
// a redacted URL still says which endpoint it is. Pure functions, no
// allocation beyond the result, safe from any thread.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace gatherstats::http {

// What a secret-looking parameter's value is replaced by.
inline constexpr std::string_view redacted_value = "REDACTED";

// Substrings of parameter names that suggest a secret, lower case. Some
// cover several names: "pass" covers password, passwd, passphrase; "sig"
// covers sig, signature, X-Amz-Signature; "auth" covers auth, oauth_*,
// authorization; "cred" covers credential(s), X-Amz-Credential.
inline constexpr std::array<std::string_view, 10> secret_parameter_words = {
    "key", "token", "secret", "pass", "pwd", "auth", "sig", "cred", "session", "jwt"};

// True when a query parameter called `name` (as written in a URL, percent-
// encoded or not) may carry a secret.
bool is_secret_parameter(std::string_view name);

// The URL as it may appear in logs and messages: any user:password@ part
// removed, and the value of every secret-looking parameter of the query (and
// of the fragment, split the same way on `&` and `;`) replaced by REDACTED.
// Text that is not a valid URL is treated the same way, as best it can be.
std::string redact_url(std::string_view url);

// Free text (a log line, an error message) with the secret-looking query
// values of every `scheme://...` URL in it replaced by REDACTED. A URL in
// text ends at white space, a quote or `<>`; a `:` just before white space
// ends it too (the "URL: message" form). User information is left to the
// caller (the daemon shows `user:***@`).
std::string redact_query_secrets(std::string_view text);

}  // namespace gatherstats::http
