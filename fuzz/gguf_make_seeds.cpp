// Writes a small seed corpus of valid GGUF files for gguf_check_fuzz: every value type,
// arrays (including strings), an explicit alignment, several tensor types and ranks, and
// version 2. Each seed is checked with CheckGgufBuffer before it is written.
//
//   gguf_make_seeds OUT_DIR

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/gguf_check.h"

namespace {

struct Tensor {
  std::string name;
  uint32_t type;
  std::vector<int64_t> ne;
  uint64_t bytes;
};

class Writer {
 public:
  explicit Writer(uint32_t version = 3, uint32_t alignment = 32) : alignment_(alignment) {
    Raw("GGUF", 4);
    U32(version);
  }
  void KeyU8(const std::string& k, uint8_t v) { Key(k, 0); Raw(&v, 1); ++n_kv_; }
  void KeyI16(const std::string& k, int16_t v) { Key(k, 3); Raw(&v, 2); ++n_kv_; }
  void KeyU32(const std::string& k, uint32_t v) { Key(k, 4); U32(v); ++n_kv_; }
  void KeyF32(const std::string& k, float v) { Key(k, 6); Raw(&v, 4); ++n_kv_; }
  void KeyBool(const std::string& k, bool v) { Key(k, 7); uint8_t b = v; Raw(&b, 1); ++n_kv_; }
  void KeyStr(const std::string& k, const std::string& v) { Key(k, 8); Str(v); ++n_kv_; }
  void KeyI64(const std::string& k, int64_t v) { Key(k, 11); Raw(&v, 8); ++n_kv_; }
  void KeyF64(const std::string& k, double v) { Key(k, 12); Raw(&v, 8); ++n_kv_; }
  void KeyStrArr(const std::string& k, const std::vector<std::string>& v) {
    Key(k, 9);
    U32(8);
    U64(v.size());
    for (const std::string& s : v) Str(s);
    ++n_kv_;
  }
  void KeyI32Arr(const std::string& k, const std::vector<int32_t>& v) {
    Key(k, 9);
    U32(5);
    U64(v.size());
    for (int32_t x : v) Raw(&x, 4);
    ++n_kv_;
  }
  void AddTensor(const std::string& name, uint32_t type, std::vector<int64_t> ne,
                 uint64_t bytes) {
    tensors_.push_back({name, type, std::move(ne), bytes});
  }

  std::vector<uint8_t> Finish() {
    std::vector<uint8_t> out;
    auto put = [&out](const void* p, size_t n) {
      out.insert(out.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    };
    put(head_.data(), 8);
    const uint64_t n_tensors = tensors_.size();
    put(&n_tensors, 8);
    put(&n_kv_, 8);
    put(head_.data() + 8, head_.size() - 8);
    uint64_t offset = 0;
    for (const Tensor& t : tensors_) {
      const uint64_t len = t.name.size();
      put(&len, 8);
      put(t.name.data(), t.name.size());
      const uint32_t n_dims = uint32_t(t.ne.size());
      put(&n_dims, 4);
      put(t.ne.data(), 8 * t.ne.size());
      put(&t.type, 4);
      put(&offset, 8);
      offset += Pad(t.bytes);
    }
    if (!tensors_.empty()) out.resize(Pad(out.size()), 0);
    for (size_t i = 0; i < tensors_.size(); ++i) {
      for (uint64_t b = 0; b < tensors_[i].bytes; ++b) out.push_back(uint8_t(b * 37 + i));
      out.resize(i + 1 < tensors_.size() ? Pad(out.size()) : out.size(), 0);
    }
    return out;
  }

 private:
  uint64_t Pad(uint64_t v) const { return (v + alignment_ - 1) / alignment_ * alignment_; }
  void Raw(const void* p, size_t n) {
    head_.insert(head_.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void Str(const std::string& s) {
    U64(s.size());
    Raw(s.data(), s.size());
  }
  void Key(const std::string& k, uint32_t type) {
    Str(k);
    U32(type);
  }

  uint64_t alignment_;
  uint64_t n_kv_ = 0;
  std::vector<uint8_t> head_;  // magic + version, then the key/values
  std::vector<Tensor> tensors_;
};

bool Emit(const std::string& dir, const std::string& name, const std::vector<uint8_t>& b) {
  try {
    hearth::engine::CheckGgufBuffer(b.data(), b.size(), name);
  } catch (const hearth::engine::EngineError& e) {
    std::fprintf(stderr, "gguf_make_seeds: seed %s is invalid: %s\n", name.c_str(), e.what());
    return false;
  }
  std::ofstream f(dir + "/" + name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  return bool(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gguf_make_seeds OUT_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  bool ok = true;

  {  // header only
    Writer w;
    ok &= Emit(dir, "seed-empty.gguf", w.Finish());
  }
  {  // metadata of every kind, no tensors (like a vocab-only file)
    Writer w;
    w.KeyStr("general.architecture", "llama");
    w.KeyStr("general.name", "seed");
    w.KeyU8("test.u8", 7);
    w.KeyI16("test.i16", -2);
    w.KeyU32("llama.context_length", 128);
    w.KeyF32("llama.rope.freq_base", 10000.f);
    w.KeyBool("tokenizer.ggml.add_bos_token", true);
    w.KeyI64("test.i64", -1);
    w.KeyF64("test.f64", 0.25);
    w.KeyStrArr("tokenizer.ggml.tokens", {"<s>", "</s>", "a", "b", "ab", ""});
    w.KeyI32Arr("tokenizer.ggml.token_type", {3, 3, 1, 1, 1, 1});
    ok &= Emit(dir, "seed-vocab.gguf", w.Finish());
  }
  {  // tensors of several types and ranks
    Writer w;
    w.KeyStr("general.architecture", "llama");
    w.KeyU32("general.alignment", 32);
    w.AddTensor("token_embd.weight", 0, {8, 4}, 8 * 4 * 4);        // F32
    w.AddTensor("blk.0.attn_q.weight", 2, {64, 2}, 2 * 2 * 18);    // Q4_0
    w.AddTensor("blk.0.ffn_up.weight", 12, {256, 1, 2}, 2 * 144);  // Q4_K
    w.AddTensor("output_norm.weight", 1, {5}, 10);                 // F16
    w.AddTensor("blk.0.x", 30, {2, 1, 1, 3}, 12);                  // BF16, 4-D
    ok &= Emit(dir, "seed-tensors.gguf", w.Finish());
  }
  {  // larger alignment, version 2
    Writer w(2, 64);
    w.KeyU32("general.alignment", 64);
    w.KeyStr("general.architecture", "qwen2");
    w.AddTensor("a", 8, {32, 3}, 3 * 34);  // Q8_0
    w.AddTensor("b", 26, {3}, 12);         // I32
    ok &= Emit(dir, "seed-align64-v2.gguf", w.Finish());
  }
  return ok ? 0 : 1;
}
