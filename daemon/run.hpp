// `gatherstatsd [--config FILE] [--check | --once] [--log-target T]
// [--log-level L]`: the daemon itself. Its events go to journald or stderr
// (log_sink.hpp); under systemd it speaks sd_notify (notify.hpp).
// Returns the exit code: 0 after a clean stop (SIGTERM/SIGINT), 2 for an
// invalid configuration, 1 when --once saw a fetch fail.
#pragma once

#include "command_line.hpp"

namespace gatherstatsd {

int run_daemon(const run_options& options);

}  // namespace gatherstatsd
