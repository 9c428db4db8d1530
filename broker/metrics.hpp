// The Prometheus endpoint (`zbroker --metrics 127.0.0.1:9464`). The broker thread publishes a
// snapshot of its counters now and then; prometheus-cpp's HTTP threads serve the latest one.
// A scrape therefore never touches the core, and the hot path pays nothing for metrics.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "broker/broker_core.hpp"

namespace prometheus {
class Exposer;
struct MetricFamily;
}  // namespace prometheus

namespace zbroker::broker {

// Services given their own series: a scrape stays a few hundred kB however many services
// peers make up. The rest are summed in one series per metric, labelled others="true".
inline constexpr std::size_t kMaxServicesShown = 100;

// A snapshot (BrokerCore::snapshot) in Prometheus' data model: zbroker_* counters and gauges, with
// labels for status, malformed kind, drop reason, service and fairness key. Label values are
// valid UTF-8 without control characters, and no two series of a family share their labels.
std::vector<prometheus::MetricFamily> to_metric_families(
    const BrokerSnapshot& snapshot, std::size_t max_services_shown = kMaxServicesShown);

// Why `address` is not one HOST:PORT the endpoint can listen on, or "" when it is. Only one:
// civetweb would take a list ("A:1,B:2") or a port alone (every interface) and listen on more
// than the log says.
std::string metrics_address_problem(std::string_view address);

class MetricsEndpoint {
  public:
    // Serves http://ADDRESS/metrics from now on; ADDRESS is host:port (port 0: any free one).
    // Throws std::invalid_argument when ADDRESS is not that, std::runtime_error when it cannot
    // listen there.
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
