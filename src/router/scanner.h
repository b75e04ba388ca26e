// Finds secrets and personal data in text before it may leave the machine, and tells which
// file paths are sensitive. Two cheap passes over the whole text point at candidates: Vectorscan
// over literal anchors only (no start-of-match tracking, no character classes: those cost it
// 30x), and one SIMD pass for clusters of digits, long base64 runs and '@'. Exact boundaries
// and validation (Luhn, mod-97, mod-11, JWT header, entropy, context) happen only there.
// Findings are sorted by offset and never overlap: of two overlapping candidates the longer
// wins. Thread-safe: compile once (tens of ms), Scan from many threads. docs/privacy.md lists
// the rules.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace hearth::router {

enum class FindingKind { kSecret, kPersonalData, kCustom };
std::string_view ToString(FindingKind kind);  // "secret", "personal_data", "custom"

struct Finding {
  std::string rule;  // e.g. "aws_access_key_id", "email", "card_number", or a custom pattern's name
  FindingKind kind;
  size_t offset;  // bytes into the scanned text
  size_t length;
  bool operator==(const Finding&) const = default;
};

// A custom pattern is Vectorscan (PCRE-like) syntax: no backreferences or lookaround; use (?i)
// for case-insensitive matching. A pattern that can match the empty string is rejected.
struct CustomPattern {
  std::string name;
  std::string regex;
  FindingKind kind = FindingKind::kCustom;
};

struct ScannerConfig {
  std::vector<CustomPattern> custom;
  bool high_entropy = true;  // the generic "random-looking token in an assignment" detector
  // Globs like "data/patients/**", "*.pem", ".env"; see IsSensitivePath.
  std::vector<std::string> sensitive_paths;
  // Labels (matched case-insensitively) that introduce a medical record number: "MRN: 0012345".
  std::vector<std::string> mrn_labels{"MRN", "medical record number"};
};

class Scanner {
 public:
  // Throws std::invalid_argument naming the bad custom pattern and Vectorscan's compile error.
  explicit Scanner(const ScannerConfig& config);
  ~Scanner();
  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  std::vector<Finding> Scan(std::string_view text) const;

  // Glob match against the configured patterns: "**" any number of directories, "*" any run
  // within one segment, "?" one character (never '/'). A pattern without '/' matches any single
  // segment at any depth (so ".env" matches "app/.env" and "secrets" every file under a
  // "secrets" directory); a pattern with '/' matches the whole path or any tail of it that starts
  // at a segment (paths from clients may be absolute); a leading '/' anchors it to the start of
  // the path, as in .gitignore.
  bool IsSensitivePath(std::string_view path) const;

  // Built-in rules in detection order, then the custom patterns' names.
  const std::vector<std::string>& rule_names() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The glob matcher behind IsSensitivePath, for one pattern against one whole path.
bool GlobMatch(std::string_view pattern, std::string_view path);

}  // namespace hearth::router
