// AsyncClient: non-blocking sends and a flat set of the ids still awaited.
#include "client/async_client.hpp"

#include <algorithm>
#include <bit>
#include <functional>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "client/answer_reader.hpp"
#include "shared/clock.hpp"

namespace zbroker {
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
    : endpoint_(std::move(endpoint)),
      window_(window),
      context_(std::make_unique<zmq::context_t>(1)),
      in_flight_(window) {
    open(*context_, curve);
}

AsyncClient::AsyncClient(zmq::context_t& context, std::string endpoint, std::size_t window,
                         std::optional<CurveClientKeys> curve)
    : endpoint_(std::move(endpoint)), window_(window), in_flight_(window) {
    open(context, curve);
}

void AsyncClient::open(zmq::context_t& context, const std::optional<CurveClientKeys>& curve) {
    if (window_ == 0) throw std::invalid_argument("AsyncClient window must be at least 1");
    socket_ = zmq::socket_t(context, zmq::socket_type::dealer);
    socket_.set(zmq::sockopt::linger, 0);
    // The window already bounds both queues (one reply per request at most), so a high-water
    // mark could only turn a send inside the window into a spurious would-block.
    socket_.set(zmq::sockopt::sndhwm, 0);
    socket_.set(zmq::sockopt::rcvhwm, 0);
    if (curve) apply_curve_client(socket_, *curve);
    socket_.connect(endpoint_);
}

AsyncClient::~AsyncClient() = default;
AsyncClient::AsyncClient(AsyncClient&&) noexcept = default;
AsyncClient& AsyncClient::operator=(AsyncClient&&) noexcept = default;

std::optional<std::uint64_t> AsyncClient::send(std::string_view service, std::string_view body,
                                               const SendOptions& options) {
    const auto id = queue(service, body, options);
    flush();
    return id;
}

std::optional<std::uint64_t> AsyncClient::queue(std::string_view service, std::string_view body,
                                                const SendOptions& options) {
    const std::chrono::milliseconds deadline = options.deadline;
    const auto checked = detail::request_options(deadline, options.priority, options.fairness_key);
    if (in_flight_.size() >= window_) return std::nullopt;
    const std::uint64_t id = next_request_id_++;
    const detail::RequestIdBytes id_bytes = detail::encode_request_id(id);
    pending_.request({id_bytes.data(), id_bytes.size()}, service, checked, body);
    in_flight_.insert(id);
    if (deadline.count() > 0) {
        give_up_.emplace_back(now() + deadline + detail::reply_grace(deadline), id);
        std::push_heap(give_up_.begin(), give_up_.end(), std::greater<>{});
    }
    if (pending_.size() >= wire::kBatchBytes) flush();
    return id;
}

void AsyncClient::flush() {
    if (pending_.empty()) return;
    request_.clear();
    pending_.take(request_);
    // With no high-water mark a DEALER queues whatever it is given while it connects, so this
    // cannot would-block; were it ever to, the requests complete as no_reply at their deadline.
    if (send_frames(socket_, request_, zmq::send_flags::dontwait) != SendResult::sent)
        spdlog::warn("could not queue requests to {}: they get no answer", endpoint_);
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
            spdlog::debug("no answer from {} for request {} past its deadline", endpoint_, id);
            return Completion{id, protocol::Status::no_reply, {}};
        }
    }
    return std::nullopt;
}

std::optional<Completion> AsyncClient::receive(std::chrono::milliseconds timeout) {
    flush();
    std::optional<TimePoint> give_up;  // read the clock only when we have to wait
    while (true) {
        if (auto done = next_awaited()) return done;
        if (recv_frames(socket_, answers_.message(), zmq::recv_flags::dontwait)) {
            const char* why = "";
            if (!answers_.start(why)) {
                spdlog::warn("ignoring a malformed reply from {}: {}: {}", endpoint_, why,
                             describe(answers_.message()));
            }
            continue;
        }
        const TimePoint at = now();
        if (auto lost = give_up_due(at)) return lost;
        if (!give_up) give_up = at + timeout;
        if (*give_up <= at) return std::nullopt;
        // Wake for the caller's timeout, or for the next request to give up on if sooner.
        TimePoint wake = *give_up;
        if (!give_up_.empty()) wake = std::min(wake, give_up_.front().first);
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(wake - at);
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        try {
            zmq::poll(&item, 1, left);
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;
        }
    }
}

std::optional<Completion> AsyncClient::next_awaited() {
    while (auto answer = answers_.next()) {
        if (in_flight_.erase(answer->id))
            return Completion{answer->id, answer->status, std::move(answer->body)};
        spdlog::debug("ignoring a reply for request {} that is not in flight", answer->id);
    }
    return std::nullopt;
}

}  // namespace zbroker
