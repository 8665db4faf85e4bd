// The cost of a scrape: rendering /metrics (and the status page) for N
// endpoints (1,000 by default), against a baseline measured in the same
// run: Boost.JSON serializing the same status as a document of its own
// (render_status_json builds a boost::json::object and serializes it; the
// baseline is the serialization alone, of that same object's text re-parsed
// once up front). Prints renders per second, bytes, and the ratios.
//
//   build/tests/bench/metrics_bench [ENDPOINTS] [SECONDS]
#include "gatherstats/observe/status.hpp"

#include "rate.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using namespace gatherstats;
using namespace std::chrono_literals;

using bench::rate;

// A daemon's status with `n` endpoints: a tenth failing, all fetched.
observe::daemon_status sample(std::size_t n) {
  observe::daemon_status s;
  s.version = "0.1.0";
  s.revision = "bench";
  s.configured = true;
  s.started = now_utc() - 3600s;
  for (std::size_t i = 0; i < n; ++i) {
    observe::endpoint_status e;
    e.name = "endpoint-" + std::to_string(i);
    e.url = "https://stats-" + std::to_string(i) + ".example.org/api/v1/stats";
    e.interval = 1s;
    for (int k = 0; k < 100; ++k) {
      fetch_record r;
      r.name = e.name;
      r.fetched_at = now_utc();
      r.outcome.duration = std::chrono::microseconds(1000 + 37 * k);
      r.outcome.http_status = 200;
      r.outcome.bytes = 3600;
      if (i % 10 == 0 && k % 3 == 0) {
        r.outcome.reason = fetch_reason::timeout;
        r.outcome.error = "https://stats.example.org/: timed out reading the response";
      } else {
        for (int row = 0; row < 3; ++row) r.rows.push_back("k" + std::to_string(row), row);
      }
      e.record(r);
      s.fetch_duration.observe(std::chrono::duration<double>(r.outcome.duration).count());
    }
    s.endpoints.push_back(std::move(e));
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t n = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1000;
  double seconds = argc > 2 ? std::strtod(argv[2], nullptr) : 3.0;
  const auto status = sample(n);
  const auto process = observe::read_process_status();
  const auto now = now_utc();
  const std::string metrics = observe::render_metrics(status, process);
  const std::string html = observe::render_status_html(status, now);
  const std::string json_text = observe::render_status_json(status, now);
  const boost::json::value json_doc = boost::json::parse(json_text);
  std::size_t sink = 0;
  double baseline = 0, ours = 0, page = 0;
  // Interleaved, twice, to share whatever else the machine is doing.
  for (int round = 0; round < 2; ++round) {
    baseline += rate(seconds / 3, [&] { sink += boost::json::serialize(json_doc).size(); });
    ours += rate(seconds / 3, [&] { sink += observe::render_metrics(status, process).size(); });
    page += rate(seconds / 3, [&] { sink += observe::render_status_html(status, now).size(); });
  }
  baseline /= 2;
  ours /= 2;
  page /= 2;
  const double proc = rate(seconds / 3, [&] { sink += observe::read_process_status().threads; });
  std::printf(
      "endpoints: %zu; /metrics %zu bytes (%zu lines), status page %zu bytes, JSON %zu bytes\n", n,
      metrics.size(), static_cast<std::size_t>(std::count(metrics.begin(), metrics.end(), '\n')),
      html.size(), json_text.size());
  std::printf(
      "baseline (boost::json::serialize of the status, %zu bytes): %.0f/s = %.2f ms, %.0f MB/s\n",
      json_text.size(), baseline, 1000 / baseline, baseline * json_text.size() / 1e6);
  std::printf("render /metrics: %.0f/s = %.2f ms, %.0f MB/s\n", ours, 1000 / ours,
              ours * metrics.size() / 1e6);
  std::printf("render status page: %.0f/s = %.2f ms\n", page, 1000 / page);
  std::printf("read /proc for process_*: %.0f/s = %.3f ms\n", proc, 1000 / proc);
  std::printf("ratio (/metrics bytes per second vs baseline bytes per second): %.2f\n",
              (ours * metrics.size()) / (baseline * json_text.size()));
  std::printf("a scrape a second costs %.2f%% of a core\n", 100.0 / ours + 100.0 / proc);
  return sink == 0;
}
