#include "api/api_server.h"

#include "api/api_common.h"
#include "api/store_api.h"

namespace hearth::api {

struct ApiServer::Impl {
  router::Router& router;
  RouteTable routes;
  std::unique_ptr<HttpServer> http;

  explicit Impl(router::Router& r) : router(r) {}

  void Dispatch(const HttpRequest& request, Responder& out) {
    auto it = routes.find({request.method, request.path});
    for (const char* prefix : {"/v1/models/", "/hearth/approvals/"}) {
      if (it == routes.end() && request.path.rfind(prefix, 0) == 0) it = routes.find({request.method, prefix});
    }
    if (it == routes.end()) {
      bool other_method = false;
      for (const auto& [key, handler] : routes) other_method |= key.second == request.path;
      int status = other_method ? 405 : 404;
      std::string message = other_method ? request.method + " is not allowed on " + request.path
                                         : "no endpoint at " + request.path;
      ErrorStyle style = request.path.rfind("/v1/", 0) == 0 ? ErrorStyle::kOpenAI : ErrorStyle::kOllama;
      out.Respond(ErrorResponse(style, status, message));
      router.metrics().CountRequest("unknown", status);
      return;
    }
    // Count by endpoint with the status the handler produced.
    struct CountingResponder : Responder {
      Responder& inner;
      int status = 200;
      explicit CountingResponder(Responder& r) : inner(r) {}
      void Respond(HttpResponse response) override {
        status = response.status;
        inner.Respond(std::move(response));
      }
      void Begin(int s, Headers headers) override {
        status = s;
        inner.Begin(s, std::move(headers));
      }
      bool Write(std::string_view chunk) override { return inner.Write(chunk); }
      void End() override { inner.End(); }
      bool cancelled() const override { return inner.cancelled(); }
      std::shared_ptr<std::atomic<bool>> cancel_flag() override { return inner.cancel_flag(); }
    } counting(out);
    it->second(request, counting);
    router.metrics().CountRequest(request.path, counting.status);
  }
};

ApiServer::ApiServer(ApiServerOptions options, router::Router& router) : impl_(std::make_unique<Impl>(router)) {
  ApiOptions api;
  api.default_model = options.default_model;
  AddOllamaRoutes(impl_->routes, router, api);
  AddOpenAIRoutes(impl_->routes, router, api);
  AddLlamaCppRoutes(impl_->routes, router, api);
  AddHearthRoutes(impl_->routes, router, api);
  if (options.store != nullptr) AddStoreRoutes(impl_->routes, *options.store, options.pool);
  impl_->routes[{"GET", "/metrics"}] = [&router](const HttpRequest&, Responder& out) {
    engine::SchedulerStats st = router.TotalStats();
    std::map<std::string, double> gauges = {{"hearth_requests_running", st.running},
                                            {"hearth_requests_queued", st.queued},
                                            {"hearth_models_loaded", static_cast<double>(router.LoadedModels().size())}};
    out.Respond(HttpResponse{200, {{"Content-Type", "text/plain; version=0.0.4"}}, router.metrics().Render(gauges)});
  };
  Impl* impl = impl_.get();
  impl_->http = std::make_unique<HttpServer>(std::move(options.http),
                                             [impl](const HttpRequest& req, Responder& out) { impl->Dispatch(req, out); });
}

ApiServer::~ApiServer() { Stop(); }
void ApiServer::Start() { impl_->http->Start(); }
void ApiServer::Stop() {
  if (impl_->http) impl_->http->Stop();
}
uint16_t ApiServer::port() const { return impl_->http->port(); }

}  // namespace hearth::api
