#include "store/pull.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/error.h"
#include "engine/gguf_check.h"
#include "net/curl_url.h"

namespace hearth::store {

namespace fs = std::filesystem;
using engine::EngineError;
using engine::ErrorKind;
using json = nlohmann::json;

namespace {

constexpr int kMaxRedirects = 10;
constexpr size_t kMaxManifestBody = 1u << 20;
constexpr size_t kMaxErrorBody = 4096;
constexpr auto kProgressInterval = std::chrono::milliseconds(200);

std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 200)) out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  if (s.size() > 200) out += "...";
  return out;
}

[[noreturn]] void IoError(const std::string& what, int err = errno) {
  throw EngineError(ErrorKind::kInternal, what + ": " + std::strerror(err));
}

using net::Lower;
using net::ParsedUrl;
using net::Trim;

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

bool HostAllowed(const PullConfig& config, const ParsedUrl& p) {
  if (!p.ok) return false;
  for (const std::string& a : config.allow) {
    if (a == p.host || a == p.host_port) return true;
  }
  if (!config.mirror.empty()) {
    ParsedUrl m = net::ParseUrl(config.mirror);
    if (m.ok && m.host_port == p.host_port) return true;
  }
  return false;
}

bool IsMirrorUrl(const PullConfig& config, const ParsedUrl& p) {
  if (config.mirror.empty()) return false;
  ParsedUrl m = net::ParseUrl(config.mirror);
  return m.ok && m.scheme == p.scheme && m.host_port == p.host_port;
}

std::string AllowlistHint(const Store& store) {
  return "add it to HEARTH_PULL_ALLOW (comma-separated host or host:port) or to \"pull_allow\" in " +
         store.ConfigPath();
}

// Refuses (kDenied) a URL that is not allowed, before anything connects to it.
void CheckUrl(const Store& store, const PullConfig& config, const ParsedUrl& p, bool insecure, const std::string& what) {
  if (!p.ok) {
    throw EngineError(ErrorKind::kInvalidRequest, what + " '" + Printable(p.url) + "' is not an http(s) URL with a host");
  }
  if (!HostAllowed(config, p)) {
    throw EngineError(ErrorKind::kDenied, "pull refused: " + p.host_port + " (" + what +
                                              ") is not on the pull allowlist" +
                                              (config.allow.empty() && config.mirror.empty() ? " (the allowlist is empty)" : "") +
                                              "; nothing was fetched. To allow it, " + AllowlistHint(store));
  }
  if (p.scheme == "http" && !insecure && !IsLoopback(p.host) && !IsMirrorUrl(config, p)) {
    throw EngineError(ErrorKind::kDenied, "pull refused: " + p.display + " (" + what +
                                              ") is plain http; use https, or pass --insecure (\"insecure\": true) to allow it");
  }
}

std::vector<unsigned char> Base64Decode(const std::string& text) {
  std::vector<unsigned char> out(text.size() / 4 * 3 + 3);
  int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return {};
  size_t len = static_cast<size_t>(n);
  if (!text.empty() && text.back() == '=') --len;
  if (text.size() > 1 && text[text.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

// A sha256 a server states about the body: Hugging Face's X-Linked-Etag (the LFS object's
// sha256) or RFC 3230 "Digest: sha-256=<base64>" / RFC 9530 "Repr-Digest: sha-256=:<b64>:".
std::string DigestFromHeader(const std::string& key, const std::string& value) {
  if (key == "x-linked-etag") {
    std::string v = value;
    if (v.rfind("W/", 0) == 0) return {};
    v.erase(std::remove(v.begin(), v.end(), '"'), v.end());
    return NormalizeDigest(v);
  }
  if (key == "digest" || key == "repr-digest") {
    std::stringstream ss(value);
    std::string item;
    while (std::getline(ss, item, ',')) {
      item = Trim(item);
      if (Lower(item).rfind("sha-256=", 0) != 0) continue;
      std::string b64 = item.substr(8);
      b64.erase(std::remove(b64.begin(), b64.end(), ':'), b64.end());
      std::vector<unsigned char> raw = Base64Decode(b64);
      if (raw.size() != 32) return {};
      static const char* hex = "0123456789abcdef";
      std::string h;
      for (unsigned char c : raw) {
        h += hex[c >> 4];
        h += hex[c & 15];
      }
      return "sha256:" + h;
    }
  }
  return {};
}

struct Expectation {
  std::string digest;  // sha256:hex
  std::string from;    // "--sha256", "the mirror manifest", "the server's X-Linked-Etag header"
};

// One HTTP response's head.
struct ResponseHead {
  long status = 0;
  std::string etag, last_modified, content_range;
  int64_t content_length = -1;
  std::vector<Expectation> digests;
  void Reset() { *this = ResponseHead(); }
};

enum class Mode { kUndecided, kWrite, kMemory, kDiscard, kAbort };

// State of one transfer attempt, shared with the libcurl callbacks.
struct Attempt {
  CURL* easy = nullptr;
  ResponseHead head;
  Mode mode = Mode::kUndecided;
  std::function<Mode(const ResponseHead&)> decide;  // called once, at the first body byte or at the end
  std::function<void(const char*, size_t)> sink;    // kWrite
  std::string memory;                               // kMemory (and error bodies)
  size_t memory_limit = kMaxErrorBody;
  bool memory_overflow = false;
  std::exception_ptr error;
  const std::atomic<bool>* cancel = nullptr;
  std::function<void()> on_tick;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* a = static_cast<Attempt*>(user);
  const std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    a->head.Reset();
    return size * n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  const std::string key = Lower(Trim(line.substr(0, colon)));
  const std::string value = Trim(line.substr(colon + 1));
  if (key == "etag") {
    a->head.etag = value;
  } else if (key == "last-modified") {
    a->head.last_modified = value;
  } else if (key == "content-range") {
    a->head.content_range = value;
  } else if (key == "content-length") {
    char* end = nullptr;
    long long v = std::strtoll(value.c_str(), &end, 10);
    if (end != value.c_str() && v >= 0) a->head.content_length = v;
  } else if (std::string d = DigestFromHeader(key, value); !d.empty()) {
    a->head.digests.push_back({d, "the server's " + Trim(line.substr(0, colon)) + " header"});
  }
  return size * n;
}

void Decide(Attempt* a) {
  if (a->mode != Mode::kUndecided) return;
  curl_easy_getinfo(a->easy, CURLINFO_RESPONSE_CODE, &a->head.status);
  a->mode = a->decide(a->head);
}

size_t OnWrite(char* data, size_t size, size_t n, void* user) {
  auto* a = static_cast<Attempt*>(user);
  const size_t len = size * n;
  try {
    Decide(a);
    switch (a->mode) {
      case Mode::kWrite:
        a->sink(data, len);
        break;
      case Mode::kMemory:
      case Mode::kDiscard:
        if (a->memory.size() + len > a->memory_limit) {
          a->memory.append(data, a->memory_limit - a->memory.size());
          a->memory_overflow = true;
          if (a->mode == Mode::kMemory) return 0;
        } else {
          a->memory.append(data, len);
        }
        break;
      case Mode::kAbort:
        return 0;
      case Mode::kUndecided:
        break;
    }
  } catch (...) {
    a->error = std::current_exception();
    return 0;  // aborts the transfer; never unwind through libcurl
  }
  return len;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* a = static_cast<Attempt*>(user);
  if (a->on_tick) {
    try {
      a->on_tick();
    } catch (...) {
      a->error = std::current_exception();
      return 1;
    }
  }
  return (a->cancel != nullptr && a->cancel->load()) ? 1 : 0;
}

struct AttemptResult {
  CURLcode code = CURLE_OK;
  std::string error;          // libcurl's message when code != OK
  std::string redirect;       // Location of a 3xx, resolved against the URL
};

// One GET of one URL (no redirects followed). Headers: extra request headers.
AttemptResult Perform(Attempt& a, ParsedUrl& url, const std::vector<std::string>& headers, const PullOptions& o) {
  net::CurlGlobalInit();
  CURL* easy = curl_easy_init();
  if (easy == nullptr) throw EngineError(ErrorKind::kInternal, "curl_easy_init failed");
  a.easy = easy;
  curl_slist* list = nullptr;
  for (const std::string& h : headers) list = curl_slist_append(list, h.c_str());
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(easy, CURLOPT_CURLU, url.handle.get());
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);  // every hop is checked against the allowlist
  if (IsLoopback(url.host)) curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");  // this machine: never via a proxy
  curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, "hearth-pull");
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::max(1, o.connect_timeout_ms)));
  curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, static_cast<long>(std::max(1, o.stall_timeout_ms / 1000)));
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &a);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &a);
  curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &a);
  AttemptResult r;
  r.code = curl_easy_perform(easy);
  if (r.code == CURLE_OK) {
    try {
      Decide(&a);  // an empty body never reached OnWrite
    } catch (...) {
      a.error = std::current_exception();
    }
  }
  if (r.code != CURLE_OK) r.error = errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(r.code));
  if (a.head.status >= 300 && a.head.status < 400) {
    char* location = nullptr;
    if (curl_easy_getinfo(easy, CURLINFO_REDIRECT_URL, &location) == CURLE_OK && location != nullptr) r.redirect = location;
  }
  curl_slist_free_all(list);
  curl_easy_cleanup(easy);
  a.easy = nullptr;
  if (a.error) std::rethrow_exception(a.error);
  return r;
}

bool Retryable(CURLcode code) {
  switch (code) {
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

void SleepUnlessCancelled(std::chrono::milliseconds d, const PullOptions& o) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
    if (o.cancel && o.cancel->load()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

[[noreturn]] void HttpFailure(long status, const std::string& display, const std::string& body) {
  std::string snippet = Printable(Trim(body.substr(0, 300)));
  std::string msg = "HTTP " + std::to_string(status) + " from " + display + (snippet.empty() ? "" : ": " + snippet);
  if (status == 404 || status == 410) throw EngineError(ErrorKind::kNotFound, "not found: " + msg);
  if (status == 401 || status == 403) throw EngineError(ErrorKind::kDenied, msg);
  throw EngineError(ErrorKind::kInternal, msg);
}

// GETs a small document (a mirror manifest) into memory, following allowed redirects.
std::string FetchSmall(const Store& store, const PullConfig& config, const PullOptions& o, const std::string& start_url) {
  std::string url = start_url;
  for (int hop = 0, attempt = 1;; ) {
    ParsedUrl p = net::ParseUrl(url);
    CheckUrl(store, config, p, o.insecure, hop == 0 ? "source" : "redirect target");
    Attempt a;
    a.cancel = o.cancel.get();
    a.decide = [](const ResponseHead& h) { return h.status == 200 ? Mode::kMemory : Mode::kDiscard; };
    a.memory_limit = kMaxManifestBody;
    AttemptResult r = Perform(a, p, {}, o);
    if (o.cancel && o.cancel->load()) throw EngineError(ErrorKind::kInternal, "cancelled");
    if (!r.redirect.empty()) {
      if (++hop > kMaxRedirects) throw EngineError(ErrorKind::kInternal, "too many redirects from " + net::ParseUrl(start_url).display);
      url = r.redirect;
      continue;
    }
    if (a.memory_overflow) throw EngineError(ErrorKind::kInvalidModel, p.display + " is larger than 1 MiB: not a manifest");
    if (r.code != CURLE_OK) {
      if (Retryable(r.code) && attempt < o.max_attempts) {
        SleepUnlessCancelled(std::chrono::milliseconds(250 * attempt++), o);
        continue;
      }
      throw EngineError(ErrorKind::kInternal, "cannot fetch " + p.display + ": " + r.error);
    }
    if (a.head.status != 200) {
      if (a.head.status >= 500 && attempt < o.max_attempts) {
        SleepUnlessCancelled(std::chrono::milliseconds(250 * attempt++), o);
        continue;
      }
      HttpFailure(a.head.status, p.display, a.memory);
    }
    return a.memory;
  }
}

// A download in <store>/partial, locked against a concurrent pull of the same thing.
class PartialFile {
 public:
  PartialFile(const std::string& dir, const std::string& key) {
    path_ = dir + "/" + key + ".partial";
    meta_path_ = dir + "/" + key + ".json";
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) IoError("cannot open " + path_);
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      fd_ = -1;
      throw EngineError(ErrorKind::kOverloaded, "another pull of the same model is in progress (" + path_ + " is locked)");
    }
  }
  ~PartialFile() {
    struct stat st {};
    const bool empty = fd_ >= 0 && ::fstat(fd_, &st) == 0 && st.st_size == 0;
    if (fd_ >= 0) ::close(fd_);
    if (discard_ || empty) {  // nothing worth resuming (e.g. the source answered 404)
      ::unlink(path_.c_str());
      ::unlink(meta_path_.c_str());
    }
  }
  PartialFile(const PartialFile&) = delete;
  PartialFile& operator=(const PartialFile&) = delete;

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  uint64_t Size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) IoError("cannot stat " + path_);
    return static_cast<uint64_t>(st.st_size);
  }
  void Truncate() {
    if (::ftruncate(fd_, 0) != 0) IoError("cannot truncate " + path_);
    if (::lseek(fd_, 0, SEEK_SET) != 0) IoError("cannot seek " + path_);
    ::unlink(meta_path_.c_str());
  }
  void Append(const char* data, size_t size) {
    while (size > 0) {
      ssize_t n = ::write(fd_, data, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        IoError("cannot write " + path_);
      }
      data += n;
      size -= static_cast<size_t>(n);
    }
  }
  json ReadMeta() const {
    std::ifstream in(meta_path_);
    if (!in) return json::object();
    try {
      json j = json::parse(in);
      return j.is_object() ? j : json::object();
    } catch (const json::exception&) {
      return json::object();
    }
  }
  void WriteMeta(const json& j) { AtomicWriteFile(meta_path_, j.dump()); }
  void Sync() {
    if (::fsync(fd_) != 0) IoError("cannot fsync " + path_);
  }
  // After the file was renamed into blobs/: only the metadata remains to delete.
  void Committed() {
    ::unlink(meta_path_.c_str());
    discard_ = false;
  }
  void DiscardOnClose() { discard_ = true; }

 private:
  std::string path_, meta_path_;
  int fd_ = -1;
  bool discard_ = false;
};

std::string StrongValidator(const ResponseHead& h) {
  if (!h.etag.empty() && h.etag.rfind("W/", 0) != 0) return h.etag;
  return h.last_modified;
}

std::string HumanBytes(uint64_t n) {
  char buf[32];
  if (n >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(n) / (1ull << 30));
  else if (n >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / (1ull << 20));
  else std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(n));
  return buf;
}

struct Downloaded {
  std::string digest;
  uint64_t size = 0;
};

// Downloads url into the partial file (resuming), verifies, checks the GGUF. On success the
// file is complete and fsynced at partial.path().
Downloaded Download(const Store& store, const PullConfig& config, const PullOptions& o, const std::string& source_url,
                    std::vector<Expectation> expected, std::optional<uint64_t> expected_size, PartialFile& partial,
                    const std::string& label, const ProgressFn& progress) {
  const std::string display = net::ParseUrl(source_url).display;
  json meta = partial.ReadMeta();
  uint64_t offset = partial.Size();
  // Resume only what can be proven to be the same file: a known digest, or a validator
  // (ETag / Last-Modified) for If-Range.
  const bool same_source = meta.value("url", std::string()) == source_url;
  std::string validator = same_source ? meta.value("validator", std::string()) : std::string();
  if (offset > 0 && expected.empty() && validator.empty()) {
    partial.Truncate();
    offset = 0;
  }
  if (expected_size && offset > *expected_size) {
    partial.Truncate();
    offset = 0;
  }
  std::unique_ptr<Sha256> hash = std::make_unique<Sha256>();
  if (offset > 0) {  // hash what is already there
    std::vector<char> buf(4u << 20);
    uint64_t done = 0;
    while (done < offset) {
      ssize_t n = ::pread(partial.fd(), buf.data(), static_cast<size_t>(std::min<uint64_t>(buf.size(), offset - done)),
                          static_cast<off_t>(done));
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        IoError("cannot read " + partial.path());
      }
      hash->Update(buf.data(), static_cast<size_t>(n));
      done += static_cast<uint64_t>(n);
    }
  }
  if (::lseek(partial.fd(), 0, SEEK_END) < 0) IoError("cannot seek " + partial.path());

  uint64_t total = expected_size.value_or(meta.value("total", uint64_t{0}));
  auto last_emit = std::chrono::steady_clock::now() - kProgressInterval;
  auto emit = [&](bool force) {
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last_emit < kProgressInterval) return;
    last_emit = now;
    if (progress && !progress({label, expected.empty() ? "" : expected.front().digest, total, offset})) {
      if (o.cancel) o.cancel->store(true);
      throw EngineError(ErrorKind::kInternal, "cancelled");
    }
  };
  emit(true);

  std::string url = source_url;
  int attempt = 1, hops = 0;
  bool complete = false;
  std::string last_error;
  while (!complete) {
    ParsedUrl p = net::ParseUrl(url);
    CheckUrl(store, config, p, o.insecure, hops == 0 ? "source" : "redirect target");
    if (o.cancel && o.cancel->load()) break;
    std::vector<std::string> headers;
    if (offset > 0) {
      headers.push_back("Range: bytes=" + std::to_string(offset) + "-");
      if (!validator.empty()) headers.push_back("If-Range: " + validator);
    }
    Attempt a;
    a.cancel = o.cancel.get();
    bool bad_range = false;
    a.decide = [&](const ResponseHead& h) {
      if (h.status >= 300 && h.status < 400) return Mode::kDiscard;
      if (h.status == 200) {
        if (offset > 0) {  // the server ignored Range (or the file changed): start over
          partial.Truncate();
          offset = 0;
          hash = std::make_unique<Sha256>();
        }
        if (h.content_length >= 0) total = static_cast<uint64_t>(h.content_length);
      } else if (h.status == 206) {
        unsigned long long first = 0, last = 0, all = 0;
        if (std::sscanf(h.content_range.c_str(), "bytes %llu-%llu/%llu", &first, &last, &all) != 3 || first != offset) {
          bad_range = true;  // not the bytes asked for: start over on the next attempt
          return Mode::kAbort;
        }
        total = all;
      } else {
        return Mode::kDiscard;
      }
      if (expected_size && total != 0 && total != *expected_size) {
        throw EngineError(ErrorKind::kInvalidModel, display + " is " + std::to_string(total) + " bytes, the manifest says " +
                                                        std::to_string(*expected_size));
      }
      for (const Expectation& e : h.digests) {
        if (std::none_of(expected.begin(), expected.end(), [&](const Expectation& x) { return x.digest == e.digest && x.from == e.from; })) {
          expected.push_back(e);
        }
      }
      std::string v = StrongValidator(h);
      if (!v.empty() || offset == 0) {
        validator = v;
        partial.WriteMeta({{"url", source_url}, {"validator", validator}, {"total", total}});
      }
      if (total > offset) {
        std::error_code ec;
        fs::space_info space = fs::space(store.PartialDir(), ec);
        if (!ec && space.available < total - offset + (64u << 20)) {
          throw EngineError(ErrorKind::kInternal, "not enough disk space to pull " + display + ": need " +
                                                      HumanBytes(total - offset) + ", " + HumanBytes(space.available) +
                                                      " available in " + store.PartialDir());
        }
      }
      return Mode::kWrite;
    };
    a.sink = [&](const char* data, size_t size) {
      partial.Append(data, size);
      hash->Update(data, size);
      offset += size;
      emit(false);
    };
    a.on_tick = [&] { emit(false); };
    AttemptResult r = Perform(a, p, headers, o);
    if (o.cancel && o.cancel->load()) break;
    if (!r.redirect.empty()) {
      if (++hops > kMaxRedirects) throw EngineError(ErrorKind::kInternal, "too many redirects from " + display);
      url = r.redirect;
      continue;
    }
    const long status = a.head.status;
    if (bad_range) {
      last_error = "the server answered the resume request with Content-Range '" + Printable(a.head.content_range) +
                   "' instead of bytes " + std::to_string(offset) + "-";
      partial.Truncate();  // start over cleanly
      offset = 0;
      hash = std::make_unique<Sha256>();
    } else if (r.code == CURLE_OK && (status == 200 || status == 206)) {
      if (total == 0 || offset == total) {
        complete = true;
        break;
      }
      last_error = "the connection ended after " + std::to_string(offset) + " of " + std::to_string(total) + " bytes";
    } else if (r.code == CURLE_OK && status == 416) {
      unsigned long long all = 0;
      if (offset > 0 && std::sscanf(a.head.content_range.c_str(), "bytes */%llu", &all) == 1 && all == offset) {
        total = offset;  // the kept partial file already is the whole file
        complete = true;
        break;
      }
      last_error = "HTTP 416 for the resume range";
      partial.Truncate();  // the partial file does not fit the remote file: start over
      offset = 0;
      hash = std::make_unique<Sha256>();
    } else if (r.code == CURLE_OK) {
      if (status < 500 && status != 408 && status != 429) HttpFailure(status, display, a.memory);
      last_error = "HTTP " + std::to_string(status);
    } else if (!Retryable(r.code)) {
      throw EngineError(ErrorKind::kInternal, "cannot download " + display + ": " + r.error);
    } else {
      last_error = r.error;
    }
    if (attempt >= o.max_attempts) {
      partial.Sync();
      throw EngineError(ErrorKind::kInternal,
                        "download of " + display + " failed after " + std::to_string(attempt) + " attempt(s): " +
                            last_error + "; " + std::to_string(offset) + " bytes are kept in " + partial.path() +
                            " and the next pull of the same source resumes from there");
    }
    SleepUnlessCancelled(std::chrono::milliseconds(std::min(250 * attempt, 2000)), o);
    ++attempt;
    url = source_url;  // redirect targets (signed URLs) may expire: start from the source again
    hops = 0;
  }
  if (!complete) {  // cancelled
    partial.Sync();
    throw EngineError(ErrorKind::kInternal, "cancelled; " + std::to_string(offset) + " bytes are kept in " + partial.path() +
                                                " for the next pull to resume");
  }
  partial.Sync();
  emit(true);
  Downloaded d;
  d.digest = "sha256:" + hash->HexDigest();
  d.size = offset;
  if (progress && !progress({"verifying sha256 digest", d.digest, 0, 0})) throw EngineError(ErrorKind::kInternal, "cancelled");
  for (const Expectation& e : expected) {
    if (e.digest != d.digest) {
      partial.DiscardOnClose();
      throw EngineError(ErrorKind::kInvalidModel, "sha256 mismatch for " + display + ": " + e.from + " says " + e.digest +
                                                      ", the download hashes to " + d.digest +
                                                      "; the download was discarded and nothing was stored");
    }
  }
  if (expected_size && d.size != *expected_size) {
    partial.DiscardOnClose();
    throw EngineError(ErrorKind::kInvalidModel, "size mismatch for " + display + ": expected " +
                                                    std::to_string(*expected_size) + " bytes, got " + std::to_string(d.size));
  }
  try {
    engine::CheckGgufFile(partial.path());
  } catch (const EngineError& e) {
    partial.DiscardOnClose();
    throw EngineError(ErrorKind::kInvalidModel, "the file at " + display + " is not a valid GGUF model (" + e.what() +
                                                    "); it was discarded");
  }
  return d;
}

std::string PartialKey(const std::string& url, const std::vector<Expectation>& expected) {
  if (!expected.empty()) return "sha256-" + expected.front().digest.substr(7);
  Sha256 h;
  h.Update(url.data(), url.size());
  return "url-" + h.HexDigest().substr(0, 32);
}

}  // namespace

PullConfig LoadPullConfig(const Store& store) {
  PullConfig c;
  json file = json::object();
  std::error_code ec;
  if (fs::is_regular_file(store.ConfigPath(), ec)) {
    std::ifstream in(store.ConfigPath());
    try {
      file = json::parse(in);
    } catch (const json::exception& e) {
      throw EngineError(ErrorKind::kInvalidRequest, store.ConfigPath() + " is not valid JSON: " + e.what());
    }
    if (!file.is_object()) throw EngineError(ErrorKind::kInvalidRequest, store.ConfigPath() + " must be a JSON object");
  }
  std::vector<std::string> raw;
  if (const char* env = std::getenv("HEARTH_PULL_ALLOW"); env != nullptr && *env != '\0') {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ',')) raw.push_back(item);
  } else if (auto it = file.find("pull_allow"); it != file.end() && !it->is_null()) {
    if (!it->is_array()) throw EngineError(ErrorKind::kInvalidRequest, store.ConfigPath() + ": pull_allow must be an array of host names");
    for (const json& h : *it) {
      if (!h.is_string()) throw EngineError(ErrorKind::kInvalidRequest, store.ConfigPath() + ": pull_allow must be an array of host names");
      raw.push_back(h.get<std::string>());
    }
  }
  for (const std::string& r : raw) {
    std::string h = Lower(Trim(r));
    if (h.empty()) continue;
    if (h.find('*') != std::string::npos) {
      throw EngineError(ErrorKind::kInvalidRequest, "pull allowlist: wildcards are not allowed ('" + Printable(r) +
                                                        "'); list exact host names or host:port");
    }
    if (h.find("://") != std::string::npos || h.find_first_of("/@?# \t") != std::string::npos) {
      throw EngineError(ErrorKind::kInvalidRequest, "pull allowlist: '" + Printable(r) + "' is not a host name or host:port");
    }
    c.allow.push_back(h);
  }
  if (const char* env = std::getenv("HEARTH_PULL_MIRROR"); env != nullptr && *env != '\0') {
    c.mirror = env;
  } else if (auto it = file.find("mirror"); it != file.end() && !it->is_null()) {
    if (!it->is_string()) throw EngineError(ErrorKind::kInvalidRequest, store.ConfigPath() + ": mirror must be a URL string");
    c.mirror = it->get<std::string>();
  }
  c.mirror = Trim(c.mirror);
  while (!c.mirror.empty() && c.mirror.back() == '/') c.mirror.pop_back();
  if (!c.mirror.empty()) {
    net::CurlGlobalInit();
    if (!net::ParseUrl(c.mirror).ok) throw EngineError(ErrorKind::kInvalidRequest, "pull mirror '" + Printable(c.mirror) + "' is not an http(s) URL");
  }
  return c;
}

bool PullUrlAllowed(const PullConfig& config, const std::string& url) {
  net::CurlGlobalInit();
  return HostAllowed(config, net::ParseUrl(url));
}

std::string NameFromUrl(const std::string& url) {
  net::CurlGlobalInit();
  ParsedUrl p = net::ParseUrl(url);
  std::string path = p.ok ? net::GetUrlPart(p.handle.get(), CURLUPART_PATH) : url;
  std::string file = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  if (file.size() > 5 && Lower(file.substr(file.size() - 5)) == ".gguf") file.resize(file.size() - 5);
  std::string out;
  for (char c : file) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    if (c == '.' && !out.empty() && out.back() == '.') continue;  // no ".."
    out += ok ? c : '-';
  }
  while (!out.empty() && (out.front() == '.' || out.front() == '-')) out.erase(out.begin());
  if (out.size() > 128) out.resize(128);
  return Store::NameProblem(out).empty() ? out : std::string();
}

Manifest Pull(Store& store, const PullOptions& options, const ProgressFn& progress) {
  net::CurlGlobalInit();
  const PullConfig config = LoadPullConfig(store);
  const std::string source = Trim(options.source);
  if (source.empty()) throw EngineError(ErrorKind::kInvalidRequest, "nothing to pull: give a URL or a mirror model name");
  std::vector<Expectation> user_expected;
  if (!options.sha256.empty()) {
    std::string d = NormalizeDigest(Trim(options.sha256));
    if (d.empty()) throw EngineError(ErrorKind::kInvalidRequest, "--sha256 '" + Printable(options.sha256) + "' is not 64 hex digits");
    user_expected.push_back({d, "--sha256"});
  }

  if (source.find("://") != std::string::npos) {
    ParsedUrl p = net::ParseUrl(source);
    CheckUrl(store, config, p, options.insecure, "source");  // before anything else touches the network
    std::string name = options.name.empty() ? NameFromUrl(source) : options.name;
    if (name.empty()) {
      throw EngineError(ErrorKind::kInvalidRequest, "cannot derive a model name from " + p.display + "; give one with --name");
    }
    Manifest m;
    m.name = Store::CanonicalName(name);
    m.source = p.display;
    const std::string label = "pulling " + (user_expected.empty() ? fs::path(p.display).filename().string()
                                                                  : user_expected.front().digest.substr(0, 19));
    if (!user_expected.empty() && store.HasBlob(user_expected.front().digest)) {
      uint64_t size = fs::file_size(store.BlobPath(user_expected.front().digest));
      if (progress && !progress({label, user_expected.front().digest, size, size})) throw EngineError(ErrorKind::kInternal, "cancelled");
      m.model = {user_expected.front().digest, size};
      if (progress && !progress({"writing manifest", "", 0, 0})) throw EngineError(ErrorKind::kInternal, "cancelled");
      store.Commit(m);
      return store.Get(m.name);
    }
    PartialFile partial(store.PartialDir(), PartialKey(source, user_expected));
    Downloaded d = Download(store, config, options, source, user_expected, std::nullopt, partial, label, progress);
    m.model = {d.digest, d.size};
    if (progress && !progress({"writing manifest", "", 0, 0})) throw EngineError(ErrorKind::kInternal, "cancelled");
    store.Commit(m, {{partial.path(), d.digest}});
    partial.Committed();
    return store.Get(m.name);
  }

  // A name on the mirror.
  if (config.mirror.empty()) {
    throw EngineError(ErrorKind::kInvalidRequest, "'" + Printable(source) +
                                                      "' is not a URL and no mirror is configured (set HEARTH_PULL_MIRROR or "
                                                      "\"mirror\" in " + store.ConfigPath() + ")");
  }
  const std::string remote = Store::CanonicalName(source);  // validated: it becomes part of a URL
  const std::string local = Store::CanonicalName(options.name.empty() ? remote : options.name);
  const size_t colon = remote.find(':');
  const std::string manifest_url = config.mirror + "/manifests/" + remote.substr(0, colon) + "/" + remote.substr(colon + 1) + ".json";
  if (progress && !progress({"pulling manifest", "", 0, 0})) throw EngineError(ErrorKind::kInternal, "cancelled");
  const std::string body = FetchSmall(store, config, options, manifest_url);
  Manifest remote_manifest;
  try {
    remote_manifest = Manifest::FromJson(json::parse(body), local);
  } catch (const json::exception& e) {
    throw EngineError(ErrorKind::kInvalidModel, "the mirror's manifest for " + remote + " is not valid JSON: " + e.what());
  } catch (const EngineError& e) {
    throw EngineError(ErrorKind::kInvalidModel, "the mirror's manifest for " + remote + ": " + e.what());
  }
  if (!user_expected.empty() && user_expected.front().digest != remote_manifest.model.digest) {
    throw EngineError(ErrorKind::kInvalidModel, "sha256 mismatch: --sha256 says " + user_expected.front().digest +
                                                    ", the mirror's manifest for " + remote + " says " +
                                                    remote_manifest.model.digest + "; nothing was fetched");
  }
  std::vector<BlobRef> refs = remote_manifest.adapters;
  refs.insert(refs.begin(), remote_manifest.model);
  std::vector<std::unique_ptr<PartialFile>> partials;
  std::vector<std::pair<std::string, std::string>> new_blobs;
  for (const BlobRef& ref : refs) {
    const std::string label = "pulling " + ref.digest.substr(0, 19);
    if (store.HasBlob(ref.digest)) {
      if (progress && !progress({label, ref.digest, ref.size, ref.size})) throw EngineError(ErrorKind::kInternal, "cancelled");
      continue;
    }
    const std::string blob_url = config.mirror + "/blobs/sha256-" + ref.digest.substr(7);
    std::vector<Expectation> expected = {{ref.digest, "the mirror's manifest"}};
    partials.push_back(std::make_unique<PartialFile>(store.PartialDir(), PartialKey(blob_url, expected)));
    Download(store, config, options, blob_url, expected, ref.size, *partials.back(), label, progress);
    new_blobs.emplace_back(partials.back()->path(), ref.digest);
  }
  Manifest m = remote_manifest;
  m.name = local;
  m.source = "mirror:" + net::ParseUrl(config.mirror).display + "/" + remote;
  m.created_at.clear();
  if (progress && !progress({"writing manifest", "", 0, 0})) throw EngineError(ErrorKind::kInternal, "cancelled");
  store.Commit(m, new_blobs);
  for (auto& p : partials) p->Committed();
  return store.Get(m.name);
}

}  // namespace hearth::store
