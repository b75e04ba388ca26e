// `hearth bench`: latency benchmarks of local and cloud LLM endpoints side by side (TTFT, total
// time, tokens/s per task category), the output length where one overtakes another, and
// `--calibrate --policy FILE` to write that crossover into the routing policy (docs/bench.md).
#pragma once

#include <CLI/CLI.hpp>

namespace hearth::cli {

// Adds the `bench` subcommand. Errors print "hearth: <message>" and exit 1; a run aborted by
// --failure-threshold writes its reports, then exits 1.
void AddBenchCommand(CLI::App& app);

}  // namespace hearth::cli
