// `hearth pull` / POST /api/pull: fetch a GGUF into the store over HTTP(S), resumably.
//
// SOURCE is an http(s) URL, or a name on the configured mirror. A mirror is any HTTP server
// that serves a store's layout (manifests/<name>/<tag>.json and blobs/sha256-<hex>), e.g. a
// hearth models directory behind nginx; its manifest gives the sha256 of every blob.
//
// Nothing is fetched from a host that is not on the pull allowlist: $HEARTH_PULL_ALLOW
// (comma-separated "host" or "host:port"; "host" allows any port) or else "pull_allow" in
// <store>/config.json. The configured mirror's host is allowed implicitly. Empty: every pull
// is refused. The check happens before any connection, and again for every redirect hop
// (redirects are followed by hand, at most 10). Plain http:// is refused unless the host is
// loopback, the URL is the configured mirror's, or `insecure` is set; `insecure` never
// disables TLS certificate checks.
//
// Downloads go to <store>/partial/<key>.partial and resume with an HTTP Range request
// (If-Range with the ETag or Last-Modified seen before) after a dropped connection -- within
// one Pull (up to max_attempts transfers) and across Pulls. The sha256 is checked against
// every expectation available: --sha256, the mirror manifest, or the server's X-Linked-Etag
// (Hugging Face) / Digest: sha-256= header. A mismatch deletes the download: no blob, no
// manifest. The file must then pass CheckGgufFile before it becomes a blob.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "store/store.h"

namespace hearth::store {

struct PullConfig {
  std::vector<std::string> allow;  // lower-case "host" or "host:port"
  std::string mirror;              // base URL without a trailing '/', "" when none
};

// $HEARTH_PULL_ALLOW / $HEARTH_PULL_MIRROR when set (non-empty), else config.json in the
// store: {"pull_allow": ["huggingface.co", "mirror.lan:8080"], "mirror": "http://mirror.lan:8080/hearth"}.
// Throws EngineError(kInvalidRequest) for a malformed config or an allowlist entry that is
// not a host name (wildcards, URLs, paths are rejected).
PullConfig LoadPullConfig(const Store& store);

struct PullOptions {
  std::string source;         // URL or mirror name
  std::string name;           // store name; "" = the mirror name, or the URL's file name
  std::string sha256;         // expected (hex or sha256:hex); "" = none given
  bool insecure = false;      // allow plain http:// to non-loopback hosts
  int max_attempts = 5;       // transfers per blob before giving up (each resumes)
  int connect_timeout_ms = 15000;
  int stall_timeout_ms = 60000;  // no byte for this long: the attempt fails (and is retried)
  std::shared_ptr<std::atomic<bool>> cancel;  // set to stop; the .partial is kept
};

// Whether the allowlist permits a URL (parsed as libcurl parses it). Used before any
// connection; exposed for tests and `hearth doctor`.
bool PullUrlAllowed(const PullConfig& config, const std::string& url);

// The store name a URL's file name gives: ".../Qwen2.5-Coder-1.5B-Q8_0.gguf" ->
// "Qwen2.5-Coder-1.5B-Q8_0". "" when nothing usable remains.
std::string NameFromUrl(const std::string& url);

// Pulls and commits the model; progress statuses follow Ollama's: "pulling manifest",
// "pulling <digest or file>" (total, completed), "verifying sha256 digest", "writing
// manifest". The caller reports "success". Throws EngineError: kDenied (allowlist, scheme),
// kInvalidRequest (bad source, name or --sha256), kInvalidModel (checksum mismatch, not a
// valid GGUF), kNotFound (HTTP 404), kInternal (network, I/O, cancelled).
Manifest Pull(Store& store, const PullOptions& options, const ProgressFn& progress = {});

}  // namespace hearth::store
