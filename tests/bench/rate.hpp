// The benches' one way of timing work: how many times a second it runs.
#pragma once

#include <chrono>
#include <cstddef>

namespace bench {

// Runs `work` repeatedly for about `seconds`; returns runs per second.
template <class Work>
double rate(double seconds, Work work) {
  using clock_type = std::chrono::steady_clock;
  std::size_t runs = 0;
  auto start = clock_type::now();
  auto until = start + std::chrono::duration<double>(seconds);
  while (clock_type::now() < until) {
    work();
    ++runs;
  }
  return runs / std::chrono::duration<double>(clock_type::now() - start).count();
}

}  // namespace bench
