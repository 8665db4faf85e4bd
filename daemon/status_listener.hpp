// The daemon's HTTP listener (metrics.listen): the library's server
// (observe/http_server.hpp) serving the library's pages (observe/pages.hpp)
// from a status snapshot of the collector plus what only the daemon knows:
// its configuration file, its reloads, whether it is stopping.
//
// Lifecycle: apply() at start (a listener that cannot bind is an error the
// daemon exits with) and at every reload (an error is returned, the old
// listener keeps serving); stop() after the collector has stopped, so that
// /readyz answers 503 while the daemon drains.
//
// Threading: everything on the event loop.
#pragma once

#include "gatherstats/collector.hpp"
#include "gatherstats/config/config.hpp"
#include "gatherstats/observe/http_server.hpp"
#include "gatherstats/observe/status.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <optional>
#include <string>

namespace gatherstatsd {

// What the daemon adds to the collector's status.
struct daemon_facts {
  gatherstats::timestamp started{};
  std::string config_file;
  bool stopping = false;
  bool last_reload_ok = true;
  std::optional<gatherstats::timestamp> last_reload;
  std::string last_reload_error;
};

class status_listener {
 public:
  status_listener(boost::asio::any_io_executor ex, boost::asio::any_io_executor blocking,
                  const gatherstats::collector& c, const daemon_facts& facts);

  // Starts, reconfigures or stops the listener as `m` says.
  gatherstats::outcome<void> apply(const gatherstats::config::metrics_config& m);
  void stop();
  // "127.0.0.1:9187"; empty when not listening.
  std::string address() const;

  gatherstats::observe::daemon_status snapshot() const;

 private:
  boost::asio::any_io_executor ex_, blocking_;
  const gatherstats::collector& collector_;
  const daemon_facts& facts_;
  std::optional<gatherstats::observe::http_server> server_;
};

gatherstats::observe::server_settings server_settings_of(
    const gatherstats::config::metrics_config& m);

}  // namespace gatherstatsd
