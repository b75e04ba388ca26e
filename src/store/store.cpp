#include "store/store.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <tuple>

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/error.h"
#include "engine/gguf_check.h"
#include "engine/model_pool.h"

namespace hearth::store {

namespace fs = std::filesystem;
using engine::EngineError;
using engine::ErrorKind;
using json = nlohmann::json;

namespace {

constexpr size_t kCopyBuffer = 4u << 20;
constexpr uintmax_t kMaxManifestBytes = 16u << 20;
constexpr int kSchema = 1;

[[noreturn]] void IoError(const std::string& what, int err = errno) {
  throw EngineError(ErrorKind::kInternal, what + ": " + std::strerror(err));
}

// A name as it may be shown in a message: control bytes become '?', long names are cut.
std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 80)) out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  if (s.size() > 80) out += "...";
  return out;
}

std::string NowRfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void WriteAll(int fd, const char* data, size_t size, const std::string& path) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      IoError("cannot write " + path);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) IoError("cannot open directory " + dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) IoError("cannot fsync directory " + dir, err);
}

// A temporary file that is removed unless Release()d (or renamed away).
class TempFile {
 public:
  TempFile() = default;
  TempFile(const std::string& dir, const std::string& prefix) {
    std::string pattern = (fs::path(dir) / (prefix + "XXXXXX")).string();
    fd_ = ::mkostemp(pattern.data(), O_CLOEXEC);
    if (fd_ < 0) IoError("cannot create a temporary file in " + dir);
    path_ = pattern;
  }
  TempFile(TempFile&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_) {
    o.fd_ = -1;
    o.path_.clear();
  }
  TempFile& operator=(TempFile&& o) noexcept {
    Discard();
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    o.fd_ = -1;
    o.path_.clear();
    return *this;
  }
  ~TempFile() { Discard(); }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  void SyncAndClose() {
    if (fd_ < 0) return;
    if (::fsync(fd_) != 0) IoError("cannot fsync " + path_);
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) IoError("cannot close " + path_);
  }
  // The file was renamed away: nothing to remove any more.
  void Release() { path_.clear(); }
  void Discard() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!path_.empty()) ::unlink(path_.c_str());
    path_.clear();
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// flock(2) on <root>/.lock for the lifetime of the object.
class StoreLock {
 public:
  explicit StoreLock(const std::string& root) {
    std::string path = (fs::path(root) / ".lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) IoError("cannot open the store lock " + path);
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        int err = errno;
        ::close(fd_);
        IoError("cannot lock " + path, err);
      }
    }
  }
  ~StoreLock() { ::close(fd_); }
  StoreLock(const StoreLock&) = delete;
  StoreLock& operator=(const StoreLock&) = delete;

 private:
  int fd_ = -1;
};

std::string ReadSmallFile(const std::string& path, uintmax_t limit) {
  std::error_code ec;
  uintmax_t size = fs::file_size(path, ec);
  if (ec) throw EngineError(ErrorKind::kInternal, "cannot read " + path + ": " + ec.message());
  if (size > limit) throw EngineError(ErrorKind::kInvalidModel, path + " is larger than " + std::to_string(limit) + " bytes");
  std::ifstream in(path, std::ios::binary);
  if (!in) IoError("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

BlobRef ParseBlobRef(const json& j, const std::string& what) {
  if (!j.is_object()) throw EngineError(ErrorKind::kInvalidModel, what + " must be an object");
  auto d = j.find("digest");
  auto s = j.find("size");
  if (d == j.end() || !d->is_string() || NormalizeDigest(d->get<std::string>()).empty() ||
      NormalizeDigest(d->get<std::string>()) != d->get<std::string>()) {
    throw EngineError(ErrorKind::kInvalidModel, what + ".digest must be \"sha256:<64 lowercase hex digits>\"");
  }
  if (s == j.end() || !s->is_number_unsigned()) {
    throw EngineError(ErrorKind::kInvalidModel, what + ".size must be a non-negative integer");
  }
  return {d->get<std::string>(), s->get<uint64_t>()};
}

// The verified-blob cache: blob path -> (size, mtime ns, content matches its name).
struct HashCache {
  std::mutex mutex;
  std::map<std::string, std::tuple<uint64_t, int64_t, bool>> entries;
};
HashCache& Cache() {
  static HashCache cache;
  return cache;
}

bool StatFile(const std::string& path, uint64_t& size, int64_t& mtime_ns) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  size = static_cast<uint64_t>(st.st_size);
  mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

// Whether the blob at path (with this size and mtime) hashes to digest: cached per process,
// recomputed when the size or mtime changes.
bool BlobMatchesName(const std::string& path, const std::string& digest, uint64_t size, int64_t mtime) {
  {
    std::lock_guard lock(Cache().mutex);
    auto it = Cache().entries.find(path);
    if (it != Cache().entries.end() && std::get<0>(it->second) == size && std::get<1>(it->second) == mtime) {
      return std::get<2>(it->second);
    }
  }
  const bool ok = "sha256:" + Sha256File(path) == digest;
  std::lock_guard lock(Cache().mutex);
  Cache().entries[path] = {size, mtime, ok};
  return ok;
}

void RememberHash(const std::string& path, bool ok) {
  uint64_t size = 0;
  int64_t mtime = 0;
  if (!StatFile(path, size, mtime)) return;
  std::lock_guard lock(Cache().mutex);
  Cache().entries[path] = {size, mtime, ok};
}

std::string ShortDigest(const std::string& digest) { return digest.substr(0, 7 + 12); }

bool Emit(const ProgressFn& progress, const Progress& p) { return !progress || progress(p); }

void CheckCancelled(bool keep_going) {
  if (!keep_going) throw EngineError(ErrorKind::kInternal, "cancelled");
}

// A blob prepared for the store: either a fsynced temp copy (tmp) waiting to be renamed into
// blobs/, or (tmp empty) a file already in blobs/ under its correct name.
struct StagedBlob {
  TempFile tmp;
  BlobRef ref;
};

}  // namespace

// ---------------------------------------------------------------------------------------

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1) {
    throw EngineError(ErrorKind::kInternal, "OpenSSL sha256 initialisation failed");
  }
}
Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }
void Sha256::Update(const void* data, size_t size) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size) != 1) {
    throw EngineError(ErrorKind::kInternal, "OpenSSL sha256 update failed");
  }
}
std::string Sha256::HexDigest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len) != 1) {
    throw EngineError(ErrorKind::kInternal, "OpenSSL sha256 final failed");
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

std::string Sha256File(const std::string& path, const std::function<bool(uint64_t, uint64_t)>& progress) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) IoError("cannot open " + path);
  struct stat st {};
  ::fstat(fd, &st);
  const uint64_t total = static_cast<uint64_t>(st.st_size);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  Sha256 hash;
  std::vector<char> buf(kCopyBuffer);
  uint64_t done = 0;
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      IoError("cannot read " + path, err);
    }
    if (n == 0) break;
    hash.Update(buf.data(), static_cast<size_t>(n));
    done += static_cast<uint64_t>(n);
    if (progress && !progress(done, total)) {
      ::close(fd);
      throw EngineError(ErrorKind::kInternal, "cancelled");
    }
  }
  ::close(fd);
  return hash.HexDigest();
}

void AtomicWriteFile(const std::string& path, std::string_view data) {
  fs::path target(path);
  std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
  TempFile tmp(dir, "." + target.filename().string() + ".tmp-");
  WriteAll(tmp.fd(), data.data(), data.size(), tmp.path());
  if (::fchmod(tmp.fd(), 0644) != 0) IoError("cannot chmod " + tmp.path());
  tmp.SyncAndClose();
  if (::rename(tmp.path().c_str(), path.c_str()) != 0) IoError("cannot rename " + tmp.path() + " to " + path);
  tmp.Release();
  FsyncDir(dir);
}

std::string NormalizeDigest(const std::string& text) {
  std::string hex = text;
  if (hex.size() > 7 && (hex.compare(0, 7, "sha256:") == 0 || hex.compare(0, 7, "SHA256:") == 0)) hex = hex.substr(7);
  if (hex.size() > 7 && hex.compare(0, 7, "sha256-") == 0) hex = hex.substr(7);
  if (hex.size() != 64) return {};
  for (char& c : hex) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return {};
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return "sha256:" + hex;
}

bool VerifyReport::ok() const {
  if (!problems.empty()) return false;
  return std::all_of(blobs.begin(), blobs.end(), [](const BlobCheck& b) { return b.problem.empty(); });
}

// ---------------------------------------------------------------------------------------

engine::ModelDefaults Manifest::Defaults() const {
  engine::ModelDefaults d;
  const ModelParameters& p = parameters;
  if (p.temperature) d.temperature = static_cast<float>(*p.temperature);
  if (p.top_p) d.top_p = static_cast<float>(*p.top_p);
  if (p.min_p) d.min_p = static_cast<float>(*p.min_p);
  if (p.repeat_penalty) d.repeat_penalty = static_cast<float>(*p.repeat_penalty);
  d.top_k = p.top_k;
  d.num_predict = p.num_predict;
  d.num_ctx = p.num_ctx;
  if (p.seed && *p.seed >= 0) d.seed = static_cast<uint32_t>(*p.seed);  // negative: random, as unset
  d.stop = p.stop;
  d.system = system.value_or("");
  d.template_text = template_text.value_or("");
  return d;
}

json Manifest::ToJson() const {
  json j = {{"schema", kSchema}, {"name", name}, {"model", {{"digest", model.digest}, {"size", model.size}}}};
  json a = json::array();
  for (const BlobRef& b : adapters) a.push_back({{"digest", b.digest}, {"size", b.size}});
  j["adapters"] = a;
  j["parameters"] = parameters.ToJson();
  if (system) j["system"] = *system;
  if (template_text) j["template"] = *template_text;
  if (!licenses.empty()) j["license"] = licenses;
  j["source"] = source;
  j["created_at"] = created_at;
  return j;
}

Manifest Manifest::FromJson(const json& j, const std::string& name) {
  if (!j.is_object()) throw EngineError(ErrorKind::kInvalidModel, "manifest must be a JSON object");
  auto schema = j.find("schema");
  if (schema == j.end() || !schema->is_number_integer() || schema->get<int64_t>() != kSchema) {
    throw EngineError(ErrorKind::kInvalidModel, "manifest schema must be 1 (written by a newer hearth?)");
  }
  Manifest m;
  m.name = name;
  auto model = j.find("model");
  if (model == j.end()) throw EngineError(ErrorKind::kInvalidModel, "manifest has no 'model'");
  m.model = ParseBlobRef(*model, "model");
  if (auto a = j.find("adapters"); a != j.end() && !a->is_null()) {
    if (!a->is_array()) throw EngineError(ErrorKind::kInvalidModel, "manifest 'adapters' must be an array");
    for (const json& b : *a) m.adapters.push_back(ParseBlobRef(b, "adapters[]"));
  }
  try {
    if (auto p = j.find("parameters"); p != j.end()) m.parameters = ModelParameters::FromJson(*p);
  } catch (const std::invalid_argument& e) {
    throw EngineError(ErrorKind::kInvalidModel, std::string("manifest parameters: ") + e.what());
  }
  auto opt_string = [&](const char* key) -> std::optional<std::string> {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) throw EngineError(ErrorKind::kInvalidModel, std::string("manifest '") + key + "' must be a string");
    return it->get<std::string>();
  };
  m.system = opt_string("system");
  m.template_text = opt_string("template");
  m.source = opt_string("source").value_or("");
  m.created_at = opt_string("created_at").value_or("");
  if (auto l = j.find("license"); l != j.end() && !l->is_null()) {
    if (!l->is_array()) throw EngineError(ErrorKind::kInvalidModel, "manifest 'license' must be an array of strings");
    for (const json& s : *l) {
      if (!s.is_string()) throw EngineError(ErrorKind::kInvalidModel, "manifest 'license' must be an array of strings");
      m.licenses.push_back(s.get<std::string>());
    }
  }
  return m;
}

// ---------------------------------------------------------------------------------------

Store::Store(std::string root) {
  if (root.empty()) root = DefaultRoot();
  std::error_code ec;
  root_ = fs::absolute(root, ec).lexically_normal().string();
  if (ec) throw EngineError(ErrorKind::kInternal, "bad store path '" + root + "': " + ec.message());
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  for (const char* sub : {"", "blobs", "manifests", "partial", "tmp"}) {
    fs::path p = sub[0] ? fs::path(root_) / sub : fs::path(root_);
    fs::create_directories(p, ec);
    if (ec || !fs::is_directory(p)) {
      throw EngineError(ErrorKind::kInternal, "cannot create the model store directory " + p.string() + ": " +
                                                  (ec ? ec.message() : std::string("not a directory")));
    }
  }
  // Leftovers of crashed imports (tmp/) and manifest writes: old enough that no live writer
  // can own them.
  const auto now = fs::file_time_type::clock::now();
  for (const auto& e : fs::directory_iterator(TempDir(), ec)) {
    std::error_code ec2;
    if (now - fs::last_write_time(e.path(), ec2) > std::chrono::hours(24) && !ec2) fs::remove(e.path(), ec2);
  }
  for (const auto& e : fs::recursive_directory_iterator(fs::path(root_) / "manifests", ec)) {
    std::error_code ec2;
    const std::string fn = e.path().filename().string();
    if (fn.size() > 1 && fn[0] == '.' && fn.find(".tmp-") != std::string::npos &&
        now - fs::last_write_time(e.path(), ec2) > std::chrono::hours(1) && !ec2) {
      fs::remove(e.path(), ec2);
    }
  }
}

std::string Store::DefaultRoot() {
  if (const char* env = std::getenv("HEARTH_MODELS"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr && *home != '\0' ? home : ".") + "/.local/share/hearth/models";
}

engine::ModelDefaults Store::ServingDefaults(const Manifest& m) const {
  engine::ModelDefaults d = m.Defaults();
  for (const BlobRef& adapter : m.adapters) d.adapters.push_back(BlobPath(adapter.digest));
  return d;
}

std::string Store::BlobPath(const std::string& digest) const {
  std::string d = NormalizeDigest(digest);
  if (d.empty()) throw EngineError(ErrorKind::kInvalidRequest, "'" + Printable(digest) + "' is not a sha256 digest");
  return root_ + "/blobs/sha256-" + d.substr(7);
}
std::string Store::PartialDir() const { return root_ + "/partial"; }
std::string Store::TempDir() const { return root_ + "/tmp"; }
std::string Store::ConfigPath() const { return root_ + "/config.json"; }

std::string Store::NameProblem(const std::string& name) { return engine::ModelNameProblem(name); }

std::string Store::CanonicalName(const std::string& name) {
  if (std::string why = NameProblem(name); !why.empty()) {
    throw EngineError(ErrorKind::kInvalidRequest, "invalid model name '" + Printable(name) + "': " + why);
  }
  return name.find(':') == std::string::npos ? name + ":latest" : name;
}

std::string Store::ManifestPath(const std::string& canonical) const {
  const size_t colon = canonical.find(':');
  return root_ + "/manifests/" + canonical.substr(0, colon) + "/" + canonical.substr(colon + 1) + ".json";
}

bool Store::HasBlob(const std::string& digest) const {
  std::error_code ec;
  return fs::is_regular_file(BlobPath(digest), ec);
}

namespace {

// Copies `path` into tmp_dir while hashing it, validates the copy, and returns it staged.
// A file that already is one of blobs_dir's blobs is hashed in place instead of copied.
StagedBlob Stage(const std::string& path, const std::string& expected_sha256, const std::string& blobs_dir,
                 const std::string& tmp_dir, const ProgressFn& progress) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw EngineError(ErrorKind::kInvalidRequest, "'" + Printable(path) + "' does not exist or is not a regular file");
  }
  std::string expected;
  if (!expected_sha256.empty()) {
    expected = NormalizeDigest(expected_sha256);
    if (expected.empty()) {
      throw EngineError(ErrorKind::kInvalidRequest, "--sha256 '" + Printable(expected_sha256) + "' is not 64 hex digits");
    }
  }
  engine::CheckGgufFile(path);  // fail fast, before copying gigabytes
  const uint64_t total = fs::file_size(path, ec);

  StagedBlob staged;
  fs::path canonical = fs::weakly_canonical(path, ec);
  const std::string fn = canonical.filename().string();
  if (!ec && canonical.parent_path() == fs::weakly_canonical(blobs_dir) && fn.rfind("sha256-", 0) == 0 &&
      !NormalizeDigest(fn).empty()) {
    // Already a blob of this store (e.g. FROM a path printed by `show --modelfile`).
    std::string digest = "sha256:" + Sha256File(path, [&](uint64_t done, uint64_t all) {
      return Emit(progress, {"verifying " + ShortDigest(NormalizeDigest(fn)), NormalizeDigest(fn), all, done});
    });
    RememberHash(path, digest == NormalizeDigest(fn));
    if (digest != NormalizeDigest(fn)) {
      throw EngineError(ErrorKind::kInvalidModel, "blob " + path + " does not hash to its name (it hashes to " + digest +
                                                      "): the store is corrupt; run `hearth verify`");
    }
    if (!expected.empty() && expected != digest) {
      throw EngineError(ErrorKind::kInvalidModel, "sha256 mismatch: expected " + expected + ", got " + digest);
    }
    staged.ref = {digest, total};
    return staged;
  }

  const fs::space_info space = fs::space(tmp_dir, ec);
  if (!ec && space.available < total + (64u << 20)) {
    throw EngineError(ErrorKind::kInternal, "not enough disk space for " + Printable(path) + " in " + tmp_dir + ": need " +
                                                std::to_string(total) + " bytes, " + std::to_string(space.available) +
                                                " available");
  }
  int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) IoError("cannot open " + path);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{in};
  ::posix_fadvise(in, 0, 0, POSIX_FADV_SEQUENTIAL);
  staged.tmp = TempFile(tmp_dir, "import-");
  Sha256 hash;
  std::vector<char> buf(kCopyBuffer);
  uint64_t done = 0;
  while (true) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      IoError("cannot read " + path);
    }
    if (n == 0) break;
    hash.Update(buf.data(), static_cast<size_t>(n));
    WriteAll(staged.tmp.fd(), buf.data(), static_cast<size_t>(n), staged.tmp.path());
    done += static_cast<uint64_t>(n);
    CheckCancelled(Emit(progress, {"copying model data", "", total, done}));
  }
  if (::fchmod(staged.tmp.fd(), 0644) != 0) IoError("cannot chmod " + staged.tmp.path());
  staged.tmp.SyncAndClose();
  const std::string digest = "sha256:" + hash.HexDigest();
  if (!expected.empty() && expected != digest) {
    throw EngineError(ErrorKind::kInvalidModel, "sha256 mismatch for " + Printable(path) + ": expected " + expected +
                                                    ", got " + digest + "; nothing was stored");
  }
  engine::CheckGgufFile(staged.tmp.path());  // the bytes we keep are the bytes we checked
  staged.ref = {digest, done};
  return staged;
}

}  // namespace

void Store::Commit(const Manifest& manifest, const std::vector<std::pair<std::string, std::string>>& new_blobs) {
  const std::string name = CanonicalName(manifest.name);
  Manifest m = manifest;
  m.name = name;
  if (m.created_at.empty()) m.created_at = NowRfc3339();
  StoreLock lock(root_);
  if (!new_blobs.empty()) {
    for (const auto& [file, digest] : new_blobs) {
      const std::string target = BlobPath(digest);
      if (::rename(file.c_str(), target.c_str()) != 0) IoError("cannot move " + file + " into the store as " + target);
      RememberHash(target, true);
    }
    FsyncDir(root_ + "/blobs");
  }
  std::vector<BlobRef> refs = m.adapters;
  refs.push_back(m.model);
  for (const BlobRef& r : refs) {
    uint64_t size = 0;
    int64_t mtime = 0;
    if (!StatFile(BlobPath(r.digest), size, mtime)) {
      throw EngineError(ErrorKind::kNotFound, "blob " + r.digest + " is not in the store (removed meanwhile?); nothing was written");
    }
    if (size != r.size) {
      throw EngineError(ErrorKind::kInvalidModel, "blob " + r.digest + " has " + std::to_string(size) + " bytes, expected " +
                                                      std::to_string(r.size) + "; run `hearth verify`");
    }
  }
  const std::string path = ManifestPath(name);
  std::error_code ec;
  const bool replacing = fs::exists(path, ec);
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) throw EngineError(ErrorKind::kInternal, "cannot create " + fs::path(path).parent_path().string() + ": " + ec.message());
  AtomicWriteFile(path, m.ToJson().dump(2, ' ', false, json::error_handler_t::replace) + "\n");
  FsyncDir(root_ + "/manifests");
  if (replacing) CollectGarbage();  // the blobs of the replaced version may be unused now
}

BlobRef Store::AddBlob(const std::string& path, const std::string& expected_sha256, const ProgressFn& progress) {
  StagedBlob staged = Stage(path, expected_sha256, root_ + "/blobs", TempDir(), progress);
  if (staged.tmp.path().empty()) return staged.ref;
  StoreLock lock(root_);
  const std::string target = BlobPath(staged.ref.digest);
  if (::rename(staged.tmp.path().c_str(), target.c_str()) != 0) IoError("cannot move a blob into " + target);
  staged.tmp.Release();
  RememberHash(target, true);
  FsyncDir(root_ + "/blobs");
  return staged.ref;
}

Manifest Store::Import(const std::string& path, const std::string& name, const ProgressFn& progress) {
  const std::string canonical = CanonicalName(name);  // before copying anything
  StagedBlob staged = Stage(path, "", root_ + "/blobs", TempDir(), progress);
  Manifest m;
  m.name = canonical;
  m.model = staged.ref;
  std::error_code ec;
  m.source = "import:" + fs::absolute(path, ec).lexically_normal().string();
  CheckCancelled(Emit(progress, {(HasBlob(m.model.digest) ? "using existing layer " : "creating new layer ") +
                                     ShortDigest(m.model.digest), m.model.digest, 0, 0}));
  CheckCancelled(Emit(progress, {"writing manifest", "", 0, 0}));
  std::vector<std::pair<std::string, std::string>> blobs;
  if (!staged.tmp.path().empty()) blobs.emplace_back(staged.tmp.path(), m.model.digest);
  Commit(m, blobs);
  staged.tmp.Release();
  return Get(canonical);
}

Manifest Store::Create(const std::string& name, const Modelfile& mf, const std::string& base_dir, bool allow_paths,
                       const ProgressFn& progress) {
  const std::string canonical = CanonicalName(name);
  auto resolve_path = [&](const std::string& p) {
    fs::path fp(p);
    if (p.rfind("~/", 0) == 0) {
      const char* home = std::getenv("HOME");
      fp = fs::path(home != nullptr ? home : ".") / p.substr(2);
    }
    if (fp.is_relative()) fp = fs::path(base_dir.empty() ? "." : base_dir) / fp;
    return fp.lexically_normal().string();
  };
  auto at_line = [](int line) { return line > 0 ? "Modelfile line " + std::to_string(line) + ": " : std::string(); };
  // A blob of this store is acceptable even where paths are not: its content was validated.
  auto is_own_blob = [&](const std::string& p) {
    std::error_code ec;
    fs::path c = fs::weakly_canonical(p, ec);
    return !ec && c.parent_path() == fs::weakly_canonical(root_ + "/blobs", ec) &&
           c.filename().string().rfind("sha256-", 0) == 0 && !NormalizeDigest(c.filename().string()).empty();
  };
  Manifest m;
  std::vector<StagedBlob> staged;
  std::optional<Manifest> base;
  if (NameProblem(mf.from).empty()) base = Find(mf.from);
  if (base) {
    m = *base;
    m.source = "create:" + base->name;
    m.created_at.clear();
    CheckCancelled(Emit(progress, {"using existing layer " + ShortDigest(m.model.digest), m.model.digest, 0, 0}));
  } else {
    const std::string path = resolve_path(mf.from);
    if (!allow_paths && !is_own_blob(path)) {
      throw EngineError(ErrorKind::kInvalidRequest,
                        at_line(mf.from_line) + "FROM '" + Printable(mf.from) +
                            "' is not a model in the store (over the API FROM must name a stored model; "
                            "put files in the store with `hearth import` first)");
    }
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      throw EngineError(ErrorKind::kInvalidRequest, at_line(mf.from_line) + "FROM '" + Printable(mf.from) +
                                                        "' is neither a model in the store nor a GGUF file");
    }
    StagedBlob s = Stage(path, "", root_ + "/blobs", TempDir(), progress);
    m.model = s.ref;
    m.source = "create:" + path;
    staged.push_back(std::move(s));
  }
  m.name = canonical;
  for (size_t i = 0; i < mf.adapters.size(); ++i) {
    const std::string where = at_line(i < mf.adapter_lines.size() ? mf.adapter_lines[i] : 0);
    const std::string path = resolve_path(mf.adapters[i]);
    if (!allow_paths && !is_own_blob(path)) {
      throw EngineError(ErrorKind::kInvalidRequest, where + "ADAPTER paths are not accepted over the API (only blobs already in the store)");
    }
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      throw EngineError(ErrorKind::kInvalidRequest, where + "ADAPTER '" + Printable(mf.adapters[i]) + "' is not a file");
    }
    try {
      StagedBlob s = Stage(path, "", root_ + "/blobs", TempDir(), progress);
      if (std::none_of(m.adapters.begin(), m.adapters.end(), [&](const BlobRef& b) { return b.digest == s.ref.digest; })) {
        m.adapters.push_back(s.ref);
      }
      staged.push_back(std::move(s));
    } catch (const EngineError& e) {
      throw EngineError(e.kind(), where + "ADAPTER: " + e.what());
    }
  }
  m.parameters.Merge(mf.parameters);
  if (mf.system) m.system = mf.system;
  if (mf.template_text) m.template_text = mf.template_text;
  if (!mf.licenses.empty()) m.licenses = mf.licenses;
  for (const StagedBlob& s : staged) {
    CheckCancelled(Emit(progress, {(HasBlob(s.ref.digest) ? "using existing layer " : "creating new layer ") +
                                       ShortDigest(s.ref.digest), s.ref.digest, 0, 0}));
  }
  CheckCancelled(Emit(progress, {"writing manifest", "", 0, 0}));
  std::vector<std::pair<std::string, std::string>> blobs;
  for (const StagedBlob& s : staged) {
    if (!s.tmp.path().empty()) blobs.emplace_back(s.tmp.path(), s.ref.digest);
  }
  Commit(m, blobs);
  for (StagedBlob& s : staged) s.tmp.Release();
  return Get(canonical);
}

std::optional<Manifest> Store::Find(const std::string& name) const {
  const std::string canonical = CanonicalName(name);
  const std::string path = ManifestPath(canonical);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  json j;
  try {
    j = json::parse(ReadSmallFile(path, kMaxManifestBytes));
  } catch (const json::exception& e) {
    throw EngineError(ErrorKind::kInvalidModel, "manifest " + path + " is not valid JSON: " + e.what());
  }
  try {
    return Manifest::FromJson(j, canonical);
  } catch (const EngineError& e) {
    throw EngineError(ErrorKind::kInvalidModel, "manifest " + path + ": " + e.what());
  }
}

Manifest Store::Get(const std::string& name) const {
  std::optional<Manifest> m = Find(name);
  if (!m) {
    throw EngineError(ErrorKind::kNotFound, "model '" + Printable(name) + "' is not in the store (" + root_ +
                                                "); `hearth list` shows what is");
  }
  return *m;
}

std::vector<Manifest> Store::List() const {
  std::vector<Manifest> out;
  std::error_code ec;
  for (const auto& dir : fs::directory_iterator(fs::path(root_) / "manifests", ec)) {
    if (!dir.is_directory()) continue;
    std::error_code ec2;
    for (const auto& file : fs::directory_iterator(dir.path(), ec2)) {
      if (!file.is_regular_file() || file.path().extension() != ".json") continue;
      const std::string name = dir.path().filename().string() + ":" + file.path().stem().string();
      if (!NameProblem(name).empty()) continue;
      try {
        if (auto m = Find(name)) out.push_back(std::move(*m));
      } catch (const EngineError&) {
        // unreadable: `hearth verify` reports it
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const Manifest& a, const Manifest& b) { return a.name < b.name; });
  return out;
}

void Store::CollectGarbage() {
  std::set<std::string> referenced;
  std::error_code ec;
  for (const auto& dir : fs::directory_iterator(fs::path(root_) / "manifests", ec)) {
    if (!dir.is_directory()) continue;
    std::error_code ec2;
    for (const auto& file : fs::directory_iterator(dir.path(), ec2)) {
      if (!file.is_regular_file() || file.path().extension() != ".json") continue;
      const std::string name = dir.path().filename().string() + ":" + file.path().stem().string();
      try {
        std::optional<Manifest> m = NameProblem(name).empty() ? Find(name) : std::nullopt;
        if (!m) return;  // a manifest we cannot read might reference anything: collect nothing
        referenced.insert(m->model.digest);
        for (const BlobRef& b : m->adapters) referenced.insert(b.digest);
      } catch (const EngineError&) {
        return;
      }
    }
  }
  if (ec) return;
  bool removed = false;
  for (const auto& blob : fs::directory_iterator(fs::path(root_) / "blobs", ec)) {
    const std::string digest = NormalizeDigest(blob.path().filename().string());
    if (digest.empty() || blob.path().filename().string().rfind("sha256-", 0) != 0) continue;
    if (referenced.count(digest) == 0) {
      std::error_code ec2;
      fs::remove(blob.path(), ec2);
      removed = true;
      std::lock_guard lock(Cache().mutex);
      Cache().entries.erase(blob.path().string());
    }
  }
  if (removed) FsyncDir(root_ + "/blobs");
}

void Store::Remove(const std::string& name) {
  const std::string canonical = CanonicalName(name);
  StoreLock lock(root_);
  const std::string path = ManifestPath(canonical);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) {
      throw EngineError(ErrorKind::kNotFound, "model '" + Printable(name) + "' is not in the store; `hearth list` shows what is");
    }
    IoError("cannot remove " + path);
  }
  const std::string dir = fs::path(path).parent_path().string();
  FsyncDir(dir);
  if (::rmdir(dir.c_str()) == 0) FsyncDir(root_ + "/manifests");  // fails while other tags remain
  CollectGarbage();
}

Manifest Store::Copy(const std::string& src, const std::string& dst) {
  const std::string to = CanonicalName(dst);
  Manifest m = Get(src);
  m.name = to;
  m.created_at.clear();
  Commit(m);
  return Get(to);
}

ResolvedModel Store::Resolve(const std::string& name) const {
  Manifest m = Get(name);
  const std::string path = BlobPath(m.model.digest);
  uint64_t size = 0;
  int64_t mtime = 0;
  if (!StatFile(path, size, mtime)) {
    throw EngineError(ErrorKind::kInvalidModel, "model '" + m.name + "': its blob " + m.model.digest +
                                                    " is missing from the store; pull or import the model again");
  }
  if (size != m.model.size) {
    throw EngineError(ErrorKind::kInvalidModel, "model '" + m.name + "': blob " + m.model.digest + " has " +
                                                    std::to_string(size) + " bytes, the manifest says " +
                                                    std::to_string(m.model.size) +
                                                    " (modified or truncated); run `hearth verify`, then pull or import it again");
  }
  if (!BlobMatchesName(path, m.model.digest, size, mtime)) {
    throw EngineError(ErrorKind::kInvalidModel, "model '" + m.name + "': blob " + m.model.digest +
                                                    " fails its sha256 check (modified or corrupted on disk); refusing to "
                                                    "load it. Run `hearth verify`, then pull or import the model again");
  }
  return {m.name, path, m};
}

void Store::CheckBlobPath(const std::string& path) const {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(path, ec);
  if (ec || p.parent_path() != fs::weakly_canonical(root_ + "/blobs", ec)) return;
  const std::string fn = p.filename().string();
  const std::string digest = fn.rfind("sha256-", 0) == 0 ? NormalizeDigest(fn) : "";
  if (digest.empty()) return;
  uint64_t size = 0;
  int64_t mtime = 0;
  if (!StatFile(p.string(), size, mtime)) {
    throw EngineError(ErrorKind::kInvalidModel, "blob " + digest + " is missing from the store " + root_ +
                                                    "; pull or import the model again");
  }
  if (!BlobMatchesName(p.string(), digest, size, mtime)) {
    throw EngineError(ErrorKind::kInvalidModel, "blob " + digest + " fails its sha256 check (modified or corrupted on "
                                                    "disk); refusing to load it. Run `hearth verify`, then pull or import "
                                                    "the model again");
  }
}

VerifyReport Store::Verify(const ProgressFn& progress) const {
  VerifyReport report;
  std::map<std::string, std::vector<std::string>> users;  // digest -> model names
  std::map<std::string, uint64_t> sizes;                  // digest -> size a manifest records
  std::error_code ec;
  for (const auto& dir : fs::directory_iterator(fs::path(root_) / "manifests", ec)) {
    if (!dir.is_directory()) continue;
    std::error_code ec2;
    for (const auto& file : fs::directory_iterator(dir.path(), ec2)) {
      if (!file.is_regular_file() || file.path().extension() != ".json") continue;
      const std::string name = dir.path().filename().string() + ":" + file.path().stem().string();
      if (!NameProblem(name).empty()) {
        report.problems.push_back("manifest " + file.path().string() + " has an invalid model name");
        continue;
      }
      try {
        Manifest m = Get(name);
        std::vector<BlobRef> refs = m.adapters;
        refs.insert(refs.begin(), m.model);
        for (const BlobRef& r : refs) {
          users[r.digest].push_back(m.name);
          uint64_t size = 0;
          int64_t mtime = 0;
          if (!StatFile(BlobPath(r.digest), size, mtime)) {
            report.problems.push_back("model '" + m.name + "': blob " + r.digest + " is missing");
          } else if (size != r.size) {
            report.problems.push_back("model '" + m.name + "': blob " + r.digest + " has " + std::to_string(size) +
                                      " bytes, the manifest says " + std::to_string(r.size));
          }
          sizes[r.digest] = r.size;
        }
      } catch (const EngineError& e) {
        report.problems.push_back(e.what());
      }
    }
  }
  std::vector<fs::path> blobs;
  for (const auto& blob : fs::directory_iterator(fs::path(root_) / "blobs", ec)) blobs.push_back(blob.path());
  std::sort(blobs.begin(), blobs.end());
  for (const fs::path& p : blobs) {
    BlobCheck check;
    check.path = p.string();
    const std::string fn = p.filename().string();
    check.digest = fn.rfind("sha256-", 0) == 0 ? NormalizeDigest(fn) : "";
    if (check.digest.empty()) {
      report.problems.push_back("unexpected file in blobs/: " + check.path);
      continue;
    }
    check.models = users[check.digest];
    std::sort(check.models.begin(), check.models.end());
    check.models.erase(std::unique(check.models.begin(), check.models.end()), check.models.end());
    std::error_code ec2;
    check.size = fs::file_size(p, ec2);
    try {
      const std::string digest = "sha256:" + Sha256File(check.path, [&](uint64_t done, uint64_t total) {
        return Emit(progress, {"verifying " + ShortDigest(check.digest), check.digest, total, done});
      });
      if (digest != check.digest) check.problem = "content hashes to " + digest + " (corrupt or tampered)";
      RememberHash(check.path, check.problem.empty());
    } catch (const EngineError& e) {
      if (std::string(e.what()) == "cancelled") throw;
      check.problem = e.what();
    }
    report.blobs.push_back(std::move(check));
  }
  return report;
}

std::string Store::RenderModelfile(const Manifest& m) const {
  std::string out = "# Modelfile for " + m.name + " (hearth show --modelfile)\n";
  out += "# to build a new model from this one, replace FROM with: FROM " + m.name + "\n";
  out += "FROM " + BlobPath(m.model.digest) + "\n";
  for (const BlobRef& a : m.adapters) out += "ADAPTER " + BlobPath(a.digest) + "\n";
  for (const auto& [key, value] : m.parameters.Lines()) out += "PARAMETER " + key + " " + value + "\n";
  if (m.system) out += "SYSTEM " + QuoteModelfileText(*m.system) + "\n";
  if (m.template_text) out += "TEMPLATE " + QuoteModelfileText(*m.template_text) + "\n";
  for (const std::string& l : m.licenses) out += "LICENSE " + QuoteModelfileText(l) + "\n";
  return out;
}

}  // namespace hearth::store
