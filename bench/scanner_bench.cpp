// Scanner throughput on ~64 MB of generated source-code-like text (C++, Python, JSON, YAML lines
// from a seeded generator, with a few planted secrets and personal data), single thread and
// several threads, and the throughput of a std::regex-only scanner (the "peer") on a 1 MB sample.
//
//   hearth_bench_scanner [--mb 64] [--runs 5] [--peer-kb 1024] [--threads 2] [--show 0]
// --show N prints the first N findings with their line, to audit false positives;
// --write FILE writes the corpus to FILE and exits; --corpus FILE scans FILE instead of the
// generated text (e.g. a concatenation of real sources).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "router/scanner.h"

namespace {

using hearth::router::Finding;
using hearth::router::Scanner;
using hearth::router::ScannerConfig;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// CPU time of this thread: on a shared, loaded machine wall time also counts other processes.
double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  std::string Text(size_t bytes, int planted_every_kb) {
    std::string out;
    out.reserve(bytes + 4096);
    size_t next_plant = static_cast<size_t>(planted_every_kb) * 1024;
    while (out.size() < bytes) {
      out += Line();
      out += '\n';
      if (out.size() >= next_plant) {
        out += Planted();
        out += '\n';
        next_plant += static_cast<size_t>(planted_every_kb) * 1024;
        ++planted_;
      }
    }
    return out;
  }
  int planted() const { return planted_; }

 private:
  size_t Pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  int Num(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  template <size_t N>
  const char* Of(const char* const (&words)[N]) {
    return words[Pick(N)];
  }

  std::string Id() {
    // No "token" here: lines 20 and 21 bring it, about once per 1.5 KB, as often as in llama.cpp's
    // own sources (20,880 times in 30 MB of its .cpp/.h/.py/.json/.md files).
    static const char* const kParts[] = {
        "request", "model",  "slot",    "batch",  "cache",  "user",   "config", "path",    "buffer",  "index",
        "count",   "result", "handler", "stream", "router", "scan",   "queue",  "prompt",  "context", "size",
        "name",    "value",  "item",    "node",   "key",    "offset", "length", "file",    "line",    "column",
        "weight",  "layer",  "tensor",  "thread", "worker", "client", "server", "session", "schema",  "field",
        "record",  "entry",  "option",  "param",  "state",  "status", "error",  "message", "header",  "body",
        "payload", "event",  "timer",   "vocab",  "logits"};
    std::string id = Of(kParts);
    if (Pick(2) == 0) id += std::string("_") + Of(kParts);
    if (Pick(6) == 0) id += std::to_string(Num(0, 9));
    return id;
  }
  std::string Type() {
    static const char* const kTypes[] = {"int", "size_t", "std::string", "double", "Request", "Slot", "Tensor", "bool"};
    return Of(kTypes);
  }
  std::string Words(int n) {
    static const char* const kWords[] = {"the",    "model",   "returns", "a",      "list",   "of",      "tokens",
                                         "for",    "each",    "request", "when",   "cache",  "is",      "full",
                                         "we",     "evict",   "oldest",  "slot",   "and",    "retry",   "prompt",
                                         "length", "exceeds", "context", "window", "stream", "response"};
    std::string s;
    for (int i = 0; i < n; ++i) s += std::string(i ? " " : "") + Of(kWords);
    return s;
  }
  std::string Hex(int n) {
    static const char kHex[] = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < n; ++i) s += kHex[Pick(16)];
    return s;
  }
  std::string Version() {
    return std::to_string(Num(0, 4)) + "." + std::to_string(Num(0, 30)) + "." + std::to_string(Num(0, 99));
  }

  std::string Line() {
    switch (Pick(48)) {
      case 0: return "#include <" + Id() + "/" + Id() + ".h>";
      case 1: return "  auto " + Id() + " = " + Id() + "(" + Id() + ", " + std::to_string(Num(0, 4096)) + ");";
      case 2:
        return "  if (" + Id() + " != nullptr && " + Id() + "->" + Id() + "() > " + std::to_string(Num(0, 512)) + ") {";
      case 3: return "  // " + Words(Num(4, 12)) + ".";
      case 4:
        return "  std::vector<" + Type() + "> " + Id() + "_{" + std::to_string(Num(0, 99)) + ", " +
               std::to_string(Num(0, 99)) + "};";
      case 5: return "  return " + Id() + "." + Id() + "(\"" + Words(Num(1, 4)) + "\");";
      case 6: return "}";
      case 7: return "    " + Id() + " = self." + Id() + "(" + Id() + ", timeout=" + std::to_string(Num(1, 120)) + ")";
      case 8: return "def " + Id() + "(self, " + Id() + ", " + Id() + "=" + std::to_string(Num(0, 64)) + "):";
      case 9: return "    logger.info(\"" + Words(Num(2, 6)) + " %s\", " + Id() + ")";
      case 10: return "    for " + Id() + " in " + Id() + ":";
      case 11: return "  \"" + Id() + "\": \"" + Words(Num(1, 5)) + "\",";
      case 12: return "  \"" + Id() + "\": " + std::to_string(Num(0, 100000)) + ",";
      case 13:
        return "  \"" + Id() + "\": [" + std::to_string(Num(0, 9)) + ", " + std::to_string(Num(10, 99)) + ", " +
               std::to_string(Num(100, 999)) + "],";
      case 14: return "  \"version\": \"" + Version() + "\",";
      case 15: return "  " + Id() + ": " + Id();
      case 16: return "  - name: " + Id();
      case 17: return "    image: registry.example.com/" + Id() + ":" + Version();
      case 18:
        if (Pick(8) != 0) return Line2();
        return "commit " + Hex(40) + " (" + std::to_string(Num(2019, 2026)) + "-" + std::to_string(Num(10, 12)) + "-" +
               std::to_string(Num(10, 28)) + ")";
      case 19:
        if (Pick(8) != 0) return Line2();
        return "  id: " + Hex(8) + "-" + Hex(4) + "-" + Hex(4) + "-" + Hex(4) + "-" + Hex(12);
      case 20:
        if (Pick(2) != 0) return Line2();
        return "max_tokens: " + std::to_string(Num(16, 8192)) + "  # " + Words(3);
      case 21:
        if (Pick(2) != 0) return Line2();
        return "    " + Id() + " = tokens[" + Id() + "]";
      case 22:
        if (Pick(4) != 0) return Line2();
        return "  constexpr uint32_t k" + std::string(1, static_cast<char>('A' + Pick(26))) + Id() + " = 0x" + Hex(8) +
               ";";
      case 23:
        return "    " + Id() + "." + Id() + "(" + Id() + ", " + std::to_string(Num(0, 9)) + ")  # " + Words(Num(2, 6));
      default: return Line2();
    }
  }

  // The common lines again, without the token-heavy ones (20, 21), so those stay rare.
  std::string Line2() {
    std::string line;
    do line = Line();
    while (line.find("tokens") != std::string::npos);
    return line;
  }

  std::string Planted() {
    // Adjacent literals keep the fakes out of this file's own text for secret scanners.
    switch (Pick(8)) {
      case 0:
        return "aws_access_key_id = AKIA"
               "IOSFODNN7EXAMPLE";
      case 1:
        return "GITHUB_TOKEN=gh"
               "p_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d";
      case 2: return "  \"contact\": \"jane.doe@example.com\",";
      case 3: return "DATABASE_URL=postgres://app:Xk9mP2vLq7@db.internal:5432/app";
      case 4: return "card = \"4111 1111 1111 1111\"";
      case 5:
        return "Authorization: Bearer ey"
               "JhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_"
               "adQssw5c";
      case 6: return "  password: Tr0ub4dor&3";
      default: return "  phone: \"+44 20 7946 0958\"";
    }
  }

  std::mt19937 rng_;
  int planted_ = 0;
};

// The peer: the same detection set as plain std::regex searches, one pass per pattern (std::regex
// has no multi-pattern mode). Validation (Luhn, mod-97, ...) is left out: it is negligible next
// to the searching.
std::vector<std::regex> PeerRegexes() {
  const auto icase = std::regex::ECMAScript | std::regex::icase;
  const auto plain = std::regex::ECMAScript;
  std::vector<std::regex> r;
  r.emplace_back(R"(\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b)", plain);
  r.emplace_back(
      R"((?:aws_?secret_?(?:access_?)?key|secret_?access_?key)["'`]?[ \t]*(?::=|=>|=|:)[ \t]*["'`]?[A-Za-z0-9/+]{40})",
      icase);
  r.emplace_back(R"(\bgh[pousr]_[A-Za-z0-9]{36,255}\b)", plain);
  r.emplace_back(R"(\bgithub_pat_\w{70,255}\b)", plain);
  r.emplace_back(R"(\bglpat-[\w-]{20,64}\b)", plain);
  r.emplace_back(R"(\bxox[abprs]-[A-Za-z0-9-]{10,}\b)", plain);
  r.emplace_back(R"(\b[rs]k_live_[A-Za-z0-9]{20,}\b)", plain);
  r.emplace_back(R"(\bAIza[\w-]{35}\b)", plain);
  r.emplace_back(R"(\bsk-(?:proj-|svcacct-|admin-)?[\w-]{20,}\b)", plain);
  r.emplace_back(R"(\bsk-ant-(?:api|admin)\d\d-[\w-]{20,}\b)", plain);
  r.emplace_back(R"(-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END[^-]*-----)", plain);
  r.emplace_back(R"(eyJ[\w-]{10,}\.[\w-]{2,}\.[\w-]{8,})", plain);
  r.emplace_back(R"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@"'<>]*:[^\s/@"'<>]+@)", plain);
  r.emplace_back(
      R"((?:secret|token|passw(?:or)?d|pwd|api_?key|api-key|apikey|private|credential)[\w.-]{0,48}["'`]?[ \t]{0,4}(?::=|=>|=|:)[ \t]{0,4}["'`]?[^\s"'`]+)",
      icase);
  r.emplace_back(R"((?:["'`=:]|(?:bearer|token)[ \t])[ \t]{0,3}["'`]?[A-Za-z0-9+/_-]{24,256})", plain);
  r.emplace_back(R"([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24})", plain);
  r.emplace_back(R"(\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b)", plain);
  r.emplace_back(R"(\b[2-6]\d{3}(?:[ -]?\d){9,15}\b)", plain);
  r.emplace_back(R"(\b\d{3}-\d{2}-\d{4}\b)", plain);
  r.emplace_back(R"(\b\d{3}[ -]\d{3}[ -]\d{4}\b)", plain);
  r.emplace_back(R"(\bNHS(?:[ \t]*(?:no\.?|number|num|#))?[ \t]*[:#=]?[ \t]*\d{10}\b)", icase);
  r.emplace_back(R"(\+[1-9][0-9 .()-]{6,24}[0-9])", plain);
  r.emplace_back(R"(\b[2-9]\d{2}[-. ][2-9]\d{2}[-. ]\d{4}\b)", plain);
  r.emplace_back(R"(\([2-9]\d{2}\) ?[2-9]\d{2}[-. ]\d{4}\b)", plain);
  r.emplace_back(R"(\b0[1-9]\d{1,3}[ /-]\d{3,4}[ -]?\d{3,4}\b)", plain);
  r.emplace_back(R"(\b0[1-9](?:[ .]\d{2}){4}\b)", plain);
  r.emplace_back(R"(\b(?:MRN|medical record number)[ \t]*(?:no\.?|number|num|#)?[ \t]*[:#=-]?[ \t]*\d{5,12}\b)", icase);
  return r;
}

size_t PeerScan(const std::vector<std::regex>& regexes, const std::string& text) {
  size_t matches = 0;
  for (const std::regex& re : regexes) {
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) ++matches;
  }
  return matches;
}

int Arg(int argc, char** argv, const char* name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int mb = Arg(argc, argv, "--mb", 64);
  const int runs = Arg(argc, argv, "--runs", 5);
  const int peer_kb = Arg(argc, argv, "--peer-kb", 1024);
  const int threads = Arg(argc, argv, "--threads", 2);
  const int show = Arg(argc, argv, "--show", 0);

  Generator generator(20261122);
  std::string text;
  const char* corpus = nullptr;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--corpus") == 0) corpus = argv[i + 1];
  }
  if (corpus != nullptr) {
    FILE* f = std::fopen(corpus, "rb");
    if (f == nullptr) return 1;
    char buffer[1 << 16];
    for (size_t got; (got = std::fread(buffer, 1, sizeof buffer, f)) > 0;) text.append(buffer, got);
    std::fclose(f);
  } else {
    text = generator.Text(static_cast<size_t>(mb) << 20, 4096);
  }
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--write") == 0) {
      FILE* f = std::fopen(argv[i + 1], "wb");
      if (f == nullptr || std::fwrite(text.data(), 1, text.size(), f) != text.size()) return 1;
      std::fclose(f);
      return 0;
    }
  }
  if (corpus != nullptr) {
    std::printf("corpus: %.1f MB from %s\n", text.size() / 1e6, corpus);
  } else {
    std::printf("corpus: %.1f MB of code-like text, %d planted secrets/personal data (one per 4 MB)\n",
                text.size() / 1e6, generator.planted());
  }

  // Built-in rules only (the default policy), then with one custom pattern (a second Vectorscan
  // pass over the text).
  std::vector<Finding> findings;
  auto measure = [&](const Scanner& s, const char* label) {
    findings = s.Scan(text);  // warm-up
    std::vector<double> gbps, cpu_gbps;
    for (int r = 0; r < runs; ++r) {
      auto a = Clock::now();
      double c = ThreadCpuSeconds();
      findings = s.Scan(text);
      cpu_gbps.push_back(text.size() / (ThreadCpuSeconds() - c) / 1e9);
      gbps.push_back(text.size() / Seconds(a, Clock::now()) / 1e9);
    }
    std::sort(gbps.begin(), gbps.end());
    std::sort(cpu_gbps.begin(), cpu_gbps.end());
    std::printf(
        "Scan, 1 thread, %s: median %.2f GB/s, best %.2f GB/s wall; median %.2f GB/s per CPU-second (%d runs); %zu "
        "findings\n",
        label, gbps[gbps.size() / 2], gbps.back(), cpu_gbps[cpu_gbps.size() / 2], runs, findings.size());
  };
  ScannerConfig custom_config;
  custom_config.custom = {{"employee_id", R"(\bEMP-[0-9]{6}\b)"}};
  Scanner with_custom(custom_config);
  measure(with_custom, "+1 custom pattern");
  auto t0 = Clock::now();
  Scanner scanner{ScannerConfig{}};
  std::printf("compile: %.0f ms for %zu rules\n", Seconds(t0, Clock::now()) * 1e3, scanner.rule_names().size());
  measure(scanner, "built-in rules");
  std::vector<size_t> by_rule(scanner.rule_names().size());
  for (const Finding& f : findings) {
    auto it = std::find(scanner.rule_names().begin(), scanner.rule_names().end(), f.rule);
    ++by_rule[it - scanner.rule_names().begin()];
  }
  std::printf("  by rule:");
  for (size_t i = 0; i < by_rule.size(); ++i) {
    if (by_rule[i] > 0) std::printf(" %s=%zu", scanner.rule_names()[i].c_str(), by_rule[i]);
  }
  std::printf("\n");
  for (int i = 0; i < show && i < static_cast<int>(findings.size()); ++i) {
    const Finding& f = findings[i];
    size_t line = text.rfind('\n', f.offset);
    line = line == std::string::npos ? 0 : line + 1;
    size_t end = text.find('\n', f.offset + f.length);
    std::printf("  %-20s %.*s\n", f.rule.c_str(), static_cast<int>(end - line), text.data() + line);
  }

  if (threads > 1) {
    auto a = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (int r = 0; r < 2; ++r) scanner.Scan(text);
      });
    }
    for (auto& th : pool) th.join();
    double total = 2.0 * threads * text.size();
    std::printf("Scan, %d threads: %.2f GB/s in total\n", threads, total / Seconds(a, Clock::now()) / 1e9);
  }

  const std::string sample = text.substr(0, static_cast<size_t>(peer_kb) << 10);
  double ours_sample = 0;  // per CPU-second, like the peer
  for (int r = 0; r < 20; ++r) {
    double c = ThreadCpuSeconds();
    auto f = scanner.Scan(sample);
    ours_sample = std::max(ours_sample, sample.size() / (ThreadCpuSeconds() - c) / 1e9);
  }
  auto regexes = PeerRegexes();
  double c = ThreadCpuSeconds();
  size_t peer_matches = PeerScan(regexes, sample);
  double peer = sample.size() / (ThreadCpuSeconds() - c) / 1e9;  // CPU time: it runs for minutes
  std::printf(
      "peer (std::regex, %zu patterns, one pass each) on %.2f MB: %.5f GB/s (%.2f MB/s) per CPU-second, %zu raw "
      "matches\n",
      regexes.size(), sample.size() / 1e6, peer, peer * 1e3, peer_matches);
  std::printf("Scan on the same sample: %.2f GB/s per CPU-second; ratio Scan / peer: %.0fx\n", ours_sample,
              ours_sample / peer);
  return 0;
}
