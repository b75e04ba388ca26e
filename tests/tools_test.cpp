// Tool calling: rendering and parsing through llama.cpp's chat machinery (engine), the
// router's tool round trip, and the OpenAI/Ollama request validation.
//
// A random-weight model never chooses a tool by itself, so generation tests use
// tool_choice "required" or a named function: the strict grammar then forces a call, and a
// tightly constrained schema (an enum) keeps it short.
#include <atomic>
#include <functional>
#include <memory>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "api/api_common.h"
#include "engine/chat_tools.h"
#include "engine/model_pool.h"
#include "router/router.h"
#include "test_support.h"

using hearth::engine::ChatMessage;
using hearth::engine::ChatRequest;
using hearth::engine::EngineError;
using hearth::engine::ErrorKind;
using hearth::engine::Model;
using hearth::engine::RenderChat;
using hearth::engine::RenderedChat;
using hearth::engine::ToolCall;
using hearth::engine::ToolChoice;
using hearth::engine::ToolSpec;
using hearth::test::CatchEngineError;
using hearth::test::TinyModelPath;
using hearth::test::ToolModelPath;
using json = nlohmann::json;

namespace {

const char* kUnitSchema =
    R"({"type":"object","properties":{"unit":{"type":"string","enum":["c","f"]}},"required":["unit"],"additionalProperties":false})";
const char* kZoneSchema =
    R"({"type":"object","properties":{"zone":{"type":"string","enum":["utc"]}},"required":["zone"],"additionalProperties":false})";

ToolSpec Weather() { return {"get_weather", "Current temperature in the user's city", kUnitSchema}; }
ToolSpec Time() { return {"get_time", "Current time", kZoneSchema}; }

std::shared_ptr<Model> ToolModel() {
  static std::shared_ptr<Model> model = Model::Load(ToolModelPath(), {.skip_validation = true});
  return model;
}

ChatRequest Ask(std::vector<ToolSpec> tools, ToolChoice::Mode mode = ToolChoice::Mode::kAuto) {
  ChatRequest r;
  r.messages = {{"user", "What is the weather?"}};
  r.tools = std::move(tools);
  r.tool_choice.mode = mode;
  return r;
}

// The conversation after the model called get_weather: its call and the tool's result.
std::vector<ChatMessage> AfterCall() {
  ChatMessage call{"assistant", ""};
  call.tool_calls = {{"call_1", "get_weather", R"({"unit":"c"})"}};
  ChatMessage result{"tool", "21 degrees"};
  result.tool_call_id = "call_1";
  result.tool_name = "get_weather";
  return {{"user", "What is the weather?"}, call, result};
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Engine: rendering and parsing

TEST(ChatTools, AutoRendersToolsAndALazyGrammar) {
  RenderedChat chat = RenderChat(*ToolModel(), Ask({Weather()}));
  EXPECT_NE(chat.prompt.find("<tools>"), std::string::npos) << chat.prompt;
  EXPECT_NE(chat.prompt.find("get_weather"), std::string::npos);
  EXPECT_TRUE(chat.prompt.ends_with("<|im_start|>assistant\n")) << chat.prompt;
  EXPECT_TRUE(chat.tools_active);
  ASSERT_FALSE(chat.grammar.empty());
  EXPECT_TRUE(chat.grammar_lazy);
  ASSERT_FALSE(chat.grammar_trigger_patterns.empty() && chat.grammar_trigger_tokens.empty());
  if (!chat.grammar_trigger_patterns.empty()) {
    EXPECT_NE(chat.grammar_trigger_patterns[0].find("tool_call"), std::string::npos) << chat.grammar_trigger_patterns[0];
  }
  EXPECT_TRUE(chat.grammar_prefix.empty()) << "a lazy grammar starts at its trigger";
}

TEST(ChatTools, RequiredStartsTheReplyWithTheCallUnderAStrictGrammar) {
  RenderedChat chat = RenderChat(*ToolModel(), Ask({Weather()}, ToolChoice::Mode::kRequired));
  ASSERT_FALSE(chat.grammar.empty());
  EXPECT_FALSE(chat.grammar_lazy);
  EXPECT_EQ(chat.grammar_prefix, "<tool_call>\n");  // the trigger llama.cpp reports for Qwen's format
  EXPECT_TRUE(chat.prompt.ends_with("<|im_start|>assistant\n<tool_call>\n")) << chat.prompt;
  // The parser reads the reply with the marker the prompt supplied.
  auto reply = chat.parser.Parse("{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"f\"}}\n</tool_call>", false);
  ASSERT_EQ(reply.tool_calls.size(), 1u);
  EXPECT_EQ(json::parse(reply.tool_calls[0].arguments), json({{"unit", "f"}}));
  EXPECT_EQ(reply.content, "");
  hearth::engine::SamplingParams sampling;
  sampling.stop = {"END"};
  chat.ApplyTo(sampling);
  EXPECT_EQ(sampling.grammar, chat.grammar);
  EXPECT_EQ(sampling.stop.front(), "END") << "the request's own stops stay";
  EXPECT_NO_THROW(sampling.Validate());
}

TEST(ChatTools, ParsesAToolCallAndPlainContent) {
  RenderedChat chat = RenderChat(*ToolModel(), Ask({Weather()}));
  auto reply = chat.parser.Parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"c\"}}\n</tool_call>", false);
  ASSERT_EQ(reply.tool_calls.size(), 1u);
  EXPECT_EQ(reply.tool_calls[0].name, "get_weather");
  EXPECT_EQ(json::parse(reply.tool_calls[0].arguments), json({{"unit", "c"}}));
  EXPECT_EQ(reply.content, "");

  reply = chat.parser.Parse("It is sunny.", false);
  EXPECT_EQ(reply.content, "It is sunny.");
  EXPECT_TRUE(reply.tool_calls.empty());

  // While a call forms, it is not content (the router streams only content).
  reply = chat.parser.Parse("Let me check. <tool_call>\n{\"name\": \"get_w", true);
  EXPECT_EQ(reply.content.find("<tool_call>"), std::string::npos) << reply.content;
  EXPECT_EQ(reply.content.rfind("Let me check.", 0), 0u) << reply.content;
}

TEST(ChatTools, AMultiTurnToolConversationRenders) {
  ChatRequest r = Ask({Weather()});
  r.messages = AfterCall();
  RenderedChat chat = RenderChat(*ToolModel(), r);
  EXPECT_NE(chat.prompt.find("<tool_call>"), std::string::npos) << chat.prompt;
  EXPECT_NE(chat.prompt.find("\"unit\": \"c\""), std::string::npos) << chat.prompt;
  EXPECT_NE(chat.prompt.find("<tool_response>\n21 degrees\n</tool_response>"), std::string::npos) << chat.prompt;
}

TEST(ChatTools, NoneRendersWithoutAGrammar) {
  RenderedChat chat = RenderChat(*ToolModel(), Ask({Weather()}, ToolChoice::Mode::kNone));
  EXPECT_FALSE(chat.tools_active);
  EXPECT_TRUE(chat.grammar.empty());
  EXPECT_EQ(chat.parser.Parse("plain words", false).content, "plain words");
}

TEST(ChatTools, ANamedFunctionMustBeAmongTheTools) {
  ChatRequest r = Ask({Weather()}, ToolChoice::Mode::kFunction);
  r.tool_choice.function = "launch";
  EngineError e = CatchEngineError([&] { RenderChat(*ToolModel(), r); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidRequest);
  EXPECT_NE(std::string(e.what()).find("launch"), std::string::npos) << e.what();
}

TEST(ChatTools, AChatMlTemplateCannotCallToolsAndSaysWhatToDo) {
  std::shared_ptr<Model> chatml = Model::Load(TinyModelPath(), {.skip_validation = true});
  EngineError e = CatchEngineError([&] { RenderChat(*chatml, Ask({Weather()})); });
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  const std::string what = e.what();
  EXPECT_NE(what.find(chatml->info().name), std::string::npos) << what;
  EXPECT_NE(what.find("tool-capable"), std::string::npos) << what;
  // tool_choice "none" (or only tool messages) still renders.
  EXPECT_NO_THROW(RenderChat(*chatml, Ask({Weather()}, ToolChoice::Mode::kNone)));
  ChatRequest history;
  history.messages = AfterCall();
  EXPECT_NO_THROW(RenderChat(*chatml, history));
}

TEST(ChatTools, ABuiltInTemplateNameCannotRenderTools) {
  ChatRequest r = Ask({Weather()});
  r.template_override = "llama3";
  EngineError e = CatchEngineError([&] { RenderChat(*ToolModel(), r); });
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  EXPECT_NE(std::string(e.what()).find("Jinja"), std::string::npos) << e.what();
}

// ---------------------------------------------------------------------------------------
// Router: generation with tools on the tiny tool model

namespace {

class RouterTools : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    hearth::engine::ModelPoolOptions o;
    o.scheduler.n_ctx = 2048;
    o.scheduler.n_slots = 1;
    pool_ = new hearth::engine::ModelPool(o);
    pool_->Register(ToolModelPath(), "tools");
    pool_->Register(TinyModelPath(), "chatml");
    router_ = new hearth::router::Router(*pool_);
  }
  static void TearDownTestSuite() {
    delete router_;
    delete pool_;
  }

  static hearth::router::InferenceRequest Chat(ToolChoice::Mode mode) {
    hearth::router::InferenceRequest r;
    r.endpoint = hearth::router::Endpoint::kChat;
    r.model = "tools";
    r.messages = {{"user", "What is the weather?"}};
    r.tools = {Weather()};
    r.tool_choice.mode = mode;
    r.sampling.temperature = 0;
    r.sampling.max_tokens = 120;
    return r;
  }
  static hearth::router::InferenceResult Run(const hearth::router::InferenceRequest& r, std::string* streamed = nullptr) {
    hearth::router::GenerationCallbacks cb;
    if (streamed != nullptr) {
      cb.on_text = [streamed](std::string_view t) {
        streamed->append(t);
        return true;
      };
    }
    return router_->Generate(r, cb, std::make_shared<std::atomic<bool>>(false));
  }

  static hearth::engine::ModelPool* pool_;
  static hearth::router::Router* router_;
};
hearth::engine::ModelPool* RouterTools::pool_ = nullptr;
hearth::router::Router* RouterTools::router_ = nullptr;

void ExpectWeatherCall(const hearth::router::InferenceResult& res) {
  ASSERT_EQ(res.tool_calls.size(), 1u) << "text: " << res.text;
  const ToolCall& call = res.tool_calls[0];
  EXPECT_EQ(call.name, "get_weather");
  json args = json::parse(call.arguments, nullptr, false);
  ASSERT_TRUE(args.is_object()) << call.arguments;
  ASSERT_TRUE(args.contains("unit")) << call.arguments;
  EXPECT_TRUE(args["unit"] == "c" || args["unit"] == "f") << call.arguments;
  EXPECT_EQ(args.size(), 1u) << call.arguments;
  EXPECT_EQ(call.id.rfind("call_", 0), 0u) << call.id;
  EXPECT_EQ(res.finish_reason, "tool_calls");
}

}  // namespace

TEST_F(RouterTools, RequiredForcesAParseableCall) {
  hearth::router::InferenceRequest r = Chat(ToolChoice::Mode::kRequired);
  r.parallel_tool_calls = false;
  std::string streamed;
  hearth::router::InferenceResult res = Run(r, &streamed);
  ExpectWeatherCall(res);
  EXPECT_EQ(streamed.find("<tool_call>"), std::string::npos) << "the call is held back from the stream: " << streamed;
  EXPECT_EQ(streamed, res.text) << "what streamed is the content";
}

TEST_F(RouterTools, ANamedFunctionIsTheOneCalled) {
  hearth::router::InferenceRequest r = Chat(ToolChoice::Mode::kFunction);
  r.tools = {Weather(), Time()};
  r.tool_choice.function = "get_time";
  hearth::router::InferenceResult res = Run(r);
  ASSERT_FALSE(res.tool_calls.empty()) << res.text;
  for (const ToolCall& call : res.tool_calls) {
    EXPECT_EQ(call.name, "get_time");
    EXPECT_EQ(json::parse(call.arguments), json({{"zone", "utc"}}));
  }
  EXPECT_EQ(res.finish_reason, "tool_calls");
}

TEST_F(RouterTools, AFollowUpWithTheToolResultAnswers) {
  hearth::router::InferenceRequest r = Chat(ToolChoice::Mode::kAuto);
  r.messages = AfterCall();
  r.sampling.max_tokens = 8;
  hearth::router::InferenceResult res = Run(r);
  EXPECT_TRUE(res.finish_reason == "stop" || res.finish_reason == "length" || res.finish_reason == "tool_calls")
      << res.finish_reason;
  EXPECT_GT(res.prompt_tokens, 0);
  EXPECT_GE(res.completion_tokens, 1);
}

TEST_F(RouterTools, NoneGivesPlainContent) {
  hearth::router::InferenceRequest r = Chat(ToolChoice::Mode::kNone);
  r.sampling.max_tokens = 8;
  std::string streamed;
  hearth::router::InferenceResult res = Run(r, &streamed);
  EXPECT_TRUE(res.tool_calls.empty());
  EXPECT_NE(res.finish_reason, "tool_calls");
  EXPECT_EQ(streamed, res.text);
}

TEST_F(RouterTools, AModelWithoutToolSupportIsRefusedClearly) {
  hearth::router::InferenceRequest r = Chat(ToolChoice::Mode::kRequired);
  r.model = "chatml";
  EngineError e = CatchEngineError([&] { Run(r); });
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  EXPECT_NE(std::string(e.what()).find("cannot call tools"), std::string::npos) << e.what();
}

TEST_F(RouterTools, AJsonFormatCannotBeCombinedWithTools) {
  hearth::router::InferenceRequest r = Chat(ToolChoice::Mode::kAuto);
  r.sampling.grammar = "root ::= \"x\"";
  EXPECT_EQ(CatchEngineError([&] { Run(r); }).kind(), ErrorKind::kInvalidRequest);
}

// ---------------------------------------------------------------------------------------
// HTTP surfaces: shapes in and out

namespace {

struct Recorder : hearth::api::Responder {
  int status = 0;
  std::string body;
  std::shared_ptr<std::atomic<bool>> flag = std::make_shared<std::atomic<bool>>(false);
  void Respond(hearth::api::HttpResponse r) override {
    status = r.status;
    body = r.body;
  }
  void Begin(int s, hearth::api::Headers) override { status = s; }
  bool Write(std::string_view chunk) override {
    body.append(chunk);
    return true;
  }
  void End() override {}
  bool cancelled() const override { return false; }
  std::shared_ptr<std::atomic<bool>> cancel_flag() override { return flag; }
};

class ApiTools : public RouterTools {
 protected:
  Recorder Post(const std::string& path, const json& body) {
    hearth::api::RouteTable routes;
    hearth::api::AddOpenAIRoutes(routes, *router_, {});
    hearth::api::AddOllamaRoutes(routes, *router_, {});
    hearth::api::HttpRequest req;
    req.method = "POST";
    req.path = path;
    req.body = body.dump();
    Recorder out;
    routes.at({"POST", path})(req, out);
    return out;
  }
  static json WeatherTool() {
    return {{"type", "function"},
            {"function", {{"name", "get_weather"}, {"description", "weather"}, {"parameters", json::parse(kUnitSchema)}}}};
  }
  static json OpenAIBody() {
    return {{"model", "tools"}, {"messages", {{{"role", "user"}, {"content", "weather?"}}}}, {"tools", {WeatherTool()}},
            {"tool_choice", "required"}, {"parallel_tool_calls", false}, {"temperature", 0}, {"max_tokens", 120}};
  }
};

}  // namespace

TEST_F(ApiTools, OpenAIAnswersWithToolCalls) {
  Recorder out = Post("/v1/chat/completions", OpenAIBody());
  ASSERT_EQ(out.status, 200) << out.body;
  json r = json::parse(out.body);
  const json& choice = r["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u) << out.body;
  const json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  ASSERT_TRUE(call["function"]["arguments"].is_string());
  EXPECT_TRUE(json::parse(call["function"]["arguments"].get<std::string>()).contains("unit"));
}

TEST_F(ApiTools, OpenAIStreamsToolCallDeltas) {
  json body = OpenAIBody();
  body["stream"] = true;
  Recorder out = Post("/v1/chat/completions", body);
  ASSERT_EQ(out.status, 200) << out.body;
  std::istringstream in(out.body);
  json calls = json::array();
  std::string finish;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("data: {", 0) != 0) continue;
    json chunk = json::parse(line.substr(6));
    for (const json& c : chunk["choices"]) {
      if (c["delta"].contains("tool_calls")) {
        for (const json& call : c["delta"]["tool_calls"]) calls.push_back(call);
      }
      if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
    }
  }
  ASSERT_EQ(calls.size(), 1u) << out.body;
  EXPECT_EQ(calls[0]["index"], 0);
  EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
  EXPECT_EQ(finish, "tool_calls");
}

TEST_F(ApiTools, OllamaAnswersWithArgumentsAsAnObject) {
  json body = {{"model", "tools"}, {"messages", {{{"role", "user"}, {"content", "weather?"}}}}, {"tools", {WeatherTool()}},
               {"tool_choice", "required"}, {"parallel_tool_calls", false}, {"stream", false},
               {"options", {{"temperature", 0}, {"num_predict", 120}}}};
  Recorder out = Post("/api/chat", body);
  ASSERT_EQ(out.status, 200) << out.body;
  json r = json::parse(out.body);
  ASSERT_EQ(r["message"]["tool_calls"].size(), 1u) << out.body;
  const json& fn = r["message"]["tool_calls"][0]["function"];
  EXPECT_EQ(fn["name"], "get_weather");
  ASSERT_TRUE(fn["arguments"].is_object()) << out.body;
  EXPECT_TRUE(fn["arguments"].contains("unit"));
  EXPECT_EQ(r["done_reason"], "stop");
}

TEST_F(ApiTools, BadShapesAreRejectedNamingTheField) {
  struct Case {
    const char* what;
    json patch;  // merged into a valid body
    const char* expect;  // in the message
  };
  const std::vector<Case> cases = {
      {"tools not an array", {{"tools", "x"}}, "'tools' must be an array"},
      {"a tool without type", {{"tools", {{{"function", {{"name", "f"}}}}}}}, "'tools[0].type'"},
      {"a tool without a name", {{"tools", {{{"type", "function"}, {"function", json::object()}}}}}, "'tools[0].function.name'"},
      {"a bad name", {{"tools", {{{"type", "function"}, {"function", {{"name", "a b"}}}}}}}, "letters, digits"},
      {"parameters not an object", {{"tools", {{{"type", "function"}, {"function", {{"name", "f"}, {"parameters", 3}}}}}}},
       "'tools[0].function.parameters'"},
      {"tool_choice unknown", {{"tool_choice", "sometimes"}}, "'tool_choice' must be"},
      {"tool_choice names no tool", {{"tool_choice", {{"type", "function"}, {"function", {{"name", "nope"}}}}}}, "'nope'"},
      {"parallel_tool_calls not bool", {{"parallel_tool_calls", "yes"}}, "'parallel_tool_calls'"},
      {"a tool message without tool_call_id",
       {{"messages", {{{"role", "user"}, {"content", "q"}}, {{"role", "tool"}, {"content", "r"}}}}}, "tool_call_id"},
      {"tool_calls with bad arguments",
       {{"messages", {{{"role", "assistant"}, {"tool_calls", {{{"id", "c1"}, {"type", "function"},
                                                               {"function", {{"name", "f"}, {"arguments", "{not json"}}}}}}}}}},
       "'messages[0].tool_calls[0].function.arguments'"},
  };
  for (const Case& c : cases) {
    json body = OpenAIBody();
    body.update(c.patch);
    Recorder out = Post("/v1/chat/completions", body);
    EXPECT_EQ(out.status, 400) << c.what << ": " << out.body;
    EXPECT_NE(out.body.find(c.expect), std::string::npos) << c.what << ": " << out.body;
  }
}

TEST_F(ApiTools, AChatMlModelAnswers400) {
  json body = OpenAIBody();
  body["model"] = "chatml";
  Recorder out = Post("/v1/chat/completions", body);
  EXPECT_EQ(out.status, 400) << out.body;
  EXPECT_NE(out.body.find("cannot call tools"), std::string::npos) << out.body;
}
