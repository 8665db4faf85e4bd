// The bytes of one spooled fetch: a fetch_record encoded so that it decodes
// back exactly (name, endpoint, fetched_at in microseconds, every row's key
// and the bits of its double, the skipped count, and its outcome: tick,
// duration, reason, HTTP status, bytes, error), or not at all.
//
// Layout (docs/spool.md), all integers little-endian:
//   header  (20 bytes): magic "GSSP", u16 version (2), u16 flags (0),
//                       u64 payload length, u32 CRC-32 (zlib) of the payload
//   payload:            u32 length + name bytes, u32 length + endpoint bytes,
//                       i64 fetched_at (microseconds since the Unix epoch),
//                       u64 skipped, u64 row count, then per row
//                       u32 length + key bytes, u64 IEEE-754 bits of the value;
//                       then (version 2) the outcome: i64 tick (microseconds
//                       since the epoch), i64 duration (microseconds),
//                       u8 reason (fetch_reason), u32 HTTP status,
//                       u64 body bytes, u32 length + error bytes
//
// Version 1 files (written before failed fetches were records) are still
// read: they end after the rows, and decode as a successful fetch whose
// tick is its fetched_at (duration, status and bytes 0: unknown).
//
// Errors: decode() checks the magic, the version, that the length matches
// the bytes given exactly, the CRC, and every length inside the payload; a
// truncated, extended or corrupted encoding is a permanent failure saying
// which check failed, never a wrong record. encode() cannot fail except for a
// string longer than 4 GiB, which is a permanent failure.
//
// Pure functions: safe from any thread.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace gatherstats::spool {

inline constexpr std::string_view record_magic = "GSSP";
inline constexpr std::uint16_t record_version = 2;
inline constexpr std::uint16_t record_version_without_outcome = 1;
inline constexpr std::size_t record_header_bytes = 20;

outcome<std::string> encode_record(const fetch_record& record);
outcome<fetch_record> decode_record(std::string_view bytes);

}  // namespace gatherstats::spool
