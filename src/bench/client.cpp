#include "bench/client.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <curl/curl.h>
#include <nlohmann/json.hpp>

namespace hearth::bench {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

const char* ApiName(Api api) {
  switch (api) {
    case Api::kOllama: return "ollama";
    case Api::kOpenAI: return "openai";
    case Api::kLlamaCpp: return "llamacpp";
    case Api::kAnthropic: return "anthropic";
  }
  return "?";
}

bool ParseApi(const std::string& text, Api* api) {
  if (text == "ollama") *api = Api::kOllama;
  else if (text == "openai") *api = Api::kOpenAI;
  else if (text == "llamacpp" || text == "llama.cpp") *api = Api::kLlamaCpp;
  else if (text == "anthropic") *api = Api::kAnthropic;
  else return false;
  return true;
}

namespace {

// "http://host:port" has no path: OpenAI-style APIs then live under /v1.
bool HasPath(const std::string& url) {
  size_t scheme = url.find("://");
  size_t from = scheme == std::string::npos ? 0 : scheme + 3;
  size_t slash = url.find('/', from);
  return slash != std::string::npos && slash + 1 < url.size();
}

std::string V1Base(const std::string& url) { return HasPath(url) ? url : url + "/v1"; }

std::string ChatText(const Prompt& p) {
  if (!p.fim) return p.text;
  if (!p.text.empty()) return p.text;
  return "Complete the code at <CURSOR>. Reply with only the code that goes there.\n\n" + p.prefix +
         "<CURSOR>" + p.suffix;
}

}  // namespace

HttpRequest BuildRequest(const Endpoint& ep, const Prompt& p) {
  HttpRequest r;
  json body;
  const bool fim = p.fim && ep.fim;
  switch (ep.api) {
    case Api::kOllama:
      body["stream"] = true;
      body["options"] = {{"num_predict", p.max_tokens}, {"temperature", 0}};
      if (!ep.model.empty()) body["model"] = ep.model;
      if (fim) {
        r.url = ep.url + "/api/generate";
        body["prompt"] = p.prefix;
        body["suffix"] = p.suffix;
      } else {
        r.url = ep.url + "/api/chat";
        body["messages"] = json::array({{{"role", "user"}, {"content", ChatText(p)}}});
      }
      break;
    case Api::kOpenAI:
      if (!ep.model.empty()) body["model"] = ep.model;
      body["max_tokens"] = p.max_tokens;
      body["temperature"] = 0;
      body["stream"] = true;
      body["stream_options"] = {{"include_usage", true}};
      if (fim) {
        r.url = V1Base(ep.url) + "/completions";
        body["prompt"] = p.prefix;
        body["suffix"] = p.suffix;
      } else {
        r.url = V1Base(ep.url) + "/chat/completions";
        body["messages"] = json::array({{{"role", "user"}, {"content", ChatText(p)}}});
      }
      break;
    case Api::kLlamaCpp:
      if (fim) {
        r.url = ep.url + "/infill";
        body["input_prefix"] = p.prefix;
        body["input_suffix"] = p.suffix;
        body["n_predict"] = p.max_tokens;
        body["temperature"] = 0;
        body["stream"] = true;
        if (!ep.model.empty()) body["model"] = ep.model;
      } else {
        r.url = V1Base(ep.url) + "/chat/completions";
        if (!ep.model.empty()) body["model"] = ep.model;
        body["max_tokens"] = p.max_tokens;
        body["temperature"] = 0;
        body["stream"] = true;
        body["stream_options"] = {{"include_usage", true}};
        body["messages"] = json::array({{{"role", "user"}, {"content", ChatText(p)}}});
      }
      break;
    case Api::kAnthropic:
      r.url = V1Base(ep.url) + "/messages";
      body["model"] = ep.model;
      body["max_tokens"] = p.max_tokens;
      body["temperature"] = 0;
      body["stream"] = true;
      body["messages"] = json::array({{{"role", "user"}, {"content", ChatText(p)}}});
      break;
  }
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

namespace {

struct StreamState {
  Api api;
  Clock::time_point start;
  long status = 0;
  bool checked_status = false;
  std::string line;        // partial line
  std::string error_body;  // for HTTP errors
  bool got_first = false;
  double ttft_ms = 0;
  int64_t pieces = 0;
  int64_t reported = -1;
  bool stream_error = false;
  std::string stream_error_text;
  CURL* curl = nullptr;
};

void HandleEvent(StreamState& s, const json& j) {
  if (!j.is_object()) return;
  std::string text;
  if (j.contains("error") && !j["error"].is_null()) {
    s.stream_error = true;
    s.stream_error_text = j["error"].dump().substr(0, 200);
    return;
  }
  if (s.api == Api::kAnthropic) {
    const std::string type = j.value("type", "");
    if (type == "content_block_delta" && j.contains("delta")) {
      text = j["delta"].value("text", "");
    } else if (type == "message_delta" && j.contains("usage")) {
      s.reported = j["usage"].value("output_tokens", s.reported);
    }
  } else if (j.contains("choices") && j["choices"].is_array()) {  // OpenAI shape
    if (!j["choices"].empty()) {
      const json& c = j["choices"][0];
      if (c.contains("delta") && c["delta"].is_object()) {
        const json& d = c["delta"];
        if (d.contains("content") && d["content"].is_string()) text = d["content"].get<std::string>();
      } else if (c.contains("text") && c["text"].is_string()) {
        text = c["text"].get<std::string>();
      }
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      s.reported = j["usage"].value("completion_tokens", s.reported);
    }
  } else if (s.api == Api::kOllama) {
    if (j.contains("message") && j["message"].is_object()) text = j["message"].value("content", "");
    else if (j.contains("response") && j["response"].is_string()) text = j["response"].get<std::string>();
    if (j.value("done", false)) s.reported = j.value("eval_count", s.reported);
  } else {  // llama.cpp /infill
    if (j.contains("content") && j["content"].is_string()) text = j["content"].get<std::string>();
    if (j.value("stop", false)) {
      if (j.contains("timings") && j["timings"].is_object()) {
        s.reported = j["timings"].value("predicted_n", s.reported);
      }
      s.reported = j.value("tokens_predicted", s.reported);
    }
  }
  if (!text.empty()) {
    ++s.pieces;
    if (!s.got_first) {
      s.got_first = true;
      s.ttft_ms = std::chrono::duration<double, std::milli>(Clock::now() - s.start).count();
    }
  }
}

void HandleLine(StreamState& s, std::string line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty() || line[0] == ':') return;
  if (line.rfind("data:", 0) == 0) {
    line.erase(0, 5);
    if (!line.empty() && line[0] == ' ') line.erase(0, 1);
    if (line == "[DONE]") return;
  } else if (line.rfind("event:", 0) == 0 || line.rfind("id:", 0) == 0 || line.rfind("retry:", 0) == 0) {
    return;
  }
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded()) return;
  HandleEvent(s, j);
}

size_t OnData(char* data, size_t size, size_t n, void* user) {
  auto& s = *static_cast<StreamState*>(user);
  const size_t bytes = size * n;
  if (!s.checked_status) {
    curl_easy_getinfo(s.curl, CURLINFO_RESPONSE_CODE, &s.status);
    s.checked_status = true;
  }
  if (s.status >= 300) {
    if (s.error_body.size() < 4096) s.error_body.append(data, std::min<size_t>(bytes, 4096));
    return bytes;
  }
  s.line.append(data, bytes);
  size_t start = 0;
  for (;;) {
    size_t nl = s.line.find('\n', start);
    if (nl == std::string::npos) break;
    HandleLine(s, s.line.substr(start, nl - start));
    start = nl + 1;
  }
  s.line.erase(0, start);
  return bytes;
}

// One curl handle per thread, reset between requests: connections (and TLS sessions) are reused
// as a real client would reuse them.
struct ThreadCurl {
  CURL* handle = curl_easy_init();
  ~ThreadCurl() { curl_easy_cleanup(handle); }
};

Result Perform(const Endpoint& ep, const std::string& url, const std::string& body,
               const Timeouts& t, Api parse_as) {
  thread_local ThreadCurl tc;
  CURL* curl = tc.handle;
  curl_easy_reset(curl);
  Result r;
  StreamState s;
  s.api = parse_as;
  s.curl = curl;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Accept: text/event-stream, application/x-ndjson, application/json");
  if (!ep.key.empty()) {
    if (ep.api == Api::kAnthropic) {
      headers = curl_slist_append(headers, ("x-api-key: " + ep.key).c_str());
    } else {
      headers = curl_slist_append(headers, ("Authorization: Bearer " + ep.key).c_str());
    }
  }
  if (ep.api == Api::kAnthropic) headers = curl_slist_append(headers, "anthropic-version: 2023-06-01");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnData);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &s);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "127.0.0.1,localhost,::1");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(t.connect_s * 1000));
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, std::max(1L, static_cast<long>(t.read_s + 0.5)));
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  s.start = Clock::now();
  CURLcode rc = curl_easy_perform(curl);
  r.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - s.start).count();
  curl_slist_free_all(headers);
  if (!s.line.empty()) HandleLine(s, s.line);
  if (!s.checked_status) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &s.status);
  if (rc != CURLE_OK) {
    r.detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      r.failure = "timeout";
    } else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
               rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_SSL_CONNECT_ERROR) {
      r.failure = "connect";
    } else {
      r.failure = "transfer";
    }
    return r;
  }
  if (s.status >= 300 || s.status == 0) {
    r.failure = "http " + std::to_string(s.status);
    r.detail = s.error_body.substr(0, 300);
    return r;
  }
  if (s.stream_error) {
    r.failure = "stream error";
    r.detail = s.stream_error_text;
    return r;
  }
  if (!s.got_first) {
    r.failure = "empty response";
    return r;
  }
  r.ok = true;
  r.ttft_ms = s.ttft_ms;
  r.tokens_reported = s.reported >= 0;
  r.output_tokens = s.reported >= 0 ? s.reported : s.pieces;
  return r;
}

}  // namespace

Result RunRequest(const Endpoint& ep, const Prompt& prompt, const Timeouts& timeouts) {
  HttpRequest req = BuildRequest(ep, prompt);
  Api parse_as = ep.api;
  if (ep.api == Api::kLlamaCpp && !(prompt.fim && ep.fim)) parse_as = Api::kOpenAI;
  return Perform(ep, req.url, req.body, timeouts, parse_as);
}

Result RunColdStart(const Endpoint& ep, const Prompt& prompt, const Timeouts& timeouts) {
  Result r;
  if (ep.api != Api::kOllama) {
    r.failure = "unsupported";
    r.detail = "cold start needs the Ollama API (keep_alive: 0 unloads the model)";
    return r;
  }
  // Unload: a generate request with no prompt and keep_alive 0 (Ollama's idiom; hearth too).
  json unload = {{"model", ep.model}, {"keep_alive", 0}, {"stream", false}};
  Timeouts t = timeouts;
  Result u = Perform(ep, ep.url + "/api/generate", unload.dump(), t, Api::kOllama);
  if (!u.ok && u.failure != "empty response") {
    r.failure = "unload: " + u.failure;
    r.detail = u.detail;
    return r;
  }
  return RunRequest(ep, prompt, timeouts);
}

}  // namespace hearth::bench
