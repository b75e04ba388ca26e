// The audit log against real SQLite files: round trips, the hash chain, and tampering done
// the way an attacker would, through a separate raw sqlite3 connection.
#include "audit/audit_log.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_support.h"

namespace hearth::audit {
namespace {

namespace fs = std::filesystem;

std::string FreshPath(const std::string& name) {
  const fs::path dir = fs::path(test::TempDir()) / "audit";
  fs::create_directories(dir);
  const fs::path path = dir / (name + ".db");
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path.string() + suffix);
  return path.string();
}

std::string TestName() {
  return ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

AuditRecord Sample(int i) {
  AuditRecord r;
  r.user = "user" + std::to_string(i % 3);
  r.project = "hearth";
  r.surface = "openai";
  r.endpoint = "chat";
  r.rule = i % 2 == 0 ? "default-local" : "cloud-ok";
  r.route = i % 2 == 0 ? "local" : "cloud";
  r.backend = i % 2 == 0 ? "local:qwen" : "anthropic";
  r.model = "qwen2.5-coder";
  r.prompt_tokens = 100 + i;
  r.completion_tokens = 20 + i;
  r.bytes_sent = i % 2 == 0 ? 0 : 1234 + i;
  r.sent_sha256 = i % 2 == 0 ? "" : std::string(64, 'a');
  r.findings = nlohmann::json::array({{{"rule", "aws-key"}, {"kind", "secret"}, {"count", i}}});
  r.redactions = nlohmann::json::array({{{"placeholder", "[SECRET_1]"}, {"rule", "aws-key"}}});
  r.approval = "none";
  r.notes = "";
  r.latency_ms = 12.5 + i;
  r.cost_usd = 0.001 * i;
  r.status = "ok";
  r.prompt = "prompt " + std::to_string(i);
  return r;
}

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  char buffer[3];
  for (unsigned i = 0; i < length; ++i) {
    std::snprintf(buffer, sizeof buffer, "%02x", digest[i]);
    hex += buffer;
  }
  return hex;
}

// What an attacker with write access to the file does: a plain sqlite3 connection. The
// append-only triggers are a guard against accidents, not a boundary, so they go first.
void Tamper(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  const std::string all =
      "DROP TRIGGER IF EXISTS records_append_only_update;"
      "DROP TRIGGER IF EXISTS records_append_only_delete;"
      "DROP TRIGGER IF EXISTS head_no_delete;"
      "DROP TRIGGER IF EXISTS head_forward_only;" +
      sql;
  const int rc = sqlite3_exec(db, all.c_str(), nullptr, nullptr, &error);
  const std::string message = error != nullptr ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << message << "\nSQL: " << sql;
}

// Runs sql without touching the triggers; returns SQLite's error message ("" on success).
std::string RawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  std::string message = error != nullptr ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  return message;
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

// An SQL INSERT of a record, all of whose fields are already set (including the chain).
std::string InsertSql(const AuditRecord& r) {
  std::ostringstream sql;
  sql.precision(17);
  sql << "INSERT INTO records VALUES (" << r.id << "," << Quote(r.time) << "," << Quote(r.user)
      << "," << Quote(r.project) << "," << Quote(r.surface) << "," << Quote(r.endpoint) << ","
      << Quote(r.rule) << "," << Quote(r.route) << "," << Quote(r.backend) << ","
      << Quote(r.model) << "," << r.prompt_tokens << "," << r.completion_tokens << ","
      << r.bytes_sent << "," << Quote(r.sent_sha256) << "," << Quote(r.findings.dump()) << ","
      << Quote(r.redactions.dump()) << "," << Quote(r.approval) << "," << Quote(r.notes) << ","
      << r.latency_ms << "," << r.cost_usd << "," << Quote(r.status) << "," << Quote(r.prompt)
      << "," << Quote(r.prev_hash) << "," << Quote(r.hash) << ");";
  return sql.str();
}

// A log of `n` records, closed again, for tampering.
std::string MakeLog(int n, AuditOptions options = {}) {
  const std::string path = FreshPath(TestName());
  auto log = AuditLog::Open(path, options);
  for (int i = 1; i <= n; ++i) EXPECT_EQ(log->Append(Sample(i)), i);
  EXPECT_TRUE(log->Verify().ok);
  return path;
}

VerifyReport VerifyFile(const std::string& path) { return AuditLog::Open(path)->Verify(); }

// "2024-05-01T12:00:00.123Z" (std::regex trips GCC 12's -Wmaybe-uninitialized under ASan).
bool IsRfc3339Millis(const std::string& t) {
  const std::string shape = "dddd-dd-ddTdd:dd:dd.dddZ";
  if (t.size() != shape.size()) return false;
  for (size_t i = 0; i < t.size(); ++i) {
    if (shape[i] == 'd' ? !std::isdigit(static_cast<unsigned char>(t[i])) : t[i] != shape[i]) {
      return false;
    }
  }
  return true;
}

void ExpectEqual(const AuditRecord& a, const AuditRecord& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.time, b.time);
  EXPECT_EQ(a.user, b.user);
  EXPECT_EQ(a.project, b.project);
  EXPECT_EQ(a.surface, b.surface);
  EXPECT_EQ(a.endpoint, b.endpoint);
  EXPECT_EQ(a.rule, b.rule);
  EXPECT_EQ(a.route, b.route);
  EXPECT_EQ(a.backend, b.backend);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.prompt_tokens, b.prompt_tokens);
  EXPECT_EQ(a.completion_tokens, b.completion_tokens);
  EXPECT_EQ(a.bytes_sent, b.bytes_sent);
  EXPECT_EQ(a.sent_sha256, b.sent_sha256);
  EXPECT_EQ(a.findings, b.findings);
  EXPECT_EQ(a.redactions, b.redactions);
  EXPECT_EQ(a.approval, b.approval);
  EXPECT_EQ(a.notes, b.notes);
  // Bit-exact, not approximately equal.
  EXPECT_EQ(std::memcmp(&a.latency_ms, &b.latency_ms, sizeof(double)), 0)
      << a.latency_ms << " vs " << b.latency_ms;
  EXPECT_EQ(std::memcmp(&a.cost_usd, &b.cost_usd, sizeof(double)), 0)
      << a.cost_usd << " vs " << b.cost_usd;
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.prompt, b.prompt);
}

TEST(AuditLog, AppendReadRoundTripIsExact) {
  const std::string path = FreshPath(TestName());
  auto log = AuditLog::Open(path, {.store_prompts = true});
  std::vector<AuditRecord> written;

  AuditRecord a = Sample(1);
  a.user = "Zoë 李雷 🚀";
  a.notes = std::string("nul\0inside, \"quotes\", back\\slash, tab\t, newline\n, bell\x07", 52);
  a.prompt = "invalid UTF-8: \xff\xfe \xc3( \xed\xa0\x80 end";  // bytes kept as they are
  a.prompt_tokens = std::numeric_limits<int64_t>::max();
  a.completion_tokens = std::numeric_limits<int64_t>::min();
  a.bytes_sent = 9007199254740993;  // not representable as a double
  a.latency_ms = 0.1;
  a.cost_usd = 1e-300;
  a.findings = nlohmann::json::array(
      {{{"rule", "r"}, {"kind", "k"}, {"count", 18446744073709551615ULL}, {"x", 0.1}}});
  written.push_back(a);

  AuditRecord b = Sample(2);
  b.latency_ms = std::numeric_limits<double>::max();
  b.cost_usd = std::numeric_limits<double>::denorm_min();
  b.time = "2024-01-02T03:04:05.678Z";  // a caller-supplied time is kept
  written.push_back(b);

  AuditRecord c = Sample(3);
  c.latency_ms = 123456.789;
  c.cost_usd = 3.0;
  c.findings = nlohmann::json::array();
  c.redactions = nlohmann::json::array();
  written.push_back(c);

  for (size_t i = 0; i < written.size(); ++i) {
    EXPECT_EQ(log->Append(written[i]), static_cast<int64_t>(i + 1));
  }
  const std::vector<AuditRecord> read = log->Read();
  ASSERT_EQ(read.size(), written.size());
  std::string prev = std::string(64, '0');
  for (size_t i = 0; i < read.size(); ++i) {
    AuditRecord expected = written[i];
    expected.id = static_cast<int64_t>(i + 1);
    if (expected.time.empty()) expected.time = read[i].time;
    EXPECT_TRUE(IsRfc3339Millis(read[i].time)) << read[i].time;
    ExpectEqual(read[i], expected);
    EXPECT_EQ(read[i].prev_hash, prev);
    EXPECT_EQ(read[i].hash, Sha256Hex(read[i].prev_hash + CanonicalRecordJson(read[i])));
    prev = read[i].hash;
  }
  EXPECT_EQ(read[1].time, "2024-01-02T03:04:05.678Z");

  // After a reopen, too (values come from the file, not a cache).
  log.reset();
  log = AuditLog::Open(path);
  const std::vector<AuditRecord> reread = log->Read();
  ASSERT_EQ(reread.size(), read.size());
  for (size_t i = 0; i < read.size(); ++i) ExpectEqual(reread[i], read[i]);
  EXPECT_TRUE(log->Verify().ok) << log->Verify().problem;

  EXPECT_EQ(log->Read(1, 1).size(), 1u);
  EXPECT_EQ(log->Read(1, 1)[0].id, 2);
  EXPECT_EQ(log->Read(0, 0).size(), 3u);
  EXPECT_TRUE(log->Read(3).empty());
}

TEST(AuditLog, NegativeZeroIsStoredAsZeroAndNonFiniteIsRefused) {
  auto log = AuditLog::Open(FreshPath(TestName()));
  AuditRecord r = Sample(1);
  r.latency_ms = -0.0;
  log->Append(r);
  EXPECT_FALSE(std::signbit(log->Read()[0].latency_ms));
  r.latency_ms = std::nan("");
  EXPECT_THROW(log->Append(r), std::invalid_argument);
  r.latency_ms = 1;
  r.cost_usd = std::numeric_limits<double>::infinity();
  EXPECT_THROW(log->Append(r), std::invalid_argument);
  EXPECT_EQ(log->Read().size(), 1u);
  EXPECT_TRUE(log->Verify().ok);
}

TEST(AuditLog, CanonicalJsonIsPinned) {
  // Changing these bytes would make every existing log fail to verify.
  AuditRecord r;
  r.id = 7;
  r.time = "2024-05-01T12:00:00.000Z";
  r.user = "ann";
  r.route = "cloud";
  r.prompt_tokens = 3;
  r.findings = nlohmann::json::array({{{"rule", "email"}, {"kind", "pii"}, {"count", 2}}});
  r.notes = "a\"b\\c\n\x01\xff";
  r.latency_ms = 1.5;
  r.cost_usd = 0.1;
  r.prev_hash = std::string(64, '0');
  r.hash = "ignored";
  EXPECT_EQ(CanonicalRecordJson(r),
            R"({"id":7,"time":"2024-05-01T12:00:00.000Z","user":"ann","project":"","surface":"",)"
            R"("endpoint":"","rule":"","route":"cloud","backend":"","model":"","prompt_tokens":3,)"
            R"("completion_tokens":0,"bytes_sent":0,"sent_sha256":"",)"
            R"("findings":[{"count":2,"kind":"pii","rule":"email"}],"redactions":[],)"
            R"("approval":"","notes":"a\"b\\c\n\u0001\udcff","latency_ms":1.5,"cost_usd":0.1,)"
            R"("status":"","prompt":"","prev_hash":")" +
                std::string(64, '0') + R"("})");
}

TEST(AuditLog, EmptyLogVerifiesAndHasGenesisHead) {
  auto log = AuditLog::Open(FreshPath(TestName()));
  const VerifyReport report = log->Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records, 0);
  EXPECT_EQ(log->ReadHead().records, 0);
  EXPECT_EQ(log->ReadHead().last_hash, std::string(64, '0'));
}

TEST(AuditLog, VerifyOk) {
  const std::string path = MakeLog(10);
  const VerifyReport report = VerifyFile(path);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records, 10);
  EXPECT_EQ(report.first_bad_id, 0);
  EXPECT_EQ(report.problem, "");
  auto log = AuditLog::Open(path);
  EXPECT_EQ(log->ReadHead().records, 10);
  EXPECT_EQ(log->ReadHead().last_hash, log->Read(9, 1)[0].hash);
}

TEST(AuditLog, TriggersStopAccidentalEdits) {
  const std::string path = MakeLog(3);
  EXPECT_NE(RawExec(path, "UPDATE records SET user = 'x' WHERE id = 2").find("append-only"),
            std::string::npos);
  EXPECT_NE(RawExec(path, "DELETE FROM records WHERE id = 3").find("append-only"),
            std::string::npos);
  EXPECT_NE(RawExec(path, "DELETE FROM head").find("cannot be deleted"), std::string::npos);
  EXPECT_NE(RawExec(path, "UPDATE head SET count = 2").find("forward"), std::string::npos);
  EXPECT_TRUE(VerifyFile(path).ok);
}

TEST(AuditLog, EditedMiddleRecordIsNamed) {
  const std::string path = MakeLog(10);
  Tamper(path, "UPDATE records SET user = 'mallory' WHERE id = 5");
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 5);
  EXPECT_EQ(report.problem, "record 5 was edited (hash mismatch)");
  EXPECT_EQ(report.records, 10);
}

TEST(AuditLog, EveryEditedColumnIsDetected) {
  const std::vector<std::string> edits = {
      "time = '2020-01-01T00:00:00.000Z'", "user = user || 'x'", "project = 'other'",
      "surface = 'ollama'", "endpoint = 'generate'", "rule = 'allow-all'", "route = 'local'",
      "backend = 'x'", "model = 'gpt'", "prompt_tokens = prompt_tokens + 1",
      "completion_tokens = 0", "bytes_sent = 0", "sent_sha256 = ''", "findings = '[]'",
      "redactions = '[]'", "approval = 'approved:eve'", "notes = 'n'",
      "latency_ms = latency_ms + 0.000001", "cost_usd = 0", "status = 'error: x'",
      "prompt = 'injected'", "prev_hash = '" + std::string(64, '1') + "'",
      "hash = '" + std::string(64, '2') + "'",
      // Same value, different storage: a byte-for-byte text in a BLOB, reformatted JSON.
      "user = CAST(user AS BLOB)", "findings = ' ' || findings"};
  for (const std::string& edit : edits) {
    SCOPED_TRACE(edit);
    const std::string path = MakeLog(7);
    Tamper(path, "UPDATE records SET " + edit + " WHERE id = 5");
    const VerifyReport report = VerifyFile(path);
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.first_bad_id, 5) << report.problem;
    EXPECT_NE(report.problem.find("record 5 was edited"), std::string::npos) << report.problem;
  }
}

TEST(AuditLog, EditWithRecomputedHashBreaksTheNextLink) {
  const std::string path = MakeLog(10);
  AuditRecord forged = AuditLog::Open(path)->Read(7, 1)[0];  // record 8
  forged.user = "mallory";
  forged.hash = Sha256Hex(forged.prev_hash + CanonicalRecordJson(forged));
  Tamper(path, "DELETE FROM records WHERE id = 8;" + InsertSql(forged));
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 9);
  EXPECT_EQ(report.problem, "chain broken at 9: prev_hash does not match record 8");
}

TEST(AuditLog, DeletedMiddleRecord) {
  const std::string path = MakeLog(10);
  Tamper(path, "DELETE FROM records WHERE id = 5");
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 5);
  EXPECT_EQ(report.problem, "record 5 is missing (ids jump from 4 to 6)");
  EXPECT_EQ(report.records, 9);
}

TEST(AuditLog, DeletedFirstRecords) {
  const std::string path = MakeLog(10);
  Tamper(path, "DELETE FROM records WHERE id <= 3");
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 1);
  EXPECT_EQ(report.problem, "records 1..3 are missing (ids start at 4)");
}

TEST(AuditLog, DeletedLastRecordIsCaughtByTheHead) {
  const std::string path = MakeLog(10);
  Tamper(path, "DELETE FROM records WHERE id = 10");
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 10);
  EXPECT_EQ(report.problem,
            "record 10 is missing at the end (the head says 10 records, the log has 9)");
}

TEST(AuditLog, DeletedAndRenumberedIsDetected) {
  const std::string path = MakeLog(10);
  Tamper(path,
         "DELETE FROM records WHERE id = 5;"
         "UPDATE records SET id = -id WHERE id > 5;"
         "UPDATE records SET id = -id - 1 WHERE id < 0;"
         "UPDATE head SET count = 9;");
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 5);
}

TEST(AuditLog, SwappedIdsAreReported) {
  const std::string path = MakeLog(10);
  Tamper(path,
         "UPDATE records SET id = -1 WHERE id = 3;"
         "UPDATE records SET id = 3 WHERE id = 4;"
         "UPDATE records SET id = 4 WHERE id = -1;");
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 3);
  EXPECT_EQ(report.problem, "records reordered: record 3 is chained after record 4");
}

TEST(AuditLog, ForgedRecordAppendedBehindHearthsBack) {
  const std::string path = MakeLog(10);
  // The attacker knows the algorithm and chains the forgery correctly, but the head is
  // written by Append only.
  AuditRecord forged = Sample(11);
  forged.id = 11;
  forged.time = "2024-01-01T00:00:00.000Z";
  forged.prompt = "";
  forged.prev_hash = AuditLog::Open(path)->Read(9, 1)[0].hash;
  forged.hash = Sha256Hex(forged.prev_hash + CanonicalRecordJson(forged));
  Tamper(path, InsertSql(forged));
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 11);
  EXPECT_EQ(report.problem,
            "record 11 not covered by the head (the head says 10 records): appended outside "
            "hearth, or the head was edited");
  // And hearth refuses to chain onto it.
  EXPECT_THROW(AuditLog::Open(path)->Append(Sample(12)), std::runtime_error);
}

TEST(AuditLog, ForgedRecordInsertedInTheMiddle) {
  const std::string path = MakeLog(10);
  AuditRecord forged = Sample(99);
  forged.id = 5;
  forged.time = "2024-01-01T00:00:00.000Z";
  forged.prompt = "";
  forged.prev_hash = AuditLog::Open(path)->Read(3, 1)[0].hash;  // record 4
  forged.hash = Sha256Hex(forged.prev_hash + CanonicalRecordJson(forged));
  Tamper(path,
         "UPDATE records SET id = -id WHERE id >= 5;"
         "UPDATE records SET id = 1 - id WHERE id < 0;" +  // 5..10 -> 6..11
             InsertSql(forged) +
             "UPDATE head SET count = 11, last_hash = (SELECT hash FROM records WHERE id = 11);");
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 5);
  EXPECT_EQ(report.problem, "record 5 was inserted (record 6 is chained to record 4)");
}

TEST(AuditLog, ForgedRecordWithIdZero) {
  const std::string path = MakeLog(3);
  AuditRecord forged = Sample(0);
  forged.prev_hash = std::string(64, '0');
  forged.hash = Sha256Hex(forged.prev_hash + CanonicalRecordJson(forged));
  Tamper(path, InsertSql(forged));
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 0);
  EXPECT_EQ(report.problem, "record 0 is forged (ids start at 1)");
}

TEST(AuditLog, TruncatedTable) {
  const std::string path = MakeLog(10);
  Tamper(path, "DELETE FROM records");
  const VerifyReport report = VerifyFile(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_id, 1);
  EXPECT_EQ(report.records, 0);
  EXPECT_EQ(report.problem,
            "records 1..10 are missing at the end (the head says 10 records, the log is empty)");
}

TEST(AuditLog, EditedHead) {
  {
    const std::string path = MakeLog(10);
    Tamper(path, "UPDATE head SET count = 9");
    const VerifyReport report = VerifyFile(path);
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.first_bad_id, 10);
    EXPECT_NE(report.problem.find("not covered by the head"), std::string::npos)
        << report.problem;
  }
  {
    const std::string path = MakeLog(10);
    Tamper(path, "UPDATE head SET count = 12");
    const VerifyReport report = VerifyFile(path);
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.first_bad_id, 11);
    EXPECT_EQ(report.problem,
              "records 11..12 are missing at the end (the head says 12 records, the log has 10)");
  }
  {
    const std::string path = MakeLog(10);
    Tamper(path, "UPDATE head SET last_hash = '" + std::string(64, 'f') + "'");
    const VerifyReport report = VerifyFile(path);
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.first_bad_id, 10);
    EXPECT_EQ(report.problem,
              "the head's hash does not match record 10 (the head was edited, or record 10 was "
              "replaced)");
  }
  {
    const std::string path = MakeLog(10);
    Tamper(path, "DELETE FROM head");
    auto log = AuditLog::Open(path);  // reopening must not quietly recreate the head
    const VerifyReport report = log->Verify();
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.problem, "the head is missing");
    EXPECT_EQ(report.first_bad_id, 0);
    EXPECT_THROW(log->Append(Sample(11)), std::runtime_error);
    EXPECT_THROW(log->ReadHead(), std::runtime_error);
  }
}

TEST(AuditLog, RewrittenChainNeedsAnExternalAnchor) {
  // The documented limit: whoever rewrites every record *and* the head passes Verify. Only a
  // head hash kept elsewhere (`hearth audit head`) exposes it.
  const std::string path = MakeLog(5);
  const AuditLog::Head anchor = AuditLog::Open(path)->ReadHead();
  std::vector<AuditRecord> records = AuditLog::Open(path)->Read();
  std::string sql = "DELETE FROM records;";
  std::string prev = std::string(64, '0');
  for (AuditRecord& r : records) {
    if (r.id == 2) r.user = "mallory";
    r.prev_hash = prev;
    r.hash = Sha256Hex(r.prev_hash + CanonicalRecordJson(r));
    prev = r.hash;
    sql += InsertSql(r);
  }
  sql += "UPDATE head SET last_hash = '" + prev + "';";
  Tamper(path, sql);
  auto log = AuditLog::Open(path);
  EXPECT_TRUE(log->Verify().ok);
  EXPECT_NE(log->Read(anchor.records - 1, 1)[0].hash, anchor.last_hash);
}

TEST(AuditLog, ReopenKeepsTheChain) {
  const std::string path = FreshPath(TestName());
  {
    auto log = AuditLog::Open(path);
    for (int i = 1; i <= 3; ++i) log->Append(Sample(i));
  }
  {
    auto log = AuditLog::Open(path);
    for (int i = 4; i <= 6; ++i) EXPECT_EQ(log->Append(Sample(i)), i);
    const std::vector<AuditRecord> records = log->Read();
    ASSERT_EQ(records.size(), 6u);
    EXPECT_EQ(records[3].prev_hash, records[2].hash);
    const VerifyReport report = log->Verify();
    EXPECT_TRUE(report.ok) << report.problem;
    EXPECT_EQ(report.records, 6);
  }
}

// Appends never run a checkpoint themselves (a few ms, with fsyncs, inside one request);
// a background thread copies the WAL into the database file, so neither grows unbounded.
TEST(AuditLog, CheckpointsRunInTheBackground) {
  const std::string path = FreshPath(TestName());
  auto log = AuditLog::Open(path);
  const auto main_size = [&] { return fs::file_size(path); };
  const uintmax_t empty = main_size();
  for (int i = 1; i <= 1000; ++i) log->Append(Sample(i));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (main_size() < empty + 200 * 1024 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(main_size(), empty + 200 * 1024) << "the records reached the database file while the log was open";
  EXPECT_LT(fs::file_size(path + "-wal"), 16u << 20) << "the WAL starts over after a checkpoint";
  const VerifyReport report = log->Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records, 1000);
}

TEST(AuditLog, ConcurrentAppendsFormOneChain) {
  const std::string path = FreshPath(TestName());
  auto log = AuditLog::Open(path);
  constexpr int kThreads = 8, kPerThread = 200;
  std::atomic<bool> done{false};
  std::atomic<int> verify_failures{0};
  // Verify while appending: each snapshot must be consistent.
  std::thread verifier([&] {
    while (!done) {
      if (!log->Verify().ok) ++verify_failures;
    }
  });
  std::vector<std::thread> threads;
  std::vector<std::vector<int64_t>> ids(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        AuditRecord r = Sample(i);
        r.user = "thread" + std::to_string(t);
        ids[t].push_back(log->Append(r));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  done = true;
  verifier.join();
  EXPECT_EQ(verify_failures, 0);
  std::vector<int64_t> all;
  for (const auto& v : ids) {
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), 1600u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int64_t>(i + 1));
  const VerifyReport report = log->Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records, 1600);
}

TEST(AuditLog, TwoHandlesOnOneFileShareTheChain) {
  // Like two processes: separate connections, serialised by SQLite's write lock.
  const std::string path = FreshPath(TestName());
  auto a = AuditLog::Open(path);
  auto b = AuditLog::Open(path);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      AuditLog& log = t % 2 == 0 ? *a : *b;
      for (int i = 0; i < 50; ++i) log.Append(Sample(i));
    });
  }
  for (auto& thread : threads) thread.join();
  const VerifyReport report = a->Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records, 200);
}

TEST(AuditLog, KilledWriterLeavesWholeRecordsOnly) {
  const std::string path = FreshPath(TestName());
  AuditLog::Open(path);  // create the schema before forking
  const pid_t parent = getpid();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      auto log = AuditLog::Open(path);
      AuditRecord r = Sample(1);
      r.notes = std::string(4096, 'n');  // multi-page records: more to tear
      // Bounded, and gone with the parent, so a failing test cannot leave a writer behind.
      for (int i = 0; i < 100000 && getppid() == parent; ++i) log->Append(r);
    } catch (...) {
    }
    _exit(0);
  }
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      kill(pid, SIGKILL);
      int status = 0;
      waitpid(pid, &status, 0);
    }
  };
  {
    Reaper reaper{child};
    auto log = AuditLog::Open(path);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (log->ReadHead().records < 20 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }  // killed mid-stream, most likely inside an fsync
  auto log = AuditLog::Open(path);
  const VerifyReport report = log->Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_GE(report.records, 20);
  EXPECT_EQ(log->ReadHead().records, report.records);
  EXPECT_EQ(log->Append(Sample(2)), report.records + 1);
  EXPECT_TRUE(log->Verify().ok);
}

int64_t InFlightNotes(const std::string& path) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  int64_t n = -1;
  if (sqlite3_prepare_v2(db, "SELECT count(*) FROM in_flight", -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    n = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return n;
}

TEST(AuditLog, InFlightNoteIsReplacedByItsRecord) {
  const std::string path = FreshPath(TestName());
  auto log = AuditLog::Open(path, AuditOptions{.recover_interrupted = true});
  const int64_t note = log->NoteInFlight(Sample(1));
  EXPECT_EQ(InFlightNotes(path), 1);
  // A note of a process that still runs (this one) is left alone by another Open.
  auto other = AuditLog::Open(path, AuditOptions{.recover_interrupted = true});
  EXPECT_EQ(other->recovered_at_open(), 0);
  EXPECT_EQ(InFlightNotes(path), 1);
  EXPECT_EQ(log->Append(Sample(1), note), 1);
  EXPECT_EQ(InFlightNotes(path), 0);
  EXPECT_EQ(log->ReadHead().records, 1);
  EXPECT_TRUE(log->Verify().ok);
}

TEST(AuditLog, NotesOfAKilledProcessBecomeInterruptedRecords) {
  const std::string path = FreshPath(TestName());
  AuditLog::Open(path)->Append(Sample(0));
  AuditRecord sent = Sample(3);
  sent.sent_sha256 = std::string(64, 'a');
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // writes its note, then dies before the record (as under SIGKILL)
    try {
      AuditLog::Open(path)->NoteInFlight(sent);
    } catch (...) {
      _exit(1);
    }
    _exit(0);
  }
  // Wait for it to exit but leave it unreaped: a zombie counts as gone.
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT), 0);
  ASSERT_EQ(info.si_code, CLD_EXITED);
  ASSERT_EQ(info.si_status, 0);
  struct Reap {
    pid_t pid;
    ~Reap() { waitpid(pid, nullptr, 0); }
  } reap{child};
  EXPECT_EQ(InFlightNotes(path), 1);
  // Readers (hearth audit show/verify) do not convert notes; verify counts them.
  EXPECT_EQ(AuditLog::Open(path)->recovered_at_open(), 0);
  EXPECT_EQ(AuditLog::Open(path)->Verify().in_flight, 1);
  EXPECT_EQ(InFlightNotes(path), 1);

  auto log = AuditLog::Open(path, AuditOptions{.recover_interrupted = true});
  EXPECT_EQ(log->recovered_at_open(), 1);
  EXPECT_EQ(InFlightNotes(path), 0);
  const std::vector<AuditRecord> records = log->Read(0, 0);
  ASSERT_EQ(records.size(), 2u);
  const AuditRecord& r = records[1];
  EXPECT_EQ(r.status.rfind("interrupted", 0), 0u) << r.status;
  EXPECT_EQ(r.route, sent.route);
  EXPECT_EQ(r.backend, sent.backend);
  EXPECT_EQ(r.bytes_sent, sent.bytes_sent);
  EXPECT_EQ(r.sent_sha256, sent.sent_sha256);
  EXPECT_EQ(r.findings, sent.findings);
  EXPECT_EQ(r.user, sent.user);
  EXPECT_TRUE(log->Verify().ok);
}

TEST(AuditLog, DamagedNoteStillBecomesARecord) {
  const std::string path = FreshPath(TestName());
  AuditLog::Open(path)->NoteInFlight(Sample(1));
  EXPECT_EQ(RawExec(path, "UPDATE in_flight SET owner = 'gone/1/1', record = 'not json'"), "");
  auto log = AuditLog::Open(path, AuditOptions{.recover_interrupted = true});
  EXPECT_EQ(log->recovered_at_open(), 1);
  const std::vector<AuditRecord> records = log->Read(0, 0);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status.rfind("interrupted", 0), 0u);
  EXPECT_NE(records[0].notes.find("damaged"), std::string::npos);
  EXPECT_TRUE(log->Verify().ok);
}

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(AuditLog, PromptsAreNotStoredUnlessAsked) {
  const std::string secret = "the launch code is 0000-SWORDFISH";
  {
    const std::string path = FreshPath(TestName());
    auto log = AuditLog::Open(path);
    AuditRecord r = Sample(1);
    r.prompt = secret;
    log->Append(r);
    EXPECT_EQ(log->Read()[0].prompt, "");
    EXPECT_TRUE(log->Verify().ok);
    log.reset();
    // Not in the database, the WAL or anywhere else on disk.
    for (const char* suffix : {"", "-wal", "-shm"}) {
      EXPECT_EQ(FileBytes(path + suffix).find("SWORDFISH"), std::string::npos) << suffix;
    }
  }
  {
    auto log = AuditLog::Open(FreshPath(TestName() + "-stored"), {.store_prompts = true});
    AuditRecord r = Sample(1);
    r.prompt = secret;
    log->Append(r);
    EXPECT_EQ(log->Read()[0].prompt, secret);
  }
}

TEST(AuditLog, MissingDirectoriesAreCreatedPrivately) {
  const fs::path root = fs::path(test::TempDir()) / "audit-dirs";
  fs::remove_all(root);
  const std::string path = (root / "a" / "b" / "audit.db").string();
  auto log = AuditLog::Open(path);
  log->Append(Sample(1));
  struct stat st {};
  ASSERT_EQ(stat((root / "a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat((root / "a" / "b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((path + "-wal").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u);
}

TEST(AuditLog, UnusablePathsGiveClearErrors) {
  const fs::path root = fs::path(test::TempDir()) / "audit-bad";
  fs::create_directories(root);
  const std::string file = (root / "plain-file").string();
  std::ofstream(file) << "not a directory";
  auto message_of = [](const std::string& path) {
    try {
      AuditLog::Open(path);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  {
    // A regular file where a directory should be.
    const std::string path = file + "/sub/audit.db";
    const std::string message = message_of(path);
    EXPECT_NE(message.find(path), std::string::npos) << message;
  }
  {
    // A file that is not a SQLite database.
    const std::string path = (root / "garbage.db").string();
    std::ofstream(path) << std::string(4096, 'x');
    const std::string message = message_of(path);
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("not a database"), std::string::npos) << message;
  }
  EXPECT_NE(message_of("").find("empty path"), std::string::npos);
}

TEST(AuditLog, ExportJsonlParsesLineByLineAndRehashes) {
  const std::string path = MakeLog(5, {.store_prompts = true});
  auto log = AuditLog::Open(path);
  const std::vector<AuditRecord> records = log->Read();
  std::ostringstream out;
  log->ExportJsonl(out);
  std::istringstream in(out.str());
  std::string line;
  size_t n = 0;
  std::string prev = std::string(64, '0');
  while (std::getline(in, line)) {
    ASSERT_LT(n, records.size());
    const nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["id"], records[n].id);
    EXPECT_EQ(j["user"], records[n].user);
    EXPECT_EQ(j["findings"], records[n].findings);
    EXPECT_EQ(j["latency_ms"].get<double>(), records[n].latency_ms);
    EXPECT_EQ(j["prompt"], records[n].prompt);
    EXPECT_EQ(j["hash"], records[n].hash);
    // An outside tool can check the chain from the export alone: drop the hash key and hash.
    const std::string canonical = line.substr(0, line.rfind(",\"hash\":")) + "}";
    EXPECT_EQ(Sha256Hex(prev + canonical), records[n].hash);
    prev = records[n].hash;
    ++n;
  }
  EXPECT_EQ(n, records.size());

  std::ostringstream tail;
  log->ExportJsonl(tail, 3);
  const std::string text = tail.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  EXPECT_EQ(nlohmann::json::parse(text.substr(0, text.find('\n')))["id"], 4);
}

}  // namespace
}  // namespace hearth::audit
