// Egress: the one component that opens outbound connections (libcurl), only to allowlisted
// hosts. See docs/privacy.md, "Egress and cloud backends".
#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <utility>

#include "net/curl_url.h"
#include "router/backend.h"

namespace hearth::router {

namespace {

constexpr size_t kMaxAttempts = 1000;          // bounded attempt history
constexpr size_t kMaxErrorBody = 64 * 1024;    // error body kept when streaming
constexpr size_t kMaxBody = 32 * 1024 * 1024;  // non-streaming body
constexpr size_t kMaxIdleMultis = 16;          // pooled multi handles (connection caches)
constexpr long kPollMs = 20;                   // cancel/stall check granularity

using net::Lower;
using net::ParsedUrl;
using net::Trim;

bool HostAllowed(const std::vector<std::string>& allowed, const ParsedUrl& p) {
  if (!p.ok) return false;
  for (const auto& a : allowed) {
    if (a == p.host || a == p.host_port) return true;
  }
  return false;
}

// One transfer's state, shared with the libcurl callbacks.
struct Transfer {
  CURL* easy = nullptr;
  EgressResponse* response = nullptr;
  const std::function<bool(std::string_view)>* on_data = nullptr;
  const std::atomic<bool>* cancel = nullptr;
  bool status_known = false;
  bool deliver = false;  // 2xx and a sink: the body streams to on_data
  bool sink_stopped = false;
  bool too_large = false;
  std::exception_ptr sink_error;  // thrown by on_data; rethrown after the transfer is cleaned up
  bool read_open = false;         // on_data got bytes since the last end-of-read call
  curl_off_t uploaded = 0;
  std::chrono::steady_clock::time_point last_activity;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) {
    t->response->retry_after.clear();  // a new response (e.g. after 100 Continue)
  } else if (line.size() > 12 && Lower(std::string(line.substr(0, 12))) == "retry-after:") {
    t->response->retry_after = Trim(line.substr(12));
  }
  t->last_activity = std::chrono::steady_clock::now();
  return size * n;
}

// Calls on_data; false when it stopped the transfer (or threw).
bool Deliver(Transfer& t, std::string_view bytes) {
  bool more = false;
  try {
    more = (*t.on_data)(bytes);
  } catch (...) {  // never unwind through libcurl
    t.sink_error = std::current_exception();
  }
  if (!more) t.sink_stopped = true;
  return more;
}

// After curl_multi_perform: it has read all the socket had, so tell on_data the read is over
// (an empty call), letting it send what it held back from that read in one piece.
bool EndRead(Transfer& t) {
  if (!t.read_open) return true;
  t.read_open = false;
  return Deliver(t, {});
}

// libcurl calls this once per HTTP chunk, inside curl_multi_perform, which reads for as long as
// the socket has data. Each chunk is passed on at once, so the first token leaves before the
// rest of a provider's burst has been read; EndRead then closes the read.
size_t OnWrite(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  t->last_activity = std::chrono::steady_clock::now();
  if (!t->status_known) {
    long code = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
    t->response->status = static_cast<int>(code);
    t->status_known = true;
    t->deliver = *t->on_data && code >= 200 && code < 300;
  }
  if (t->deliver) {
    t->read_open = true;
    return Deliver(*t, std::string_view(data, len)) ? len : 0;  // 0 aborts (CURLE_WRITE_ERROR)
  }
  const size_t limit = *t->on_data ? kMaxErrorBody : kMaxBody;
  std::string& body = t->response->body;
  if (body.size() + len > limit) {
    if (!*t->on_data) {
      t->too_large = true;
      return 0;
    }
    body.append(data, limit - body.size());  // keep the head of an error body
    return len;
  }
  body.append(data, len);
  return len;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t ulnow) {
  auto* t = static_cast<Transfer*>(user);
  if (ulnow != t->uploaded) {
    t->uploaded = ulnow;
    t->last_activity = std::chrono::steady_clock::now();
  }
  return (t->cancel && t->cancel->load()) ? 1 : 0;  // non-zero aborts the transfer
}

EgressResponse::Failure Classify(CURLcode code) {
  using F = EgressResponse::Failure;
  switch (code) {
    case CURLE_OK: return F::kNone;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
      return F::kConnect;
    case CURLE_OPERATION_TIMEDOUT: return F::kTimeout;
    case CURLE_ABORTED_BY_CALLBACK: return F::kCancelled;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
      return F::kTls;
    default: return F::kOther;
  }
}

}  // namespace

// Idle multi handles. A multi handle owns a connection cache, so a request that picks up a
// handle reuses its kept-alive connection (and TLS session) to the same host and proxy.
struct Egress::HandlePool {
  std::mutex mutex;
  std::vector<CURLM*> idle;

  CURLM* Acquire() {
    {
      std::lock_guard lock(mutex);
      if (!idle.empty()) {
        CURLM* m = idle.back();
        idle.pop_back();
        return m;
      }
    }
    CURLM* m = curl_multi_init();
    if (!m) throw std::runtime_error("curl_multi_init failed");
    return m;
  }
  void Release(CURLM* m) {
    {
      std::lock_guard lock(mutex);
      if (idle.size() < kMaxIdleMultis) {
        idle.push_back(m);
        return;
      }
    }
    curl_multi_cleanup(m);
  }
  ~HandlePool() {
    for (CURLM* m : idle) curl_multi_cleanup(m);
  }
};

Egress::Egress(std::vector<std::string> allowed_hosts) : pool_(std::make_unique<HandlePool>()) {
  net::CurlGlobalInit();
  for (const auto& raw : allowed_hosts) {
    std::string h = Lower(Trim(raw));
    if (h.empty()) continue;
    if (h.find('*') != std::string::npos) {
      throw std::invalid_argument("egress allowlist: wildcards are not allowed ('" + raw +
                                  "'); list exact host names or host:port");
    }
    if (h.find("://") != std::string::npos || h.find_first_of("/@?# \t") != std::string::npos) {
      throw std::invalid_argument("egress allowlist: '" + raw + "' is not a host name or host:port");
    }
    allowed_.push_back(h);
  }
}

Egress::~Egress() = default;

bool Egress::IsAllowed(const std::string& url) const { return HostAllowed(allowed_, net::ParseUrl(url)); }

std::vector<EgressAttempt> Egress::attempts() const {
  std::lock_guard lock(mutex_);
  return {attempts_.begin(), attempts_.end()};
}

void Egress::Record(EgressAttempt attempt) {
  std::lock_guard lock(mutex_);
  while (attempts_.size() >= kMaxAttempts) attempts_.pop_front();  // a vector's erase moved 1,000 entries a request
  attempts_.push_back(std::move(attempt));
}

EgressResponse Egress::Post(const std::string& url, const std::vector<std::string>& headers, const std::string& body,
                            const std::function<bool(std::string_view)>& on_data,
                            const std::shared_ptr<std::atomic<bool>>& cancel, int connect_timeout_ms,
                            int read_timeout_ms) {
  using F = EgressResponse::Failure;
  EgressAttempt attempt;
  attempt.time = std::chrono::system_clock::now();
  ParsedUrl parsed = net::ParseUrl(url);
  attempt.host = parsed.ok ? parsed.host_port : "";
  attempt.url = parsed.ok ? parsed.display : "(unparsable URL)";
  if (!HostAllowed(allowed_, parsed)) {
    attempt.error = parsed.ok ? "host not on the egress allowlist" : "not an http(s) URL";
    Record(attempt);
    throw EgressDenied(parsed.ok ? "egress denied: " + parsed.host_port + " is not on the egress allowlist"
                                 : "egress denied: not an http(s) URL with a host");
  }
  attempt.allowed = true;

  EgressResponse response;
  if (cancel && cancel->load()) {
    response.failure = F::kCancelled;
    response.error = "cancelled before sending";
    attempt.error = response.error;
    Record(attempt);
    return response;
  }

  CURL* easy = curl_easy_init();
  if (!easy) throw std::runtime_error("curl_easy_init failed");
  curl_slist* header_list = nullptr;
  for (const auto& h : headers) header_list = curl_slist_append(header_list, h.c_str());
  header_list = curl_slist_append(header_list, "Expect:");  // no 100-continue round trip

  Transfer t;
  t.easy = easy;
  t.response = &response;
  t.on_data = &on_data;
  t.cancel = cancel.get();
  char errbuf[CURL_ERROR_SIZE] = {0};
  const long read_timeout_s = std::max(1L, static_cast<long>((read_timeout_ms + 999) / 1000));

  curl_easy_setopt(easy, CURLOPT_CURLU, parsed.handle.get());
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);  // a redirect could leave the allowlist
  curl_easy_setopt(easy, CURLOPT_POST, 1L);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, header_list);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, "hearth");
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);  // a proxy's CONNECT reply is not the response
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::max(1, connect_timeout_ms)));
  curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);  // backstop; the loop below checks in ms
  curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, read_timeout_s);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &t);

  CURLM* multi = pool_->Acquire();
  curl_multi_add_handle(multi, easy);
  CURLcode result = CURLE_OK;
  bool cancelled = false, stalled = false, done = false;
  std::string multi_error;
  bool connected = false;
  t.last_activity = std::chrono::steady_clock::now();
  const auto read_timeout = std::chrono::milliseconds(std::max(1, read_timeout_ms));
  // Driven here rather than by curl_easy_perform so that cancellation and a stall are noticed
  // within kPollMs, not at libcurl's once-a-second progress tick.
  while (true) {
    int running = 0;
    CURLMcode mc = curl_multi_perform(multi, &running);
    if (!EndRead(t)) break;
    if (mc != CURLM_OK) {
      multi_error = curl_multi_strerror(mc);
      break;
    }
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy) {
        result = msg->data.result;
        done = true;
      }
    }
    if (done || running == 0) break;
    if (cancel && cancel->load()) {
      cancelled = true;
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!connected) {
      curl_off_t pretransfer = 0;
      curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
      if (pretransfer > 0) {  // connected (connect_timeout_ms governed until here)
        connected = true;
        t.last_activity = std::max(t.last_activity, now);
      }
    } else if (now - t.last_activity > read_timeout) {
      stalled = true;
      break;
    }
    mc = curl_multi_poll(multi, nullptr, 0, kPollMs, nullptr);
    if (mc != CURLM_OK) {
      multi_error = curl_multi_strerror(mc);
      break;
    }
  }

  curl_off_t uploaded = 0;
  curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
  response.bytes_sent = static_cast<uint64_t>(std::max<curl_off_t>(0, uploaded));
  if (!t.status_known) {
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    response.status = static_cast<int>(code);
  }
  curl_multi_remove_handle(multi, easy);  // an unfinished transfer's connection is closed
  pool_->Release(multi);
  curl_easy_cleanup(easy);
  curl_slist_free_all(header_list);

  if (cancelled || (result == CURLE_ABORTED_BY_CALLBACK)) {
    response.failure = F::kCancelled;
    response.error = "cancelled";
  } else if (stalled) {
    response.failure = F::kTimeout;
    response.error = "stalled: no data for " + std::to_string(read_timeout_ms) + " ms";
  } else if (!multi_error.empty()) {
    response.failure = F::kOther;
    response.error = "libcurl: " + multi_error;
  } else if (t.sink_stopped) {
    response.failure = F::kAborted;
    response.error = "aborted by the receiver";
  } else if (t.too_large) {
    response.failure = F::kOther;
    response.error = "response body larger than " + std::to_string(kMaxBody) + " bytes";
  } else if (!done) {
    response.failure = F::kOther;
    response.error = "transfer ended without a result";
  } else if (result != CURLE_OK) {
    response.failure = Classify(result);
    response.error = errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(result));
    if (result == CURLE_OPERATION_TIMEDOUT && connected) response.error = "stalled: " + response.error;
  }

  attempt.status = response.status;
  attempt.bytes_sent = response.bytes_sent;
  attempt.error = response.error;
  Record(std::move(attempt));
  if (t.sink_error) std::rethrow_exception(t.sink_error);
  return response;
}

}  // namespace hearth::router
