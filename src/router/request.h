// The one internal request type that every API surface (Ollama, OpenAI, llama.cpp) parses
// into, and the result every backend returns. Surfaces differ only in (de)serialisation.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/chat_tools.h"
#include "engine/model.h"
#include "engine/sampling.h"

namespace hearth::router {

enum class Endpoint {
  kGenerate,    // a prompt completed under the model's template (Ollama /api/generate)
  kChat,        // messages (Ollama /api/chat, OpenAI /v1/chat/completions)
  kCompletion,  // a raw prompt (OpenAI /v1/completions, llama.cpp /completion)
  kInfill,      // fill-in-the-middle (suffix given, or llama.cpp /infill)
  kEmbedding,
};
const char* EndpointName(Endpoint e);

// Who asked, and what they said about the request's sensitivity (headers).
struct ClientContext {
  std::string surface;      // "ollama", "openai", "llamacpp"
  std::string user;         // from the API key, when keys are configured
  std::string project;      // X-Hearth-Project
  std::string sensitivity;  // X-Hearth-Sensitivity, e.g. "private"
  std::string task;         // X-Hearth-Task: autocomplete | chat | edit | explain
  std::string paths;        // X-Hearth-Paths: comma-separated files the request is about
  std::string approval;     // X-Hearth-Approval: "yes" approves a header-approval rule
  std::string remote_address;
};

struct FimInput {
  std::string prefix;
  std::string suffix;
  std::vector<engine::FimExtraFile> extra;  // repository context
  std::string middle;                       // text already typed after the prefix (llama.cpp 'prompt')
};

struct InferenceRequest {
  Endpoint endpoint = Endpoint::kCompletion;
  std::string model;
  std::string prompt;                        // kGenerate, kCompletion
  std::vector<engine::Token> prompt_tokens;  // kCompletion given as token ids (llama.cpp)
  bool raw = false;                          // kGenerate: do not apply the template
  bool parse_special = false;                // render "<|im_start|>" etc. as control tokens
  std::string system;                        // kGenerate: system message
  std::string template_override;             // a chat template name or source
  std::vector<engine::ChatMessage> messages; // kChat
  // kChat: functions the model may call, rendered by its Jinja chat template. Requests with
  // tools or tool messages are served locally only: remote backends do not forward them.
  std::vector<engine::ToolSpec> tools;
  engine::ToolChoice tool_choice;
  bool parallel_tool_calls = false;
  std::optional<FimInput> fim;               // kInfill
  std::vector<std::string> inputs;           // kEmbedding
  std::vector<engine::Token> context;        // kGenerate: Ollama's 'context' to continue from
  engine::SamplingParams sampling;
  std::optional<int32_t> num_ctx;
  std::optional<std::chrono::seconds> keep_alive;
  ClientContext client;
};

struct InferenceResult {
  std::string model;
  std::string text;
  std::vector<engine::Token> tokens;   // generated
  std::vector<engine::Token> context;  // prompt + generated (Ollama's 'context'), kGenerate only
  std::string finish_reason;  // "stop", "length", "cancelled", "tool_calls"
  // With tools, text is the reply's content only; the calls it made are here, with ids.
  std::vector<engine::ToolCall> tool_calls;
  std::string reasoning;      // with tools: a thinking model's reasoning, kept out of text
  std::string stop_string;    // the stop string that ended generation, if any
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;
  int32_t completion_tokens = 0;
  double load_ms = 0;
  double queue_ms = 0;
  double prompt_ms = 0;
  double generation_ms = 0;
  double ttft_ms = 0;
  double total_ms = 0;
  std::string route = "local";   // where it was served: "local" or "cloud"
  std::string backend;           // e.g. "local:qwen2.5-coder:latest"
  std::vector<std::vector<float>> embeddings;
};

// Whether the request needs tool support: tools offered, or tool calls/results in messages.
bool UsesTools(const InferenceRequest& request);

// Receives generated text as it is produced. Return false to cancel.
using TextSink = std::function<bool(std::string_view text)>;

struct GenerationCallbacks {
  // Called once, before any text, with where the request is served ("local", "cloud").
  std::function<void(const std::string& route)> on_route;
  TextSink on_text;
};

}  // namespace hearth::router
