// Runs generations for one model: continuous batching over several sequences in one
// llama.cpp context, with a prefix cache.
//
// Each request is a Job. A worker thread owns the context; in every step it admits queued
// jobs into free sequence slots, evaluates prompt chunks, and decodes one token for each
// running job. A new job reuses the longest cached token prefix of any slot (idle or
// running) instead of re-evaluating it, so an autocomplete request that differs from the
// previous one by a few characters only evaluates the changed tail.
//
// Batching policy: decoding several sequences in one batch is not always faster than
// decoding them one after another (quantized weights on few cores). The scheduler measures
// the step time for each batch width and decodes the width that gives the most tokens per
// second, rotating through the running jobs so each makes progress. Aggregate throughput
// therefore never falls below one stream's.
//
// Thread-safety: all public methods may be called from any thread. Callbacks run on the
// worker thread and must return quickly.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/memory_plan.h"
#include "engine/model.h"
#include "engine/sampling.h"

struct llama_sampler;

namespace hearth::engine {

enum class FinishReason { kStop, kLength, kCancelled, kError };
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "cancelled", "error"

struct GenerationStats {
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;      // prompt tokens reused from the prefix cache
  int32_t completion_tokens = 0;
  double queue_ms = 0;            // submitted -> admitted into a slot
  double prompt_ms = 0;           // evaluating the uncached prompt tail
  double generation_ms = 0;       // first sampled token -> finish
  double ttft_ms = 0;             // submitted -> first token sampled
};

struct GenerationResult {
  std::string text;  // the emitted text (stop string excluded)
  std::vector<Token> tokens;
  FinishReason finish = FinishReason::kStop;
  std::string stop_string;  // the stop string that ended it, if one did
  std::string error;  // set when finish == kError
  GenerationStats stats;
};

struct GenerationRequest {
  std::vector<Token> prompt;  // must not be empty
  SamplingParams sampling;
  // Called with each piece of emitted text. Return false to cancel the generation.
  std::function<bool(std::string_view text)> on_text;
  // Set from any thread to cancel; honoured within one decode step.
  std::shared_ptr<std::atomic<bool>> cancel;
  // Autocomplete: besides the common prefix, also reuse the cached tail of the previous
  // prompt when only a middle part changed (an edit at the cursor in a FIM prompt), by
  // shifting its KV entries to their new positions. Much faster, but not bit-exact: the
  // reused tail was computed before the edit. Needs SchedulerOptions::cache_reuse_min_tokens.
  bool reuse_shifted_cache = false;
};

// A submitted request. Wait() blocks until it finishes.
class Job {
 public:
  GenerationResult Wait();
  bool Done() const;
  void Cancel();

 private:
  friend class Scheduler;
  GenerationRequest request_;
  GenerationResult result_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  std::chrono::steady_clock::time_point submitted_;
  // Built by Submit (so a bad grammar fails the caller), handed to the slot at admission.
  std::shared_ptr<llama_sampler> chain_, grammar_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
};

enum class BatchPolicy { kAdaptive, kAlwaysBatch, kInterleave };

// Element type of the KV cache. Quantized caches halve (q8_0) or quarter (q4_0) its memory
// at a small quality cost; llama.cpp needs flash attention for them, which it enables itself
// where the backend supports it.
enum class KvCacheType { kF16, kQ8_0, kQ4_0 };
// "f16", "q8_0" or "q4_0"; throws EngineError(kInvalidRequest) naming the valid ones.
KvCacheType ParseKvCacheType(const std::string& name);
const char* KvCacheTypeName(KvCacheType type);

struct SchedulerOptions {
  int32_t n_ctx = 4096;      // context window per sequence
  int32_t n_slots = 4;       // concurrent sequences
  int32_t n_threads = 0;     // 0: number of physical cores
  int32_t n_batch = 512;     // prompt tokens evaluated per step
  int32_t queue_capacity = 64;  // waiting jobs beyond the slots; more -> kOverloaded
  BatchPolicy batch_policy = BatchPolicy::kAdaptive;
  bool prefix_cache = true;
  int32_t cache_reuse_min_tokens = 32;  // smallest shifted tail worth reusing; 0 disables
  KvCacheType kv_type = KvCacheType::kF16;
  // LoRA adapter files (GGUF, llama.cpp's adapter format) applied at scale 1 to every
  // generation; each is validated like a model file. A mismatch with the model: kInvalidModel.
  std::vector<std::string> lora_adapters;
};

struct SlotState {
  int32_t id = 0;
  bool processing = false;
  int32_t cached_tokens = 0;  // tokens whose KV this sequence holds
};

struct SchedulerStats {
  int32_t running = 0;
  int32_t queued = 0;
  uint64_t jobs_finished = 0;
  uint64_t prompt_tokens = 0;
  uint64_t cached_tokens = 0;
  uint64_t generated_tokens = 0;
  // Median whole-step time of recent decode steps per batch width (index 0 = width 1); 0 where
  // never measured.
  std::vector<double> step_ms_by_width;
  std::vector<SlotState> slots;
};

class Scheduler {
 public:
  // Creates the llama.cpp context (n_ctx * n_slots cells). Throws EngineError.
  Scheduler(std::shared_ptr<Model> model, const SchedulerOptions& options);
  ~Scheduler();  // cancels running and queued jobs, joins the worker
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Validates and enqueues. Throws kInvalidRequest (bad params, empty prompt, invalid token
  // ids), kContextOverflow (prompt longer than n_ctx, message states both counts), or
  // kOverloaded (queue full).
  std::shared_ptr<Job> Submit(GenerationRequest request);
  GenerationResult Generate(GenerationRequest request) { return Submit(std::move(request))->Wait(); }

  const Model& model() const { return *model_; }
  const SchedulerOptions& options() const { return options_; }
  SchedulerStats Stats() const;
  // What the context takes, as llama.cpp allocated it: weights, KV cache, compute and output
  // buffers (not ModelHostOverhead).
  const MemoryFootprint& footprint() const { return footprint_; }

 private:
  struct Impl;
  std::shared_ptr<Model> model_;
  SchedulerOptions options_;
  std::unique_ptr<Impl> impl_;
  MemoryFootprint footprint_;
};

// Computes one embedding per input text (mean pooling for generative models, the model's
// own pooling otherwise), L2-normalised. Owns its own context; serialises calls.
class Embedder {
 public:
  Embedder(std::shared_ptr<Model> model, int32_t n_ctx = 2048, int32_t n_threads = 0);
  ~Embedder();
  // Throws kContextOverflow when an input is longer than n_ctx tokens.
  std::vector<std::vector<float>> Embed(const std::vector<std::string>& inputs);
  int32_t dimensions() const;
  // The embedding context's KV cache, compute and output buffers (weights excluded: shared).
  const MemoryFootprint& footprint() const { return footprint_; }

 private:
  struct Impl;
  std::shared_ptr<Model> model_;
  std::unique_ptr<Impl> impl_;
  MemoryFootprint footprint_;
};

// Physical cores of this machine (used as the default thread count).
int32_t DefaultThreadCount();

}  // namespace hearth::engine
