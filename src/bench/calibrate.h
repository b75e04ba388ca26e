// `hearth bench --calibrate --policy FILE`: writes the measured crossover into the routing
// policy's top-level `crossover_tokens` line, leaving every other byte of the file as it was.
#pragma once

#include <optional>
#include <string>

namespace hearth::bench {

struct PolicyRewrite {
  std::string text;                  // the new file contents
  std::optional<std::string> old_value;  // the value text that was there; empty if the key was absent
};

// Replaces the value of the top-level (unindented) `crossover_tokens:` line, keeping the spacing
// and a trailing `# comment`. When the key is absent, inserts `crossover_tokens: N` after the
// top-level `version:` line, or at the end of the file. Keeps the file's line endings (CRLF too).
PolicyRewrite RewriteCrossover(const std::string& policy_text, int value);

// Reads FILE, rewrites it, checks that the result still parses as a policy (router's
// ParsePolicy) and replaces the file atomically (temp file + rename, same permissions).
// Returns the old value text ("250", or "absent (default 250)"). Throws std::runtime_error.
std::string CalibratePolicyFile(const std::string& path, int value);

}  // namespace hearth::bench
