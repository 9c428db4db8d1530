// Send times of the requests in flight, by request id.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <unordered_map>

namespace zbroker::bench {

// Send times by request id, and whether the request counts (sent after the warm-up). Request
// ids are unguessable (client/answer_reader.hpp), so they index a hash table, sized for the
// window so that it does not rehash while the run measures.
class SendTimes {
  public:
    struct Sent {
        std::chrono::steady_clock::time_point at;
        bool measured = false;
    };
    explicit SendTimes(std::size_t window) { sent_.reserve(2 * window); }
    void put(std::uint64_t id, std::chrono::steady_clock::time_point at, bool measured) {
        sent_[id] = {at, measured};
    }
    // The request's entry, taken out; nullopt for an id not in flight.
    std::optional<Sent> take(std::uint64_t id) {
        const auto it = sent_.find(id);
        if (it == sent_.end()) return std::nullopt;
        const Sent entry = it->second;
        sent_.erase(it);
        return entry;
    }

  private:
    std::unordered_map<std::uint64_t, Sent> sent_;
};

}  // namespace zbroker::bench
