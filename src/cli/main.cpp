// hearth: local-first AI coding-assistant server. One binary, subcommands.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "cli/audit_cmd.h"
#include "cli/bench_cmd.h"
#include "cli/dev_cmd.h"
#include "cli/gateway_cmd.h"
#include "cli/run_cmd.h"
#include "cli/serve_cmd.h"
#include "cli/store_cmd.h"
#include "engine/error.h"

int main(int argc, char** argv) {
  CLI::App app{"hearth: local-first AI coding assistant server"};
  app.require_subcommand(1);
  app.add_subcommand("version", "Print hearth's version and the llama.cpp it was built with")->callback([] {
    std::printf("hearth %s (llama.cpp %.12s)\n", HEARTH_VERSION, HEARTH_LLAMA_COMMIT);
  });
  hearth::cli::AddRunCommand(app);
  hearth::cli::AddServeCommand(app);
  hearth::cli::AddDevCommands(app);
  hearth::cli::AddGatewayCommands(app);
  hearth::cli::AddAuditCommands(app);
  hearth::cli::AddBenchCommand(app);
  hearth::cli::AddStoreCommands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const hearth::engine::EngineError& e) {
    std::fprintf(stderr, "hearth: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hearth: %s\n", e.what());
    return 1;
  }
  return 0;
}
