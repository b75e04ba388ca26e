// Redaction before a request leaves the machine, and restoration of the response.
// A placeholder is "[[REDACTED_<RULE>_<n>]]" (e.g. "[[REDACTED_EMAIL_1]]"): it names the kind of
// value so the cloud model can still reason about it, and it is plain ASCII that models copy
// verbatim. Not thread-safe: one Redaction and one Restorer per request.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "router/scanner.h"

namespace hearth::router {

// Replaces each finding with a placeholder. The same value gets the same placeholder within one
// Redaction, across several texts (e.g. all chat messages of a request), so the model sees that
// two mentions are the same thing.
class Redaction {
 public:
  // `findings` are Scanner::Scan(text)'s; out-of-range or overlapping ones are ignored.
  std::string Redact(std::string_view text, const std::vector<Finding>& findings);
  const std::vector<std::pair<std::string, std::string>>& mapping() const {
    return mapping_;
  }                                        // placeholder -> original
  size_t count() const { return count_; }  // replacements made (one value may be replaced many times)

 private:
  std::vector<std::pair<std::string, std::string>> mapping_;
  std::unordered_map<std::string, size_t> by_value_;     // original -> index in mapping_
  std::unordered_map<std::string, size_t> next_number_;  // label -> last number used
  size_t count_ = 0;
};

// Restores placeholders in a streamed response. Chunks may split a placeholder anywhere: text
// that could still be the start of a placeholder is held back until it can be decided (at most
// the length of the longest possible placeholder). Placeholder-shaped text that is not in the
// mapping passes through unchanged.
class Restorer {
 public:
  explicit Restorer(std::vector<std::pair<std::string, std::string>> mapping);
  std::string Push(std::string_view chunk);
  std::string Flush();  // the held-back tail, as is: the stream ended inside it

 private:
  std::unordered_map<std::string, std::string> mapping_;
  std::string pending_;
};

}  // namespace hearth::router
