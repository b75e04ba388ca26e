// hearth's HTTP API: the Ollama, OpenAI and llama.cpp surfaces on one port, over the
// router. Owns the HTTP server and the route table; handlers are thin (see api_common.h).
#pragma once

#include <memory>

#include "api/http_server.h"
#include "router/router.h"

namespace hearth::store {
class Store;
}
namespace hearth::engine {
class ModelPool;
}

namespace hearth::api {

struct ApiServerOptions {
  HttpServerOptions http;
  std::string default_model;  // for the llama.cpp surface, which names no model
  store::Store* store = nullptr;       // enables /api/pull, /api/create, /api/delete, /api/copy
  engine::ModelPool* pool = nullptr;   // models the store adds become servable at once
};

class ApiServer {
 public:
  ApiServer(ApiServerOptions options, router::Router& router);  // throws like HttpServer
  ~ApiServer();
  void Start();
  void Stop();
  uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hearth::api
