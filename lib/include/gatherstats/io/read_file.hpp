// Reading a whole file without blocking the event loop: the read runs on
// `blocking`, an executor of threads set aside for blocking work (a
// boost::asio::thread_pool), and the coroutine resumes on its own executor.
//
// Errors: a missing or unreadable file, or one larger than `max_bytes`, is a
// permanent failure naming the path.
#pragma once

#include "gatherstats/error.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <string>

namespace gatherstats::io {

boost::asio::awaitable<outcome<std::string>> async_read_file(boost::asio::any_io_executor blocking,
                                                             std::string path,
                                                             std::size_t max_bytes);

}  // namespace gatherstats::io
