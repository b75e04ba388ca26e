// A small HTTP/1.1 server (Boost.Beast, C++20 coroutines) that knows nothing about models.
//
// The server owns sockets, parsing, keep-alive, timeouts, body limits and the security
// checks every endpoint needs (Host allowlist against DNS rebinding, CORS origin allowlist,
// API key). Everything else is a Handler: it receives a parsed request and answers through
// a Responder, either with one whole response or as a stream of chunks (NDJSON, SSE).
//
// Handlers run on a pool of worker threads and may block (e.g. waiting for a generation).
// Responder methods are thread-safe and may be called from any thread (e.g. the engine's
// token callback). When the client disconnects, Responder::cancelled() becomes true within
// one network round trip, so the handler can cancel its generation.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hearth::api {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // "/api/generate" (no query)
  std::string query;   // raw query string without '?'
  Headers headers;
  std::string body;
  std::string remote_address;
  // Case-insensitive lookup; "" when absent.
  std::string Header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  Headers headers;  // e.g. {"Content-Type", "application/json"}
  std::string body;
};

class Responder {
 public:
  virtual ~Responder() = default;
  // Sends a complete response. Call at most once, and not after Begin.
  virtual void Respond(HttpResponse response) = 0;
  // Starts a chunked streaming response; then Write any number of times, then End. The
  // status line and headers go out together with the first Write (or End).
  virtual void Begin(int status, Headers headers) = 0;
  // Queues a chunk; returns false once the client is gone (the chunk is dropped).
  virtual bool Write(std::string_view chunk) = 0;
  virtual void End() = 0;
  // True once the client has disconnected. The flag can be handed to the engine.
  virtual bool cancelled() const = 0;
  virtual std::shared_ptr<std::atomic<bool>> cancel_flag() = 0;
};

using Handler = std::function<void(const HttpRequest&, Responder&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 11434;               // 0: pick a free port (see HttpServer::port())
  std::string api_key;                 // required as "Authorization: Bearer KEY" when set
  std::vector<std::string> allowed_origins;  // exact CORS origins; never a wildcard
  std::vector<std::string> allowed_hosts;    // extra Host header names besides the bound ones
  size_t max_body_bytes = 64u << 20;   // larger bodies get 413 without being read
  int header_timeout_seconds = 30;     // to receive a complete request head and body
  int idle_timeout_seconds = 120;      // keep-alive connection with no request
  int worker_threads = 32;             // handler threads
  // Paths that need no API key even when one is set (e.g. "/health").
  std::vector<std::string> public_paths = {"/health", "/api/version"};
};

class HttpServer {
 public:
  // Validates options. Throws std::invalid_argument when binding a non-loopback address
  // without an api_key, naming the fix.
  HttpServer(HttpServerOptions options, Handler handler);
  ~HttpServer();  // stops and joins
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving on background threads. Throws std::runtime_error when the
  // address cannot be bound (message names host:port and the OS error).
  void Start();
  // Stops accepting, closes connections, joins threads. Idempotent.
  void Stop();
  uint16_t port() const;  // the bound port (after Start)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackHost(const std::string& host);

}  // namespace hearth::api
