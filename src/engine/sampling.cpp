#include "engine/sampling.h"

#include <cmath>

#include "engine/error.h"

namespace hearth::engine {

namespace {
void Require(bool ok, const std::string& message) {
  if (!ok) throw EngineError(ErrorKind::kInvalidRequest, message);
}
}  // namespace

void SamplingParams::Validate() const {
  Require(std::isfinite(temperature) && temperature >= 0 && temperature <= 100,
          "temperature must be between 0 and 100 (0 = greedy)");
  Require(top_k >= 0 && top_k <= 1'000'000, "top_k must be between 0 and 1000000 (0 = disabled)");
  Require(std::isfinite(top_p) && top_p >= 0 && top_p <= 1, "top_p must be between 0 and 1");
  Require(std::isfinite(min_p) && min_p >= 0 && min_p <= 1, "min_p must be between 0 and 1");
  Require(std::isfinite(repeat_penalty) && repeat_penalty > 0 && repeat_penalty <= 100,
          "repeat_penalty must be greater than 0 and at most 100 (1 = disabled)");
  Require(repeat_last_n >= -1 && repeat_last_n <= 1'000'000,
          "repeat_last_n must be between -1 (whole context) and 1000000");
  Require(max_tokens >= -1 && max_tokens <= 10'000'000,
          "max_tokens must be -1 (unlimited) or between 0 and 10000000");
  // 16 from the request, plus the few a chat template's tool-call format adds.
  Require(stop.size() <= 32, "at most 32 stop strings are allowed");
  for (const std::string& s : stop) {
    Require(s.size() <= 1024, "each stop string must be at most 1024 bytes");
  }
  Require(grammar.size() <= 1'000'000, "grammar must be at most 1 MB");
  Require(!grammar_lazy || !grammar_trigger_patterns.empty() || !grammar_trigger_tokens.empty(),
          "a lazy grammar needs at least one trigger pattern or token");
}

}  // namespace hearth::engine
