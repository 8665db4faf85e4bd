// How many fetch sockets may be open at once on one event loop, and which
// idle keep-alive connection gives way when a new socket needs room.
//
// Every http::client counts its sockets in the budget of the event loop it
// runs on: a socket counts from just before it is opened until it is
// closed. A connection kept alive between requests is *parked*: while it
// waits for its owner's next request, any client may close it to make room.
// When a new socket would pass the limit, parked connections are closed
// first, the one whose owner expects to need it last (request::next_use)
// first and, among equals, the one idle longest. When nothing is parked,
// the socket is refused and the fetch fails with "too many open files
// (limit N): ...".
//
// The limit is unlimited until set_limit(); the daemon sets it from its
// descriptor budget (sched/descriptor_budget.hpp) and caps fetches at once
// to it, so that a fetch always finds a parked connection to close.
//
// Threading: one budget per execution context (an Asio service), used only
// from that context's single thread: no locks. Slots and parkings may
// outlive the context (they share its state).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

namespace boost::asio {
class execution_context;
}

namespace gatherstats::http {

class connection_budget {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  struct state;

  // The budget of the event loop `ctx` (made at the first call).
  static connection_budget of(boost::asio::execution_context& ctx);

  void set_limit(std::size_t sockets);
  std::size_t limit() const;
  std::size_t open() const;    // sockets counted now, parked ones included
  std::size_t parked() const;  // idle connections that may be closed
  // Parked connections closed to make room, since the budget was made.
  std::uint64_t closed_for_room() const;

  // One socket counted; released when destroyed. Move-only.
  class slot {
   public:
    explicit slot(std::shared_ptr<state> s) : state_(std::move(s)) {}
    slot(slot&&) noexcept = default;
    slot& operator=(slot&&) noexcept;
    slot(const slot&) = delete;
    slot& operator=(const slot&) = delete;
    ~slot();

   private:
    std::shared_ptr<state> state_;
  };

  // Room for one more socket: parked connections are closed until there
  // is; nullopt when the limit is reached and nothing is parked.
  std::optional<slot> try_open();
  // The system refused a socket (EMFILE, ENFILE) although the budget had
  // room: closes one parked connection. False when none was parked.
  bool close_one_parked();

  // A parked connection: `close` drops it (and so its slot) when another
  // socket needs the room. Unparked when destroyed. Move-only.
  class parking {
   public:
    // Parked connections in the order they give way: the last one first.
    using key = std::pair<time_point, std::uint64_t>;
    parking(std::shared_ptr<state> s, key k) : state_(std::move(s)), key_(k) {}
    parking(parking&& other) noexcept;
    parking& operator=(parking&&) = delete;
    parking(const parking&) = delete;
    parking& operator=(const parking&) = delete;
    ~parking();

   private:
    std::shared_ptr<state> state_;
    key key_;
  };
  // `next_use`: when the owner expects its next request
  // (time_point::max(): not known, or never).
  parking park(time_point next_use, std::function<void()> close);

  explicit connection_budget(std::shared_ptr<state> s) : state_(std::move(s)) {}

 private:
  std::shared_ptr<state> state_;
};

}  // namespace gatherstats::http
