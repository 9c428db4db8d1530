// One named service: its waiting requests (in the order its queue policy gives them out, and
// before them those back from a worker that went away), its workers, and the list of those with
// free credit, in the order they came free (least recently used first).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
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
    using Members = boost::intrusive::list<
        Worker, boost::intrusive::member_hook<Worker, ListHook, &Worker::member_hook>>;

    Service(std::string service_name, const QueueSettings& settings)
        : name(std::move(service_name)), queue(make_queue_policy(settings)) {}
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;
    ~Service() {
        idle.clear();
        members.clear();
    }

    std::string name;
    std::size_t dispatched = 0;               // requests held by its workers, orphans too
    std::size_t orphaned = 0;                 // of those, answered 504 already (state answered)
    std::uint64_t served = 0;                 // answered 200 by a worker
    std::array<std::uint64_t, 8> failures{};  // answered otherwise, by Counters::answer_index
    Members members;                          // every registered worker, busy or not
    IdleWorkers idle;                         // least recently used first
    // Its waiting requests, in the order the queue policy gives them out.
    std::unique_ptr<QueuePolicy> queue;

    std::size_t workers() const noexcept { return members.size(); }
    std::size_t waiting() const noexcept { return queue->waiting() + suspects_waiting_; }

    void join(Worker& worker) { members.push_back(worker); }
    void leave(Worker& worker) {
        withdraw(worker);
        members.erase(members.iterator_to(worker));
    }

    // Puts a worker that has free credit at the back of the idle list, if not already there.
    void offer(Worker& worker) {
        if (worker.can_take_more() && !worker.idle_hook.is_linked()) idle.push_back(worker);
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

    // Requests back from a worker that went away ("suspects": one may be what killed it). They
    // have waited longest, so they go before the queue, each to a worker holding nothing else.
    void push_suspect(const RequestRecord& record) {
        suspects_.push_back(record.token());
        ++suspects_waiting_;
    }
    // One that was about to leave and did not (its worker's queue was full): first again.
    void push_suspect_front(const RequestRecord& record) {
        suspects_.push_front(record.token());
        ++suspects_waiting_;
    }
    // The next live suspect, still waiting; nullptr when none.
    RequestRecord* next_suspect(RequestTable& table) {
        while (!suspects_.empty()) {
            RequestRecord* record = table.find(suspects_.front());
            if (record != nullptr && record->state == RequestState::queued) return record;
            suspects_.pop_front();  // answered or expired meanwhile
        }
        return nullptr;
    }
    // Takes the suspect next_suspect() gave.
    void pop_suspect() {
        suspects_.pop_front();
        --suspects_waiting_;
    }
    // The first worker that can take more and holds nothing, or nullptr: where a suspect goes.
    // A scan, but only while suspects wait, and the idle list is at most the service's workers.
    Worker* idle_and_empty() {
        for (Worker& worker : idle) {
            if (worker.held.empty()) return &worker;
        }
        return nullptr;
    }
    // No worker that holds nothing can take a suspect: keep the one that holds least from new
    // requests until it empties (one at a time is enough: each that empties takes a suspect).
    // A scan of the service's workers, while suspects wait and none is reserved.
    void reserve_for_suspect() {
        Worker* least = nullptr;
        for (Worker& worker : members) {
            if (worker.reserved) return;
            if (worker.credit == 0 || worker.isolating) continue;
            if (least == nullptr || worker.held.size() < least->held.size()) least = &worker;
        }
        if (least == nullptr) return;
        least->reserved = true;
        withdraw(*least);
    }

    // A waiting request leaves by another way (its deadline, a drain): out of the queue, or
    // of the suspects, whose token then goes stale.
    void forget(const RequestRecord& record, RequestTable& table) {
        if (record.suspect) {
            --suspects_waiting_;
            if (suspects_.size() > 2 * suspects_waiting_ + 64) {
                std::erase_if(suspects_, [&table](Token token) {
                    const RequestRecord* live = table.find(token);
                    return live == nullptr || live->state != RequestState::queued;
                });
            }
            return;
        }
        queue->forget(record, table);
    }

  private:
    std::deque<Token> suspects_;  // oldest first; stale tokens are skipped
    std::size_t suspects_waiting_ = 0;
};

}  // namespace zbroker::broker
