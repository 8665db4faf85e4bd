// The one-shot commands. Each runs its own event loop to completion, prints
// its result on stdout and any failure as one line on stderr, and returns
// the process exit code (0 success, 1 failure).
#pragma once

#include "command_line.hpp"

namespace gatherstatsd {

int run_fetch(const fetch_options& options);
int run_migrate(const migrate_options& options);

}  // namespace gatherstatsd
