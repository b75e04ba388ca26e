#include "audit/audit_log.h"

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

namespace hearth::audit {

namespace {

namespace fs = std::filesystem;

const std::string kGenesisHash(64, '0');
constexpr int kSchemaVersion = 1;

// ---- SQLite, thinly wrapped: every error names the log's path. ----

class Db {
 public:
  Db() = default;
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  ~Db() {
    for (auto& [sql, entry] : statements_) sqlite3_finalize(entry.stmt);
    if (db_ != nullptr) sqlite3_close_v2(db_);
  }

  void Open(const std::string& path) {
    path_ = path;
    const int rc = sqlite3_open_v2(path.c_str(), &db_,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                   nullptr);
    if (rc != SQLITE_OK) Fail("cannot open", rc);
    sqlite3_extended_result_codes(db_, 1);
    // Another process (hearth serve next to `hearth audit verify`) may hold the write lock
    // briefly; wait for it rather than failing an audit append.
    sqlite3_busy_timeout(db_, 10000);
  }

  void Exec(const char* sql) {
    char* message = nullptr;
    const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &message);
    if (rc != SQLITE_OK) {
      std::string text = message != nullptr ? message : sqlite3_errstr(rc);
      sqlite3_free(message);
      throw std::runtime_error("audit log " + path_ + ": " + text);
    }
  }

  [[noreturn]] void Fail(const std::string& what, int rc) const {
    std::string message = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    throw std::runtime_error("audit log " + path_ + ": " + what + ": " + message);
  }

  sqlite3* get() const { return db_; }

  // Statements are compiled once per connection and reused: an audit append runs five, and
  // compiling them each time was a large part of its cost. Returns nullptr when `sql` is
  // already in use (a nested statement of the same text), so the caller compiles its own.
  sqlite3_stmt* Acquire(const char* sql) const {
    Cached& entry = statements_[sql];
    if (entry.in_use) return nullptr;
    if (entry.stmt == nullptr) {
      const int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &entry.stmt, nullptr);
      if (rc != SQLITE_OK) {
        statements_.erase(sql);
        Fail(std::string("cannot prepare \"") + sql + "\"", rc);
      }
    }
    entry.in_use = true;
    return entry.stmt;
  }
  void Release(sqlite3_stmt* stmt) const {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    statements_[sqlite3_sql(stmt)].in_use = false;
  }

 private:
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  sqlite3* db_ = nullptr;
  std::string path_;
  mutable std::unordered_map<std::string, Cached> statements_;
};

class Stmt {
 public:
  Stmt(const Db& db, const char* sql) : db_(db), stmt_(db.Acquire(sql)), cached_(stmt_ != nullptr) {
    if (cached_) return;
    const int rc = sqlite3_prepare_v2(db.get(), sql, -1, &stmt_, nullptr);
    if (rc != SQLITE_OK) db.Fail(std::string("cannot prepare \"") + sql + "\"", rc);
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() {
    if (cached_) {
      db_.Release(stmt_);
    } else {
      sqlite3_finalize(stmt_);
    }
  }

  // True for a row, false when done.
  bool Step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db_.Fail("cannot run \"" + std::string(sqlite3_sql(stmt_)) + "\"", rc);
  }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  void Bind(int index, int64_t value) { Check(sqlite3_bind_int64(stmt_, index, value)); }
  void Bind(int index, double value) { Check(sqlite3_bind_double(stmt_, index, value)); }
  void Bind(int index, const std::string& value) {
    // With an explicit length, so strings holding NUL bytes are kept whole.
    Check(sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT,
                              SQLITE_UTF8));
  }

  int Type(int column) const { return sqlite3_column_type(stmt_, column); }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  double Real(int column) const { return sqlite3_column_double(stmt_, column); }
  std::string Text(int column) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    const int bytes = sqlite3_column_bytes(stmt_, column);
    return text != nullptr ? std::string(text, static_cast<size_t>(bytes)) : std::string();
  }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK) db_.Fail("cannot bind a value", rc);
  }
  const Db& db_;
  sqlite3_stmt* stmt_ = nullptr;
  bool cached_ = false;
};

// Rolls back unless committed, so an exception mid-append leaves no partial record.
class Transaction {
 public:
  Transaction(Db& db, const char* begin) : db_(db) { Stmt(db_, begin).Step(); }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (open_) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void Commit() {
    Stmt(db_, "COMMIT").Step();
    open_ = false;
  }

 private:
  Db& db_;
  bool open_ = true;
};

int64_t QueryInt(const Db& db, const char* sql) {
  Stmt stmt(db, sql);
  if (!stmt.Step()) db.Fail(std::string("no result from \"") + sql + "\"", SQLITE_ERROR);
  return stmt.Int(0);
}

// ---- Schema. ----

// No AUTOINCREMENT: ids come from the head, so a gap means a deleted record.
// The triggers stop accidental edits through the sqlite3 shell; they are not a security
// boundary (anyone who can write the file can drop them), the hash chain is.
constexpr const char* kSchema = R"sql(
CREATE TABLE records (
  id INTEGER PRIMARY KEY,
  time TEXT NOT NULL,
  user TEXT NOT NULL,
  project TEXT NOT NULL,
  surface TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  rule TEXT NOT NULL,
  route TEXT NOT NULL,
  backend TEXT NOT NULL,
  model TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  bytes_sent INTEGER NOT NULL,
  sent_sha256 TEXT NOT NULL,
  findings TEXT NOT NULL,
  redactions TEXT NOT NULL,
  approval TEXT NOT NULL,
  notes TEXT NOT NULL,
  latency_ms REAL NOT NULL,
  cost_usd REAL NOT NULL,
  status TEXT NOT NULL,
  prompt TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE TABLE head (
  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
  count INTEGER NOT NULL,
  last_hash TEXT NOT NULL
);
INSERT INTO head (singleton, count, last_hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TRIGGER records_append_only_update BEFORE UPDATE ON records
  BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER records_append_only_delete BEFORE DELETE ON records
  BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER head_no_delete BEFORE DELETE ON head
  BEGIN SELECT RAISE(ABORT, 'the audit head cannot be deleted'); END;
CREATE TRIGGER head_forward_only BEFORE UPDATE ON head WHEN NEW.count != OLD.count + 1
  BEGIN SELECT RAISE(ABORT, 'the audit head only moves forward one record at a time'); END;
PRAGMA user_version = 1;
)sql";

constexpr const char* kColumns =
    "id, time, user, project, surface, endpoint, rule, route, backend, model, prompt_tokens, "
    "completion_tokens, bytes_sent, sent_sha256, findings, redactions, approval, notes, "
    "latency_ms, cost_usd, status, prompt, prev_hash, hash";

enum class Kind { kInt, kReal, kText, kJson };
struct Column {
  const char* name;
  Kind kind;
};
constexpr Column kColumnKinds[] = {
    {"id", Kind::kInt},          {"time", Kind::kText},        {"user", Kind::kText},
    {"project", Kind::kText},    {"surface", Kind::kText},     {"endpoint", Kind::kText},
    {"rule", Kind::kText},       {"route", Kind::kText},       {"backend", Kind::kText},
    {"model", Kind::kText},      {"prompt_tokens", Kind::kInt}, {"completion_tokens", Kind::kInt},
    {"bytes_sent", Kind::kInt},  {"sent_sha256", Kind::kText}, {"findings", Kind::kJson},
    {"redactions", Kind::kJson}, {"approval", Kind::kText},    {"notes", Kind::kText},
    {"latency_ms", Kind::kReal}, {"cost_usd", Kind::kReal},    {"status", Kind::kText},
    {"prompt", Kind::kText},     {"prev_hash", Kind::kText},   {"hash", Kind::kText},
};

// ---- Canonical JSON. ----

// Length of the valid UTF-8 sequence at s[0..n), or 0 when s[0] does not start one
// (overlong forms, surrogates and code points past U+10FFFF are invalid).
size_t ValidUtf8Length(const unsigned char* s, size_t n) {
  const unsigned char c = s[0];
  auto cont = [&](size_t i) { return i < n && (s[i] & 0xC0) == 0x80; };
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  if (c < 0xE0) return cont(1) ? 2 : 0;
  if (c < 0xF0) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;
    if (c == 0xED && s[1] >= 0xA0) return 0;
    return 3;
  }
  if (c < 0xF5) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && s[1] < 0x90) return 0;
    if (c == 0xF4 && s[1] >= 0x90) return 0;
    return 4;
  }
  return 0;
}

void AppendHex2(std::string& out, unsigned value) {
  static const char kHex[] = "0123456789abcdef";
  out += kHex[(value >> 4) & 0xF];
  out += kHex[value & 0xF];
}

void AppendString(std::string& out, const std::string& value) {
  out += '"';
  const auto* s = reinterpret_cast<const unsigned char*>(value.data());
  const size_t n = value.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    switch (c) {
      case '"': out += "\\\""; ++i; continue;
      case '\\': out += "\\\\"; ++i; continue;
      case '\b': out += "\\b"; ++i; continue;
      case '\f': out += "\\f"; ++i; continue;
      case '\n': out += "\\n"; ++i; continue;
      case '\r': out += "\\r"; ++i; continue;
      case '\t': out += "\\t"; ++i; continue;
      default: break;
    }
    if (c < 0x20) {
      out += "\\u00";
      AppendHex2(out, c);
      ++i;
      continue;
    }
    const size_t length = ValidUtf8Length(s + i, n - i);
    if (length == 0) {
      // A lone surrogate escape: never produced by valid UTF-8, so the mapping is one-to-one.
      out += "\\udc";
      AppendHex2(out, c);
      ++i;
      continue;
    }
    out.append(value, i, length);
    i += length;
  }
  out += '"';
}

void AppendKey(std::string& out, const char* key) {
  if (out.size() > 1) out += ',';
  out += '"';
  out += key;
  out += "\":";
}

void AppendInt(std::string& out, int64_t value) { out += std::to_string(value); }

void AppendDouble(std::string& out, double value) {
  // Shortest text that reads back as the same double: exact and stable across runs.
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, result.ptr);
}

std::string DumpJson(const nlohmann::json& value) {
  // nlohmann's objects are key-sorted maps and its doubles shortest round-trip, so this text
  // is stable: parsing it and dumping again gives the same bytes.
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string Canonical(const AuditRecord& r, const std::string& findings,
                      const std::string& redactions) {
  std::string out = "{";
  AppendKey(out, "id"); AppendInt(out, r.id);
  AppendKey(out, "time"); AppendString(out, r.time);
  AppendKey(out, "user"); AppendString(out, r.user);
  AppendKey(out, "project"); AppendString(out, r.project);
  AppendKey(out, "surface"); AppendString(out, r.surface);
  AppendKey(out, "endpoint"); AppendString(out, r.endpoint);
  AppendKey(out, "rule"); AppendString(out, r.rule);
  AppendKey(out, "route"); AppendString(out, r.route);
  AppendKey(out, "backend"); AppendString(out, r.backend);
  AppendKey(out, "model"); AppendString(out, r.model);
  AppendKey(out, "prompt_tokens"); AppendInt(out, r.prompt_tokens);
  AppendKey(out, "completion_tokens"); AppendInt(out, r.completion_tokens);
  AppendKey(out, "bytes_sent"); AppendInt(out, r.bytes_sent);
  AppendKey(out, "sent_sha256"); AppendString(out, r.sent_sha256);
  AppendKey(out, "findings"); out += findings;
  AppendKey(out, "redactions"); out += redactions;
  AppendKey(out, "approval"); AppendString(out, r.approval);
  AppendKey(out, "notes"); AppendString(out, r.notes);
  AppendKey(out, "latency_ms"); AppendDouble(out, r.latency_ms);
  AppendKey(out, "cost_usd"); AppendDouble(out, r.cost_usd);
  AppendKey(out, "status"); AppendString(out, r.status);
  AppendKey(out, "prompt"); AppendString(out, r.prompt);
  AppendKey(out, "prev_hash"); AppendString(out, r.prev_hash);
  out += '}';
  return out;
}

std::string Sha256Hex(const std::string& a, const std::string& b) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  const bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx, a.data(), a.size()) == 1 &&
                  EVP_DigestUpdate(ctx, b.data(), b.size()) == 1 &&
                  EVP_DigestFinal_ex(ctx, digest, &length) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) throw std::runtime_error("audit log: OpenSSL sha256 failed");
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned i = 0; i < length; ++i) AppendHex2(hex, digest[i]);
  return hex;
}

std::string RecordHash(const AuditRecord& r, const std::string& findings,
                       const std::string& redactions) {
  return Sha256Hex(r.prev_hash, Canonical(r, findings, redactions));
}

std::string NowRfc3339() {
  const auto now = std::chrono::system_clock::now();
  const int64_t ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buffer;
}

// ---- Rows. ----

struct Row {
  AuditRecord record;
  std::string findings_text, redactions_text;  // as stored
  std::string problem;  // why this row cannot be what Append wrote ("" when it could be)
};

nlohmann::json ParseStoredJson(const std::string& text, const char* name, std::string& problem) {
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    if (problem.empty()) problem = std::string(name) + " is not valid JSON";
    return nlohmann::json(text);
  }
  // Append stores DumpJson's bytes; anything else (even reformatting) was written by hand.
  if (problem.empty() && DumpJson(value) != text) {
    problem = std::string(name) + " is not the JSON text that was written";
  }
  return value;
}

Row ReadRow(const Stmt& stmt) {
  Row row;
  for (int i = 0; i < static_cast<int>(std::size(kColumnKinds)); ++i) {
    const int type = stmt.Type(i);
    const Kind kind = kColumnKinds[i].kind;
    const int expected = kind == Kind::kInt    ? SQLITE_INTEGER
                         : kind == Kind::kReal ? SQLITE_FLOAT
                                               : SQLITE_TEXT;
    if (type != expected && row.problem.empty()) {
      row.problem = std::string(kColumnKinds[i].name) + " has the wrong type";
    }
  }
  AuditRecord& r = row.record;
  int c = 0;
  r.id = stmt.Int(c++);
  r.time = stmt.Text(c++);
  r.user = stmt.Text(c++);
  r.project = stmt.Text(c++);
  r.surface = stmt.Text(c++);
  r.endpoint = stmt.Text(c++);
  r.rule = stmt.Text(c++);
  r.route = stmt.Text(c++);
  r.backend = stmt.Text(c++);
  r.model = stmt.Text(c++);
  r.prompt_tokens = stmt.Int(c++);
  r.completion_tokens = stmt.Int(c++);
  r.bytes_sent = stmt.Int(c++);
  r.sent_sha256 = stmt.Text(c++);
  row.findings_text = stmt.Text(c++);
  row.redactions_text = stmt.Text(c++);
  r.approval = stmt.Text(c++);
  r.notes = stmt.Text(c++);
  r.latency_ms = stmt.Real(c++);
  r.cost_usd = stmt.Real(c++);
  r.status = stmt.Text(c++);
  r.prompt = stmt.Text(c++);
  r.prev_hash = stmt.Text(c++);
  r.hash = stmt.Text(c++);
  r.findings = ParseStoredJson(row.findings_text, "findings", row.problem);
  r.redactions = ParseStoredJson(row.redactions_text, "redactions", row.problem);
  return row;
}

std::string Range(const char* noun, int64_t first, int64_t last) {
  if (first == last) return std::string(noun) + " " + std::to_string(first);
  return std::string(noun) + "s " + std::to_string(first) + ".." + std::to_string(last);
}

// Creates the missing directories above `path` with mode 0700: the log may hold prompts.
void CreateParentDirectories(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) return;
  std::vector<fs::path> missing;
  std::error_code ec;
  for (fs::path p = parent; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0700) != 0 && errno != EEXIST) {
      throw std::runtime_error("audit log " + path + ": cannot create directory " +
                               it->string() + ": " + std::generic_category().message(errno));
    }
  }
  if (!fs::is_directory(parent, ec)) {
    throw std::runtime_error("audit log " + path + ": " + parent.string() +
                             " is not a directory");
  }
}

void WriteRecord(Db& db, const AuditRecord& record, const std::string& findings,
                 const std::string& redactions) {
  Stmt insert(db,
              "INSERT INTO records (id, time, user, project, surface, endpoint, rule, route, "
              "backend, model, prompt_tokens, completion_tokens, bytes_sent, sent_sha256, "
              "findings, redactions, approval, notes, latency_ms, cost_usd, status, prompt, "
              "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
              "?, ?, ?, ?, ?)");
  int i = 1;
  insert.Bind(i++, record.id);
  insert.Bind(i++, record.time);
  insert.Bind(i++, record.user);
  insert.Bind(i++, record.project);
  insert.Bind(i++, record.surface);
  insert.Bind(i++, record.endpoint);
  insert.Bind(i++, record.rule);
  insert.Bind(i++, record.route);
  insert.Bind(i++, record.backend);
  insert.Bind(i++, record.model);
  insert.Bind(i++, record.prompt_tokens);
  insert.Bind(i++, record.completion_tokens);
  insert.Bind(i++, record.bytes_sent);
  insert.Bind(i++, record.sent_sha256);
  insert.Bind(i++, findings);
  insert.Bind(i++, redactions);
  insert.Bind(i++, record.approval);
  insert.Bind(i++, record.notes);
  insert.Bind(i++, record.latency_ms);
  insert.Bind(i++, record.cost_usd);
  insert.Bind(i++, record.status);
  insert.Bind(i++, record.prompt);
  insert.Bind(i++, record.prev_hash);
  insert.Bind(i++, record.hash);
  insert.Step();

  Stmt update(db, "UPDATE head SET count = ?, last_hash = ? WHERE singleton = 1");
  update.Bind(1, record.id);
  update.Bind(2, record.hash);
  update.Step();
}

// ---- In-flight notes. ----

constexpr const char* kInFlightSchema =
    "CREATE TABLE IF NOT EXISTS in_flight (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, "
    "record TEXT NOT NULL)";

std::string ReadFirstLine(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return "";
  char buffer[512] = {};
  const bool ok = std::fgets(buffer, sizeof buffer, f) != nullptr;
  std::fclose(f);
  std::string line = ok ? buffer : "";
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return line;
}

// Field 22 of /proc/PID/stat (start time in clock ticks since boot): with the boot id it tells
// a live owner from a later process that reused its pid. "" when the process does not exist
// or has exited (a zombie its parent has not reaped yet).
std::string ProcessStartTime(long pid) {
  const std::string stat = ReadFirstLine("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');  // the command name may contain spaces and parentheses
  if (close == std::string::npos || close + 2 >= stat.size()) return "";
  std::string rest = stat.substr(close + 2);  // field 3 (state) onwards
  if (rest[0] == 'Z' || rest[0] == 'X') return "";
  for (int field = 3; field < 22; ++field) {
    const size_t space = rest.find(' ');
    if (space == std::string::npos) return "";
    rest.erase(0, space + 1);
  }
  return rest.substr(0, rest.find(' '));
}

std::string OwnerOf(long pid) {
  return ReadFirstLine("/proc/sys/kernel/random/boot_id") + "/" + std::to_string(pid) + "/" +
         ProcessStartTime(pid);
}

bool OwnerAlive(const std::string& owner) {
  const size_t a = owner.find('/');
  const size_t b = owner.find('/', a == std::string::npos ? a : a + 1);
  if (a == std::string::npos || b == std::string::npos) return false;
  char* end = nullptr;
  const long pid = std::strtol(owner.c_str() + a + 1, &end, 10);
  if (end != owner.c_str() + b || pid <= 0) return false;
  return OwnerOf(pid) == owner && !ProcessStartTime(pid).empty();
}

// The text fields a note keeps (all a record has before its request ends).
constexpr std::pair<const char*, std::string AuditRecord::*> kNoteTextFields[] = {
    {"time", &AuditRecord::time},         {"user", &AuditRecord::user},
    {"project", &AuditRecord::project},   {"surface", &AuditRecord::surface},
    {"endpoint", &AuditRecord::endpoint}, {"rule", &AuditRecord::rule},
    {"route", &AuditRecord::route},       {"backend", &AuditRecord::backend},
    {"model", &AuditRecord::model},       {"sent_sha256", &AuditRecord::sent_sha256},
    {"approval", &AuditRecord::approval}, {"notes", &AuditRecord::notes},
    {"prompt", &AuditRecord::prompt}};

nlohmann::json NoteJson(const AuditRecord& r) {
  nlohmann::json j = {{"bytes_sent", r.bytes_sent}, {"findings", r.findings}, {"redactions", r.redactions}};
  for (const auto& [key, field] : kNoteTextFields) j[key] = r.*field;
  return j;
}

// A note as an "interrupted" record; fields a damaged note lacks stay empty.
AuditRecord RecordFromNote(const std::string& text) {
  AuditRecord r;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    j = nlohmann::json::object();
    r.notes = "the in-flight note was damaged";
  }
  for (const auto& [key, field] : kNoteTextFields) {
    if (j.contains(key) && j[key].is_string()) r.*field = j[key].get<std::string>();
  }
  if (j.contains("bytes_sent") && j["bytes_sent"].is_number_integer()) r.bytes_sent = j["bytes_sent"].get<int64_t>();
  if (j.contains("findings") && j["findings"].is_array()) r.findings = j["findings"];
  if (j.contains("redactions") && j["redactions"].is_array()) r.redactions = j["redactions"];
  r.status = "interrupted: hearth stopped while this request was in flight (recorded at the next start)";
  return r;
}

// What a record and an in-flight note both get before they are written.
void FillDefaults(AuditRecord& record, const AuditOptions& options) {
  if (!options.store_prompts) record.prompt.clear();
  if (record.time.empty()) record.time = NowRfc3339();
}

// Validates and fills what Append assigns before the lock; returns the JSON texts.
std::pair<std::string, std::string> PrepareRecord(AuditRecord& record, const AuditOptions& options) {
  if (!std::isfinite(record.latency_ms) || !std::isfinite(record.cost_usd)) {
    throw std::invalid_argument("audit record: latency_ms and cost_usd must be finite");
  }
  if (record.latency_ms == 0) record.latency_ms = 0;  // -0.0 -> 0.0
  if (record.cost_usd == 0) record.cost_usd = 0;
  FillDefaults(record, options);
  return {DumpJson(record.findings), DumpJson(record.redactions)};
}

enum class NoteGone { kAppendAnyway, kSkip };

// Chains `record` onto the head and deletes in-flight note `note` (0: none), in one
// transaction. When the note is already gone and `if_gone` is kSkip (recovery: another
// process converted it first), appends nothing and returns 0. The caller holds the write mutex.
int64_t AppendLocked(Db& db, const std::string& path, AuditRecord& record, const std::string& findings,
                     const std::string& redactions, int64_t note, NoteGone if_gone = NoteGone::kAppendAnyway) {
  // IMMEDIATE takes the write lock before the head is read, so two processes appending to one
  // file cannot both chain onto the same record.
  Transaction txn(db, "BEGIN IMMEDIATE");
  if (note > 0) {
    Stmt remove(db, "DELETE FROM in_flight WHERE id = ?");
    remove.Bind(1, note);
    remove.Step();
    if (sqlite3_changes(db.get()) == 0 && if_gone == NoteGone::kSkip) return 0;  // rolls back
  }
  {
    Stmt head(db, "SELECT count, last_hash FROM head WHERE singleton = 1");
    if (!head.Step()) {
      throw std::runtime_error("audit log " + path +
                               ": the head is missing (the file was tampered with); "
                               "run `hearth audit verify`");
    }
    record.id = head.Int(0) + 1;
    record.prev_hash = head.Text(1);
  }
  record.hash = RecordHash(record, findings, redactions);
  WriteRecord(db, record, findings, redactions);
  txn.Commit();
  return record.id;
}

// Appends the notes of processes that are gone as "interrupted" records; returns how many.
int64_t RecoverInterrupted(Db& db, const std::string& path, const AuditOptions& options) {
  db.Exec(kInFlightSchema);
  std::vector<std::pair<int64_t, std::string>> orphans;
  {
    Stmt notes(db, "SELECT id, owner, record FROM in_flight ORDER BY id");
    while (notes.Step()) {
      if (!OwnerAlive(notes.Text(1))) orphans.emplace_back(notes.Int(0), notes.Text(2));
    }
  }
  int64_t recovered = 0;
  for (const auto& [id, text] : orphans) {
    AuditRecord record = RecordFromNote(text);
    auto [findings, redactions] = PrepareRecord(record, options);
    if (AppendLocked(db, path, record, findings, redactions, id, NoteGone::kSkip) > 0) ++recovered;
  }
  return recovered;
}

}  // namespace

// Copies the WAL back into the database file on its own thread and connection, so that no
// append pays for a checkpoint (SQLite's automatic one runs inside the commit that crosses
// 1000 WAL pages: a few ms, every ~150 requests, and it fsyncs). A PASSIVE checkpoint never
// blocks the writer; the next append after a complete one starts the WAL file over.
class Checkpointer {
 public:
  explicit Checkpointer(const std::string& path) {
    db_.Open(path);
    db_.Exec("SELECT count(*) FROM sqlite_master");  // a connection sees WAL mode once it has read
    thread_ = std::thread([this] { Run(); });
  }
  ~Checkpointer() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  // Called after each committed append (write lock held): wakes the thread every kEvery.
  void Committed() {
    if (++pending_ % kEvery != 0) return;
    {
      std::lock_guard lock(mu_);
      due_ = true;
    }
    cv_.notify_one();
  }

 private:
  static constexpr uint64_t kEvery = 64;  // appends (~8 WAL pages each)
  void Run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || due_; });
      if (stop_) return;
      due_ = false;
      lock.unlock();
      // A failure here (e.g. the disk is full) leaves the pages in the WAL, where they are
      // as durable as in the database file; the next round or the close tries again.
      sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      lock.lock();
    }
  }
  Db db_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool due_ = false;
  uint64_t pending_ = 0;  // guarded by the log's write_mutex
  std::thread thread_;
};

struct AuditLog::Impl {
  AuditOptions options;
  std::string owner = OwnerOf(static_cast<long>(::getpid()));  // written into in-flight notes
  bool in_flight_ready = false;  // the in_flight table exists (guarded by write_mutex)
  std::mutex write_mutex;
  Db writer;
  std::mutex read_mutex;
  Db reader;
  std::unique_ptr<Checkpointer> checkpointer;  // declared last: stopped before the connections close
};

AuditLog::AuditLog(std::string path, std::unique_ptr<Impl> impl)
    : path_(std::move(path)), impl_(std::move(impl)) {}

AuditLog::~AuditLog() = default;

std::unique_ptr<AuditLog> AuditLog::Open(const std::string& path, AuditOptions options) {
  if (path.empty()) throw std::runtime_error("audit log: empty path");
  CreateParentDirectories(path);
  // Create the file ourselves so it is private from the start; SQLite gives its -wal and -shm
  // files the same mode.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw std::runtime_error("audit log " + path + ": cannot open: " +
                             std::generic_category().message(errno));
  }
  ::close(fd);

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->writer.Open(path);
  impl->writer.Exec("PRAGMA journal_mode = WAL");
  impl->writer.Exec(options.sync_every_record ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
  // Check without the write lock first: a busy hearth serve appends back to back, and
  // `hearth audit verify` next to it should not wait in line for a lock it does not need.
  auto has_records_table = [&] {
    return QueryInt(impl->writer, "SELECT count(*) FROM sqlite_master "
                                  "WHERE type = 'table' AND name = 'records'") != 0;
  };
  const int64_t schema = QueryInt(impl->writer, "PRAGMA user_version");
  if (schema > kSchemaVersion) {
    throw std::runtime_error("audit log " + path + ": schema version " + std::to_string(schema) +
                             " is newer than this hearth (" + std::to_string(kSchemaVersion) +
                             ")");
  }
  // Only a new file gets the schema: re-creating a deleted head or trigger would hide
  // tampering from Verify.
  if (!has_records_table()) {
    Transaction txn(impl->writer, "BEGIN IMMEDIATE");
    if (!has_records_table()) impl->writer.Exec(kSchema);  // another process may have won
    txn.Commit();
  }
  int64_t recovered = 0;
  if (options.recover_interrupted) {
    recovered = RecoverInterrupted(impl->writer, path, options);
    impl->in_flight_ready = true;
  }
  impl->reader.Open(path);
  impl->reader.Exec("PRAGMA query_only = ON");
  impl->writer.Exec("PRAGMA wal_autocheckpoint = 0");
  impl->checkpointer = std::make_unique<Checkpointer>(path);
  std::unique_ptr<AuditLog> log(new AuditLog(path, std::move(impl)));
  log->recovered_at_open_ = recovered;
  return log;
}

int64_t AuditLog::Append(AuditRecord record) { return Append(std::move(record), 0); }

int64_t AuditLog::Append(AuditRecord record, int64_t in_flight_note) {
  auto [findings, redactions] = PrepareRecord(record, impl_->options);
  std::lock_guard<std::mutex> lock(impl_->write_mutex);
  const int64_t id = AppendLocked(impl_->writer, path_, record, findings, redactions, in_flight_note);
  impl_->checkpointer->Committed();
  return id;
}

int64_t AuditLog::NoteInFlight(const AuditRecord& partial) {
  AuditRecord note = partial;
  FillDefaults(note, impl_->options);
  const std::string text = DumpJson(NoteJson(note));
  std::lock_guard<std::mutex> lock(impl_->write_mutex);
  Db& db = impl_->writer;
  if (!impl_->in_flight_ready) {
    db.Exec(kInFlightSchema);
    impl_->in_flight_ready = true;
  }
  Stmt insert(db, "INSERT INTO in_flight (owner, record) VALUES (?, ?)");
  insert.Bind(1, impl_->owner);
  insert.Bind(2, text);
  insert.Step();
  return sqlite3_last_insert_rowid(db.get());
}

VerifyReport AuditLog::Verify() const {
  std::lock_guard<std::mutex> lock(impl_->read_mutex);
  Db& db = impl_->reader;
  // One read transaction: the records and the head come from the same snapshot even while
  // another thread or process appends.
  Transaction txn(db, "BEGIN");
  VerifyReport report;
  Stmt count(db, "SELECT count(*) FROM records");
  count.Step();
  report.records = count.Int(0);
  if (QueryInt(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'in_flight'") != 0) {
    report.in_flight = QueryInt(db, "SELECT count(*) FROM in_flight");
  }
  auto fail = [&](int64_t id, std::string problem) {
    report.ok = false;
    report.first_bad_id = id;
    report.problem = std::move(problem);
    return report;
  };
  auto id_with_hash = [&](const std::string& hash) -> int64_t {
    Stmt find(db, "SELECT id FROM records WHERE hash = ? ORDER BY id LIMIT 1");
    find.Bind(1, hash);
    return find.Step() ? find.Int(0) : 0;
  };

  Stmt walk(db, (std::string("SELECT ") + kColumns + " FROM records ORDER BY id").c_str());
  int64_t expected_id = 1;
  std::string prev_hash = kGenesisHash;
  while (walk.Step()) {
    Row row = ReadRow(walk);
    const AuditRecord& r = row.record;
    if (r.id != expected_id) {
      if (r.id < expected_id) {
        return fail(r.id, "record " + std::to_string(r.id) + " is forged (ids start at 1)");
      }
      if (expected_id == 1) {
        return fail(1, Range("record", 1, r.id - 1) + (r.id - 1 > 1 ? " are" : " is") +
                           " missing (ids start at " + std::to_string(r.id) + ")");
      }
      return fail(expected_id, Range("record", expected_id, r.id - 1) +
                                   (r.id - 1 > expected_id ? " are" : " is") +
                                   " missing (ids jump from " + std::to_string(expected_id - 1) +
                                   " to " + std::to_string(r.id) + ")");
    }
    const std::string id = std::to_string(r.id);
    if (!row.problem.empty()) {
      return fail(r.id, "record " + id + " was edited (" + row.problem + ")");
    }
    const bool self_ok = RecordHash(r, row.findings_text, row.redactions_text) == r.hash;
    const bool link_ok = r.prev_hash == prev_hash;
    if (!link_ok) {
      // Diagnose from where the record's link points.
      const int64_t chained_to = id_with_hash(r.prev_hash);
      if (chained_to >= r.id) {
        return fail(r.id, "records reordered: record " + id + " is chained after record " +
                              std::to_string(chained_to));
      }
      if (chained_to > 0 && chained_to < r.id - 1) {
        return fail(chained_to + 1,
                    Range("record", chained_to + 1, r.id - 1) +
                        (r.id - 1 > chained_to + 1 ? " were" : " was") + " inserted (record " +
                        id + " is chained to record " + std::to_string(chained_to) + ")");
      }
      if (!self_ok) return fail(r.id, "record " + id + " was edited (hash mismatch)");
      if (r.id == 1) return fail(1, "chain broken at 1: prev_hash is not the genesis value");
      return fail(r.id, "chain broken at " + id + ": prev_hash does not match record " +
                            std::to_string(r.id - 1));
    }
    if (!self_ok) return fail(r.id, "record " + id + " was edited (hash mismatch)");
    prev_hash = r.hash;
    ++expected_id;
  }

  const int64_t records = expected_id - 1;
  Stmt head(db, "SELECT count, last_hash FROM head WHERE singleton = 1");
  if (!head.Step()) return fail(0, "the head is missing");
  const int64_t head_count = head.Int(0);
  const std::string head_hash = head.Text(1);
  const std::string says = "the head says " + std::to_string(head_count) + " records";
  if (head_count > records) {
    return fail(records + 1,
                Range("record", records + 1, head_count) +
                    (head_count > records + 1 ? " are" : " is") + " missing at the end (" + says +
                    ", the log " +
                    (records == 0 ? std::string("is empty")
                                  : "has " + std::to_string(records)) +
                    ")");
  }
  if (head_count < records) {
    return fail(head_count + 1, Range("record", head_count + 1, records) +
                                    " not covered by the head (" + says +
                                    "): appended outside hearth, or the head was edited");
  }
  if (head_hash != prev_hash) {
    return fail(records, "the head's hash does not match record " + std::to_string(records) +
                             " (the head was edited, or record " + std::to_string(records) +
                             " was replaced)");
  }
  report.ok = true;
  return report;  // the read transaction ends (rolls back) after the statements are gone
}

std::vector<AuditRecord> AuditLog::Read(int64_t after_id, int64_t limit) const {
  std::lock_guard<std::mutex> lock(impl_->read_mutex);
  Stmt stmt(impl_->reader,
            (std::string("SELECT ") + kColumns + " FROM records WHERE id > ? ORDER BY id LIMIT ?")
                .c_str());
  stmt.Bind(1, after_id);
  stmt.Bind(2, limit > 0 ? limit : int64_t{-1});
  std::vector<AuditRecord> records;
  while (stmt.Step()) records.push_back(ReadRow(stmt).record);
  return records;
}

void AuditLog::ExportJsonl(std::ostream& out, int64_t after_id) const {
  std::lock_guard<std::mutex> lock(impl_->read_mutex);
  // One statement reads one snapshot, however long the export takes.
  Stmt stmt(impl_->reader,
            (std::string("SELECT ") + kColumns + " FROM records WHERE id > ? ORDER BY id").c_str());
  stmt.Bind(1, after_id);
  std::string line;
  while (stmt.Step()) {
    const Row row = ReadRow(stmt);
    line = Canonical(row.record, row.findings_text, row.redactions_text);
    line.pop_back();  // '}'
    line += ",\"hash\":";
    AppendString(line, row.record.hash);
    line += "}\n";
    out << line;
    if (!out) throw std::runtime_error("audit log " + path_ + ": export: write failed");
  }
}

AuditLog::Head AuditLog::ReadHead() const {
  std::lock_guard<std::mutex> lock(impl_->read_mutex);
  Stmt stmt(impl_->reader, "SELECT count, last_hash FROM head WHERE singleton = 1");
  if (!stmt.Step()) throw std::runtime_error("audit log " + path_ + ": the head is missing");
  return Head{stmt.Int(0), stmt.Text(1)};
}

std::string CanonicalRecordJson(const AuditRecord& r) {
  return Canonical(r, DumpJson(r.findings), DumpJson(r.redactions));
}

std::string DefaultAuditPath() {
  if (const char* env = std::getenv("HEARTH_AUDIT_DB"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') {
    throw std::runtime_error("no audit log path: set HEARTH_AUDIT_DB or HOME");
  }
  return (fs::path(home) / ".local" / "share" / "hearth" / "audit.db").string();
}

}  // namespace hearth::audit
