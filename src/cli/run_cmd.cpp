#include "cli/run_cmd.h"

#include <csignal>
#include <cstdio>
#include <iostream>
#include <iterator>

#include "engine/scheduler.h"

namespace hearth::cli {

namespace {

struct RunOptions {
  std::string model;
  std::string prompt;
  bool prompt_given = false;
  bool chat = false;
  std::string system;
  float temperature = 0.8f;
  int32_t top_k = 40;
  float top_p = 0.9f;
  float min_p = 0.0f;
  float repeat_penalty = 1.1f;
  int64_t seed = -1;
  int32_t max_tokens = 256;
  std::vector<std::string> stop;
  int32_t ctx = 0;
  int32_t threads = 0;
  bool verbose = false;
};

std::shared_ptr<std::atomic<bool>> g_cancel;

void OnSigint(int) {
  if (g_cancel) g_cancel->store(true);
}

int Run(const RunOptions& o) {
  using namespace hearth::engine;
  SetLlamaLogLevel(o.verbose ? 1 : 0);
  std::shared_ptr<Model> model = Model::Load(o.model);
  std::string text = o.prompt;
  if (!o.prompt_given) text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  if (o.chat) {
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", text});
    text = model->ApplyChatTemplate(messages, true);
  }
  GenerationRequest request;
  request.prompt = model->Tokenize(text, !o.chat, o.chat);
  if (o.chat && model->info().add_bos && model->info().bos != kNoToken &&
      (request.prompt.empty() || request.prompt.front() != model->info().bos)) {
    request.prompt.insert(request.prompt.begin(), model->info().bos);
  }
  if (request.prompt.empty()) {
    if (model->info().bos == kNoToken) {
      throw EngineError(ErrorKind::kInvalidRequest, "the prompt is empty and the model has no BOS token to start from; pass --prompt");
    }
    request.prompt.push_back(model->info().bos);
  }
  SamplingParams& s = request.sampling;
  s.temperature = o.temperature;
  s.top_k = o.top_k;
  s.top_p = o.top_p;
  s.min_p = o.min_p;
  s.repeat_penalty = o.repeat_penalty;
  if (o.seed >= 0) s.seed = static_cast<uint32_t>(o.seed);
  s.max_tokens = o.max_tokens;
  s.stop = o.stop;
  request.on_text = [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  };
  g_cancel = std::make_shared<std::atomic<bool>>(false);
  request.cancel = g_cancel;
  std::signal(SIGINT, OnSigint);

  SchedulerOptions so;
  so.n_ctx = o.ctx > 0 ? o.ctx : std::min(4096, std::max(16, model->info().n_ctx_train));
  so.n_slots = 1;
  so.n_threads = o.threads;
  Scheduler scheduler(model, so);
  GenerationResult result = scheduler.Generate(std::move(request));
  std::fputc('\n', stdout);
  if (o.verbose) {
    const GenerationStats& st = result.stats;
    std::fprintf(stderr,
                 "[%s] prompt %d tokens in %.1f ms (%.1f t/s), %d tokens generated in %.1f ms (%.1f t/s), "
                 "ttft %.1f ms, finish: %s\n",
                 model->info().description.c_str(), st.prompt_tokens, st.prompt_ms,
                 st.prompt_ms > 0 ? 1000.0 * (st.prompt_tokens - st.cached_tokens) / st.prompt_ms : 0.0,
                 st.completion_tokens, st.generation_ms,
                 st.generation_ms > 0 ? 1000.0 * (st.completion_tokens - 1) / st.generation_ms : 0.0,
                 st.ttft_ms, FinishReasonName(result.finish));
  }
  if (result.finish == FinishReason::kError) throw EngineError(ErrorKind::kInternal, result.error);
  return result.finish == FinishReason::kCancelled ? 130 : 0;
}

}  // namespace

void AddRunCommand(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Generate a completion from a GGUF model file, streamed to stdout");
  cmd->add_option("-m,--model", o->model, "GGUF model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("-p,--prompt", o->prompt, "prompt text (default: read standard input)");
  cmd->add_flag("--chat", o->chat, "wrap the prompt as a user message with the model's chat template");
  cmd->add_option("--system", o->system, "system message (with --chat)");
  cmd->add_option("-t,--temperature", o->temperature, "sampling temperature; 0 = greedy")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", o->top_k, "top-k sampling; 0 = off")->check(CLI::Range(0, 1000000));
  cmd->add_option("--top-p", o->top_p, "nucleus sampling; 1 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-p", o->min_p, "min-p sampling; 0 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--repeat-penalty", o->repeat_penalty, "repetition penalty; 1 = off")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("-s,--seed", o->seed, "random seed (default: random)")->check(CLI::Range(int64_t{0}, int64_t{UINT32_MAX}));
  cmd->add_option("-n,--max-tokens", o->max_tokens, "maximum tokens to generate; -1 = until the model stops")->check(CLI::Range(-1, 10000000));
  cmd->add_option("--stop", o->stop, "stop string (repeatable); never printed");
  cmd->add_option("-c,--ctx", o->ctx, "context window in tokens (default: the model's, at most 4096)")->check(CLI::Range(16, 1 << 20));
  cmd->add_option("--threads", o->threads, "threads (default: physical cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("-v,--verbose", o->verbose, "print timing statistics to stderr");
  cmd->callback([cmd, o] {
    o->prompt_given = cmd->count("--prompt") > 0;
    int rc = Run(*o);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace hearth::cli
