// The most jobs a broker may rightly have sent one session: what a JOB beyond credit is judged by.
//
// A broker sends at most the credit it knows. When the worker changes its credit, JOBs sent
// under the old one may still be on their way: a lower credit binds the broker only from its
// echo of the CREDIT on (docs/protocol.md, the CREDIT echo rule). So until every CREDIT asked
// for is echoed, the worker allows the largest of them and of the credit in force before
// them. Echoes come back in the order the CREDITs went, on one connection, so counting them is
// enough: no queue, and a broker that never echoes leaves the largest credit asked for, never
// more.
#pragma once

#include <algorithm>
#include <cstdint>

namespace zbroker::detail {

class CreditInForce {
  public:
    // A new session, whose READY carried `credit`.
    explicit CreditInForce(std::uint32_t credit = 0) noexcept
        : most_(credit), last_asked_(credit) {}

    void asked(std::uint32_t credit) noexcept {
        ++unechoed_;
        most_ = std::max(most_, credit);
        last_asked_ = credit;
    }

    // An echo with none outstanding is the broker's mistake, and changes nothing.
    void echoed() noexcept {
        if (unechoed_ == 0) return;
        if (--unechoed_ == 0) most_ = last_asked_;
    }

    std::uint32_t most() const noexcept { return most_; }

  private:
    std::uint32_t most_;
    std::uint32_t last_asked_;
    std::uint64_t unechoed_ = 0;
};

}  // namespace zbroker::detail
