// One timed streaming request to an LLM endpoint over libcurl, in the endpoint's own API:
// Ollama (/api/chat, /api/generate with `suffix` for FIM), OpenAI (/v1/chat/completions,
// /v1/completions with `suffix` for FIM), llama.cpp (/v1/chat/completions, /infill) or
// Anthropic (/v1/messages; no FIM: autocomplete becomes a chat request).
#pragma once

#include <cstdint>
#include <string>

namespace hearth::bench {

enum class Api { kOllama, kOpenAI, kLlamaCpp, kAnthropic };
const char* ApiName(Api api);
bool ParseApi(const std::string& text, Api* api);

struct Endpoint {
  std::string name;
  std::string url;    // base URL as given (trailing '/' removed)
  Api api = Api::kOpenAI;
  std::string model;  // may be empty (llama.cpp serves one model)
  std::string key;    // from HEARTH_BENCH_KEY_<NAME>; never printed
  bool fim = true;    // use the FIM API for autocomplete where the API has one
};

// What to ask: a chat prompt, or (fim) a prefix/suffix pair for fill-in-the-middle.
struct Prompt {
  std::string id;
  bool fim = false;
  std::string text;            // chat prompt (also the fallback for fim on APIs without FIM)
  std::string prefix, suffix;  // fim
  int max_tokens = 256;
};

struct Timeouts {
  double connect_s = 10;
  double read_s = 120;  // longest silence (no bytes) while a response is under way
};

struct Result {
  bool ok = false;
  std::string failure;  // "timeout" | "connect" | "http 503" | "stream error" | "bad response" | ...
  std::string detail;   // first part of the error body or curl's message, for the log
  double ttft_ms = 0;   // request sent -> first non-empty output text
  double total_ms = 0;  // request sent -> end of the response
  int64_t output_tokens = 0;  // the server's count when it reports one, else streamed pieces
  bool tokens_reported = false;
};

// Sends one request (streaming) and times it. Thread-safe (one curl handle per call);
// curl_global_init must have been called.
Result RunRequest(const Endpoint& ep, const Prompt& prompt, const Timeouts& timeouts);

// Cold start (Ollama API only): unloads the model (POST /api/generate {model, keep_alive: 0}),
// then times a short request. Returns the timed request's result; `ok` false with failure
// "unload: ..." when the unload failed.
Result RunColdStart(const Endpoint& ep, const Prompt& prompt, const Timeouts& timeouts);

// The request URL and JSON body for a prompt (exposed for tests).
struct HttpRequest {
  std::string url;
  std::string body;
};
HttpRequest BuildRequest(const Endpoint& ep, const Prompt& prompt);

}  // namespace hearth::bench
