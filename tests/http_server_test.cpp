// Tests for api/http_server: a real server on 127.0.0.1 (port 0) and a raw POSIX-socket
// client, so that keep-alive, chunk timing, disconnects and malformed input are exact.
#include "api/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace {

using namespace std::chrono_literals;
using hearth::api::Handler;
using hearth::api::HttpRequest;
using hearth::api::HttpResponse;
using hearth::api::HttpServer;
using hearth::api::HttpServerOptions;
using hearth::api::IsLoopbackHost;
using hearth::api::Responder;
using Clock = std::chrono::steady_clock;

long Ms(Clock::duration d) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

// A flag one thread sets and another waits for.
class Event {
 public:
  void Set() {
    std::lock_guard lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  bool WaitFor(Clock::duration timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return set_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

std::string Lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct RawResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;
  std::vector<std::string> chunks;  // when chunked
  bool chunked = false;
  std::string Header(const std::string& name) const {
    auto it = headers.find(Lowercase(name));
    return it == headers.end() ? "" : it->second;
  }
  bool HasHeader(const std::string& name) const { return headers.count(Lowercase(name)) > 0; }
};

// A blocking HTTP/1.1 client over one TCP connection, with a deadline on every read.
class Client {
 public:
  explicit Client(uint16_t port, Clock::duration timeout = 5s) : timeout_(timeout) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket() failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect() failed");
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Client() { Close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool Send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads until the received data contains needle (the data stays buffered).
  bool ReadUntil(std::string_view needle) {
    const auto deadline = Clock::now() + timeout_;
    while (buf_.find(needle) == std::string::npos) {
      if (!Fill(deadline)) return false;
    }
    return true;
  }

  // True when the server closes the connection (EOF or reset) before the timeout; data
  // that arrives meanwhile is kept.
  bool WaitClosed(Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!closed_) {
      if (!Fill(deadline) && !closed_) return false;
    }
    return true;
  }

  // Reads one response: Content-Length, chunked, or until EOF. Skips 1xx responses.
  std::optional<RawResponse> ReadResponse(bool head = false) {
    const auto deadline = Clock::now() + timeout_;
    for (;;) {
      size_t end;
      while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
        if (!Fill(deadline)) return std::nullopt;
      }
      RawResponse r;
      const std::string head_text = buf_.substr(0, end);
      buf_.erase(0, end + 4);
      size_t line_end = head_text.find("\r\n");
      const std::string status_line = head_text.substr(0, line_end);
      if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) return std::nullopt;
      r.status = std::stoi(status_line.substr(9, 3));
      while (line_end != std::string::npos) {
        const size_t start = line_end + 2;
        line_end = head_text.find("\r\n", start);
        const std::string line = head_text.substr(start, line_end - start);
        const size_t colon = line.find(':');
        if (colon == std::string::npos) return std::nullopt;
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        r.headers[Lowercase(line.substr(0, colon))] = value;
      }
      if (r.status / 100 == 1) continue;
      if (head || r.status == 204 || r.status == 304) return r;
      if (Lowercase(r.Header("Transfer-Encoding")) == "chunked") {
        r.chunked = true;
        for (;;) {
          size_t eol;
          while ((eol = buf_.find("\r\n")) == std::string::npos) {
            if (!Fill(deadline)) return std::nullopt;
          }
          const size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
          while (buf_.size() < eol + 2 + size + 2) {
            if (!Fill(deadline)) return std::nullopt;
          }
          if (buf_.compare(eol + 2 + size, 2, "\r\n") != 0) return std::nullopt;
          std::string chunk = buf_.substr(eol + 2, size);
          buf_.erase(0, eol + 2 + size + 2);
          if (size == 0) return r;
          r.body += chunk;
          r.chunks.push_back(std::move(chunk));
        }
      }
      if (r.HasHeader("Content-Length")) {
        const size_t length = std::stoul(r.Header("Content-Length"));
        while (buf_.size() < length) {
          if (!Fill(deadline)) return std::nullopt;
        }
        r.body = buf_.substr(0, length);
        buf_.erase(0, length);
        return r;
      }
      while (Fill(deadline)) {
      }
      if (!closed_) return std::nullopt;
      r.body = std::move(buf_);
      buf_.clear();
      return r;
    }
  }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  const std::string& buffered() const { return buf_; }

 private:
  // One recv() before the deadline; false on timeout, EOF or error.
  bool Fill(Clock::time_point deadline) {
    if (closed_ || fd_ < 0) return false;
    const long wait = Ms(deadline - Clock::now());
    if (wait <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait)) <= 0) return false;
    char data[16384];
    const ssize_t n = ::recv(fd_, data, sizeof data, 0);
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    buf_.append(data, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  Clock::duration timeout_;
  std::string buf_;
  bool closed_ = false;
};

std::string Request(const std::string& method, const std::string& target,
                     const std::string& headers = "", const std::string& body = "",
                     const std::string& host = "127.0.0.1") {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n" + headers;
  if (!body.empty()) r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

std::optional<RawResponse> Fetch(uint16_t port, const std::string& request, bool head = false) {
  Client c(port);
  if (!c.Send(request)) return std::nullopt;
  return c.ReadResponse(head);
}

HttpServerOptions TestOptions() {
  HttpServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.worker_threads = 4;
  return o;
}

std::unique_ptr<HttpServer> StartServer(Handler handler, HttpServerOptions options = TestOptions()) {
  auto server = std::make_unique<HttpServer>(std::move(options), std::move(handler));
  server->Start();
  return server;
}

void RespondOk(const HttpRequest&, Responder& r) { r.Respond({200, {}, "{\"ok\":true}"}); }

TEST(HttpServer, ServesJsonAndPassesTheRequestThrough) {
  auto server = StartServer([](const HttpRequest& req, Responder& r) {
    r.Respond({201,
               {{"X-Echo-Method", req.method},
                {"X-Echo-Path", req.path},
                {"X-Echo-Query", req.query},
                {"X-Echo-Header", req.Header("x-test-header")}},
               "{\"body\":\"" + req.body + "\"}"});
  });
  ASSERT_NE(server->port(), 0);
  auto r = Fetch(server->port(),
                 Request("POST", "/api/echo?a=1&b=2", "X-Test-Header: hi\r\n", "hello"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->Header("Content-Type"), "application/json");
  EXPECT_EQ(r->Header("Server"), "hearth");
  EXPECT_EQ(r->Header("X-Echo-Method"), "POST");
  EXPECT_EQ(r->Header("X-Echo-Path"), "/api/echo");
  EXPECT_EQ(r->Header("X-Echo-Query"), "a=1&b=2");
  EXPECT_EQ(r->Header("X-Echo-Header"), "hi");
  EXPECT_EQ(r->body, "{\"body\":\"hello\"}");
  EXPECT_EQ(r->Header("Content-Length"), std::to_string(r->body.size()));
}

TEST(HttpServer, HandlerContentTypeWins) {
  auto server = StartServer([](const HttpRequest&, Responder& r) {
    r.Respond({200, {{"Content-Type", "text/plain"}}, "plain"});
  });
  auto r = Fetch(server->port(), Request("GET", "/"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("Content-Type"), "text/plain");
  EXPECT_EQ(r->body, "plain");
}

TEST(HttpServer, HandlerCannotBreakFramingOrInjectHeaders) {
  auto server = StartServer([](const HttpRequest&, Responder& r) {
    r.Respond({200,
               {{"X-Ok", "fine"},
                {"X-Bad", "a\r\nX-Injected: 1"},
                {"Bad Name", "x"},
                {"Content-Length", "1000"},
                {"Connection", "close"}},
               "body"});
  });
  Client c(server->port());
  ASSERT_TRUE(c.Send(Request("GET", "/")));
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("X-Ok"), "fine");
  EXPECT_FALSE(r->HasHeader("X-Injected"));
  EXPECT_FALSE(r->HasHeader("X-Bad"));
  EXPECT_FALSE(r->HasHeader("Bad Name"));
  EXPECT_EQ(r->Header("Content-Length"), "4");
  EXPECT_EQ(r->body, "body");
  ASSERT_TRUE(c.Send(Request("GET", "/")));  // still kept alive
  ASSERT_TRUE(c.ReadResponse());
}

TEST(HttpServer, KeepAliveServesTwoRequestsOnOneConnection) {
  std::atomic<int> calls{0};
  auto server = StartServer([&](const HttpRequest& req, Responder& r) {
    ++calls;
    r.Respond({200, {}, "\"" + req.path + "\""});
  });
  Client c(server->port());
  ASSERT_TRUE(c.Send(Request("GET", "/one")));
  auto first = c.ReadResponse();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->body, "\"/one\"");
  EXPECT_NE(Lowercase(first->Header("Connection")), "close");
  ASSERT_TRUE(c.Send(Request("GET", "/two")));
  auto second = c.ReadResponse();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->body, "\"/two\"");
  // Pipelined: both requests in one write, answered in order.
  ASSERT_TRUE(c.Send(Request("GET", "/three") + Request("POST", "/four", "", "body")));
  auto third = c.ReadResponse();
  auto fourth = c.ReadResponse();
  ASSERT_TRUE(third && fourth);
  EXPECT_EQ(third->body, "\"/three\"");
  EXPECT_EQ(fourth->body, "\"/four\"");
  EXPECT_EQ(calls.load(), 4);
}

TEST(HttpServer, Http10AndConnectionCloseCloseTheConnection) {
  auto server = StartServer(RespondOk);
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send("GET / HTTP/1.0\r\n\r\n"));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "{\"ok\":true}");
    EXPECT_TRUE(c.WaitClosed(2s));
  }
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send(Request("GET", "/", "Connection: close\r\n")));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(Lowercase(r->Header("Connection")), "close");
    EXPECT_TRUE(c.WaitClosed(2s));
  }
}

TEST(HttpServer, HeadGetsHeadersWithoutBody) {
  std::atomic<int> heads{0};
  auto server = StartServer([&](const HttpRequest& req, Responder& r) {
    if (req.method == "HEAD") ++heads;
    r.Respond({200, {}, "abc"});
  });
  Client c(server->port());
  ASSERT_TRUE(c.Send(Request("HEAD", "/x")));
  auto r = c.ReadResponse(/*head=*/true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("Content-Length"), "3");
  EXPECT_EQ(heads.load(), 1);
  // No body bytes were sent: the next response parses cleanly on the same connection.
  ASSERT_TRUE(c.Send(Request("GET", "/x")));
  auto next = c.ReadResponse();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "abc");
}

TEST(HttpServer, StreamedChunksArriveIncrementally) {
  Event client_got_first;
  std::atomic<bool> first_seen_before_second{false};
  auto server = StartServer([&](const HttpRequest&, Responder& r) {
    r.Begin(200, {{"Content-Type", "application/x-ndjson"}});
    EXPECT_TRUE(r.Write("{\"n\":1}\n"));
    first_seen_before_second = client_got_first.WaitFor(5s);
    EXPECT_TRUE(r.Write("{\"n\":2}\n"));
    r.End();
  });
  Client c(server->port());
  ASSERT_TRUE(c.Send(Request("POST", "/api/generate", "", "{}")));
  ASSERT_TRUE(c.ReadUntil("{\"n\":1}\n"));
  EXPECT_EQ(c.buffered().find("{\"n\":2}"), std::string::npos);
  client_got_first.Set();
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_TRUE(first_seen_before_second.load());
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(r->chunked);
  EXPECT_EQ(r->Header("Content-Type"), "application/x-ndjson");
  EXPECT_EQ(r->Header("Server"), "hearth");
  ASSERT_EQ(r->chunks.size(), 2u);
  EXPECT_EQ(r->chunks[0], "{\"n\":1}\n");
  EXPECT_EQ(r->chunks[1], "{\"n\":2}\n");
  // The connection stays usable after a stream.
  ASSERT_TRUE(c.Send(Request("GET", "/again")));
  auto again = c.ReadResponse();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->chunks.size(), 2u);
}

TEST(HttpServer, HandlerReturningWithoutEndFinishesTheStream) {
  auto server = StartServer([](const HttpRequest&, Responder& r) {
    r.Begin(200, {});
    r.Write("partial");
  });
  auto r = Fetch(server->port(), Request("GET", "/"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "partial");
}

TEST(HttpServer, ClientDisconnectMidStreamCancelsQuickly) {
  Event cancelled;
  std::atomic<Clock::rep> cancelled_at{0};
  std::atomic<bool> write_after_cancel{true};
  std::atomic<bool> flag_matches{false};
  auto server = StartServer([&](const HttpRequest& req, Responder& r) {
    if (req.path == "/ping") return RespondOk(req, r);
    auto flag = r.cancel_flag();
    r.Begin(200, {{"Content-Type", "application/x-ndjson"}});
    r.Write("tick\n");
    const auto give_up = Clock::now() + 10s;
    while (!r.cancelled() && Clock::now() < give_up) std::this_thread::sleep_for(1ms);
    cancelled_at = Clock::now().time_since_epoch().count();
    flag_matches = flag->load();
    write_after_cancel = r.Write("late\n");
    cancelled.Set();
  });
  Client c(server->port());
  ASSERT_TRUE(c.Send(Request("POST", "/api/generate", "", "{}")));
  ASSERT_TRUE(c.ReadUntil("tick\n"));
  const auto closed_at = Clock::now();
  c.Close();
  ASSERT_TRUE(cancelled.WaitFor(5s));
  const auto latency = Clock::time_point(Clock::duration(cancelled_at.load())) - closed_at;
  EXPECT_LT(Ms(latency), 100) << "cancel flag set " << Ms(latency) << " ms after disconnect";
  EXPECT_TRUE(flag_matches.load());
  EXPECT_FALSE(write_after_cancel.load());
  // The server keeps serving.
  auto r = Fetch(server->port(), Request("GET", "/ping"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServer, ClientDisconnectWhileNonStreamingHandlerBlocksCancels) {
  Event cancelled;
  auto server = StartServer([&](const HttpRequest&, Responder& r) {
    const auto give_up = Clock::now() + 10s;
    while (!r.cancelled() && Clock::now() < give_up) std::this_thread::sleep_for(1ms);
    if (r.cancelled()) cancelled.Set();
    r.Respond({200, {}, "{}"});  // dropped
  });
  Client c(server->port());
  ASSERT_TRUE(c.Send(Request("GET", "/slow")));
  std::this_thread::sleep_for(50ms);
  c.Close();
  EXPECT_TRUE(cancelled.WaitFor(2s));
}

TEST(HttpServer, HandlerThatNeverRespondsGets500) {
  auto server = StartServer([](const HttpRequest&, Responder&) {});
  auto r = Fetch(server->port(), Request("GET", "/nothing"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->Header("Content-Type"), "application/json");
  EXPECT_EQ(r->body, "{\"error\":\"handler produced no response\"}");
}

TEST(HttpServer, HandlerThatThrowsGets500) {
  auto server = StartServer(
      [](const HttpRequest&, Responder&) { throw std::runtime_error("boom"); });
  auto r = Fetch(server->port(), Request("GET", "/"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(r->body.find("boom"), std::string::npos) << r->body;
}

TEST(HttpServer, DeclaredHugeBodyGets413WithoutBeingRead) {
  std::atomic<int> calls{0};
  auto server = StartServer([&](const HttpRequest& req, Responder& r) {
    ++calls;
    RespondOk(req, r);
  });
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send("POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Content-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n"));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_EQ(r->Header("Content-Type"), "application/json");
    EXPECT_EQ(r->body,
              "{\"error\":\"request body is 2147483648 bytes; the limit is 67108864 bytes\"}");
    EXPECT_EQ(Lowercase(r->Header("Connection")), "close");
    EXPECT_TRUE(c.WaitClosed(3s));
  }
  EXPECT_EQ(calls.load(), 0);
  auto next = Fetch(server->port(), Request("GET", "/"));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
  EXPECT_EQ(calls.load(), 1);
}

TEST(HttpServer, ChunkedBodyOverTheLimitGets413) {
  HttpServerOptions o = TestOptions();
  o.max_body_bytes = 10;
  std::atomic<int> calls{0};
  auto server = StartServer(
      [&](const HttpRequest& req, Responder& r) {
        ++calls;
        RespondOk(req, r);
      },
      o);
  auto small = Fetch(server->port(), Request("POST", "/", "", "0123456789"));
  ASSERT_TRUE(small);
  EXPECT_EQ(small->status, 200);
  auto r = Fetch(server->port(), "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n"
                                 "8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("limit"), std::string::npos);
  EXPECT_EQ(calls.load(), 1);
}

TEST(HttpServer, MalformedRequestGets400) {
  auto server = StartServer(RespondOk);
  Client c(server->port());
  ASSERT_TRUE(c.Send("THIS IS NOT HTTP\r\n\r\n"));
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(r->Header("Content-Type"), "application/json");
  EXPECT_NE(r->body.find("\"error\":\"malformed HTTP request"), std::string::npos) << r->body;
  EXPECT_TRUE(c.WaitClosed(3s));
}

TEST(HttpServer, UnknownMethodReachesTheHandler) {
  auto server = StartServer([](const HttpRequest& req, Responder& r) {
    r.Respond({405, {}, "{\"method\":\"" + req.method + "\"}"});
  });
  auto r = Fetch(server->port(), Request("BREW", "/pot"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->body, "{\"method\":\"BREW\"}");
}

TEST(HttpServer, HostHeaderMustBeLocalOrAllowed) {
  HttpServerOptions o = TestOptions();
  o.allowed_hosts = {"hearth.lan"};
  std::atomic<int> calls{0};
  auto server = StartServer(
      [&](const HttpRequest& req, Responder& r) {
        ++calls;
        RespondOk(req, r);
      },
      o);
  const std::string port = std::to_string(server->port());
  for (const std::string& host : std::vector<std::string>{
           "127.0.0.1", "127.0.0.1:" + port, "localhost", "LOCALHOST:" + port, "[::1]:" + port,
           "[::1]", "::1", "hearth.lan:" + port}) {
    auto r = Fetch(server->port(), Request("GET", "/", "", "", host));
    ASSERT_TRUE(r) << host;
    EXPECT_EQ(r->status, 200) << host;
  }
  for (const std::string& host : std::vector<std::string>{
           "evil.example", "evil.example:" + port, "127.0.0.1.evil.example", "localhost:abc", ""}) {
    auto r = Fetch(server->port(), Request("GET", "/", "", "", host));
    ASSERT_TRUE(r) << host;
    EXPECT_EQ(r->status, 403) << host;
    EXPECT_NE(r->body.find("\"error\":\"host '" + host + "' is not allowed"), std::string::npos)
        << r->body;
  }
  EXPECT_EQ(calls.load(), 8);
}

TEST(HttpServer, CorsOriginsAreCheckedAndPreflightAnswered) {
  HttpServerOptions o = TestOptions();
  o.allowed_origins = {"http://app.example"};
  std::atomic<int> calls{0};
  auto server = StartServer(
      [&](const HttpRequest& req, Responder& r) {
        ++calls;
        RespondOk(req, r);
      },
      o);
  auto denied = Fetch(server->port(), Request("POST", "/api/chat", "Origin: http://evil.example\r\n",
                                              "{}"));
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 403);
  EXPECT_EQ(denied->body,
            "{\"error\":\"origin http://evil.example is not allowed; add it with --allow-origin\"}");
  EXPECT_FALSE(denied->HasHeader("Access-Control-Allow-Origin"));

  auto allowed = Fetch(server->port(), Request("POST", "/api/chat",
                                               "Origin: http://app.example\r\n", "{}"));
  ASSERT_TRUE(allowed);
  EXPECT_EQ(allowed->status, 200);
  EXPECT_EQ(allowed->Header("Access-Control-Allow-Origin"), "http://app.example");
  EXPECT_EQ(allowed->Header("Vary"), "Origin");

  auto preflight = Fetch(server->port(),
                         Request("OPTIONS", "/api/chat",
                                 "Origin: http://app.example\r\n"
                                 "Access-Control-Request-Method: POST\r\n"
                                 "Access-Control-Request-Headers: content-type, x-hearth-project\r\n"));
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
  EXPECT_EQ(preflight->Header("Access-Control-Allow-Origin"), "http://app.example");
  EXPECT_NE(preflight->Header("Access-Control-Allow-Methods").find("POST"), std::string::npos);
  const std::string allow_headers = preflight->Header("Access-Control-Allow-Headers");
  for (const char* h : {"Authorization", "Content-Type", "X-Hearth-Sensitivity",
                        "X-Hearth-Project", "X-Hearth-Approval"}) {
    EXPECT_NE(allow_headers.find(h), std::string::npos) << h;
  }

  auto no_origin = Fetch(server->port(), Request("GET", "/"));
  ASSERT_TRUE(no_origin);
  EXPECT_EQ(no_origin->status, 200);
  EXPECT_FALSE(no_origin->HasHeader("Access-Control-Allow-Origin"));
  EXPECT_EQ(calls.load(), 2);  // the preflight and the rejection never reach the handler
}

TEST(HttpServer, ApiKeyIsRequiredExceptOnPublicPaths) {
  HttpServerOptions o = TestOptions();
  o.api_key = "s3cret-key";
  auto server = StartServer(RespondOk, o);
  const uint16_t port = server->port();

  auto missing = Fetch(port, Request("GET", "/api/tags"));
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 401);
  EXPECT_NE(missing->Header("WWW-Authenticate").find("Bearer"), std::string::npos);
  EXPECT_NE(missing->body.find("\"error\":"), std::string::npos);
  EXPECT_NE(missing->body.find("Authorization: Bearer"), std::string::npos) << missing->body;
  EXPECT_EQ(missing->body.find("s3cret-key"), std::string::npos);

  auto wrong = Fetch(port, Request("GET", "/api/tags", "Authorization: Bearer s3cret-kez\r\n"));
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto prefix = Fetch(port, Request("GET", "/api/tags", "Authorization: Bearer s3cret\r\n"));
  ASSERT_TRUE(prefix);
  EXPECT_EQ(prefix->status, 401);

  auto bearer = Fetch(port, Request("GET", "/api/tags", "Authorization: Bearer s3cret-key\r\n"));
  ASSERT_TRUE(bearer);
  EXPECT_EQ(bearer->status, 200);
  auto x_api_key = Fetch(port, Request("GET", "/api/tags", "X-Api-Key: s3cret-key\r\n"));
  ASSERT_TRUE(x_api_key);
  EXPECT_EQ(x_api_key->status, 200);

  for (const char* path : {"/health", "/api/version", "/health?verbose=1"}) {
    auto open = Fetch(port, Request("GET", path));
    ASSERT_TRUE(open);
    EXPECT_EQ(open->status, 200) << path;
  }

  // A 401 keeps a body-less connection alive.
  Client c(port);
  ASSERT_TRUE(c.Send(Request("GET", "/api/tags")));
  auto first = c.ReadResponse();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 401);
  ASSERT_TRUE(c.Send(Request("GET", "/api/tags", "Authorization: Bearer s3cret-key\r\n")));
  auto second = c.ReadResponse();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200);
}

TEST(HttpServer, RefusesNonLoopbackWithoutApiKey) {
  HttpServerOptions o = TestOptions();
  o.host = "0.0.0.0";
  try {
    HttpServer server(o, RespondOk);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("refusing to listen on 0.0.0.0 without an API key"), std::string::npos);
    EXPECT_NE(what.find("HEARTH_API_KEY"), std::string::npos);
    EXPECT_NE(what.find("--api-key"), std::string::npos);
    EXPECT_NE(what.find("127.0.0.1"), std::string::npos);
  }
  o.host = "::";
  EXPECT_THROW(HttpServer(o, RespondOk), std::invalid_argument);
  o.host = "0.0.0.0";
  o.api_key = "key";
  EXPECT_NO_THROW(HttpServer(o, RespondOk));
  o.host = "::1";
  o.api_key = "";
  EXPECT_NO_THROW(HttpServer(o, RespondOk));
}

TEST(HttpServer, IsLoopbackHost) {
  for (const char* h : {"127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost",
                        "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(IsLoopbackHost(h)) << h;
  }
  for (const char* h : {"0.0.0.0", "::", "192.168.1.2", "128.0.0.1", "example.com", "", "10.0.0.1"}) {
    EXPECT_FALSE(IsLoopbackHost(h)) << h;
  }
}

TEST(HttpServer, ListensOnIpv6Loopback) {
  HttpServerOptions o = TestOptions();
  o.host = "::1";
  HttpServer server(o, RespondOk);
  try {
    server.Start();
  } catch (const std::runtime_error& e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
  EXPECT_NE(server.port(), 0);
}

TEST(HttpServer, BindFailureNamesTheAddress) {
  auto first = StartServer(RespondOk);
  HttpServerOptions o = TestOptions();
  o.port = first->port();
  HttpServer second(o, RespondOk);
  try {
    second.Start();
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(o.port)), std::string::npos)
        << e.what();
  }
}

TEST(HttpServer, SlowHeaderIsDisconnectedAfterHeaderTimeout) {
  HttpServerOptions o = TestOptions();
  o.header_timeout_seconds = 1;
  std::atomic<int> calls{0};
  auto server = StartServer(
      [&](const HttpRequest& req, Responder& r) {
        ++calls;
        RespondOk(req, r);
      },
      o);
  Client c(server->port());
  const auto start = Clock::now();
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "));
  ASSERT_TRUE(c.WaitClosed(5s));
  const long elapsed = Ms(Clock::now() - start);
  EXPECT_GE(elapsed, 900);
  EXPECT_LT(elapsed, 3000);
  EXPECT_EQ(calls.load(), 0);
}

TEST(HttpServer, IdleKeepAliveConnectionIsClosedAfterIdleTimeout) {
  HttpServerOptions o = TestOptions();
  o.idle_timeout_seconds = 1;
  auto server = StartServer(RespondOk, o);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Request("GET", "/")));
  ASSERT_TRUE(c.ReadResponse());
  const auto start = Clock::now();
  ASSERT_TRUE(c.WaitClosed(5s));
  const long elapsed = Ms(Clock::now() - start);
  EXPECT_GE(elapsed, 900);
  EXPECT_LT(elapsed, 3000);
}

TEST(HttpServer, StopReturnsPromptlyWithABlockedStreamingHandler) {
  Event handler_saw_cancel;
  auto server = StartServer([&](const HttpRequest&, Responder& r) {
    r.Begin(200, {});
    r.Write("started\n");
    const auto give_up = Clock::now() + 30s;
    while (!r.cancelled() && Clock::now() < give_up) std::this_thread::sleep_for(1ms);
    if (r.cancelled()) handler_saw_cancel.Set();
    EXPECT_FALSE(r.Write("after stop\n"));
  });
  Client c(server->port());
  ASSERT_TRUE(c.Send(Request("POST", "/api/generate", "", "{}")));
  ASSERT_TRUE(c.ReadUntil("started\n"));
  const auto start = Clock::now();
  server->Stop();
  const long elapsed = Ms(Clock::now() - start);
  EXPECT_LT(elapsed, 1000);
  EXPECT_TRUE(handler_saw_cancel.WaitFor(0s));
  EXPECT_TRUE(c.WaitClosed(2s));
  server->Stop();  // idempotent
}

TEST(HttpServer, StopWithIdleConnectionsAndBeforeStart) {
  {
    HttpServer never_started(TestOptions(), RespondOk);
  }
  auto server = StartServer(RespondOk);
  Client idle(server->port());
  Client half(server->port());
  ASSERT_TRUE(half.Send("GET / HTTP/1.1\r\n"));
  std::this_thread::sleep_for(20ms);
  const auto start = Clock::now();
  server.reset();
  EXPECT_LT(Ms(Clock::now() - start), 1000);
  EXPECT_TRUE(idle.WaitClosed(2s));
  EXPECT_TRUE(half.WaitClosed(2s));
}

// A whole response larger than the socket buffer: the handler's thread writes what the
// socket takes at once, the io thread the rest; the connection stays usable.
TEST(HttpServer, LargeWholeResponseArrivesCompleteAndKeepAliveContinues) {
  std::string big(24u << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
  auto server = StartServer([&](const HttpRequest& req, Responder& r) {
    r.Respond({200, {{"Content-Type", "text/plain"}}, req.path == "/big" ? big : std::string("small")});
  });
  Client c(server->port(), 20s);
  ASSERT_TRUE(c.Send(Request("GET", "/big")));
  std::this_thread::sleep_for(200ms);  // let the socket buffer fill before reading
  auto first = c.ReadResponse();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  EXPECT_TRUE(first->body == big) << "body of " << first->body.size() << " bytes differs";
  ASSERT_TRUE(c.Send(Request("GET", "/small")));
  auto second = c.ReadResponse();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->body, "small");
}

// A stream faster than its client: what the socket does not take queues, in order, and the
// handler's thread sends directly again once the queue has drained.
TEST(HttpServer, StreamFasterThanItsReaderArrivesCompleteAndInOrder) {
  constexpr int kChunks = 3000;
  auto server = StartServer([](const HttpRequest&, Responder& r) {
    r.Begin(200, {{"Content-Type", "text/plain"}});
    for (int i = 0; i < kChunks; ++i) {
      std::string chunk = std::to_string(i) + ":" + std::string(8000, static_cast<char>('a' + i % 26)) + "\n";
      if (!r.Write(chunk)) return;
      if (i % 500 == 499) std::this_thread::sleep_for(100ms);  // let the queue drain now and then
    }
    r.End();
  });
  Client c(server->port(), 30s);
  ASSERT_TRUE(c.Send(Request("GET", "/fast")));
  std::this_thread::sleep_for(300ms);  // the socket buffer fills; the rest queues
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->chunks.size(), static_cast<size_t>(kChunks));
  for (int i = 0; i < kChunks; ++i) {
    const std::string& chunk = r->chunks[static_cast<size_t>(i)];
    ASSERT_EQ(chunk.substr(0, chunk.find(':')), std::to_string(i)) << "chunk " << i << " out of order";
    ASSERT_EQ(chunk.size(), std::to_string(i).size() + 1 + 8000 + 1);
  }
  ASSERT_TRUE(c.Send(Request("GET", "/fast")));  // the connection is still usable
  auto again = c.ReadResponse();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->chunks.size(), static_cast<size_t>(kChunks));
}

// Handlers run on at most worker_threads threads; more wait for a free one, and the server
// keeps accepting and answering what needs no handler meanwhile.
TEST(HttpServer, HandlersBeyondTheThreadLimitWaitForAFreeThread) {
  HttpServerOptions options = TestOptions();
  options.worker_threads = 2;
  options.max_body_bytes = 1024;
  Event release;
  std::atomic<int> running{0}, peak{0}, done{0};
  auto server = StartServer(
      [&](const HttpRequest&, Responder& r) {
        const int now = ++running;
        int seen = peak.load();
        while (now > seen && !peak.compare_exchange_weak(seen, now)) {
        }
        release.WaitFor(10s);
        --running;
        ++done;
        r.Respond({200, {}, "{}"});
      },
      options);
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 5; ++i) {
    clients.emplace_back([&] {
      auto r = Fetch(server->port(), Request("GET", "/wait"));
      if (r && r->status == 200) ++ok;
    });
  }
  const auto deadline = Clock::now() + 5s;
  while (running.load() < 2 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(running.load(), 2) << "two handler threads, the other requests wait";
  // Answered by the io thread itself: no handler thread is needed for a refusal.
  Client c(server->port());
  ASSERT_TRUE(c.Send("POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4096\r\n\r\n"));
  auto refused = c.ReadResponse();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 413);
  release.Set();
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 5);
  EXPECT_EQ(done.load(), 5);
  EXPECT_EQ(peak.load(), 2);
}

// A handler runs on the thread that read its request; one that blocks must not keep that
// thread's other job (reading and writing every other connection) from being done.
TEST(HttpServer, BlockedHandlerDoesNotHoldUpOtherConnections) {
  Event entered, release;
  auto server = StartServer([&](const HttpRequest& req, Responder& r) {
    if (req.path == "/block") {
      entered.Set();
      release.WaitFor(20s);
    }
    r.Respond({200, {}, "{}"});
  });
  std::thread blocked([&] { Fetch(server->port(), Request("GET", "/block")); });
  ASSERT_TRUE(entered.WaitFor(5s));
  std::atomic<bool> answered{false};
  std::thread other([&] {
    auto r = Fetch(server->port(), Request("GET", "/quick"));
    answered = r && r->status == 200;
  });
  const auto deadline = Clock::now() + 10s;
  while (!answered && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(answered.load()) << "a second connection waited for a blocked handler";
  release.Set();
  other.join();
  blocked.join();
}

TEST(HttpServer, ConcurrentStreamsAreIndependent) {
  auto server = StartServer([](const HttpRequest& req, Responder& r) {
    r.Begin(200, {});
    for (int i = 0; i < 50; ++i) {
      if (!r.Write(req.path + ":" + std::to_string(i) + "\n")) return;
    }
    r.End();
  });
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      const std::string path = "/s" + std::to_string(t);
      auto r = Fetch(server->port(), Request("GET", path));
      if (!r || r->chunks.size() != 50) return;
      for (int i = 0; i < 50; ++i) {
        if (r->chunks[static_cast<size_t>(i)] != path + ":" + std::to_string(i) + "\n") return;
      }
      ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
}

}  // namespace
