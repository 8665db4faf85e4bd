// Running blocking work (disk reads, stat()) off the event loop: `fn` runs on
// `blocking` (an executor of a thread pool set aside for it) and the awaiting
// coroutine resumes on its own executor. `fn` must not touch state that the
// event loop uses meanwhile.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace gatherstats::io {

namespace detail {
// A plain coroutine that owns a copy of `fn`: GCC 12 destroys a capturing
// lambda coroutine's captures twice when Asio owns the lambda.
template <class R, class F>
boost::asio::awaitable<R> invoke_here(F fn) {
  co_return fn();
}
}  // namespace detail

// Call it with a named function object (`auto read = [..] {..};
// co_await async_run_blocking<R>(ex, read);`), never a temporary: GCC 12
// mis-destroys temporaries built inside a co_await expression.
template <class R, class F>
boost::asio::awaitable<R> async_run_blocking(boost::asio::any_io_executor blocking, const F& fn) {
  co_return co_await boost::asio::co_spawn(blocking, detail::invoke_here<R, F>(fn),
                                           boost::asio::use_awaitable);
}

}  // namespace gatherstats::io
