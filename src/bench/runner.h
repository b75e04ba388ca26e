// Runs the benchmark: every endpoint x category x run, interleaved round-robin (run i of a
// category goes to every endpoint before run i+1 does) so that drift on the machine or the
// network hits all endpoints alike; `concurrency` workers take jobs in that order.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "bench/client.h"
#include "bench/prompts.h"

namespace hearth::bench {

struct BenchConfig {
  std::vector<Endpoint> endpoints;
  std::vector<Category> categories;
  int runs = 100;    // measured requests per endpoint x category
  int warmup = 5;    // discarded requests per endpoint x category, before the measured ones
  int concurrency = 1;
  double failure_threshold = 0.5;  // abort when failures / finished exceeds it (after 10 requests)
  Timeouts timeouts;
  bool cold = false;  // cold-start measurement (Ollama API endpoints) before the warm runs
  int cold_runs = 3;
  bool progress = false;  // a progress bar on stderr (only when it is a TTY)
};

struct Sample {
  size_t endpoint = 0, category = 0;
  int run = 0;
  std::string prompt_id;
  Result result;
};

struct ColdSample {
  size_t endpoint = 0;
  Result result;
};

struct BenchResult {
  std::vector<Sample> samples;  // measured only, in completion order
  std::vector<ColdSample> cold;
  bool aborted = false;
  std::string abort_reason;
  double elapsed_s = 0;
  std::string started_at;  // ISO 8601 UTC
};

// Throws std::runtime_error on bad configuration.
BenchResult RunBench(const BenchConfig& config);

}  // namespace hearth::bench
