// Send times of the requests in flight, by request id: a ring that grows rather than overwrite.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

namespace zbroker::bench {

// Send times by request id, and whether the request counts (sent after the warm-up). Ids grow
// by one per request, so a ring indexed by id holds every request in flight as long as the
// oldest is less than a ring's length behind the newest. One slow reply can be thousands
// behind; the ring then doubles rather than overwrite it.
class SendTimes {
  public:
    struct Sent {
        std::uint64_t id = 0;
        std::chrono::steady_clock::time_point at;
        bool measured = false;
        bool live = false;
    };
    explicit SendTimes(std::size_t window) {
        std::size_t size = 16;
        while (size < 4 * window)
            size *= 2;
        slots_.resize(size);
    }
    void put(std::uint64_t id, std::chrono::steady_clock::time_point at, bool measured) {
        while (slot(id).live)
            grow();
        slot(id) = {id, at, measured, true};
    }
    // The request's entry, taken out of the ring; nullopt for an id not in flight.
    std::optional<Sent> take(std::uint64_t id) {
        Sent& entry = slot(id);
        if (!entry.live || entry.id != id) return std::nullopt;
        entry.live = false;
        return entry;
    }

  private:
    Sent& slot(std::uint64_t id) { return slots_[id & (slots_.size() - 1)]; }
    void grow() {
        std::vector<Sent> old(slots_.size() * 2);
        old.swap(slots_);
        for (const Sent& entry : old) {
            if (entry.live) slot(entry.id) = entry;  // distinct ids within a ring's length
        }
    }

    std::vector<Sent> slots_;
};

}  // namespace zbroker::bench
