// Answers of our 8/MMI extensions mmi.services and mmi.stats, encoded here and only here.
#pragma once

#include <string>
#include <vector>

namespace zbroker::broker {

struct BrokerSnapshot;
struct ServiceInfo;

// msgpack map {service: {"workers", "queued", "in_flight", "served", "errors": {status: n}}}.
std::string encode_service_list(const std::vector<ServiceInfo>& services);

// msgpack map of the broker's counters: "uptime_s", "workers", "requests_held", "peers" (the
// connections it keeps something for), "keys" (fairness keys with requests waiting), "totals",
// "answers" {status: n}, "malformed" {kind: n}, "drops" {reason: n}, and "services" as above.
std::string encode_stats(const BrokerSnapshot& snapshot);

}  // namespace zbroker::broker
