// The per-endpoint loop. Its state is shared with the coroutine so that the
// poller object can go away (a reload removed the endpoint) while its last
// fetch finishes.
#include "gatherstats/sched/endpoint_poller.hpp"

#include "gatherstats/config/secret_file.hpp"
#include "gatherstats/http/client.hpp"
#include "gatherstats/io/blocking.hpp"
#include "gatherstats/sched/schedule.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/evp.h>

#include <optional>
#include <random>

namespace asio = boost::asio;

namespace gatherstats::sched {
namespace {
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using steady = std::chrono::steady_clock;
// The first retry waits up to this long; later ones up to twice the last.
constexpr milliseconds retry_base{250};

std::chrono::milliseconds since(steady::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start);
}

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}
}  // namespace

// --- fetch_limiter ------------------------------------------------------------

struct fetch_limiter::state {
  std::size_t limit;
  std::size_t active = 0;
  asio::steady_timer wake;
  state(asio::any_io_executor ex, std::size_t l)
      : limit(std::max<std::size_t>(l, 1)), wake(ex, steady::time_point::max()) {}
};

fetch_limiter::fetch_limiter(asio::any_io_executor ex, std::size_t limit)
    : state_(std::make_shared<state>(ex, limit)) {}
fetch_limiter::~fetch_limiter() = default;

asio::awaitable<void> fetch_limiter::async_acquire() {
  auto s = state_;
  while (s->active >= s->limit) co_await s->wake.async_wait(use_nothrow);
  ++s->active;
}

void fetch_limiter::release() {
  --state_->active;
  state_->wake.cancel_one();
}

void fetch_limiter::set_limit(std::size_t limit) {
  state_->limit = std::max<std::size_t>(limit, 1);
  state_->wake.cancel();
}

std::size_t fetch_limiter::active() const { return state_->active; }

// --- endpoint_poller ----------------------------------------------------------

struct endpoint_poller::state {
  asio::any_io_executor ex;
  config::endpoint_config cfg;
  // redact_url(cfg.url), once per configuration: it is shown in every event
  // and every failure of this endpoint.
  std::string shown_url;
  poller_services services;
  std::optional<http::client> client;
  std::optional<config::secret_file> token, password;
  poller_stats stats;
  bool stopped = false;
  bool running = false;
  asio::steady_timer tick_timer;
  asio::steady_timer finished;  // cancelled when the loop ends
  std::mt19937_64 random{std::random_device{}()};

  state(asio::any_io_executor e, config::endpoint_config c, poller_services s)
      : ex(e),
        cfg(std::move(c)),
        shown_url(http::redact_url(cfg.url)),
        services(std::move(s)),
        tick_timer(e),
        finished(e, steady::time_point::max()) {}

  void emit(log::event e) {
    e.endpoint = cfg.name;
    e.url = shown_url;
    if (services.events) services.events(e);
  }
};

namespace {

using poller_state = endpoint_poller::state;

// The Authorization header value, from the secret files (read off the loop).
asio::awaitable<outcome<std::string>> authorization(std::shared_ptr<poller_state> s) {
  if (s->token) {
    auto* file = &*s->token;
    auto read = [file] { return file->read(); };
    auto token = co_await io::async_run_blocking<outcome<std::string>>(s->services.blocking, read);
    if (!token) co_return token.error();
    co_return "Bearer " + *token;
  }
  if (s->password) {
    auto* file = &*s->password;
    auto read = [file] { return file->read(); };
    auto password =
        co_await io::async_run_blocking<outcome<std::string>>(s->services.blocking, read);
    if (!password) co_return password.error();
    co_return "Basic " + base64(s->cfg.auth.username + ":" + *password);
  }
  co_return std::string();
}

// One attempt: fetch, flatten. The record is complete or a failure.
// `next_use`: when the endpoint fetches again (its connection, kept alive
// for it, is among the last to be closed when sockets run short).
asio::awaitable<outcome<fetch_record>> attempt(std::shared_ptr<poller_state> s,
                                               steady::time_point until,
                                               steady::time_point next_use) {
  auto auth = co_await authorization(s);
  if (!auth) co_return auth.error();
  http::request req;
  req.url = s->cfg.url;
  req.shown_url = s->shown_url;
  req.headers = s->cfg.headers;
  req.authorization = std::move(*auth);
  req.max_body_bytes = s->cfg.flatten.max_body_bytes;
  req.next_use = next_use;
  auto response = co_await s->client->async_get(std::move(req), until);
  if (!response) co_return response.error();
  auto rows = json::flatten(response->body, s->cfg.flatten);
  if (!rows) {
    failure f = rows.error();
    f.message = s->shown_url + ": " + f.message;
    f.http_status = response->status;
    co_return f;
  }
  fetch_record record;
  record.endpoint = s->cfg.recorded_endpoint();
  record.fetched_at = response->received_at;
  record.rows = std::move(*rows);
  record.outcome.http_status = response->status;
  record.outcome.bytes = response->body.size();
  co_return record;
}

// A failed fetch as a record: no rows, why it failed (the fetch log keeps it).
fetch_record failed_record(const poller_state& s, const failure& f, timestamp tick,
                           steady::time_point started) {
  fetch_record r;
  r.name = s.cfg.name;
  r.endpoint = s.cfg.recorded_endpoint();
  r.fetched_at = now_utc();
  r.outcome.tick = tick;
  r.outcome.duration =
      std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - started);
  r.outcome.reason = f.reason == fetch_reason::none ? fetch_reason::other : f.reason;
  r.outcome.error = f.message;
  r.outcome.http_status = f.http_status;
  return r;
}

// A fetch with its retries, all before `next_tick`, for the scheduled `tick`.
// Submits the record, or a failed record when every attempt failed.
// `next_use`: when the endpoint fetches again (max(): never).
asio::awaitable<bool> fetch(std::shared_ptr<poller_state> s, steady::time_point next_tick,
                            timestamp tick, steady::time_point next_use) {
  co_await s->services.limiter->async_acquire();
  struct release_on_exit {
    fetch_limiter* limiter;
    ~release_on_exit() { limiter->release(); }
  } slot{s->services.limiter};

  backoff delays(retry_base, s->cfg.interval);
  auto started = steady::now();
  for (unsigned retry = 0;; ++retry) {
    auto until = attempt_deadline(steady::now(), s->cfg.timeout, next_tick);
    auto record = co_await attempt(s, until, next_use);
    if (record) {
      std::size_t rows = record->rows.size();
      record->name = s->cfg.name;
      record->outcome.tick = tick;
      record->outcome.duration =
          std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - started);
      s->services.submit(std::move(*record));
      s->stats.consecutive_failures = 0;
      s->stats.last_success = steady::now();
      if (rows == 0) {
        log::event e{log::event_kind::warning, log::severity::notice};
        e.detail = "the document gave no rows";
        s->emit(e);
      }
      co_return true;
    }
    const failure& f = record.error();
    auto delay = delays.delay(retry + 1, s->random);
    bool retry_left = retry < s->cfg.retries && f.is_transient() && !s->stopped &&
                      steady::now() + delay < next_tick;
    log::event e{retry_left ? log::event_kind::fetch_retrying : log::event_kind::fetch_failed,
                 retry_left ? log::severity::notice : log::severity::error};
    e.duration = since(started);
    e.http_status = f.http_status;
    e.error = f.message;
    s->emit(e);
    if (!retry_left) {
      ++s->stats.failures;
      ++s->stats.consecutive_failures;
      s->services.submit(failed_record(*s, f, tick, started));
      co_return false;
    }
    asio::steady_timer pause(s->ex, delay);
    co_await pause.async_wait(use_nothrow);
  }
}

// The first tick: aligned on wall-clock multiples of the interval, or at the
// endpoint's stable phase within the interval (also wall-clock based, so a
// restart keeps it). Both on the steady clock (for the timer) and as the
// wall-clock instant it stands for (the tick's identity in the fetch log).
struct first {
  steady::time_point due;
  timestamp wall;
};
first first_tick(const config::endpoint_config& cfg) {
  auto now_wall = std::chrono::system_clock::now();
  auto now = steady::now();
  auto to_multiple = delay_to_aligned(now_wall, cfg.interval);
  auto delay = cfg.align ? to_multiple
                         : (to_multiple + spread_offset(cfg.name, cfg.interval)) % cfg.interval;
  // delay_to_aligned counts whole milliseconds: the tick is an exact multiple.
  auto wall = std::chrono::floor<std::chrono::milliseconds>(now_wall) + delay;
  return {now + delay, std::chrono::time_point_cast<std::chrono::microseconds>(wall)};
}

asio::awaitable<void> run(std::shared_ptr<poller_state> s) {
  const auto start = first_tick(s->cfg);
  endpoint_schedule schedule(start.due, s->cfg.interval);
  std::uint64_t n = 0;
  while (!s->stopped) {
    s->tick_timer.expires_at(schedule.due(n));
    co_await s->tick_timer.async_wait(use_nothrow);
    if (s->stopped) break;
    ++s->stats.ticks;
    if (s->services.accepting && !s->services.accepting()) {
      ++s->stats.skipped_ticks;
      n = schedule.after(n, steady::now()).index;
      continue;
    }
    const timestamp tick = start.wall + n * s->cfg.interval;
    co_await fetch(s, schedule.due(n + 1), tick, schedule.due(n + 1));
    auto next = schedule.after(n, steady::now());
    if (next.missed > 0) {
      s->stats.skipped_ticks += next.missed;
      log::event e{log::event_kind::tick_skipped, log::severity::warning};
      e.rows = next.missed;
      e.detail =
          std::to_string(next.missed) + " tick(s) skipped: the previous fetch was still running";
      s->emit(e);
    }
    n = next.index;
  }
  s->running = false;
  s->finished.cancel();
}

}  // namespace

endpoint_poller::endpoint_poller(asio::any_io_executor ex, config::endpoint_config cfg,
                                 poller_services services)
    : state_(std::make_shared<state>(ex, std::move(cfg), std::move(services))) {}

endpoint_poller::~endpoint_poller() { stop(); }

outcome<void> endpoint_poller::prepare() {
  const auto& tls = state_->cfg.tls;
  auto client =
      http::client::create({tls.ca_file, tls.cert_file, tls.key_file, tls.insecure_skip_verify});
  if (!client) return failure::permanent(state_->cfg.name + ": " + client.error().message);
  state_->client.emplace(std::move(*client));
  if (!state_->cfg.auth.bearer_token_file.empty())
    state_->token.emplace(state_->cfg.auth.bearer_token_file);
  if (!state_->cfg.auth.password_file.empty())
    state_->password.emplace(state_->cfg.auth.password_file);
  if (tls.insecure_skip_verify) {
    log::event e{log::event_kind::warning, log::severity::warning};
    e.detail = "tls.insecure_skip_verify is set: the server's certificate is not checked";
    state_->emit(e);
  }
  return {};
}

void endpoint_poller::start() {
  state_->running = true;
  asio::co_spawn(state_->ex, run(state_), asio::detached);
}

asio::awaitable<bool> endpoint_poller::async_fetch_once(steady::time_point until) {
  co_return co_await fetch(state_, until, now_utc(), steady::time_point::max());
}

void endpoint_poller::stop() {
  state_->stopped = true;
  state_->tick_timer.cancel();
}

asio::awaitable<void> endpoint_poller::async_wait_stopped(steady::time_point until) {
  auto s = state_;
  s->finished.expires_at(until);
  while (s->running && steady::now() < until) co_await s->finished.async_wait(use_nothrow);
}

const config::endpoint_config& endpoint_poller::config() const { return state_->cfg; }
const poller_stats& endpoint_poller::stats() const { return state_->stats; }

}  // namespace gatherstats::sched
