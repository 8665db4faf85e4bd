// zlib's inflate a bounded chunk at a time, appending to the caller's string
// only while the total stays within the limit.
#include "inflate.hpp"

#include <zlib.h>

#include <array>
#include <stdexcept>

namespace gatherstats::http {
namespace {

// Output is produced this much at a time: the most memory a bomb can make
// us hold beyond the limit.
constexpr std::size_t chunk_bytes = 16 * 1024;
// Input kept from the start of the body, so that it can be inflated again as
// raw deflate if it turns out to have no gzip or zlib header.
constexpr std::size_t max_replay_bytes = 64;

}  // namespace

struct inflater::state {
  z_stream z{};
  bool initialised = false;
  bool raw = false;
  bool ended = false;
  bool failed = false;
  std::string replay;  // every byte fed so far, while there are few

  ~state() {
    if (initialised) inflateEnd(&z);
  }
  void init(int window_bits) {
    if (initialised) inflateEnd(&z);
    z = z_stream{};
    initialised = inflateInit2(&z, window_bits) == Z_OK;
    if (!initialised) throw std::bad_alloc();
  }
};

inflater::inflater(std::size_t max_output_bytes)
    : state_(std::make_unique<state>()), max_output_bytes_(max_output_bytes) {
  state_->init(15 + 32);  // 32: detect a gzip or zlib header
}

inflater::~inflater() = default;

inflater::status inflater::fail(status s, std::string message) {
  state_->failed = true;
  error_ = std::move(message);
  return s;
}

inflater::status inflater::feed(std::string_view input, std::string& out) {
  state& s = *state_;
  if (s.failed) return status::corrupt;
  if (s.ended || input.empty()) return status::ok;  // bytes after the stream: ignored
  // Everything fed before this call is still at hand: a header error can be
  // retried as raw deflate.
  const bool replayable = !s.raw && s.replay.size() == s.z.total_in;

  std::array<unsigned char, chunk_bytes> buffer;
  s.z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
  s.z.avail_in = static_cast<uInt>(input.size());
  // Until all input is consumed and zlib has no more output pending (it had
  // room left in the last chunk).
  for (;;) {
    s.z.next_out = buffer.data();
    s.z.avail_out = buffer.size();
    const int rc = inflate(&s.z, Z_NO_FLUSH);
    const std::size_t produced = buffer.size() - s.z.avail_out;
    if (rc == Z_DATA_ERROR && !s.raw && replayable && s.z.total_out == 0) {
      // Neither gzip nor zlib: start again on the same bytes as raw deflate.
      s.raw = true;
      s.init(-15);
      std::string again = std::move(s.replay);
      again.append(input);
      s.replay.clear();
      return feed(again, out);
    }
    if (rc == Z_DATA_ERROR)
      return fail(status::corrupt, std::string("the compressed body is corrupt (") +
                                       (s.z.msg ? s.z.msg : "invalid data") + ")");
    if (rc == Z_MEM_ERROR) throw std::bad_alloc();
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
      return fail(status::corrupt,
                  "the compressed body cannot be inflated (zlib error " + std::to_string(rc) + ")");
    if (out.size() + produced > max_output_bytes_)
      return fail(status::over_limit, "the decompressed body is larger than the limit of " +
                                          std::to_string(max_output_bytes_) + " bytes");
    out.append(reinterpret_cast<const char*>(buffer.data()), produced);
    if (rc == Z_STREAM_END) {
      s.ended = true;
      break;
    }
    if (s.z.avail_in == 0 && s.z.avail_out != 0) break;
    if (rc == Z_BUF_ERROR && produced == 0) break;  // needs more input
  }
  // Once output flows, the header was fine and the replay is not needed.
  if (!s.raw && s.z.total_out == 0 && s.replay.size() + input.size() <= max_replay_bytes) {
    s.replay.append(input);
  } else {
    s.replay.clear();
    s.replay.shrink_to_fit();
  }
  return status::ok;
}

inflater::status inflater::finish() {
  if (state_->failed) return status::corrupt;
  if (!state_->ended) return fail(status::corrupt, "the compressed body ends too early");
  return status::ok;
}

}  // namespace gatherstats::http
