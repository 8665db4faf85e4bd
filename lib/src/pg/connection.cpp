// Non-blocking libpq driven by Asio: libpq decides what to send and when it
// needs the socket; Asio only waits for readiness. libpq owns the socket:
// Asio's descriptor is always release()d, never closed.
#include "gatherstats/pg/connection.hpp"

#include "gatherstats/pg/connect_plan.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <libpq-fe.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace boost::asio::experimental::awaitable_operators;

namespace gatherstats::pg {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using wait_type = asio::posix::descriptor_base::wait_type;

struct conn_deleter {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};

// libpq messages end in newlines and may span lines; logs want one line.
std::string one_line(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\n' || c == '\r' || c == '\t') {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// SQLSTATE classes after which the same work can succeed later, usually on a
// new connection: connection exceptions, insufficient resources, operator
// intervention (shutdown, statement timeout), system errors, and
// serialization failures or deadlocks.
bool transient_sqlstate(std::string_view state) {
  return state.starts_with("08") || state.starts_with("53") || state.starts_with("57") ||
         state.starts_with("58") || state == "40001" || state == "40P01" || state == "25006";
}

// SQLSTATEs that say this server will not take our writes any more, though
// another may: read_only_sql_transaction (a primary turned read-only, or a
// standby reached through a failover), admin_shutdown, crash_shutdown and
// cannot_connect_now. The connection is then not reused: the next one goes
// through the host list, where target_session_attrs finds the writable host.
bool server_gone_sqlstate(std::string_view state) {
  return state == "25006" || state == "57P01" || state == "57P02" || state == "57P03";
}

}  // namespace

void result::deleter::operator()(pg_result* r) const noexcept { PQclear(r); }
int result::rows() const { return PQntuples(res_.get()); }
int result::columns() const { return PQnfields(res_.get()); }
bool result::is_null(int row, int column) const { return PQgetisnull(res_.get(), row, column); }
std::string_view result::get(int row, int column) const {
  return {PQgetvalue(res_.get(), row, column),
          static_cast<std::size_t>(PQgetlength(res_.get(), row, column))};
}
std::size_t result::affected_rows() const {
  std::string_view s = PQcmdTuples(res_.get());
  std::size_t n = 0;
  std::from_chars(s.data(), s.data() + s.size(), n);
  return n;
}

struct connection::impl {
  std::unique_ptr<PGconn, conn_deleter> conn;
  asio::posix::stream_descriptor socket;
  std::string last_sqlstate;
  // The server refused work in a way that says it is the wrong server now
  // (server_gone_sqlstate): is_idle() is false from then on.
  bool not_reusable = false;

  explicit impl(asio::any_io_executor ex) : socket(std::move(ex)) {}
  ~impl() { detach_socket(); }

  void detach_socket() {
    if (socket.is_open()) {
      boost::system::error_code ignored;
      socket.cancel(ignored);
      socket.release();
    }
  }

  // During the connect libpq may close its socket and open another, possibly
  // with the same number, so the descriptor is registered afresh each step.
  outcome<void> attach_socket() {
    detach_socket();
    int fd = PQsocket(conn.get());
    if (fd < 0) return failure::transient("lost the connection to the database: no socket");
    boost::system::error_code ec;
    socket.assign(fd, ec);
    if (ec) return failure::transient("cannot watch the database socket: " + ec.message());
    return {};
  }

  void close() {
    detach_socket();
    conn.reset();
  }

  std::string libpq_error() const { return one_line(PQerrorMessage(conn.get())); }

  failure lost() {
    auto f = failure::transient("lost the connection to the database: " + libpq_error());
    close();
    return f;
  }

  failure timed_out() {
    close();
    return failure::transient("the database did not answer before the deadline");
  }

  asio::awaitable<bool> wait(wait_type what, deadline until) {
    asio::steady_timer timer(socket.get_executor(), until);
    auto r = co_await (socket.async_wait(what, use_nothrow) || timer.async_wait(use_nothrow));
    if (r.index() == 1) co_return false;
    auto [ec] = std::get<0>(r);
    // An error here is the socket's; libpq will report it on its next call.
    (void)ec;
    co_return true;
  }

  // Waits until libpq can write more or has something to read: while a
  // pipeline is flushed the server may be blocked sending results that
  // nobody reads, so waiting for writability alone could deadlock.
  asio::awaitable<bool> wait_either(deadline until) {
    asio::steady_timer timer(socket.get_executor(), until);
    auto r = co_await (socket.async_wait(wait_type::wait_read, use_nothrow) ||
                       socket.async_wait(wait_type::wait_write, use_nothrow) ||
                       timer.async_wait(use_nothrow));
    co_return r.index() != 2;
  }

  // Sends everything libpq has queued, reading what arrives meanwhile.
  asio::awaitable<outcome<void>> async_flush(deadline until) {
    for (;;) {
      int flushed = PQflush(conn.get());
      if (flushed == 0) co_return outcome<void>{};
      if (flushed < 0) co_return lost();
      bool ready = co_await wait_either(until);
      if (!ready) co_return timed_out();
      if (!PQconsumeInput(conn.get())) co_return lost();
    }
  }

  // Waits until PQgetResult() would not block.
  asio::awaitable<outcome<void>> async_until_not_busy(deadline until) {
    while (PQisBusy(conn.get())) {
      bool ready = co_await wait(wait_type::wait_read, until);
      if (!ready) co_return timed_out();
      if (!PQconsumeInput(conn.get())) co_return lost();
    }
    co_return outcome<void>{};
  }

  failure error_from(PGresult* r) {
    const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    last_sqlstate = state ? state : "";
    if (state && server_gone_sqlstate(state)) not_reusable = true;
    std::string message = "database error: ";
    message += one_line(primary ? primary : PQresultErrorMessage(r));
    if (state) {
      message += " (SQLSTATE ";
      message += state;
      message += ')';
    }
    bool transient = PQstatus(conn.get()) == CONNECTION_BAD || (state && transient_sqlstate(state));
    return {transient ? failure_kind::transient : failure_kind::permanent, std::move(message), 0};
  }

  // Sends what libpq has queued, then collects every result of the command.
  asio::awaitable<outcome<result>> async_collect(deadline until) {
    auto flushed = co_await async_flush(until);
    if (!flushed) co_return flushed.error();
    std::unique_ptr<pg_result, result::deleter> last;
    std::optional<failure> first_error;
    for (;;) {
      auto ready = co_await async_until_not_busy(until);
      if (!ready) co_return ready.error();
      PGresult* r = PQgetResult(conn.get());
      if (!r) break;
      switch (PQresultStatus(r)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
          last.reset(r);
          break;
        case PGRES_COPY_IN:
          // A COPY FROM STDIN where none was expected: end it so the
          // connection stays usable.
          PQclear(r);
          if (PQputCopyEnd(conn.get(), "unexpected COPY FROM STDIN") < 0) co_return lost();
          {
            auto sent = co_await async_flush(until);
            if (!sent) co_return sent.error();
          }
          break;
        default:
          if (!first_error) first_error = error_from(r);
          PQclear(r);
          break;
      }
    }
    if (PQstatus(conn.get()) == CONNECTION_BAD) co_return lost();
    if (first_error) co_return *first_error;
    if (!last) co_return failure::permanent("database error: the command returned no result");
    co_return result(std::move(last));
  }

  // Queues `s` with PQsendQueryParams (text results).
  bool send(const statement& s) {
    std::string text(s.sql);
    std::vector<Oid> types;
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
    for (const auto& p : s.params) {
      types.push_back(p.type);
      values.push_back(p.bytes.data());
      lengths.push_back(static_cast<int>(p.bytes.size()));
      formats.push_back(p.binary ? 1 : 0);
    }
    return PQsendQueryParams(conn.get(), text.c_str(), static_cast<int>(s.params.size()),
                             types.data(), values.data(), lengths.data(), formats.data(), 0) == 1;
  }

  // One connection attempt: `params` (one host), with `hostaddr` added when
  // not empty, within `until`. Fails with libpq's message, which names the
  // server and address, or with "timed out".
  static asio::awaitable<outcome<std::unique_ptr<impl>>> async_connect_one(
      const std::vector<std::pair<std::string, std::string>>& params, std::string_view hostaddr,
      deadline until) {
    auto ex = co_await asio::this_coro::executor;
    const std::string addr(hostaddr);
    std::vector<const char*> keys, values;
    for (const auto& [key, value] : params) {
      keys.push_back(key.c_str());
      values.push_back(value.c_str());
    }
    if (!addr.empty()) {
      keys.push_back("hostaddr");
      values.push_back(addr.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);

    auto p = std::make_unique<impl>(ex);
    p->conn.reset(PQconnectStartParams(keys.data(), values.data(), 0));
    if (!p->conn) co_return failure::transient("out of memory");
    if (PQstatus(p->conn.get()) == CONNECTION_BAD) co_return failure::transient(p->libpq_error());
    // Notices (e.g. "relation already exists, skipping") would go to stderr.
    PQsetNoticeProcessor(
        p->conn.get(), [](void*, const char*) {}, nullptr);

    auto poll = PGRES_POLLING_WRITING;
    while (poll != PGRES_POLLING_OK) {
      if (poll == PGRES_POLLING_FAILED) co_return failure::transient(p->libpq_error());
      if (auto attached = p->attach_socket(); !attached) co_return attached.error();
      auto what = poll == PGRES_POLLING_READING ? wait_type::wait_read : wait_type::wait_write;
      bool ready = co_await p->wait(what, until);
      if (!ready) {
        p->close();
        co_return failure::transient("timed out");
      }
      poll = PQconnectPoll(p->conn.get());
    }
    if (auto attached = p->attach_socket(); !attached) co_return attached.error();
    if (PQsetnonblocking(p->conn.get(), 1) != 0)
      co_return failure::transient("could not make the connection non-blocking: " +
                                   p->libpq_error());
    co_return std::move(p);
  }
};

namespace {

// A text parameter must end in a NUL for libpq (it ignores the length of text
// parameters), which a string_view does not promise: such parameters are
// copied into `storage` first.
std::vector<parameter> with_terminated_text(std::span<const parameter> params,
                                            std::vector<std::string>& storage) {
  std::vector<parameter> out(params.begin(), params.end());
  storage.reserve(params.size());
  for (auto& p : out) {
    if (p.binary) continue;
    p.bytes = storage.emplace_back(p.bytes);
  }
  return out;
}

}  // namespace

connection::connection(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&&) noexcept = default;
connection::~connection() = default;

namespace {

// A lookup's outcome, shared by the thread that does it and the coroutine
// that waits for it (or has stopped waiting).
struct lookup_result {
  std::mutex mutex;
  int error = 0;      // getaddrinfo()'s
  int sys_error = 0;  // errno, for EAI_SYSTEM
  std::vector<std::string> addresses;
  int ready[2] = {-1, -1};  // a pipe: the thread writes a byte when done
  ~lookup_result() {
    for (int fd : ready)
      if (fd >= 0) ::close(fd);
  }
};

void look_up(const std::string& host, lookup_result& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  const int sys_error = errno;
  std::vector<std::string> addresses;
  for (auto* ai = found; rc == 0 && ai; ai = ai->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* where = nullptr;
    if (ai->ai_family == AF_INET)
      where = &reinterpret_cast<const sockaddr_in*>(ai->ai_addr)->sin_addr;
    else if (ai->ai_family == AF_INET6)
      where = &reinterpret_cast<const sockaddr_in6*>(ai->ai_addr)->sin6_addr;
    if (!where || !::inet_ntop(ai->ai_family, where, text, sizeof text)) continue;
    if (std::find(addresses.begin(), addresses.end(), text) == addresses.end())
      addresses.emplace_back(text);
  }
  if (found) ::freeaddrinfo(found);
  std::lock_guard lock(out.mutex);
  out.error = rc;
  out.sys_error = sys_error;
  out.addresses = std::move(addresses);
}

// The addresses of `host`, each once, in getaddrinfo()'s order, or why not
// ("timed out" when `until` passed). The lookup runs on a thread of its own,
// detached: getaddrinfo() cannot be cancelled, and a DNS server that does
// not answer holds it for its whole timeout and retries. Asio's resolver
// would not do: it runs every lookup of an io_context on one thread, so one
// such lookup would hold up the next host's, and the io_context's
// destruction (a command's exit) would wait for it. The thread touches only
// the shared result and its pipe, so it may outlive the caller and the
// event loop.
asio::awaitable<outcome<std::vector<std::string>>> async_lookup(const std::string& host,
                                                                deadline until) {
  auto ex = co_await asio::this_coro::executor;
  auto shared = std::make_shared<lookup_result>();
  if (::pipe2(shared->ready, O_CLOEXEC | O_NONBLOCK) != 0)
    co_return failure::transient(std::string("cannot look up: ") + std::strerror(errno));
  const int watched = ::dup(shared->ready[0]);
  if (watched < 0)
    co_return failure::transient(std::string("cannot look up: ") + std::strerror(errno));
  asio::posix::stream_descriptor ready(ex, watched);
  try {
    std::thread([shared, host] {
      look_up(host, *shared);
      const char done = 1;
      [[maybe_unused]] auto written = ::write(shared->ready[1], &done, 1);
    }).detach();
  } catch (const std::system_error& e) {
    co_return failure::transient(std::string("cannot look up: ") + e.what());
  }
  asio::steady_timer timer(ex, until);
  auto r = co_await (ready.async_wait(wait_type::wait_read, use_nothrow) ||
                     timer.async_wait(use_nothrow));
  if (r.index() == 1) co_return failure::transient("timed out");
  std::lock_guard lock(shared->mutex);
  if (shared->error == EAI_SYSTEM) co_return failure::transient(std::strerror(shared->sys_error));
  if (shared->error != 0) co_return failure::transient(::gai_strerror(shared->error));
  if (shared->addresses.empty()) co_return failure::transient("no address");
  co_return std::move(shared->addresses);
}

}  // namespace

// The hosts are tried one at a time, in order (connect_plan.hpp says why):
// a name that does not resolve, an address that refuses or does not answer
// in its share of the deadline, or a server that is not what
// target_session_attrs asks for, is passed over for the next.
asio::awaitable<outcome<connection>> connection::async_connect(std::string conninfo,
                                                               deadline until) {
  auto plan =
      plan_connect(conninfo, [](const char* name) -> const char* { return std::getenv(name); });
  if (!plan) co_return plan.error();
  const auto& attempts = plan->attempts;
  std::vector<std::string> failures;  // one per host (address) tried, in order
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    const host_attempt& a = attempts[i];
    const std::size_t hosts_left = attempts.size() - i;
    if (std::chrono::steady_clock::now() >= until) {
      failures.push_back(a.shown + ": not tried, the connect deadline had passed");
      continue;
    }
    std::vector<std::string> addresses{std::string()};
    if (!a.lookup.empty()) {
      const auto lookup_until = attempt_deadline(std::chrono::steady_clock::now(), until,
                                                 hosts_left, plan->per_host_timeout);
      auto found = co_await async_lookup(a.lookup, lookup_until);
      if (!found) {
        failures.push_back("could not resolve " + a.shown + ": " + found.error().message);
        continue;
      }
      addresses = std::move(*found);
    }
    for (std::size_t j = 0; j < addresses.size(); ++j) {
      const std::string& address = addresses[j];
      const auto attempt_until =
          attempt_deadline(std::chrono::steady_clock::now(), until,
                           (addresses.size() - j) + (hosts_left - 1), plan->per_host_timeout);
      auto opened = co_await impl::async_connect_one(a.params, address, attempt_until);
      if (opened) co_return connection(std::move(*opened));
      // libpq's messages name the server; ours ("timed out") do not.
      std::string why = opened.error().message;
      if (why.find("connection to server") == std::string::npos) {
        std::string where = a.shown;
        if (!address.empty()) where += " at " + address;
        why = where + ": " + why;
      }
      failures.push_back(std::move(why));
    }
  }
  std::string message = "could not connect to the database: ";
  for (std::size_t i = 0; i < failures.size(); ++i) {
    if (i) message += "; ";
    message += failures[i];
  }
  co_return failure::transient(std::move(message));
}

asio::awaitable<outcome<result>> connection::async_exec(std::string_view sql, deadline until) {
  if (!impl_->conn) co_return failure::transient("the database connection is closed");
  impl_->last_sqlstate.clear();
  std::string text(sql);
  if (!PQsendQuery(impl_->conn.get(), text.c_str())) co_return impl_->lost();
  co_return co_await impl_->async_collect(until);
}

asio::awaitable<outcome<result>> connection::async_query(std::string_view sql,
                                                         std::span<const std::string> params,
                                                         deadline until) {
  if (!impl_->conn) co_return failure::transient("the database connection is closed");
  impl_->last_sqlstate.clear();
  std::string text(sql);
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());
  if (!PQsendQueryParams(impl_->conn.get(), text.c_str(), static_cast<int>(values.size()), nullptr,
                         values.data(), nullptr, nullptr, 0))
    co_return impl_->lost();
  co_return co_await impl_->async_collect(until);
}

asio::awaitable<outcome<result>> connection::async_query(const statement& s, deadline until) {
  if (!impl_->conn) co_return failure::transient("the database connection is closed");
  impl_->last_sqlstate.clear();
  std::vector<std::string> storage;
  auto params = with_terminated_text(s.params, storage);
  if (!impl_->send(statement{s.sql, params})) co_return impl_->lost();
  co_return co_await impl_->async_collect(until);
}

asio::awaitable<outcome<result>> connection::async_copy_in(std::string_view copy_sql,
                                                           std::string_view data, deadline until) {
  if (!impl_->conn) co_return failure::transient("the database connection is closed");
  impl_->last_sqlstate.clear();
  PGconn* c = impl_->conn.get();
  std::string text(copy_sql);
  if (!PQsendQuery(c, text.c_str())) co_return impl_->lost();
  auto flushed = co_await impl_->async_flush(until);
  if (!flushed) co_return flushed.error();
  auto ready = co_await impl_->async_until_not_busy(until);
  if (!ready) co_return ready.error();
  PGresult* started = PQgetResult(c);
  if (!started) co_return impl_->lost();
  if (PQresultStatus(started) != PGRES_COPY_IN) {
    // Refused before any data (no such table, not a COPY FROM STDIN): the
    // rest of the command's results say why.
    // Not a ?: expression: GCC 12 mishandles its temporaries in a coroutine.
    failure f = failure::permanent("database error: the statement is not COPY FROM STDIN");
    if (PQresultStatus(started) == PGRES_FATAL_ERROR) f = impl_->error_from(started);
    PQclear(started);
    auto rest = co_await impl_->async_collect(until);
    if (!rest && rest.error().is_transient()) co_return rest.error();
    co_return f;
  }
  PQclear(started);
  // One piece at a time, each sent before the next is queued: libpq moves
  // the unsent rest of its buffer to the front after every partial send, so
  // queueing megabytes at once would cost a copy of them per send.
  constexpr std::size_t piece = 64 * 1024;
  for (std::size_t at = 0; at < data.size();) {
    auto n = std::min(piece, data.size() - at);
    int put = PQputCopyData(c, data.data() + at, static_cast<int>(n));
    if (put < 0) break;  // the server ended the COPY (an error): collect it below
    if (put == 1) at += n;
    auto sent = co_await impl_->async_flush(until);
    if (!sent) co_return sent.error();
  }
  for (;;) {
    int ended = PQputCopyEnd(c, nullptr);
    if (ended == 1) break;
    if (ended < 0) {
      if (PQstatus(c) == CONNECTION_BAD) co_return impl_->lost();
      break;  // no COPY in progress any more: the server has answered
    }
    bool writable = co_await impl_->wait_either(until);
    if (!writable) co_return impl_->timed_out();
    if (!PQconsumeInput(c)) co_return impl_->lost();
  }
  co_return co_await impl_->async_collect(until);
}

asio::awaitable<std::vector<outcome<result>>> connection::async_pipeline(
    std::span<const statement> statements, pipeline_sync sync, deadline until) {
  const std::size_t n = statements.size();
  // Each statement's outcome, empty until known.
  std::vector<std::optional<outcome<result>>> known(n);
  auto finish = [&](const failure& unknown) {
    std::vector<outcome<result>> out;
    out.reserve(n);
    for (auto& k : known) {
      if (k)
        out.push_back(std::move(*k));
      else
        out.push_back(unknown);
    }
    return out;
  };
  if (n == 0) co_return finish(failure::transient(""));
  if (!impl_->conn) co_return finish(failure::transient("the database connection is closed"));
  impl_->last_sqlstate.clear();
  PGconn* c = impl_->conn.get();
  if (!PQenterPipelineMode(c)) {
    impl_->close();  // not idle: a caller's bug; never reuse it
    co_return finish(failure::transient("the database connection is busy"));
  }
  const bool each_alone = sync == pipeline_sync::each_alone;
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::string> storage;
    auto params = with_terminated_text(statements[i].params, storage);
    if (!impl_->send(statement{statements[i].sql, params})) co_return finish(impl_->lost());
    if ((each_alone || i + 1 == n) && !PQpipelineSync(c)) co_return finish(impl_->lost());
  }

  // Results arrive in order: for each statement its result (an error, or
  // PIPELINE_ABORTED when skipped after an error) and a null; after the
  // last statement of a transaction, PIPELINE_SYNC once it has ended.
  std::size_t current = 0;    // the statement whose result comes next
  std::size_t confirmed = 0;  // statements before it are settled by a sync
  auto expecting_sync = [&] { return each_alone ? current > confirmed : current == n; };
  // A transaction has ended (its sync) or will never commit (an error or a
  // loss): settles the statements [confirmed, current).
  auto settle = [&](bool committed, const failure& otherwise) {
    for (std::size_t i = confirmed; i < current && i < n; ++i) {
      if (!known[i])
        known[i] = otherwise;
      else if (!committed && known[i]->has_value())
        known[i] = otherwise;
    }
    confirmed = current;
  };
  auto segment_failed = [&] {
    for (std::size_t i = confirmed; i < current && i < n; ++i)
      if (known[i] && !known[i]->has_value()) return true;
    return false;
  };
  const failure rolled_back =
      failure::transient("database error: rolled back with a statement that failed");
  std::optional<failure> broken;
  int nulls_in_a_row = 0;
  while (confirmed < n) {
    int flushed = PQflush(c);
    if (flushed < 0) {
      broken = impl_->lost();
      break;
    }
    while (confirmed < n && !PQisBusy(c)) {
      PGresult* r = PQgetResult(c);
      if (!r) {
        // One null ends each statement's results; two in a row would mean
        // libpq has nothing more to give, which must not spin.
        if (++nulls_in_a_row > 1) {
          broken = impl_->lost();
          break;
        }
        if (!expecting_sync()) ++current;
        continue;
      }
      nulls_in_a_row = 0;
      auto status = PQresultStatus(r);
      if (status == PGRES_PIPELINE_SYNC) {
        PQclear(r);
        if (segment_failed())
          settle(false, rolled_back);
        else
          settle(true, failure::permanent("database error: the command returned no result"));
        continue;
      }
      if (status == PGRES_FATAL_ERROR && expecting_sync()) {
        // The commit at the sync failed (libpq then gives a null and the
        // sync): the whole transaction fails, charged to its last statement.
        known[current - 1] = impl_->error_from(r);
        PQclear(r);
        continue;
      }
      if (current >= n) {
        PQclear(r);
        continue;
      }
      auto& k = known[current];
      switch (status) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
          k = result(std::unique_ptr<pg_result, result::deleter>(r));
          break;
        case PGRES_FATAL_ERROR:
          k = impl_->error_from(r);
          PQclear(r);
          break;
        case PGRES_PIPELINE_ABORTED:
          k = rolled_back;
          PQclear(r);
          break;
        default:
          PQclear(r);
          break;
      }
    }
    if (broken || confirmed == n) break;
    if (PQstatus(c) == CONNECTION_BAD) {
      broken = impl_->lost();
      break;
    }
    bool ready = false;
    if (flushed == 1)
      ready = co_await impl_->wait_either(until);
    else
      ready = co_await impl_->wait(wait_type::wait_read, until);
    if (!ready) {
      broken = impl_->timed_out();
      break;
    }
    if (!PQconsumeInput(c)) {
      broken = impl_->lost();
      break;
    }
  }
  if (broken) {
    // The transaction under way: if one of its statements failed it cannot
    // commit; otherwise whether it did is unknown (successes are dropped).
    current = each_alone ? std::min(confirmed + 1, n) : n;
    if (segment_failed())
      settle(false, rolled_back);
    else
      settle(false, *broken);
    co_return finish(*broken);
  }
  if (!PQexitPipelineMode(c)) impl_->close();  // cannot happen once every sync is in
  co_return finish(failure::transient(""));
}

asio::awaitable<outcome<std::vector<connection::notification>>>
connection::async_wait_notifications(deadline until) {
  std::vector<notification> out;
  if (!impl_ || !impl_->conn) co_return failure::transient("not connected to the database");
  PGconn* c = impl_->conn.get();
  for (;;) {
    if (!PQconsumeInput(c)) co_return impl_->lost();
    while (PGnotify* n = PQnotifies(c)) {
      out.push_back({n->relname ? n->relname : "", n->extra ? n->extra : ""});
      PQfreemem(n);
    }
    if (!out.empty()) co_return out;
    // A wait that ends at `until` is not a failure here: nothing came.
    bool readable = co_await impl_->wait(wait_type::wait_read, until);
    if (!readable) co_return out;
  }
}

const std::string& connection::last_sqlstate() const { return impl_->last_sqlstate; }

bool connection::is_idle() const {
  return impl_ && impl_->conn && !impl_->not_reusable &&
         PQstatus(impl_->conn.get()) == CONNECTION_OK &&
         PQtransactionStatus(impl_->conn.get()) == PQTRANS_IDLE;
}

void connection::close() {
  if (impl_) impl_->close();
}

}  // namespace gatherstats::pg
