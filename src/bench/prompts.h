// The prompt suite of `hearth bench`: task categories sized to the usual output lengths of a
// coding assistant. The default suite is bench/prompts.json, compiled into the binary.
#pragma once

#include <string>
#include <vector>

#include "bench/client.h"

namespace hearth::bench {

struct Category {
  std::string name;         // "autocomplete", "function", "refactor", "explain"
  std::string description;
  int min_tokens = 0, max_tokens = 0;  // the requested output range; max_tokens is the cap sent
  std::vector<Prompt> prompts;         // each with max_tokens set and the length asked for
};

// Parses a suite (see bench/prompts.json for the format). Throws std::runtime_error.
std::vector<Category> ParsePromptSuite(const std::string& json_text);
// bench/prompts.json as compiled in.
const std::string& DefaultPromptSuiteText();

// Keeps the named categories (comma-separated; empty: all), in the order given.
std::vector<Category> SelectCategories(const std::vector<Category>& all, const std::string& names);

}  // namespace hearth::bench
