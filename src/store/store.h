// The model store: a directory of content-addressed blobs and small JSON manifests.
//
//   <root>/                       $HEARTH_MODELS, default ~/.local/share/hearth/models
//     blobs/sha256-<64 hex>       GGUF files (models, LoRA adapters), named by their sha256
//     manifests/<name>/<tag>.json one per model name "name:tag" (see Manifest)
//     partial/<key>.partial       resumable downloads in progress (+ <key>.json: source, ETag)
//     tmp/                        imports being copied; never read as models
//     config.json                 optional: {"pull_allow": ["host", "host:port"], "mirror": URL}
//     .lock                       flock(2) taken while blobs and manifests change
//
// Every write is atomic: data goes to a temporary file in the same file system, is fsynced,
// renamed into place, and the directory is fsynced; a crash leaves either the old state or
// the new one, never half a model. Blobs enter blobs/ only after their sha256 is known (and,
// when one was expected, matched) and CheckGgufFile accepted them. Removing a model (or
// replacing a name's manifest) deletes the manifest and then every blob no manifest
// references.
//
// Names are "name[:tag]" (":latest" when no tag) and are validated by
// engine::ModelNameProblem: [A-Za-z0-9._-], no "..", no leading '.' or '-', at most 200
// characters; a rejected name comes with the reason.
//
// Errors are engine::EngineError: kInvalidRequest (bad name, bad Modelfile), kNotFound (no
// such model), kInvalidModel (not a valid GGUF, checksum mismatch, a tampered or missing
// blob), kDenied (pull source not allowed), kInternal (I/O). Thread-safe; several processes
// may use one store (the .lock file serialises changes).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model_pool.h"

#include "store/modelfile.h"

namespace hearth::store {

// Progress of a long operation, shaped like Ollama's pull/create stream:
// {status, digest, total, completed}. total/completed are 0 when unknown or not a transfer.
struct Progress {
  std::string status;     // "pulling manifest", "pulling sha256:ab12…", "verifying sha256 digest", ...
  std::string digest;     // "sha256:<hex>" when known
  uint64_t total = 0;
  uint64_t completed = 0;
};
// Returns false to cancel (the operation throws EngineError(kInternal) "cancelled").
using ProgressFn = std::function<bool(const Progress&)>;

struct BlobRef {
  std::string digest;  // "sha256:<64 lowercase hex>"
  uint64_t size = 0;
};

// manifests/<name>/<tag>.json:
//   {"schema": 1, "name": "coder:latest",
//    "model": {"digest": "sha256:…", "size": 123},
//    "adapters": [{"digest": "sha256:…", "size": 45}],      LoRA, applied by the server
//    "parameters": {"num_ctx": 8192, "stop": ["<|im_end|>"]},  applied by the server (see docs)
//    "system": "…", "template": "…", "license": ["…"],        present only when set
//    "source": "https://…" | "import:/abs/path" | "create:<from>" | "mirror:<url>",
//    "created_at": "2025-01-01T00:00:00Z"}
struct Manifest {
  std::string name;  // canonical "name:tag"
  BlobRef model;
  std::vector<BlobRef> adapters;
  ModelParameters parameters;
  std::optional<std::string> system;
  std::optional<std::string> template_text;
  std::vector<std::string> licenses;
  std::string source;
  std::string created_at;

  nlohmann::json ToJson() const;
  // What the server applies to requests for this model: parameters, system, template.
  engine::ModelDefaults Defaults() const;
  // Validates everything, digests included (a manifest cannot point outside blobs/). Throws
  // engine::EngineError(kInvalidModel) saying what is wrong.
  static Manifest FromJson(const nlohmann::json& j, const std::string& name);
};

struct ResolvedModel {
  std::string name;  // canonical
  std::string path;  // absolute path of the model blob
  Manifest manifest;
};

struct BlobCheck {
  std::string digest;               // from the file name
  std::string path;
  uint64_t size = 0;
  std::string problem;              // empty: the content hashes to its name
  std::vector<std::string> models;  // names whose manifests use it
};

struct VerifyReport {
  std::vector<BlobCheck> blobs;
  std::vector<std::string> problems;  // manifest-level: unreadable, missing blob, wrong size
  bool ok() const;
};

// Incremental sha256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t size);
  std::string HexDigest();  // finishes; call once
 private:
  void* ctx_;
};
// Hex sha256 of a file's content; progress (optional) gets (done, total) bytes. Throws
// EngineError(kInternal) when the file cannot be read.
std::string Sha256File(const std::string& path, const std::function<bool(uint64_t, uint64_t)>& progress = {});

// Writes `data` to `path` atomically (temp file beside it, fsync, rename, fsync dir). On any
// failure the temp file is removed and EngineError(kInternal) names the path and errno.
void AtomicWriteFile(const std::string& path, std::string_view data);

// "sha256:<hex>" from "<hex>" or "sha256:<hex>" (case-insensitive); "" when not 64 hex digits.
std::string NormalizeDigest(const std::string& text);

class Store {
 public:
  // Opens (creating the directories if needed) the store at root. Throws kInternal.
  explicit Store(std::string root);
  // $HEARTH_MODELS, else $HOME/.local/share/hearth/models.
  static std::string DefaultRoot();

  const std::string& root() const { return root_; }
  std::string BlobPath(const std::string& digest) const;  // digest must be valid
  // What the server applies for a stored model: Manifest::Defaults() plus its adapters' blobs.
  engine::ModelDefaults ServingDefaults(const Manifest& m) const;
  std::string PartialDir() const;
  std::string TempDir() const;
  std::string ConfigPath() const;

  // "" when acceptable, else why not (engine::ModelNameProblem).
  static std::string NameProblem(const std::string& name);
  // Validated name with ":latest" added when there is no tag. Throws kInvalidRequest
  // "invalid model name '…': <reason>" (control bytes shown as '?').
  static std::string CanonicalName(const std::string& name);

  // Copies a GGUF file into the store as a blob (CheckGgufFile before and on the copy).
  // Returns the existing blob when the content is already there. expected_sha256 (hex or
  // "sha256:hex", may be empty) must match or nothing is kept. A blob no manifest references
  // is collected by the next Remove or manifest replacement: Commit a manifest soon.
  BlobRef AddBlob(const std::string& path, const std::string& expected_sha256 = "", const ProgressFn& progress = {});
  bool HasBlob(const std::string& digest) const;

  // `hearth import FILE --name N`: AddBlob + a manifest with source "import:<abs path>".
  Manifest Import(const std::string& path, const std::string& name, const ProgressFn& progress = {});

  // `hearth create NAME -f Modelfile`. FROM is a model in this store (its blob, parameters,
  // system, template and adapters are inherited, then overridden) or a GGUF path (relative
  // paths are resolved against base_dir). With allow_paths=false (the HTTP API), FROM and
  // ADAPTER must not name files: only store models.
  Manifest Create(const std::string& name, const Modelfile& modelfile, const std::string& base_dir,
                  bool allow_paths = true, const ProgressFn& progress = {});

  // Writes a manifest; each (file, digest) in new_blobs is a fully written, fsynced file in
  // this store's file system that is moved into blobs/ under that digest first. All under
  // the store lock, so a concurrent rm cannot collect the blobs in between.
  void Commit(const Manifest& manifest, const std::vector<std::pair<std::string, std::string>>& new_blobs = {});

  std::optional<Manifest> Find(const std::string& name) const;  // nullopt when absent
  Manifest Get(const std::string& name) const;                   // throws kNotFound
  // All readable manifests, sorted by name. Unreadable ones are skipped (verify reports them).
  std::vector<Manifest> List() const;
  // Deletes the manifest, then the blobs nothing references any more. Throws kNotFound.
  void Remove(const std::string& name);
  // Copies the manifest under another name (replacing dst). Throws kNotFound.
  Manifest Copy(const std::string& src, const std::string& dst);

  // The model blob to load, checked first: it must exist with the recorded size, and its
  // sha256 must match the manifest. The hash is computed the first time a blob is resolved
  // in this process (seconds for a multi-GB file) and again whenever its size or mtime
  // changes; otherwise the cached result is used. Throws kNotFound / kInvalidModel.
  ResolvedModel Resolve(const std::string& name) const;

  // The same content check for a file path, for a loader that knows only paths (the model
  // pool): a file in this store's blobs/ must hash to its name (cached per process as in
  // Resolve), else EngineError(kInvalidModel). Paths outside blobs/ are not checked.
  void CheckBlobPath(const std::string& path) const;

  // `hearth verify`: re-hashes every blob (ignoring the per-process cache) and checks every
  // manifest. progress gets one "verifying <digest>" stream per blob.
  VerifyReport Verify(const ProgressFn& progress = {}) const;

  // A Modelfile that recreates the model (`hearth show --modelfile`): FROM <blob path>.
  std::string RenderModelfile(const Manifest& manifest) const;

 private:
  std::string ManifestPath(const std::string& canonical) const;
  void CollectGarbage();  // caller holds the lock
  std::string root_;
};

}  // namespace hearth::store
