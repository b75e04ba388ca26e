// Remote backends over Egress: OpenAI-compatible (SSE), Anthropic Messages (SSE) and Ollama
// (NDJSON), with retries, backoff honouring Retry-After, and a circuit breaker per backend.
// See docs/privacy.md, "Egress and cloud backends".
#include <curl/curl.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "router/backend.h"

namespace hearth::router {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kBackoffBaseMs = 200;
constexpr int kMaxDelayMs = 30000;              // cap for Retry-After and backoff
constexpr size_t kMaxLineBytes = 8 * 1024 * 1024;  // one SSE/NDJSON line, or one whole answer
constexpr int kAnthropicDefaultMaxTokens = 4096;   // Anthropic requires max_tokens

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("sha256 failed");
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 0xf]);
  }
  return out;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// The API key: from the environment variable, else the file; trimmed. Never logged.
std::string LoadKey(const BackendConfig& c, bool required) {
  std::string key;
  std::string source;
  if (!c.api_key_env.empty()) {
    const char* v = std::getenv(c.api_key_env.c_str());
    if (v) key = Trim(v);
    source = "environment variable " + c.api_key_env;
  }
  if (key.empty() && !c.api_key_file.empty()) {
    std::ifstream in(c.api_key_file, std::ios::binary);
    if (!in) {
      throw std::invalid_argument("backend '" + c.name + "': cannot read api_key_file " + c.api_key_file +
                                  (c.api_key_env.empty() ? "" : " (and " + c.api_key_env + " is not set)"));
    }
    std::stringstream ss;
    ss << in.rdbuf();
    key = Trim(ss.str());
    source = "api_key_file " + c.api_key_file;
  }
  if (key.empty()) {
    if (!c.api_key_env.empty() && c.api_key_file.empty()) {
      throw std::invalid_argument("backend '" + c.name + "': the API key environment variable " + c.api_key_env +
                                  " is not set or empty");
    }
    if (!c.api_key_file.empty()) {
      throw std::invalid_argument("backend '" + c.name + "': " + source + " is empty" +
                                  (c.api_key_env.empty() ? "" : " (and " + c.api_key_env + " is not set)"));
    }
    if (required) {
      throw std::invalid_argument("backend '" + c.name + "' (" + c.type +
                                  ") needs an API key: set api_key_env or api_key_file");
    }
    return {};
  }
  for (unsigned char ch : key) {
    if (ch < 0x21 || ch > 0x7e) {
      throw std::invalid_argument("backend '" + c.name + "': the API key in " + source +
                                  " contains whitespace or control characters");
    }
  }
  return key;
}

// Removes the key, and anything that looks like a (masked) echo of it, from provider text.
std::string ScrubKey(std::string text, const std::string& key) {
  if (key.empty()) return text;
  for (size_t pos; (pos = text.find(key)) != std::string::npos;) text.replace(pos, key.size(), "[redacted]");
  const std::string head = key.substr(0, std::min<size_t>(6, key.size()));
  const std::string tail = key.size() >= 8 ? key.substr(key.size() - 4) : std::string();
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j])) && text[j] != '"' && text[j] != '\'') ++j;
    if (j == i) {
      out.push_back(text[i++]);
      continue;
    }
    std::string word = text.substr(i, j - i);
    const bool echo = (head.size() >= 6 && word.find(head) != std::string::npos) ||
                      (!tail.empty() && word.find(tail) != std::string::npos && word.find('*') != std::string::npos);
    out += echo ? "[redacted]" : word;
    i = j;
  }
  return out;
}

// The provider's error message from an error body (OpenAI, Anthropic, Ollama shapes).
std::string ErrorMessage(const std::string& body, const std::string& key) {
  std::string msg;
  json j = json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object()) {
    try {
      if (j.contains("error")) {
        const auto& e = j["error"];
        if (e.is_string()) msg = e.get<std::string>();
        else if (e.is_object() && e.contains("message") && e["message"].is_string()) msg = e["message"].get<std::string>();
      }
      if (msg.empty() && j.contains("message") && j["message"].is_string()) msg = j["message"].get<std::string>();
    } catch (const json::exception&) {
    }
  }
  if (msg.empty()) msg = body;
  for (char& c : msg) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  msg = Trim(ScrubKey(msg, key));
  if (msg.size() > 500) msg = msg.substr(0, 500) + "...";
  return msg;
}

// Delay requested by a Retry-After header (seconds or an HTTP date), capped; -1 when absent.
int RetryAfterMs(const std::string& value) {
  if (value.empty()) return -1;
  char* end = nullptr;
  const double secs = std::strtod(value.c_str(), &end);
  if (end != value.c_str() && Trim(end).empty()) {
    if (!(secs >= 0)) return -1;
    return static_cast<int>(std::min<double>(kMaxDelayMs, std::ceil(secs * 1000)));
  }
  const time_t when = curl_getdate(value.c_str(), nullptr);
  if (when == -1) return -1;
  const double diff = std::difftime(when, std::time(nullptr));
  return static_cast<int>(std::clamp<double>(diff * 1000, 0, kMaxDelayMs));
}

int BackoffMs(int retry_index) {
  thread_local std::mt19937 rng(std::random_device{}());
  const double d = std::min<double>(kMaxDelayMs, kBackoffBaseMs * std::pow(2.0, retry_index));
  std::uniform_real_distribution<double> jitter(0.75, 1.25);
  return static_cast<int>(std::min<double>(kMaxDelayMs, d * jitter(rng)));
}

std::string JoinUrl(std::string base, const std::string& suffix) {
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + suffix;
}

// ---- stream decoding ------------------------------------------------------------------------

// Splits bytes into lines, however the bytes were chunked ("\n" or "\r\n").
class LineSplitter {
 public:
  // Returns false when a line exceeds the bound (a broken stream).
  template <typename F>
  bool Feed(std::string_view bytes, F&& on_line) {
    buf_.append(bytes.data(), bytes.size());
    size_t start = 0;
    for (size_t nl; (nl = buf_.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(buf_.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!on_line(line)) {
        buf_.erase(0, nl + 1);
        return true;
      }
    }
    buf_.erase(0, start);
    return buf_.size() <= kMaxLineBytes;
  }
  std::string TakeRest() {
    std::string rest = std::move(buf_);
    buf_.clear();
    if (!rest.empty() && rest.back() == '\r') rest.pop_back();
    return rest;
  }

 private:
  std::string buf_;
};

int32_t JsonInt(const json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_number() ? it->get<int32_t>() : 0;
}
int32_t AnthropicInputTokens(const json& usage) {
  return JsonInt(usage, "input_tokens") + JsonInt(usage, "cache_creation_input_tokens") +
         JsonInt(usage, "cache_read_input_tokens");
}
bool AnthropicTransient(const std::string& error_type) {
  return error_type == "overloaded_error" || error_type == "api_error" || error_type == "rate_limit_error" ||
         error_type == "timeout_error";
}

// What one attempt's stream produced.
class Decoder {
 public:
  using Emit = std::function<bool(std::string_view)>;
  explicit Decoder(Emit emit) : emit_(std::move(emit)) {}
  virtual ~Decoder() = default;

  // The body bytes as they arrive, and an empty call at the end of each read (Egress::Post);
  // false aborts the transfer.
  bool Feed(std::string_view bytes) {
    if (stop_) return false;
    const bool fed = bytes.empty() || FeedBytes(bytes);
    if (bytes.empty() || !fed || stop_) DeliverBatch();  // the read is over, or so is the stream
    if (!fed) {
      if (!stop_) Protocol("a stream line or a whole answer exceeds " + std::to_string(kMaxLineBytes) + " bytes");
      return false;
    }
    return !stop_;
  }
  // The transfer ended: handles a last event without its terminating blank line.
  void Finish() {
    FinishBytes();
    DeliverBatch();
  }

  bool done = false;               // the provider's end-of-stream marker was seen
  bool client_stopped = false;     // on_text returned false
  bool protocol_error = false;
  std::string error;               // provider error event, or the protocol problem
  bool error_transient = false;
  std::string finish_reason;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;

 protected:
  virtual bool FeedBytes(std::string_view bytes) = 0;
  virtual void FinishBytes() = 0;
  // The first text goes out at once (time to first token); later text that arrives in the same
  // read is joined and goes out at the end of the read: a provider that sends many events
  // at once then costs one restore, one client chunk and one send instead of one per event.
  void Text(std::string_view t) {
    if (t.empty() || stop_) return;
    if (first_delivered_) {
      batch_.append(t);
      return;
    }
    first_delivered_ = true;
    Deliver(t);
  }
  void Protocol(const std::string& what) {
    protocol_error = true;
    error = "malformed stream from the provider: " + what;
    error_transient = true;
    stop_ = true;
  }
  void ProviderError(const std::string& type, const std::string& message, bool transient) {
    error = "provider error" + (type.empty() ? std::string() : " (" + type + ")") + ": " + message;
    error_transient = transient;
    stop_ = true;
  }
  // Runs a handler for one parsed JSON payload, turning type errors into protocol errors.
  template <typename F>
  void WithJson(std::string_view payload, F&& f) {
    json j = json::parse(payload, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      Protocol("an event is not a JSON object");
      return;
    }
    try {
      f(j);
    } catch (const json::exception& e) {
      Protocol(e.what());
    }
  }
  static std::string Str(const json& j, const char* k) {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  }
  static int32_t Int(const json& j, const char* k) { return JsonInt(j, k); }

  bool stop_ = false;

 private:
  void Deliver(std::string_view t) {
    if (!emit_(t)) {
      client_stopped = true;
      stop_ = true;
    }
  }
  // Text decoded before a provider error or the end still reaches the client; after the
  // client stopped, nothing does.
  void DeliverBatch() {
    if (!batch_.empty() && !client_stopped) Deliver(batch_);
    batch_.clear();
  }

  Emit emit_;
  bool first_delivered_ = false;
  std::string batch_;
};

// Server-sent events: `event:` and `data:` fields, dispatched at a blank line.
class SseDecoder : public Decoder {
 public:
  using Decoder::Decoder;
  void FinishBytes() override {
    std::string rest = lines_.TakeRest();
    if (!rest.empty() && !stop_) Line(rest);
    if (has_data_ && !stop_) Dispatch();
  }

 protected:
  virtual void OnEvent(const std::string& event, const std::string& data) = 0;

 private:
  bool FeedBytes(std::string_view bytes) override {
    return lines_.Feed(bytes, [this](std::string_view line) {
      Line(line);
      return !stop_;
    });
  }
  void Line(std::string_view line) {
    if (line.empty()) {
      if (has_data_) Dispatch();
      event_.clear();
      return;
    }
    if (line.front() == ':') return;  // comment / keep-alive
    const size_t colon = line.find(':');
    std::string_view field = line.substr(0, colon);
    std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (field == "event") {
      event_ = std::string(value);
    } else if (field == "data") {
      if (has_data_) data_.push_back('\n');
      data_.append(value);
      has_data_ = true;
    }
  }
  void Dispatch() {
    std::string event = std::move(event_), data = std::move(data_);
    event_.clear();
    data_.clear();
    has_data_ = false;
    OnEvent(event, data);
  }

  LineSplitter lines_;
  std::string event_, data_;
  bool has_data_ = false;
};

class OpenAIDecoder : public SseDecoder {
 public:
  using SseDecoder::SseDecoder;

 private:
  void OnEvent(const std::string&, const std::string& data) override {
    if (done) return;
    if (Trim(data) == "[DONE]") {
      done = true;
      return;
    }
    WithJson(data, [this](const json& j) {
      if (j.contains("error") && !j["error"].is_null()) {
        const json& e = j["error"];
        ProviderError(e.is_object() ? Str(e, "type") : "",
                      e.is_object() ? Str(e, "message") : e.is_string() ? e.get<std::string>() : e.dump(), true);
        return;
      }
      if (auto it = j.find("choices"); it != j.end() && it->is_array() && !it->empty()) {
        const json& c = (*it)[0];
        if (auto fr = c.find("finish_reason"); fr != c.end() && fr->is_string()) finish_reason = fr->get<std::string>();
        if (auto d = c.find("delta"); d != c.end() && d->is_object()) Text(Str(*d, "content"));
      }
      if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
        prompt_tokens = Int(*u, "prompt_tokens");
        completion_tokens = Int(*u, "completion_tokens");
      }
    });
  }
};

class AnthropicDecoder : public SseDecoder {
 public:
  using SseDecoder::SseDecoder;

 private:
  void OnEvent(const std::string& event, const std::string& data) override {
    if (done) return;
    WithJson(data, [&](const json& j) {
      std::string type = Str(j, "type");
      if (type.empty()) type = event;
      if (type == "message_start") {
        const json& m = j.at("message");
        if (auto u = m.find("usage"); u != m.end() && u->is_object()) {
          prompt_tokens = AnthropicInputTokens(*u);
          completion_tokens = Int(*u, "output_tokens");
        }
      } else if (type == "content_block_delta") {
        const json& d = j.at("delta");
        if (Str(d, "type") == "text_delta") Text(Str(d, "text"));
      } else if (type == "message_delta") {
        if (auto d = j.find("delta"); d != j.end() && d->is_object()) {
          const std::string reason = Str(*d, "stop_reason");
          if (!reason.empty()) finish_reason = reason;
        }
        if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
          if (u->contains("output_tokens")) completion_tokens = Int(*u, "output_tokens");
          if (u->contains("input_tokens")) prompt_tokens = AnthropicInputTokens(*u);
        }
      } else if (type == "message_stop") {
        done = true;
      } else if (type == "error") {
        const json& e = j.at("error");
        const std::string etype = Str(e, "type");
        ProviderError(etype, Str(e, "message"), AnthropicTransient(etype));
      }
    });
  }
};

// A non-streaming answer: one JSON object, read whole, then decoded by OnWhole.
class WholeJsonDecoder : public Decoder {
 public:
  using Decoder::Decoder;
  void FinishBytes() override {
    if (stop_) return;
    WithJson(body_, [this](const json& j) { OnWhole(j); });
  }

 protected:
  virtual void OnWhole(const json& j) = 0;

 private:
  bool FeedBytes(std::string_view bytes) override {
    if (body_.size() + bytes.size() > kMaxLineBytes) return false;  // Egress does not bound a delivered body
    body_.append(bytes.data(), bytes.size());
    return true;
  }
  std::string body_;
};

class OpenAIWholeDecoder : public WholeJsonDecoder {
 public:
  using WholeJsonDecoder::WholeJsonDecoder;

 private:
  void OnWhole(const json& j) override {
    if (auto e = j.find("error"); e != j.end() && !e->is_null()) {
      ProviderError(e->is_object() ? Str(*e, "type") : "", e->is_object() ? Str(*e, "message") : e->dump(), true);
      return;
    }
    const json& choices = j.at("choices");
    if (!choices.is_array() || choices.empty()) return Protocol("the answer has no choices");
    const json& c = choices[0];
    finish_reason = Str(c, "finish_reason");
    if (auto m = c.find("message"); m != c.end() && m->is_object()) Text(Str(*m, "content"));
    if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
      prompt_tokens = Int(*u, "prompt_tokens");
      completion_tokens = Int(*u, "completion_tokens");
    }
    done = true;
  }
};

class AnthropicWholeDecoder : public WholeJsonDecoder {
 public:
  using WholeJsonDecoder::WholeJsonDecoder;

 private:
  void OnWhole(const json& j) override {
    if (Str(j, "type") == "error") {
      const json& e = j.at("error");
      const std::string etype = Str(e, "type");
      ProviderError(etype, Str(e, "message"), AnthropicTransient(etype));
      return;
    }
    std::string text;
    for (const json& block : j.at("content")) {
      if (block.is_object() && Str(block, "type") == "text") text += Str(block, "text");
    }
    Text(text);
    finish_reason = Str(j, "stop_reason");
    if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
      prompt_tokens = AnthropicInputTokens(*u);
      completion_tokens = Int(*u, "output_tokens");
    }
    done = true;
  }
};

// Ollama: one JSON object a line (a non-streaming answer is one such line).
class OllamaDecoder : public Decoder {
 public:
  using Decoder::Decoder;
  void FinishBytes() override {
    std::string rest = Trim(lines_.TakeRest());
    if (!rest.empty() && !stop_) Line(rest);
  }

 private:
  bool FeedBytes(std::string_view bytes) override {
    return lines_.Feed(bytes, [this](std::string_view line) {
      if (!Trim(line).empty()) Line(line);
      return !stop_;
    });
  }
  void Line(std::string_view line) {
    if (done) return;
    WithJson(line, [this](const json& j) {
      if (auto e = j.find("error"); e != j.end() && !e->is_null()) {
        ProviderError("", e->is_string() ? e->get<std::string>() : e->dump(), true);
        return;
      }
      if (auto m = j.find("message"); m != j.end() && m->is_object()) Text(Str(*m, "content"));
      if (auto d = j.find("done"); d != j.end() && d->is_boolean() && d->get<bool>()) {
        done = true;
        finish_reason = Str(j, "done_reason");
        prompt_tokens = Int(j, "prompt_eval_count");
        completion_tokens = Int(j, "eval_count");
      }
    });
  }

  LineSplitter lines_;
};

// ---- circuit breaker ------------------------------------------------------------------------

class Breaker {
 public:
  Breaker(std::string name, int failures, int open_seconds)
      : name_(std::move(name)), failures_(failures), open_seconds_(std::max(0, open_seconds)) {}

  // Throws BackendUnavailable while open; returns whether this call is the half-open trial.
  bool Admit() {
    if (failures_ <= 0) return false;  // disabled
    std::lock_guard lock(mutex_);
    if (!open_) return false;
    const auto now = Clock::now();
    if (now < open_until_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(open_until_ - now).count();
      throw BackendUnavailable("circuit open for backend '" + name_ + "' after " + std::to_string(consecutive_) +
                               " consecutive failures; next trial in " + std::to_string((left + 999) / 1000) + " s");
    }
    if (trial_in_flight_) {
      throw BackendUnavailable("circuit open for backend '" + name_ + "': a half-open trial request is in flight");
    }
    trial_in_flight_ = true;
    return true;
  }
  void Success(bool) {
    std::lock_guard lock(mutex_);
    consecutive_ = 0;
    open_ = false;
    trial_in_flight_ = false;
  }
  void Failure(bool trial) {
    std::lock_guard lock(mutex_);
    ++consecutive_;
    if (trial) trial_in_flight_ = false;
    if (failures_ > 0 && (trial || consecutive_ >= failures_)) {
      open_ = true;
      open_until_ = Clock::now() + std::chrono::seconds(open_seconds_);
    }
  }
  void Neutral(bool trial) {  // cancelled: no verdict
    if (!trial) return;
    std::lock_guard lock(mutex_);
    trial_in_flight_ = false;
  }
  bool IsOpen() const {
    if (failures_ <= 0) return false;
    std::lock_guard lock(mutex_);
    return open_ && (Clock::now() < open_until_ || trial_in_flight_);
  }

 private:
  const std::string name_;
  const int failures_;
  const int open_seconds_;
  mutable std::mutex mutex_;
  int consecutive_ = 0;
  bool open_ = false;
  bool trial_in_flight_ = false;
  Clock::time_point open_until_;
};

// Settles the breaker exactly once per call, neutrally when nothing else did (cancel, a bug).
class BreakerVerdict {
 public:
  BreakerVerdict(Breaker& b, bool trial) : b_(b), trial_(trial) {}
  ~BreakerVerdict() {
    if (!settled_) b_.Neutral(trial_);
  }
  void Success() { Settle([&] { b_.Success(trial_); }); }
  void Failure() { Settle([&] { b_.Failure(trial_); }); }

 private:
  template <typename F>
  void Settle(F&& f) {
    if (settled_) return;
    settled_ = true;
    f();
  }
  Breaker& b_;
  bool trial_;
  bool settled_ = false;
};

// ---- the shared Chat loop -------------------------------------------------------------------

class HttpBackend : public RemoteBackend {
 public:
  HttpBackend(BackendConfig config, Egress& egress, std::string key)
      : config_(std::move(config)),
        egress_(egress),
        key_(std::move(key)),
        breaker_(config_.name, config_.breaker_failures, config_.breaker_open_seconds) {}

  const BackendConfig& config() const override { return config_; }
  bool circuit_open() const override { return breaker_.IsOpen(); }

  RemoteResult Chat(const std::vector<engine::ChatMessage>& messages, const engine::SamplingParams& sampling,
                    const TextSink& on_text, const std::shared_ptr<std::atomic<bool>>& cancel,
                    const BeforeSend& before_send = {}, bool stream = true) override;

 protected:
  virtual std::string Url() const = 0;
  virtual std::vector<std::string> Headers(bool stream) const = 0;
  virtual json Body(const std::vector<engine::ChatMessage>& messages, const engine::SamplingParams& s,
                    bool stream) const = 0;
  virtual std::unique_ptr<Decoder> NewDecoder(Decoder::Emit emit, bool stream) const = 0;
  // The provider's finish reason as "stop" or "length".
  virtual std::string MapFinish(const std::string& reason) const { return reason == "length" ? "length" : "stop"; }

  BackendConfig config_;
  Egress& egress_;
  const std::string key_;

 private:
  std::string Label() const { return "backend '" + config_.name + "'"; }

  Breaker breaker_;
};

bool TransientStatus(int status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504 ||
         status == 529;
}

bool Cancelled(const std::shared_ptr<std::atomic<bool>>& cancel) { return cancel && cancel->load(); }

// Sleeps up to ms, waking early on cancel; returns false when cancelled.
bool SleepUnlessCancelled(int ms, const std::shared_ptr<std::atomic<bool>>& cancel) {
  const auto until = Clock::now() + std::chrono::milliseconds(ms);
  while (Clock::now() < until) {
    if (Cancelled(cancel)) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(std::chrono::milliseconds(10), until - Clock::now()));
  }
  return !Cancelled(cancel);
}

RemoteResult HttpBackend::Chat(const std::vector<engine::ChatMessage>& messages, const engine::SamplingParams& sampling,
                               const TextSink& on_text, const std::shared_ptr<std::atomic<bool>>& cancel,
                               const BeforeSend& before_send, bool stream) {
  const auto t0 = Clock::now();
  BreakerVerdict verdict(breaker_, breaker_.Admit());

  const std::string url = Url();
  const std::vector<std::string> headers = Headers(stream);
  const std::string body = Dump(Body(messages, sampling, stream));

  RemoteResult result;
  result.sent_sha256 = Sha256Hex(body);
  if (before_send) before_send(result.sent_sha256, body.size());
  bool emitted = false;
  std::exception_ptr sink_error;
  const auto finish = [&](std::string reason) {
    result.finish_reason = std::move(reason);
    result.total_ms = MsSince(t0);
    return result;
  };

  const int max_attempts = 1 + std::max(0, config_.max_retries);
  for (int attempt = 1;; ++attempt) {
    if (Cancelled(cancel)) return finish("cancelled");

    // Text reaches the caller as it arrives; `emitted` then forbids any retry.
    auto decoder = NewDecoder(
        [&](std::string_view text) {
      if (!emitted) result.ttft_ms = MsSince(t0);
      emitted = true;
      result.text.append(text);
      if (!on_text) return true;
      try {
        return on_text(text);
      } catch (...) {
        sink_error = std::current_exception();
        return false;
      }
    },
        stream);
    const auto on_data = [&](std::string_view bytes) { return decoder->Feed(bytes); };
    // EgressDenied propagates: a configuration error, not a verdict on the provider.
    EgressResponse r = egress_.Post(url, headers, body, on_data, cancel, config_.connect_timeout_ms,
                                    stream ? config_.read_timeout_ms : config_.response_timeout_ms);
    result.attempts = attempt;
    result.bytes_sent += r.bytes_sent;
    if (sink_error) std::rethrow_exception(sink_error);
    if (r.failure == EgressResponse::Failure::kNone && r.status >= 200 && r.status < 300) decoder->Finish();

    result.prompt_tokens = decoder->prompt_tokens;
    result.completion_tokens = decoder->completion_tokens;
    if (decoder->client_stopped || r.failure == EgressResponse::Failure::kCancelled) {
      return finish("cancelled");
    }

    // Classify the attempt.
    std::string reason;  // transient failure, when set
    bool retryable = true;
    const bool transfer_ok = r.failure == EgressResponse::Failure::kNone && r.status >= 200 && r.status < 300;
    if (!decoder->error.empty() && (transfer_ok || r.failure == EgressResponse::Failure::kAborted)) {
      // A provider error event in the stream, or a stream the decoder could not read.
      if (!decoder->error_transient) {
        verdict.Success();  // the provider answered
        throw std::runtime_error(Label() + " failed: " + ScrubKey(decoder->error, key_));
      }
      reason = ScrubKey(decoder->error, key_);
    } else if (transfer_ok) {
      if (!decoder->done && decoder->finish_reason.empty()) {
        reason = "the stream ended before the provider's end marker";
      } else {
        verdict.Success();
        return finish(MapFinish(decoder->finish_reason));
      }
    } else if (r.failure == EgressResponse::Failure::kNone) {
      const std::string msg = ErrorMessage(r.body, key_);
      if (!TransientStatus(r.status)) {
        verdict.Success();  // reachable; the request itself is wrong (key, model, body)
        throw std::runtime_error(Label() + " rejected the request: HTTP " + std::to_string(r.status) +
                                 (msg.empty() ? "" : ": " + msg));
      }
      reason = "HTTP " + std::to_string(r.status) + (msg.empty() ? "" : ": " + msg);
    } else {
      reason = ScrubKey(r.error, key_);
      if (r.failure == EgressResponse::Failure::kTls) retryable = false;  // not a passing glitch
    }

    if (emitted) {
      verdict.Failure();
      result.notes.push_back("attempt " + std::to_string(attempt) + ": " + reason + " after " +
                             std::to_string(result.text.size()) + " bytes of text were streamed; not retried");
      throw BackendUnavailable(Label() + " failed mid-stream (" + reason + ") after " +
                               std::to_string(result.text.size()) +
                               " bytes of text were streamed to the client; not retried");
    }
    if (!retryable || attempt >= max_attempts) {
      verdict.Failure();
      std::string msg = Label() + " unavailable after " + std::to_string(attempt) + " attempt" +
                        (attempt == 1 ? "" : "s") + ": " + reason;
      for (const auto& n : result.notes) msg += "; " + n;
      throw BackendUnavailable(msg);
    }
    const int ra = RetryAfterMs(r.retry_after);
    const int delay = ra >= 0 ? ra : BackoffMs(attempt - 1);
    result.notes.push_back("attempt " + std::to_string(attempt) + ": " + reason + "; retry in " +
                           std::to_string(delay) + " ms" +
                           (ra >= 0 ? " (Retry-After: " + r.retry_after + ")" : " (backoff)"));
    result.text.clear();
    if (!SleepUnlessCancelled(delay, cancel)) return finish("cancelled");
  }
}

// ---- providers ------------------------------------------------------------------------------

json Messages(const std::vector<engine::ChatMessage>& messages) {
  json out = json::array();
  for (const auto& m : messages) out.push_back({{"role", m.role}, {"content", m.content}});
  return out;
}

class OpenAICompatibleBackend : public HttpBackend {
 public:
  using HttpBackend::HttpBackend;

 protected:
  std::string Url() const override { return JoinUrl(config_.url, "/chat/completions"); }
  std::vector<std::string> Headers(bool stream) const override {
    std::vector<std::string> h = {"Content-Type: application/json",
                                  stream ? "Accept: text/event-stream" : "Accept: application/json"};
    if (!key_.empty()) h.push_back("Authorization: Bearer " + key_);
    return h;
  }
  json Body(const std::vector<engine::ChatMessage>& messages, const engine::SamplingParams& s,
            bool stream) const override {
    json b = {{"model", config_.model},
              {"messages", Messages(messages)},
              {"stream", stream},
              {"temperature", std::max(0.0f, s.temperature)}};
    if (stream) b["stream_options"] = {{"include_usage", true}};
    if (s.top_p > 0 && s.top_p < 1) b["top_p"] = s.top_p;
    if (s.max_tokens >= 0) b["max_tokens"] = s.max_tokens;
    if (!s.stop.empty()) b["stop"] = s.stop;
    if (s.seed) b["seed"] = *s.seed;
    return b;
  }
  std::unique_ptr<Decoder> NewDecoder(Decoder::Emit emit, bool stream) const override {
    if (!stream) return std::make_unique<OpenAIWholeDecoder>(std::move(emit));
    return std::make_unique<OpenAIDecoder>(std::move(emit));
  }
};

class AnthropicBackend : public HttpBackend {
 public:
  using HttpBackend::HttpBackend;

 protected:
  std::string Url() const override { return JoinUrl(config_.url, "/messages"); }
  std::vector<std::string> Headers(bool stream) const override {
    return {"Content-Type: application/json", stream ? "Accept: text/event-stream" : "Accept: application/json",
            "anthropic-version: 2023-06-01", "x-api-key: " + key_};
  }
  json Body(const std::vector<engine::ChatMessage>& messages, const engine::SamplingParams& s,
            bool stream) const override {
    std::string system;
    json msgs = json::array();
    for (const auto& m : messages) {
      if (m.role == "system") {
        if (!system.empty()) system += "\n\n";
        system += m.content;
      } else {
        // Anthropic knows only user and assistant turns; tool output is given as user text.
        msgs.push_back({{"role", m.role == "assistant" ? "assistant" : "user"}, {"content", m.content}});
      }
    }
    json b = {{"model", config_.model},
              {"messages", msgs},
              {"max_tokens", s.max_tokens >= 0 ? s.max_tokens : kAnthropicDefaultMaxTokens},
              {"stream", stream},
              {"temperature", std::clamp(s.temperature, 0.0f, 1.0f)}};
    if (!system.empty()) b["system"] = system;
    // Newer Claude models reject temperature and top_p together: top_p is sent only when the
    // request changed it from the engine default.
    if (s.top_p > 0 && s.top_p < 1 && s.top_p != engine::SamplingParams{}.top_p) b["top_p"] = s.top_p;
    if (!s.stop.empty()) b["stop_sequences"] = s.stop;
    return b;  // Anthropic has no seed
  }
  std::unique_ptr<Decoder> NewDecoder(Decoder::Emit emit, bool stream) const override {
    if (!stream) return std::make_unique<AnthropicWholeDecoder>(std::move(emit));
    return std::make_unique<AnthropicDecoder>(std::move(emit));
  }
  std::string MapFinish(const std::string& reason) const override {
    return reason == "max_tokens" ? "length" : "stop";
  }
};

class OllamaBackend : public HttpBackend {
 public:
  using HttpBackend::HttpBackend;

 protected:
  std::string Url() const override {
    std::string base = config_.url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    return base.ends_with("/api") ? base + "/chat" : base + "/api/chat";
  }
  std::vector<std::string> Headers(bool stream) const override {
    std::vector<std::string> h = {"Content-Type: application/json",
                                  stream ? "Accept: application/x-ndjson" : "Accept: application/json"};
    if (!key_.empty()) h.push_back("Authorization: Bearer " + key_);
    return h;
  }
  json Body(const std::vector<engine::ChatMessage>& messages, const engine::SamplingParams& s,
            bool stream) const override {
    json o = {{"temperature", s.temperature},    {"top_k", s.top_k},
              {"top_p", s.top_p},                {"min_p", s.min_p},
              {"repeat_penalty", s.repeat_penalty}, {"repeat_last_n", s.repeat_last_n}};
    if (s.max_tokens >= 0) o["num_predict"] = s.max_tokens;
    if (!s.stop.empty()) o["stop"] = s.stop;
    if (s.seed) o["seed"] = *s.seed;
    return {{"model", config_.model}, {"messages", Messages(messages)}, {"stream", stream}, {"options", o}};
  }
  std::unique_ptr<Decoder> NewDecoder(Decoder::Emit emit, bool) const override {
    return std::make_unique<OllamaDecoder>(std::move(emit));  // a whole answer is one line
  }
};

}  // namespace

std::unique_ptr<RemoteBackend> MakeBackend(const BackendConfig& config, Egress& egress) {
  const std::string label = "backend '" + config.name + "'";
  if (config.type != "openai" && config.type != "anthropic" && config.type != "ollama") {
    throw std::invalid_argument(label + ": unknown type '" + config.type + "' (openai, anthropic, ollama)");
  }
  if (config.url.empty()) throw std::invalid_argument(label + ": url is required");
  if (config.model.empty()) throw std::invalid_argument(label + ": model is required");
  std::string key = LoadKey(config, config.type == "anthropic");
  if (config.type == "openai") return std::make_unique<OpenAICompatibleBackend>(config, egress, std::move(key));
  if (config.type == "anthropic") return std::make_unique<AnthropicBackend>(config, egress, std::move(key));
  return std::make_unique<OllamaBackend>(config, egress, std::move(key));
}

}  // namespace hearth::router
