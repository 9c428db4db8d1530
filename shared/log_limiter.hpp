// Rate limits log lines by kind, so that a peer repeating itself costs a few lines per window.
//
// A hostile peer can make any per-event log line repeat as fast as it can send: a worker
// logged 22 times the bytes it was sent. So each kind of line (a kind is what the caller names:
// "malformed message from X", say) gets the first `lines_per_window` lines of a window written;
// the rest are counted, and the count is told in the next line of that kind, or by expire()
// when the window ends without one ("N more like this in the last 10 s"). The kinds tracked at
// once are bounded too: past the bound, new kinds share one entry, kOtherKinds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clock.hpp"

namespace zbroker {

class LogLimiter {
  public:
    struct Limits {
        Millis window{10'000};
        std::size_t lines_per_window = 1;  // per kind
        std::size_t kinds = 256;           // tracked at once; the rest share kOtherKinds
    };
    static constexpr std::string_view kOtherKinds = "other kinds";

    LogLimiter() : LogLimiter(Limits{}) {}
    explicit LogLimiter(Limits limits);

    // Whether to write a line of `kind` now: nullopt when not (it is counted). When yes, how
    // many lines of this kind were left out before it and not told yet, for more_like_this().
    std::optional<std::uint64_t> admit(std::string_view kind, TimePoint now);

    // A kind whose window ended with lines left out that no later line has told.
    struct Untold {
        std::string kind;
        std::uint64_t left_out;
    };
    // Forgets the kinds whose window has ended, and returns those that left lines out, for a
    // summary line each. Cheap when nothing is due: call it on every timer round.
    std::vector<Untold> expire(TimePoint now);

    // What to append to an admitted line: "" for 0, else " (N more like this in the last 10 s)".
    std::string more_like_this(std::uint64_t left_out) const;

    std::size_t kinds_tracked() const noexcept { return kinds_.size(); }

  private:
    struct Kind {
        TimePoint window_start;
        std::size_t written = 0;  // in this window
        std::uint64_t left_out = 0;
    };

    Limits limits_;
    std::map<std::string, Kind, std::less<>> kinds_;  // std::less<>: found by string_view
    TimePoint next_expiry_ = TimePoint::max();        // the earliest window end in kinds_
};

}  // namespace zbroker
