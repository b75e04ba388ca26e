#include "engine/text_stream.h"

#include <algorithm>

namespace hearth::engine {

size_t CompleteUtf8Prefix(std::string_view s) {
  // Look back at most 3 bytes for the start of a multi-byte sequence that is not finished.
  size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
    size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

TextStream::TextStream(std::vector<std::string> stop_strings) {
  for (std::string& s : stop_strings) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string TextStream::Push(std::string_view piece) {
  if (stopped_) return {};
  pending_.append(piece);
  // A complete stop string ends the stream; the earliest one wins.
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) {
    size_t at = pending_.find(stop);
    if (at != std::string::npos && at < first) {
      first = at;
      matched_stop_ = stop;
    }
  }
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that could still grow into a stop string.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t len = std::min(stop.size() - 1, pending_.size()); len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, stop, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  size_t emit = CompleteUtf8Prefix(std::string_view(pending_).substr(0, pending_.size() - hold));
  std::string out = pending_.substr(0, emit);
  pending_.erase(0, emit);
  return out;
}

std::string TextStream::Flush() {
  if (stopped_) return {};
  std::string out = pending_.substr(0, CompleteUtf8Prefix(pending_));
  pending_.clear();
  return out;
}

}  // namespace hearth::engine
