// Model parameters and Modelfiles (Ollama's format) for the model store.
//
// A Modelfile is a list of directives, one per line (case-insensitive), '#' comments:
//   FROM <store name or GGUF path>        exactly once
//   PARAMETER <name> <value>              num_ctx temperature top_k top_p min_p stop
//                                         repeat_penalty seed num_predict (stop repeatable)
//   SYSTEM <text>                         at most once
//   TEMPLATE <text>                       at most once
//   ADAPTER <LoRA GGUF path>              repeatable; applied at scale 1 to every request
//   LICENSE <text>                        repeatable; kept with the model
// A value is the rest of the line, a "double-quoted string" (JSON escapes: \" \\ \n \t
// \uXXXX), or a """triple-quoted block""" that may span lines and is taken verbatim.
// Every error names the line: "Modelfile line 7: unknown PARAMETER 'mirostat' ...".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace hearth::store {

// The PARAMETERs a stored model carries, validated with the same ranges as the Ollama API's
// "options". Unset values leave the server's defaults alone.
struct ModelParameters {
  std::optional<int32_t> num_ctx;          // 16 .. 1048576
  std::optional<double> temperature;       // 0 .. 100
  std::optional<int32_t> top_k;            // 0 .. 1000000
  std::optional<double> top_p;             // 0 .. 1
  std::optional<double> min_p;             // 0 .. 1
  std::optional<double> repeat_penalty;    // 0.01 .. 100
  std::optional<int64_t> seed;             // -2^31 .. 2^32-1 (negative: random)
  std::optional<int32_t> num_predict;      // -2 .. 10000000 (negative: unlimited)
  std::vector<std::string> stop;           // at most 16, each 1..256 bytes

  bool empty() const;
  // Sets one parameter from Modelfile text ("temperature", "0.7"). "stop" appends. Throws
  // std::invalid_argument saying what is wrong (the caller adds the line number).
  void Set(const std::string& key, const std::string& value);
  // Ollama's JSON shape: {"num_ctx": 4096, "stop": ["<|im_end|>"]}.
  nlohmann::json ToJson() const;
  // From the same shape (numbers as numbers; "stop" a string or an array of strings). Throws
  // std::invalid_argument naming the key for an unknown key, a wrong type or a bad value.
  static ModelParameters FromJson(const nlohmann::json& j);
  // Values set in `over` replace ours; a non-empty `over.stop` replaces our stop list.
  void Merge(const ModelParameters& over);
  // ("num_ctx", "4096"), ("stop", "\"<|im_end|>\""): one pair per Modelfile PARAMETER line,
  // values quoted where the parser needs it.
  std::vector<std::pair<std::string, std::string>> Lines() const;
};

// The names Set/FromJson accept, for messages: "num_ctx, temperature, ...".
const std::vector<std::string>& KnownParameters();

struct Modelfile {
  std::string from;
  int from_line = 0;
  ModelParameters parameters;
  std::optional<std::string> system;
  std::optional<std::string> template_text;
  std::vector<std::string> adapters;   // paths as written
  std::vector<int> adapter_lines;
  std::vector<std::string> licenses;
};

// Parses a Modelfile. `source` names it in errors ("Modelfile", a path). Throws
// engine::EngineError(kInvalidRequest) "<source> line N: <problem>".
Modelfile ParseModelfile(std::string_view text, const std::string& source = "Modelfile");

// Quotes a value for a Modelfile: """verbatim""" when that round-trips, else a JSON string.
std::string QuoteModelfileText(const std::string& text);

}  // namespace hearth::store
