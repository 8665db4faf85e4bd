#include "gatherstats/fetch_record.hpp"

#include <cstdio>
#include <ctime>

namespace gatherstats {

timestamp now_utc() {
  return std::chrono::floor<std::chrono::microseconds>(std::chrono::system_clock::now());
}

std::string to_iso8601(timestamp t) {
  auto seconds = std::chrono::floor<std::chrono::seconds>(t);
  auto micros = (t - seconds).count();
  std::time_t tt = std::chrono::system_clock::to_time_t(seconds);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(micros));
  return buf;
}

}  // namespace gatherstats
