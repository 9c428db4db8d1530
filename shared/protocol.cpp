// Names and ASCII forms of the protocol's enumerations.
#include "protocol.hpp"

namespace zbroker::protocol {

std::string_view command_name(WorkerCommand command) noexcept {
    switch (command) {
        case WorkerCommand::ready:
            return "READY";
        case WorkerCommand::request:
            return "REQUEST";
        case WorkerCommand::reply:
            return "REPLY";
        case WorkerCommand::heartbeat:
            return "HEARTBEAT";
        case WorkerCommand::disconnect:
            return "DISCONNECT";
    }
    return "UNKNOWN";
}

std::string_view status_text(Status status) noexcept {
    switch (status) {
        case Status::no_reply:
            return "000";
        case Status::ok:
            return "200";
        case Status::bad_request:
            return "400";
        case Status::too_large:
            return "413";
        case Status::queue_full:
            return "429";
        case Status::retries_exhausted:
            return "500";
        case Status::unavailable:
            return "503";
        case Status::deadline_exceeded:
            return "504";
    }
    return "000";
}

std::string_view status_reason(Status status) noexcept {
    switch (status) {
        case Status::no_reply:
            return "no reply before the client's timeout";
        case Status::ok:
            return "ok";
        case Status::bad_request:
            return "malformed request";
        case Status::too_large:
            return "request too large";
        case Status::queue_full:
            return "service queue full";
        case Status::retries_exhausted:
            return "retries exhausted: workers died on this request";
        case Status::unavailable:
            return "no worker for the service, or broker draining";
        case Status::deadline_exceeded:
            return "deadline passed";
    }
    return "unknown status";
}

std::optional<Status> parse_status(std::string_view text) noexcept {
    for (Status s : {Status::ok, Status::bad_request, Status::too_large, Status::queue_full,
                     Status::retries_exhausted, Status::unavailable, Status::deadline_exceeded}) {
        if (text == status_text(s)) return s;
    }
    return std::nullopt;
}

}  // namespace zbroker::protocol
