// What zbroker is measured against in the same run: the same load with no broker (a direct
// echo server), and through a featureless ROUTER-to-ROUTER relay with no protocol logic.
// Both answer in the ZBC01 format, so one client drives all three targets.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

namespace zbroker::bench {

// A ROUTER that answers every ZBC01 request itself, 200 with the body: no hop at all.
class DirectEchoServer {
  public:
    DirectEchoServer();
    ~DirectEchoServer();
    const std::string& endpoint() const noexcept { return endpoint_; }

  private:
    zmq::context_t context_{1};
    std::atomic<bool> stop_{false};
    std::string endpoint_;
    std::thread thread_;
};

// Frontend ROUTER for clients, backend ROUTER for echo workers, round robin between them,
// frames passed through untouched: the two hops of a broker without any of its work.
class FeaturelessRelay {
  public:
    explicit FeaturelessRelay(std::size_t workers);
    ~FeaturelessRelay();
    const std::string& endpoint() const noexcept { return endpoint_; }

  private:
    zmq::context_t context_{1};
    std::atomic<bool> stop_{false};
    std::string endpoint_;
    std::vector<std::thread> threads_;
};

}  // namespace zbroker::bench
