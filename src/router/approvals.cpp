#include "router/approvals.h"

#include <random>

namespace hearth::router {

const char* ApprovalOutcomeName(ApprovalOutcome o) {
  switch (o) {
    case ApprovalOutcome::kApproved: return "approved";
    case ApprovalOutcome::kDenied: return "denied";
    case ApprovalOutcome::kTimedOut: return "timeout";
    case ApprovalOutcome::kCancelled: return "cancelled";
  }
  return "denied";
}

ApprovalOutcome ApprovalQueue::Request(PendingApproval request, std::chrono::seconds timeout,
                                       const std::shared_ptr<std::atomic<bool>>& cancel, std::string* who) {
  auto waiting = std::make_shared<Waiting>();
  std::unique_lock<std::mutex> lock(mutex_);
  // Short, unguessable-enough ids: a counter plus random bits, so ids are not reused.
  static thread_local std::mt19937 rng{std::random_device{}()};
  request.id = std::to_string(next_id_++) + "-" + std::to_string(rng() % 100000);
  request.created = std::chrono::system_clock::now();
  request.deadline = request.created + timeout;
  waiting->info = request;
  waiting_[request.id] = waiting;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  ApprovalOutcome outcome = ApprovalOutcome::kTimedOut;
  while (true) {
    if (waiting->decided) {
      outcome = waiting->approved ? ApprovalOutcome::kApproved : ApprovalOutcome::kDenied;
      if (who != nullptr) *who = waiting->who;
      break;
    }
    if (cancel && cancel->load()) {
      outcome = ApprovalOutcome::kCancelled;
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    // Wake periodically to notice a cancelled client.
    cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
  }
  waiting_.erase(request.id);
  return outcome;
}

std::vector<PendingApproval> ApprovalQueue::List() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<PendingApproval> out;
  for (const auto& [id, w] : waiting_) out.push_back(w->info);
  return out;
}

bool ApprovalQueue::Decide(const std::string& id, bool approve, const std::string& who) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = waiting_.find(id);
  if (it == waiting_.end() || it->second->decided) return false;
  it->second->decided = true;
  it->second->approved = approve;
  it->second->who = who;
  cv_.notify_all();
  return true;
}

bool ApprovalQueue::IsRemembered(const std::string& project, const std::string& backend) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = remembered_.find({project, backend});
  return it != remembered_.end() && it->second > std::chrono::steady_clock::now();
}

void ApprovalQueue::Remember(const std::string& project, const std::string& backend, std::chrono::minutes period) {
  std::lock_guard<std::mutex> lock(mutex_);
  remembered_[{project, backend}] = std::chrono::steady_clock::now() + period;
}

}  // namespace hearth::router
