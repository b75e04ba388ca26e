#include "router/redactor.h"

#include <algorithm>

namespace hearth::router {
namespace {

constexpr std::string_view kPrefix = "[[REDACTED_";
constexpr std::string_view kSuffix = "]]";
// Longest label a Restorer waits for; rule names are short, so anything longer is not ours.
constexpr size_t kMaxLabel = 96;

bool IsLabelChar(char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; }

// "aws_access_key_id" -> "AWS_ACCESS_KEY_ID"; custom names may hold anything, so everything
// outside [A-Z0-9] becomes '_' and the label stays restorable.
std::string Label(std::string_view rule) {
  std::string label;
  for (char c : rule) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    label += IsLabelChar(c) ? c : '_';
  }
  if (label.empty()) label = "VALUE";
  if (label.size() > kMaxLabel - 8) label.resize(kMaxLabel - 8);  // room for "_<n>"
  return label;
}

enum class Match { kNo, kIncomplete, kYes };

// Whether s[at..] is a placeholder, cannot be one, or cannot be decided before more text comes.
Match MatchPlaceholder(std::string_view s, size_t at, size_t& length) {
  size_t i = at;
  for (char expected : kPrefix) {
    if (i == s.size()) return Match::kIncomplete;
    if (s[i++] != expected) return Match::kNo;
  }
  size_t label = 0;
  while (i < s.size() && IsLabelChar(s[i])) {
    if (++label > kMaxLabel) return Match::kNo;
    ++i;
  }
  if (i == s.size()) return Match::kIncomplete;
  if (label == 0) return Match::kNo;
  for (char expected : kSuffix) {
    if (i == s.size()) return Match::kIncomplete;
    if (s[i++] != expected) return Match::kNo;
  }
  length = i - at;
  return Match::kYes;
}

}  // namespace

std::string Redaction::Redact(std::string_view text, const std::vector<Finding>& findings) {
  std::vector<const Finding*> order;
  order.reserve(findings.size());
  for (const Finding& f : findings) {
    if (f.length > 0 && f.offset <= text.size() && f.length <= text.size() - f.offset) order.push_back(&f);
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const Finding* a, const Finding* b) { return a->offset < b->offset; });
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  for (const Finding* f : order) {
    if (f->offset < pos) continue;  // overlaps the previous one
    out.append(text.substr(pos, f->offset - pos));
    std::string value(text.substr(f->offset, f->length));
    auto it = by_value_.find(value);
    if (it == by_value_.end()) {
      std::string label = Label(f->rule);
      size_t n = ++next_number_[label];
      std::string placeholder = std::string(kPrefix) + label + "_" + std::to_string(n) + std::string(kSuffix);
      mapping_.emplace_back(std::move(placeholder), value);
      it = by_value_.emplace(std::move(value), mapping_.size() - 1).first;
    }
    out += mapping_[it->second].first;
    ++count_;
    pos = f->offset + f->length;
  }
  out.append(text.substr(pos));
  return out;
}

Restorer::Restorer(std::vector<std::pair<std::string, std::string>> mapping) {
  for (auto& [placeholder, original] : mapping) mapping_.emplace(std::move(placeholder), std::move(original));
}

std::string Restorer::Push(std::string_view chunk) {
  pending_.append(chunk);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    size_t open = pending_.find('[', i);
    if (open == std::string::npos) {
      out.append(pending_, i, std::string::npos);
      i = pending_.size();
      break;
    }
    out.append(pending_, i, open - i);
    size_t length = 0;
    Match m = MatchPlaceholder(pending_, open, length);
    if (m == Match::kIncomplete) {
      i = open;  // hold back from here
      break;
    }
    if (m == Match::kNo) {
      out += '[';  // the next '[' may still start one ("[[[REDACTED_...")
      i = open + 1;
      continue;
    }
    auto it = mapping_.find(pending_.substr(open, length));
    if (it != mapping_.end()) {
      out += it->second;
    } else {
      out.append(pending_, open, length);
    }
    i = open + length;
  }
  pending_.erase(0, i);
  return out;
}

std::string Restorer::Flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace hearth::router
