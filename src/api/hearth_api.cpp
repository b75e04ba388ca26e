// hearth's own endpoints: approvals of cloud escalations, and the status `hearth doctor`
// reads (listening address, egress allowlist and every outbound attempt, backends).
#include "api/api_common.h"
#include <unistd.h>

#include "router/backend.h"

namespace hearth::api {

namespace {

json ApprovalJson(const router::PendingApproval& p) {
  return {{"id", p.id}, {"rule", p.rule}, {"backend", p.backend}, {"project", p.project}, {"user", p.user},
          {"model", p.model}, {"summary", p.summary}, {"created_at", Rfc3339(p.created)},
          {"deadline", Rfc3339(p.deadline)}};
}

void Decide(router::Router& router, const HttpRequest& http, Responder& out) {
  // /hearth/approvals/{id}/approve | /deny
  const std::string prefix = "/hearth/approvals/";
  std::string rest = http.path.substr(prefix.size());
  size_t slash = rest.find('/');
  if (slash == std::string::npos) throw ApiError(404, "use POST /hearth/approvals/{id}/approve or /deny");
  std::string id = rest.substr(0, slash), verb = rest.substr(slash + 1);
  if (verb != "approve" && verb != "deny") throw ApiError(404, "use POST /hearth/approvals/{id}/approve or /deny");
  std::string who = "api";
  if (!http.body.empty()) {
    json body = ParseJsonObject(http);
    who = OptString(body, "by").value_or(who);
  }
  if (!router.approvals().Decide(id, verb == "approve", who)) {
    throw ApiError(404, "no approval '" + id + "' is waiting (it may have timed out or been decided)");
  }
  out.Respond(JsonResponse({{"id", id}, {"decision", verb == "approve" ? "approved" : "denied"}, {"by", who}}));
}

}  // namespace

void AddHearthRoutes(RouteTable& routes, router::Router& router, const ApiOptions& options) {
  routes[{"GET", "/hearth/approvals"}] = [&router](const HttpRequest&, Responder& out) {
    json list = json::array();
    for (const auto& p : router.approvals().List()) list.push_back(ApprovalJson(p));
    out.Respond(JsonResponse({{"approvals", list}}));
  };
  routes[{"POST", "/hearth/approvals/"}] = [&router](const HttpRequest& req, Responder& out) {
    RunHandler(ErrorStyle::kOllama, out, [&] { Decide(router, req, out); });
  };
  routes[{"GET", "/hearth/status"}] = [&router, options](const HttpRequest&, Responder& out) {
    json attempts = json::array();
    for (const router::EgressAttempt& a : router.egress().attempts()) {
      attempts.push_back({{"time", Rfc3339(a.time)}, {"host", a.host}, {"allowed", a.allowed}, {"status", a.status},
                          {"bytes_sent", a.bytes_sent}, {"error", a.error}});
    }
    json backends = json::array();
    for (const router::BackendConfig& b : router.policy().backends) {
      backends.push_back({{"name", b.name}, {"type", b.type}, {"url", b.url}, {"model", b.model}});
    }
    out.Respond(JsonResponse({{"version", options.version},
                              {"pid", static_cast<int64_t>(::getpid())},
                              {"telemetry", "none"},
                              {"egress_allow", router.policy().egress_allow},
                              {"egress_attempts", attempts},
                              {"backends", backends},
                              {"rules", router.policy().rules.size()},
                              {"model_files", [&] {
                                 json files = json::array();
                                 for (const auto& m : router.ListModels()) files.push_back({{"name", m.name}, {"path", m.path}});
                                 return files;
                               }()},
                              {"models", router.ListModels().size()}}));
  };
}

}  // namespace hearth::api
