// The replies of a service's latest jobs that carried an idempotency key, so that a request a
// client sent again (through another broker, after its first broker died) is answered from
// here instead of being run twice.
//
// A window, not a guarantee: the oldest replies are forgotten first, large replies are never
// kept, and a resend that arrives while the first run is still going runs again (its reply is
// not known yet). At-least-once stays the contract; this only makes the common resend cheap.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "shared/frames.hpp"

namespace zbroker::detail {

class RecentReplies {
  public:
    // A reply larger than this is not kept: the window must not cost more memory than
    // capacity x kMaxReplyBytes.
    static constexpr std::size_t kMaxReplyBytes = 64 * 1024;

    // Keeps the replies of the last `capacity` keys; 0 keeps none.
    explicit RecentReplies(std::size_t capacity) : capacity_(capacity) {}

    // The kept reply for `key` as new frames in `out` (cleared first); false when not kept.
    bool find(std::string_view key, Frames& out) const;

    // Keeps a copy of `body` as the reply for `key`, forgetting the oldest key past capacity.
    // Ignored for an empty key, a reply over kMaxReplyBytes, or a key already kept (both runs
    // answered the same request: the first reply stands).
    void remember(std::string_view key, const Frames& body);

    std::size_t size() const noexcept { return replies_.size(); }

  private:
    std::size_t capacity_;
    std::map<std::string, std::vector<std::string>, std::less<>> replies_;  // key: body frames
    std::deque<std::string> oldest_first_;                                  // the keys
};

}  // namespace zbroker::detail
