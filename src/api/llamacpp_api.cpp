// llama.cpp server's API (llama.vim, llama.vscode, Continue's llama.cpp provider):
// /completion, /infill, /tokenize, /detokenize, /health, /slots.
#include "api/api_common.h"

namespace hearth::api {

namespace {

std::string ModelOf(const json& body, const ApiOptions& options) {
  std::string m = OptString(body, "model").value_or(options.default_model);
  if (m.empty()) throw ApiError(400, "'model' is required: this server has no default model", "model");
  return m;
}

// llama-server's defaults differ from Ollama's (no repeat penalty, top_p 0.95, min_p 0.05).
// llama-server's defaults, then the model's Modelfile defaults, then what the request sets.
void ApplySampling(router::Router& router, const json& body, router::InferenceRequest& r) {
  engine::SamplingParams& s = r.sampling;
  s.temperature = 0.8f;
  s.top_k = 40;
  s.top_p = 0.95f;
  s.min_p = 0.05f;
  s.repeat_penalty = 1.0f;
  s.repeat_last_n = 64;
  s.max_tokens = -1;
  ApplyModelDefaults(router, r);
  ApplySharedSamplingFields(body, s);
  if (auto v = OptInt(body, "n_predict", -1, 10000000)) s.max_tokens = static_cast<int32_t>(*v);
  s.ignore_eos = OptBool(body, "ignore_eos").value_or(false);
  if (auto g = OptString(body, "grammar"); g && !g->empty()) s.grammar = *g;
  if (auto it = body.find("json_schema"); it != body.end() && !it->is_null()) s.grammar = GrammarForFormat(*it, "json_schema");
  if (auto n = OptInt(body, "n_probs", 0, 100); n && *n > 0) throw ApiError(400, "'n_probs' is not supported", "n_probs");
}

// 'prompt' may be a string, or an array mixing token ids and strings.
void ParsePrompt(const json& body, router::Router& router, router::InferenceRequest& r) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return;
  if (it->is_string()) {
    r.prompt = it->get<std::string>();
    return;
  }
  if (!it->is_array()) throw ApiError(400, "'prompt' must be a string or an array of token ids and strings", "prompt");
  bool first = true;
  for (const json& part : *it) {
    if (part.is_number_integer()) {
      r.prompt_tokens.push_back(TokenId(part, "prompt"));
    } else if (part.is_string()) {
      std::vector<engine::Token> t = router.Tokenize(r.model, part.get<std::string>(), first, true);
      r.prompt_tokens.insert(r.prompt_tokens.end(), t.begin(), t.end());
    } else {
      throw ApiError(400, "'prompt' array items must be token ids or strings", "prompt");
    }
    first = false;
  }
  if (r.prompt_tokens.empty()) throw ApiError(400, "'prompt' is empty", "prompt");
}

json Timings(const router::InferenceResult& res) {
  int32_t evaluated = res.prompt_tokens - res.cached_tokens;
  return {{"cache_n", res.cached_tokens},
          {"prompt_n", evaluated},
          {"prompt_ms", res.prompt_ms},
          {"prompt_per_token_ms", evaluated > 0 ? res.prompt_ms / evaluated : 0.0},
          {"prompt_per_second", res.prompt_ms > 0 ? 1000.0 * evaluated / res.prompt_ms : 0.0},
          {"predicted_n", res.completion_tokens},
          {"predicted_ms", res.generation_ms},
          {"predicted_per_token_ms", res.completion_tokens > 1 ? res.generation_ms / (res.completion_tokens - 1) : 0.0},
          {"predicted_per_second", res.generation_ms > 0 ? 1000.0 * (res.completion_tokens - 1) / res.generation_ms : 0.0}};
}

void RunCompletion(router::Router& router, const HttpRequest& http, Responder& out, router::InferenceRequest& r,
                   const json& body) {
  bool stream = OptBool(body, "stream").value_or(false);
  bool return_tokens = OptBool(body, "return_tokens").value_or(false);
  LazyStream s(out, "text/event-stream");
  router::GenerationCallbacks cb;
  cb.on_route = [&](const std::string& route) { s.SetRoute(route); };
  int32_t streamed = 0;
  if (stream) {
    cb.on_text = [&](std::string_view text) {
      ++streamed;
      json chunk = {{"index", 0}, {"content", text}, {"tokens", json::array()}, {"stop", false}, {"id_slot", -1},
                    {"tokens_predicted", streamed}};
      return s.Write("data: " + chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n");
    };
  }
  (void)http;
  router::InferenceResult res = router.Generate(r, cb, out.cancel_flag());
  std::string stop_type = res.finish_reason == "length" ? "limit" : !res.stop_string.empty() ? "word" : "eos";
  json final = {{"index", 0},
                {"content", stream ? "" : res.text},
                {"tokens", return_tokens ? json(res.tokens) : json::array()},
                {"id_slot", -1},
                {"stop", true},
                {"model", res.model},
                {"tokens_predicted", res.completion_tokens},
                {"tokens_evaluated", res.prompt_tokens},
                {"tokens_cached", res.cached_tokens},
                {"has_new_line", res.text.find('\n') != std::string::npos},
                {"truncated", false},
                {"stop_type", stop_type},
                {"stopping_word", res.stop_string},
                {"timings", Timings(res)},
                {"hearth_route", res.route}};
  if (stream) {
    s.Write("data: " + final.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n");
    s.End();
  } else {
    out.Respond(JsonResponse(final, 200, {{"X-Hearth-Route", res.route}}));
  }
}

void Completion(router::Router& router, const ApiOptions& options, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  router::InferenceRequest r;
  r.client = ClientFromRequest(http, "llamacpp");
  r.endpoint = router::Endpoint::kCompletion;
  r.model = ModelOf(body, options);
  r.parse_special = true;
  ApplySampling(router, body, r);
  ParsePrompt(body, router, r);
  RunCompletion(router, http, out, r, body);
}

void Infill(router::Router& router, const ApiOptions& options, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  router::InferenceRequest r;
  r.client = ClientFromRequest(http, "llamacpp");
  r.endpoint = router::Endpoint::kInfill;
  r.model = ModelOf(body, options);
  ApplySampling(router, body, r);
  router::FimInput fim;
  fim.prefix = OptString(body, "input_prefix").value_or("");
  fim.suffix = OptString(body, "input_suffix").value_or("");
  fim.middle = OptString(body, "prompt").value_or("");
  if (auto it = body.find("input_extra"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) throw ApiError(400, "'input_extra' must be an array of {filename, text}", "input_extra");
    if (it->size() > 1000) throw ApiError(400, "'input_extra' may have at most 1000 items", "input_extra");
    for (const json& chunk : *it) {
      if (!chunk.is_object()) throw ApiError(400, "'input_extra' items must be objects {filename, text}", "input_extra");
      engine::FimExtraFile f;
      f.filename = OptString(chunk, "filename").value_or("");
      f.text = OptString(chunk, "text").value_or("");
      fim.extra.push_back(std::move(f));
    }
  }
  r.fim = std::move(fim);
  RunCompletion(router, http, out, r, body);
}

void Tokenize(router::Router& router, const ApiOptions& options, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  std::string model = ModelOf(body, options);
  std::string content = OptString(body, "content").value_or("");
  bool add_special = OptBool(body, "add_special").value_or(false);
  bool parse_special = OptBool(body, "parse_special").value_or(true);
  bool with_pieces = OptBool(body, "with_pieces").value_or(false);
  std::vector<engine::Token> tokens = router.Tokenize(model, content, add_special, parse_special);
  if (!with_pieces) {
    out.Respond(JsonResponse({{"tokens", tokens}}));
    return;
  }
  json pieces = json::array();
  for (engine::Token t : tokens) {
    std::string piece = router.Detokenize(model, {t});
    try {
      (void)json(piece).dump();  // throws on invalid UTF-8: then send the bytes
      pieces.push_back({{"id", t}, {"piece", piece}});
    } catch (const json::type_error&) {
      pieces.push_back({{"id", t}, {"piece", std::vector<uint8_t>(piece.begin(), piece.end())}});
    }
  }
  out.Respond(JsonResponse({{"tokens", pieces}}));
}

void Detokenize(router::Router& router, const ApiOptions& options, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  std::string model = ModelOf(body, options);
  std::vector<engine::Token> tokens;
  if (auto it = body.find("tokens"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
    for (const json& t : *it) {
      if (!t.is_number_integer()) throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
      int64_t v = t.get<int64_t>();
      if (v < INT32_MIN || v > INT32_MAX) throw ApiError(400, "token id " + std::to_string(v) + " is out of range", "tokens");
      tokens.push_back(static_cast<engine::Token>(v));
    }
  }
  out.Respond(JsonResponse({{"content", router.Detokenize(model, tokens)}}));
}

}  // namespace

void AddLlamaCppRoutes(RouteTable& routes, router::Router& router, const ApiOptions& options) {
  auto wrap = [&router, options](void (*fn)(router::Router&, const ApiOptions&, const HttpRequest&, Responder&)) {
    return [&router, options, fn](const HttpRequest& req, Responder& out) {
      RunHandler(ErrorStyle::kLlamaCpp, out, [&] { fn(router, options, req, out); });
    };
  };
  routes[{"POST", "/completion"}] = wrap(Completion);
  routes[{"POST", "/completions"}] = wrap(Completion);
  routes[{"POST", "/infill"}] = wrap(Infill);
  routes[{"POST", "/tokenize"}] = wrap(Tokenize);
  routes[{"POST", "/detokenize"}] = wrap(Detokenize);
  routes[{"GET", "/health"}] = [](const HttpRequest&, Responder& out) { out.Respond(JsonResponse({{"status", "ok"}})); };
  routes[{"GET", "/slots"}] = [&router](const HttpRequest&, Responder& out) {
    json slots = json::array();
    int id = 0;
    for (const router::SlotView& s : router.Slots()) {
      slots.push_back({{"id", id++}, {"model", s.model}, {"n_ctx", s.n_ctx}, {"is_processing", s.state.processing},
                       {"tokens_cached", s.state.cached_tokens}});
    }
    out.Respond(JsonResponse(slots));
  };
}

}  // namespace hearth::api
