// Request deadlines, earliest first: a binary heap whose stale entries are skipped when popped.
// It also holds the orphan timers (--orphan-after-ms): a request answered 504 while a worker
// holds it gets a second entry, so every request timer of the core is here.
#pragma once

#include <algorithm>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "broker/request_table.hpp"

namespace zbroker::broker {

class DeadlineQueue {
  public:
    void add(TimePoint deadline, Token token) {
        heap_.emplace_back(deadline, token);
        std::push_heap(heap_.begin(), heap_.end(), std::greater<>{});
    }
    TimePoint next() const noexcept {
        return heap_.empty() ? TimePoint::max() : heap_.front().first;
    }
    // The token of the next deadline at or before `now`; it may no longer be live.
    std::optional<Token> pop_due(TimePoint now) {
        if (heap_.empty() || heap_.front().first > now) return std::nullopt;
        std::pop_heap(heap_.begin(), heap_.end(), std::greater<>{});
        const Token token = heap_.back().second;
        heap_.pop_back();
        return token;
    }
    std::size_t size() const noexcept { return heap_.size(); }

    // Answered requests leave their entries behind until due; a long deadline on a fast
    // request would keep one for hours. Past twice the live records, sweep them. A live record
    // keeps its entry: for one in state `answered` that is its orphan timer.
    void compact_if_stale(RequestTable& table) {
        if (heap_.size() <= 2 * table.live() + 1024) return;
        std::erase_if(heap_,
                      [&table](const auto& entry) { return table.find(entry.second) == nullptr; });
        std::make_heap(heap_.begin(), heap_.end(), std::greater<>{});
    }

  private:
    std::vector<std::pair<TimePoint, Token>> heap_;
};

}  // namespace zbroker::broker
