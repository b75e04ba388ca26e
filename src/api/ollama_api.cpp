// Ollama's API: /api/generate, /api/chat, /api/tags, /api/show, /api/ps, /api/embed,
// /api/embeddings, /api/version. Shapes follow Ollama's docs/api.md.
#include <chrono>

#include "api/api_common.h"
#include "api/model_card.h"
#include "engine/error.h"

namespace hearth::api {

namespace {

constexpr int64_t kNs = 1000000;  // ns per ms

// Ollama's "options" object -> sampling parameters and context size.
void ApplyOllamaOptions(const json& body, router::InferenceRequest& r) {
  auto it = body.find("options");
  if (it == body.end() || it->is_null()) return;
  if (!it->is_object()) throw ApiError(400, "'options' must be an object");
  const json& o = *it;
  engine::SamplingParams& s = r.sampling;
  ApplySharedSamplingFields(o, s);
  if (auto v = OptInt(o, "num_predict", -2, 10000000)) s.max_tokens = *v < 0 ? -1 : static_cast<int32_t>(*v);
  if (auto v = OptInt(o, "num_ctx", 16, 1 << 20)) r.num_ctx = static_cast<int32_t>(*v);
}

// The model's Modelfile defaults first, then what the request sets.
void ApplyCommon(router::Router& router, const json& body, router::InferenceRequest& r) {
  r.model = RequireString(body, "model");
  ApplyModelDefaults(router, r);
  ApplyOllamaOptions(body, r);
  r.keep_alive = ParseKeepAlive(body);
  if (body.contains("format")) r.sampling.grammar = GrammarForFormat(body["format"], "format");
  if (auto t = OptString(body, "template")) r.template_override = *t;
}

json Stats(const router::InferenceResult& res) {
  return {{"total_duration", static_cast<int64_t>(res.total_ms * kNs)},
          {"load_duration", static_cast<int64_t>(res.load_ms * kNs)},
          {"prompt_eval_count", res.prompt_tokens},
          {"prompt_eval_duration", static_cast<int64_t>(res.prompt_ms * kNs)},
          {"eval_count", res.completion_tokens},
          {"eval_duration", static_cast<int64_t>(res.generation_ms * kNs)}};
}

void Generate(router::Router& router, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  router::InferenceRequest r;
  r.client = ClientFromRequest(http, "ollama");
  ApplyCommon(router, body, r);
  r.prompt = OptString(body, "prompt").value_or("");
  if (auto system = OptString(body, "system")) r.system = *system;
  r.raw = OptBool(body, "raw").value_or(false);
  bool stream = OptBool(body, "stream").value_or(true);
  if (auto it = body.find("images"); it != body.end() && !it->is_null() && !it->empty()) {
    throw ApiError(400, "'images' is not supported: hearth serves text models only", "images");
  }
  if (auto suffix = OptString(body, "suffix"); suffix && !suffix->empty()) {
    r.endpoint = router::Endpoint::kInfill;
    r.fim = router::FimInput{r.prompt, *suffix, {}, {}};
  } else {
    r.endpoint = router::Endpoint::kGenerate;
  }
  if (auto it = body.find("context"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) throw ApiError(400, "'context' must be an array of token ids", "context");
    for (const json& t : *it) {
      if (!t.is_number_integer()) throw ApiError(400, "'context' must be an array of token ids", "context");
      r.context.push_back(TokenId(t, "context"));
    }
  }
  // An empty prompt loads (or, with keep_alive 0, unloads) the model: Ollama's idiom.
  if (r.endpoint == router::Endpoint::kGenerate && r.prompt.empty() && r.system.empty() && r.context.empty()) {
    router.Preload(r.model, r.keep_alive);
    bool unload = r.keep_alive && r.keep_alive->count() == 0;
    out.Respond(JsonResponse({{"model", r.model}, {"created_at", Rfc3339Now()}, {"response", ""}, {"done", true},
                              {"done_reason", unload ? "unload" : "load"}}));
    return;
  }

  const std::string created = Rfc3339Now();
  LazyStream s(out, "application/x-ndjson");
  router::GenerationCallbacks cb;
  cb.on_route = [&](const std::string& route) { s.SetRoute(route); };
  if (stream) {
    cb.on_text = [&](std::string_view text) {
      json chunk = {{"model", r.model}, {"created_at", Rfc3339Now()}, {"response", text}, {"done", false}};
      return s.Write(chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    };
  }
  router::InferenceResult res = router.Generate(r, cb, out.cancel_flag());
  json final = {{"model", r.model}, {"created_at", stream ? Rfc3339Now() : created},
                {"response", stream ? "" : res.text}, {"done", true}, {"done_reason", res.finish_reason},
                {"hearth_route", res.route}};
  final.update(Stats(res));
  if (r.endpoint == router::Endpoint::kGenerate) final["context"] = res.context;
  if (stream) {
    s.Write(final.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    s.End();
  } else {
    out.Respond(JsonResponse(final, 200, {{"X-Hearth-Route", res.route}}));
  }
}

void Chat(router::Router& router, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  router::InferenceRequest r;
  r.client = ClientFromRequest(http, "ollama");
  r.endpoint = router::Endpoint::kChat;
  ApplyCommon(router, body, r);
  r.messages = ParseChatMessages(body, false);
  r.tools = ParseTools(body, false);
  // Ollama has no tool_choice or parallel_tool_calls; hearth accepts OpenAI's (an extension).
  r.tool_choice = ParseToolChoice(body, r.tools);
  r.parallel_tool_calls = OptBool(body, "parallel_tool_calls").value_or(true);  // Ollama models may call several
  bool stream = OptBool(body, "stream").value_or(true);
  if (r.messages.empty()) {  // Ollama: no messages loads the model
    router.Preload(r.model, r.keep_alive);
    bool unload = r.keep_alive && r.keep_alive->count() == 0;
    out.Respond(JsonResponse({{"model", r.model}, {"created_at", Rfc3339Now()},
                              {"message", {{"role", "assistant"}, {"content", ""}}}, {"done", true},
                              {"done_reason", unload ? "unload" : "load"}}));
    return;
  }
  LazyStream s(out, "application/x-ndjson");
  router::GenerationCallbacks cb;
  cb.on_route = [&](const std::string& route) { s.SetRoute(route); };
  if (stream) {
    cb.on_text = [&](std::string_view text) {
      json chunk = {{"model", r.model}, {"created_at", Rfc3339Now()},
                    {"message", {{"role", "assistant"}, {"content", text}}}, {"done", false}};
      return s.Write(chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    };
  }
  router::InferenceResult res = router.Generate(r, cb, out.cancel_flag());
  // Ollama's shape: arguments as an object, no type. The id is extra: a client may send it
  // back as the tool message's tool_call_id.
  json calls = json::array();
  for (size_t i = 0; i < res.tool_calls.size(); ++i) {
    const engine::ToolCall& call = res.tool_calls[i];
    json args = json::parse(call.arguments, nullptr, false);
    if (args.is_discarded()) args = call.arguments;  // cut short (num_predict): pass the text on
    calls.push_back({{"id", call.id}, {"function", {{"index", i}, {"name", call.name}, {"arguments", args}}}});
  }
  auto whole_reply = [&](const std::string& content) {
    json m = {{"role", "assistant"}, {"content", content}};
    if (!res.reasoning.empty()) m["thinking"] = res.reasoning;
    if (!calls.empty()) m["tool_calls"] = calls;
    return m;
  };
  // Streamed, the final chunk's message is empty: the text went out as it came.
  json message = stream ? json{{"role", "assistant"}, {"content", ""}} : whole_reply(res.text);
  const std::string done_reason = res.finish_reason == "tool_calls" ? "stop" : res.finish_reason;  // as Ollama says
  json final = {{"model", r.model}, {"created_at", Rfc3339Now()}, {"message", message}, {"done", true},
                {"done_reason", done_reason}, {"hearth_route", res.route}};
  final.update(Stats(res));
  if (stream && (!calls.empty() || !res.reasoning.empty())) {
    // Held back while they formed; Ollama streams tool calls in a chunk of their own.
    json chunk = {{"model", r.model}, {"created_at", Rfc3339Now()}, {"message", whole_reply("")}, {"done", false}};
    s.Write(chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
  }
  if (stream) {
    s.Write(final.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    s.End();
  } else {
    out.Respond(JsonResponse(final, 200, {{"X-Hearth-Route", res.route}}));
  }
}

void Tags(router::Router& router, const HttpRequest&, Responder& out) {
  json models = json::array();
  for (const engine::RegisteredModel& m : router.ListModels()) {
    ModelCard card = DescribeModel(router, m.name);
    models.push_back({{"name", m.name}, {"model", m.name}, {"modified_at", Rfc3339(m.modified)},
                      {"size", m.file_bytes}, {"digest", card.digest}, {"details", card.details}});
  }
  out.Respond(JsonResponse({{"models", models}}));
}

void Show(router::Router& router, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  std::string name = OptString(body, "model").value_or(OptString(body, "name").value_or(""));
  if (name.empty()) throw ApiError(400, "'model' is required", "model");
  ModelCard card = DescribeModel(router, name);
  out.Respond(JsonResponse({{"modelfile", card.modelfile}, {"parameters", card.parameters},
                            {"template", card.ollama_template}, {"details", card.details},
                            {"model_info", card.model_info}, {"capabilities", card.capabilities},
                            {"modified_at", Rfc3339(card.modified)}}));
}

void Ps(router::Router& router, const HttpRequest&, Responder& out) {
  json models = json::array();
  for (const engine::LoadedModelInfo& m : router.LoadedModels()) {
    ModelCard card = DescribeModel(router, m.name);
    models.push_back({{"name", m.name}, {"model", m.name}, {"size", m.size_bytes}, {"digest", card.digest},
                      {"details", card.details},
                      {"expires_at", m.expires_at ? Rfc3339(*m.expires_at) : std::string("2318-01-01T00:00:00Z")},
                      {"size_vram", m.gpu_bytes}, {"context_length", m.n_ctx},
                      // hearth's own: where the bytes go, and how busy the model is.
                      {"hearth", {{"weights", m.footprint.weights},
                                  {"kv_cache", m.footprint.kv_cache},
                                  {"compute", m.footprint.compute},
                                  {"other", m.footprint.overhead},
                                  {"parallel", m.n_slots},
                                  {"active_requests", m.active_requests}}}});
  }
  out.Respond(JsonResponse({{"models", models}}));
}

void Embed(router::Router& router, const HttpRequest& http, Responder& out, bool legacy) {
  json body = ParseJsonObject(http);
  router::InferenceRequest r;
  r.client = ClientFromRequest(http, "ollama");
  r.endpoint = router::Endpoint::kEmbedding;
  r.model = RequireString(body, "model");
  r.keep_alive = ParseKeepAlive(body);
  if (legacy) {
    r.inputs = {OptString(body, "prompt").value_or("")};
  } else {
    auto inputs = OptStringList(body, "input", 2048);
    if (!inputs || inputs->empty()) throw ApiError(400, "'input' must be a string or a non-empty array of strings", "input");
    r.inputs = *inputs;
  }
  router::InferenceResult res = router.Embed(r);
  if (legacy) {
    out.Respond(JsonResponse({{"embedding", res.embeddings.at(0)}}));
    return;
  }
  out.Respond(JsonResponse({{"model", res.model}, {"embeddings", res.embeddings},
                            {"total_duration", static_cast<int64_t>(res.total_ms * kNs)},
                            {"load_duration", static_cast<int64_t>(res.load_ms * kNs)},
                            {"prompt_eval_count", res.prompt_tokens}}));
}

}  // namespace

void AddOllamaRoutes(RouteTable& routes, router::Router& router, const ApiOptions& options) {
  auto wrap = [&router](void (*fn)(router::Router&, const HttpRequest&, Responder&)) {
    return [&router, fn](const HttpRequest& req, Responder& out) {
      RunHandler(ErrorStyle::kOllama, out, [&] { fn(router, req, out); });
    };
  };
  routes[{"POST", "/api/generate"}] = wrap(Generate);
  routes[{"POST", "/api/chat"}] = wrap(Chat);
  routes[{"GET", "/api/tags"}] = wrap(Tags);
  routes[{"POST", "/api/show"}] = wrap(Show);
  routes[{"GET", "/api/ps"}] = wrap(Ps);
  routes[{"POST", "/api/embed"}] = [&router](const HttpRequest& req, Responder& out) {
    RunHandler(ErrorStyle::kOllama, out, [&] { Embed(router, req, out, false); });
  };
  routes[{"POST", "/api/embeddings"}] = [&router](const HttpRequest& req, Responder& out) {
    RunHandler(ErrorStyle::kOllama, out, [&] { Embed(router, req, out, true); });
  };
  std::string version = options.version;
  routes[{"GET", "/api/version"}] = [version](const HttpRequest&, Responder& out) {
    out.Respond(JsonResponse({{"version", version}}));
  };
  auto root = [](const HttpRequest&, Responder& out) {
    out.Respond(HttpResponse{200, {{"Content-Type", "text/plain; charset=utf-8"}}, "hearth is running"});
  };
  routes[{"GET", "/"}] = root;
  routes[{"HEAD", "/"}] = root;
}

}  // namespace hearth::api
