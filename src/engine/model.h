// A loaded GGUF model: weights, vocabulary, metadata and prompt formatting.
//
// A Model is immutable after Load and safe to share between threads (shared_ptr). It owns
// the llama.cpp model; contexts (KV caches) live in Scheduler and Embedder. Load validates
// the file with CheckGgufFile first, so a corrupt or hostile file yields EngineError
// (kInvalidModel), never an abort.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.h"

struct llama_model;
struct llama_vocab;

namespace hearth::engine {

using Token = int32_t;
constexpr Token kNoToken = -1;

struct FimTokens {
  Token pre = kNoToken, suf = kNoToken, mid = kNoToken;
  Token pad = kNoToken, rep = kNoToken, sep = kNoToken;
  bool available() const { return pre != kNoToken && suf != kNoToken && mid != kNoToken; }
};

struct ModelInfo {
  std::string path;
  std::string name;          // general.name, else the file stem
  std::string architecture;  // general.architecture, e.g. "qwen2", "llama"
  std::string description;   // llama.cpp's one-line description, e.g. "qwen2 1B Q8_0"
  std::string quantization;  // file type, e.g. "Q8_0", "Q4_K - Medium", "all F32"
  std::string chat_template; // tokenizer.chat_template, empty when the model has none
  uint64_t n_params = 0;
  uint64_t size_bytes = 0;   // bytes of tensor data
  uint64_t tokenizer_bytes = 0;  // estimated host memory of the tokenizer's tables
  int32_t n_ctx_train = 0;
  int32_t n_embd = 0;
  int32_t n_layer = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t n_vocab = 0;
  Token bos = kNoToken;
  Token eos = kNoToken;
  bool add_bos = false;      // the vocabulary wants BOS at the start of a prompt
  // SentencePiece vocabularies prefix the first word with a space; text that starts a
  // document drops it (as llama.cpp's detokenizer does).
  bool strip_leading_space = false;
  FimTokens fim;
  bool has_encoder = false;
};

struct ModelLoadOptions {
  int n_gpu_layers = 0;      // layers to offload when built with a GPU backend
  bool use_mmap = true;
  bool skip_validation = false;  // only for files hearth generated itself
};

// A function call the assistant made (OpenAI's tool_calls[].function).
struct ToolCall {
  std::string id;         // links the tool's result to the call; may be empty
  std::string name;
  std::string arguments;  // a JSON object, as text
};

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "tool"
  std::string content;
  std::vector<ToolCall> tool_calls;  // assistant: the calls it made
  std::string tool_call_id;          // tool: the call this message is the result of
  std::string tool_name;             // tool: the function that produced it
};

// One file of repository context for repository-level FIM (llama.cpp's input_extra).
struct FimExtraFile {
  std::string filename;
  std::string text;
};

class Model {
 public:
  // Throws EngineError(kInvalidModel) naming the path and the problem.
  static std::shared_ptr<Model> Load(const std::string& path, const ModelLoadOptions& options = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelInfo& info() const { return info_; }

  // add_special: add BOS/EOS as the vocabulary requires; parse_special: turn text such as
  // "<|im_start|>" into its control token instead of plain text.
  std::vector<Token> Tokenize(std::string_view text, bool add_special, bool parse_special) const;
  // The bytes of one token (may be a partial UTF-8 sequence). Control tokens render as ""
  // unless render_special.
  std::string TokenPiece(Token token, bool render_special = false) const;
  std::string Detokenize(std::span<const Token> tokens, bool render_special = false) const;
  bool IsValidToken(Token token) const { return token >= 0 && token < info_.n_vocab; }
  bool IsEndOfGeneration(Token token) const;
  const std::vector<Token>& end_of_generation_tokens() const { return eog_tokens_; }

  // Renders messages with the model's chat template (or template_override, a template name
  // or Jinja source llama.cpp recognises). Models without a template fall back to ChatML.
  // Throws kUnsupported when the template is not one llama.cpp can apply.
  std::string ApplyChatTemplate(const std::vector<ChatMessage>& messages, bool add_assistant_prompt,
                                const std::string& template_override = "") const;

  // Builds a fill-in-the-middle prompt: [BOS] [repo context] PRE prefix SUF suffix MID.
  // Extra files use FIM_REP/FIM_SEP where the vocabulary has them. Throws kUnsupported when
  // the vocabulary has no FIM tokens.
  std::vector<Token> BuildFimPrompt(std::string_view prefix, std::string_view suffix,
                                    const std::vector<FimExtraFile>& extra = {}) const;

  llama_model* raw() const { return model_; }  // for engine internals only
  const llama_vocab* vocab() const { return vocab_; }

 private:
  Model() = default;
  llama_model* model_ = nullptr;
  const llama_vocab* vocab_ = nullptr;
  ModelInfo info_;
  std::vector<Token> eog_tokens_;
};

enum class QuantType { kF32, kF16, kQ8_0, kQ4_K_M };

// Quantizes a GGUF model file with llama.cpp's own quantizer (same tensor-type mix as
// llama-quantize). Throws EngineError on failure.
void QuantizeModel(const std::string& input_path, const std::string& output_path, QuantType type,
                   int n_threads = 0);

// Initialises llama.cpp's backends once and routes its log through hearth's logger.
// Called by Model::Load; safe to call repeatedly from any thread.
void InitBackend();

// Sets how verbose llama.cpp's own log is (0 = errors only, 1 = warnings, 2 = info).
void SetLlamaLogLevel(int level);

}  // namespace hearth::engine
