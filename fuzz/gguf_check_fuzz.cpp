// libFuzzer target for the GGUF validator: CheckGgufBuffer must never crash, hang, allocate
// beyond what the input justifies, or throw anything but EngineError(kInvalidModel) with a
// message naming the file. With HEARTH_FUZZ_DIFF, whatever it accepts ggml's own reader must
// accept too, with the same counts (the validator must never be looser than llama.cpp).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/error.h"
#include "engine/gguf_check.h"

#ifdef HEARTH_FUZZ_DIFF
#include "ggml.h"
#include "gguf.h"
#endif

namespace {

[[noreturn]] void Die(const char* what, const std::string& detail) {
  std::fprintf(stderr, "gguf_check_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
#ifdef HEARTH_FUZZ_DIFF
  ggml_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
#endif
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using hearth::engine::EngineError;
  using hearth::engine::ErrorKind;
  hearth::engine::GgufSummary summary;
  try {
    summary = hearth::engine::CheckGgufBuffer(data, size, "fuzz.gguf");
  } catch (const EngineError& e) {
    const std::string msg = e.what();
    if (e.kind() != ErrorKind::kInvalidModel) Die("wrong error kind", msg);
    if (msg.find("'fuzz.gguf'") == std::string::npos) Die("message does not name the file", msg);
    return 0;
  }
  // Any other exception escapes and libFuzzer reports it as a crash.

  if (summary.file_size != size) Die("wrong file_size", std::to_string(summary.file_size));
#ifdef HEARTH_FUZZ_DIFF
  gguf_init_params params = {/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_context* g = gguf_init_from_buffer(data, size, params);
  if (g == nullptr) Die("accepted, but ggml's reader rejects it", "");
  if (uint64_t(gguf_get_n_tensors(g)) != summary.tensor_count ||
      uint64_t(gguf_get_n_kv(g)) != summary.metadata_count ||
      gguf_get_version(g) != summary.version) {
    Die("counts differ from ggml's", std::to_string(gguf_get_n_tensors(g)) + " tensors, " +
                                         std::to_string(gguf_get_n_kv(g)) + " keys");
  }
  uint64_t total = 0;
  for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) total += gguf_get_tensor_size(g, i);
  if (total != summary.tensor_data_bytes) Die("tensor bytes differ from ggml's", std::to_string(total));
  gguf_free(g);
#endif
  return 0;
}
