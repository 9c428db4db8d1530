// Client: the Lazy Pirate pattern over a DEALER socket speaking ZB/1.
#include "client/client.hpp"

#include <algorithm>
#include <thread>

#include <spdlog/spdlog.h>

#include "client/answer_reader.hpp"
#include "client/broker_links.hpp"
#include "shared/clock.hpp"

namespace zbroker {
namespace {

constexpr std::chrono::milliseconds kMaxBackoff{5000};

}  // namespace

std::string_view Response::body_view() const {
    return body.empty() ? std::string_view{} : view(body.front());
}

Client::Client(std::string endpoint, std::optional<CurveClientKeys> curve)
    : Client(detail::split_endpoints(endpoint), std::move(curve)) {}

Client::Client(std::vector<std::string> endpoints, std::optional<CurveClientKeys> curve)
    : context_(std::make_unique<zmq::context_t>(1)),
      links_(std::make_unique<detail::BrokerLinks>(*context_, std::move(endpoints),
                                                   std::move(curve), 0)) {}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

std::string Client::endpoint() const {
    return links_->describe();
}

Response Client::call(std::string_view service, std::string_view body, const CallOptions& options) {
    Frames frames;
    frames.push_back(frame(body));
    return call(service, std::move(frames), options);
}

Response Client::call(std::string_view service, Frames body, const CallOptions& options) {
    detail::check_service_name(service);
    auto backoff = options.backoff;
    const int attempts = 1 + std::max(options.retries, 0);
    for (int attempt_number = 1;; ++attempt_number) {
        // A new id per attempt, so that nothing of an attempt given up on is taken for an answer
        // to the next. Within an attempt, a move to another broker keeps the id.
        Response response = attempt(request_ids_.next(), service, body, options);
        if (response.status != protocol::Status::no_reply) return response;
        spdlog::debug("no reply from {} for '{}' within {} ms (attempt {} of {})", endpoint(),
                      service, options.timeout.count(), attempt_number, attempts);
        if (attempt_number >= attempts) return response;
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, kMaxBackoff);
    }
}

std::optional<std::size_t> Client::send_to_one(std::uint64_t id, std::string_view service,
                                               Frames& body, const CallOptions& options,
                                               TimePoint give_up) {
    while (true) {
        const TimePoint at = now();
        if (at >= give_up) return std::nullopt;
        if (const auto link = links_->pick()) {
            // What is left of the attempt's deadline, so that the broker answers 504 in time.
            const TimePoint deadline = give_up - detail::reply_grace(options.timeout);
            const auto left = std::max(Millis{1}, std::chrono::ceil<Millis>(deadline - at));
            const detail::RequestIdBytes id_bytes = detail::encode_request_id(id);
            // Shared, not moved: a retry sends the same body again (large bodies are refcounted).
            (*links_)[*link].pending.request(
                {id_bytes.data(), id_bytes.size()}, service,
                detail::request_options(left, options.priority, options.fairness_key,
                                        options.idempotency_key),
                {body, 0, body.size(), true});
            links_->flush();
            spdlog::debug("request {} for '{}' sent to {}", id, service, (*links_)[*link].endpoint);
            return link;
        }
        // Several brokers and none up yet: wait for one, ignoring stale answers meanwhile (until
        // give_up, however many come).
        links_->wait(std::chrono::ceil<Millis>(give_up - at));
        while (now() < give_up && links_->receive(answers_.message())) {
        }
        went_down_.clear();
        links_->handle_events(went_down_);
    }
}

Response Client::attempt(std::uint64_t id, std::string_view service, Frames& body,
                         const CallOptions& options) {
    const TimePoint give_up = now() + options.timeout + detail::reply_grace(options.timeout);
    auto link = send_to_one(id, service, body, options, give_up);
    while (link) {
        const auto left = std::chrono::ceil<Millis>(give_up - now());
        if (left.count() <= 0) {
            // A fresh socket, so a late reply to this attempt cannot arrive with the next one's.
            links_->reopen(*link);
            return {};
        }
        links_->wait(left);
        bool redirected = false;
        if (links_->watched()) {
            went_down_.clear();
            links_->handle_events(went_down_);
            // Moved only after what that broker sent before it went is read (below): its answer
            // may be there.
            redirected = std::find(went_down_.begin(), went_down_.end(), *link) != went_down_.end();
            if (redirected) {
                spdlog::debug("broker {} went away holding request {}: sending it to another",
                              (*links_)[*link].endpoint, id);
            }
        }
        while (const auto from = links_->receive(answers_.message())) {
            if (auto response = answer_in_message(*from, *link, id, redirected))
                return std::move(*response);
            // A broker that floods answers nobody awaits must not hold the call past its time.
            if (now() >= give_up) break;
        }
        if (redirected) link = send_to_one(id, service, body, options, give_up);
    }
    return {};
}

std::optional<Response> Client::answer_in_message(std::size_t from, std::size_t link,
                                                  std::uint64_t id, bool& redirected) {
    const char* why = "";
    if (!answers_.start(why)) {
        spdlog::warn("ignoring a malformed reply from {}: {}: {}", (*links_)[from].endpoint, why,
                     describe(answers_.message()));
        return std::nullopt;
    }
    while (auto answer = answers_.next()) {
        if (answer->id != id) {
            spdlog::debug("ignoring a reply for request {} that is no longer awaited", answer->id);
            continue;
        }
        // Only the broker that holds the request may answer it: another one's answer is forged,
        // or late from one the request has moved away from.
        if (from != link) {
            spdlog::debug("ignoring an answer to request {} from {}, which does not hold it", id,
                          (*links_)[from].endpoint);
            continue;
        }
        if (links_->watched() && detail::is_draining(*answer)) {
            links_->draining(from);
            redirected = true;
            continue;
        }
        return Response{answer->status, std::move(answer->body)};
    }
    return std::nullopt;
}

}  // namespace zbroker
