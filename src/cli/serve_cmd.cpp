#include "cli/serve_cmd.h"

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <cstdio>
#include <cstdlib>
#include <pthread.h>

#include "api/api_server.h"
#include "audit/audit_log.h"
#include "engine/model_pool.h"
#include "router/router.h"
#include "store/store.h"

namespace hearth::cli {

namespace {

struct ServeOptions {
  std::vector<std::string> models;
  std::string models_dir;
  std::string host;
  int port = -1;  // -1: HEARTH_HOST's port, else 11434
  std::string api_key;
  std::vector<std::string> allow_origins;
  std::vector<std::string> allow_hosts;
  int32_t ctx = 4096;
  int32_t parallel = 4;
  int32_t threads = 0;
  int32_t queue = 64;
  int64_t keep_alive = 300;
  int32_t cache_reuse = 32;
  std::string kv_type = "f16";
  uint64_t memory_limit = 0;
  std::string policy;
  std::string audit_db;
  bool verbose = false;
};

// HEARTH_HOST may be "host", "host:port", ":port" or "[v6addr]:port" (like OLLAMA_HOST).
void ApplyHostEnv(ServeOptions& o) {
  const char* env = std::getenv("HEARTH_HOST");
  if (env == nullptr || *env == '\0') return;
  std::string v = env, host = v, port;
  if (v.front() == '[') {
    size_t close = v.find(']');
    host = v.substr(1, close == std::string::npos ? std::string::npos : close - 1);
    if (close != std::string::npos && close + 1 < v.size() && v[close + 1] == ':') port = v.substr(close + 2);
  } else if (std::count(v.begin(), v.end(), ':') == 1) {
    host = v.substr(0, v.find(':'));
    port = v.substr(v.find(':') + 1);
  }
  if (o.host.empty()) o.host = host;
  if (o.port < 0 && !port.empty()) o.port = std::atoi(port.c_str());
}

int Serve(ServeOptions o) {
  ApplyHostEnv(o);
  if (o.host.empty()) o.host = "127.0.0.1";
  if (o.host.size() > 2 && o.host.front() == '[' && o.host.back() == ']') o.host = o.host.substr(1, o.host.size() - 2);
  if (o.port < 0) o.port = 11434;
  if (o.api_key.empty()) {
    if (const char* key = std::getenv("HEARTH_API_KEY")) o.api_key = key;
  }
  engine::SetLlamaLogLevel(o.verbose ? 1 : 0);

  engine::ModelPoolOptions po;
  po.scheduler.n_ctx = o.ctx;
  po.scheduler.n_slots = o.parallel;
  po.scheduler.n_threads = o.threads;
  po.scheduler.queue_capacity = o.queue;
  po.scheduler.cache_reuse_min_tokens = o.cache_reuse;
  po.scheduler.kv_type = engine::ParseKvCacheType(o.kv_type);
  po.default_keep_alive = std::chrono::seconds(o.keep_alive);
  po.memory_limit = o.memory_limit;
  engine::ModelPool pool(po);
  // Models in the store (hearth pull / import / create) are served by name; --model and
  // --models-dir come after, so they win on a name clash. A store blob is re-hashed on load.
  store::Store store(store::Store::DefaultRoot());
  for (const store::Manifest& m : store.List()) {
    try {
      pool.Register(store.BlobPath(m.model.digest), m.name, store.ServingDefaults(m));
    } catch (const engine::EngineError& e) {
      std::fprintf(stderr, "hearth: skipping stored model %s: %s\n", m.name.c_str(), e.what());
    }
  }
  pool.SetLoadCheck([&store](const engine::RegisteredModel& m) {
    store.CheckBlobPath(m.path);
    for (const std::string& adapter : m.defaults.adapters) store.CheckBlobPath(adapter);
  });
  std::string default_model;
  for (const std::string& spec : o.models) {
    // NAME=FILE names the model; FILE alone is named after the file.
    size_t eq = spec.find('=');
    std::string name = eq == std::string::npos ? "" : spec.substr(0, eq);
    std::string path = eq == std::string::npos ? spec : spec.substr(eq + 1);
    pool.Register(path, name);
  }
  if (!o.models_dir.empty()) pool.RegisterDirectory(o.models_dir);

  std::vector<engine::RegisteredModel> models = pool.List();
  if (models.empty()) {
    std::fprintf(stderr, "hearth: no models: pass --model FILE or --models-dir DIR\n");
    return 2;
  }
  if (!o.models.empty()) {
    std::string first = o.models.front();
    size_t eq = first.find('=');
    default_model = eq != std::string::npos ? first.substr(0, eq) : std::filesystem::path(first).stem().string();
  } else {
    default_model = models.front().name;
  }
  router::RouterOptions ro;
  if (o.policy.empty()) {
    if (const char* p = std::getenv("HEARTH_POLICY")) o.policy = p;
  }
  if (!o.policy.empty()) ro.policy = router::LoadPolicy(o.policy);  // PolicyError lists every problem
  ro.audit_path = o.audit_db.empty() ? audit::DefaultAuditPath() : o.audit_db;
  router::Router router(pool, ro);

  api::ApiServerOptions ao;
  ao.http.host = o.host;
  ao.http.port = static_cast<uint16_t>(o.port);
  ao.http.api_key = o.api_key;
  ao.http.allowed_origins = o.allow_origins;
  ao.http.allowed_hosts = o.allow_hosts;
  ao.default_model = default_model;
  ao.store = &store;
  ao.pool = &pool;

  // Block termination signals in every thread; the main thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  api::ApiServer server(ao, router);  // refuses a non-loopback host without an API key
  server.Start();
  std::fprintf(stderr, "hearth: listening on http://%s%s%s:%u (%zu model%s, default %s)\n",
               o.host.find(':') != std::string::npos ? "[" : "", o.host.c_str(),
               o.host.find(':') != std::string::npos ? "]" : "", server.port(), models.size(),
               models.size() == 1 ? "" : "s", default_model.c_str());
  for (const auto& m : models) std::fprintf(stderr, "hearth:   %s  %s\n", m.name.c_str(), m.path.c_str());
  std::fprintf(stderr, "hearth: policy %s; egress %s; audit log %s\n", o.policy.empty() ? "(none: everything local)" : o.policy.c_str(),
               ro.policy.egress_allow.empty() ? "none (no outbound connections)" : "allowlist only", ro.audit_path.c_str());
  std::fflush(stderr);
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "hearth: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.Stop();
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve models over the Ollama, OpenAI and llama.cpp HTTP APIs");
  cmd->add_option("-m,--model", o->models, "GGUF model file, or NAME=FILE (repeatable)");
  cmd->add_option("--models-dir", o->models_dir, "serve every *.gguf in this directory")->check(CLI::ExistingDirectory);
  cmd->add_option("--host", o->host, "address to bind (default 127.0.0.1; env HEARTH_HOST)");
  cmd->add_option("--port", o->port, "port (default 11434, Ollama's; 0 picks a free one)")->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o->api_key, "require this bearer key (env HEARTH_API_KEY); needed off loopback");
  cmd->add_option("--allow-origin", o->allow_origins, "a browser origin allowed to call the API (repeatable)");
  cmd->add_option("--allow-host", o->allow_hosts, "an extra Host header name to accept (repeatable)");
  cmd->add_option("-c,--ctx", o->ctx, "default context window per request, in tokens")->check(CLI::Range(16, 1 << 20));
  cmd->add_option("--parallel", o->parallel, "concurrent sequences per model")->check(CLI::Range(1, 64));
  cmd->add_option("--threads", o->threads, "threads (default: physical cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--queue", o->queue, "requests that may wait per model before 503")->check(CLI::Range(0, 100000));
  cmd->add_option("--keep-alive", o->keep_alive, "seconds an idle model stays loaded (-1 forever)")->check(CLI::Range(int64_t{-1}, int64_t{1} << 40));
  cmd->add_option("--cache-reuse", o->cache_reuse,
                  "infill: reuse an unchanged prompt tail of at least this many tokens by shifting it (0: exact, re-evaluate)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--kv-type", o->kv_type, "KV cache type: f16, q8_0 (half the memory) or q4_0")
      ->check(CLI::IsMember({"f16", "q8_0", "q4_0"}));
  cmd->add_option("--memory-limit", o->memory_limit,
                  "memory all loaded models may use together, e.g. 6GiB (default: what the machine has free); "
                  "idle models are unloaded to stay under it")
      ->transform(CLI::AsSizeValue(false));
  cmd->add_option("--policy", o->policy, "routing policy file (hearth.yaml; env HEARTH_POLICY); none: everything local")
      ->check(CLI::ExistingFile);
  cmd->add_option("--audit-db", o->audit_db, "audit log (env HEARTH_AUDIT_DB; default ~/.local/share/hearth/audit.db)");
  cmd->add_flag("-v,--verbose", o->verbose, "show llama.cpp warnings");
  cmd->callback([o] {
    int rc = Serve(*o);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace hearth::cli
