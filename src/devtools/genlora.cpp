#include "devtools/genlora.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>

#include "ggml.h"
#include "gguf.h"

namespace hearth::devtools {

namespace {

struct GgufDeleter {
  void operator()(gguf_context* g) const { gguf_free(g); }
};
struct GgmlDeleter {
  void operator()(ggml_context* c) const { ggml_free(c); }
};

}  // namespace

void GenerateLora(const GenLoraOptions& o) {
  if (o.output_path.empty()) throw std::runtime_error("gen-lora: no output path");
  if (o.rank < 1 || o.rank > o.shape.n_embd) throw std::runtime_error("gen-lora: rank must be in 1..n_embd");
  const int64_t n_embd = o.shape.n_embd;
  const size_t tensors = static_cast<size_t>(o.shape.n_layer) * 4;
  const size_t bytes = tensors * (static_cast<size_t>(n_embd) * o.rank * sizeof(float) + ggml_tensor_overhead()) + (1 << 16);
  std::unique_ptr<ggml_context, GgmlDeleter> ctx(ggml_init({bytes, nullptr, false}));
  std::unique_ptr<gguf_context, GgufDeleter> g(gguf_init_empty());
  if (!ctx || !g) throw std::runtime_error("gen-lora: out of memory");
  gguf_set_val_str(g.get(), "general.type", "adapter");
  gguf_set_val_str(g.get(), "general.architecture", "qwen2");
  gguf_set_val_str(g.get(), "general.name", ("hearth-random-lora-" + o.shape.name).c_str());
  gguf_set_val_str(g.get(), "adapter.type", "lora");
  gguf_set_val_f32(g.get(), "adapter.lora.alpha", o.alpha);

  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, o.stddev);
  auto add = [&](const std::string& name, int64_t ne0, int64_t ne1) {
    ggml_tensor* t = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, ne0, ne1);
    ggml_set_name(t, name.c_str());
    auto* data = static_cast<float*>(t->data);
    for (int64_t i = 0; i < ne0 * ne1; ++i) data[i] = normal(rng);
    gguf_add_tensor(g.get(), t);
  };
  for (int32_t il = 0; il < o.shape.n_layer; ++il) {
    for (const char* w : {"attn_q", "attn_output"}) {
      // The model's weight is n_embd (in) x n_embd (out); A maps in -> rank, B rank -> out.
      const std::string base = "blk." + std::to_string(il) + "." + w + ".weight";
      add(base + ".lora_a", n_embd, o.rank);
      add(base + ".lora_b", o.rank, n_embd);
    }
  }
  const std::filesystem::path out = std::filesystem::absolute(o.output_path);
  std::filesystem::create_directories(out.parent_path());
  const std::string tmp = out.string() + ".tmp";
  if (!gguf_write_to_file(g.get(), tmp.c_str(), /*only_meta=*/false)) {
    std::remove(tmp.c_str());
    throw std::runtime_error("gen-lora: cannot write " + tmp);
  }
  std::filesystem::rename(tmp, out);
}

}  // namespace hearth::devtools
