// Writes GGUF models with random weights and a real tokenizer, for tests and benchmarks.
//
// The architecture is qwen2 (the Qwen2.5-Coder family). The tokenizer (every tokenizer.*
// key) is copied from one of llama.cpp's bundled vocab-only files, e.g. "starcoder",
// "refact" and "deepseek-coder" (these carry FIM tokens) or "qwen2" (no FIM tokens).
// Weights are drawn from a seeded normal distribution, so the same options give the same
// file byte for byte. Quantized types are produced with llama.cpp's own quantizer
// (engine::QuantizeModel), i.e. the same tensor-type mix as llama-quantize.
#pragma once

#include <cstdint>
#include <string>

#include "engine/model.h"

namespace hearth::devtools {

struct ModelShape {
  std::string name;
  int32_t n_layer = 0;
  int32_t n_embd = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t n_ff = 0;
  float rope_theta = 1e6f;
  int32_t n_ctx_train = 32768;
};

ModelShape TinyShape();                // 2 layers, n_embd 64: loads and runs in milliseconds
ModelShape Qwen25Coder05BShape();      // 24 layers, n_embd 896, 14 heads, 2 KV heads, ff 4864
// "tiny" or "qwen2.5-coder-0.5b"; throws std::invalid_argument listing the known names.
ModelShape ShapeByName(const std::string& name);

struct GenModelOptions {
  ModelShape shape = TinyShape();
  std::string vocab = "starcoder";   // a bundled vocab name, or a path to a GGUF with a tokenizer
  engine::QuantType type = engine::QuantType::kF32;
  uint64_t seed = 42;
  std::string output_path;
  std::string chat_template;         // tokenizer.chat_template to write; empty: ChatML
};

// Writes the model to options.output_path (atomically: temp file, then rename).
// Throws std::runtime_error with a message naming what failed.
void GenerateModel(const GenModelOptions& options);

// Path of a vocab file bundled with llama.cpp ("starcoder" -> .../ggml-vocab-starcoder.gguf).
std::string BundledVocabPath(const std::string& name);

}  // namespace hearth::devtools
