// Escalations that wait for a person. A cloud route whose rule says `approval: interactive`
// blocks in Request() until someone approves or denies it (`hearth approve ID`, or the
// /hearth/approvals HTTP endpoints) or the timeout passes. An approval may be remembered per
// project and backend for a while. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace hearth::router {

struct PendingApproval {
  std::string id;
  std::string rule, backend, project, user, model;
  std::string summary;  // what would leave: sizes, findings, redactions (never the values)
  std::chrono::system_clock::time_point created;
  std::chrono::system_clock::time_point deadline;
};

enum class ApprovalOutcome { kApproved, kDenied, kTimedOut, kCancelled };

class ApprovalQueue {
 public:
  // Blocks until decided, timed out, or `cancel` is set (the client left). `who` receives
  // the decider's name.
  ApprovalOutcome Request(PendingApproval request, std::chrono::seconds timeout,
                          const std::shared_ptr<std::atomic<bool>>& cancel, std::string* who);
  std::vector<PendingApproval> List() const;
  // Returns false when no such request is waiting.
  bool Decide(const std::string& id, bool approve, const std::string& who);
  bool IsRemembered(const std::string& project, const std::string& backend) const;
  void Remember(const std::string& project, const std::string& backend, std::chrono::minutes period);

 private:
  struct Waiting {
    PendingApproval info;
    bool decided = false;
    bool approved = false;
    std::string who;
  };
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Waiting>> waiting_;
  std::map<std::pair<std::string, std::string>, std::chrono::steady_clock::time_point> remembered_;
  uint64_t next_id_ = 1;
};

const char* ApprovalOutcomeName(ApprovalOutcome o);

}  // namespace hearth::router
