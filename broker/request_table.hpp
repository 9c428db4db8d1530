// In-flight request records, pooled and named by opaque tokens that workers echo back.
//
// A token is the record's slot and generation: a reply carrying a stale, forged or foreign
// token never names a live record, and no client routing id ever reaches a worker.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/intrusive/list_hook.hpp>
#include <zmq.hpp>

#include "shared/clock.hpp"
#include "shared/frames.hpp"
#include "shared/wire.hpp"

namespace zbroker::broker {

struct Peer;
struct Service;
struct Worker;

using ListHook = boost::intrusive::list_member_hook<>;

// How a client spoke: 7/MDP, ZBC01, or ZB/1 (shared/wire.hpp). Answers go back the same way.
enum class ClientProtocol : std::uint8_t { mdp, zbc, native };

enum class RequestState : std::uint8_t {
    free,        // in the pool, unused
    queued,      // waiting in its service's queue
    dispatched,  // held by a worker
    answered,    // client already told (504); the worker still holds it until it replies
};

// A slot and the generation it had when the request took it. The generation is 64-bit: at
// 200k req/s through one slot, 2^64 reuses take millions of years, so a stale token kept in a
// queue, the deadline heap or a worker never names a later request. (32 bits wrapped in hours
// at that rate, and a stale token queued for one service could then name another's record.)
struct Token {
    std::uint32_t slot = 0;
    std::uint64_t generation = 0;
    auto operator<=>(const Token&) const = default;
};
// On the wire: the slot, then the generation, each in host byte order (the broker alone reads
// it; workers echo the frame unchanged).
inline constexpr std::size_t kTokenSize = sizeof(std::uint32_t) + sizeof(std::uint64_t);

struct RequestRecord {
    std::uint64_t generation = 0;
    std::uint32_t slot = 0;
    RequestState state = RequestState::free;
    ClientProtocol protocol = ClientProtocol::mdp;
    std::uint8_t attempts = 0;  // dispatches so far (--max-attempts is at most 100)
    std::uint8_t priority = 0;  // 0 to protocol::kMaxPriority; higher goes first
    // Its worker went away while holding it: it may be what killed that worker, so it is next
    // sent to a worker that holds nothing else (see Worker::isolating).
    bool suspect = false;
    std::uint16_t fairness_key_size = 0;  // the first bytes of `keys`
    // Under CURVE, the first bytes of the fairness key that name its tenant (the client's key),
    // before a ':' and the key the client named; 0: the whole key is the tenant.
    std::uint8_t tenant_size = 0;
    std::uint32_t body_bytes = 0;  // what --max-bytes counts; --max-msg-size < 4 GiB
    // The connection that asked: its answer goes there, or nowhere once it is gone. The peer
    // lives while a record names it (Peer::awaited).
    Peer* client = nullptr;
    // A string, not a frame: an 8-byte request id fits in place (short string optimization),
    // where a zmq::message_t costs 64 bytes. Memory per queued request is what bounds the queue.
    std::string request_id;  // ZBC01 and ZB/1
    Frames body;             // kept for a retry; workers get reference-counted copies
    Service* service = nullptr;
    Worker* worker = nullptr;
    TimePoint deadline = TimePoint::max();
    ListHook worker_hook;  // links the records a worker holds

    Token token() const noexcept { return {slot, generation}; }

    // The fairness key it named (under CURVE, scoped to its client's key); empty: none, and
    // queue_policy.hpp's fairness_key_of() gives its default.
    std::string_view fairness_key() const noexcept {
        return std::string_view(keys).substr(0, fairness_key_size);
    }
    // Empty: none. Passed on to the worker in the JOB, never read by the broker.
    std::string_view idempotency_key() const noexcept {
        return std::string_view(keys).substr(fairness_key_size);
    }
    void set_keys(std::string_view fairness, std::string_view idempotency,
                  std::uint8_t fairness_tenant_size = 0) {
        tenant_size = fairness_tenant_size;
        if (fairness.empty() && idempotency.empty()) return;  // most requests; `keys` is empty
        keys.assign(fairness).append(idempotency);
        fairness_key_size = static_cast<std::uint16_t>(fairness.size());  // key + ':' + 255 at most
    }

    // Both keys in one string: most requests carry neither, and a second std::string would add
    // 32 bytes to every queued request.
    std::string keys;
};

class RequestTable {
  public:
    // A cleared record in state `free`; the caller sets its state.
    RequestRecord& allocate();
    // Moves the body into the record, counting its `bytes` (wire::body_size, which the caller
    // has checked against its limits) as held.
    void keep_body(RequestRecord& record, Frames& message, const wire::Body& body,
                   std::size_t bytes);
    // Clears the record and returns it to the pool; its token goes stale.
    void release(RequestRecord& record);

    RequestRecord* find(Token token) noexcept;
    RequestRecord* find(std::string_view token_bytes) noexcept;

    std::size_t live() const noexcept { return size_ - free_slots_.size(); }
    // Body bytes of the live records: what --max-bytes bounds.
    std::size_t bytes_held() const noexcept { return bytes_held_; }

    template <typename F>
    void for_each_live(F&& f) {
        for (std::uint32_t slot = 0; slot < size_; ++slot) {
            if (at(slot).state != RequestState::free) f(at(slot));
        }
    }

    static std::array<char, kTokenSize> token_bytes(Token token) noexcept;

  private:
    // Records live in fixed chunks, so they never move (hooks stay valid) and cost no more
    // than their size: std::deque's 512-byte nodes would hold two and waste a fifth.
    static constexpr std::uint32_t kChunkBits = 10;
    static constexpr std::uint32_t kChunkSize = 1u << kChunkBits;

    RequestRecord& at(std::uint32_t slot) noexcept {
        return chunks_[slot >> kChunkBits][slot & (kChunkSize - 1)];
    }

    std::vector<std::unique_ptr<RequestRecord[]>> chunks_;
    std::uint32_t size_ = 0;  // slots handed out at least once
    std::vector<std::uint32_t> free_slots_;
    std::size_t bytes_held_ = 0;
};

}  // namespace zbroker::broker
