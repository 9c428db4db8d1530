// One named service: its waiting requests (in the order its queue policy gives them out) and
// the list of its workers with free credit, in the order they came free (least recently used
// first).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/intrusive/list.hpp>

#include "broker/queue_policy.hpp"
#include "broker/request_table.hpp"
#include "broker/worker_registry.hpp"

namespace zbroker::broker {

struct Service {
    using IdleWorkers =
        boost::intrusive::list<Worker,
                               boost::intrusive::member_hook<Worker, ListHook, &Worker::idle_hook>>;

    Service(std::string service_name, const QueueSettings& settings)
        : name(std::move(service_name)), queue(make_queue_policy(settings)) {}
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;
    ~Service() { idle.clear(); }

    std::string name;
    std::size_t workers = 0;                  // registered, busy or not
    std::size_t dispatched = 0;               // requests held by its workers, orphans too
    std::size_t orphaned = 0;                 // of those, answered 504 already (state answered)
    std::uint64_t served = 0;                 // answered 200 by a worker
    std::array<std::uint64_t, 8> failures{};  // answered otherwise, by Counters::answer_index
    IdleWorkers idle;                         // least recently used first
    // Its waiting requests, in the order the queue policy gives them out.
    std::unique_ptr<QueuePolicy> queue;

    std::size_t waiting() const noexcept { return queue->waiting(); }

    // Puts a worker that has free credit at the back of the idle list, if not already there.
    void offer(Worker& worker) {
        if (worker.can_take_more() && !worker.idle_hook.is_linked()) idle.push_back(worker);
    }
    // The first worker that can take more and holds nothing, or nullptr: where a suspect goes.
    // A scan, but only while suspects wait, and the idle list is at most the service's workers.
    Worker* idle_and_empty() {
        for (Worker& worker : idle) {
            if (worker.held.empty()) return &worker;
        }
        return nullptr;
    }
    void withdraw(Worker& worker) {
        if (worker.idle_hook.is_linked()) idle.erase(idle.iterator_to(worker));
        worker.burst = 0;
    }
    // After a dispatch: a worker keeps its place for a burst of up to kBurst requests while it
    // has credit, so its requests travel together, then goes to the back. Sent one at a time
    // round robin, 50 workers woke once per request and used 3x the CPU (zbench, 1 client x
    // 50 workers: 96k req/s round robin, 180k in bursts). Filled to its whole credit instead,
    // the first of two 7/MDP workers with credit 1000 got nearly all of 1000 requests in
    // flight and became the bottleneck. Credit 1, plain MDP's, is least recently used either way.
    static constexpr std::uint32_t kBurst = 32;
    void dispatched_to(Worker& worker) {
        if (worker.can_take_more() && ++worker.burst < kBurst) return;
        withdraw(worker);
        offer(worker);
    }
};

}  // namespace zbroker::broker
