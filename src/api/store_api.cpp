// POST /api/pull, POST /api/create, DELETE /api/delete, POST /api/copy over the model store.
#include "api/store_api.h"

#include <atomic>
#include <memory>
#include <optional>

#include "engine/error.h"
#include "engine/model_pool.h"
#include "store/modelfile.h"
#include "store/pull.h"
#include "store/store.h"

namespace hearth::api {

namespace {

using engine::EngineError;
using engine::ErrorKind;

std::string ModelField(const json& body) {
  std::string name = OptString(body, "model").value_or("");
  if (name.empty()) name = OptString(body, "name").value_or("");
  if (name.empty()) throw ApiError(400, "'model' is required", "model");
  return name;
}

json ProgressJson(const store::Progress& p) {
  json j = {{"status", p.status}};
  if (!p.digest.empty()) j["digest"] = p.digest;
  if (p.total > 0) {
    j["total"] = p.total;
    j["completed"] = p.completed;
  }
  return j;
}

std::string Line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n"; }

void RegisterWithPool(engine::ModelPool* pool, store::Store& store, const store::Manifest& m) {
  if (pool == nullptr) return;
  pool->Register(store.BlobPath(m.model.digest), m.name, store.ServingDefaults(m));
}

// Runs a long store operation, streaming its progress as NDJSON when asked. An error before
// the first line is an ordinary error response (RunHandler); after it, Ollama's {"error"} line.
void RunStreamed(Responder& out, bool stream, const std::function<void(const store::ProgressFn&)>& body) {
  LazyStream s(out, "application/x-ndjson");
  store::ProgressFn progress;
  if (stream) {
    progress = [&](const store::Progress& p) { return s.Write(Line(ProgressJson(p))) && !out.cancelled(); };
  } else {
    progress = [&](const store::Progress&) { return !out.cancelled(); };
  }
  try {
    body(progress);
  } catch (const std::exception& e) {
    if (!s.begun()) throw;
    s.Write(Line({{"error", e.what()}}));
    s.End();
    return;
  }
  if (stream) {
    s.Write(Line({{"status", "success"}}));
    s.End();
  } else {
    out.Respond(JsonResponse({{"status", "success"}}));
  }
}

void Pull(store::Store& store, engine::ModelPool* pool, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  store::PullOptions o;
  o.source = ModelField(body);
  o.insecure = OptBool(body, "insecure").value_or(false);
  o.sha256 = OptString(body, "sha256").value_or("");   // hearth extension
  o.name = OptString(body, "save_as").value_or("");    // hearth extension: the store name
  o.cancel = out.cancel_flag();
  const bool stream = OptBool(body, "stream").value_or(true);
  RunStreamed(out, stream, [&](const store::ProgressFn& progress) {
    store::Manifest m = store::Pull(store, o, progress);
    RegisterWithPool(pool, store, m);
  });
}

// Blobs named by digest in Ollama's "files"/"adapters" objects ({"model.gguf": "sha256:…"})
// must already be in the store; hearth has no blob upload endpoint.
std::vector<std::string> BlobPaths(store::Store& store, const json& body, const char* key) {
  std::vector<std::string> paths;
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return paths;
  if (!it->is_object()) throw ApiError(400, std::string("'") + key + "' must be an object of file name -> digest", key);
  for (const auto& [file, digest] : it->items()) {
    if (!digest.is_string() || store::NormalizeDigest(digest.get<std::string>()).empty()) {
      throw ApiError(400, std::string("'") + key + "' values must be sha256 digests", key);
    }
    const std::string d = store::NormalizeDigest(digest.get<std::string>());
    if (!store.HasBlob(d)) {
      throw ApiError(400, "blob " + d + " ('" + file + "') is not in the store; hearth does not accept blob uploads: put the "
                          "file in the store with `hearth import` or `hearth pull` first", key);
    }
    paths.push_back(store.BlobPath(d));
  }
  return paths;
}

void Create(store::Store& store, engine::ModelPool* pool, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  const std::string name = ModelField(body);
  if (std::string why = store::Store::NameProblem(name); !why.empty()) {
    throw ApiError(400, "invalid model name: " + why, "model");
  }
  if (auto q = OptString(body, "quantize"); q && !q->empty()) {
    throw ApiError(400, "'quantize' is not supported by /api/create; use `hearth dev` tools to quantize a file, then import it",
                   "quantize");
  }
  const bool stream = OptBool(body, "stream").value_or(true);
  store::Modelfile mf;
  if (auto text = OptString(body, "modelfile"); text && !text->empty()) {
    mf = store::ParseModelfile(*text, "modelfile");  // older clients
  } else {
    std::vector<std::string> files = BlobPaths(store, body, "files");
    if (files.size() > 1) throw ApiError(400, "'files' may name one model file (a GGUF blob)", "files");
    mf.from = OptString(body, "from").value_or(files.empty() ? "" : files.front());
    if (mf.from.empty()) throw ApiError(400, "'from' is required (a model in the store), or 'files' or 'modelfile'", "from");
    mf.adapters = BlobPaths(store, body, "adapters");
  }
  if (auto it = body.find("parameters"); it != body.end() && !it->is_null()) {
    try {
      mf.parameters.Merge(store::ModelParameters::FromJson(*it));
    } catch (const std::invalid_argument& e) {
      throw ApiError(400, std::string("'parameters': ") + e.what(), "parameters");
    }
  }
  if (auto v = OptString(body, "system")) mf.system = *v;
  if (auto v = OptString(body, "template")) mf.template_text = *v;
  if (auto v = OptString(body, "license")) mf.licenses = {*v};
  // FROM a model the server serves from a file (--model) but that is not in the store:
  // the operator put that file there, so it may be copied in.
  if (pool != nullptr && store::Store::NameProblem(mf.from).empty() && !store.Find(mf.from)) {
    std::optional<std::string> served_file;
    try {
      served_file = pool->Find(mf.from).path;
    } catch (const EngineError& e) {
      if (e.kind() != ErrorKind::kNotFound) throw;
    }
    if (served_file) {
      RunStreamed(out, stream, [&](const store::ProgressFn& progress) {
        store::BlobRef blob = store.AddBlob(*served_file, "", progress);
        mf.from = store.BlobPath(blob.digest);
        store::Manifest m = store.Create(name, mf, "", false, progress);
        RegisterWithPool(pool, store, m);
      });
      return;
    }
  }
  RunStreamed(out, stream, [&](const store::ProgressFn& progress) {
    store::Manifest m = store.Create(name, mf, "", false, progress);
    RegisterWithPool(pool, store, m);
  });
}

void Delete(store::Store& store, engine::ModelPool* pool, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  const std::string name = ModelField(body);
  store.Remove(name);
  if (pool != nullptr) pool->Unregister(store::Store::CanonicalName(name));  // unloads once idle
  out.Respond(JsonResponse({{"status", "success"}}));
}

void Copy(store::Store& store, engine::ModelPool* pool, const HttpRequest& http, Responder& out) {
  json body = ParseJsonObject(http);
  const std::string source = RequireString(body, "source");
  const std::string destination = RequireString(body, "destination");
  store::Manifest m = store.Copy(source, destination);
  RegisterWithPool(pool, store, m);
  out.Respond(JsonResponse({{"status", "success"}}));
}

}  // namespace

void AddStoreRoutes(RouteTable& routes, store::Store& store, engine::ModelPool* pool) {
  using Fn = void (*)(store::Store&, engine::ModelPool*, const HttpRequest&, Responder&);
  auto wrap = [&store, pool](Fn fn) {
    return [&store, pool, fn](const HttpRequest& req, Responder& out) {
      RunHandler(ErrorStyle::kOllama, out, [&] { fn(store, pool, req, out); });
    };
  };
  routes[{"POST", "/api/pull"}] = wrap(Pull);
  routes[{"POST", "/api/create"}] = wrap(Create);
  routes[{"DELETE", "/api/delete"}] = wrap(Delete);
  routes[{"POST", "/api/copy"}] = wrap(Copy);
}

}  // namespace hearth::api
