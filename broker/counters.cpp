// Names for the counters, as logs and mmi answers show them.
#include "counters.hpp"

#include <numeric>

namespace zbroker::broker {

std::string_view name(Malformed kind) noexcept {
    switch (kind) {
        case Malformed::too_short:
            return "too_short";
        case Malformed::no_delimiter:
            return "no_delimiter";
        case Malformed::unknown_protocol:
            return "unknown_protocol";
        case Malformed::empty_service:
            return "empty_service";
        case Malformed::bad_request_id:
            return "bad_request_id";
        case Malformed::bad_headers:
            return "bad_headers";
        case Malformed::bad_command:
            return "bad_command";
        case Malformed::bad_ready:
            return "bad_ready";
        case Malformed::bad_reply:
            return "bad_reply";
        case Malformed::not_ready:
            return "not_ready";
        case Malformed::duplicate_ready:
            return "duplicate_ready";
        case Malformed::mmi_registration:
            return "mmi_registration";
        case Malformed::not_authorized:
            return "not_authorized";
        case Malformed::long_service:
            return "long_service";
        case Malformed::service_limit:
            return "service_limit";
        case Malformed::bad_envelope:
            return "bad_envelope";
        case Malformed::other_key:
            return "other_key";
        case Malformed::unprintable_service:
            return "unprintable_service";
        case Malformed::kCount:
            break;
    }
    return "unknown";
}

std::string_view name(Drop reason) noexcept {
    switch (reason) {
        case Drop::unknown_token:
            return "unknown_token";
        case Drop::late_reply:
            return "late_reply";
        case Drop::client_unreachable:
            return "client_unreachable";
        case Drop::client_backpressure:
            return "client_backpressure";
        case Drop::mdp_unanswerable:
            return "mdp_unanswerable";
        case Drop::kCount:
            break;
    }
    return "unknown";
}

std::uint64_t Counters::malformed_total() const noexcept {
    return std::accumulate(malformed.begin(), malformed.end(), std::uint64_t{0});
}

std::uint64_t Counters::drops_total() const noexcept {
    return std::accumulate(drops.begin(), drops.end(), std::uint64_t{0});
}

std::size_t Counters::answer_index(protocol::Status status) noexcept {
    using protocol::Status;
    switch (status) {
        case Status::ok:
            return 0;
        case Status::bad_request:
            return 1;
        case Status::too_large:
            return 2;
        case Status::queue_full:
            return 3;
        case Status::retries_exhausted:
            return 4;
        case Status::unavailable:
            return 5;
        case Status::deadline_exceeded:
            return 6;
        case Status::no_reply:
            break;
    }
    return 7;
}

}  // namespace zbroker::broker
