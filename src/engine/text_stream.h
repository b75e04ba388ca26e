// Turns a stream of token pieces into text that is safe to show: complete UTF-8 only, and
// nothing that is, or may become, a stop string. Pure logic; no llama.cpp.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace hearth::engine {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop_strings);

  // Appends a token's bytes. Returns the text that can now be emitted. Once a stop string
  // is seen, stopped() is true and nothing after it is ever returned.
  std::string Push(std::string_view piece);
  // At the end of generation: returns what was held back (minus any stop string and any
  // trailing incomplete UTF-8 sequence).
  std::string Flush();

  bool stopped() const { return stopped_; }
  const std::string& matched_stop() const { return matched_stop_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
  std::string matched_stop_;
};

// Length of the longest prefix of s that is complete UTF-8 (an incomplete trailing sequence
// is excluded; invalid bytes count as complete so they cannot block the stream forever).
size_t CompleteUtf8Prefix(std::string_view s);

}  // namespace hearth::engine
