#include "api/api_common.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>

#include "engine/error.h"
#include "engine/grammar.h"

namespace hearth::api {

using engine::EngineError;
using engine::ErrorKind;

json ParseJsonObject(const HttpRequest& request) {
  if (request.body.empty()) throw ApiError(400, "the request body is empty; send a JSON object");
  json j;
  try {
    j = json::parse(request.body);
  } catch (const json::parse_error& e) {
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return j;
}

namespace {
const json* Field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}
std::string Range(double min, double max) {
  auto fmt = [](double v) {
    std::string s = std::to_string(v);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
  };
  return fmt(min) + " and " + fmt(max);
}
}  // namespace

std::optional<std::string> OptString(const json& j, const char* key) {
  const json* v = Field(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) throw ApiError(400, std::string("'") + key + "' must be a string", key);
  return v->get<std::string>();
}

std::string RequireString(const json& j, const char* key) {
  std::optional<std::string> v = OptString(j, key);
  if (!v || v->empty()) throw ApiError(400, std::string("'") + key + "' is required", key);
  return *v;
}

std::optional<double> OptNumber(const json& j, const char* key, double min, double max) {
  const json* v = Field(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) throw ApiError(400, std::string("'") + key + "' must be a number between " + Range(min, max), key);
  double d = v->get<double>();
  if (!std::isfinite(d) || d < min || d > max) {
    throw ApiError(400, std::string("'") + key + "' must be between " + Range(min, max), key);
  }
  return d;
}

std::optional<int64_t> OptInt(const json& j, const char* key, int64_t min, int64_t max) {
  const json* v = Field(j, key);
  if (v == nullptr) return std::nullopt;
  bool integral = v->is_number_integer() || (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
                                             std::fabs(v->get<double>()) < 9e15);
  if (!integral) {
    throw ApiError(400, std::string("'") + key + "' must be an integer between " + std::to_string(min) + " and " +
                            std::to_string(max), key);
  }
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    throw ApiError(400, std::string("'") + key + "' must be at most " + std::to_string(max), key);
  }
  int64_t i = v->is_number_float() ? static_cast<int64_t>(v->get<double>()) : v->get<int64_t>();
  if (i < min || i > max) {
    throw ApiError(400, std::string("'") + key + "' must be between " + std::to_string(min) + " and " +
                            std::to_string(max), key);
  }
  return i;
}

std::optional<bool> OptBool(const json& j, const char* key) {
  const json* v = Field(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) throw ApiError(400, std::string("'") + key + "' must be true or false", key);
  return v->get<bool>();
}

std::optional<std::vector<std::string>> OptStringList(const json& j, const char* key, size_t max_items) {
  const json* v = Field(j, key);
  if (v == nullptr) return std::nullopt;
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > max_items) {
      throw ApiError(400, std::string("'") + key + "' may have at most " + std::to_string(max_items) + " items", key);
    }
    for (const json& item : *v) {
      if (!item.is_string()) throw ApiError(400, std::string("'") + key + "' must be a string or an array of strings", key);
      out.push_back(item.get<std::string>());
    }
  } else {
    throw ApiError(400, std::string("'") + key + "' must be a string or an array of strings", key);
  }
  return out;
}

engine::Token TokenId(const json& value, const char* field) {
  bool in_range = value.is_number_integer() &&
                  (value.is_number_unsigned() ? value.get<uint64_t>() <= static_cast<uint64_t>(INT32_MAX)
                                              : value.get<int64_t>() >= INT32_MIN && value.get<int64_t>() <= INT32_MAX);
  if (!in_range) {
    throw ApiError(400, std::string("'") + field + "' has token id " + value.dump() + ", which is out of range", field);
  }
  return value.get<engine::Token>();
}

void ApplyModelDefaults(router::Router& router, router::InferenceRequest& r) {
  const engine::ModelDefaults defaults = router.DefaultsOf(r.model);
  defaults.ApplyTo(r.sampling);
  r.num_ctx = defaults.num_ctx;
  r.system = defaults.system;
  r.template_override = defaults.template_text;
}

void ApplySharedSamplingFields(const json& o, engine::SamplingParams& s) {
  if (auto v = OptNumber(o, "temperature", 0, 100)) s.temperature = static_cast<float>(*v);
  if (auto v = OptInt(o, "top_k", 0, 1000000)) s.top_k = static_cast<int32_t>(*v);
  if (auto v = OptNumber(o, "top_p", 0, 1)) s.top_p = static_cast<float>(*v);
  if (auto v = OptNumber(o, "min_p", 0, 1)) s.min_p = static_cast<float>(*v);
  if (auto v = OptNumber(o, "repeat_penalty", 0.01, 100)) s.repeat_penalty = static_cast<float>(*v);
  if (auto v = OptInt(o, "repeat_last_n", -1, 1000000)) s.repeat_last_n = static_cast<int32_t>(*v);
  if (auto v = OptInt(o, "seed", INT32_MIN, UINT32_MAX); v && *v >= 0) s.seed = static_cast<uint32_t>(*v);
  if (auto v = OptStringList(o, "stop", 16)) s.stop = *v;
}

std::optional<std::chrono::seconds> ParseKeepAlive(const json& j) {
  const json* v = Field(j, "keep_alive");
  if (v == nullptr) return std::nullopt;
  const std::string bad = "'keep_alive' must be a number of seconds or a duration such as \"5m\", \"1h\" or \"-1\"";
  if (v->is_number()) {
    double s = v->get<double>();
    if (!std::isfinite(s) || std::fabs(s) > 1e9) throw ApiError(400, bad, "keep_alive");
    return std::chrono::seconds(s < 0 ? -1 : static_cast<int64_t>(s));
  }
  if (!v->is_string()) throw ApiError(400, bad, "keep_alive");
  std::string text = v->get<std::string>();
  if (text.empty()) throw ApiError(400, bad, "keep_alive");
  bool negative = text[0] == '-';
  size_t i = negative ? 1 : 0;
  double total = 0;
  bool any = false;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
    if (start == i) throw ApiError(400, bad, "keep_alive");
    double n = std::stod(text.substr(start, i - start));
    std::string unit;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) unit += text[i++];
    double scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "ms" ? 0.001 : -1;
    if (scale < 0) throw ApiError(400, bad, "keep_alive");
    total += n * scale;
    any = true;
    if (total > 1e9) throw ApiError(400, bad, "keep_alive");
  }
  if (!any) throw ApiError(400, bad, "keep_alive");
  if (negative) return std::chrono::seconds(-1);
  return std::chrono::seconds(static_cast<int64_t>(total));
}

std::string GrammarForFormat(const json& format, const char* field) {
  if (format.is_null()) return {};
  if (format.is_string()) {
    std::string f = format.get<std::string>();
    if (f.empty()) return {};
    if (f == "json") return engine::JsonObjectGrammar();
    throw ApiError(400, std::string("'") + field + "' must be \"json\" or a JSON schema object", field);
  }
  if (format.is_object()) {
    try {
      return engine::JsonSchemaToGrammar(format.dump());
    } catch (const EngineError& e) {
      throw ApiError(400, std::string("'") + field + "': " + e.what(), field);
    }
  }
  throw ApiError(400, std::string("'") + field + "' must be \"json\" or a JSON schema object", field);
}

namespace {

std::vector<engine::ToolCall> ParseToolCalls(const json& calls, const std::string& where, bool openai) {
  const std::string field = where + ".tool_calls";
  if (!calls.is_array()) throw ApiError(400, "'" + field + "' must be an array of tool calls", "messages");
  std::vector<engine::ToolCall> out;
  for (size_t i = 0; i < calls.size(); ++i) {
    const json& c = calls[i];
    const std::string at = field + "[" + std::to_string(i) + "]";
    if (!c.is_object()) throw ApiError(400, "'" + at + "' must be an object with 'function'", "messages");
    engine::ToolCall call;
    if (auto id = c.find("id"); id != c.end() && !id->is_null()) {
      if (!id->is_string()) throw ApiError(400, "'" + at + ".id' must be a string", "messages");
      call.id = id->get<std::string>();
    } else if (openai) {
      throw ApiError(400, "'" + at + ".id' is required", "messages");
    }
    if (auto type = c.find("type"); type != c.end() && !type->is_null()) {
      if (*type != "function") throw ApiError(400, "'" + at + ".type' must be \"function\"", "messages");
    } else if (openai) {
      throw ApiError(400, "'" + at + ".type' is required and must be \"function\"", "messages");
    }
    auto fn = c.find("function");
    if (fn == c.end() || !fn->is_object()) throw ApiError(400, "'" + at + ".function' must be an object with 'name' and 'arguments'", "messages");
    auto name = fn->find("name");
    if (name == fn->end() || !name->is_string() || name->get<std::string>().empty()) {
      throw ApiError(400, "'" + at + ".function.name' must be a non-empty string", "messages");
    }
    call.name = name->get<std::string>();
    auto args = fn->find("arguments");
    if (args == fn->end() || args->is_null()) {
      call.arguments = "{}";
    } else if (args->is_string()) {
      // OpenAI sends the arguments as JSON text; the template needs to read them.
      json parsed = json::parse(args->get<std::string>(), nullptr, false);
      if (parsed.is_discarded() || !parsed.is_object()) {
        throw ApiError(400, "'" + at + ".function.arguments' must be a JSON object encoded as a string", "messages");
      }
      call.arguments = args->get<std::string>();
    } else if (args->is_object() && !openai) {
      call.arguments = args->dump();
    } else {
      throw ApiError(400, "'" + at + ".function.arguments' must be " +
                              std::string(openai ? "a string holding a JSON object" : "an object"), "messages");
    }
    out.push_back(std::move(call));
  }
  return out;
}

std::string OptMessageString(const json& m, const char* key, const std::string& where) {
  auto it = m.find(key);
  if (it == m.end() || it->is_null()) return {};
  if (!it->is_string()) throw ApiError(400, "'" + where + "." + key + "' must be a string", "messages");
  return it->get<std::string>();
}

}  // namespace

std::vector<engine::ChatMessage> ParseChatMessages(const json& body, bool openai) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array()) throw ApiError(400, "'messages' must be an array of {role, content}", "messages");
  if (it->size() > 10000) throw ApiError(400, "'messages' may have at most 10000 items", "messages");
  std::vector<engine::ChatMessage> out;
  std::map<std::string, std::string> call_names;  // tool call id -> function name
  size_t i = 0;
  for (const json& m : *it) {
    std::string where = "messages[" + std::to_string(i++) + "]";
    if (!m.is_object()) throw ApiError(400, "'" + where + "' must be an object with 'role' and 'content'", "messages");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) throw ApiError(400, "'" + where + ".role' must be a string", "messages");
    std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "developer") {
      throw ApiError(400, "'" + where + ".role' must be one of system, user, assistant, tool", "messages");
    }
    if (r == "developer") r = "system";
    engine::ChatMessage message;
    message.role = r;
    auto c = m.find("content");
    if (c != m.end() && c->is_string()) {
      message.content = c->get<std::string>();
    } else if (c != m.end() && c->is_array() && openai) {
      for (const json& part : *c) {  // OpenAI content parts: only text is supported
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
          throw ApiError(400, "'" + where + ".content' parts must be {\"type\": \"text\", \"text\": ...}; images are not supported", "messages");
        }
        message.content += part["text"].get<std::string>();
      }
    } else if (c != m.end() && !c->is_null()) {
      throw ApiError(400, "'" + where + ".content' must be a string", "messages");
    }
    if (auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
      if (r != "assistant") throw ApiError(400, "'" + where + ".tool_calls' is only allowed on assistant messages", "messages");
      message.tool_calls = ParseToolCalls(*calls, where, openai);
      for (const engine::ToolCall& call : message.tool_calls) {
        if (!call.id.empty()) call_names[call.id] = call.name;
      }
    }
    if (r == "tool") {
      message.tool_call_id = OptMessageString(m, "tool_call_id", where);
      if (openai && message.tool_call_id.empty()) {
        throw ApiError(400, "'" + where + ".tool_call_id' is required on tool messages", "messages");
      }
      message.tool_name = OptMessageString(m, "tool_name", where);  // Ollama
      if (message.tool_name.empty()) message.tool_name = OptMessageString(m, "name", where);
      if (message.tool_name.empty()) {
        auto known = call_names.find(message.tool_call_id);
        if (known != call_names.end()) message.tool_name = known->second;
      }
    }
    out.push_back(std::move(message));
  }
  return out;
}

std::vector<engine::ToolSpec> ParseTools(const json& body, bool require_type) {
  auto it = body.find("tools");
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_array()) throw ApiError(400, "'tools' must be an array of {type: \"function\", function: {...}}", "tools");
  if (it->size() > 128) throw ApiError(400, "'tools' may have at most 128 items", "tools");
  std::vector<engine::ToolSpec> out;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const std::string at = "tools[" + std::to_string(i) + "]";
    if (!t.is_object()) throw ApiError(400, "'" + at + "' must be an object {type: \"function\", function: {...}}", "tools");
    auto type = t.find("type");
    if ((type == t.end() || type->is_null()) ? require_type : *type != "function") {
      throw ApiError(400, "'" + at + ".type' must be \"function\" (the only tool type)", "tools");
    }
    auto fn = t.find("function");
    if (fn == t.end() || !fn->is_object()) throw ApiError(400, "'" + at + ".function' must be an object with 'name'", "tools");
    engine::ToolSpec spec;
    auto name = fn->find("name");
    if (name == fn->end() || !name->is_string()) throw ApiError(400, "'" + at + ".function.name' must be a string", "tools");
    spec.name = name->get<std::string>();
    // OpenAI's rule: a-z, A-Z, 0-9, underscores and dashes, at most 64.
    bool valid = !spec.name.empty() && spec.name.size() <= 64 &&
                 std::all_of(spec.name.begin(), spec.name.end(), [](unsigned char ch) { return std::isalnum(ch) || ch == '_' || ch == '-'; });
    if (!valid) {
      throw ApiError(400, "'" + at + ".function.name' must be 1 to 64 letters, digits, underscores or dashes", "tools");
    }
    for (const engine::ToolSpec& other : out) {
      if (other.name == spec.name) throw ApiError(400, "'" + at + ".function.name': the tool '" + spec.name + "' is declared twice", "tools");
    }
    if (auto d = fn->find("description"); d != fn->end() && !d->is_null()) {
      if (!d->is_string()) throw ApiError(400, "'" + at + ".function.description' must be a string", "tools");
      spec.description = d->get<std::string>();
    }
    if (auto p = fn->find("parameters"); p != fn->end() && !p->is_null()) {
      if (!p->is_object()) throw ApiError(400, "'" + at + ".function.parameters' must be a JSON schema object", "tools");
      // The schema becomes the grammar of the call's arguments: check it converts.
      try {
        engine::JsonSchemaToGrammar(p->dump());
      } catch (const EngineError& e) {
        throw ApiError(400, "'" + at + ".function.parameters': " + e.what(), "tools");
      }
      spec.parameters = p->dump();
    }
    out.push_back(std::move(spec));
  }
  return out;
}

engine::ToolChoice ParseToolChoice(const json& body, const std::vector<engine::ToolSpec>& tools) {
  engine::ToolChoice choice;
  auto it = body.find("tool_choice");
  if (it == body.end() || it->is_null()) return choice;
  const std::string bad = "'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}";
  if (it->is_string()) {
    std::string v = it->get<std::string>();
    if (v == "auto") choice.mode = engine::ToolChoice::Mode::kAuto;
    else if (v == "none") choice.mode = engine::ToolChoice::Mode::kNone;
    else if (v == "required") choice.mode = engine::ToolChoice::Mode::kRequired;
    else throw ApiError(400, bad, "tool_choice");
  } else if (it->is_object()) {
    auto fn = it->find("function");
    if (it->value("type", json()) != "function" || fn == it->end() || !fn->is_object() || !fn->contains("name") ||
        !(*fn)["name"].is_string()) {
      throw ApiError(400, bad, "tool_choice");
    }
    choice.mode = engine::ToolChoice::Mode::kFunction;
    choice.function = (*fn)["name"].get<std::string>();
    bool known = std::any_of(tools.begin(), tools.end(), [&](const engine::ToolSpec& t) { return t.name == choice.function; });
    if (!known) throw ApiError(400, "'tool_choice' names the function '" + choice.function + "', which is not in 'tools'", "tool_choice");
  } else {
    throw ApiError(400, bad, "tool_choice");
  }
  if (tools.empty() && choice.mode != engine::ToolChoice::Mode::kNone && choice.mode != engine::ToolChoice::Mode::kAuto) {
    throw ApiError(400, "'tool_choice' needs 'tools'", "tool_choice");
  }
  return choice;
}

HttpResponse JsonResponse(const json& body, int status, Headers extra) {
  HttpResponse r;
  r.status = status;
  r.headers = std::move(extra);
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

HttpResponse ErrorResponse(ErrorStyle style, int status, const std::string& message, const std::string& param) {
  json body;
  switch (style) {
    case ErrorStyle::kOllama:
      body = {{"error", message}};
      break;
    case ErrorStyle::kOpenAI: {
      const char* type = status == 401 ? "authentication_error"
                         : status == 404 ? "not_found_error"
                         : status == 429 || status == 503 ? "server_overloaded"
                         : status >= 500 ? "server_error"
                                         : "invalid_request_error";
      body = {{"error", {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)},
                         {"code", status == 404 ? json("model_not_found") : json(nullptr)}}}};
      break;
    }
    case ErrorStyle::kLlamaCpp:
      body = {{"error", {{"code", status}, {"message", message},
                         {"type", status >= 500 ? "server_error" : status == 404 ? "not_found_error" : "invalid_request_error"}}}};
      break;
  }
  Headers extra;
  if (status == 503) extra.emplace_back("Retry-After", "1");
  return JsonResponse(body, status, std::move(extra));
}

int RunHandler(ErrorStyle style, Responder& responder, const std::function<void()>& body) {
  int status = 500;
  std::string message, param;
  try {
    body();
    return 200;
  } catch (const ApiError& e) {
    status = e.status();
    message = e.what();
    param = e.param();
  } catch (const EngineError& e) {
    switch (e.kind()) {
      case ErrorKind::kInvalidRequest:
      case ErrorKind::kContextOverflow:
      case ErrorKind::kUnsupported: status = 400; break;
      case ErrorKind::kNotFound: status = 404; break;
      case ErrorKind::kDenied: status = 403; break;
      case ErrorKind::kOverloaded: status = 503; break;
      case ErrorKind::kInsufficientMemory: status = 507; break;
      case ErrorKind::kInvalidModel:
      case ErrorKind::kInternal: status = 500; break;
    }
    message = e.what();
  } catch (const json::exception& e) {
    status = 400;
    message = std::string("invalid request: ") + e.what();
  } catch (const std::bad_alloc&) {
    status = 507;
    message = "out of memory while handling the request";
  } catch (const std::exception& e) {
    status = 500;
    message = e.what();
  }
  responder.Respond(ErrorResponse(style, status, message, param));
  return status;
}

router::ClientContext ClientFromRequest(const HttpRequest& request, const char* surface) {
  router::ClientContext c;
  c.surface = surface;
  c.project = request.Header("X-Hearth-Project");
  c.sensitivity = request.Header("X-Hearth-Sensitivity");
  c.task = request.Header("X-Hearth-Task");
  c.paths = request.Header("X-Hearth-Paths");
  c.approval = request.Header("X-Hearth-Approval");
  c.remote_address = request.remote_address;
  return c;
}

bool LazyStream::Write(const std::string& chunk) {
  if (!begun_) {
    begun_ = true;
    responder_.Begin(200, {{"Content-Type", content_type_}, {"Cache-Control", "no-cache"}, {"X-Hearth-Route", route_}});
  }
  return responder_.Write(chunk);
}

void LazyStream::End() {
  if (!begun_) {
    begun_ = true;
    responder_.Begin(200, {{"Content-Type", content_type_}, {"X-Hearth-Route", route_}});
  }
  responder_.End();
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ns / 1000000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char out[96];
  std::snprintf(out, sizeof(out), "%s.%09lldZ", buf, static_cast<long long>(ns % 1000000000));
  return out;
}

std::string Rfc3339Now() { return Rfc3339(std::chrono::system_clock::now()); }

}  // namespace hearth::api
