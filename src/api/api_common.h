// Shared pieces of the HTTP surfaces: the API error type, typed JSON field access with
// messages that say what to fix, option parsing shared by all surfaces, and streaming
// helpers. Handlers stay thin: parse into router::InferenceRequest, call the router,
// serialise.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/http_server.h"
#include "router/request.h"
#include "router/router.h"

namespace hearth::api {

using json = nlohmann::json;

// An error answered as an HTTP status with a message. `param` names the offending field.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string param = {})
      : std::runtime_error(message), status_(status), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string param_;
};

// Parses the body as a JSON object, or throws ApiError(400) saying where it is malformed.
json ParseJsonObject(const HttpRequest& request);

// Typed accessors: absent or null -> nullopt; wrong type or out of range -> ApiError(400)
// naming the field, e.g. "'temperature' must be a number between 0 and 2".
std::optional<std::string> OptString(const json& j, const char* key);
std::string RequireString(const json& j, const char* key);
std::optional<double> OptNumber(const json& j, const char* key, double min, double max);
std::optional<int64_t> OptInt(const json& j, const char* key, int64_t min, int64_t max);
std::optional<bool> OptBool(const json& j, const char* key);
// A string or an array of strings (OpenAI/Ollama 'stop', 'input').
std::optional<std::vector<std::string>> OptStringList(const json& j, const char* key, size_t max_items);

// Starts r (whose model is set, and whose sampling holds the surface's own defaults) from
// the model's Modelfile defaults: sampling fields, num_ctx, system prompt, template. The
// request's own fields are applied afterwards and win.
void ApplyModelDefaults(router::Router& router, router::InferenceRequest& r);

// The sampling fields Ollama's "options" and llama.cpp's request body share, with the same
// names and ranges: temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed
// (negative: random), stop. Only the fields present are set.
void ApplySharedSamplingFields(const json& j, engine::SamplingParams& s);

// 'messages' as [{role, content}]; with openai, OpenAI's [{type: text, text}] content arrays
// too. Roles: system, user, assistant, tool (developer -> system). Assistant messages may
// carry tool_calls [{id, type, function: {name, arguments}}] (arguments: a JSON string for
// OpenAI, an object for Ollama); tool messages tool_call_id (required by OpenAI) and
// name/tool_name (taken from the matching call when absent).
std::vector<engine::ChatMessage> ParseChatMessages(const json& body, bool openai);

// 'tools' as [{type: "function", function: {name, description, parameters}}] (both surfaces
// use this shape; Ollama's clients may leave out type). [] when absent.
std::vector<engine::ToolSpec> ParseTools(const json& body, bool require_type);
// 'tool_choice': "auto" | "none" | "required" | {type: "function", function: {name}}, the
// name one of `tools`. Absent: auto.
engine::ToolChoice ParseToolChoice(const json& body, const std::vector<engine::ToolSpec>& tools);

// A token id from JSON; values outside int32 are rejected rather than wrapped (the model's
// vocabulary size is checked later, by the engine).
engine::Token TokenId(const json& value, const char* field);

// Ollama's keep_alive: a number of seconds or a Go duration ("5m", "1h30m", "-1"); a
// negative value means forever.
std::optional<std::chrono::seconds> ParseKeepAlive(const json& j);

// JSON output constraints: "json" (any JSON) or a JSON schema object -> GBNF grammar.
std::string GrammarForFormat(const json& format, const char* field);

// How a surface writes errors: Ollama {"error": msg}; OpenAI/llama.cpp {"error": {...}}.
enum class ErrorStyle { kOllama, kOpenAI, kLlamaCpp };
HttpResponse ErrorResponse(ErrorStyle style, int status, const std::string& message, const std::string& param = {});

// Runs a handler body, turning ApiError / EngineError / json errors into responses in the
// surface's style. Returns the HTTP status that was sent (for metrics).
int RunHandler(ErrorStyle style, Responder& responder, const std::function<void()>& body);

HttpResponse JsonResponse(const json& body, int status = 200, Headers extra = {});

// Client context (surface, project, sensitivity) from headers.
router::ClientContext ClientFromRequest(const HttpRequest& request, const char* surface);

// A stream that is opened lazily: the HTTP status and headers go out with the first chunk,
// so an error before any output is still a proper error response.
class LazyStream {
 public:
  LazyStream(Responder& responder, std::string content_type) : responder_(responder), content_type_(std::move(content_type)) {}
  void SetRoute(const std::string& route) { route_ = route; }
  bool Write(const std::string& chunk);
  void End();
  bool begun() const { return begun_; }

 private:
  Responder& responder_;
  std::string content_type_;
  std::string route_ = "local";
  bool begun_ = false;
};

// Seconds since the epoch, and RFC 3339 with nanoseconds as Ollama writes it.
int64_t UnixSeconds();
std::string Rfc3339Now();
std::string Rfc3339(std::chrono::system_clock::time_point t);

struct ApiOptions {
  std::string default_model;  // for surfaces that do not name a model (llama.cpp)
  std::string version = "0.1.0";
};

using RouteTable = std::map<std::pair<std::string, std::string>, Handler>;  // (method, path)
void AddOllamaRoutes(RouteTable& routes, router::Router& router, const ApiOptions& options);
void AddOpenAIRoutes(RouteTable& routes, router::Router& router, const ApiOptions& options);
void AddLlamaCppRoutes(RouteTable& routes, router::Router& router, const ApiOptions& options);
void AddHearthRoutes(RouteTable& routes, router::Router& router, const ApiOptions& options);

}  // namespace hearth::api
