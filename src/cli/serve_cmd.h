// `hearth serve`: the Ollama-, OpenAI- and llama.cpp-compatible server.
#pragma once

#include <CLI/CLI.hpp>

namespace hearth::cli {
void AddServeCommand(CLI::App& app);
}
