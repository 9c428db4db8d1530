// In-flight request records, pooled and named by opaque tokens that workers echo back.
//
// A token is the record's slot and generation: a reply carrying a stale, forged or foreign
// token never names a live record, and no client routing id ever reaches a worker.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string_view>
#include <vector>

#include <boost/intrusive/list_hook.hpp>
#include <zmq.hpp>

#include "shared/clock.hpp"
#include "shared/frames.hpp"

namespace zbroker::broker {

struct Service;
struct Worker;

using ListHook = boost::intrusive::list_member_hook<>;

enum class ClientProtocol : std::uint8_t { mdp, zbc };

enum class RequestState : std::uint8_t {
    free,        // in the pool, unused
    queued,      // waiting in its service's queue
    dispatched,  // held by a worker
    answered,    // client already told (504); the worker still holds it until it replies
};

using Token = std::uint64_t;
inline constexpr std::size_t kTokenSize = sizeof(Token);

struct RequestRecord {
    std::uint32_t slot = 0;
    std::uint32_t generation = 0;
    RequestState state = RequestState::free;
    ClientProtocol protocol = ClientProtocol::mdp;
    std::uint16_t attempts = 0;  // dispatches so far
    zmq::message_t client;       // the client's routing id
    zmq::message_t request_id;   // ZBC01 only
    Frames body;                 // kept for a retry; workers get reference-counted copies
    Service* service = nullptr;
    Worker* worker = nullptr;
    TimePoint deadline = TimePoint::max();
    ListHook worker_hook;  // links the records a worker holds

    Token token() const noexcept { return (Token{generation} << 32) | slot; }
};

class RequestTable {
  public:
    // A cleared record in state `free`; the caller sets its state.
    RequestRecord& allocate();
    // Clears the record and returns it to the pool; its token goes stale.
    void release(RequestRecord& record);

    RequestRecord* find(Token token) noexcept;
    RequestRecord* find(std::string_view token_bytes) noexcept;

    std::size_t live() const noexcept { return records_.size() - free_slots_.size(); }

    template <typename F>
    void for_each_live(F&& f) {
        for (RequestRecord& record : records_) {
            if (record.state != RequestState::free) f(record);
        }
    }

    static zmq::message_t token_frame(Token token);

  private:
    std::deque<RequestRecord> records_;  // deque: records never move, hooks stay valid
    std::vector<std::uint32_t> free_slots_;
};

}  // namespace zbroker::broker
