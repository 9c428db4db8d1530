// What one simulated run looks like, all drawn from its seed (swarm testing: each run turns
// some faults off and skews the rest, so rare combinations come up in some runs).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "broker/broker_core.hpp"
#include "sim/random.hpp"

namespace zbroker::sim {

struct Knobs {
    std::uint64_t seed = 0;

    // The broker.
    broker::BrokerConfig config;
    bool curve = false;  // peers have keys and roles, as under CURVE

    // The world.
    std::size_t services = 1;
    std::size_t workers = 1;  // the first `services` of them are healthy, one per service
    std::size_t clients = 1;
    std::size_t hostiles = 0;  // send garbage, forge tokens, take others' routing ids
    bool combined = false;     // one connection that is both a worker and a client
    std::uint32_t credit_max = 1;
    std::size_t id_size = 0;           // 0: short ids; else ids and routing ids of about this size
    std::uint32_t hang_per_mille = 0;  // an unhealthy worker's jobs that never end
    std::uint32_t duplicate_reply_per_mille = 0;
    std::uint32_t huge_reply_per_mille = 0;  // 7/MDP replies of more frames than ZB/1 carries
    std::uint32_t service_ms_max = 0;
    std::size_t window_max = 1;  // a client's requests in flight
    std::size_t batch_max = 1;   // requests per ZB/1 message
    std::uint32_t deadline_per_mille = 500;
    std::uint32_t priority_levels = 1;  // distinct priorities clients use
    bool flooder = false;    // the first client keeps many requests at the highest priority
    std::size_t hwm = 1000;  // messages a peer may have unread before sends block

    // Faults, per mille of steps while they are on.
    std::uint32_t vanish = 0;       // a peer's connection closes without a word
    std::uint32_t impostor = 0;     // a new connection takes a departed peer's routing id
    std::uint32_t restart = 0;      // the broker dies and starts empty
    std::uint32_t drain = 0;        // the broker drains, then starts again
    std::uint32_t clock_jump = 0;   // the broker's host pauses
    std::uint32_t would_block = 0;  // a send finds the peer's queue full anyway
    std::uint32_t slow_reader = 0;  // per mille of peers that read slowly

    // Phases: faults on, then off with load (liveness), then no new load (everything answered).
    std::uint64_t chaos_steps = 0;
    std::uint64_t calm_steps = 0;
    std::uint64_t quiet_steps_max = 0;

    static Knobs draw(std::uint64_t seed);
    // Overrides one knob, as NAME=VALUE (the names describe() prints); false for an unknown
    // name. To make a failing run smaller, or to aim a run at one fault.
    bool set(std::string_view assignment);
    std::string describe() const;
    // How many dispatches of a service may go by with none at a level that has requests
    // waiting (priority: every Nth goes below the highest level waiting, to each lower level in
    // turn), and how many dispatches of a level with none for a fairness key that has requests
    // waiting there (deficit round robin: each key its weight per round; fifo: whatever was
    // ahead). Only dispatches the policy chose count: requests back from a worker that went
    // away go first.
    std::uint64_t level_bound() const;
    std::uint64_t lane_bound() const;
    // More for a request back from a worker that went away: it waits for a worker that holds
    // nothing else, and one busy worker must first finish what it holds.
    std::uint64_t requeued_slack() const;
    // Waiting requests per service: --queue-limit, and on top what workers held when they went.
    std::uint64_t queue_bound() const;
    Millis expiry() const { return config.heartbeat_interval * config.heartbeat_liveness; }
};

}  // namespace zbroker::sim
