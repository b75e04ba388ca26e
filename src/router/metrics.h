// Request counters and latency histograms, rendered in Prometheus' text format.
// Thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace hearth::router {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);
  // Appends "<name>_bucket{le=...}", "_sum" and "_count" lines.
  void Render(const std::string& name, const std::string& help, std::string& out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void CountRequest(const std::string& endpoint, int status);
  void ObserveGeneration(int prompt_tokens, int cached_tokens, int completion_tokens, double ttft_ms,
                         double generation_ms);
  // gauges: name -> value, supplied at render time (queue depth, running, loaded models)
  std::string Render(const std::map<std::string, double>& gauges) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, cached_tokens_ = 0, generated_tokens_ = 0;
  Histogram ttft_seconds_;
  Histogram token_seconds_;
};

}  // namespace hearth::router
