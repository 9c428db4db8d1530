// RecentReplies: a map from key to reply, and the keys in arrival order for FIFO eviction.
#include "worker/recent_replies.hpp"

namespace zbroker::detail {

bool RecentReplies::find(std::string_view key, Frames& out) const {
    out.clear();
    if (key.empty()) return false;
    const auto found = replies_.find(key);
    if (found == replies_.end()) return false;
    for (const std::string& part : found->second)
        out.push_back(frame(part));
    return true;
}

void RecentReplies::remember(std::string_view key, const Frames& body) {
    if (capacity_ == 0 || key.empty()) return;
    std::size_t bytes = 0;
    for (const zmq::message_t& part : body)
        bytes += part.size();
    if (bytes > kMaxReplyBytes) return;
    const auto [at, added] = replies_.try_emplace(std::string(key));
    if (!added) return;
    for (const zmq::message_t& part : body)
        at->second.emplace_back(view(part));
    oldest_first_.push_back(at->first);
    if (replies_.size() > capacity_) {
        replies_.erase(oldest_first_.front());
        oldest_first_.pop_front();
    }
}

}  // namespace zbroker::detail
