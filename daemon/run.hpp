// `gatherstatsd [--config FILE] [--check | --once]`: the daemon itself.
// Returns the exit code: 0 after a clean stop (SIGTERM/SIGINT), 2 for an
// invalid configuration, 1 when --once saw a fetch fail.
#pragma once

#include "command_line.hpp"

namespace gatherstatsd {

int run_daemon(const run_options& options);

}  // namespace gatherstatsd
