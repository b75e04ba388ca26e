// The models a server can serve, by name, and the ones currently loaded.
//
// Models are registered by file (--model, --models-dir) and loaded on first use: one Model,
// one Scheduler (continuous batching) and, on demand, one Embedder each. A loaded model
// stays resident while requests use it and for keep_alive after the last one (negative:
// forever, zero: unload as soon as it is idle). A request that needs a larger context than
// the loaded one reloads the model with that context once it is idle.
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/scheduler.h"

namespace hearth::engine {

struct RegisteredModel {
  std::string name;  // "qwen2.5-coder:latest" style; lookups accept the bare name too
  std::string path;
  uint64_t file_bytes = 0;
  std::chrono::system_clock::time_point modified;
};

struct LoadedModelInfo {
  std::string name;
  std::string path;
  uint64_t size_bytes = 0;   // weights + KV cache + compute buffers (llama.cpp's figure)
  int32_t n_ctx = 0;
  int32_t n_slots = 0;
  int32_t active_requests = 0;
  std::optional<std::chrono::system_clock::time_point> expires_at;  // empty: never
};

struct ModelPoolOptions {
  SchedulerOptions scheduler;        // n_ctx here is the default per-sequence context
  std::chrono::seconds default_keep_alive{300};
  int32_t max_ctx = 131072;          // upper bound on a request's num_ctx
  int32_t embed_ctx = 2048;
};

class ModelPool;

// A model in use by one request. Keeps the model loaded until destroyed.
class ModelLease {
 public:
  ~ModelLease();
  ModelLease(const ModelLease&) = delete;
  ModelLease& operator=(const ModelLease&) = delete;
  const Model& model() const;
  std::shared_ptr<Model> shared_model() const;
  Scheduler& scheduler();
  Embedder& embedder();   // created on first use
  double load_ms() const { return load_ms_; }  // 0 when the model was already loaded
  const std::string& name() const;

 private:
  friend class ModelPool;
  struct Loaded;
  ModelLease(ModelPool* pool, std::shared_ptr<Loaded> loaded, double load_ms, std::optional<std::chrono::seconds> keep_alive);
  ModelPool* pool_;
  std::shared_ptr<Loaded> loaded_;
  double load_ms_;
  std::optional<std::chrono::seconds> keep_alive_;
};

class ModelPool {
 public:
  explicit ModelPool(ModelPoolOptions options);
  ~ModelPool();

  // Registers a GGUF file under a name (default: the file stem). Throws kInvalidRequest for
  // a bad name and kInvalidModel when the file does not exist.
  void Register(const std::string& path, const std::string& name = "");
  // Registers every *.gguf file in a directory (not recursive). Returns how many.
  size_t RegisterDirectory(const std::string& dir);
  std::vector<RegisteredModel> List() const;
  // Finds a registered model: exact name, or name without ":latest". Throws kNotFound.
  RegisteredModel Find(const std::string& name) const;

  // Loads if needed. keep_alive: nullopt = the default. num_ctx: nullopt = the default.
  // Throws kNotFound, kInvalidModel, kInvalidRequest (num_ctx out of range).
  std::unique_ptr<ModelLease> Acquire(const std::string& name, std::optional<std::chrono::seconds> keep_alive = {},
                                      std::optional<int32_t> num_ctx = {});
  // Metadata of a registered model without keeping a scheduler (loads the model briefly
  // if it is not loaded). Throws like Acquire.
  std::shared_ptr<Model> Describe(const std::string& name);
  std::vector<LoadedModelInfo> Loaded() const;
  // Scheduler statistics of a loaded model (empty stats when not loaded).
  SchedulerStats SchedulerStatsOf(const std::string& name) const;
  // Unloads now if idle, else as soon as the last request finishes.
  void Unload(const std::string& name);
  const ModelPoolOptions& options() const { return options_; }
  // Runs before a registered file is loaded (e.g. the store re-hashing its blob); throwing
  // refuses the load. Set once, before serving.
  void SetLoadCheck(std::function<void(const RegisteredModel&)> check) { load_check_ = std::move(check); }

 private:
  friend class ModelLease;
  void Release(const std::shared_ptr<ModelLease::Loaded>& loaded, std::optional<std::chrono::seconds> keep_alive);
  void ReapLoop();

  ModelPoolOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::string, RegisteredModel> registered_;
  std::map<std::string, std::shared_ptr<ModelLease::Loaded>> loaded_;
  std::mutex load_mutex_;  // one load at a time: loading is memory- and disk-bound
  bool stopping_ = false;
  std::thread reaper_;
  std::function<void(const RegisteredModel&)> load_check_;
};

// Validates a model name: 1-128 chars of [A-Za-z0-9._-], optional ":tag" of the same;
// no "..", no leading '.' or '-'. Returns "" when valid, else why not.
std::string ModelNameProblem(const std::string& name);

}  // namespace hearth::engine
