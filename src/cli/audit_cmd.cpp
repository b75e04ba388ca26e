#include "cli/audit_cmd.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "audit/audit_log.h"

namespace hearth::cli {

namespace {

struct AuditArgs {
  std::string db;
  int64_t after = -1;  // -1: not given
  int64_t limit = 20;
  bool json = false;
  std::string out;
  std::string anchor;
};

// The read-only commands must not create an empty log where the user mistyped a path:
// an empty log would "verify" fine.
std::unique_ptr<audit::AuditLog> OpenExisting(const AuditArgs& args) {
  const std::string path = args.db.empty() ? audit::DefaultAuditPath() : args.db;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw std::runtime_error("no audit log at " + path +
                             " (pass --db FILE or set HEARTH_AUDIT_DB)");
  }
  return audit::AuditLog::Open(path);
}

// Canonical JSON plus the hash: the same bytes `export` writes, so --json output can be
// re-hashed like an export.
std::string RecordJson(const audit::AuditRecord& r) {
  std::string line = audit::CanonicalRecordJson(r);
  line.pop_back();  // '}'
  line += ",\"hash\":";
  line += nlohmann::json(r.hash).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '}';
  return line;
}

// Log fields come from clients (user names, projects, prompts): never let them put terminal
// control sequences on the auditor's screen. Controls (C0, DEL, C1) and bytes that are not
// UTF-8 become '?'. Returns the text and its width in code points.
std::pair<std::string, size_t> Printable(const std::string& text, size_t max_width) {
  std::string out;
  size_t width = 0;
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  std::vector<std::pair<size_t, size_t>> chars;  // (offset in out, bytes)
  for (size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    size_t length = 0;
    if (c < 0x80) {
      length = 1;
    } else if (c >= 0xC2 && c < 0xE0) {
      length = 2;
    } else if (c >= 0xE0 && c < 0xF0) {
      length = 3;
    } else if (c >= 0xF0 && c < 0xF5) {
      length = 4;
    }
    bool valid = length > 0 && i + length <= n;
    for (size_t k = 1; valid && k < length; ++k) valid = (s[i + k] & 0xC0) == 0x80;
    if (valid && length == 3) {
      valid = !(c == 0xE0 && s[i + 1] < 0xA0) && !(c == 0xED && s[i + 1] >= 0xA0);
    }
    if (valid && length == 4) {
      valid = !(c == 0xF0 && s[i + 1] < 0x90) && !(c == 0xF4 && s[i + 1] >= 0x90);
    }
    const bool control = (length == 1 && (c < 0x20 || c == 0x7F)) ||
                         (length == 2 && c == 0xC2 && s[i + 1] < 0xA0);
    chars.emplace_back(out.size(), valid && !control ? length : 1);
    if (valid && !control) {
      out.append(text, i, length);
      i += length;
    } else {
      out += '?';
      i += valid ? length : 1;
    }
    ++width;
  }
  if (width > max_width && max_width > 0) {
    out.resize(chars[max_width - 1].first);
    out += "\xE2\x80\xA6";  // "…"
    width = max_width;
  }
  return {out, width};
}

void PrintTable(const std::vector<audit::AuditRecord>& records) {
  struct Col {
    const char* title;
    size_t max_width;
    bool right;
    std::function<std::string(const audit::AuditRecord&)> get;
  };
  auto tokens = [](const audit::AuditRecord& r) {
    return std::to_string(r.prompt_tokens) + "+" + std::to_string(r.completion_tokens);
  };
  auto latency = [](const audit::AuditRecord& r) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.0f", r.latency_ms);
    return std::string(buffer);
  };
  const std::vector<Col> cols = {
      {"ID", 0, true, [](const audit::AuditRecord& r) { return std::to_string(r.id); }},
      {"TIME (UTC)", 24, false, [](const audit::AuditRecord& r) { return r.time; }},
      {"USER", 14, false, [](const audit::AuditRecord& r) { return r.user; }},
      {"PROJECT", 14, false, [](const audit::AuditRecord& r) { return r.project; }},
      {"API", 22, false,
       [](const audit::AuditRecord& r) { return r.surface + " " + r.endpoint; }},
      {"ROUTE", 6, false, [](const audit::AuditRecord& r) { return r.route; }},
      {"MODEL", 24, false, [](const audit::AuditRecord& r) { return r.model; }},
      {"RULE", 18, false, [](const audit::AuditRecord& r) { return r.rule; }},
      {"TOKENS", 0, true, tokens},
      {"SENT", 0, true, [](const audit::AuditRecord& r) { return std::to_string(r.bytes_sent); }},
      {"REDACT", 0, true,
       [](const audit::AuditRecord& r) { return std::to_string(r.redactions.size()); }},
      {"APPROVAL", 18, false, [](const audit::AuditRecord& r) { return r.approval; }},
      {"MS", 0, true, latency},
      {"STATUS", 30, false, [](const audit::AuditRecord& r) { return r.status; }},
  };
  std::vector<std::vector<std::pair<std::string, size_t>>> cells;
  std::vector<size_t> widths;
  for (const Col& col : cols) widths.push_back(std::string(col.title).size());
  for (const audit::AuditRecord& r : records) {
    auto& row = cells.emplace_back();
    for (size_t c = 0; c < cols.size(); ++c) {
      row.push_back(Printable(cols[c].get(r), cols[c].max_width));
      widths[c] = std::max(widths[c], row.back().second);
    }
  }
  auto print_row = [&](const std::vector<std::pair<std::string, size_t>>& row) {
    std::string line;
    for (size_t c = 0; c < cols.size(); ++c) {
      const std::string pad(widths[c] - row[c].second, ' ');
      if (c > 0) line += "  ";
      line += cols[c].right ? pad + row[c].first : row[c].first + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  };
  std::vector<std::pair<std::string, size_t>> header;
  for (const Col& col : cols) header.emplace_back(col.title, std::string(col.title).size());
  print_row(header);
  for (const auto& row : cells) print_row(row);
}

struct Anchor {
  int64_t records = -1;  // -1: none
  std::string hash;
};

// "COUNT:HASH" as printed by `hearth audit head`.
Anchor ParseAnchor(const std::string& text) {
  Anchor anchor;
  if (text.empty()) return anchor;
  const size_t colon = text.find(':');
  const std::string count = text.substr(0, colon);
  const bool digits = !count.empty() && count.size() < 19 &&
                      count.find_first_not_of("0123456789") == std::string::npos;
  if (colon == std::string::npos || !digits || text.size() - colon - 1 != 64) {
    throw std::runtime_error("--anchor wants COUNT:HASH as printed by `hearth audit head`, got '" +
                             text + "'");
  }
  anchor.records = std::stoll(count);
  anchor.hash = text.substr(colon + 1);
  return anchor;
}

void RunVerify(const AuditArgs& args) {
  const Anchor anchor = ParseAnchor(args.anchor);
  auto log = OpenExisting(args);
  const audit::VerifyReport report = log->Verify();
  if (!report.ok) {
    std::printf("FAILED: %s (%s, %lld records)\n", report.problem.c_str(), log->path().c_str(),
                static_cast<long long>(report.records));
    std::fflush(stdout);
    throw CLI::RuntimeError(1);
  }
  std::printf("ok: %lld records, chain intact\n", static_cast<long long>(report.records));
  if (report.in_flight > 0) {
    std::printf("%lld cloud request(s) in flight: running now, or left by a hearth that stopped "
                "(recorded as interrupted when hearth serve starts)\n",
                static_cast<long long>(report.in_flight));
  }
  if (anchor.records >= 0) {
    // The chain is intact; the anchor says whether it is still the chain it was.
    std::string problem;
    if (anchor.records == 0) {
      if (anchor.hash != std::string(64, '0')) problem = "an empty log's head is 64 zeros";
    } else if (anchor.records > report.records) {
      problem = "the anchor covers " + std::to_string(anchor.records) +
                " records but the log has " + std::to_string(report.records) +
                ": records were deleted after it was taken";
    } else {
      const auto records = log->Read(anchor.records - 1, 1);
      if (records.empty() || records[0].id != anchor.records || records[0].hash != anchor.hash) {
        problem = "record " + std::to_string(anchor.records) +
                  " does not have the anchored hash: the log was rewritten after the anchor "
                  "was taken";
      }
    }
    if (!problem.empty()) {
      std::printf("FAILED: %s\n", problem.c_str());
      std::fflush(stdout);
      throw CLI::RuntimeError(1);
    }
    std::printf("ok: anchor %lld:%.12s... matches\n", static_cast<long long>(anchor.records),
                anchor.hash.c_str());
  }
  std::fflush(stdout);
}

void RunShow(const AuditArgs& args) {
  auto log = OpenExisting(args);
  int64_t after = args.after;
  if (after < 0) {
    // Without --after: the newest records, like `tail`.
    int64_t count = 0;
    try {
      count = log->ReadHead().records;
    } catch (const std::exception&) {
      // A tampered log without a head still shows from the start; verify says what is wrong.
    }
    after = args.limit > 0 ? std::max<int64_t>(0, count - args.limit) : 0;
  }
  const std::vector<audit::AuditRecord> records = log->Read(after, args.limit);
  if (args.json) {
    std::string out = "[";
    for (size_t i = 0; i < records.size(); ++i) {
      out += i == 0 ? "\n" : ",\n";
      out += RecordJson(records[i]);
    }
    out += records.empty() ? "]\n" : "\n]\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
  } else if (records.empty()) {
    std::printf("no records\n");
  } else {
    PrintTable(records);
  }
  std::fflush(stdout);
}

void RunExport(const AuditArgs& args) {
  auto log = OpenExisting(args);
  const int64_t after = std::max<int64_t>(0, args.after);
  if (args.out.empty() || args.out == "-") {
    log->ExportJsonl(std::cout, after);
    std::cout.flush();
    return;
  }
  // Private like the log itself: records may hold prompts.
  const int fd = ::open(args.out.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + args.out);
  ::close(fd);
  std::ofstream file(args.out, std::ios::binary | std::ios::trunc);
  if (!file) throw std::runtime_error("cannot write " + args.out);
  log->ExportJsonl(file, after);
  file.close();
  if (!file) throw std::runtime_error("cannot write " + args.out);
}

void RunHead(const AuditArgs& args) {
  auto log = OpenExisting(args);
  const audit::AuditLog::Head head = log->ReadHead();
  std::printf("%lld:%s\n", static_cast<long long>(head.records), head.last_hash.c_str());
  std::fflush(stdout);
}

void AddDbOption(CLI::App* command, AuditArgs& args) {
  command->add_option("--db", args.db,
                      "Audit log file (default: $HEARTH_AUDIT_DB, else "
                      "~/.local/share/hearth/audit.db)");
}

void SetCallback(CLI::App* command, std::shared_ptr<AuditArgs> args,
                 void (*run)(const AuditArgs&)) {
  command->callback([args, run] {
    try {
      run(*args);
    } catch (const CLI::RuntimeError&) {
      throw;
    } catch (const std::exception& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "hearth: %s\n", e.what());
      throw CLI::RuntimeError(1);
    }
  });
}

}  // namespace

void AddAuditCommands(CLI::App& app) {
  CLI::App* audit = app.add_subcommand("audit", "Inspect and check the tamper-evident audit log");
  audit->require_subcommand(1);

  auto verify_args = std::make_shared<AuditArgs>();
  CLI::App* verify = audit->add_subcommand(
      "verify", "Recompute the hash chain; exit 1 if records were edited, deleted, inserted or "
                "reordered");
  AddDbOption(verify, *verify_args);
  verify->add_option("--anchor", verify_args->anchor,
                     "COUNT:HASH printed earlier by `hearth audit head`: also check that the "
                     "log still extends that state");
  SetCallback(verify, verify_args, RunVerify);

  auto show_args = std::make_shared<AuditArgs>();
  CLI::App* show = audit->add_subcommand("show", "Print records as a table (newest by default)");
  AddDbOption(show, *show_args);
  show->add_option("--after", show_args->after, "Show records with id > ID (default: the newest)")
      ->check(CLI::NonNegativeNumber);
  show->add_option("--limit", show_args->limit, "At most N records (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  show->add_flag("--json", show_args->json, "Print a JSON array instead of a table");
  SetCallback(show, show_args, RunShow);

  auto export_args = std::make_shared<AuditArgs>();
  CLI::App* exp = audit->add_subcommand("export", "Write records as JSON Lines");
  AddDbOption(exp, *export_args);
  exp->add_option("--after", export_args->after, "Export records with id > ID")
      ->check(CLI::NonNegativeNumber);
  exp->add_option("--out", export_args->out, "Output file (default: stdout)");
  SetCallback(exp, export_args, RunExport);

  auto head_args = std::make_shared<AuditArgs>();
  CLI::App* head = audit->add_subcommand(
      "head", "Print COUNT:HASH of the newest record, to keep somewhere the log cannot reach");
  AddDbOption(head, *head_args);
  SetCallback(head, head_args, RunHead);
}

}  // namespace hearth::cli
