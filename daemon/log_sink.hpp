// Turns the library's events into log lines: one readable line per event on
// stderr. (journald with structured fields comes with the systemd work.)
#pragma once

#include "gatherstats/log/event.hpp"

#include <string>

namespace gatherstatsd {

// "error: fetch failed endpoint=iar duration_ms=10001: https://...: timed out"
std::string format_event(const gatherstats::log::event& e);

// A sink that writes format_event() lines to stderr, each with one write().
gatherstats::log::event_sink stderr_sink(gatherstats::log::severity min_level);

}  // namespace gatherstatsd
