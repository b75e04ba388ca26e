#include "store/modelfile.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <stdexcept>

#include "engine/error.h"

namespace hearth::store {

using json = nlohmann::json;

namespace {

constexpr size_t kMaxStops = 16;
constexpr size_t kMaxStopBytes = 256;
constexpr size_t kMaxModelfileBytes = 4u << 20;

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

int64_t ParseInt(const std::string& key, const std::string& text, int64_t min, int64_t max) {
  int64_t v = 0;
  const char* b = text.data();
  const char* e = b + text.size();
  if (b != e && *b == '+') ++b;
  auto [ptr, ec] = std::from_chars(b, e, v);
  if (text.empty() || ec != std::errc() || ptr != e) {
    throw std::invalid_argument(key + " must be an integer between " + std::to_string(min) + " and " +
                                std::to_string(max) + " (got '" + text + "')");
  }
  if (v < min || v > max) {
    throw std::invalid_argument(key + " must be between " + std::to_string(min) + " and " + std::to_string(max) +
                                " (got " + text + ")");
  }
  return v;
}

double CheckDouble(const std::string& key, double v, double min, double max, const std::string& shown) {
  if (!std::isfinite(v) || v < min || v > max) {
    throw std::invalid_argument(key + " must be a number between " + FormatDouble(min) + " and " + FormatDouble(max) +
                                " (got " + shown + ")");
  }
  return v;
}

double ParseDouble(const std::string& key, const std::string& text, double min, double max) {
  double v = 0;
  const char* b = text.data();
  const char* e = b + text.size();
  if (b != e && *b == '+') ++b;
  auto [ptr, ec] = std::from_chars(b, e, v);
  if (text.empty() || ec != std::errc() || ptr != e) {
    throw std::invalid_argument(key + " must be a number between " + FormatDouble(min) + " and " +
                                FormatDouble(max) + " (got '" + text + "')");
  }
  return CheckDouble(key, v, min, max, text);
}

void AddStop(std::vector<std::string>& stops, const std::string& s) {
  if (s.empty()) throw std::invalid_argument("stop must not be empty");
  if (s.size() > kMaxStopBytes) throw std::invalid_argument("stop is longer than " + std::to_string(kMaxStopBytes) + " bytes");
  if (stops.size() >= kMaxStops) throw std::invalid_argument("at most " + std::to_string(kMaxStops) + " stop strings");
  stops.push_back(s);
}

std::string Known() {
  std::string out;
  for (const std::string& k : KnownParameters()) out += (out.empty() ? "" : ", ") + k;
  return out;
}

// A printable rendition of a directive or key for an error message.
std::string Shown(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 40)) out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  return out;
}

}  // namespace

const std::vector<std::string>& KnownParameters() {
  static const std::vector<std::string> known = {"num_ctx", "temperature", "top_k", "top_p", "min_p",
                                                 "stop", "repeat_penalty", "seed", "num_predict"};
  return known;
}

bool ModelParameters::empty() const {
  return !num_ctx && !temperature && !top_k && !top_p && !min_p && !repeat_penalty && !seed && !num_predict &&
         stop.empty();
}

void ModelParameters::Set(const std::string& raw_key, const std::string& value) {
  const std::string key = Lower(raw_key);
  if (key == "num_ctx") {
    num_ctx = static_cast<int32_t>(ParseInt(key, value, 16, 1 << 20));
  } else if (key == "temperature") {
    temperature = ParseDouble(key, value, 0, 100);
  } else if (key == "top_k") {
    top_k = static_cast<int32_t>(ParseInt(key, value, 0, 1000000));
  } else if (key == "top_p") {
    top_p = ParseDouble(key, value, 0, 1);
  } else if (key == "min_p") {
    min_p = ParseDouble(key, value, 0, 1);
  } else if (key == "repeat_penalty") {
    repeat_penalty = ParseDouble(key, value, 0.01, 100);
  } else if (key == "seed") {
    seed = ParseInt(key, value, INT32_MIN, UINT32_MAX);
  } else if (key == "num_predict") {
    num_predict = static_cast<int32_t>(ParseInt(key, value, -2, 10000000));
  } else if (key == "stop") {
    AddStop(stop, value);
  } else {
    throw std::invalid_argument("unknown PARAMETER '" + Shown(raw_key) + "' (supported: " + Known() + ")");
  }
}

json ModelParameters::ToJson() const {
  json j = json::object();
  if (num_ctx) j["num_ctx"] = *num_ctx;
  if (temperature) j["temperature"] = *temperature;
  if (top_k) j["top_k"] = *top_k;
  if (top_p) j["top_p"] = *top_p;
  if (min_p) j["min_p"] = *min_p;
  if (repeat_penalty) j["repeat_penalty"] = *repeat_penalty;
  if (seed) j["seed"] = *seed;
  if (num_predict) j["num_predict"] = *num_predict;
  if (!stop.empty()) j["stop"] = stop;
  return j;
}

ModelParameters ModelParameters::FromJson(const json& j) {
  ModelParameters p;
  if (j.is_null()) return p;
  if (!j.is_object()) throw std::invalid_argument("parameters must be an object");
  for (const auto& [key, v] : j.items()) {
    if (v.is_null()) continue;
    if (key == "stop") {
      if (v.is_string()) {
        AddStop(p.stop, v.get<std::string>());
      } else if (v.is_array()) {
        for (const json& s : v) {
          if (!s.is_string()) throw std::invalid_argument("stop must be a string or an array of strings");
          AddStop(p.stop, s.get<std::string>());
        }
      } else {
        throw std::invalid_argument("stop must be a string or an array of strings");
      }
      continue;
    }
    if (std::find(KnownParameters().begin(), KnownParameters().end(), key) == KnownParameters().end()) {
      throw std::invalid_argument("unknown parameter '" + Shown(key) + "' (supported: " + Known() + ")");
    }
    if (!v.is_number()) throw std::invalid_argument(key + " must be a number");
    const bool integral_key = key == "num_ctx" || key == "top_k" || key == "seed" || key == "num_predict";
    if (integral_key) {
      const double d = v.get<double>();
      if (!v.is_number_integer() && (std::floor(d) != d || std::fabs(d) > 9e15)) {
        throw std::invalid_argument(key + " must be an integer");
      }
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
        throw std::invalid_argument(key + " is out of range");
      }
      const int64_t i = v.is_number_float() ? static_cast<int64_t>(d) : v.get<int64_t>();
      p.Set(key, std::to_string(i));
    } else {
      CheckDouble(key, v.get<double>(), -1e300, 1e300, v.dump());  // finite
      p.Set(key, FormatDouble(v.get<double>()));
    }
  }
  return p;
}

void ModelParameters::Merge(const ModelParameters& over) {
  if (over.num_ctx) num_ctx = over.num_ctx;
  if (over.temperature) temperature = over.temperature;
  if (over.top_k) top_k = over.top_k;
  if (over.top_p) top_p = over.top_p;
  if (over.min_p) min_p = over.min_p;
  if (over.repeat_penalty) repeat_penalty = over.repeat_penalty;
  if (over.seed) seed = over.seed;
  if (over.num_predict) num_predict = over.num_predict;
  if (!over.stop.empty()) stop = over.stop;
}

std::vector<std::pair<std::string, std::string>> ModelParameters::Lines() const {
  std::vector<std::pair<std::string, std::string>> out;
  if (num_ctx) out.emplace_back("num_ctx", std::to_string(*num_ctx));
  if (temperature) out.emplace_back("temperature", FormatDouble(*temperature));
  if (top_k) out.emplace_back("top_k", std::to_string(*top_k));
  if (top_p) out.emplace_back("top_p", FormatDouble(*top_p));
  if (min_p) out.emplace_back("min_p", FormatDouble(*min_p));
  if (repeat_penalty) out.emplace_back("repeat_penalty", FormatDouble(*repeat_penalty));
  if (seed) out.emplace_back("seed", std::to_string(*seed));
  if (num_predict) out.emplace_back("num_predict", std::to_string(*num_predict));
  for (const std::string& s : stop) out.emplace_back("stop", json(s).dump(-1, ' ', false, json::error_handler_t::replace));
  return out;
}

std::string QuoteModelfileText(const std::string& text) {
  // """...""" is verbatim; it cannot hold """ itself, nor end in '"' (the closing quotes
  // would be read one character early).
  if (text.find("\"\"\"") == std::string::npos && (text.empty() || text.back() != '"')) {
    return "\"\"\"" + text + "\"\"\"";
  }
  return json(text).dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

class Parser {
 public:
  Parser(std::string_view text, const std::string& source) : text_(text), source_(source) {}

  Modelfile Parse() {
    if (text_.size() > kMaxModelfileBytes) {
      throw engine::EngineError(engine::ErrorKind::kInvalidRequest,
                                source_ + " is larger than " + std::to_string(kMaxModelfileBytes >> 20) + " MiB");
    }
    if (text_.find('\0') != std::string_view::npos) Fail(LineOf(text_.find('\0')), "contains a NUL byte");
    Modelfile mf;
    bool system_seen = false, template_seen = false;
    while (pos_ < text_.size()) {
      SkipBlank();
      if (pos_ >= text_.size()) break;
      const int line = line_;
      if (text_[pos_] == '#') {
        SkipToLineEnd();
        continue;
      }
      size_t start = pos_;
      while (pos_ < text_.size() && !IsSpace(text_[pos_]) && text_[pos_] != '\n') ++pos_;
      const std::string word(text_.substr(start, pos_ - start));
      const std::string directive = Lower(word);
      SkipInlineSpace();
      if (directive == "from") {
        if (!mf.from.empty()) Fail(line, "FROM given twice (first on line " + std::to_string(mf.from_line) + ")");
        mf.from = Value(line, "FROM", false);
        mf.from_line = line;
      } else if (directive == "parameter") {
        size_t ks = pos_;
        while (pos_ < text_.size() && !IsSpace(text_[pos_]) && text_[pos_] != '\n') ++pos_;
        const std::string key(text_.substr(ks, pos_ - ks));
        if (key.empty()) Fail(line, "PARAMETER needs a name and a value, e.g. 'PARAMETER temperature 0.7'");
        SkipInlineSpace();
        const std::string value = Value(line, "PARAMETER " + Shown(key), Lower(key) == "stop");
        try {
          mf.parameters.Set(key, value);
        } catch (const std::invalid_argument& e) {
          Fail(line, e.what());
        }
      } else if (directive == "system") {
        if (system_seen) Fail(line, "SYSTEM given twice");
        system_seen = true;
        mf.system = Value(line, "SYSTEM", true);
      } else if (directive == "template") {
        if (template_seen) Fail(line, "TEMPLATE given twice");
        template_seen = true;
        mf.template_text = Value(line, "TEMPLATE", true);
      } else if (directive == "adapter") {
        mf.adapters.push_back(Value(line, "ADAPTER", false));
        mf.adapter_lines.push_back(line);
      } else if (directive == "license") {
        mf.licenses.push_back(Value(line, "LICENSE", true));
      } else if (directive == "message") {
        Fail(line, "MESSAGE is not supported by hearth yet; put example turns in SYSTEM instead");
      } else {
        Fail(line, "unknown directive '" + Shown(word) +
                       "' (expected FROM, PARAMETER, SYSTEM, TEMPLATE, ADAPTER or LICENSE)");
      }
    }
    if (mf.from.empty()) Fail(line_, "no FROM line: a Modelfile must say which model it builds on (FROM <name or path>)");
    return mf;
  }

 private:
  [[noreturn]] void Fail(int line, const std::string& message) const {
    throw engine::EngineError(engine::ErrorKind::kInvalidRequest, source_ + " line " + std::to_string(line) + ": " + message);
  }
  static bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }
  int LineOf(size_t offset) const {
    return 1 + static_cast<int>(std::count(text_.begin(), text_.begin() + static_cast<std::ptrdiff_t>(offset), '\n'));
  }
  void SkipBlank() {
    while (pos_ < text_.size() && (IsSpace(text_[pos_]) || text_[pos_] == '\n')) {
      if (text_[pos_] == '\n') ++line_;
      ++pos_;
    }
  }
  void SkipInlineSpace() {
    while (pos_ < text_.size() && IsSpace(text_[pos_])) ++pos_;
  }
  void SkipToLineEnd() {
    while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
  }
  // After a quoted value only spaces may follow on the line.
  void ExpectLineEnd(int line, const std::string& what) {
    SkipInlineSpace();
    if (pos_ < text_.size() && text_[pos_] != '\n') {
      Fail(line, "unexpected text after the quoted value of " + what);
    }
  }

  // The value of a directive: """block""", "quoted", or the rest of the line (trimmed).
  std::string Value(int line, const std::string& what, bool allow_empty) {
    std::string value;
    if (text_.substr(pos_, 3) == "\"\"\"") {
      const size_t close = text_.find("\"\"\"", pos_ + 3);
      if (close == std::string_view::npos) Fail(line, "the \"\"\" opened here is never closed");
      value = std::string(text_.substr(pos_ + 3, close - pos_ - 3));
      line_ += static_cast<int>(std::count(value.begin(), value.end(), '\n'));
      pos_ = close + 3;
      ExpectLineEnd(line_, what);
    } else if (pos_ < text_.size() && text_[pos_] == '"') {
      size_t i = pos_ + 1;
      while (i < text_.size() && text_[i] != '"' && text_[i] != '\n') i += text_[i] == '\\' ? 2 : 1;
      if (i >= text_.size() || text_[i] != '"') Fail(line, "the quoted value of " + what + " is not closed on its line");
      try {
        value = json::parse(text_.substr(pos_, i + 1 - pos_)).get<std::string>();
      } catch (const json::exception&) {
        Fail(line, "bad escape in the quoted value of " + what + " (use \\\" \\\\ \\n \\t or \\uXXXX)");
      }
      pos_ = i + 1;
      ExpectLineEnd(line, what);
    } else {
      size_t start = pos_;
      SkipToLineEnd();
      value = Trim(text_.substr(start, pos_ - start));
    }
    if (value.empty() && !allow_empty) Fail(line, what + " needs a value");
    return value;
  }

  std::string_view text_;
  std::string source_;
  size_t pos_ = 0;
  int line_ = 1;
};

}  // namespace

Modelfile ParseModelfile(std::string_view text, const std::string& source) { return Parser(text, source).Parse(); }

}  // namespace hearth::store
