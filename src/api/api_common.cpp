#include "api/api_common.h"

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

std::vector<engine::ChatMessage> ParseChatMessages(const json& body, bool openai) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array()) throw ApiError(400, "'messages' must be an array of {role, content}", "messages");
  if (it->size() > 10000) throw ApiError(400, "'messages' may have at most 10000 items", "messages");
  std::vector<engine::ChatMessage> out;
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
    std::string content;
    auto c = m.find("content");
    if (c != m.end() && c->is_string()) {
      content = c->get<std::string>();
    } else if (c != m.end() && c->is_array() && openai) {
      for (const json& part : *c) {  // OpenAI content parts: only text is supported
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
          throw ApiError(400, "'" + where + ".content' parts must be {\"type\": \"text\", \"text\": ...}; images are not supported", "messages");
        }
        content += part["text"].get<std::string>();
      }
    } else if (c != m.end() && !c->is_null()) {
      throw ApiError(400, "'" + where + ".content' must be a string", "messages");
    }
    out.push_back({r, content});
  }
  return out;
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
