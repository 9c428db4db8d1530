// Answers of our 8/MMI extensions mmi.services and mmi.stats, encoded here and only here.
#pragma once

#include <span>
#include <string>

namespace zbroker::broker {

struct BrokerSnapshot;
struct ServiceInfo;

// msgpack map {service: {"workers", "queued", "in_flight", "served", "errors": {status: n}}}
// of the services given (a page of them: see protocol::kMmiPageServices).
std::string encode_service_list(std::span<const ServiceInfo> services);

// msgpack map of the broker's counters: "uptime_s", "workers", "requests_held", "peers" (the
// connections it keeps something for), "keys" (fairness keys with requests waiting), "totals",
// "answers" {status: n}, "malformed" {kind: n}, "drops" {reason: n}, "services_total", and
// "services" as above for the page given.
std::string encode_stats(const BrokerSnapshot& snapshot, std::span<const ServiceInfo> services);

}  // namespace zbroker::broker
