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
  // A lazy grammar (tool calls inside free text) leaves the output free until it matches a
  // trigger pattern (a regex) or token, and constrains it from the match on.
  bool grammar_lazy = false;
  std::vector<std::string> grammar_trigger_patterns;
  std::vector<int32_t> grammar_trigger_tokens;
  // Text the prompt already ends with that a strict grammar expects first (a chat
  // template's generation prompt, e.g. "<|im_start|>assistant\n"): fed to the grammar
  // before the first token is sampled.
  std::string grammar_prefix;
  // Control tokens to emit as text instead of dropping them: a tool-call format's markers,
  // which the reply parser needs to see.
  std::vector<int32_t> preserved_tokens;
  bool ignore_eos = false;        // never sample end-of-generation tokens (benchmarks)

  // Throws EngineError(kInvalidRequest) naming the field when a value is out of range.
  void Validate() const;
};

}  // namespace hearth::engine
