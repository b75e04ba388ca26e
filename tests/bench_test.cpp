// hearth bench: statistics, least-squares fit, crossover, bootstrap, prompt suite, request
// shapes, and the policy rewrite of --calibrate (src/bench).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <tuple>

#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "bench/calibrate.h"
#include "bench/client.h"
#include "bench/prompts.h"
#include "bench/stats.h"

namespace hearth::bench {
namespace {

TEST(BenchStats, PercentileInterpolatesBetweenRanks) {
  EXPECT_EQ(Percentile({}, 0.5), 0);
  EXPECT_EQ(Percentile({7}, 0.95), 7);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({4, 3, 2, 1}, 0.5), 2.5);  // unsorted input
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.95), 95.05);  // numpy.percentile(range(1,101), 95)
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 1), 100);
}

TEST(BenchStats, Summary) {
  Summary s = Summarize({5, 1, 3, 2, 4});
  EXPECT_EQ(s.count, 5u);
  EXPECT_EQ(s.min, 1);
  EXPECT_EQ(s.max, 5);
  EXPECT_EQ(s.median, 3);
  EXPECT_DOUBLE_EQ(s.p95, 4.8);
  EXPECT_DOUBLE_EQ(s.mean, 3);
  EXPECT_EQ(Summarize({}).count, 0u);
}

TEST(BenchStats, LeastSquaresFit) {
  // total = 50 + 5 n exactly.
  LinearFit f = FitLine({10, 20, 30, 40}, {100, 150, 200, 250});
  ASSERT_TRUE(f.ok);
  EXPECT_NEAR(f.intercept, 50, 1e-9);
  EXPECT_NEAR(f.slope, 5, 1e-9);
  EXPECT_NEAR(f.r2, 1, 1e-12);
  // Hand-computed: x 1,2,3 y 2,3,5 -> slope 1.5, intercept 1/3.
  f = FitLine({1, 2, 3}, {2, 3, 5});
  EXPECT_NEAR(f.slope, 1.5, 1e-12);
  EXPECT_NEAR(f.intercept, 1.0 / 3, 1e-12);
  EXPECT_FALSE(FitLine({3}, {1}).ok);
  EXPECT_FALSE(FitLine({3, 3, 3}, {1, 2, 3}).ok);  // no spread in x
}

TEST(BenchStats, CrossoverOfTheBriefsExample) {
  // A: 50 ms + n / 200 tokens/s; B: 400 ms + n / 1000 tokens/s -> n* = 0.35 / 0.004 = 87.5.
  LinearFit a{50, 5, 1, 10, true}, b{400, 1, 1, 10, true};
  auto n = Crossover(a, b);
  ASSERT_TRUE(n.has_value());
  EXPECT_NEAR(*n, 87.5, 1e-9);
  EXPECT_NEAR(*Crossover(b, a), 87.5, 1e-9);  // symmetric
  EXPECT_EQ(Faster(a, b, 10), -1);
  EXPECT_EQ(Faster(a, b, 200), 1);
  // One endpoint better at every length: no crossover.
  LinearFit c{30, 0.5, 1, 10, true};
  EXPECT_FALSE(Crossover(c, b).has_value());
  EXPECT_EQ(Faster(c, b, 1e6), -1);
  // Parallel lines never cross.
  EXPECT_FALSE(Crossover(LinearFit{10, 1, 1, 2, true}, LinearFit{20, 1, 1, 2, true}).has_value());
  EXPECT_FALSE(Crossover(LinearFit{}, b).has_value());
}

Samples Synthetic(double ttft, double ms_per_token, double noise_ms, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, noise_ms);
  Samples s;
  for (int i = 0; i < 60; ++i) {
    const double n = 20 + (i * 37) % 180;
    s.tokens.push_back(n);
    s.total_ms.push_back(ttft + ms_per_token * n + noise(rng));
  }
  return s;
}

TEST(BenchStats, BootstrapIntervalContainsTheTrueCrossover) {
  Samples a = Synthetic(50, 5, 8, 1), b = Synthetic(400, 1, 8, 2);
  CrossoverEstimate e = BootstrapCrossover(a, b, 500, 7);
  ASSERT_TRUE(e.point.has_value());
  EXPECT_NEAR(*e.point, 87.5, 87.5 * 0.05);
  EXPECT_EQ(e.resamples, 500u);
  EXPECT_EQ(e.crossed, 500u);
  EXPECT_LE(e.lo, e.median);
  EXPECT_LE(e.median, e.hi);
  EXPECT_LT(e.lo, *e.point);
  EXPECT_GT(e.hi, *e.point);
  EXPECT_NEAR(e.median, *e.point, 2);
  EXPECT_LT(e.hi - e.lo, 20);
  // Deterministic for a seed.
  CrossoverEstimate again = BootstrapCrossover(a, b, 500, 7);
  EXPECT_EQ(again.median, e.median);
  // Noise-free data: every resample gives the same n*.
  CrossoverEstimate exact = BootstrapCrossover(Synthetic(50, 5, 0, 1), Synthetic(400, 1, 0, 1), 100, 3);
  EXPECT_NEAR(exact.lo, 87.5, 1e-6);
  EXPECT_NEAR(exact.hi, 87.5, 1e-6);
}

TEST(BenchCalibrate, RewritesOnlyTheValueKeepingComments) {
  const std::string in =
      "# policy\nversion: 1\n\n# the crossover\ncrossover_tokens: 250   # calibrated by hand\n"
      "rules:\n  - name: x\n    when: {output_tokens: {over_crossover: true}}\n    action: local\n";
  PolicyRewrite r = RewriteCrossover(in, 88);
  ASSERT_TRUE(r.old_value.has_value());
  EXPECT_EQ(*r.old_value, "250");
  EXPECT_EQ(r.text,
            "# policy\nversion: 1\n\n# the crossover\ncrossover_tokens: 88   # calibrated by hand\n"
            "rules:\n  - name: x\n    when: {output_tokens: {over_crossover: true}}\n    action: local\n");
}

TEST(BenchCalibrate, ExampleFileChangesInOneLine) {
  std::ifstream f(std::string(HEARTH_SOURCE_DIR) + "/examples/hearth.yaml", std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string in = ss.str();
  ASSERT_NE(in.find("\ncrossover_tokens: 250\n"), std::string::npos);
  PolicyRewrite r = RewriteCrossover(in, 1234);
  std::string expected = in;
  expected.replace(expected.find("\ncrossover_tokens: 250\n"), 23, "\ncrossover_tokens: 1234\n");
  EXPECT_EQ(r.text, expected);
  EXPECT_EQ(*r.old_value, "250");
}

TEST(BenchCalibrate, AddsTheKeyWhenAbsentAndKeepsCrlf) {
  PolicyRewrite r = RewriteCrossover("# x\r\nversion: 1\r\ndefault: local\r\n", 90);
  EXPECT_FALSE(r.old_value.has_value());
  EXPECT_EQ(r.text, "# x\r\nversion: 1\r\ncrossover_tokens: 90\r\ndefault: local\r\n");
  // No version line, no final newline: appended at the end.
  r = RewriteCrossover("default: local", 7);
  EXPECT_EQ(r.text, "default: local\ncrossover_tokens: 7\n");
  // An indented key (inside a mapping) is not the top-level one.
  r = RewriteCrossover("version: 1\nx:\n  crossover_tokens: 5\n", 9);
  EXPECT_EQ(r.text, "version: 1\ncrossover_tokens: 9\nx:\n  crossover_tokens: 5\n");
}

TEST(BenchCalibrate, PolicyFileIsRewrittenAndValidated) {
  const auto dir = std::filesystem::temp_directory_path() / ("hearth-bench-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "hearth.yaml").string();
  {
    std::ofstream out(path, std::ios::binary);
    out << "# keep me\nversion: 1\ncrossover_tokens: 250 # old\ndefault: local\n";
  }
  EXPECT_EQ(CalibratePolicyFile(path, 88), "250");
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "# keep me\nversion: 1\ncrossover_tokens: 88 # old\ndefault: local\n");
  // A file that is not a valid policy is left alone.
  {
    std::ofstream out(path, std::ios::binary);
    out << "version: 1\nno_such_key: 3\n";
  }
  EXPECT_THROW(CalibratePolicyFile(path, 88), std::runtime_error);
  std::ifstream again(path, std::ios::binary);
  std::stringstream s2;
  s2 << again.rdbuf();
  EXPECT_EQ(s2.str(), "version: 1\nno_such_key: 3\n");
  std::filesystem::remove_all(dir);
}

TEST(BenchPrompts, BuiltInSuiteHasTheStandardRanges) {
  auto cats = ParsePromptSuite(DefaultPromptSuiteText());
  ASSERT_EQ(cats.size(), 4u);
  const std::vector<std::tuple<std::string, int, int>> want = {
      {"autocomplete", 20, 80}, {"function", 150, 400}, {"refactor", 200, 500}, {"explain", 300, 800}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(cats[i].name, std::get<0>(want[i]));
    EXPECT_EQ(cats[i].min_tokens, std::get<1>(want[i]));
    EXPECT_EQ(cats[i].max_tokens, std::get<2>(want[i]));
    ASSERT_GE(cats[i].prompts.size(), 3u);
    for (const Prompt& p : cats[i].prompts) {
      EXPECT_EQ(p.max_tokens, cats[i].max_tokens);
      if (i == 0) {
        EXPECT_TRUE(p.fim);
        EXPECT_FALSE(p.prefix.empty());
      } else {
        // The prompt asks for a length inside the range.
        EXPECT_NE(p.text.find(std::to_string(cats[i].min_tokens) + " to " + std::to_string(cats[i].max_tokens)),
                  std::string::npos) << p.text;
      }
    }
  }
  auto two = SelectCategories(cats, "explain,autocomplete");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].name, "explain");
  EXPECT_THROW(SelectCategories(cats, "nope"), std::runtime_error);
}

TEST(BenchClient, RequestsUseEachApisFimAndChatEndpoints) {
  Prompt fim;
  fim.fim = true;
  fim.prefix = "def f(";
  fim.suffix = ")\n";
  fim.max_tokens = 80;
  Prompt chat;
  chat.text = "explain";
  chat.max_tokens = 800;
  using nlohmann::json;
  Endpoint e{"x", "http://127.0.0.1:8080", Api::kLlamaCpp, "", "", true};
  HttpRequest r = BuildRequest(e, fim);
  EXPECT_EQ(r.url, "http://127.0.0.1:8080/infill");
  EXPECT_EQ(json::parse(r.body)["input_suffix"], ")\n");
  EXPECT_EQ(json::parse(r.body)["n_predict"], 80);
  e.api = Api::kOllama;
  e.model = "m";
  r = BuildRequest(e, fim);
  EXPECT_EQ(r.url, "http://127.0.0.1:8080/api/generate");
  EXPECT_EQ(json::parse(r.body)["suffix"], ")\n");
  EXPECT_EQ(json::parse(r.body)["options"]["num_predict"], 80);
  r = BuildRequest(e, chat);
  EXPECT_EQ(r.url, "http://127.0.0.1:8080/api/chat");
  e.api = Api::kOpenAI;
  r = BuildRequest(e, fim);
  EXPECT_EQ(r.url, "http://127.0.0.1:8080/v1/completions");
  EXPECT_EQ(json::parse(r.body)["suffix"], ")\n");
  e.url = "https://api.example.com/v1";
  r = BuildRequest(e, chat);
  EXPECT_EQ(r.url, "https://api.example.com/v1/chat/completions");
  EXPECT_EQ(json::parse(r.body)["max_tokens"], 800);
  EXPECT_EQ(json::parse(r.body)["stream_options"]["include_usage"], true);
  e.fim = false;  // --no-fim: autocomplete as chat
  r = BuildRequest(e, fim);
  EXPECT_EQ(r.url, "https://api.example.com/v1/chat/completions");
  e.api = Api::kAnthropic;
  e.url = "https://api.anthropic.com";
  e.fim = true;
  r = BuildRequest(e, fim);  // no FIM API: a chat request with the cursor marked
  EXPECT_EQ(r.url, "https://api.anthropic.com/v1/messages");
  EXPECT_NE(json::parse(r.body)["messages"][0]["content"].get<std::string>().find("def f(<CURSOR>)"), std::string::npos);
}

}  // namespace
}  // namespace hearth::bench
