// The budget's state lives in an Asio service of the execution context, so
// every client on one event loop finds the same one without it being passed
// through the collector and the pollers; slots and parkings share the state,
// so that one released after the context is gone touches nothing freed.
#include "gatherstats/http/connection_budget.hpp"

#include <boost/asio/execution_context.hpp>

#include <limits>
#include <map>

namespace asio = boost::asio;

namespace gatherstats::http {

struct connection_budget::state {
  std::size_t limit = std::numeric_limits<std::size_t>::max();
  std::size_t open = 0;
  std::uint64_t closed_for_room = 0;
  std::uint64_t parked_so_far = 0;
  // The last entry gives way first: the latest next use and, among equal
  // ones, the earliest parked (its second half counts down).
  std::map<parking::key, std::function<void()>> parked;

  bool close_one() {
    if (parked.empty()) return false;
    auto last = std::prev(parked.end());
    auto close = std::move(last->second);
    parked.erase(last);
    ++closed_for_room;
    close();
    return true;
  }
};

namespace {

struct budget_service : asio::execution_context::service {
  static asio::execution_context::id id;
  explicit budget_service(asio::execution_context& ctx)
      : asio::execution_context::service(ctx),
        state(std::make_shared<connection_budget::state>()) {}
  void shutdown() override {}
  std::shared_ptr<connection_budget::state> state;
};

asio::execution_context::id budget_service::id;

}  // namespace

connection_budget connection_budget::of(asio::execution_context& ctx) {
  return connection_budget(asio::use_service<budget_service>(ctx).state);
}

void connection_budget::set_limit(std::size_t sockets) { state_->limit = sockets; }
std::size_t connection_budget::limit() const { return state_->limit; }
std::size_t connection_budget::open() const { return state_->open; }
std::size_t connection_budget::parked() const { return state_->parked.size(); }
std::uint64_t connection_budget::closed_for_room() const { return state_->closed_for_room; }

std::optional<connection_budget::slot> connection_budget::try_open() {
  while (state_->open >= state_->limit)
    if (!state_->close_one()) return std::nullopt;
  ++state_->open;
  return slot(state_);
}

bool connection_budget::close_one_parked() { return state_->close_one(); }

connection_budget::parking connection_budget::park(time_point next_use,
                                                   std::function<void()> close) {
  const parking::key k{next_use,
                       std::numeric_limits<std::uint64_t>::max() - state_->parked_so_far++};
  state_->parked.emplace(k, std::move(close));
  return parking(state_, k);
}

connection_budget::slot& connection_budget::slot::operator=(slot&& other) noexcept {
  if (this != &other) {
    if (state_) --state_->open;
    state_ = std::move(other.state_);
  }
  return *this;
}

connection_budget::slot::~slot() {
  if (state_) --state_->open;
}

connection_budget::parking::parking(parking&& other) noexcept
    : state_(std::move(other.state_)), key_(other.key_) {}

connection_budget::parking::~parking() {
  // Already gone when it was closed to make room.
  if (state_) state_->parked.erase(key_);
}

}  // namespace gatherstats::http
