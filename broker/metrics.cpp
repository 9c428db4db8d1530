#include "broker/metrics.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <mutex>
#include <stdexcept>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include "shared/utf8.hpp"

namespace zbroker::broker {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// The HTTP server is civetweb, inside prometheus-cpp. A client that connects and says nothing
// holds one of its threads until its request times out (civetweb's default: 30 s), so: a few
// threads, so that one stalled client never holds up Prometheus, and a short timeout, so that
// stalled clients let go soon. Prometheus sends its whole request at once.
constexpr const char* kHttpThreads = "4";
constexpr const char* kHttpRequestTimeoutMs = "3000";  // from accepting to the end of the request
constexpr const char* kHttpMaxRequestBytes = "8192";   // a scrape's request is a few hundred

// printable() shows this many bytes of a key, then cuts (shared/frames.hpp).
constexpr std::size_t kKeyBytesShown = 32;

ClientMetric sample(MetricType type, double value, Labels labels = {}) {
    ClientMetric metric;
    metric.label = std::move(labels);
    if (type == MetricType::Counter) {
        metric.counter.value = value;
    } else {
        metric.gauge.value = value;
    }
    return metric;
}

Labels with(Labels labels, ClientMetric::Label more) {
    labels.push_back(std::move(more));
    return labels;
}

// Prometheus drops a sample whose labels repeat within a scrape. Labels from peers' names are
// made distinct (label_value, key_label), but a key's hash may collide: such samples are summed.
void sum_repeated_series(std::vector<ClientMetric>& samples) {
    std::stable_sort(samples.begin(), samples.end(),
                     [](const auto& a, const auto& b) { return a.label < b.label; });
    std::vector<ClientMetric> unique;
    for (ClientMetric& metric : samples) {
        if (!unique.empty() && unique.back().label == metric.label) {
            unique.back().counter.value += metric.counter.value;
            unique.back().gauge.value += metric.gauge.value;
        } else {
            unique.push_back(std::move(metric));
        }
    }
    samples = std::move(unique);
}

MetricFamily family(std::string name, std::string help, MetricType type,
                    std::vector<ClientMetric> samples) {
    sum_repeated_series(samples);
    return {std::move(name), std::move(help), type, std::move(samples)};
}

MetricFamily single(std::string name, std::string help, MetricType type, double value) {
    return family(std::move(name), std::move(help), type, {sample(type, value)});
}

// A label value from a name a peer chose. Prometheus rejects a whole scrape for one byte of
// invalid UTF-8, and a control character would reach the terminal of whoever curls the page:
// each such byte is spelt \xNN, and a backslash \\, so that two names stay two series. The
// serializer then escapes \, " and newline for the text format.
std::string label_value(std::string_view bytes) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string text;
    text.reserve(bytes.size());
    while (!bytes.empty()) {
        const Utf8Char c = first_utf8_char(bytes);
        if (c.size == 0 || is_control(c.point)) {
            const auto byte = static_cast<unsigned char>(bytes.front());
            text += "\\x";
            text += kHex[byte >> 4];
            text += kHex[byte & 0xF];
            bytes.remove_prefix(1);
            continue;
        }
        if (c.point == '\\') text += '\\';
        text += bytes.substr(0, c.size);
        bytes.remove_prefix(c.size);
    }
    return text;
}

// FNV-1a, 64 bits: stable from run to run, so a key keeps its series across restarts.
std::uint64_t stable_hash(std::string_view bytes) {
    std::uint64_t hash = 0xcbf29ce484222325;
    for (unsigned char byte : bytes)
        hash = (hash ^ byte) * 0x100000001b3;
    return hash;
}

// A fairness key as a label: printable() (text in quotes, other bytes in hex), which cuts a long
// key; a cut one ends with a hash of the whole key, or two keys alike in their first 32 bytes
// would be one series twice.
std::string key_label(std::string_view key) {
    std::string label = printable(key);
    if (key.size() > kKeyBytesShown) {
        char hash[17];
        std::snprintf(hash, sizeof hash, "%016llx",
                      static_cast<unsigned long long>(stable_hash(key)));
        label += " #";
        label += hash;
    }
    return label;
}

// One sample per answered status, zeros included, so rate() sees every series from the start.
std::vector<ClientMetric> by_status(const std::array<std::uint64_t, 8>& counts,
                                    const Labels& labels = {}) {
    std::vector<ClientMetric> samples;
    for (protocol::Status status : kAnsweredStatuses) {
        samples.push_back(
            sample(MetricType::Counter, static_cast<double>(counts[Counters::answer_index(status)]),
                   with(labels, {"status", std::string(protocol::status_text(status))})));
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

// The per-service series of one service, or of the services not shown one by one, summed.
struct ServiceRow {
    Labels labels;
    ServiceInfo figures;
};

std::uint64_t answered(const ServiceInfo& service) {
    std::uint64_t total = service.served;
    for (std::uint64_t failures : service.failures)
        total += failures;
    return total;
}

// What an operator looks for first: work waiting or running now, then work done; then the name,
// so that ties keep their place from one scrape to the next.
bool busier(const ServiceInfo* a, const ServiceInfo* b) {
    const std::size_t now_a = a->waiting + a->in_flight;
    const std::size_t now_b = b->waiting + b->in_flight;
    if (now_a != now_b) return now_a > now_b;
    const std::uint64_t done_a = answered(*a);
    const std::uint64_t done_b = answered(*b);
    if (done_a != done_b) return done_a > done_b;
    return a->name < b->name;
}

void add_to(ServiceInfo& sum, const ServiceInfo& service) {
    sum.workers += service.workers;
    sum.waiting += service.waiting;
    sum.in_flight += service.in_flight;
    sum.orphaned += service.orphaned;
    sum.served += service.served;
    for (std::size_t i = 0; i < sum.failures.size(); ++i)
        sum.failures[i] += service.failures[i];
    sum.keys += service.keys;
}

// The busiest `max_shown` services, then the rest summed under others="true": a label name no
// service has, so the sum is never taken for a service of that name.
std::vector<ServiceRow> service_rows(const std::vector<ServiceInfo>& services,
                                     std::size_t max_shown) {
    std::vector<const ServiceInfo*> order;
    order.reserve(services.size());
    for (const ServiceInfo& service : services)
        order.push_back(&service);
    const auto shown =
        order.begin() + static_cast<std::ptrdiff_t>(std::min(max_shown, order.size()));
    std::partial_sort(order.begin(), shown, order.end(), busier);

    std::vector<ServiceRow> rows;
    for (auto it = order.begin(); it != shown; ++it)
        rows.push_back({{{"service", label_value((*it)->name)}}, **it});
    if (shown != order.end()) {
        ServiceRow others{{{"others", "true"}}, {}};
        for (auto it = shown; it != order.end(); ++it)
            add_to(others.figures, **it);
        rows.push_back(std::move(others));
    }
    return rows;
}

// One family with a sample per row, `value` picking the number.
template <typename Value>
MetricFamily per_service(std::string name, std::string help, MetricType type,
                         const std::vector<ServiceRow>& rows, Value value) {
    std::vector<ClientMetric> samples;
    for (const ServiceRow& row : rows)
        samples.push_back(sample(type, static_cast<double>(value(row.figures)), row.labels));
    return family(std::move(name), std::move(help), type, std::move(samples));
}

// The keys with most waiting in each service shown (kTopKeys at most), and the rest of its
// keys summed as key="other", a name printable() never gives a key.
std::vector<ClientMetric> key_samples(const std::vector<ServiceRow>& rows) {
    std::vector<ClientMetric> samples;
    for (const ServiceRow& row : rows) {
        const ServiceInfo& service = row.figures;
        std::size_t waiting_shown = 0;
        for (const KeyLoad& load : service.top_keys) {
            samples.push_back(sample(MetricType::Gauge, static_cast<double>(load.waiting),
                                     with(row.labels, {"key", key_label(load.key)})));
            waiting_shown += load.waiting;
        }
        if (!service.top_keys.empty() && service.keys > service.top_keys.size()) {
            const std::size_t rest = service.waiting - std::min(waiting_shown, service.waiting);
            samples.push_back(sample(MetricType::Gauge, static_cast<double>(rest),
                                     with(row.labels, {"key", "other"})));
        }
    }
    return samples;
}

bool is_port(std::string_view text) {
    return !text.empty() && text.size() <= 5 &&
           std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A host name as civetweb takes one (RFC 952): a letter, then letters, digits, '-' and '.'.
bool is_host_name(std::string_view text) {
    const auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    return !text.empty() && letter(text.front()) &&
           std::all_of(text.begin(), text.end(), [&](char c) {
               return letter(c) || (c >= '0' && c <= '9') || c == '-' || c == '.';
           });
}

bool is_address_of(int family, std::string_view text) {
    unsigned char parsed[sizeof(in6_addr)];
    return inet_pton(family, std::string(text).c_str(), parsed) == 1;
}

}  // namespace

std::string metrics_address_problem(std::string_view address) {
    const std::string quoted = "'" + std::string(address) + "': ";
    const auto colon = address.rfind(':');
    const std::string_view host = address.substr(0, colon == std::string_view::npos ? 0 : colon);
    const std::string_view port =
        colon == std::string_view::npos ? std::string_view{} : address.substr(colon + 1);
    const bool host_ok = (host.size() > 2 && host.front() == '[' && host.back() == ']' &&
                          is_address_of(AF_INET6, host.substr(1, host.size() - 2))) ||
                         is_address_of(AF_INET, host) || is_host_name(host);
    if (!host_ok || !is_port(port)) {
        return quoted +
               "expected one HOST:PORT, e.g. 127.0.0.1:9464 (HOST an IPv4 address, [IPv6 "
               "address] or host name; 0.0.0.0:PORT for every interface)";
    }
    unsigned number = 0;
    std::from_chars(port.data(), port.data() + port.size(), number);
    if (number > 65535) return quoted + "PORT must be from 0 to 65535 (0: any free port)";
    return {};
}

std::vector<MetricFamily> to_metric_families(const BrokerSnapshot& s,
                                             std::size_t max_services_shown) {
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
    families.push_back(single("zbroker_fairness_keys",
                              "Fairness keys (tenants) with requests waiting", gauge, n(s.keys)));
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

    families.push_back(single("zbroker_services", "Services known now, shown or summed in others",
                              gauge, n(s.services.size())));
    const std::vector<ServiceRow> rows = service_rows(s.services, max_services_shown);
    families.push_back(per_service("zbroker_service_workers", "Workers serving the service", gauge,
                                   rows, [](auto& v) { return v.workers; }));
    families.push_back(per_service("zbroker_service_queued", "Requests waiting for a worker", gauge,
                                   rows, [](auto& v) { return v.waiting; }));
    families.push_back(family("zbroker_key_queued",
                              "Requests waiting, for the fairness keys with most of them", gauge,
                              key_samples(rows)));
    families.push_back(per_service("zbroker_service_in_flight",
                                   "Requests at a worker now that can still be answered", gauge,
                                   rows, [](auto& v) { return v.in_flight; }));
    families.push_back(per_service("zbroker_service_orphaned",
                                   "Requests answered 504 that a worker still holds", gauge, rows,
                                   [](auto& v) { return v.orphaned; }));
    families.push_back(per_service("zbroker_service_served_total", "Replies from its workers",
                                   counter, rows, [](auto& v) { return v.served; }));
    std::vector<ClientMetric> errors;
    for (const ServiceRow& row : rows) {
        for (ClientMetric& m : by_status(row.figures.failures, row.labels)) {
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
    if (const std::string problem = metrics_address_problem(address); !problem.empty())
        throw std::invalid_argument("cannot serve metrics on " + problem);
    try {
        exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
            "listening_ports", address, "num_threads", kHttpThreads, "request_timeout_ms",
            kHttpRequestTimeoutMs, "max_request_size", kHttpMaxRequestBytes});
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
