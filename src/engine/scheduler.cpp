#include "engine/scheduler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "engine/gguf_check.h"
#include "engine/llama_params.h"
#include "engine/text_stream.h"
#include "ggml-cpu.h"
#include "llama.h"

namespace hearth::engine {

using Clock = std::chrono::steady_clock;

namespace {

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

size_t CommonPrefix(const std::vector<Token>& a, const std::vector<Token>& b) {
  size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// A persistent CPU thread pool attached to one context. Without one, ggml creates and joins
// its worker threads inside every llama_decode; llama-bench and llama-server both attach a
// pool, and so must we to decode at their speed.
class ThreadPool {
 public:
  ThreadPool(llama_context* ctx, int32_t n_threads) {
    ggml_threadpool_params params = ggml_threadpool_params_default(n_threads);
    pool_ = ggml_threadpool_new(&params);
    if (pool_ != nullptr) llama_attach_threadpool(ctx, pool_, nullptr);
  }
  ~ThreadPool() {
    if (pool_ != nullptr) ggml_threadpool_free(pool_);
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  ggml_threadpool* pool_ = nullptr;
};

struct SamplerDeleter {
  void operator()(llama_sampler* s) const {
    if (s != nullptr) llama_sampler_free(s);
  }
};
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;

// The grammar sampler: strict, or lazy (armed by a trigger pattern or token, for tool calls
// inside free text). A strict grammar that starts with text the prompt already ends with
// (grammar_prefix) is advanced past it first.
SamplerPtr MakeGrammarSampler(const Model& model, const SamplingParams& p) {
  SamplerPtr grammar;
  try {
    if (p.grammar_lazy) {
      std::vector<const char*> patterns;
      for (const std::string& pattern : p.grammar_trigger_patterns) patterns.push_back(pattern.c_str());
      grammar.reset(llama_sampler_init_grammar_lazy_patterns(model.vocab(), p.grammar.c_str(), "root", patterns.data(),
                                                             patterns.size(), p.grammar_trigger_tokens.data(),
                                                             p.grammar_trigger_tokens.size()));
    } else {
      grammar.reset(llama_sampler_init_grammar(model.vocab(), p.grammar.c_str(), "root"));
    }
  } catch (const std::exception& e) {  // e.g. a trigger pattern that is not a valid regex
    throw EngineError(ErrorKind::kInvalidRequest, std::string("the grammar could not be set up: ") + e.what());
  }
  if (grammar == nullptr) {
    throw EngineError(ErrorKind::kInvalidRequest,
                      "the grammar could not be parsed; check its GBNF syntax and that it defines 'root'");
  }
  if (!p.grammar_lazy && !p.grammar_prefix.empty()) {
    std::vector<Token> prefix = model.Tokenize(p.grammar_prefix, false, true);
    // Some tokenizers put a space token before a leading special token; the prompt has none.
    if (!prefix.empty() && !std::isspace(static_cast<unsigned char>(p.grammar_prefix[0]))) {
      std::string first = model.TokenPiece(prefix[0], true);
      if (!first.empty() && std::isspace(static_cast<unsigned char>(first[0]))) prefix.erase(prefix.begin());
    }
    try {
      for (Token t : prefix) llama_sampler_accept(grammar.get(), t);
    } catch (const std::exception& e) {
      throw EngineError(ErrorKind::kInternal, std::string("the tool-call grammar rejects the template's generation prompt: ") + e.what());
    }
  }
  return grammar;
}

// The sampler chain without the grammar: Scheduler::Impl::Sample checks the grammar only
// against the token the chain picks (see there).
SamplerPtr MakeSampler(const Model& model, const SamplingParams& p) {
  SamplerPtr chain(llama_sampler_chain_init(llama_sampler_chain_default_params()));
  if (p.ignore_eos && !model.end_of_generation_tokens().empty()) {
    std::vector<llama_logit_bias> bias;
    for (Token t : model.end_of_generation_tokens()) bias.push_back({t, -INFINITY});
    llama_sampler_chain_add(chain.get(), llama_sampler_init_logit_bias(model.info().n_vocab,
                                                                       static_cast<int32_t>(bias.size()), bias.data()));
  }
  if (p.repeat_penalty != 1.0f && p.repeat_last_n != 0) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_penalties(model.info().n_vocab, p.repeat_last_n, p.repeat_penalty, 0.0f, 0.0f));
  }
  if (p.temperature <= 0.0f) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
    return chain;
  }
  if (p.top_k > 0) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_k(p.top_k));
  if (p.top_p < 1.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(p.top_p, 1));
  if (p.min_p > 0.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_min_p(p.min_p, 1));
  llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(p.temperature));
  uint32_t seed = p.seed.has_value() ? *p.seed : std::random_device{}();
  llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(seed));
  return chain;
}

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "error";
}

namespace {
ggml_type KvGgmlType(KvCacheType type) {
  switch (type) {
    case KvCacheType::kQ8_0: return GGML_TYPE_Q8_0;
    case KvCacheType::kQ4_0: return GGML_TYPE_Q4_0;
    case KvCacheType::kF16: break;
  }
  return GGML_TYPE_F16;
}
}  // namespace

KvCacheType ParseKvCacheType(const std::string& name) {
  if (name == "f16") return KvCacheType::kF16;
  if (name == "q8_0") return KvCacheType::kQ8_0;
  if (name == "q4_0") return KvCacheType::kQ4_0;
  throw EngineError(ErrorKind::kInvalidRequest, "unknown KV cache type '" + name + "'; use f16, q8_0 or q4_0");
}

const char* KvCacheTypeName(KvCacheType type) {
  switch (type) {
    case KvCacheType::kQ8_0: return "q8_0";
    case KvCacheType::kQ4_0: return "q4_0";
    case KvCacheType::kF16: break;
  }
  return "f16";
}

llama_context_params SchedulerContextParams(const SchedulerOptions& options) {
  llama_context_params params = llama_context_default_params();
  params.n_ctx = static_cast<uint32_t>(options.n_ctx) * static_cast<uint32_t>(options.n_slots);
  params.n_batch = static_cast<uint32_t>(std::max(options.n_batch, options.n_slots));
  params.n_ubatch = params.n_batch;
  params.n_seq_max = static_cast<uint32_t>(2 * options.n_slots);  // a scratch sequence per slot
  // A step asks for logits of at most one token per slot (a decoding slot's token, or the
  // last prompt token of a prefilling one). Without this llama.cpp sizes its compute buffer
  // for logits of every token of a batch: vocabulary × n_batch floats, ~300 MiB for a
  // 150k-token vocabulary, allocated and never used.
  // (llama.cpp wants room for at least one output per sequence, scratch sequences included.)
  params.n_outputs_max = params.n_seq_max;
  params.n_threads = options.n_threads > 0 ? options.n_threads : DefaultThreadCount();
  params.n_threads_batch = params.n_threads;
  // One unified KV buffer lets sequences share cached prefixes (seq_cp is metadata only).
  params.kv_unified = true;
  params.no_perf = true;
  params.type_k = params.type_v = KvGgmlType(options.kv_type);
  return params;
}

llama_context_params EmbedderContextParams(int32_t n_ctx, int32_t n_threads) {
  llama_context_params params = llama_context_default_params();
  params.n_ctx = static_cast<uint32_t>(n_ctx);
  params.n_batch = params.n_ubatch = static_cast<uint32_t>(n_ctx);  // a whole input in one ubatch
  params.n_seq_max = 1;
  params.n_threads = params.n_threads_batch = n_threads > 0 ? n_threads : DefaultThreadCount();
  params.embeddings = true;
  params.pooling_type = LLAMA_POOLING_TYPE_UNSPECIFIED;
  params.no_perf = true;
  return params;
}

int32_t DefaultThreadCount() {
  // Count distinct physical cores; SMT siblings slow llama.cpp's matmuls down.
  std::set<std::string> cores;
  for (unsigned cpu = 0; cpu < 4096; ++cpu) {
    std::ifstream in("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
    if (!in) break;
    std::string siblings;
    std::getline(in, siblings);
    cores.insert(siblings);
  }
  if (!cores.empty()) return static_cast<int32_t>(cores.size());
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 4 : static_cast<int32_t>(n);
}

// ---------------------------------------------------------------------------------------
// Job

GenerationResult Job::Wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return done_; });
  return result_;
}

bool Job::Done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

void Job::Cancel() { cancel_->store(true); }

// ---------------------------------------------------------------------------------------
// Scheduler

namespace {

struct Slot {
  llama_seq_id seq = 0;
  std::vector<Token> cached;  // tokens whose KV is in the cache for this sequence
  std::shared_ptr<Job> job;
  std::shared_ptr<llama_sampler> sampler;  // the chain, grammar excluded
  std::shared_ptr<llama_sampler> grammar;  // null without one
  std::unique_ptr<TextStream> stream;
  std::vector<int32_t> pending;  // prompt positions still to evaluate (ascending; last = final token)
  size_t pending_next = 0;
  size_t prompt_len = 0;      // how much of `cached` is the last job's prompt
  size_t shared_until = 0;    // cells below this position may be shared with other slots
  // A reused prompt tail parked in `scratch_seq`, spliced back in at `splice_at` once the
  // edited tokens before it are evaluated (llama.cpp needs consecutive positions).
  llama_seq_id scratch_seq = 0;
  bool splice_pending = false;
  int32_t splice_at = 0;
  int32_t splice_len = 0;
  bool has_next = false;      // a sampled token waits to be evaluated
  Token next = kNoToken;
  int32_t batch_index = -1;   // where this slot's logits are in the current batch
  uint64_t last_decoded_step = 0;
  uint64_t last_used = 0;
  Clock::time_point admitted;
  Clock::time_point first_token;
  bool has_first_token = false;
  bool at_document_start = false;  // the prompt renders as no text (e.g. BOS alone)
  bool plain_greedy = false;  // greedy without a grammar: Sample's argmax, no sampler chain
};

}  // namespace

struct Scheduler::Impl {
  std::shared_ptr<Model> model;
  SchedulerOptions options;
  llama_context* ctx = nullptr;
  std::unique_ptr<ThreadPool> threads;  // freed after ctx, in ~Impl
  std::vector<llama_adapter_lora*> adapters;  // freed after ctx, in ~Impl
  llama_memory_t memory = nullptr;
  llama_batch batch{};
  std::vector<Slot> slots;

  mutable std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Job>> queue;
  bool stopping = false;
  std::thread worker;

  // Statistics, guarded by mutex.
  uint64_t jobs_finished = 0, prompt_tokens = 0, cached_tokens = 0, generated_tokens = 0;
  int32_t running = 0;
  // Whole-step times (batch build, decode, sampling, emitting) of pure decode steps, per batch
  // width: the last kStepWindow samples and their median, which one slow step on a shared
  // machine does not move the way it moves a mean.
  static constexpr size_t kStepWindow = 15;
  std::vector<std::deque<double>> step_window;
  std::vector<double> step_ms;        // median of step_window, guarded by mutex (Stats)
  std::vector<uint32_t> step_samples;
  std::vector<SlotState> slot_states;  // snapshot for Stats(), refreshed every step
  uint64_t step_no = 0;
  uint64_t use_counter = 0;

  ~Impl() {
    if (batch.token != nullptr) llama_batch_free(batch);
    if (ctx != nullptr) llama_free(ctx);
    threads.reset();
    for (llama_adapter_lora* a : adapters) llama_adapter_lora_free(a);
  }

  void Run();
  void Admit(std::shared_ptr<Job> job);
  void Finish(Slot& slot, FinishReason reason, const std::string& error = {});
  void Emit(Slot& slot, Token token);
  void RefreshSlotStates();  // the snapshot Stats() reports
  Token Sample(Slot& slot);
  Token SampleWithGrammar(Slot& slot);
  std::vector<llama_token_data> candidates;  // SampleWithGrammar's scratch
  int32_t ChooseWidth(int32_t candidates);
  void RecordStepTime(int32_t width, double ms);
  // Keeps the unchanged tail of the slot's previous prompt by shifting it; returns how many
  // tokens were kept (0: nothing done) and fills `pending` with the positions to evaluate.
  size_t ReuseShiftedTail(Slot& slot, const std::vector<Token>& prompt, size_t prefix, std::vector<int32_t>& pending);
  bool Step();
};

Scheduler::Scheduler(std::shared_ptr<Model> model, const SchedulerOptions& options)
    : model_(std::move(model)), options_(options), impl_(std::make_unique<Impl>()) {
  if (options_.n_slots < 1 || options_.n_slots > 128) {
    throw EngineError(ErrorKind::kInvalidRequest, "n_slots must be between 1 and 128");
  }
  if (options_.n_ctx < 16) throw EngineError(ErrorKind::kInvalidRequest, "n_ctx must be at least 16");
  if (options_.n_batch < 1) throw EngineError(ErrorKind::kInvalidRequest, "n_batch must be at least 1");
  if (options_.queue_capacity < 0) throw EngineError(ErrorKind::kInvalidRequest, "queue_capacity must be >= 0");
  if (options_.n_threads <= 0) options_.n_threads = DefaultThreadCount();

  Impl& s = *impl_;
  s.model = model_;
  s.options = options_;
  llama_context_params params = SchedulerContextParams(options_);
  s.ctx = llama_init_from_model(model_->raw(), params);
  if (s.ctx == nullptr) {
    throw EngineError(ErrorKind::kInternal, "llama.cpp could not create a context of " +
                                                std::to_string(params.n_ctx) + " tokens for model '" +
                                                model_->info().name + "' (out of memory?)");
  }
  s.threads = std::make_unique<ThreadPool>(s.ctx, options_.n_threads);
  for (const std::string& path : options_.lora_adapters) {
    CheckGgufFile(path);  // an adapter is as untrusted as a model
    ClearLlamaError();
    llama_adapter_lora* adapter = llama_adapter_lora_init(model_->raw(), path.c_str());
    if (adapter == nullptr) {
      std::string why = LastLlamaError();
      throw EngineError(ErrorKind::kInvalidModel, "LoRA adapter '" + path + "' cannot be applied to model '" +
                                                      model_->info().name + "': " +
                                                      (why.empty() ? "llama.cpp could not load it" : why));
    }
    s.adapters.push_back(adapter);
  }
  if (!s.adapters.empty()) {
    std::vector<float> scales(s.adapters.size(), 1.0f);
    if (llama_set_adapters_lora(s.ctx, s.adapters.data(), s.adapters.size(), scales.data()) != 0) {
      throw EngineError(ErrorKind::kInternal, "llama.cpp could not apply the LoRA adapters to '" + model_->info().name + "'");
    }
  }
  footprint_ = ContextFootprint(s.ctx, true);
  footprint_.weights += AdapterBytes(options_.lora_adapters);
  s.memory = llama_get_memory(s.ctx);
  s.batch = llama_batch_init(static_cast<int32_t>(params.n_batch), 0, 1);
  s.slots.resize(static_cast<size_t>(options_.n_slots));
  for (size_t i = 0; i < s.slots.size(); ++i) {
    s.slots[i].seq = static_cast<llama_seq_id>(i);
    s.slots[i].scratch_seq = static_cast<llama_seq_id>(i + s.slots.size());
  }
  s.step_ms.assign(s.slots.size(), 0.0);
  s.step_window.assign(s.slots.size(), {});
  s.step_samples.assign(s.slots.size(), 0);
  s.worker = std::thread([this] { impl_->Run(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

std::shared_ptr<Job> Scheduler::Submit(GenerationRequest request) {
  request.sampling.Validate();
  if (request.prompt.empty()) {
    throw EngineError(ErrorKind::kInvalidRequest, "the prompt is empty; send at least one token");
  }
  for (Token t : request.prompt) {
    if (!model_->IsValidToken(t)) {
      throw EngineError(ErrorKind::kInvalidRequest,
                        "prompt token id " + std::to_string(t) + " is out of range [0, " +
                            std::to_string(model_->info().n_vocab) + ")");
    }
  }
  if (static_cast<int64_t>(request.prompt.size()) >= options_.n_ctx) {
    throw EngineError(ErrorKind::kContextOverflow,
                      "the prompt has " + std::to_string(request.prompt.size()) +
                          " tokens but the context window is " + std::to_string(options_.n_ctx) +
                          " tokens; shorten the prompt or raise the context size (num_ctx)");
  }
  auto job = std::make_shared<Job>();
  job->cancel_ = request.cancel ? request.cancel : std::make_shared<std::atomic<bool>>(false);
  job->request_ = std::move(request);
  job->submitted_ = Clock::now();
  // Build the samplers here so a bad grammar fails the caller, not the worker.
  job->chain_ = MakeSampler(*model_, job->request_.sampling);
  if (!job->request_.sampling.grammar.empty()) job->grammar_ = MakeGrammarSampler(*model_, job->request_.sampling);
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->stopping) throw EngineError(ErrorKind::kOverloaded, "the model is being unloaded; retry");
    int32_t idle = 0;
    for (const Slot& slot : impl_->slots) idle += slot.job ? 0 : 1;
    if (static_cast<int64_t>(impl_->queue.size()) >= options_.queue_capacity + idle) {
      throw EngineError(ErrorKind::kOverloaded,
                        "hearth is at capacity: " + std::to_string(impl_->queue.size()) +
                            " requests are already waiting for model '" + model_->info().name +
                            "'; retry later");
    }
    impl_->queue.push_back(job);
  }
  impl_->cv.notify_all();
  return job;
}

SchedulerStats Scheduler::Stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  SchedulerStats st;
  st.running = impl_->running;
  st.queued = static_cast<int32_t>(impl_->queue.size());
  st.jobs_finished = impl_->jobs_finished;
  st.prompt_tokens = impl_->prompt_tokens;
  st.cached_tokens = impl_->cached_tokens;
  st.generated_tokens = impl_->generated_tokens;
  st.step_ms_by_width = impl_->step_ms;
  st.slots = impl_->slot_states;
  return st;
}

void Scheduler::Impl::Run() {
  for (;;) {
    std::vector<std::shared_ptr<Job>> admitted;
    {
      std::unique_lock<std::mutex> lock(mutex);
      cv.wait(lock, [&] {
        bool idle_slot = std::any_of(slots.begin(), slots.end(), [](const Slot& s) { return !s.job; });
        return stopping || running > 0 || (!queue.empty() && idle_slot);
      });
      if (stopping) {
        for (auto& job : queue) {
          std::lock_guard<std::mutex> jl(job->mutex_);
          job->result_.finish = FinishReason::kCancelled;
          job->done_ = true;
          job->cv_.notify_all();
        }
        queue.clear();
        break;
      }
      int32_t idle = 0;
      for (const Slot& s : slots) idle += s.job ? 0 : 1;
      while (!queue.empty() && idle > 0) {
        admitted.push_back(queue.front());
        queue.pop_front();
        --idle;
      }
    }
    for (auto& job : admitted) Admit(job);
    Step();
  }
  for (Slot& slot : slots) {
    if (slot.job) Finish(slot, FinishReason::kCancelled);
  }
}

void Scheduler::Impl::Admit(std::shared_ptr<Job> job) {
  const std::vector<Token>& prompt = job->request_.prompt;
  // Longest cached prefix anywhere, and the idle slot to run in.
  Slot* source = nullptr;
  size_t source_len = 0;
  Slot* target = nullptr;
  size_t target_len = 0;
  for (Slot& slot : slots) {
    size_t len = options.prefix_cache ? CommonPrefix(slot.cached, prompt) : 0;
    if (len > source_len) {
      source = &slot;
      source_len = len;
    }
    if (slot.job) continue;
    if (target == nullptr || len > target_len || (len == target_len && slot.last_used < target->last_used)) {
      target = &slot;
      target_len = len;
    }
  }
  // Always re-evaluate the last prompt token: its logits give the first sampled token.
  size_t limit = prompt.size() - 1;
  source_len = std::min(source_len, limit);
  target_len = std::min(target_len, limit);
  size_t reused = target_len;
  std::vector<int32_t> pending;
  if (source != nullptr && source != target && source_len > target_len) {
    llama_memory_seq_rm(memory, target->seq, -1, -1);
    llama_memory_seq_cp(memory, source->seq, target->seq, 0, static_cast<llama_pos>(source_len));
    target->cached.assign(prompt.begin(), prompt.begin() + static_cast<ptrdiff_t>(source_len));
    target->shared_until = source_len;
    source->shared_until = std::max(source->shared_until, source_len);
    reused = source_len;
  } else if (size_t shifted = job->request_.reuse_shifted_cache ? ReuseShiftedTail(*target, prompt, reused, pending) : 0;
             shifted > 0) {
    job->result_.stats.cached_tokens = static_cast<int32_t>(reused + shifted);
  } else if (!llama_memory_seq_rm(memory, target->seq, static_cast<llama_pos>(reused), -1)) {
    llama_memory_seq_rm(memory, target->seq, -1, -1);  // partial removal unsupported: start over
    reused = 0;
  }
  target->cached.resize(reused);
  target->shared_until = std::min(target->shared_until, reused);
  if (pending.empty()) {
    for (size_t i = reused; i < prompt.size(); ++i) pending.push_back(static_cast<int32_t>(i));
  }

  Slot& slot = *target;
  slot.job = job;
  slot.pending = std::move(pending);
  slot.pending_next = 0;
  slot.has_next = false;
  slot.has_first_token = false;
  slot.at_document_start = model->info().strip_leading_space && model->Detokenize(prompt).empty();
  slot.admitted = Clock::now();
  slot.stream = std::make_unique<TextStream>(job->request_.sampling.stop);
  slot.sampler = std::move(job->chain_);
  slot.grammar = std::move(job->grammar_);
  const SamplingParams& sp = job->request_.sampling;
  slot.plain_greedy = sp.temperature <= 0.0f && sp.grammar.empty();
  slot.last_used = ++use_counter;
  job->result_.stats.prompt_tokens = static_cast<int32_t>(prompt.size());
  job->result_.stats.cached_tokens = static_cast<int32_t>(prompt.size() - slot.pending.size());
  job->result_.stats.queue_ms = MsBetween(job->submitted_, slot.admitted);
  {
    std::lock_guard<std::mutex> lock(mutex);
    ++running;
    prompt_tokens += prompt.size();
    cached_tokens += prompt.size() - slot.pending.size();
  }
  if (job->request_.sampling.max_tokens == 0) Finish(slot, FinishReason::kLength);
}

void Scheduler::Impl::Finish(Slot& slot, FinishReason reason, const std::string& error) {
  std::shared_ptr<Job> job = std::move(slot.job);
  GenerationResult& result = job->result_;
  if (reason != FinishReason::kCancelled && reason != FinishReason::kError && slot.stream) {
    std::string tail = slot.stream->Flush();
    if (!tail.empty()) {
      result.text += tail;
      if (job->request_.on_text) job->request_.on_text(tail);
    }
  }
  Clock::time_point now = Clock::now();
  if (slot.has_first_token) {
    result.stats.prompt_ms = MsBetween(slot.admitted, slot.first_token);
    result.stats.generation_ms = MsBetween(slot.first_token, now);
  } else {
    result.stats.prompt_ms = MsBetween(slot.admitted, now);
  }
  if (slot.pending_next < slot.pending.size()) {
    // Stopped before its prompt was evaluated: keep only the contiguous evaluated prefix.
    llama_memory_seq_rm(memory, slot.seq, static_cast<llama_pos>(slot.cached.size()), -1);
    slot.prompt_len = slot.cached.size();
    slot.pending.clear();
    slot.pending_next = 0;
  }
  if (slot.splice_pending) {
    llama_memory_seq_rm(memory, slot.scratch_seq, -1, -1);
    slot.splice_pending = false;
  }
  result.finish = reason;
  result.error = error;
  if (slot.stream && slot.stream->stopped()) result.stop_string = slot.stream->matched_stop();
  slot.sampler.reset();
  slot.grammar.reset();
  slot.stream.reset();
  slot.has_next = false;
  slot.last_used = ++use_counter;
  {
    std::lock_guard<std::mutex> lock(mutex);
    --running;
    ++jobs_finished;
    generated_tokens += static_cast<uint64_t>(result.stats.completion_tokens);
  }
  {
    std::lock_guard<std::mutex> lock(job->mutex_);
    job->done_ = true;
  }
  job->cv_.notify_all();
}

void Scheduler::Impl::Emit(Slot& slot, Token token) {
  Job& job = *slot.job;
  GenerationResult& result = job.result_;
  Clock::time_point now = Clock::now();
  if (!slot.has_first_token) {
    slot.has_first_token = true;
    slot.first_token = now;
    result.stats.ttft_ms = MsBetween(job.submitted_, now);
  }
  if (model->IsEndOfGeneration(token) && !job.request_.sampling.ignore_eos) return Finish(slot, FinishReason::kStop);
  result.tokens.push_back(token);
  result.stats.completion_tokens += 1;
  const std::vector<int32_t>& preserved = job.request_.sampling.preserved_tokens;
  std::string piece = model->TokenPiece(token, std::find(preserved.begin(), preserved.end(), token) != preserved.end());
  if (slot.at_document_start && !piece.empty()) {
    if (piece[0] == ' ') piece.erase(0, 1);
    slot.at_document_start = false;
  }
  std::string text = slot.stream->Push(piece);
  if (!text.empty()) {
    result.text += text;
    if (job.request_.on_text && !job.request_.on_text(text)) return Finish(slot, FinishReason::kCancelled);
  }
  if (slot.stream->stopped()) return Finish(slot, FinishReason::kStop);
  int32_t max_tokens = job.request_.sampling.max_tokens;
  if (max_tokens >= 0 && result.stats.completion_tokens >= max_tokens) return Finish(slot, FinishReason::kLength);
  if (static_cast<int64_t>(slot.cached.size()) + 1 >= options.n_ctx) return Finish(slot, FinishReason::kLength);
  slot.has_next = true;
  slot.next = token;
}

int32_t Scheduler::Impl::ChooseWidth(int32_t candidates) {
  if (candidates <= 1) return candidates;
  switch (options.batch_policy) {
    case BatchPolicy::kAlwaysBatch: return candidates;
    case BatchPolicy::kInterleave: return 1;
    case BatchPolicy::kAdaptive: break;
  }
  // Measure every width a few times before trusting the medians.
  for (int32_t w = 1; w <= candidates; ++w) {
    if (step_samples[static_cast<size_t>(w - 1)] < 5) return w;
  }
  int32_t best = 1;
  double best_rate = 0;
  for (int32_t w = 1; w <= candidates; ++w) {
    double rate = w / step_ms[static_cast<size_t>(w - 1)];
    if (rate > best_rate) {
      best_rate = rate;
      best = w;
    }
  }
  // Re-measure the other extreme now and then: step times drift as contexts grow. Each check
  // is a slow step, so a clear winner (20% ahead) is re-checked four times less often.
  const int32_t other = best == candidates ? 1 : candidates;
  const double other_rate = other / step_ms[static_cast<size_t>(other - 1)];
  const uint64_t period = best_rate > 1.2 * other_rate ? 128 : 32;
  if (step_no % period == 0) return other;
  return best;
}

// A grammar accepts or rejects each candidate token by walking its parse stacks: over a
// 150k-token vocabulary that is ~100 ms per step. Most of the time the token the chain picks
// without the grammar is allowed anyway, so pick first and check only that token; only when
// the grammar rejects it, constrain all candidates and pick again (what llama.cpp's own
// common sampler does). Greedy picks exactly what grammar-first would; random sampling keeps
// an allowed first pick, which weights allowed tokens slightly differently than renormalising
// over them would (as in llama.cpp).
Token Scheduler::Impl::SampleWithGrammar(Slot& slot) {
  const float* logits = llama_get_logits_ith(ctx, slot.batch_index);
  const int32_t n_vocab = model->info().n_vocab;
  std::vector<llama_token_data>& cur = candidates;
  auto fill = [&] {
    cur.resize(static_cast<size_t>(n_vocab));
    for (int32_t t = 0; t < n_vocab; ++t) cur[static_cast<size_t>(t)] = llama_token_data{t, logits[t], 0.0f};
  };
  fill();
  llama_token_data_array all{cur.data(), cur.size(), -1, false};
  llama_sampler_apply(slot.sampler.get(), &all);
  Token token = all.data[all.selected].id;
  llama_token_data single{token, 1.0f, 0.0f};
  llama_token_data_array one{&single, 1, -1, false};
  llama_sampler_apply(slot.grammar.get(), &one);
  if (!std::isfinite(single.logit)) {
    fill();
    all = llama_token_data_array{cur.data(), cur.size(), -1, false};
    llama_sampler_apply(slot.grammar.get(), &all);
    llama_sampler_apply(slot.sampler.get(), &all);
    token = all.data[all.selected].id;
  }
  llama_sampler_accept(slot.grammar.get(), token);
  llama_sampler_accept(slot.sampler.get(), token);
  return token;
}

// Greedy decoding without a grammar is an argmax, with llama.cpp's repeat penalty applied to
// the few tokens in its window: skip building the sampler chain's candidate array over the
// whole vocabulary (~150k entries) for every token. The result is the chain's: the same
// penalty arithmetic on the same window (the last repeat_last_n generated tokens; llama.cpp
// treats a negative repeat_last_n as 0), ties to the lowest token id as its greedy sampler.
Token Scheduler::Impl::Sample(Slot& slot) {
  if (slot.grammar) return SampleWithGrammar(slot);
  if (!slot.plain_greedy) return llama_sampler_sample(slot.sampler.get(), ctx, slot.batch_index);
  float* logits = llama_get_logits_ith(ctx, slot.batch_index);  // ours to overwrite: read once
  const SamplingParams& sp = slot.job->request_.sampling;
  if (sp.ignore_eos) {
    for (Token t : model->end_of_generation_tokens()) logits[t] = -INFINITY;
  }
  std::vector<std::pair<Token, float>> window;  // distinct penalised tokens, raw logits
  if (sp.repeat_penalty != 1.0f && sp.repeat_last_n > 0) {
    const std::vector<Token>& generated = slot.job->result_.tokens;
    const size_t n = std::min(generated.size(), static_cast<size_t>(sp.repeat_last_n));
    for (auto it = generated.end() - static_cast<std::ptrdiff_t>(n); it != generated.end(); ++it) {
      if (std::none_of(window.begin(), window.end(), [&](const auto& w) { return w.first == *it; })) {
        window.emplace_back(*it, logits[*it]);
        logits[*it] = -INFINITY;  // compared below with its penalised value
      }
    }
  }
  const int32_t n_vocab = model->info().n_vocab;
  Token best = 0;
  float best_logit = -INFINITY;
  for (int32_t t = 0; t < n_vocab; ++t) {
    if (logits[t] > best_logit) {
      best_logit = logits[t];
      best = t;
    }
  }
  for (auto [token, raw] : window) {
    const float penalised = raw <= 0 ? raw * sp.repeat_penalty : raw / sp.repeat_penalty;
    if (penalised > best_logit || (penalised == best_logit && token < best)) {
      best_logit = penalised;
      best = token;
    }
  }
  return best;
}

void Scheduler::Impl::RefreshSlotStates() {
  std::lock_guard<std::mutex> lock(mutex);
  slot_states.resize(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    slot_states[i] = SlotState{static_cast<int32_t>(i), slots[i].job != nullptr, static_cast<int32_t>(slots[i].cached.size())};
  }
}

void Scheduler::Impl::RecordStepTime(int32_t width, double ms) {
  const size_t w = static_cast<size_t>(width - 1);
  std::deque<double>& window = step_window[w];
  window.push_back(ms);
  if (window.size() > kStepWindow) window.pop_front();
  std::vector<double> sorted(window.begin(), window.end());
  std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
  std::lock_guard<std::mutex> lock(mutex);
  step_ms[w] = sorted[sorted.size() / 2];
  step_samples[w] += 1;
}

bool Scheduler::Impl::Step() {
  const Clock::time_point step_start = Clock::now();
  // Cancellations first, so a cancelled job costs no more decode work.
  for (Slot& slot : slots) {
    if (slot.job && slot.job->cancel_->load()) Finish(slot, FinishReason::kCancelled);
  }
  std::vector<Slot*> decoders;
  for (Slot& slot : slots) {
    if (slot.job && slot.has_next) decoders.push_back(&slot);
  }
  std::sort(decoders.begin(), decoders.end(),
            [](const Slot* a, const Slot* b) { return a->last_decoded_step < b->last_decoded_step; });
  int32_t width = ChooseWidth(static_cast<int32_t>(decoders.size()));
  decoders.resize(static_cast<size_t>(width));
  ++step_no;

  llama_batch& b = batch;
  b.n_tokens = 0;
  auto add = [&](Token token, llama_pos pos, llama_seq_id seq, bool logits) {
    int32_t i = b.n_tokens++;
    b.token[i] = token;
    b.pos[i] = pos;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = seq;
    b.logits[i] = logits;
    return i;
  };
  for (Slot* slot : decoders) {
    slot->batch_index = add(slot->next, static_cast<llama_pos>(slot->cached.size()), slot->seq, true);
    slot->last_decoded_step = step_no;
  }
  // Fill the rest of the batch with prompt tokens of jobs still evaluating their prompt.
  int32_t capacity = static_cast<int32_t>(llama_n_batch(ctx));
  std::vector<std::pair<Slot*, size_t>> prefills;  // slot, tokens added this step
  for (Slot& slot : slots) {
    if (!slot.job || slot.has_next || b.n_tokens >= capacity) continue;
    const std::vector<Token>& prompt = slot.job->request_.prompt;
    if (slot.splice_pending && slot.pending[slot.pending_next] >= slot.splice_at) {
      // Everything before the parked tail is evaluated: put the tail back.
      llama_memory_seq_cp(memory, slot.scratch_seq, slot.seq, slot.splice_at, slot.splice_at + slot.splice_len);
      llama_memory_seq_rm(memory, slot.scratch_seq, -1, -1);
      slot.splice_pending = false;
    }
    size_t end = slot.pending.size();
    if (slot.splice_pending) {
      end = slot.pending_next;
      while (end < slot.pending.size() && slot.pending[end] < slot.splice_at) ++end;
    }
    size_t n = std::min(end - slot.pending_next, static_cast<size_t>(capacity - b.n_tokens));
    if (n == 0) continue;
    slot.batch_index = -1;
    for (size_t k = slot.pending_next; k < slot.pending_next + n; ++k) {
      bool last = k + 1 == slot.pending.size();
      int32_t pos = slot.pending[k];
      int32_t i = add(prompt[static_cast<size_t>(pos)], pos, slot.seq, last);
      if (last) slot.batch_index = i;
    }
    prefills.emplace_back(&slot, n);
  }
  if (b.n_tokens == 0) {
    RefreshSlotStates();
    return false;
  }

  int32_t rc = llama_decode(ctx, b);
  if (rc != 0) {
    std::string why = rc == 1 ? "the KV cache is full" : "llama_decode failed with code " + std::to_string(rc);
    for (Slot* slot : decoders) Finish(*slot, FinishReason::kError, why);
    for (auto& [slot, n] : prefills) Finish(*slot, FinishReason::kError, why);
    // Drop idle caches so the next step has room.
    for (Slot& slot : slots) {
      if (!slot.job) {
        llama_memory_seq_rm(memory, slot.seq, -1, -1);
        slot.cached.clear();
      }
    }
    RefreshSlotStates();
    return true;
  }
  for (Slot* slot : decoders) {
    slot->cached.push_back(slot->next);
    slot->has_next = false;
    Token token = Sample(*slot);
    Emit(*slot, token);
  }
  if (prefills.empty() && width > 0) RecordStepTime(width, MsBetween(step_start, Clock::now()));
  for (auto& [slot, n] : prefills) {
    const std::vector<Token>& prompt = slot->job->request_.prompt;
    // `cached` mirrors only the contiguous evaluated prefix; other requests may copy it.
    for (size_t k = slot->pending_next; k < slot->pending_next + n; ++k) {
      if (static_cast<size_t>(slot->pending[k]) == slot->cached.size()) slot->cached.push_back(prompt[slot->cached.size()]);
    }
    if (slot->splice_pending && slot->pending_next + n < slot->pending.size() &&
        slot->pending[slot->pending_next + n] >= slot->splice_at) {
      // Splice now so the next step can continue right after the tail.
      llama_memory_seq_cp(memory, slot->scratch_seq, slot->seq, slot->splice_at, slot->splice_at + slot->splice_len);
      llama_memory_seq_rm(memory, slot->scratch_seq, -1, -1);
      slot->splice_pending = false;
    }
    slot->pending_next += n;
    if (slot->pending_next == slot->pending.size()) {
      slot->cached = prompt;
      slot->prompt_len = prompt.size();
      Token token = Sample(*slot);
      Emit(*slot, token);
    }
  }
  RefreshSlotStates();
  return true;
}

size_t Scheduler::Impl::ReuseShiftedTail(Slot& slot, const std::vector<Token>& prompt, size_t prefix,
                                         std::vector<int32_t>& pending) {
  if (options.cache_reuse_min_tokens <= 0 || !llama_memory_can_shift(memory)) return 0;
  const std::vector<Token>& old = slot.cached;
  size_t old_len = std::min(slot.prompt_len, old.size());
  size_t new_len = prompt.size();
  if (old_len <= prefix + 1) return 0;
  // The edit sits between the common prefix and the common tail.
  size_t tail = 0;
  while (tail < old_len - prefix && tail < new_len - prefix && old[old_len - 1 - tail] == prompt[new_len - 1 - tail]) ++tail;
  if (tail < 2) return 0;
  size_t chunk = tail - 1;  // the final prompt token is evaluated again for its logits
  size_t old_start = old_len - tail, new_start = new_len - tail;
  if (chunk < static_cast<size_t>(options.cache_reuse_min_tokens) || old_start < slot.shared_until) return 0;
  // Park the tail in the scratch sequence at its new positions; the slot keeps the prefix.
  llama_seq_id seq = slot.seq, scratch = slot.scratch_seq;
  llama_memory_seq_rm(memory, scratch, -1, -1);
  llama_memory_seq_cp(memory, seq, scratch, static_cast<llama_pos>(old_start), static_cast<llama_pos>(old_start + chunk));
  if (!llama_memory_seq_rm(memory, seq, static_cast<llama_pos>(prefix), -1)) {
    llama_memory_seq_rm(memory, scratch, -1, -1);
    return 0;
  }
  llama_memory_seq_add(memory, scratch, static_cast<llama_pos>(old_start), static_cast<llama_pos>(old_start + chunk),
                       static_cast<llama_pos>(new_start) - static_cast<llama_pos>(old_start));
  slot.splice_pending = true;
  slot.splice_at = static_cast<int32_t>(new_start);
  slot.splice_len = static_cast<int32_t>(chunk);
  for (size_t i = prefix; i < new_start; ++i) pending.push_back(static_cast<int32_t>(i));
  pending.push_back(static_cast<int32_t>(new_len - 1));
  return chunk;
}

// ---------------------------------------------------------------------------------------
// Embedder

struct Embedder::Impl {
  llama_context* ctx = nullptr;
  std::unique_ptr<ThreadPool> threads;
  int32_t n_ctx = 0;
  std::mutex mutex;
  ~Impl() {
    if (ctx != nullptr) llama_free(ctx);
    threads.reset();
  }
};

Embedder::Embedder(std::shared_ptr<Model> model, int32_t n_ctx, int32_t n_threads)
    : model_(std::move(model)), impl_(std::make_unique<Impl>()) {
  if (n_ctx < 8) throw EngineError(ErrorKind::kInvalidRequest, "embedding context must be at least 8 tokens");
  if (n_threads <= 0) n_threads = DefaultThreadCount();
  llama_context_params params = EmbedderContextParams(n_ctx, n_threads);
  impl_->ctx = llama_init_from_model(model_->raw(), params);
  if (impl_->ctx != nullptr && llama_pooling_type(impl_->ctx) == LLAMA_POOLING_TYPE_NONE) {
    // A generative model: average its last hidden states.
    llama_free(impl_->ctx);
    params.pooling_type = LLAMA_POOLING_TYPE_MEAN;
    impl_->ctx = llama_init_from_model(model_->raw(), params);
  }
  if (impl_->ctx == nullptr) {
    throw EngineError(ErrorKind::kInternal, "llama.cpp could not create an embedding context for '" +
                                                model_->info().name + "'");
  }
  impl_->threads = std::make_unique<ThreadPool>(impl_->ctx, n_threads);
  footprint_ = ContextFootprint(impl_->ctx, false);
  impl_->n_ctx = n_ctx;
}

Embedder::~Embedder() = default;

int32_t Embedder::dimensions() const { return llama_model_n_embd_out(model_->raw()); }

std::vector<std::vector<float>> Embedder::Embed(const std::vector<std::string>& inputs) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<std::vector<float>> out;
  const int32_t dims = dimensions();
  for (size_t k = 0; k < inputs.size(); ++k) {
    std::vector<Token> tokens = model_->Tokenize(inputs[k], true, false);
    if (tokens.empty()) tokens.push_back(model_->info().bos != kNoToken ? model_->info().bos : 0);
    if (static_cast<int32_t>(tokens.size()) > impl_->n_ctx) {
      throw EngineError(ErrorKind::kContextOverflow,
                        "input " + std::to_string(k) + " has " + std::to_string(tokens.size()) +
                            " tokens but the embedding context is " + std::to_string(impl_->n_ctx) +
                            " tokens; shorten it or split it into chunks");
    }
    llama_memory_clear(llama_get_memory(impl_->ctx), true);
    llama_batch b = llama_batch_init(static_cast<int32_t>(tokens.size()), 0, 1);
    for (size_t i = 0; i < tokens.size(); ++i) {
      b.token[i] = tokens[i];
      b.pos[i] = static_cast<llama_pos>(i);
      b.n_seq_id[i] = 1;
      b.seq_id[i][0] = 0;
      b.logits[i] = true;
    }
    b.n_tokens = static_cast<int32_t>(tokens.size());
    int32_t rc = llama_model_has_encoder(model_->raw()) ? llama_encode(impl_->ctx, b) : llama_decode(impl_->ctx, b);
    llama_batch_free(b);
    const float* e = rc == 0 ? llama_get_embeddings_seq(impl_->ctx, 0) : nullptr;
    if (e == nullptr) throw EngineError(ErrorKind::kInternal, "llama.cpp returned no embedding for input " + std::to_string(k));
    std::vector<float> v(e, e + dims);
    double norm = 0;
    for (float x : v) norm += static_cast<double>(x) * x;
    norm = std::sqrt(norm);
    if (norm > 0) {
      for (float& x : v) x = static_cast<float>(x / norm);
    }
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace hearth::engine
