// Sampling parameters of one generation. Defaults follow Ollama's documented defaults.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hearth::engine {

struct SamplingParams {
  float temperature = 0.8f;   // <= 0 means greedy
  int32_t top_k = 40;         // <= 0 disables
  float top_p = 0.9f;         // >= 1 disables
  float min_p = 0.0f;         // <= 0 disables
  float repeat_penalty = 1.1f;
  int32_t repeat_last_n = 64;
  std::optional<uint32_t> seed;   // unset: a random seed per request
  int32_t max_tokens = -1;        // < 0: until end of generation or the context is full
  std::vector<std::string> stop;  // never emitted, even when split across tokens
  std::string grammar;            // GBNF; empty for none
  bool ignore_eos = false;        // never sample end-of-generation tokens (benchmarks)

  // Throws EngineError(kInvalidRequest) naming the field when a value is out of range.
  void Validate() const;
};

}  // namespace hearth::engine
