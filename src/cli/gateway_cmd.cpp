#include "cli/gateway_cmd.h"

#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <unistd.h>

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include "engine/gguf_check.h"
#include "router/router.h"
#include "router/scanner.h"

namespace hearth::cli {

using json = nlohmann::json;

namespace {

std::string DefaultUrl() {
  if (const char* h = std::getenv("HEARTH_HOST"); h != nullptr && *h != '\0') {
    std::string v = h;
    return v.rfind("http", 0) == 0 ? v : "http://" + v;
  }
  return "http://127.0.0.1:11434";
}

size_t Collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// A loopback call to the running server (not egress: it never leaves the machine).
json CallServer(const std::string& method, const std::string& url, const std::string& body = "") {
  CURL* curl = curl_easy_init();
  std::string response;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  if (const char* key = std::getenv("HEARTH_API_KEY"); key != nullptr && *key != '\0') {
    headers = curl_slist_append(headers, ("Authorization: Bearer " + std::string(key)).c_str());
  }
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  if (method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  }
  CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) {
    throw std::runtime_error("cannot reach hearth at " + url + ": " + curl_easy_strerror(rc) + " (is `hearth serve` running? set --url)");
  }
  json j = json::parse(response, nullptr, false);
  if (status >= 400) {
    std::string message = j.is_object() && j.contains("error") ? j["error"].dump() : response;
    throw std::runtime_error("hearth answered " + std::to_string(status) + ": " + message);
  }
  return j;
}

router::InferenceRequest RequestFromJson(const json& file) {
  // Either a bare request body, or {"endpoint": ..., "headers": {...}, "body": {...}}.
  json body = file.contains("body") ? file["body"] : file;
  json headers = file.value("headers", json::object());
  std::string endpoint = file.value("endpoint", "");
  router::InferenceRequest r;
  r.model = body.value("model", "");
  if (body.contains("messages")) {
    r.endpoint = router::Endpoint::kChat;
    for (const json& m : body["messages"]) {
      std::string content = m.contains("content") && m["content"].is_string() ? m["content"].get<std::string>() : "";
      r.messages.push_back({m.value("role", "user"), content});
    }
  } else if (body.contains("input_prefix") || body.contains("suffix") || endpoint == "/infill") {
    r.endpoint = router::Endpoint::kInfill;
    router::FimInput fim;
    fim.prefix = body.value("input_prefix", body.value("prompt", ""));
    fim.suffix = body.value("input_suffix", body.value("suffix", ""));
    for (const json& e : body.value("input_extra", json::array())) fim.extra.push_back({e.value("filename", ""), e.value("text", "")});
    r.fim = fim;
  } else {
    r.endpoint = router::Endpoint::kGenerate;
    r.prompt = body.value("prompt", "");
  }
  r.system = body.value("system", "");
  for (const char* key : {"max_completion_tokens", "max_tokens", "n_predict"}) {
    if (body.contains(key) && body[key].is_number_integer()) r.sampling.max_tokens = body[key].get<int32_t>();
  }
  if (body.contains("options") && body["options"].contains("num_predict")) r.sampling.max_tokens = body["options"]["num_predict"].get<int32_t>();
  auto header = [&](const char* name) {
    for (auto it = headers.begin(); it != headers.end(); ++it) {
      if (strcasecmp(it.key().c_str(), name) == 0 && it.value().is_string()) return it.value().get<std::string>();
    }
    return std::string();
  };
  r.client.sensitivity = header("X-Hearth-Sensitivity");
  r.client.project = header("X-Hearth-Project");
  r.client.task = header("X-Hearth-Task");
  r.client.paths = header("X-Hearth-Paths");
  r.client.approval = header("X-Hearth-Approval");
  r.client.surface = "explain";
  return r;
}

int PolicyCheck(const std::string& path) {
  try {
    router::Policy p = router::LoadPolicy(path);
    router::Scanner scanner(router::ScannerConfigOf(p));  // custom patterns must compile too
    std::printf("%s: ok — %zu rule%s, %zu backend%s, egress %s\n", path.c_str(), p.rules.size(), p.rules.size() == 1 ? "" : "s",
                p.backends.size(), p.backends.size() == 1 ? "" : "s",
                p.egress_allow.empty() ? "none (no outbound connections)" : ("to " + std::to_string(p.egress_allow.size()) + " host(s)").c_str());
    for (const router::BackendConfig& b : p.backends) {
      bool key = (!b.api_key_env.empty() && std::getenv(b.api_key_env.c_str()) != nullptr) || !b.api_key_file.empty();
      if (!key) std::printf("%s: note: backend '%s' has no key yet (%s is not set)\n", path.c_str(), b.name.c_str(), b.api_key_env.c_str());
    }
    return 0;
  } catch (const router::PolicyError& e) {
    for (const std::string& problem : e.problems()) std::fprintf(stderr, "%s\n", problem.c_str());
    std::fprintf(stderr, "%zu problem%s\n", e.problems().size(), e.problems().size() == 1 ? "" : "s");
    return 1;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), e.what());
    return 1;
  }
}

int Explain(const std::string& request_path, const std::string& policy_path) {
  std::ifstream in(request_path);
  if (!in) throw std::runtime_error("cannot read " + request_path);
  json file = json::parse(in, nullptr, false);
  if (file.is_discarded() || !file.is_object()) throw std::runtime_error(request_path + " is not a JSON object");
  router::Policy policy = policy_path.empty() ? router::Policy{} : router::LoadPolicy(policy_path);
  router::Scanner scanner(router::ScannerConfigOf(policy));
  router::InferenceRequest request = RequestFromJson(file);
  router::RouteExplanation e = router::ExplainRoute(policy, scanner, request);
  std::printf("task: %s; predicted output: %d tokens (crossover %d)\n", router::TaskClassName(e.task),
              e.predicted_output_tokens, policy.crossover_tokens);
  std::string paths, findings;
  for (const auto& p : e.paths) paths += (paths.empty() ? "" : ", ") + p;
  for (const auto& f : e.findings) findings += (findings.empty() ? "" : ", ") + f.rule + " (" + f.kind + ")";
  std::printf("paths: %s\nfindings: %s\n", paths.empty() ? "none" : paths.c_str(), findings.empty() ? "none" : findings.c_str());
  for (const std::string& t : e.decision.trace) std::printf("  %s\n", t.c_str());
  const router::Decision& d = e.decision;
  std::printf("=> %s", router::ActionName(d.action));
  if (d.action == router::Action::kCloud || d.action == router::Action::kRedactThenCloud) {
    std::printf(" via '%s' (approval: %s)", d.backend.c_str(), router::ApprovalModeName(d.approval));
  }
  if (d.rule == "default") {
    std::printf(" by the default: %s\n", d.reason.c_str());
  } else {
    std::printf(" by rule '%s' (line %d): %s\n", d.rule.c_str(), d.rule_line, d.reason.c_str());
  }
  return 0;
}

int Approvals(const std::string& url) {
  json list = CallServer("GET", url + "/hearth/approvals")["approvals"];
  if (list.empty()) {
    std::printf("no escalations are waiting for approval\n");
    return 0;
  }
  for (const json& a : list) {
    std::printf("%s  rule %s → %s  project '%s'  until %s\n    %s\n", a.value("id", "").c_str(), a.value("rule", "").c_str(),
                a.value("backend", "").c_str(), a.value("project", "").c_str(), a.value("deadline", "").c_str(),
                a.value("summary", "").c_str());
  }
  return 0;
}

int DecideApproval(const std::string& url, const std::string& id, bool approve, const std::string& by) {
  json r = CallServer("POST", url + "/hearth/approvals/" + id + (approve ? "/approve" : "/deny"), json{{"by", by}}.dump());
  std::printf("%s: %s by %s\n", id.c_str(), r.value("decision", "").c_str(), r.value("by", "").c_str());
  return 0;
}

// Sockets of a process from /proc: inode -> owned, then /proc/net/tcp{,6} rows.
struct SocketRow {
  std::string local, remote;
  int state = 0;  // 0A = LISTEN, 01 = ESTABLISHED, 02 = SYN_SENT
};

std::string DecodeAddress(const std::string& hex, bool v6) {
  size_t colon = hex.find(':');
  std::string addr = hex.substr(0, colon);
  int port = std::stoi(hex.substr(colon + 1), nullptr, 16);
  char buf[64];
  if (!v6) {
    unsigned a = static_cast<unsigned>(std::stoul(addr, nullptr, 16));
    std::snprintf(buf, sizeof(buf), "%u.%u.%u.%u:%d", a & 255, (a >> 8) & 255, (a >> 16) & 255, a >> 24, port);
    return buf;
  }
  bool loop = addr == "00000000000000000000000001000000";
  bool any = addr == std::string(32, '0');
  bool mapped_loop = addr.substr(0, 24) == "0000000000000000FFFF0000" && addr.substr(30, 2) == "7F";
  std::snprintf(buf, sizeof(buf), "[%s]:%d", loop || mapped_loop ? "::1" : any ? "::" : addr.c_str(), port);
  return buf;
}

std::vector<SocketRow> SocketsOf(int pid) {
  std::set<std::string> inodes;
  std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = opendir(fd_dir.c_str())) {
    while (dirent* e = readdir(d)) {
      char target[256];
      ssize_t n = readlink((fd_dir + "/" + e->d_name).c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      std::string t = target;
      if (t.rfind("socket:[", 0) == 0) inodes.insert(t.substr(8, t.size() - 9));
    }
    closedir(d);
  }
  std::vector<SocketRow> rows;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::istringstream ss(line);
      std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
      ss >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
      if (!inodes.count(inode)) continue;
      bool v6 = std::string(table).back() == '6';
      rows.push_back({DecodeAddress(local, v6), DecodeAddress(remote, v6), std::stoi(st, nullptr, 16)});
    }
  }
  return rows;
}

bool IsLoopbackEndpoint(const std::string& ep) { return ep.rfind("127.", 0) == 0 || ep.rfind("[::1]", 0) == 0; }

int Doctor(const std::string& url) {
  int problems = 0;
  auto line = [&](bool ok, const std::string& what) {
    std::printf("  [%s] %s\n", ok ? " ok " : "FAIL", what.c_str());
    if (!ok) ++problems;
  };
  std::printf("hearth doctor — %s\n", url.c_str());
  json status;
  try {
    status = CallServer("GET", url + "/hearth/status");
  } catch (const std::exception& e) {
    std::printf("  [FAIL] %s\n", e.what());
    return 1;
  }
  int pid = status.value("pid", 0);
  std::printf("server: hearth %s, pid %d\n", status.value("version", "?").c_str(), pid);
  std::printf("listening sockets:\n");
  bool any_listen = false;
  for (const SocketRow& s : SocketsOf(pid)) {
    if (s.state != 0x0A) continue;
    any_listen = true;
    line(IsLoopbackEndpoint(s.local), s.local + (IsLoopbackEndpoint(s.local) ? " (loopback only)" : " (reachable from the network: keep an API key set)"));
  }
  if (!any_listen) std::printf("  (cannot read the process's sockets; run as the same user)\n");
  std::printf("outbound connections:\n");
  std::vector<std::string> allow = status.value("egress_allow", std::vector<std::string>{});
  std::string allow_text;
  for (const auto& h : allow) allow_text += (allow_text.empty() ? "" : ", ") + h;
  line(true, "egress allowlist: " + (allow.empty() ? std::string("empty — hearth makes no outbound connection") : allow_text));
  int open = 0;
  for (const SocketRow& s : SocketsOf(pid)) {
    if (s.state == 0x0A || IsLoopbackEndpoint(s.remote)) continue;
    ++open;
    line(!allow.empty(), "open connection to " + s.remote);
  }
  if (open == 0) line(true, "no open connection to another host");
  int refused = 0, sent = 0;
  for (const json& a : status.value("egress_attempts", json::array())) {
    if (!a.value("allowed", false)) {
      ++refused;
      line(false, "attempted connection to non-allowed host " + a.value("host", "") + " at " + a.value("time", "") + " (refused)");
    } else {
      ++sent;
    }
  }
  if (refused == 0) line(true, "no attempt to reach a host outside the allowlist");
  line(true, std::to_string(sent) + " request(s) sent to allowed hosts since start (each in the audit log)");
  line(status.value("telemetry", "") == "none", "telemetry: " + status.value("telemetry", "unknown"));
  std::printf("models:\n");
  for (const json& m : status.value("model_files", json::array())) {
    std::string name = m.value("name", ""), path = m.value("path", "");
    try {
      engine::GgufSummary s = engine::CheckGgufFile(path);
      line(true, name + ": GGUF structure valid (" + std::to_string(s.tensor_count) + " tensors) " + path);
    } catch (const std::exception& e) {
      line(false, name + ": " + e.what());
    }
  }
  std::printf("%s\n", problems == 0 ? "all checks passed" : (std::to_string(problems) + " problem(s)").c_str());
  return problems == 0 ? 0 : 1;
}

std::string Mib(const json& bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f MiB", bytes.is_number() ? bytes.get<double>() / (1024.0 * 1024.0) : 0.0);
  return buf;
}

// The running server's loaded models and what each really takes (GET /api/ps).
int Ps(const std::string& url) {
  json models = CallServer("GET", url + "/api/ps").value("models", json::array());
  if (models.empty()) {
    std::printf("no models are loaded\n");
    return 0;
  }
  std::printf("%-28s %10s %10s %10s %10s %10s %6s %7s  %s\n", "NAME", "SIZE", "WEIGHTS", "KV CACHE", "COMPUTE", "GPU",
              "CTX", "ACTIVE", "UNTIL");
  for (const json& m : models) {
    const json h = m.value("hearth", json::object());
    std::printf("%-28s %10s %10s %10s %10s %10s %6d %7d  %s\n", m.value("name", "").c_str(), Mib(m["size"]).c_str(),
                Mib(h.value("weights", json(0))).c_str(), Mib(h.value("kv_cache", json(0))).c_str(),
                Mib(h.value("compute", json(0))).c_str(), Mib(m.value("size_vram", json(0))).c_str(),
                m.value("context_length", 0), h.value("active_requests", 0), m.value("expires_at", "").c_str());
  }
  return 0;
}

}  // namespace

void AddGatewayCommands(CLI::App& app) {
  auto url = std::make_shared<std::string>(DefaultUrl());

  CLI::App* policy = app.add_subcommand("policy", "Routing policy tools");
  policy->require_subcommand(1);
  auto policy_file = std::make_shared<std::string>();
  CLI::App* check = policy->add_subcommand("check", "Validate a policy file; print every problem with its line");
  check->add_option("file", *policy_file, "policy file (hearth.yaml)")->required();
  check->callback([policy_file] {
    if (int rc = PolicyCheck(*policy_file); rc != 0) throw CLI::RuntimeError(rc);
  });

  auto request_file = std::make_shared<std::string>();
  auto route_policy = std::make_shared<std::string>();
  CLI::App* route = app.add_subcommand("route", "Show where a request would be served and why");
  route->add_option("--explain", *request_file, "a request body (JSON), or {endpoint, headers, body}")->required()->check(CLI::ExistingFile);
  route->add_option("--policy", *route_policy, "policy file (default: none, everything local)")->check(CLI::ExistingFile);
  route->callback([request_file, route_policy] {
    if (int rc = Explain(*request_file, *route_policy); rc != 0) throw CLI::RuntimeError(rc);
  });

  CLI::App* approvals = app.add_subcommand("approvals", "List cloud escalations waiting for approval");
  approvals->add_option("--url", *url, "hearth server");
  approvals->callback([url] { Approvals(*url); });
  auto id = std::make_shared<std::string>();
  auto by = std::make_shared<std::string>(std::getenv("USER") != nullptr ? std::getenv("USER") : "cli");
  for (bool approve : {true, false}) {
    CLI::App* cmd = app.add_subcommand(approve ? "approve" : "deny", approve ? "Approve a waiting escalation" : "Deny a waiting escalation (it is served locally)");
    cmd->add_option("id", *id, "approval id (hearth approvals)")->required();
    cmd->add_option("--url", *url, "hearth server");
    cmd->add_option("--by", *by, "who decides (recorded in the audit log)");
    cmd->callback([url, id, by, approve] { DecideApproval(*url, *id, approve, *by); });
  }

  CLI::App* ps = app.add_subcommand("ps", "List the models a running hearth has loaded, with their memory");
  ps->add_option("--url", *url, "hearth server");
  ps->callback([url] { Ps(*url); });

  CLI::App* doctor = app.add_subcommand("doctor", "Check a running hearth: sockets, egress, telemetry, model files");
  doctor->add_option("--url", *url, "hearth server");
  doctor->callback([url] {
    if (int rc = Doctor(*url); rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace hearth::cli
