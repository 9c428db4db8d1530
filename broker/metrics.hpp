// The Prometheus endpoint (`zbroker --metrics 127.0.0.1:9464`). The broker thread publishes a
// snapshot of its counters now and then; prometheus-cpp's HTTP threads serve the latest one.
// A scrape therefore never touches the core, and the hot path pays nothing for metrics.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "broker/broker_core.hpp"

namespace prometheus {
class Exposer;
struct MetricFamily;
}  // namespace prometheus

namespace zbroker::broker {

struct ServiceSnapshot {
    std::string name;
    std::size_t workers = 0;
    std::size_t queued = 0;
    std::size_t in_flight = 0;
    std::uint64_t served = 0;
    std::array<std::uint64_t, 8> errors{};  // by Counters::answer_index
};

// What a scrape reports: a copy, so it can cross threads.
struct BrokerSnapshot {
    double uptime_s = 0;
    std::size_t workers = 0;
    std::size_t requests_held = 0;
    Counters counters;
    std::vector<ServiceSnapshot> services;
};

BrokerSnapshot take_snapshot(const BrokerCore& core, TimePoint now);

// The snapshot in Prometheus' data model: zbroker_* counters and gauges, with labels for
// status, malformed kind, drop reason and service.
std::vector<prometheus::MetricFamily> to_metric_families(const BrokerSnapshot& snapshot);

class MetricsEndpoint {
  public:
    // Serves http://ADDRESS/metrics from now on; ADDRESS is host:port (port 0: any free one).
    // Throws std::runtime_error when it cannot listen there.
    explicit MetricsEndpoint(const std::string& address);
    ~MetricsEndpoint();
    MetricsEndpoint(const MetricsEndpoint&) = delete;
    MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

    // Replaces what the next scrape reports. Called from the broker thread.
    void publish(BrokerSnapshot snapshot);

    int port() const;

  private:
    class Collectable;
    std::shared_ptr<Collectable> collectable_;
    std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace zbroker::broker
