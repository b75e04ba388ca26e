// `hearth audit ...`: inspect and check the privacy gateway's audit log (docs/audit.md).
#pragma once

#include <CLI/CLI.hpp>

namespace hearth::cli {

// Adds the `audit` subcommand with `verify`, `show`, `export` and `head`. Each takes
// `--db FILE` (default: $HEARTH_AUDIT_DB, else ~/.local/share/hearth/audit.db) and never
// creates a log that is not there. `verify` exits 1 when the chain is broken; errors print
// "hearth: <message>" to stderr and exit 1 (CLI::RuntimeError), like the other commands.
void AddAuditCommands(CLI::App& app);

}  // namespace hearth::cli
