// HTTP/1.1 server on Boost.Beast with C++20 coroutines. See http_server.h for the contract.
//
// Threading:
//   - One io_context, run by one thread at a time (the "runner", see Threads). Every
//     connection lives on its own strand and is served by one coroutine (Session), so
//     per-connection state needs no locks.
//   - A request's handler runs on the thread that read it; if it still runs 1 ms later, a
//     parked thread takes over as runner (see Threads); handlers may block. At most
//     options.worker_threads threads run handlers; beyond that, handlers queue for the next
//     free thread.
//   - A handler answers through a ResponderImpl: a mutex-protected queue of actions (whole
//     response, begin, chunk, end, handler-returned). Pushing an action posts a wake-up onto
//     the connection's strand, which cancels the connection's `wake` timer; the Session
//     coroutine drains the queue and writes.
//   - While a handler runs, a read is kept pending on the socket (the "watcher"). EOF or an
//     error there means the client is gone: the responder's cancel flag is set at once and
//     the session ends. Bytes the watcher reads (a pipelined next request) stay in the
//     connection's buffer and are parsed next.
// This is the only translation unit that includes Beast/Asio (it takes long to compile).
#include "api/http_server.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

namespace hearth::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
// One runner at a time: with two threads inside io_context::run, every read handed the
// connection between them (futex wake-ups per read).
constexpr int kConcurrencyHint = 1;
constexpr uint32_t kHeaderLimit = 64 * 1024;        // request line + headers
constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kMaxPipelined = 1 << 20;           // the watcher stops reading beyond this
constexpr size_t kMaxDrain = 4 << 20;               // bytes discarded before closing
constexpr auto kDrainTime = 1s;                     // lingering close
constexpr auto kStopGrace = 2s;                     // Stop() waits this long for sessions
constexpr std::string_view kCorsAllowHeaders =
    "Authorization, Content-Type, X-Hearth-Sensitivity, X-Hearth-Project, X-Hearth-Approval";
constexpr std::string_view kCorsAllowMethods = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS";

void Log(std::string_view message) {
  std::string line = "hearth http: ";
  line += message;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

std::string_view Sv(beast::string_view s) { return {s.data(), s.size()}; }

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string_view StripBrackets(std::string_view s) {
  if (s.size() >= 2 && s.front() == '[' && s.back() == ']') return s.substr(1, s.size() - 2);
  return s;
}

// Compares in time that depends only on the expected key's length.
bool ConstantTimeEquals(std::string_view given, std::string_view expected) {
  volatile unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff = diff | (g ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

std::string JsonEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out;
}

std::string ErrorBody(std::string_view message) {
  return "{\"error\":\"" + JsonEscape(message) + "\"}";
}

HttpResponse ErrorResponse(int status, std::string_view message) {
  return HttpResponse{status, {{"Content-Type", "application/json"}}, ErrorBody(message)};
}

// Splits a Host header value into name and port; false when malformed.
// "[::1]:8080" -> "::1"; "localhost" -> "localhost"; "::1" (bare IPv6) -> "::1".
bool ParseHostHeader(std::string_view value, std::string_view& name) {
  value = Trim(value);
  std::string_view rest;
  if (!value.empty() && value.front() == '[') {
    const size_t close = value.find(']');
    if (close == std::string_view::npos) return false;
    name = value.substr(1, close - 1);
    rest = value.substr(close + 1);
  } else {
    const size_t colon = value.find(':');
    if (colon != std::string_view::npos && value.find(':', colon + 1) == std::string_view::npos) {
      name = value.substr(0, colon);
      rest = value.substr(colon);
    } else {
      name = value;  // no port, or a bare IPv6 literal
    }
  }
  if (name.empty()) return false;
  if (!rest.empty()) {
    if (rest.front() != ':' || rest.size() < 2 || rest.size() > 6) return false;
    for (char c : rest.substr(1)) {
      if (c < '0' || c > '9') return false;
    }
  }
  return true;
}

bool IsHttpParseError(const error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

bool NoBodyStatus(int status) { return status / 100 == 1 || status == 204 || status == 304; }

bool HasCrLf(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

// An RFC 9110 token: visible ASCII except delimiters.
bool ValidHeaderName(std::string_view name) {
  if (name.empty()) return false;
  for (char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f || std::string_view("\"(),/:;<=>?@[\\]{}").find(ch) !=
                                      std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// Header names the server owns; handler values for them are ignored.
bool ServerOwnedHeader(std::string_view name) {
  return IEquals(name, "Content-Length") || IEquals(name, "Transfer-Encoding") ||
         IEquals(name, "Connection") || IEquals(name, "Server") || IEquals(name, "Keep-Alive");
}

struct RequestContext {
  unsigned version = 11;
  bool head = false;
  bool keep_alive = true;
  Headers cors;  // added to every response
};

template <class Body>
void ApplyHeaders(http::response<Body>& res, const Headers& headers, const RequestContext& ctx) {
  bool has_type = false;
  for (const auto& [name, value] : headers) {
    if (!ValidHeaderName(name) || HasCrLf(value) || ServerOwnedHeader(name)) {
      if (!ServerOwnedHeader(name)) Log("dropped an invalid response header from the handler");
      continue;
    }
    if (IEquals(name, "Content-Type")) has_type = true;
    res.insert(name, value);
  }
  if (!has_type) res.set(http::field::content_type, "application/json");
  res.set(http::field::server, "hearth");
  for (const auto& [name, value] : ctx.cors) res.set(name, value);
  res.keep_alive(ctx.keep_alive);
  if (!ctx.keep_alive) res.set(http::field::connection, "close");
}

http::response<http::string_body> FullMessage(HttpResponse response, const RequestContext& ctx) {
  if (response.status < 100 || response.status > 999) {
    Log("handler answered with invalid status " + std::to_string(response.status));
    response = ErrorResponse(500, "handler answered with an invalid HTTP status");
  }
  http::response<http::string_body> res;
  res.version(ctx.version);
  res.result(static_cast<unsigned>(response.status));
  ApplyHeaders(res, response.headers, ctx);
  if (!NoBodyStatus(response.status)) {
    res.content_length(response.body.size());
    if (!ctx.head) res.body() = std::move(response.body);
  }
  return res;
}

// Appends a buffer sequence's bytes to `out`; returns how many.
template <class Buffers>
size_t AppendBuffers(std::string& out, const Buffers& buffers) {
  size_t n = 0;
  for (const auto b : beast::buffers_range_ref(buffers)) {
    out.append(static_cast<const char*>(b.data()), b.size());
    n += b.size();
  }
  return n;
}

// The bytes of a message (header_only: its status line and headers only).
template <class Body>
std::string Wire(http::response<Body>& res, bool header_only = false) {
  std::string out;
  http::serializer<false, Body> sr(res);
  sr.split(header_only);
  error_code ec;
  while (!(header_only ? sr.is_header_done() : sr.is_done()) && !ec) {
    sr.next(ec, [&](error_code&, const auto& buffers) { sr.consume(AppendBuffers(out, buffers)); });
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Responder: frames what the handler answers (status line, headers, chunks) into bytes. The
// calling thread sends them itself when nothing is waiting to be written and the socket
// takes them at once; otherwise they queue for the connection's coroutine, which writes
// them in order. Handing every write to the io thread would cost a cross-thread wake-up
// each (~0.1 ms at the median on a 2-vCPU VM, over 1 ms at the tail). The socket stays open
// while another thread sends on it: every close of a connection with a live responder
// comes after Abort() or Detach(), which take mu_.

struct Action {
  enum class Kind { kBytes, kDone, kFailed };
  Kind kind;
  std::string bytes;       // kBytes: the next bytes of the response
  bool keep_alive = true;  // kDone: whether the connection may serve another request
};

class ResponderImpl final : public Responder {
 public:
  using Wake = std::function<void()>;
  ResponderImpl(Wake wake, int fd, RequestContext ctx) : wake_(std::move(wake)), fd_(fd), ctx_(std::move(ctx)) {}

  void Respond(HttpResponse response) override {
    std::lock_guard lock(mu_);
    if (state_ != State::kIdle) return Misuse("Respond() after the response was started");
    state_ = State::kResponded;
    RespondLocked(std::move(response));
  }

  void Begin(int status, Headers headers) override {
    std::lock_guard lock(mu_);
    if (state_ != State::kIdle) return Misuse("Begin() after the response was started");
    state_ = State::kStreaming;
    chunked_ = ctx_.version >= 11;
    if (!chunked_) ctx_.keep_alive = false;  // HTTP/1.0: the body ends at close
    http::response<http::empty_body> res;
    res.version(ctx_.version);
    res.result(static_cast<unsigned>(status < 100 || status > 999 ? 500 : status));
    ApplyHeaders(res, headers, ctx_);
    if (chunked_) res.chunked(true);
    // Held back until the first Write or End: one send (and one wake-up of the client)
    // instead of two; LazyStream begins right before its first chunk anyway.
    head_ = Wire(res, /*header_only=*/true);
  }

  bool Write(std::string_view chunk) override {
    std::lock_guard lock(mu_);
    if (closed_ || failed_) return false;
    if (state_ != State::kStreaming) {
      Misuse("Write() outside Begin()/End()");
      return false;
    }
    if (chunk.empty() || ctx_.head) return true;  // an empty chunk would end the stream
    std::string bytes = std::exchange(head_, {});
    if (chunked_) {
      AppendBuffers(bytes, http::make_chunk(asio::const_buffer(chunk.data(), chunk.size())));
    } else {
      bytes.append(chunk);
    }
    Send(std::move(bytes));
    return !failed_;
  }

  void End() override {
    std::lock_guard lock(mu_);
    if (state_ != State::kStreaming) return;
    state_ = State::kEnded;
    EndLocked();
  }

  bool cancelled() const override { return cancel_->load(std::memory_order_acquire); }
  std::shared_ptr<std::atomic<bool>> cancel_flag() override { return cancel_; }

  // --- server side ---
  std::deque<Action> Take() {
    std::lock_guard lock(mu_);
    notified_ = false;
    return std::exchange(queue_, {});
  }
  // The coroutine has written all it took. Unless more arrived meanwhile, callers may send
  // directly again.
  void Drained() {
    std::lock_guard lock(mu_);
    if (queue_.empty()) queued_ = false;
  }
  // Called on the handler's thread after it returned; error is "" or what it threw.
  void HandlerReturned(const std::string& error) {
    std::lock_guard lock(mu_);
    if (state_ == State::kIdle) {  // nothing was answered
      const std::string message = error.empty() ? "handler produced no response" : "handler failed: " + error;
      RespondLocked(ErrorResponse(500, message));
    } else if (state_ == State::kStreaming) {  // returned without End(): finish the stream
      EndLocked();
    }
    state_ = State::kFinished;
  }
  // The connection is done with this response: later calls are dropped.
  void Detach() {
    std::lock_guard lock(mu_);
    closed_ = true;
    wake_ = nullptr;
    queue_.clear();
  }
  // The client is gone or the server stops: tell the handler to stop.
  void Abort() {
    Detach();  // first: a handler that sees the flag must also find its writes refused
    cancel_->store(true, std::memory_order_release);
  }

 private:
  enum class State { kIdle, kResponded, kStreaming, kEnded, kFinished };

  void RespondLocked(HttpResponse response) {  // mu_ held
    auto res = FullMessage(std::move(response), ctx_);
    Send(Wire(res));
    Push(Action{Action::Kind::kDone, {}, ctx_.keep_alive});
  }
  void EndLocked() {  // mu_ held
    std::string bytes = std::exchange(head_, {});
    if (chunked_ && !ctx_.head) AppendBuffers(bytes, http::make_chunk_last());
    Send(std::move(bytes));
    Push(Action{Action::Kind::kDone, {}, ctx_.keep_alive});
  }
  // Sends now what the socket takes, unless earlier bytes still wait; queues the rest.
  void Send(std::string bytes) {  // mu_ held
    if (closed_ || failed_ || bytes.empty()) return;
    size_t sent = 0;
    while (!queued_ && sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;  // the socket buffer is full: the coroutine writes the rest when it drains
      } else {
        failed_ = true;  // the client is gone
        Push(Action{Action::Kind::kFailed, {}, false});
        return;
      }
    }
    if (sent == bytes.size()) return;
    queued_ = true;
    if (sent > 0) bytes.erase(0, sent);
    Push(Action{Action::Kind::kBytes, std::move(bytes), true});
  }
  void Push(Action action) {  // mu_ held
    if (closed_) return;
    queue_.push_back(std::move(action));
    if (!notified_ && wake_) {
      notified_ = true;
      wake_();  // only posts; never runs the connection inline
    }
  }
  void Misuse(const char* what) {  // mu_ held
    if (!misuse_logged_) Log(std::string("handler misuse: ") + what + "; ignored");
    misuse_logged_ = true;
  }

  mutable std::mutex mu_;
  std::deque<Action> queue_;
  Wake wake_;
  const int fd_;
  RequestContext ctx_;
  State state_ = State::kIdle;
  bool chunked_ = false;
  std::string head_;     // a streamed response's status line and headers, until the first Write/End
  bool queued_ = false;  // bytes wait in queue_ or in the coroutine's hands: no direct sends
  bool failed_ = false;
  bool closed_ = false;
  bool notified_ = false;
  bool misuse_logged_ = false;
  std::shared_ptr<std::atomic<bool>> cancel_ = std::make_shared<std::atomic<bool>>(false);
};

// ---------------------------------------------------------------------------------------

struct Conn {
  explicit Conn(tcp::socket socket) : stream(std::move(socket)), wake(stream.get_executor()) {
    // Beast reads max(512, free capacity) bytes at a time: without room reserved up front a
    // 2 KB request body takes five reads, each a syscall plus a timer and reactor update.
    buffer.reserve(kReadChunk);
  }
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  asio::steady_timer wake;  // cancelled to wake the session coroutine
  std::string remote;
  // Strand-only state.
  std::shared_ptr<ResponderImpl> current;  // the response being produced
  bool watching = false;                   // the disconnect watcher has a read pending
  bool stop_watch = false;
  bool gone = false;  // client disconnected, write failed, or the server is stopping
  // Guarded by Impl::mu (Stop() aborts it from another thread).
  std::shared_ptr<ResponderImpl> responder;
};

// Keeps one read pending while a handler runs, so that EOF (client closed) is seen at once.
void StartWatch(const std::shared_ptr<Conn>& c) {
  if (c->stop_watch || c->gone || c->buffer.size() >= kMaxPipelined) return;
  c->watching = true;
  c->stream.socket().async_read_some(
      c->buffer.prepare(kReadChunk), [c](const error_code& ec, size_t n) {
        c->watching = false;
        if (n > 0) c->buffer.commit(n);
        if (ec && !c->stop_watch) {
          c->gone = true;
          if (c->current) c->current->Abort();  // sets the cancel flag now
        }
        if (ec || c->stop_watch) {
          c->wake.cancel();
          return;
        }
        StartWatch(c);
      });
}

}  // namespace

std::string HttpRequest::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (IEquals(n, name)) return v;
  }
  return "";
}

bool IsLoopbackHost(const std::string& host) {
  const std::string h(StripBrackets(host));
  if (IEquals(h, "localhost")) return true;
  error_code ec;
  const asio::ip::address a = asio::ip::make_address(h, ec);
  if (ec) return false;
  if (a.is_v4()) return (a.to_v4().to_uint() >> 24) == 127;
  const asio::ip::address_v6 v6 = a.to_v6();
  if (v6.is_loopback()) return true;
  if (v6.is_v4_mapped()) {
    return (asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_uint() >> 24) == 127;
  }
  return false;
}

// ---------------------------------------------------------------------------------------

// The threads that run the io_context and the handlers. One of them at a time is the runner
// (inside io_context::run_one: accepting, parsing, writing). When the runner has read a
// request, it runs the handler itself, and hands the runner role to another thread only if
// the handler is still running kGrace later (a timer, so that a quick handler costs no
// wake-up of another thread): a health check or a request to a fast upstream then leaves
// the other vCPU to the client and the provider (measured: ~0.1 ms at the median, more at
// the tail, docs/performance.md), while a handler that blocks (a generation, a slow
// provider, an approval) holds up other connections' I/O for kGrace at most. Threads are
// started as needed, up to max_handler_threads + 1; with all of them busy, handlers wait in a
// queue for the next thread that finishes one.
class Threads {
 public:
  using Fn = std::function<void()>;
  Threads(asio::io_context& ioc, int max_handler_threads)
      : ioc_(ioc), max_threads_(static_cast<size_t>(max_handler_threads) + 1) {}
  ~Threads() {
    if (timer_fd_ >= 0) ::close(timer_fd_);
  }

  void Start() {
    timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (timer_fd_ < 0) throw std::runtime_error(std::string("timerfd_create: ") + std::strerror(errno));
    std::lock_guard lock(mu_);
    threads_.emplace_back([this] { Loop(); });
    watchdog_ = std::thread([this] { Watch(); });
  }
  // From a completion handler on the runner: runs fn on this thread when that handler returns.
  void RunNext(Fn fn) {
    if (t_pending_ != nullptr) {
      t_pending_->push_back(std::move(fn));
      return;
    }
    std::lock_guard lock(mu_);  // not on one of our threads (not expected): queue it
    queue_.push_back(std::move(fn));
    cv_.notify_one();
  }
  // After io_context::stop(): queued handlers are dropped; running ones see their cancel flag.
  void Stop() {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      queue_.clear();
      threads.swap(threads_);
    }
    cv_.notify_all();
    for (auto& t : threads) t.join();
    if (watchdog_.joinable()) {
      ArmTimer(std::chrono::nanoseconds(1));  // wakes the watchdog, which sees stopping_
      watchdog_.join();
    }
  }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kGrace{1};

  void Loop() {
    std::vector<Fn> pending;
    t_pending_ = &pending;
    for (;;) {
      while (pending.empty()) {  // the runner
        try {
          ioc_.run_one();
        } catch (const std::exception& e) {
          Log(std::string("io thread: ") + e.what());
        } catch (...) {
          Log("io thread: unknown exception");
        }
        if (ioc_.stopped()) return;
      }
      if (!BeginInline()) {  // every other thread is busy: the next one free takes these
        std::lock_guard lock(mu_);
        for (Fn& fn : pending) queue_.push_back(std::move(fn));
        pending.clear();
        continue;
      }
      for (Fn& fn : pending) fn();
      pending.clear();
      if (EndInline()) continue;  // nobody took over: still the runner
      for (;;) {  // a handler thread until asked to be the runner again
        std::unique_lock lock(mu_);
        if (stopping_) return;
        if (!queue_.empty()) {
          Fn fn = std::move(queue_.front());
          queue_.pop_front();
          lock.unlock();
          fn();
          continue;
        }
        ++parked_;
        cv_.wait(lock, [&] { return tokens_ > 0 || stopping_ || !queue_.empty(); });
        --parked_;
        if (stopping_) return;
        if (tokens_ > 0) {
          --tokens_;
          break;
        }
      }
    }
  }

  // The runner is about to run handlers itself. False when no other thread could take over
  // from it (all busy, at the limit): then the handlers queue instead.
  bool BeginInline() {
    {
      std::lock_guard lock(mu_);
      if (stopping_ || (parked_ <= tokens_ && threads_.size() >= max_threads_)) return false;
      inline_ = true;
      taken_over_ = false;
      inline_since_ = Clock::now();
    }
    ArmTimer(kGrace);
    return true;
  }
  // The inline handlers returned. True when this thread is still the runner.
  bool EndInline() {
    bool still_runner = false;
    {
      std::lock_guard lock(mu_);
      inline_ = false;
      still_runner = !taken_over_;
    }
    if (still_runner) ArmTimer(Clock::duration::zero());  // disarm: nothing to watch
    return still_runner;
  }
  // Sleeps until the timer fires; then, if the runner is still running a handler it began
  // kGrace ago or earlier, makes another thread the runner.
  void Watch() {
    for (;;) {
      uint64_t expirations = 0;
      const ssize_t n = ::read(timer_fd_, &expirations, sizeof expirations);
      if (n < 0 && errno != EINTR) {
        Log(std::string("watchdog: ") + std::strerror(errno));
        return;
      }
      std::lock_guard lock(mu_);
      if (stopping_) return;
      if (inline_ && !taken_over_ && Clock::now() - inline_since_ >= kGrace) {
        taken_over_ = true;
        HandOverLocked();
      }
    }
  }
  void ArmTimer(Clock::duration after) {  // zero disarms
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(after).count();
    itimerspec spec{};
    spec.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
    spec.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
    ::timerfd_settime(timer_fd_, 0, &spec, nullptr);
  }
  // Makes another thread the runner: a parked one, a new one, or (all busy, at the limit) the
  // next one that finishes its handler.
  void HandOverLocked() {  // mu_ held
    if (parked_ > tokens_) {
      ++tokens_;
      cv_.notify_one();
    } else if (threads_.size() < max_threads_) {
      threads_.emplace_back([this] { Loop(); });
    } else {
      ++tokens_;
    }
  }

  asio::io_context& ioc_;
  const size_t max_threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  std::thread watchdog_;
  int timer_fd_ = -1;
  std::deque<Fn> queue_;
  int parked_ = 0;
  int tokens_ = 0;  // parked threads asked to become the runner
  bool stopping_ = false;
  bool inline_ = false;      // the runner is running handlers itself, since inline_since_
  bool taken_over_ = false;  // ... and the watchdog has made another thread the runner
  Clock::time_point inline_since_;
  static thread_local std::vector<Fn>* t_pending_;
};

thread_local std::vector<Threads::Fn>* Threads::t_pending_ = nullptr;

struct HttpServer::Impl {
  Impl(HttpServerOptions o, Handler h) : options(std::move(o)), handler(std::move(h)) {}

  HttpServerOptions options;
  Handler handler;

  // Declared before the io_context: the registry outlives every socket.
  std::mutex mu;
  std::condition_variable cv;
  std::set<std::shared_ptr<Conn>> conns;
  bool started = false;
  bool stopped = false;
  bool accept_running = false;
  std::atomic<bool> stopping{false};
  std::atomic<uint16_t> bound_port{0};
  std::vector<std::string> host_names;  // accepted Host header names (lowercase, no brackets)
  std::vector<std::string> own_origins;  // http://localhost:PORT etc.

  asio::io_context ioc{kConcurrencyHint};
  std::optional<tcp::acceptor> acceptor;       // on its own strand
  std::optional<Threads> threads;  // destroyed before the io_context

  void Start();
  void Stop();

  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> Session(std::shared_ptr<Conn> c);
  asio::awaitable<bool> Deliver(const std::shared_ptr<Conn>& c, ResponderImpl& r,
                                RequestContext& ctx);
  asio::awaitable<bool> WriteFull(const std::shared_ptr<Conn>& c, HttpResponse response,
                                  const RequestContext& ctx);
  asio::awaitable<void> SendErrorAndClose(const std::shared_ptr<Conn>& c, int status,
                                          std::string message, RequestContext ctx);
  asio::awaitable<void> CloseGracefully(const std::shared_ptr<Conn>& c);
  std::optional<HttpResponse> Check(const http::request<http::string_body>& req,
                                    std::string_view path, RequestContext& ctx) const;
  bool HostAllowed(std::string_view value) const;
  bool OriginAllowed(std::string_view origin) const;
  void RunHandler(const HttpRequest& request, ResponderImpl& responder);
};

void HttpServer::Impl::Start() {
  {
    std::lock_guard lock(mu);
    if (started) throw std::logic_error("HttpServer::Start called twice");
    started = true;
  }
  const std::string where = options.host + ":" + std::to_string(options.port);
  const std::string host(StripBrackets(options.host));
  tcp::endpoint endpoint;
  error_code ec;
  if (IEquals(host, "localhost")) {
    endpoint = tcp::endpoint(asio::ip::address_v4::loopback(), options.port);
  } else if (auto address = asio::ip::make_address(host, ec); !ec) {
    endpoint = tcp::endpoint(address, options.port);
  } else {
    tcp::resolver resolver(ioc);
    auto results = resolver.resolve(host, std::to_string(options.port), ec);
    if (ec || results.empty()) {
      throw std::runtime_error("cannot listen on " + where + ": cannot resolve host: " +
                               (ec ? ec.message() : std::string("no address")));
    }
    endpoint = results.begin()->endpoint();
  }

  acceptor.emplace(asio::make_strand(ioc));
  auto fail = [&](const char* step) {
    throw std::runtime_error("cannot listen on " + where + ": " + step + ": " + ec.message());
  };
  acceptor->open(endpoint.protocol(), ec);
  if (ec) fail("open");
  acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) fail("SO_REUSEADDR");
  acceptor->bind(endpoint, ec);
  if (ec) fail("bind");
  acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("listen");
  bound_port = acceptor->local_endpoint().port();

  auto lower = [](std::string_view s) {
    std::string out(s);
    for (char& ch : out) ch = Lower(ch);
    return out;
  };
  host_names = {lower(host), "localhost", "127.0.0.1", "::1"};
  for (const auto& extra : options.allowed_hosts) {
    std::string_view name;
    if (ParseHostHeader(extra, name)) host_names.push_back(lower(name));
  }
  const std::string port = std::to_string(bound_port.load());
  for (const char* h : {"localhost", "127.0.0.1", "[::1]"}) {
    own_origins.push_back(std::string("http://") + h + ":" + port);
  }

  threads.emplace(ioc, options.worker_threads);
  {
    std::lock_guard lock(mu);
    accept_running = true;
  }
  asio::co_spawn(acceptor->get_executor(), AcceptLoop(), [this](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        Log(std::string("accept loop failed: ") + ex.what());
      }
    }
    std::lock_guard lock(mu);
    accept_running = false;
    cv.notify_all();
  });
  threads->Start();
}

void HttpServer::Impl::Stop() {
  std::vector<std::shared_ptr<Conn>> snapshot;
  {
    std::lock_guard lock(mu);
    if (stopped) return;
    stopped = true;
    stopping = true;
    snapshot.assign(conns.begin(), conns.end());
    // Cancel flags first, so handlers blocked on them return while we wind down.
    for (const auto& c : snapshot) {
      if (c->responder) c->responder->Abort();
    }
  }
  if (acceptor) {
    asio::post(acceptor->get_executor(), [this] {
      error_code ec;
      acceptor->close(ec);
    });
  }
  for (const auto& c : snapshot) {
    asio::post(c->stream.get_executor(), [c] {
      c->gone = true;
      if (c->current) c->current->Abort();
      c->stream.close();
      c->wake.cancel();
    });
  }
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, kStopGrace, [&] { return conns.empty() && !accept_running; });
  }
  ioc.stop();
  if (threads) {
    threads->Stop();
  }
  std::lock_guard lock(mu);
  conns.clear();
}

asio::awaitable<void> HttpServer::Impl::AcceptLoop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor->async_accept(
        asio::any_io_executor(asio::make_strand(ioc)), kTuple);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open() || stopping) co_return;
      Log("accept failed: " + ec.message());
      asio::steady_timer backoff(co_await asio::this_coro::executor, 50ms);  // e.g. EMFILE
      co_await backoff.async_wait(kTuple);
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto c = std::make_shared<Conn>(std::move(socket));
    const auto remote = c->stream.socket().remote_endpoint(ignored);
    if (!ignored) c->remote = remote.address().to_string();
    {
      std::lock_guard lock(mu);
      if (stopping) co_return;
      conns.insert(c);
    }
    asio::co_spawn(c->stream.get_executor(), Session(c), [this, c](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          Log(std::string("connection failed: ") + ex.what());
        } catch (...) {
          Log("connection failed: unknown exception");
        }
      }
      if (c->current) c->current->Abort();  // first: a handler thread may be writing (Respond)
      c->stream.close();
      c->current.reset();
      std::lock_guard lock(mu);
      c->responder.reset();
      conns.erase(c);
      cv.notify_all();
    });
  }
}

bool HttpServer::Impl::HostAllowed(std::string_view value) const {
  std::string_view name;
  if (!ParseHostHeader(value, name)) return false;
  return std::any_of(host_names.begin(), host_names.end(),
                     [&](const std::string& h) { return IEquals(h, name); });
}

bool HttpServer::Impl::OriginAllowed(std::string_view origin) const {
  auto match = [&](std::string_view allowed) {
    while (!allowed.empty() && allowed.back() == '/') allowed.remove_suffix(1);
    return IEquals(allowed, origin);
  };
  return std::any_of(options.allowed_origins.begin(), options.allowed_origins.end(), match) ||
         std::any_of(own_origins.begin(), own_origins.end(), match);
}

// Host, Origin and API key checks. Returns the response to send instead of the handler's.
std::optional<HttpResponse> HttpServer::Impl::Check(const http::request<http::string_body>& req,
                                                    std::string_view path,
                                                    RequestContext& ctx) const {
  const auto host = req.find(http::field::host);
  if (host == req.end()) {
    if (req.version() >= 11) return ErrorResponse(400, "missing Host header");
  } else if (!HostAllowed(Sv(host->value()))) {
    return ErrorResponse(
        403, "host '" + std::string(Sv(host->value())) +
                 "' is not allowed (DNS-rebinding protection); connect to localhost or "
                 "127.0.0.1, or add the name with --allow-host");
  }

  const auto origin = req.find(http::field::origin);
  if (origin != req.end()) {
    const std::string value(Sv(origin->value()));
    if (!OriginAllowed(value)) {
      return ErrorResponse(403, "origin " + value + " is not allowed; add it with --allow-origin");
    }
    ctx.cors = {{"Access-Control-Allow-Origin", value}, {"Vary", "Origin"}};
    if (req.method() == http::verb::options) {  // CORS preflight, answered without auth
      return HttpResponse{204,
                          {{"Access-Control-Allow-Methods", std::string(kCorsAllowMethods)},
                           {"Access-Control-Allow-Headers", std::string(kCorsAllowHeaders)},
                           {"Access-Control-Max-Age", "600"}},
                          {}};
    }
  }

  const std::string& key = options.api_key;
  if (!key.empty() && std::find(options.public_paths.begin(), options.public_paths.end(),
                                path) == options.public_paths.end()) {
    bool ok = false;
    const std::string_view auth = Trim(Sv(req[http::field::authorization]));
    if (auth.size() > 7 && IEquals(auth.substr(0, 7), "Bearer ")) {
      ok = ConstantTimeEquals(Trim(auth.substr(7)), key);
    }
    const auto x_api_key = req.find("X-Api-Key");
    if (!ok && x_api_key != req.end()) {
      ok = ConstantTimeEquals(Trim(Sv(x_api_key->value())), key);
    }
    if (!ok) {
      HttpResponse r = ErrorResponse(
          401, "missing or wrong API key; send 'Authorization: Bearer <key>' with the key the "
               "server was started with (HEARTH_API_KEY or --api-key)");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"hearth\"");
      return r;
    }
  }
  return std::nullopt;
}

asio::awaitable<void> HttpServer::Impl::CloseGracefully(const std::shared_ptr<Conn>& c) {
  // Shut down our side, then discard what the client still sends for a moment, so that the
  // kernel does not reset the connection before the client has read our response.
  error_code ec;
  c->stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (!ec) {
    c->stream.expires_after(kDrainTime);
    std::array<char, 16384> scratch;
    size_t drained = 0;
    while (drained < kMaxDrain && !stopping) {
      auto [rec, n] = co_await c->stream.async_read_some(asio::buffer(scratch), kTuple);
      if (rec) break;
      drained += n;
    }
  }
  c->stream.close();
}

// Note on GCC 12 coroutines: temporaries inside a co_await expression (especially in a
// conditional operator) can be destroyed twice, so arguments are built as named locals first.
asio::awaitable<void> HttpServer::Impl::SendErrorAndClose(const std::shared_ptr<Conn>& c,
                                                          int status, std::string message,
                                                          RequestContext ctx) {
  ctx.keep_alive = false;
  ctx.head = false;
  HttpResponse response = ErrorResponse(status, message);
  const bool written = co_await WriteFull(c, std::move(response), ctx);
  if (written) co_await CloseGracefully(c);
}

asio::awaitable<bool> HttpServer::Impl::WriteFull(const std::shared_ptr<Conn>& c,
                                                  HttpResponse response,
                                                  const RequestContext& ctx) {
  http::response<http::string_body> res = FullMessage(std::move(response), ctx);
  c->stream.expires_after(std::chrono::seconds(options.idle_timeout_seconds));
  auto [ec, n] = co_await http::async_write(c->stream, res, kTuple);
  if (!ec) c->stream.expires_never();
  co_return !ec;
}

// Writes the bytes the responder queued until the response is complete (true) or the
// connection is gone (false).
asio::awaitable<bool> HttpServer::Impl::Deliver(const std::shared_ptr<Conn>& c, ResponderImpl& r,
                                                RequestContext& ctx) {
  std::string batch;
  for (;;) {
    if (c->gone) co_return false;
    std::deque<Action> actions = r.Take();
    if (actions.empty()) {
      c->wake.expires_at(asio::steady_timer::time_point::max());
      co_await c->wake.async_wait(kTuple);
      continue;
    }
    bool done = false;
    for (Action& a : actions) {
      if (a.kind == Action::Kind::kFailed) co_return false;
      if (a.kind == Action::Kind::kDone) {
        ctx.keep_alive = a.keep_alive;
        done = true;
        break;
      }
      if (batch.empty()) {
        batch = std::move(a.bytes);
      } else {
        batch += a.bytes;
      }
    }
    if (!batch.empty()) {
      c->stream.expires_after(std::chrono::seconds(options.idle_timeout_seconds));
      auto [ec, n] = co_await asio::async_write(c->stream, asio::buffer(batch), kTuple);
      batch.clear();
      if (ec) co_return false;
      c->stream.expires_never();
    }
    if (done) co_return true;
    r.Drained();
  }
}

void HttpServer::Impl::RunHandler(const HttpRequest& request, ResponderImpl& responder) {
  std::string error;
  try {
    handler(request, responder);
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown exception";
  }
  if (!error.empty()) Log("handler for " + request.method + " " + request.path + " threw: " + error);
  responder.HandlerReturned(std::move(error));
}

asio::awaitable<void> HttpServer::Impl::Session(std::shared_ptr<Conn> c) {
  auto& stream = c->stream;
  bool first = true;
  for (;;) {
    if (stopping || c->gone) co_return;
    if (!first && c->buffer.size() == 0) {  // keep-alive: wait for the next request
      stream.expires_after(std::chrono::seconds(options.idle_timeout_seconds));
      auto [ec, n] = co_await stream.async_read_some(c->buffer.prepare(kReadChunk), kTuple);
      if (ec) co_return;
      c->buffer.commit(n);
    }
    first = false;

    // Head and body must arrive within header_timeout_seconds (slowloris defence).
    stream.expires_after(std::chrono::seconds(options.header_timeout_seconds));
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(boost::none);  // checked below, before any of the body is read
    RequestContext ctx;
    {
      auto [ec, n] = co_await http::async_read_header(stream, c->buffer, parser, kTuple);
      if (ec) {
        if (ec == http::error::header_limit) {
          std::string message =
              "request header is larger than " + std::to_string(kHeaderLimit) + " bytes";
          co_await SendErrorAndClose(c, 431, std::move(message), ctx);
        } else if (IsHttpParseError(ec)) {
          std::string message = "malformed HTTP request: " + ec.message();
          co_await SendErrorAndClose(c, 400, std::move(message), ctx);
        }
        co_return;  // timeout, EOF, reset: just close
      }
    }
    auto& req = parser.get();
    ctx.version = req.version() >= 11 ? 11 : 10;
    ctx.head = req.method() == http::verb::head;
    ctx.keep_alive = req.version() >= 11 && req.keep_alive() && !stopping;
    const std::string_view target = Sv(req.target());
    const size_t question = target.find('?');
    const std::string_view path = target.substr(0, question);

    if (auto rejection = Check(req, path, ctx)) {
      if (!parser.is_done()) ctx.keep_alive = false;  // its body was not read
      HttpResponse response = std::move(*rejection);
      const bool written = co_await WriteFull(c, std::move(response), ctx);
      if (!written) co_return;
      if (!ctx.keep_alive) {
        co_await CloseGracefully(c);
        co_return;
      }
      continue;
    }

    const uint64_t limit = options.max_body_bytes;
    if (auto length = parser.content_length(); length && *length > limit) {
      std::string message = "request body is " + std::to_string(*length) +
                            " bytes; the limit is " + std::to_string(limit) + " bytes";
      co_await SendErrorAndClose(c, 413, std::move(message), ctx);
      co_return;
    }
    if (!parser.is_done()) {
      if (IEquals(Trim(Sv(req[http::field::expect])), "100-continue") && ctx.version >= 11) {
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        auto [ec, n] = co_await asio::async_write(stream, asio::buffer(kContinue), kTuple);
        if (ec) co_return;
      }
      parser.body_limit(limit);
      auto [ec, n] = co_await http::async_read(stream, c->buffer, parser, kTuple);
      if (ec) {
        if (ec == http::error::body_limit) {
          std::string message =
              "request body exceeds the limit of " + std::to_string(limit) + " bytes";
          co_await SendErrorAndClose(c, 413, std::move(message), ctx);
        } else if (IsHttpParseError(ec)) {
          std::string message = "malformed HTTP request body: " + ec.message();
          co_await SendErrorAndClose(c, 400, std::move(message), ctx);
        }
        co_return;
      }
    }
    stream.expires_never();
    auto request = std::make_shared<HttpRequest>();
    request->method = std::string(Sv(req.method_string()));
    request->path = std::string(path);
    if (question != std::string_view::npos) request->query = std::string(target.substr(question + 1));
    request->headers.reserve(static_cast<size_t>(std::distance(req.begin(), req.end())));
    for (const auto& field : req) {
      request->headers.emplace_back(std::string(Sv(field.name_string())),
                                    std::string(Sv(field.value())));
    }
    request->body = std::move(req.body());
    request->remote_address = c->remote;

    std::weak_ptr<Conn> weak = c;
    auto responder = std::make_shared<ResponderImpl>(
        [ex = stream.get_executor(), weak] {
          asio::post(ex, [weak] {
            if (auto conn = weak.lock()) conn->wake.cancel();
          });
        },
        stream.socket().native_handle(), ctx);
    {
      std::lock_guard lock(mu);
      if (stopping) co_return;
      c->responder = responder;
    }
    c->current = responder;
    c->stop_watch = false;
    StartWatch(c);
    threads->RunNext([this, request, responder] { RunHandler(*request, *responder); });

    const bool complete = co_await Deliver(c, *responder, ctx);

    // Stop the watcher; what it read (a pipelined request) stays in the buffer.
    c->stop_watch = true;
    if (c->watching) {
      error_code ignored;
      stream.socket().cancel(ignored);
    }
    while (c->watching) {
      c->wake.expires_at(asio::steady_timer::time_point::max());
      co_await c->wake.async_wait(kTuple);
    }
    {
      std::lock_guard lock(mu);
      c->responder.reset();
    }
    c->current.reset();
    if (!complete || c->gone) {
      responder->Abort();
      co_return;
    }
    responder->Detach();
    if (!ctx.keep_alive || stopping) {
      co_await CloseGracefully(c);
      co_return;
    }
  }
}

// ---------------------------------------------------------------------------------------

HttpServer::HttpServer(HttpServerOptions options, Handler handler) {
  if (!handler) throw std::invalid_argument("HttpServer needs a handler");
  if (!IsLoopbackHost(options.host) && options.api_key.empty()) {
    throw std::invalid_argument("refusing to listen on " + options.host +
                                " without an API key: set HEARTH_API_KEY or --api-key, or "
                                "bind 127.0.0.1");
  }
  for (const auto& origin : options.allowed_origins) {
    if (origin.find('*') != std::string::npos) {
      throw std::invalid_argument("CORS origin '" + origin +
                                  "' is a wildcard; list exact origins such as "
                                  "http://localhost:3000");
    }
  }
  if (options.worker_threads < 1) throw std::invalid_argument("worker_threads must be >= 1");
  if (options.header_timeout_seconds < 1 || options.idle_timeout_seconds < 1) {
    throw std::invalid_argument("header_timeout_seconds and idle_timeout_seconds must be >= 1");
  }
  impl_ = std::make_unique<Impl>(std::move(options), std::move(handler));
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Start() { impl_->Start(); }

void HttpServer::Stop() {
  if (impl_) impl_->Stop();
}

uint16_t HttpServer::port() const { return impl_->bound_port.load(); }

}  // namespace hearth::api
