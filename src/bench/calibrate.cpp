#include "bench/calibrate.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <vector>

#include <sys/stat.h>

#include "router/policy.h"

namespace hearth::bench {

namespace {

struct Line {
  std::string body;  // without the line ending
  std::string eol;   // "\n", "\r\n" or "" (last line without one)
};

std::vector<Line> SplitLines(const std::string& text) {
  std::vector<Line> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) {
      lines.push_back({text.substr(start), ""});
      break;
    }
    const bool crlf = nl > start && text[nl - 1] == '\r';
    const size_t end = crlf ? nl - 1 : nl;
    Line line;
    line.body = text.substr(start, end - start);
    line.eol = crlf ? std::string_view("\r\n") : std::string_view("\n");
    lines.push_back(std::move(line));
    start = nl + 1;
  }
  return lines;
}

// "key:" at column 0, optionally quoted key; returns the offset just after the colon.
std::optional<size_t> TopLevelKey(const std::string& line, const std::string& key) {
  for (const std::string& k : {key, "\"" + key + "\"", "'" + key + "'"}) {
    if (line.compare(0, k.size(), k) != 0) continue;
    size_t i = k.size();
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i < line.size() && line[i] == ':') return i + 1;
  }
  return std::nullopt;
}

}  // namespace

PolicyRewrite RewriteCrossover(const std::string& policy_text, int value) {
  PolicyRewrite out;
  std::vector<Line> lines = SplitLines(policy_text);
  const std::string v = std::to_string(value);
  std::string default_eol = "\n";
  for (const Line& l : lines) {
    if (!l.eol.empty()) {
      default_eol = l.eol;
      break;
    }
  }
  bool done = false;
  for (Line& l : lines) {
    auto colon = TopLevelKey(l.body, "crossover_tokens");
    if (!colon) continue;
    // value: from the first non-blank after the colon to a " #" comment or the end.
    size_t vs = *colon;
    while (vs < l.body.size() && (l.body[vs] == ' ' || l.body[vs] == '\t')) ++vs;
    size_t ve = l.body.size();
    for (size_t i = vs; i < l.body.size(); ++i) {
      if (l.body[i] == '#' && i > 0 && (l.body[i - 1] == ' ' || l.body[i - 1] == '\t')) {
        ve = i;
        break;
      }
    }
    size_t trim = ve;
    while (trim > vs && (l.body[trim - 1] == ' ' || l.body[trim - 1] == '\t')) --trim;
    out.old_value = l.body.substr(vs, trim - vs);
    // Keep the key and its spacing, the spacing before a comment and the comment itself.
    std::string prefix = vs > *colon ? l.body.substr(0, vs) : l.body.substr(0, *colon) + " ";
    std::string tail = l.body.substr(trim);
    l.body = prefix + v + tail;
    done = true;
    break;
  }
  if (!done) {
    Line added{"crossover_tokens: " + v, default_eol};
    size_t at = lines.size();
    for (size_t i = 0; i < lines.size(); ++i) {
      if (TopLevelKey(lines[i].body, "version")) {
        at = i + 1;
        break;
      }
    }
    if (at == lines.size() && !lines.empty() && lines.back().eol.empty()) {
      lines.back().eol = default_eol;
    }
    lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(at), added);
  }
  for (const Line& l : lines) out.text += l.body + l.eol;
  return out;
}

std::string CalibratePolicyFile(const std::string& path, int value) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read policy file " + path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string original = buffer.str();
  PolicyRewrite r = RewriteCrossover(original, value);
  try {
    router::Policy p = router::ParsePolicy(r.text, path);
    if (p.crossover_tokens != value) {
      throw std::runtime_error("the rewritten policy reads crossover_tokens " +
                               std::to_string(p.crossover_tokens) + ", not " + std::to_string(value));
    }
  } catch (const router::PolicyError& e) {
    std::string msg = "the policy would not be valid after the rewrite; left unchanged:";
    for (const auto& p : e.problems()) msg += "\n  " + p;
    throw std::runtime_error(msg);
  }
  const std::string tmp = path + ".hearth-calibrate.tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + tmp);
    out << r.text;
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) ::chmod(tmp.c_str(), st.st_mode & 07777);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error("cannot replace " + path);
  }
  return r.old_value ? *r.old_value : "absent (default 250)";
}

}  // namespace hearth::bench
