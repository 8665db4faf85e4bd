// (being written)
#include "gatherstats/cluster/member.hpp"

namespace gatherstats::cluster {

struct member::state {
  member_settings settings;
  std::vector<std::string> members;
};

member::member(boost::asio::any_io_executor, member_settings settings, members_callback,
               log::event_sink)
    : state_(std::make_shared<state>()) {
  state_->settings = std::move(settings);
  state_->members = {state_->settings.cluster.member};
}
member::~member() = default;
boost::asio::awaitable<void> member::async_start(pg::deadline) { co_return; }
void member::set_share(std::size_t, std::size_t) {}
void member::count_fenced() {}
boost::asio::awaitable<void> member::async_leave(pg::deadline) { co_return; }
observe::cluster_status member::status() const { return {}; }
const std::vector<std::string>& member::members() const { return state_->members; }
bool member::lease_valid() const { return false; }

}  // namespace gatherstats::cluster
