// How a service's credit is split over the brokers a worker serves, so that they cannot each
// fill it.
//
// A worker's credit is a promise about what it can run at once. With one session per broker,
// each broker only knows what it sent itself: were each told the whole credit, N brokers could
// hand the worker N times what it promised. So each gets a fixed share. The split is static, by
// position in the broker list: a broker that is down keeps its share unused rather than the
// others taking it, because moving it back when that broker returns would over-commit the
// worker until the others' surplus drained.
#pragma once

#include <algorithm>
#include <cstdint>

namespace zbroker::detail {

// The share of `total` for broker `index` of `brokers`: total / brokers, the remainder one each
// to the first brokers, and never less than 1 (a broker given 0 would send nothing). So the
// shares add up to total when total >= brokers, and to brokers otherwise. `brokers` is at least
// 1 (0 is taken as 1).
constexpr std::uint32_t split_credit(std::uint32_t total, std::uint32_t brokers,
                                     std::uint32_t index) noexcept {
    brokers = std::max<std::uint32_t>(brokers, 1);
    const std::uint32_t share = total / brokers + (index < total % brokers ? 1 : 0);
    return std::max<std::uint32_t>(share, 1);
}

}  // namespace zbroker::detail
