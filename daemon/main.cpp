// gatherstatsd: the command line. Everything it does lives in the library
// and in commands.cpp; this file only dispatches.
#include "command_line.hpp"
#include "commands.hpp"
#include "log_sink.hpp"
#include "run.hpp"

#include "gatherstats/version.hpp"

#include <iostream>
#include <variant>

int main(int argc, char** argv) {
  using namespace gatherstatsd;
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_command_line(args);
  if (!parsed.parsed) {
    std::cerr << "gatherstatsd: error: " << parsed.error << "\n(see gatherstatsd --help)\n";
    return 2;
  }
  try {
    return std::visit(
        [](auto& cmd) -> int {
          using T = std::decay_t<decltype(cmd)>;
          if constexpr (std::is_same_v<T, show_help>) {
            std::cout << usage;
            return 0;
          } else if constexpr (std::is_same_v<T, show_version>) {
            std::cout << "gatherstatsd " << gatherstats::version << " (revision "
                      << gatherstats::revision << ")\n";
            return 0;
          } else if constexpr (std::is_same_v<T, fetch_options>) {
            return run_fetch(cmd);
          } else if constexpr (std::is_same_v<T, migrate_options>) {
            return run_migrate(cmd);
          } else {
            return run_daemon(cmd);
          }
        },
        *parsed.parsed);
  } catch (const std::exception& e) {
    std::cerr << "gatherstatsd: error: internal: " << redact_secrets(e.what()) << "\n";
    return 70;
  }
}
