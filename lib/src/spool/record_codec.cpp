#include "gatherstats/spool/record_codec.hpp"

#include <zlib.h>

#include <bit>
#include <limits>

namespace gatherstats::spool {
namespace {

// Explicit little-endian so a spool written on one machine reads on another.
void put_u16(std::string& out, std::uint16_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

bool put_string(std::string& out, std::string_view s) {
  if (s.size() > std::numeric_limits<std::uint32_t>::max()) return false;
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
  return true;
}

std::uint64_t get_le(std::string_view bytes, std::size_t at, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  return v;
}

std::uint32_t crc_of(std::string_view bytes) {
  // zlib's crc32 takes a uInt length: feed it in pieces for huge payloads.
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (!bytes.empty()) {
    auto n = static_cast<uInt>(std::min<std::size_t>(bytes.size(), 1u << 30));
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(bytes.data()), n);
    bytes.remove_prefix(n);
  }
  return static_cast<std::uint32_t>(crc);
}

// Reads the payload front to back; every read is bounds-checked so that a
// length field pointing past the end is reported, not followed.
class reader {
 public:
  explicit reader(std::string_view bytes) : bytes_(bytes) {}
  bool u8(std::uint8_t& v) { return take(1, v); }
  bool u32(std::uint32_t& v) { return take(4, v); }
  bool u64(std::uint64_t& v) { return take(8, v); }
  bool string(std::string_view& s) {
    std::uint32_t n = 0;
    if (!u32(n) || bytes_.size() - at_ < n) return false;
    s = bytes_.substr(at_, n);
    at_ += n;
    return true;
  }
  std::size_t remaining() const { return bytes_.size() - at_; }

 private:
  template <class T>
  bool take(int n, T& v) {
    if (remaining() < static_cast<std::size_t>(n)) return false;
    v = static_cast<T>(get_le(bytes_, at_, n));
    at_ += n;
    return true;
  }
  std::string_view bytes_;
  std::size_t at_ = 0;
};

failure corrupt(std::string what) { return failure::permanent("spooled record " + what); }

}  // namespace

outcome<std::string> encode_record(const fetch_record& record) {
  std::string payload;
  std::size_t estimate =
      40 + 33 + record.name.size() + record.endpoint.size() + record.outcome.error.size();
  for (std::size_t i = 0; i < record.rows.size(); ++i) estimate += 12 + record.rows.key(i).size();
  payload.reserve(estimate);
  if (!put_string(payload, record.name) || !put_string(payload, record.endpoint))
    return failure::permanent("cannot spool record \"" + record.name.substr(0, 64) +
                              "\": a name or endpoint longer than 4 GiB");
  put_u64(payload, static_cast<std::uint64_t>(record.fetched_at.time_since_epoch().count()));
  put_u64(payload, record.rows.skipped());
  put_u64(payload, record.rows.size());
  for (std::size_t i = 0; i < record.rows.size(); ++i) {
    if (!put_string(payload, record.rows.key(i)))
      return failure::permanent("cannot spool record \"" + record.name +
                                "\": a key longer than 4 GiB");
    put_u64(payload, std::bit_cast<std::uint64_t>(record.rows.value(i)));
  }
  // Version 2: the outcome, for the fetch log.
  const fetch_outcome& o = record.outcome;
  put_u64(payload, static_cast<std::uint64_t>(o.tick.time_since_epoch().count()));
  put_u64(payload, static_cast<std::uint64_t>(o.duration.count()));
  payload.push_back(static_cast<char>(o.reason));
  put_u32(payload, o.http_status);
  put_u64(payload, o.bytes);
  if (!put_string(payload, o.error))
    return failure::permanent("cannot spool record \"" + record.name +
                              "\": an error message longer than 4 GiB");

  std::string out;
  out.reserve(record_header_bytes + payload.size());
  out.append(record_magic);
  put_u16(out, record_version);
  put_u16(out, 0);
  put_u64(out, payload.size());
  put_u32(out, crc_of(payload));
  out.append(payload);
  return out;
}

outcome<fetch_record> decode_record(std::string_view bytes) {
  if (bytes.size() < record_header_bytes)
    return corrupt("is truncated: " + std::to_string(bytes.size()) + " bytes, shorter than the " +
                   std::to_string(record_header_bytes) + "-byte header");
  if (bytes.substr(0, 4) != record_magic)
    return corrupt("has no \"GSSP\" magic: not a spool record");
  auto version = get_le(bytes, 4, 2);
  if (version < record_version_without_outcome || version > record_version)
    return corrupt("has format version " + std::to_string(version) + "; this build reads " +
                   std::to_string(record_version_without_outcome) + " to " +
                   std::to_string(record_version));
  auto flags = get_le(bytes, 6, 2);
  if (flags != 0) return corrupt("has unknown flags " + std::to_string(flags));
  auto length = get_le(bytes, 8, 8);
  auto have = bytes.size() - record_header_bytes;
  if (length != have)
    return corrupt(std::string(have < length ? "is truncated" : "has trailing bytes") +
                   ": the header promises " + std::to_string(length) + " payload bytes, found " +
                   std::to_string(have));
  auto payload = bytes.substr(record_header_bytes);
  auto want_crc = static_cast<std::uint32_t>(get_le(bytes, 16, 4));
  if (crc_of(payload) != want_crc) return corrupt("is corrupt: CRC-32 mismatch");

  // The CRC matched, so a failure below means a writer bug, not disk damage;
  // it is reported the same way all the same.
  reader in(payload);
  fetch_record record;
  std::string_view name, endpoint;
  std::uint64_t fetched_at = 0, skipped = 0, count = 0;
  if (!in.string(name) || !in.string(endpoint) || !in.u64(fetched_at) || !in.u64(skipped) ||
      !in.u64(count))
    return corrupt("is malformed: the fixed fields run past the payload");
  // Each row takes at least 12 bytes: refuse a count that cannot fit before
  // trusting it for anything.
  if (count > in.remaining() / 12)
    return corrupt("is malformed: " + std::to_string(count) + " rows cannot fit in " +
                   std::to_string(in.remaining()) + " bytes");
  record.name = name;
  record.endpoint = endpoint;
  record.fetched_at = timestamp(std::chrono::microseconds(static_cast<std::int64_t>(fetched_at)));
  for (std::uint64_t i = 0; i < count; ++i) {
    std::string_view key;
    std::uint64_t bits = 0;
    if (!in.string(key) || !in.u64(bits))
      return corrupt("is malformed: row " + std::to_string(i) + " runs past the payload");
    record.rows.push_back(key, std::bit_cast<double>(bits));
  }
  if (version == record_version_without_outcome) {
    // Spooled before failures were records: a fetch that succeeded, made
    // for no known tick (the fetch log takes fetched_at); duration and bytes
    // unknown (0).
    record.outcome.tick = record.fetched_at;
  } else {
    std::uint64_t tick = 0, duration = 0, bytes_received = 0;
    std::uint8_t reason = 0;
    std::uint32_t http_status = 0;
    std::string_view error;
    if (!in.u64(tick) || !in.u64(duration) || !in.u8(reason) || !in.u32(http_status) ||
        !in.u64(bytes_received) || !in.string(error))
      return corrupt("is malformed: the outcome runs past the payload");
    if (reason >= fetch_reason_count)
      return corrupt("is malformed: unknown fetch reason " + std::to_string(reason));
    auto& o = record.outcome;
    o.tick = timestamp(std::chrono::microseconds(static_cast<std::int64_t>(tick)));
    o.duration = std::chrono::microseconds(static_cast<std::int64_t>(duration));
    o.reason = static_cast<fetch_reason>(reason);
    o.http_status = http_status;
    o.bytes = bytes_received;
    o.error = error;
  }
  if (in.remaining() != 0)
    return corrupt("is malformed: " + std::to_string(in.remaining()) +
                   " unexplained bytes after the " +
                   (version == record_version_without_outcome ? "rows" : "outcome"));
  record.rows.set_skipped(static_cast<std::size_t>(skipped));
  return record;
}

}  // namespace gatherstats::spool
