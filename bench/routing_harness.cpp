// hearth_bench_routing: the native harness of bench/routing_bench.mjs (`--harness native`):
// a fake OpenAI provider and a measuring client without a garbage collector.
//
//   hearth_bench_routing fake [--chunk-chars 3] [--tokens-per-second 0] [--writes per-event]
//       [--marker TEXT]
//       Serves POST */chat/completions on 127.0.0.1 (an ephemeral port, printed as the first
//       stdout line, {"port": N}) until stdin closes. The reply is "ECHO: " + the last user
//       message in tokens of --chunk-chars code points, cut at max_tokens: one chat.completion
//       object, or with stream: true a role chunk, one SSE chunk event per token, a finish
//       chunk, a usage chunk when stream_options.include_usage, then [DONE] - the shapes
//       tests/fake_cloud/server.mjs answers. How a stream goes out (--writes):
//         per-event  the headers, then each event in a write of its own, built as it goes
//         two        every event built first; then the headers, the role chunk and the first
//                    token in one write, and everything else in a second write
//         one        every event built first; the headers, then all events in one write
//       (--tokens-per-second paces per-event writes only.) GET /_stats: {"requests", "marker_from_hearth"}
//       (requests whose body contains --marker and whose User-Agent is hearth).
//
//   hearth_bench_routing client --hearth-port P --direct-port Q --body-file F [--stream]
//       [--n 3000] [--warmup 20] [--key K] [--expect TEXT]
//       Sends the body N+warmup times to each port, alternating (hearth, direct, ...), one
//       keep-alive connection per port, one request at a time; prints one JSON line:
//       {"hearth_ms": [...], "direct_ms": [...]} - total time (request written to response
//       read) or, with --stream, time to the first non-empty content delta. A hearth answer
//       must carry X-Hearth-Route: cloud and, with --expect, contain TEXT (the restored secret).
//
// Why it exists: on a 2-vCPU machine the node client's and node fake's garbage-collector
// threads preempt hearth for milliseconds at a time (docs/performance.md), which sets the P99
// of a proxied request more than hearth does. This harness does the same work in C++.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// ---- fake provider ------------------------------------------------------------------------

struct FakeOptions {
  int chunk_chars = 3;
  double tokens_per_second = 0;  // 0: every event at once
  std::string writes = "per-event";  // per-event | two | one (see the top of this file)
  std::string marker;
};

struct FakeStats {
  std::atomic<long> requests{0};
  std::atomic<long> marker_from_hearth{0};
};

// Splits UTF-8 text into tokens of n code points.
std::vector<std::string> SplitTokens(const std::string& text, int n) {
  std::vector<std::string> out;
  std::string cur;
  int points = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const bool continuation = (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80;
    if (!continuation && points == n) {
      out.push_back(std::move(cur));
      cur.clear();
      points = 0;
    }
    if (!continuation) ++points;
    cur += text[i];
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::string LastUserText(const json& body) {
  const auto& messages = body.value("messages", json::array());
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (it->value("role", "") != "user") continue;
    const auto& c = (*it)["content"];
    if (c.is_string()) return c.get<std::string>();
  }
  return "";
}

template <class Body>
void Send(tcp::socket& socket, http::response<Body>& res) {
  res.prepare_payload();
  http::write(socket, res);
}

void WriteChunk(tcp::socket& socket, const std::string& data) { net::write(socket, http::make_chunk(net::buffer(data))); }

void ServeChat(tcp::socket& socket, const http::request<http::string_body>& req, const FakeOptions& opts,
               FakeStats& stats) {
  stats.requests++;
  const std::string& raw = req.body();
  if (!opts.marker.empty() && raw.find(opts.marker) != std::string::npos &&
      req[http::field::user_agent] == "hearth") {
    stats.marker_from_hearth++;
  }
  json body = json::parse(raw, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    http::response<http::string_body> res{http::status::bad_request, req.version()};
    res.set(http::field::content_type, "application/json");
    res.body() = R"({"error":{"message":"body is not a JSON object","type":"invalid_request_error"}})";
    Send(socket, res);
    return;
  }
  auto tokens = SplitTokens("ECHO: " + LastUserText(body), opts.chunk_chars);
  std::string reason = "stop";
  const json max_tokens = body.contains("max_completion_tokens") ? body["max_completion_tokens"] : body.value("max_tokens", json());
  if (max_tokens.is_number_integer() && max_tokens.get<long>() >= 0 &&
      tokens.size() > static_cast<size_t>(max_tokens.get<long>())) {
    tokens.resize(static_cast<size_t>(max_tokens.get<long>()));
    reason = "length";
  }
  std::string text;
  for (const auto& t : tokens) text += t;
  const json usage = {{"prompt_tokens", (raw.size() + 3) / 4},
                      {"completion_tokens", tokens.size()},
                      {"total_tokens", (raw.size() + 3) / 4 + tokens.size()}};
  const std::string model = body.value("model", "fake-model");
  const long created = static_cast<long>(std::time(nullptr));
  if (!body.value("stream", false)) {
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.body() = json{{"id", "chatcmpl-fake"}, {"object", "chat.completion"}, {"created", created}, {"model", model},
                      {"choices", json::array({{{"index", 0},
                                                {"message", {{"role", "assistant"}, {"content", text}}},
                                                {"finish_reason", reason}}})},
                      {"usage", usage}}
                     .dump();
    Send(socket, res);
    return;
  }
  http::response<http::empty_body> res{http::status::ok, req.version()};
  res.set(http::field::content_type, "text/event-stream");
  res.set(http::field::cache_control, "no-cache");
  res.keep_alive(req.keep_alive());
  res.chunked(true);
  auto chunk = [&](const json& delta, const json& finish) {
    return "data: " +
           json{{"id", "chatcmpl-fake"}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
                {"choices", json::array({{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}})}}
               .dump() +
           "\n\n";
  };
  auto tail = [&] {  // the events after the last token
    std::vector<std::string> events = {chunk(json::object(), reason)};
    if (body.value("stream_options", json::object()).value("include_usage", false)) {
      events.push_back("data: " +
                       json{{"id", "chatcmpl-fake"}, {"object", "chat.completion.chunk"}, {"created", created},
                            {"model", model}, {"choices", json::array()}, {"usage", usage}}
                           .dump() +
                       "\n\n");
    }
    events.push_back("data: [DONE]\n\n");
    return events;
  };
  if (opts.writes == "per-event") {
    http::response_serializer<http::empty_body> sr{res};
    http::write_header(socket, sr);
    WriteChunk(socket, chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
    const auto gap = opts.tokens_per_second > 0 ? std::chrono::duration<double>(1.0 / opts.tokens_per_second)
                                                 : std::chrono::duration<double>(0);
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0 && gap.count() > 0) std::this_thread::sleep_for(gap);
      WriteChunk(socket, chunk({{"content", tokens[i]}}, nullptr));
    }
    for (const std::string& event : tail()) WriteChunk(socket, event);
    net::write(socket, http::make_chunk_last());
    return;
  }
  // Built before anything is sent, so that sending costs the fake (which shares the machine
  // with hearth and the client) two writes and no work in between.
  std::vector<std::string> events = {chunk({{"role", "assistant"}, {"content", ""}}, nullptr)};
  for (const std::string& t : tokens) events.push_back(chunk({{"content", t}}, nullptr));
  for (std::string& event : tail()) events.push_back(std::move(event));
  std::ostringstream head;
  head << res.base();  // the status line and headers
  std::string first = head.str();
  std::string rest;
  const size_t in_first = opts.writes == "two" ? std::min<size_t>(2, events.size()) : 0;
  for (size_t i = 0; i < events.size(); ++i) {
    (i < in_first ? first : rest) += beast::buffers_to_string(http::make_chunk(net::buffer(events[i])));
  }
  rest += beast::buffers_to_string(http::make_chunk_last());
  net::write(socket, net::buffer(first));
  net::write(socket, net::buffer(rest));
}

void ServeConnection(tcp::socket socket, const FakeOptions& opts, FakeStats& stats) {
  beast::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  beast::flat_buffer buffer;
  try {
    for (;;) {
      http::request<http::string_body> req;
      http::read(socket, buffer, req, ec);
      if (ec) return;  // closed by the peer, or a malformed request: drop the connection
      const std::string target(req.target());
      if (req.method() == http::verb::get && target == "/_stats") {
        http::response<http::string_body> res{http::status::ok, req.version()};
        res.set(http::field::content_type, "application/json");
        res.keep_alive(req.keep_alive());
        res.body() = json{{"requests", stats.requests.load()}, {"marker_from_hearth", stats.marker_from_hearth.load()}}.dump();
        Send(socket, res);
      } else if (req.method() == http::verb::post && target.ends_with("/chat/completions")) {
        ServeChat(socket, req, opts, stats);
      } else {
        http::response<http::string_body> res{http::status::not_found, req.version()};
        res.keep_alive(req.keep_alive());
        res.body() = "not found";
        Send(socket, res);
      }
      if (!req.keep_alive()) return;
    }
  } catch (const std::exception&) {
    // A peer that went away mid-response: nothing to clean up but the socket.
  }
}

int RunFake(const FakeOptions& opts) {
  net::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  std::cout << json{{"port", acceptor.local_endpoint().port()}}.dump() << std::endl;
  // The parent ends the fake by closing our stdin (or by killing us).
  std::thread([] {
    char c;
    while (std::cin.get(c)) {
    }
    std::_Exit(0);
  }).detach();
  static FakeStats stats;
  for (;;) {
    tcp::socket socket(io);
    acceptor.accept(socket);
    std::thread(ServeConnection, std::move(socket), std::cref(opts), std::ref(stats)).detach();
  }
}

// ---- measuring client ---------------------------------------------------------------------

struct Target {
  std::string name;
  unsigned short port;
  net::io_context io;
  tcp::socket socket{io};
  beast::flat_buffer buffer;

  Target(std::string n, unsigned short p) : name(std::move(n)), port(p) {
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    socket.set_option(tcp::no_delay(true));
  }
};

struct Result {
  double ms = 0;
  std::string text;
  std::string route;
};

// True when an SSE event carries a non-empty content delta; appends it to `text`.
bool TakeContent(const std::string& event, std::string& text) {
  if (!event.starts_with("data: ") || event == "data: [DONE]") return false;
  json j = json::parse(event.substr(6), nullptr, false);
  if (j.is_discarded()) throw std::runtime_error("unparsable SSE event: " + event.substr(0, 200));
  const auto& choices = j.value("choices", json::array());
  if (choices.empty()) return false;
  const auto& delta = choices[0].value("delta", json::object());
  const std::string c = delta.value("content", "");
  text += c;
  return !c.empty();
}

Result Post(Target& t, const std::string& body, const std::string& key, bool stream) {
  http::request<http::string_body> req{http::verb::post, "/v1/chat/completions", 11};
  req.set(http::field::host, "127.0.0.1:" + std::to_string(t.port));
  req.set(http::field::content_type, "application/json");
  req.set(http::field::authorization, "Bearer " + key);
  req.keep_alive(true);
  req.body() = body;
  req.prepare_payload();

  Result r;
  const auto t0 = Clock::now();
  http::write(t.socket, req);
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  if (!stream) {
    http::read(t.socket, t.buffer, parser);
    r.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  } else {
    bool first = false;
    size_t consumed = 0;
    while (!parser.is_done()) {
      http::read_some(t.socket, t.buffer, parser);
      const auto now = Clock::now();
      const std::string& b = parser.get().body();
      size_t end;
      while ((end = b.find("\n\n", consumed)) != std::string::npos) {
        const bool content = TakeContent(b.substr(consumed, end - consumed), r.text);
        consumed = end + 2;
        if (content && !first) {
          first = true;
          r.ms = std::chrono::duration<double, std::milli>(now - t0).count();
        }
      }
    }
    if (!first) throw std::runtime_error(t.name + ": the stream carried no content");
  }
  const auto& res = parser.get();
  if (res.result() != http::status::ok) {
    throw std::runtime_error(t.name + ": HTTP " + std::to_string(res.result_int()) + ": " + res.body().substr(0, 300));
  }
  if (!stream) {
    json j = json::parse(res.body(), nullptr, false);
    if (j.is_discarded()) throw std::runtime_error(t.name + ": the answer is not JSON");
    r.text = j["choices"][0]["message"].value("content", "");
  }
  r.route = std::string(res["X-Hearth-Route"]);
  return r;
}

struct ClientOptions {
  unsigned short hearth_port = 0, direct_port = 0;
  std::string body_file, key = "bench", expect;
  bool stream = false;
  int n = 3000, warmup = 20;
};

int RunClient(const ClientOptions& o) {
  std::ifstream in(o.body_file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read --body-file " + o.body_file);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string body = ss.str();
  Target hearth("hearth", o.hearth_port), direct("direct", o.direct_port);
  std::vector<double> hearth_ms, direct_ms;
  hearth_ms.reserve(o.n);
  direct_ms.reserve(o.n);
  for (int i = 0; i < o.warmup + o.n; ++i) {
    const Result h = Post(hearth, body, o.key, o.stream);
    const Result d = Post(direct, body, o.key, o.stream);
    if (h.route != "cloud") throw std::runtime_error("hearth served the request '" + h.route + "', not 'cloud'");
    if (!o.expect.empty() && h.text.find(o.expect) == std::string::npos) {
      throw std::runtime_error("the expected text was not in hearth's answer: " + h.text.substr(0, 200));
    }
    if (i < o.warmup) continue;
    hearth_ms.push_back(h.ms);
    direct_ms.push_back(d.ms);
  }
  std::cout << json{{"hearth_ms", hearth_ms}, {"direct_ms", direct_ms}}.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hearth_bench_routing: fake provider and client for bench/routing_bench.mjs"};
  app.require_subcommand(1);
  FakeOptions fake;
  auto* fake_cmd = app.add_subcommand("fake", "serve a fake OpenAI provider on 127.0.0.1");
  fake_cmd->add_option("--chunk-chars", fake.chunk_chars, "code points per streamed token")->check(CLI::Range(1, 1000));
  fake_cmd->add_option("--writes", fake.writes, "how a stream goes out: per-event, two or one (see the source)")
      ->check(CLI::IsMember({"per-event", "two", "one"}));
  fake_cmd->add_option("--tokens-per-second", fake.tokens_per_second, "pace of streamed tokens; 0 = all at once")
      ->check(CLI::Range(0.0, 1e6));
  fake_cmd->add_option("--marker", fake.marker, "count hearth's requests that contain this text");
  ClientOptions client;
  auto* client_cmd = app.add_subcommand("client", "measure hearth against the provider, alternating");
  client_cmd->add_option("--hearth-port", client.hearth_port)->required();
  client_cmd->add_option("--direct-port", client.direct_port)->required();
  client_cmd->add_option("--body-file", client.body_file)->required();
  client_cmd->add_option("--key", client.key);
  client_cmd->add_option("--expect", client.expect, "text hearth's answer must contain");
  client_cmd->add_flag("--stream", client.stream);
  client_cmd->add_option("--n", client.n)->check(CLI::Range(1, 10000000));
  client_cmd->add_option("--warmup", client.warmup)->check(CLI::Range(0, 1000000));
  CLI11_PARSE(app, argc, argv);
  try {
    if (fake_cmd->parsed()) return RunFake(fake);
    return RunClient(client);
  } catch (const std::exception& e) {
    std::cerr << "hearth_bench_routing: " << e.what() << "\n";
    return 1;
  }
}
