// hearth_bench_engine: prompt and decode tokens/s of hearth's engine, measured the way
// llama.cpp's llama-bench measures them, plus aggregate decode throughput of concurrent
// streams through the Scheduler.
//
//   hearth_bench_engine --model M --threads T --reps R --pp 512 --tg 128 --streams 1,2,4
//                       [--llama-bench PATH | --peer-json FILE...] [--json OUT]
//   hearth_bench_engine --summarize engine-<date>.json     (tables of a combined run file)
//
// With --llama-bench, llama-bench (-m M -t T -p pp -n tg -r R -o json) runs twice, right
// before and right after hearth's pp/tg reps, and its samples are pooled: slow drift of a
// shared machine then affects both sides alike (the two peer means show the drift).
//
// Method (mirrors llama-bench so the ratio is fair):
//   pp: a prompt of `pp` random token ids, max_tokens 1, prefix cache off, n_batch 512;
//       t/s = pp / prompt_ms.
//   tg: a one-token prompt, then max_tokens `tg` with ignore_eos and greedy sampling, so
//       exactly `tg` llama_decode calls happen (the prompt token and tg-1 sampled tokens);
//       t/s = tg / (prompt_ms + generation_ms).
//   One warmup run of each, then R reps; mean and sample stddev of the per-rep t/s, as
//   llama-bench's avg_ts / stddev_ts.
//   streams: N concurrent jobs (distinct one-token prompts, tg tokens each, ignore_eos) on
//   one Scheduler with n_slots = max(streams); aggregate = N * tg / wall time from the first
//   Submit to the last finish. Per rep and batch policy (adaptive, always-batch): a fresh
//   Scheduler, one warmup run at the largest N, then each N once; reps go round-robin over
//   the policies so drift spreads evenly over them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/scheduler.h"

namespace {

using hearth::engine::BatchPolicy;
using hearth::engine::GenerationRequest;
using hearth::engine::GenerationResult;
using hearth::engine::Model;
using hearth::engine::Scheduler;
using hearth::engine::SchedulerOptions;
using hearth::engine::Token;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string model;
  int32_t threads = 0;
  int32_t reps = 3;
  int32_t pp = 512;
  int32_t tg = 128;
  int32_t n_ctx = 1024;
  std::string streams = "1,2,4";
  std::string policies = "adaptive,always";
  std::vector<std::string> peer_json;
  std::string llama_bench;
  std::string json_out;
  std::string summarize;
  bool no_streams = false;
};

struct Series {
  std::vector<double> samples;
  double mean() const {
    double s = 0;
    for (double v : samples) s += v;
    return samples.empty() ? 0 : s / static_cast<double>(samples.size());
  }
  // Sample standard deviation, as llama-bench's stddev_ts.
  double stddev() const {
    if (samples.size() < 2) return 0;
    double m = mean(), s = 0;
    for (double v : samples) s += (v - m) * (v - m);
    return std::sqrt(s / static_cast<double>(samples.size() - 1));
  }
  json ToJson() const { return {{"avg_ts", mean()}, {"stddev_ts", stddev()}, {"samples_ts", samples}}; }
};

std::string ReadLoadAvg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) return line.substr(pos + 2);
    }
  }
  return "unknown";
}

std::vector<int32_t> ParseList(const std::string& text) {
  std::vector<int32_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(std::stoi(item));
  }
  return out;
}

hearth::engine::SamplingParams GreedyParams(int32_t max_tokens) {
  hearth::engine::SamplingParams p;
  p.temperature = 0.0f;
  p.repeat_penalty = 1.0f;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

class Bench {
 public:
  Bench(const Args& args, std::shared_ptr<Model> model) : args_(args), model_(std::move(model)), rng_(1234) {}

  std::vector<Token> RandomPrompt(int32_t n) {
    std::uniform_int_distribution<Token> dist(0, model_->info().n_vocab - 1);
    std::vector<Token> prompt(static_cast<size_t>(n));
    for (Token& t : prompt) t = dist(rng_);
    return prompt;
  }

  // pp and tg, one stream, one slot.
  json RunSingle() {
    SchedulerOptions o;
    o.n_ctx = std::max(args_.n_ctx, args_.pp + 16);
    o.n_slots = 1;
    o.n_threads = args_.threads;
    o.n_batch = 512;
    o.prefix_cache = false;
    Scheduler scheduler(model_, o);
    json out;

    if (args_.pp > 0) {
      Series pp;
      for (int r = -1; r < args_.reps; ++r) {
        GenerationRequest req;
        req.prompt = RandomPrompt(args_.pp);
        req.sampling = GreedyParams(1);
        GenerationResult res = scheduler.Generate(std::move(req));
        Check(res, 1);
        if (res.stats.cached_tokens != 0) Fail("pp run reused cached tokens");
        if (r >= 0) pp.samples.push_back(args_.pp * 1000.0 / res.stats.prompt_ms);
      }
      out["pp"] = pp.ToJson();
      out["pp"]["n_prompt"] = args_.pp;
      std::fprintf(stderr, "  hearth pp%d: %.2f ± %.2f t/s\n", args_.pp, pp.mean(), pp.stddev());
    }

    if (args_.tg > 0) {
      Series tg;
      std::vector<double> per_token_ms;
      for (int r = -1; r < args_.reps; ++r) {
        GenerationRequest req;
        req.prompt = RandomPrompt(1);
        req.sampling = GreedyParams(args_.tg);
        GenerationResult res = scheduler.Generate(std::move(req));
        Check(res, args_.tg);
        double ms = res.stats.prompt_ms + res.stats.generation_ms;
        if (r >= 0) {
          tg.samples.push_back(args_.tg * 1000.0 / ms);
          per_token_ms.push_back(ms / args_.tg);
        }
      }
      auto stats = scheduler.Stats();
      double decode_ms = stats.step_ms_by_width.empty() ? 0 : stats.step_ms_by_width[0];
      double mean_token_ms = 0;
      for (double v : per_token_ms) mean_token_ms += v / static_cast<double>(per_token_ms.size());
      out["tg"] = tg.ToJson();
      out["tg"]["n_gen"] = args_.tg;
      // The scheduler's median whole-step time of a one-token step (batch, decode, sampling,
      // text) vs. the mean time per token over the run.
      out["tg"]["step_ms_median"] = decode_ms;
      out["tg"]["per_token_ms"] = mean_token_ms;
      std::fprintf(stderr, "  hearth tg%d: %.2f ± %.2f t/s (%.3f ms/token, median step %.3f ms)\n",
                   args_.tg, tg.mean(), tg.stddev(), mean_token_ms, decode_ms);
    }
    return out;
  }

  // Streams for every policy. Each rep creates one Scheduler per policy in turn (only one is
  // alive at a time: see below), warms it up with one run at the largest N (which also lets
  // the adaptive policy measure its widths), then runs every N once. Reps going round-robin
  // over the policies spread a shared machine's drift evenly over them.
  //
  // Why one at a time: every thread that calls llama_decode becomes the master of its own
  // OpenMP team, and once libgomp manages more threads than there are CPUs it stops spinning
  // in barriers and sleeps in futexes instead; with a second (idle) Scheduler alive, decoding
  // ran at half speed on the 2-vCPU benchmark machine.
  json RunStreams(const std::vector<BatchPolicy>& policies, const std::vector<int32_t>& streams) {
    int32_t max_n = *std::max_element(streams.begin(), streams.end());
    std::vector<std::vector<Series>> agg(policies.size(), std::vector<Series>(streams.size()));
    std::vector<std::vector<double>> widths(policies.size());
    for (int r = 0; r < args_.reps; ++r) {
      for (size_t p = 0; p < policies.size(); ++p) {
        SchedulerOptions o;
        o.n_ctx = args_.n_ctx;
        o.n_slots = max_n;
        o.n_threads = args_.threads;
        o.n_batch = 512;
        o.prefix_cache = false;
        o.batch_policy = policies[p];
        Scheduler scheduler(model_, o);
        RunConcurrent(scheduler, max_n);  // warmup
        for (size_t k = 0; k < streams.size(); ++k) {
          agg[p][k].samples.push_back(RunConcurrent(scheduler, streams[k]));
        }
        widths[p] = scheduler.Stats().step_ms_by_width;  // the last rep's
      }
    }
    json out;
    for (size_t p = 0; p < policies.size(); ++p) {
      double base = 0;
      for (size_t k = 0; k < streams.size(); ++k) {
        if (streams[k] == 1) base = agg[p][k].mean();
      }
      json runs = json::array();
      for (size_t k = 0; k < streams.size(); ++k) {
        json run = agg[p][k].ToJson();
        run["streams"] = streams[k];
        run["ratio_to_1"] = base > 0 ? agg[p][k].mean() / base : 0.0;
        std::fprintf(stderr, "  hearth streams=%d (%s): %.2f ± %.2f t/s aggregate\n", streams[k],
                     PolicyName(policies[p]), agg[p][k].mean(), agg[p][k].stddev());
        runs.push_back(run);
      }
      json& o = out[PolicyName(policies[p])];
      o["runs"] = runs;
      o["step_ms_by_width"] = widths[p];
    }
    return out;
  }

  static const char* PolicyName(BatchPolicy p) {
    switch (p) {
      case BatchPolicy::kAdaptive: return "adaptive";
      case BatchPolicy::kAlwaysBatch: return "always_batch";
      case BatchPolicy::kInterleave: return "interleave";
    }
    return "?";
  }

 private:
  // Returns aggregate tokens/s of n concurrent streams.
  double RunConcurrent(Scheduler& scheduler, int32_t n) {
    std::vector<std::vector<Token>> prompts;
    for (int32_t i = 0; i < n; ++i) prompts.push_back(RandomPrompt(1));
    std::vector<std::shared_ptr<hearth::engine::Job>> jobs;
    Clock::time_point t0 = Clock::now();
    for (int32_t i = 0; i < n; ++i) {
      GenerationRequest req;
      req.prompt = prompts[static_cast<size_t>(i)];
      req.sampling = GreedyParams(args_.tg);
      jobs.push_back(scheduler.Submit(std::move(req)));
    }
    for (auto& job : jobs) Check(job->Wait(), args_.tg);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    return n * args_.tg / s;
  }

  static void Check(const GenerationResult& res, int32_t expected_tokens) {
    if (res.finish == hearth::engine::FinishReason::kError) Fail("generation failed: " + res.error);
    if (res.stats.completion_tokens != expected_tokens) {
      Fail("expected " + std::to_string(expected_tokens) + " tokens, got " +
           std::to_string(res.stats.completion_tokens) + " (finish " + hearth::engine::FinishReasonName(res.finish) + ")");
    }
  }
  [[noreturn]] static void Fail(const std::string& why) { throw std::runtime_error(why); }

  const Args& args_;
  std::shared_ptr<Model> model_;
  std::mt19937 rng_;
};

// llama-bench -o json: an array of tests with n_prompt, n_gen, avg_ts, stddev_ts, samples_ts.
// Several runs are pooled: avg/stddev over all samples; run_avg_ts lists each run's mean.
json PoolPeer(const std::vector<json>& runs, const Args& args) {
  json out;
  for (const char* test : {"pp", "tg"}) {
    Series pooled;
    json run_avgs = json::array();
    json first;
    for (const json& tests : runs) {
      for (const json& t : tests) {
        int n_prompt = t.value("n_prompt", 0), n_gen = t.value("n_gen", 0);
        bool match = std::string(test) == "pp" ? (n_prompt > 0 && n_gen == 0) : (n_prompt == 0 && n_gen > 0);
        if (!match) continue;
        if (first.is_null()) first = t;
        run_avgs.push_back(t.value("avg_ts", 0.0));
        for (const json& v : t.value("samples_ts", json::array())) pooled.samples.push_back(v.get<double>());
        if (t.value("n_threads", args.threads) != args.threads) {
          std::fprintf(stderr, "warning: llama-bench ran with %d threads, hearth with %d\n", t.value("n_threads", 0),
                       args.threads);
        }
      }
    }
    if (first.is_null()) continue;
    json entry = pooled.ToJson();
    entry["run_avg_ts"] = run_avgs;
    for (const char* key : {"n_prompt", "n_gen", "n_threads", "n_batch", "n_ubatch", "flash_attn", "build_commit",
                            "model_type", "model_size", "cpu_info"}) {
      if (first.contains(key)) entry[key] = first[key];
    }
    out[test] = entry;
  }
  return out;
}

json ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  return json::parse(in);
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs llama-bench with the same model, threads, sizes and reps; returns its JSON.
json RunLlamaBench(const Args& args) {
  std::string cmd = ShellQuote(args.llama_bench) + " -m " + ShellQuote(args.model) + " -t " +
                    std::to_string(args.threads) + " -p " + std::to_string(args.pp) + " -n " +
                    std::to_string(args.tg) + " -r " + std::to_string(args.reps) + " -o json";
  std::fprintf(stderr, "  running %s\n", cmd.c_str());
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + cmd);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) text.append(buf, n);
  int rc = pclose(pipe);
  if (rc != 0) throw std::runtime_error("llama-bench failed (status " + std::to_string(rc) + "): " + cmd);
  json j = json::parse(text);
  for (const json& t : j) {
    std::fprintf(stderr, "  llama-bench n_prompt=%d n_gen=%d: %.2f ± %.2f t/s\n", t.value("n_prompt", 0),
                 t.value("n_gen", 0), t.value("avg_ts", 0.0), t.value("stddev_ts", 0.0));
  }
  return j;
}

double MaxSample(const json& entry) {
  double best = 0;
  for (const json& v : entry.value("samples_ts", json::array())) best = std::max(best, v.get<double>());
  return best;
}

// Prints the tables of one model's result object (the --json output).
void PrintModelTables(const json& r, bool header) {
  const json& h = r["hearth"];
  const json& p = r.contains("peer") ? r["peer"] : json::object();
  std::string name = r["model"].value("quantization", "?");
  if (header) {
    std::printf("| model | test | llama-bench t/s | hearth t/s | ratio | ratio of best reps |\n");
    std::printf("|---|---|---:|---:|---:|---:|\n");
  }
  for (const char* test : {"pp", "tg"}) {
    if (!h.contains(test)) continue;
    std::string label = std::string(test) + std::to_string(h[test].value(std::string(test) == "pp" ? "n_prompt" : "n_gen", 0));
    double hv = h[test]["avg_ts"], hs = h[test]["stddev_ts"];
    if (p.contains(test)) {
      double pv = p[test]["avg_ts"], ps = p[test]["stddev_ts"];
      double pb = MaxSample(p[test]), hb = MaxSample(h[test]);
      std::printf("| %s | %s | %.2f ± %.2f | %.2f ± %.2f | %.3f | %.3f |\n", name.c_str(), label.c_str(), pv, ps, hv,
                  hs, pv > 0 ? hv / pv : 0.0, pb > 0 ? hb / pb : 0.0);
    } else {
      std::printf("| %s | %s | – | %.2f ± %.2f | – | – |\n", name.c_str(), label.c_str(), hv, hs);
    }
  }
}

void PrintStreamTables(const json& r, bool header) {
  if (!r.contains("streams")) return;
  std::string name = r["model"].value("quantization", "?");
  if (header) {
    std::printf("| model | policy | streams | aggregate t/s | ratio to 1 stream | step ms by width |\n");
    std::printf("|---|---|---:|---:|---:|---|\n");
  }
  for (auto& [policy, data] : r["streams"].items()) {
    std::string widths;
    for (const json& v : data["step_ms_by_width"]) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%s%.2f", widths.empty() ? "" : " / ", v.get<double>());
      widths += buf;
    }
    bool first = true;
    for (const json& run : data["runs"]) {
      std::printf("| %s | %s | %d | %.2f ± %.2f | %.3f | %s |\n", name.c_str(), policy.c_str(),
                  run["streams"].get<int>(), run["avg_ts"].get<double>(), run["stddev_ts"].get<double>(),
                  run["ratio_to_1"].get<double>(), first ? widths.c_str() : "");
      first = false;
    }
  }
}

void Summarize(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  json all = json::parse(in);
  std::printf("date %s, hearth %s, llama.cpp %.12s, cpu %s, threads %d, reps %d%s\n\n",
              all.value("date", "?").c_str(), all.value("hearth_commit", "?").c_str(),
              all.value("llama_commit", "?").c_str(), all.value("cpu", "?").c_str(), all.value("threads", 0),
              all.value("reps", 0), all.value("realtime", false) ? ", SCHED_FIFO" : "");
  bool header = true;
  for (const json& r : all["runs"]) {
    PrintModelTables(r, header);
    header = false;
  }
  std::printf("\n");
  header = true;
  for (const json& r : all["runs"]) {
    PrintStreamTables(r, header);
    header = false;
  }
  std::printf("\n| model | llama-bench run means (pp; tg), before / after hearth | load avg before → after |\n");
  std::printf("|---|---|---|\n");
  for (const json& r : all["runs"]) {
    std::string peer_runs;
    for (const char* test : {"pp", "tg"}) {
      if (!r.contains("peer") || !r["peer"].contains(test)) continue;
      std::string part;
      for (const json& v : r["peer"][test].value("run_avg_ts", json::array())) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%s%.1f", part.empty() ? "" : " / ", v.get<double>());
        part += buf;
      }
      peer_runs += (peer_runs.empty() ? "" : "; ") + part;
    }
    std::printf("| %s | %s | %s → %s |\n", r["model"].value("quantization", "?").c_str(), peer_runs.c_str(),
                r.value("loadavg_before", "?").c_str(), r.value("loadavg_after", "?").c_str());
  }
}

int Main(int argc, char** argv) {
  Args args;
  CLI::App app{"hearth engine benchmark (llama-bench method)"};
  app.add_option("--model", args.model, "GGUF model");
  app.add_option("--threads", args.threads, "threads (0: physical cores)");
  app.add_option("--reps", args.reps, "repetitions")->check(CLI::PositiveNumber);
  app.add_option("--pp", args.pp, "prompt tokens (0: skip)")->check(CLI::NonNegativeNumber);
  app.add_option("--tg", args.tg, "generated tokens (0: skip)")->check(CLI::NonNegativeNumber);
  app.add_option("--n-ctx", args.n_ctx, "context per slot");
  app.add_option("--streams", args.streams, "comma-separated stream counts");
  app.add_flag("--no-streams", args.no_streams, "skip the concurrent-streams test");
  app.add_option("--policies", args.policies, "batch policies: adaptive,always,interleave");
  app.add_option("--peer-json", args.peer_json, "llama-bench -o json output(s) to compare with");
  app.add_option("--llama-bench", args.llama_bench, "llama-bench binary: run it before and after hearth's pp/tg");
  app.add_option("--json", args.json_out, "write results here");
  app.add_option("--summarize", args.summarize, "print the tables of a combined run file and exit");
  CLI11_PARSE(app, argc, argv);

  if (!args.summarize.empty()) {
    Summarize(args.summarize);
    return 0;
  }
  if (args.model.empty()) {
    std::fprintf(stderr, "--model is required\n");
    return 2;
  }
  if (args.threads <= 0) args.threads = hearth::engine::DefaultThreadCount();

  json result;
  result["loadavg_before"] = ReadLoadAvg();
  hearth::engine::ModelLoadOptions load;
  load.skip_validation = true;  // models generated by hearth itself
  auto model = Model::Load(args.model, load);
  const auto& info = model->info();
  result["model"] = {{"path", info.path},         {"description", info.description},
                     {"quantization", info.quantization}, {"size_bytes", info.size_bytes},
                     {"n_params", info.n_params}, {"n_vocab", info.n_vocab}};
  result["threads"] = args.threads;
  result["reps"] = args.reps;
  result["n_ctx"] = args.n_ctx;
  result["cpu"] = CpuModel();
  std::fprintf(stderr, "hearth_bench_engine: %s (%s), %d threads, %d reps\n", info.description.c_str(),
               info.quantization.c_str(), args.threads, args.reps);

  Bench bench(args, model);
  std::vector<json> peer_runs;
  for (const std::string& path : args.peer_json) peer_runs.push_back(ReadJsonFile(path));
  if (!args.llama_bench.empty()) peer_runs.push_back(RunLlamaBench(args));
  result["hearth"] = bench.RunSingle();
  if (!args.llama_bench.empty()) peer_runs.push_back(RunLlamaBench(args));

  if (!args.no_streams) {
    std::vector<int32_t> streams = ParseList(args.streams);
    if (streams.empty()) throw std::runtime_error("--streams is empty");
    std::vector<BatchPolicy> policies;
    for (const std::string& name : {std::string("adaptive"), std::string("always"), std::string("interleave")}) {
      if (("," + args.policies + ",").find("," + name + ",") == std::string::npos) continue;
      policies.push_back(name == "adaptive" ? BatchPolicy::kAdaptive
                         : name == "always" ? BatchPolicy::kAlwaysBatch
                                            : BatchPolicy::kInterleave);
    }
    if (policies.empty()) throw std::runtime_error("--policies names none of adaptive, always, interleave");
    json sj = bench.RunStreams(policies, streams);
    result["streams"] = sj;
  }
  if (!peer_runs.empty()) {
    result["peer"] = PoolPeer(peer_runs, args);
    json ratio;
    for (const char* test : {"pp", "tg"}) {
      if (result["peer"].contains(test) && result["hearth"].contains(test)) {
        ratio[test] = result["hearth"][test]["avg_ts"].get<double>() / result["peer"][test]["avg_ts"].get<double>();
      }
    }
    result["ratio"] = ratio;
  }
  result["loadavg_after"] = ReadLoadAvg();

  PrintModelTables(result, true);
  std::printf("\n");
  PrintStreamTables(result, true);
  std::fflush(stdout);
  if (!args.json_out.empty()) {
    std::ofstream out(args.json_out);
    out << result.dump(2) << "\n";
    if (!out) throw std::runtime_error("cannot write " + args.json_out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hearth_bench_engine: %s\n", e.what());
    return 1;
  }
}
