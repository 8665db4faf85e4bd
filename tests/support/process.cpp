#include "support/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace test {
namespace {

using clock = std::chrono::steady_clock;

struct exec_args {
  std::vector<std::string> storage;
  std::vector<char*> argv, envp;
};

// Built before fork(): the child may only call async-signal-safe functions.
exec_args prepare(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  exec_args a;
  for (char** e = environ; *e; ++e) a.storage.emplace_back(*e);
  a.storage.insert(a.storage.end(), env.begin(), env.end());
  std::size_t env_count = a.storage.size();
  a.storage.insert(a.storage.end(), argv.begin(), argv.end());
  for (std::size_t i = 0; i < env_count; ++i) a.envp.push_back(a.storage[i].data());
  for (std::size_t i = env_count; i < a.storage.size(); ++i) a.argv.push_back(a.storage[i].data());
  a.envp.push_back(nullptr);
  a.argv.push_back(nullptr);
  return a;
}

void make_pipe(int fds[2]) {
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
}

int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int remaining_ms(clock::time_point until) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

run_result run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
               const std::vector<std::string>& extra_env) {
  auto args = prepare(argv, extra_env);
  int out[2], err[2];
  make_pipe(out);
  make_pipe(err);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::execve(args.argv[0], args.argv.data(), args.envp.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  run_result r;
  auto until = clock::now() + timeout;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    int n = ::poll(fds, 2, killed ? 1000 : remaining_ms(until));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      if (killed) break;
      ::kill(pid, SIGKILL);
      killed = true;
      continue;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  r.exit_code = wait_exit(pid);
  if (killed) r.exit_code = -1;
  return r;
}

child::child(const std::vector<std::string>& argv, const std::string& stderr_file) {
  auto args = prepare(argv, {});
  int err_fd = -1;
  if (!stderr_file.empty()) {
    err_fd = ::open(stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (err_fd < 0) throw std::runtime_error("cannot open " + stderr_file);
  }
  int in[2], out[2];
  make_pipe(in);
  make_pipe(out);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    if (err_fd >= 0) ::dup2(err_fd, 2);
    ::execve(args.argv[0], args.argv.data(), args.envp.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  if (err_fd >= 0) ::close(err_fd);
  stdin_fd_ = in[1];
  stdout_fd_ = out[0];
}

child::~child() {
  ::close(stdin_fd_);
  ::close(stdout_fd_);
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    wait_exit(pid_);
  }
}

std::optional<int> child::signal_and_wait(int signal, std::chrono::milliseconds timeout) {
  ::kill(pid_, signal);
  auto until = clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (clock::now() >= until) return std::nullopt;
    // A child's exit has no descriptor to wait on here; poll its status.
    ::poll(nullptr, 0, 20);
  }
}

std::optional<std::string> child::read_line(std::chrono::milliseconds timeout) {
  auto until = clock::now() + timeout;
  for (;;) {
    if (auto nl = buffered_.find('\n'); nl != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      return line;
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    int n = ::poll(&p, 1, remaining_ms(until));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    char buf[1024];
    ssize_t got = ::read(stdout_fd_, buf, sizeof buf);
    if (got <= 0) return std::nullopt;
    buffered_.append(buf, static_cast<std::size_t>(got));
  }
}

}  // namespace test
