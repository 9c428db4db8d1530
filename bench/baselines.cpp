// Starts the baseline servers as zbench's own hidden subcommands and waits until they serve.
#include "baselines.hpp"

#include <chrono>
#include <stdexcept>
#include <thread>

#include "bench/baseline_servers.hpp"
#include "bench/topology.hpp"

namespace zbroker::bench {
namespace {

std::string wait_for(ChildProcess& process, const std::string& marker, const std::string& what) {
    const auto rest = process.wait_for(marker, kStartPatience);
    if (!rest) {
        throw std::runtime_error(
            what + " did not start within " + std::to_string(kStartPatience.count()) +
            " s (it failed, or the machine is too slow); its output:\n" + process.output());
    }
    return *rest;
}

}  // namespace

DirectEchoServer::DirectEchoServer(const std::string& zbench)
    : server_({zbench, "serve-direct"}),
      endpoint_(wait_for(server_, kListeningMarker, "the direct echo server")) {}

FeaturelessRelay::FeaturelessRelay(const std::string& zbench, std::size_t workers)
    : relay_({zbench, "serve-relay", "--workers", std::to_string(workers)}) {
    // "FRONTEND backend BACKEND"
    const std::string endpoints = wait_for(relay_, kListeningMarker, "the relay");
    endpoint_ = endpoints.substr(0, endpoints.find(' '));
    const std::string backend = endpoints.substr(endpoints.rfind(' ') + 1);
    for (std::size_t i = 0; i < workers; ++i)
        workers_.emplace_back(
            std::vector<std::string>{zbench, "echo-worker", "--connect", backend});
    wait_for(relay_, kRelayReadyMarker, "the relay's echo workers");
}

BareMdpBroker::BareMdpBroker(const std::string& zbench, std::size_t workers, int credit,
                             const std::string& service)
    : broker_({zbench, "serve-bare-mdp-broker", "--workers", std::to_string(workers)}),
      endpoint_(wait_for(broker_, kListeningMarker, "the bare 7/MDP broker")) {
    for (std::size_t i = 0; i < workers; ++i) {
        workers_.emplace_back(std::vector<std::string>{zbench, "mdp-worker", "--connect", endpoint_,
                                                       "--service", service, "--credit",
                                                       std::to_string(credit)});
    }
    wait_for(broker_, kBareMdpReadyMarker, "the bare 7/MDP broker's workers");
}

MdpEchoTopology::MdpEchoTopology(const std::string& zbench, const std::string& bin_dir,
                                 std::size_t workers, int credit, const std::string& service)
    : broker_(start_broker(bin_dir)) {
    for (std::size_t i = 0; i < workers; ++i) {
        workers_.emplace_back(std::vector<std::string>{zbench, "mdp-worker", "--connect",
                                                       endpoint(), "--service", service, "--credit",
                                                       std::to_string(credit)});
    }
    const auto deadline = std::chrono::steady_clock::now() + kStartPatience;
    while (registered_workers(endpoint(), service) < static_cast<int>(workers)) {
        if (std::chrono::steady_clock::now() > deadline) {
            std::string logs = "broker log:\n" + broker_.first.output();
            for (const ChildProcess& worker : workers_)
                logs += "worker log:\n" + worker.output();
            throw std::runtime_error("the 7/MDP echo workers did not register within " +
                                     std::to_string(kStartPatience.count()) +
                                     " s (they failed, or the machine is too slow); " + logs);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

}  // namespace zbroker::bench
