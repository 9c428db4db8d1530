// AsyncClient: non-blocking sends and a flat set of the ids still awaited.
#include "client/async_client.hpp"

#include <algorithm>
#include <bit>
#include <functional>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "client/answer_reader.hpp"
#include "client/broker_links.hpp"
#include "shared/clock.hpp"

namespace zbroker {
namespace {

// How often a busy AsyncClient with several brokers looks for brokers gone or back. An idle
// one looks whenever it would wait.
constexpr std::chrono::milliseconds kEventCheckInterval{1};

}  // namespace

namespace detail {

RequestIdSet::RequestIdSet(std::size_t max_size)
    : slots_(std::bit_ceil(std::max<std::size_t>(16, 2 * max_size)), kEmpty),
      mask_(slots_.size() - 1),
      shift_(64 - static_cast<unsigned>(std::countr_zero(slots_.size()))) {}

std::size_t RequestIdSet::home_of(std::uint64_t id) const {
    // Fibonacci hashing: consecutive ids land far apart. With `id & mask` the ids in flight
    // filled one long run of slots, and each erase shifted the rest of the run: a sixth of
    // zbench's client time at 1000 in flight.
    return static_cast<std::size_t>((id * 0x9E3779B97F4A7C15ull) >> shift_);
}

std::size_t RequestIdSet::slot_of(std::uint64_t id) const {
    std::size_t slot = home_of(id);
    while (slots_[slot] != kEmpty && slots_[slot] != id)
        slot = (slot + 1) & mask_;
    return slot;
}

void RequestIdSet::insert(std::uint64_t id) {
    std::uint64_t& slot = slots_[slot_of(id)];
    if (slot == kEmpty) {
        slot = id;
        ++size_;
    }
}

bool RequestIdSet::contains(std::uint64_t id) const {
    return id != kEmpty && slots_[slot_of(id)] == id;
}

bool RequestIdSet::erase(std::uint64_t id) {
    if (id == kEmpty) return false;
    std::size_t hole = slot_of(id);
    if (slots_[hole] != id) return false;
    slots_[hole] = kEmpty;
    --size_;
    // Backward-shift deletion: pull later members of the probe run into the hole, so that
    // lookups never stop early at it and no tombstones accumulate.
    for (std::size_t next = (hole + 1) & mask_; slots_[next] != kEmpty; next = (next + 1) & mask_) {
        const std::size_t home = home_of(slots_[next]);
        // Movable when its home is not in the cyclic range (hole, next].
        const bool home_after_hole = ((next - home) & mask_) < ((next - hole) & mask_);
        if (home_after_hole) continue;
        slots_[hole] = slots_[next];
        slots_[next] = kEmpty;
        hole = next;
    }
    return true;
}

}  // namespace detail

AsyncClient::AsyncClient(std::string endpoint, std::size_t window,
                         std::optional<CurveClientKeys> curve)
    : AsyncClient(detail::split_endpoints(endpoint), window, std::move(curve)) {}

AsyncClient::AsyncClient(std::vector<std::string> endpoints, std::size_t window,
                         std::optional<CurveClientKeys> curve)
    : window_(window), context_(std::make_unique<zmq::context_t>(1)), in_flight_(window) {
    open(*context_, std::move(endpoints), std::move(curve));
}

AsyncClient::AsyncClient(zmq::context_t& context, std::string endpoint, std::size_t window,
                         std::optional<CurveClientKeys> curve)
    : AsyncClient(context, detail::split_endpoints(endpoint), window, std::move(curve)) {}

AsyncClient::AsyncClient(zmq::context_t& context, std::vector<std::string> endpoints,
                         std::size_t window, std::optional<CurveClientKeys> curve)
    : window_(window), in_flight_(window) {
    open(context, std::move(endpoints), std::move(curve));
}

void AsyncClient::open(zmq::context_t& context, std::vector<std::string> endpoints,
                       std::optional<CurveClientKeys> curve) {
    if (window_ == 0) throw std::invalid_argument("AsyncClient window must be at least 1");
    links_ = std::make_unique<detail::BrokerLinks>(context, std::move(endpoints), std::move(curve),
                                                   window_);
    if (links_->watched()) resends_ = std::make_unique<detail::ResendBook>();
}

AsyncClient::~AsyncClient() = default;
AsyncClient::AsyncClient(AsyncClient&&) noexcept = default;
AsyncClient& AsyncClient::operator=(AsyncClient&&) noexcept = default;

std::vector<zmq::socket_ref> AsyncClient::sockets() {
    std::vector<zmq::socket_ref> all;
    for (std::size_t i = 0; i < links_->size(); ++i) {
        detail::BrokerLinks::Link& link = (*links_)[i];
        all.push_back(link.socket);
        if (link.monitor) all.push_back(link.monitor->socket());
    }
    return all;
}

std::size_t AsyncClient::brokers_up() const {
    return links_->up_count();
}

std::size_t AsyncClient::waiting_for_a_broker() const {
    return parked_.size();
}

void AsyncClient::forget_resend(std::uint64_t id) {
    detail::ResendBook::Entry* entry = resends_->find(id);
    if (entry == nullptr) return;
    // Parked ids are at most the window: one that leaves is looked for among them, so none is
    // kept for as long as every broker stays down.
    if (entry->link == detail::ResendBook::kParked) std::erase(parked_, id);
    resends_->forget(id);
}

bool AsyncClient::readable() {
    const auto has_input = [](zmq::socket_ref socket) {
        return (socket.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
    };
    for (std::size_t i = 0; i < links_->size(); ++i) {
        detail::BrokerLinks::Link& link = (*links_)[i];
        if (has_input(link.socket) || (link.monitor && has_input(link.monitor->socket())))
            return true;
    }
    return false;
}

bool AsyncClient::cancel(std::uint64_t id) {
    if (resends_) forget_resend(id);
    return in_flight_.erase(id);
}

std::optional<std::uint64_t> AsyncClient::send(std::string_view service, std::string_view body,
                                               const SendOptions& options) {
    const auto id = queue(service, body, options);
    flush();
    return id;
}

std::optional<std::uint64_t> AsyncClient::queue(std::string_view service, std::string_view body,
                                                const SendOptions& options) {
    detail::check_service_name(service);
    const std::chrono::milliseconds deadline = options.deadline;
    const auto checked = detail::request_options(deadline, options.priority, options.fairness_key,
                                                 options.idempotency_key);
    if (in_flight_.size() >= window_) return std::nullopt;
    const std::uint64_t id = request_ids_.next();
    in_flight_.insert(id);
    std::optional<TimePoint> sent_at;
    if (deadline.count() > 0) {
        sent_at = now();
        give_up_.emplace_back(*sent_at + deadline + detail::reply_grace(deadline), id);
        std::push_heap(give_up_.begin(), give_up_.end(), std::greater<>{});
    }
    if (resends_) {
        // Kept until answered, to be sent again if its broker goes.
        detail::ResendBook::Entry entry{0,
                                        std::string(service),
                                        std::string(body),
                                        options.priority,
                                        std::string(options.fairness_key),
                                        std::string(options.idempotency_key),
                                        TimePoint::max()};
        if (sent_at) entry.deadline_at = *sent_at + deadline;
        resends_->remember(id, std::move(entry));
        route(id, sent_at.value_or(now()));
        return id;
    }
    detail::BrokerLinks::Link& link = (*links_)[0];
    const detail::RequestIdBytes id_bytes = detail::encode_request_id(id);
    link.pending.request({id_bytes.data(), id_bytes.size()}, service, checked, body);
    if (link.pending.size() >= wire::kBatchBytes) flush();
    return id;
}

void AsyncClient::route(std::uint64_t id, TimePoint at) {
    detail::ResendBook::Entry* entry = resends_->find(id);
    if (entry == nullptr) return;  // answered or cancelled meanwhile
    const auto link = links_->pick();
    if (!link) {
        entry->link = detail::ResendBook::kParked;
        parked_.push_back(id);
        return;
    }
    entry->link = *link;
    detail::BrokerLinks::Link& chosen = (*links_)[*link];
    // Past its deadline it is not sent again: it completes as no_reply at its give-up time.
    if (!detail::ResendBook::write(chosen, id, *entry, at)) return;
    if (chosen.pending.size() >= wire::kBatchBytes) links_->flush();
}

void AsyncClient::handle_broker_events() {
    went_down_.clear();
    const bool came_up = links_->handle_events(went_down_);
    lost_.insert(lost_.end(), went_down_.begin(), went_down_.end());
    move_requests_of_lost_brokers();
    if (came_up && links_->any_up() && !parked_.empty()) {
        std::vector<std::uint64_t> parked;
        parked.swap(parked_);
        const TimePoint at = now();
        for (const std::uint64_t id : parked)
            route(id, at);
    }
    links_->flush();
}

void AsyncClient::move_requests_of_lost_brokers() {
    if (lost_.empty() || links_->has_leftovers()) return;
    const bool reading_lost = std::find(lost_.begin(), lost_.end(), answers_from_) != lost_.end();
    if (reading_lost && !answers_.exhausted()) return;
    const TimePoint at = now();
    for (const std::size_t link : lost_) {
        for (const std::uint64_t id : resends_->on_link(link)) {
            ++resent_;
            route(id, at);
        }
    }
    lost_.clear();
}

void AsyncClient::flush() {
    links_->flush();
}

std::optional<Completion> AsyncClient::give_up_due(TimePoint at) {
    // Answered requests leave entries behind; past twice what is in flight, sweep them.
    if (give_up_.size() > 2 * in_flight_.size() + 1024) {
        std::erase_if(give_up_,
                      [this](const auto& entry) { return !in_flight_.contains(entry.second); });
        std::make_heap(give_up_.begin(), give_up_.end(), std::greater<>{});
    }
    while (!give_up_.empty() && give_up_.front().first <= at) {
        std::pop_heap(give_up_.begin(), give_up_.end(), std::greater<>{});
        const std::uint64_t id = give_up_.back().second;
        give_up_.pop_back();
        if (in_flight_.erase(id)) {
            if (resends_) forget_resend(id);
            spdlog::debug("no answer from {} for request {} past its deadline", links_->describe(),
                          id);
            return Completion{id, protocol::Status::no_reply, {}};
        }
    }
    return std::nullopt;
}

std::optional<Completion> AsyncClient::receive(std::chrono::milliseconds timeout) {
    // Also while answers keep coming from the other brokers, so that they do not keep the
    // requests of one that went down waiting; but at most every kEventCheckInterval, since each
    // look at a monitor that has nothing costs system calls (70% of zbench's client time when
    // it looked on every call).
    if (resends_) {
        const TimePoint at = now();
        if (at >= next_event_check_) {
            next_event_check_ = at + kEventCheckInterval;
            handle_broker_events();
        }
    }
    flush();
    std::optional<TimePoint> give_up;  // read the clock only when we have to
    bool fruitless = false;            // a message was read that held nothing awaited
    while (true) {
        if (auto done = next_awaited()) return done;
        if (fruitless) {
            // A broker that floods answers nobody awaits must not hold the caller past its
            // timeout, nor keep the requests that are due from completing.
            const TimePoint at = now();
            if (auto lost = give_up_due(at)) return lost;
            if (!give_up) give_up = at + timeout;
            if (*give_up <= at) return std::nullopt;
        }
        if (const auto from = links_->receive(answers_.message())) {
            answers_from_ = *from;
            fruitless = true;
            const char* why = "";
            if (!answers_.start(why)) {
                spdlog::warn("ignoring a malformed reply from {}: {}: {}",
                             (*links_)[*from].endpoint, why, describe(answers_.message()));
            }
            continue;
        }
        fruitless = false;
        if (resends_) handle_broker_events();
        const TimePoint at = now();
        if (auto lost = give_up_due(at)) return lost;
        if (!give_up) give_up = at + timeout;
        if (*give_up <= at) return std::nullopt;
        // Wake for the caller's timeout, or for the next request to give up on if sooner.
        TimePoint wake = *give_up;
        if (!give_up_.empty()) wake = std::min(wake, give_up_.front().first);
        links_->wait(std::chrono::ceil<std::chrono::milliseconds>(wake - at));
    }
}

bool AsyncClient::held_by_sender(std::uint64_t id) {
    // One broker holds every request in flight.
    if (!resends_) return in_flight_.contains(id);
    const detail::ResendBook::Entry* entry = resends_->find(id);
    return entry != nullptr && entry->link == answers_from_;
}

std::optional<Completion> AsyncClient::next_awaited() {
    while (auto answer = answers_.next()) {
        // Another broker's answer is forged, or late from one the request has moved away from.
        if (!held_by_sender(answer->id)) {
            spdlog::debug("ignoring a reply for request {}, not in flight at {}", answer->id,
                          (*links_)[answers_from_].endpoint);
            continue;
        }
        if (resends_ && detail::is_draining(*answer)) {
            // Not an answer: this broker takes nothing new. Another one gets the request.
            links_->draining(answers_from_);
            ++resent_;
            route(answer->id, now());
            links_->flush();
            continue;
        }
        in_flight_.erase(answer->id);
        if (resends_) forget_resend(answer->id);
        return Completion{answer->id, answer->status, std::move(answer->body)};
    }
    return std::nullopt;
}

}  // namespace zbroker
