// One named service: a FIFO of waiting requests and the list of its workers with free credit,
// in the order they came free (least recently used first).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

#include <boost/intrusive/list.hpp>

#include "broker/request_table.hpp"
#include "broker/worker_registry.hpp"

namespace zbroker::broker {

struct Service {
    using IdleWorkers =
        boost::intrusive::list<Worker,
                               boost::intrusive::member_hook<Worker, ListHook, &Worker::idle_hook>>;

    explicit Service(std::string service_name) : name(std::move(service_name)) {}
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;
    ~Service() { idle.clear(); }

    std::string name;
    std::size_t workers = 0;                  // registered, busy or not
    std::size_t dispatched = 0;               // requests held by its workers, orphans too
    std::size_t orphaned = 0;                 // of those, answered 504 already (state answered)
    std::size_t waiting = 0;                  // live requests in `queue`
    std::uint64_t served = 0;                 // answered 200 by a worker
    std::array<std::uint64_t, 8> failures{};  // answered otherwise, by Counters::answer_index
    IdleWorkers idle;                         // least recently used first

    // Waiting requests, oldest first. A request that expires while queued is released in the
    // table and its token here goes stale: skipped when popped, swept by compact().
    std::deque<Token> queue;

    void enqueue(Token token) {
        queue.push_back(token);
        ++waiting;
    }
    // A request whose worker died goes back to the head: it has waited longest.
    void requeue(Token token) {
        queue.push_front(token);
        ++waiting;
    }
    // The oldest live waiting request, or nullptr when none is left.
    RequestRecord* pop_waiting(RequestTable& table) {
        while (!queue.empty()) {
            RequestRecord* record = table.find(queue.front());
            queue.pop_front();
            if (record != nullptr && record->state == RequestState::queued) {
                --waiting;
                return record;
            }
        }
        return nullptr;
    }
    // A queued request left by another way (deadline): keep the count, bound the stale tokens.
    void forget_waiting(RequestTable& table) {
        --waiting;
        if (queue.size() > 2 * waiting + 64) compact(table);
    }
    void compact(RequestTable& table) {
        std::erase_if(queue, [&table](Token token) {
            const RequestRecord* record = table.find(token);
            return record == nullptr || record->state != RequestState::queued;
        });
    }

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
