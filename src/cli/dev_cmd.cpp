#include "cli/dev_cmd.h"

#include <cctype>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>

#include "devtools/genlora.h"
#include "devtools/genmodel.h"

namespace hearth::cli {

namespace {

struct GenModelArgs {
  std::string shape = "tiny";
  std::string vocab = "starcoder";
  std::string type = "f32";
  uint64_t seed = 42;
  std::string chat_template;
  std::string chat_template_file;
  std::string out;
};

engine::QuantType ParseType(std::string name) {
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (name == "f32") return engine::QuantType::kF32;
  if (name == "f16") return engine::QuantType::kF16;
  if (name == "q8_0") return engine::QuantType::kQ8_0;
  if (name == "q4_k_m") return engine::QuantType::kQ4_K_M;
  throw std::invalid_argument("unknown weight type '" + name + "' (f32, f16, q8_0, q4_k_m)");
}

void RunGenModel(const GenModelArgs& args) {
  devtools::GenModelOptions options;
  options.shape = devtools::ShapeByName(args.shape);
  options.vocab = args.vocab;
  options.type = ParseType(args.type);
  options.seed = args.seed;
  options.chat_template = args.chat_template;
  if (!args.chat_template_file.empty()) {
    // A bare name is one of llama.cpp's bundled templates, as --vocab names bundled vocabs.
    const bool bundled = args.chat_template_file.find('/') == std::string::npos &&
                         !std::filesystem::exists(args.chat_template_file);
    const std::string path = bundled ? devtools::BundledTemplatePath(args.chat_template_file) : args.chat_template_file;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read the chat template file " + args.chat_template_file);
    options.chat_template.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (options.chat_template.empty()) throw std::runtime_error("the chat template file " + args.chat_template_file + " is empty");
  }
  options.output_path = args.out;
  const auto start = std::chrono::steady_clock::now();
  const devtools::GenModelResult result = devtools::GenerateModel(options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %s: %llu bytes, %llu params (qwen2 %s, vocab %s with %d tokens, %s, seed %llu) "
              "in %.1f s\n",
              result.path.c_str(), static_cast<unsigned long long>(result.file_bytes),
              static_cast<unsigned long long>(result.n_params), args.shape.c_str(),
              args.vocab.c_str(), result.n_vocab, args.type.c_str(),
              static_cast<unsigned long long>(args.seed), seconds);
  std::fflush(stdout);
}

}  // namespace

void AddDevCommands(CLI::App& app) {
  CLI::App* dev = app.add_subcommand("dev", "Developer tools");
  dev->require_subcommand(1);

  auto args = std::make_shared<GenModelArgs>();
  CLI::App* gen = dev->add_subcommand(
      "gen-model", "Write a qwen2 GGUF model with random weights and a real tokenizer");
  gen->add_option("--shape", args->shape, "Model shape")
      ->check(CLI::IsMember({"tiny", "qwen2.5-coder-0.5b"}))
      ->capture_default_str();
  gen->add_option("--vocab", args->vocab,
                  "Bundled llama.cpp vocab name (starcoder, qwen2, ...) or a path to a GGUF "
                  "file with a tokenizer")
      ->capture_default_str();
  gen->add_option("--type", args->type, "Weight type (q8_0 and q4_k_m use llama.cpp's quantizer)")
      ->check(CLI::IsMember({"f32", "f16", "q8_0", "q4_k_m"}, CLI::ignore_case))
      ->capture_default_str();
  gen->add_option("--seed", args->seed, "Seed of the random weights")->capture_default_str();
  CLI::Option* tmpl = gen->add_option("--chat-template", args->chat_template,
                                      "tokenizer.chat_template to write (default: ChatML)");
  gen->add_option("--chat-template-file", args->chat_template_file,
                  "Read tokenizer.chat_template from a file, or a template bundled with llama.cpp by name "
                  "(e.g. Qwen-Qwen2.5-7B-Instruct)")
      ->excludes(tmpl);
  gen->add_option("--out", args->out, "Output GGUF file")->required();

  auto lora = std::make_shared<devtools::GenLoraOptions>();
  auto lora_shape = std::make_shared<std::string>("tiny");
  CLI::App* gen_lora = dev->add_subcommand("gen-lora", "Write a random-weight LoRA adapter for a gen-model shape");
  gen_lora->add_option("--shape", *lora_shape, "Model shape")
      ->check(CLI::IsMember({"tiny", "qwen2.5-coder-0.5b"}))
      ->capture_default_str();
  gen_lora->add_option("--rank", lora->rank, "LoRA rank")->capture_default_str();
  gen_lora->add_option("--seed", lora->seed, "Seed of the random weights")->capture_default_str();
  gen_lora->add_option("--out", lora->output_path, "Output GGUF file")->required();
  gen_lora->callback([lora, lora_shape] {
    try {
      lora->shape = devtools::ShapeByName(*lora_shape);
      devtools::GenerateLora(*lora);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "hearth: %s\n", e.what());
      throw CLI::RuntimeError(1);
    }
  });

  gen->callback([args] {
    try {
      RunGenModel(*args);
    } catch (const std::exception& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "hearth: %s\n", e.what());
      throw CLI::RuntimeError(1);
    }
  });
}

}  // namespace hearth::cli
