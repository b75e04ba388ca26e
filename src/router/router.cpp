#include "router/router.h"

#include <chrono>

namespace hearth::router {

using engine::EngineError;
using engine::ErrorKind;
using engine::Token;

const char* EndpointName(Endpoint e) {
  switch (e) {
    case Endpoint::kGenerate: return "generate";
    case Endpoint::kChat: return "chat";
    case Endpoint::kCompletion: return "completion";
    case Endpoint::kInfill: return "infill";
    case Endpoint::kEmbedding: return "embedding";
  }
  return "unknown";
}

Router::Router(engine::ModelPool& pool) : pool_(pool) {}

namespace {

// Chat templates often spell BOS out themselves; tokenizing with add_special then doubles it.
std::vector<Token> TokenizeTemplated(const engine::Model& model, const std::string& text) {
  std::vector<Token> tokens = model.Tokenize(text, true, true);
  Token bos = model.info().bos;
  if (tokens.size() >= 2 && bos != engine::kNoToken && tokens[0] == bos && tokens[1] == bos) {
    tokens.erase(tokens.begin());
  }
  return tokens;
}

}  // namespace

std::vector<Token> Router::BuildPrompt(const engine::Model& model, const InferenceRequest& r) const {
  std::vector<Token> tokens;
  switch (r.endpoint) {
    case Endpoint::kInfill: {
      if (!r.fim) throw EngineError(ErrorKind::kInvalidRequest, "an infill request needs a prefix and a suffix");
      tokens = model.BuildFimPrompt(r.fim->prefix, r.fim->suffix, r.fim->extra);
      if (!r.fim->middle.empty()) {
        std::vector<Token> middle = model.Tokenize(r.fim->middle, false, false);
        tokens.insert(tokens.end(), middle.begin(), middle.end());
      }
      break;
    }
    case Endpoint::kChat: {
      std::vector<engine::ChatMessage> messages;
      if (!r.system.empty()) messages.push_back({"system", r.system});
      messages.insert(messages.end(), r.messages.begin(), r.messages.end());
      tokens = TokenizeTemplated(model, model.ApplyChatTemplate(messages, true, r.template_override));
      break;
    }
    case Endpoint::kGenerate: {
      if (r.raw) {
        tokens = model.Tokenize(r.prompt, r.context.empty(), true);
        break;
      }
      if (r.prompt.empty() && r.system.empty()) break;  // Ollama: an empty prompt only loads
      std::vector<engine::ChatMessage> messages;
      if (!r.system.empty()) messages.push_back({"system", r.system});
      messages.push_back({"user", r.prompt});
      tokens = TokenizeTemplated(model, model.ApplyChatTemplate(messages, true, r.template_override));
      break;
    }
    case Endpoint::kCompletion:
      tokens = !r.prompt_tokens.empty() ? r.prompt_tokens : model.Tokenize(r.prompt, true, r.parse_special);
      break;
    case Endpoint::kEmbedding:
      throw EngineError(ErrorKind::kInternal, "embedding requests do not build a prompt");
  }
  if (r.endpoint == Endpoint::kGenerate && !r.context.empty()) {
    // Continue an earlier exchange: its tokens (with their BOS) come first.
    if (!tokens.empty() && tokens.front() == model.info().bos) tokens.erase(tokens.begin());
    tokens.insert(tokens.begin(), r.context.begin(), r.context.end());
  }
  if (tokens.empty() && model.info().bos != engine::kNoToken && r.endpoint != Endpoint::kGenerate) {
    tokens.push_back(model.info().bos);
  }
  return tokens;
}

InferenceResult Router::Generate(const InferenceRequest& request, const GenerationCallbacks& callbacks,
                                 std::shared_ptr<std::atomic<bool>> cancel) {
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<engine::ModelLease> lease = pool_.Acquire(request.model, request.keep_alive, request.num_ctx);
  InferenceResult result;
  result.model = lease->name();
  result.backend = "local:" + lease->name();
  result.route = "local";
  result.load_ms = lease->load_ms();

  engine::GenerationRequest g;
  g.prompt = BuildPrompt(lease->model(), request);
  g.sampling = request.sampling;
  // Autocomplete re-sends the same file with a small edit at the cursor: reuse the unchanged
  // tail of the previous prompt too (see Scheduler's cache_reuse_min_tokens).
  g.reuse_shifted_cache = request.endpoint == Endpoint::kInfill;
  if (callbacks.on_route) callbacks.on_route(result.route);
  g.on_text = callbacks.on_text;
  g.cancel = std::move(cancel);
  if (g.prompt.empty()) {
    // Nothing to generate from (Ollama's "load the model" request).
    result.finish_reason = "stop";
    result.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return result;
  }
  if (request.endpoint == Endpoint::kGenerate) result.context = g.prompt;
  engine::GenerationResult out = lease->scheduler().Submit(std::move(g))->Wait();
  if (out.finish == engine::FinishReason::kError) throw EngineError(ErrorKind::kInternal, out.error);
  result.text = std::move(out.text);
  if (request.endpoint == Endpoint::kGenerate) result.context.insert(result.context.end(), out.tokens.begin(), out.tokens.end());
  result.tokens = std::move(out.tokens);
  result.finish_reason = engine::FinishReasonName(out.finish);
  result.stop_string = out.stop_string;
  result.prompt_tokens = out.stats.prompt_tokens;
  result.cached_tokens = out.stats.cached_tokens;
  result.completion_tokens = out.stats.completion_tokens;
  result.queue_ms = out.stats.queue_ms;
  result.prompt_ms = out.stats.prompt_ms;
  result.generation_ms = out.stats.generation_ms;
  result.ttft_ms = out.stats.ttft_ms;
  result.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  metrics_.ObserveGeneration(result.prompt_tokens, result.cached_tokens, result.completion_tokens, result.ttft_ms,
                             result.generation_ms);
  return result;
}

InferenceResult Router::Embed(const InferenceRequest& request) {
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<engine::ModelLease> lease = pool_.Acquire(request.model, request.keep_alive, std::nullopt);
  InferenceResult result;
  result.model = lease->name();
  result.backend = "local:" + lease->name();
  result.load_ms = lease->load_ms();
  for (const std::string& input : request.inputs) {
    result.prompt_tokens += static_cast<int32_t>(lease->model().Tokenize(input, true, false).size());
  }
  result.embeddings = lease->embedder().Embed(request.inputs);
  result.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

std::vector<SlotView> Router::Slots() {
  std::vector<SlotView> out;
  for (const engine::LoadedModelInfo& m : pool_.Loaded()) {
    for (const engine::SlotState& s : pool_.SchedulerStatsOf(m.name).slots) out.push_back({m.name, m.n_ctx, s});
  }
  return out;
}

engine::SchedulerStats Router::TotalStats() {
  engine::SchedulerStats total;
  for (const engine::LoadedModelInfo& m : pool_.Loaded()) {
    engine::SchedulerStats s = pool_.SchedulerStatsOf(m.name);
    total.running += s.running;
    total.queued += s.queued;
    total.jobs_finished += s.jobs_finished;
  }
  return total;
}

void Router::Preload(const std::string& model, std::optional<std::chrono::seconds> keep_alive) {
  if (keep_alive && keep_alive->count() == 0) {
    pool_.Unload(model);
    return;
  }
  pool_.Acquire(model, keep_alive, std::nullopt);
}

std::vector<Token> Router::Tokenize(const std::string& model, const std::string& text, bool add_special,
                                    bool parse_special) {
  return pool_.Describe(model)->Tokenize(text, add_special, parse_special);
}

std::string Router::Detokenize(const std::string& model, const std::vector<Token>& tokens) {
  std::shared_ptr<engine::Model> m = pool_.Describe(model);
  for (Token t : tokens) {
    if (!m->IsValidToken(t)) {
      throw EngineError(ErrorKind::kInvalidRequest, "token id " + std::to_string(t) + " is out of range [0, " +
                                                        std::to_string(m->info().n_vocab) + ")");
    }
  }
  return m->Detokenize(tokens, true);
}

}  // namespace hearth::router
