#include "router/policy.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "router/scanner.h"

namespace hearth::router {

const char* TaskClassName(TaskClass t) {
  switch (t) {
    case TaskClass::kAutocomplete: return "autocomplete";
    case TaskClass::kChat: return "chat";
    case TaskClass::kEdit: return "edit";
    case TaskClass::kExplain: return "explain";
  }
  return "chat";
}

const char* ActionName(Action a) {
  switch (a) {
    case Action::kLocal: return "local";
    case Action::kCloud: return "cloud";
    case Action::kRedactThenCloud: return "redact-then-cloud";
    case Action::kDeny: return "deny";
  }
  return "local";
}

const char* ApprovalModeName(ApprovalMode a) {
  switch (a) {
    case ApprovalMode::kNone: return "none";
    case ApprovalMode::kHeader: return "header";
    case ApprovalMode::kInteractive: return "interactive";
  }
  return "none";
}

namespace {
std::string JoinLines(const std::vector<std::string>& problems) {
  std::string s;
  for (const auto& p : problems) s += (s.empty() ? "" : "\n") + p;
  return s;
}
}  // namespace

PolicyError::PolicyError(std::vector<std::string> problems)
    : std::runtime_error(JoinLines(problems)), problems_(std::move(problems)) {}

const BackendConfig* Policy::FindBackend(const std::string& name) const {
  for (const BackendConfig& b : backends) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

namespace {

class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  Policy Parse(const YAML::Node& root) {
    Policy policy;
    if (!root || root.IsNull()) return policy;  // an empty file: everything local
    if (!root.IsMap()) {
      Fail(root, "the policy must be a mapping with keys such as 'rules', 'backends', 'egress'");
      Throw();
    }
    Keys(root, "policy", {"version", "crossover_tokens", "default", "default_backend", "approval_timeout_seconds",
                          "store_prompts", "audit_sync", "egress", "backends", "scanner", "rules"});
    if (root["version"]) policy.version = Int(root["version"], "version", 1, 1);
    if (root["crossover_tokens"]) policy.crossover_tokens = Int(root["crossover_tokens"], "crossover_tokens", 1, 1000000);
    if (root["default"]) policy.default_action = ParseAction(root["default"]);
    if (root["default_backend"]) policy.default_backend = Str(root["default_backend"], "default_backend");
    if (root["approval_timeout_seconds"]) {
      policy.approval_timeout_seconds = Int(root["approval_timeout_seconds"], "approval_timeout_seconds", 1, 86400);
    }
    if (root["store_prompts"]) policy.store_prompts = Bool(root["store_prompts"], "store_prompts");
    if (root["audit_sync"]) {
      const std::string sync = Str(root["audit_sync"], "audit_sync");
      if (sync == "full") {
        policy.audit_sync_every_record = true;
      } else if (sync != "normal") {
        Fail(root["audit_sync"], "audit_sync must be 'normal' (survives a crash of hearth) or 'full' "
                                 "(also survives a power loss: one fsync per request)");
      }
    }
    if (const YAML::Node egress = root["egress"]) {
      Keys(egress, "egress", {"allow"});
      policy.egress_allow = StrList(egress["allow"], "egress.allow");
      for (const std::string& host : policy.egress_allow) {
        if (host.find('*') != std::string::npos || host.find('/') != std::string::npos) {
          Fail(egress["allow"], "egress.allow entries are exact host names or host:port ('" + host +
                                    "' has a wildcard or a path)");
        }
      }
    }
    if (const YAML::Node backends = root["backends"]) {
      if (!backends.IsSequence()) Fail(backends, "'backends' must be a list");
      else for (const YAML::Node& b : backends) policy.backends.push_back(ParseBackend(b, policy));
    }
    if (const YAML::Node scanner = root["scanner"]) ParseScanner(scanner, policy);
    if (const YAML::Node rules = root["rules"]) {
      if (!rules.IsSequence()) Fail(rules, "'rules' must be a list");
      else for (const YAML::Node& r : rules) policy.rules.push_back(ParseRule(r, policy));
    }
    std::set<std::string> names;
    for (const Rule& r : policy.rules) {
      if (!names.insert(r.name).second) problems_.push_back(source_ + ":" + std::to_string(r.line) + ": duplicate rule name '" + r.name + "'");
    }
    if (!policy.default_backend.empty() && !policy.FindBackend(policy.default_backend)) {
      Fail(root["default_backend"], "default_backend '" + policy.default_backend + "' is not defined under 'backends'");
    }
    if (policy.default_action != Action::kLocal && policy.default_action != Action::kDeny && policy.default_backend.empty()) {
      Fail(root["default"], "a cloud default needs 'default_backend'");
    }
    Throw();
    return policy;
  }

  void Fail(const YAML::Node& node, const std::string& message) {
    int line = node ? node.Mark().line + 1 : 0;
    problems_.push_back(source_ + ":" + std::to_string(line) + ": " + message);
  }
  void Throw() {
    if (!problems_.empty()) throw PolicyError(problems_);
  }

 private:
  void Keys(const YAML::Node& map, const std::string& where, const std::vector<std::string>& allowed) {
    if (!map.IsMap()) {
      Fail(map, "'" + where + "' must be a mapping");
      return;
    }
    for (const auto& kv : map) {
      std::string key = kv.first.as<std::string>();
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        Fail(kv.first, "unknown key '" + key + "' in " + where + " (expected one of: " + list + ")");
      }
    }
  }
  std::string Str(const YAML::Node& n, const std::string& what) {
    if (!n.IsScalar()) {
      Fail(n, "'" + what + "' must be a string");
      return {};
    }
    return n.as<std::string>();
  }
  int Int(const YAML::Node& n, const std::string& what, int min, int max) {
    int v = 0;
    if (!n.IsScalar() || !YAML::convert<int>::decode(n, v) || v < min || v > max) {
      Fail(n, "'" + what + "' must be an integer between " + std::to_string(min) + " and " + std::to_string(max));
      return min;
    }
    return v;
  }
  double Number(const YAML::Node& n, const std::string& what) {
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || v < 0) {
      Fail(n, "'" + what + "' must be a non-negative number");
      return 0;
    }
    return v;
  }
  bool Bool(const YAML::Node& n, const std::string& what) {
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) Fail(n, "'" + what + "' must be true or false");
    return v;
  }
  std::vector<std::string> StrList(const YAML::Node& n, const std::string& what) {
    std::vector<std::string> out;
    if (!n) return out;
    if (n.IsScalar()) {
      out.push_back(n.as<std::string>());
    } else if (n.IsSequence()) {
      for (const YAML::Node& item : n) out.push_back(Str(item, what));
    } else {
      Fail(n, "'" + what + "' must be a string or a list of strings");
    }
    return out;
  }
  Action ParseAction(const YAML::Node& n) {
    std::string a = Str(n, "action");
    if (a == "local") return Action::kLocal;
    if (a == "cloud") return Action::kCloud;
    if (a == "redact-then-cloud") return Action::kRedactThenCloud;
    if (a == "deny") return Action::kDeny;
    Fail(n, "unknown action '" + a + "' (expected local, cloud, redact-then-cloud or deny)");
    return Action::kLocal;
  }

  BackendConfig ParseBackend(const YAML::Node& n, const Policy& policy) {
    BackendConfig b;
    Keys(n, "backend", {"name", "type", "url", "model", "api_key_env", "api_key_file", "api_key", "input_usd_per_mtok",
                        "output_usd_per_mtok", "connect_timeout_ms", "read_timeout_ms", "response_timeout_ms", "max_retries",
                        "breaker_failures", "breaker_open_seconds"});
    if (!n.IsMap()) return b;
    if (n["api_key"]) Fail(n["api_key"], "API keys do not belong in the policy file; use api_key_env or api_key_file");
    if (n["name"]) b.name = Str(n["name"], "name"); else Fail(n, "a backend needs a 'name'");
    if (n["type"]) b.type = Str(n["type"], "type"); else Fail(n, "backend '" + b.name + "' needs a 'type'");
    if (!b.type.empty() && b.type != "openai" && b.type != "anthropic" && b.type != "ollama") {
      Fail(n["type"], "backend type must be openai, anthropic or ollama (got '" + b.type + "')");
    }
    if (n["url"]) b.url = Str(n["url"], "url"); else Fail(n, "backend '" + b.name + "' needs a 'url'");
    if (n["model"]) b.model = Str(n["model"], "model");
    if (n["api_key_env"]) b.api_key_env = Str(n["api_key_env"], "api_key_env");
    if (n["api_key_file"]) b.api_key_file = Str(n["api_key_file"], "api_key_file");
    if (n["input_usd_per_mtok"]) b.input_usd_per_mtok = Number(n["input_usd_per_mtok"], "input_usd_per_mtok");
    if (n["output_usd_per_mtok"]) b.output_usd_per_mtok = Number(n["output_usd_per_mtok"], "output_usd_per_mtok");
    if (n["connect_timeout_ms"]) b.connect_timeout_ms = Int(n["connect_timeout_ms"], "connect_timeout_ms", 1, 600000);
    if (n["read_timeout_ms"]) b.read_timeout_ms = Int(n["read_timeout_ms"], "read_timeout_ms", 1, 3600000);
    if (n["response_timeout_ms"]) {
      b.response_timeout_ms = Int(n["response_timeout_ms"], "response_timeout_ms", 1, 3600000);
    }
    if (n["max_retries"]) b.max_retries = Int(n["max_retries"], "max_retries", 0, 10);
    if (n["breaker_failures"]) b.breaker_failures = Int(n["breaker_failures"], "breaker_failures", 1, 1000);
    if (n["breaker_open_seconds"]) b.breaker_open_seconds = Int(n["breaker_open_seconds"], "breaker_open_seconds", 1, 86400);
    // The backend's host must be on the allowlist, or it could never be reached. Egress's own
    // URL parser decides, so policy validation and the real check cannot disagree.
    if (!b.url.empty()) {
      // Entries the allowlist check rejected (reported under egress.allow) allow nothing.
      std::vector<std::string> valid;
      for (const std::string& host : policy.egress_allow) {
        if (host.find('*') == std::string::npos && host.find('/') == std::string::npos) valid.push_back(host);
      }
      bool allowed = false;
      try {
        allowed = Egress(valid).IsAllowed(b.url);
      } catch (const std::invalid_argument&) {
        allowed = false;
      }
      if (!allowed) Fail(n["url"], "backend '" + b.name + "' points at " + b.url + ", whose host is not in egress.allow");
    }
    return b;
  }

  void ParseScanner(const YAML::Node& n, Policy& policy) {
    Keys(n, "scanner", {"custom", "sensitive_paths"});
    if (!n.IsMap()) return;
    policy.sensitive_paths = StrList(n["sensitive_paths"], "scanner.sensitive_paths");
    if (const YAML::Node custom = n["custom"]) {
      if (!custom.IsSequence()) {
        Fail(custom, "'scanner.custom' must be a list of {name, regex, kind}");
        return;
      }
      for (const YAML::Node& c : custom) {
        Keys(c, "scanner.custom", {"name", "regex", "kind"});
        CustomPatternSpec spec;
        if (c["name"]) spec.name = Str(c["name"], "name"); else Fail(c, "a custom pattern needs a 'name'");
        if (c["regex"]) spec.regex = Str(c["regex"], "regex"); else Fail(c, "a custom pattern needs a 'regex'");
        if (c["kind"]) spec.kind = Str(c["kind"], "kind");
        if (spec.kind != "secret" && spec.kind != "personal" && spec.kind != "custom") {
          Fail(c["kind"], "custom pattern kind must be secret, personal or custom");
        }
        policy.custom_patterns.push_back(spec);
      }
    }
  }

  Rule ParseRule(const YAML::Node& n, const Policy& policy) {
    Rule r;
    r.line = n.Mark().line + 1;
    Keys(n, "rule", {"name", "when", "action", "backend", "approval", "remember_minutes"});
    if (!n.IsMap()) return r;
    r.name = n["name"] ? Str(n["name"], "name") : "rule at line " + std::to_string(r.line);
    if (n["action"]) r.action = ParseAction(n["action"]); else Fail(n, "rule '" + r.name + "' needs an 'action'");
    if (n["backend"]) r.backend = Str(n["backend"], "backend");
    if (r.backend.empty()) r.backend = policy.default_backend;
    bool cloud = r.action == Action::kCloud || r.action == Action::kRedactThenCloud;
    if (cloud && r.backend.empty()) Fail(n, "rule '" + r.name + "' sends to the cloud but names no 'backend'");
    if (cloud && !r.backend.empty() && !policy.FindBackend(r.backend)) {
      Fail(n["backend"] ? n["backend"] : n, "rule '" + r.name + "' names backend '" + r.backend + "', which is not defined under 'backends'");
    }
    if (n["approval"]) {
      std::string a = Str(n["approval"], "approval");
      if (a == "none") r.approval = ApprovalMode::kNone;
      else if (a == "header") r.approval = ApprovalMode::kHeader;
      else if (a == "interactive") r.approval = ApprovalMode::kInteractive;
      else Fail(n["approval"], "approval must be none, header or interactive (got '" + a + "')");
    }
    if (n["remember_minutes"]) r.remember_minutes = Int(n["remember_minutes"], "remember_minutes", 0, 525600);
    if (const YAML::Node w = n["when"]) {
      Keys(w, "when", {"task", "output_tokens", "model", "user", "project", "paths", "findings", "no_findings", "sensitivity"});
      if (!w.IsMap()) return r;
      for (const std::string& t : StrList(w["task"], "task")) {
        if (t == "autocomplete" || t == "fim") r.when.tasks.push_back(TaskClass::kAutocomplete);
        else if (t == "chat") r.when.tasks.push_back(TaskClass::kChat);
        else if (t == "edit") r.when.tasks.push_back(TaskClass::kEdit);
        else if (t == "explain") r.when.tasks.push_back(TaskClass::kExplain);
        else Fail(w["task"], "unknown task '" + t + "' (expected autocomplete, chat, edit or explain)");
      }
      if (const YAML::Node o = w["output_tokens"]) {
        Keys(o, "output_tokens", {"min", "max", "over_crossover"});
        if (o.IsMap()) {
          if (o["min"]) r.when.min_output_tokens = Int(o["min"], "min", 0, 10000000);
          if (o["max"]) r.when.max_output_tokens = Int(o["max"], "max", 0, 10000000);
          if (o["over_crossover"]) r.when.over_crossover = Bool(o["over_crossover"], "over_crossover");
        }
      }
      r.when.models = StrList(w["model"], "model");
      r.when.users = StrList(w["user"], "user");
      r.when.projects = StrList(w["project"], "project");
      r.when.paths = StrList(w["paths"], "paths");
      r.when.findings = StrList(w["findings"], "findings");
      r.when.sensitivity = StrList(w["sensitivity"], "sensitivity");
      if (w["no_findings"]) r.when.no_findings = Bool(w["no_findings"], "no_findings");
    }
    return r;
  }

  std::string source_;
  std::vector<std::string> problems_;
};

bool AnyGlob(const std::vector<std::string>& patterns, const std::string& value) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) { return GlobMatch(p, value); });
}

std::string List(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// Returns "" when the rule matches, else why not.
std::string Mismatch(const Policy& policy, const RuleConditions& w, const RouteFacts& f, std::string& why_match) {
  std::vector<std::string> reasons;
  if (!w.tasks.empty()) {
    if (std::find(w.tasks.begin(), w.tasks.end(), f.task) == w.tasks.end()) {
      return std::string("task is ") + TaskClassName(f.task);
    }
    reasons.push_back(std::string("task is ") + TaskClassName(f.task));
  }
  if (!w.sensitivity.empty()) {
    if (std::find(w.sensitivity.begin(), w.sensitivity.end(), f.sensitivity) == w.sensitivity.end()) {
      return "sensitivity is '" + f.sensitivity + "', not " + List(w.sensitivity);
    }
    reasons.push_back("sensitivity is " + f.sensitivity);
  }
  if (w.min_output_tokens && f.predicted_output_tokens < *w.min_output_tokens) {
    return "predicted output " + std::to_string(f.predicted_output_tokens) + " tokens < min " + std::to_string(*w.min_output_tokens);
  }
  if (w.max_output_tokens && f.predicted_output_tokens > *w.max_output_tokens) {
    return "predicted output " + std::to_string(f.predicted_output_tokens) + " tokens > max " + std::to_string(*w.max_output_tokens);
  }
  if (w.over_crossover) {
    bool over = f.predicted_output_tokens > policy.crossover_tokens;
    if (over != *w.over_crossover) {
      return "predicted output " + std::to_string(f.predicted_output_tokens) + " tokens is " + (over ? "over" : "not over") +
             " the crossover (" + std::to_string(policy.crossover_tokens) + ")";
    }
    reasons.push_back("predicted output " + std::to_string(f.predicted_output_tokens) + " tokens " +
                      (over ? ">" : "<=") + " crossover " + std::to_string(policy.crossover_tokens));
  }
  if (!w.models.empty()) {
    if (!AnyGlob(w.models, f.model)) return "model '" + f.model + "' matches none of " + List(w.models);
    reasons.push_back("model " + f.model);
  }
  if (!w.users.empty()) {
    if (std::find(w.users.begin(), w.users.end(), f.user) == w.users.end()) return "user '" + f.user + "' not in " + List(w.users);
    reasons.push_back("user " + f.user);
  }
  if (!w.projects.empty()) {
    if (std::find(w.projects.begin(), w.projects.end(), f.project) == w.projects.end()) {
      return "project '" + f.project + "' not in " + List(w.projects);
    }
    reasons.push_back("project " + f.project);
  }
  if (!w.paths.empty()) {
    std::string hit;
    for (const std::string& p : f.paths) {
      if (AnyGlob(w.paths, p)) {
        hit = p;
        break;
      }
    }
    if (hit.empty()) return "no path in the request matches " + List(w.paths);
    reasons.push_back("path " + hit + " matches " + List(w.paths));
  }
  if (!w.findings.empty()) {
    std::string hit;
    for (const auto& finding : f.findings) {
      for (const std::string& want : w.findings) {
        if (want == "any" || want == finding.kind || want == finding.rule) {
          hit = finding.rule + " (" + finding.kind + ")";
          break;
        }
      }
      if (!hit.empty()) break;
    }
    if (hit.empty()) return "no finding of " + List(w.findings);
    reasons.push_back("scanner found " + hit);
  }
  if (w.no_findings) {
    bool none = f.findings.empty();
    if (none != *w.no_findings) return none ? "the scanner found nothing" : "the scanner found " + f.findings.front().rule;
    reasons.push_back(none ? "no findings" : "findings present");
  }
  why_match = reasons.empty() ? "the rule has no conditions" : List(reasons);
  return {};
}

}  // namespace

Policy ParsePolicy(const std::string& yaml_text, const std::string& source_name) {
  Parser parser(source_name);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw PolicyError({source_name + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg});
  }
  return parser.Parse(root);
}

Policy LoadPolicy(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw PolicyError({path + ": cannot be read (does it exist?)"});
  std::stringstream ss;
  ss << in.rdbuf();
  return ParsePolicy(ss.str(), path);
}

Decision Decide(const Policy& policy, const RouteFacts& facts) {
  Decision d;
  for (const Rule& rule : policy.rules) {
    std::string why;
    std::string mismatch = Mismatch(policy, rule.when, facts, why);
    if (!mismatch.empty()) {
      d.trace.push_back("rule '" + rule.name + "' (line " + std::to_string(rule.line) + ") does not match: " + mismatch);
      continue;
    }
    d.action = rule.action;
    d.rule = rule.name;
    d.rule_line = rule.line;
    d.backend = rule.backend;
    d.approval = rule.approval;
    d.remember_minutes = rule.remember_minutes;
    d.reason = why;
    return d;
  }
  d.action = policy.default_action;
  d.rule = "default";
  d.backend = policy.default_backend;
  d.reason = "no rule matched";
  return d;
}

}  // namespace hearth::router
