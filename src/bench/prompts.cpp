#include "bench/prompts.h"

#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "bench/prompts_default.h"  // generated from bench/prompts.json (src/CMakeLists.txt)

namespace hearth::bench {

using json = nlohmann::json;

namespace {
std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}
}  // namespace

std::vector<Category> ParsePromptSuite(const std::string& json_text) {
  json root = json::parse(json_text, nullptr, false);
  if (root.is_discarded() || !root.is_object() || !root.contains("categories") ||
      !root["categories"].is_array()) {
    throw std::runtime_error("prompt suite: expected a JSON object with a \"categories\" array");
  }
  std::vector<Category> out;
  for (const json& c : root["categories"]) {
    Category cat;
    try {
      cat.name = c.at("name").get<std::string>();
      cat.description = c.value("description", "");
      cat.min_tokens = c.at("min_tokens").get<int>();
      cat.max_tokens = c.at("max_tokens").get<int>();
      const bool fim = c.value("fim", false);
      const std::string instruction = c.value("length_instruction", "");
      for (const json& p : c.at("prompts")) {
        Prompt pr;
        pr.id = p.at("id").get<std::string>();
        pr.fim = fim;
        pr.max_tokens = cat.max_tokens;
        if (fim) {
          pr.prefix = p.at("prefix").get<std::string>();
          pr.suffix = p.at("suffix").get<std::string>();
        } else {
          pr.text = p.at("prompt").get<std::string>();
          if (!instruction.empty()) {
            pr.text += "\n\n" + Replace(Replace(instruction, "{min}", std::to_string(cat.min_tokens)),
                                        "{max}", std::to_string(cat.max_tokens));
          }
        }
        cat.prompts.push_back(std::move(pr));
      }
    } catch (const json::exception& e) {
      throw std::runtime_error("prompt suite: category " + (cat.name.empty() ? "?" : cat.name) + ": " + e.what());
    }
    if (cat.prompts.empty()) throw std::runtime_error("prompt suite: category " + cat.name + " has no prompts");
    if (cat.max_tokens <= 0 || cat.min_tokens > cat.max_tokens) {
      throw std::runtime_error("prompt suite: category " + cat.name + ": bad token range");
    }
    out.push_back(std::move(cat));
  }
  if (out.empty()) throw std::runtime_error("prompt suite: no categories");
  return out;
}

const std::string& DefaultPromptSuiteText() {
  static const std::string text = kDefaultPromptSuite;
  return text;
}

std::vector<Category> SelectCategories(const std::vector<Category>& all, const std::string& names) {
  if (names.empty()) return all;
  std::vector<Category> out;
  std::stringstream ss(names);
  std::string name;
  while (std::getline(ss, name, ',')) {
    if (name.empty()) continue;
    bool found = false;
    for (const Category& c : all) {
      if (c.name == name) {
        out.push_back(c);
        found = true;
      }
    }
    if (!found) {
      std::string known;
      for (const Category& c : all) known += (known.empty() ? "" : ", ") + c.name;
      throw std::runtime_error("unknown category '" + name + "' (known: " + known + ")");
    }
  }
  return out;
}

}  // namespace hearth::bench
