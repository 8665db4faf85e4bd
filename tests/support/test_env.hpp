// What integration tests stand on: the private PostgreSQL cluster (started by
// the ctest fixture tests/support/pg-cluster), a scratch database per test,
// the project's test HTTP(S) server as a real process, and the test CA.
#pragma once

#include "support/process.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace test {

std::string daemon_bin();
std::string source_dir();
std::string cert_dir();            // ca.pem, server.pem/key, expired.*, wronghost.*, selfsigned.*
std::string admin_conninfo();      // the cluster over its Unix socket
std::string tcp_admin_conninfo();  // the same over TCP to "localhost"

// A database of its own for one test, dropped when the test ends.
class scratch_database {
 public:
  scratch_database();
  // In another cluster than the fixture's (a private_cluster).
  explicit scratch_database(std::string admin_conninfo);
  ~scratch_database();
  scratch_database(const scratch_database&) = delete;
  scratch_database& operator=(const scratch_database&) = delete;

  const std::string& name() const { return name_; }
  const std::string& conninfo() const { return conninfo_; }
  // Blocking libpq (fine in a test): fails the test on any error.
  void exec(const std::string& sql) const;
  std::vector<std::vector<std::string>> query(const std::string& sql) const;
  long long count(const std::string& table = "gatherstats_statistic") const;
  // The table the original tool's Django migration created.
  void create_original_table() const;
  // `gatherstatsd migrate` against this database; fails the test if it fails.
  void migrate() const;

 private:
  std::string admin_;
  std::string name_;
  std::string conninfo_;
};

// The project's test server (tests/servers/stats_server.cpp) on loopback.
// `cert` names a certificate of cert_dir() ("server", "expired", ...) to
// serve HTTPS with; empty serves plain HTTP. Files under `root` are served
// at /files/NAME.
class test_server {
 public:
  explicit test_server(std::string cert = "", std::string root = "",
                       std::string listen = "127.0.0.1");
  std::uint16_t port() const { return port_; }
  // http(s)://HOST:PORT + path; HOST defaults to localhost.
  std::string url(const std::string& path, const std::string& host = "localhost") const;

 private:
  bool tls_;
  std::unique_ptr<child> process_;
  std::uint16_t port_ = 0;
};

// A directory that is removed with everything in it when the test ends.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path write(const std::string& name, const std::string& content) const;

 private:
  std::filesystem::path path_;
};

// A PostgreSQL cluster of the test's own (tests/support/pg-cluster), for
// tests that stop and restart the server: the fixture's cluster is shared by
// tests running in parallel. Removed when the test ends.
class private_cluster {
 public:
  private_cluster();
  ~private_cluster();
  private_cluster(const private_cluster&) = delete;
  private_cluster& operator=(const private_cluster&) = delete;

  const std::string& admin_conninfo() const { return conninfo_; }
  void down();  // fast shutdown; the data stays
  void up();    // started again, same port and socket

 private:
  static std::string script();
  temp_dir state_;
  std::string conninfo_;
};

// Runs a coroutine to completion on a fresh io_context and returns its value.
template <class T>
T run_async(boost::asio::awaitable<T> work) {
  boost::asio::io_context io;
  std::optional<T> result;
  std::exception_ptr error;
  boost::asio::co_spawn(io, std::move(work), [&](std::exception_ptr e, T value) {
    error = e;
    if (!e) result.emplace(std::move(value));
  });
  io.run();
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

}  // namespace test
