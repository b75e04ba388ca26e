// OpenAI's API: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.
// Streams are server-sent events ending with "data: [DONE]".
#include <atomic>
#include <random>

#include <openssl/evp.h>

#include "api/api_common.h"

namespace hearth::api {

namespace {

std::string NewId(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s-%016llx%04llx", prefix, static_cast<unsigned long long>(salt),
                static_cast<unsigned long long>(++counter & 0xffff));
  return buf;
}

std::string Sse(const json& j) { return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"; }

// OpenAI's defaults, then the model's Modelfile defaults, then what the request sets.
void ApplySampling(router::Router& router, const json& body, router::InferenceRequest& r, int32_t default_max_tokens) {
  r.model = RequireString(body, "model");
  engine::SamplingParams& s = r.sampling;
  s.temperature = 1.0f;
  s.top_p = 1.0f;
  s.top_k = 0;
  s.min_p = 0;
  s.repeat_penalty = 1.0f;  // OpenAI has no repeat penalty; frequency/presence are separate
  s.max_tokens = default_max_tokens;
  ApplyModelDefaults(router, r);
  if (auto v = OptNumber(body, "temperature", 0, 2)) s.temperature = static_cast<float>(*v);
  if (auto v = OptNumber(body, "top_p", 0, 1)) s.top_p = static_cast<float>(*v);
  if (auto v = OptNumber(body, "frequency_penalty", -2, 2); v && *v != 0) {
    throw ApiError(400, "'frequency_penalty' is not supported; use 0 or leave it out", "frequency_penalty");
  }
  if (auto v = OptNumber(body, "presence_penalty", -2, 2); v && *v != 0) {
    throw ApiError(400, "'presence_penalty' is not supported; use 0 or leave it out", "presence_penalty");
  }
  if (auto v = OptInt(body, "seed", INT64_MIN / 2, INT64_MAX / 2)) s.seed = static_cast<uint32_t>(*v);
  std::optional<int64_t> max = OptInt(body, "max_completion_tokens", 0, 10000000);
  if (!max) max = OptInt(body, "max_tokens", 0, 10000000);
  if (max) s.max_tokens = static_cast<int32_t>(*max);
  if (auto v = OptStringList(body, "stop", 16)) s.stop = *v;
  if (auto n = OptInt(body, "n", 1, 128); n && *n != 1) throw ApiError(400, "'n' must be 1: hearth returns one choice", "n");
  if (OptBool(body, "logprobs").value_or(false)) throw ApiError(400, "'logprobs' is not supported", "logprobs");
  if (OptBool(body, "echo").value_or(false)) throw ApiError(400, "'echo' is not supported", "echo");
  if (auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) throw ApiError(400, "'response_format' must be an object", "response_format");
    std::string type = it->value("type", "text");
    if (type == "json_object") {
      s.grammar = GrammarForFormat("json", "response_format");
    } else if (type == "json_schema") {
      auto js = it->find("json_schema");
      if (js == it->end() || !js->is_object() || !js->contains("schema")) {
        throw ApiError(400, "'response_format.json_schema.schema' is required for type json_schema", "response_format");
      }
      s.grammar = GrammarForFormat((*js)["schema"], "response_format");
    } else if (type != "text") {
      throw ApiError(400, "'response_format.type' must be text, json_object or json_schema", "response_format");
    }
  }
}

// OpenAI's base64 embeddings: the float32 values in little-endian byte order (x86 and ARM
// are little-endian), base64-encoded.
std::string Base64Floats(const std::vector<float>& v) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(v.data());
  std::string out(4 * ((v.size() * sizeof(float) + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes, static_cast<int>(v.size() * sizeof(float)));
  out.resize(static_cast<size_t>(n));
  return out;
}

json Usage(const router::InferenceResult& res) {
  return {{"prompt_tokens", res.prompt_tokens}, {"completion_tokens", res.completion_tokens},
          {"total_tokens", res.prompt_tokens + res.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", res.cached_tokens}}}};
}

std::string OpenAIFinish(const std::string& finish) {
  return finish == "length" || finish == "tool_calls" ? finish : "stop";
}

// message.tool_calls / a streamed delta's tool_calls (with index when streaming).
json ToolCallsJson(const std::vector<engine::ToolCall>& calls, bool with_index) {
  json out = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    json call = {{"id", calls[i].id}, {"type", "function"},
                 {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (with_index) call["index"] = i;
    out.push_back(std::move(call));
  }
  return out;
}

void ChatCompletions(router::Router& router, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  router::InferenceRequest r;
  r.client = ClientFromRequest(http, "openai");
  r.endpoint = router::Endpoint::kChat;
  ApplySampling(router, body, r, -1);
  r.messages = ParseChatMessages(body, true);
  if (r.messages.empty()) throw ApiError(400, "'messages' must not be empty", "messages");
  r.tools = ParseTools(body, true);
  r.tool_choice = ParseToolChoice(body, r.tools);
  r.parallel_tool_calls = OptBool(body, "parallel_tool_calls").value_or(true);  // OpenAI's default
  bool stream = OptBool(body, "stream").value_or(false);
  bool include_usage = false;
  if (auto it = body.find("stream_options"); it != body.end() && it->is_object()) {
    include_usage = OptBool(*it, "include_usage").value_or(false);
  }
  const std::string id = NewId("chatcmpl");
  const int64_t created = UnixSeconds();
  LazyStream s(out, "text/event-stream");
  router::GenerationCallbacks cb;
  cb.on_route = [&](const std::string& route) { s.SetRoute(route); };
  bool first = true;
  if (stream) {
    cb.on_text = [&](std::string_view text) {
      json delta = {{"content", text}};
      if (first) delta["role"] = "assistant";
      first = false;
      return s.Write(Sse({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", r.model},
                          {"choices", json::array({{{"index", 0}, {"delta", delta}, {"finish_reason", nullptr}}})}}));
    };
  }
  router::InferenceResult res = router.Generate(r, cb, out.cancel_flag());
  if (stream) {
    auto chunk = [&](json delta) {
      return Sse({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", r.model},
                  {"choices", json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", nullptr}}})}});
    };
    // Tool calls (and a thinking model's reasoning) are sent whole once the reply is done:
    // the router holds them back while they form.
    if (!res.reasoning.empty()) {
      json delta = {{"reasoning_content", res.reasoning}};
      if (first) delta["role"] = "assistant";
      first = false;
      s.Write(chunk(std::move(delta)));
    }
    if (!res.tool_calls.empty()) {
      json delta = {{"tool_calls", ToolCallsJson(res.tool_calls, true)}};
      if (first) {
        delta["role"] = "assistant";
        delta["content"] = nullptr;
      }
      first = false;
      s.Write(chunk(std::move(delta)));
    }
    json delta = json::object();
    if (first) delta = {{"role", "assistant"}, {"content", ""}};
    s.Write(Sse({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", r.model},
                 {"hearth_route", res.route},
                 {"choices", json::array({{{"index", 0}, {"delta", delta}, {"finish_reason", OpenAIFinish(res.finish_reason)}}})}}));
    if (include_usage) {
      s.Write(Sse({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", r.model},
                   {"choices", json::array()}, {"usage", Usage(res)}}));
    }
    s.Write("data: [DONE]\n\n");
    s.End();
    return;
  }
  json message = {{"role", "assistant"}, {"content", res.text}};
  if (!res.tool_calls.empty()) {
    if (res.text.empty()) message["content"] = nullptr;  // as OpenAI answers a pure tool call
    message["tool_calls"] = ToolCallsJson(res.tool_calls, false);
  }
  if (!res.reasoning.empty()) message["reasoning_content"] = res.reasoning;  // llama.cpp's field
  out.Respond(JsonResponse(
      {{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", r.model},
       {"system_fingerprint", "hearth"}, {"hearth_route", res.route},
       {"choices", json::array({{{"index", 0}, {"message", message},
                                 {"logprobs", nullptr}, {"finish_reason", OpenAIFinish(res.finish_reason)}}})},
       {"usage", Usage(res)}},
      200, {{"X-Hearth-Route", res.route}}));
}

void Completions(router::Router& router, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  router::InferenceRequest r;
  r.client = ClientFromRequest(http, "openai");
  ApplySampling(router, body, r, 16);  // OpenAI's documented default for /v1/completions
  auto prompts = OptStringList(body, "prompt", 1);
  std::string prompt = prompts && !prompts->empty() ? (*prompts)[0] : std::string();
  std::string suffix = OptString(body, "suffix").value_or("");
  if (!suffix.empty()) {
    r.endpoint = router::Endpoint::kInfill;
    r.fim = router::FimInput{prompt, suffix, {}, {}};
  } else {
    r.endpoint = router::Endpoint::kCompletion;
    r.prompt = prompt;
  }
  bool stream = OptBool(body, "stream").value_or(false);
  bool include_usage = false;
  if (auto it = body.find("stream_options"); it != body.end() && it->is_object()) {
    include_usage = OptBool(*it, "include_usage").value_or(false);
  }
  const std::string id = NewId("cmpl");
  const int64_t created = UnixSeconds();
  LazyStream s(out, "text/event-stream");
  router::GenerationCallbacks cb;
  cb.on_route = [&](const std::string& route) { s.SetRoute(route); };
  if (stream) {
    cb.on_text = [&](std::string_view text) {
      return s.Write(Sse({{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", r.model},
                          {"choices", json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr},
                                                    {"finish_reason", nullptr}}})}}));
    };
  }
  router::InferenceResult res = router.Generate(r, cb, out.cancel_flag());
  if (stream) {
    s.Write(Sse({{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", r.model},
                 {"hearth_route", res.route},
                 {"choices", json::array({{{"index", 0}, {"text", ""}, {"logprobs", nullptr},
                                           {"finish_reason", OpenAIFinish(res.finish_reason)}}})}}));
    if (include_usage) {
      s.Write(Sse({{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", r.model},
                   {"choices", json::array()}, {"usage", Usage(res)}}));
    }
    s.Write("data: [DONE]\n\n");
    s.End();
    return;
  }
  out.Respond(JsonResponse({{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", r.model},
                            {"hearth_route", res.route},
                            {"choices", json::array({{{"index", 0}, {"text", res.text}, {"logprobs", nullptr},
                                                      {"finish_reason", OpenAIFinish(res.finish_reason)}}})},
                            {"usage", Usage(res)}},
                           200, {{"X-Hearth-Route", res.route}}));
}

void Embeddings(router::Router& router, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  router::InferenceRequest r;
  r.client = ClientFromRequest(http, "openai");
  r.endpoint = router::Endpoint::kEmbedding;
  r.model = RequireString(body, "model");
  auto inputs = OptStringList(body, "input", 2048);
  if (!inputs || inputs->empty()) throw ApiError(400, "'input' must be a string or a non-empty array of strings", "input");
  std::string format = OptString(body, "encoding_format").value_or("float");
  if (format != "float" && format != "base64") {
    throw ApiError(400, "'encoding_format' must be \"float\" or \"base64\"", "encoding_format");
  }
  r.inputs = *inputs;
  router::InferenceResult res = router.Embed(r);
  json data = json::array();
  for (size_t i = 0; i < res.embeddings.size(); ++i) {
    json vector = format == "base64" ? json(Base64Floats(res.embeddings[i])) : json(res.embeddings[i]);
    data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", vector}});
  }
  out.Respond(JsonResponse({{"object", "list"}, {"data", data}, {"model", r.model},
                            {"usage", {{"prompt_tokens", res.prompt_tokens}, {"total_tokens", res.prompt_tokens}}}}));
}

json ModelObject(const engine::RegisteredModel& m) {
  return {{"id", m.name}, {"object", "model"},
          {"created", std::chrono::duration_cast<std::chrono::seconds>(m.modified.time_since_epoch()).count()},
          {"owned_by", "hearth"}};
}

}  // namespace

void AddOpenAIRoutes(RouteTable& routes, router::Router& router, const ApiOptions&) {
  auto wrap = [&router](void (*fn)(router::Router&, const HttpRequest&, Responder&)) {
    return [&router, fn](const HttpRequest& req, Responder& out) {
      RunHandler(ErrorStyle::kOpenAI, out, [&] { fn(router, req, out); });
    };
  };
  routes[{"POST", "/v1/chat/completions"}] = wrap(ChatCompletions);
  routes[{"POST", "/v1/completions"}] = wrap(Completions);
  routes[{"POST", "/v1/embeddings"}] = wrap(Embeddings);
  routes[{"GET", "/v1/models"}] = [&router](const HttpRequest&, Responder& out) {
    json data = json::array();
    for (const auto& m : router.ListModels()) data.push_back(ModelObject(m));
    out.Respond(JsonResponse({{"object", "list"}, {"data", data}}));
  };
  // /v1/models/{id} is matched by prefix in the dispatcher.
  routes[{"GET", "/v1/models/"}] = [&router](const HttpRequest& req, Responder& out) {
    RunHandler(ErrorStyle::kOpenAI, out, [&] {
      std::string id = req.path.substr(std::string("/v1/models/").size());
      for (const auto& m : router.ListModels()) {
        if (m.name == id || m.name == id + ":latest") {
          out.Respond(JsonResponse(ModelObject(m)));
          return;
        }
      }
      throw ApiError(404, "model '" + id + "' not found", "model");
    });
  };
}

}  // namespace hearth::api
