// Flattening throughput against its baseline measured in the same run:
// Boost.JSON parsing the same bytes into a boost::json::value and doing
// nothing else. Prints MB/s, rows/s and the ratio (target: >= 0.75).
//
//   build/tests/bench/flatten_bench [ROWS] [SECONDS]
//
// The document is the original's asset_counts shape: institutions with
// three numbers each, plus the "all" totals (30,003 rows by default).
#include "gatherstats/json/flatten.hpp"

#include "documents.hpp"
#include "rate.hpp"

#include <boost/json/parse.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using bench_documents::asset_counts;

using bench::rate;

}  // namespace

int main(int argc, char** argv) {
  std::size_t rows = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 30'003;
  double seconds = argc > 2 ? std::strtod(argv[2], nullptr) : 3.0;
  const std::string doc = asset_counts(rows);
  auto check = gatherstats::json::flatten(doc);
  if (!check) {
    std::fprintf(stderr, "flatten failed: %s\n", check.error().message.c_str());
    return 1;
  }
  const double mb = doc.size() / 1e6;
  std::size_t sink = 0;
  // Interleave to share whatever the machine is doing: baseline, ours, twice.
  double baseline = 0, ours = 0;
  for (int round = 0; round < 2; ++round) {
    baseline += rate(seconds / 2, [&] { sink += boost::json::parse(doc).as_object().size(); });
    ours += rate(seconds / 2, [&] { sink += gatherstats::json::flatten(doc)->size(); });
  }
  baseline /= 2;
  ours /= 2;
  std::printf("document: %zu bytes, %zu rows\n", doc.size(), check->size());
  std::printf("boost::json::parse (baseline): %8.1f MB/s %12.0f rows/s\n", baseline * mb,
              baseline * check->size());
  std::printf("gatherstats flatten:           %8.1f MB/s %12.0f rows/s\n", ours * mb,
              ours * check->size());
  std::printf("ratio flatten / parse: %.2f (target >= 0.75)\n", ours / baseline);
  return sink == 0;  // keeps the work from being optimised away
}
