// The single entry point from the API layer to inference. Every request passes through
// here, even when the only backend is the local engine, so no path bypasses policy and
// audit. Generate() runs the pipeline
//
//   classify → scan → decide → (approve) → redact → send → restore → audit
//
// where "send" is the local engine or a remote backend. Without a policy file everything
// is served locally and hearth makes no outbound connection. Thread-safe.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/model_pool.h"
#include "router/approvals.h"
#include "router/metrics.h"
#include "router/policy.h"
#include "router/request.h"

namespace hearth::audit {
class AuditLog;
struct AuditRecord;
}

namespace hearth::router {

class Scanner;
class Egress;
class RemoteBackend;

struct SlotView {
  std::string model;
  int32_t n_ctx = 0;
  engine::SlotState state;
};

struct RouterOptions {
  Policy policy;           // default: empty, everything local
  std::string audit_path;  // SQLite audit log; "" keeps no log (tests of other parts only)
};

// What the pipeline decided for a request, before anything is sent (hearth route --explain).
struct RouteExplanation {
  TaskClass task = TaskClass::kChat;
  int32_t predicted_output_tokens = 0;
  std::vector<std::string> paths;
  std::vector<RouteFacts::FindingFact> findings;
  Decision decision;
  std::string forced;  // why policy was bypassed (private, sensitive path), or ""
};

// The decision for a request under a policy, before anything is sent. Pure: used by the
// pipeline and by `hearth route --explain`.
RouteExplanation ExplainRoute(const Policy& policy, const Scanner& scanner, const InferenceRequest& request);
// The scanner configuration a policy asks for (custom patterns, sensitive paths).
struct ScannerConfig;
ScannerConfig ScannerConfigOf(const Policy& policy);

class Router {
 public:
  // Throws std::invalid_argument when the policy's backends or scanner patterns are
  // unusable (e.g. a missing API key variable), std::runtime_error when the audit log
  // cannot be opened.
  Router(engine::ModelPool& pool, RouterOptions options = {});
  ~Router();

  // Runs a generation, streaming text to callbacks.on_text. Throws engine::EngineError for
  // bad input (kInvalidRequest, kContextOverflow, kNotFound, kUnsupported), kOverloaded
  // when the model's queue is full, kDenied when policy denies it. `cancel` is set by the
  // caller when its client goes away.
  InferenceResult Generate(const InferenceRequest& request, const GenerationCallbacks& callbacks,
                           std::shared_ptr<std::atomic<bool>> cancel);
  InferenceResult Embed(const InferenceRequest& request);
  RouteExplanation Explain(const InferenceRequest& request) const;

  // Model management and tokenizer access (no inference, never leaves the machine).
  std::vector<engine::RegisteredModel> ListModels() const { return pool_.List(); }
  std::vector<engine::LoadedModelInfo> LoadedModels() const { return pool_.Loaded(); }
  std::shared_ptr<engine::Model> Describe(const std::string& model) { return pool_.Describe(model); }
  // What the model's Modelfile sets (PARAMETER, SYSTEM, TEMPLATE); empty for an unknown name
  // (the request then fails where it names the model, with the list of models).
  engine::ModelDefaults DefaultsOf(const std::string& model) const;
  // Loads (keep_alive > 0 or unset) or unloads (keep_alive == 0) without generating.
  void Preload(const std::string& model, std::optional<std::chrono::seconds> keep_alive);
  std::vector<engine::Token> Tokenize(const std::string& model, const std::string& text, bool add_special,
                                      bool parse_special);
  std::string Detokenize(const std::string& model, const std::vector<engine::Token>& tokens);
  std::vector<SlotView> Slots();
  engine::SchedulerStats TotalStats();  // running and queued requests over all models

  Metrics& metrics() { return metrics_; }
  ApprovalQueue& approvals() { return approvals_; }
  const Policy& policy() const { return options_.policy; }
  Egress& egress();

 private:
  struct Routed;
  // The prompt's tokens; for chats that use tools, also the rendered chat (its grammar and
  // reply parser).
  struct Prompt {
    std::vector<engine::Token> tokens;
    std::optional<engine::RenderedChat> chat;
  };
  Prompt BuildPrompt(const engine::Model& model, const InferenceRequest& request) const;
  InferenceResult RunLocal(const InferenceRequest& request, const GenerationCallbacks& callbacks,
                           std::shared_ptr<std::atomic<bool>> cancel);
  bool RunCloud(const InferenceRequest& request, const GenerationCallbacks& callbacks,
                const std::shared_ptr<std::atomic<bool>>& cancel, Routed& routed, InferenceResult& result);
  audit::AuditRecord MakeAuditRecord(const InferenceRequest& request, const Routed& routed,
                                     const InferenceResult& result, const std::string& status) const;
  void Audit(const InferenceRequest& request, const Routed& routed, const InferenceResult& result,
             const std::string& status);

  engine::ModelPool& pool_;
  RouterOptions options_;
  Metrics metrics_;
  ApprovalQueue approvals_;
  std::unique_ptr<Scanner> scanner_;
  std::unique_ptr<Egress> egress_;
  std::vector<std::unique_ptr<RemoteBackend>> backends_;
  std::map<std::string, std::string> unusable_backends_;  // name -> why (e.g. its key is not set)
  std::unique_ptr<audit::AuditLog> audit_;
};

}  // namespace hearth::router
