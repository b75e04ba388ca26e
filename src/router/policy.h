// Routing policy: ordered rules from a YAML file (hearth.yaml) that decide, per request,
// whether it is served locally, sent to a cloud backend (with or without redaction and
// approval), or denied. The first rule whose conditions all match wins; no match means
// the default action (local unless the file says otherwise).
//
// The file also names the cloud backends, the egress allowlist and scanner additions, so
// one file describes everything that may leave the machine. API keys never appear in it:
// backends name an environment variable or a key file.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "router/backend.h"

namespace hearth::router {

enum class TaskClass { kAutocomplete, kChat, kEdit, kExplain };
const char* TaskClassName(TaskClass t);

enum class Action { kLocal, kCloud, kRedactThenCloud, kDeny };
const char* ActionName(Action a);

enum class ApprovalMode { kNone, kHeader, kInteractive };
const char* ApprovalModeName(ApprovalMode a);

struct RuleConditions {
  std::vector<TaskClass> tasks;           // any of
  std::optional<int32_t> min_output_tokens, max_output_tokens;
  std::optional<bool> over_crossover;     // predicted output length vs crossover_tokens
  std::vector<std::string> models;        // globs over the requested model name
  std::vector<std::string> users;
  std::vector<std::string> projects;
  std::vector<std::string> paths;         // globs; any path named in the request
  std::vector<std::string> findings;      // "secret" | "personal" | "custom" | "any" | a rule name
  std::optional<bool> no_findings;
  std::vector<std::string> sensitivity;   // X-Hearth-Sensitivity values
};

struct Rule {
  std::string name;
  int line = 0;  // in the policy file, for explanations
  RuleConditions when;
  Action action = Action::kLocal;
  std::string backend;                    // for cloud actions
  ApprovalMode approval = ApprovalMode::kNone;
  int remember_minutes = 0;               // remember an interactive approval per project
};

struct CustomPatternSpec {
  std::string name;
  std::string regex;
  std::string kind = "custom";  // "secret" | "personal" | "custom"
};

struct Policy {
  int version = 1;
  int32_t crossover_tokens = 250;         // predicted output tokens above which cloud wins
  Action default_action = Action::kLocal;
  std::string default_backend;
  int approval_timeout_seconds = 120;
  bool store_prompts = false;
  bool audit_sync_every_record = false;   // audit_sync: full
  std::vector<std::string> egress_allow;  // empty: no outbound connection at all
  std::vector<BackendConfig> backends;
  std::vector<CustomPatternSpec> custom_patterns;
  std::vector<std::string> sensitive_paths;
  std::vector<Rule> rules;

  const BackendConfig* FindBackend(const std::string& name) const;
};

// All problems of a policy file, each "FILE:LINE: message".
class PolicyError : public std::runtime_error {
 public:
  explicit PolicyError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Parses and validates; throws PolicyError listing every problem found (unknown keys,
// wrong types, unknown backends, backends whose host is not on the egress allowlist,
// an API key written into the file, ...).
Policy LoadPolicy(const std::string& path);
Policy ParsePolicy(const std::string& yaml_text, const std::string& source_name);

// What the router knows about a request when it decides.
struct RouteFacts {
  TaskClass task = TaskClass::kChat;
  int32_t predicted_output_tokens = 0;
  std::string model, user, project, sensitivity;
  std::vector<std::string> paths;
  struct FindingFact {
    std::string rule;
    std::string kind;  // "secret" | "personal" | "custom"
  };
  std::vector<FindingFact> findings;
};

struct Decision {
  Action action = Action::kLocal;
  std::string rule;           // name of the rule that fired, or "default"
  int rule_line = 0;
  std::string backend;
  ApprovalMode approval = ApprovalMode::kNone;
  int remember_minutes = 0;
  std::string reason;         // why this rule matched
  std::vector<std::string> trace;  // for each rule tried before it: why it did not match
};

Decision Decide(const Policy& policy, const RouteFacts& facts);


}  // namespace hearth::router
