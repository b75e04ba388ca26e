// Tests for router/egress.cpp and router/backends.cpp against tests/fake_cloud/server.mjs, a
// fake OpenAI/Anthropic/Ollama provider started per test on 127.0.0.1 (node). The fake records
// every request it receives, so the tests prove exactly what left the machine.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "router/backend.h"

namespace {

using namespace std::chrono_literals;
using hearth::engine::ChatMessage;
using hearth::engine::SamplingParams;
using hearth::router::BackendConfig;
using hearth::router::BackendUnavailable;
using hearth::router::Egress;
using hearth::router::EgressDenied;
using hearth::router::EgressResponse;
using hearth::router::MakeBackend;
using hearth::router::RemoteBackend;
using hearth::router::RemoteResult;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kOpenAIKeyEnv = "HEARTH_TEST_FAKE_OPENAI_KEY";
constexpr const char* kOpenAIKey = "sk-test-openai-0123456789abcdef";
constexpr const char* kAnthropicKeyEnv = "HEARTH_TEST_FAKE_ANTHROPIC_KEY";
constexpr const char* kAnthropicKey = "sk-ant-test-9876543210fedcba";

long Ms(Clock::duration d) { return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()); }

// ceil(code points / n), as the fake splits its reply into tokens.
int CodePoints(const std::string& s) {
  int n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// The fake provider as a child process: `node server.mjs --watch-stdin`, port from stdout.
class FakeCloud {
 public:
  FakeCloud() {
    const std::string script = std::string(HEARTH_SOURCE_DIR) + "/tests/fake_cloud/server.mjs";
    int in_pipe[2], out_pipe[2];
    if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      dup2(in_pipe[0], 0);
      dup2(out_pipe[1], 1);
      execl("/usr/bin/env", "env", "node", script.c_str(), "--watch-stdin", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    stdin_fd_ = in_pipe[1];
    stdout_fd_ = out_pipe[0];
    std::string line;
    const auto deadline = Clock::now() + 15s;
    while (line.find('\n') == std::string::npos) {
      pollfd p{stdout_fd_, POLLIN, 0};
      const long left = Ms(deadline - Clock::now());
      if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) throw std::runtime_error("fake cloud did not start");
      char buf[256];
      const ssize_t n = read(stdout_fd_, buf, sizeof buf);
      if (n <= 0) throw std::runtime_error("fake cloud exited before printing its port (is node installed?)");
      line.append(buf, static_cast<size_t>(n));
    }
    port_ = json::parse(line.substr(0, line.find('\n'))).at("port").get<int>();
    control_ = std::make_unique<Egress>(std::vector<std::string>{HostPort()});
  }
  ~FakeCloud() {
    control_.reset();
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    if (stdin_fd_ >= 0) close(stdin_fd_);
    if (stdout_fd_ >= 0) close(stdout_fd_);
  }

  int port() const { return port_; }
  std::string HostPort() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Base() const { return "http://" + HostPort(); }

  // POSTs to a control endpoint through an Egress of its own (not the one under test).
  json Control(const std::string& path, const json& body = json::object()) {
    auto r = control_->Post(Base() + path, {"Content-Type: application/json"}, body.dump(), nullptr, nullptr, 5000,
                            10000);
    if (r.status != 200) throw std::runtime_error("control " + path + " failed: " + std::to_string(r.status));
    return json::parse(r.body);
  }
  void Set(const json& settings) { Control("/_control", settings); }
  void Reset() { Control("/_reset"); }
  json Received() { return Control("/_received"); }

 private:
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  int port_ = 0;
  std::unique_ptr<Egress> control_;
};

class BackendsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    setenv(kOpenAIKeyEnv, kOpenAIKey, 1);
    setenv(kAnthropicKeyEnv, kAnthropicKey, 1);
  }
  void SetUp() override {
    fake_ = std::make_unique<FakeCloud>();
    egress_ = std::make_unique<Egress>(std::vector<std::string>{fake_->HostPort()});
  }
  void TearDown() override {
    egress_.reset();
    fake_.reset();
  }

  BackendConfig Config(const std::string& type) const {
    BackendConfig c;
    c.name = "test-" + type;
    c.type = type;
    c.model = type + "-model";
    if (type == "openai") {
      c.url = fake_->Base() + "/v1";
      c.api_key_env = kOpenAIKeyEnv;
    } else if (type == "anthropic") {
      c.url = fake_->Base() + "/v1";
      c.api_key_env = kAnthropicKeyEnv;
    } else {
      c.url = fake_->Base();
    }
    c.connect_timeout_ms = 2000;
    c.read_timeout_ms = 5000;
    return c;
  }

  static std::vector<ChatMessage> Messages(const std::string& user = "hello there") {
    return {{"system", "You are terse."}, {"user", user}};
  }

  struct Run {
    RemoteResult result;
    std::vector<std::string> pieces;
    std::string Joined() const {
      std::string s;
      for (const auto& p : pieces) s += p;
      return s;
    }
  };
  static Run Chat(RemoteBackend& b, const std::vector<ChatMessage>& messages, SamplingParams s = {},
                  std::shared_ptr<std::atomic<bool>> cancel = nullptr, bool stream = true) {
    Run run;
    run.result = b.Chat(messages, s, [&](std::string_view t) {
      run.pieces.emplace_back(t);
      return true;
    }, cancel ? cancel : std::make_shared<std::atomic<bool>>(false), {}, stream);
    return run;
  }

  std::unique_ptr<FakeCloud> fake_;
  std::unique_ptr<Egress> egress_;
};

// ---- providers -----------------------------------------------------------------------------

TEST_F(BackendsTest, OpenAIStreamsTextAndUsage) {
  fake_->Set({{"tokens_per_second", 100}});  // events 10 ms apart: each reaches the sink by itself
  auto backend = MakeBackend(Config("openai"), *egress_);
  SamplingParams s;
  s.temperature = 0.25f;
  s.top_p = 0.5f;
  s.max_tokens = 100;
  s.stop = {"NEVER"};
  s.seed = 42;
  Run run = Chat(*backend, Messages(), s);
  const std::string expected = "ECHO: hello there";
  EXPECT_EQ(run.Joined(), expected);
  EXPECT_EQ(run.result.text, expected);
  EXPECT_GT(run.pieces.size(), 3u) << "streamed in small chunks";
  EXPECT_EQ(run.result.finish_reason, "stop");
  EXPECT_EQ(run.result.attempts, 1);
  EXPECT_EQ(run.result.completion_tokens, (CodePoints(expected) + 2) / 3);
  EXPECT_EQ(run.result.prompt_tokens, (CodePoints("You are terse.") + CodePoints("hello there") + 3) / 4);
  EXPECT_GT(run.result.ttft_ms, 0);
  EXPECT_GE(run.result.total_ms, run.result.ttft_ms);
  EXPECT_TRUE(run.result.notes.empty());

  json rec = fake_->Received();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec[0]["path"], "/v1/chat/completions");
  EXPECT_EQ(rec[0]["method"], "POST");
  EXPECT_TRUE(rec[0]["has_authorization"].get<bool>());
  EXPECT_FALSE(rec[0]["has_x_api_key"].get<bool>());
  EXPECT_EQ(rec[0]["headers"]["content-type"], "application/json");
  json body = json::parse(rec[0]["body"].get<std::string>());
  EXPECT_EQ(body["model"], "openai-model");
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_EQ(body["messages"], json::parse(R"([{"role":"system","content":"You are terse."},
                                              {"role":"user","content":"hello there"}])"));
  EXPECT_NEAR(body["temperature"].get<double>(), 0.25, 1e-6);
  EXPECT_NEAR(body["top_p"].get<double>(), 0.5, 1e-6);
  EXPECT_EQ(body["max_tokens"], 100);
  EXPECT_EQ(body["stop"], json::array({"NEVER"}));
  EXPECT_EQ(body["seed"], 42);

  // What left the machine is exactly what the provider received.
  EXPECT_EQ(run.result.bytes_sent, rec[0]["body_bytes"].get<uint64_t>());
  EXPECT_EQ(run.result.sent_sha256, rec[0]["body_sha256"].get<std::string>());
  auto attempts = egress_->attempts();
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_TRUE(attempts[0].allowed);
  EXPECT_EQ(attempts[0].status, 200);
  EXPECT_EQ(attempts[0].host, fake_->HostPort());
  EXPECT_EQ(attempts[0].url, fake_->Base() + "/v1/chat/completions");
  EXPECT_EQ(attempts[0].bytes_sent, run.result.bytes_sent);
  EXPECT_TRUE(attempts[0].error.empty()) << attempts[0].error;
}

// Events that arrive in one read: the first token goes out at once (time to first token), the
// rest of the read as one piece (one restore, one client chunk, one send instead of one each).
TEST_F(BackendsTest, EventsReadTogetherReachTheSinkAsFirstTokenThenOnePiece) {
  fake_->Set({{"burst", true}});
  for (const char* provider : {"openai", "anthropic", "ollama"}) {
    SCOPED_TRACE(provider);
    auto backend = MakeBackend(Config(provider), *egress_);
    Run run = Chat(*backend, Messages());
    EXPECT_EQ(run.Joined(), "ECHO: hello there");
    ASSERT_EQ(run.pieces.size(), 2u);
    EXPECT_EQ(run.pieces[0], "ECH");
    EXPECT_EQ(run.pieces[1], "O: hello there");
    EXPECT_EQ(run.result.finish_reason, "stop");
  }
}

// Egress passes each piece on as libcurl hands it over (the first token need not wait for the
// rest of a read) and then marks the end of the read with an empty call.
TEST_F(BackendsTest, EgressPassesEachPieceOnAtOnceThenMarksTheEndOfTheRead) {
  fake_->Set({{"burst", true}});
  const json body = {{"model", "m"}, {"stream", true}, {"messages", {{{"role", "user"}, {"content", "hello there"}}}}};
  std::vector<std::string> calls;
  EgressResponse r = egress_->Post(fake_->Base() + "/v1/chat/completions",
                                   {"Content-Type: application/json", std::string("Authorization: Bearer ") + kOpenAIKey},
                                   body.dump(), [&](std::string_view bytes) {
                                     calls.emplace_back(bytes);
                                     return true;
                                   },
                                   nullptr, 2000, 5000);
  ASSERT_EQ(r.status, 200) << r.error;
  ASSERT_GT(calls.size(), 3u);
  EXPECT_TRUE(calls.front().starts_with("data: ")) << calls.front();
  EXPECT_EQ(calls.front().find("data: ", 1), std::string::npos) << "the first piece holds one event: " << calls.front();
  EXPECT_EQ(calls.back(), "") << "the read ends with an empty call";
  std::string all;
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i > 0) {
      EXPECT_FALSE(calls[i].empty() && calls[i - 1].empty()) << "two end-of-read calls in a row at " << i;
    }
    all += calls[i];
  }
  EXPECT_NE(all.find("data: [DONE]"), std::string::npos) << all;
}

TEST_F(BackendsTest, OpenAIMaxTokensEndsWithLength) {
  auto backend = MakeBackend(Config("openai"), *egress_);
  SamplingParams s;
  s.max_tokens = 2;
  Run run = Chat(*backend, Messages(), s);
  EXPECT_EQ(run.result.text, "ECHO: ");  // two 3-character tokens
  EXPECT_EQ(run.result.finish_reason, "length");
  EXPECT_EQ(run.result.completion_tokens, 2);
}

TEST_F(BackendsTest, OpenAIEventsSplitAcrossReadsAndMultibyteText) {
  const std::string reply = "naïve café ✓ 🙂 — done\nsecond line";
  fake_->Set({{"reply", reply}, {"fragment_bytes", 7}, {"chunk_chars", 2}});
  auto backend = MakeBackend(Config("openai"), *egress_);
  Run run = Chat(*backend, Messages());
  EXPECT_EQ(run.Joined(), reply);
  EXPECT_EQ(run.result.finish_reason, "stop");
  EXPECT_EQ(run.result.completion_tokens, (CodePoints(reply) + 1) / 2);
}

TEST_F(BackendsTest, OpenAIWithoutKeySendsNoAuthorization) {
  BackendConfig c = Config("openai");
  c.api_key_env.clear();  // an OpenAI-compatible local server (llama-server, vLLM)
  auto backend = MakeBackend(c, *egress_);
  Run run = Chat(*backend, Messages());
  EXPECT_EQ(run.result.text, "ECHO: hello there");
  json rec = fake_->Received();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_FALSE(rec[0]["has_authorization"].get<bool>());
}

TEST_F(BackendsTest, AnthropicMovesSystemAndSendsApiKey) {
  fake_->Set({{"tokens_per_second", 100}});  // events 10 ms apart: each reaches the sink by itself
  auto backend = MakeBackend(Config("anthropic"), *egress_);
  std::vector<ChatMessage> messages = {{"system", "Be terse."},
                                       {"user", "first question"},
                                       {"assistant", "first answer"},
                                       {"system", "Use English."},
                                       {"user", "second question"}};
  SamplingParams s;
  s.temperature = 1.7f;  // Anthropic's range is 0..1
  s.stop = {"NEVER"};
  s.seed = 7;  // not supported by Anthropic: not sent
  Run run = Chat(*backend, messages, s);
  EXPECT_EQ(run.Joined(), "ECHO: second question");
  EXPECT_GT(run.pieces.size(), 3u);
  EXPECT_EQ(run.result.finish_reason, "stop");
  EXPECT_EQ(run.result.completion_tokens, (CodePoints("ECHO: second question") + 2) / 3);
  const int chars = CodePoints("Be terse.\n\nUse English.") + CodePoints("first question") +
                    CodePoints("first answer") + CodePoints("second question");
  EXPECT_EQ(run.result.prompt_tokens, (chars + 3) / 4);

  json rec = fake_->Received();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec[0]["path"], "/v1/messages");
  EXPECT_TRUE(rec[0]["has_x_api_key"].get<bool>());
  EXPECT_FALSE(rec[0]["has_authorization"].get<bool>());
  EXPECT_EQ(rec[0]["headers"]["anthropic-version"], "2023-06-01");
  json body = json::parse(rec[0]["body"].get<std::string>());
  EXPECT_EQ(body["system"], "Be terse.\n\nUse English.");
  EXPECT_EQ(body["messages"], json::parse(R"([{"role":"user","content":"first question"},
                                              {"role":"assistant","content":"first answer"},
                                              {"role":"user","content":"second question"}])"));
  EXPECT_EQ(body["model"], "anthropic-model");
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["max_tokens"], 4096) << "Anthropic requires max_tokens";
  EXPECT_NEAR(body["temperature"].get<double>(), 1.0, 1e-6);
  EXPECT_EQ(body["stop_sequences"], json::array({"NEVER"}));
  EXPECT_FALSE(body.contains("seed"));
  EXPECT_FALSE(body.contains("top_p")) << "default top_p is not sent with temperature";
  EXPECT_EQ(run.result.bytes_sent, rec[0]["body_bytes"].get<uint64_t>());
  EXPECT_EQ(run.result.sent_sha256, rec[0]["body_sha256"].get<std::string>());
}

TEST_F(BackendsTest, AnthropicMaxTokensAndStopSequence) {
  auto backend = MakeBackend(Config("anthropic"), *egress_);
  SamplingParams s;
  s.max_tokens = 3;
  Run run = Chat(*backend, Messages("abcdefghijklmnop"), s);
  EXPECT_EQ(run.result.text, "ECHO: abc");
  EXPECT_EQ(run.result.finish_reason, "length");
  EXPECT_EQ(run.result.completion_tokens, 3);

  s.max_tokens = -1;
  s.stop = {"def"};
  run = Chat(*backend, Messages("abcdefghijklmnop"), s);
  EXPECT_EQ(run.result.text, "ECHO: abc");
  EXPECT_EQ(run.result.finish_reason, "stop");
}

TEST_F(BackendsTest, ProviderErrorEventMidStreamIsUnavailable) {
  for (const std::string type : {"anthropic", "openai", "ollama"}) {
    fake_->Control("/_reset");
    fake_->Set({{"error_event", "overloaded_error"}});
    auto backend = MakeBackend(Config(type), *egress_);
    std::string got;
    try {
      backend->Chat(Messages(), {}, [&](std::string_view t) { got += t; return true; }, nullptr);
      FAIL() << type << ": expected BackendUnavailable";
    } catch (const BackendUnavailable& e) {
      EXPECT_NE(std::string(e.what()).find("overloaded_error"), std::string::npos) << type << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find("mid-stream"), std::string::npos) << type << ": " << e.what();
    }
    EXPECT_EQ(got, "ECH") << type;
    EXPECT_EQ(fake_->Received().size(), 1u) << type << ": text was streamed: no retry";
  }
}

TEST_F(BackendsTest, OllamaStreamsNdjsonWithOptions) {
  fake_->Set({{"tokens_per_second", 100}});  // events 10 ms apart: each reaches the sink by itself
  auto backend = MakeBackend(Config("ollama"), *egress_);
  SamplingParams s;
  s.temperature = 0.3f;
  s.top_k = 17;
  s.max_tokens = 50;
  s.seed = 9;
  s.stop = {"NEVER"};
  Run run = Chat(*backend, Messages("ollama please"), s);
  EXPECT_EQ(run.Joined(), "ECHO: ollama please");
  EXPECT_GT(run.pieces.size(), 3u);
  EXPECT_EQ(run.result.finish_reason, "stop");
  EXPECT_EQ(run.result.completion_tokens, (CodePoints("ECHO: ollama please") + 2) / 3);
  EXPECT_EQ(run.result.prompt_tokens, (CodePoints("You are terse.") + CodePoints("ollama please") + 3) / 4);
  json rec = fake_->Received();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec[0]["path"], "/api/chat");
  EXPECT_FALSE(rec[0]["has_authorization"].get<bool>());
  json body = json::parse(rec[0]["body"].get<std::string>());
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["model"], "ollama-model");
  EXPECT_EQ(body["messages"].size(), 2u);
  EXPECT_NEAR(body["options"]["temperature"].get<double>(), 0.3, 1e-6);
  EXPECT_EQ(body["options"]["top_k"], 17);
  EXPECT_EQ(body["options"]["num_predict"], 50);
  EXPECT_EQ(body["options"]["seed"], 9);
  EXPECT_EQ(body["options"]["stop"], json::array({"NEVER"}));
  EXPECT_EQ(run.result.bytes_sent, rec[0]["body_bytes"].get<uint64_t>());

  s.max_tokens = 1;
  run = Chat(*backend, Messages("ollama please"), s);
  EXPECT_EQ(run.result.text, "ECH");
  EXPECT_EQ(run.result.finish_reason, "length");
}

// ---- the allowlist -------------------------------------------------------------------------

// A client that waits for the whole answer: hearth asks each provider for one whole answer.
TEST_F(BackendsTest, NonStreamingAsksEveryProviderForOneWholeAnswer) {
  for (const std::string type : {"openai", "anthropic", "ollama"}) {
    SCOPED_TRACE(type);
    fake_->Reset();
    auto backend = MakeBackend(Config(type), *egress_);
    SamplingParams s;
    s.max_tokens = 4;  // "ECHO: hello" in 3-character tokens: "ECH", "O: ", "hel", "lo "
    Run run = Chat(*backend, Messages("hello there"), s, nullptr, /*stream=*/false);
    EXPECT_EQ(run.result.text, "ECHO: hello ");
    ASSERT_EQ(run.pieces.size(), 1u) << "one piece: the whole answer";
    EXPECT_EQ(run.pieces[0], run.result.text);
    EXPECT_EQ(run.result.finish_reason, "length");
    EXPECT_EQ(run.result.completion_tokens, 4);
    EXPECT_EQ(run.result.prompt_tokens, (CodePoints("You are terse.") + CodePoints("hello there") + 3) / 4);
    json rec = fake_->Received();
    ASSERT_EQ(rec.size(), 1u);
    EXPECT_EQ(rec[0]["headers"]["accept"], "application/json");
    json body = json::parse(rec[0]["body"].get<std::string>());
    EXPECT_EQ(body["stream"], false);
    EXPECT_FALSE(body.contains("stream_options"));
    EXPECT_EQ(run.result.sent_sha256, rec[0]["body_sha256"].get<std::string>());
  }
}

TEST_F(BackendsTest, NonStreamingAnswerMustArriveWithinTheResponseTimeout) {
  fake_->Set({{"latency_ms", 3000}});
  BackendConfig c = Config("openai");
  c.read_timeout_ms = 100;        // the stall timeout does not apply: no byte comes before the answer
  c.response_timeout_ms = 800;
  c.max_retries = 0;
  auto backend = MakeBackend(c, *egress_);
  const auto t0 = Clock::now();
  EXPECT_THROW(Chat(*backend, Messages(), {}, nullptr, /*stream=*/false), BackendUnavailable);
  const long elapsed = Ms(Clock::now() - t0);
  EXPECT_GE(elapsed, 800);
  EXPECT_LT(elapsed, 2500);

  fake_->Set({{"latency_ms", 300}});
  Run run = Chat(*backend, Messages(), {}, nullptr, /*stream=*/false);  // slower than read_timeout_ms: fine
  EXPECT_EQ(run.result.text, "ECHO: hello there");
}

// A provider is untrusted: a whole answer larger than the bound is refused, not buffered.
TEST_F(BackendsTest, NonStreamingAnswerOverTheSizeBoundIsRefused) {
  fake_->Set({{"reply", std::string(9u << 20, 'x')}, {"chunk_chars", 1u << 20}});
  BackendConfig c = Config("openai");
  c.max_retries = 0;
  auto backend = MakeBackend(c, *egress_);
  try {
    Chat(*backend, Messages(), {}, nullptr, /*stream=*/false);
    FAIL() << "expected the answer to be refused";
  } catch (const BackendUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds 8388608 bytes"), std::string::npos) << e.what();
  }
}

TEST_F(BackendsTest, NonStreamingErrorBodiesAreProviderErrors) {
  fake_->Set({{"fail_next", json::array({json{{"status", 400}, {"message", "bad model"}}})}});
  auto backend = MakeBackend(Config("anthropic"), *egress_);
  try {
    Chat(*backend, Messages(), {}, nullptr, /*stream=*/false);
    FAIL() << "expected a rejection";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 400"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad model"), std::string::npos) << e.what();
  }
}

TEST_F(BackendsTest, HostNotOnAllowlistIsDeniedAndNothingLeaves) {
  Egress narrow({"127.0.0.1:1", "api.openai.com"});
  auto backend = MakeBackend(Config("openai"), narrow);
  EXPECT_THROW(Chat(*backend, Messages()), EgressDenied);
  EXPECT_TRUE(fake_->Received().empty());
  auto attempts = narrow.attempts();
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_FALSE(attempts[0].allowed);
  EXPECT_EQ(attempts[0].host, fake_->HostPort());
  EXPECT_EQ(attempts[0].status, 0);
  EXPECT_EQ(attempts[0].bytes_sent, 0u);

  Egress none({});  // the default: no outbound connection at all
  auto backend2 = MakeBackend(Config("anthropic"), none);
  EXPECT_THROW(Chat(*backend2, Messages()), EgressDenied);
  EXPECT_TRUE(fake_->Received().empty());
}

TEST(EgressAllowlist, ExactHostOrHostPort) {
  Egress e({"api.openai.com", "127.0.0.1:8080", "Api.Anthropic.com:443"});
  EXPECT_TRUE(e.IsAllowed("https://api.openai.com/v1"));
  EXPECT_TRUE(e.IsAllowed("https://API.OPENAI.COM:8443/v1"));  // host alone: any port
  EXPECT_TRUE(e.IsAllowed("http://127.0.0.1:8080/v1"));
  EXPECT_FALSE(e.IsAllowed("http://127.0.0.1:8081/v1"));
  EXPECT_FALSE(e.IsAllowed("http://127.0.0.1/v1"));
  EXPECT_TRUE(e.IsAllowed("https://api.anthropic.com/v1"));  // the scheme's default port
  EXPECT_FALSE(e.IsAllowed("http://api.anthropic.com/v1"));   // port 80
  EXPECT_FALSE(e.IsAllowed("https://api.openai.com.evil.example/v1"));
  EXPECT_FALSE(e.IsAllowed("https://evil.example/api.openai.com"));
  EXPECT_FALSE(e.IsAllowed("https://api.openai.com@evil.example/v1"));  // user info, not the host
  EXPECT_FALSE(e.IsAllowed("https://evil.example/?h=api.openai.com"));
  EXPECT_FALSE(e.IsAllowed("ftp://api.openai.com/"));
  EXPECT_FALSE(e.IsAllowed("file:///etc/passwd"));
  EXPECT_FALSE(e.IsAllowed("api.openai.com/v1"));  // no scheme
  EXPECT_FALSE(e.IsAllowed(""));
  EXPECT_THROW(Egress({"*"}), std::invalid_argument);
  EXPECT_THROW(Egress({"*.openai.com"}), std::invalid_argument);
  EXPECT_THROW(Egress({"https://api.openai.com"}), std::invalid_argument);
  EXPECT_FALSE(Egress({}).IsAllowed("https://api.openai.com/v1"));
  EXPECT_THROW(Egress({}).Post("https://api.openai.com/v1/x", {}, "{}", nullptr, nullptr, 1000, 1000), EgressDenied);
}

TEST(EgressAllowlist, AttemptHistoryIsBounded) {
  Egress e({});
  for (int i = 0; i < 1005; ++i) {
    EXPECT_THROW(e.Post("https://h" + std::to_string(i) + ".example/x?key=secret", {}, "{}", nullptr, nullptr, 1000,
                        1000),
                 EgressDenied);
  }
  auto attempts = e.attempts();
  ASSERT_EQ(attempts.size(), 1000u);
  EXPECT_EQ(attempts.front().host, "h5.example:443");
  EXPECT_EQ(attempts.back().host, "h1004.example:443");
  EXPECT_EQ(attempts.back().url, "https://h1004.example/x") << "no query string in the record";
  EXPECT_FALSE(attempts.back().allowed);
}

TEST_F(BackendsTest, RedirectIsNotFollowed) {
  fake_->Set({{"fail_next", json::array({{{"status", 302},
                                          {"headers", {{"location", fake_->Base() + "/v1/chat/completions"}}}}})}});
  auto backend = MakeBackend(Config("openai"), *egress_);
  try {
    Chat(*backend, Messages());
    FAIL() << "expected a permanent error";
  } catch (const BackendUnavailable& e) {
    FAIL() << "a redirect is not transient: " << e.what();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("302"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fake_->Received().size(), 1u);
}

TEST_F(BackendsTest, ProxyFromEnvironmentIsUsedAndAllowlistChecksTheDestination) {
  // The fake answers absolute-form proxy requests, so it can stand in for an HTTP proxy.
  setenv("http_proxy", fake_->Base().c_str(), 1);
  Egress via_proxy({"api.example.test"});
  BackendConfig c = Config("openai");
  c.url = "http://api.example.test/v1";
  auto backend = MakeBackend(c, via_proxy);
  RemoteResult r;
  EXPECT_NO_THROW(r = Chat(*backend, Messages()).result);
  c.url = "http://other.example.test/v1";  // the proxy is reachable, the destination is not allowed
  auto denied = MakeBackend(c, via_proxy);
  EXPECT_THROW(Chat(*denied, Messages()), EgressDenied);
  unsetenv("http_proxy");
  EXPECT_EQ(r.text, "ECHO: hello there");
  json rec = fake_->Received();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec[0]["path"], "http://api.example.test/v1/chat/completions");
  EXPECT_EQ(rec[0]["headers"]["host"], "api.example.test");
}

// ---- retries, backoff and the circuit breaker ----------------------------------------------

TEST_F(BackendsTest, RetryAfter429IsHonoured) {
  fake_->Set({{"fail_next", {429}}, {"retry_after", 1}});
  auto backend = MakeBackend(Config("openai"), *egress_);
  const auto t0 = Clock::now();
  Run run = Chat(*backend, Messages());
  const long elapsed = Ms(Clock::now() - t0);
  EXPECT_EQ(run.result.text, "ECHO: hello there");
  EXPECT_EQ(run.result.attempts, 2);
  EXPECT_GE(elapsed, 1000);
  EXPECT_LT(elapsed, 3000);
  ASSERT_EQ(run.result.notes.size(), 1u);
  EXPECT_NE(run.result.notes[0].find("429"), std::string::npos) << run.result.notes[0];
  EXPECT_NE(run.result.notes[0].find("Retry-After: 1"), std::string::npos) << run.result.notes[0];
  EXPECT_GE(run.result.ttft_ms, 1000);
  json rec = fake_->Received();
  ASSERT_EQ(rec.size(), 2u);
  EXPECT_EQ(rec[0]["status"], 429);
  EXPECT_EQ(rec[0]["body"], rec[1]["body"]);
  EXPECT_EQ(run.result.bytes_sent, rec[0]["body_bytes"].get<uint64_t>() + rec[1]["body_bytes"].get<uint64_t>());
  EXPECT_EQ(run.result.sent_sha256, rec[1]["body_sha256"].get<std::string>());
  auto attempts = egress_->attempts();
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].status, 429);
  EXPECT_EQ(attempts[1].status, 200);
}

TEST_F(BackendsTest, RetryAfterAsHttpDate) {
  fake_->Set({{"fail_next", {503}}, {"retry_after", "Wed, 21 Oct 2015 07:28:00 GMT"}});  // in the past: now
  auto backend = MakeBackend(Config("openai"), *egress_);
  const auto t0 = Clock::now();
  Run run = Chat(*backend, Messages());
  EXPECT_LT(Ms(Clock::now() - t0), 1000);
  EXPECT_EQ(run.result.attempts, 2);
  ASSERT_EQ(run.result.notes.size(), 1u);
  EXPECT_NE(run.result.notes[0].find("503"), std::string::npos);
}

TEST_F(BackendsTest, Repeated500sExhaustRetries) {
  fake_->Set({{"fail_next", {500, 500, 500}}});
  BackendConfig c = Config("openai");
  c.max_retries = 2;
  auto backend = MakeBackend(c, *egress_);
  const auto t0 = Clock::now();
  try {
    Chat(*backend, Messages());
    FAIL() << "expected BackendUnavailable";
  } catch (const BackendUnavailable& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("3 attempts"), std::string::npos) << what;
    EXPECT_NE(what.find("HTTP 500"), std::string::npos) << what;
    EXPECT_NE(what.find("backoff"), std::string::npos) << what;
  }
  // Backoff 200 ms then 400 ms, ±25%.
  const long elapsed = Ms(Clock::now() - t0);
  EXPECT_GE(elapsed, 450);
  EXPECT_LT(elapsed, 2500);
  EXPECT_EQ(fake_->Received().size(), 3u);
}

TEST_F(BackendsTest, PermanentErrorsAreNotRetried) {
  fake_->Set({{"fail_next", json::array({{{"status", 400}, {"message", "model: unknown model 'x'"}}})}});
  auto backend = MakeBackend(Config("anthropic"), *egress_);
  try {
    Chat(*backend, Messages());
    FAIL() << "expected runtime_error";
  } catch (const BackendUnavailable& e) {
    FAIL() << "400 is permanent: " << e.what();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 400: model: unknown model 'x'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fake_->Received().size(), 1u);
  EXPECT_FALSE(backend->circuit_open());
}

TEST_F(BackendsTest, ConnectionClosedWithoutResponseIsRetried) {
  fake_->Set({{"fail_next", {"close"}}});
  auto backend = MakeBackend(Config("openai"), *egress_);
  Run run = Chat(*backend, Messages());
  EXPECT_EQ(run.result.text, "ECHO: hello there");
  EXPECT_EQ(run.result.attempts, 2);
  ASSERT_EQ(run.result.notes.size(), 1u);
  EXPECT_NE(run.result.notes[0].find("backoff"), std::string::npos) << run.result.notes[0];
}

TEST_F(BackendsTest, ConnectFailureIsUnavailable) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);  // a port with nobody listening
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  Egress e({"127.0.0.1:" + std::to_string(port)});
  BackendConfig c = Config("openai");
  c.url = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  c.max_retries = 1;
  auto backend = MakeBackend(c, e);
  try {
    Chat(*backend, Messages());
    FAIL() << "expected BackendUnavailable";
  } catch (const BackendUnavailable& ex) {
    EXPECT_NE(std::string(ex.what()).find("2 attempts"), std::string::npos) << ex.what();
  }
  auto attempts = e.attempts();
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_TRUE(attempts[0].allowed);
  EXPECT_EQ(attempts[0].status, 0);
  EXPECT_EQ(attempts[0].bytes_sent, 0u);
  EXPECT_FALSE(attempts[0].error.empty());
}

TEST_F(BackendsTest, CircuitBreakerOpensThenHalfOpens) {
  fake_->Set({{"fail_next", {503, 503, 503}}});
  BackendConfig c = Config("openai");
  c.max_retries = 0;
  c.breaker_failures = 2;
  c.breaker_open_seconds = 1;
  auto backend = MakeBackend(c, *egress_);
  EXPECT_THROW(Chat(*backend, Messages()), BackendUnavailable);
  EXPECT_FALSE(backend->circuit_open());
  EXPECT_THROW(Chat(*backend, Messages()), BackendUnavailable);
  EXPECT_TRUE(backend->circuit_open());
  EXPECT_EQ(fake_->Received().size(), 2u);

  // Open: fails at once, without contacting the server.
  auto t0 = Clock::now();
  try {
    Chat(*backend, Messages());
    FAIL() << "expected BackendUnavailable";
  } catch (const BackendUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("circuit open"), std::string::npos) << e.what();
  }
  EXPECT_LT(Ms(Clock::now() - t0), 100);
  EXPECT_EQ(fake_->Received().size(), 2u);
  EXPECT_EQ(egress_->attempts().size(), 2u);

  // Half-open after breaker_open_seconds: one trial; it fails (the third 503) and reopens.
  std::this_thread::sleep_for(1100ms);
  EXPECT_FALSE(backend->circuit_open());
  EXPECT_THROW(Chat(*backend, Messages()), BackendUnavailable);
  EXPECT_EQ(fake_->Received().size(), 3u);
  EXPECT_TRUE(backend->circuit_open());
  EXPECT_THROW(Chat(*backend, Messages()), BackendUnavailable);
  EXPECT_EQ(fake_->Received().size(), 3u);

  // The next trial succeeds and closes the circuit.
  std::this_thread::sleep_for(1100ms);
  Run run = Chat(*backend, Messages());
  EXPECT_EQ(run.result.text, "ECHO: hello there");
  EXPECT_FALSE(backend->circuit_open());
  EXPECT_NO_THROW(Chat(*backend, Messages()));
  EXPECT_EQ(fake_->Received().size(), 5u);
}

TEST_F(BackendsTest, StallBeforeTextTimesOutAndRetries) {
  fake_->Set({{"stall_after_bytes", 0}});
  BackendConfig c = Config("openai");
  c.read_timeout_ms = 400;
  c.max_retries = 1;
  auto backend = MakeBackend(c, *egress_);
  const auto t0 = Clock::now();
  Run run = Chat(*backend, Messages());
  const long elapsed = Ms(Clock::now() - t0);
  EXPECT_EQ(run.result.text, "ECHO: hello there");
  EXPECT_EQ(run.result.attempts, 2);
  EXPECT_GE(elapsed, 400);
  EXPECT_LT(elapsed, 2500);
  ASSERT_EQ(run.result.notes.size(), 1u);
  EXPECT_NE(run.result.notes[0].find("stalled"), std::string::npos) << run.result.notes[0];
  EXPECT_EQ(fake_->Received().size(), 2u);
}

TEST_F(BackendsTest, StallAfterTextIsFinal) {
  fake_->Set({{"stall_after_bytes", 400}});  // the role chunk, one text chunk, then silence
  BackendConfig c = Config("openai");
  c.read_timeout_ms = 400;
  c.max_retries = 3;
  auto backend = MakeBackend(c, *egress_);
  std::string got;
  try {
    backend->Chat(Messages(), {}, [&](std::string_view t) { got += t; return true; }, nullptr);
    FAIL() << "expected BackendUnavailable";
  } catch (const BackendUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("stalled"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not retried"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(got.empty());
  EXPECT_EQ(fake_->Received().size(), 1u);
}

// ---- cancellation --------------------------------------------------------------------------

TEST_F(BackendsTest, CancelAbortsAStreamWithin100ms) {
  fake_->Set({{"tokens_per_second", 4}, {"reply", std::string(200, 'x')}});
  auto backend = MakeBackend(Config("openai"), *egress_);
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  std::atomic<long> cancelled_at{0};
  std::thread canceller;
  std::string got;
  const auto t0 = Clock::now();
  RemoteResult r = backend->Chat(Messages(), {}, [&](std::string_view t) {
    got += t;
    if (!canceller.joinable()) {
      canceller = std::thread([&] {
        std::this_thread::sleep_for(100ms);  // in the middle of the wait for the next token
        cancelled_at = Ms(Clock::now() - t0);
        *cancel = true;
      });
    }
    return true;
  }, cancel);
  const long returned_at = Ms(Clock::now() - t0);
  canceller.join();
  EXPECT_EQ(r.finish_reason, "cancelled");
  EXPECT_EQ(r.text, got);
  EXPECT_LT(returned_at - cancelled_at, 150) << "returned " << returned_at << " ms, cancelled " << cancelled_at;
  EXPECT_LT(got.size(), 200u);
}

TEST_F(BackendsTest, CancelWhileWaitingForFirstByteAndDuringBackoff) {
  auto backend = MakeBackend(Config("anthropic"), *egress_);
  for (json settings : {json{{"latency_ms", 5000}}, json{{"fail_next", {429}}, {"retry_after", 10}}}) {
    fake_->Control("/_reset");
    fake_->Set(settings);
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    const auto t0 = Clock::now();
    std::thread canceller([&] {
      std::this_thread::sleep_for(300ms);
      *cancel = true;
    });
    RemoteResult r = backend->Chat(Messages(), {}, nullptr, cancel);
    const long elapsed = Ms(Clock::now() - t0);
    canceller.join();
    EXPECT_EQ(r.finish_reason, "cancelled") << settings.dump();
    EXPECT_GE(elapsed, 300) << settings.dump();
    EXPECT_LT(elapsed, 450) << settings.dump();
    EXPECT_EQ(fake_->Received().size(), 1u) << settings.dump();
  }
  EXPECT_FALSE(backend->circuit_open());
}

TEST_F(BackendsTest, SinkReturningFalseStopsTheStream) {
  fake_->Set({{"tokens_per_second", 50}});
  auto backend = MakeBackend(Config("ollama"), *egress_);
  int calls = 0;
  RemoteResult r = backend->Chat(Messages(std::string(100, 'y')), {}, [&](std::string_view) { return ++calls < 2; },
                                 nullptr);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(r.finish_reason, "cancelled");
  EXPECT_EQ(r.text, "ECHO: ");
  EXPECT_EQ(r.attempts, 1);
}

// ---- keys ----------------------------------------------------------------------------------

TEST_F(BackendsTest, MissingKeyNamesTheVariable) {
  unsetenv("HEARTH_TEST_NO_SUCH_KEY");
  BackendConfig c = Config("openai");
  c.api_key_env = "HEARTH_TEST_NO_SUCH_KEY";
  try {
    MakeBackend(c, *egress_);
    FAIL() << "expected invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("HEARTH_TEST_NO_SUCH_KEY"), std::string::npos) << e.what();
  }
  setenv("HEARTH_TEST_EMPTY_KEY", "  \n", 1);
  c.api_key_env = "HEARTH_TEST_EMPTY_KEY";
  EXPECT_THROW(MakeBackend(c, *egress_), std::invalid_argument);
  unsetenv("HEARTH_TEST_EMPTY_KEY");

  BackendConfig a = Config("anthropic");
  a.api_key_env.clear();
  EXPECT_THROW(MakeBackend(a, *egress_), std::invalid_argument);  // Anthropic always needs a key
  BackendConfig u = Config("openai");
  u.type = "gemini";
  EXPECT_THROW(MakeBackend(u, *egress_), std::invalid_argument);
  EXPECT_TRUE(fake_->Received().empty());
}

TEST_F(BackendsTest, KeyFromFileIsTrimmed) {
  const auto dir = std::filesystem::temp_directory_path() / ("hearth-backends-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "key";
  std::ofstream(path) << "  sk-from-file-abcdef123456\n\n";
  fake_->Set({{"require_key", "sk-from-file-abcdef123456"}});
  BackendConfig c = Config("anthropic");
  c.api_key_env = "HEARTH_TEST_NO_SUCH_KEY";  // unset: falls back to the file
  c.api_key_file = path.string();
  unsetenv("HEARTH_TEST_NO_SUCH_KEY");
  auto backend = MakeBackend(c, *egress_);
  EXPECT_EQ(Chat(*backend, Messages()).result.text, "ECHO: hello there");
  c.api_key_file = (dir / "absent").string();
  EXPECT_THROW(MakeBackend(c, *egress_), std::invalid_argument);
  std::filesystem::remove_all(dir);
}

TEST_F(BackendsTest, KeyNeverAppearsInErrorsOrNotes) {
  const std::string key = "sk-secret-KEY-0123456789abcdef";
  setenv("HEARTH_TEST_SECRET_KEY", key.c_str(), 1);
  auto contains_key = [&](const std::string& s) {
    return s.find(key) != std::string::npos || s.find(key.substr(0, 10)) != std::string::npos ||
           s.find(key.substr(key.size() - 8)) != std::string::npos;
  };
  for (const std::string type : {"openai", "anthropic"}) {
    fake_->Control("/_reset");
    // A 429 whose message quotes the key, then a 401 that echoes it (as some providers do).
    fake_->Set({{"require_key", "the-right-key"},
                {"fail_next", json::array({{{"status", 429}, {"message", "rate limit for key " + key}}})},
                {"retry_after", 0}});
    BackendConfig c = Config(type);
    c.api_key_env = "HEARTH_TEST_SECRET_KEY";
    auto backend = MakeBackend(c, *egress_);
    try {
      Chat(*backend, Messages());
      FAIL() << "expected a permanent error";
    } catch (const BackendUnavailable& e) {
      FAIL() << "401 is permanent: " << e.what();
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("HTTP 401"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("Incorrect API key provided"), std::string::npos) << e.what();
      EXPECT_FALSE(contains_key(e.what())) << e.what();
    }
    ASSERT_EQ(fake_->Received().size(), 2u);

    // Exhausted retries: the notes are in the exception.
    fake_->Set({{"require_key", nullptr}, {"fail_next", json::array({{{"status", 503}, {"message", "busy " + key}},
                                                                     {{"status", 503}, {"message", "busy " + key}}})}});
    c.max_retries = 1;
    auto backend2 = MakeBackend(c, *egress_);
    try {
      Chat(*backend2, Messages());
      FAIL() << "expected BackendUnavailable";
    } catch (const BackendUnavailable& e) {
      EXPECT_NE(std::string(e.what()).find("busy"), std::string::npos) << e.what();
      EXPECT_FALSE(contains_key(e.what())) << e.what();
    }
    // A successful call after a retry: the note.
    fake_->Set({{"fail_next", json::array({{{"status", 429}, {"message", "slow down " + key}}})}});
    Run run = Chat(*backend2, Messages());
    ASSERT_EQ(run.result.notes.size(), 1u);
    EXPECT_NE(run.result.notes[0].find("slow down"), std::string::npos) << run.result.notes[0];
    EXPECT_FALSE(contains_key(run.result.notes[0])) << run.result.notes[0];
  }
  for (const auto& a : egress_->attempts()) {
    EXPECT_FALSE(contains_key(a.url + a.error + a.host));
  }
  // Nor in what the fake recorded outside the auth headers.
  for (const auto& r : fake_->Received()) EXPECT_FALSE(contains_key(r["headers"].dump() + r["body"].get<std::string>()));
  unsetenv("HEARTH_TEST_SECRET_KEY");
}

// ---- concurrency ---------------------------------------------------------------------------

TEST_F(BackendsTest, ConcurrentChatsShareOneEgress) {
  fake_->Set({{"tokens_per_second", 200}});
  auto openai = MakeBackend(Config("openai"), *egress_);
  auto anthropic = MakeBackend(Config("anthropic"), *egress_);
  std::vector<std::thread> threads;
  std::mutex mutex;
  std::vector<std::string> failures;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      try {
        for (int k = 0; k < 3; ++k) {
          const std::string user = "thread " + std::to_string(i) + " call " + std::to_string(k);
          RemoteBackend& b = i % 2 ? *openai : *anthropic;
          Run run = Chat(b, Messages(user));
          if (run.result.text != "ECHO: " + user) {
            std::lock_guard lock(mutex);
            failures.push_back(run.result.text);
          }
        }
      } catch (const std::exception& e) {
        std::lock_guard lock(mutex);
        failures.push_back(e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(failures.empty()) << failures.front();
  EXPECT_EQ(fake_->Received().size(), 24u);
  EXPECT_EQ(egress_->attempts().size(), 24u);
}

}  // namespace
