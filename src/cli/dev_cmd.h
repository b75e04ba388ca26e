// `hearth dev ...`: developer tools (test-model generation).
#pragma once

#include <CLI/CLI.hpp>

namespace hearth::cli {

// Adds the `dev` subcommand with `dev gen-model`. On failure the command prints
// "hearth: <message>" to stderr and throws CLI::RuntimeError(1), which CLI::App::exit turns
// into exit code 1 without printing anything more.
void AddDevCommands(CLI::App& app);

}  // namespace hearth::cli
