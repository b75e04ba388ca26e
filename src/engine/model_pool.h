// The models a server can serve, by name, and the ones currently loaded.
//
// Models are registered by file (--model, --models-dir) and loaded on first use: one Model,
// one Scheduler (continuous batching) and, on demand, one Embedder each. A loaded model
// stays resident while requests use it and for keep_alive after the last one (negative:
// forever, zero: unload as soon as it is idle). A request that needs a larger context than
// the loaded one reloads the model with that context once it is idle.
//
// Memory: before loading, the pool plans the model's footprint (weights + KV cache for the
// context, slots and KV type + compute buffers; see memory_plan.h) and compares it with the
// memory free (the machine's, and memory_limit when set). When it does not fit, idle models
// are unloaded, least recently used first; models serving a request and models kept alive
// forever (keep_alive < 0) are never unloaded for another. If it still does not fit, the load
// is refused with kInsufficientMemory and the numbers. Several models stay loaded together
// whenever they fit.
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

#include "engine/memory_plan.h"
#include "engine/scheduler.h"

namespace hearth::engine {

// What a stored model's Modelfile sets (PARAMETER, SYSTEM, TEMPLATE). A request starts
// from these; whatever the request sets itself wins.
struct ModelDefaults {
  std::optional<float> temperature, top_p, min_p, repeat_penalty;
  std::optional<int32_t> top_k, num_predict, num_ctx;
  std::optional<uint32_t> seed;
  std::vector<std::string> stop;
  std::string system;         // used when the request has no system message
  std::string template_text;  // a chat template (name or source) instead of the model's
  std::vector<std::string> adapters;  // LoRA adapter files (ADAPTER), applied to every request
  // Overwrites the sampling fields this sets (num_predict -> max_tokens, negative: unlimited).
  void ApplyTo(SamplingParams& s) const;
};

struct RegisteredModel {
  std::string name;  // "qwen2.5-coder:latest" style; lookups accept the bare name too
  std::string path;
  ModelDefaults defaults;
  uint64_t file_bytes = 0;
  std::chrono::system_clock::time_point modified;
};

struct LoadedModelInfo {
  std::string name;
  std::string path;
  uint64_t size_bytes = 0;   // footprint.total()
  uint64_t gpu_bytes = 0;    // footprint.gpu
  MemoryFootprint footprint; // as allocated (the embedding context included once created)
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
  // Memory all loaded models may take together, in bytes; 0: only the machine's limit.
  uint64_t memory_limit = 0;
  // Reads the machine's free memory before each load (tests substitute their own).
  std::function<MachineMemory()> machine_memory = [] { return ReadMachineMemory(); };
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
  void Register(const std::string& path, const std::string& name = "", const ModelDefaults& defaults = {});
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
  // Forgets a name (its model file was deleted): no new requests, unloaded once idle.
  // Unknown names are ignored.
  void Unregister(const std::string& name);
  const ModelPoolOptions& options() const { return options_; }
  // Runs before a registered file is loaded (e.g. the store re-hashing its blob); throwing
  // refuses the load. Set once, before serving.
  void SetLoadCheck(std::function<void(const RegisteredModel&)> check) { load_check_ = std::move(check); }

 private:
  friend class ModelLease;
  void Release(const std::shared_ptr<ModelLease::Loaded>& loaded, std::optional<std::chrono::seconds> keep_alive);
  void ReapLoop();
  void UnloadWhenIdle(const std::string& full_name);  // a registered name with its tag
  // Unloads idle models (LRU) until `need` fits; throws kInsufficientMemory when it cannot.
  // `replacing`: a loaded model the new load replaces (its weights are reused). Holds load_mutex_.
  void MakeRoom(const std::string& name, const MemoryFootprint& need, const std::string& replacing);
  MemoryFootprint FootprintOf(const ModelLease::Loaded& loaded) const;

  ModelPoolOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::string, RegisteredModel> registered_;
  std::map<std::string, std::shared_ptr<ModelLease::Loaded>> loaded_;
  std::mutex load_mutex_;  // one load at a time: loading is memory- and disk-bound
  bool stopping_ = false;
  uint64_t use_clock_ = 0;  // orders releases for LRU eviction; guarded by mutex_
  std::thread reaper_;
  std::function<void(const RegisteredModel&)> load_check_;
};

// Validates a model name: 1-128 chars of [A-Za-z0-9._-], optional ":tag" of the same;
// no "..", no leading '.' or '-'. Returns "" when valid, else why not.
std::string ModelNameProblem(const std::string& name);

}  // namespace hearth::engine
