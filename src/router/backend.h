// Remote backends: OpenAI-compatible and Anthropic cloud APIs, and other servers (another
// hearth, llama-server, vLLM, Ollama). Every outbound byte goes through Egress, the one
// component that opens connections, and only to hosts on its allowlist (empty by default:
// no outbound connection at all). Requests reaching a backend are already redacted.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "router/request.h"

namespace hearth::router {

// One outbound HTTP exchange as Egress performed (or refused) it.
struct EgressAttempt {
  std::chrono::system_clock::time_point time;
  std::string host;
  std::string url;
  bool allowed = false;
  int status = 0;       // HTTP status; 0 when refused or the connection failed
  uint64_t bytes_sent = 0;
  std::string error;
};

struct EgressResponse {
  int status = 0;
  std::string retry_after;  // the Retry-After header, when present
  std::string body;         // non-streaming body, or the error body of a failed stream
  // How the transfer ended (a status may be set and the transfer still break mid-stream).
  enum class Failure {
    kNone,       // completed
    kConnect,    // could not resolve or connect (also the proxy)
    kTimeout,    // connect timeout, or no byte for read_timeout_ms (a stall)
    kCancelled,  // the cancel flag was set
    kAborted,    // on_data returned false
    kTls,        // TLS handshake or certificate verification failed
    kOther,      // the connection broke (reset, truncated response, ...)
  };
  Failure failure = Failure::kNone;
  std::string error;         // libcurl's description of the failure (never headers or body)
  uint64_t bytes_sent = 0;   // request body bytes that left the machine in this exchange
};

class Egress {
 public:
  // hosts: exact host names (e.g. "api.openai.com": any port) or "host:port" (that port, the
  // URL's explicit or default one, e.g. "127.0.0.1:PORT"); case-insensitive. Wildcards ("*")
  // and entries with a scheme or path throw std::invalid_argument.
  explicit Egress(std::vector<std::string> allowed_hosts);
  ~Egress();
  Egress(const Egress&) = delete;
  Egress& operator=(const Egress&) = delete;
  bool IsAllowed(const std::string& url) const;
  // POSTs `body`; streams the response body to on_data as it arrives (return false to abort):
  // a call per piece libcurl hands over, then an empty call once the socket has nothing more
  // for now (the end of a read), so a receiver may hold back what it need not send at once.
  // Honours HTTPS_PROXY via libcurl. Throws EgressDenied for a host not on the allowlist (the
  // attempt is still recorded). connect/read timeouts in ms.
  EgressResponse Post(const std::string& url, const std::vector<std::string>& headers, const std::string& body,
                      const std::function<bool(std::string_view)>& on_data,
                      const std::shared_ptr<std::atomic<bool>>& cancel, int connect_timeout_ms, int read_timeout_ms);
  std::vector<EgressAttempt> attempts() const;  // most recent last (bounded history)
  const std::vector<std::string>& allowed_hosts() const { return allowed_; }

 private:
  struct HandlePool;  // idle libcurl multi handles, whose connection caches keep connections alive

  void Record(EgressAttempt attempt);

  std::vector<std::string> allowed_;
  mutable std::mutex mutex_;
  std::deque<EgressAttempt> attempts_;
  std::unique_ptr<HandlePool> pool_;
};

class EgressDenied : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct BackendConfig {
  std::string name;             // how policy rules refer to it
  std::string type;             // "openai" | "anthropic" | "ollama"
  std::string url;              // base URL, e.g. https://api.openai.com/v1
  std::string model;            // remote model name
  std::string api_key_env;      // environment variable holding the key
  std::string api_key_file;     // or a file holding it (never the policy file itself)
  double input_usd_per_mtok = 0;
  double output_usd_per_mtok = 0;
  int connect_timeout_ms = 5000;
  int read_timeout_ms = 60000;  // streaming: no byte for this long is a stall
  // Non-streaming (the client asked for one whole answer, so hearth asks the provider for
  // one too): the answer must arrive within this. Like the OpenAI SDK's default, 10 minutes.
  int response_timeout_ms = 600000;
  int max_retries = 2;          // for 429/5xx/timeouts, with backoff honouring Retry-After
  int breaker_failures = 3;     // consecutive failures that open the circuit
  int breaker_open_seconds = 30;
};

// What left the machine and what came back.
struct RemoteResult {
  std::string text;
  std::string finish_reason;    // "stop" | "length"
  int32_t prompt_tokens = 0;    // as the provider reported
  int32_t completion_tokens = 0;
  double ttft_ms = 0;
  double total_ms = 0;
  uint64_t bytes_sent = 0;      // request bodies of all attempts
  std::string sent_sha256;      // sha256 of the (last) request body sent
  int attempts = 0;
  std::vector<std::string> notes;  // "retry after 429 (Retry-After 1s)", ...
};

// A transient failure after all retries, or an open circuit: the router falls back to local.
class BackendUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class RemoteBackend {
 public:
  virtual ~RemoteBackend() = default;
  // Called once before the first byte of a request leaves, with the sha256 and size of the
  // body about to be sent (the audit log's write-ahead note); an exception from it aborts the
  // request unsent.
  using BeforeSend = std::function<void(const std::string& sha256, uint64_t body_bytes)>;
  // Streams the completion of `messages` (already redacted) through on_text. Throws
  // BackendUnavailable (transient: retries exhausted, circuit open, timeouts) or
  // std::runtime_error (permanent: 4xx other than 429, bad key). stream = false asks the
  // provider for one whole answer (bounded by response_timeout_ms): on_text then gets all
  // of the text at once; for a client that waits for the whole answer anyway this saves
  // the provider's and hearth's per-event work.
  virtual RemoteResult Chat(const std::vector<engine::ChatMessage>& messages, const engine::SamplingParams& sampling,
                            const TextSink& on_text, const std::shared_ptr<std::atomic<bool>>& cancel,
                            const BeforeSend& before_send = {}, bool stream = true) = 0;
  virtual const BackendConfig& config() const = 0;
  virtual bool circuit_open() const = 0;
};

// Throws std::invalid_argument for an unknown type or a missing key (naming the env var).
std::unique_ptr<RemoteBackend> MakeBackend(const BackendConfig& config, Egress& egress);

}  // namespace hearth::router
