// Basic authentication for the HTTP listener, in the manner of the Prometheus
// exporter-toolkit: users with bcrypt hashes (made by `htpasswd -nBC 10 USER` or
// `mkpasswd -m bcrypt`), checked with libcrypt's crypt_r, and a cache of
// successful checks keyed by user and SHA-256 of the password so that a
// scrape every second does not cost a bcrypt check each time.
//
// bcrypt_matches() blocks for 50-200 ms on purpose: run it off the event
// loop. The rest is cheap. A user_table is plain data for one thread.
// Passwords are never part of any message.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gatherstats::observe {

// "$2a$", "$2b$" or "$2y$", a cost from 04 to 31, "$", 53 characters of
// bcrypt's base64: what crypt_r can check.
bool is_bcrypt_hash(std::string_view hash);

struct basic_credentials {
  std::string user;
  std::string password;
  basic_credentials() = default;
  basic_credentials(const basic_credentials&) = default;
  basic_credentials& operator=(const basic_credentials&) = default;
  ~basic_credentials();  // wipes the password
};

// The user and password of an "Authorization: Basic ..." value; nullopt for
// another scheme, bad base64, no ":" or a NUL in the password (crypt_r would
// stop at it).
std::optional<basic_credentials> parse_basic_authorization(std::string_view value);

// Whether `password` hashes to `hash` (bcrypt, constant-time comparison).
// Blocks: runs the whole bcrypt cost.
bool bcrypt_matches(const std::string& password, const std::string& hash);

using password_digest = std::array<unsigned char, 32>;
password_digest sha256_of(std::string_view password);

class user_table {
 public:
  explicit user_table(std::vector<std::pair<std::string, std::string>> users);

  bool empty() const { return users_.empty(); }
  // The hash to check a password against: the user's, or, for an unknown
  // user, another user's, so that the check costs the same time and an
  // unknown name cannot be told from a wrong password. `known` says which.
  const std::string& hash_to_check(const std::string& user, bool& known) const;
  // A successful check of this password for this user was cached.
  bool cached(const std::string& user, const password_digest& digest) const;
  // One entry per user (the last good password), so the cache is bounded
  // by the number of users.
  void remember(const std::string& user, const password_digest& digest);

 private:
  struct user {
    std::string name;
    std::string hash;
    std::optional<password_digest> good;
  };
  std::vector<user> users_;
};

}  // namespace gatherstats::observe
