#include "test_support.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <unistd.h>

#include "devtools/genmodel.h"

namespace fs = std::filesystem;

namespace hearth::test {

std::string SharedModelsDir() {
  return (fs::path(HEARTH_SOURCE_DIR).parent_path() / "shared" / "models").string();
}

std::string StoriesModelPath() {
  fs::path p = fs::path(SharedModelsDir()) / "stories260K.gguf";
  return fs::exists(p) ? p.string() : std::string();
}

namespace {
struct TempDirHolder {
  fs::path path;
  TempDirHolder() {
    path = fs::temp_directory_path() / ("hearth-test-" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDirHolder() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
}  // namespace

std::string TempDir() {
  static TempDirHolder holder;
  return holder.path.string();
}

std::string TinyModelPath(const std::string& vocab) {
  static std::mutex mutex;
  static std::map<std::string, std::string> made;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = made.find(vocab);
  if (it != made.end()) return it->second;
  devtools::GenModelOptions options;
  options.shape = devtools::TinyShape();
  options.vocab = vocab;
  options.output_path = (fs::path(TempDir()) / ("tiny-" + vocab + ".gguf")).string();
  devtools::GenerateModel(options);
  made[vocab] = options.output_path;
  return options.output_path;
}

std::string ToolModelPath() {
  static const std::string path = [] {
    std::ifstream in(devtools::BundledTemplatePath("Qwen-Qwen2.5-7B-Instruct"), std::ios::binary);
    devtools::GenModelOptions options;
    options.shape = devtools::TinyShape();
    options.vocab = "qwen2";
    options.chat_template.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    options.output_path = (fs::path(TempDir()) / "tiny-tools.gguf").string();
    devtools::GenerateModel(options);
    return options.output_path;
  }();
  return path;
}

engine::EngineError CatchEngineError(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const engine::EngineError& e) {
    return e;
  }
  ADD_FAILURE() << "expected an EngineError";
  return engine::EngineError(engine::ErrorKind::kInternal, "none");
}

}  // namespace hearth::test
