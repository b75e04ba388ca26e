// `hearth pull | import | create | list | show | rm | cp | verify`: the model store
// (docs/store.md). Every command takes --store DIR (default $HEARTH_MODELS, else
// ~/.local/share/hearth/models) and works on the store directly, without a server.
// Errors print "hearth: <message>" and exit 1 (EngineError / CLI::RuntimeError); `verify`
// exits 1 when any blob is corrupt or any manifest is broken.
#pragma once

#include <CLI/CLI.hpp>

namespace hearth::cli {

void AddStoreCommands(CLI::App& app);

}  // namespace hearth::cli
