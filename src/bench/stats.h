// Statistics for `hearth bench`: order statistics, least-squares fits of total time on output
// length, the crossover length where one endpoint overtakes another, and its bootstrap interval.
// Pure functions, no I/O: tests/bench_test.cpp checks them against hand-computed values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hearth::bench {

// Linear interpolation between closest ranks (numpy's default, "type 7"): p in [0, 1].
// An empty sample gives 0.
double Percentile(std::vector<double> values, double p);

struct Summary {
  size_t count = 0;
  double min = 0, median = 0, p95 = 0, max = 0, mean = 0;
};
Summary Summarize(const std::vector<double>& values);

// total = intercept + slope * n, ordinary least squares. intercept estimates TTFT (ms), slope
// the time per output token (ms), so 1000 / slope is the decode rate in tokens/s.
struct LinearFit {
  double intercept = 0, slope = 0;
  double r2 = 0;
  size_t n = 0;
  bool ok = false;  // false with fewer than 2 points or no spread in x
};
LinearFit FitLine(const std::vector<double>& x, const std::vector<double>& y);

// The output length n* > 0 where the two lines cross (a.intercept + a.slope n* =
// b.intercept + b.slope n*): below it the endpoint with the smaller intercept (TTFT) finishes
// first, above it the one with the smaller slope (faster decode). Empty when they do not cross
// at a positive length: then one endpoint is at least as fast at every length (see Faster()).
std::optional<double> Crossover(const LinearFit& a, const LinearFit& b);

// Which of the two is faster for an output of n tokens: -1 a, +1 b, 0 equal.
int Faster(const LinearFit& a, const LinearFit& b, double n);

// Bootstrap of the crossover: resample each endpoint's (n, total) pairs with replacement,
// refit both, recompute n*. `crossed` counts resamples where the lines crossed at n* > 0.
struct CrossoverEstimate {
  std::optional<double> point;      // from all the data
  double median = 0, lo = 0, hi = 0;  // over resamples that crossed (5% and 95% for lo/hi)
  size_t resamples = 0, crossed = 0;
};
struct Samples {
  std::vector<double> tokens, total_ms;
};
CrossoverEstimate BootstrapCrossover(const Samples& a, const Samples& b, size_t resamples,
                                     uint64_t seed);

}  // namespace hearth::bench
