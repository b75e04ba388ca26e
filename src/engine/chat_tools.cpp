#include "engine/chat_tools.h"

#include <algorithm>
#include <map>
#include <optional>

#include "chat.h"
#include "common.h"
#include "engine/error.h"

namespace hearth::engine {

struct ChatReplyParser::Impl {
  common_chat_parser_params params;
  std::string prefix;  // reply text the prompt supplied (a forced call's marker)
};

namespace {

common_chat_msg ToCommon(const ChatMessage& m) {
  common_chat_msg out;
  out.role = m.role;
  out.content = m.content;
  for (const ToolCall& call : m.tool_calls) out.tool_calls.push_back({call.name, call.arguments, call.id});
  out.tool_call_id = m.tool_call_id;
  out.tool_name = m.tool_name;
  return out;
}

bool LooksLikeJinja(const std::string& text) {
  return text.find("{{") != std::string::npos || text.find("{%") != std::string::npos;
}

// The template to render with, or "" for the model's own (common_chat_templates_init then
// also picks up a separate "tool_use" template the model may carry).
std::string TemplateSource(const Model& model, const std::string& override_text) {
  if (override_text.empty() || override_text == "chatml" || LooksLikeJinja(override_text)) return override_text;
  throw EngineError(ErrorKind::kUnsupported,
                    "the chat template '" + override_text + "' set for model '" + model.info().name +
                        "' is a built-in template name; tools and tool messages need a Jinja chat template: "
                        "remove the TEMPLATE/template override to use the model's own");
}

// The token `text` is, when the tokenizer makes exactly one token of it.
std::optional<Token> SingleToken(const Model& model, const std::string& text) {
  std::vector<Token> tokens = model.Tokenize(text, false, true);
  if (tokens.size() != 1) return std::nullopt;
  return tokens[0];
}

}  // namespace

ChatReply ChatReplyParser::Parse(std::string_view text, bool partial) const {
  ChatReply reply;
  if (!impl_) {
    reply.content = std::string(text);
    return reply;
  }
  common_chat_msg msg;
  try {
    msg = common_chat_parse(impl_->prefix + std::string(text), partial, impl_->params);
  } catch (const std::exception& e) {
    // The model wrote something outside its own format (a malformed call, or text after
    // it): what it wrote is still its answer.
    if (partial) return reply;  // keep holding back: the rest may make it parse
    reply.content = impl_->prefix + std::string(text);
    return reply;
  }
  reply.content = std::move(msg.content);
  reply.reasoning = std::move(msg.reasoning_content);
  for (common_chat_tool_call& call : msg.tool_calls) {
    reply.tool_calls.push_back({std::move(call.id), std::move(call.name), std::move(call.arguments)});
  }
  return reply;
}

void RenderedChat::ApplyTo(SamplingParams& sampling) const {
  if (!grammar.empty()) {
    sampling.grammar = grammar;
    sampling.grammar_lazy = grammar_lazy;
    sampling.grammar_trigger_patterns = grammar_trigger_patterns;
    sampling.grammar_trigger_tokens = grammar_trigger_tokens;
    sampling.grammar_prefix = grammar_prefix;
  }
  for (const std::string& s : stops) {
    if (std::find(sampling.stop.begin(), sampling.stop.end(), s) == sampling.stop.end()) sampling.stop.push_back(s);
  }
  sampling.preserved_tokens.insert(sampling.preserved_tokens.end(), preserved_tokens.begin(), preserved_tokens.end());
}

bool TemplateSupportsTools(const Model& model) {
  try {
    common_chat_templates_ptr templates = common_chat_templates_init(model.raw(), "");
    std::map<std::string, bool> caps = common_chat_templates_get_caps(templates.get());
    return caps["supports_tools"] && caps["supports_tool_calls"];
  } catch (const std::exception&) {
    return false;
  }
}

RenderedChat RenderChat(const Model& model, const ChatRequest& request) {
  const std::string& name = model.info().name;
  const bool tools_active = !request.tools.empty() && request.tool_choice.mode != ToolChoice::Mode::kNone;

  common_chat_templates_inputs inputs;
  inputs.use_jinja = true;
  inputs.add_generation_prompt = true;
  inputs.parallel_tool_calls = request.parallel_tool_calls;
  // A thinking model's reasoning comes back separately instead of inside the content.
  inputs.reasoning_format = COMMON_REASONING_FORMAT_AUTO;
  for (const ChatMessage& m : request.messages) inputs.messages.push_back(ToCommon(m));
  for (const ToolSpec& t : request.tools) {
    if (request.tool_choice.mode == ToolChoice::Mode::kFunction && t.name != request.tool_choice.function) continue;
    inputs.tools.push_back({t.name, t.description, t.parameters.empty() ? std::string("{}") : t.parameters});
  }
  switch (request.tool_choice.mode) {
    case ToolChoice::Mode::kAuto: inputs.tool_choice = COMMON_CHAT_TOOL_CHOICE_AUTO; break;
    case ToolChoice::Mode::kNone: inputs.tool_choice = COMMON_CHAT_TOOL_CHOICE_NONE; break;
    // A named function: llama.cpp has no such choice, so offer only that tool and require a call.
    case ToolChoice::Mode::kRequired:
    case ToolChoice::Mode::kFunction: inputs.tool_choice = COMMON_CHAT_TOOL_CHOICE_REQUIRED; break;
  }
  if (request.tool_choice.mode == ToolChoice::Mode::kFunction && inputs.tools.empty()) {
    throw EngineError(ErrorKind::kInvalidRequest,
                      "tool_choice names the function '" + request.tool_choice.function + "', which is not among the tools");
  }

  common_chat_templates_ptr templates;
  try {
    templates = common_chat_templates_init(model.raw(), TemplateSource(model, request.template_override));
  } catch (const EngineError&) {
    throw;
  } catch (const std::exception& e) {
    throw EngineError(ErrorKind::kUnsupported, "the chat template of model '" + name +
                                                   "' is not a Jinja template llama.cpp can parse (" + e.what() +
                                                   "); tools need a Jinja chat template");
  }
  if (tools_active) {
    std::map<std::string, bool> caps = common_chat_templates_get_caps(templates.get());
    if (!caps["supports_tools"] || !caps["supports_tool_calls"]) {
      throw EngineError(ErrorKind::kUnsupported,
                        "model '" + name + "' cannot call tools: its chat template " +
                            (!caps["supports_tools"] ? "does not describe tools to the model"
                                                     : "cannot write tool calls") +
                            ". Use a tool-capable model (e.g. Qwen2.5, Llama 3.1+, Mistral) or set a tool-capable "
                            "Jinja template in its Modelfile; or send tool_choice \"none\"");
    }
  }

  auto apply = [&](const common_chat_templates_inputs& in) {
    try {
      return common_chat_templates_apply(templates.get(), in);
    } catch (const std::exception& e) {
      throw EngineError(ErrorKind::kInvalidRequest,
                        "the chat template of model '" + name + "' could not render this conversation: " + e.what());
    }
  };
  common_chat_params params = apply(inputs);
  // A required call: llama.cpp's grammar for it lets the model write free text before the
  // first call, which a small model may never leave. Instead the reply starts with the call
  // marker (the trigger of llama.cpp's grammar for "auto"), and that grammar, which begins
  // at the marker, applies from the first token. Not for thinking templates: they reason
  // before calling.
  std::string call_start;
  if (tools_active && inputs.tool_choice == COMMON_CHAT_TOOL_CHOICE_REQUIRED && params.thinking_start_tag.empty()) {
    common_chat_templates_inputs auto_inputs = inputs;
    auto_inputs.tool_choice = COMMON_CHAT_TOOL_CHOICE_AUTO;
    common_chat_params lazy = apply(auto_inputs);
    auto word = std::find_if(lazy.grammar_triggers.begin(), lazy.grammar_triggers.end(), [](const common_grammar_trigger& t) {
      return t.type == COMMON_GRAMMAR_TRIGGER_TYPE_WORD && !t.value.empty();
    });
    if (lazy.grammar_lazy && !lazy.grammar.empty() && word != lazy.grammar_triggers.end() && lazy.prompt == params.prompt) {
      call_start = word->value;
      params = std::move(lazy);
      params.grammar_lazy = false;
      params.grammar_triggers.clear();
    }
  }
  if (tools_active && inputs.tool_choice == COMMON_CHAT_TOOL_CHOICE_REQUIRED && params.grammar.empty()) {
    // Without a grammar nothing makes the model call a tool: say so rather than pretend.
    throw EngineError(ErrorKind::kUnsupported, "model '" + name +
                                                   "': llama.cpp cannot derive a tool-call grammar from its chat "
                                                   "template, so tool_choice \"required\" or a named function cannot be "
                                                   "enforced; use tool_choice \"auto\"");
  }

  RenderedChat out;
  out.prompt = std::move(params.prompt) + call_start;
  out.tools_active = tools_active;
  out.stops = std::move(params.additional_stops);
  for (const std::string& text : params.preserved_tokens) {
    if (std::optional<Token> t = SingleToken(model, text)) out.preserved_tokens.push_back(*t);
  }
  if (tools_active && !params.grammar.empty()) {
    out.grammar = std::move(params.grammar);
    out.grammar_lazy = params.grammar_lazy;
    for (const common_grammar_trigger& trigger : params.grammar_triggers) {
      switch (trigger.type) {
        case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:
          out.grammar_trigger_tokens.push_back(trigger.token);
          break;
        case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:
          out.grammar_trigger_patterns.push_back(regex_escape(trigger.value));
          break;
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:
          out.grammar_trigger_patterns.push_back(trigger.value);
          break;
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: {
          // The pattern must match the whole output so far.
          std::string p = trigger.value;
          if (p.empty() || p.front() != '^') p = "^" + p;
          if (p.back() != '$') p += "$";
          out.grammar_trigger_patterns.push_back(p);
          break;
        }
      }
    }
    if (out.grammar_lazy && out.grammar_trigger_patterns.empty() && out.grammar_trigger_tokens.empty()) {
      throw EngineError(ErrorKind::kInternal, "llama.cpp gave a lazy tool-call grammar without triggers for model '" +
                                                  name + "'");
    }
    // A strict grammar starts where the prompt's end already put the reply: at the call
    // marker, or else at the template's generation prompt.
    if (!out.grammar_lazy) out.grammar_prefix = call_start.empty() ? params.generation_prompt : call_start;
  }
  auto impl = std::make_shared<ChatReplyParser::Impl>();
  impl->params = common_chat_parser_params(params);
  impl->params.reasoning_format = inputs.reasoning_format;
  impl->params.parse_tool_calls = tools_active;
  if (!params.parser.empty()) impl->params.parser.load(params.parser);
  impl->prefix = call_start;
  out.parser.impl_ = std::move(impl);
  return out;
}

}  // namespace hearth::engine
