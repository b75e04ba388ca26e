#include "bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace hearth::bench {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  p = std::clamp(p, 0.0, 1.0);
  const double rank = p * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

Summary Summarize(const std::vector<double>& values) {
  Summary s;
  s.count = values.size();
  if (values.empty()) return s;
  s.min = *std::min_element(values.begin(), values.end());
  s.max = *std::max_element(values.begin(), values.end());
  s.median = Percentile(values, 0.5);
  s.p95 = Percentile(values, 0.95);
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  return s;
}

LinearFit FitLine(const std::vector<double>& x, const std::vector<double>& y) {
  LinearFit f;
  const size_t n = std::min(x.size(), y.size());
  f.n = n;
  if (n < 2) return f;
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  double sxx = 0, sxy = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx <= 1e-12) return f;
  f.slope = sxy / sxx;
  f.intercept = my - f.slope * mx;
  f.r2 = syy > 0 ? (sxy * sxy) / (sxx * syy) : 1.0;
  f.ok = true;
  return f;
}

std::optional<double> Crossover(const LinearFit& a, const LinearFit& b) {
  if (!a.ok || !b.ok) return std::nullopt;
  const double dslope = a.slope - b.slope;
  if (std::fabs(dslope) < 1e-12) return std::nullopt;
  const double n = (b.intercept - a.intercept) / dslope;
  if (!(n > 0) || !std::isfinite(n)) return std::nullopt;
  return n;
}

int Faster(const LinearFit& a, const LinearFit& b, double n) {
  const double ta = a.intercept + a.slope * n, tb = b.intercept + b.slope * n;
  if (ta < tb) return -1;
  if (tb < ta) return 1;
  return 0;
}

namespace {
LinearFit Resampled(const Samples& s, std::mt19937_64& rng) {
  const size_t n = std::min(s.tokens.size(), s.total_ms.size());
  std::vector<double> x(n), y(n);
  if (n == 0) return {};
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  for (size_t i = 0; i < n; ++i) {
    const size_t k = pick(rng);
    x[i] = s.tokens[k];
    y[i] = s.total_ms[k];
  }
  return FitLine(x, y);
}
}  // namespace

CrossoverEstimate BootstrapCrossover(const Samples& a, const Samples& b, size_t resamples,
                                     uint64_t seed) {
  CrossoverEstimate e;
  e.point = Crossover(FitLine(a.tokens, a.total_ms), FitLine(b.tokens, b.total_ms));
  e.resamples = resamples;
  std::mt19937_64 rng(seed);
  std::vector<double> values;
  values.reserve(resamples);
  for (size_t r = 0; r < resamples; ++r) {
    const LinearFit fa = Resampled(a, rng), fb = Resampled(b, rng);
    if (auto n = Crossover(fa, fb)) values.push_back(*n);
  }
  e.crossed = values.size();
  if (!values.empty()) {
    e.median = Percentile(values, 0.5);
    e.lo = Percentile(values, 0.05);
    e.hi = Percentile(values, 0.95);
  }
  return e;
}

}  // namespace hearth::bench
