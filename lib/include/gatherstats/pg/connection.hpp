// One asynchronous PostgreSQL connection, driven by the Asio event loop.
//
// libpq runs in non-blocking mode: the connect is PQconnectStartParams +
// PQconnectPoll, queries are PQsendQuery[Params] + PQflush + PQconsumeInput +
// PQgetResult, and every wait for the socket is an Asio wait on the
// coroutine's executor, so no libpq call blocks the loop. Host names in the
// conninfo are resolved with Asio's resolver first (libpq would resolve them
// synchronously) and handed to libpq as `hostaddr`.
//
// Errors: every operation returns `outcome`; a failure says whether it is
// transient (connection lost or refused, timeout, server shutting down) or
// permanent (bad conninfo, authentication, SQL error). After a transient
// failure the connection is usually unusable: check `is_idle()` before reuse.
// A deadline that passes abandons the operation and closes the connection
// (libpq 15 has no non-blocking cancel).
//
// Threading: a connection belongs to the executor it was made on; one
// operation at a time.
#pragma once

#include "gatherstats/error.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <string_view>

struct pg_result;

namespace gatherstats::pg {

using deadline = std::chrono::steady_clock::time_point;

// The last result of a query, in text format.
class result {
 public:
  struct deleter {
    void operator()(pg_result* r) const noexcept;
  };
  explicit result(std::unique_ptr<pg_result, deleter> r) : res_(std::move(r)) {}

  int rows() const;
  int columns() const;
  bool is_null(int row, int column) const;
  std::string_view get(int row, int column) const;
  // Rows inserted/updated/deleted by the command (PQcmdTuples).
  std::size_t affected_rows() const;

 private:
  std::unique_ptr<pg_result, deleter> res_;
};

class connection {
 public:
  // Connects within `until`. `conninfo` is any libpq connection string or
  // URI; empty means libpq's environment (PGHOST, PGDATABASE, ...) alone.
  static boost::asio::awaitable<outcome<connection>> async_connect(std::string conninfo,
                                                                   deadline until);

  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  ~connection();

  // Runs one or more statements (simple query protocol, no parameters);
  // returns the last statement's result; fails on the first error.
  boost::asio::awaitable<outcome<result>> async_exec(std::string_view sql, deadline until);

  // Runs one statement with text parameters ($1, $2, ...).
  boost::asio::awaitable<outcome<result>> async_query(std::string_view sql,
                                                      std::span<const std::string> params,
                                                      deadline until);

  // Connected and outside any transaction: safe to hand to the next user.
  bool is_idle() const;

  // Closes the connection now (also what a passed deadline does).
  void close();

 private:
  struct impl;
  explicit connection(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace gatherstats::pg
