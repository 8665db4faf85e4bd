// Real child processes for integration tests: run a command to completion,
// or keep one running (a test server) for the length of a test.
#pragma once

#include <sys/types.h>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace test {

struct run_result {
  int exit_code = -1;  // -1: killed by a signal or by the timeout
  std::string out;
  std::string err;
};

// Runs `argv` with `extra_env` ("NAME=value") added to the environment,
// capturing stdout and stderr; kills it if it runs past `timeout`.
run_result run(const std::vector<std::string>& argv,
               std::chrono::milliseconds timeout = std::chrono::seconds(60),
               const std::vector<std::string>& extra_env = {});

// A child that lives as long as this object. Its stdin is a pipe held open:
// the project's test servers exit when it closes, so they never outlive a
// test even if it crashes.
class child {
 public:
  // `stderr_file`: where its stderr goes (empty: this process's stderr).
  explicit child(const std::vector<std::string>& argv, const std::string& stderr_file = "");
  ~child();
  child(const child&) = delete;
  child& operator=(const child&) = delete;

  // The next line of its stdout, or nullopt at EOF or past the timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  pid_t pid() const { return pid_; }
  // Sends `signal`, then waits up to `timeout` for the exit; returns the exit
  // code, or nullopt if it did not exit (it is then killed by the destructor).
  std::optional<int> signal_and_wait(int signal, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string buffered_;
};

}  // namespace test
