// QuantizeModel: llama.cpp's own quantizer (the same tensor-type mix as llama-quantize).
#include <filesystem>
#include <string>
#include <thread>

#include "engine/error.h"
#include "engine/model.h"
#include "llama.h"

namespace hearth::engine {

namespace {

llama_ftype ToFtype(QuantType type) {
  switch (type) {
    case QuantType::kF32: return LLAMA_FTYPE_ALL_F32;
    case QuantType::kF16: return LLAMA_FTYPE_MOSTLY_F16;
    case QuantType::kQ8_0: return LLAMA_FTYPE_MOSTLY_Q8_0;
    case QuantType::kQ4_K_M: return LLAMA_FTYPE_MOSTLY_Q4_K_M;
  }
  throw EngineError(ErrorKind::kInvalidRequest, "unknown quantization type");
}

const char* TypeName(QuantType type) {
  switch (type) {
    case QuantType::kF32: return "F32";
    case QuantType::kF16: return "F16";
    case QuantType::kQ8_0: return "Q8_0";
    case QuantType::kQ4_K_M: return "Q4_K_M";
  }
  return "?";
}

}  // namespace

void QuantizeModel(const std::string& input_path, const std::string& output_path, QuantType type,
                   int n_threads) {
  InitBackend();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(input_path, ec)) {
    throw EngineError(ErrorKind::kInvalidModel, "cannot quantize " + input_path + ": no such file");
  }
  if (output_path.empty() || output_path == input_path) {
    throw EngineError(ErrorKind::kInvalidRequest,
                      "quantize: the output path must be set and differ from the input");
  }
  llama_model_quantize_params params = llama_model_quantize_default_params();
  params.ftype = ToFtype(type);
  params.nthread = n_threads > 0 ? n_threads
                                 : static_cast<int32_t>(std::thread::hardware_concurrency());
  if (params.nthread <= 0) params.nthread = 1;
  if (llama_model_quantize(input_path.c_str(), output_path.c_str(), &params) != 0) {
    std::filesystem::remove(output_path, ec);
    throw EngineError(ErrorKind::kInternal, "llama.cpp failed to quantize " + input_path + " to " +
                                                TypeName(type) + " (see the llama.cpp log)");
  }
}

}  // namespace hearth::engine
