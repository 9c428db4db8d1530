// The workers the broker knows, by routing id, and in order of when each will expire.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include <boost/intrusive/list.hpp>

#include "broker/request_table.hpp"
#include "broker/string_hash.hpp"

namespace zbroker::broker {

using HeldRequests = boost::intrusive::list<
    RequestRecord,
    boost::intrusive::member_hook<RequestRecord, ListHook, &RequestRecord::worker_hook>>;

struct Worker {
    std::string identity;  // ROUTER routing id
    Service* service = nullptr;
    std::uint32_t credit = 1;  // requests it may hold at once (READY's extension frame)
    bool native = false;       // speaks ZB/1, not 7/MDP
    TimePoint expiry;          // declared dead when nothing is heard from it by then
    HeldRequests held;         // dispatched to it, in dispatch order
    ListHook idle_hook;        // in its service's list of workers that can take more
    ListHook expiry_hook;      // in the registry's expiry order
    std::uint32_t burst = 0;   // requests sent in its current turn at the head of the idle list
    // Its queue in the broker was full (would-block): alive but reading slowly, so it gets
    // nothing more until it is heard from again. Never taken for dead: its jobs still run.
    bool paused = false;
    // It holds a request whose previous worker went away. It gets nothing else until that one
    // is answered, so a request that kills its workers takes no other request down with it.
    bool isolating = false;
    // Requests it held past --orphan-after-ms that were released without its reply: a reply
    // with a stale token from it is then a late_reply, not an unknown_token.
    std::uint64_t orphans_released = 0;
    // Orphan releases are logged at most once per interval per worker, with a count.
    TimePoint next_orphan_warning{};
    std::uint64_t orphans_not_logged = 0;

    bool can_take_more() const noexcept { return !paused && !isolating && held.size() < credit; }
};

class WorkerRegistry {
  public:
    WorkerRegistry() = default;
    WorkerRegistry(const WorkerRegistry&) = delete;
    WorkerRegistry& operator=(const WorkerRegistry&) = delete;
    ~WorkerRegistry();

    Worker* find(std::string_view identity) noexcept;
    Worker& add(std::string_view identity, Service& service, std::uint32_t credit, bool native,
                TimePoint expiry);
    // The worker was heard from: it now expires last.
    void touch(Worker& worker, TimePoint expiry) noexcept;
    // The worker that expires first, or nullptr.
    Worker* first_to_expire() noexcept;
    const Worker* first_to_expire() const noexcept;
    // Forgets the worker. It must hold no requests and be off its service's idle list.
    void remove(Worker& worker);

    std::size_t size() const noexcept { return by_identity_.size(); }

    template <typename F>
    void for_each(F&& f) {
        for (Worker& worker : by_expiry_)
            f(worker);
    }

  private:
    using ExpiryOrder = boost::intrusive::list<
        Worker, boost::intrusive::member_hook<Worker, ListHook, &Worker::expiry_hook>>;

    std::unordered_map<std::string, std::unique_ptr<Worker>, StringHash, std::equal_to<>>
        by_identity_;
    ExpiryOrder by_expiry_;  // every worker has the same lifetime, so touch = move to back
};

}  // namespace zbroker::broker
