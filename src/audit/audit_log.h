// The privacy gateway's audit log: one record per routed request, in a SQLite file, linked
// into a sha256 hash chain so that editing, deleting, inserting or reordering records after
// the fact is detected by Verify. Design, schema and limits: docs/audit.md.
//
// Contract:
//  - Append is the only writer of records. It assigns id (1, 2, 3, ...), time (when empty),
//    prev_hash and hash in one transaction (record + head): a record is either fully in the
//    log or not at all; how durable it is when Append returns is AuditOptions::sync_every_record.
//  - hash = sha256(prev_hash || CanonicalRecordJson(record)); record 1's prev_hash is 64 "0".
//  - A separate one-row head (record count, last hash) is updated in the same transaction, so
//    deleting the newest records is detected too. Rewriting the whole chain *and* the head is
//    not detectable from the file alone: anchor `hearth audit head` somewhere else.
//  - AuditLog is thread-safe. Appends are serialised inside (and across processes by SQLite's
//    write lock); reads use their own connection and do not block appends (WAL).
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace hearth::audit {

struct AuditRecord {
  int64_t id = 0;                                // assigned by Append (1, 2, 3, ...)
  std::string time;                              // RFC 3339 UTC with ms; Append fills it if empty
  std::string user, project, surface, endpoint;  // who, and through which API
  std::string rule;                              // the policy rule that fired
  std::string route;                             // "local" | "cloud" | "denied"
  std::string backend, model;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  int64_t bytes_sent = 0;    // bytes that left the machine (0 for local)
  std::string sent_sha256;   // hex sha256 of exactly the bytes sent, "" for local
  nlohmann::json findings = nlohmann::json::array();    // [{rule, kind, count}]
  nlohmann::json redactions = nlohmann::json::array();  // [{placeholder, rule}], never originals
  std::string approval;  // "none" | "header" | "approved:<who>" | "denied:<who>" | "timeout-local"
  std::string notes;     // failover / circuit-breaker switches, errors
  // Finite values only (Append throws std::invalid_argument otherwise: JSON and SQLite have no
  // NaN). -0.0 is stored as 0.0 because SQLite does not keep the sign of zero.
  double latency_ms = 0, cost_usd = 0;
  std::string status;    // "ok" | "error: ..." | "cancelled"
  std::string prompt;    // kept only when the log was opened with store_prompts, else ""
  std::string prev_hash, hash;  // hex sha256 chain, assigned by Append
};

struct AuditOptions {
  // Prompts are the most sensitive thing a gateway sees; by default the log proves *that*
  // something was sent (bytes_sent, sent_sha256) without keeping *what*.
  bool store_prompts = false;
  // false (default): WAL with synchronous=NORMAL. A committed record survives hearth crashing
  // or being killed (it is in the operating system's hands); a power loss or kernel crash may
  // drop the last records, and the chain stays consistent (verify passes, the head is older).
  // true: synchronous=FULL, one fsync per record: survives a power loss too, at about 1 ms per
  // request on a typical SSD-backed VM (docs/performance.md).
  bool sync_every_record = false;
  // hearth serve sets this: Open turns in-flight notes left by a process that no longer runs
  // (see NoteInFlight) into records with status "interrupted: ...".
  bool recover_interrupted = false;
};

struct VerifyReport {
  bool ok = false;
  int64_t records = 0;       // rows in the log
  int64_t first_bad_id = 0;  // the first record whose check failed (0 when ok, or when the
                             // head itself is gone); for a broken link the tampered record may
                             // be the one before it
  std::string problem;       // e.g. "record 7 was edited (hash mismatch)", "" when ok
  int64_t in_flight = 0;     // write-ahead notes (NoteInFlight) not yet replaced by a record
};

class AuditLog {
 public:
  // Opens or creates the log at `path`, creating missing parent directories (mode 0700) and a
  // new file with mode 0600. Throws std::runtime_error naming the path and SQLite's message.
  static std::unique_ptr<AuditLog> Open(const std::string& path, AuditOptions options = {});
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Durable when it returns. Returns the new record's id. Throws std::runtime_error on SQLite
  // errors or a log whose head is gone, std::invalid_argument on non-finite doubles.
  int64_t Append(AuditRecord record);

  // Write-ahead note for a request about to leave the machine, written before its first byte
  // is sent: a hearth that dies mid-request (crash, SIGKILL, out of memory) still leaves a
  // trace. Append(record, note) deletes the note in the same transaction as the record; an
  // Open with recover_interrupted appends the notes of processes that are gone as records
  // with status "interrupted: ...". Notes sit outside the hash chain until converted. Returns
  // the note's id. Throws like Append.
  int64_t NoteInFlight(const AuditRecord& partial);
  int64_t Append(AuditRecord record, int64_t in_flight_note);
  // Notes converted into "interrupted" records by Open (recover_interrupted).
  int64_t recovered_at_open() const { return recovered_at_open_; }

  // Recomputes the whole chain and compares it with the head. Never throws for a tampered
  // file (tampering is reported); throws std::runtime_error when the file cannot be read.
  VerifyReport Verify() const;

  // Records with id > after_id in id order; limit <= 0 means all of them.
  std::vector<AuditRecord> Read(int64_t after_id = 0, int64_t limit = 100) const;

  // One line per record with id > after_id: its canonical JSON with "hash" appended as the
  // last key, so each line can be re-hashed by other tools (docs/audit.md).
  void ExportJsonl(std::ostream& out, int64_t after_id = 0) const;

  struct Head {
    int64_t records = 0;
    std::string last_hash;  // 64 "0" for an empty log
  };
  // The head as stored: what to anchor outside the machine. Throws when the head is gone.
  Head ReadHead() const;

  const std::string& path() const { return path_; }

 private:
  struct Impl;
  AuditLog(std::string path, std::unique_ptr<Impl> impl);
  std::string path_;
  std::unique_ptr<Impl> impl_;
  int64_t recovered_at_open_ = 0;
};

// The exact bytes hashed: every field but `hash`, in declaration order, no whitespace.
// Strings are raw UTF-8 with JSON escapes; bytes that are not valid UTF-8 become "\udcXX"
// (XX = the byte), which valid UTF-8 can never produce, so the encoding stays one-to-one.
// Doubles use the shortest text that reads back as the same double.
std::string CanonicalRecordJson(const AuditRecord& r);

// $HEARTH_AUDIT_DB, else ~/.local/share/hearth/audit.db. Throws when neither is set.
std::string DefaultAuditPath();

}  // namespace hearth::audit
