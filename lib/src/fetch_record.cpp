#include "gatherstats/fetch_record.hpp"

namespace gatherstats {

timestamp now_utc() {
  return std::chrono::floor<std::chrono::microseconds>(std::chrono::system_clock::now());
}

}  // namespace gatherstats
