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
#include <map>
#include <string>
#include <vector>

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

struct GenModelResult {
  std::string path;         // absolute path of the written file
  uint64_t file_bytes = 0;  // size of the file
  uint64_t n_params = 0;    // weights in the model (token_embd counted once: it is tied)
  int32_t n_vocab = 0;      // tokens in the vocabulary
};

// Writes the model to options.output_path (atomically: temp file, then rename), creating
// missing parent directories. Throws std::runtime_error with a message naming what failed.
GenModelResult GenerateModel(const GenModelOptions& options);

// Path of a vocab file bundled with llama.cpp ("starcoder" -> .../ggml-vocab-starcoder.gguf).
std::string BundledVocabPath(const std::string& name);

// Path of a chat template bundled with llama.cpp ("Qwen-Qwen2.5-7B-Instruct" ->
// .../models/templates/Qwen-Qwen2.5-7B-Instruct.jinja), for test models that call tools.
std::string BundledTemplatePath(const std::string& name);

// A GGUF file's metadata and tensor table as read back by ggml's gguf API, for tests and
// developer tools (code outside src/engine and src/devtools has no ggml headers).
struct GgufValue {
  std::string type;                   // gguf_type_name: "u8" ... "f64", "bool", "str", "arr"
  std::string array_type;             // element type name for arrays, else ""
  std::string text;                   // a scalar as text (strings verbatim; "" for arrays)
  std::vector<std::string> elements;  // an array's elements as text (strings verbatim)
  bool operator==(const GgufValue&) const = default;
};

struct GgufTensorDesc {
  std::string name;
  std::string type;            // ggml_type_name, e.g. "f32", "f16", "q8_0"
  std::vector<int64_t> shape;  // ggml order (ne[0] first), trailing 1s dropped
  uint64_t bytes = 0;
};

struct GgufContents {
  uint32_t version = 0;
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorDesc> tensors;  // in file order
  const GgufValue* Find(const std::string& key) const {
    auto it = metadata.find(key);
    return it == metadata.end() ? nullptr : &it->second;
  }
};

// Reads path with gguf_init_from_file (metadata only; meant for trusted files: use
// engine::CheckGgufFile for untrusted ones). Throws std::runtime_error when it cannot.
GgufContents ReadGguf(const std::string& path);

}  // namespace hearth::devtools
