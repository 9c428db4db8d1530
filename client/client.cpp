// Client: the Lazy Pirate pattern over a DEALER socket speaking ZB/1.
#include "client/client.hpp"

#include <algorithm>
#include <thread>

#include <spdlog/spdlog.h>

#include "client/answer_reader.hpp"
#include "shared/clock.hpp"

namespace zbroker {
namespace {

constexpr std::chrono::milliseconds kMaxBackoff{5000};

}  // namespace

std::string_view Response::body_view() const {
    return body.empty() ? std::string_view{} : view(body.front());
}

Client::Client(std::string endpoint, std::optional<CurveClientKeys> curve)
    : endpoint_(std::move(endpoint)),
      curve_(std::move(curve)),
      context_(std::make_unique<zmq::context_t>(1)) {
    reconnect();
}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

void Client::reconnect() {
    socket_ = zmq::socket_t(*context_, zmq::socket_type::dealer);
    // Unsent or unanswered requests die with the socket: a closed Client never blocks exit.
    socket_.set(zmq::sockopt::linger, 0);
    if (curve_) apply_curve_client(socket_, *curve_);
    socket_.connect(endpoint_);
}

Response Client::call(std::string_view service, std::string_view body, const CallOptions& options) {
    Frames frames;
    frames.push_back(frame(body));
    return call(service, std::move(frames), options);
}

Response Client::call(std::string_view service, Frames body, const CallOptions& options) {
    auto backoff = options.backoff;
    const int attempts = 1 + std::max(options.retries, 0);
    for (int attempt_number = 1;; ++attempt_number) {
        Response response = attempt(service, body, options);
        if (response.status != protocol::Status::no_reply) return response;
        spdlog::debug("no reply from {} for '{}' within {} ms (attempt {} of {})", endpoint_,
                      service, options.timeout.count(), attempt_number, attempts);
        // A fresh socket, so a late reply to this attempt cannot be taken for the next one's.
        reconnect();
        if (attempt_number >= attempts) return response;
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, kMaxBackoff);
    }
}

Response Client::attempt(std::string_view service, Frames& body, const CallOptions& options) {
    const std::chrono::milliseconds timeout = options.timeout;
    const std::uint64_t id = next_request_id_++;
    const detail::RequestIdBytes id_bytes = detail::encode_request_id(id);
    // Shared, not moved: a retry sends the same body again (large bodies are refcounted).
    request_writer_.request(
        {id_bytes.data(), id_bytes.size()}, service,
        detail::request_options(timeout, options.priority, options.fairness_key),
        {body, 0, body.size(), true});
    request_.clear();
    request_writer_.take(request_);

    const TimePoint give_up = now() + timeout + detail::reply_grace(timeout);
    // A DEALER queues while it connects; the send only fails when that queue is full.
    socket_.set(zmq::sockopt::sndtimeo, static_cast<int>(timeout.count()));
    if (send_frames(socket_, request_) != SendResult::sent) {
        spdlog::debug("could not queue a request to {} within {} ms", endpoint_, timeout.count());
        return {};
    }

    while (true) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(give_up - now());
        if (left.count() <= 0) return {};
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        try {
            zmq::poll(&item, 1, left);
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;
            continue;  // a signal handler ran; the deadline still holds
        }
        if ((item.revents & ZMQ_POLLIN) == 0) continue;
        if (!recv_frames(socket_, answers_.message(), zmq::recv_flags::dontwait)) continue;

        const char* why = "";
        if (!answers_.start(why)) {
            spdlog::warn("ignoring a malformed reply from {}: {}: {}", endpoint_, why,
                         describe(answers_.message()));
            continue;
        }
        while (auto answer = answers_.next()) {
            if (answer->id == id) return Response{answer->status, std::move(answer->body)};
            spdlog::debug("ignoring a reply for request {} that is no longer awaited", answer->id);
        }
    }
}

}  // namespace zbroker
