// A secret kept in a file (a bearer token, a password; systemd credentials
// are files too), re-read when the file changes so a rotated secret needs no
// reload. The value is never logged, and messages name only the path.
//
// read() stats the file (and reads it when its inode, size or mtime changed):
// blocking, so the daemon calls it off the event loop. Not thread-safe.
#pragma once

#include "gatherstats/error.hpp"

#include <sys/types.h>
#include <ctime>
#include <string>

namespace gatherstats::config {

class secret_file {
 public:
  explicit secret_file(std::string path) : path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  // The contents without a trailing newline (and surrounding whitespace).
  outcome<std::string> read();

 private:
  std::string path_;
  std::string cached_;
  bool loaded_ = false;
  ino_t inode_ = 0;
  off_t size_ = 0;
  timespec mtime_{};
};

}  // namespace gatherstats::config
