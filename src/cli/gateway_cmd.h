// Privacy-gateway commands: `hearth policy check`, `hearth route --explain`,
// `hearth approvals` / `approve` / `deny`, and `hearth doctor`.
#pragma once

#include <CLI/CLI.hpp>

namespace hearth::cli {
void AddGatewayCommands(CLI::App& app);
}
