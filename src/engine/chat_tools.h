// Chats with tools (function calling), through llama.cpp's own chat machinery (common/chat.h).
//
// RenderChat renders the conversation with the model's Jinja chat template, tools included,
// and returns what generation needs besides the prompt: a grammar that makes a tool call
// well-formed (lazy: armed only when the model starts one; strict: a call is required, and
// the prompt then ends with the call's marker so the reply is the call), extra stop
// strings, and a parser for the reply. ChatReplyParser turns the generated text
// back into content and tool calls. The tool-call syntax is whatever the template uses
// (Qwen's <tool_call>, Llama 3's JSON, Mistral's [TOOL_CALLS], ...): llama.cpp derives it
// from the template, so hearth has no per-model code.
//
// Plain chats (no tools, no tool messages) keep Model::ApplyChatTemplate: their prompts do
// not change with this feature.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/model.h"
#include "engine/sampling.h"

namespace hearth::engine {

struct ToolSpec {
  std::string name;
  std::string description;
  std::string parameters;  // JSON schema of the arguments, as JSON text
};

struct ToolChoice {
  enum class Mode { kAuto, kNone, kRequired, kFunction };
  Mode mode = Mode::kAuto;
  std::string function;  // kFunction: the tool that must be called
};

struct ChatRequest {
  std::vector<ChatMessage> messages;  // may carry assistant tool_calls and tool results
  std::vector<ToolSpec> tools;
  ToolChoice tool_choice;
  bool parallel_tool_calls = false;  // allow several calls in one reply
  std::string template_override;     // Jinja source or "chatml"; "" = the model's template
};

struct ChatReply {
  std::string content;
  std::string reasoning;  // a thinking model's reasoning, when the template marks it
  std::vector<ToolCall> tool_calls;  // ids as the model wrote them (usually empty)
};

struct RenderedChat;

// Reads a generated reply. Cheap to copy; safe to use from any thread.
class ChatReplyParser {
 public:
  // partial: the text is a prefix of the reply (streaming); an unfinished tool call is
  // then left out of content. A complete reply that does not match the template's format
  // is returned as plain content, never an error: the text is the model's answer.
  ChatReply Parse(std::string_view text, bool partial) const;

 private:
  friend RenderedChat RenderChat(const Model&, const ChatRequest&);
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

struct RenderedChat {
  std::string prompt;
  // Output constraint for SamplingParams (grammar, grammar_lazy, triggers, prefix); empty
  // grammar when tools are off or the reply is free text.
  std::string grammar;
  bool grammar_lazy = false;
  std::vector<std::string> grammar_trigger_patterns;
  std::vector<Token> grammar_trigger_tokens;
  std::string grammar_prefix;
  std::vector<std::string> stops;        // stop strings the template's format adds
  std::vector<Token> preserved_tokens;   // control tokens of the format: emit them as text
  bool tools_active = false;             // tools offered and tool_choice is not none
  ChatReplyParser parser;

  // Copies the constraint and stops into sampling parameters (after the request's own).
  void ApplyTo(SamplingParams& sampling) const;
};

// Throws EngineError: kUnsupported naming the model when its template cannot describe or
// call tools (e.g. plain ChatML) or is not Jinja; kInvalidRequest when tool_choice names a
// function that is not among the tools, or the messages/tools cannot be rendered.
RenderedChat RenderChat(const Model& model, const ChatRequest& request);

// Whether the model's own chat template can describe tools and write tool calls (Ollama's
// "tools" capability); false for a template llama.cpp cannot parse.
bool TemplateSupportsTools(const Model& model);

}  // namespace hearth::engine
