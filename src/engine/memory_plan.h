// How much memory a model will take before it is loaded, how much it takes once loaded, and
// how much the machine has free.
//
// PlanModelMemory is a dry run by llama.cpp itself: it reads the file's metadata and tensor
// table (no weights), builds the context the Scheduler would build for these options without
// allocating it, and reports every buffer: weights, KV cache (for the requested context,
// sequences and KV type) and compute buffers, each split between host RAM and GPU memory.
// A host overhead for what those buffers do not cover (tokenizer tables, output buffer,
// allocator slack) is added; tests/memory_plan_test.cpp checks the total against the resident
// memory a fresh process actually gains when it loads the model and decodes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/model.h"

namespace hearth::engine {

struct SchedulerOptions;

struct MemoryFootprint {
  uint64_t weights = 0;
  uint64_t kv_cache = 0;
  uint64_t compute = 0;
  uint64_t overhead = 0;  // host memory outside llama.cpp's buffers
  uint64_t gpu = 0;       // the part of the above that lives in GPU memory
  // Of the weights, the part mapped from the model file (hearth loads with mmap): page cache,
  // which the kernel's MemAvailable counts as free although the model uses it.
  uint64_t mapped = 0;
  uint64_t total() const { return weights + kv_cache + compute + overhead; }
  uint64_t host() const { return total() - gpu; }
  MemoryFootprint& operator+=(const MemoryFootprint& other);
  // "1.21 GiB (weights 512.0 MiB, KV cache 384.0 MiB, compute 298.5 MiB, other 31.2 MiB)"
  std::string Describe() const;
};

// A model file opened for planning only: llama.cpp reads its metadata and tensor table but no
// weights, and allocates nothing. The file is validated first (CheckGgufFile).
class ModelDryRun {
 public:
  // Throws EngineError(kInvalidModel) naming the file and the problem.
  explicit ModelDryRun(const std::string& path, const ModelLoadOptions& load = {});
  ~ModelDryRun();
  ModelDryRun(const ModelDryRun&) = delete;
  ModelDryRun& operator=(const ModelDryRun&) = delete;

  int32_t n_ctx_train() const;
  // What loading the model and creating a Scheduler with these options would take. Throws
  // EngineError(kInvalidRequest) when llama.cpp cannot create such a context.
  MemoryFootprint Plan(const SchedulerOptions& options) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ModelDryRun(path, load).Plan(options).
MemoryFootprint PlanModelMemory(const std::string& path, const SchedulerOptions& options,
                                const ModelLoadOptions& load = {});

// Host memory a loaded model takes besides llama.cpp's buffers (tokenizer tables, slack).
uint64_t ModelHostOverhead(const ModelInfo& info);

struct MachineMemory {
  uint64_t ram_total = 0;
  uint64_t ram_available = 0;  // what new allocations can get without swapping
  uint64_t gpu_total = 0;      // 0 without a GPU backend
  uint64_t gpu_free = 0;
  std::string limited_by;      // "cgroup" when a cgroup limit is tighter than the machine
};

// Reads /proc/meminfo (MemAvailable) and the cgroup v2 limit of this process
// (memory.max - memory.current), taking the tighter; GPU memory from ggml's devices.
// `root` prefixes the paths (tests point it at a fake tree).
MachineMemory ReadMachineMemory(const std::string& root = "");

// Resident memory of this process (VmRSS), 0 when unknown.
uint64_t ResidentBytes();

// "512 B", "3.4 MiB", "1.21 GiB".
std::string FormatBytes(uint64_t bytes);

}  // namespace hearth::engine
