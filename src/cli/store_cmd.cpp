#include "cli/store_cmd.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "engine/error.h"
#include "engine/gguf_check.h"
#include "store/modelfile.h"
#include "store/pull.h"
#include "store/store.h"

namespace hearth::cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct StoreArgs {
  std::string store;  // "" = Store::DefaultRoot()
  std::string source, name, sha256, file, modelfile = "Modelfile", src, dst;
  std::vector<std::string> names;
  bool insecure = false;
  bool show_modelfile = false;
};

std::string HumanBytes(double n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (n >= 1024 && u < 4) {
    n /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", n, units[u]);
  return buf;
}

std::string HumanDuration(double seconds) {
  if (seconds < 0 || seconds > 360000) return "--";
  long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

// Text from a manifest or a mirror may hold terminal control sequences: show them as '?'
// (newlines and tabs are kept).
std::string Safe(const std::string& text) {
  std::string out;
  for (unsigned char c : text) out += ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) ? '?' : static_cast<char>(c);
  return out;
}

std::atomic<bool>* g_cancel = nullptr;
void OnSigint(int) {
  if (g_cancel != nullptr) g_cancel->store(true);
}

// Progress on stderr: a redrawn bar with rate and ETA on a terminal, plain lines otherwise
// (one per status, and one per 10% of a transfer).
class ProgressPrinter {
 public:
  explicit ProgressPrinter(std::shared_ptr<std::atomic<bool>> cancel = nullptr)
      : tty_(::isatty(STDERR_FILENO) == 1), cancel_(std::move(cancel)) {}
  ~ProgressPrinter() { Finish(); }

  bool operator()(const store::Progress& p) {
    if (cancel_ && cancel_->load()) return false;
    const auto now = Clock::now();
    if (p.status != status_) {
      Finish();
      status_ = p.status;
      start_ = now;
      start_bytes_ = p.completed;
      rate_ = 0;
      ema_ = 0;
      last_bytes_ = p.completed;
      last_time_ = now;
      last_decile_ = -1;
      if (p.total == 0) {
        std::fprintf(stderr, "%s\n", Safe(p.status).c_str());
        return true;
      }
    }
    if (p.total == 0) return true;
    // Rate: an exponential moving average of 0.25 s samples; the average so far until then.
    const double dt = std::chrono::duration<double>(now - last_time_).count();
    if (dt >= 0.25) {
      const double inst = static_cast<double>(p.completed - std::min(p.completed, last_bytes_)) / dt;
      ema_ = ema_ == 0 ? inst : 0.8 * ema_ + 0.2 * inst;
      last_bytes_ = p.completed;
      last_time_ = now;
    }
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    rate_ = ema_ > 0 ? ema_
                     : (elapsed > 0.01 ? static_cast<double>(p.completed - std::min(p.completed, start_bytes_)) / elapsed : 0);
    const double frac = static_cast<double>(p.completed) / static_cast<double>(p.total);
    const double eta = rate_ > 0 ? static_cast<double>(p.total - std::min(p.total, p.completed)) / rate_ : -1;
    if (tty_) {
      if (now - last_draw_ < std::chrono::milliseconds(100) && p.completed < p.total) return true;
      last_draw_ = now;
      constexpr int kWidth = 25;
      const int filled = static_cast<int>(frac * kWidth);
      std::string bar;
      for (int i = 0; i < kWidth; ++i) bar += i < filled ? "\xe2\x96\x88" : " ";  // █
      std::fprintf(stderr, "\r\x1b[K%s %3d%% \xe2\x96\x95%s\xe2\x96\x8f %s/%s  %s/s  ETA %s", Safe(p.status).c_str(),
                   static_cast<int>(frac * 100), bar.c_str(), HumanBytes(static_cast<double>(p.completed)).c_str(),
                   HumanBytes(static_cast<double>(p.total)).c_str(), HumanBytes(rate_).c_str(), HumanDuration(eta).c_str());
      drawn_ = true;
    } else {
      const int decile = static_cast<int>(frac * 10);
      if (decile != last_decile_) {
        last_decile_ = decile;
        std::fprintf(stderr, "%s: %d%% (%s of %s, %s/s, ETA %s)\n", Safe(p.status).c_str(), decile * 10,
                     HumanBytes(static_cast<double>(p.completed)).c_str(), HumanBytes(static_cast<double>(p.total)).c_str(),
                     HumanBytes(rate_).c_str(), HumanDuration(eta).c_str());
      }
    }
    std::fflush(stderr);
    return true;
  }

  void Finish() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  bool tty_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  std::string status_;
  Clock::time_point start_, last_time_, last_draw_;
  uint64_t start_bytes_ = 0, last_bytes_ = 0;
  double rate_ = 0, ema_ = 0;
  int last_decile_ = -1;
  bool drawn_ = false;
};

store::Store OpenStore(const StoreArgs& a) { return store::Store(a.store.empty() ? store::Store::DefaultRoot() : a.store); }

std::string ReadModelfile(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw engine::EngineError(engine::ErrorKind::kInvalidRequest, "no Modelfile at '" + path + "' (pass -f FILE)");
  }
  if (fs::file_size(path, ec) > (4u << 20)) {
    throw engine::EngineError(engine::ErrorKind::kInvalidRequest, path + " is larger than 4 MiB: not a Modelfile");
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void PrintSummary(const store::Manifest& m) {
  std::printf("%s  %s  %s\n", m.name.c_str(), m.model.digest.substr(7, 12).c_str(),
              HumanBytes(static_cast<double>(m.model.size)).c_str());
}

void RunPull(const StoreArgs& a) {
  store::Store s = OpenStore(a);
  store::PullOptions o;
  o.source = a.source;
  o.name = a.name;
  o.sha256 = a.sha256;
  o.insecure = a.insecure;
  o.cancel = std::make_shared<std::atomic<bool>>(false);
  g_cancel = o.cancel.get();
  std::signal(SIGINT, OnSigint);
  ProgressPrinter printer(o.cancel);
  store::Manifest m = store::Pull(s, o, [&](const store::Progress& p) { return printer(p); });
  printer.Finish();
  std::signal(SIGINT, SIG_DFL);
  g_cancel = nullptr;
  std::fprintf(stderr, "success\n");
  PrintSummary(m);
}

void RunImport(const StoreArgs& a) {
  store::Store s = OpenStore(a);
  std::string name = a.name.empty() ? fs::path(a.file).stem().string() : a.name;
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  g_cancel = cancel.get();
  std::signal(SIGINT, OnSigint);
  ProgressPrinter printer(cancel);
  store::Manifest m = s.Import(a.file, name, [&](const store::Progress& p) { return printer(p); });
  printer.Finish();
  std::signal(SIGINT, SIG_DFL);
  g_cancel = nullptr;
  std::fprintf(stderr, "success\n");
  PrintSummary(m);
}

void RunCreate(const StoreArgs& a) {
  store::Store s = OpenStore(a);
  const std::string text = ReadModelfile(a.modelfile);
  store::Modelfile mf = store::ParseModelfile(text, a.modelfile);
  std::error_code ec;
  const std::string base = fs::absolute(a.modelfile, ec).parent_path().string();
  ProgressPrinter printer;
  store::Manifest m = s.Create(a.name, mf, base, true, [&](const store::Progress& p) { return printer(p); });
  printer.Finish();
  std::fprintf(stderr, "success\n");
  PrintSummary(m);
}

void RunList(const StoreArgs& a) {
  store::Store s = OpenStore(a);
  std::vector<store::Manifest> models = s.List();
  size_t width = 4;
  for (const auto& m : models) width = std::max(width, m.name.size());
  std::printf("%-*s  %-12s  %10s  %s\n", static_cast<int>(width), "NAME", "ID", "SIZE", "CREATED");
  for (const auto& m : models) {
    std::printf("%-*s  %-12s  %10s  %s\n", static_cast<int>(width), m.name.c_str(), m.model.digest.substr(7, 12).c_str(),
                HumanBytes(static_cast<double>(m.model.size)).c_str(), Safe(m.created_at).c_str());
  }
}

void RunShow(const StoreArgs& a) {
  store::Store s = OpenStore(a);
  store::Manifest m = s.Get(a.name);
  if (a.show_modelfile) {
    const std::string text = s.RenderModelfile(m);
    std::fputs((::isatty(STDOUT_FILENO) == 1 ? Safe(text) : text).c_str(), stdout);
    return;
  }
  std::printf("  Model\n");
  std::printf("    %-14s%s\n", "name", m.name.c_str());
  std::printf("    %-14s%s\n", "digest", m.model.digest.c_str());
  std::printf("    %-14s%s (%llu bytes)\n", "size", HumanBytes(static_cast<double>(m.model.size)).c_str(),
              static_cast<unsigned long long>(m.model.size));
  try {
    engine::GgufSummary g = engine::CheckGgufFile(s.BlobPath(m.model.digest));
    std::printf("    %-14s%s\n", "architecture", Safe(g.architecture.empty() ? "(unknown)" : g.architecture).c_str());
    std::printf("    %-14sGGUF v%u, %llu tensors, %llu metadata keys\n", "format", g.version,
                static_cast<unsigned long long>(g.tensor_count), static_cast<unsigned long long>(g.metadata_count));
  } catch (const engine::EngineError& e) {
    std::printf("    %-14s%s\n", "problem", Safe(e.what()).c_str());
  }
  std::printf("    %-14s%s\n", "source", Safe(m.source).c_str());
  std::printf("    %-14s%s\n", "created", Safe(m.created_at).c_str());
  std::printf("    %-14s%s\n", "blob", s.BlobPath(m.model.digest).c_str());
  if (!m.parameters.empty()) {
    std::printf("\n  Parameters\n");
    for (const auto& [k, v] : m.parameters.Lines()) std::printf("    %-16s%s\n", k.c_str(), Safe(v).c_str());
  }
  auto block = [](const char* title, const std::string& text) {
    std::printf("\n  %s\n", title);
    std::istringstream in(Safe(text));
    for (std::string line; std::getline(in, line);) std::printf("    %s\n", line.c_str());
  };
  if (m.system) block("System", *m.system);
  if (m.template_text) block("Template", *m.template_text);
  if (!m.adapters.empty()) {
    std::printf("\n  Adapters (LoRA, applied to every request)\n");
    for (const auto& ad : m.adapters) {
      std::printf("    %s  %s\n", ad.digest.c_str(), HumanBytes(static_cast<double>(ad.size)).c_str());
    }
  }
  for (const std::string& l : m.licenses) block("License", l);
}

void RunRm(const StoreArgs& a) {
  store::Store s = OpenStore(a);
  for (const std::string& n : a.names) {
    s.Remove(n);
    std::printf("deleted '%s'\n", store::Store::CanonicalName(n).c_str());
  }
}

void RunCp(const StoreArgs& a) {
  store::Store s = OpenStore(a);
  store::Manifest m = s.Copy(a.src, a.dst);
  std::printf("copied '%s' to '%s'\n", store::Store::CanonicalName(a.src).c_str(), m.name.c_str());
}

void RunVerify(const StoreArgs& a) {
  store::Store s = OpenStore(a);
  ProgressPrinter printer;
  store::VerifyReport r = s.Verify([&](const store::Progress& p) { return printer(p); });
  printer.Finish();
  size_t bad = 0;
  for (const store::BlobCheck& b : r.blobs) {
    std::string users;
    for (const std::string& n : b.models) users += (users.empty() ? "" : ", ") + n;
    if (users.empty()) users = "(unused)";
    if (b.problem.empty()) {
      std::printf("ok       %s  %10s  %s\n", b.digest.c_str(), HumanBytes(static_cast<double>(b.size)).c_str(), users.c_str());
    } else {
      ++bad;
      std::printf("CORRUPT  %s  %10s  %s: %s\n", b.digest.c_str(), HumanBytes(static_cast<double>(b.size)).c_str(),
                  users.c_str(), Safe(b.problem).c_str());
    }
  }
  for (const std::string& p : r.problems) std::printf("PROBLEM  %s\n", Safe(p).c_str());
  std::printf("%zu blob(s) checked, %zu corrupt, %zu other problem(s)\n", r.blobs.size(), bad, r.problems.size());
  std::fflush(stdout);
  if (!r.ok()) {
    std::fprintf(stderr, "hearth: the store at %s has problems: remove (`hearth rm`) and pull or import the affected models again\n",
                 s.root().c_str());
    throw CLI::RuntimeError(1);
  }
}

void AddStoreOption(CLI::App* cmd, const std::shared_ptr<StoreArgs>& a) {
  cmd->add_option("--store", a->store, "model store directory (env HEARTH_MODELS; default ~/.local/share/hearth/models)");
}

}  // namespace

void AddStoreCommands(CLI::App& app) {
  {
    auto a = std::make_shared<StoreArgs>();
    CLI::App* cmd = app.add_subcommand("pull", "Download a GGUF model into the store (resumable; allowlisted hosts only)");
    cmd->add_option("source", a->source, "https URL of a .gguf file, or a model name on the configured mirror")->required();
    cmd->add_option("--name", a->name, "store it under this name[:tag] (default: the mirror name or the URL's file name)");
    cmd->add_option("--sha256", a->sha256, "expected sha256 of the file; a mismatch keeps nothing");
    cmd->add_flag("--insecure", a->insecure, "allow plain http:// to a non-loopback host (TLS checks are never disabled)");
    AddStoreOption(cmd, a);
    cmd->footer("Hosts must be allowed first: HEARTH_PULL_ALLOW=huggingface.co,cas-bridge.xethub.hf.co (or \"pull_allow\" in <store>/config.json).");
    cmd->callback([a] { RunPull(*a); });
  }
  {
    auto a = std::make_shared<StoreArgs>();
    CLI::App* cmd = app.add_subcommand("import", "Copy a local GGUF file into the store (validated first)");
    cmd->add_option("file", a->file, "GGUF file")->required();
    cmd->add_option("--name", a->name, "name[:tag] (default: the file name without .gguf)");
    AddStoreOption(cmd, a);
    cmd->callback([a] { RunImport(*a); });
  }
  {
    auto a = std::make_shared<StoreArgs>();
    CLI::App* cmd = app.add_subcommand("create", "Create a model from a Modelfile (FROM, PARAMETER, SYSTEM, TEMPLATE, ADAPTER)");
    cmd->add_option("name", a->name, "name[:tag] of the new model")->required();
    cmd->add_option("-f,--file", a->modelfile, "Modelfile (default ./Modelfile)");
    AddStoreOption(cmd, a);
    cmd->callback([a] { RunCreate(*a); });
  }
  {
    auto a = std::make_shared<StoreArgs>();
    CLI::App* cmd = app.add_subcommand("list", "List the models in the store");
    cmd->alias("ls");
    AddStoreOption(cmd, a);
    cmd->callback([a] { RunList(*a); });
  }
  {
    auto a = std::make_shared<StoreArgs>();
    CLI::App* cmd = app.add_subcommand("show", "Show a stored model's details, or its Modelfile");
    cmd->add_option("name", a->name, "model name")->required();
    cmd->add_flag("--modelfile", a->show_modelfile, "print a Modelfile that recreates the model");
    AddStoreOption(cmd, a);
    cmd->callback([a] { RunShow(*a); });
  }
  {
    auto a = std::make_shared<StoreArgs>();
    CLI::App* cmd = app.add_subcommand("rm", "Remove models from the store (blobs nothing else uses are deleted)");
    cmd->add_option("names", a->names, "model names")->required();
    AddStoreOption(cmd, a);
    cmd->callback([a] { RunRm(*a); });
  }
  {
    auto a = std::make_shared<StoreArgs>();
    CLI::App* cmd = app.add_subcommand("cp", "Copy a model under another name (no data is copied)");
    cmd->add_option("source", a->src, "existing model")->required();
    cmd->add_option("destination", a->dst, "new name[:tag]")->required();
    AddStoreOption(cmd, a);
    cmd->callback([a] { RunCp(*a); });
  }
  {
    auto a = std::make_shared<StoreArgs>();
    CLI::App* cmd = app.add_subcommand("verify", "Re-hash every blob in the store; exit 1 if any is corrupt");
    AddStoreOption(cmd, a);
    cmd->callback([a] { RunVerify(*a); });
  }
}

}  // namespace hearth::cli
