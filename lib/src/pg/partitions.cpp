#include "gatherstats/pg/partitions.hpp"

namespace asio = boost::asio;

namespace gatherstats::pg {

// A stub until the partitioned layout is built: no table is partitioned.
asio::awaitable<outcome<std::optional<std::vector<retention::partition>>>> async_list_partitions(
    connection&, const table_name&, deadline) {
  co_return std::optional<std::vector<retention::partition>>{};
}

asio::awaitable<partition_upkeep> async_keep_partitions(connection&, const table_name&,
                                                        const std::vector<retention::partition>&,
                                                        std::optional<std::chrono::milliseconds>,
                                                        timestamp, deadline) {
  co_return partition_upkeep{};
}

}  // namespace gatherstats::pg
