#include "router/policy.h"
#include "router/scanner.h"

#include <gtest/gtest.h>

using namespace hearth::router;

namespace {

const char* kPolicy = R"(version: 1
crossover_tokens: 200
egress:
  allow: [127.0.0.1:9999, api.example.com]
backends:
  - name: cloud
    type: openai
    url: http://127.0.0.1:9999/v1
    model: gpt-test
    api_key_env: TEST_KEY
rules:
  - name: private
    when: {sensitivity: [private]}
    action: local
  - name: patients
    when: {paths: ["data/patients/**"]}
    action: local
  - name: secrets
    when: {findings: [secret]}
    action: redact-then-cloud
    backend: cloud
    approval: interactive
  - name: long
    when: {task: [chat, explain], output_tokens: {over_crossover: true}}
    action: cloud
    backend: cloud
    approval: header
  - name: no-gpt
    when: {model: ["gpt-*"]}
    action: deny
)";

RouteFacts Chat(int32_t tokens) {
  RouteFacts f;
  f.task = TaskClass::kChat;
  f.predicted_output_tokens = tokens;
  f.model = "qwen2.5-coder";
  return f;
}

std::string ProblemsOf(const std::string& yaml) {
  try {
    ParsePolicy(yaml, "p.yaml");
  } catch (const PolicyError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Policy, ParsesBackendsRulesAndEgress) {
  Policy p = ParsePolicy(kPolicy, "p.yaml");
  EXPECT_EQ(p.crossover_tokens, 200);
  ASSERT_EQ(p.backends.size(), 1u);
  EXPECT_EQ(p.backends[0].api_key_env, "TEST_KEY");
  ASSERT_EQ(p.rules.size(), 5u);
  EXPECT_EQ(p.rules[2].approval, ApprovalMode::kInteractive);
  EXPECT_EQ(p.rules[0].line, 12);
  EXPECT_EQ(p.egress_allow.size(), 2u);
}

TEST(Policy, FirstMatchingRuleWinsAndTheTraceSaysWhyOthersDidNot) {
  Policy p = ParsePolicy(kPolicy, "p.yaml");
  Decision short_chat = Decide(p, Chat(50));
  EXPECT_EQ(short_chat.action, Action::kLocal);
  EXPECT_EQ(short_chat.rule, "default");
  ASSERT_EQ(short_chat.trace.size(), 5u);
  EXPECT_NE(short_chat.trace[3].find("not over the crossover (200)"), std::string::npos) << short_chat.trace[3];

  Decision long_chat = Decide(p, Chat(600));
  EXPECT_EQ(long_chat.action, Action::kCloud);
  EXPECT_EQ(long_chat.rule, "long");
  EXPECT_EQ(long_chat.approval, ApprovalMode::kHeader);
  EXPECT_NE(long_chat.reason.find("600 tokens > crossover 200"), std::string::npos) << long_chat.reason;

  RouteFacts priv = Chat(600);
  priv.sensitivity = "private";
  EXPECT_EQ(Decide(p, priv).rule, "private");

  RouteFacts patients = Chat(600);
  patients.paths = {"src/main.cc", "data/patients/2024/records.csv"};
  Decision d = Decide(p, patients);
  EXPECT_EQ(d.rule, "patients");
  EXPECT_NE(d.reason.find("data/patients/2024/records.csv"), std::string::npos);

  RouteFacts secret = Chat(10);
  secret.findings = {{"aws_access_key_id", "secret"}};
  EXPECT_EQ(Decide(p, secret).action, Action::kRedactThenCloud);

  RouteFacts gpt = Chat(10);
  gpt.model = "gpt-4o";
  EXPECT_EQ(Decide(p, gpt).action, Action::kDeny);

  RouteFacts autocomplete = Chat(600);
  autocomplete.task = TaskClass::kAutocomplete;
  EXPECT_EQ(Decide(p, autocomplete).action, Action::kLocal);
}

TEST(Policy, BackendTimeoutsAreParsedAndBounded) {
  const std::string head = R"(version: 1
egress:
  allow: [api.example.com]
backends:
  - name: cloud
    type: openai
    url: https://api.example.com/v1
    model: m
    api_key_env: TEST_KEY
)";
  Policy p = ParsePolicy(head + "    read_timeout_ms: 15000\n    response_timeout_ms: 90000\n", "p.yaml");
  ASSERT_EQ(p.backends.size(), 1u);
  EXPECT_EQ(p.backends[0].read_timeout_ms, 15000);
  EXPECT_EQ(p.backends[0].response_timeout_ms, 90000);
  EXPECT_EQ(ParsePolicy(head, "p.yaml").backends[0].response_timeout_ms, 600000) << "default: 10 minutes";
  const std::string problems = ProblemsOf(head + "    response_timeout_ms: 0\n");
  EXPECT_NE(problems.find("p.yaml:10"), std::string::npos) << problems;
  EXPECT_NE(problems.find("response_timeout_ms"), std::string::npos) << problems;
}

TEST(Policy, EmptyPolicyKeepsEverythingLocal) {
  Policy p = ParsePolicy("", "empty.yaml");
  EXPECT_TRUE(p.egress_allow.empty());
  EXPECT_EQ(Decide(p, Chat(5000)).action, Action::kLocal);
}

TEST(Policy, ErrorsCarryLineNumbersAndAllProblemsAreReported) {
  std::string problems = ProblemsOf(R"(version: 1
egress:
  allow: ["*.openai.com"]
backends:
  - name: cloud
    type: openia
    url: https://api.openai.com/v1
    api_key: sk-123
rules:
  - name: x
    when: {task: [chatting]}
    action: cloud
    backend: nowhere
  - name: y
    action: teleport
    colour: blue
)");
  EXPECT_NE(problems.find("p.yaml:3: egress.allow entries are exact host names"), std::string::npos) << problems;
  EXPECT_NE(problems.find("p.yaml:6: backend type must be openai, anthropic or ollama (got 'openia')"), std::string::npos) << problems;
  EXPECT_NE(problems.find("p.yaml:7: backend 'cloud' points at https://api.openai.com/v1, whose host is not in egress.allow"), std::string::npos) << problems;
  EXPECT_NE(problems.find("p.yaml:8: API keys do not belong in the policy file"), std::string::npos) << problems;
  EXPECT_NE(problems.find("p.yaml:11: unknown task 'chatting'"), std::string::npos) << problems;
  EXPECT_NE(problems.find("p.yaml:13: rule 'x' names backend 'nowhere'"), std::string::npos) << problems;
  EXPECT_NE(problems.find("p.yaml:15: unknown action 'teleport'"), std::string::npos) << problems;
  EXPECT_NE(problems.find("p.yaml:16: unknown key 'colour' in rule"), std::string::npos) << problems;
}

TEST(Policy, YamlSyntaxErrorHasALine) {
  std::string problems = ProblemsOf("rules:\n  - name: [unclosed\n");
  EXPECT_NE(problems.find("p.yaml:"), std::string::npos) << problems;
  EXPECT_NE(ProblemsOf("- a\n- b\n").find("must be a mapping"), std::string::npos);
}

TEST(Policy, ExampleFileIsValid) {
  Policy p = LoadPolicy(std::string(HEARTH_SOURCE_DIR) + "/examples/hearth.yaml");
  EXPECT_EQ(p.backends.size(), 2u);
  EXPECT_GE(p.rules.size(), 5u);
  EXPECT_THROW(LoadPolicy("/nonexistent/hearth.yaml"), PolicyError);
}

TEST(Glob, MatchesPathsLikeGitignore) {
  EXPECT_TRUE(GlobMatch("data/patients/**", "data/patients/a/b.csv"));
  EXPECT_TRUE(GlobMatch("data/patients/**", "data/patients/x"));
  EXPECT_FALSE(GlobMatch("data/patients/**", "data/other/x"));
  EXPECT_TRUE(GlobMatch("**/*.pem", "keys/server.pem"));
  EXPECT_TRUE(GlobMatch("**/*.pem", "server.pem"));
  EXPECT_TRUE(GlobMatch("**/.env", ".env"));
  EXPECT_FALSE(GlobMatch("*.pem", "keys/server.pem"));
  EXPECT_TRUE(GlobMatch("src/?.c", "src/a.c"));
  EXPECT_FALSE(GlobMatch("src/?.c", "src/ab.c"));
  EXPECT_TRUE(GlobMatch("gpt-*", "gpt-4o"));
}
