// One asynchronous PostgreSQL connection, driven by the Asio event loop.
//
// libpq runs in non-blocking mode: the connect is PQconnectStartParams +
// PQconnectPoll, queries are PQsendQuery[Params] + PQflush + PQconsumeInput +
// PQgetResult, and every wait for the socket is an Asio wait on the
// coroutine's executor, so no libpq call blocks the loop. Host names in the
// conninfo are resolved first, each getaddrinfo() on a detached thread of its
// own that the connect stops waiting for at its deadline (libpq would
// resolve them synchronously), and handed to libpq as `hostaddr`. The hosts of a
// multi-host conninfo are tried one at a time, in order, each alone and
// with a deadline of its own (connect_plan.hpp): a host that does not
// resolve, answer or match target_session_attrs is passed over.
//
// Besides plain queries it can run a statement with binary parameters, a
// COPY ... FROM STDIN, and a pipeline of statements that are each their own
// transaction (libpq pipeline mode).
//
// Errors: every operation returns `outcome`; a failure says whether it is
// transient (connection lost or refused, timeout, server shutting down) or
// permanent (bad conninfo, authentication, SQL error). After a transient
// failure the connection is usually unusable: check `is_idle()` before reuse.
// A server that refuses a write as read-only (SQLSTATE 25006) or is shutting
// down (57P01 to 57P03) fails the statement transiently and leaves the
// connection not idle, so that the next connection finds the writable host.
// A deadline that passes abandons the operation and closes the connection
// (libpq 15 has no non-blocking cancel).
//
// The client encoding is UTF-8 unless the conninfo names another, so text
// (keys, endpoints) is sent and stored as the UTF-8 it is.
//
// Threading: a connection belongs to the executor it was made on; one
// operation at a time.
#pragma once

#include "gatherstats/error.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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

// One parameter of a statement: its bytes as they go on the wire, in text or
// in PostgreSQL's binary format for `type` (an OID; 0 lets the server infer
// it, which only text parameters should do).
struct parameter {
  std::string_view bytes;
  std::uint32_t type = 0;
  bool binary = false;
};

// A statement with parameters ($1, $2, ...), for async_query and
// async_pipeline. Views: what they point at must outlive the call.
struct statement {
  std::string_view sql;
  std::span<const parameter> params;
};

class connection {
 public:
  // Connects within `until`. `conninfo` is any libpq connection string or
  // URI; empty means libpq's environment (PGHOST, PGDATABASE, ...) alone.
  // When no host can be had, the failure (transient) names each host tried
  // and why, never a password.
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

  // Runs one statement with text or binary parameters.
  boost::asio::awaitable<outcome<result>> async_query(const statement& s, deadline until);

  // Runs `copy_sql` (a COPY ... FROM STDIN) and sends `data` as its input,
  // in whatever format the statement names. Returns the COPY's result
  // (affected_rows() is the number of rows copied).
  boost::asio::awaitable<outcome<result>> async_copy_in(std::string_view copy_sql,
                                                        std::string_view data, deadline until);

  // Sends every statement at once (libpq pipeline mode) and returns one
  // outcome per statement, in order. Where the transactions end:
  // - `each_alone`: a sync point after each statement, so each statement is
  //   its own transaction: it commits at its sync, and a failure rolls back
  //   that statement alone while the others run on;
  // - `together`: one sync point at the end, so all the statements are one
  //   transaction: all commit, or (on the first failure) none does, and
  //   every statement then fails: the one that failed with its error, the
  //   others transiently ("rolled back").
  // An outcome is:
  // - a result: the statement succeeded and its transaction committed;
  // - a permanent failure: the database refused it (nothing of it stored);
  // - a transient failure: a transient SQL error (statement timeout,
  //   serialization failure), a rollback with a statement that failed, or
  //   the connection was lost or the deadline passed before the commit of
  //   its transaction was confirmed. In the last case it is unknown whether
  //   it committed, and the connection is closed.
  // Transactions confirmed before a loss keep their results.
  enum class pipeline_sync { each_alone, together };
  boost::asio::awaitable<std::vector<outcome<result>>> async_pipeline(
      std::span<const statement> statements, pipeline_sync sync, deadline until);

  // After LISTEN (async_exec): waits until a notification arrives or
  // `until` passes, and returns what arrived (nothing at `until`: the
  // connection stays open). Fails when the connection is lost.
  struct notification {
    std::string channel;
    std::string payload;
  };
  boost::asio::awaitable<outcome<std::vector<notification>>> async_wait_notifications(
      deadline until);

  // The SQLSTATE of the last statement the server refused (e.g. "23505");
  // empty after a success or a failure that was not the server's answer.
  const std::string& last_sqlstate() const;

  // Connected, outside any transaction, and not refused as read-only or
  // shutting down: safe to hand to the next user.
  bool is_idle() const;

  // Closes the connection now (also what a passed deadline does).
  void close();

 private:
  struct impl;
  explicit connection(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace gatherstats::pg
