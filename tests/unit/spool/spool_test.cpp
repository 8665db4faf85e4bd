#include "gatherstats/spool/spool.hpp"
#include "gatherstats/spool/record_codec.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using gatherstats::fetch_record;
using gatherstats::timestamp;
using namespace gatherstats::spool;

namespace {

// A fresh directory under TMPDIR, removed with everything in it.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "spool-test-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    // A test may have made the spool read-only; remove_all needs it writable.
    fs::permissions(path / "spool", fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string spool() const { return (path / "spool").string(); }
};

fetch_record make_record(std::string name, std::int64_t micros, std::size_t rows = 3) {
  fetch_record r;
  r.name = name;
  r.endpoint = "https://example.test/" + name;
  r.fetched_at = timestamp(std::chrono::microseconds(micros));
  for (std::size_t i = 0; i < rows; ++i)
    r.rows.push_back("key." + std::to_string(i), static_cast<double>(i) + 0.5);
  return r;
}

void require_equal(const fetch_record& a, const fetch_record& b) {
  REQUIRE(a.name == b.name);
  REQUIRE(a.endpoint == b.endpoint);
  REQUIRE(a.fetched_at == b.fetched_at);
  REQUIRE(a.rows.skipped() == b.rows.skipped());
  REQUIRE(a.rows.size() == b.rows.size());
  for (std::size_t i = 0; i < a.rows.size(); ++i) {
    REQUIRE(a.rows.key(i) == b.rows.key(i));
    REQUIRE(std::bit_cast<std::uint64_t>(a.rows.value(i)) ==
            std::bit_cast<std::uint64_t>(b.rows.value(i)));
  }
  REQUIRE(a.outcome == b.outcome);
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::vector<entry_id> ids_of(const directory_spool& s) {
  std::vector<entry_id> out;
  for (const auto& e : s.entries()) out.push_back(e.id);
  return out;
}

}  // namespace

TEST_CASE("record_codec round-trips odd keys and special doubles exactly", "[spool]") {
  fetch_record r;
  r.name = "na\"me";
  r.endpoint = "ünïcødé endpoint";
  r.fetched_at = timestamp(std::chrono::microseconds(1'700'000'000'123'456));
  r.rows.push_back("", 1.0);
  r.rows.push_back("with \"quotes\" and \\", -0.0);
  r.rows.push_back("日本語.キー", std::numeric_limits<double>::denorm_min());
  r.rows.push_back("max", std::numeric_limits<double>::max());
  r.rows.push_back("lowest", std::numeric_limits<double>::lowest());
  r.rows.push_back("inf", std::numeric_limits<double>::infinity());
  r.rows.push_back("nan", std::numeric_limits<double>::quiet_NaN());
  r.rows.push_back(std::string("nul\0byte", 8), 3.25);
  r.rows.set_skipped(7);
  auto bytes = encode_record(r);
  REQUIRE(bytes.has_value());
  auto back = decode_record(*bytes);
  REQUIRE(back.has_value());
  require_equal(r, *back);
  REQUIRE(std::signbit(back->rows.value(1)));

  SECTION("zero rows and a negative time") {
    fetch_record empty;
    empty.fetched_at = timestamp(std::chrono::microseconds(-5));
    auto e = decode_record(*encode_record(empty));
    REQUIRE(e.has_value());
    require_equal(empty, *e);
  }
}

TEST_CASE("record_codec keeps a failed fetch's outcome, and a success's", "[spool]") {
  fetch_record failed;
  failed.name = "broken";
  failed.endpoint = "https://example.test/broken";
  failed.fetched_at = timestamp(std::chrono::microseconds(1'700'000'001'000'000));
  failed.outcome.tick = timestamp(std::chrono::microseconds(1'700'000'000'000'000));
  failed.outcome.duration = std::chrono::microseconds(987'654);
  failed.outcome.reason = gatherstats::fetch_reason::http_status;
  failed.outcome.error = "https://example.test/broken: HTTP 503 Service Unavailable";
  failed.outcome.http_status = 503;
  failed.outcome.bytes = 17;
  auto back = decode_record(*encode_record(failed));
  REQUIRE(back.has_value());
  require_equal(failed, *back);
  CHECK(back->rows.size() == 0);

  auto ok = make_record("ok", 1'700'000'000'500'000);
  ok.outcome.tick = timestamp(std::chrono::microseconds(1'700'000'000'000'000));
  ok.outcome.duration = std::chrono::microseconds(1234);
  ok.outcome.http_status = 200;
  ok.outcome.bytes = std::numeric_limits<std::uint64_t>::max();
  auto ok_back = decode_record(*encode_record(ok));
  REQUIRE(ok_back.has_value());
  require_equal(ok, *ok_back);
}

TEST_CASE("record_codec reads a version 1 file (no outcome) as a successful fetch", "[spool]") {
  // Written by the version 1 encoder (docs/spool.md): "iar", "http://x/s",
  // fetched_at 1700000000123456, 2 skipped, rows a.b = 1.5 and c = -0.0.
  const std::string v1(
      "\x47\x53\x53\x50\x01\x00\x00\x00\x49\x00\x00\x00\x00\x00\x00\x00\x17\xc9\xe1\xb2\x03\x00"
      "\x00\x00\x69\x61\x72\x0a\x00\x00\x00\x68\x74\x74\x70\x3a\x2f\x2f\x78\x2f\x73\x40\x22\x20"
      "\x18\x24\x0a\x06\x00\x02\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x03"
      "\x00\x00\x00\x61\x2e\x62\x00\x00\x00\x00\x00\x00\xf8\x3f\x01\x00\x00\x00\x63\x00\x00\x00"
      "\x00\x00\x00\x00\x80",
      93);
  auto r = decode_record(v1);
  REQUIRE(r.has_value());
  CHECK(r->name == "iar");
  CHECK(r->endpoint == "http://x/s");
  CHECK(r->fetched_at == timestamp(std::chrono::microseconds(1'700'000'000'123'456)));
  CHECK(r->rows.skipped() == 2);
  REQUIRE(r->rows.size() == 2);
  CHECK(r->rows.key(0) == "a.b");
  CHECK(r->rows.value(0) == 1.5);
  CHECK(r->rows.key(1) == "c");
  CHECK(std::signbit(r->rows.value(1)));
  CHECK(r->outcome.ok());
  CHECK(r->outcome.tick == r->fetched_at);
  CHECK(r->outcome.duration.count() == 0);
  CHECK(r->outcome.http_status == 0);
  CHECK(r->outcome.error.empty());
  // And it still goes back to the same bytes' content when written anew.
  auto again = decode_record(*encode_record(*r));
  REQUIRE(again.has_value());
  require_equal(*r, *again);
}

TEST_CASE("record_codec detects truncation, extension and corruption", "[spool]") {
  auto bytes = *encode_record(make_record("a", 1));
  auto message_of = [](std::string_view b) {
    auto r = decode_record(b);
    REQUIRE_FALSE(r.has_value());
    return r.error().message;
  };
  CHECK_THAT(message_of(""), Catch::Contains("truncated"));
  CHECK_THAT(message_of(bytes.substr(0, 10)), Catch::Contains("truncated"));
  CHECK_THAT(message_of(bytes.substr(0, bytes.size() - 1)), Catch::Contains("truncated"));
  CHECK_THAT(message_of(bytes + "x"), Catch::Contains("trailing"));
  CHECK_THAT(message_of("XXXX" + bytes.substr(4)), Catch::Contains("magic"));
  auto v3 = bytes;
  v3[4] = 3;
  CHECK_THAT(message_of(v3), Catch::Contains("version 3"));
  // Every single flipped bit in the payload is caught by the CRC.
  for (std::size_t i = record_header_bytes; i < bytes.size(); ++i) {
    auto flipped = bytes;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x10);
    REQUIRE_FALSE(decode_record(flipped).has_value());
  }
}

TEST_CASE("spool stores and returns records oldest first across a reopen", "[spool]") {
  temp_dir dir;
  {
    auto s = directory_spool::open(dir.spool(), 1 << 20);
    REQUIRE(s.has_value());
    struct stat st {};
    REQUIRE(::stat(dir.spool().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    // fetched_at deliberately out of order: order is the store order.
    for (std::int64_t t : {30, 10, 20}) {
      auto stored = s->store(make_record("e" + std::to_string(t), t));
      REQUIRE(stored.has_value());
      CHECK(stored->dropped.empty());
    }
    CHECK(s->size() == 3);
  }
  auto s = directory_spool::open(dir.spool(), 1 << 20);
  REQUIRE(s.has_value());
  REQUIRE(s->size() == 3);
  for (std::int64_t t : {30, 10, 20}) {
    auto o = s->oldest();
    REQUIRE(o.has_value());
    REQUIRE(o->has_value());
    require_equal((*o)->record, make_record("e" + std::to_string(t), t));
    REQUIRE(s->remove((*o)->id).has_value());
  }
  auto none = s->oldest();
  REQUIRE(none.has_value());
  CHECK_FALSE(none->has_value());
  CHECK(s->size() == 0);
  CHECK(s->bytes() == 0);
  // New ids continue after the highest ever seen: still ordered after reopen.
  auto a = s->store(make_record("x", 1));
  REQUIRE(a.has_value());
  CHECK(a->id > 3);
}

TEST_CASE("spool moves a truncated and a corrupted file aside and reaches the rest", "[spool]") {
  temp_dir dir;
  std::vector<entry_info> entries;
  {
    auto s = directory_spool::open(dir.spool(), 1 << 20);
    REQUIRE(s.has_value());
    for (int i = 0; i < 4; ++i) REQUIRE(s->store(make_record("r", i)).has_value());
    entries = s->entries();
  }
  // Truncate the oldest, flip a byte in the third.
  auto first = read_bytes(entries[0].path);
  write_bytes(entries[0].path, first.substr(0, first.size() / 2));
  auto third = read_bytes(entries[2].path);
  third[third.size() - 3] = static_cast<char>(third[third.size() - 3] ^ 0x01);
  write_bytes(entries[2].path, third);

  auto s = directory_spool::open(dir.spool(), 1 << 20);
  REQUIRE(s.has_value());
  REQUIRE(s->size() == 4);

  auto bad = s->oldest();
  REQUIRE_FALSE(bad.has_value());
  CHECK_THAT(bad.error().message, Catch::Contains(entries[0].path));
  CHECK_THAT(bad.error().message, Catch::Contains("truncated"));
  CHECK_THAT(bad.error().message, Catch::Contains("corrupt/"));
  CHECK(s->size() == 3);

  auto good = s->oldest();
  REQUIRE(good.has_value());
  CHECK((*good)->record.fetched_at.time_since_epoch().count() == 1);
  REQUIRE(s->remove((*good)->id).has_value());

  auto flipped = s->load(entries[2].id);
  REQUIRE_FALSE(flipped.has_value());
  CHECK_THAT(flipped.error().message, Catch::Contains("CRC"));
  auto last = s->oldest();
  REQUIRE(last.has_value());
  CHECK((*last)->id == entries[3].id);

  // Never deleted: both are in corrupt/ under their own names.
  fs::path corrupt = fs::path(dir.spool()) / "corrupt";
  CHECK(fs::exists(corrupt / fs::path(entries[0].path).filename()));
  CHECK(fs::exists(corrupt / fs::path(entries[2].path).filename()));
  CHECK(s->size() == 1);
  CHECK(s->bytes() == entries[3].bytes);

  // Reopening does not pick them up again, and does not reuse their ids.
  auto again = directory_spool::open(dir.spool(), 1 << 20);
  REQUIRE(again.has_value());
  CHECK(again->size() == 1);
  auto next = again->store(make_record("n", 9));
  REQUIRE(next.has_value());
  CHECK(next->id > entries[3].id);
}

TEST_CASE("spool removes temporary files left by a crash at open", "[spool]") {
  temp_dir dir;
  {
    auto s = directory_spool::open(dir.spool(), 1 << 20);
    REQUIRE(s.has_value());
    REQUIRE(s->store(make_record("kept", 1)).has_value());
  }
  fs::path spool_dir = dir.spool();
  auto tmp = spool_dir / "000000000002-2.rec.tmp";
  write_bytes(tmp, "half a record");
  write_bytes(spool_dir / "README", "not ours");  // unknown files are left alone
  auto s = directory_spool::open(dir.spool(), 1 << 20);
  REQUIRE(s.has_value());
  CHECK_FALSE(fs::exists(tmp));
  CHECK(fs::exists(spool_dir / "README"));
  CHECK(s->size() == 1);
}

TEST_CASE("spool at max_bytes with drop_oldest drops exactly the oldest", "[spool]") {
  temp_dir dir;
  const auto one = encode_record(make_record("r", 0))->size();
  auto s = directory_spool::open(dir.spool(), 3 * one, full_policy::drop_oldest);
  REQUIRE(s.has_value());
  std::vector<entry_id> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(s->store(make_record("r", i))->id);
  CHECK(s->bytes() == 3 * one);

  auto fourth = s->store(make_record("r", 3));
  REQUIRE(fourth.has_value());
  REQUIRE(fourth->dropped.size() == 1);
  CHECK(fourth->dropped[0].id == ids[0]);
  CHECK(fourth->dropped[0].fetched_at.time_since_epoch().count() == 0);
  CHECK_FALSE(fs::exists(fourth->dropped[0].path));
  CHECK(ids_of(*s) == std::vector<entry_id>{ids[1], ids[2], fourth->id});
  CHECK(s->bytes() == 3 * one);

  SECTION("a bigger record drops as many as it needs, oldest first") {
    auto big = make_record("r", 4, 6);  // about two records' worth
    auto size = encode_record(big)->size();
    REQUIRE(size > one);
    REQUIRE(size <= 2 * one);
    auto stored = s->store(big);
    REQUIRE(stored.has_value());
    REQUIRE(stored->dropped.size() == 2);
    CHECK(stored->dropped[0].id == ids[1]);
    CHECK(stored->dropped[1].id == ids[2]);
    CHECK(s->size() == 2);
  }
  SECTION("entries being committed from memory are passed over; the next oldest goes") {
    auto fifth = s->store(make_record("r", 5), /*in_use_upto=*/ids[1]);
    REQUIRE(fifth.has_value());
    REQUIRE(fifth->dropped.size() == 1);
    CHECK(fifth->dropped[0].id == ids[2]);
    CHECK(ids_of(*s) == std::vector<entry_id>{ids[1], fourth->id, fifth->id});
  }
  SECTION("next_after walks the entries oldest first without reading them") {
    REQUIRE(s->next_after(0).has_value());
    CHECK(s->next_after(0)->id == ids[1]);
    CHECK(s->next_after(ids[1])->id == ids[2]);
    CHECK(s->next_after(ids[2])->id == fourth->id);
    CHECK_FALSE(s->next_after(fourth->id).has_value());
  }
  SECTION("a record larger than max_bytes is refused and drops nothing") {
    auto huge = s->store(make_record("r", 5, 100));
    REQUIRE_FALSE(huge.has_value());
    CHECK_THAT(huge.error().message, Catch::Contains("max_bytes"));
    CHECK(s->size() == 3);
  }
}

TEST_CASE("spool at max_bytes with stop refuses the new record", "[spool]") {
  temp_dir dir;
  const auto one = encode_record(make_record("r", 0))->size();
  auto s = directory_spool::open(dir.spool(), 2 * one, full_policy::stop);
  REQUIRE(s.has_value());
  REQUIRE(s->store(make_record("r", 0)).has_value());
  REQUIRE(s->store(make_record("r", 1)).has_value());
  auto refused = s->store(make_record("r", 2));
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().is_transient());
  CHECK_THAT(refused.error().message, Catch::Contains("full"));
  CHECK_THAT(refused.error().message, Catch::Contains(dir.spool()));
  CHECK(s->size() == 2);
  REQUIRE(s->remove(s->entries()[0].id).has_value());
  CHECK(s->store(make_record("r", 2)).has_value());
}

TEST_CASE("spool reports unwritable directories as failures naming the path", "[spool]") {
  temp_dir dir;
  SECTION("a parent that is a regular file") {
    write_bytes(dir.path / "file", "x");
    auto path = (dir.path / "file" / "spool").string();
    auto s = directory_spool::open(path, 1 << 20);
    REQUIRE_FALSE(s.has_value());
    CHECK_THAT(s.error().message, Catch::Contains(path));
    CHECK_THAT(s.error().message, Catch::Contains("Not a directory"));
  }
  SECTION("the directory made unwritable after open") {
    auto s = directory_spool::open(dir.spool(), 1 << 20);
    REQUIRE(s.has_value());
    REQUIRE(s->store(make_record("before", 1)).has_value());
    if (::geteuid() != 0) {
      fs::permissions(dir.spool(), fs::perms(0500));
    } else {
      // root ignores mode bits: take the directory away instead, so every
      // write inside it fails (the spool holds it by descriptor; unlink it
      // and the descriptor refers to a deleted directory).
      WARN(
          "running as root: chmod 0500 does not stop root, so the spool directory is "
          "deleted under the spool instead");
      fs::remove_all(dir.spool());
    }
    auto stored = s->store(make_record("after", 2));
    REQUIRE_FALSE(stored.has_value());
    CHECK_THAT(stored.error().message, Catch::Contains(dir.spool()));
    INFO(stored.error().message);
    CHECK(stored.error().message.find(": ") != std::string::npos);
  }
}

TEST_CASE("spool accounts size and bytes across store, remove and reopen", "[spool]") {
  temp_dir dir;
  std::uint64_t total = 0;
  {
    auto s = directory_spool::open(dir.spool(), 1 << 20);
    REQUIRE(s.has_value());
    CHECK(s->size() == 0);
    CHECK(s->bytes() == 0);
    for (int i = 0; i < 5; ++i) {
      auto r = make_record("r", i, static_cast<std::size_t>(i));
      total += encode_record(r)->size();
      REQUIRE(s->store(r).has_value());
    }
    CHECK(s->size() == 5);
    CHECK(s->bytes() == total);
    auto e = s->entries();
    REQUIRE(s->remove(e[1].id).has_value());
    REQUIRE(s->remove(e[1].id).has_value());  // twice is fine
    total -= e[1].bytes;
    CHECK(s->size() == 4);
    CHECK(s->bytes() == total);
  }
  auto s = directory_spool::open(dir.spool(), 1 << 20);
  REQUIRE(s.has_value());
  CHECK(s->size() == 4);
  CHECK(s->bytes() == total);
  std::uint64_t on_disk = 0;
  for (const auto& e : s->entries()) on_disk += fs::file_size(e.path);
  CHECK(on_disk == total);
  CHECK_FALSE(s->load(999).has_value());
}
