// The model store: import/list/show/cp/rm, name validation, Modelfiles, atomic writes,
// verification and tamper detection, and pull over a local Range-capable HTTP server
// (interrupted transfers, resume, checksums, allowlist, redirects, mirror), plus the
// Ollama-shaped HTTP routes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <tuple>

#include <gtest/gtest.h>

#include "api/http_server.h"
#include "api/store_api.h"
#include "engine/error.h"
#include "engine/model_pool.h"
#include "store/modelfile.h"
#include "store/pull.h"
#include "store/store.h"
#include "test_support.h"

namespace fs = std::filesystem;
using hearth::engine::EngineError;
using hearth::engine::ErrorKind;
using namespace hearth::store;
using hearth::test::CatchEngineError;

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

std::string Sha256Hex(const std::string& data) {
  Sha256 h;
  h.Update(data.data(), data.size());
  return h.HexDigest();
}

// Files under dir (recursive), relative names.
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

size_t CountIn(const std::string& dir) {
  std::error_code ec;
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    (void)e;
    ++n;
  }
  return n;
}

// Sets an environment variable for the lifetime of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A fresh store per test.
std::string NewStoreDir() {
  static std::atomic<int> n{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = (fs::path(hearth::test::TempDir()) / ("store-" + std::string(info->name()) + "-" + std::to_string(n++))).string();
  fs::remove_all(dir);
  return dir;
}

// A minimal HTTP/1.1 file server on 127.0.0.1 that understands "Range: bytes=N-" and
// If-Range, can drop the connection after N body bytes (a given number of times), redirect,
// and records every request. One connection at a time, Connection: close.
class RangeServer {
 public:
  struct File {
    std::string body;
    std::string etag;                        // sent as ETag when set
    std::vector<std::string> extra_headers;  // "Name: value"
    bool honor_range = true;
    size_t drop_after = 0;                   // with drops > 0: close after this many body bytes
    int drops = 0;
    std::string redirect;                    // 302 to this URL when set
    int chunk_delay_ms = 0;                  // pause between 256 KiB chunks of the body
  };
  struct Request {
    std::string path, range, if_range;
  };

  RangeServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 16) != 0) {
      throw std::runtime_error("test server: cannot listen");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~RangeServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  std::string HostPort() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Url(const std::string& path) const { return "http://" + HostPort() + path; }
  void Put(const std::string& path, File f) {
    std::lock_guard lock(mutex_);
    files_[path] = std::move(f);
  }
  std::vector<Request> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  int connections() const { return connections_.load(); }

 private:
  void Loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      ++connections_;
      timeval tv{5, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      Handle(c);
      ::shutdown(c, SHUT_RDWR);
      ::close(c);
    }
  }

  static bool Send(int c, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(c, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  void Handle(int c) {
    std::string head;
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      head.append(buf, static_cast<size_t>(n));
    }
    std::istringstream in(head);
    std::string method, path, version, line;
    in >> method >> path >> version;
    std::getline(in, line);
    Request req;
    req.path = path;
    while (std::getline(in, line) && line != "\r") {
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string key = line.substr(0, colon);
      std::transform(key.begin(), key.end(), key.begin(), ::tolower);
      std::string value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ')) value.erase(value.begin());
      while (!value.empty() && (value.back() == '\r' || value.back() == ' ')) value.pop_back();
      if (key == "range") req.range = value;
      if (key == "if-range") req.if_range = value;
    }
    File f;
    bool found = false;
    size_t drop = 0;
    {
      std::lock_guard lock(mutex_);
      requests_.push_back(req);
      auto it = files_.find(path);
      if (it != files_.end()) {
        found = true;
        if (it->second.drops > 0) {
          --it->second.drops;
          drop = it->second.drop_after;
        }
        f = it->second;
      }
    }
    if (!found) {
      Send(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\nConnection: close\r\n\r\nno such file");
      return;
    }
    if (!f.redirect.empty()) {
      Send(c, "HTTP/1.1 302 Found\r\nLocation: " + f.redirect + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    size_t start = 0;
    bool partial = false;
    if (f.honor_range && req.range.rfind("bytes=", 0) == 0 && (req.if_range.empty() || req.if_range == f.etag)) {
      start = std::stoull(req.range.substr(6));
      if (start >= f.body.size()) {
        Send(c, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */" + std::to_string(f.body.size()) +
                    "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      partial = true;
    }
    std::string h = partial ? "HTTP/1.1 206 Partial Content\r\n" : "HTTP/1.1 200 OK\r\n";
    if (partial) {
      h += "Content-Range: bytes " + std::to_string(start) + "-" + std::to_string(f.body.size() - 1) + "/" +
           std::to_string(f.body.size()) + "\r\n";
    }
    h += "Content-Length: " + std::to_string(f.body.size() - start) + "\r\n";
    if (!f.etag.empty()) h += "ETag: " + f.etag + "\r\n";
    for (const std::string& x : f.extra_headers) h += x + "\r\n";
    h += "Accept-Ranges: bytes\r\nConnection: close\r\n\r\n";
    if (!Send(c, h)) return;
    std::string body = f.body.substr(start);
    if (drop > 0 && drop < body.size()) {
      Send(c, body.substr(0, drop));
      return;  // the connection closes mid-body
    }
    for (size_t off = 0; off < body.size(); off += 256 << 10) {
      if (!Send(c, body.substr(off, 256 << 10))) return;
      if (f.chunk_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(f.chunk_delay_ms));
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  mutable std::mutex mutex_;
  std::map<std::string, File> files_;
  std::vector<Request> requests_;
  std::thread thread_;
};

// Collects what a handler answers.
struct FakeResponder : hearth::api::Responder {
  int status = 0;
  hearth::api::Headers headers;
  std::string body;
  bool streamed = false, ended = false;
  std::shared_ptr<std::atomic<bool>> flag = std::make_shared<std::atomic<bool>>(false);
  void Respond(hearth::api::HttpResponse r) override {
    status = r.status;
    headers = r.headers;
    body = r.body;
  }
  void Begin(int s, hearth::api::Headers h) override {
    status = s;
    headers = std::move(h);
    streamed = true;
  }
  bool Write(std::string_view chunk) override {
    body.append(chunk);
    return true;
  }
  void End() override { ended = true; }
  bool cancelled() const override { return false; }
  std::shared_ptr<std::atomic<bool>> cancel_flag() override { return flag; }
  std::vector<nlohmann::json> Lines() const {
    std::vector<nlohmann::json> out;
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }
};

FakeResponder Call(hearth::api::RouteTable& routes, const std::string& method, const std::string& path,
                   const nlohmann::json& body) {
  hearth::api::HttpRequest req;
  req.method = method;
  req.path = path;
  req.body = body.dump();
  FakeResponder out;
  auto it = routes.find({method, path});
  EXPECT_NE(it, routes.end()) << path;
  if (it != routes.end()) it->second(req, out);
  return out;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::unsetenv("HEARTH_PULL_ALLOW");
    ::unsetenv("HEARTH_PULL_MIRROR");
    root_ = NewStoreDir();
    model_ = hearth::test::TinyModelPath();
    model_bytes_ = ReadFile(model_);
    model_digest_ = "sha256:" + Sha256Hex(model_bytes_);
  }
  std::string root_, model_, model_bytes_, model_digest_;
};

PullOptions Quick(const std::string& source) {
  PullOptions o;
  o.source = source;
  o.connect_timeout_ms = 3000;
  o.stall_timeout_ms = 5000;
  return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------

TEST_F(StoreTest, ImportListShowCopyRemove) {
  Store store(root_);
  Manifest m = store.Import(model_, "tiny");
  EXPECT_EQ(m.name, "tiny:latest");
  EXPECT_EQ(m.model.digest, model_digest_);
  EXPECT_EQ(m.model.size, model_bytes_.size());
  EXPECT_EQ(m.source.rfind("import:", 0), 0u);
  EXPECT_EQ(ReadFile(store.BlobPath(m.model.digest)), model_bytes_);
  EXPECT_TRUE(fs::exists(root_ + "/manifests/tiny/latest.json"));

  std::vector<Manifest> list = store.List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "tiny:latest");

  // show: the manifest and a Modelfile that names the blob
  Manifest shown = store.Get("tiny");
  EXPECT_EQ(shown.model.digest, m.model.digest);
  EXPECT_NE(store.RenderModelfile(shown).find("FROM " + store.BlobPath(m.model.digest)), std::string::npos);

  // importing the same content again reuses the blob
  store.Import(model_, "tiny:again");
  EXPECT_EQ(CountIn(root_ + "/blobs"), 1u);
  store.Remove("tiny:again");

  Manifest copy = store.Copy("tiny", "tiny2:v1");
  EXPECT_EQ(copy.name, "tiny2:v1");
  EXPECT_EQ(copy.model.digest, m.model.digest);
  EXPECT_EQ(store.List().size(), 2u);
  EXPECT_EQ(CountIn(root_ + "/blobs"), 1u);  // cp copies no data

  store.Remove("tiny");
  EXPECT_FALSE(store.Find("tiny"));
  EXPECT_TRUE(store.HasBlob(m.model.digest)) << "still used by tiny2:v1";
  // replacing a name with other content frees the old blob
  const std::string other = std::string(HEARTH_LLAMA_MODELS_DIR) + "/ggml-vocab-qwen2.gguf";
  store.Import(other, "tiny2:v1");
  EXPECT_EQ(CountIn(root_ + "/blobs"), 1u);
  EXPECT_FALSE(store.HasBlob(m.model.digest));
  store.Remove("tiny2:v1");
  EXPECT_TRUE(store.List().empty());
  EXPECT_EQ(CountIn(root_ + "/blobs"), 0u) << "unreferenced blobs are collected";
  EXPECT_EQ(CountIn(root_ + "/tmp"), 0u);

  EXPECT_EQ(CatchEngineError([&] { store.Remove("tiny"); }).kind(), ErrorKind::kNotFound);
  EXPECT_EQ(CatchEngineError([&] { store.Copy("nope", "x"); }).kind(), ErrorKind::kNotFound);
  EXPECT_EQ(CatchEngineError([&] { store.Get("nope"); }).kind(), ErrorKind::kNotFound);
}

TEST_F(StoreTest, BadNamesAreRejectedWithAReason) {
  Store store(root_);
  store.Import(model_, "good");
  const std::vector<std::string> bad = {
      "../../etc/passwd", "a/b", "a\\b", "%2e%2e", "..", ".hidden", "-x", std::string(300, 'a'),
      std::string("a\0b", 3), "a\x01" "b", "a\nb", "a\x1b[31m", "a:", ":tag", "a:b:c", "a:../x", "", "a b", "caf\xc3\xa9"};
  for (const std::string& name : bad) {
    SCOPED_TRACE(::testing::PrintToString(name));
    EXPECT_FALSE(Store::NameProblem(name).empty());
    EngineError e = CatchEngineError([&] { Store::CanonicalName(name); });
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidRequest);
    EXPECT_NE(std::string(e.what()).find("invalid model name"), std::string::npos) << e.what();
    // the message never carries the raw control bytes
    for (char c : std::string(e.what())) EXPECT_FALSE(c == '\n' || c == '\x1b' || c == '\0' || c == '\x01');
    EXPECT_EQ(CatchEngineError([&] { store.Import(model_, name); }).kind(), ErrorKind::kInvalidRequest);
    EXPECT_EQ(CatchEngineError([&] { store.Copy("good", name); }).kind(), ErrorKind::kInvalidRequest);
    EXPECT_EQ(CatchEngineError([&] { store.Remove(name); }).kind(), ErrorKind::kInvalidRequest);
    Modelfile mf = ParseModelfile("FROM good\n");
    EXPECT_EQ(CatchEngineError([&] { store.Create(name, mf, ""); }).kind(), ErrorKind::kInvalidRequest);
  }
  // Reasons are specific.
  EXPECT_NE(Store::NameProblem("../../etc/passwd").find(".."), std::string::npos);
  EXPECT_NE(Store::NameProblem("a/b").find("'/'"), std::string::npos);
  EXPECT_NE(Store::NameProblem(std::string(300, 'a')).find("longer"), std::string::npos);
  EXPECT_NE(Store::NameProblem(std::string("a\0b", 3)).find("control"), std::string::npos);
  // Nothing escaped the store and nothing was added.
  EXPECT_EQ(store.List().size(), 1u);
  EXPECT_EQ(CountIn(root_ + "/blobs"), 1u);
  EXPECT_EQ(CountIn(root_ + "/tmp"), 0u);
  // Good names with tags work.
  EXPECT_EQ(Store::CanonicalName("qwen2.5-coder:1.5b-q8_0"), "qwen2.5-coder:1.5b-q8_0");
  EXPECT_EQ(Store::CanonicalName("Model_1"), "Model_1:latest");
}

TEST_F(StoreTest, ImportRejectsInvalidGgufAndLeavesNothing) {
  Store store(root_);
  const std::string junk = hearth::test::TempDir() + "/junk.gguf";
  WriteFile(junk, "GGUF this is not really a model file at all");
  EngineError e = CatchEngineError([&] { store.Import(junk, "junk"); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
  // A truncated model: header fine, tensor data missing.
  const std::string cut = hearth::test::TempDir() + "/cut.gguf";
  WriteFile(cut, model_bytes_.substr(0, model_bytes_.size() / 2));
  EXPECT_EQ(CatchEngineError([&] { store.Import(cut, "cut"); }).kind(), ErrorKind::kInvalidModel);
  EXPECT_EQ(CatchEngineError([&] { store.Import(root_ + "/nope.gguf", "nope"); }).kind(), ErrorKind::kInvalidRequest);
  EXPECT_TRUE(store.List().empty());
  EXPECT_EQ(CountIn(root_ + "/blobs"), 0u);
  EXPECT_EQ(CountIn(root_ + "/tmp"), 0u);
  EXPECT_EQ(CountIn(root_ + "/manifests"), 0u);
}

TEST_F(StoreTest, AtomicWriteFailureLeavesNoTempFiles) {
  const std::string dir = root_ + "-atomic";
  fs::create_directories(dir + "/target-is-a-dir");
  WriteFile(dir + "/sub", "x");
  // rename onto a directory fails after the temp file was written
  EXPECT_EQ(CatchEngineError([&] { AtomicWriteFile(dir + "/target-is-a-dir", "data"); }).kind(), ErrorKind::kInternal);
  // no directory to write into
  EXPECT_EQ(CatchEngineError([&] { AtomicWriteFile(dir + "/missing/file", "data"); }).kind(), ErrorKind::kInternal);
  EXPECT_EQ(FilesUnder(dir), std::vector<std::string>{"sub"});
  // and a successful write replaces the file whole
  AtomicWriteFile(dir + "/sub", "new content");
  EXPECT_EQ(ReadFile(dir + "/sub"), "new content");
  EXPECT_EQ(FilesUnder(dir), std::vector<std::string>{"sub"});
}

TEST_F(StoreTest, ModelfileEveryDirective) {
  const std::string text =
      "# a comment\n"
      "FROM ./models/base.gguf\n"
      "\n"
      "parameter num_ctx 8192\n"
      "PARAMETER temperature 0.25\n"
      "PARAMETER top_k 20\n"
      "PARAMETER top_p 0.9\n"
      "PARAMETER min_p 0.05\n"
      "PARAMETER repeat_penalty 1.1\n"
      "PARAMETER seed 42\n"
      "PARAMETER num_predict 256\n"
      "PARAMETER stop \"<|im_end|>\"\n"
      "PARAMETER stop <|endoftext|>\n"
      "PARAMETER stop \"\\n\\nUser:\"\n"
      "SYSTEM \"\"\"You are a careful\n"
      "coding assistant.\"\"\"\n"
      "TEMPLATE \"{{ .System }} {{ .Prompt }}\"\n"
      "ADAPTER ./lora.gguf\n"
      "ADAPTER /abs/lora2.gguf\n"
      "LICENSE \"\"\"MIT\"\"\"\n";
  Modelfile mf = ParseModelfile(text);
  EXPECT_EQ(mf.from, "./models/base.gguf");
  EXPECT_EQ(mf.from_line, 2);
  EXPECT_EQ(mf.parameters.num_ctx, 8192);
  EXPECT_DOUBLE_EQ(*mf.parameters.temperature, 0.25);
  EXPECT_EQ(mf.parameters.top_k, 20);
  EXPECT_DOUBLE_EQ(*mf.parameters.top_p, 0.9);
  EXPECT_DOUBLE_EQ(*mf.parameters.min_p, 0.05);
  EXPECT_DOUBLE_EQ(*mf.parameters.repeat_penalty, 1.1);
  EXPECT_EQ(mf.parameters.seed, 42);
  EXPECT_EQ(mf.parameters.num_predict, 256);
  EXPECT_EQ(mf.parameters.stop, (std::vector<std::string>{"<|im_end|>", "<|endoftext|>", "\n\nUser:"}));
  EXPECT_EQ(*mf.system, "You are a careful\ncoding assistant.");
  EXPECT_EQ(*mf.template_text, "{{ .System }} {{ .Prompt }}");
  EXPECT_EQ(mf.adapters, (std::vector<std::string>{"./lora.gguf", "/abs/lora2.gguf"}));
  EXPECT_EQ(mf.adapter_lines, (std::vector<int>{18, 19}));
  EXPECT_EQ(mf.licenses, std::vector<std::string>{"MIT"});
  // CRLF line endings too
  Modelfile crlf = ParseModelfile("FROM base\r\nPARAMETER top_k 5\r\nSYSTEM hi there \r\n");
  EXPECT_EQ(crlf.from, "base");
  EXPECT_EQ(crlf.parameters.top_k, 5);
  EXPECT_EQ(*crlf.system, "hi there");
}

TEST_F(StoreTest, ModelfileErrorsNameTheLine) {
  struct Case {
    std::string text;
    std::string expect;  // substring of the message
  };
  const std::vector<Case> cases = {
      {"FROM a\nPARAMETER mirostat 2\n", "line 2: unknown PARAMETER 'mirostat'"},
      {"FROM a\n\nPARAMETER temperature hot\n", "line 3: temperature must be a number"},
      {"FROM a\nPARAMETER temperature 101\n", "line 2: temperature must be a number between 0 and 100"},
      {"FROM a\nPARAMETER num_ctx 8\n", "line 2: num_ctx must be between 16"},
      {"FROM a\nPARAMETER top_k 1.5\n", "line 2: top_k must be an integer"},
      {"FROM a\nPARAMETER top_p -0.1\n", "line 2: top_p"},
      {"FROM a\nPARAMETER seed 99999999999\n", "line 2: seed must be between"},
      {"FROM a\nPARAMETER stop \"\"\n", "line 2: stop must not be empty"},
      {"FROM a\nPARAMETER\n", "line 2: PARAMETER needs a name"},
      {"FROM a\nPARAMETER num_predict\n", "line 2: PARAMETER num_predict needs a value"},
      {"PARAMETER top_k 3\n", "no FROM line"},
      {"FROM a\nFROM b\n", "line 2: FROM given twice (first on line 1)"},
      {"FROM a\nSYSTEM one\nSYSTEM two\n", "line 3: SYSTEM given twice"},
      {"FROM a\nTEMPLATE x\nTEMPLATE y\n", "line 3: TEMPLATE given twice"},
      {"FROM a\n\nSYSTEM \"\"\"never\nclosed\n", "line 3: the \"\"\" opened here is never closed"},
      {"FROM a\nSYSTEM \"open\n", "line 2: the quoted value of SYSTEM is not closed"},
      {"FROM a\nSYSTEM \"bad \\q escape\"\n", "line 2: bad escape"},
      {"FROM a\nSYSTEM \"x\" trailing\n", "line 2: unexpected text after the quoted value"},
      {"FROM a\nSYSTEM \"\"\"x\n\"\"\" junk\n", "line 3: unexpected text"},
      {"FROM a\nFOO bar\n", "line 2: unknown directive 'FOO'"},
      {"FROM a\nMESSAGE user hi\n", "line 2: MESSAGE is not supported"},
      {"FROM\n", "line 1: FROM needs a value"},
      {"FROM a\nADAPTER\n", "line 2: ADAPTER needs a value"},
      {std::string("FROM a\nSYSTEM x\0y\n", 18), "line 2: contains a NUL byte"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    EngineError e = CatchEngineError([&] { ParseModelfile(c.text); });
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidRequest);
    EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("Modelfile", 0), 0u) << e.what();
  }
  // too many stops
  std::string many = "FROM a\n";
  for (int i = 0; i < 17; ++i) many += "PARAMETER stop s" + std::to_string(i) + "\n";
  EXPECT_NE(std::string(CatchEngineError([&] { ParseModelfile(many); }).what()).find("line 18: at most 16 stop"),
            std::string::npos);
}

TEST_F(StoreTest, ParametersFromJsonValidate) {
  ModelParameters p = ModelParameters::FromJson(
      nlohmann::json::parse(R"({"num_ctx": 4096, "temperature": 0.5, "stop": ["a", "b"], "seed": -1, "num_predict": 10})"));
  EXPECT_EQ(p.num_ctx, 4096);
  EXPECT_EQ(p.seed, -1);
  EXPECT_EQ(p.stop.size(), 2u);
  EXPECT_EQ(ModelParameters::FromJson(p.ToJson()).ToJson(), p.ToJson());
  for (const char* bad : {R"({"mirostat": 1})", R"({"num_ctx": "big"})", R"({"num_ctx": 1.5})", R"({"top_p": 2})",
                          R"({"stop": 5})", R"({"stop": [1]})", R"([1])"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(ModelParameters::FromJson(nlohmann::json::parse(bad)), std::invalid_argument);
  }
}

TEST_F(StoreTest, CreateFromPathAndFromStoreModelWithAdapter) {
  Store store(root_);
  const std::string dir = hearth::test::TempDir() + "/mf-" + std::to_string(::getpid());
  fs::create_directories(dir);
  fs::copy_file(model_, dir + "/base.gguf", fs::copy_options::overwrite_existing);
  const std::string adapter = std::string(HEARTH_LLAMA_MODELS_DIR) + "/ggml-vocab-qwen2.gguf";
  ASSERT_TRUE(fs::exists(adapter));
  Modelfile mf = ParseModelfile("FROM base.gguf\nPARAMETER num_ctx 2048\nPARAMETER stop \"<|im_end|>\"\nSYSTEM be brief\n"
                                "ADAPTER " + adapter + "\n");
  Manifest a = store.Create("coder", mf, dir);
  EXPECT_EQ(a.model.digest, model_digest_);
  EXPECT_EQ(a.parameters.num_ctx, 2048);
  EXPECT_EQ(a.parameters.stop, std::vector<std::string>{"<|im_end|>"});
  EXPECT_EQ(*a.system, "be brief");
  ASSERT_EQ(a.adapters.size(), 1u);
  EXPECT_EQ(a.adapters[0].digest, "sha256:" + Sha256Hex(ReadFile(adapter)));
  EXPECT_TRUE(store.HasBlob(a.adapters[0].digest));
  // The manifest on disk records everything.
  nlohmann::json j = nlohmann::json::parse(ReadFile(root_ + "/manifests/coder/latest.json"));
  EXPECT_EQ(j["parameters"]["num_ctx"], 2048);
  EXPECT_EQ(j["adapters"][0]["digest"], a.adapters[0].digest);
  EXPECT_EQ(j["system"], "be brief");

  // FROM a store model: inherits, then overrides.
  Manifest b = store.Create("coder:hot", ParseModelfile("FROM coder\nPARAMETER temperature 1.5\nTEMPLATE \"{{ .Prompt }}\"\n"), dir);
  EXPECT_EQ(b.model.digest, a.model.digest);
  EXPECT_EQ(b.parameters.num_ctx, 2048);
  EXPECT_DOUBLE_EQ(*b.parameters.temperature, 1.5);
  EXPECT_EQ(*b.system, "be brief");
  EXPECT_EQ(*b.template_text, "{{ .Prompt }}");
  EXPECT_EQ(b.adapters.size(), 1u);
  EXPECT_EQ(b.source, "create:coder:latest");
  EXPECT_EQ(CountIn(root_ + "/blobs"), 2u);

  // show --modelfile round-trips through the parser (FROM the blob: no copy is made).
  const std::string rendered = store.RenderModelfile(b);
  Manifest c = store.Create("coder:copy", ParseModelfile(rendered), "");
  EXPECT_EQ(c.model.digest, b.model.digest);
  EXPECT_EQ(c.parameters.ToJson(), b.parameters.ToJson());
  EXPECT_EQ(c.system, b.system);
  EXPECT_EQ(c.template_text, b.template_text);
  EXPECT_EQ(c.adapters.size(), 1u);
  EXPECT_EQ(CountIn(root_ + "/blobs"), 2u);

  // Errors: a FROM that is neither, paths over the API, a non-GGUF adapter.
  EngineError e = CatchEngineError([&] { store.Create("x", ParseModelfile("\nFROM nothing-here\n"), dir); });
  EXPECT_NE(std::string(e.what()).find("line 2: FROM 'nothing-here' is neither"), std::string::npos) << e.what();
  e = CatchEngineError([&] { store.Create("x", ParseModelfile("FROM base.gguf\n"), dir, /*allow_paths=*/false); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidRequest);
  EXPECT_NE(std::string(e.what()).find("not a model in the store"), std::string::npos) << e.what();
  WriteFile(dir + "/notlora.gguf", "nope");
  e = CatchEngineError([&] { store.Create("x", ParseModelfile("FROM coder\n\nADAPTER notlora.gguf\n"), dir); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
  EXPECT_NE(std::string(e.what()).find("line 3: ADAPTER"), std::string::npos) << e.what();
  EXPECT_FALSE(store.Find("x"));
  EXPECT_EQ(CountIn(root_ + "/tmp"), 0u);
}

TEST_F(StoreTest, TamperedBlobFailsVerifyAndRefusesToLoad) {
  Store store(root_);
  Manifest m = store.Import(model_, "tiny");
  store.Import(model_, "tiny:same");
  ResolvedModel r = store.Resolve("tiny");
  EXPECT_EQ(r.path, store.BlobPath(m.model.digest));
  EXPECT_NO_THROW(store.CheckBlobPath(r.path));
  VerifyReport ok = store.Verify();
  EXPECT_TRUE(ok.ok());
  ASSERT_EQ(ok.blobs.size(), 1u);
  EXPECT_EQ(ok.blobs[0].models, (std::vector<std::string>{"tiny:latest", "tiny:same"}));

  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a later mtime than the import's
  {
    std::fstream f(r.path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(m.model.size - 100));
    char c = 0;
    f.read(&c, 1);
    f.seekp(static_cast<std::streamoff>(m.model.size - 100));
    c = static_cast<char>(c ^ 0x01);
    f.write(&c, 1);
  }
  // Same size: only the hash notices. Resolve re-hashes because the file changed.
  EngineError e = CatchEngineError([&] { store.Resolve("tiny"); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
  EXPECT_NE(std::string(e.what()).find("sha256"), std::string::npos) << e.what();
  VerifyReport bad = store.Verify();
  EXPECT_FALSE(bad.ok());
  ASSERT_EQ(bad.blobs.size(), 1u);
  EXPECT_NE(bad.blobs[0].problem.find("corrupt"), std::string::npos);
  EXPECT_EQ(CatchEngineError([&] { Store(root_).Resolve("tiny:same"); }).kind(), ErrorKind::kInvalidModel);
  EXPECT_EQ(CatchEngineError([&] { store.CheckBlobPath(r.path); }).kind(), ErrorKind::kInvalidModel);
  EXPECT_NO_THROW(store.CheckBlobPath(model_));  // not a blob of this store: not its business

  // Truncation is caught by the size check without hashing.
  fs::resize_file(r.path, m.model.size - 10);
  e = CatchEngineError([&] { store.Resolve("tiny"); });
  EXPECT_NE(std::string(e.what()).find("bytes"), std::string::npos) << e.what();
  EXPECT_FALSE(store.Verify().ok());
  // A missing blob too.
  fs::remove(r.path);
  EXPECT_NE(std::string(CatchEngineError([&] { store.Resolve("tiny"); }).what()).find("missing"), std::string::npos);
  VerifyReport gone = store.Verify();
  EXPECT_FALSE(gone.ok());
  EXPECT_EQ(gone.problems.size(), 2u);
  // Repair: importing again rewrites the blob.
  store.Import(model_, "tiny");
  EXPECT_TRUE(store.Verify().ok());
  EXPECT_NO_THROW(store.Resolve("tiny:same"));
}

TEST_F(StoreTest, ManifestCannotPointOutsideTheStore) {
  Store store(root_);
  store.Import(model_, "tiny");
  nlohmann::json j = nlohmann::json::parse(ReadFile(root_ + "/manifests/tiny/latest.json"));
  j["model"]["digest"] = "sha256:../../../etc/passwd";
  WriteFile(root_ + "/manifests/tiny/evil.json", j.dump());
  EXPECT_EQ(CatchEngineError([&] { store.Resolve("tiny:evil"); }).kind(), ErrorKind::kInvalidModel);
  EXPECT_EQ(store.List().size(), 1u);
  EXPECT_FALSE(store.Verify().ok());
  // An unreadable manifest stops garbage collection rather than risking its blobs.
  store.Import(std::string(HEARTH_LLAMA_MODELS_DIR) + "/ggml-vocab-qwen2.gguf", "other");
  EXPECT_EQ(CountIn(root_ + "/blobs"), 2u);
  store.Remove("other");
  EXPECT_EQ(CountIn(root_ + "/blobs"), 2u);
  fs::remove(root_ + "/manifests/tiny/evil.json");
  store.Import(model_, "again");
  store.Remove("again");
  EXPECT_EQ(CountIn(root_ + "/blobs"), 1u) << "collected once every manifest is readable";
}

// ---------------------------------------------------------------------------------------
// pull

TEST_F(StoreTest, PullRefusesHostsNotOnTheAllowlistWithoutConnecting) {
  Store store(root_);
  RangeServer server;
  server.Put("/tiny.gguf", {model_bytes_});
  // empty allowlist: refuse all
  EngineError e = CatchEngineError([&] { Pull(store, Quick(server.Url("/tiny.gguf"))); });
  EXPECT_EQ(e.kind(), ErrorKind::kDenied);
  EXPECT_NE(std::string(e.what()).find("not on the pull allowlist"), std::string::npos) << e.what();
  {
    ScopedEnv allow("HEARTH_PULL_ALLOW", "example.com, 127.0.0.1:1");
    e = CatchEngineError([&] { Pull(store, Quick(server.Url("/tiny.gguf"))); });
    EXPECT_EQ(e.kind(), ErrorKind::kDenied);
    EXPECT_NE(std::string(e.what()).find(server.HostPort()), std::string::npos) << e.what();
    // a URL with credentials pointing elsewhere is judged by its real host
    e = CatchEngineError([&] { Pull(store, Quick("http://example.com@" + server.HostPort() + "/tiny.gguf")); });
    EXPECT_EQ(e.kind(), ErrorKind::kDenied);
    // plain http to a non-loopback host needs --insecure (refused before any DNS lookup)
    e = CatchEngineError([&] { Pull(store, Quick("http://example.com/x.gguf")); });
    EXPECT_EQ(e.kind(), ErrorKind::kDenied);
    EXPECT_NE(std::string(e.what()).find("plain http"), std::string::npos) << e.what();
    EXPECT_FALSE(PullUrlAllowed(LoadPullConfig(store), server.Url("/tiny.gguf")));
    EXPECT_TRUE(PullUrlAllowed(LoadPullConfig(store), "https://example.com/a.gguf"));
  }
  {  // config.json allowlist with a wrong port
    WriteFile(store.ConfigPath(), R"({"pull_allow": ["127.0.0.2"]})");
    EXPECT_EQ(CatchEngineError([&] { Pull(store, Quick(server.Url("/tiny.gguf"))); }).kind(), ErrorKind::kDenied);
    fs::remove(store.ConfigPath());
  }
  {  // wildcards and URLs are not host names
    ScopedEnv allow("HEARTH_PULL_ALLOW", "*.example.com");
    EXPECT_EQ(CatchEngineError([&] { LoadPullConfig(store); }).kind(), ErrorKind::kInvalidRequest);
  }
  {
    ScopedEnv allow("HEARTH_PULL_ALLOW", "https://example.com/");
    EXPECT_EQ(CatchEngineError([&] { LoadPullConfig(store); }).kind(), ErrorKind::kInvalidRequest);
  }
  EXPECT_EQ(server.connections(), 0);
  EXPECT_TRUE(store.List().empty());
}

TEST_F(StoreTest, PullResumesAnInterruptedTransferWithRange) {
  Store store(root_);
  RangeServer server;
  RangeServer::File f{model_bytes_};
  f.etag = "\"v1\"";
  f.drop_after = 1 << 20;
  f.drops = 1;
  server.Put("/models/Tiny-Coder.Q8_0.gguf", f);
  ScopedEnv allow("HEARTH_PULL_ALLOW", server.HostPort());
  std::vector<Progress> seen;
  PullOptions o = Quick(server.Url("/models/Tiny-Coder.Q8_0.gguf"));
  o.sha256 = model_digest_.substr(7);
  Manifest m = Pull(store, o, [&](const Progress& p) {
    seen.push_back(p);
    return true;
  });
  EXPECT_EQ(m.name, "Tiny-Coder.Q8_0:latest");
  EXPECT_EQ(m.model.digest, model_digest_);
  EXPECT_EQ(m.source, server.Url("/models/Tiny-Coder.Q8_0.gguf"));
  EXPECT_EQ(ReadFile(store.BlobPath(m.model.digest)), model_bytes_);
  std::vector<RangeServer::Request> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].range, "");
  EXPECT_EQ(reqs[1].range, "bytes=" + std::to_string(1 << 20) + "-");
  EXPECT_EQ(reqs[1].if_range, "\"v1\"");
  EXPECT_EQ(CountIn(store.PartialDir()), 0u);
  EXPECT_EQ(CountIn(root_ + "/tmp"), 0u);
  // Ollama-style progress: pulling with total/completed, verifying, writing manifest.
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front().status.rfind("pulling ", 0), 0u);
  EXPECT_EQ(seen.front().digest, model_digest_);
  bool finished = false, verifying = false, writing = false;
  for (const Progress& p : seen) {
    finished |= p.total == model_bytes_.size() && p.completed == p.total;
    verifying |= p.status == "verifying sha256 digest";
    writing |= p.status == "writing manifest";
  }
  EXPECT_TRUE(finished && verifying && writing);
  EXPECT_NO_THROW(store.Resolve(m.name));
}

TEST_F(StoreTest, PullResumesAcrossRunsAndKeepsNothingHalfDone) {
  Store store(root_);
  RangeServer server;
  RangeServer::File f{model_bytes_};
  f.etag = "\"abc\"";
  f.drop_after = 3 << 20;
  f.drops = 1;
  server.Put("/tiny.gguf", f);
  ScopedEnv allow("HEARTH_PULL_ALLOW", "127.0.0.1");  // any port
  PullOptions o = Quick(server.Url("/tiny.gguf"));
  o.name = "tiny:q8";
  o.max_attempts = 1;
  EngineError e = CatchEngineError([&] { Pull(store, o); });
  EXPECT_EQ(e.kind(), ErrorKind::kInternal);
  EXPECT_NE(std::string(e.what()).find("resumes"), std::string::npos) << e.what();
  // no model, no blob: only the resumable partial download
  EXPECT_FALSE(store.Find("tiny:q8"));
  EXPECT_EQ(CountIn(root_ + "/blobs"), 0u);
  std::vector<std::string> partial = FilesUnder(store.PartialDir());
  ASSERT_EQ(partial.size(), 2u);  // <key>.partial + <key>.json
  uint64_t kept = 0;
  for (const auto& p : partial) {
    if (p.ends_with(".partial")) kept = fs::file_size(store.PartialDir() + "/" + p);
  }
  EXPECT_EQ(kept, 3u << 20);

  Manifest m = Pull(store, o);
  EXPECT_EQ(m.model.digest, model_digest_);
  std::vector<RangeServer::Request> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].range, "bytes=" + std::to_string(3 << 20) + "-");
  EXPECT_EQ(CountIn(store.PartialDir()), 0u);
  EXPECT_TRUE(store.Verify().ok());
}

TEST_F(StoreTest, PullWithAWrongSha256KeepsNothing) {
  Store store(root_);
  RangeServer server;
  RangeServer::File f{model_bytes_};
  f.drop_after = 1 << 20;
  f.drops = 1;  // also exercise resume before the check
  server.Put("/tiny.gguf", f);
  ScopedEnv allow("HEARTH_PULL_ALLOW", server.HostPort());
  PullOptions o = Quick(server.Url("/tiny.gguf"));
  o.sha256 = std::string(64, 'a');
  EngineError e = CatchEngineError([&] { Pull(store, o); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
  EXPECT_NE(std::string(e.what()).find("sha256 mismatch"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("--sha256"), std::string::npos) << e.what();
  EXPECT_TRUE(store.List().empty());
  EXPECT_EQ(CountIn(root_ + "/blobs"), 0u);
  EXPECT_EQ(CountIn(store.PartialDir()), 0u);
  EXPECT_EQ(CountIn(root_ + "/tmp"), 0u);
  // a malformed --sha256 is refused before connecting
  const int before = server.connections();
  o.sha256 = "xyz";
  EXPECT_EQ(CatchEngineError([&] { Pull(store, o); }).kind(), ErrorKind::kInvalidRequest);
  EXPECT_EQ(server.connections(), before);
}

TEST_F(StoreTest, PullChecksTheServersDigestHeader) {
  Store store(root_);
  RangeServer server;
  RangeServer::File bad{model_bytes_};
  bad.extra_headers = {"X-Linked-Etag: \"" + std::string(64, 'b') + "\""};
  server.Put("/bad.gguf", bad);
  RangeServer::File good{model_bytes_};
  good.extra_headers = {"X-Linked-Etag: \"" + model_digest_.substr(7) + "\""};
  server.Put("/good.gguf", good);
  ScopedEnv allow("HEARTH_PULL_ALLOW", server.HostPort());
  EngineError e = CatchEngineError([&] { Pull(store, Quick(server.Url("/bad.gguf"))); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
  EXPECT_NE(std::string(e.what()).find("X-Linked-Etag"), std::string::npos) << e.what();
  EXPECT_EQ(CountIn(root_ + "/blobs"), 0u);
  EXPECT_EQ(Pull(store, Quick(server.Url("/good.gguf"))).model.digest, model_digest_);
}

TEST_F(StoreTest, PullRestartsWhenTheServerIgnoresRange) {
  Store store(root_);
  RangeServer server;
  RangeServer::File f{model_bytes_};
  f.honor_range = false;
  f.drop_after = 2 << 20;
  f.drops = 1;
  f.etag = "\"e\"";
  server.Put("/tiny.gguf", f);
  ScopedEnv allow("HEARTH_PULL_ALLOW", server.HostPort());
  Manifest m = Pull(store, Quick(server.Url("/tiny.gguf")));
  EXPECT_EQ(m.model.digest, model_digest_);
  EXPECT_EQ(server.requests().size(), 2u);
}

TEST_F(StoreTest, PullRejectsNonGgufAnd404) {
  Store store(root_);
  RangeServer server;
  const std::string junk(100000, 'x');
  server.Put("/junk.gguf", {junk});
  ScopedEnv allow("HEARTH_PULL_ALLOW", server.HostPort());
  PullOptions o = Quick(server.Url("/junk.gguf"));
  o.sha256 = Sha256Hex(junk);  // right checksum, wrong content
  EngineError e = CatchEngineError([&] { Pull(store, o); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidModel);
  EXPECT_NE(std::string(e.what()).find("not a valid GGUF"), std::string::npos) << e.what();
  EXPECT_EQ(CountIn(store.PartialDir()), 0u);
  EXPECT_EQ(CatchEngineError([&] { Pull(store, Quick(server.Url("/missing.gguf"))); }).kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(store.List().empty());
  EXPECT_EQ(CountIn(root_ + "/blobs"), 0u);
}

TEST_F(StoreTest, PullChecksEveryRedirectHop) {
  Store store(root_);
  RangeServer a, b;
  b.Put("/real.gguf", {model_bytes_});
  RangeServer::File hop;
  hop.redirect = b.Url("/real.gguf");
  a.Put("/tiny.gguf", hop);
  {
    ScopedEnv allow("HEARTH_PULL_ALLOW", a.HostPort());
    EngineError e = CatchEngineError([&] { Pull(store, Quick(a.Url("/tiny.gguf"))); });
    EXPECT_EQ(e.kind(), ErrorKind::kDenied);
    EXPECT_NE(std::string(e.what()).find("redirect target"), std::string::npos) << e.what();
    EXPECT_EQ(b.connections(), 0);
  }
  ScopedEnv allow("HEARTH_PULL_ALLOW", a.HostPort() + "," + b.HostPort());
  PullOptions o = Quick(a.Url("/tiny.gguf"));
  o.name = "tiny";
  EXPECT_EQ(Pull(store, o).model.digest, model_digest_);
  EXPECT_EQ(b.connections(), 1);
}

TEST_F(StoreTest, PullFromAMirror) {
  // The mirror is another store's directory served over HTTP.
  const std::string mirror_root = root_ + "-mirror";
  Store mirror(mirror_root);
  mirror.Import(model_, "tiny-src");
  Manifest src = mirror.Create("coder:1b", ParseModelfile("FROM tiny-src\nPARAMETER num_ctx 1024\nSYSTEM hello\n"), "");
  RangeServer server;
  for (const std::string& rel : FilesUnder(mirror_root)) {
    if (rel.rfind("manifests/", 0) == 0 || rel.rfind("blobs/", 0) == 0) {
      RangeServer::File f{ReadFile(mirror_root + "/" + rel)};
      if (rel.rfind("blobs/", 0) == 0) {
        f.drop_after = 1 << 20;
        f.drops = 1;
      }
      server.Put("/hearth/" + rel, f);
    }
  }
  Store store(root_);
  ScopedEnv mirror_env("HEARTH_PULL_MIRROR", server.Url("/hearth/"));  // its host is allowed implicitly
  std::vector<std::string> statuses;
  Manifest m = Pull(store, Quick("coder:1b"), [&](const Progress& p) {
    if (statuses.empty() || statuses.back() != p.status) statuses.push_back(p.status);
    return true;
  });
  EXPECT_EQ(m.name, "coder:1b");
  EXPECT_EQ(m.model.digest, model_digest_);
  EXPECT_EQ(m.parameters.num_ctx, 1024);
  EXPECT_EQ(*m.system, "hello");
  EXPECT_EQ(m.source, "mirror:" + server.Url("/hearth") + "/coder:1b");
  ASSERT_GE(statuses.size(), 3u);
  EXPECT_EQ(statuses.front(), "pulling manifest");
  // again, under another name: the blob is already there, only the manifest is fetched
  const size_t before = server.requests().size();
  PullOptions o = Quick("coder:1b");
  o.name = "coder:local";
  Pull(store, o);
  EXPECT_EQ(server.requests().size(), before + 1);
  // a name not on the mirror
  EXPECT_EQ(CatchEngineError([&] { Pull(store, Quick("nothing:here")); }).kind(), ErrorKind::kNotFound);
  // a mirror name must be a valid name (it becomes part of a URL)
  EXPECT_EQ(CatchEngineError([&] { Pull(store, Quick("../../etc/passwd")); }).kind(), ErrorKind::kInvalidRequest);
  ::unsetenv("HEARTH_PULL_MIRROR");
  EXPECT_EQ(CatchEngineError([&] { Pull(store, Quick("coder:1b")); }).kind(), ErrorKind::kInvalidRequest);
}

TEST_F(StoreTest, PullCanBeCancelledAndResumed) {
  Store store(root_);
  RangeServer server;
  RangeServer::File f{model_bytes_};
  f.etag = "\"c\"";
  f.chunk_delay_ms = 30;  // slow enough to cancel mid-body
  server.Put("/tiny.gguf", f);
  ScopedEnv allow("HEARTH_PULL_ALLOW", server.HostPort());
  PullOptions o = Quick(server.Url("/tiny.gguf"));
  o.cancel = std::make_shared<std::atomic<bool>>(false);
  EngineError e = CatchEngineError([&] {
    Pull(store, o, [&](const Progress& p) {
      if (p.completed >= (1u << 20)) o.cancel->store(true);  // like a client that went away
      return true;
    });
  });
  EXPECT_NE(std::string(e.what()).find("cancelled"), std::string::npos) << e.what();
  EXPECT_TRUE(store.List().empty());
  EXPECT_EQ(CountIn(root_ + "/blobs"), 0u);
  o.cancel->store(false);
  server.Put("/tiny.gguf", {model_bytes_, "\"c\""});
  EXPECT_EQ(Pull(store, o).model.digest, model_digest_);
  std::vector<RangeServer::Request> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  ASSERT_EQ(reqs[1].range.rfind("bytes=", 0), 0u);
  const uint64_t resumed_at = std::stoull(reqs[1].range.substr(6));
  EXPECT_GE(resumed_at, 1u << 20);
  EXPECT_LT(resumed_at, model_bytes_.size());
}

TEST_F(StoreTest, PullAcceptsAPartialThatIsAlreadyComplete) {
  Store store(root_);
  RangeServer server;
  server.Put("/tiny.gguf", {model_bytes_, "\"d\""});
  ScopedEnv allow("HEARTH_PULL_ALLOW", server.HostPort());
  PullOptions o = Quick(server.Url("/tiny.gguf"));
  // Finished downloading, then cancelled before it was committed.
  EngineError e = CatchEngineError([&] { Pull(store, o, [](const Progress& p) { return p.status.rfind("verifying", 0) != 0; }); });
  EXPECT_NE(std::string(e.what()).find("cancelled"), std::string::npos) << e.what();
  EXPECT_EQ(Pull(store, o).model.digest, model_digest_);
  std::vector<RangeServer::Request> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].range, "bytes=" + std::to_string(model_bytes_.size()) + "-");  // answered 416: nothing re-sent
}

TEST(StoreNames, NameFromUrl) {
  EXPECT_EQ(NameFromUrl("https://huggingface.co/Qwen/X-GGUF/resolve/main/qwen2.5-coder-1.5b-instruct-q8_0.gguf"),
            "qwen2.5-coder-1.5b-instruct-q8_0");
  EXPECT_EQ(NameFromUrl("https://h/a/..model+v2.gguf?download=1"), "model-v2");
  EXPECT_EQ(NameFromUrl("https://h/"), "");
}

// ---------------------------------------------------------------------------------------
// HTTP routes

TEST_F(StoreTest, ApiPullCreateCopyDelete) {
  Store store(root_);
  hearth::engine::ModelPool pool(hearth::engine::ModelPoolOptions{});
  hearth::api::RouteTable routes;
  hearth::api::AddStoreRoutes(routes, store, &pool);
  RangeServer server;
  server.Put("/tiny.gguf", {model_bytes_});
  ScopedEnv allow("HEARTH_PULL_ALLOW", server.HostPort());

  FakeResponder pull = Call(routes, "POST", "/api/pull", {{"model", server.Url("/tiny.gguf")}, {"save_as", "tiny"}});
  EXPECT_EQ(pull.status, 200);
  EXPECT_TRUE(pull.streamed && pull.ended);
  std::vector<nlohmann::json> lines = pull.Lines();
  ASSERT_GE(lines.size(), 3u);
  EXPECT_EQ(lines.back(), nlohmann::json({{"status", "success"}}));
  bool progress = false;
  for (const auto& l : lines) progress |= l.contains("total") && l.contains("completed") && l["status"].get<std::string>().rfind("pulling", 0) == 0;
  EXPECT_TRUE(progress) << pull.body;
  EXPECT_EQ(pool.Find("tiny").path, store.BlobPath(model_digest_)) << "servable without a restart";

  FakeResponder create = Call(routes, "POST", "/api/create",
                              {{"model", "tiny-coder"}, {"from", "tiny"}, {"parameters", {{"num_ctx", 2048}, {"stop", {"<|x|>"}}}},
                               {"system", "be brief"}, {"template", "{{ .Prompt }}"}, {"stream", false}});
  EXPECT_EQ(create.status, 200) << create.body;
  EXPECT_EQ(nlohmann::json::parse(create.body), nlohmann::json({{"status", "success"}}));
  Manifest m = store.Get("tiny-coder");
  EXPECT_EQ(m.parameters.num_ctx, 2048);
  EXPECT_EQ(*m.system, "be brief");
  EXPECT_NO_THROW(pool.Find("tiny-coder"));

  // an older client's "modelfile" string
  FakeResponder legacy = Call(routes, "POST", "/api/create",
                              {{"name", "tiny-legacy"}, {"modelfile", "FROM tiny\nPARAMETER temperature 0.1\n"}});
  EXPECT_EQ(legacy.status, 200) << legacy.body;
  EXPECT_DOUBLE_EQ(*store.Get("tiny-legacy").parameters.temperature, 0.1);
  // "files" naming a blob that is in the store
  FakeResponder files = Call(routes, "POST", "/api/create",
                             {{"model", "tiny-files"}, {"files", {{"model.gguf", model_digest_}}}, {"stream", false}});
  EXPECT_EQ(files.status, 200) << files.body;

  // errors before streaming are plain error responses
  FakeResponder bad = Call(routes, "POST", "/api/create", {{"model", "../x"}, {"from", "tiny"}});
  EXPECT_EQ(bad.status, 400);
  FakeResponder badp = Call(routes, "POST", "/api/create", {{"model", "x"}, {"from", "tiny"}, {"parameters", {{"mirostat", 1}}}});
  EXPECT_EQ(badp.status, 400);
  EXPECT_NE(badp.body.find("mirostat"), std::string::npos);
  FakeResponder path = Call(routes, "POST", "/api/create", {{"model", "x"}, {"from", model_}, {"stream", false}});
  EXPECT_EQ(path.status, 400) << "the API never reads server paths";
  FakeResponder badmf = Call(routes, "POST", "/api/create", {{"model", "x"}, {"modelfile", "FROM tiny\nPARAMETER nope 1\n"}});
  EXPECT_EQ(badmf.status, 400);
  EXPECT_NE(badmf.body.find("line 2"), std::string::npos);
  FakeResponder denied = Call(routes, "POST", "/api/pull", {{"model", "https://elsewhere.example/x.gguf"}});
  EXPECT_EQ(denied.status, 403) << denied.body;

  FakeResponder copy = Call(routes, "POST", "/api/copy", {{"source", "tiny-coder"}, {"destination", "tiny-coder:v2"}});
  EXPECT_EQ(copy.status, 200) << copy.body;
  EXPECT_EQ(store.Get("tiny-coder:v2").parameters.num_ctx, 2048);
  EXPECT_NO_THROW(pool.Find("tiny-coder:v2"));
  EXPECT_EQ(Call(routes, "POST", "/api/copy", {{"source", "nope"}, {"destination", "x"}}).status, 404);

  FakeResponder del = Call(routes, "DELETE", "/api/delete", {{"model", "tiny-coder:v2"}});
  EXPECT_EQ(del.status, 200) << del.body;
  EXPECT_FALSE(store.Find("tiny-coder:v2"));
  EXPECT_EQ(Call(routes, "DELETE", "/api/delete", {{"model", "tiny-coder:v2"}}).status, 404);
  EXPECT_EQ(Call(routes, "DELETE", "/api/delete", {{"name", "../../etc"}}).status, 400);
}

TEST_F(StoreTest, ApiPullErrorMidStreamIsAnErrorLine) {
  Store store(root_);
  hearth::api::RouteTable routes;
  hearth::api::AddStoreRoutes(routes, store, nullptr);
  RangeServer server;
  server.Put("/tiny.gguf", {model_bytes_});
  ScopedEnv allow("HEARTH_PULL_ALLOW", server.HostPort());
  FakeResponder r = Call(routes, "POST", "/api/pull", {{"model", server.Url("/tiny.gguf")}, {"sha256", std::string(64, 'c')}});
  EXPECT_EQ(r.status, 200);  // the stream had begun
  std::vector<nlohmann::json> lines = r.Lines();
  ASSERT_FALSE(lines.empty());
  ASSERT_TRUE(lines.back().contains("error")) << r.body;
  EXPECT_NE(lines.back()["error"].get<std::string>().find("sha256 mismatch"), std::string::npos);
  EXPECT_TRUE(store.List().empty());
  // non-streaming: an ordinary error response
  FakeResponder r2 = Call(routes, "POST", "/api/pull",
                          {{"model", server.Url("/tiny.gguf")}, {"sha256", std::string(64, 'c')}, {"stream", false}});
  EXPECT_EQ(r2.status, 500);
  EXPECT_NE(r2.body.find("sha256 mismatch"), std::string::npos);
}

// Over real HTTP: the store routes are not public, so a configured API key is required.
TEST_F(StoreTest, ApiRoutesNeedTheApiKeyWhenOneIsSet) {
  Store store(root_);
  store.Import(model_, "tiny");
  hearth::api::RouteTable routes;
  hearth::api::AddStoreRoutes(routes, store, nullptr);
  hearth::api::HttpServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.api_key = "sekret";
  hearth::api::HttpServer http(options, [&](const hearth::api::HttpRequest& req, hearth::api::Responder& out) {
    auto it = routes.find({req.method, req.path});
    if (it == routes.end()) {
      out.Respond({404, {}, "{}"});
      return;
    }
    it->second(req, out);
  });
  http.Start();
  auto send = [&](const std::string& method, const std::string& path, const std::string& body, const std::string& key) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(http.port());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" +
                      (key.empty() ? "" : "Authorization: Bearer " + key + "\r\n") +
                      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    std::string resp;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) resp.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return resp;
  };
  for (const auto& [method, path, body] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"POST", "/api/pull", R"({"model":"https://example.com/x.gguf"})"},
           {"POST", "/api/create", R"({"model":"x","from":"tiny"})"},
           {"DELETE", "/api/delete", R"({"model":"tiny"})"},
           {"POST", "/api/copy", R"({"source":"tiny","destination":"y"})"}}) {
    SCOPED_TRACE(path);
    EXPECT_EQ(send(method, path, body, "").rfind("HTTP/1.1 401", 0), 0u);
    EXPECT_EQ(send(method, path, body, "wrong").rfind("HTTP/1.1 401", 0), 0u);
  }
  EXPECT_EQ(store.List().size(), 1u) << "nothing changed without the key";
  std::string created = send("POST", "/api/create", R"({"model":"x","from":"tiny"})", "sekret");
  EXPECT_EQ(created.rfind("HTTP/1.1 200", 0), 0u) << created;
  EXPECT_NE(created.find("\"status\":\"success\""), std::string::npos) << created;
  EXPECT_NE(created.find("application/x-ndjson"), std::string::npos) << created;
  EXPECT_EQ(send("DELETE", "/api/delete", R"({"model":"x"})", "sekret").rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(store.List().size(), 1u);
  http.Stop();
}
