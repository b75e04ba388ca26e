#include "router/metrics.h"

#include <cstdio>

namespace hearth::router {

namespace {
std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}
}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  counts_[i] += 1;
  sum_ += value;
  count_ += 1;
}

void Histogram::Render(const std::string& name, const std::string& help, std::string& out) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + Num(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum " + Num(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_seconds_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      token_seconds_({0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1}) {}

void Metrics::CountRequest(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  requests_[{endpoint, status}] += 1;
}

void Metrics::ObserveGeneration(int prompt_tokens, int cached_tokens, int completion_tokens, double ttft_ms,
                                double generation_ms) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += static_cast<uint64_t>(prompt_tokens);
  cached_tokens_ += static_cast<uint64_t>(cached_tokens);
  generated_tokens_ += static_cast<uint64_t>(completion_tokens);
  if (completion_tokens > 0) ttft_seconds_.Observe(ttft_ms / 1000.0);
  if (completion_tokens > 1) token_seconds_.Observe(generation_ms / 1000.0 / (completion_tokens - 1));
}

std::string Metrics::Render(const std::map<std::string, double>& gauges) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  out += "# HELP hearth_requests_total HTTP requests by endpoint and status.\n# TYPE hearth_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    out += "hearth_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n) + "\n";
  }
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " +
           std::to_string(v) + "\n";
  };
  counter("hearth_prompt_tokens_total", "Prompt tokens received.", prompt_tokens_);
  counter("hearth_prompt_tokens_cached_total", "Prompt tokens served from the prefix cache.", cached_tokens_);
  counter("hearth_generated_tokens_total", "Tokens generated.", generated_tokens_);
  for (const auto& [name, v] : gauges) {
    out += "# TYPE " + name + " gauge\n" + name + " " + Num(v) + "\n";
  }
  ttft_seconds_.Render("hearth_time_to_first_token_seconds", "Time from request to first generated token.", out);
  token_seconds_.Render("hearth_time_per_output_token_seconds", "Mean time between generated tokens per request.", out);
  return out;
}

}  // namespace hearth::router
