#include "gatherstats/config/secret_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

namespace gatherstats::config {

namespace {

// Larger than any token or password: guards against a wrong path (a log, a
// device) being read whole into memory.
constexpr off_t max_secret_bytes = 64 * 1024;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Closes the descriptor on every path out of read().
struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

outcome<std::string> secret_file::read() {
  // Messages name the path and the reason, never anything read from the file.
  auto failed = [&](std::string_view why, bool transient) {
    std::string message = "secret file \"" + path_ + "\": " + std::string(why);
    return transient ? failure::transient(std::move(message))
                     : failure::permanent(std::move(message));
  };

  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    // A missing file may be one being replaced right now (a rotation).
    return failed(std::strerror(errno), true);
  }
  if (loaded_ && st.st_ino == inode_ && st.st_size == size_ && st.st_mtim.tv_sec == mtime_.tv_sec &&
      st.st_mtim.tv_nsec == mtime_.tv_nsec)
    return cached_;

  fd_guard file{::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY)};
  if (file.fd < 0) {
    int err = errno;
    return failed(std::strerror(err), err == ENOENT);
  }
  // The identity kept is that of the file actually read, in case it was
  // replaced between stat() and open().
  if (::fstat(file.fd, &st) != 0) return failed(std::strerror(errno), true);
  if (!S_ISREG(st.st_mode)) return failed("not a regular file", false);
  if (st.st_size > max_secret_bytes) return failed("larger than 64 KiB", false);

  std::string content;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(file.fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failed(std::strerror(errno), true);
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
    if (content.size() > static_cast<std::size_t>(max_secret_bytes))
      return failed("larger than 64 KiB", false);
  }
  ::explicit_bzero(buffer, sizeof buffer);

  std::size_t begin = 0, end = content.size();
  while (begin < end && is_space(content[begin])) ++begin;
  while (end > begin && is_space(content[end - 1])) --end;
  std::string value = content.substr(begin, end - begin);
  std::fill(content.begin(), content.end(), '\0');

  if (value.empty()) return failed("empty", false);
  // A line break inside would end the header it is put in.
  if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
    return failed("holds more than one line", false);

  cached_ = std::move(value);
  loaded_ = true;
  inode_ = st.st_ino;
  size_ = st.st_size;
  mtime_ = st.st_mtim;
  return cached_;
}

}  // namespace gatherstats::config
