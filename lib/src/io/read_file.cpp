#include "gatherstats/io/read_file.hpp"

#include "gatherstats/io/blocking.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

namespace asio = boost::asio;

namespace gatherstats::io {
namespace {

outcome<std::string> read_blocking(const std::string& path, std::size_t max_bytes) {
  auto error = [&](std::string_view what) {
    return failure::permanent("cannot read \"" + path + "\": " + std::string(what));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return error(std::strerror(errno));
  std::string data;
  char buffer[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      return error(std::strerror(saved));
    }
    if (n == 0) break;
    if (data.size() + static_cast<std::size_t>(n) > max_bytes) {
      ::close(fd);
      return error("larger than the limit of " + std::to_string(max_bytes) + " bytes");
    }
    data.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return data;
}

}  // namespace

asio::awaitable<outcome<std::string>> async_read_file(asio::any_io_executor blocking,
                                                      std::string path, std::size_t max_bytes) {
  auto read = [path = std::move(path), max_bytes] { return read_blocking(path, max_bytes); };
  co_return co_await async_run_blocking<outcome<std::string>>(blocking, read);
}

}  // namespace gatherstats::io
