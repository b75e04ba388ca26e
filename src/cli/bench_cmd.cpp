#include "cli/bench_cmd.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <curl/curl.h>
#include <unistd.h>

#include "bench/calibrate.h"
#include "bench/prompts.h"
#include "bench/report.h"
#include "bench/runner.h"

namespace hearth::cli {

namespace {

struct BenchArgs {
  std::vector<std::string> endpoints, apis, models;
  std::string prompts_file, categories, json_out, html_out, policy, local, cloud;
  int runs = 100, warmup = 5, concurrency = 1, cold_runs = 3;
  double failure_threshold = 0.5, connect_timeout = 10, read_timeout = 120;
  bool cold = false, calibrate = false, no_fim = false, no_progress = false, quiet = false;
  size_t bootstrap = 1000;
  uint64_t seed = 1;
};

std::string EnvKeyName(const std::string& name) {
  std::string out = "HEARTH_BENCH_KEY_";
  for (char c : name) out += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : '_';
  return out;
}

bench::Api GuessApi(const std::string& url) {
  if (url.find("anthropic.com") != std::string::npos) return bench::Api::kAnthropic;
  if (url.find(":11434") != std::string::npos) return bench::Api::kOllama;
  return bench::Api::kOpenAI;
}

// --api applies to the --endpoint before it; an --api before every --endpoint is the default.
std::vector<bench::Endpoint> BuildEndpoints(const BenchArgs& a, CLI::App* cmd, CLI::Option* ep_opt,
                                            CLI::Option* api_opt, bool no_fim) {
  std::vector<bench::Endpoint> eps;
  std::vector<int> api_of(a.endpoints.size(), -1);
  std::optional<bench::Api> default_api;
  size_t ei = 0, ai = 0;
  for (const CLI::Option* o : cmd->parse_order()) {
    if (o == ep_opt) {
      ++ei;
    } else if (o == api_opt) {
      if (ai >= a.apis.size()) break;
      bench::Api api;
      if (!bench::ParseApi(a.apis[ai], &api)) {
        throw std::runtime_error("--api " + a.apis[ai] + ": expected ollama, openai, llamacpp or anthropic");
      }
      if (ei == 0) default_api = api;
      else api_of[ei - 1] = static_cast<int>(api);
      ++ai;
    }
  }
  for (size_t i = 0; i < a.endpoints.size(); ++i) {
    const std::string& spec = a.endpoints[i];
    const size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 >= spec.size()) {
      throw std::runtime_error("--endpoint " + spec + ": expected NAME=URL");
    }
    bench::Endpoint e;
    e.name = spec.substr(0, eq);
    e.url = spec.substr(eq + 1);
    while (!e.url.empty() && e.url.back() == '/') e.url.pop_back();
    if (e.url.rfind("http://", 0) != 0 && e.url.rfind("https://", 0) != 0) {
      throw std::runtime_error("--endpoint " + spec + ": the URL must start with http:// or https://");
    }
    for (const auto& other : eps) {
      if (other.name == e.name) throw std::runtime_error("--endpoint: the name " + e.name + " is given twice");
    }
    e.api = api_of[i] >= 0 ? static_cast<bench::Api>(api_of[i]) : default_api.value_or(GuessApi(e.url));
    e.fim = !no_fim;
    if (const char* key = std::getenv(EnvKeyName(e.name).c_str()); key != nullptr) e.key = key;
    eps.push_back(std::move(e));
  }
  for (const std::string& m : a.models) {
    const size_t eq = m.find('=');
    if (eq == std::string::npos) {
      for (auto& e : eps) e.model = m;  // one model name for all
      continue;
    }
    bool found = false;
    for (auto& e : eps) {
      if (e.name == m.substr(0, eq)) {
        e.model = m.substr(eq + 1);
        found = true;
      }
    }
    if (!found) throw std::runtime_error("--model " + m + ": no endpoint named " + m.substr(0, eq));
  }
  for (auto& e : eps) {
    if (e.model.empty() && e.api != bench::Api::kLlamaCpp) e.model = "default";
  }
  return eps;
}

void WriteFile(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

size_t IndexOf(const std::vector<bench::Endpoint>& eps, const std::string& name, size_t fallback) {
  if (name.empty()) return fallback;
  for (size_t i = 0; i < eps.size(); ++i) {
    if (eps[i].name == name) return i;
  }
  throw std::runtime_error("no endpoint named " + name);
}

void Calibrate(const BenchArgs& a, const bench::BenchConfig& cfg, const bench::Analysis& an) {
  if (cfg.endpoints.size() < 2) throw std::runtime_error("--calibrate needs two endpoints (local and cloud)");
  const size_t local = IndexOf(cfg.endpoints, a.local, 0);
  const size_t cloud = IndexOf(cfg.endpoints, a.cloud, local == 0 ? 1 : 0);
  if (local == cloud) throw std::runtime_error("--local and --cloud name the same endpoint");
  const bench::LinearFit& fl = an.fits[local].fit;
  const bench::LinearFit& fc = an.fits[cloud].fit;
  if (!fl.ok || !fc.ok) {
    throw std::runtime_error("cannot calibrate: an endpoint has too few successful requests of different lengths to fit");
  }
  const std::string& ln = cfg.endpoints[local].name;
  const std::string& cn = cfg.endpoints[cloud].name;
  int value = 0;
  if (auto n = bench::Crossover(fl, fc)) {
    if (bench::Faster(fl, fc, 0) > 0) {
      throw std::runtime_error("cannot calibrate: " + cn + " wins short outputs and " + ln +
                               " long ones, which crossover_tokens cannot express");
    }
    value = static_cast<int>(std::lround(*n));
  } else if (bench::Faster(fl, fc, 1) > 0) {
    value = 1;  // the cloud endpoint wins at every length
    std::fprintf(stderr, "hearth: %s is faster than %s at every output length\n", cn.c_str(), ln.c_str());
  } else {
    throw std::runtime_error("cannot calibrate: " + ln + " is faster than " + cn +
                             " at every output length; crossover_tokens left unchanged");
  }
  value = std::max(1, std::min(value, 1000000));
  const std::string old = bench::CalibratePolicyFile(a.policy, value);
  std::printf("%s: crossover_tokens %s -> %d (%s local, %s cloud)\n", a.policy.c_str(), old.c_str(), value,
              ln.c_str(), cn.c_str());
}

void Run(const BenchArgs& a, CLI::App* cmd, CLI::Option* ep_opt, CLI::Option* api_opt) {
  if (a.calibrate && a.policy.empty()) throw std::runtime_error("--calibrate needs --policy FILE");
  bench::BenchConfig cfg;
  cfg.endpoints = BuildEndpoints(a, cmd, ep_opt, api_opt, a.no_fim);
  std::string suite = bench::DefaultPromptSuiteText();
  if (!a.prompts_file.empty()) {
    std::ifstream in(a.prompts_file, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + a.prompts_file);
    std::stringstream ss;
    ss << in.rdbuf();
    suite = ss.str();
  }
  cfg.categories = bench::SelectCategories(bench::ParsePromptSuite(suite), a.categories);
  cfg.runs = a.runs;
  cfg.warmup = a.warmup;
  cfg.concurrency = a.concurrency;
  cfg.failure_threshold = a.failure_threshold;
  cfg.timeouts.connect_s = a.connect_timeout;
  cfg.timeouts.read_s = a.read_timeout;
  cfg.cold = a.cold;
  cfg.cold_runs = a.cold_runs;
  cfg.progress = !a.no_progress;
  if (a.cold) {
    for (const auto& e : cfg.endpoints) {
      if (e.api != bench::Api::kOllama) {
        std::fprintf(stderr, "hearth: --cold: %s is not an Ollama API endpoint; no cold start measured for it\n", e.name.c_str());
      }
    }
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  bench::BenchResult result = bench::RunBench(cfg);
  const bench::Analysis an = bench::Analyze(cfg, result, a.bootstrap, a.seed);
  const nlohmann::json report = bench::ReportJson(cfg, result, an);
  if (!a.quiet) bench::PrintTable(stdout, cfg, result, an);
  std::fflush(stdout);
  if (!a.json_out.empty()) WriteFile(a.json_out, report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  if (!a.html_out.empty()) WriteFile(a.html_out, bench::ReportHtml(report));
  if (result.aborted) throw std::runtime_error("benchmark aborted: " + result.abort_reason);
  if (a.calibrate) Calibrate(a, cfg, an);
}

}  // namespace

void AddBenchCommand(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Benchmark LLM endpoints side by side (TTFT, total time, tokens/s) and calibrate crossover_tokens");
  auto* ep = cmd->add_option("--endpoint", args->endpoints,
                             "NAME=URL of an endpoint (repeatable); API key from env HEARTH_BENCH_KEY_<NAME>")
                 ->required()
                 ->expected(1)
                 ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* api = cmd->add_option("--api", args->apis,
                              "ollama|openai|llamacpp|anthropic for the --endpoint before it (before any "
                              "--endpoint: the default; else guessed from the URL)")
                  ->expected(1)
                  ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--model", args->models, "NAME=MODEL: the model to ask endpoint NAME for (MODEL alone: all)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--prompts", args->prompts_file, "prompt suite JSON (default: the built-in bench/prompts.json)");
  cmd->add_option("--categories", args->categories, "comma-separated: autocomplete,function,refactor,explain (default all)");
  cmd->add_option("--runs", args->runs, "measured requests per endpoint and category (default 100)")->check(CLI::Range(1, 1000000));
  cmd->add_option("--warmup", args->warmup, "discarded requests per endpoint and category first (default 5)")->check(CLI::Range(0, 1000000));
  cmd->add_option("--concurrency", args->concurrency, "requests in flight at once (default 1)")->check(CLI::Range(1, 1024));
  cmd->add_option("--failure-threshold", args->failure_threshold,
                  "abort when more than this fraction of requests failed (after 10; default 0.5)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--connect-timeout", args->connect_timeout, "seconds to connect (default 10)")->check(CLI::PositiveNumber);
  cmd->add_option("--read-timeout", args->read_timeout, "seconds without a byte before a request times out (default 120)")->check(CLI::PositiveNumber);
  cmd->add_option("--json", args->json_out, "write the full report (every sample) as JSON to FILE ('-': stdout)");
  cmd->add_option("--html", args->html_out, "write a self-contained HTML report with charts to FILE");
  cmd->add_flag("--cold", args->cold, "measure cold start first: unload the model (Ollama API keep_alive 0), time the next request");
  cmd->add_option("--cold-runs", args->cold_runs, "cold-start measurements per endpoint (default 3)")->check(CLI::Range(1, 1000));
  cmd->add_flag("--calibrate", args->calibrate, "write the local/cloud crossover into --policy FILE's crossover_tokens");
  cmd->add_option("--policy", args->policy, "routing policy file (hearth.yaml) for --calibrate");
  cmd->add_option("--local", args->local, "the local endpoint for --calibrate (default: the first)");
  cmd->add_option("--cloud", args->cloud, "the cloud endpoint for --calibrate (default: the second)");
  cmd->add_option("--bootstrap", args->bootstrap, "bootstrap resamples for the crossover interval (default 1000)")->check(CLI::Range(0, 1000000));
  cmd->add_option("--seed", args->seed, "bootstrap random seed (default 1)");
  cmd->add_flag("--no-fim", args->no_fim, "send autocomplete as chat, not through the endpoint's FIM API");
  cmd->add_flag("--no-progress", args->no_progress, "no progress bar (it is shown only on a terminal anyway)");
  cmd->add_flag("-q,--quiet", args->quiet, "no table on stdout");
  cmd->callback([args, cmd, ep, api] {
    try {
      Run(*args, cmd, ep, api);
    } catch (const CLI::RuntimeError&) {
      throw;
    } catch (const std::exception& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "hearth: %s\n", e.what());
      throw CLI::RuntimeError(1);
    }
  });
}

}  // namespace hearth::cli
