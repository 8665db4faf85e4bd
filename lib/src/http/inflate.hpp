// Streaming decompression of a gzip- or deflate-encoded HTTP body (zlib),
// private to the HTTP client.
//
// The body limit applies to the DECOMPRESSED size and is enforced while
// inflating, a bounded chunk at a time: a gzip bomb fails as soon as its
// output passes the limit, holding at most the limit plus one chunk.
//
// Errors are values (`inflater::status` plus a description); nothing throws
// except std::bad_alloc. Not thread-safe; one body per inflater.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace gatherstats::http {

class inflater {
 public:
  enum class status { ok, over_limit, corrupt };

  // Auto-detects a gzip or zlib wrapper; falls back to raw deflate when the
  // first bytes are neither (some servers send raw deflate as "deflate").
  explicit inflater(std::size_t max_output_bytes);
  ~inflater();
  inflater(const inflater&) = delete;
  inflater& operator=(const inflater&) = delete;

  // Inflates `input` and appends the result to `out`. After `over_limit` or
  // `corrupt`, error() says why and further calls keep failing.
  status feed(std::string_view input, std::string& out);
  // At the end of the body: `corrupt` unless the compressed stream ended.
  status finish();
  const std::string& error() const { return error_; }

 private:
  struct state;
  status fail(status s, std::string message);

  std::unique_ptr<state> state_;
  std::size_t max_output_bytes_;
  std::string error_;
};

}  // namespace gatherstats::http
