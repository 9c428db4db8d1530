// LogLimiter: a window per kind of log line, and a count of what each window left out.
#include "log_limiter.hpp"

#include <algorithm>
#include <utility>

namespace zbroker {

LogLimiter::LogLimiter(Limits limits) : limits_(limits) {
    limits_.lines_per_window = std::max<std::size_t>(limits_.lines_per_window, 1);
    limits_.kinds = std::max<std::size_t>(limits_.kinds, 1);
}

std::optional<std::uint64_t> LogLimiter::admit(std::string_view kind, TimePoint now) {
    auto found = kinds_.find(kind);
    if (found == kinds_.end()) {
        // One entry is kept for kOtherKinds, so that a peer inventing kinds cannot grow the map.
        if (kinds_.size() + 1 >= limits_.kinds) kind = kOtherKinds;
        found = kinds_.find(kind);
        if (found == kinds_.end()) {
            found = kinds_.emplace(std::string(kind), Kind{now}).first;
            next_expiry_ = std::min(next_expiry_, now + limits_.window);
        }
    }
    Kind& entry = found->second;
    if (now >= entry.window_start + limits_.window) {
        // Left out in a window that expire() did not get to: told with this line.
        entry.window_start = now;
        entry.written = 0;
        next_expiry_ = std::min(next_expiry_, now + limits_.window);
    }
    if (entry.written == limits_.lines_per_window) {
        ++entry.left_out;
        return std::nullopt;
    }
    ++entry.written;
    return std::exchange(entry.left_out, 0);
}

std::vector<LogLimiter::Untold> LogLimiter::expire(TimePoint now) {
    std::vector<Untold> untold;
    if (now < next_expiry_) return untold;
    next_expiry_ = TimePoint::max();
    for (auto it = kinds_.begin(); it != kinds_.end();) {
        const TimePoint ends = it->second.window_start + limits_.window;
        if (now < ends) {
            next_expiry_ = std::min(next_expiry_, ends);
            ++it;
            continue;
        }
        if (it->second.left_out > 0) untold.push_back({it->first, it->second.left_out});
        it = kinds_.erase(it);
    }
    return untold;
}

std::string LogLimiter::more_like_this(std::uint64_t left_out) const {
    if (left_out == 0) return {};
    const auto ms = limits_.window.count();
    const std::string window =
        ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms";
    return " (" + std::to_string(left_out) + " more like this in the last " + window + ")";
}

}  // namespace zbroker
