// `hearth run`: one completion from a model file, streamed to stdout.
#pragma once

#include <CLI/CLI.hpp>

namespace hearth::cli {
void AddRunCommand(CLI::App& app);
}
