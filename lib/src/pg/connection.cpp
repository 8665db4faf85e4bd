// Non-blocking libpq driven by Asio: libpq decides what to send and when it
// needs the socket; Asio only waits for readiness. libpq owns the socket:
// Asio's descriptor is always release()d, never closed.
#include "gatherstats/pg/connection.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <optional>
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
struct options_deleter {
  void operator()(PQconninfoOption* o) const noexcept { PQconninfoFree(o); }
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
         state.starts_with("58") || state == "40001" || state == "40P01";
}

// A host entry that needs a DNS lookup, as opposed to a socket directory or
// an address literal.
bool is_host_name(std::string_view host) {
  if (host.empty() || host.front() == '/' || host.front() == '@') return false;
  boost::system::error_code ec;
  asio::ip::make_address(std::string(host), ec);
  return bool(ec);
}

std::vector<std::string> split_list(std::string_view list) {
  std::vector<std::string> items;
  std::size_t start = 0;
  for (;;) {
    auto comma = list.find(',', start);
    items.emplace_back(list.substr(start, comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
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

  failure error_from(PGresult* r) const {
    const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
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
    for (;;) {
      int flushed = PQflush(conn.get());
      if (flushed == 0) break;
      if (flushed < 0) co_return lost();
      bool ready = co_await wait(wait_type::wait_write, until);
      if (!ready) co_return timed_out();
      if (!PQconsumeInput(conn.get())) co_return lost();
    }
    std::unique_ptr<pg_result, result::deleter> last;
    std::optional<failure> first_error;
    for (;;) {
      while (PQisBusy(conn.get())) {
        bool ready = co_await wait(wait_type::wait_read, until);
        if (!ready) co_return timed_out();
        if (!PQconsumeInput(conn.get())) co_return lost();
      }
      PGresult* r = PQgetResult(conn.get());
      if (!r) break;
      switch (PQresultStatus(r)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
          last.reset(r);
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
};

connection::connection(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&&) noexcept = default;
connection::~connection() = default;

asio::awaitable<outcome<connection>> connection::async_connect(std::string conninfo,
                                                               deadline until) {
  auto ex = co_await asio::this_coro::executor;

  char* parse_error = nullptr;
  std::unique_ptr<PQconninfoOption, options_deleter> parsed(
      PQconninfoParse(conninfo.c_str(), &parse_error));
  if (!parsed) {
    std::string why = parse_error ? one_line(parse_error) : "out of memory";
    PQfreemem(parse_error);
    co_return failure::permanent("invalid database connection string: " + why);
  }
  std::vector<std::string> keys, values;
  std::string host, hostaddr;
  for (auto* o = parsed.get(); o->keyword; ++o) {
    if (!o->val) continue;
    std::string_view key = o->keyword;
    if (key == "host") host = o->val;
    if (key == "hostaddr") hostaddr = o->val;
    keys.emplace_back(key);
    values.emplace_back(o->val);
  }
  if (host.empty() && hostaddr.empty()) {
    if (const char* env = std::getenv("PGHOST")) host = env;
  }

  // libpq resolves host names with a blocking getaddrinfo(); do it here on
  // Asio's resolver and give libpq the addresses.
  if (hostaddr.empty() && !host.empty()) {
    auto hosts = split_list(host);
    bool any_name = false;
    std::string addrs;
    asio::ip::tcp::resolver resolver(ex);
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      if (i) addrs += ',';
      if (!is_host_name(hosts[i])) {
        if (!hosts[i].empty() && hosts[i].front() != '/' && hosts[i].front() != '@')
          addrs += hosts[i];
        continue;
      }
      any_name = true;
      asio::steady_timer timer(ex, until);
      auto r = co_await (resolver.async_resolve(hosts[i], "", use_nothrow) ||
                         timer.async_wait(use_nothrow));
      if (r.index() == 1)
        co_return failure::transient("could not resolve database host \"" + hosts[i] +
                                     "\": timed out");
      auto [ec, results] = std::get<0>(r);
      if (ec || results.empty())
        co_return failure::transient("could not resolve database host \"" + hosts[i] +
                                     "\": " + ec.message());
      addrs += results.begin()->endpoint().address().to_string();
    }
    if (any_name) {
      keys.emplace_back("hostaddr");
      values.push_back(addrs);
      if (std::find(keys.begin(), keys.end(), "host") == keys.end()) {
        keys.emplace_back("host");
        values.push_back(host);
      }
    }
  }

  std::vector<const char*> key_ptrs, value_ptrs;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    key_ptrs.push_back(keys[i].c_str());
    value_ptrs.push_back(values[i].c_str());
  }
  key_ptrs.push_back(nullptr);
  value_ptrs.push_back(nullptr);

  auto p = std::make_unique<impl>(ex);
  p->conn.reset(PQconnectStartParams(key_ptrs.data(), value_ptrs.data(), 0));
  if (!p->conn) co_return failure::transient("could not connect to the database: out of memory");
  if (PQstatus(p->conn.get()) == CONNECTION_BAD)
    co_return failure::transient("could not connect to the database: " + p->libpq_error());
  // Notices (e.g. "relation already exists, skipping") would go to stderr.
  PQsetNoticeProcessor(
      p->conn.get(), [](void*, const char*) {}, nullptr);

  auto poll = PGRES_POLLING_WRITING;
  while (poll != PGRES_POLLING_OK) {
    if (poll == PGRES_POLLING_FAILED)
      co_return failure::transient("could not connect to the database: " + p->libpq_error());
    if (auto attached = p->attach_socket(); !attached) co_return attached.error();
    auto what = poll == PGRES_POLLING_READING ? wait_type::wait_read : wait_type::wait_write;
    bool ready = co_await p->wait(what, until);
    if (!ready) {
      p->close();
      co_return failure::transient("could not connect to the database: timed out");
    }
    poll = PQconnectPoll(p->conn.get());
  }
  if (auto attached = p->attach_socket(); !attached) co_return attached.error();
  if (PQsetnonblocking(p->conn.get(), 1) != 0)
    co_return failure::transient("could not make the database connection non-blocking: " +
                                 p->libpq_error());
  co_return connection(std::move(p));
}

asio::awaitable<outcome<result>> connection::async_exec(std::string_view sql, deadline until) {
  if (!impl_->conn) co_return failure::transient("the database connection is closed");
  std::string text(sql);
  if (!PQsendQuery(impl_->conn.get(), text.c_str())) co_return impl_->lost();
  co_return co_await impl_->async_collect(until);
}

asio::awaitable<outcome<result>> connection::async_query(std::string_view sql,
                                                         std::span<const std::string> params,
                                                         deadline until) {
  if (!impl_->conn) co_return failure::transient("the database connection is closed");
  std::string text(sql);
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());
  if (!PQsendQueryParams(impl_->conn.get(), text.c_str(), static_cast<int>(values.size()), nullptr,
                         values.data(), nullptr, nullptr, 0))
    co_return impl_->lost();
  co_return co_await impl_->async_collect(until);
}

bool connection::is_idle() const {
  return impl_ && impl_->conn && PQstatus(impl_->conn.get()) == CONNECTION_OK &&
         PQtransactionStatus(impl_->conn.get()) == PQTRANS_IDLE;
}

void connection::close() {
  if (impl_) impl_->close();
}

}  // namespace gatherstats::pg
