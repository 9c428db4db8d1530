// zbroker_sim: runs the deterministic simulation (tests/sim/simulation.hpp) for one seed, a
// range of seeds, or random seeds for a while, and says how each run ended.
//
//   zbroker_sim --seed 42                  one run; on failure, its last events and how to replay
//   it zbroker_sim --seeds 1-300              CI: fixed seeds, stops at the first failure
//   zbroker_sim --seconds 600              a long soak: random seeds until the time is up
//
// Exit codes, as TigerBeetle's VOPR: 0 all passed, 127 crash, 128 liveness, 129 safety.
#include <unistd.h>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "sim/knobs.hpp"
#include "sim/simulation.hpp"

using namespace zbroker::sim;

namespace {

std::uint64_t g_seed = 0;
std::uint64_t g_follow = 0;
const char* g_program = "zbroker_sim";

// A crash (a sanitizer's abort, a segfault) ends the process: say which run and step it was,
// with only async-signal-safe calls.
void on_crash(int signal) {
    char line[256];
    const int size =
        std::snprintf(line, sizeof line,
                      "\nCRASH (signal %d) in seed %llu at step %llu; replay: %s --seed %llu\n",
                      signal, static_cast<unsigned long long>(g_seed),
                      static_cast<unsigned long long>(Simulation::current_step()), g_program,
                      static_cast<unsigned long long>(g_seed));
    if (size > 0) [[maybe_unused]]
        auto written = write(STDERR_FILENO, line, static_cast<std::size_t>(size));
    if (signal == 0) return;
    std::signal(signal, SIG_DFL);
    std::raise(signal);
}

#if defined(__SANITIZE_ADDRESS__)
// A sanitizer's report ends the process without a signal unless it was told to abort.
void on_sanitizer_death() {
    on_crash(0);
}
#endif

const char* name_of(Failure failure) {
    switch (failure) {
        case Failure::none:
            return "passed";
        case Failure::crash:
            return "CRASH";
        case Failure::liveness:
            return "LIVENESS";
        case Failure::safety:
            return "SAFETY";
    }
    return "?";
}

struct Totals {
    std::uint64_t runs = 0;
    std::uint64_t steps = 0;
    std::uint64_t checks = 0;
    std::uint64_t faults = 0;
    std::uint64_t requests = 0;
    std::uint64_t answers = 0;
    std::uint64_t dispatches = 0;
};

// One run; prints its knobs first, and on failure what failed, where, and how to replay it.
Failure run_one(const Knobs& knobs, bool verbose, bool check_determinism, Totals& totals) {
    g_seed = knobs.seed;
    if (verbose) std::cout << knobs.describe() << std::endl;
    Simulation simulation(knobs);
    if (g_follow != 0) simulation.follow(g_follow);
    Failure failure = simulation.run();
    ++totals.runs;
    totals.steps += simulation.steps();
    totals.checks += simulation.oracle().checks() + simulation.steps();
    totals.faults += simulation.faults();
    totals.requests += simulation.oracle().requests();
    totals.answers += simulation.oracle().answers();
    totals.dispatches += simulation.oracle().dispatches();
    if (failure == Failure::none && check_determinism) {
        Simulation again(knobs);
        again.run();
        if (again.fingerprint() != simulation.fingerprint()) {
            std::cout << "seed " << knobs.seed
                      << ": NOT DETERMINISTIC: a second run sent other messages" << std::endl;
            failure = Failure::safety;
        }
    }
    if (failure == Failure::none) return failure;
    if (!verbose) std::cout << knobs.describe() << std::endl;
    std::cout << simulation.trace();
    std::cout << name_of(failure) << " in seed " << knobs.seed << " at step " << simulation.steps()
              << ": " << simulation.oracle().what() << "\nreplay: " << g_program << " --seed "
              << knobs.seed << std::endl;
    return failure;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "zbroker_sim: the broker core in a deterministic simulation, checked at every step"};
    std::optional<std::uint64_t> seed;
    std::string seeds;
    double seconds = 0;
    bool verbose = false;
    bool check_determinism = false;
    bool keep_going = false;
    std::vector<std::string> overrides;
    app.add_option("--seed", seed, "run this seed once");
    app.add_option("--seeds", seeds, "run the seeds FIRST-LAST, stop at the first failure");
    app.add_option("--seconds", seconds, "run random seeds for this long (a soak), then report");
    app.add_flag("--verbose", verbose, "print every run's knobs");
    app.add_option("--follow", g_follow,
                   "with --seed: trace request qN and its service's dispatches");
    app.add_flag("--keep-going", keep_going, "with --seeds: run them all, whatever fails");
    app.add_option("--set", overrides,
                   "override a drawn knob, NAME=VALUE (names as the first line prints them; "
                   "policy: 0 fifo, 1 fair, 2 priority)");
    app.add_flag("--check-determinism", check_determinism,
                 "run each seed twice and compare everything the broker sent");
    CLI11_PARSE(app, argc, argv);
    g_program = argv[0];
    std::signal(SIGABRT, on_crash);
    std::signal(SIGSEGV, on_crash);
    std::signal(SIGBUS, on_crash);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_set_death_callback(on_sanitizer_death);
#endif
    spdlog::set_level(spdlog::level::off);  // the broker logs every removed worker: thousands

    const auto draw = [&overrides](std::uint64_t s) {
        Knobs knobs = Knobs::draw(s);
        for (const std::string& assignment : overrides) {
            if (!knobs.set(assignment))
                throw std::invalid_argument("unknown knob in --set " + assignment);
        }
        return knobs;
    };
    Totals totals;
    Failure first = Failure::none;
    const auto started = std::chrono::steady_clock::now();
    const auto report = [&] {
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        std::cout << "runs " << totals.runs << ", steps " << totals.steps << ", invariant checks "
                  << totals.checks << ", faults injected " << totals.faults << ", requests "
                  << totals.requests << ", answers " << totals.answers << ", dispatches "
                  << totals.dispatches << ", " << elapsed
                  << " s: " << (first == Failure::none ? "nothing found" : name_of(first))
                  << std::endl;
    };

    if (seed) {
        first = run_one(draw(*seed), true, check_determinism, totals);
    } else if (!seeds.empty()) {
        const auto dash = seeds.find('-');
        const std::uint64_t from = std::stoull(seeds.substr(0, dash));
        const std::uint64_t to =
            dash == std::string::npos ? from : std::stoull(seeds.substr(dash + 1));
        for (std::uint64_t s = from; s <= to && (keep_going || first == Failure::none); ++s) {
            const Failure failure = run_one(draw(s), verbose, check_determinism, totals);
            if (first == Failure::none) first = failure;
        }
    } else if (seconds > 0) {
        std::random_device device;
        std::uint64_t next = (std::uint64_t{device()} << 32) | device();
        while (first == Failure::none && std::chrono::steady_clock::now() - started <
                                             std::chrono::duration<double>(seconds)) {
            first = run_one(draw(next++), verbose, check_determinism, totals);
        }
    } else {
        std::cerr << "give --seed, --seeds or --seconds (see --help)\n";
        return 2;
    }
    report();
    return static_cast<int>(first);
}
