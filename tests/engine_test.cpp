// Engine tests on the real trained model (stories260K) and on generated tiny models.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "devtools/genlora.h"
#include "engine/scheduler.h"
#include "test_support.h"

using namespace hearth::engine;
using hearth::test::TempDir;
using hearth::test::TinyModelPath;

namespace {

constexpr const char* kGolden = "Once upon a time, there was a little girl named Lily.";

std::shared_ptr<Model> LoadStories(const std::string& path) {
  static std::shared_ptr<Model> model = Model::Load(path);
  return model;
}

GenerationRequest Greedy(const Model& model, const std::string& text, int32_t max_tokens) {
  GenerationRequest r;
  r.prompt = model.Tokenize(text, true, false);
  r.sampling.temperature = 0;
  r.sampling.repeat_penalty = 1.0f;
  r.sampling.max_tokens = max_tokens;
  return r;
}

SchedulerOptions SmallOptions(int32_t slots = 1) {
  SchedulerOptions o;
  o.n_ctx = 256;
  o.n_slots = slots;
  o.n_batch = 64;
  return o;
}

}  // namespace

TEST(Engine, GoldenOutputFromBosOnStories) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  Scheduler s(model, SmallOptions());
  GenerationRequest r = Greedy(*model, "", 40);
  ASSERT_EQ(r.prompt.size(), 1u) << "an empty prompt tokenizes to BOS alone";
  GenerationResult out = s.Generate(std::move(r));
  EXPECT_EQ(out.text.rfind(kGolden, 0), 0u) << "got: " << out.text;
  EXPECT_EQ(out.finish, FinishReason::kLength);
  EXPECT_EQ(out.stats.completion_tokens, 40);
  EXPECT_GT(out.stats.ttft_ms, 0);
}

// Greedy decoding with a repeat penalty takes the scheduler's argmax fast path; these texts
// were produced by llama.cpp's own sampler chain (penalties + greedy) before that path
// existed, through `hearth serve` /api/generate (raw, temperature 0, repeat_last_n 16).
TEST(Engine, GreedyWithRepeatPenaltyMatchesLlamaCppsSamplerChain) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  Scheduler s(model, SmallOptions());
  const std::pair<float, const char*> cases[] = {
      {1.1f, ", there was a little girl named Lily. She loved to play outside in the park with her friends. One "
             "day, Lily's mommy told her that they were going to the park with her mommy and d"},
      {1.5f, ", there was a little girl named Lily. She loved to play outside in the park with her friend, Tom. "
             "One day she went to the park with her mommy and daddy. They saw a big, red"},
      {0.8f, ", there was a little girl named Lily. She was always always asking as a swings as a swings. One "
             "day, she asked her mom, \"Can I have a s"},
  };
  for (const auto& [penalty, expected] : cases) {
    GenerationRequest r;
    r.prompt = model->Tokenize("Once upon a time", true, true);
    r.sampling.temperature = 0;
    r.sampling.repeat_penalty = penalty;
    r.sampling.repeat_last_n = 16;
    r.sampling.max_tokens = 60;
    EXPECT_EQ(s.Generate(std::move(r)).text, expected) << "repeat_penalty " << penalty;
  }
}

// Modelfile ADAPTER: a LoRA adapter changes what the model generates; one made for another
// shape, or a corrupt file, is a clear kInvalidModel error, never an abort.
TEST(Engine, LoraAdapterIsAppliedAndAMismatchIsAClearError) {
  const std::string tiny = hearth::test::TinyModelPath("starcoder");
  const std::string lora = hearth::test::TempDir() + "/tiny-lora.gguf";
  hearth::devtools::GenLoraOptions lo;
  lo.output_path = lora;
  hearth::devtools::GenerateLora(lo);
  auto text = [&](const SchedulerOptions& so) {
    auto model = Model::Load(tiny);
    Scheduler s(model, so);
    return s.Generate(Greedy(*model, "def main():", 16)).text;
  };
  SchedulerOptions so = SmallOptions();
  const std::string plain = text(so);
  so.lora_adapters = {lora};
  const std::string adapted = text(so);
  EXPECT_NE(adapted, plain);
  EXPECT_EQ(text(so), adapted) << "deterministic with the adapter too";

  const std::string wrong = hearth::test::TempDir() + "/wrong-shape-lora.gguf";
  lo.shape = hearth::devtools::ShapeByName("qwen2.5-coder-0.5b");
  lo.rank = 1;
  lo.output_path = wrong;
  hearth::devtools::GenerateLora(lo);
  so.lora_adapters = {wrong};
  const EngineError mismatch = hearth::test::CatchEngineError([&] { text(so); });
  EXPECT_EQ(mismatch.kind(), ErrorKind::kInvalidModel);
  EXPECT_NE(std::string(mismatch.what()).find("cannot be applied"), std::string::npos) << mismatch.what();
  const std::string corrupt = hearth::test::TempDir() + "/corrupt-lora.gguf";
  std::ofstream(corrupt) << "GGUF\x03";
  so.lora_adapters = {corrupt};
  EXPECT_EQ(hearth::test::CatchEngineError([&] { text(so); }).kind(), ErrorKind::kInvalidModel);
}

TEST(Engine, ModelInfoOfStories) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  const ModelInfo& info = model->info();
  EXPECT_EQ(info.architecture, "llama");
  EXPECT_EQ(info.n_layer, 5);
  EXPECT_EQ(info.n_embd, 64);
  EXPECT_EQ(info.n_head, 8);
  EXPECT_EQ(info.n_head_kv, 4);
  EXPECT_EQ(info.n_vocab, 512);
  EXPECT_EQ(info.n_params, 292800u);
  EXPECT_FALSE(info.fim.available());
  EXPECT_TRUE(info.chat_template.empty());
  EXPECT_NE(info.quantization.find("F32"), std::string::npos) << info.quantization;
}

TEST(Engine, SameSeedSameTextOtherSeedOtherText) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  Scheduler s(model, SmallOptions());
  auto run = [&](uint32_t seed) {
    GenerationRequest r = Greedy(*model, "Once upon a time", 60);
    r.sampling.temperature = 1.0f;
    r.sampling.top_k = 0;
    r.sampling.top_p = 1.0f;
    r.sampling.seed = seed;
    return s.Generate(std::move(r)).text;
  };
  std::string a = run(1234), b = run(1234), c = run(99);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Engine, StopStringEndsGenerationAndIsNotEmitted) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  Scheduler s(model, SmallOptions());
  GenerationRequest r = Greedy(*model, "", 60);
  r.sampling.stop = {"girl named"};  // spans several tokens
  std::string streamed;
  r.on_text = [&](std::string_view t) {
    streamed += t;
    return true;
  };
  GenerationResult out = s.Generate(std::move(r));
  EXPECT_EQ(out.finish, FinishReason::kStop);
  EXPECT_EQ(out.text, "Once upon a time, there was a little ");
  EXPECT_EQ(streamed, out.text);
}

TEST(Engine, CallbackReturningFalseCancels) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  Scheduler s(model, SmallOptions());
  GenerationRequest r = Greedy(*model, "", 100);
  int calls = 0;
  r.on_text = [&](std::string_view) { return ++calls < 3; };
  GenerationResult out = s.Generate(std::move(r));
  EXPECT_EQ(out.finish, FinishReason::kCancelled);
  EXPECT_EQ(calls, 3);
  EXPECT_LE(out.stats.completion_tokens, 4);
}

TEST(Engine, CancelFromAnotherThreadStopsWithinAStep) {
  auto model = Model::Load(TinyModelPath());
  SchedulerOptions o = SmallOptions();
  o.n_ctx = 4096;
  Scheduler s(model, o);
  GenerationRequest r = Greedy(*model, "int main() {", -1);
  std::atomic<int> pieces{0};
  r.on_text = [&](std::string_view) {
    ++pieces;
    return true;
  };
  auto job = s.Submit(std::move(r));
  while (pieces.load() < 5 && !job->Done()) std::this_thread::sleep_for(std::chrono::microseconds(50));
  job->Cancel();
  GenerationResult out = job->Wait();
  EXPECT_EQ(out.finish, FinishReason::kCancelled);
  EXPECT_LT(out.stats.completion_tokens, 4000);
}

TEST(Engine, PrefixReuseGivesExactlyTheColdOutput) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  const std::string prompt = "Once upon a time, there was a little boy named Tim. He liked to play";
  std::string cold;
  {
    Scheduler s(model, SmallOptions());
    GenerationResult r = s.Generate(Greedy(*model, prompt, 40));
    EXPECT_EQ(r.stats.cached_tokens, 0);
    cold = r.text;
  }
  Scheduler s(model, SmallOptions());
  s.Generate(Greedy(*model, "Once upon a time, there was a little boy named Tim. He had a red ball", 20));
  GenerationResult warm = s.Generate(Greedy(*model, prompt, 40));
  EXPECT_GT(warm.stats.cached_tokens, 10);
  EXPECT_EQ(warm.text, cold);
  // The very same prompt again reuses all but the last token.
  GenerationResult again = s.Generate(Greedy(*model, prompt, 40));
  EXPECT_EQ(again.stats.cached_tokens, again.stats.prompt_tokens - 1);
  EXPECT_EQ(again.text, cold);
}

TEST(Engine, PrefixIsCopiedFromAnotherSlot) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  Scheduler s(model, SmallOptions(2));
  const std::string base = "Once upon a time, there was a little boy named Tim. He liked to";
  std::string cold = s.Generate(Greedy(*model, base + " run", 30)).text;
  // Occupy the slot holding the prefix so the next job must run in the other one.
  std::atomic<bool> release{false};
  GenerationRequest blocker = Greedy(*model, base + " run", 200);
  blocker.on_text = [&](std::string_view) {
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  };
  auto first = s.Submit(std::move(blocker));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  release = true;
  GenerationResult copied = s.Generate(Greedy(*model, base + " run", 30));
  first->Wait();
  EXPECT_GT(copied.stats.cached_tokens, 10);
  EXPECT_EQ(copied.text, cold);
}

class ConcurrencyTest : public ::testing::TestWithParam<BatchPolicy> {};

TEST_P(ConcurrencyTest, ConcurrentSequencesMatchSerialOnes) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  const std::vector<std::string> prompts = {"Once upon a time", "The cat sat", "Tom and Sue went to the park",
                                            "One day, a big dog"};
  std::vector<std::string> serial;
  {
    Scheduler s(model, SmallOptions());
    for (const auto& p : prompts) serial.push_back(s.Generate(Greedy(*model, p, 48)).text);
  }
  SchedulerOptions o = SmallOptions(4);
  o.batch_policy = GetParam();
  Scheduler s(model, o);
  std::vector<std::shared_ptr<Job>> jobs;
  for (const auto& p : prompts) jobs.push_back(s.Submit(Greedy(*model, p, 48)));
  for (size_t i = 0; i < jobs.size(); ++i) EXPECT_EQ(jobs[i]->Wait().text, serial[i]) << "prompt " << i;
  SchedulerStats st = s.Stats();
  EXPECT_EQ(st.jobs_finished, 4u);
  EXPECT_EQ(st.running, 0);
}

INSTANTIATE_TEST_SUITE_P(Policies, ConcurrencyTest,
                         ::testing::Values(BatchPolicy::kAdaptive, BatchPolicy::kAlwaysBatch, BatchPolicy::kInterleave));

TEST(Engine, AdaptivePolicyMeasuresEachWidth) {
  auto model = Model::Load(TinyModelPath());
  SchedulerOptions o = SmallOptions(3);
  Scheduler s(model, o);
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back(s.Submit(Greedy(*model, "def f" + std::to_string(i), 64)));
  for (auto& j : jobs) EXPECT_EQ(j->Wait().stats.completion_tokens > 0, true);
  SchedulerStats st = s.Stats();
  ASSERT_EQ(st.step_ms_by_width.size(), 3u);
  EXPECT_GT(st.step_ms_by_width[0], 0);
  EXPECT_GT(st.step_ms_by_width[1], 0);
}

TEST(Engine, FullQueueIsOverloadedNotBlocked) {
  auto model = Model::Load(TinyModelPath());
  SchedulerOptions o = SmallOptions(1);
  o.queue_capacity = 1;
  Scheduler s(model, o);
  std::atomic<bool> started{false}, release{false};
  GenerationRequest first = Greedy(*model, "x", 50);
  first.on_text = [&](std::string_view) {
    started = true;
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  };
  auto j1 = s.Submit(std::move(first));
  while (!started.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto j2 = s.Submit(Greedy(*model, "y", 5));
  try {
    s.Submit(Greedy(*model, "z", 5));
    ADD_FAILURE() << "expected kOverloaded";
  } catch (const EngineError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kOverloaded);
    EXPECT_NE(std::string(e.what()).find("retry"), std::string::npos);
  }
  release = true;
  EXPECT_EQ(j1->Wait().finish, FinishReason::kLength);
  EXPECT_EQ(j2->Wait().stats.completion_tokens, 5);
}

TEST(Engine, RejectsBadRequestsWithClearErrors) {
  auto model = Model::Load(TinyModelPath());
  Scheduler s(model, SmallOptions());
  auto expect_error = [&](GenerationRequest r, ErrorKind kind, const std::string& words) {
    try {
      s.Submit(std::move(r));
      ADD_FAILURE() << "expected an error mentioning " << words;
    } catch (const EngineError& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  GenerationRequest long_prompt;
  long_prompt.prompt.assign(300, 1);
  expect_error(long_prompt, ErrorKind::kContextOverflow, "300 tokens but the context window is 256");
  GenerationRequest bad_token;
  bad_token.prompt = {1, model->info().n_vocab + 5};
  expect_error(bad_token, ErrorKind::kInvalidRequest, "out of range");
  expect_error(GenerationRequest{}, ErrorKind::kInvalidRequest, "empty");
  GenerationRequest bad_temp = Greedy(*model, "x", 5);
  bad_temp.sampling.temperature = -1;
  expect_error(bad_temp, ErrorKind::kInvalidRequest, "temperature");
  GenerationRequest bad_grammar = Greedy(*model, "x", 5);
  bad_grammar.sampling.grammar = "root ::= (";
  expect_error(bad_grammar, ErrorKind::kInvalidRequest, "grammar");
  // The scheduler still serves after every rejection.
  EXPECT_EQ(s.Generate(Greedy(*model, "x", 3)).stats.completion_tokens, 3);
}

TEST(Engine, GrammarConstrainsOutput) {
  auto model = Model::Load(TinyModelPath());
  Scheduler s(model, SmallOptions());
  GenerationRequest r = Greedy(*model, "answer:", 20);
  r.sampling.grammar = R"(root ::= ("yes" | "no") "!")";
  GenerationResult out = s.Generate(std::move(r));
  EXPECT_TRUE(out.text == "yes!" || out.text == "no!") << out.text;
}

TEST(Engine, MaxTokensZeroGeneratesNothing) {
  auto model = Model::Load(TinyModelPath());
  Scheduler s(model, SmallOptions());
  GenerationResult out = s.Generate(Greedy(*model, "hello", 0));
  EXPECT_EQ(out.stats.completion_tokens, 0);
  EXPECT_EQ(out.text, "");
}

TEST(Engine, FimPromptUsesTheVocabularysFimTokens) {
  auto model = Model::Load(TinyModelPath("starcoder"));
  const FimTokens& fim = model->info().fim;
  ASSERT_TRUE(fim.available());
  std::vector<Token> p = model->BuildFimPrompt("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n",
                                               {{"util.py", "X = 1\n"}});
  auto at = [&](Token t) { return std::find(p.begin(), p.end(), t) - p.begin(); };
  EXPECT_LT(at(fim.pre), at(fim.suf));
  EXPECT_LT(at(fim.suf), at(fim.mid));
  EXPECT_EQ(p.back(), fim.mid);
  if (fim.sep != kNoToken) {
    EXPECT_LT(at(fim.sep), at(fim.pre)) << "repository context comes first";
  }
  EXPECT_NE(model->Detokenize(p).find("X = 1"), std::string::npos);
  Scheduler s(model, SmallOptions());
  GenerationRequest r;
  r.prompt = p;
  r.sampling.temperature = 0;
  r.sampling.max_tokens = 8;
  EXPECT_EQ(s.Generate(std::move(r)).finish != FinishReason::kError, true);
}

TEST(Engine, FimOnAModelWithoutFimTokensIsUnsupported) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  try {
    model->BuildFimPrompt("a", "b");
    ADD_FAILURE();
  } catch (const EngineError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  }
}

TEST(Engine, ChatTemplateRendersMessages) {
  auto model = Model::Load(TinyModelPath());
  std::string text = model->ApplyChatTemplate({{"system", "Be brief."}, {"user", "Hi"}}, true);
  EXPECT_NE(text.find("<|im_start|>system\nBe brief.<|im_end|>"), std::string::npos) << text;
  EXPECT_NE(text.find("<|im_start|>user\nHi<|im_end|>"), std::string::npos) << text;
  EXPECT_EQ(text.substr(text.size() - 22), "<|im_start|>assistant\n");
  std::string llama3 = model->ApplyChatTemplate({{"user", "Hi"}}, true, "llama3");
  EXPECT_NE(llama3.find("<|start_header_id|>user<|end_header_id|>"), std::string::npos) << llama3;
}

TEST(Engine, TokenizeRoundTripsAndParsesSpecialTokens) {
  auto model = Model::Load(TinyModelPath());
  const std::string text = "for (int i = 0; i < n; ++i) { sum += a[i]; }  // é ü 漢字";
  std::vector<Token> t = model->Tokenize(text, false, false);
  EXPECT_EQ(model->Detokenize(t), text);
  std::vector<Token> special = model->Tokenize("<fim_prefix>", false, true);
  ASSERT_EQ(special.size(), 1u);
  EXPECT_EQ(special[0], model->info().fim.pre);
  EXPECT_GT(model->Tokenize("<fim_prefix>", false, false).size(), 1u);
  EXPECT_THROW(model->TokenPiece(-1), EngineError);
}

TEST(Engine, EmbeddingsAreNormalisedAndDeterministic) {
  auto model = Model::Load(TinyModelPath());
  Embedder e(model, 256);
  auto v = e.Embed({"hello world", "hello world", "completely different text"});
  ASSERT_EQ(v.size(), 3u);
  ASSERT_EQ(static_cast<int32_t>(v[0].size()), e.dimensions());
  double norm = 0;
  for (float x : v[0]) norm += x * x;
  EXPECT_NEAR(norm, 1.0, 1e-4);
  EXPECT_EQ(v[0], v[1]);
  EXPECT_NE(v[0], v[2]);
  std::string huge(5000, 'x');
  for (size_t i = 0; i < huge.size(); i += 2) huge[i] = ' ';
  EXPECT_THROW(e.Embed({huge}), EngineError);
}

TEST(Engine, CorruptModelFilesGiveErrorsNotCrashes) {
  namespace fs = std::filesystem;
  std::string good = TinyModelPath();
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& name, const std::string& data) {
    std::string p = (fs::path(TempDir()) / name).string();
    std::ofstream(p, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
    return p;
  };
  std::vector<std::string> bad = {
      write("truncated-header.gguf", bytes.substr(0, 20)),
      write("truncated-meta.gguf", bytes.substr(0, bytes.size() / 50)),
      write("truncated-data.gguf", bytes.substr(0, bytes.size() - 100)),
      write("magic.gguf", "GGUX" + bytes.substr(4)),
      write("empty.gguf", ""),
  };
  std::mt19937 rng(7);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  bad.push_back(write("random.gguf", noise));
  bad.push_back(write("random-magic.gguf", "GGUF" + noise));
  std::string huge_count = bytes;
  for (int i = 0; i < 8; ++i) huge_count[8 + i] = static_cast<char>(0x7f);  // tensor count
  bad.push_back(write("tensor-count.gguf", huge_count));
  for (const std::string& p : bad) {
    try {
      Model::Load(p);
      ADD_FAILURE() << p << " loaded";
    } catch (const EngineError& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel) << p;
      EXPECT_NE(std::string(e.what()).find(fs::path(p).filename().string()), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(Model::Load((fs::path(TempDir()) / "missing.gguf").string()), EngineError);
  EXPECT_THROW(Model::Load(TempDir()), EngineError);
}

TEST(Engine, ShiftedTailReuseEvaluatesOnlyTheEdit) {
  HEARTH_REQUIRE_STORIES(path);
  auto model = LoadStories(path);
  SchedulerOptions o = SmallOptions();
  o.n_ctx = 512;
  o.cache_reuse_min_tokens = 8;
  Scheduler s(model, o);
  const std::string head = "Once upon a time, there was a little girl named Lily.";
  const std::string tail =
      " She loved to play outside in the park with her friends. One day, she saw a big red ball in the "
      "grass. She ran to get it and kicked it very high. The ball flew over the fence and into the garden.";
  auto request = [&](const std::string& middle) {
    GenerationRequest r = Greedy(*model, head + middle + tail, 8);
    r.reuse_shifted_cache = true;
    return r;
  };
  GenerationResult first = s.Generate(request(" Lily had a cat."));
  EXPECT_EQ(first.stats.cached_tokens, 0);
  // Typing at the "cursor": the middle grows; head and tail are unchanged.
  GenerationResult second = s.Generate(request(" Lily had a cat named Tom."));
  const int32_t tail_tokens = static_cast<int32_t>(model->Tokenize(tail, false, false).size());
  EXPECT_GE(second.stats.cached_tokens, second.stats.prompt_tokens - 8) << "only the edit and the last token are evaluated";
  EXPECT_GT(second.stats.cached_tokens, tail_tokens);
  EXPECT_EQ(second.stats.completion_tokens, 8);
  // Deleting text shifts the tail the other way.
  GenerationResult third = s.Generate(request(" Lily had a dog."));
  EXPECT_GT(third.stats.cached_tokens, tail_tokens);
  // Without the flag the same edit re-evaluates the tail exactly.
  GenerationRequest exact = Greedy(*model, head + " Lily had a bird." + tail, 8);
  GenerationResult cold;
  {
    Scheduler fresh(model, o);
    cold = fresh.Generate(Greedy(*model, head + " Lily had a bird." + tail, 8));
  }
  GenerationResult warm = s.Generate(std::move(exact));
  EXPECT_LT(warm.stats.cached_tokens, warm.stats.prompt_tokens - tail_tokens);
  EXPECT_EQ(warm.text, cold.text);
}
