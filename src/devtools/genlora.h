// Writes LoRA adapters (GGUF, llama.cpp's adapter format) with random weights for a model
// shape from genmodel.h, for tests of adapter loading (Modelfile ADAPTER).
#pragma once

#include <cstdint>
#include <string>

#include "devtools/genmodel.h"

namespace hearth::devtools {

struct GenLoraOptions {
  ModelShape shape = TinyShape();
  int32_t rank = 4;
  float alpha = 4.0f;   // adapter.lora.alpha: the delta is scaled by alpha / rank
  float stddev = 0.5f;  // of the random A and B entries: large enough to change greedy output
  uint64_t seed = 7;
  std::string output_path;
};

// Adapts attn_q and attn_output of every layer. Atomic (temp file, rename); throws
// std::runtime_error naming what failed.
void GenerateLora(const GenLoraOptions& options);

}  // namespace hearth::devtools
