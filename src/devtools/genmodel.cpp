#include "devtools/genmodel.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numbers>
#include <random>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include "ggml.h"
#include "gguf.h"

namespace fs = std::filesystem;

namespace hearth::devtools {

namespace {

// llama_ftype values (llama.h is for src/engine only): all F32, mostly F16.
constexpr uint32_t kFileTypeAllF32 = 0;
constexpr uint32_t kFileTypeMostlyF16 = 1;

constexpr float kWeightStd = 0.02f;
constexpr float kBiasStd = 0.01f;
constexpr int64_t kChunkElements = int64_t{1} << 20;  // one PRNG stream per chunk

constexpr const char* kChatMlTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

struct GgufDeleter {
  void operator()(gguf_context* ctx) const { gguf_free(ctx); }
};
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;

struct GgmlDeleter {
  void operator()(ggml_context* ctx) const { ggml_free(ctx); }
};
using GgmlPtr = std::unique_ptr<ggml_context, GgmlDeleter>;

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};

// Removes a path when it goes out of scope unless released.
class RemoveGuard {
 public:
  explicit RemoveGuard(fs::path path) : path_(std::move(path)) {}
  ~RemoveGuard() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove(path_, ec);
    }
  }
  RemoveGuard(const RemoveGuard&) = delete;
  RemoveGuard& operator=(const RemoveGuard&) = delete;
  void release() { path_.clear(); }

 private:
  fs::path path_;
};

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// How a tensor's values are made.
enum class Fill { kNormal, kOnes };

struct TensorSpec {
  std::string name;
  int64_t ne0 = 0;
  int64_t ne1 = 1;  // 1 for vectors
  int n_dims = 1;
  Fill fill = Fill::kNormal;
  float stddev = kWeightStd;
  ggml_type type = GGML_TYPE_F32;

  int64_t elements() const { return ne0 * ne1; }
};

std::vector<TensorSpec> TensorSpecs(const ModelShape& s, int64_t n_vocab, ggml_type matrix_type) {
  const int64_t n_embd = s.n_embd;
  const int64_t n_embd_gqa = int64_t{s.n_embd / s.n_head} * s.n_head_kv;
  const int64_t n_ff = s.n_ff;
  std::vector<TensorSpec> specs;
  auto matrix = [&](std::string name, int64_t ne0, int64_t ne1) {
    specs.push_back({std::move(name), ne0, ne1, 2, Fill::kNormal, kWeightStd, matrix_type});
  };
  auto norm = [&](std::string name, int64_t ne0) {
    specs.push_back({std::move(name), ne0, 1, 1, Fill::kOnes, 0.0f, GGML_TYPE_F32});
  };
  auto bias = [&](std::string name, int64_t ne0) {
    specs.push_back({std::move(name), ne0, 1, 1, Fill::kNormal, kBiasStd, GGML_TYPE_F32});
  };
  // Tied embeddings (as Qwen2.5-0.5B): no output.weight, llama.cpp reuses token_embd.
  matrix("token_embd.weight", n_embd, n_vocab);
  norm("output_norm.weight", n_embd);
  for (int32_t i = 0; i < s.n_layer; ++i) {
    const std::string blk = "blk." + std::to_string(i) + ".";
    norm(blk + "attn_norm.weight", n_embd);
    matrix(blk + "attn_q.weight", n_embd, n_embd);
    bias(blk + "attn_q.bias", n_embd);
    matrix(blk + "attn_k.weight", n_embd, n_embd_gqa);
    bias(blk + "attn_k.bias", n_embd_gqa);
    matrix(blk + "attn_v.weight", n_embd, n_embd_gqa);
    bias(blk + "attn_v.bias", n_embd_gqa);
    matrix(blk + "attn_output.weight", n_embd, n_embd);
    norm(blk + "ffn_norm.weight", n_embd);
    matrix(blk + "ffn_gate.weight", n_embd, n_ff);
    matrix(blk + "ffn_up.weight", n_embd, n_ff);
    matrix(blk + "ffn_down.weight", n_ff, n_embd);
  }
  return specs;
}

void ValidateShape(const ModelShape& s) {
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("invalid model shape '" + s.name + "': " + why);
  };
  if (s.n_layer <= 0) fail("n_layer must be positive");
  if (s.n_embd <= 0) fail("n_embd must be positive");
  if (s.n_head <= 0) fail("n_head must be positive");
  if (s.n_head_kv <= 0) fail("n_head_kv must be positive");
  if (s.n_ff <= 0) fail("n_ff must be positive");
  if (s.n_ctx_train <= 0) fail("n_ctx_train must be positive");
  if (!(s.rope_theta > 0.0f)) fail("rope_theta must be positive");
  if (s.n_embd % s.n_head != 0) fail("n_embd must be a multiple of n_head");
  if (s.n_head % s.n_head_kv != 0) fail("n_head must be a multiple of n_head_kv");
  if ((s.n_embd / s.n_head) % 2 != 0) fail("the head size (n_embd / n_head) must be even");
}

bool LooksLikePath(const std::string& vocab) {
  return vocab.find('/') != std::string::npos || vocab.ends_with(".gguf") ||
         fs::is_regular_file(vocab);
}

std::string ResolveVocabPath(const std::string& vocab) {
  if (vocab.empty()) throw std::runtime_error("no vocab given (a bundled vocab name or a GGUF path)");
  if (LooksLikePath(vocab)) {
    if (!fs::is_regular_file(vocab)) throw std::runtime_error("vocab file not found: " + vocab);
    return vocab;
  }
  return BundledVocabPath(vocab);
}

// Copies one key/value (any type, arrays included) from src to dst.
void CopyKv(gguf_context* dst, const gguf_context* src, int64_t id) {
  const char* key = gguf_get_key(src, id);
  switch (gguf_get_kv_type(src, id)) {
    case GGUF_TYPE_UINT8: gguf_set_val_u8(dst, key, gguf_get_val_u8(src, id)); break;
    case GGUF_TYPE_INT8: gguf_set_val_i8(dst, key, gguf_get_val_i8(src, id)); break;
    case GGUF_TYPE_UINT16: gguf_set_val_u16(dst, key, gguf_get_val_u16(src, id)); break;
    case GGUF_TYPE_INT16: gguf_set_val_i16(dst, key, gguf_get_val_i16(src, id)); break;
    case GGUF_TYPE_UINT32: gguf_set_val_u32(dst, key, gguf_get_val_u32(src, id)); break;
    case GGUF_TYPE_INT32: gguf_set_val_i32(dst, key, gguf_get_val_i32(src, id)); break;
    case GGUF_TYPE_FLOAT32: gguf_set_val_f32(dst, key, gguf_get_val_f32(src, id)); break;
    case GGUF_TYPE_UINT64: gguf_set_val_u64(dst, key, gguf_get_val_u64(src, id)); break;
    case GGUF_TYPE_INT64: gguf_set_val_i64(dst, key, gguf_get_val_i64(src, id)); break;
    case GGUF_TYPE_FLOAT64: gguf_set_val_f64(dst, key, gguf_get_val_f64(src, id)); break;
    case GGUF_TYPE_BOOL: gguf_set_val_bool(dst, key, gguf_get_val_bool(src, id)); break;
    case GGUF_TYPE_STRING: gguf_set_val_str(dst, key, gguf_get_val_str(src, id)); break;
    case GGUF_TYPE_ARRAY: {
      const gguf_type arr_type = gguf_get_arr_type(src, id);
      const size_t n = gguf_get_arr_n(src, id);
      if (arr_type == GGUF_TYPE_STRING) {
        std::vector<const char*> strs(n);
        for (size_t i = 0; i < n; ++i) strs[i] = gguf_get_arr_str(src, id, i);
        gguf_set_arr_str(dst, key, strs.data(), n);
      } else if (arr_type == GGUF_TYPE_ARRAY) {
        throw std::runtime_error(std::string("nested arrays are not supported (key ") + key + ")");
      } else {
        gguf_set_arr_data(dst, key, arr_type, gguf_get_arr_data(src, id), n);
      }
      break;
    }
    default:
      throw std::runtime_error(std::string("unknown GGUF value type for key ") + key);
  }
}

// Fills out[0..n) with normal(0, stddev) values from a stream determined by (seed, tensor,
// chunk), so the result does not depend on how chunks are spread over threads.
void FillNormal(float* out, int64_t n, float stddev, uint64_t seed, uint64_t tensor_index,
                uint64_t chunk_index) {
  const uint64_t stream =
      SplitMix64(SplitMix64(SplitMix64(seed) ^ tensor_index) ^ (chunk_index * 0x9e3779b97f4a7c15ull));
  std::mt19937_64 rng(stream);
  constexpr float kTwoPi = 2.0f * std::numbers::pi_v<float>;
  constexpr float kInv32 = 1.0f / 4294967296.0f;
  int64_t i = 0;
  while (i < n) {
    // Box-Muller on two 32-bit uniforms taken from one 64-bit draw.
    const uint64_t r = rng();
    const float u1 = (static_cast<float>(static_cast<uint32_t>(r >> 32)) + 0.5f) * kInv32;  // (0,1)
    const float u2 = static_cast<float>(static_cast<uint32_t>(r)) * kInv32;                // [0,1)
    const float radius = stddev * std::sqrt(-2.0f * std::log(u1));
    const float angle = kTwoPi * u2;
    out[i++] = radius * std::cos(angle);
    if (i < n) out[i++] = radius * std::sin(angle);
  }
}

class TensorWriter {
 public:
  TensorWriter(FILE* file, const std::string& path, uint64_t seed)
      : file_(file), path_(path), seed_(seed) {
    n_threads_ = std::clamp<int>(static_cast<int>(std::thread::hardware_concurrency()), 1, 8);
    f32_.resize(n_threads_);
    bytes_.resize(n_threads_);
  }

  void Write(const TensorSpec& spec, uint64_t tensor_index) {
    const int64_t n = spec.elements();
    const int64_t n_chunks = (n + kChunkElements - 1) / kChunkElements;
    for (int64_t first = 0; first < n_chunks; first += n_threads_) {
      const int group = static_cast<int>(std::min<int64_t>(n_threads_, n_chunks - first));
      auto work = [&](int slot) {
        const int64_t chunk = first + slot;
        const int64_t begin = chunk * kChunkElements;
        const int64_t count = std::min(kChunkElements, n - begin);
        std::vector<float>& values = f32_[slot];
        values.resize(count);
        if (spec.fill == Fill::kOnes) {
          std::fill(values.begin(), values.end(), 1.0f);
        } else {
          FillNormal(values.data(), count, spec.stddev, seed_, tensor_index,
                     static_cast<uint64_t>(chunk));
        }
        std::vector<uint8_t>& bytes = bytes_[slot];
        if (spec.type == GGML_TYPE_F16) {
          bytes.resize(count * sizeof(ggml_fp16_t));
          ggml_fp32_to_fp16_row(values.data(), reinterpret_cast<ggml_fp16_t*>(bytes.data()), count);
        } else {
          bytes.resize(count * sizeof(float));
          std::memcpy(bytes.data(), values.data(), bytes.size());
        }
      };
      if (group == 1) {
        work(0);
      } else {
        std::vector<std::jthread> threads;
        for (int slot = 1; slot < group; ++slot) threads.emplace_back(work, slot);
        work(0);
      }  // jthreads join here
      for (int slot = 0; slot < group; ++slot) Put(bytes_[slot].data(), bytes_[slot].size());
    }
  }

  void Pad(size_t alignment) {
    static const std::vector<uint8_t> zeros(256, 0);
    const size_t pad = (alignment - written_ % alignment) % alignment;
    for (size_t left = pad; left > 0;) {
      const size_t n = std::min(left, zeros.size());
      Put(zeros.data(), n);
      left -= n;
    }
  }

  void Put(const void* data, size_t n) {
    if (n == 0) return;
    if (std::fwrite(data, 1, n, file_) != n) {
      throw std::runtime_error("writing " + path_ + " failed: " + std::strerror(errno));
    }
    written_ += n;
  }

  size_t written() const { return written_; }
  void set_written(size_t n) { written_ = n; }

 private:
  FILE* file_;
  std::string path_;
  uint64_t seed_;
  int n_threads_ = 1;
  size_t written_ = 0;
  std::vector<std::vector<float>> f32_;
  std::vector<std::vector<uint8_t>> bytes_;
};

struct WriteStats {
  uint64_t n_params = 0;
  int32_t n_vocab = 0;
};

// Writes an F32 or F16 model to `path` (not atomically; the caller handles that).
WriteStats WriteFloatModel(const GenModelOptions& options, const std::string& vocab_path,
                           ggml_type matrix_type, const std::string& path) {
  const ModelShape& shape = options.shape;

  gguf_init_params vparams{};
  vparams.no_alloc = true;
  vparams.ctx = nullptr;
  GgufPtr vocab(gguf_init_from_file(vocab_path.c_str(), vparams));
  if (!vocab) throw std::runtime_error("cannot read vocab GGUF " + vocab_path);
  const int64_t tokens_id = gguf_find_key(vocab.get(), "tokenizer.ggml.tokens");
  if (tokens_id < 0 || gguf_get_kv_type(vocab.get(), tokens_id) != GGUF_TYPE_ARRAY ||
      gguf_get_arr_type(vocab.get(), tokens_id) != GGUF_TYPE_STRING) {
    throw std::runtime_error("vocab GGUF " + vocab_path +
                             " has no tokenizer.ggml.tokens string array (not a tokenizer file?)");
  }
  const size_t n_vocab = gguf_get_arr_n(vocab.get(), tokens_id);
  if (n_vocab == 0 || n_vocab > static_cast<size_t>(INT32_MAX)) {
    throw std::runtime_error("vocab GGUF " + vocab_path + " has an unusable token count");
  }

  GgufPtr out(gguf_init_empty());
  gguf_context* g = out.get();
  gguf_set_val_str(g, "general.architecture", "qwen2");
  gguf_set_val_str(g, "general.name", ("hearth-random-" + shape.name).c_str());
  gguf_set_val_u32(g, "general.file_type",
                   matrix_type == GGML_TYPE_F16 ? kFileTypeMostlyF16 : kFileTypeAllF32);
  gguf_set_val_u32(g, "qwen2.context_length", static_cast<uint32_t>(shape.n_ctx_train));
  gguf_set_val_u32(g, "qwen2.embedding_length", static_cast<uint32_t>(shape.n_embd));
  gguf_set_val_u32(g, "qwen2.block_count", static_cast<uint32_t>(shape.n_layer));
  gguf_set_val_u32(g, "qwen2.feed_forward_length", static_cast<uint32_t>(shape.n_ff));
  gguf_set_val_u32(g, "qwen2.attention.head_count", static_cast<uint32_t>(shape.n_head));
  gguf_set_val_u32(g, "qwen2.attention.head_count_kv", static_cast<uint32_t>(shape.n_head_kv));
  gguf_set_val_f32(g, "qwen2.rope.freq_base", shape.rope_theta);
  gguf_set_val_f32(g, "qwen2.attention.layer_norm_rms_epsilon", 1e-6f);

  const int64_t n_kv = gguf_get_n_kv(vocab.get());
  for (int64_t id = 0; id < n_kv; ++id) {
    const std::string key = gguf_get_key(vocab.get(), id);
    if (key.starts_with("tokenizer.") && key != "tokenizer.chat_template") {
      CopyKv(g, vocab.get(), id);
    }
  }
  const std::string& tmpl = options.chat_template.empty() ? std::string(kChatMlTemplate)
                                                          : options.chat_template;
  gguf_set_val_str(g, "tokenizer.chat_template", tmpl.c_str());
  vocab.reset();

  const std::vector<TensorSpec> specs =
      TensorSpecs(shape, static_cast<int64_t>(n_vocab), matrix_type);
  ggml_init_params mparams{};
  mparams.mem_size = ggml_tensor_overhead() * (specs.size() + 1);
  mparams.mem_buffer = nullptr;
  mparams.no_alloc = true;
  GgmlPtr meta(ggml_init(mparams));
  if (!meta) throw std::runtime_error("ggml_init failed");
  WriteStats stats;
  stats.n_vocab = static_cast<int32_t>(n_vocab);
  for (const TensorSpec& spec : specs) {
    ggml_tensor* t = spec.n_dims == 1 ? ggml_new_tensor_1d(meta.get(), spec.type, spec.ne0)
                                      : ggml_new_tensor_2d(meta.get(), spec.type, spec.ne0, spec.ne1);
    ggml_set_name(t, spec.name.c_str());
    gguf_add_tensor(g, t);
    stats.n_params += static_cast<uint64_t>(spec.elements());
  }

  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "wb"));
  if (!file) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  std::vector<char> iobuf(size_t{4} << 20);
  std::setvbuf(file.get(), iobuf.data(), _IOFBF, iobuf.size());

  if (!gguf_write_to_file_ptr(g, file.get(), /*only_meta=*/true)) {
    throw std::runtime_error("writing the GGUF header of " + path + " failed");
  }
  TensorWriter writer(file.get(), path, options.seed);
  const size_t data_offset = gguf_get_meta_size(g);
  writer.set_written(data_offset);
  const size_t alignment = gguf_get_alignment(g);
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t expected = data_offset + gguf_get_tensor_offset(g, static_cast<int64_t>(i));
    writer.Pad(alignment);
    if (writer.written() != expected) {
      throw std::runtime_error("internal error: tensor " + specs[i].name + " lands at offset " +
                               std::to_string(writer.written()) + ", expected " +
                               std::to_string(expected));
    }
    writer.Write(specs[i], i);
  }
  writer.Pad(alignment);
  if (std::fflush(file.get()) != 0) {
    throw std::runtime_error("writing " + path + " failed: " + std::strerror(errno));
  }
  FILE* raw = file.release();
  if (std::fclose(raw) != 0) {
    throw std::runtime_error("closing " + path + " failed: " + std::strerror(errno));
  }
  return stats;
}

std::string FormatFloat(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

// The element at index i of a non-string array (data points at the array's first element).
std::string ArrayElementText(gguf_type type, const void* data, size_t i) {
  switch (type) {
    case GGUF_TYPE_UINT8: return std::to_string(static_cast<const uint8_t*>(data)[i]);
    case GGUF_TYPE_INT8: return std::to_string(static_cast<const int8_t*>(data)[i]);
    case GGUF_TYPE_UINT16: return std::to_string(static_cast<const uint16_t*>(data)[i]);
    case GGUF_TYPE_INT16: return std::to_string(static_cast<const int16_t*>(data)[i]);
    case GGUF_TYPE_UINT32: return std::to_string(static_cast<const uint32_t*>(data)[i]);
    case GGUF_TYPE_INT32: return std::to_string(static_cast<const int32_t*>(data)[i]);
    case GGUF_TYPE_UINT64: return std::to_string(static_cast<const uint64_t*>(data)[i]);
    case GGUF_TYPE_INT64: return std::to_string(static_cast<const int64_t*>(data)[i]);
    case GGUF_TYPE_FLOAT32: return FormatFloat(static_cast<const float*>(data)[i], 9);
    case GGUF_TYPE_FLOAT64: return FormatFloat(static_cast<const double*>(data)[i], 17);
    case GGUF_TYPE_BOOL: return static_cast<const int8_t*>(data)[i] ? "true" : "false";
    default: return "?";
  }
}

GgufValue ReadValue(const gguf_context* g, int64_t id) {
  GgufValue v;
  const gguf_type type = gguf_get_kv_type(g, id);
  v.type = gguf_type_name(type);
  switch (type) {
    case GGUF_TYPE_UINT8: v.text = std::to_string(gguf_get_val_u8(g, id)); break;
    case GGUF_TYPE_INT8: v.text = std::to_string(gguf_get_val_i8(g, id)); break;
    case GGUF_TYPE_UINT16: v.text = std::to_string(gguf_get_val_u16(g, id)); break;
    case GGUF_TYPE_INT16: v.text = std::to_string(gguf_get_val_i16(g, id)); break;
    case GGUF_TYPE_UINT32: v.text = std::to_string(gguf_get_val_u32(g, id)); break;
    case GGUF_TYPE_INT32: v.text = std::to_string(gguf_get_val_i32(g, id)); break;
    case GGUF_TYPE_UINT64: v.text = std::to_string(gguf_get_val_u64(g, id)); break;
    case GGUF_TYPE_INT64: v.text = std::to_string(gguf_get_val_i64(g, id)); break;
    case GGUF_TYPE_FLOAT32: v.text = FormatFloat(gguf_get_val_f32(g, id), 9); break;
    case GGUF_TYPE_FLOAT64: v.text = FormatFloat(gguf_get_val_f64(g, id), 17); break;
    case GGUF_TYPE_BOOL: v.text = gguf_get_val_bool(g, id) ? "true" : "false"; break;
    case GGUF_TYPE_STRING: v.text = gguf_get_val_str(g, id); break;
    case GGUF_TYPE_ARRAY: {
      const gguf_type arr_type = gguf_get_arr_type(g, id);
      const size_t n = gguf_get_arr_n(g, id);
      v.array_type = gguf_type_name(arr_type);
      v.elements.reserve(n);
      if (arr_type == GGUF_TYPE_STRING) {
        for (size_t i = 0; i < n; ++i) v.elements.emplace_back(gguf_get_arr_str(g, id, i));
      } else if (arr_type != GGUF_TYPE_ARRAY) {
        const void* data = gguf_get_arr_data(g, id);
        for (size_t i = 0; i < n; ++i) v.elements.push_back(ArrayElementText(arr_type, data, i));
      }
      break;
    }
    default: break;
  }
  return v;
}

fs::path TempSibling(const fs::path& target, const std::string& tag) {
  return target.parent_path() /
         ("." + target.filename().string() + "." + tag + "." + std::to_string(::getpid()) + ".tmp");
}

}  // namespace

ModelShape TinyShape() {
  ModelShape s;
  s.name = "tiny";
  s.n_layer = 2;
  s.n_embd = 64;
  s.n_head = 4;
  s.n_head_kv = 2;
  s.n_ff = 128;
  s.rope_theta = 1e6f;
  s.n_ctx_train = 4096;
  return s;
}

ModelShape Qwen25Coder05BShape() {
  ModelShape s;
  s.name = "qwen2.5-coder-0.5b";
  s.n_layer = 24;
  s.n_embd = 896;
  s.n_head = 14;
  s.n_head_kv = 2;
  s.n_ff = 4864;
  s.rope_theta = 1e6f;
  s.n_ctx_train = 32768;
  return s;
}

ModelShape ShapeByName(const std::string& name) {
  if (name == "tiny") return TinyShape();
  if (name == "qwen2.5-coder-0.5b") return Qwen25Coder05BShape();
  throw std::invalid_argument("unknown model shape '" + name +
                              "' (known shapes: tiny, qwen2.5-coder-0.5b)");
}

std::string BundledVocabPath(const std::string& name) {
#ifndef HEARTH_LLAMA_MODELS_DIR
  throw std::runtime_error("bundled vocab '" + name +
                           "' unavailable: built without HEARTH_LLAMA_MODELS_DIR");
#else
  const fs::path dir = HEARTH_LLAMA_MODELS_DIR;
  const fs::path path = dir / ("ggml-vocab-" + name + ".gguf");
  if (!name.empty() && name.find('/') == std::string::npos && fs::is_regular_file(path)) {
    return path.string();
  }
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string file = entry.path().filename().string();
    constexpr std::string_view kPrefix = "ggml-vocab-", kSuffix = ".gguf";
    if (file.starts_with(kPrefix) && file.ends_with(kSuffix)) {
      names.push_back(file.substr(kPrefix.size(), file.size() - kPrefix.size() - kSuffix.size()));
    }
  }
  std::sort(names.begin(), names.end());
  std::string list;
  for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
  if (list.empty()) list = "none found in " + dir.string();
  throw std::runtime_error("unknown vocab '" + name + "' (bundled vocabs: " + list +
                           "; or pass a path to a GGUF file with a tokenizer)");
#endif
}

std::string BundledTemplatePath(const std::string& name) {
#ifndef HEARTH_LLAMA_MODELS_DIR
  throw std::runtime_error("bundled chat template '" + name + "' unavailable: built without HEARTH_LLAMA_MODELS_DIR");
#else
  const fs::path path = fs::path(HEARTH_LLAMA_MODELS_DIR) / "templates" / (name + ".jinja");
  if (!name.empty() && name.find('/') == std::string::npos && fs::is_regular_file(path)) return path.string();
  throw std::runtime_error("unknown bundled chat template '" + name + "' (see " +
                           (fs::path(HEARTH_LLAMA_MODELS_DIR) / "templates").string() + ")");
#endif
}

GenModelResult GenerateModel(const GenModelOptions& options) {
  ValidateShape(options.shape);
  if (options.output_path.empty()) throw std::runtime_error("no output path given");
  const std::string vocab_path = ResolveVocabPath(options.vocab);

  const fs::path target = fs::absolute(options.output_path);
  if (fs::is_directory(target)) {
    throw std::runtime_error("output path " + target.string() + " is a directory");
  }
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  if (ec) {
    throw std::runtime_error("cannot create directory " + target.parent_path().string() + ": " +
                             ec.message());
  }

  const fs::path tmp = TempSibling(target, "part");
  RemoveGuard tmp_guard(tmp);
  WriteStats stats;
  switch (options.type) {
    case engine::QuantType::kF32:
    case engine::QuantType::kF16: {
      const ggml_type t = options.type == engine::QuantType::kF16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
      stats = WriteFloatModel(options, vocab_path, t, tmp.string());
      break;
    }
    case engine::QuantType::kQ8_0:
    case engine::QuantType::kQ4_K_M: {
      const fs::path f16 = TempSibling(target, "f16");
      RemoveGuard f16_guard(f16);
      stats = WriteFloatModel(options, vocab_path, GGML_TYPE_F16, f16.string());
      try {
        engine::QuantizeModel(f16.string(), tmp.string(), options.type);
      } catch (const std::exception& e) {
        throw std::runtime_error("quantizing " + target.string() + " failed: " + e.what());
      }
      break;
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    throw std::runtime_error("cannot rename " + tmp.string() + " to " + target.string() + ": " +
                             ec.message());
  }
  tmp_guard.release();

  GenModelResult result;
  result.path = target.string();
  result.file_bytes = fs::file_size(target);
  result.n_params = stats.n_params;
  result.n_vocab = stats.n_vocab;
  return result;
}

GgufContents ReadGguf(const std::string& path) {
  gguf_init_params params{};
  params.no_alloc = true;
  params.ctx = nullptr;
  GgufPtr g(gguf_init_from_file(path.c_str(), params));
  if (!g) throw std::runtime_error("cannot read GGUF file " + path);
  GgufContents contents;
  contents.version = gguf_get_version(g.get());
  const int64_t n_kv = gguf_get_n_kv(g.get());
  for (int64_t id = 0; id < n_kv; ++id) {
    contents.metadata.emplace(gguf_get_key(g.get(), id), ReadValue(g.get(), id));
  }
  const int64_t n_tensors = gguf_get_n_tensors(g.get());
  for (int64_t id = 0; id < n_tensors; ++id) {
    GgufTensorDesc t;
    t.name = gguf_get_tensor_name(g.get(), id);
    t.type = ggml_type_name(gguf_get_tensor_type(g.get(), id));
    const int64_t* ne = gguf_get_tensor_ne(g.get(), id);
    int n_dims = GGML_MAX_DIMS;
    while (n_dims > 1 && ne[n_dims - 1] == 1) --n_dims;
    t.shape.assign(ne, ne + n_dims);
    t.bytes = gguf_get_tensor_size(g.get(), id);
    contents.tensors.push_back(std::move(t));
  }
  return contents;
}

}  // namespace hearth::devtools
