#include "broker/metrics.hpp"

#include <mutex>
#include <stdexcept>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

namespace zbroker::broker {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

ClientMetric sample(MetricType type, double value, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric metric;
    metric.label = std::move(labels);
    if (type == MetricType::Counter) {
        metric.counter.value = value;
    } else {
        metric.gauge.value = value;
    }
    return metric;
}

MetricFamily family(std::string name, std::string help, MetricType type,
                    std::vector<ClientMetric> samples) {
    return {std::move(name), std::move(help), type, std::move(samples)};
}

MetricFamily single(std::string name, std::string help, MetricType type, double value) {
    return family(std::move(name), std::move(help), type, {sample(type, value)});
}

// One sample per answered status, zeros included, so rate() sees every series from the start.
std::vector<ClientMetric> by_status(const std::array<std::uint64_t, 8>& counts,
                                    std::vector<ClientMetric::Label> labels = {}) {
    std::vector<ClientMetric> samples;
    for (protocol::Status status : kAnsweredStatuses) {
        auto with_status = labels;
        with_status.push_back({"status", std::string(protocol::status_text(status))});
        samples.push_back(sample(MetricType::Counter,
                                 static_cast<double>(counts[Counters::answer_index(status)]),
                                 std::move(with_status)));
    }
    return samples;
}

template <typename Kind, std::size_t N>
std::vector<ClientMetric> by_kind(const std::array<std::uint64_t, N>& counts,
                                  const std::string& label) {
    std::vector<ClientMetric> samples;
    for (std::size_t i = 0; i < N; ++i) {
        samples.push_back(sample(MetricType::Counter, static_cast<double>(counts[i]),
                                 {{label, std::string(name(static_cast<Kind>(i)))}}));
    }
    return samples;
}

// One family with a sample per service, `value` picking the number.
template <typename Value>
MetricFamily per_service(std::string name, std::string help, MetricType type,
                         const std::vector<ServiceInfo>& services, Value value) {
    std::vector<ClientMetric> samples;
    for (const ServiceInfo& service : services) {
        samples.push_back(
            sample(type, static_cast<double>(value(service)), {{"service", service.name}}));
    }
    return family(std::move(name), std::move(help), type, std::move(samples));
}

}  // namespace

std::vector<MetricFamily> to_metric_families(const BrokerSnapshot& s) {
    const Counters& c = s.counters;
    constexpr auto counter = MetricType::Counter;
    constexpr auto gauge = MetricType::Gauge;
    auto n = [](auto value) { return static_cast<double>(value); };

    std::vector<MetricFamily> families;
    families.push_back(
        single("zbroker_uptime_seconds", "Seconds since the broker started", gauge, s.uptime_s));
    families.push_back(single("zbroker_workers", "Workers registered now", gauge, n(s.workers)));
    families.push_back(single("zbroker_requests_held", "Requests held now, queued or at a worker",
                              gauge, n(s.requests_held)));
    families.push_back(single("zbroker_peers",
                              "Connections the broker keeps something for (a worker, answers owed, "
                              "recent traffic)",
                              gauge, n(s.peers)));
    families.push_back(single("zbroker_fairness_keys", "Fairness keys (tenants) with requests waiting",
                              gauge, n(s.keys)));
    families.push_back(
        single("zbroker_requests_total", "Requests accepted from clients", counter, n(c.requests)));
    families.push_back(
        single("zbroker_dispatches_total", "Requests sent to workers", counter, n(c.dispatches)));
    families.push_back(single("zbroker_requeued_total",
                              "Requests queued again after their worker died", counter,
                              n(c.requeued)));
    families.push_back(single("zbroker_pushed_out_total",
                              "Queued requests answered 429 to make room for a fairness key "
                              "under its share",
                              counter, n(c.pushed_out)));
    families.push_back(single("zbroker_workers_registered_total", "Worker READY accepted", counter,
                              n(c.workers_registered)));
    families.push_back(single("zbroker_workers_expired_total",
                              "Workers dropped for missed heartbeats", counter,
                              n(c.workers_expired)));
    families.push_back(single("zbroker_workers_removed_total",
                              "Workers removed: expired, DISCONNECT or a protocol error", counter,
                              n(c.workers_removed)));
    families.push_back(single("zbroker_orphans_released_total",
                              "Requests a worker held past deadline + --orphan-after-ms, no "
                              "longer counted against its credit",
                              counter, n(c.orphans_released)));
    families.push_back(family("zbroker_answers_total",
                              "Requests answered by the broker or a worker, by status", counter,
                              by_status(c.answers)));
    families.push_back(family("zbroker_malformed_total", "Messages refused as malformed, by kind",
                              counter, by_kind<Malformed>(c.malformed, "kind")));
    families.push_back(family("zbroker_drops_total", "Messages not delivered, by reason", counter,
                              by_kind<Drop>(c.drops, "reason")));

    families.push_back(per_service("zbroker_service_workers", "Workers serving the service", gauge,
                                   s.services, [](auto& v) { return v.workers; }));
    families.push_back(per_service("zbroker_service_queued", "Requests waiting for a worker", gauge,
                                   s.services, [](auto& v) { return v.waiting; }));
    std::vector<ClientMetric> key_samples;  // bounded: kTopKeys per service
    for (const ServiceInfo& service : s.services) {
        for (const KeyLoad& load : service.top_keys) {
            key_samples.push_back(sample(
                gauge, n(load.waiting), {{"service", service.name}, {"key", printable(load.key)}}));
        }
    }
    families.push_back(family("zbroker_key_queued",
                              "Requests waiting, for the fairness keys with most of them", gauge,
                              std::move(key_samples)));
    families.push_back(per_service("zbroker_service_in_flight",
                                   "Requests at a worker now that can still be answered", gauge,
                                   s.services, [](auto& v) { return v.in_flight; }));
    families.push_back(per_service("zbroker_service_orphaned",
                                   "Requests answered 504 that a worker still holds", gauge,
                                   s.services, [](auto& v) { return v.orphaned; }));
    families.push_back(per_service("zbroker_service_served_total", "Replies from its workers",
                                   counter, s.services, [](auto& v) { return v.served; }));
    std::vector<ClientMetric> errors;
    for (const ServiceInfo& service : s.services) {
        for (ClientMetric& m : by_status(service.failures, {{"service", service.name}})) {
            if (m.label.back().value != protocol::status_text(protocol::Status::ok))
                errors.push_back(std::move(m));
        }
    }
    families.push_back(family("zbroker_service_errors_total",
                              "Requests for the service answered with an error status", counter,
                              std::move(errors)));
    return families;
}

class MetricsEndpoint::Collectable : public prometheus::Collectable {
  public:
    std::vector<MetricFamily> Collect() const override {
        std::lock_guard lock(mutex_);
        return to_metric_families(snapshot_);
    }
    void publish(BrokerSnapshot snapshot) {
        std::lock_guard lock(mutex_);
        snapshot_ = std::move(snapshot);
    }

  private:
    mutable std::mutex mutex_;
    BrokerSnapshot snapshot_;
};

MetricsEndpoint::MetricsEndpoint(const std::string& address)
    : collectable_(std::make_shared<Collectable>()) {
    try {
        // One HTTP thread: scrapes are rare, and each only copies a snapshot.
        exposer_ = std::make_unique<prometheus::Exposer>(address, 1);
    } catch (const std::exception& e) {
        throw std::runtime_error("cannot serve metrics on " + address + ": " + e.what());
    }
    exposer_->RegisterCollectable(collectable_);
}

MetricsEndpoint::~MetricsEndpoint() = default;

void MetricsEndpoint::publish(BrokerSnapshot snapshot) {
    collectable_->publish(std::move(snapshot));
}

int MetricsEndpoint::port() const {
    const std::vector<int> ports = exposer_->GetListeningPorts();
    return ports.empty() ? 0 : ports.front();
}

}  // namespace zbroker::broker
