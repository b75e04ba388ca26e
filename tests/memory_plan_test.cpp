// The memory planner: llama.cpp's dry run against what loading really allocates, the estimate
// against the resident memory a fresh process gains, and ModelPool's evict-or-refuse.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "devtools/genmodel.h"
#include "engine/memory_plan.h"
#include "engine/model_pool.h"
#include "engine/scheduler.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace hearth::engine;

namespace {

SchedulerOptions SmallOptions() {
  SchedulerOptions so;
  so.n_ctx = 512;
  so.n_slots = 2;
  so.n_threads = 2;
  return so;
}

// The 0.5B-shape Q8_0 model, generated once into a cache outside the tree (it takes a while).
std::string HalfBillionQ8Path() {
  const char* home = std::getenv("HOME");
  fs::path dir = fs::path(home != nullptr ? home : "/tmp") / ".cache" / "hearth" / "test-models";
  fs::path path = dir / "qwen2.5-coder-0.5b-qwen2-q8_0-seed42.gguf";
  if (!fs::exists(path)) {
    hearth::devtools::GenModelOptions options;
    options.shape = hearth::devtools::ShapeByName("qwen2.5-coder-0.5b");
    options.vocab = "qwen2";
    options.type = QuantType::kQ8_0;
    options.output_path = path.string();
    hearth::devtools::GenerateModel(options);
  }
  return path.string();
}

struct Measured {
  uint64_t planned = 0;
  uint64_t resident = 0;
};

// Loads the model in a fresh process (this test binary, re-executed to run only the child
// test below), evaluates a prompt of a full batch and decodes, and reads how much resident
// memory that added. A fresh process: a heap that earlier tests used would hide allocations.
Measured MeasureInChild(const std::string& model, const SchedulerOptions& so) {
  const std::string out = hearth::test::TempDir() + "/measured-" + std::to_string(::getpid()) + ".txt";
  std::ostringstream cmd;
  cmd << "HEARTH_MEMCHILD_MODEL='" << model << "' HEARTH_MEMCHILD_CTX=" << so.n_ctx
      << " HEARTH_MEMCHILD_SLOTS=" << so.n_slots << " HEARTH_MEMCHILD_OUT='" << out << "' "
      << "/proc/" << ::getpid() << "/exe --gtest_also_run_disabled_tests "
      << "--gtest_filter=MemoryPlanChild.DISABLED_LoadAndMeasure >/dev/null 2>&1";
  const int rc = std::system(cmd.str().c_str());
  EXPECT_EQ(rc, 0) << cmd.str();
  std::ifstream in(out);
  Measured m;
  in >> m.resident;
  m.planned = PlanModelMemory(model, so).total();  // here: the child measures a clean load
  return m;
}

void ExpectWithinTenPercent(const std::string& model, const SchedulerOptions& so) {
  const Measured m = MeasureInChild(model, so);
  ASSERT_GT(m.resident, 0u) << model;
  const double ratio = static_cast<double>(m.planned) / static_cast<double>(m.resident);
  std::printf("  %s ctx %d x %d: planned %s, resident %s, ratio %.3f\n", fs::path(model).filename().c_str(), so.n_ctx,
              so.n_slots, PlanModelMemory(model, so).Describe().c_str(), FormatBytes(m.resident).c_str(), ratio);
  EXPECT_GT(ratio, 0.9) << model;
  EXPECT_LT(ratio, 1.1) << model;
}

}  // namespace

// Run only in the child process started by MeasureInChild.
TEST(MemoryPlanChild, DISABLED_LoadAndMeasure) {
  const char* model_path = std::getenv("HEARTH_MEMCHILD_MODEL");
  ASSERT_NE(model_path, nullptr);
  SchedulerOptions so = SmallOptions();
  so.n_ctx = std::atoi(std::getenv("HEARTH_MEMCHILD_CTX"));
  so.n_slots = std::atoi(std::getenv("HEARTH_MEMCHILD_SLOTS"));
  InitBackend();
  const uint64_t before = ResidentBytes();
  {
    auto model = Model::Load(model_path);
    Scheduler scheduler(model, so);
    // A prompt of a full batch touches the compute buffer as the worst case does.
    GenerationRequest request;
    for (int32_t i = 0; i < std::min(so.n_batch, so.n_ctx - 8); ++i) request.prompt.push_back(100 + i);
    request.sampling.max_tokens = 4;
    request.sampling.temperature = 0;
    scheduler.Generate(request);
    const uint64_t after = ResidentBytes();
    std::ofstream(std::getenv("HEARTH_MEMCHILD_OUT")) << (after - before) << "\n";
  }
}

TEST(MemoryPlan, DryRunMatchesWhatLoadingAllocates) {
  const std::string path = hearth::test::TinyModelPath("qwen2");
  const SchedulerOptions so = SmallOptions();
  const MemoryFootprint plan = PlanModelMemory(path, so);
  auto model = Model::Load(path);
  Scheduler scheduler(model, so);
  const MemoryFootprint& real = scheduler.footprint();
  EXPECT_EQ(plan.weights, real.weights);
  EXPECT_EQ(plan.kv_cache, real.kv_cache);
  EXPECT_EQ(plan.compute, real.compute);
  EXPECT_EQ(plan.gpu, 0u);
  EXPECT_EQ(plan.mapped, plan.weights);  // CPU build, mmap: the weights are the file's pages
  EXPECT_GE(plan.weights, model->info().size_bytes);
  // f16 K and V for every layer, every KV head, every cell (n_ctx x n_slots).
  const ModelInfo& mi = model->info();
  const uint64_t head_dim = static_cast<uint64_t>(mi.n_embd / mi.n_head);
  const uint64_t kv = 2ull * 2 * mi.n_layer * head_dim * mi.n_head_kv * so.n_ctx * so.n_slots;
  EXPECT_EQ(plan.kv_cache, kv);
  EXPECT_GT(plan.compute, 0u);
  EXPECT_GT(plan.overhead, 0u);
}

TEST(MemoryPlan, KvCacheScalesWithContextSlotsAndType) {
  ModelDryRun dry(HalfBillionQ8Path());  // head size 64: quantized KV blocks of 32 divide it
  SchedulerOptions so = SmallOptions();
  const uint64_t base = dry.Plan(so).kv_cache;
  so.n_ctx *= 2;
  EXPECT_EQ(dry.Plan(so).kv_cache, 2 * base);
  so.n_slots *= 2;
  EXPECT_EQ(dry.Plan(so).kv_cache, 4 * base);
  so = SmallOptions();
  so.kv_type = KvCacheType::kQ8_0;
  // q8_0 stores 32 values in 34 bytes; f16 in 64.
  EXPECT_EQ(dry.Plan(so).kv_cache, base * 34 / 64);
  so.kv_type = KvCacheType::kQ4_0;
  EXPECT_EQ(dry.Plan(so).kv_cache, base * 18 / 64);
}

TEST(MemoryPlan, BadFilesAndKvTypesAreClearErrors) {
  // The tiny shape's head size (16) is not a multiple of q8_0's block (32): llama.cpp refuses,
  // and the planner says why before anything is allocated.
  SchedulerOptions q8 = SmallOptions();
  q8.kv_type = KvCacheType::kQ8_0;
  const EngineError kv = hearth::test::CatchEngineError([&] { PlanModelMemory(hearth::test::TinyModelPath("starcoder"), q8); });
  EXPECT_EQ(kv.kind(), ErrorKind::kInvalidRequest);
  EXPECT_NE(std::string(kv.what()).find("does not divide"), std::string::npos) << kv.what();
  const std::string bad = hearth::test::TempDir() + "/not-a-model.gguf";
  std::ofstream(bad) << "GGUF but not really";
  const EngineError file = hearth::test::CatchEngineError([&] { PlanModelMemory(bad, SmallOptions()); });
  EXPECT_EQ(file.kind(), ErrorKind::kInvalidModel);
  EXPECT_NE(std::string(file.what()).find(bad), std::string::npos) << file.what();
  EXPECT_THROW(ParseKvCacheType("q5_1"), EngineError);
  EXPECT_EQ(ParseKvCacheType("q8_0"), KvCacheType::kQ8_0);
}

TEST(MemoryPlan, EstimateWithinTenPercentOfResidentMemoryTinyModels) {
  SchedulerOptions so = SmallOptions();
  ExpectWithinTenPercent(hearth::test::TinyModelPath("qwen2"), so);
  ExpectWithinTenPercent(hearth::test::TinyModelPath("starcoder"), so);
  so.n_ctx = 2048;
  so.n_slots = 4;
  ExpectWithinTenPercent(hearth::test::TinyModelPath("qwen2"), so);
}

TEST(MemoryPlan, EstimateWithinTenPercentOfResidentMemoryHalfBillionShape) {
  const std::string path = HalfBillionQ8Path();
  SchedulerOptions so = SmallOptions();
  so.n_ctx = 1024;
  ExpectWithinTenPercent(path, so);
  so.n_ctx = 4096;
  so.n_slots = 4;
  ExpectWithinTenPercent(path, so);
}

TEST(MachineMemory, ReadsMeminfoAndTheTighterCgroupLimit) {
  const fs::path root = fs::path(hearth::test::TempDir()) / "fake-root";
  fs::create_directories(root / "proc" / "self");
  fs::create_directories(root / "sys" / "fs" / "cgroup" / "app");
  std::ofstream(root / "proc" / "meminfo") << "MemTotal:       16000000 kB\nMemFree:         1000000 kB\n"
                                              "MemAvailable:    8000000 kB\n";
  std::ofstream(root / "proc" / "self" / "cgroup") << "0::/app\n";
  std::ofstream(root / "sys" / "fs" / "cgroup" / "app" / "memory.max") << "max\n";
  MachineMemory m = ReadMachineMemory(root.string());
  EXPECT_EQ(m.ram_total, 16000000ull * 1024);
  EXPECT_EQ(m.ram_available, 8000000ull * 1024);
  EXPECT_EQ(m.limited_by, "");
  std::ofstream(root / "sys" / "fs" / "cgroup" / "app" / "memory.max") << (4ull << 30) << "\n";
  std::ofstream(root / "sys" / "fs" / "cgroup" / "app" / "memory.current") << (3ull << 30) << "\n";
  m = ReadMachineMemory(root.string());
  EXPECT_EQ(m.ram_total, 4ull << 30);
  EXPECT_EQ(m.ram_available, 1ull << 30);
  EXPECT_EQ(m.limited_by, "cgroup");
}

TEST(MachineMemory, ThisMachineReportsSomething) {
  const MachineMemory m = ReadMachineMemory();
  EXPECT_GT(m.ram_total, 0u);
  EXPECT_GT(m.ram_available, 0u);
  EXPECT_LE(m.ram_available, m.ram_total);
  EXPECT_GT(ResidentBytes(), 0u);
}

// ModelPool: several models stay loaded while they fit; past the limit, idle models are
// unloaded least recently used first; busy and pinned models are not, and the load is refused.
class PoolMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = hearth::test::TinyModelPath("starcoder");
    b_ = hearth::test::TinyModelPath("qwen2");
    one_ = PlanModelMemory(a_, SmallOptions()).total();
  }
  ModelPoolOptions Options(uint64_t limit) {
    ModelPoolOptions o;
    o.scheduler = SmallOptions();
    o.memory_limit = limit;
    return o;
  }
  static std::vector<std::string> LoadedNames(const ModelPool& pool) {
    std::vector<std::string> names;
    for (const auto& m : pool.Loaded()) names.push_back(m.name);
    return names;
  }
  std::string a_, b_;
  uint64_t one_ = 0;
};

TEST_F(PoolMemoryTest, ModelsThatFitStayLoadedTogether) {
  ModelPool pool(Options(0));
  pool.Register(a_, "a");
  pool.Register(b_, "b");
  pool.Acquire("a");
  pool.Acquire("b");
  EXPECT_EQ(LoadedNames(pool), (std::vector<std::string>{"a:latest", "b:latest"}));
  for (const auto& m : pool.Loaded()) {
    EXPECT_EQ(m.size_bytes, m.footprint.total());
    EXPECT_GT(m.footprint.weights, 0u);
    EXPECT_GT(m.footprint.kv_cache, 0u);
  }
}

TEST_F(PoolMemoryTest, IdleModelsAreEvictedLeastRecentlyUsedFirst) {
  // Three names for the same file: three loads of one size. Room for two, not three.
  ModelPool pool(Options(2 * one_ + one_ / 2));
  for (const char* name : {"a", "c", "d"}) pool.Register(a_, name);
  pool.Acquire("a");
  pool.Acquire("c");
  pool.Acquire("a");  // now c is the least recently used
  EXPECT_EQ(LoadedNames(pool), (std::vector<std::string>{"a:latest", "c:latest"}));
  pool.Acquire("d");
  EXPECT_EQ(LoadedNames(pool), (std::vector<std::string>{"a:latest", "d:latest"}));
}

TEST_F(PoolMemoryTest, BusyAndPinnedModelsAreNotEvictedAndTheLoadIsRefusedWithNumbers) {
  ModelPool pool(Options(one_ + one_ / 2));
  pool.Register(a_, "a");
  pool.Register(a_, "b");
  {
    auto busy = pool.Acquire("a");
    try {
      pool.Acquire("b");
      FAIL() << "expected kInsufficientMemory";
    } catch (const EngineError& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInsufficientMemory);
      const std::string msg = e.what();
      EXPECT_NE(msg.find("model 'b:latest'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("KV cache"), std::string::npos) << msg;
      EXPECT_NE(msg.find("memory limit"), std::string::npos) << msg;
      EXPECT_NE(msg.find("'a:latest'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("serving 1 request"), std::string::npos) << msg;
    }
    EXPECT_EQ(LoadedNames(pool), (std::vector<std::string>{"a:latest"}));
  }
  pool.Acquire("a", std::chrono::seconds(-1));  // released at once, kept alive forever
  try {
    pool.Acquire("b");
    FAIL() << "expected kInsufficientMemory";
  } catch (const EngineError& e) {
    EXPECT_NE(std::string(e.what()).find("kept alive forever"), std::string::npos) << e.what();
  }
  pool.Acquire("a", std::chrono::seconds(60));  // an ordinary keep_alive: evictable again
  EXPECT_NO_THROW(pool.Acquire("b"));
  EXPECT_EQ(LoadedNames(pool), (std::vector<std::string>{"b:latest"}));
}

TEST_F(PoolMemoryTest, TheMachinesFreeMemoryIsRespected) {
  ModelPoolOptions o = Options(0);
  uint64_t available = one_ / 2;
  o.machine_memory = [&available] {
    MachineMemory m;
    m.ram_total = 1ull << 34;
    m.ram_available = available;
    return m;
  };
  ModelPool pool(o);
  pool.Register(a_, "a");
  try {
    pool.Acquire("a");
    FAIL() << "expected kInsufficientMemory";
  } catch (const EngineError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInsufficientMemory);
    EXPECT_NE(std::string(e.what()).find("of RAM is free"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(pool.Loaded().empty());
  available = 4 * one_;
  EXPECT_NO_THROW(pool.Acquire("a"));
}
