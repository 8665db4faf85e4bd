#include "gatherstats/error.hpp"

#include <stdexcept>

namespace gatherstats {

void throw_exception_from_error(const failure& f, const boost::source_location&) {
  throw std::runtime_error(f.message);
}

}  // namespace gatherstats
