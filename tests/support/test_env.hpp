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

#include <sys/types.h>

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
  // The table the original tool's Django migration created, exactly: with
  // its unique constraint and its two redundant indexes.
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
  // The same over TCP to "localhost" (keepalives apply only to TCP).
  const std::string& tcp_admin_conninfo() const { return tcp_conninfo_; }
  // Where pg-cluster keeps its state (for tests/support/pgbouncer-pool).
  const std::filesystem::path& state_dir() const { return state_.path(); }
  // The postmaster's process id (from its postmaster.pid).
  pid_t postmaster_pid() const;
  void down();  // fast shutdown; the data stays
  void up();    // started again, same port and socket

 private:
  static std::string script();
  temp_dir state_;
  std::string conninfo_;
  std::string tcp_conninfo_;
};

// The PgBouncer fixture (tests/support/pgbouncer-pool: transaction pooling)
// in front of the fixture's cluster: its conninfo (database postgres), and
// that of `db` through it.
std::string pgbouncer_conninfo();
std::string through_pgbouncer(const scratch_database& db);

// A PgBouncer of the test's own (transaction pooling) in front of a
// private_cluster, for tests that restart or freeze the server behind it.
// Stopped when the test ends.
class private_pgbouncer {
 public:
  explicit private_pgbouncer(const private_cluster& pg);
  ~private_pgbouncer();
  private_pgbouncer(const private_pgbouncer&) = delete;
  private_pgbouncer& operator=(const private_pgbouncer&) = delete;
  // `db` (a database of that cluster) through this PgBouncer.
  std::string conninfo_for(const scratch_database& db) const;

 private:
  temp_dir state_;
  std::string conninfo_;
};

// The server processes of a cluster stopped with SIGSTOP (the postmaster,
// then each of its children): a database that stops answering without an
// error, as a frozen machine or a network that drops packets silently looks
// to a client. SIGCONT to every one of them when this ends, however the test
// ends.
class frozen_server {
 public:
  explicit frozen_server(pid_t postmaster);
  ~frozen_server();
  frozen_server(const frozen_server&) = delete;
  frozen_server& operator=(const frozen_server&) = delete;
  void thaw();  // SIGCONT now (once)
  std::size_t processes() const { return stopped_.size(); }

 private:
  std::vector<pid_t> stopped_;
};

// The primary and streaming standby of the failover tests
// (tests/support/pg-pair, a ctest fixture), made a synchronous pair again
// if an earlier test failed it over. Tests using it must not run at the
// same time (ctest's RESOURCE_LOCK).
class pg_pair {
 public:
  pg_pair();
  std::string primary_conninfo() const;  // over TCP, database postgres
  std::string standby_conninfo() const;
  std::string primary_port() const;
  std::string standby_port() const;
  // Both hosts, target_session_attrs=read-write: whichever is the primary.
  std::string admin_conninfo() const;
  void kill_primary();  // an immediate stop, as a crash

 private:
  std::string read(const std::string& file) const;
  std::string state_;
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
