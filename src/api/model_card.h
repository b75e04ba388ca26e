// What the APIs say about a model: Ollama's /api/show and /api/tags fields, derived from
// the GGUF metadata. Continue.dev treats a model as FIM-capable only when the template
// contains ".Suffix", and reads num_ctx and stop from "parameters"; the card says so
// exactly when the vocabulary has FIM tokens.
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "router/router.h"

namespace hearth::api {

struct ModelCard {
  std::string name;
  std::string digest;           // sha256 of the file (computed once per file version)
  nlohmann::json details;       // format, family, parameter_size, quantization_level
  nlohmann::json model_info;    // general.architecture, <arch>.context_length, ...
  nlohmann::json capabilities;  // "completion", "insert" (FIM), "embedding"
  std::string ollama_template;  // Go-template text as Ollama shows it
  std::string parameters;       // "num_ctx 4096\nstop \"<|im_end|>\""
  std::string modelfile;
  std::chrono::system_clock::time_point modified;
  int32_t context_length = 0;
};

ModelCard DescribeModel(router::Router& router, const std::string& name);

// "494.03M", "7.6B": Ollama's parameter_size style.
std::string HumanParameterCount(uint64_t n);

}  // namespace hearth::api
