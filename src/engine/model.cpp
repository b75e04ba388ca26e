#include "engine/model.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "engine/gguf_check.h"
#include "engine/llama_params.h"
#include "llama.h"

namespace hearth::engine {

namespace {

std::atomic<int> g_llama_log_level{0};
// The last error llama.cpp logged on this thread: load failures are only explained there.
thread_local std::string t_last_llama_error;

void LlamaLog(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) {
    t_last_llama_error = text;
    while (!t_last_llama_error.empty() && t_last_llama_error.back() == '\n') t_last_llama_error.pop_back();
  }
  int wanted = g_llama_log_level.load();
  bool show = level == GGML_LOG_LEVEL_ERROR || (level == GGML_LOG_LEVEL_WARN && wanted >= 1) ||
              (level == GGML_LOG_LEVEL_INFO && wanted >= 2) || (level == GGML_LOG_LEVEL_CONT && wanted >= 2);
  if (show) std::fputs(text, stderr);
}

std::string MetaString(const llama_model* model, const char* key) {
  char buf[512];
  int n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
  return n < 0 ? std::string() : std::string(buf, std::min<size_t>(n, sizeof(buf) - 1));
}

}  // namespace

std::string LastLlamaError() { return t_last_llama_error; }
void ClearLlamaError() { t_last_llama_error.clear(); }

llama_model_params ModelParams(const ModelLoadOptions& options) {
  llama_model_params params = llama_model_default_params();
  params.n_gpu_layers = options.n_gpu_layers;
  if (!options.use_mmap) params.load_mode = LLAMA_LOAD_MODE_NONE;
  return params;
}

void InitBackend() {
  static std::once_flag once;
  std::call_once(once, [] {
    llama_log_set(LlamaLog, nullptr);
    llama_backend_init();
  });
}

void SetLlamaLogLevel(int level) { g_llama_log_level = level; }

std::shared_ptr<Model> Model::Load(const std::string& path, const ModelLoadOptions& options) {
  InitBackend();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw EngineError(ErrorKind::kInvalidModel,
                      "model file '" + path + "' does not exist or is not a regular file");
  }
  GgufSummary summary;
  if (!options.skip_validation) summary = CheckGgufFile(path);

  t_last_llama_error.clear();
  llama_model* raw = llama_model_load_from_file(path.c_str(), ModelParams(options));
  if (raw == nullptr) {
    std::string why = t_last_llama_error.empty() ? "llama.cpp could not load it" : t_last_llama_error;
    throw EngineError(ErrorKind::kInvalidModel, "model file '" + path + "' failed to load: " + why);
  }

  std::shared_ptr<Model> model(new Model());
  model->model_ = raw;
  model->vocab_ = llama_model_get_vocab(raw);
  ModelInfo& info = model->info_;
  info.path = path;
  info.architecture = MetaString(raw, "general.architecture");
  info.name = MetaString(raw, "general.name");
  if (info.name.empty()) info.name = std::filesystem::path(path).stem().string();
  char desc[256];
  llama_model_desc(raw, desc, sizeof(desc));
  info.description = desc;
  info.quantization = llama_ftype_name(llama_model_ftype(raw));
  if (const char* tmpl = llama_model_chat_template(raw, nullptr)) info.chat_template = tmpl;
  info.n_params = llama_model_n_params(raw);
  info.size_bytes = llama_model_size(raw);
  info.n_ctx_train = llama_model_n_ctx_train(raw);
  info.n_embd = llama_model_n_embd(raw);
  info.n_layer = llama_model_n_layer(raw);
  info.n_head = llama_model_n_head(raw);
  info.n_head_kv = llama_model_n_head_kv(raw);
  info.n_vocab = llama_vocab_n_tokens(model->vocab_);
  info.tokenizer_bytes = options.skip_validation
                             ? TokenizerBytesEstimate(2ull * info.n_vocab, 16ull * info.n_vocab)  // tokens + merges
                             : TokenizerBytesEstimate(summary.string_array_elements, summary.string_array_bytes);
  info.bos = llama_vocab_bos(model->vocab_);
  info.eos = llama_vocab_eos(model->vocab_);
  info.add_bos = llama_vocab_get_add_bos(model->vocab_);
  info.has_encoder = llama_model_has_encoder(raw);
  info.strip_leading_space = llama_vocab_type(model->vocab_) == LLAMA_VOCAB_TYPE_SPM &&
                             MetaString(raw, "tokenizer.ggml.add_space_prefix") != "false";
  const llama_vocab* v = model->vocab_;
  for (Token t = 0; t < info.n_vocab; ++t) {
    if (llama_vocab_is_eog(model->vocab_, t)) model->eog_tokens_.push_back(t);
  }
  info.fim = FimTokens{llama_vocab_fim_pre(v), llama_vocab_fim_suf(v), llama_vocab_fim_mid(v),
                       llama_vocab_fim_pad(v), llama_vocab_fim_rep(v), llama_vocab_fim_sep(v)};
  return model;
}

Model::~Model() {
  if (model_ != nullptr) llama_model_free(model_);
}

std::vector<Token> Model::Tokenize(std::string_view text, bool add_special, bool parse_special) const {
  if (text.size() > static_cast<size_t>(INT32_MAX / 2)) {
    throw EngineError(ErrorKind::kInvalidRequest, "text to tokenize is too long (over 1 GiB)");
  }
  std::vector<Token> tokens(text.size() / 2 + 8);
  int32_t n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), add_special, parse_special);
  if (n < 0) {
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), add_special, parse_special);
  }
  if (n < 0) throw EngineError(ErrorKind::kInternal, "tokenization failed");
  tokens.resize(static_cast<size_t>(n));
  return tokens;
}

std::string Model::TokenPiece(Token token, bool render_special) const {
  if (!IsValidToken(token)) {
    throw EngineError(ErrorKind::kInvalidRequest,
                      "token id " + std::to_string(token) + " is out of range [0, " +
                          std::to_string(info_.n_vocab) + ")");
  }
  char buf[256];
  int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, render_special);
  if (n >= 0) return std::string(buf, static_cast<size_t>(n));
  std::string big(static_cast<size_t>(-n), '\0');
  n = llama_token_to_piece(vocab_, token, big.data(), static_cast<int32_t>(big.size()), 0, render_special);
  big.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return big;
}

std::string Model::Detokenize(std::span<const Token> tokens, bool render_special) const {
  std::string out;
  for (Token t : tokens) out += TokenPiece(t, render_special);
  return out;
}

bool Model::IsEndOfGeneration(Token token) const { return llama_vocab_is_eog(vocab_, token); }

std::string Model::ApplyChatTemplate(const std::vector<ChatMessage>& messages, bool add_assistant_prompt,
                                     const std::string& template_override) const {
  std::string tmpl = !template_override.empty() ? template_override
                     : !info_.chat_template.empty() ? info_.chat_template
                                                    : std::string("chatml");
  std::vector<llama_chat_message> chat;
  size_t total = 0;
  for (const ChatMessage& m : messages) {
    chat.push_back({m.role.c_str(), m.content.c_str()});
    total += m.role.size() + m.content.size();
  }
  std::string buf(2 * total + 256, '\0');
  int32_t n = llama_chat_apply_template(tmpl.c_str(), chat.data(), chat.size(), add_assistant_prompt,
                                        buf.data(), static_cast<int32_t>(buf.size()));
  if (n > static_cast<int32_t>(buf.size())) {
    buf.resize(static_cast<size_t>(n));
    n = llama_chat_apply_template(tmpl.c_str(), chat.data(), chat.size(), add_assistant_prompt,
                                  buf.data(), static_cast<int32_t>(buf.size()));
  }
  if (n < 0) {
    throw EngineError(ErrorKind::kUnsupported,
                      "the chat template of model '" + info_.name +
                          "' is not one llama.cpp's built-in templates support; pass a template "
                          "name such as 'chatml', 'llama3' or 'mistral-v7' instead");
  }
  buf.resize(static_cast<size_t>(n));
  return buf;
}

std::vector<Token> Model::BuildFimPrompt(std::string_view prefix, std::string_view suffix,
                                         const std::vector<FimExtraFile>& extra) const {
  if (!info_.fim.available()) {
    throw EngineError(ErrorKind::kUnsupported,
                      "model '" + info_.name +
                          "' has no fill-in-the-middle tokens (FIM_PRE/FIM_SUF/FIM_MID); use a code "
                          "model such as Qwen2.5-Coder, StarCoder or DeepSeek-Coder for infill");
  }
  std::vector<Token> out;
  auto append = [&](std::string_view text) {
    std::vector<Token> t = Tokenize(text, false, false);
    out.insert(out.end(), t.begin(), t.end());
  };
  if (info_.add_bos && info_.bos != kNoToken) out.push_back(info_.bos);
  // Repository context goes first: it changes least often, so it stays in the prefix cache.
  if (!extra.empty()) {
    if (info_.fim.rep != kNoToken) {
      out.push_back(info_.fim.rep);
      append("project\n");
    }
    for (const FimExtraFile& file : extra) {
      if (info_.fim.sep != kNoToken) {
        out.push_back(info_.fim.sep);
        append((file.filename.empty() ? std::string("file") : file.filename) + "\n");
      } else {
        append("\n\n--- " + (file.filename.empty() ? std::string("snippet") : file.filename) + " ---\n\n");
      }
      append(file.text);
    }
    if (info_.fim.sep != kNoToken) {
      out.push_back(info_.fim.sep);
      append("current\n");
    }
  }
  out.push_back(info_.fim.pre);
  append(prefix);
  out.push_back(info_.fim.suf);
  append(suffix);
  out.push_back(info_.fim.mid);
  return out;
}

}  // namespace hearth::engine
