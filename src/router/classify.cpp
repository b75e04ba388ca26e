#include "router/classify.h"

#include <algorithm>
#include <cctype>
#include <set>

namespace hearth::router {

namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool ContainsAny(const std::string& text, std::initializer_list<const char*> words) {
  return std::any_of(words.begin(), words.end(), [&](const char* w) { return text.find(w) != std::string::npos; });
}

bool LooksLikePath(std::string_view word) {
  if (word.size() < 3 || word.size() > 300) return false;
  if (word.find("://") != std::string_view::npos) return false;  // URLs are not file paths
  if (word.find('/') != std::string_view::npos) {
    return std::any_of(word.begin(), word.end(), [](unsigned char c) { return std::isalpha(c); });
  }
  size_t dot = word.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || word.size() - dot - 1 < 1 || word.size() - dot - 1 > 5) return false;
  // A file name: letters before the dot, a short alphabetic extension after it.
  return std::all_of(word.begin() + static_cast<ptrdiff_t>(dot) + 1, word.end(), [](unsigned char c) { return std::isalpha(c); }) &&
         std::isalpha(static_cast<unsigned char>(word[0])) != 0;
}

}  // namespace

TaskClass ClassifyTask(const InferenceRequest& r) {
  const std::string& hint = r.client.task;
  if (hint == "autocomplete" || hint == "fim") return TaskClass::kAutocomplete;
  if (hint == "chat") return TaskClass::kChat;
  if (hint == "edit") return TaskClass::kEdit;
  if (hint == "explain") return TaskClass::kExplain;
  if (r.endpoint == Endpoint::kInfill) return TaskClass::kAutocomplete;
  std::string last;
  for (auto it = r.messages.rbegin(); it != r.messages.rend(); ++it) {
    if (it->role == "user") {
      last = it->content;
      break;
    }
  }
  if (last.empty()) last = r.prompt;
  last = Lower(last.substr(0, 400));
  if (ContainsAny(last, {"explain", "what does", "why does", "how does", "what is", "walk me through"})) {
    return TaskClass::kExplain;
  }
  if (ContainsAny(last, {"refactor", "rewrite", "fix ", "fix this", "rename", "modify", "change ", "convert", "edit "})) {
    return TaskClass::kEdit;
  }
  return TaskClass::kChat;
}

int32_t PredictOutputTokens(const InferenceRequest& r, TaskClass task) {
  if (r.sampling.max_tokens >= 0) return r.sampling.max_tokens;
  switch (task) {
    case TaskClass::kAutocomplete: return 64;
    case TaskClass::kChat: return 200;
    case TaskClass::kEdit: return 350;
    case TaskClass::kExplain: return 550;
  }
  return 200;
}

std::vector<std::string_view> RequestTexts(const InferenceRequest& r) {
  std::vector<std::string_view> texts;
  if (!r.prompt.empty()) texts.push_back(r.prompt);
  if (!r.system.empty()) texts.push_back(r.system);
  for (const auto& m : r.messages) {
    texts.push_back(m.content);
    for (const auto& call : m.tool_calls) texts.push_back(call.arguments);
  }
  for (const auto& t : r.tools) texts.push_back(t.description);
  if (r.fim) {
    texts.push_back(r.fim->prefix);
    texts.push_back(r.fim->suffix);
    texts.push_back(r.fim->middle);
    for (const auto& f : r.fim->extra) texts.push_back(f.text);
  }
  for (const auto& input : r.inputs) texts.push_back(input);
  return texts;
}

std::vector<std::string> PathsNamed(const InferenceRequest& r) {
  std::set<std::string> seen;
  std::vector<std::string> out;
  auto add = [&](std::string p) {
    while (p.size() > 2 && p[0] == '.' && p[1] == '/') p = p.substr(2);
    if (!p.empty() && seen.insert(p).second) out.push_back(p);
  };
  if (r.fim) {
    for (const auto& f : r.fim->extra) add(f.filename);
  }
  std::string header = r.client.paths;
  for (size_t start = 0; start < header.size();) {
    size_t comma = header.find(',', start);
    std::string item = header.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) add(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  const auto separator = [](char c) {
    return std::isspace(static_cast<unsigned char>(c)) || c == '"' || c == '\'' || c == '`' || c == '(' || c == ')' ||
           c == '<' || c == '>' || c == '[' || c == ']' || c == '{' || c == '}';
  };
  for (std::string_view text : RequestTexts(r)) {
    size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && separator(text[i])) ++i;
      const size_t start = i;
      while (i < text.size() && !separator(text[i])) ++i;
      std::string_view word = text.substr(start, i - start);
      while (!word.empty() && (word.back() == '.' || word.back() == ',' || word.back() == ':' || word.back() == ';')) {
        word.remove_suffix(1);
      }
      if (LooksLikePath(word)) add(std::string(word));
    }
    if (out.size() > 200) break;
  }
  return out;
}

}  // namespace hearth::router
