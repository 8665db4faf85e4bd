// gatherstats-test-server: a real HTTP/HTTPS server that integration tests and
// benchmarks start as a child process on loopback. It serves a sample
// statistics document, generated documents of any size, files from a
// directory, and hostile behaviours (hangs, drips, endless or huge bodies, a
// gzip bomb, redirect loops, a huge key, invalid UTF-8, a truncated
// document) that the client has to survive. It also echoes
// request headers, serves files gzip- and deflate-encoded, tells how many
// requests a connection has served, serves a document only a set number of
// times (/stats-times?n=N), and can require client certificates.
//
//   gatherstats-test-server [--listen ADDR] [--port N] [--tls CERT_PEM KEY_PEM]
//                           [--client-ca CA_PEM] [--root DIR]
//
// Prints "listening on PORT" once it accepts connections, and exits 0 on
// SIGTERM, SIGINT or end of file on stdin (so it never outlives the test that
// holds its stdin pipe). Single-threaded: one io_context, one coroutine per
// connection; an error on a connection ends only that connection.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <csignal>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using std::to_string;

// --- deflate written by hand, so no zlib is needed ----------------------------
// (the library links zlib privately: its symbols are not on this program's
// link line)

constexpr std::uint32_t crc_polynomial = 0xedb88320;  // CRC-32 as gzip uses it

std::uint32_t crc32_update(std::uint32_t crc, std::string_view data) {
  crc = ~crc;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = crc & 1 ? (crc >> 1) ^ crc_polynomial : crc >> 1;
  }
  return ~crc;
}

// Product of two polynomials modulo the CRC polynomial (bit-reflected, as in
// zlib's crc32_combine), which lets us get the CRC of a gigabyte of spaces
// without ever producing it.
std::uint32_t crc_multiply(std::uint32_t a, std::uint32_t b) {
  std::uint32_t product = 0;
  for (std::uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = b & 1 ? (b >> 1) ^ crc_polynomial : b >> 1;
  }
  return product;
}

// CRC of A followed by B, given CRC(A), CRC(B) and B's length.
std::uint32_t crc32_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t length_b) {
  std::uint32_t shift = 1u << 31;  // x^0
  for (std::uint32_t power = 1u << 23 /* x^8: one byte */; length_b != 0; length_b >>= 1) {
    if (length_b & 1) shift = crc_multiply(power, shift);
    power = crc_multiply(power, power);
  }
  return crc_multiply(shift, crc_a) ^ crc_b;
}

std::uint32_t crc32_of_repeated(char byte, std::uint64_t count) {
  std::uint32_t crc = 0;
  std::uint32_t piece = crc32_update(0, std::string_view(&byte, 1));
  for (std::uint64_t piece_length = 1; count != 0; count >>= 1, piece_length *= 2) {
    if (count & 1) crc = crc32_combine(crc, piece, piece_length);
    piece = crc32_combine(piece, piece, piece_length);
  }
  return crc;
}

// Deflate packs fields from the least significant bit up, but defines Huffman
// codes most significant bit first.
class deflate_writer {
 public:
  void put(std::uint32_t value, int bits) {
    pending_ |= std::uint64_t{value} << used_;
    for (used_ += bits; used_ >= 8; used_ -= 8, pending_ >>= 8) {
      out_.push_back(static_cast<char>(pending_ & 0xff));
    }
  }
  void put_code(std::uint32_t code, int bits) {
    std::uint32_t reversed = 0;
    for (int i = 0; i < bits; ++i) reversed |= ((code >> i) & 1) << (bits - 1 - i);
    put(reversed, bits);
  }
  void put_stored_block(std::string_view bytes, bool final) {
    put(final ? 1 : 0, 1);
    put(0, 2);  // stored
    if (used_ != 0) put(0, 8 - used_);
    put(bytes.size(), 16);
    put(~bytes.size() & 0xffff, 16);
    for (unsigned char byte : bytes) put(byte, 8);
  }
  // One dynamic-Huffman block whose only symbols are ' ', end-of-block and
  // "copy 258 bytes from distance 1", each with a 1- or 2-bit code: every
  // further 258 spaces cost 2 bits.
  void put_spaces_block(std::uint64_t copies) {
    put(0, 1);          // not the final block
    put(2, 2);          // dynamic Huffman codes
    put(286 - 257, 5);  // literal/length symbols 0..285
    put(2 - 1, 5);      // distance symbols 0..1
    put(18 - 4, 4);     // code length code lengths sent, in this order:
    for (int symbol : {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1}) {
      put(symbol == 18 ? 1 : symbol == 1 || symbol == 2 ? 2 : 0, 3);
    }
    // Canonical code length codes: 18 (run of zeros) = 0, 1 = 10, 2 = 11.
    const auto zeros = [this](int run) {
      put_code(0b0, 1);
      put(run - 11, 7);
    };
    const auto length_1 = [this] { put_code(0b10, 2); };
    const auto length_2 = [this] { put_code(0b11, 2); };
    zeros(32);   // literals 0..31
    length_2();  // ' ' (32)
    zeros(138);
    zeros(85);   // 33..255
    length_2();  // end-of-block (256)
    zeros(28);   // lengths 3..257 (257..284)
    length_1();  // length 258 (285)
    length_1();  // distance 1
    length_1();  // distance 2
    // Canonical literal/length codes: 285 = 0, ' ' = 10, 256 = 11; distance 1 = 0.
    put_code(0b10, 2);
    for (std::uint64_t i = 0; i < copies; ++i) put(0, 2);
    put_code(0b11, 2);
  }
  // Bytes up to 65535 at a time, as stored blocks.
  void put_stored_blocks(std::string_view bytes, bool final) {
    do {
      const std::string_view piece = bytes.substr(0, 65535);
      bytes.remove_prefix(piece.size());
      put_stored_block(piece, final && bytes.empty());
    } while (!bytes.empty());
  }
  // One block with the fixed Huffman codes, literals only.
  void put_fixed_block(std::string_view bytes, bool final) {
    put(final ? 1 : 0, 1);
    put(1, 2);  // fixed Huffman codes
    for (unsigned char byte : bytes) {
      if (byte < 144) {
        put_code(0x30 + byte, 8);
      } else {
        put_code(0x190 + (byte - 144), 9);
      }
    }
    put_code(0, 7);  // end-of-block (256)
  }
  void pad_to_byte() {
    if (used_ != 0) put(0, 8 - used_);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
  std::uint64_t pending_ = 0;
  int used_ = 0;
};

// About 1 MiB of gzip that expands to {"a":<1 GiB of spaces>0}.
std::string make_gzip_bomb() {
  constexpr std::string_view head = R"({"a":)", tail = "0}";
  constexpr std::uint64_t copies = 4'161'790;
  constexpr std::uint64_t spaces = 1 + 258 * copies;  // just under 1 GiB
  deflate_writer out;
  for (int byte : {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}) out.put(byte, 8);  // gzip header
  out.put_stored_block(head, false);
  out.put_spaces_block(copies);
  out.put_stored_block(tail, true);
  std::uint32_t crc = crc32_update(0, head);
  crc = crc32_combine(crc, crc32_of_repeated(' ', spaces), spaces);
  out.put(crc32_update(crc, tail), 32);
  out.put(static_cast<std::uint32_t>(head.size() + spaces + tail.size()), 32);
  return out.take();
}

// Content-Encoding: gzip, with fixed Huffman codes.
std::string gzip_encode(std::string_view data) {
  deflate_writer out;
  for (int byte : {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}) out.put(byte, 8);
  out.put_fixed_block(data, true);
  out.pad_to_byte();
  out.put(crc32_update(0, data), 32);
  out.put(static_cast<std::uint32_t>(data.size()), 32);
  return out.take();
}

// Content-Encoding: deflate as RFC 9110 means it (a zlib stream), with
// stored blocks.
std::string zlib_encode(std::string_view data) {
  std::uint32_t a = 1, b = 0;  // Adler-32
  for (unsigned char byte : data) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  const std::uint32_t adler = (b << 16) | a;
  deflate_writer out;
  out.put(0x78, 8);
  out.put(0x01, 8);
  out.put_stored_blocks(data, true);
  for (int shift : {24, 16, 8, 0}) out.put((adler >> shift) & 0xff, 8);  // big-endian
  return out.take();
}

// Content-Encoding: deflate as some servers send it: raw, without zlib's
// wrapper.
std::string raw_deflate_encode(std::string_view data) {
  deflate_writer out;
  out.put_fixed_block(data, true);
  out.pad_to_byte();
  return out.take();
}

// --- documents ---------------------------------------------------------------

std::string counts_object(std::uint64_t total, std::uint64_t completed, std::uint64_t personal) {
  return R"({"total":)" + to_string(total) + R"(,"completed":)" + to_string(completed) +
         R"(,"with_personal_data":)" + to_string(personal) + "}";
}

// The demo document; its numbers grow with the request count so that a poller
// sees them change.
std::string stats_document(std::uint64_t request) {
  std::uint64_t total = 0, completed = 0, personal = 0;
  std::string institutions;
  for (std::uint64_t i = 0; i < 4; ++i) {
    const std::uint64_t t = 1000 * (i + 1) + request * (i + 1);
    const std::uint64_t c = t * 3 / 4, p = t / 10 + request % 7;
    total += t, completed += c, personal += p;
    institutions += std::string(i == 0 ? "" : ",") + "\"INST" + static_cast<char>('A' + i) +
                    "\":" + counts_object(t, c, p);
  }
  return R"({"asset_counts":{"all":)" + counts_object(total, completed, personal) +
         R"(,"by_institution":{)" + institutions + "}}}";
}

// Exactly `leaves` numbers, 50 to a group: {"g0":{"m0":..,"m49":..},"g1":{..}}.
std::string generated_document(std::uint64_t leaves, std::uint64_t request) {
  std::string out = "{";
  for (std::uint64_t i = 0; i < leaves; ++i) {
    if (i % 50 == 0) {
      out += (i == 0 ? "\"g" : "},\"g") + to_string(i / 50) + "\":{";
    } else {
      out += ',';
    }
    out += "\"m" + to_string(i % 50) + "\":" + to_string((i * 7 + request) % 1000);
  }
  return out + (leaves > 0 ? "}}" : "}");
}

// --- HTTP ------------------------------------------------------------------------

struct server_state {
  std::filesystem::path root;
  std::string gzip_bomb;
  std::uint64_t requests = 0;
  std::map<std::string, std::uint64_t, std::less<>> by_path;  // requests per path
  std::uint64_t hanging = 0;                                  // /hang requests open now
  std::uint64_t most_hanging = 0;                             // the most ever open at once
};

std::optional<std::uint64_t> parse_number(std::string_view text) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// The raw (not percent-decoded) value of `key` in the query.
std::optional<std::string_view> query_value(std::string_view target, std::string_view key) {
  const auto question = target.find('?');
  if (question == std::string_view::npos) return std::nullopt;
  for (std::string_view query = target.substr(question + 1); !query.empty();) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    if (pair.size() > key.size() && pair.starts_with(key) && pair[key.size()] == '=') {
      return pair.substr(key.size() + 1);
    }
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
  }
  return std::nullopt;
}

std::optional<std::uint64_t> query_number(std::string_view target, std::string_view key) {
  const auto value = query_value(target, key);
  if (!value) return std::nullopt;
  return parse_number(*value);
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      constexpr char hex[] = "0123456789abcdef";
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// The request's headers as a JSON object of strings, names as sent.
std::string headers_document(const http::request<http::string_body>& req) {
  std::string out = "{";
  for (const auto& field : req) {
    if (out.size() > 1) out += ',';
    out += json_string(field.name_string()) + ":" + json_string(field.value());
  }
  return out + "}";
}

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

template <class Stream>
class session {
 public:
  session(Stream& stream, server_state& state) : stream_(stream), state_(state) {}

  awaitable<void> run() {
    beast::flat_buffer buffer;
    for (;;) {
      request req;
      co_await http::async_read(stream_, buffer, req, use_awaitable);
      const std::uint64_t seen = state_.requests++;
      {
        const std::string_view t = req.target();
        ++state_.by_path[std::string(t.substr(0, t.find('?')))];
      }
      ++served_;
      bool keep_going = co_await respond(req, seen);
      if (!keep_going) co_return;
      if (!req.keep_alive()) co_return co_await shut_down();
    }
  }

 private:
  static constexpr bool is_tls = !std::is_same_v<Stream, tcp::socket>;

  // Returns false when the connection must not be used again.
  awaitable<bool> respond(const request& req, std::uint64_t seen) {
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    if (req.method() != http::verb::get)
      co_return co_await send(req, 405, R"({"error":"GET only"})");
    if (path == "/_count" && target.size() > path.size() + 6 &&
        target.substr(path.size(), 6) == "?path=") {
      const std::string counted(target.substr(path.size() + 6));
      auto found = state_.by_path.find(counted);
      const std::string body =
          R"({"requests":)" + to_string(found == state_.by_path.end() ? 0 : found->second) + "}";
      co_return co_await send(req, 200, body);
    }
    if (path == "/_count")
      co_return co_await send(req, 200, R"({"requests":)" + to_string(seen) + "}");
    if (path == "/stats") co_return co_await send(req, 200, stats_document(seen));
    if (path == "/headers") co_return co_await send(req, 200, headers_document(req));
    if (path == "/stats-times") {
      // The document for the first `n` requests to this path, then 410 for
      // good: a daemon's count of committed fetches stops at a known value.
      const auto times = query_number(target, "n");
      if (!times) co_return co_await bad_request(req);
      if (state_.by_path[std::string(path)] > *times)
        co_return co_await send(req, 410, R"({"error":"no more"})");
      co_return co_await send(req, 200, stats_document(seen));
    }
    if (path == "/auth-length") {
      // A number, so the daemon can store it: shows which credential arrived
      // without the test server echoing the secret itself.
      const std::string body =
          R"({"authorization_length":)" + to_string(req[http::field::authorization].size()) + "}";
      co_return co_await send(req, 200, body);
    }
    if (path == "/requests-on-this-connection")
      co_return co_await send(req, 200, R"({"requests":)" + to_string(served_) + "}");
    if (path == "/then-close") {
      // Allows keep-alive, then closes as if its idle timeout had passed.
      co_await send(req, 200, R"({"then":"close"})");
      boost::system::error_code ignored;
      beast::get_lowest_layer(stream_).close(ignored);
      co_return false;
    }
    if (path.starts_with("/gzip/") || path.starts_with("/deflate/") ||
        path.starts_with("/raw-deflate/")) {
      const auto slash = path.find('/', 1);
      const std::string_view coding = path.substr(1, slash - 1);
      auto content = read_file(path.substr(slash + 1));
      if (!content) co_return co_await send(req, 404, R"({"error":"no such file"})");
      std::string body;
      if (coding == "gzip") {
        body = gzip_encode(*content);
      } else if (coding == "deflate") {
        body = zlib_encode(*content);
      } else {
        body = raw_deflate_encode(*content);
      }
      response res = make_response(req, 200, std::move(body));
      res.set(http::field::content_encoding, "deflate");
      if (coding == "gzip") res.set(http::field::content_encoding, "gzip");
      co_return co_await send(std::move(res));
    }
    if (path == "/unknown-encoding") {
      response res = make_response(req, 200, R"({"a":1})");
      res.set(http::field::content_encoding, "br");
      co_return co_await send(std::move(res));
    }
    if (path == "/generated") {
      const auto leaves = query_number(target, "leaves");
      if (!leaves || *leaves > 10'000'000) co_return co_await bad_request(req);
      co_return co_await send(req, 200, generated_document(*leaves, seen));
    }
    if (path.starts_with("/files/")) co_return co_await send_file(req, path.substr(7));
    if (path.starts_with("/status/")) {
      const auto code = parse_number(path.substr(8));
      if (!code || *code < 200 || *code > 599) co_return co_await bad_request(req);
      // Not a conditional expression inside co_await: GCC 12 destroys its
      // temporaries twice.
      std::string body;
      if (*code != 204 && *code != 304) body = R"({"status":)" + to_string(*code) + "}";
      co_return co_await send(req, static_cast<unsigned>(*code), std::move(body));
    }
    if (path.starts_with("/redirect/")) {
      const auto hops = parse_number(path.substr(10));
      if (!hops) co_return co_await bad_request(req);
      std::string location = "/stats";
      if (*hops > 0) location = "/redirect/" + to_string(*hops - 1);
      co_return co_await redirect(req, std::move(location));
    }
    if (path == "/redirect-loop") co_return co_await redirect(req, "/redirect-loop");
    if (path == "/redirect-to") {  // ?location=URL, taken as is
      const auto location = query_value(target, "location");
      if (!location) co_return co_await bad_request(req);
      co_return co_await redirect(req, std::string(*location));
    }
    if (path.starts_with("/redirect-with/")) {  // that status, to /stats
      const auto code = parse_number(path.substr(15));
      if (!code || *code < 300 || *code > 399) co_return co_await bad_request(req);
      co_return co_await redirect(req, "/stats", static_cast<unsigned>(*code));
    }
    if (path == "/garbage") co_return co_await send(req, 200, "<html>this is not JSON</html>");
    if (path == "/gzip-bomb") {
      response res = make_response(req, 200, state_.gzip_bomb);
      res.set(http::field::content_encoding, "gzip");
      co_return co_await send(std::move(res));
    }
    if (path == "/hang") {
      // Keep reading so the connection ends when the client gives up.
      struct open_hang {
        server_state& s;
        explicit open_hang(server_state& st) : s(st) {
          s.most_hanging = std::max(s.most_hanging, ++s.hanging);
        }
        ~open_hang() { --s.hanging; }
      } counted(state_);
      std::array<char, 4096> sink;
      for (;;) co_await stream_.async_read_some(asio::buffer(sink), use_awaitable);
    }
    if (path == "/_most-hanging")
      co_return co_await send(req, 200,
                              R"({"most_hanging":)" + to_string(state_.most_hanging) + "}");
    if (path == "/drip") {
      constexpr std::string_view body = R"({"drip":true})";
      co_await send_header(req, body.size());
      asio::steady_timer timer(stream_.get_executor());
      for (std::size_t i = 0; i < body.size(); ++i) {
        if (i > 0) {
          timer.expires_after(std::chrono::seconds(1));
          co_await timer.async_wait(use_awaitable);
        }
        co_await asio::async_write(stream_, asio::buffer(body.substr(i, 1)), use_awaitable);
      }
      co_return true;
    }
    if (path == "/close-mid-body") {
      co_await send_header(req, 1000);
      co_await asio::async_write(stream_, asio::buffer(std::string_view(R"({"a":12345)")),
                                 use_awaitable);
      boost::system::error_code ignored;  // abruptly: no TLS close_notify either
      beast::get_lowest_layer(stream_).close(ignored);
      co_return false;
    }
    if (path == "/endless") {
      co_await send_header(req, std::nullopt);
      co_await write_chunk(R"({"a":1)");
      const std::string digits(65536, '7');
      for (;;) co_await write_chunk(digits);
    }
    if (path == "/big") {
      const auto bytes = query_number(target, "bytes");
      if (!bytes) co_return co_await bad_request(req);
      co_await send_header(req, std::nullopt);
      if (*bytes < 10) {  // too short for the padded object: a number instead
        if (*bytes > 0) co_await write_chunk("1" + std::string(*bytes - 1, '0'));
      } else {
        co_await write_chunk(R"({"pad":")");
        co_await write_repeated("x", *bytes - 10);
        co_await write_chunk(R"("})");
      }
      co_return co_await finish_chunks();
    }
    if (path == "/deep") {
      const auto depth = query_number(target, "depth");
      if (!depth) co_return co_await bad_request(req);
      co_await send_header(req, std::nullopt);
      co_await write_repeated(R"({"a":)", *depth);
      co_await write_chunk("0");
      co_await write_repeated("}", *depth);
      co_return co_await finish_chunks();
    }
    if (path == "/big-key") {  // {"kkk...k":1} with a key of `bytes` bytes
      const auto bytes = query_number(target, "bytes");
      if (!bytes) co_return co_await bad_request(req);
      co_await send_header(req, std::nullopt);
      co_await write_chunk("{\"");
      co_await write_repeated("k", *bytes);
      co_await write_chunk("\":1}");
      co_return co_await finish_chunks();
    }
    if (path == "/invalid-utf8") {
      const std::string body = "{\"valid\":1,\"bad\":\"\xff\xfe\"}";  // never in UTF-8
      co_return co_await send(req, 200, body);
    }
    if (path == "/truncated") {
      // A complete HTTP response whose document stops halfway.
      std::string document = stats_document(seen);
      document.resize(document.size() / 2);
      co_return co_await send(req, 200, std::move(document));
    }
    co_return co_await send(req, 404, R"({"error":"no such route"})");
  }

  // A file directly under the root (no subdirectories, no way out of it).
  std::optional<std::string> read_file(std::string_view name) const {
    if (name.empty() || name.find('/') != name.npos || name.find("..") != name.npos) {
      return std::nullopt;
    }
    const std::filesystem::path file = state_.root / name;
    std::error_code error;
    std::ifstream in;
    if (std::filesystem::is_regular_file(file, error)) in.open(file, std::ios::binary);
    if (!in.is_open()) return std::nullopt;
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  awaitable<bool> send_file(const request& req, std::string_view name) {
    auto content = read_file(name);
    if (!content) co_return co_await send(req, 404, R"({"error":"no such file"})");
    co_return co_await send(req, 200, std::move(*content));
  }

  static response make_response(const request& req, unsigned status, std::string body) {
    response res;
    res.version(req.version());
    res.result(status);
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    return res;
  }

  awaitable<bool> send(response res) {
    res.prepare_payload();
    if (res.result() == http::status::no_content) res.erase(http::field::content_length);
    co_await http::async_write(stream_, res, use_awaitable);
    co_return true;
  }
  awaitable<bool> send(const request& req, unsigned status, std::string body) {
    return send(make_response(req, status, std::move(body)));
  }
  awaitable<bool> bad_request(const request& req) {
    return send(req, 400, R"({"error":"bad request"})");
  }
  awaitable<bool> redirect(const request& req, std::string location, unsigned status = 302) {
    response res = make_response(req, status, "");
    res.set(http::field::location, location);
    return send(std::move(res));
  }

  // The header of a 200 whose body follows as raw writes (with a length) or
  // as chunks (without), so that big bodies are never held in memory.
  awaitable<void> send_header(const request& req, std::optional<std::uint64_t> content_length) {
    http::response<http::empty_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    if (content_length) {
      res.content_length(*content_length);
    } else {
      res.chunked(true);
    }
    http::response_serializer<http::empty_body> serializer{res};
    co_await http::async_write_header(stream_, serializer, use_awaitable);
  }
  awaitable<void> write_chunk(std::string_view data) {
    co_await asio::async_write(stream_, http::make_chunk(asio::buffer(data)), use_awaitable);
  }
  awaitable<void> write_repeated(std::string_view pattern, std::uint64_t count) {
    const std::uint64_t per_chunk = std::max<std::uint64_t>(1, 65536 / pattern.size());
    std::string chunk;
    for (std::uint64_t i = 0; i < std::min(count, per_chunk); ++i) chunk += pattern;
    for (; count > 0; count -= std::min(count, per_chunk)) {
      co_await write_chunk(
          std::string_view(chunk).substr(0, std::min(count, per_chunk) * pattern.size()));
    }
  }
  awaitable<bool> finish_chunks() {
    co_await asio::async_write(stream_, http::make_chunk_last(), use_awaitable);
    co_return true;
  }

  awaitable<void> shut_down() {
    boost::system::error_code ignored;
    if constexpr (is_tls) {
      co_await stream_.async_shutdown(asio::redirect_error(use_awaitable, ignored));
    } else {
      stream_.shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  Stream& stream_;
  server_state& state_;
  std::uint64_t served_ = 0;  // requests on this connection
};

awaitable<void> serve(tcp::socket socket, ssl::context* tls, server_state& state) {
  if (tls == nullptr) co_return co_await session<tcp::socket>(socket, state).run();
  ssl::stream<tcp::socket> stream(std::move(socket), *tls);
  co_await stream.async_handshake(ssl::stream_base::server, use_awaitable);
  co_await session<ssl::stream<tcp::socket>>(stream, state).run();
}

awaitable<void> accept_connections(tcp::acceptor& acceptor, ssl::context* tls,
                                   server_state& state) {
  for (;;) {
    boost::system::error_code error;
    tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(use_awaitable, error));
    if (error == asio::error::operation_aborted) co_return;
    if (error) {  // e.g. out of descriptors: keep serving the others, try again soon
      asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(10));
      co_await pause.async_wait(use_awaitable);
      continue;
    }
    socket.set_option(tcp::no_delay(true), error);
    // A connection's failure (reset, EOF, bad TLS) is the client's business.
    asio::co_spawn(acceptor.get_executor(), serve(std::move(socket), tls, state),
                   [](const std::exception_ptr&) {});
  }
}

awaitable<void> wait_for_end_of_input(asio::posix::stream_descriptor& input) {
  std::array<char, 512> sink;
  boost::system::error_code error;
  while (!error) {
    co_await input.async_read_some(asio::buffer(sink), asio::redirect_error(use_awaitable, error));
  }
}

struct options {
  asio::ip::address listen = asio::ip::make_address_v4("127.0.0.1");
  unsigned short port = 0;
  std::string cert, key;
  std::string client_ca;  // non-empty: clients must present a certificate it signed
  std::filesystem::path root = ".";
};

options parse_options(int argc, char** argv) {
  options opts;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto value = [&] {
      if (i + 1 >= argc) throw std::invalid_argument(std::string(arg) + " needs a value");
      return std::string(argv[++i]);
    };
    if (arg == "--listen") {
      boost::system::error_code error;
      opts.listen = asio::ip::make_address(value(), error);
      if (error) throw std::invalid_argument("--listen needs an IP address");
    } else if (arg == "--port") {
      const auto port = parse_number(value());
      if (!port || *port > 65535) throw std::invalid_argument("bad --port");
      opts.port = static_cast<unsigned short>(*port);
    } else if (arg == "--tls") {
      opts.cert = value();
      opts.key = value();
    } else if (arg == "--client-ca") {
      opts.client_ca = value();
    } else if (arg == "--root") {
      opts.root = value();
    } else {
      throw std::invalid_argument("unknown argument " + std::string(arg));
    }
  }
  return opts;
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  try {
    opts = parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "gatherstats-test-server: " << e.what() << "\nusage: gatherstats-test-server"
              << " [--listen ADDR] [--port N] [--tls CERT_PEM KEY_PEM] [--client-ca CA_PEM]"
                 " [--root DIR]\n";
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  // One connection per endpoint of a daemon under test, more than a
  // thousand in the descriptor tests: as many as the hard limit allows.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  // Asio makes stdin non-blocking, which would leak into a shared terminal.
  const int stdin_flags = ::fcntl(STDIN_FILENO, F_GETFL);
  try {
    server_state state;
    state.root = opts.root;
    state.gzip_bomb = make_gzip_bomb();
    std::optional<ssl::context> tls;
    if (!opts.cert.empty()) {
      tls.emplace(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      tls->use_certificate_chain_file(opts.cert);
      tls->use_private_key_file(opts.key, ssl::context::pem);
      if (!opts.client_ca.empty()) {
        tls->load_verify_file(opts.client_ca);
        tls->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      }
    } else if (!opts.client_ca.empty()) {
      throw std::invalid_argument("--client-ca needs --tls");
    }

    asio::io_context ctx;
    const tcp::endpoint endpoint(opts.listen, opts.port);
    tcp::acceptor acceptor(ctx, endpoint.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen();

    asio::signal_set signals(ctx, SIGINT, SIGTERM);
    signals.async_wait([&](auto, int) { ctx.stop(); });
    asio::posix::stream_descriptor input(ctx, ::dup(STDIN_FILENO));
    asio::co_spawn(ctx, wait_for_end_of_input(input),
                   [&](const std::exception_ptr&) { ctx.stop(); });
    asio::co_spawn(ctx, accept_connections(acceptor, tls ? &*tls : nullptr, state),
                   [](const std::exception_ptr& e) {
                     if (e) std::rethrow_exception(e);
                   });

    std::cout << "listening on " << acceptor.local_endpoint().port() << std::endl;
    ctx.run();
  } catch (const std::exception& e) {
    std::cerr << "gatherstats-test-server: " << e.what() << '\n';
    if (stdin_flags != -1) ::fcntl(STDIN_FILENO, F_SETFL, stdin_flags);
    return 1;
  }
  if (stdin_flags != -1) ::fcntl(STDIN_FILENO, F_SETFL, stdin_flags);
  return 0;
}
