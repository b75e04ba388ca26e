// devtools::GenerateModel: random-weight qwen2 GGUF files with a real tokenizer.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "devtools/genmodel.h"
#include "engine/model.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace hearth::devtools {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A fresh, empty directory under the test process's TempDir.
fs::path FreshDir(const std::string& name) {
  fs::path dir = fs::path(test::TempDir()) / ("genmodel-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<std::string> DirEntries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

GenModelOptions TinyOptions(const fs::path& out, uint64_t seed = 42) {
  GenModelOptions options;
  options.shape = TinyShape();
  options.vocab = "starcoder";
  options.seed = seed;
  options.output_path = out.string();
  return options;
}

const GgufTensorDesc* FindTensor(const GgufContents& c, const std::string& name) {
  for (const auto& t : c.tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string MetaText(const GgufContents& c, const std::string& key) {
  const GgufValue* v = c.Find(key);
  return v ? v->text : "<missing " + key + ">";
}

TEST(GenModelTest, ShapeByNameKnowsTheShapes) {
  const ModelShape tiny = ShapeByName("tiny");
  EXPECT_EQ(tiny.name, "tiny");
  EXPECT_EQ(tiny.n_layer, 2);
  EXPECT_EQ(tiny.n_embd, 64);
  EXPECT_EQ(tiny.n_head, 4);
  EXPECT_EQ(tiny.n_head_kv, 2);
  EXPECT_EQ(tiny.n_ff, 128);
  EXPECT_EQ(tiny.n_ctx_train, 4096);

  const ModelShape q = ShapeByName("qwen2.5-coder-0.5b");
  EXPECT_EQ(q.name, "qwen2.5-coder-0.5b");
  EXPECT_EQ(q.n_layer, 24);
  EXPECT_EQ(q.n_embd, 896);
  EXPECT_EQ(q.n_head, 14);
  EXPECT_EQ(q.n_head_kv, 2);
  EXPECT_EQ(q.n_ff, 4864);
  EXPECT_FLOAT_EQ(q.rope_theta, 1e6f);
  EXPECT_EQ(q.n_ctx_train, 32768);
}

TEST(GenModelTest, ShapeByNameRejectsUnknownNames) {
  try {
    ShapeByName("gpt-5");
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("gpt-5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("tiny"), std::string::npos) << msg;
    EXPECT_NE(msg.find("qwen2.5-coder-0.5b"), std::string::npos) << msg;
  }
}

TEST(GenModelTest, BundledVocabPathFindsBundledFiles) {
  const std::string path = BundledVocabPath("starcoder");
  EXPECT_TRUE(fs::is_regular_file(path)) << path;
  EXPECT_NE(path.find("ggml-vocab-starcoder.gguf"), std::string::npos) << path;
}

TEST(GenModelTest, MissingBundledVocabListsTheAvailableOnes) {
  const fs::path dir = FreshDir("missing-vocab");
  GenModelOptions options = TinyOptions(dir / "m.gguf");
  options.vocab = "no-such-vocab";
  try {
    GenerateModel(options);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no-such-vocab"), std::string::npos) << msg;
    EXPECT_NE(msg.find("starcoder"), std::string::npos) << msg;
    EXPECT_NE(msg.find("qwen2"), std::string::npos) << msg;
  }
  EXPECT_TRUE(DirEntries(dir).empty());
}

TEST(GenModelTest, MissingVocabPathIsNamed) {
  const fs::path dir = FreshDir("missing-vocab-path");
  GenModelOptions options = TinyOptions(dir / "m.gguf");
  options.vocab = (dir / "absent.gguf").string();
  try {
    GenerateModel(options);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(options.vocab), std::string::npos) << e.what();
  }
  EXPECT_TRUE(DirEntries(dir).empty());
}

TEST(GenModelTest, VocabThatIsNotGgufIsRejected) {
  const fs::path dir = FreshDir("not-gguf");
  const fs::path bogus = dir / "bogus.gguf";
  std::ofstream(bogus) << "this is not a GGUF file";
  GenModelOptions options = TinyOptions(dir / "m.gguf");
  options.vocab = bogus.string();
  EXPECT_THROW(GenerateModel(options), std::runtime_error);
  EXPECT_EQ(DirEntries(dir), std::vector<std::string>{"bogus.gguf"});
}

TEST(GenModelTest, TinyIsDeterministicPerSeed) {
  const fs::path dir = FreshDir("determinism");
  const GenModelResult a = GenerateModel(TinyOptions(dir / "a.gguf", 42));
  const GenModelResult b = GenerateModel(TinyOptions(dir / "b.gguf", 42));
  const GenModelResult c = GenerateModel(TinyOptions(dir / "c.gguf", 43));
  const std::string bytes_a = ReadAll(a.path), bytes_b = ReadAll(b.path), bytes_c = ReadAll(c.path);
  ASSERT_FALSE(bytes_a.empty());
  EXPECT_EQ(a.file_bytes, bytes_a.size());
  EXPECT_TRUE(bytes_a == bytes_b) << "same seed must give the same bytes";
  EXPECT_EQ(bytes_a.size(), bytes_c.size());
  EXPECT_FALSE(bytes_a == bytes_c) << "another seed must give other weights";
  // Only the finished files remain: no temp files.
  EXPECT_EQ(DirEntries(dir), (std::vector<std::string>{"a.gguf", "b.gguf", "c.gguf"}));
}

TEST(GenModelTest, F16IsDeterministicToo) {
  const fs::path dir = FreshDir("determinism-f16");
  GenModelOptions options = TinyOptions(dir / "a.gguf", 7);
  options.type = engine::QuantType::kF16;
  const GenModelResult a = GenerateModel(options);
  options.output_path = (dir / "b.gguf").string();
  const GenModelResult b = GenerateModel(options);
  EXPECT_TRUE(ReadAll(a.path) == ReadAll(b.path));
}

TEST(GenModelTest, CopiesTheTokenizerAndWritesQwen2Metadata) {
  const fs::path dir = FreshDir("metadata");
  const GenModelResult result = GenerateModel(TinyOptions(dir / "m.gguf"));
  const GgufContents vocab = ReadGguf(BundledVocabPath("starcoder"));
  const GgufContents model = ReadGguf(result.path);

  // Every tokenizer.* key of the vocab file, with identical type and value.
  int copied = 0;
  for (const auto& [key, value] : vocab.metadata) {
    if (!key.starts_with("tokenizer.") || key == "tokenizer.chat_template") continue;
    const GgufValue* got = model.Find(key);
    ASSERT_NE(got, nullptr) << key << " was not copied";
    EXPECT_TRUE(*got == value) << key << " differs";
    ++copied;
  }
  EXPECT_GE(copied, 5);
  // Nothing of the vocab file's own architecture leaks in.
  for (const auto& [key, value] : model.metadata) {
    EXPECT_FALSE(key.starts_with("starcoder2.")) << key;
  }

  const GgufValue* tokens = model.Find("tokenizer.ggml.tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->array_type, "str");
  EXPECT_EQ(tokens->elements.size(), 49152u);
  EXPECT_EQ(result.n_vocab, 49152);
  // starcoder's FIM tokens, which llama.cpp recognises by their text.
  for (const char* fim : {"<fim_prefix>", "<fim_suffix>", "<fim_middle>"}) {
    EXPECT_NE(std::find(tokens->elements.begin(), tokens->elements.end(), fim),
              tokens->elements.end())
        << fim;
  }

  EXPECT_EQ(MetaText(model, "general.architecture"), "qwen2");
  EXPECT_EQ(MetaText(model, "general.file_type"), "0");
  EXPECT_EQ(MetaText(model, "qwen2.context_length"), "4096");
  EXPECT_EQ(MetaText(model, "qwen2.embedding_length"), "64");
  EXPECT_EQ(MetaText(model, "qwen2.block_count"), "2");
  EXPECT_EQ(MetaText(model, "qwen2.feed_forward_length"), "128");
  EXPECT_EQ(MetaText(model, "qwen2.attention.head_count"), "4");
  EXPECT_EQ(MetaText(model, "qwen2.attention.head_count_kv"), "2");
  EXPECT_EQ(MetaText(model, "qwen2.rope.freq_base"), "1000000");
  EXPECT_EQ(model.Find("qwen2.attention.layer_norm_rms_epsilon")->type, "f32");
  const std::string tmpl = MetaText(model, "tokenizer.chat_template");
  EXPECT_NE(tmpl.find("<|im_start|>"), std::string::npos) << tmpl;
  EXPECT_NE(tmpl.find("add_generation_prompt"), std::string::npos) << tmpl;
}

TEST(GenModelTest, WritesAGivenChatTemplate) {
  const fs::path dir = FreshDir("template");
  GenModelOptions options = TinyOptions(dir / "m.gguf");
  options.chat_template = "{{ messages[0]['content'] }}";
  GenerateModel(options);
  EXPECT_EQ(MetaText(ReadGguf(options.output_path), "tokenizer.chat_template"),
            "{{ messages[0]['content'] }}");
}

TEST(GenModelTest, TensorTableHasTheQwen2Layout) {
  const fs::path dir = FreshDir("tensors");
  GenModelOptions options = TinyOptions(dir / "m.gguf");
  options.type = engine::QuantType::kF16;
  const GenModelResult result = GenerateModel(options);
  const GgufContents model = ReadGguf(result.path);
  EXPECT_EQ(MetaText(model, "general.file_type"), "1");

  const ModelShape s = TinyShape();
  const int64_t n_vocab = 49152, n_embd = s.n_embd, n_ff = s.n_ff;
  const int64_t n_embd_kv = n_embd / s.n_head * s.n_head_kv;
  ASSERT_EQ(model.tensors.size(), 2u + 12u * s.n_layer);
  EXPECT_EQ(FindTensor(model, "output.weight"), nullptr) << "embeddings are tied";

  uint64_t n_params = 0;
  for (const auto& t : model.tensors) {
    uint64_t n = 1;
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    n_params += n;
  }
  EXPECT_EQ(result.n_params, n_params);

  struct Expect {
    std::string name;
    std::vector<int64_t> shape;
    std::string type;
  };
  std::vector<Expect> expected = {
      {"token_embd.weight", {n_embd, n_vocab}, "f16"},
      {"output_norm.weight", {n_embd}, "f32"},
  };
  for (int i = 0; i < s.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    expected.push_back({b + "attn_norm.weight", {n_embd}, "f32"});
    expected.push_back({b + "attn_q.weight", {n_embd, n_embd}, "f16"});
    expected.push_back({b + "attn_q.bias", {n_embd}, "f32"});
    expected.push_back({b + "attn_k.weight", {n_embd, n_embd_kv}, "f16"});
    expected.push_back({b + "attn_k.bias", {n_embd_kv}, "f32"});
    expected.push_back({b + "attn_v.weight", {n_embd, n_embd_kv}, "f16"});
    expected.push_back({b + "attn_v.bias", {n_embd_kv}, "f32"});
    expected.push_back({b + "attn_output.weight", {n_embd, n_embd}, "f16"});
    expected.push_back({b + "ffn_norm.weight", {n_embd}, "f32"});
    expected.push_back({b + "ffn_gate.weight", {n_embd, n_ff}, "f16"});
    expected.push_back({b + "ffn_up.weight", {n_embd, n_ff}, "f16"});
    expected.push_back({b + "ffn_down.weight", {n_ff, n_embd}, "f16"});
  }
  for (const Expect& e : expected) {
    const GgufTensorDesc* t = FindTensor(model, e.name);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(t->shape, e.shape) << e.name;
    EXPECT_EQ(t->type, e.type) << e.name;
  }
}

TEST(GenModelTest, QuantizesWithLlamaCpp) {
  const fs::path dir = FreshDir("q8");
  GenModelOptions options = TinyOptions(dir / "m.gguf");
  options.type = engine::QuantType::kQ8_0;
  const GenModelResult result = GenerateModel(options);
  const GgufContents model = ReadGguf(result.path);
  EXPECT_EQ(MetaText(model, "general.file_type"), "7");  // LLAMA_FTYPE_MOSTLY_Q8_0
  EXPECT_EQ(FindTensor(model, "blk.0.ffn_down.weight")->type, "q8_0");
  EXPECT_EQ(FindTensor(model, "blk.0.attn_norm.weight")->type, "f32");
  EXPECT_NE(model.Find("tokenizer.ggml.merges"), nullptr);
  // The F16 intermediate and the quantizer's output are renamed or removed.
  EXPECT_EQ(DirEntries(dir), std::vector<std::string>{"m.gguf"});

  // Quantizing is deterministic as well.
  options.output_path = (dir / "n.gguf").string();
  GenerateModel(options);
  EXPECT_TRUE(ReadAll(result.path) == ReadAll(options.output_path));
}

TEST(GenModelTest, ModelLoadSeesTheFimTokens) {
  const std::string path = test::TinyModelPath("starcoder");
  std::shared_ptr<engine::Model> model = engine::Model::Load(path);
  const engine::ModelInfo& info = model->info();
  EXPECT_EQ(info.architecture, "qwen2");
  EXPECT_EQ(info.n_vocab, 49152);
  EXPECT_EQ(info.n_layer, 2);
  EXPECT_EQ(info.n_embd, 64);
  EXPECT_TRUE(info.fim.available());
  EXPECT_NE(info.chat_template.find("<|im_start|>"), std::string::npos);
}

}  // namespace
}  // namespace hearth::devtools
