// Tests for the structural GGUF validator (engine/gguf_check.h).
//
// Known-good images are written with ggml's own gguf API; corrupt ones are made from them by
// byte surgery at offsets found by walking the (trusted) good image. Every corruption must be
// reported as EngineError(kInvalidModel) with a message naming the file and the problem, and
// anything the validator accepts must also be accepted by ggml's reader.

#include "engine/gguf_check.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/error.h"
#include "ggml.h"
#include "gguf.h"
#include "test_support.h"

namespace hearth::engine {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// ---- building good images with ggml's writer ----------------------------------------------

struct TensorSpec {
  std::string name;
  ggml_type type;
  std::vector<int64_t> ne;
};

struct Image {
  Bytes bytes;
  int64_t n_kv = 0;
  int64_t n_tensors = 0;
  uint64_t tensor_bytes = 0;  // sum of ggml_nbytes
  uint64_t data_end = 0;      // end of the last tensor's data (file may have padding after)
};

// Writes the gguf context's metadata plus deterministic tensor data, as gguf_write_to_file
// would, but into memory.
Image Serialize(gguf_context* g) {
  Image img;
  img.bytes.resize(gguf_get_meta_size(g));
  gguf_get_meta_data(g, img.bytes.data());
  const size_t data_offset = img.bytes.size();
  const size_t align = gguf_get_alignment(g);
  img.n_kv = gguf_get_n_kv(g);
  img.n_tensors = gguf_get_n_tensors(g);
  size_t blob = 0;
  for (int64_t i = 0; i < img.n_tensors; ++i) {
    const size_t end = gguf_get_tensor_offset(g, i) + gguf_get_tensor_size(g, i);
    img.tensor_bytes += gguf_get_tensor_size(g, i);
    img.data_end = data_offset + end;
    blob = (end + align - 1) / align * align;
  }
  img.bytes.resize(data_offset + blob);
  for (size_t i = data_offset; i < img.bytes.size(); ++i) img.bytes[i] = uint8_t(i * 131 + 7);
  if (img.n_tensors == 0) img.data_end = img.bytes.size();
  return img;
}

Image BuildImage(const std::vector<TensorSpec>& specs, bool with_alignment_key = false) {
  gguf_context* g = gguf_init_empty();
  gguf_set_val_str(g, "general.architecture", "llama");
  gguf_set_val_str(g, "general.name", "hearth-test");
  gguf_set_val_u32(g, "test.aaa", 7);
  gguf_set_val_u32(g, "test.bbb", 8);
  if (with_alignment_key) gguf_set_val_u32(g, "general.alignment", 32);
  const float floats[4] = {1.f, 2.f, 3.f, 4.f};
  gguf_set_arr_data(g, "test.arr_f32", GGUF_TYPE_FLOAT32, floats, 4);
  const char* strs[3] = {"a", "bc", "def"};
  gguf_set_arr_str(g, "test.arr_str", strs, 3);
  gguf_set_val_bool(g, "test.bool", true);
  gguf_set_val_u64(g, "test.u64", 1ull << 40);
  gguf_set_val_i8(g, "test.i8", -3);
  gguf_set_val_f64(g, "test.f64", 0.5);

  ggml_init_params params = {/*mem_size=*/64 * ggml_tensor_overhead(), /*mem_buffer=*/nullptr,
                             /*no_alloc=*/true};
  ggml_context* ctx = ggml_init(params);
  for (const TensorSpec& s : specs) {
    ggml_tensor* t = ggml_new_tensor(ctx, s.type, int(s.ne.size()), s.ne.data());
    ggml_set_name(t, s.name.c_str());
    gguf_add_tensor(g, t);
  }
  Image img = Serialize(g);
  ggml_free(ctx);
  gguf_free(g);
  return img;
}

std::vector<TensorSpec> DefaultTensors() {
  return {
      {"tok_embd.weight", GGML_TYPE_F32, {8, 4}},     // 128 bytes
      {"blk.0.attn_q.weight", GGML_TYPE_Q4_0, {64, 2}},  // 72 bytes, padded to 96
      {"blk.0.attn_norm.weight", GGML_TYPE_F16, {5}},    // 10 bytes, then file padding
  };
}

Image GoodImage() { return BuildImage(DefaultTensors()); }

// ---- locating fields in a good image ------------------------------------------------------

struct KvLoc {
  std::string key;
  size_t key_len_off = 0;
  size_t key_off = 0;
  size_t type_off = 0;
  size_t value_off = 0;  // for arrays: the element type
  uint32_t type = 0;
};

struct TensorLoc {
  std::string name;
  size_t name_len_off = 0;
  size_t n_dims_off = 0;
  size_t dims_off = 0;
  size_t type_off = 0;
  size_t offset_off = 0;
  uint64_t offset = 0;
};

struct Layout {
  std::vector<KvLoc> kvs;
  std::vector<TensorLoc> tensors;
};

uint32_t GetU32(const Bytes& b, size_t off) {
  uint32_t v;
  std::memcpy(&v, b.data() + off, 4);
  return v;
}
uint64_t GetU64(const Bytes& b, size_t off) {
  uint64_t v;
  std::memcpy(&v, b.data() + off, 8);
  return v;
}
void PutU32(Bytes& b, size_t off, uint32_t v) { std::memcpy(b.data() + off, &v, 4); }
void PutU64(Bytes& b, size_t off, uint64_t v) { std::memcpy(b.data() + off, &v, 8); }

// Walks a known-good image (no validation: only for images built above).
Layout Walk(const Bytes& b) {
  Layout l;
  size_t p = 8;
  const uint64_t n_tensors = GetU64(b, p);
  const uint64_t n_kv = GetU64(b, p + 8);
  p += 16;
  auto skip_value = [&](uint32_t type) {
    static const size_t kSizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == GGUF_TYPE_STRING) {
      p += 8 + GetU64(b, p);
    } else {
      p += kSizes[type];
    }
  };
  for (uint64_t i = 0; i < n_kv; ++i) {
    KvLoc kv;
    kv.key_len_off = p;
    const uint64_t len = GetU64(b, p);
    kv.key_off = p + 8;
    kv.key.assign(reinterpret_cast<const char*>(b.data() + p + 8), len);
    p += 8 + len;
    kv.type_off = p;
    kv.type = GetU32(b, p);
    p += 4;
    kv.value_off = p;
    if (kv.type == GGUF_TYPE_ARRAY) {
      const uint32_t elem = GetU32(b, p);
      const uint64_t n = GetU64(b, p + 4);
      p += 12;
      for (uint64_t j = 0; j < n; ++j) skip_value(elem);
    } else {
      skip_value(kv.type);
    }
    l.kvs.push_back(kv);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorLoc t;
    t.name_len_off = p;
    const uint64_t len = GetU64(b, p);
    t.name.assign(reinterpret_cast<const char*>(b.data() + p + 8), len);
    p += 8 + len;
    t.n_dims_off = p;
    const uint32_t n_dims = GetU32(b, p);
    p += 4;
    t.dims_off = p;
    p += 8 * n_dims;
    t.type_off = p;
    p += 4;
    t.offset_off = p;
    t.offset = GetU64(b, p);
    p += 8;
    l.tensors.push_back(t);
  }
  return l;
}

KvLoc FindKv(const Layout& l, const std::string& key) {
  for (const KvLoc& kv : l.kvs) {
    if (kv.key == key) return kv;
  }
  ADD_FAILURE() << "no key " << key;
  return l.kvs.front();
}

// ---- assertions ---------------------------------------------------------------------------

const char kName[] = "corrupt.gguf";

::testing::AssertionResult RejectsWith(const Bytes& img, const std::string& word) {
  try {
    CheckGgufBuffer(img.data(), img.size(), kName);
  } catch (const EngineError& e) {
    const std::string msg = e.what();
    if (e.kind() != ErrorKind::kInvalidModel) {
      return ::testing::AssertionFailure() << "wrong kind for: " << msg;
    }
    if (msg.find(std::string("'") + kName + "'") == std::string::npos) {
      return ::testing::AssertionFailure() << "message does not name the file: " << msg;
    }
    if (msg.find("not a valid GGUF model") == std::string::npos) {
      return ::testing::AssertionFailure() << "message does not say 'not a valid GGUF model': "
                                           << msg;
    }
    if (msg.find(word) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks '" << word << "': " << msg;
    }
    return ::testing::AssertionSuccess() << msg;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-EngineError: " << e.what();
  }
  return ::testing::AssertionFailure() << "accepted a corrupt image";
}

// Mutated images may or may not stay valid; what they must never do is crash, throw anything
// but kInvalidModel, or be accepted by us and then rejected by ggml's reader.
void ExpectSafe(const Bytes& img) {
  bool ours = false;
  try {
    CheckGgufBuffer(img.data(), img.size(), kName);
    ours = true;
  } catch (const EngineError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel) << e.what();
  }
  if (ours) {
    gguf_init_params params = {/*no_alloc=*/true, /*ctx=*/nullptr};
    gguf_context* g = gguf_init_from_buffer(img.data(), img.size(), params);
    EXPECT_NE(g, nullptr) << "CheckGgufBuffer accepted an image that ggml rejects";
    if (g) gguf_free(g);
  }
}

// Silences ggml's error log while rejected images are fed to ggml's reader.
class QuietGgml {
 public:
  QuietGgml() {
    ggml_log_get(&cb_, &ud_);
    ggml_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
  }
  ~QuietGgml() { ggml_log_set(cb_, ud_); }

 private:
  ggml_log_callback cb_ = nullptr;
  void* ud_ = nullptr;
};

std::string WriteFile(const std::string& name, const Bytes& b) {
  const std::string path = (fs::path(test::TempDir()) / name).string();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  return path;
}

Bytes ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// ---- valid files --------------------------------------------------------------------------

TEST(GgufCheck, GoodImagePassesWithCorrectCounts) {
  const Image img = GoodImage();
  const GgufSummary s = CheckGgufBuffer(img.bytes.data(), img.bytes.size(), "good.gguf");
  EXPECT_EQ(s.version, 3u);
  EXPECT_EQ(s.tensor_count, 3u);
  EXPECT_EQ(s.metadata_count, uint64_t(img.n_kv));
  EXPECT_EQ(s.metadata_count, 10u);
  EXPECT_EQ(s.file_size, img.bytes.size());
  EXPECT_EQ(s.tensor_data_bytes, img.tensor_bytes);
  EXPECT_EQ(s.tensor_data_bytes, 128u + 72u + 10u);
  EXPECT_EQ(s.architecture, "llama");

  const std::string path = WriteFile("good.gguf", img.bytes);
  const GgufSummary f = CheckGgufFile(path);
  EXPECT_EQ(f.tensor_count, s.tensor_count);
  EXPECT_EQ(f.metadata_count, s.metadata_count);
  EXPECT_EQ(f.file_size, s.file_size);
  EXPECT_EQ(f.tensor_data_bytes, s.tensor_data_bytes);
  EXPECT_EQ(f.architecture, "llama");
}

TEST(GgufCheck, VariantsPass) {
  // No tensors, no keys at all, an explicit alignment key, and version 2.
  {
    const Image img = BuildImage({});
    const GgufSummary s = CheckGgufBuffer(img.bytes.data(), img.bytes.size(), "vocab.gguf");
    EXPECT_EQ(s.tensor_count, 0u);
    EXPECT_EQ(s.tensor_data_bytes, 0u);
  }
  {
    gguf_context* g = gguf_init_empty();
    const Image img = Serialize(g);
    gguf_free(g);
    EXPECT_LE(img.bytes.size(), 32u);  // the 24-byte header, padded to the alignment
    const GgufSummary s = CheckGgufBuffer(img.bytes.data(), img.bytes.size(), "empty.gguf");
    EXPECT_EQ(s.metadata_count, 0u);
    EXPECT_EQ(s.architecture, "");
  }
  {
    const Image img = BuildImage(DefaultTensors(), /*with_alignment_key=*/true);
    EXPECT_EQ(CheckGgufBuffer(img.bytes.data(), img.bytes.size(), "a.gguf").tensor_count, 3u);
  }
  {
    Image img = GoodImage();
    PutU32(img.bytes, 4, 2);
    EXPECT_EQ(CheckGgufBuffer(img.bytes.data(), img.bytes.size(), "v2.gguf").version, 2u);
  }
}

// Every ggml type this llama.cpp can write: the validator's own type table must give the same
// sizes as ggml (it does not link ggml), and ggml must agree the image is valid.
TEST(GgufCheck, EveryGgmlTypeMatchesGgmlSizes) {
  int checked = 0;
  for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
    const ggml_type type = ggml_type(t);
    if (ggml_blck_size(type) == 0) continue;  // removed types
    const int64_t blck = ggml_blck_size(type);
    const Image img = BuildImage({{"a", type, {blck * 3, 5}}, {"b", type, {blck, 1, 2, 3}}});
    SCOPED_TRACE(ggml_type_name(type));
    const GgufSummary s = CheckGgufBuffer(img.bytes.data(), img.bytes.size(), "types.gguf");
    EXPECT_EQ(s.tensor_data_bytes, img.tensor_bytes);
    EXPECT_EQ(s.tensor_data_bytes, ggml_row_size(type, blck * 3) * 5 + ggml_row_size(type, blck) * 6);
    ExpectSafe(img.bytes);
    ++checked;
  }
  EXPECT_GE(checked, 30);
}

TEST(GgufCheck, RealModelPasses) {
  HEARTH_REQUIRE_STORIES(path);
  const GgufSummary s = CheckGgufFile(path);
  gguf_init_params params = {/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_context* g = gguf_init_from_file(path.c_str(), params);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(s.tensor_count, uint64_t(gguf_get_n_tensors(g)));
  EXPECT_EQ(s.metadata_count, uint64_t(gguf_get_n_kv(g)));
  uint64_t total = 0;
  for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) total += gguf_get_tensor_size(g, i);
  EXPECT_EQ(s.tensor_data_bytes, total);
  EXPECT_EQ(s.architecture, "llama");
  EXPECT_GT(s.tensor_count, 0u);
  gguf_free(g);

  // The buffer entry point agrees, and a truncated copy is rejected.
  const Bytes b = ReadFile(path);
  EXPECT_EQ(CheckGgufBuffer(b.data(), b.size(), path).tensor_data_bytes, s.tensor_data_bytes);
  const Bytes half(b.begin(), b.begin() + long(b.size() / 2));
  EXPECT_TRUE(RejectsWith(half, "truncated"));
}

TEST(GgufCheck, BundledVocabFilesPass) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(HEARTH_LLAMA_MODELS_DIR)) {
    if (entry.path().extension() != ".gguf") continue;
    const std::string path = entry.path().string();
    SCOPED_TRACE(path);
    GgufSummary s;
    ASSERT_NO_THROW(s = CheckGgufFile(path));
    gguf_init_params params = {/*no_alloc=*/true, /*ctx=*/nullptr};
    gguf_context* g = gguf_init_from_file(path.c_str(), params);
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(s.tensor_count, uint64_t(gguf_get_n_tensors(g)));
    EXPECT_EQ(s.metadata_count, uint64_t(gguf_get_n_kv(g)));
    EXPECT_FALSE(s.architecture.empty());
    gguf_free(g);
    ++n;
  }
  EXPECT_GE(n, 10);
}

// Vocab files are megabytes of strings: they exercise the file reader's window refills, and a
// cut anywhere in them must be reported as truncation through the file path too.
TEST(GgufCheck, TruncatedVocabFileIsRejected) {
  const std::string src = std::string(HEARTH_LLAMA_MODELS_DIR) + "/ggml-vocab-qwen2.gguf";
  if (!fs::exists(src)) GTEST_SKIP() << src << " is absent";
  const Bytes b = ReadFile(src);
  ASSERT_GT(b.size(), 3u << 20);
  for (size_t cut : {size_t(100), size_t(1) << 20, (size_t(1) << 20) + 5, b.size() / 2,
                     b.size() - 1}) {
    const std::string path = WriteFile("cut.gguf", Bytes(b.begin(), b.begin() + long(cut)));
    try {
      CheckGgufFile(path);
      ADD_FAILURE() << "accepted a cut at " << cut;
    } catch (const EngineError& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
      EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

// ---- corruptions --------------------------------------------------------------------------

TEST(GgufCheck, TruncationAtEveryOffset) {
  const Image img = GoodImage();
  ASSERT_LT(img.data_end, img.bytes.size()) << "the image should end with padding";
  EXPECT_TRUE(RejectsWith(Bytes(), "empty"));
  for (size_t cut = 1; cut < img.data_end; ++cut) {
    SCOPED_TRACE(cut);
    EXPECT_TRUE(RejectsWith(Bytes(img.bytes.begin(), img.bytes.begin() + long(cut)), "truncated"));
  }
  // Cutting only the final padding leaves a valid file (ggml accepts it too).
  const Bytes unpadded(img.bytes.begin(), img.bytes.begin() + long(img.data_end));
  EXPECT_NO_THROW(CheckGgufBuffer(unpadded.data(), unpadded.size(), "x"));
  ExpectSafe(unpadded);
}

TEST(GgufCheck, BadMagic) {
  Bytes b = GoodImage().bytes;
  b[0] = 'X';
  EXPECT_TRUE(RejectsWith(b, "magic"));
  std::memcpy(b.data(), "tjgg", 4);
  EXPECT_TRUE(RejectsWith(b, "legacy GGML"));
  EXPECT_TRUE(RejectsWith(Bytes{'x', 'y'}, "magic"));
  EXPECT_TRUE(RejectsWith(Bytes{'G', 'G'}, "truncated"));
}

TEST(GgufCheck, BadVersion) {
  Bytes b = GoodImage().bytes;
  for (uint32_t v : {0u, 1u, 4u, 0xFFFFu, 0xFFFFFFFFu}) {
    PutU32(b, 4, v);
    EXPECT_TRUE(RejectsWith(b, "version")) << v;
  }
  PutU32(b, 4, 1);
  EXPECT_TRUE(RejectsWith(b, "no longer supported"));
  PutU32(b, 4, 0x03000000u);
  EXPECT_TRUE(RejectsWith(b, "big-endian"));
}

TEST(GgufCheck, AbsurdCounts) {
  const Bytes good = GoodImage().bytes;
  for (uint64_t n : {uint64_t(1) << 63, ~uint64_t(0), uint64_t(1) << 40, uint64_t(1000)}) {
    Bytes b = good;
    PutU64(b, 8, n);
    EXPECT_TRUE(RejectsWith(b, "tensor count")) << n;
    b = good;
    PutU64(b, 16, n);
    EXPECT_TRUE(RejectsWith(b, "metadata key count")) << n;
  }
  // Counts just past what is there run into the next section's bytes; still rejected.
  Bytes b = good;
  PutU64(b, 16, GetU64(b, 16) + 1);
  EXPECT_TRUE(RejectsWith(b, "tensor #0"));  // key #10 swallows part of tensor #0's entry
  b = good;
  PutU64(b, 8, GetU64(b, 8) + 1);
  EXPECT_TRUE(RejectsWith(b, "tensor #3"));
}

TEST(GgufCheck, BadStringLengths) {
  const Bytes good = GoodImage().bytes;
  const Layout l = Walk(good);
  const KvLoc name = FindKv(l, "general.name");
  for (uint64_t n : {uint64_t(1) << 62, ~uint64_t(0), uint64_t(1) << 27}) {
    Bytes b = good;
    PutU64(b, name.value_off, n);
    EXPECT_TRUE(RejectsWith(b, "string length")) << n;
  }
  Bytes b = good;
  PutU64(b, name.value_off, good.size());  // under the cap, past the end
  EXPECT_TRUE(RejectsWith(b, "truncated"));
  // Key lengths: zero, over the cap, past the end.
  b = good;
  PutU64(b, name.key_len_off, 0);
  EXPECT_TRUE(RejectsWith(b, "empty key"));
  b = good;
  PutU64(b, name.key_len_off, uint64_t(1) << 62);
  EXPECT_TRUE(RejectsWith(b, "key length"));
  b = good;
  PutU64(b, name.key_len_off, 60000);
  EXPECT_TRUE(RejectsWith(b, "truncated"));
  // An element of a string array.
  const KvLoc arr = FindKv(l, "test.arr_str");
  b = good;
  PutU64(b, arr.value_off + 12, uint64_t(1) << 62);
  EXPECT_TRUE(RejectsWith(b, "array element #0"));
  b = good;
  b[name.key_off + 3] = 0;
  EXPECT_TRUE(RejectsWith(b, "NUL"));
}

TEST(GgufCheck, BadArrays) {
  const Bytes good = GoodImage().bytes;
  const Layout l = Walk(good);
  const KvLoc f32 = FindKv(l, "test.arr_f32");
  const KvLoc str = FindKv(l, "test.arr_str");
  for (uint64_t n : {uint64_t(1) << 62, ~uint64_t(0), uint64_t(1) << 31}) {
    Bytes b = good;
    PutU64(b, f32.value_off + 4, n);
    EXPECT_TRUE(RejectsWith(b, "array length")) << n;
    b = good;
    PutU64(b, str.value_off + 4, n);
    EXPECT_TRUE(RejectsWith(b, "array length")) << n;
  }
  Bytes b = good;
  PutU64(b, f32.value_off + 4, 1u << 20);  // under the cap, past the end
  EXPECT_TRUE(RejectsWith(b, "truncated"));
  b = good;
  PutU64(b, str.value_off + 4, 1u << 20);
  EXPECT_TRUE(RejectsWith(b, "truncated"));
  b = good;
  PutU32(b, f32.value_off, GGUF_TYPE_ARRAY);
  EXPECT_TRUE(RejectsWith(b, "nested array"));
  for (uint32_t t : {13u, 100u, 0xFFFFFFFFu}) {
    b = good;
    PutU32(b, f32.value_off, t);
    EXPECT_TRUE(RejectsWith(b, "unknown value type")) << t;
  }
}

TEST(GgufCheck, UnknownValueType) {
  const Bytes good = GoodImage().bytes;
  const KvLoc kv = FindKv(Walk(good), "test.aaa");
  for (uint32_t t : {13u, 255u, 0x80000000u, 0xFFFFFFFFu}) {
    Bytes b = good;
    PutU32(b, kv.type_off, t);
    EXPECT_TRUE(RejectsWith(b, "unknown value type")) << t;
    EXPECT_TRUE(RejectsWith(b, "metadata key #2 'test.aaa'")) << t;
  }
}

TEST(GgufCheck, DuplicateKey) {
  Bytes b = GoodImage().bytes;
  const KvLoc bbb = FindKv(Walk(b), "test.bbb");
  std::memcpy(b.data() + bbb.key_off, "test.aaa", 8);
  EXPECT_TRUE(RejectsWith(b, "duplicate key"));
  EXPECT_TRUE(RejectsWith(b, "'test.aaa'"));
}

TEST(GgufCheck, BadAlignmentKey) {
  const Bytes good = BuildImage(DefaultTensors(), /*with_alignment_key=*/true).bytes;
  const KvLoc kv = FindKv(Walk(good), "general.alignment");
  for (uint32_t a : {0u, 48u, 33u, 0xFFFFFFFFu}) {
    Bytes b = good;
    PutU32(b, kv.value_off, a);
    EXPECT_TRUE(RejectsWith(b, "power of two")) << a;
  }
  Bytes b = good;
  PutU32(b, kv.type_off, GGUF_TYPE_INT32);
  EXPECT_TRUE(RejectsWith(b, "must be of type u32"));
  // A larger power of two is well-formed but leaves the tensor offsets misaligned.
  b = good;
  PutU32(b, kv.value_off, 1u << 20);
  EXPECT_TRUE(RejectsWith(b, "truncated"));
}

TEST(GgufCheck, ArchitectureMustBeAString) {
  Bytes b = GoodImage().bytes;
  const KvLoc kv = FindKv(Walk(b), "general.architecture");
  PutU32(b, kv.type_off, GGUF_TYPE_UINT64);
  EXPECT_TRUE(RejectsWith(b, "must be of type string"));
}

TEST(GgufCheck, BadTensorNames) {
  const Bytes good = GoodImage().bytes;
  const Layout l = Walk(good);
  Bytes b = good;
  PutU64(b, l.tensors[1].name_len_off, 0);
  EXPECT_TRUE(RejectsWith(b, "empty name"));
  b = good;
  PutU64(b, l.tensors[1].name_len_off, 64);
  EXPECT_TRUE(RejectsWith(b, "name length"));
  b = good;
  PutU64(b, l.tensors[1].name_len_off, uint64_t(1) << 62);
  EXPECT_TRUE(RejectsWith(b, "name length"));
  // Same-length names: make tensor 2's name equal tensor 1's.
  Image img = BuildImage({{"aaa", GGML_TYPE_F32, {4}}, {"bbb", GGML_TYPE_F32, {4}}});
  const Layout l2 = Walk(img.bytes);
  std::memcpy(img.bytes.data() + l2.tensors[1].name_len_off + 8, "aaa", 3);
  EXPECT_TRUE(RejectsWith(img.bytes, "duplicate tensor name"));
}

TEST(GgufCheck, BadDimensions) {
  const Bytes good = GoodImage().bytes;
  const TensorLoc t = Walk(good).tensors[0];  // 2-D F32 [8, 4]
  for (uint32_t n : {0u, 5u, 9u, 0xFFFFFFFFu}) {
    Bytes b = good;
    PutU32(b, t.n_dims_off, n);
    EXPECT_TRUE(RejectsWith(b, "dimensions")) << n;
  }
  for (int64_t d : {int64_t(0), int64_t(-1), INT64_MIN}) {
    Bytes b = good;
    PutU64(b, t.dims_off + 8, uint64_t(d));
    EXPECT_TRUE(RejectsWith(b, "must be at least 1")) << d;
  }
  Bytes b = good;
  PutU64(b, t.dims_off, uint64_t(1) << 40);
  PutU64(b, t.dims_off + 8, uint64_t(1) << 40);
  EXPECT_TRUE(RejectsWith(b, "overflows"));
  b = good;
  PutU64(b, t.dims_off, uint64_t(1) << 62);  // elements fit in int64, bytes (x4) do not
  PutU64(b, t.dims_off + 8, 1);
  EXPECT_TRUE(RejectsWith(b, "overflows"));
  b = good;
  PutU64(b, t.dims_off, uint64_t(1) << 30);  // representable but far larger than the file
  EXPECT_TRUE(RejectsWith(b, "outside the file"));
  // Q4_0 rows must hold whole 32-element blocks.
  const TensorLoc q = Walk(good).tensors[1];
  b = good;
  PutU64(b, q.dims_off, 33);
  EXPECT_TRUE(RejectsWith(b, "block size"));
}

TEST(GgufCheck, BadTensorTypes) {
  const Bytes good = GoodImage().bytes;
  const TensorLoc t = Walk(good).tensors[2];
  for (uint32_t type : {43u, 1000u, 0xFFFFFFFFu}) {
    Bytes b = good;
    PutU32(b, t.type_off, type);
    EXPECT_TRUE(RejectsWith(b, "unknown tensor type")) << type;
    EXPECT_TRUE(RejectsWith(b, "blk.0.attn_norm.weight")) << type;
  }
  for (uint32_t type : {4u, 5u, 31u, 36u}) {
    Bytes b = good;
    PutU32(b, t.type_off, type);
    EXPECT_TRUE(RejectsWith(b, "no longer supports")) << type;
  }
}

TEST(GgufCheck, BadTensorOffsets) {
  const Bytes good = GoodImage().bytes;
  const Layout l = Walk(good);
  ASSERT_EQ(l.tensors[1].offset, 128u);
  ASSERT_EQ(l.tensors[2].offset, 224u);
  Bytes b = good;
  PutU64(b, l.tensors[2].offset_off, uint64_t(1) << 40);
  EXPECT_TRUE(RejectsWith(b, "outside the file"));
  b = good;
  PutU64(b, l.tensors[2].offset_off, ~uint64_t(0) - 31);  // aligned, offset + size overflows
  EXPECT_TRUE(RejectsWith(b, "outside the file"));
  b = good;
  PutU64(b, l.tensors[1].offset_off, l.tensors[1].offset + 1);
  EXPECT_TRUE(RejectsWith(b, "not a multiple of the alignment"));
  b = good;
  PutU64(b, l.tensors[1].offset_off, l.tensors[0].offset);  // both at 0
  EXPECT_TRUE(RejectsWith(b, "overlaps"));
  b = good;
  PutU64(b, l.tensors[1].offset_off, l.tensors[0].offset + 32);  // inside tensor 0's 128 bytes
  EXPECT_TRUE(RejectsWith(b, "overlaps"));
  // Non-overlapping, aligned, in bounds, but out of table order: ggml's reader refuses
  // these, so must we. Tensor 2 (10 bytes) moves to 128 and tensor 1 (72 bytes) to 160.
  b = good;
  PutU64(b, l.tensors[2].offset_off, 128);
  PutU64(b, l.tensors[1].offset_off, 160);
  EXPECT_TRUE(RejectsWith(b, "table order"));
}

TEST(GgufCheck, RandomBytesAreRejected) {
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 3000; ++i) {
    const size_t size = (i < 64) ? size_t(i) : size_t(rng() % 8192);
    Bytes b(size);
    for (uint8_t& c : b) c = uint8_t(rng());
    if (i % 2 == 1 && size >= 4) std::memcpy(b.data(), "GGUF", 4);
    if (i % 4 == 3 && size >= 8) PutU32(b, 4, 3);
    SCOPED_TRACE(i);
    ASSERT_TRUE(RejectsWith(b, "")) << "size " << size;
  }
}

// A light in-process fuzz: random mutations of a good image never crash, never throw anything
// but kInvalidModel, and whatever we accept ggml's own reader accepts too.
TEST(GgufCheck, MutatedImagesAreSafeAndNoLooserThanGgml) {
  QuietGgml quiet;
  const Bytes good = GoodImage().bytes;
  const Layout l = Walk(good);
  std::vector<size_t> fields;  // offsets of length/count/type/offset fields
  fields.push_back(8);
  fields.push_back(16);
  for (const KvLoc& kv : l.kvs) {
    fields.insert(fields.end(), {kv.key_len_off, kv.type_off, kv.value_off});
  }
  for (const TensorLoc& t : l.tensors) {
    fields.insert(fields.end(), {t.name_len_off, t.n_dims_off, t.dims_off, t.type_off,
                                 t.offset_off});
  }
  static const uint64_t kInteresting[] = {0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 31, 32, 33, 63, 64,
                                          65, 255, 4096, 0x7FFFFFFF, 0xFFFFFFFF,
                                          uint64_t(1) << 32, uint64_t(1) << 62, ~uint64_t(0)};
  std::mt19937_64 rng(777);
  for (int i = 0; i < 20000; ++i) {
    Bytes b = good;
    const int n = 1 + int(rng() % 4);
    for (int k = 0; k < n; ++k) {
      switch (rng() % 4) {
        case 0: b[rng() % b.size()] = uint8_t(rng()); break;
        case 1: b[rng() % b.size()] ^= uint8_t(1u << (rng() % 8)); break;
        case 2: {
          const size_t off = fields[rng() % fields.size()];
          const uint64_t v = kInteresting[rng() % std::size(kInteresting)];
          if (rng() % 2) {
            PutU64(b, off, v);
          } else {
            PutU32(b, off, uint32_t(v));
          }
          break;
        }
        default: b.resize(rng() % (b.size() + 1)); if (b.empty()) b.push_back(0); break;
      }
    }
    ExpectSafe(b);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "mutation #" << i;
      break;
    }
  }
}

TEST(GgufCheck, FileErrors) {
  const std::string missing = (fs::path(test::TempDir()) / "no-such-model.gguf").string();
  try {
    CheckGgufFile(missing);
    ADD_FAILURE() << "accepted a missing file";
  } catch (const EngineError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  const std::string dir = (fs::path(test::TempDir()) / "a-directory.gguf").string();
  fs::create_directories(dir);
  try {
    CheckGgufFile(dir);
    ADD_FAILURE() << "accepted a directory";
  } catch (const EngineError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
  const std::string empty = WriteFile("empty.gguf", Bytes());
  try {
    CheckGgufFile(empty);
    ADD_FAILURE() << "accepted an empty file";
  } catch (const EngineError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos) << e.what();
  }
  // A truncated file through the file reader (not only the buffer one).
  const Image img = GoodImage();
  const std::string cut =
      WriteFile("cut.gguf", Bytes(img.bytes.begin(), img.bytes.begin() + long(img.data_end - 1)));
  try {
    CheckGgufFile(cut);
    ADD_FAILURE() << "accepted a truncated file";
  } catch (const EngineError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  if (::access("/dev/null", R_OK) == 0) {
    try {
      CheckGgufFile("/dev/null");
      ADD_FAILURE() << "accepted /dev/null";
    } catch (const EngineError& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
      EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace hearth::engine
