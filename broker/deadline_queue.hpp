// Request deadlines, earliest first. Most requests carry the same relative deadline (the
// broker's default, or a client's fixed timeout), so their deadlines arrive in order: those go
// to a FIFO, O(1) each way; a deadline earlier than the FIFO's last goes to a binary heap.
// Stale entries (of requests answered meanwhile) are skipped when popped and swept when they
// outnumber the live ones.
// It also holds the orphan timers (--orphan-after-ms): a request answered 504 while a worker
// holds it gets a second entry, so every request timer of the core is here.
#pragma once

#include <algorithm>
#include <deque>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "broker/request_table.hpp"

namespace zbroker::broker {

class DeadlineQueue {
  public:
    void add(TimePoint deadline, Token token) {
        if (in_order_.empty() || deadline >= in_order_.back().first) {
            in_order_.emplace_back(deadline, token);
            return;
        }
        heap_.emplace_back(deadline, token);
        std::push_heap(heap_.begin(), heap_.end(), std::greater<>{});
    }
    TimePoint next() const noexcept {
        const TimePoint fifo = in_order_.empty() ? TimePoint::max() : in_order_.front().first;
        const TimePoint heap = heap_.empty() ? TimePoint::max() : heap_.front().first;
        return std::min(fifo, heap);
    }
    // The token of the next deadline at or before `now`; it may no longer be live.
    std::optional<Token> pop_due(TimePoint now) {
        const bool fifo_first =
            !in_order_.empty() && (heap_.empty() || in_order_.front().first <= heap_.front().first);
        if (fifo_first) {
            if (in_order_.front().first > now) return std::nullopt;
            const Token token = in_order_.front().second;
            in_order_.pop_front();
            return token;
        }
        if (heap_.empty() || heap_.front().first > now) return std::nullopt;
        std::pop_heap(heap_.begin(), heap_.end(), std::greater<>{});
        const Token token = heap_.back().second;
        heap_.pop_back();
        return token;
    }
    std::size_t size() const noexcept { return in_order_.size() + heap_.size(); }

    // Answered requests leave their entries behind until due; a long deadline on a fast
    // request would keep one for hours. Past twice the live records, sweep them. A live record
    // keeps its entry: for one in state `answered` that is its orphan timer.
    void compact_if_stale(RequestTable& table) {
        if (size() <= 2 * table.live() + 1024) return;
        const auto stale = [&table](const auto& entry) {
            return table.find(entry.second) == nullptr;
        };
        std::erase_if(in_order_, stale);
        std::erase_if(heap_, stale);
        std::make_heap(heap_.begin(), heap_.end(), std::greater<>{});
    }

  private:
    std::deque<std::pair<TimePoint, Token>>
        in_order_;  // deadlines never earlier than the one before
    std::vector<std::pair<TimePoint, Token>> heap_;
};

}  // namespace zbroker::broker
