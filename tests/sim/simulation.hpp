// A deterministic simulation of zbroker around its socket-free core (FoundationDB's simulation
// testing and TigerBeetle's VOPR, scaled to one broker): simulated clients and workers of every
// protocol, a simulated network with its would-block and unroutable sends, a simulated clock,
// and faults (peers that vanish, hang or lie, routing ids taken by others, broker restarts and
// drains, clock jumps), all drawn from one seed. The oracle checks every step.
//
// A run has three phases: chaos (faults on), calm (faults off, unhealthy peers gone, load on:
// liveness), quiet (no new requests: everything must be answered). The same seed always makes
// the same run: fingerprint() hashes everything the core sent, to check that.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sim/knobs.hpp"
#include "sim/oracle.hpp"

namespace zbroker::sim {

struct World;

class Simulation {
  public:
    explicit Simulation(const Knobs& knobs);
    ~Simulation();
    Simulation(const Simulation&) = delete;
    Simulation& operator=(const Simulation&) = delete;

    // Traces request q`number`, and the dispatches of its service.
    void follow(std::uint64_t number);
    // Runs to the end, or to the first failure.
    Failure run();

    const Oracle& oracle() const noexcept;
    std::uint64_t steps() const noexcept;
    std::uint64_t faults() const noexcept;
    std::uint64_t fingerprint() const noexcept;
    // The last events before the end, one per line: where to start reading a failure.
    std::string trace() const;

    // The step being run, for a crash report from a signal handler.
    static std::uint64_t current_step() noexcept;

  private:
    std::unique_ptr<World> world_;
};

}  // namespace zbroker::sim
