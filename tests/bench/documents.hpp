// Documents the benchmarks measure with, generated so that no large file is
// kept in the tree.
#pragma once

#include <cstddef>
#include <string>

namespace bench_documents {

// The original tool's asset_counts shape with about `rows` numbers (three
// per institution): 30,003 rows is the original's large measured document.
inline std::string asset_counts(std::size_t rows) {
  std::string doc = R"({"asset_counts":{"all":{"total":123456,"completed":120001,)"
                    R"("with_personal_data":33333},"by_institution":{)";
  for (std::size_t i = 0; i * 3 + 3 < rows; ++i) {
    if (i) doc += ',';
    doc += "\"INST" + std::to_string(i) + "\":{\"total\":" + std::to_string(1000 + i) +
           ",\"completed\":" + std::to_string(900 + i) +
           ",\"with_personal_data\":" + std::to_string(i % 97) + "}";
  }
  return doc + "}}}";
}

}  // namespace bench_documents
