// What `hearth bench` reports: per endpoint x category order statistics, the per-endpoint fit
// total = TTFT + n / rate, the crossover lengths between endpoints (bootstrap interval), and
// the outputs: a terminal table, JSON, and a self-contained HTML report (inline SVG drawn by
// inline JS; no network).
#pragma once

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/runner.h"
#include "bench/stats.h"

namespace hearth::bench {

struct CellStats {
  size_t endpoint = 0, category = 0;
  size_t requests = 0, ok = 0;
  std::map<std::string, size_t> failures;  // kind -> count
  Summary ttft_ms, total_ms, output_tokens, tokens_per_s;
};

struct EndpointFit {
  Samples samples;  // successful measured requests, all categories
  LinearFit fit;    // total_ms = intercept + slope * output_tokens
};

struct PairCrossover {
  size_t a = 0, b = 0;
  CrossoverEstimate estimate;
  // Which endpoint wins for short and for long outputs (the same one when they do not cross).
  size_t faster_short = 0, faster_long = 0;
  bool comparable = false;  // both endpoints have a fit; otherwise nothing above is meaningful
};

struct Analysis {
  std::vector<CellStats> cells;
  std::vector<EndpointFit> fits;  // per endpoint
  std::vector<PairCrossover> pairs;
  std::vector<Summary> cold_ttft_ms;  // per endpoint (count 0: not measured)
};

// tokens/s of one request: (n - 1) / (total - TTFT), the decode rate after the first token.
double DecodeRate(const Result& r);

Analysis Analyze(const BenchConfig& cfg, const BenchResult& result, size_t bootstrap_resamples,
                 uint64_t seed);

void PrintTable(std::FILE* out, const BenchConfig& cfg, const BenchResult& result, const Analysis& a);
nlohmann::json ReportJson(const BenchConfig& cfg, const BenchResult& result, const Analysis& a);
std::string ReportHtml(const nlohmann::json& report);

}  // namespace hearth::bench
