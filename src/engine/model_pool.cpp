#include "engine/model_pool.h"

#include <algorithm>
#include <filesystem>

namespace hearth::engine {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct ModelLease::Loaded {
  std::string name;
  std::string path;
  std::shared_ptr<Model> model;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Embedder> embedder;
  std::mutex embedder_mutex;
  MemoryFootprint embedder_footprint;  // guarded by ModelPool::mutex_
  int32_t n_ctx = 0;
  int32_t active = 0;                  // guarded by ModelPool::mutex_
  uint64_t last_used = 0;              // ModelPool::use_clock_ at the last release; guarded by mutex_
  bool unload_when_idle = false;       // guarded by ModelPool::mutex_
  std::optional<Clock::time_point> expires;  // guarded by ModelPool::mutex_; empty = never
};

std::string ModelNameProblem(const std::string& name) {
  if (name.empty()) return "the model name is empty";
  if (name.size() > 200) return "the model name is longer than 200 characters";
  size_t colon = name.find(':');
  std::string base = name.substr(0, colon);
  std::string tag = colon == std::string::npos ? "" : name.substr(colon + 1);
  if (colon != std::string::npos && tag.empty()) return "the tag after ':' is empty";
  auto bad = [](const std::string& part) -> std::string {
    if (part.empty()) return "the name before ':' is empty";
    if (part.find("..") != std::string::npos) return "names may not contain '..'";
    if (part[0] == '.' || part[0] == '-') return "names may not start with '.' or '-'";
    for (unsigned char c : part) {
      if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-')) {
        return std::string("names may only contain letters, digits, '.', '_' and '-' (found ") +
               (c < 0x20 || c >= 0x7f ? "a control or non-ASCII byte" : std::string("'") + static_cast<char>(c) + "'") + ")";
      }
    }
    return {};
  };
  if (std::string why = bad(base); !why.empty()) return why;
  if (colon != std::string::npos) {
    if (std::string why = bad(tag); !why.empty()) return why;
  }
  return {};
}

ModelLease::ModelLease(ModelPool* pool, std::shared_ptr<Loaded> loaded, double load_ms,
                       std::optional<std::chrono::seconds> keep_alive)
    : pool_(pool), loaded_(std::move(loaded)), load_ms_(load_ms), keep_alive_(keep_alive) {}

ModelLease::~ModelLease() { pool_->Release(loaded_, keep_alive_); }
const Model& ModelLease::model() const { return *loaded_->model; }
std::shared_ptr<Model> ModelLease::shared_model() const { return loaded_->model; }
Scheduler& ModelLease::scheduler() { return *loaded_->scheduler; }
const std::string& ModelLease::name() const { return loaded_->name; }

Embedder& ModelLease::embedder() {
  std::lock_guard<std::mutex> lock(loaded_->embedder_mutex);
  if (!loaded_->embedder) {
    loaded_->embedder = std::make_unique<Embedder>(loaded_->model, pool_->options().embed_ctx,
                                                   pool_->options().scheduler.n_threads);
    std::lock_guard<std::mutex> pool_lock(pool_->mutex_);
    loaded_->embedder_footprint = loaded_->embedder->footprint();
  }
  return *loaded_->embedder;
}

ModelPool::ModelPool(ModelPoolOptions options) : options_(std::move(options)) {
  reaper_ = std::thread([this] { ReapLoop(); });
}

ModelPool::~ModelPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  reaper_.join();
}

void ModelDefaults::ApplyTo(SamplingParams& s) const {
  if (temperature) s.temperature = *temperature;
  if (top_p) s.top_p = *top_p;
  if (min_p) s.min_p = *min_p;
  if (repeat_penalty) s.repeat_penalty = *repeat_penalty;
  if (top_k) s.top_k = *top_k;
  if (num_predict) s.max_tokens = *num_predict < 0 ? -1 : *num_predict;
  if (seed) s.seed = *seed;
  if (!stop.empty()) s.stop = stop;
}

void ModelPool::Register(const std::string& path, const std::string& name, const ModelDefaults& defaults) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw EngineError(ErrorKind::kInvalidModel, "model file '" + path + "' does not exist or is not a regular file");
  }
  std::string n = name.empty() ? fs::path(path).stem().string() : name;
  if (std::string why = ModelNameProblem(n); !why.empty()) {
    throw EngineError(ErrorKind::kInvalidRequest, "invalid model name '" + n + "': " + why);
  }
  if (n.find(':') == std::string::npos) n += ":latest";
  RegisteredModel m;
  m.name = n;
  m.path = fs::absolute(path).string();
  m.defaults = defaults;
  m.file_bytes = fs::file_size(path, ec);
  auto ftime = fs::last_write_time(path, ec);
  m.modified = std::chrono::time_point_cast<std::chrono::system_clock::duration>(
      ftime - fs::file_time_type::clock::now() + std::chrono::system_clock::now());
  std::lock_guard<std::mutex> lock(mutex_);
  registered_[n] = m;
}

size_t ModelPool::RegisterDirectory(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw EngineError(ErrorKind::kInvalidRequest, "models directory '" + dir + "' does not exist");
  }
  size_t n = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".gguf") {
      std::string stem = entry.path().stem().string();
      if (!ModelNameProblem(stem).empty()) continue;  // skip files whose names cannot be served
      Register(entry.path().string());
      ++n;
    }
  }
  return n;
}

std::vector<RegisteredModel> ModelPool::List() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<RegisteredModel> out;
  for (const auto& [name, m] : registered_) out.push_back(m);
  return out;
}

RegisteredModel ModelPool::Find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = registered_.find(name);
  if (it == registered_.end() && name.find(':') == std::string::npos) it = registered_.find(name + ":latest");
  if (it == registered_.end()) {
    std::string known;
    for (const auto& [n, m] : registered_) known += (known.empty() ? "" : ", ") + n;
    throw EngineError(ErrorKind::kNotFound, "model '" + name + "' not found; available models: " +
                                                (known.empty() ? std::string("none") : known));
  }
  return it->second;
}

std::unique_ptr<ModelLease> ModelPool::Acquire(const std::string& name, std::optional<std::chrono::seconds> keep_alive,
                                               std::optional<int32_t> num_ctx) {
  if (num_ctx && (*num_ctx < 16 || *num_ctx > options_.max_ctx)) {
    throw EngineError(ErrorKind::kInvalidRequest, "num_ctx must be between 16 and " + std::to_string(options_.max_ctx));
  }
  RegisteredModel reg = Find(name);
  int32_t wanted_ctx = num_ctx.value_or(0);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = loaded_.find(reg.name);
    if (it != loaded_.end() && it->second->n_ctx >= wanted_ctx) {
      it->second->active += 1;
      it->second->unload_when_idle = false;
      return std::unique_ptr<ModelLease>(new ModelLease(this, it->second, 0.0, keep_alive));
    }
  }
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  Clock::time_point t0 = Clock::now();
  std::shared_ptr<Model> model;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = loaded_.find(reg.name);
    if (it != loaded_.end()) {
      if (it->second->n_ctx >= wanted_ctx) {  // loaded by another request meanwhile
        it->second->active += 1;
        return std::unique_ptr<ModelLease>(new ModelLease(this, it->second, 0.0, keep_alive));
      }
      model = it->second->model;  // reuse the weights; only the context grows
    }
  }
  std::optional<ModelDryRun> dry;
  if (!model) {
    if (load_check_) load_check_(reg);
    dry.emplace(reg.path);
  }
  SchedulerOptions so = options_.scheduler;
  so.lora_adapters = reg.defaults.adapters;
  int32_t default_ctx = so.n_ctx > 0 ? so.n_ctx : 4096;
  const int32_t n_ctx_train = model ? model->info().n_ctx_train : dry->n_ctx_train();
  if (n_ctx_train > 0) default_ctx = std::min(default_ctx, n_ctx_train);
  so.n_ctx = std::max(default_ctx, wanted_ctx);
  if (model) {
    // A larger context for loaded weights: only the new context's buffers are extra.
    MemoryFootprint need = PlanModelMemory(reg.path, so);
    need.weights = 0;
    need.overhead = 0;
    MakeRoom(reg.name, need, reg.name);
  } else {
    MakeRoom(reg.name, dry->Plan(so), "");
    dry.reset();
    model = Model::Load(reg.path);
  }
  auto loaded = std::make_shared<ModelLease::Loaded>();
  loaded->name = reg.name;
  loaded->path = reg.path;
  loaded->model = model;
  loaded->n_ctx = so.n_ctx;
  loaded->scheduler = std::make_unique<Scheduler>(model, so);
  loaded->active = 1;
  double load_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    loaded_[reg.name] = loaded;  // a replaced smaller context dies with its last lease
  }
  return std::unique_ptr<ModelLease>(new ModelLease(this, loaded, load_ms, keep_alive));
}

std::shared_ptr<Model> ModelPool::Describe(const std::string& name) {
  RegisteredModel reg = Find(name);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = loaded_.find(reg.name);
    if (it != loaded_.end()) return it->second->model;
  }
  if (load_check_) load_check_(reg);
  return Model::Load(reg.path);
}

void ModelPool::Release(const std::shared_ptr<ModelLease::Loaded>& loaded,
                        std::optional<std::chrono::seconds> keep_alive) {
  std::lock_guard<std::mutex> lock(mutex_);
  loaded->active -= 1;
  loaded->last_used = ++use_clock_;
  std::chrono::seconds ka = keep_alive.value_or(options_.default_keep_alive);
  if (loaded->unload_when_idle) {
    loaded->expires = Clock::now();
  } else if (ka.count() < 0) {
    loaded->expires.reset();
  } else {
    loaded->expires = Clock::now() + ka;
  }
  cv_.notify_all();
}

std::vector<LoadedModelInfo> ModelPool::Loaded() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<LoadedModelInfo> out;
  for (const auto& [name, l] : loaded_) {
    LoadedModelInfo info;
    info.name = name;
    info.path = l->path;
    info.footprint = FootprintOf(*l);
    info.size_bytes = info.footprint.total();
    info.gpu_bytes = info.footprint.gpu;
    info.n_ctx = l->n_ctx;
    info.n_slots = l->scheduler->options().n_slots;
    info.active_requests = l->active;
    if (l->active == 0 && l->expires) {
      info.expires_at = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(*l->expires - Clock::now());
    } else if (l->active > 0) {
      info.expires_at = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(options_.default_keep_alive);
    }
    out.push_back(info);
  }
  return out;
}

SchedulerStats ModelPool::SchedulerStatsOf(const std::string& name) const {
  std::shared_ptr<ModelLease::Loaded> loaded;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = loaded_.find(name);
    if (it == loaded_.end()) return {};
    loaded = it->second;
  }
  return loaded->scheduler->Stats();
}

void ModelPool::Unload(const std::string& name) { UnloadWhenIdle(Find(name).name); }

void ModelPool::UnloadWhenIdle(const std::string& full_name) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = loaded_.find(full_name);
  if (it == loaded_.end()) return;
  it->second->expires = Clock::now();  // the reaper drops it when (or as soon as) it is idle
  it->second->unload_when_idle = true;
  cv_.notify_all();
}

MemoryFootprint ModelPool::FootprintOf(const ModelLease::Loaded& loaded) const {
  MemoryFootprint f = loaded.scheduler->footprint();
  f.overhead += ModelHostOverhead(loaded.model->info());
  f += loaded.embedder_footprint;
  return f;
}

void ModelPool::MakeRoom(const std::string& name, const MemoryFootprint& need, const std::string& replacing) {
  for (;;) {
    const MachineMemory machine = options_.machine_memory();
    std::shared_ptr<ModelLease::Loaded> victim;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      uint64_t resident = 0;  // everything loaded models take
      uint64_t mapped = 0;    // their weights mapped from files: page cache MemAvailable counts as free
      std::string loaded_list;
      for (const auto& [n, l] : loaded_) {
        const MemoryFootprint f = FootprintOf(*l);
        resident += f.total();
        mapped += f.mapped;
        const bool pinned = l->active == 0 && !l->expires;
        loaded_list += (loaded_list.empty() ? "" : ", ") + std::string("'") + n + "' " + FormatBytes(f.total()) +
                       (l->active > 0 ? " (serving " + std::to_string(l->active) + " request" + (l->active > 1 ? "s)" : ")")
                        : pinned ? " (kept alive forever)" : " (idle)");
        const bool evictable = l->active == 0 && !pinned && n != replacing;
        if (evictable && (!victim || l->last_used < victim->last_used)) victim = l;
      }
      const uint64_t ram_free = machine.ram_available > mapped ? machine.ram_available - mapped : 0;
      const bool fits_ram = need.host() <= ram_free;
      const bool fits_gpu = need.gpu == 0 || need.gpu <= machine.gpu_free;
      const bool fits_limit = options_.memory_limit == 0 || resident + need.total() <= options_.memory_limit;
      if (fits_ram && fits_gpu && fits_limit) return;
      if (victim) {
        loaded_.erase(victim->name);
      } else {
        std::string why;
        if (!fits_limit) {
          why = "the memory limit is " + FormatBytes(options_.memory_limit) + " and loaded models take " +
                FormatBytes(resident);
        } else if (!fits_ram) {
          why = "only " + FormatBytes(ram_free) + " of RAM is free (" + FormatBytes(machine.ram_available) +
                " available" + (machine.limited_by.empty() ? "" : " under the " + machine.limited_by + " limit") +
                (mapped > 0 ? ", less " + FormatBytes(mapped) + " of loaded model weights mapped from disk" : "") + ")";
        } else {
          why = "only " + FormatBytes(machine.gpu_free) + " of GPU memory is free and it needs " + FormatBytes(need.gpu);
        }
        throw EngineError(ErrorKind::kInsufficientMemory,
                          "not enough memory to load model '" + name + "': it needs " + need.Describe() + ", but " + why +
                              (loaded_list.empty() ? "" : "; loaded: " + loaded_list) +
                              ". Lower num_ctx or the parallel slots, use a quantized KV cache (--kv-type q8_0), "
                              "or unload a model (keep_alive 0)");
      }
    }
    victim.reset();  // frees the context and, with its last reference, the weights
  }
}

void ModelPool::Unregister(const std::string& name) {
  std::string full;
  try {
    full = Find(name).name;
  } catch (const EngineError&) {
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    registered_.erase(full);
  }
  UnloadWhenIdle(full);
}

void ModelPool::ReapLoop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    Clock::time_point now = Clock::now();
    std::optional<Clock::time_point> next;
    std::vector<std::shared_ptr<ModelLease::Loaded>> doomed;
    for (auto it = loaded_.begin(); it != loaded_.end();) {
      const auto& l = it->second;
      if (l->active == 0 && l->expires && *l->expires <= now) {
        doomed.push_back(l);
        it = loaded_.erase(it);
        continue;
      }
      if (l->active == 0 && l->expires && (!next || *l->expires < *next)) next = l->expires;
      ++it;
    }
    if (!doomed.empty()) {
      lock.unlock();
      doomed.clear();  // frees contexts and weights outside the lock
      lock.lock();
      continue;
    }
    if (next) {
      cv_.wait_until(lock, *next);
    } else {
      cv_.wait(lock);
    }
  }
}

}  // namespace hearth::engine
