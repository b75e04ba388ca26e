// Engine-internal: the llama.cpp parameters hearth loads models and creates contexts with.
// Shared by the code that allocates them (Model, Scheduler, Embedder) and the memory planner
// that sizes them first, so the plan is for exactly what will be allocated.
#pragma once

#include <string>
#include <vector>

#include "engine/memory_plan.h"
#include "llama.h"

namespace hearth::engine {

llama_model_params ModelParams(const ModelLoadOptions& options);
llama_context_params SchedulerContextParams(const SchedulerOptions& options);  // n_threads resolved
llama_context_params EmbedderContextParams(int32_t n_ctx, int32_t n_threads);

// The buffers llama.cpp allocated for a context (or, for a model loaded with no_alloc, would
// allocate), plus hearth's estimate of the host memory outside them. Weights only when asked:
// they belong to the model, which several contexts share.
MemoryFootprint ContextFootprint(const llama_context* ctx, bool include_weights);

// Estimated host memory of a tokenizer whose GGUF metadata holds `strings` array strings of
// `string_bytes` bytes in all (tokens and merges).
uint64_t TokenizerBytesEstimate(uint64_t strings, uint64_t string_bytes);

// Host memory LoRA adapters take once loaded (their files' sizes).
uint64_t AdapterBytes(const std::vector<std::string>& paths);

// The last error llama.cpp logged on this thread ("" if none since ClearLlamaError).
std::string LastLlamaError();
void ClearLlamaError();

}  // namespace hearth::engine
