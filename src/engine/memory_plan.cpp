#include "engine/memory_plan.h"

#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string_view>

#include "engine/gguf_check.h"
#include "engine/llama_params.h"
#include "engine/scheduler.h"
#include "ggml-backend.h"
#include "llama-ext.h"  // llama_get_memory_breakdown: llama.cpp's own per-buffer accounting

namespace hearth::engine {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Host memory outside llama.cpp's buffers, per process and per model, fitted to the resident
// memory measured by tests/memory_plan_test.cpp (see docs/store.md, "Memory planner").
constexpr uint64_t kBaseOverhead = 8ull << 20;    // ggml/llama bookkeeping, allocator slack
constexpr uint64_t kBytesPerVocabString = 112;    // token/merge tables: string + map nodes

bool IsGpuBuffer(ggml_backend_buffer_type_t buft) {
  if (ggml_backend_buft_is_host(buft)) return false;  // CPU, CPU_REPACK, pinned host memory
  ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
  return dev != nullptr && ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU;
}

struct ModelDeleter {
  void operator()(llama_model* m) const { llama_model_free(m); }
};
struct ContextDeleter {
  void operator()(llama_context* c) const { llama_free(c); }
};

uint64_t ReadUint(const std::string& path) {
  std::ifstream in(path);
  std::string word;
  if (!(in >> word)) return 0;
  if (word == "max") return UINT64_MAX;
  try {
    return std::stoull(word);
  } catch (const std::exception&) {
    return 0;
  }
}

// The cgroup v2 directory of this process ("" when not in a cgroup v2 hierarchy).
std::string OwnCgroupDir(const std::string& root) {
  std::ifstream in(root + "/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return root + "/sys/fs/cgroup" + (line.size() > 3 ? line.substr(3) : "");
  }
  return {};
}

}  // namespace

MemoryFootprint& MemoryFootprint::operator+=(const MemoryFootprint& other) {
  weights += other.weights;
  kv_cache += other.kv_cache;
  compute += other.compute;
  overhead += other.overhead;
  gpu += other.gpu;
  mapped += other.mapped;
  return *this;
}

std::string MemoryFootprint::Describe() const {
  return FormatBytes(total()) + " (weights " + FormatBytes(weights) + ", KV cache " + FormatBytes(kv_cache) +
         ", compute " + FormatBytes(compute) + ", other " + FormatBytes(overhead) +
         (gpu > 0 ? ", " + FormatBytes(gpu) + " of it on the GPU" : std::string()) + ")";
}

std::string FormatBytes(uint64_t bytes) {
  char buf[64];
  if (bytes < 1024) {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 " B", bytes);
  } else if (bytes < (1ull << 30)) {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", bytes / (1024.0 * 1024.0));
  } else {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", bytes / kGiB);
  }
  return buf;
}

uint64_t TokenizerBytesEstimate(uint64_t strings, uint64_t string_bytes) {
  return strings * kBytesPerVocabString + 2 * string_bytes;
}

MemoryFootprint ContextFootprint(const llama_context* ctx, bool include_weights) {
  MemoryFootprint f;
  for (const auto& [buft, mb] : llama_get_memory_breakdown(ctx)) {
    const bool gpu = IsGpuBuffer(buft);
    if (include_weights) {
      f.weights += mb.model;
      if (gpu) f.gpu += mb.model;
      // Plain CPU buffers of a model loaded with mmap point into the mapped file; repacked
      // (CPU_REPACK) and GPU copies are allocated memory.
      if (std::string_view(ggml_backend_buft_name(buft)) == "CPU") f.mapped += mb.model;
    }
    f.kv_cache += mb.context;
    f.compute += mb.compute;
    if (gpu) f.gpu += mb.context + mb.compute;
  }
  // The logits (and embeddings) output buffer is host memory outside the breakdown: llama.cpp
  // reserves one vocabulary-sized row per sequence.
  const llama_model* model = llama_get_model(ctx);
  const uint64_t n_vocab = static_cast<uint64_t>(llama_vocab_n_tokens(llama_model_get_vocab(model)));
  const uint64_t n_embd = static_cast<uint64_t>(llama_model_n_embd(model));
  f.overhead += static_cast<uint64_t>(llama_n_seq_max(ctx)) * (n_vocab + n_embd) * sizeof(float);
  return f;
}

struct ModelDryRun::Impl {
  std::string path;
  std::unique_ptr<llama_model, ModelDeleter> model;
  uint64_t host_overhead = 0;
};

ModelDryRun::ModelDryRun(const std::string& path, const ModelLoadOptions& load) : impl_(std::make_unique<Impl>()) {
  InitBackend();
  const GgufSummary summary = CheckGgufFile(path);  // throws kInvalidModel with the reason
  llama_model_params params = ModelParams(load);
  params.no_alloc = true;  // metadata and tensor table only: no weights are read or allocated
  params.load_mode = LLAMA_LOAD_MODE_NONE;  // llama.cpp's dry run maps nothing (it asserts so)
  ClearLlamaError();
  impl_->model.reset(llama_model_load_from_file(path.c_str(), params));
  if (!impl_->model) {
    std::string why = LastLlamaError();
    throw EngineError(ErrorKind::kInvalidModel,
                      "model file '" + path + "' failed to load: " + (why.empty() ? "llama.cpp could not read it" : why));
  }
  impl_->path = path;
  ModelInfo info;
  info.tokenizer_bytes = TokenizerBytesEstimate(summary.string_array_elements, summary.string_array_bytes);
  impl_->host_overhead = ModelHostOverhead(info);
}

ModelDryRun::~ModelDryRun() = default;

int32_t ModelDryRun::n_ctx_train() const { return llama_model_n_ctx_train(impl_->model.get()); }

MemoryFootprint ModelDryRun::Plan(const SchedulerOptions& options) const {
  llama_context_params params = SchedulerContextParams(options);
  ClearLlamaError();
  std::unique_ptr<llama_context, ContextDeleter> ctx(llama_init_from_model(impl_->model.get(), params));
  if (!ctx) {
    std::string why = LastLlamaError();
    throw EngineError(ErrorKind::kInvalidRequest,
                      "llama.cpp cannot create a context of " + std::to_string(params.n_ctx) + " tokens (KV cache " +
                          KvCacheTypeName(options.kv_type) + ") for '" + impl_->path + "'" + (why.empty() ? "" : ": " + why));
  }
  MemoryFootprint f = ContextFootprint(ctx.get(), true);
  f.overhead += impl_->host_overhead;
  f.weights += AdapterBytes(options.lora_adapters);
  return f;
}

MemoryFootprint PlanModelMemory(const std::string& path, const SchedulerOptions& options, const ModelLoadOptions& load) {
  return ModelDryRun(path, load).Plan(options);
}

uint64_t AdapterBytes(const std::vector<std::string>& paths) {
  uint64_t total = 0;
  for (const std::string& path : paths) {  // F32/F16 tensors copied into host buffers as stored
    std::error_code ec;
    const uintmax_t size = std::filesystem::file_size(path, ec);
    if (!ec) total += size;
  }
  return total;
}

uint64_t ModelHostOverhead(const ModelInfo& info) { return kBaseOverhead + info.tokenizer_bytes; }

MachineMemory ReadMachineMemory(const std::string& root) {
  MachineMemory m;
  std::ifstream in(root + "/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    uint64_t kib = 0;
    fields >> key >> kib;
    if (key == "MemTotal:") m.ram_total = kib * 1024;
    if (key == "MemAvailable:") m.ram_available = kib * 1024;
  }
  const std::string cgroup = OwnCgroupDir(root);
  if (!cgroup.empty()) {
    const uint64_t limit = ReadUint(cgroup + "/memory.max");
    if (limit != 0 && limit != UINT64_MAX && (m.ram_total == 0 || limit < m.ram_total)) {
      const uint64_t used = ReadUint(cgroup + "/memory.current");
      const uint64_t left = limit > used ? limit - used : 0;
      m.ram_total = limit;
      if (m.ram_available == 0 || left < m.ram_available) {
        m.ram_available = left;
        m.limited_by = "cgroup";
      }
    }
  }
  if (root.empty()) {
    InitBackend();
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
      ggml_backend_dev_t dev = ggml_backend_dev_get(i);
      const auto type = ggml_backend_dev_type(dev);
      if (type != GGML_BACKEND_DEVICE_TYPE_GPU && type != GGML_BACKEND_DEVICE_TYPE_IGPU) continue;
      size_t free = 0, total = 0;
      ggml_backend_dev_memory(dev, &free, &total);
      m.gpu_free += free;
      m.gpu_total += total;
    }
  }
  return m;
}

uint64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  uint64_t pages_total = 0, pages_resident = 0;
  if (!(in >> pages_total >> pages_resident)) return 0;
  return pages_resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace hearth::engine
