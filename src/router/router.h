// The single entry point from the API layer to inference. Every request passes through
// here, even when the only backend is the local engine, so no path bypasses policy and
// audit. Today the route is always the local backend; the policy pipeline (classify →
// scan → decide → redact → send → restore → audit) plugs in as stages of Route().
// Thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "engine/model_pool.h"
#include "router/metrics.h"
#include "router/request.h"

namespace hearth::router {

struct SlotView {
  std::string model;
  int32_t n_ctx = 0;
  engine::SlotState state;
};

class Router {
 public:
  explicit Router(engine::ModelPool& pool);

  // Runs a generation, streaming text to `sink`. Throws engine::EngineError for bad input
  // (kInvalidRequest, kContextOverflow, kNotFound, kUnsupported) and kOverloaded when the
  // model's queue is full. `cancel` is set by the caller when its client goes away.
  InferenceResult Generate(const InferenceRequest& request, const GenerationCallbacks& callbacks,
                           std::shared_ptr<std::atomic<bool>> cancel);
  InferenceResult Embed(const InferenceRequest& request);

  // Model management and tokenizer access (no inference, never leaves the machine).
  std::vector<engine::RegisteredModel> ListModels() const { return pool_.List(); }
  std::vector<engine::LoadedModelInfo> LoadedModels() const { return pool_.Loaded(); }
  std::shared_ptr<engine::Model> Describe(const std::string& model) { return pool_.Describe(model); }
  // Loads (keep_alive > 0 or unset) or unloads (keep_alive == 0) without generating.
  void Preload(const std::string& model, std::optional<std::chrono::seconds> keep_alive);
  std::vector<engine::Token> Tokenize(const std::string& model, const std::string& text, bool add_special,
                                      bool parse_special);
  std::string Detokenize(const std::string& model, const std::vector<engine::Token>& tokens);

  std::vector<SlotView> Slots();
  engine::SchedulerStats TotalStats();  // running and queued requests over all models
  Metrics& metrics() { return metrics_; }

 private:
  std::vector<engine::Token> BuildPrompt(const engine::Model& model, const InferenceRequest& request) const;

  engine::ModelPool& pool_;
  Metrics metrics_;
};

}  // namespace hearth::router
