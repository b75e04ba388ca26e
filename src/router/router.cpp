#include "router/router.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>

#include "audit/audit_log.h"
#include "router/backend.h"
#include "router/classify.h"
#include "router/redactor.h"
#include "router/scanner.h"

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

// "call_" and 24 hex digits, as OpenAI's ids look; for calls the model wrote without one.
std::string NewToolCallId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[32];
  std::snprintf(buf, sizeof(buf), "call_%016llx%08x", static_cast<unsigned long long>(rng()),
                static_cast<unsigned>(rng() & 0xffffffffu));
  return buf;
}

// Streams a tool-enabled reply: only content the parser is sure of goes out, so a tool call
// that is forming is held back (and sent whole, by the API surface, at the end).
class ToolReplyStream {
 public:
  ToolReplyStream(engine::ChatReplyParser parser, TextSink sink) : parser_(std::move(parser)), sink_(std::move(sink)) {}

  bool Push(std::string_view piece) {
    text_ += piece;
    return Send(parser_.Parse(text_, true).content);
  }
  // The final reply, its remaining content sent.
  engine::ChatReply Finish(const std::string& text, bool complete) {
    engine::ChatReply reply = parser_.Parse(text, !complete);
    Send(reply.content);
    return reply;
  }

 private:
  bool Send(const std::string& content) {
    // Only ever extend what was sent; if the parser revises earlier content (rare), stop
    // streaming: the full content is in the final result.
    if (diverged_ || content.size() <= sent_.size()) return true;
    if (content.compare(0, sent_.size(), sent_) != 0) {
      diverged_ = true;
      return true;
    }
    std::string delta = content.substr(sent_.size());
    sent_ = content;
    return !sink_ || sink_(delta);
  }

  engine::ChatReplyParser parser_;
  TextSink sink_;
  std::string text_, sent_;
  bool diverged_ = false;
};

bool HasSystemMessage(const std::vector<engine::ChatMessage>& messages) {
  return std::any_of(messages.begin(), messages.end(), [](const engine::ChatMessage& m) { return m.role == "system"; });
}

}  // namespace

bool UsesTools(const InferenceRequest& r) {
  if (!r.tools.empty()) return true;
  return std::any_of(r.messages.begin(), r.messages.end(), [](const engine::ChatMessage& m) {
    return m.role == "tool" || !m.tool_calls.empty();
  });
}

Router::Prompt Router::BuildPrompt(const engine::Model& model, const InferenceRequest& r) const {
  Prompt prompt;
  std::vector<Token>& tokens = prompt.tokens;
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
      // The model's default system prompt, unless the conversation brings its own.
      if (!r.system.empty() && !HasSystemMessage(r.messages)) messages.push_back({"system", r.system});
      messages.insert(messages.end(), r.messages.begin(), r.messages.end());
      if (!UsesTools(r)) {
        tokens = TokenizeTemplated(model, model.ApplyChatTemplate(messages, true, r.template_override));
        break;
      }
      engine::ChatRequest chat;
      chat.messages = std::move(messages);
      chat.tools = r.tools;
      chat.tool_choice = r.tool_choice;
      chat.parallel_tool_calls = r.parallel_tool_calls;
      chat.template_override = r.template_override;
      prompt.chat = engine::RenderChat(model, chat);
      if (prompt.chat->tools_active && !r.sampling.grammar.empty()) {
        throw EngineError(ErrorKind::kInvalidRequest,
                          "a JSON output format cannot be combined with tools: send one or the other");
      }
      tokens = TokenizeTemplated(model, prompt.chat->prompt);
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
  return prompt;
}


namespace {

const char* KindName(FindingKind k) {
  switch (k) {
    case FindingKind::kSecret: return "secret";
    case FindingKind::kPersonalData: return "personal";
    case FindingKind::kCustom: return "custom";
  }
  return "custom";
}

}  // namespace

ScannerConfig ScannerConfigOf(const Policy& p) {
  ScannerConfig c;
  for (const CustomPatternSpec& spec : p.custom_patterns) {
    CustomPattern pattern;
    pattern.name = spec.name;
    pattern.regex = spec.regex;
    pattern.kind = spec.kind == "secret" ? FindingKind::kSecret
                   : spec.kind == "personal" ? FindingKind::kPersonalData
                                             : FindingKind::kCustom;
    c.custom.push_back(pattern);
  }
  c.sensitive_paths = p.sensitive_paths;
  return c;
}

// Everything the pipeline learned and decided about one request, for the response and the
// audit record.
struct Router::Routed {
  RouteExplanation explanation;
  std::vector<Finding> findings;
  std::string approval = "none";
  std::vector<std::string> notes;
  std::string sent_sha256;
  uint64_t bytes_sent = 0;
  double cost_usd = 0;
  nlohmann::json redactions = nlohmann::json::array();
  std::string sent_text;  // for store_prompts
  int64_t in_flight_note = 0;  // the audit log's write-ahead note while a cloud request runs
};

namespace {
// How an audit record and a result name a remote backend.
std::string BackendLabel(const BackendConfig& c) { return "cloud:" + c.name + "/" + c.model; }
}  // namespace

Router::Router(engine::ModelPool& pool, RouterOptions options) : pool_(pool), options_(std::move(options)) {
  scanner_ = std::make_unique<Scanner>(ScannerConfigOf(options_.policy));
  egress_ = std::make_unique<Egress>(options_.policy.egress_allow);
  for (const BackendConfig& b : options_.policy.backends) {
    try {
      backends_.push_back(MakeBackend(b, *egress_));
    } catch (const std::invalid_argument& e) {
      // Keep serving locally; requests routed to this backend say why they stayed local.
      unusable_backends_[b.name] = e.what();
      std::fprintf(stderr, "hearth: backend '%s' is unusable: %s\n", b.name.c_str(), e.what());
    }
  }
  if (!options_.audit_path.empty()) {
    audit::AuditOptions ao;
    ao.store_prompts = options_.policy.store_prompts;
    ao.sync_every_record = options_.policy.audit_sync_every_record;
    ao.recover_interrupted = true;
    audit_ = audit::AuditLog::Open(options_.audit_path, ao);
    if (const int64_t n = audit_->recovered_at_open(); n > 0) {
      std::fprintf(stderr, "hearth: audit log: %lld cloud request(s) were in flight when an earlier hearth stopped; "
                   "recorded as interrupted\n", static_cast<long long>(n));
    }
  }
}

Router::~Router() = default;

Egress& Router::egress() { return *egress_; }

RouteExplanation Router::Explain(const InferenceRequest& request) const {
  return ExplainRoute(options_.policy, *scanner_, request);
}

RouteExplanation ExplainRoute(const Policy& policy, const Scanner& scanner, const InferenceRequest& request) {
  RouteExplanation e;
  e.task = ClassifyTask(request);
  e.predicted_output_tokens = PredictOutputTokens(request, e.task);
  e.paths = PathsNamed(request);
  std::map<std::string, std::string> seen;
  for (std::string_view text : RequestTexts(request)) {
    for (const Finding& f : scanner.Scan(text)) seen.emplace(f.rule, KindName(f.kind));
  }
  for (const auto& [rule, kind] : seen) e.findings.push_back({rule, kind});
  RouteFacts facts;
  facts.task = e.task;
  facts.predicted_output_tokens = e.predicted_output_tokens;
  facts.model = request.model;
  facts.user = request.client.user;
  facts.project = request.client.project;
  facts.sensitivity = request.client.sensitivity;
  facts.paths = e.paths;
  facts.findings = e.findings;
  e.decision = Decide(policy, facts);
  // Hard floors that no rule can lift.
  if (request.client.sensitivity == "private") {
    e.forced = "X-Hearth-Sensitivity: private keeps the request on this machine";
  } else {
    for (const std::string& p : e.paths) {
      if (scanner.IsSensitivePath(p)) {
        e.forced = "path " + p + " is a sensitive path (scanner.sensitive_paths)";
        break;
      }
    }
  }
  if (!e.forced.empty() && e.decision.action != Action::kLocal && e.decision.action != Action::kDeny) {
    e.decision.action = Action::kLocal;
    e.decision.reason = e.forced;
  }
  if (request.endpoint == Endpoint::kInfill && (e.decision.action == Action::kCloud || e.decision.action == Action::kRedactThenCloud)) {
    e.decision.action = Action::kLocal;
    e.decision.reason = "fill-in-the-middle is served locally only";
  }
  // Remote backends forward role and content only: a tool conversation sent there would
  // lose its tools and calls, so it stays here (a denial still stands).
  if (UsesTools(request) && (e.decision.action == Action::kCloud || e.decision.action == Action::kRedactThenCloud)) {
    e.decision.action = Action::kLocal;
    e.decision.reason = "requests with tools are served locally only";
  }
  return e;
}

InferenceResult Router::Generate(const InferenceRequest& request, const GenerationCallbacks& callbacks,
                                 std::shared_ptr<std::atomic<bool>> cancel) {
  auto t0 = std::chrono::steady_clock::now();
  Routed routed;
  routed.explanation = Explain(request);
  const Decision& d = routed.explanation.decision;
  if (!routed.explanation.forced.empty()) routed.notes.push_back(routed.explanation.forced);
  InferenceResult result;
  std::string status = "ok";
  try {
    if (d.action == Action::kDeny) {
      result.route = "denied";
      Audit(request, routed, result, "denied");
      throw engine::EngineError(engine::ErrorKind::kDenied, "policy rule '" + d.rule + "' (line " + std::to_string(d.rule_line) +
                                                                ") denies this request: " + d.reason);
    }
    bool served = false;
    if (d.action == Action::kCloud || d.action == Action::kRedactThenCloud) {
      served = RunCloud(request, callbacks, cancel, routed, result);
    }
    if (!served) {
      try {
        result = RunLocal(request, callbacks, cancel);
      } catch (const engine::EngineError& e) {
        if (e.kind() != engine::ErrorKind::kOverloaded) throw;
        // Overflow: a request the policy would let leave may go to an allowed remote backend.
        const std::string& overflow = options_.policy.default_backend;
        if (overflow.empty() || !routed.explanation.forced.empty() || !routed.explanation.findings.empty() ||
            request.endpoint == Endpoint::kInfill || UsesTools(request)) {
          throw;
        }
        routed.notes.push_back("local engine overloaded; overflow to backend '" + overflow + "'");
        routed.explanation.decision.backend = overflow;
        routed.explanation.decision.action = Action::kCloud;
        if (!RunCloud(request, callbacks, cancel, routed, result)) throw;
      }
    }
  } catch (const std::exception& e) {  // engine errors, and e.g. a provider that rejected the request
    const auto* engine_error = dynamic_cast<const engine::EngineError*>(&e);
    if (engine_error == nullptr || engine_error->kind() != engine::ErrorKind::kDenied) {  // denied: audited above
      result.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      Audit(request, routed, result, std::string("error: ") + e.what());
    }
    throw;
  }
  result.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (result.finish_reason == "cancelled") status = "cancelled";
  Audit(request, routed, result, status);
  return result;
}

bool Router::RunCloud(const InferenceRequest& request, const GenerationCallbacks& callbacks,
                      const std::shared_ptr<std::atomic<bool>>& cancel, Routed& routed, InferenceResult& result) {
  const Decision& d = routed.explanation.decision;
  RemoteBackend* backend = nullptr;
  for (auto& b : backends_) {
    if (b->config().name == d.backend) backend = b.get();
  }
  if (backend == nullptr) {
    auto why = unusable_backends_.find(d.backend);
    routed.notes.push_back("backend '" + d.backend + "' is " +
                           (why == unusable_backends_.end() ? std::string("not configured") : "unusable (" + why->second + ")") +
                           "; served locally");
    return false;
  }
  if (backend->circuit_open()) {
    routed.notes.push_back("circuit for backend '" + d.backend + "' is open; served locally");
    return false;
  }
  // Approval.
  if (d.approval == ApprovalMode::kHeader) {
    std::string a = request.client.approval;
    if (a != "yes" && a != "approve" && a != "approved" && a != "true") {
      routed.approval = "header-missing";
      routed.notes.push_back("rule '" + d.rule + "' needs X-Hearth-Approval: yes to leave the machine; served locally");
      return false;
    }
    routed.approval = "header";
  } else if (d.approval == ApprovalMode::kInteractive) {
    if (approvals_.IsRemembered(request.client.project, d.backend)) {
      routed.approval = "remembered";
    } else {
      PendingApproval p;
      p.rule = d.rule;
      p.backend = d.backend;
      p.project = request.client.project;
      p.user = request.client.user;
      p.model = request.model;
      size_t bytes = 0;
      for (std::string_view t : RequestTexts(request)) bytes += t.size();
      p.summary = std::to_string(bytes) + " bytes of " + TaskClassName(routed.explanation.task) + " request to '" +
                  d.backend + "'; findings: " + std::to_string(routed.explanation.findings.size()) +
                  (d.action == Action::kRedactThenCloud ? " (all redacted)" : " (secrets redacted)");
      std::string who;
      ApprovalOutcome outcome = approvals_.Request(p, std::chrono::seconds(options_.policy.approval_timeout_seconds), cancel, &who);
      routed.approval = std::string(ApprovalOutcomeName(outcome)) + (who.empty() ? "" : ":" + who);
      if (outcome != ApprovalOutcome::kApproved) {
        routed.notes.push_back(std::string("approval ") + ApprovalOutcomeName(outcome) + "; served locally");
        if (outcome == ApprovalOutcome::kTimedOut) routed.approval = "timeout-local";
        return false;
      }
      if (d.remember_minutes > 0) approvals_.Remember(request.client.project, d.backend, std::chrono::minutes(d.remember_minutes));
    }
  }
  // Redaction: secrets never leave; redact-then-cloud also removes personal and custom data.
  Redaction redaction;
  auto redact = [&](const std::string& text) {
    std::vector<Finding> all = scanner_->Scan(text);
    std::vector<Finding> chosen;
    for (const Finding& f : all) {
      routed.findings.push_back(f);
      if (d.action == Action::kRedactThenCloud || f.kind == FindingKind::kSecret) chosen.push_back(f);
    }
    return redaction.Redact(text, chosen);
  };
  std::vector<engine::ChatMessage> messages;
  if (!request.system.empty() && !HasSystemMessage(request.messages)) {
    messages.push_back({"system", redact(request.system)});
  }
  for (const auto& m : request.messages) messages.push_back({m.role, redact(m.content)});
  if (request.messages.empty()) messages.push_back({"user", redact(request.prompt)});
  for (const auto& entry : redaction.mapping()) routed.redactions.push_back({{"placeholder", entry.first}});
  if (options_.policy.store_prompts) {
    for (const auto& m : messages) routed.sent_text += m.role + ": " + m.content + "\n";
  }

  if (callbacks.on_route) callbacks.on_route("cloud");
  Restorer restorer(redaction.mapping());
  TextSink sink = [&](std::string_view text) {
    std::string restored = restorer.Push(text);
    if (restored.empty() || !callbacks.on_text) return true;
    return callbacks.on_text(restored);
  };
  // Nothing leaves before the audit log knows: a note that turns into an "interrupted" record
  // if hearth dies before the request's record is appended.
  auto before_send = [&](const std::string& sha256, uint64_t body_bytes) {
    routed.sent_sha256 = sha256;
    routed.bytes_sent = body_bytes;
    if (!audit_) return;
    InferenceResult pending;
    pending.route = "cloud";
    pending.backend = BackendLabel(backend->config());
    routed.in_flight_note = audit_->NoteInFlight(MakeAuditRecord(request, routed, pending, "in flight"));
  };
  RemoteResult remote;
  try {
    // A client that waits for the whole answer gets it asked for whole (see RemoteBackend::Chat).
    remote = backend->Chat(messages, request.sampling, sink, cancel, before_send, static_cast<bool>(callbacks.on_text));
  } catch (const BackendUnavailable& e) {
    routed.notes.push_back(std::string("backend '") + d.backend + "' unavailable (" + e.what() + "); served locally");
    return false;
  } catch (const EgressDenied& e) {
    routed.notes.push_back(std::string("egress refused: ") + e.what() + "; served locally");
    return false;
  }
  std::string tail = restorer.Flush();
  if (!tail.empty() && callbacks.on_text) callbacks.on_text(tail);
  for (const std::string& n : remote.notes) routed.notes.push_back(n);
  routed.bytes_sent = remote.bytes_sent;
  routed.sent_sha256 = remote.sent_sha256;
  const BackendConfig& cfg = backend->config();
  routed.cost_usd = (remote.prompt_tokens * cfg.input_usd_per_mtok + remote.completion_tokens * cfg.output_usd_per_mtok) / 1e6;
  result.model = request.model;
  result.route = "cloud";
  result.backend = BackendLabel(cfg);
  // The stream carried restored text; rebuild the full text the same way.
  Restorer whole(redaction.mapping());
  result.text = whole.Push(remote.text) + whole.Flush();
  result.finish_reason = remote.finish_reason.empty() ? "stop" : remote.finish_reason;
  result.prompt_tokens = remote.prompt_tokens;
  result.completion_tokens = remote.completion_tokens;
  result.ttft_ms = remote.ttft_ms;
  result.generation_ms = remote.total_ms - remote.ttft_ms;
  result.prompt_ms = remote.ttft_ms;
  return true;
}

audit::AuditRecord Router::MakeAuditRecord(const InferenceRequest& request, const Routed& routed,
                                           const InferenceResult& result, const std::string& status) const {
  audit::AuditRecord r;
  r.user = request.client.user;
  r.project = request.client.project;
  r.surface = request.client.surface;
  r.endpoint = EndpointName(request.endpoint);
  r.rule = routed.explanation.decision.rule;
  r.route = result.route.empty() ? "local" : result.route;
  r.backend = result.backend;
  r.model = result.model.empty() ? request.model : result.model;
  r.prompt_tokens = result.prompt_tokens;
  r.completion_tokens = result.completion_tokens;
  r.bytes_sent = static_cast<int64_t>(routed.bytes_sent);
  r.sent_sha256 = routed.sent_sha256;
  std::map<std::pair<std::string, std::string>, int> counts;
  for (const Finding& f : routed.findings) counts[{f.rule, KindName(f.kind)}] += 1;
  if (counts.empty()) {
    for (const auto& f : routed.explanation.findings) counts[{f.rule, f.kind}] += 1;
  }
  for (const auto& [key, n] : counts) r.findings.push_back({{"rule", key.first}, {"kind", key.second}, {"count", n}});
  r.redactions = routed.redactions;
  r.approval = routed.approval;
  std::string notes;
  for (const std::string& n : routed.notes) notes += (notes.empty() ? "" : "; ") + n;
  r.notes = notes;
  r.latency_ms = result.total_ms;
  r.cost_usd = routed.cost_usd;
  r.status = status;
  if (options_.policy.store_prompts) {  // otherwise the log drops it: not worth building
    r.prompt = result.route == "cloud" ? routed.sent_text : [&] {
      std::string all;
      for (std::string_view t : RequestTexts(request)) {
        all += t;
        all += '\n';
      }
      return all;
    }();
  }
  return r;
}

void Router::Audit(const InferenceRequest& request, const Routed& routed, const InferenceResult& result,
                   const std::string& status) {
  if (!audit_) return;
  try {
    audit_->Append(MakeAuditRecord(request, routed, result, status), routed.in_flight_note);
  } catch (const std::exception& e) {
    // The response is already produced; losing the audit record must be loud.
    std::fprintf(stderr, "hearth: AUDIT LOG WRITE FAILED: %s\n", e.what());
  }
}

InferenceResult Router::RunLocal(const InferenceRequest& request, const GenerationCallbacks& callbacks,
                                 std::shared_ptr<std::atomic<bool>> cancel) {
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<engine::ModelLease> lease = pool_.Acquire(request.model, request.keep_alive, request.num_ctx);
  InferenceResult result;
  result.model = lease->name();
  result.backend = "local:" + lease->name();
  result.route = "local";
  result.load_ms = lease->load_ms();

  engine::GenerationRequest g;
  Prompt prompt = BuildPrompt(lease->model(), request);
  g.prompt = std::move(prompt.tokens);
  g.sampling = request.sampling;
  std::shared_ptr<ToolReplyStream> tool_stream;
  if (prompt.chat) {
    prompt.chat->ApplyTo(g.sampling);
    if (prompt.chat->tools_active) tool_stream = std::make_shared<ToolReplyStream>(prompt.chat->parser, callbacks.on_text);
  }
  // Autocomplete re-sends the same file with a small edit at the cursor: reuse the unchanged
  // tail of the previous prompt too (see Scheduler's cache_reuse_min_tokens).
  g.reuse_shifted_cache = request.endpoint == Endpoint::kInfill;
  if (callbacks.on_route) callbacks.on_route(result.route);
  g.on_text = callbacks.on_text;
  if (tool_stream && callbacks.on_text) g.on_text = [tool_stream](std::string_view text) { return tool_stream->Push(text); };
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
  if (tool_stream) {
    engine::ChatReply reply = tool_stream->Finish(result.text, out.finish == engine::FinishReason::kStop);
    result.text = std::move(reply.content);
    result.reasoning = std::move(reply.reasoning);
    result.tool_calls = std::move(reply.tool_calls);
    for (engine::ToolCall& call : result.tool_calls) {
      if (call.id.empty()) call.id = NewToolCallId();
    }
    if (!result.tool_calls.empty() && out.finish == engine::FinishReason::kStop) result.finish_reason = "tool_calls";
  }
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

engine::ModelDefaults Router::DefaultsOf(const std::string& model) const {
  try {
    return pool_.Find(model).defaults;
  } catch (const EngineError&) {
    return {};
  }
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
