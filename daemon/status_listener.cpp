#include "status_listener.hpp"

#include "gatherstats/observe/pages.hpp"
#include "gatherstats/version.hpp"

namespace gatherstatsd {

using namespace gatherstats;

observe::server_settings server_settings_of(const config::metrics_config& m) {
  observe::server_settings s;
  s.listen = m.listen;
  s.cert_file = m.cert_file;
  s.key_file = m.key_file;
  s.client_ca_file = m.client_ca_file;
  s.basic_auth_users = m.basic_auth_users;
  s.max_connections = m.max_connections;
  return s;
}

status_listener::status_listener(boost::asio::any_io_executor ex,
                                 boost::asio::any_io_executor blocking, const collector& c,
                                 const daemon_facts& facts)
    : ex_(ex), blocking_(blocking), collector_(c), facts_(facts) {}

observe::daemon_status status_listener::snapshot() const {
  auto s = collector_.observe();
  s.version = version;
  s.revision = revision;
  s.started = facts_.started;
  s.config_file = facts_.config_file;
  s.stopping = facts_.stopping;
  s.last_reload_ok = facts_.last_reload_ok;
  s.last_reload = facts_.last_reload;
  s.last_reload_error = facts_.last_reload_error;
  if (server_) {
    auto st = server_->stats();
    s.listener = observe::listener_status{
        server_->connections(), st.accepted,  st.refused,           st.requests, st.rejected,
        st.unauthorized,        st.timed_out, st.handshake_failures};
  }
  return s;
}

outcome<void> status_listener::apply(const config::metrics_config& m) {
  if (m.listen.empty()) {
    stop();
    return {};
  }
  auto settings = server_settings_of(m);
  if (server_) return server_->reconfigure(std::move(settings));
  auto handler = [this](const observe::server_request& req) {
    observe::status_source source = [this] { return snapshot(); };
    auto page = observe::serve_page(req.target, source, now_utc());
    observe::server_response r;
    r.status = page.status;
    r.content_type = std::move(page.content_type);
    r.body = std::move(page.body);
    r.headers.emplace_back("Cache-Control", "no-store");
    return r;
  };
  auto created = observe::http_server::create(ex_, blocking_, std::move(settings), handler);
  if (!created) return created.error();
  server_.emplace(std::move(*created));
  server_->start();
  return {};
}

void status_listener::stop() {
  if (server_) server_->stop();
  server_.reset();
}

std::string status_listener::address() const {
  return server_ ? server_->local_address() : std::string();
}

}  // namespace gatherstatsd
