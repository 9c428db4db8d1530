// The workers the broker knows, in order of when each will expire. Each worker belongs to the
// peer (connection) that registered it, which owns it (broker/peer_table.hpp).
#pragma once

#include <cstdint>

#include <boost/intrusive/list.hpp>

#include "broker/request_table.hpp"

namespace zbroker::broker {

struct Peer;

using HeldRequests = boost::intrusive::list<
    RequestRecord,
    boost::intrusive::member_hook<RequestRecord, ListHook, &RequestRecord::worker_hook>>;

struct Worker {
    Peer* peer = nullptr;  // its connection; the worker lives no longer than it
    Service* service = nullptr;
    std::uint32_t credit = 1;  // requests it may hold at once (READY's extension frame)
    bool native = false;       // speaks ZB/1, not 7/MDP
    TimePoint expiry;          // declared dead when nothing is heard from it by then
    HeldRequests held;         // dispatched to it, in dispatch order
    ListHook idle_hook;        // in its service's list of workers that can take more
    ListHook member_hook;      // in its service's list of all its workers
    ListHook expiry_hook;      // in the registry's expiry order
    std::uint32_t burst = 0;   // requests sent in its current turn at the head of the idle list
    // Its queue in the broker was full (would-block): alive but reading slowly, so it gets
    // nothing more until it is heard from again. Never taken for dead: its jobs still run.
    bool paused = false;
    // It holds a request whose previous worker went away. It gets nothing else until that one
    // is answered, so a request that kills its workers takes no other request down with it.
    bool isolating = false;
    // Kept from new requests until it holds nothing, for a request back from a worker that went
    // away: such a request only goes to a worker that holds nothing else, and while every
    // worker is busy one must be let empty, or it would wait for ever.
    bool reserved = false;
    // Requests it held past --orphan-after-ms that were released without its reply: a reply
    // with a stale token from it is then a late_reply, not an unknown_token.
    std::uint64_t orphans_released = 0;
    // Orphan releases are logged at most once per interval per worker, with a count.
    TimePoint next_orphan_warning{};
    std::uint64_t orphans_not_logged = 0;

    bool can_take_more() const noexcept {
        return !paused && !isolating && !reserved && held.size() < credit;
    }
};

class WorkerRegistry {
  public:
    WorkerRegistry() = default;
    WorkerRegistry(const WorkerRegistry&) = delete;
    WorkerRegistry& operator=(const WorkerRegistry&) = delete;
    ~WorkerRegistry();

    void add(Worker& worker, TimePoint expiry);
    // The worker was heard from: it now expires last.
    void touch(Worker& worker, TimePoint expiry) noexcept;
    // The worker that expires first, or nullptr.
    Worker* first_to_expire() noexcept;
    const Worker* first_to_expire() const noexcept;
    // Forgets the worker (its peer frees it). It must hold no requests and be off its
    // service's lists.
    void remove(Worker& worker) noexcept;

    std::size_t size() const noexcept { return by_expiry_.size(); }

    template <typename F>
    void for_each(F&& f) {
        for (Worker& worker : by_expiry_)
            f(worker);
    }

  private:
    using ExpiryOrder = boost::intrusive::list<
        Worker, boost::intrusive::member_hook<Worker, ListHook, &Worker::expiry_hook>>;
    ExpiryOrder by_expiry_;  // every worker has the same lifetime, so touch = move to back
};

}  // namespace zbroker::broker
