#include "bench/runner.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <unistd.h>

namespace hearth::bench {

namespace {

struct Job {
  size_t endpoint, category;
  int run;  // < 0: warmup
  size_t prompt;
};

std::string NowIso() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

class Progress {
 public:
  Progress(bool on, size_t total) : on_(on && isatty(STDERR_FILENO) == 1), total_(total) {}
  void Update(size_t done, size_t failed, const char* phase) {
    if (!on_) return;
    const int width = 30;
    const double frac = total_ ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
    const int fill = static_cast<int>(frac * width + 0.5);
    std::string bar(static_cast<size_t>(fill), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%-7s [%s] %zu/%zu  failures %zu ", phase, bar.c_str(), done, total_, failed);
    std::fflush(stderr);
  }
  void Finish() {
    if (on_) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  size_t total_;
};

}  // namespace

BenchResult RunBench(const BenchConfig& cfg) {
  if (cfg.endpoints.empty()) throw std::runtime_error("no endpoints: give --endpoint NAME=URL");
  if (cfg.categories.empty()) throw std::runtime_error("no categories selected");
  if (cfg.runs < 1) throw std::runtime_error("--runs must be at least 1");
  if (cfg.warmup < 0) throw std::runtime_error("--warmup must not be negative");
  if (cfg.concurrency < 1) throw std::runtime_error("--concurrency must be at least 1");
  BenchResult out;
  out.started_at = NowIso();
  const auto t0 = std::chrono::steady_clock::now();

  // Cold start: sequential, so one endpoint's load does not slow another's.
  if (cfg.cold) {
    const Category& cat = cfg.categories.front();
    for (int i = 0; i < cfg.cold_runs; ++i) {
      for (size_t e = 0; e < cfg.endpoints.size(); ++e) {
        if (cfg.endpoints[e].api != Api::kOllama) continue;
        Prompt p = cat.prompts[static_cast<size_t>(i) % cat.prompts.size()];
        out.cold.push_back({e, RunColdStart(cfg.endpoints[e], p, cfg.timeouts)});
      }
    }
  }

  // The job order: warmup rounds, then measured rounds; within a round every category, and
  // within a category every endpoint with the same prompt.
  std::vector<Job> jobs;
  for (int r = -cfg.warmup; r < cfg.runs; ++r) {
    for (size_t c = 0; c < cfg.categories.size(); ++c) {
      const size_t np = cfg.categories[c].prompts.size();
      const size_t prompt = static_cast<size_t>(r + cfg.warmup) % np;
      for (size_t e = 0; e < cfg.endpoints.size(); ++e) jobs.push_back({e, c, r, prompt});
    }
  }

  std::mutex mu;
  size_t next = 0, done = 0, failed = 0, finished = 0;
  bool abort = false;
  Progress progress(cfg.progress, jobs.size());
  auto worker = [&] {
    for (;;) {
      Job job;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (abort || next >= jobs.size()) return;
        job = jobs[next++];
      }
      const Category& cat = cfg.categories[job.category];
      const Prompt& prompt = cat.prompts[job.prompt];
      Result r = RunRequest(cfg.endpoints[job.endpoint], prompt, cfg.timeouts);
      std::lock_guard<std::mutex> lock(mu);
      ++done;
      ++finished;
      if (!r.ok) ++failed;
      if (job.run >= 0) out.samples.push_back({job.endpoint, job.category, job.run, prompt.id, r});
      progress.Update(done, failed, job.run < 0 ? "warmup" : "bench");
      if (!abort && finished >= 10 &&
          static_cast<double>(failed) / static_cast<double>(finished) > cfg.failure_threshold) {
        abort = true;
        char buf[160];
        std::snprintf(buf, sizeof buf, "%zu of %zu requests failed (more than the failure threshold %.0f%%)",
                      failed, finished, cfg.failure_threshold * 100);
        out.abort_reason = buf;
        if (!r.ok) out.abort_reason += "; last: " + r.failure + (r.detail.empty() ? "" : " (" + r.detail.substr(0, 120) + ")");
      }
    }
  };
  std::vector<std::thread> threads;
  const size_t n_threads = std::min<size_t>(static_cast<size_t>(cfg.concurrency), jobs.size());
  for (size_t i = 0; i < n_threads; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  progress.Finish();
  out.aborted = abort;
  out.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace hearth::bench
