#include "gatherstats/observe/basic_auth.hpp"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace gatherstats::observe {
namespace {

bool is_bcrypt_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '/';
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard base64 with padding, as RFC 7617 asks; nullopt if malformed.
std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = in[i + static_cast<std::size_t>(k)];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad > 0) return std::nullopt;  // data after "="
      v[k] = base64_value(c);
      if (v[k] < 0) return std::nullopt;
    }
    unsigned n =
        (unsigned(v[0]) << 18) | (unsigned(v[1]) << 12) | (unsigned(v[2]) << 6) | unsigned(v[3]);
    out += char((n >> 16) & 0xFF);
    if (pad < 2) out += char((n >> 8) & 0xFF);
    if (pad < 1) out += char(n & 0xFF);
  }
  return out;
}

}  // namespace

bool is_bcrypt_hash(std::string_view h) {
  if (h.size() != 60) return false;
  if (h[0] != '$' || h[1] != '2' || (h[2] != 'a' && h[2] != 'b' && h[2] != 'y') || h[3] != '$')
    return false;
  if (h[4] < '0' || h[4] > '3' || h[5] < '0' || h[5] > '9' || h[6] != '$') return false;
  int cost = (h[4] - '0') * 10 + (h[5] - '0');
  if (cost < 4 || cost > 31) return false;
  return std::all_of(h.begin() + 7, h.end(), is_bcrypt_char);
}

basic_credentials::~basic_credentials() {
  if (!password.empty()) OPENSSL_cleanse(password.data(), password.size());
}

std::optional<basic_credentials> parse_basic_authorization(std::string_view value) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  constexpr std::string_view scheme = "basic";
  if (value.size() <= scheme.size() || value[scheme.size()] != ' ') return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    char c = value[i];
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    if (c != scheme[i]) return std::nullopt;
  }
  value.remove_prefix(scheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  auto decoded = base64_decode(value);
  if (!decoded) return std::nullopt;
  std::optional<basic_credentials> out;
  auto colon = decoded->find(':');
  if (colon != std::string::npos && decoded->find('\0', colon) == std::string::npos) {
    out.emplace();
    out->user = decoded->substr(0, colon);
    out->password = decoded->substr(colon + 1);
  }
  OPENSSL_cleanse(decoded->data(), decoded->size());
  return out;
}

bool bcrypt_matches(const std::string& password, const std::string& hash) {
  // About 32 KiB: on the heap, zeroed as crypt_r requires.
  auto data = std::make_unique<crypt_data>();
  const char* result = crypt_r(password.c_str(), hash.c_str(), data.get());
  bool ok = result != nullptr && std::strlen(result) == hash.size() &&
            CRYPTO_memcmp(result, hash.data(), hash.size()) == 0;
  OPENSSL_cleanse(data.get(), sizeof(crypt_data));
  return ok;
}

password_digest sha256_of(std::string_view password) {
  password_digest out{};
  unsigned size = 0;
  EVP_Digest(password.data(), password.size(), out.data(), &size, EVP_sha256(), nullptr);
  return out;
}

user_table::user_table(std::vector<std::pair<std::string, std::string>> users) {
  for (auto& [name, hash] : users) users_.push_back({std::move(name), std::move(hash), {}});
}

const std::string& user_table::hash_to_check(const std::string& name, bool& known) const {
  for (const auto& u : users_) {
    if (u.name == name) {
      known = true;
      return u.hash;
    }
  }
  known = false;
  return users_.front().hash;
}

bool user_table::cached(const std::string& name, const password_digest& digest) const {
  for (const auto& u : users_)
    if (u.name == name)
      return u.good && CRYPTO_memcmp(u.good->data(), digest.data(), digest.size()) == 0;
  return false;
}

void user_table::remember(const std::string& name, const password_digest& digest) {
  for (auto& u : users_)
    if (u.name == name) u.good = digest;
}

}  // namespace gatherstats::observe
