// The simulator's state checker: sees every message the broker core sends and every message
// the simulated peers hand it, knows which connection each peer is, and checks after every
// step that the broker kept its promises.
//
// Safety: no request answered twice; an answer goes only to the connection that asked, a JOB
// only to a connection that registered as a worker (with CURVE: the keys are the identity); a
// 200 carries exactly the worker's reply; no 504 before its deadline; every message the broker
// sends parses; the broker's state stays within its limits.
// Liveness: every request is answered by its deadline; with a healthy worker for its service, no
// waiting request sees more dispatches go by than the queue policy allows (no starvation); once
// the load stops, every request is answered.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "broker/broker_core.hpp"
#include "sim/knobs.hpp"
#include "sim/messages.hpp"

namespace zbroker::sim {

// How a run failed, as the process exit code (TigerBeetle's VOPR uses the same three).
enum class Failure : int { none = 0, crash = 127, liveness = 128, safety = 129 };

class Oracle {
  public:
    explicit Oracle(const Knobs& knobs);

    // Reports every event of request `number`, and every dispatch of its service, to `note`:
    // to read how one failure came about.
    void follow(std::uint64_t number, std::function<void(std::string)> note);

    struct Request {
        std::uint64_t client = 0;  // connection serial
        std::string service;
        broker::ClientProtocol protocol{};
        std::vector<std::string> body;
        std::optional<Millis> deadline;
        std::uint8_t priority = 0;
        std::string fairness_key;  // named; empty: its CURVE key, else its routing id
    };
    // A client is about to send a request; returns its number, which its id (or, in 7/MDP, its
    // body) carries as "q<number>".
    std::uint64_t new_request(Request request);
    const Request& request(std::uint64_t number) const { return requests_.at(number - 1).request; }
    // The request was given to the broker core (its deadline counts from now).
    void read_by_core(std::uint64_t number, TimePoint now);

    void connection_opened(std::uint64_t serial, std::string routing_id, std::string key,
                           broker::PeerRole role);
    // The connection sent READY: from now on a JOB may reach it. `healthy`: answers every job.
    void worker_ready(std::uint64_t serial, std::string service, bool healthy, bool faithful);
    // The core read a READY from the connection: the worker entry of its routing id is its key's.
    void ready_read(std::uint64_t serial);
    // A faithful worker replied `body` to request `number`: a 200 for it must carry one of these.
    void worker_replied(std::uint64_t number, std::vector<std::string> body);
    void connection_closed(std::uint64_t serial, TimePoint now);
    // Everything the old broker held is gone with it.
    void broker_restarted(TimePoint now);
    // Faults are off from now: starvation counts from here.
    void calm_begins();

    // The core sent `message` (routing id first); `to` is the connection it reached, if any.
    void sent_by_core(const Message& message, SendResult result, std::optional<std::uint64_t> to,
                      TimePoint now);

    // Checks what must hold at every step.
    void check(TimePoint now, const broker::BrokerCore& core, bool calm);
    // Once no new requests come and the broker had time: every request still awaited by a
    // connected client has its answer.
    void check_all_answered(TimePoint now);
    bool all_answered() const;

    Failure failure() const noexcept { return failure_; }
    const std::string& what() const noexcept { return what_; }

    std::uint64_t checks() const noexcept { return checks_; }
    std::uint64_t answers() const noexcept { return answers_; }
    std::uint64_t dispatches() const noexcept { return total_dispatches_; }
    std::uint64_t requests() const noexcept { return requests_.size(); }

  private:
    struct Connection {
        std::string routing_id;
        std::string key;
        broker::PeerRole role{};
        bool open = true;
        bool worker = false;  // sent READY on this connection
        bool healthy = false;
        bool faithful = true;  // replies with reply_for(body)
        std::string service;
    };
    struct Facts {
        Request request;
        std::optional<TimePoint> read_at;
        std::uint64_t epoch = 0;  // the broker that read it
        int answers = 0;
        std::optional<std::uint64_t> holder;  // the connection its last JOB reached
        bool unfaithful_holder = false;       // some worker that held it may reply anything
        // Its place among the service's lanes (fairness key, priority level) as the policy sees
        // them; empty key and level 0 where the policy does not look.
        std::string lane;
        int level = 0;
        // Waiting for a worker since its service, and its level of it, had seen this many
        // dispatches; counted from `waiting_from` (after a holder died, the broker may take an
        // expiry to notice).
        std::optional<std::uint64_t> service_mark;
        std::uint64_t level_mark = 0;
        TimePoint waiting_from{};
        bool lost = false;      // its broker died, or its client left: no answer is owed
        bool requeued = false;  // a worker that held it went away
        std::vector<std::vector<std::string>> replies;  // what faithful workers replied
    };

    void fail(Failure kind, std::string what);
    void on_answer(const std::string& id_or_body, bool by_body, protocol::Status status,
                   const std::vector<std::string>& body, std::optional<std::uint64_t> to,
                   TimePoint now);
    void on_job(const std::vector<std::string>& body, std::optional<std::uint64_t> to,
                SendResult result, TimePoint now);
    Facts* facts_of(const std::string& q);
    bool has_healthy_worker(const std::string& service) const;

    const Knobs& knobs_;
    std::uint64_t followed_ = 0;
    std::function<void(std::string)> note_;
    std::map<std::uint64_t, Connection> connections_;
    std::map<std::string, std::string> worker_owners_;  // routing id to the key of its last READY
    std::vector<Facts> requests_;                       // by number - 1
    std::set<std::uint64_t> awaited_;  // numbers read by the current broker and not yet answered
    std::set<std::pair<TimePoint, std::uint64_t>> due_;  // deadlines of awaited requests
    // Dispatches, to check that every level and every lane of a service gets its turn.
    struct Progress {
        std::uint64_t service = 0;                                       // of the service
        std::map<int, std::uint64_t> level;                              // of each level
        std::map<int, std::uint64_t> level_last;                         // `service` at its last
        std::map<std::pair<int, std::string>, std::uint64_t> lane_last;  // its level's at its last
    };
    void mark_waiting(Facts& facts);
    std::map<std::string, Progress> progress_;  // by service
    std::uint64_t epoch_ = 1;
    Failure failure_ = Failure::none;
    std::string what_;
    std::uint64_t checks_ = 0;
    std::uint64_t answers_ = 0;
    std::uint64_t total_dispatches_ = 0;
    std::uint64_t steps_ = 0;
};

}  // namespace zbroker::sim
